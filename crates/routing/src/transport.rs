//! The libp2p transport: TCP whose dials go only where the [`AddressPolicy`] allows, then
//! (with a cluster secret) the `pnet` private-network handshake, then Noise and yamux.
//!
//! The dial filter sits under everything else, so no address a peer supplies (identify,
//! provider records, the closer peers and provider addresses in Kademlia answers) is dialled
//! unchecked, whichever behaviour asked for the dial. With a pre-shared key every byte after
//! the TCP handshake is encrypted with it (XSalsa20), so a peer without the same key cannot
//! even negotiate Noise: its connection fails before Kademlia or identify see it.
//!
//! Every connection counts the bytes written to it (under pnet: what goes on the wire above
//! TCP), for [`crate::RouterStats::bytes_sent`].
//!
//! A router started [`crate::RouterConfig::in_memory`] (benchmarks of many routers in one
//! process) runs the same filter, pnet, Noise and yamux over libp2p's memory transport
//! instead of TCP.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, MemoryTransport, TransportError, TransportEvent,
};
use libp2p::core::upgrade::Version;
use libp2p::core::{Multiaddr, Transport};
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{PeerId, noise, tcp, yamux};

use crate::addrs::AddressPolicy;

/// A connection that has not finished the pnet, Noise and yamux handshakes by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A transport that refuses to dial addresses its policy does not allow.
struct FilteredDial<T> {
    inner: T,
    policy: AddressPolicy,
}

impl<T: Transport + Unpin> Transport for FilteredDial<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if !self.policy.allows(&addr) {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// A connection that adds the bytes written to it to `sent`.
struct Counted<S> {
    inner: S,
    sent: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    fn count(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read_vectored(cx, bufs)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(&written);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Why the transport could not be built (the shape libp2p's `SwarmBuilder` takes).
pub(crate) type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// TCP (or the memory transport when `in_memory`) with dials filtered by `policy`, pnet with
/// `psk` when one is given, Noise with `key`, yamux; the bytes written are added to `sent`.
pub(crate) fn build(
    key: &Keypair,
    policy: AddressPolicy,
    psk: Option<[u8; 32]>,
    in_memory: bool,
    sent: Arc<AtomicU64>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BuildError> {
    if in_memory {
        let memory = FilteredDial {
            inner: MemoryTransport::default(),
            policy,
        };
        return upgrade(memory, key, psk, sent);
    }
    let tcp = FilteredDial {
        inner: tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
        policy,
    };
    upgrade(tcp, key, psk, sent)
}

/// The upgrades every connection goes through: pnet (with `psk`), Noise, yamux, all within
/// [`HANDSHAKE_TIMEOUT`].
fn upgrade<T>(
    base: T,
    key: &Keypair,
    psk: Option<[u8; 32]>,
    sent: Arc<AtomicU64>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BuildError>
where
    T: Transport + Unpin + Send + 'static,
    T::Output: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let psk = psk.map(PreSharedKey::new);
    Ok(base
        .map(move |inner, _| Counted {
            inner,
            sent: Arc::clone(&sent),
        })
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
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(HANDSHAKE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// A short, non-secret name of `psk` (libp2p's fingerprint), to compare nodes' keys in logs.
pub fn psk_fingerprint(psk: [u8; 32]) -> String {
    PreSharedKey::new(psk).fingerprint().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dials_to_refused_addresses_never_leave_the_node() {
        let policy = AddressPolicy::new(false, 5001);
        let mut transport = FilteredDial {
            inner: tcp::tokio::Transport::new(tcp::Config::default()),
            policy,
        };
        let metadata: Multiaddr = "/ip4/169.254.169.254/tcp/5001".parse().unwrap();
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::New,
        };
        assert!(matches!(
            transport.dial(metadata, opts),
            Err(TransportError::MultiaddrNotSupported(_))
        ));
    }
}
