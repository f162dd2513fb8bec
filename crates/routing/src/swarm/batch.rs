//! `/spegel/provide/1.0.0`: many provider records in one request, for the re-announcement
//! sweep ([`super::sweep`]).
//!
//! Kademlia's `ADD_PROVIDER` carries one key, so a node that re-announces 2,000 digests to
//! the 20 nodes closest to each sends 40,000 of them. The sweep instead works out which keys
//! each peer should hold and sends each peer its keys at once: one request with up to
//! [`MAX_KEYS`] record keys and the sender's addresses, answered with how many records the
//! receiver's store kept. The receiver stores each as Kademlia would store an
//! `ADD_PROVIDER` from that peer (same store, same TTL, same quotas), so lookups find them
//! through the ordinary `GET_PROVIDERS`.
//!
//! The provider is the peer the connection authenticated, never a field of the request, so
//! nobody can announce for somebody else; addresses whose IP is not the one the peer
//! connected from are dropped. Requests are read with a size cap, a peer has at most
//! [`MAX_STREAMS`] requests open per connection, and a router reads and stores at most
//! [`MAX_RECEIVING`] at once over all its connections (each ≤ [`MAX_REQUEST_BYTES`], twice
//! that while its buffer grows: ≤ 8 MiB in all); one more is refused unread, and one that
//! takes longer than [`READ_WITHIN`] to arrive is dropped.
//!
//! Wire format (big-endian): `u16` address count, then each address as `u16` length and
//! bytes; `u16` key count, then each key the same way. The answer is a `u32`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::kad::RecordKey;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::{Multiaddr, StreamProtocol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/spegel/provide/1.0.0");
/// Record keys per request.
pub(crate) const MAX_KEYS: usize = 512;
/// Addresses per request (as many as a provider record keeps, and a few more).
const MAX_ADDRESSES: usize = 8;
/// The largest request read: [`MAX_KEYS`] keys of ~70 bytes (digests) fit many times over;
/// a request of long tag keys is cut by the sender at this size, not by the count.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// One address or key.
const MAX_ITEM_BYTES: usize = 1024;
/// Requests open per connection, each way.
const MAX_STREAMS: usize = 8;
/// Requests a router reads, decodes and stores at once, over all its connections. A sender
/// has one batch in flight per peer and a receiver stores one in well under a millisecond,
/// so honest senders come nowhere near it; 384 inbound connections × [`MAX_STREAMS`] could
/// otherwise hold ~190 MB of requests. One refused is sent once more, then its keys are
/// announced one by one (`super::sweep`).
const MAX_RECEIVING: usize = 64;
/// How long a request may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a received request may take to arrive once it holds one of the
/// [`MAX_RECEIVING`] places: ≤ 64 KiB that a sender writes at once arrive in milliseconds,
/// while a peer trickling requests in would otherwise hold places for the whole
/// [`TIMEOUT`] (`tests/dht_floods.rs` trickles them).
const READ_WITHIN: Duration = Duration::from_secs(5);
/// A request is written (and flushed) this many bytes at a time. Each write becomes one
/// yamux frame and one Noise frame, and Noise and the framing under it keep buffers as
/// large as the largest frame a connection ever carried, on both ends, for as long as the
/// connection lives. Kademlia's messages are a few KiB; a whole batch in one write made
/// frames of 16 KiB (yamux's split size), and with a few hundred connections per node those
/// kept buffers were most of a node's memory (`docs/scale.md`, "What a batch left in every
/// connection"). 4 KiB is below the 8 KiB the framing's buffers start with on every
/// connection, so only Noise's own two buffers grow, to 4 KiB.
const WRITE_CHUNK: usize = 4 * 1024;

/// A batch of provider records from the requesting peer.
#[derive(Debug)]
pub(crate) struct Batch {
    pub addresses: Vec<Multiaddr>,
    pub keys: Vec<RecordKey>,
    /// A received batch holds one of the [`MAX_RECEIVING`] places until it is dropped
    /// (stored); a batch to send holds none.
    pub receiving: Option<OwnedSemaphorePermit>,
}

impl Batch {
    /// Bytes this batch takes on the wire.
    pub(crate) fn encoded_len(&self) -> usize {
        let addresses: usize = self.addresses.iter().map(|a| 2 + a.len()).sum();
        let keys: usize = self.keys.iter().map(|k| 2 + k.as_ref().len()).sum();
        4 + addresses + keys
    }

    fn encode(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len());
        put_items(
            &mut out,
            self.addresses.iter().map(|a| a.to_vec()),
            MAX_ADDRESSES,
        )?;
        put_items(&mut out, self.keys.iter().map(|k| k.to_vec()), MAX_KEYS)?;
        if out.len() > MAX_REQUEST_BYTES {
            return Err(invalid("batch larger than the request limit"));
        }
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> io::Result<Batch> {
        let mut rest = bytes;
        let addresses = take_items(&mut rest, MAX_ADDRESSES)?
            .into_iter()
            .map(|b| Multiaddr::try_from(b.to_vec()).map_err(|e| invalid(&e.to_string())))
            .collect::<io::Result<Vec<_>>>()?;
        let keys = take_items(&mut rest, MAX_KEYS)?
            .into_iter()
            .map(|b| RecordKey::new(&b))
            .collect();
        if !rest.is_empty() {
            return Err(invalid("bytes after the keys"));
        }
        Ok(Batch {
            addresses,
            keys,
            receiving: None,
        })
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn put_items(
    out: &mut Vec<u8>,
    items: impl ExactSizeIterator<Item = Vec<u8>>,
    max: usize,
) -> io::Result<()> {
    if items.len() > max {
        return Err(invalid("too many items in a batch"));
    }
    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
    for item in items {
        if item.len() > MAX_ITEM_BYTES {
            return Err(invalid("item too long"));
        }
        out.extend_from_slice(&(item.len() as u16).to_be_bytes());
        out.extend_from_slice(&item);
    }
    Ok(())
}

fn take_items<'a>(rest: &mut &'a [u8], max: usize) -> io::Result<Vec<&'a [u8]>> {
    let count = usize::from(take_u16(rest)?);
    if count > max {
        return Err(invalid("too many items in a batch"));
    }
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(take_u16(rest)?);
        if len > MAX_ITEM_BYTES || len > rest.len() {
            return Err(invalid("item length past the limit or the request"));
        }
        let (item, after) = rest.split_at(len);
        items.push(item);
        *rest = after;
    }
    Ok(items)
}

fn take_u16(rest: &mut &[u8]) -> io::Result<u16> {
    let Some((bytes, after)) = rest.split_first_chunk::<2>() else {
        return Err(invalid("request cut short"));
    };
    *rest = after;
    Ok(u16::from_be_bytes(*bytes))
}

/// Reads and writes [`Batch`]es and their answers.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    /// Places for requests being received by this router (all its connections share them).
    receiving: Arc<Semaphore>,
}

impl Default for Codec {
    fn default() -> Codec {
        Codec {
            receiving: Arc::new(Semaphore::new(MAX_RECEIVING)),
        }
    }
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Batch;
    type Response = u32;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Batch>
    where
        T: AsyncRead + Unpin + Send,
    {
        let receiving = Arc::clone(&self.receiving)
            .try_acquire_owned()
            .map_err(|_| io::Error::other("too many provider batches being received"))?;
        let mut bytes = Vec::new();
        let mut limited = io.take(MAX_REQUEST_BYTES as u64 + 1);
        tokio::time::timeout(READ_WITHIN, limited.read_to_end(&mut bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "provider batch too slow"))??;
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(invalid("request larger than the limit"));
        }
        let mut batch = Batch::decode(&bytes)?;
        batch.receiving = Some(receiving);
        Ok(batch)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<u32>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = [0; 4];
        io.read_exact(&mut bytes).await?;
        Ok(u32::from_be_bytes(bytes))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        batch: Batch,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        for chunk in batch.encode()?.chunks(WRITE_CHUNK) {
            io.write_all(chunk).await?;
            io.flush().await?;
        }
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        stored: u32,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&stored.to_be_bytes()).await?;
        io.close().await
    }
}

/// The behaviour: every node both sends and answers batches.
pub(crate) type Behaviour = request_response::Behaviour<Codec>;

pub(crate) fn behaviour() -> Behaviour {
    request_response::Behaviour::with_codec(
        Codec::default(),
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(TIMEOUT)
            .with_max_concurrent_streams(MAX_STREAMS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(keys: usize) -> Batch {
        Batch {
            addresses: vec!["/ip4/10.0.0.1/tcp/5001".parse().unwrap()],
            keys: (0..keys)
                .map(|i| RecordKey::new(&format!("sha256:{i:064x}")))
                .collect(),
            receiving: None,
        }
    }

    #[test]
    fn a_batch_reads_back_as_written() {
        let sent = batch(MAX_KEYS);
        let bytes = sent.encode().unwrap();
        assert_eq!(bytes.len(), sent.encoded_len());
        let read = Batch::decode(&bytes).unwrap();
        assert_eq!((read.addresses, read.keys), (sent.addresses, sent.keys));
    }

    #[test]
    fn malformed_or_oversized_batches_are_refused() {
        assert!(batch(MAX_KEYS + 1).encode().is_err());
        let bytes = batch(3).encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Batch::decode(&trailing).is_err());
        // A count past the limit is refused before anything is allocated for it.
        let mut many = 0u16.to_be_bytes().to_vec();
        many.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(Batch::decode(&many).is_err());
        let not_an_address = [0, 1, 0, 2, 0xff, 0xff, 0, 0];
        assert!(Batch::decode(&not_an_address).is_err());
    }

    /// Records the size of every write and whether a flush followed it.
    #[derive(Default)]
    struct Writes {
        sizes: Vec<usize>,
        flushed: Vec<bool>,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.sizes.push(buf.len());
            self.flushed.push(false);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if let Some(last) = self.flushed.last_mut() {
                *last = true;
            }
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_request_goes_out_in_small_flushed_writes() {
        let sent = batch(MAX_KEYS);
        let len = sent.encoded_len();
        let mut io = Writes::default();
        request_response::Codec::write_request(&mut Codec::default(), &PROTOCOL, &mut io, sent)
            .await
            .unwrap();
        assert_eq!(io.sizes.iter().sum::<usize>(), len);
        assert!(io.sizes.len() > 1, "{:?}", io.sizes);
        assert!(io.sizes.iter().all(|&n| n <= WRITE_CHUNK), "{:?}", io.sizes);
        assert!(
            io.flushed.iter().all(|&f| f),
            "every write is flushed before the next"
        );
    }

    #[tokio::test]
    async fn requests_past_the_receiving_limit_are_refused_unread() {
        use request_response::Codec as _;
        let codec = Codec::default();
        let bytes = batch(3).encode().unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_RECEIVING {
            let read = codec.clone().read_request(&PROTOCOL, &mut &bytes[..]).await;
            held.push(read.unwrap());
        }
        let mut unread = &bytes[..];
        let refused = codec.clone().read_request(&PROTOCOL, &mut unread).await;
        assert!(refused.is_err());
        assert_eq!(unread.len(), bytes.len(), "nothing was read");
        // A stored batch gives its place back; so does a refused or malformed request.
        drop(held.pop());
        let read = codec.clone().read_request(&PROTOCOL, &mut &bytes[..]).await;
        assert_eq!(read.unwrap().keys.len(), 3);
        drop(held);
        let cut = codec
            .clone()
            .read_request(&PROTOCOL, &mut &bytes[..3])
            .await;
        assert!(cut.is_err());
        assert_eq!(codec.receiving.available_permits(), MAX_RECEIVING);
    }

    /// Bytes that stop coming after the first few: a peer trickling a request in.
    struct Stalls<'a>(&'a [u8]);

    impl AsyncRead for Stalls<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            if self.0.is_empty() {
                return std::task::Poll::Pending;
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_trickled_in_is_dropped_and_gives_its_place_back() {
        use request_response::Codec as _;
        let codec = Codec::default();
        let bytes = batch(3).encode().unwrap();
        let started = tokio::time::Instant::now();
        let read = codec
            .clone()
            .read_request(&PROTOCOL, &mut Stalls(&bytes[..5]))
            .await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), READ_WITHIN);
        assert_eq!(codec.receiving.available_permits(), MAX_RECEIVING);
    }
}
