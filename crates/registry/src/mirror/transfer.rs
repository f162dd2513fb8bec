//! [`Transfer`]: one blob response fed from peers, verified, resumed when a peer fails.

use std::io;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use spegel_oci::Verifier;
use spegel_routing::Provider;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{Fetch, Mirror, Peers};

/// One blob response being fed from peers.
pub(super) struct Transfer {
    pub(super) mirror: Mirror,
    pub(super) fetch: Fetch,
    pub(super) peers: Peers,
    /// Offset of the first byte of the response within the blob.
    pub(super) first: u64,
    /// Bytes the response promised.
    pub(super) length: u64,
    pub(super) verify: bool,
}

impl Transfer {
    pub(super) async fn run(
        mut self,
        mut peer: Provider,
        mut body: Incoming,
        tx: mpsc::Sender<io::Result<Bytes>>,
    ) {
        let mut sent = 0u64;
        let mut verifier = match (&self.fetch.digest, self.verify) {
            (Some(digest), true) => Some(Verifier::new(digest.clone())),
            _ => None,
        };
        let mut contributors = vec![peer.peer];
        // The last chunk is held back until the digest is checked.
        let mut held: Option<Bytes> = None;
        loop {
            match self
                .copy(&mut body, &mut sent, &mut verifier, &mut held, &tx)
                .await
            {
                Copy::ClientGone => return,
                Copy::TooLong => break,
                Copy::Ended if sent == self.length => break,
                Copy::Ended | Copy::Broken => {}
            }
            info!(peer = %peer.peer, sent, of = self.length, "peer stream broke; resuming from another peer");
            let range = format!(
                "bytes={}-{}",
                self.first + sent,
                self.first + self.length - 1
            );
            match self
                .peers
                .first_answer(&self.mirror, &self.fetch, Some(&range))
                .await
            {
                Some((next, response)) => {
                    peer = next;
                    contributors.push(peer.peer);
                    body = response.into_body();
                }
                None => {
                    let _ = tx
                        .send(Err(io::Error::other("no peer could finish the blob")))
                        .await;
                    return;
                }
            }
        }
        let complete = sent == self.length;
        let verified = verifier.is_none_or(|v| v.finish());
        match (complete, verified, held) {
            (true, true, Some(last)) => {
                let _ = tx.send(Ok(last)).await;
            }
            (true, true, None) => {}
            _ => {
                if let Some(digest) = &self.fetch.digest {
                    self.mirror.distrust(digest, &contributors);
                }
                let _ = tx
                    .send(Err(io::Error::other("blob from peers failed verification")))
                    .await;
            }
        }
    }

    /// Copies one peer's body into the response until it ends or breaks.
    async fn copy(
        &self,
        body: &mut Incoming,
        sent: &mut u64,
        verifier: &mut Option<Verifier>,
        held: &mut Option<Bytes>,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> Copy {
        loop {
            let frame =
                match tokio::time::timeout(self.mirror.config.stall_timeout, body.frame()).await {
                    Err(_) => return Copy::Broken,
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
            if let Some(v) = verifier.as_mut() {
                v.update(&data);
            }
            if let Some(previous) = held.replace(data)
                && tx.send(Ok(previous)).await.is_err()
            {
                return Copy::ClientGone;
            }
        }
    }
}

enum Copy {
    Ended,
    Broken,
    TooLong,
    ClientGone,
}
