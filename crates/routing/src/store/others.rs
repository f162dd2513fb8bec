//! [`Others`]: other nodes' provider records, packed.
//!
//! A node of a cluster whose nodes hold D keys each stores about D × k records of others
//! (40,000 at D = 2,000): the part of a node's DHT memory that grows with D. libp2p's
//! `ProviderRecord` repeats the key, the provider's 80-byte ID and its addresses in every
//! record; here a record is 8 bytes — the provider's number and when it expires — under the
//! SHA-256 of its key, and each provider's ID and addresses are kept once: by layout ~100
//! bytes a record with the map's entry and a 32-byte allocation. `bench-dht` at 200 nodes
//! with 2,000 keys each went from 50.3 MB per node (whole records in a `Vec` grown to
//! four) to 34.7 MB (addresses per provider) and 28.8 and 29.2 MB (two runs) with this layout
//! (`docs/scale.md`). Most of what 2,000 keys per node still added was elsewhere: the buffers
//! of connections that had carried a batch in 16 KiB frames (see `swarm/batch.rs`,
//! `WRITE_CHUNK`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::kad::{ProviderRecord, RecordKey};
use libp2p::{Multiaddr, PeerId};

/// Where a key sits in the Kademlia key space ([`crate::key::key_space_point`]).
type KeyHash = [u8; 32];

fn hash_of(key: &RecordKey) -> KeyHash {
    crate::key::key_space_point(key.as_ref())
}

/// One record: the provider's number in [`Others::providers`] and when the record expires,
/// in seconds after the store's epoch (`u32::MAX`: never).
#[derive(Debug, Clone, Copy)]
struct Held {
    provider: u32,
    expires: u32,
}

/// A provider that has records here.
#[derive(Debug)]
struct Provider {
    id: PeerId,
    records: usize,
    /// What its latest record carried (a record without addresses keeps these).
    addresses: Vec<Multiaddr>,
}

/// Why a record was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The provider holds its most records here.
    Peer,
    /// The store holds its most records of others.
    Store,
}

/// See the module doc.
pub(super) struct Others {
    epoch: Instant,
    records: HashMap<KeyHash, Vec<Held>>,
    count: usize,
    numbers: HashMap<PeerId, u32>,
    /// By number; `None`: free, listed in `free`.
    providers: Vec<Option<Provider>>,
    free: Vec<u32>,
}

impl Others {
    pub(super) fn new(now: Instant) -> Others {
        Others {
            epoch: now,
            records: HashMap::new(),
            count: 0,
            numbers: HashMap::new(),
            providers: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Records held.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    fn seconds(&self, at: Option<Instant>) -> u32 {
        at.map_or(u32::MAX, |t| {
            let secs = t.saturating_duration_since(self.epoch).as_secs_f64().ceil();
            secs.min(f64::from(u32::MAX - 1)) as u32
        })
    }

    fn instant(&self, seconds: u32) -> Option<Instant> {
        (seconds != u32::MAX).then(|| self.epoch + Duration::from_secs(u64::from(seconds)))
    }

    /// Stores `provider`'s record of `key` (renewing it if held), unless `provider` already
    /// holds `max_per_peer` records or the store `max_records`; a key with
    /// `max_per_key` providers keeps them and ignores the new one (as libp2p's MemoryStore).
    pub(super) fn add(
        &mut self,
        key: &RecordKey,
        record: Added,
        limits: &super::StoreLimits,
    ) -> Result<(), Full> {
        let hash = hash_of(key);
        let expires = self.seconds(record.expires);
        let number = self.numbers.get(&record.provider).copied();
        let holders = self.records.get(&hash).map_or(0, Vec::len);
        if let Some(n) = number
            && let Some(held) = self
                .records
                .get_mut(&hash)
                .and_then(|v| v.iter_mut().find(|h| h.provider == n))
        {
            held.expires = expires;
            self.note_addresses(n, record.addresses);
            return Ok(());
        }
        if holders >= limits.max_providers_per_key {
            return Ok(());
        }
        let held_by_peer = number.map_or(0, |n| self.provider(n).map_or(0, |p| p.records));
        if held_by_peer >= limits.max_records_per_peer {
            return Err(Full::Peer);
        }
        if self.count >= limits.max_records {
            return Err(Full::Store);
        }
        let n = match number {
            Some(n) => n,
            None => self.number_for(record.provider),
        };
        if let Some(Some(p)) = self.providers.get_mut(n as usize) {
            p.records += 1;
        }
        self.note_addresses(n, record.addresses);
        self.records
            .entry(hash)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Held {
                provider: n,
                expires,
            });
        self.count += 1;
        Ok(())
    }

    fn provider(&self, n: u32) -> Option<&Provider> {
        self.providers.get(n as usize).and_then(Option::as_ref)
    }

    fn number_for(&mut self, id: PeerId) -> u32 {
        let provider = Some(Provider {
            id,
            records: 0,
            addresses: Vec::new(),
        });
        let n = match self.free.pop() {
            Some(n) => {
                self.providers[n as usize] = provider;
                n
            }
            None => {
                self.providers.push(provider);
                // At most `max_records` providers have records, far below u32::MAX.
                u32::try_from(self.providers.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.numbers.insert(id, n);
        n
    }

    fn note_addresses(&mut self, n: u32, addresses: Vec<Multiaddr>) {
        if let Some(Some(p)) = self.providers.get_mut(n as usize)
            && !addresses.is_empty()
        {
            p.addresses = addresses;
        }
    }

    /// One record of provider `n` is gone.
    fn forget_one(&mut self, n: u32) {
        let Some(Some(p)) = self.providers.get_mut(n as usize) else {
            return;
        };
        p.records = p.records.saturating_sub(1);
        if p.records == 0 {
            self.numbers.remove(&p.id);
            self.providers[n as usize] = None;
            self.free.push(n);
        }
        self.count = self.count.saturating_sub(1);
    }

    /// The records of `key`, whole.
    pub(super) fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let Some(held) = self.records.get(&hash_of(key)) else {
            return Vec::new();
        };
        held.iter()
            .filter_map(|h| {
                let p = self.provider(h.provider)?;
                Some(ProviderRecord {
                    key: key.clone(),
                    provider: p.id,
                    expires: self.instant(h.expires),
                    addresses: p.addresses.clone(),
                })
            })
            .collect()
    }

    /// Drops `provider`'s record of `key`, if held.
    pub(super) fn remove(&mut self, key: &RecordKey, provider: &PeerId) {
        let (hash, Some(&n)) = (hash_of(key), self.numbers.get(provider)) else {
            return;
        };
        let Some(held) = self.records.get_mut(&hash) else {
            return;
        };
        let Some(i) = held.iter().position(|h| h.provider == n) else {
            return;
        };
        held.swap_remove(i);
        if held.is_empty() {
            self.records.remove(&hash);
        }
        self.forget_one(n);
    }

    /// Drops the records expired at `now`; returns how many.
    pub(super) fn expire(&mut self, now: Instant) -> usize {
        let now = self.seconds(Some(now));
        let mut gone = Vec::new();
        self.records.retain(|_, held| {
            held.retain(|h| {
                let keep = h.expires > now;
                if !keep {
                    gone.push(h.provider);
                }
                keep
            });
            if held.capacity() > 2 * held.len() + 4 {
                held.shrink_to_fit();
            }
            !held.is_empty()
        });
        for &n in &gone {
            self.forget_one(n);
        }
        gone.len()
    }

    /// Providers with records here (for tests).
    #[cfg(test)]
    pub(super) fn provider_count(&self) -> usize {
        self.numbers.len()
    }
}

/// A record to store, without its key.
pub(super) struct Added {
    pub provider: PeerId,
    pub expires: Option<Instant>,
    pub addresses: Vec<Multiaddr>,
}

#[cfg(test)]
mod tests {
    use spegel_oci::Digest;

    use super::*;
    use crate::Key;
    use crate::store::StoreLimits;

    fn key(i: u32) -> RecordKey {
        Key::Digest(Digest::sha256_of(&i.to_be_bytes())).record_key()
    }

    fn added(provider: PeerId, expires: Instant) -> Added {
        Added {
            provider,
            expires: Some(expires),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn a_gone_providers_number_is_reused_without_its_records() {
        let (now, limits) = (Instant::now(), StoreLimits::default());
        let mut others = Others::new(now);
        let (old, new) = (PeerId::random(), PeerId::random());
        let soon = now + Duration::from_secs(10);
        let later = now + Duration::from_secs(3600);
        others.add(&key(1), added(old, soon), &limits).unwrap();
        others.add(&key(2), added(old, soon), &limits).unwrap();
        assert_eq!(others.expire(now + Duration::from_secs(11)), 2);
        assert_eq!((others.len(), others.provider_count()), (0, 0));
        others.add(&key(3), added(new, later), &limits).unwrap();
        assert_eq!(others.providers.len(), 1, "the number was reused");
        assert!(others.providers(&key(1)).is_empty());
        let records = others.providers(&key(3));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].provider, new);
        // Kept to the second, rounded up: never dropped early.
        let expires = records[0].expires.unwrap();
        assert!(expires >= later && expires < later + Duration::from_secs(1));
    }

    #[test]
    fn a_renewed_record_moves_its_expiry_and_counts_once() {
        let (now, limits) = (Instant::now(), StoreLimits::default());
        let mut others = Others::new(now);
        let peer = PeerId::random();
        others
            .add(&key(1), added(peer, now + Duration::from_secs(10)), &limits)
            .unwrap();
        others
            .add(
                &key(1),
                added(peer, now + Duration::from_secs(100)),
                &limits,
            )
            .unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(others.expire(now + Duration::from_secs(50)), 0);
        others.remove(&key(1), &peer);
        assert_eq!((others.len(), others.provider_count()), (0, 0));
    }
}
