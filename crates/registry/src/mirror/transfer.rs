//! [`Transfer`]: one blob response fed from peers, verified, resumed when a peer fails.
//!
//! containerd has no timeouts of its own and gives up after three `Range` retries without
//! progress, so this node owns the failure handling: a peer that sends nothing for
//! `stall_timeout` is dropped, the stream resumes at the current offset from another peer
//! that holds the blob complete or is downloading it, and when nobody can continue the
//! response is cut cleanly and the digest marked [`Decision::Cut`]: containerd's `Range`
//! retry then gets a 404 and continues from the upstream where it stopped.

use std::collections::HashSet;
use std::io;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use spegel_metrics::{FlightOutcome, Source};
use spegel_oci::Verifier;
use spegel_routing::{Key, PeerId, Provider};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::flight::{self, Decision};
use super::{Ask, Fetch, IN_FLIGHT, Mirror, Outcome, Peers, SOURCE_HEADER};

/// A peer stream must deliver at least [`MIN_RATE_BYTES`] in every window of this length.
const MIN_RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// 16 KiB/s over [`MIN_RATE_WINDOW`]: far below any download a cluster pulls through, far
/// above a peer that trickles bytes to hold a stream open.
const MIN_RATE_BYTES: u64 = 160 * 1024;

/// One blob response being fed from peers.
pub(super) struct Transfer {
    pub(super) mirror: Mirror,
    pub(super) fetch: Fetch,
    /// Offset of the first byte of the response within the blob.
    pub(super) first: u64,
    /// Bytes the response promised.
    pub(super) length: u64,
    pub(super) verify: bool,
    /// When the first peer's answer arrived (for the mirror's log).
    pub(super) started: std::time::Instant,
}

impl Transfer {
    pub(super) async fn run(
        self,
        mut peer: Provider,
        mut response_headers: HeaderMap,
        mut body: Incoming,
        tx: mpsc::Sender<io::Result<Bytes>>,
    ) {
        let mut sent = 0u64;
        let mut verifier = match (&self.fetch.digest, self.verify) {
            (Some(digest), true) => Some(Verifier::new(digest.clone())),
            _ => None,
        };
        // The peer counts as busy while it streams, not only until its headers arrive, so
        // that concurrent requests go to the least-used peer.
        let mut _streaming = self.mirror.use_peer(peer.peer);
        let mut contributors = vec![peer.peer];
        let mut failed: HashSet<PeerId> = HashSet::new();
        // The last chunk is held back until the digest is checked.
        let mut held: Option<Bytes> = None;
        loop {
            let source = source_of(&response_headers);
            let before = sent;
            let copied = self
                .copy(&mut body, source, &mut sent, &mut verifier, &mut held, &tx)
                .await;
            let zone = self.mirror.zones.relation(&peer.peer).label();
            self.mirror.metrics.transfer.from_peer(zone, sent - before);
            match copied {
                Copy::ClientGone => {
                    self.mirror.record(
                        &self.fetch,
                        self.started,
                        Some(peer),
                        sent,
                        Outcome::ClientGone,
                    );
                    return;
                }
                Copy::TooLong => break,
                Copy::Ended if sent == self.length => break,
                Copy::Ended | Copy::Broken => {}
            }
            failed.insert(peer.peer);
            info!(peer = %peer.peer, sent, of = self.length, "peer stream broke; resuming from another peer");
            match self.resume(sent, &failed).await {
                Some((next, response)) => {
                    if let Some(digest) = &self.fetch.digest {
                        self.mirror.flights.follow(digest, next.peer);
                    }
                    peer = next;
                    _streaming = self.mirror.use_peer(peer.peer);
                    contributors.push(peer.peer);
                    let (parts, next_body) = response.into_parts();
                    response_headers = parts.headers;
                    body = next_body;
                }
                None => {
                    self.cut(sent).await;
                    let outcome = Outcome::Cut;
                    self.mirror
                        .record(&self.fetch, self.started, Some(peer), sent, outcome);
                    let _ = tx
                        .send(Err(io::Error::other("no peer could finish the blob")))
                        .await;
                    return;
                }
            }
        }
        let complete = sent == self.length;
        let verified = verifier.is_none_or(|v| v.finish());
        let outcome = match (complete, verified) {
            (true, true) => Outcome::Served,
            _ => Outcome::Mismatch,
        };
        self.mirror
            .record(&self.fetch, self.started, Some(peer), sent, outcome);
        match (complete, verified, held) {
            (true, true, last) => {
                if let Some(last) = last {
                    let n = last.len() as u64;
                    if tx.send(Ok(last)).await.is_err() {
                        return;
                    }
                    self.mirror
                        .metrics
                        .transfer
                        .served(source_of(&response_headers), n);
                }
                self.mirror
                    .metrics
                    .mirror_request(&self.fetch.registry, true);
            }
            _ => {
                if let Some(digest) = &self.fetch.digest {
                    self.mirror.distrust(digest, &contributors);
                }
                self.mirror
                    .metrics
                    .mirror_request(&self.fetch.registry, false);
                let _ = tx
                    .send(Err(io::Error::other("blob from peers failed verification")))
                    .await;
            }
        }
    }

    /// Another peer to continue from byte `sent` of the response: one that holds the blob
    /// complete, else one that is downloading it. When the peer everybody followed fails,
    /// all its followers break at once: they elect one of them again (rendezvous over the
    /// nodes still downloading it, as in [`super::flight`]); the first in order cuts its
    /// response, so its containerd continues from the upstream with `Range`, and the others
    /// follow its download instead of all going upstream.
    async fn resume(
        &self,
        sent: u64,
        failed: &HashSet<PeerId>,
    ) -> Option<(Provider, http::Response<Incoming>)> {
        let digest = self.fetch.digest.clone()?;
        let ask = Ask {
            fetch: &self.fetch,
            range: Some(format!(
                "bytes={}-{}",
                self.first + sent,
                self.first + self.length - 1
            )),
            hold: std::time::Duration::ZERO,
            excluded: failed.clone(),
        };
        if let Some(mut peers) =
            Peers::resolve(&self.mirror, &Key::Digest(digest.clone()), &ask).await
            && let Some(answer) = peers.first_answer(&self.mirror, &ask).await
        {
            return Some(answer);
        }
        let claimants: Vec<Provider> = self
            .mirror
            .collect_for(
                &Key::InFlight(digest.clone()),
                super::MAX_CLAIMANTS,
                super::RESUME_COLLECT,
            )
            .await
            .into_iter()
            .filter(|p| !failed.contains(&p.peer))
            .collect();
        let local = self.mirror.resolver.local_peer_id();
        let order = flight::ranked(&digest, claimants.iter().map(|p| p.peer), local);
        // The nodes asked have decided long ago (no hold); one that cannot answer within the
        // header timeout is skipped.
        for peer in order {
            if peer == local {
                return None;
            }
            let Some(provider) = claimants.iter().find(|p| p.peer == peer) else {
                continue;
            };
            match self.mirror.request(provider, &ask).await {
                Ok(response) => return Some((provider.clone(), response)),
                Err(e) => debug!(%digest, %peer, error = %e, "cannot resume from this download"),
            }
        }
        None
    }

    /// Nobody can continue: containerd will retry with `Range`; answer that retry 404.
    async fn cut(&self, sent: u64) {
        warn!(digest = ?self.fetch.digest, sent, of = self.length, "no peer can finish the blob; cutting the response so containerd continues from the upstream");
        if let Some(digest) = &self.fetch.digest {
            self.mirror.flights.decide(digest, Decision::Cut);
        }
        self.mirror.metrics.transfer.flight(FlightOutcome::cut);
        self.mirror
            .metrics
            .mirror_request(&self.fetch.registry, false);
    }

    /// Copies one peer's body into the response until it ends or breaks.
    async fn copy(
        &self,
        body: &mut Incoming,
        source: Source,
        sent: &mut u64,
        verifier: &mut Option<Verifier>,
        held: &mut Option<Bytes>,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> Copy {
        // Besides the stall timeout (nothing for a while), a minimum rate over a window: a
        // peer trickling a byte now and then is dropped too.
        let mut window = (tokio::time::Instant::now(), 0u64);
        loop {
            if window.0.elapsed() >= MIN_RATE_WINDOW {
                if window.1 < MIN_RATE_BYTES {
                    debug!(bytes = window.1, "peer is slower than the minimum rate");
                    return Copy::Broken;
                }
                window = (tokio::time::Instant::now(), 0);
            }
            let frame =
                match tokio::time::timeout(self.mirror.config.stall_timeout, body.frame()).await {
                    Err(_) => {
                        debug!("peer sent nothing within the stall timeout");
                        return Copy::Broken;
                    }
                    Ok(None) => return Copy::Ended,
                    Ok(Some(Err(e))) => {
                        debug!(error = %e, "peer body broke");
                        return Copy::Broken;
                    }
                    Ok(Some(Ok(frame))) => frame,
                };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if *sent + data.len() as u64 > self.length {
                return Copy::TooLong;
            }
            *sent += data.len() as u64;
            window.1 += data.len() as u64;
            if let Some(v) = verifier.as_mut() {
                v.update(&data);
            }
            if let Some(previous) = held.replace(data) {
                let n = previous.len() as u64;
                if tx.send(Ok(previous)).await.is_err() {
                    return Copy::ClientGone;
                }
                self.mirror.metrics.transfer.served(source, n);
            }
        }
    }
}

/// Whether a peer's answer comes from its finished content or from a download in progress.
fn source_of(headers: &HeaderMap) -> Source {
    match headers.get(SOURCE_HEADER) {
        Some(v) if v == IN_FLIGHT => Source::peer_in_flight,
        _ => Source::peer,
    }
}

enum Copy {
    Ended,
    Broken,
    TooLong,
    ClientGone,
}
