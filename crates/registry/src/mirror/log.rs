//! [`MirrorLog`]: the last requests this node mirrored from peers, for an operator's view
//! (the debug page). A bounded ring: the oldest entry goes when a new one comes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use spegel_routing::Provider;

/// Entries kept.
pub const MIRROR_LOG_ENTRIES: usize = 50;

/// Longest `registry` and `path` kept in an entry (both come from a request).
const MAX_FIELD_CHARS: usize = 300;

/// How a mirrored request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from peers, every byte verified.
    Served,
    /// No peer held it or answered: a 404, so containerd went to the upstream.
    NoPeer,
    /// The bytes did not match the digest: the response was aborted.
    Mismatch,
    /// The stream broke and no peer could finish it: the response was cut.
    Cut,
    /// The client went away before the end.
    ClientGone,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Served => "served",
            Outcome::NoPeer => "no peer (upstream)",
            Outcome::Mismatch => "digest mismatch",
            Outcome::Cut => "cut (no peer could finish)",
            Outcome::ClientGone => "client went away",
        })
    }
}

/// One request this node mirrored (or tried to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredRequest {
    /// When it ended.
    pub at: SystemTime,
    /// The upstream registry it was for (`ns`).
    pub registry: String,
    /// `/v2/<repository>/<manifests|blobs>/<reference>`.
    pub path: String,
    /// The peer that sent the last byte (`None` when no peer answered).
    pub peer: Option<Provider>,
    pub bytes: u64,
    /// From the request (manifests, misses) or from the peer's first answer (blobs) to the
    /// end.
    pub duration: Duration,
    pub outcome: Outcome,
}

/// The last [`MIRROR_LOG_ENTRIES`] mirrored requests, newest last.
#[derive(Debug, Default)]
pub struct MirrorLog {
    entries: Mutex<VecDeque<MirroredRequest>>,
}

impl MirrorLog {
    /// Records `entry`, dropping the oldest past [`MIRROR_LOG_ENTRIES`].
    pub fn record(&self, mut entry: MirroredRequest) {
        truncate(&mut entry.registry);
        truncate(&mut entry.path);
        if let Ok(mut entries) = self.entries.lock() {
            while entries.len() >= MIRROR_LOG_ENTRIES {
                entries.pop_front();
            }
            entries.push_back(entry);
        }
    }

    /// The entries, newest first.
    pub fn recent(&self) -> Vec<MirroredRequest> {
        self.entries
            .lock()
            .map(|e| e.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

fn truncate(s: &mut String) {
    if let Some((i, _)) = s.char_indices().nth(MAX_FIELD_CHARS) {
        s.truncate(i);
    }
}

/// `path_and_query` without its query.
pub(super) fn path_of(path_and_query: &str) -> String {
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> MirroredRequest {
        MirroredRequest {
            at: SystemTime::UNIX_EPOCH,
            registry: "r".repeat(1000),
            path: format!("/v2/a/blobs/{n}"),
            peer: None,
            bytes: n,
            duration: Duration::ZERO,
            outcome: Outcome::Served,
        }
    }

    #[test]
    fn the_log_keeps_the_newest_entries_first_and_no_more() {
        let log = MirrorLog::default();
        for n in 0..(MIRROR_LOG_ENTRIES as u64 + 7) {
            log.record(entry(n));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), MIRROR_LOG_ENTRIES);
        assert_eq!(recent[0].bytes, MIRROR_LOG_ENTRIES as u64 + 6);
        assert_eq!(recent.last().unwrap().bytes, 7);
        assert_eq!(recent[0].registry.len(), MAX_FIELD_CHARS);
    }

    #[test]
    fn the_query_is_not_kept() {
        assert_eq!(path_of("/v2/a/blobs/x?ns=r"), "/v2/a/blobs/x");
        assert_eq!(path_of("/v2/a/blobs/x"), "/v2/a/blobs/x");
    }
}
