//! The DHT record store: provider records only, and only for keys this codebase would
//! advertise itself.
//!
//! - Value records (`PUT_VALUE`) are never stored: spegel publishes none.
//! - Others' provider records are accepted only for keys [`Key::from_record_key`] parses,
//!   at most [`StoreLimits::max_records_per_peer`] per provider and
//!   [`StoreLimits::max_records`] in total, with their announced addresses filtered
//!   ([`crate::addrs`]); they are swept once a minute when they expire (not only when someone
//!   looks the key up).
//! - Our own records live apart, capped by [`StoreLimits::max_provided_keys`], so a flood of
//!   others' records can never stop this node advertising.

use std::borrow::Cow;
use std::collections::{HashMap, hash_map};
use std::iter;
use std::time::{Duration, Instant};

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, warn};

use crate::Key;
use crate::addrs::AddressPolicy;

/// How often expired records of others are removed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Addresses kept per provider record.
const MAX_ADDRESSES_PER_RECORD: usize = 4;

/// How much the store holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    /// Keys this node provides.
    pub max_provided_keys: usize,
    /// Provider records of other nodes, in total.
    pub max_records: usize,
    /// Provider records of one other node.
    pub max_records_per_peer: usize,
    /// Providers kept per key (Kademlia's replication factor).
    pub max_providers_per_key: usize,
}

impl Default for StoreLimits {
    /// 100k own keys; 100k records of others, 20k per peer, 20 per key. A record of
    /// others costs ~400 bytes (RSS grew ~650 bytes per record in `bench-dht` at 200 nodes
    /// with 2,000 keys each, allocator included), so they are bounded near 40-65 MB.
    fn default() -> StoreLimits {
        StoreLimits {
            max_provided_keys: 100_000,
            max_records: 100_000,
            max_records_per_peer: 20_000,
            max_providers_per_key: 20,
        }
    }
}

/// Another node's record of a key.
#[derive(Debug, Clone, Copy)]
struct Held {
    provider: PeerId,
    expires: Option<Instant>,
}

impl Held {
    fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| now >= t)
    }
}

/// What the store keeps per other provider: how many of its records it holds (its quota)
/// and the addresses its latest record carried.
#[derive(Debug, Default)]
struct OtherProvider {
    records: usize,
    addresses: Vec<Multiaddr>,
}

/// Records refused since the store was created; each sweep reports those it has not yet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub values: u64,
    pub not_keys: u64,
    pub over_quota: u64,
}

impl Refused {
    /// Provider records of others refused (not a key, or over a quota).
    pub(crate) fn provider_records(&self) -> u64 {
        self.not_keys + self.over_quota
    }
}

/// See the module doc.
pub(crate) struct ProviderStore {
    local: PeerId,
    limits: StoreLimits,
    addresses: AddressPolicy,
    own: HashMap<RecordKey, ProviderRecord>,
    /// Others' records by key, without the key (the map's) nor addresses (the provider's),
    /// in a `Vec` sized for the one provider most keys have: `bench-dht` at 200 nodes with
    /// 2,000 keys each (40,000 records of others per node) went from 50.3 MB to 34.7 MB per
    /// node against whole `ProviderRecord`s in a `Vec` grown to four.
    others: HashMap<RecordKey, Vec<Held>>,
    per_peer: HashMap<PeerId, OtherProvider>,
    others_count: usize,
    last_sweep: Instant,
    refused: Refused,
    /// `refused` as of the last sweep's report.
    reported: Refused,
}

impl ProviderStore {
    pub(crate) fn new(local: PeerId, limits: StoreLimits, addresses: AddressPolicy) -> Self {
        ProviderStore {
            local,
            limits,
            addresses,
            own: HashMap::new(),
            others: HashMap::new(),
            per_peer: HashMap::new(),
            others_count: 0,
            last_sweep: Instant::now(),
            refused: Refused::default(),
            reported: Refused::default(),
        }
    }

    /// What was refused since the store was created.
    pub(crate) fn refused(&self) -> Refused {
        self.refused
    }

    /// How many records of other nodes are held.
    #[cfg(test)]
    pub(crate) fn others_count(&self) -> usize {
        self.others_count
    }

    /// Removes expired records of others, at most once a [`SWEEP_INTERVAL`]; logs what was
    /// refused since the last sweep.
    pub(crate) fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_INTERVAL {
            return;
        }
        self.last_sweep = now;
        let before = self.others_count;
        let per_peer = &mut self.per_peer;
        self.others.retain(|_, records| {
            records.retain(|r| {
                let keep = !r.is_expired(now);
                if !keep {
                    forget_one(per_peer, &r.provider);
                }
                keep
            });
            !records.is_empty()
        });
        self.others_count = self.others.values().map(Vec::len).sum();
        let (refused, reported) = (self.refused, self.reported);
        self.reported = refused;
        if refused != reported {
            warn!(
                values = refused.values - reported.values,
                not_keys = refused.not_keys - reported.not_keys,
                over_quota = refused.over_quota - reported.over_quota,
                "refused DHT records from peers in the last minute"
            );
        }
        debug!(
            expired = before - self.others_count,
            held = self.others_count,
            "swept provider records"
        );
    }

    fn add_own(&mut self, record: ProviderRecord) -> Result<()> {
        let held = self.own.len();
        match self.own.entry(record.key.clone()) {
            hash_map::Entry::Occupied(mut e) => {
                e.insert(record);
            }
            hash_map::Entry::Vacant(e) => {
                if held >= self.limits.max_provided_keys {
                    return Err(Error::MaxProvidedKeys);
                }
                e.insert(record);
            }
        }
        Ok(())
    }

    fn add_other(&mut self, mut record: ProviderRecord) -> Result<()> {
        if Key::from_record_key(record.key.as_ref()).is_none() {
            self.refused.not_keys += 1;
            return Err(Error::MaxRecords);
        }
        record.addresses.retain(|a| self.addresses.allows(a));
        record.addresses.truncate(MAX_ADDRESSES_PER_RECORD);
        let held_by_peer = self.per_peer.get(&record.provider).map_or(0, |p| p.records);
        let providers = self
            .others
            .entry(record.key.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        if let Some(existing) = providers.iter_mut().find(|p| p.provider == record.provider) {
            existing.expires = record.expires;
            if let Some(peer) = self.per_peer.get_mut(&record.provider)
                && !record.addresses.is_empty()
            {
                peer.addresses = record.addresses;
            }
            return Ok(());
        }
        if providers.len() >= self.limits.max_providers_per_key {
            // As MemoryStore: the first providers stay (a Sybil flood cannot push them out).
            return Ok(());
        }
        if held_by_peer >= self.limits.max_records_per_peer
            || self.others_count >= self.limits.max_records
        {
            if providers.is_empty() {
                self.others.remove(&record.key);
            }
            self.refused.over_quota += 1;
            return Err(Error::MaxProvidedKeys);
        }
        let peer = self.per_peer.entry(record.provider).or_default();
        peer.records += 1;
        if !record.addresses.is_empty() {
            peer.addresses = record.addresses;
        }
        self.others_count += 1;
        providers.push(Held {
            provider: record.provider,
            expires: record.expires,
        });
        Ok(())
    }
}

fn forget_one(per_peer: &mut HashMap<PeerId, OtherProvider>, peer: &PeerId) {
    if let hash_map::Entry::Occupied(mut e) = per_peer.entry(*peer) {
        let records = &mut e.get_mut().records;
        *records = records.saturating_sub(1);
        if *records == 0 {
            e.remove();
        }
    }
}

type ProvidedIter<'a> = iter::Map<
    hash_map::Values<'a, RecordKey, ProviderRecord>,
    fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
>;

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = ProvidedIter<'a>;

    fn get(&self, _: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    /// Value records are refused: spegel publishes none, and a peer's values would be
    /// memory spent on nothing.
    fn put(&mut self, _: Record) -> Result<()> {
        self.refused.values += 1;
        Err(Error::MaxRecords)
    }

    fn remove(&mut self, _: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        iter::empty()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        // Every record (thousands per re-announcement round): trace, not debug.
        if tracing::enabled!(tracing::Level::TRACE)
            && let Some(key) = crate::Key::from_record_key(record.key.as_ref())
        {
            tracing::trace!(%key, provider = %record.provider, "provider record stored");
        }
        if record.provider == self.local {
            self.add_own(record)
        } else {
            self.add_other(record)
        }
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let own = self.own.get(key).cloned();
        let others = self.others.get(key).into_iter().flatten().map(|held| {
            let addresses = self.per_peer.get(&held.provider);
            ProviderRecord {
                key: key.clone(),
                provider: held.provider,
                expires: held.expires,
                addresses: addresses.map(|p| p.addresses.clone()).unwrap_or_default(),
            }
        });
        own.into_iter().chain(others).collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            self.own.remove(key);
            return;
        }
        if let hash_map::Entry::Occupied(mut e) = self.others.entry(key.clone()) {
            let records = e.get_mut();
            if let Some(i) = records.iter().position(|r| r.provider == *provider) {
                records.swap_remove(i);
                self.others_count = self.others_count.saturating_sub(1);
                forget_one(&mut self.per_peer, provider);
            }
            if records.is_empty() {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spegel_oci::Digest;

    fn store(limits: StoreLimits) -> (ProviderStore, PeerId) {
        let local = PeerId::random();
        let policy = AddressPolicy::new(false, 5001);
        (ProviderStore::new(local, limits, policy), local)
    }

    fn digest_key(i: u32) -> RecordKey {
        Key::Digest(Digest::sha256_of(&i.to_be_bytes())).record_key()
    }

    fn record(key: RecordKey, provider: PeerId, ttl: Duration) -> ProviderRecord {
        ProviderRecord {
            key,
            provider,
            expires: Some(Instant::now() + ttl),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn values_and_junk_keys_are_refused() {
        let (mut store, _) = store(StoreLimits::default());
        let peer = PeerId::random();
        assert!(store.put(Record::new(digest_key(1), vec![1; 100])).is_err());
        let junk = RecordKey::new(&"not a key");
        let hour = Duration::from_secs(3600);
        assert!(
            store
                .add_provider(record(junk.clone(), peer, hour))
                .is_err()
        );
        assert!(store.providers(&junk).is_empty());
        assert!(
            store
                .add_provider(record(digest_key(1), peer, hour))
                .is_ok()
        );
        assert_eq!(store.providers(&digest_key(1)).len(), 1);
        assert_eq!(store.records().count(), 0);
    }

    #[test]
    fn one_peer_cannot_hold_more_than_its_quota_nor_crowd_out_our_keys() {
        let limits = StoreLimits {
            max_provided_keys: 3,
            max_records: 5,
            max_records_per_peer: 2,
            max_providers_per_key: 20,
        };
        let (mut store, local) = store(limits);
        let hour = Duration::from_secs(3600);
        let flooder = PeerId::random();
        let stored = (0..10)
            .filter(|i| {
                store
                    .add_provider(record(digest_key(*i), flooder, hour))
                    .is_ok()
            })
            .count();
        assert_eq!(stored, 2);
        for i in 0..3 {
            assert!(
                store
                    .add_provider(record(digest_key(100 + i), local, hour))
                    .is_ok()
            );
        }
        assert!(
            store
                .add_provider(record(digest_key(200), local, hour))
                .is_err()
        );
        assert_eq!(store.provided().count(), 3);
        // Others fill the total, never our own part.
        for _ in 0..5 {
            let _ = store.add_provider(record(digest_key(300), PeerId::random(), hour));
        }
        assert_eq!(store.others_count(), 5);
        assert_eq!(store.provided().count(), 3);
    }

    #[test]
    fn expired_records_of_others_are_swept_and_free_the_quota() {
        let limits = StoreLimits {
            max_records_per_peer: 1,
            ..StoreLimits::default()
        };
        let (mut store, _) = store(limits);
        let peer = PeerId::random();
        let short = Duration::from_millis(1);
        store
            .add_provider(record(digest_key(1), peer, short))
            .unwrap();
        assert!(
            store
                .add_provider(record(digest_key(2), peer, Duration::from_secs(3600)))
                .is_err()
        );
        store.sweep(Instant::now() + SWEEP_INTERVAL);
        assert_eq!(store.others_count(), 0);
        assert!(store.providers(&digest_key(1)).is_empty());
        assert!(
            store
                .add_provider(record(digest_key(2), peer, Duration::from_secs(3600)))
                .is_ok()
        );
    }

    #[test]
    fn our_own_records_are_removed_and_provided_apart() {
        let (mut store, local) = store(StoreLimits::default());
        let other = PeerId::random();
        let hour = Duration::from_secs(3600);
        store
            .add_provider(record(digest_key(1), local, hour))
            .unwrap();
        store
            .add_provider(record(digest_key(1), other, hour))
            .unwrap();
        assert_eq!(store.providers(&digest_key(1)).len(), 2);
        assert_eq!(store.provided().count(), 1);
        store.remove_provider(&digest_key(1), &local);
        assert_eq!(store.provided().count(), 0);
        assert_eq!(store.providers(&digest_key(1)).len(), 1);
    }

    #[test]
    fn a_providers_latest_addresses_come_with_each_of_its_records() {
        let (mut store, _) = store(StoreLimits::default());
        let (peer, hour) = (PeerId::random(), Duration::from_secs(3600));
        let at = |port: u16| -> Multiaddr { format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap() };
        let with = |key, addresses: Vec<Multiaddr>| ProviderRecord {
            addresses,
            ..record(key, peer, hour)
        };
        store
            .add_provider(with(digest_key(1), vec![at(5001)]))
            .unwrap();
        store
            .add_provider(with(digest_key(2), vec![at(5002)]))
            .unwrap();
        // A record without addresses keeps those the provider announced last.
        store.add_provider(with(digest_key(3), Vec::new())).unwrap();
        for i in 1..=3 {
            let records = store.providers(&digest_key(i));
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].key, digest_key(i));
            assert_eq!(records[0].addresses, vec![at(5002)], "key {i}");
        }
        store.remove_provider(&digest_key(1), &peer);
        store.remove_provider(&digest_key(2), &peer);
        store.remove_provider(&digest_key(3), &peer);
        assert!(store.per_peer.is_empty());
    }
}
