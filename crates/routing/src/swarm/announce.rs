//! Announcements waiting for their turn: at most [`MAX_ANNOUNCING`] `ADD_PROVIDER` queries
//! run at once per node, the rest wait in order, and the single flight's keys go first.
//!
//! Each announcement sends an `ADD_PROVIDER` to the 20 nodes closest to its key, and
//! libp2p's Kademlia handler keeps at most 32 inbound streams per connection, dropping new
//! ones past that. A node that announced all its keys at once (its whole inventory at start,
//! thousands of digests) sent more than its peers' connections took: with 200 keys per node
//! on 50 nodes, 16 % of the `ADD_PROVIDER` messages were lost (`bench-dht`,
//! `provide_delivery_rate` 0.84), and with 20 keys none.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use crate::Key;

/// `ADD_PROVIDER` queries one node runs at once.
pub(super) const MAX_ANNOUNCING: usize = 32;

/// Keys to announce, in order, and the announcements running (by query ID, `Q`).
pub(super) struct AnnounceQueue<Q> {
    /// `inflight:` and `coming:` keys: other nodes' single-flight elections wait for them.
    urgent: VecDeque<Key>,
    /// Everything else (digests and tags).
    normal: VecDeque<Key>,
    /// The keys waiting; a key taken out (withdrawn) stays in a deque and is skipped.
    waiting: HashSet<Key>,
    running: HashSet<Q>,
}

impl<Q> Default for AnnounceQueue<Q> {
    fn default() -> Self {
        AnnounceQueue {
            urgent: VecDeque::new(),
            normal: VecDeque::new(),
            waiting: HashSet::new(),
            running: HashSet::new(),
        }
    }
}

impl<Q: Hash + Eq> AnnounceQueue<Q> {
    /// Queues `key` (once, however often it is pushed before its turn).
    pub(super) fn push(&mut self, key: Key) {
        if !self.waiting.insert(key.clone()) {
            return;
        }
        let urgent = matches!(key, Key::InFlight(_) | Key::Coming(_));
        let deque = if urgent {
            &mut self.urgent
        } else {
            &mut self.normal
        };
        deque.push_back(key);
        // Withdrawn keys left behind (and copies of keys withdrawn and pushed again): drop
        // them before they outnumber the waiting ones.
        if self.urgent.len() + self.normal.len() > 2 * self.waiting.len() + 1024 {
            let mut kept = HashSet::with_capacity(self.waiting.len());
            let waiting = &self.waiting;
            for deque in [&mut self.urgent, &mut self.normal] {
                deque.retain(|k| waiting.contains(k) && kept.insert(k.clone()));
            }
        }
    }

    /// Takes `key` out of the queue (it was withdrawn).
    pub(super) fn remove(&mut self, key: &Key) {
        self.waiting.remove(key);
    }

    /// The next key to announce, when fewer than [`MAX_ANNOUNCING`] announcements run.
    pub(super) fn next(&mut self) -> Option<Key> {
        if self.running.len() >= MAX_ANNOUNCING {
            return None;
        }
        while let Some(key) = self.urgent.pop_front().or_else(|| self.normal.pop_front()) {
            if self.waiting.remove(&key) {
                return Some(key);
            }
        }
        None
    }

    /// The announcement of a key [`Self::next`] gave is running as `query`.
    pub(super) fn started(&mut self, query: Q) {
        self.running.insert(query);
    }

    /// `query` ended; whether it was one of ours.
    pub(super) fn ended(&mut self, query: &Q) -> bool {
        self.running.remove(query)
    }

    /// Keys waiting for their turn.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Announcements running.
    pub(super) fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use spegel_oci::Digest;

    use super::*;

    fn digest(i: u32) -> Key {
        Key::Digest(Digest::sha256_of(&i.to_be_bytes()))
    }

    #[test]
    fn claims_go_before_digests_and_each_key_waits_once() {
        let mut queue = AnnounceQueue::<u32>::default();
        queue.push(digest(1));
        queue.push(digest(2));
        queue.push(digest(1));
        let claim = Key::InFlight(Digest::sha256_of(b"layer"));
        queue.push(claim.clone());
        assert_eq!(queue.waiting(), 3);
        assert_eq!(queue.next(), Some(claim));
        assert_eq!(queue.next(), Some(digest(1)));
        assert_eq!(queue.next(), Some(digest(2)));
        assert_eq!(queue.next(), None);
    }

    #[test]
    fn withdrawn_keys_are_skipped() {
        let mut queue = AnnounceQueue::<u32>::default();
        queue.push(digest(1));
        queue.push(digest(2));
        queue.remove(&digest(1));
        assert_eq!(queue.next(), Some(digest(2)));
        assert_eq!(queue.next(), None);
        // Withdrawn and advertised again: announced once.
        for _ in 0..3000 {
            queue.push(digest(3));
            queue.remove(&digest(3));
        }
        queue.push(digest(3));
        assert!(queue.urgent.len() + queue.normal.len() < 1100);
        assert_eq!(queue.next(), Some(digest(3)));
        assert_eq!(queue.next(), None);
    }

    #[test]
    fn at_most_max_announcing_run_at_once() {
        let mut queue = AnnounceQueue::<usize>::default();
        for i in 0..(MAX_ANNOUNCING as u32 + 5) {
            queue.push(digest(i));
        }
        let mut running = Vec::new();
        while let Some(_key) = queue.next() {
            let query = running.len();
            queue.started(query);
            running.push(query);
        }
        assert_eq!(running.len(), MAX_ANNOUNCING);
        assert_eq!((queue.running(), queue.waiting()), (MAX_ANNOUNCING, 5));
        assert!(queue.ended(&running[0]));
        assert!(!queue.ended(&running[0]));
        assert_eq!(queue.running(), MAX_ANNOUNCING - 1);
        assert!(queue.next().is_some());
        assert_eq!(queue.waiting(), 4);
    }
}
