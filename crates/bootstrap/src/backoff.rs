//! Capped exponential backoff for asking the bootstrapper again.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Delays that double from `initial` up to `max`, then stay at `max` until [`Backoff::reset`].
///
/// With [`Backoff::with_jitter`] each delay is drawn from `[delay / 2, delay]`, so that many
/// nodes that lost the bootstrapper together do not return in lock-step.
///
/// ```
/// # async fn ask() -> Result<(), ()> { Ok(()) }
/// # async fn run() {
/// use std::time::Duration;
/// let mut backoff = spegel_bootstrap::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// while ask().await.is_err() {
///     backoff.wait().await;
/// }
/// backoff.reset();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
    jitter: bool,
}

impl Backoff {
    /// Starts at `initial` (at least 1 ms) and never waits longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
            attempts: 0,
            jitter: false,
        }
    }

    /// Draws each delay from `[delay / 2, delay]`.
    pub fn with_jitter(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// The delay before the next attempt; advances the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        if self.jitter {
            let half = delay / 2;
            let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
            let random = RandomState::new().hash_one(self.attempts);
            half + Duration::from_nanos(random % spread.saturating_add(1))
        } else {
            delay
        }
    }

    /// Sleeps for [`Backoff::next_delay`] (tokio time, so tests can pause it).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.attempts = 0;
    }

    /// Delays handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl Default for Backoff {
    /// 500 ms doubling to 30 s, jittered.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30)).with_jitter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_and_reset_starts_over() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<_> = (0..6).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(backoff.attempts(), 6);
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn jittered_delays_stay_between_half_and_the_full_delay() {
        let mut backoff = Backoff::new(100 * MS, 400 * MS).with_jitter();
        for full in [100, 200, 400, 400, 400, 400, 400] {
            let delay = backoff.next_delay();
            assert!(
                delay >= full * MS / 2 && delay <= full * MS,
                "{delay:?} for {full} ms"
            );
        }
    }

    #[test]
    fn a_zero_initial_delay_or_a_cap_below_it_is_raised() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.next_delay(), MS);
        let mut backoff = Backoff::new(50 * MS, 10 * MS);
        assert_eq!(backoff.next_delay(), 50 * MS);
        assert_eq!(backoff.next_delay(), 50 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_sleeps_on_tokio_time() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let start = Instant::now();
        for _ in 0..4 {
            backoff.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2 + 4 + 4));
    }
}
