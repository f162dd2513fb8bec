//! The libp2p transport: TCP, then (with a cluster secret) the `pnet` private-network
//! handshake, then Noise and yamux.
//!
//! With a pre-shared key every byte after the TCP handshake is encrypted with it (XSalsa20),
//! so a peer without the same key cannot even negotiate Noise: its connection fails before
//! Kademlia or identify see it. Without a key this is the plain transport libp2p's
//! `with_tcp` builds.

use std::time::Duration;

use futures_util::future::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{PeerId, noise, tcp, yamux};

/// A connection that has not finished the pnet, Noise and yamux handshakes by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport for `key`, private to holders of `psk` when one is given.
pub(crate) fn build(
    key: &Keypair,
    psk: Option<[u8; 32]>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let noise = noise::Config::new(key)?;
    let psk = psk.map(PreSharedKey::new);
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |socket, _| async move {
                match psk {
                    Some(psk) => PnetConfig::new(psk)
                        .handshake(socket)
                        .await
                        .map(Either::Left),
                    None => Ok(Either::Right(socket)),
                }
            })
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(HANDSHAKE_TIMEOUT)
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    )
}

/// A short, non-secret name of `psk` (libp2p's fingerprint), to compare nodes' keys in logs.
pub fn psk_fingerprint(psk: [u8; 32]) -> String {
    PreSharedKey::new(psk).fingerprint().to_string()
}
