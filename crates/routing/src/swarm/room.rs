//! [`MakeRoom`]: keeps a node's connection table below its limits by closing the connections
//! that have been quiet longest, so that a full node still lets new peers in.
//!
//! libp2p's connection limits only refuse: once a node holds its most inbound connections,
//! every new peer that dials it is turned away after its handshake. At a few hundred nodes
//! that is what the nodes every joiner dials first (the bootstrap peers) reach, and joining
//! stalled (`docs/scale.md`, N = 500). Go-libp2p's connection manager answers the same
//! problem with watermarks; this is that idea, with "quiet" measured on the DHT's own
//! traffic: [`MakeRoom`] wraps the Kademlia behaviour and notes, per connection, when its
//! handler last reported something (a request from the peer, an answer to ours). When the
//! table is above the high watermark it closes the quietest connections, never one used or
//! opened in the last [`RoomLimits::quiet_for`], down to the low watermark. The hard limits
//! (`connection_limits`) stay as the last line when nothing is quiet enough to close.

use std::collections::HashMap;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// How often, at most, the table is checked against the watermarks.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// When to close connections, and how many to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoomLimits {
    /// Above this many connections in total (or inbound), quiet ones are closed ...
    pub high: usize,
    pub high_inbound: usize,
    /// ... until at most this many remain.
    pub low: usize,
    pub low_inbound: usize,
    /// A connection used or opened this recently is never closed (a request sent on it may
    /// still be waiting for its answer).
    pub quiet_for: Duration,
}

impl RoomLimits {
    /// Watermarks under the hard limits: start closing at 7/8 of them, stop at 3/4, so
    /// that a full node keeps room for about an eighth of its table in new connections.
    pub(crate) fn below(max: usize, max_inbound: usize, quiet_for: Duration) -> RoomLimits {
        RoomLimits {
            high: max - max / 8,
            low: max - max / 4,
            high_inbound: max_inbound - max_inbound / 8,
            low_inbound: max_inbound - max_inbound / 4,
            quiet_for,
        }
    }
}

/// One open connection.
#[derive(Debug, Clone, Copy)]
struct Open {
    peer: PeerId,
    inbound: bool,
    /// When it opened or its handler last reported something.
    last_used: Instant,
    /// True once we asked the swarm to close it (it counts no longer).
    closing: bool,
}

/// Wraps a behaviour (Kademlia) and closes the connections it has used least recently when
/// the node holds too many. Everything else is passed through unchanged.
pub(crate) struct MakeRoom<B> {
    inner: B,
    limits: RoomLimits,
    open: HashMap<ConnectionId, Open>,
    /// Connections chosen to close, handed to the swarm one per poll.
    to_close: Vec<(PeerId, ConnectionId)>,
    next_check: Instant,
    /// Connections closed to make room, since the start.
    closed: u64,
    /// Peers with requests of ours outside Kademlia (provider batches) waiting for an
    /// answer, and how many: their connections are never closed to make room.
    busy: HashMap<PeerId, u32>,
    waker: Option<Waker>,
}

impl<B> MakeRoom<B> {
    pub(crate) fn new(inner: B, limits: RoomLimits) -> MakeRoom<B> {
        MakeRoom {
            inner,
            limits,
            open: HashMap::new(),
            to_close: Vec::new(),
            next_check: Instant::now(),
            closed: 0,
            busy: HashMap::new(),
            waker: None,
        }
    }

    pub(crate) fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Connections closed to make room since the start.
    pub(crate) fn closed(&self) -> u64 {
        self.closed
    }

    /// A request of another protocol went to `peer`: its connections stay open until
    /// [`Self::answered`].
    pub(crate) fn asked(&mut self, peer: PeerId) {
        *self.busy.entry(peer).or_default() += 1;
        self.used_by_peer(peer, Instant::now());
    }

    /// The answer to a request [`Self::asked`] came (or the request failed).
    pub(crate) fn answered(&mut self, peer: PeerId) {
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.busy.entry(peer) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.used_by_peer(peer, Instant::now());
    }

    /// `peer` sent us a request of another protocol: its connections count as used.
    pub(crate) fn heard_from(&mut self, peer: PeerId) {
        self.used_by_peer(peer, Instant::now());
    }

    fn used(&mut self, connection: ConnectionId) {
        if let Some(open) = self.open.get_mut(&connection) {
            open.last_used = Instant::now();
        }
    }

    /// A request is about to go to `peer` on whichever of its connections the swarm picks
    /// (Kademlia sends every request to a peer it is connected to that way): all of them
    /// count as used, and one chosen to close but not yet handed to the swarm is kept.
    /// Without this, a connection quiet for 10 s could be closed under a request just sent
    /// on it; an ADD_PROVIDER, which gets no answer, was then lost without a trace (at
    /// N = 500, 1 % of them: `docs/scale.md`).
    fn used_by_peer(&mut self, peer: PeerId, now: Instant) {
        let mut kept = 0;
        for (id, open) in self.open.iter_mut().filter(|(_, o)| o.peer == peer) {
            open.last_used = now;
            if open.closing && self.to_close.iter().any(|(_, c)| c == id) {
                open.closing = false;
                self.to_close.retain(|(_, c)| c != id);
                kept += 1;
            }
        }
        self.closed -= kept;
    }

    /// Picks the connections to close now, if the table is above a watermark.
    fn check(&mut self, now: Instant) {
        if now < self.next_check || !self.to_close.is_empty() {
            return;
        }
        self.next_check = now + CHECK_EVERY;
        let chosen = choose(&self.open, &self.busy, &self.limits, now);
        for id in &chosen {
            if let Some(open) = self.open.get_mut(id) {
                open.closing = true;
                self.to_close.push((open.peer, *id));
            }
        }
        self.closed += chosen.len() as u64;
    }
}

/// The connections to close so that at most `limits.low` remain in total and at most
/// `limits.low_inbound` inbound, once either count is above its high watermark: the quietest
/// first, only those quiet for `limits.quiet_for`. Fewer (or none) when not enough are quiet.
fn choose(
    open: &HashMap<ConnectionId, Open>,
    busy: &HashMap<PeerId, u32>,
    limits: &RoomLimits,
    now: Instant,
) -> Vec<ConnectionId> {
    let live: Vec<(&ConnectionId, &Open)> = open.iter().filter(|(_, o)| !o.closing).collect();
    let total = live.len();
    let inbound = live.iter().filter(|(_, o)| o.inbound).count();
    if total <= limits.high && inbound <= limits.high_inbound {
        return Vec::new();
    }
    let mut over_total = total.saturating_sub(limits.low);
    let mut over_inbound = if inbound > limits.high_inbound {
        inbound.saturating_sub(limits.low_inbound)
    } else {
        0
    };
    if total <= limits.high {
        over_total = over_inbound;
    }
    let mut quiet: Vec<(&ConnectionId, &Open)> = live
        .into_iter()
        .filter(|(_, o)| now.saturating_duration_since(o.last_used) >= limits.quiet_for)
        .filter(|(_, o)| !busy.contains_key(&o.peer))
        .collect();
    quiet.sort_by_key(|(_, o)| o.last_used);
    let mut chosen = Vec::new();
    // Inbound ones first while inbound is over, then any, quietest first in both passes.
    for (id, o) in &quiet {
        if over_inbound == 0 {
            break;
        }
        if o.inbound {
            chosen.push(**id);
            over_inbound -= 1;
            over_total = over_total.saturating_sub(1);
        }
    }
    for (id, _) in &quiet {
        if over_total == 0 {
            break;
        }
        if !chosen.contains(id) {
            chosen.push(**id);
            over_total -= 1;
        }
    }
    chosen
}

impl<B: NetworkBehaviour> NetworkBehaviour for MakeRoom<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                self.open.insert(
                    e.connection_id,
                    Open {
                        peer: e.peer_id,
                        inbound: e.endpoint.is_listener(),
                        last_used: Instant::now(),
                        closing: false,
                    },
                );
                if let Some(waker) = self.waker.take() {
                    waker.wake();
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                self.open.remove(&e.connection_id);
                self.to_close.retain(|(_, id)| *id != e.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.used(connection_id);
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.check(Instant::now());
        if let Some((peer_id, id)) = self.to_close.pop() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            });
        }
        self.waker = Some(cx.waker().clone());
        match self.inner.poll(cx) {
            Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler,
                event,
            }) => {
                // A request about to be sent: that connection is in use.
                match handler {
                    libp2p::swarm::NotifyHandler::One(id) => self.used(id),
                    libp2p::swarm::NotifyHandler::Any => {
                        self.used_by_peer(peer_id, Instant::now());
                    }
                }
                Poll::Ready(ToSwarm::NotifyHandler {
                    peer_id,
                    handler,
                    event,
                })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RoomLimits {
        RoomLimits {
            high: 8,
            low: 6,
            high_inbound: 5,
            low_inbound: 4,
            quiet_for: Duration::from_secs(10),
        }
    }

    /// `n` connections; connection i was last used `ages[i]` seconds before `now`.
    fn table(now: Instant, ages: &[(u64, bool)]) -> HashMap<ConnectionId, Open> {
        ages.iter()
            .map(|&(age, inbound)| {
                (
                    ConnectionId::new_unchecked(age as usize),
                    Open {
                        peer: PeerId::random(),
                        inbound,
                        last_used: now - Duration::from_secs(age),
                        closing: false,
                    },
                )
            })
            .collect()
    }

    fn ids(chosen: &[ConnectionId]) -> Vec<ConnectionId> {
        let mut chosen = chosen.to_vec();
        chosen.sort();
        chosen
    }

    #[test]
    fn a_table_under_both_watermarks_is_left_alone() {
        let now = Instant::now() + Duration::from_secs(3600);
        let open = table(now, &[(100, true), (200, true), (300, false)]);
        assert!(choose(&open, &HashMap::new(), &limits(), now).is_empty());
    }

    #[test]
    fn above_the_high_watermark_the_quietest_close_down_to_the_low_one() {
        let now = Instant::now() + Duration::from_secs(3600);
        let ages: Vec<(u64, bool)> = (1..=9).map(|i| (i * 10, false)).collect();
        let open = table(now, &ages);
        let chosen = choose(&open, &HashMap::new(), &limits(), now);
        let want = [90, 80, 70].map(ConnectionId::new_unchecked);
        assert_eq!(ids(&chosen), ids(&want));
    }

    #[test]
    fn too_many_inbound_closes_inbound_ones_even_when_an_outbound_is_quieter() {
        let now = Instant::now() + Duration::from_secs(3600);
        let open = table(
            now,
            &[
                (500, false),
                (20, true),
                (30, true),
                (40, true),
                (50, true),
                (60, true),
                (70, true),
            ],
        );
        let chosen = choose(&open, &HashMap::new(), &limits(), now);
        let want = [70, 60].map(ConnectionId::new_unchecked);
        assert_eq!(ids(&chosen), ids(&want));
    }

    #[test]
    fn connections_used_recently_are_never_closed() {
        let now = Instant::now() + Duration::from_secs(3600);
        let ages: Vec<(u64, bool)> = (1..=9).map(|i| (i, true)).collect();
        let open = table(now, &ages);
        assert!(choose(&open, &HashMap::new(), &limits(), now).is_empty());
    }

    #[test]
    fn connections_already_closing_do_not_count() {
        let now = Instant::now() + Duration::from_secs(3600);
        let ages: Vec<(u64, bool)> = (1..=9).map(|i| (i * 10, false)).collect();
        let mut open = table(now, &ages);
        for id in [90, 80, 70].map(ConnectionId::new_unchecked) {
            if let Some(o) = open.get_mut(&id) {
                o.closing = true;
            }
        }
        assert!(choose(&open, &HashMap::new(), &limits(), now).is_empty());
    }

    #[test]
    fn connections_of_a_peer_waiting_for_our_batch_are_never_closed() {
        let now = Instant::now() + Duration::from_secs(3600);
        let ages: Vec<(u64, bool)> = (1..=9).map(|i| (i * 10, false)).collect();
        let open = table(now, &ages);
        let quietest = open[&ConnectionId::new_unchecked(90)].peer;
        let busy = HashMap::from([(quietest, 1)]);
        let chosen = choose(&open, &busy, &limits(), now);
        let want = [80, 70, 60].map(ConnectionId::new_unchecked);
        assert_eq!(ids(&chosen), ids(&want));
    }

    /// A request to a peer over any of its connections (`NotifyHandler::Any`) makes them
    /// used: one already chosen to close, not yet handed to the swarm, stays open.
    #[test]
    fn a_request_to_a_peer_keeps_its_connections_open() {
        let now = Instant::now() + Duration::from_secs(3600);
        let ages: Vec<(u64, bool)> = (1..=9).map(|i| (i * 10, false)).collect();
        let mut room = MakeRoom::new(libp2p::swarm::dummy::Behaviour, limits());
        room.open = table(now, &ages);
        room.next_check = now;
        room.check(now);
        assert_eq!(room.to_close.len(), 3);
        assert_eq!(room.closed(), 3);
        let (peer, quietest) = (room.open[&ConnectionId::new_unchecked(90)].peer, 90);

        room.used_by_peer(peer, now);

        let quietest = ConnectionId::new_unchecked(quietest);
        assert!(room.to_close.iter().all(|(_, id)| *id != quietest));
        assert!(!room.open[&quietest].closing);
        assert_eq!(
            room.closed(),
            2,
            "only connections really closed are counted"
        );
        // It was just used: when the table is checked again (the other two closed, and two
        // more connections quiet for long), the next quietest close instead.
        room.to_close.clear();
        room.open.retain(|_, o| !o.closing);
        for age in [200, 300] {
            room.open.insert(
                ConnectionId::new_unchecked(age),
                Open {
                    peer: PeerId::random(),
                    inbound: false,
                    last_used: now - Duration::from_secs(age as u64),
                    closing: false,
                },
            );
        }
        room.next_check = now;
        room.check(now);
        let chosen: Vec<ConnectionId> = room.to_close.iter().map(|(_, id)| *id).collect();
        assert_eq!(chosen.len(), 3, "9 open, down to 6");
        assert!(!chosen.contains(&quietest));
    }

    #[test]
    fn the_watermarks_sit_under_the_hard_limits() {
        let room = RoomLimits::below(512, 384, Duration::from_secs(10));
        assert_eq!((room.high, room.low), (448, 384));
        assert_eq!((room.high_inbound, room.low_inbound), (336, 288));
    }
}
