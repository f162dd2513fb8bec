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

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use tracing::{debug, warn};

use crate::Key;
use crate::addrs::AddressPolicy;

mod others;

use others::{Added, Full, Others};

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
    /// others takes ~100 bytes by layout ([`others`]: 8 bytes under its key's hash, in a
    /// map), so they are bounded near 10 MB.
    fn default() -> StoreLimits {
        StoreLimits {
            max_provided_keys: 100_000,
            max_records: 100_000,
            max_records_per_peer: 20_000,
            max_providers_per_key: 20,
        }
    }
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
    others: Others,
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
            others: Others::new(Instant::now()),
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
        self.others.len()
    }

    /// Removes expired records of others, at most once a [`SWEEP_INTERVAL`]; logs what was
    /// refused since the last sweep.
    pub(crate) fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_INTERVAL {
            return;
        }
        self.last_sweep = now;
        let expired = self.others.expire(now);
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
        debug!(expired, held = self.others.len(), "swept provider records");
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
        let added = Added {
            provider: record.provider,
            expires: record.expires,
            addresses: record.addresses,
        };
        match self.others.add(&record.key, added, &self.limits) {
            Ok(()) => Ok(()),
            Err(Full::Peer | Full::Store) => {
                self.refused.over_quota += 1;
                Err(Error::MaxProvidedKeys)
            }
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
        let mut records: Vec<ProviderRecord> = self.own.get(key).cloned().into_iter().collect();
        records.extend(self.others.providers(key));
        records
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            self.own.remove(key);
            return;
        }
        self.others.remove(key, provider);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::Multiaddr;
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
        assert_eq!(store.others.provider_count(), 0);
    }
}
