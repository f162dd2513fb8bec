//! How long this node's DHT lookups take, so the single flight's claim window outlasts them.
//!
//! A claim is seen only if a lookup finishes inside the window. On a real node a lookup takes
//! about a millisecond; on a starved one (in `bench-pulls`, ten nodes sharing two cores) it
//! took longer than the 200 ms default, claims were missed and blobs fetched twice. So the
//! window is at least `--inflight-claim-window` and at least [`LOOKUPS_PER_WINDOW`] times the
//! slow end of the node's recent lookups, and at most half the hold.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Lookup durations remembered.
const KEPT: usize = 32;

/// The window covers this many slow lookups: two looks, each of which must end in its half.
pub const LOOKUPS_PER_WINDOW: u32 = 4;

/// The recent lookup durations of this node.
#[derive(Default)]
pub struct LookupPace {
    recent: Mutex<VecDeque<Duration>>,
}

impl LookupPace {
    /// Records one lookup: how long it took to end, or how long it was given when it was
    /// cut short (a lower bound, which widens the next window).
    pub fn record(&self, took: Duration) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(took);
        }
    }

    /// The 90th percentile of the remembered lookups (zero before any).
    pub fn slow(&self) -> Duration {
        let Ok(recent) = self.recent.lock() else {
            return Duration::ZERO;
        };
        let mut sorted: Vec<Duration> = recent.iter().copied().collect();
        sorted.sort();
        let rank = (sorted.len() * 9).div_ceil(10);
        sorted
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }

    /// The claim window: `floor` at least, [`LOOKUPS_PER_WINDOW`] slow lookups at least,
    /// `ceiling` at most.
    pub fn window(&self, floor: Duration, ceiling: Duration) -> Duration {
        (self.slow() * LOOKUPS_PER_WINDOW)
            .max(floor)
            .min(ceiling.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(200);
    const CEILING: Duration = Duration::from_millis(2500);

    #[test]
    fn fast_lookups_keep_the_configured_window() {
        let pace = LookupPace::default();
        assert_eq!(pace.window(FLOOR, CEILING), FLOOR);
        for _ in 0..10 {
            pace.record(Duration::from_millis(2));
        }
        assert_eq!(pace.window(FLOOR, CEILING), FLOOR);
    }

    #[test]
    fn slow_lookups_widen_it_up_to_the_ceiling_and_it_narrows_again() {
        let pace = LookupPace::default();
        for _ in 0..10 {
            pace.record(Duration::from_millis(150));
        }
        assert_eq!(pace.window(FLOOR, CEILING), Duration::from_millis(600));
        for _ in 0..10 {
            pace.record(Duration::from_secs(5));
        }
        assert_eq!(pace.window(FLOOR, CEILING), CEILING);
        for _ in 0..KEPT {
            pace.record(Duration::from_millis(1));
        }
        assert_eq!(pace.window(FLOOR, CEILING), FLOOR);
    }

    #[test]
    fn one_slow_lookup_in_ten_does_not_move_it() {
        let pace = LookupPace::default();
        for _ in 0..9 {
            pace.record(Duration::from_millis(1));
        }
        pace.record(Duration::from_secs(1));
        assert_eq!(pace.window(FLOOR, CEILING), FLOOR);
    }
}
