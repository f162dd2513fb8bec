//! [`Reannounce`]: when each advertised key is announced again.
//!
//! libp2p's Kademlia can re-announce provider records itself, but it does so for all of a
//! node's keys at the same moment every interval, up to 100 queries at once, past the
//! [`super::announce`] queue: the burst that queue exists to prevent (at most 32 at once,
//! because a peer's Kademlia handler drops inbound streams past 32 per connection), and a
//! burst that every node of a cluster started together repeats in step. So libp2p's job is
//! off and the router re-announces on its own schedule: each key again 3/4 to 1 interval
//! after its announcement started, through the same queue. Keys announced over a few
//! minutes (a node's whole inventory at start, paced by the queue) stay spread over the
//! interval, and the record never outlives its TTL on other nodes: re-announced at the
//! latest one interval after the last, like libp2p's job. Keys a sweep announced
//! ([`super::sweep`]) share one time, so the next round is one sweep again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::Key;

/// The keys to announce again, by when: one entry per advertised key (~130 bytes each),
/// scanned once a second only when the earliest is due.
#[derive(Default)]
pub(super) struct Reannounce {
    at: HashMap<Key, Instant>,
    /// No key is due before this (some may be later: withdrawn keys are not looked for).
    earliest: Option<Instant>,
}

impl Reannounce {
    /// `key`'s announcement started now: announce it again within `interval`.
    pub(super) fn announced(&mut self, key: Key, now: Instant, interval: Duration) {
        self.set(
            key,
            now + spread(interval, crate::tuning::random_fraction()),
        );
    }

    /// `keys` were announced together now (a sweep): announce them again together, 3/4 to
    /// 1 `interval` from now (one draw for all, so the next round is one sweep again).
    pub(super) fn announced_together(&mut self, keys: &[Key], now: Instant, interval: Duration) {
        let when = now + spread(interval, crate::tuning::random_fraction());
        for key in keys {
            self.set(key.clone(), when);
        }
    }

    fn set(&mut self, key: Key, when: Instant) {
        self.at.insert(key, when);
        self.earliest = Some(self.earliest.map_or(when, |e| e.min(when)));
    }

    /// Whether some key is due by `now`.
    pub(super) fn any_due(&self, now: Instant) -> bool {
        self.earliest.is_some_and(|e| e <= now)
    }

    /// Keys due by `when`.
    pub(super) fn due_by(&self, when: Instant) -> usize {
        self.at.values().filter(|at| **at <= when).count()
    }

    /// `key` was withdrawn: never again.
    pub(super) fn remove(&mut self, key: &Key) {
        self.at.remove(key);
    }

    /// The keys due by `now`, taken off the schedule (they are put back when their
    /// announcement starts).
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Key> {
        if self.earliest.is_none_or(|e| e > now) {
            return Vec::new();
        }
        let mut keys = Vec::new();
        self.at.retain(|key, when| {
            let due = *when <= now;
            if due {
                keys.push(key.clone());
            }
            !due
        });
        self.earliest = self.at.values().min().copied();
        keys
    }

    /// Keys scheduled.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

/// `interval` times a factor from 3/4 (`fraction` 0) to 1 (`fraction` 1): never later than
/// the interval (records must be renewed before their TTL), 7/8 of it on average.
fn spread(interval: Duration, fraction: f64) -> Duration {
    interval.mul_f64(0.75 + 0.25 * fraction.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use spegel_oci::Digest;

    use super::*;

    fn digest(i: u32) -> Key {
        Key::Digest(Digest::sha256_of(&i.to_be_bytes()))
    }

    #[test]
    fn keys_come_due_between_three_quarters_and_one_interval_after_their_announcement() {
        let (start, interval) = (Instant::now(), Duration::from_secs(600));
        let mut schedule = Reannounce::default();
        for i in 0..100 {
            schedule.announced(digest(i), start, interval);
        }
        assert!(
            schedule
                .take_due(start + Duration::from_secs(449))
                .is_empty()
        );
        let mut due = schedule.take_due(start + interval);
        due.sort();
        let mut all: Vec<Key> = (0..100).map(digest).collect();
        all.sort();
        assert_eq!(due, all, "every key once, by the interval");
        assert_eq!(schedule.len(), 0);
        assert_eq!(spread(interval, 0.0), Duration::from_secs(450));
        assert_eq!(spread(interval, 1.0), interval);
    }

    #[test]
    fn keys_announced_together_come_due_together() {
        let (start, interval) = (Instant::now(), Duration::from_secs(600));
        let mut schedule = Reannounce::default();
        let keys: Vec<Key> = (0..100).map(digest).collect();
        schedule.announced_together(&keys, start, interval);
        let at = *schedule.at.values().next().unwrap();
        assert!(schedule.at.values().all(|when| *when == at));
        assert!(at >= start + Duration::from_secs(450) && at <= start + interval);
        assert!(!schedule.any_due(at - Duration::from_millis(1)));
        assert_eq!(schedule.due_by(at), 100);
        assert_eq!(schedule.take_due(at).len(), 100);
    }

    #[test]
    fn a_key_announced_again_moves_and_a_withdrawn_one_never_comes_due() {
        let (start, interval) = (Instant::now(), Duration::from_secs(600));
        let mut schedule = Reannounce::default();
        schedule.set(digest(1), start + Duration::from_secs(10));
        schedule.set(digest(2), start + Duration::from_secs(20));
        schedule.set(digest(1), start + Duration::from_secs(30));
        schedule.remove(&digest(2));
        schedule.announced(digest(3), start, interval);
        schedule.remove(&digest(3));
        assert_eq!(schedule.len(), 1);
        assert!(
            schedule
                .take_due(start + Duration::from_secs(25))
                .is_empty()
        );
        assert_eq!(
            schedule.take_due(start + Duration::from_secs(3600)),
            vec![digest(1)]
        );
    }
}
