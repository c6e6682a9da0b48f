//! TCP allocations (RFC 6062): Allocate with REQUESTED-TRANSPORT = TCP over a
//! TCP or TLS client connection, Connect (§5.2), an incoming peer connection and
//! its ConnectionAttempt indication (§5.3), and ConnectionBind on a new client
//! connection, the data connection (§5.4). Off unless `relay.tcp-allocations`.
//!
//! The rules live here, the sockets in the driver: the core decides whether a
//! Connect may go ahead ([`Output::Connect`]), answers it once the driver says
//! how the connection attempt ended ([`Server::connect_finished`]), decides
//! whether an incoming peer connection is accepted
//! ([`Server::tcp_peer_connected`]) and whether a ConnectionBind binds
//! ([`Output::ConnectionBound`]); the driver then pipes bytes between the two
//! connections. A data connection may reach any shard (SO_REUSEPORT), so the
//! table of connection IDs is shared by the shards ([`TcpConnections`]), like
//! the RESERVATION-TOKENs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;

use super::allocation::Traffic;
use super::auth::long_term::ReplyKey;
use super::auth::NonceCheck;
use super::output::Output;
use super::quota::ByteBudget;
use super::responses::{reason_phrase, Request};
use super::server::Server;
use super::stats::QuotaKind;
use super::table::AllocId;
use super::{FiveTuple, RelayBinder, Transport};
use crate::stun::attr::*;
use crate::stun::{Class, MessageBuilder, Method, TransactionId};

/// How long a peer connection waits for its ConnectionBind (RFC 6062 §5.2,
/// §5.3: 30 seconds), and the default of `relay.tcp-connection-timeout`.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes relayed over the data connections of one TCP allocation, counted by
/// whichever shard pipes them and read by the allocation's shard for its usage
/// record.
#[derive(Debug, Default)]
pub struct TcpTraffic {
    pub to_peer_bytes: AtomicU64,
    pub to_client_bytes: AtomicU64,
}

impl TcpTraffic {
    /// Adds these counters to `t` (bytes only: a byte stream has no packets).
    pub fn add_to(&self, t: &mut Traffic) {
        t.to_peer_bytes += self.to_peer_bytes.load(Ordering::Relaxed);
        t.to_client_bytes += self.to_client_bytes.load(Ordering::Relaxed);
    }
}

/// Where a connection ID is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Connect sent, the driver is connecting.
    Connecting,
    /// Connected (or accepted): waits for its ConnectionBind until `expires`.
    Pending { expires: Instant },
    /// Bound to a data connection: bytes flow.
    Bound,
}

#[derive(Debug)]
struct Entry {
    /// The allocation's process-wide ID.
    alloc: u64,
    username: Box<str>,
    /// The client address of the allocation's control connection.
    control: SocketAddr,
    peer: SocketAddr,
    /// Made by a Connect (rather than accepted): only these make a second
    /// Connect to the same peer a 446 (RFC 6062 §5.2).
    connect: bool,
    state: State,
    traffic: Arc<TcpTraffic>,
    /// The user's byte budget (`quota.max-bytes-per-user`).
    budget: Arc<ByteBudget>,
}

/// The connection IDs of every TCP allocation, shared by all shards. Touched by
/// Connect, ConnectionBind, incoming peer connections and their ends, never
/// per relayed byte.
#[derive(Debug, Default)]
pub struct TcpConnections {
    inner: Mutex<HashMap<u32, Entry>>,
}

impl TcpConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connection IDs in the table (any state).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is still known (its allocation alive, not closed): a data
    /// connection's pipe ends when this turns false.
    pub fn is_live(&self, id: u32) -> bool {
        self.lock().contains_key(&id)
    }

    /// Forgets `id` (its peer or data connection closed).
    pub fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }

    /// Forgets `id` if it is still waiting for its ConnectionBind at `now`
    /// past its deadline: true when the driver must close the peer connection.
    pub fn expire(&self, id: u32, now: Instant) -> bool {
        let mut t = self.lock();
        match t.get(&id).map(|e| e.state) {
            Some(State::Pending { expires }) if expires <= now => {
                t.remove(&id);
                true
            }
            _ => false,
        }
    }

    fn remove_allocation(&self, alloc: u64) {
        self.lock().retain(|_, e| e.alloc != alloc);
    }

    /// A new connection ID (never 0, never one in use) for `entry`, unless the
    /// allocation has `max` connections already (0 = no limit) or, for a
    /// Connect, a Connect to the same peer pending or active (`Err(true)`,
    /// 446). An incoming connection from a peer the allocation connected to
    /// is accepted: when two allocations Connect to each other at once, each
    /// one's connection may reach the other's listening socket first.
    fn insert<R: Rng>(&self, rng: &mut R, entry: Entry, max: u32) -> Result<u32, bool> {
        let mut t = self.lock();
        let mut count = 0u32;
        for e in t.values().filter(|e| e.alloc == entry.alloc) {
            if entry.connect && e.connect && e.peer == entry.peer {
                return Err(true);
            }
            count += 1;
        }
        if max != 0 && count >= max {
            return Err(false);
        }
        // Bounded: with at most a few million IDs in use out of 2^32, a
        // collision is rare and eight in a row practically impossible.
        for _ in 0..8 {
            let id: u32 = rng.gen();
            if id != 0 && !t.contains_key(&id) {
                t.insert(id, entry);
                return Ok(id);
            }
        }
        Err(false)
    }
}

/// A Connect whose answer waits for the driver's connection attempt.
pub(super) struct Connecting {
    conn: u32,
    tuple: FiveTuple,
    tid: TransactionId,
    key: ReplyKey,
    fingerprint: bool,
}

impl<B: RelayBinder> Server<B> {
    /// Whether the allocation `id` is a TCP allocation.
    pub(super) fn is_tcp_allocation(&self, id: AllocId) -> bool {
        self.table.get(id).is_some_and(|a| a.tcp.is_some())
    }

    /// Connect (RFC 6062 §5.2) on the control connection of allocation `id`.
    pub(super) fn connect(&mut self, id: AllocId, req: Request<'_>) -> Output {
        let Request { now, msg, auth, .. } = req;
        let Some(a) = self.table.get(id) else {
            return self.reject(req, 437);
        };
        let Some(traffic) = a.tcp.clone() else {
            return self.reject(req, 400);
        };
        let peer = match msg.get::<XorPeerAddress>() {
            Some(Ok(XorPeerAddress(p))) => p,
            _ => return self.reject(req, 400),
        };
        let Some(relay) = a.relay_for(peer.ip()).copied() else {
            return self.reject(req, 443);
        };
        // The peer policy, and a permission for the peer (§5.2: 403).
        let Some(dest) = self.peer_destination(peer) else {
            return self.reject(req, 403);
        };
        if !a.permitted(peer.ip(), now) {
            return self.reject(req, 403);
        }
        let entry = Entry {
            alloc: a.id,
            username: a.username.clone(),
            control: a.tuple.client,
            peer,
            connect: true,
            state: State::Connecting,
            traffic,
            budget: a.budget.clone(),
        };
        let max = self.cfg.max_tcp_connections_per_allocation;
        let conn = match self.tcp.insert(&mut self.rng, entry, max) {
            Ok(c) => c,
            Err(true) => return self.reject(req, 446),
            Err(false) => {
                self.stats.quota_rejections[QuotaKind::TcpConnections as usize] += 1;
                return self.reject(req, 508);
            }
        };
        let tuple = a.tuple;
        self.connecting.push(Connecting {
            conn,
            tuple,
            tid: msg.transaction_id(),
            key: auth.key,
            fingerprint: msg.has_fingerprint(),
        });
        Output::Connect {
            conn,
            relay: relay.id,
            from: relay.local,
            peer: dest,
        }
    }

    /// The driver's connection attempt for Connect `conn` ended (`ok`: the
    /// peer accepted). Writes the Connect response into `out` and returns the
    /// control connection to send it on; `None` when the Connect is unknown or
    /// its allocation is gone (the driver then closes the peer connection).
    /// On success the connection waits for its ConnectionBind until
    /// `now + tcp-connection-timeout`.
    pub fn connect_finished(
        &mut self,
        now: Instant,
        conn: u32,
        ok: bool,
        out: &mut BytesMut,
    ) -> Option<FiveTuple> {
        let i = self.connecting.iter().position(|c| c.conn == conn)?;
        let c = self.connecting.swap_remove(i);
        let alive = self.table.by_tuple(&c.tuple).is_some() && self.tcp.is_live(conn);
        out.clear();
        let class = if ok && alive {
            Class::Success
        } else {
            Class::Error
        };
        let mut b = MessageBuilder::new(out, Method::Connect, class, c.tid);
        if let Some(s) = self.cfg.software.as_deref() {
            b.add(&Software(s));
        }
        if ok && alive {
            let expires = now + self.cfg.tcp_connection_timeout;
            if let Some(e) = self.tcp.lock().get_mut(&conn) {
                e.state = State::Pending { expires };
            }
            b.add(&ConnectionId(conn));
        } else {
            self.tcp.remove(conn);
            b.add(&ErrorCode::new(447, reason_phrase(447)));
        }
        if c.key.sha256_mac {
            b.add_message_integrity_sha256(c.key.key.as_bytes());
        } else {
            b.add_message_integrity(c.key.key.as_bytes());
        }
        if c.fingerprint {
            b.add_fingerprint();
        }
        b.finish();
        self.count_response(Method::Connect, out);
        if !alive {
            out.clear();
            return None;
        }
        Some(c.tuple)
    }

    /// A peer connected to the relayed address of relay socket `relay` from
    /// `from` (§5.3). Accepted when the relay is a TCP allocation's, the peer
    /// has a permission and the peer policy allows it: a ConnectionAttempt
    /// indication is written into `out` for the returned control connection,
    /// with the new connection ID. `None`: close the peer connection.
    pub fn tcp_peer_connected(
        &mut self,
        now: Instant,
        relay: super::RelayId,
        from: SocketAddr,
        out: &mut BytesMut,
    ) -> Option<(FiveTuple, u32)> {
        let peer = self.to_external(from);
        let id = self.table.by_relay(relay)?;
        let a = self.table.get(id)?;
        let traffic = a.tcp.clone()?;
        if !a.permitted(peer.ip(), now) || !self.ip_allowed(peer.ip()) {
            return None;
        }
        let entry = Entry {
            alloc: a.id,
            username: a.username.clone(),
            control: a.tuple.client,
            peer,
            connect: false,
            state: State::Pending {
                expires: now + self.cfg.tcp_connection_timeout,
            },
            traffic,
            budget: a.budget.clone(),
        };
        let tuple = a.tuple;
        let max = self.cfg.max_tcp_connections_per_allocation;
        let conn = match self.tcp.insert(&mut self.rng, entry, max) {
            Ok(c) => c,
            Err(true) => return None,
            Err(false) => {
                self.stats.quota_rejections[QuotaKind::TcpConnections as usize] += 1;
                return None;
            }
        };
        out.clear();
        let tid = TransactionId(self.rng.gen());
        let mut b = MessageBuilder::new(out, Method::ConnectionAttempt, Class::Indication, tid);
        b.add(&ConnectionId(conn));
        b.add(&XorPeerAddress(peer));
        b.add_fingerprint();
        b.finish();
        Some((tuple, conn))
    }

    /// ConnectionBind (§5.4) on `tuple`, a new client connection without an
    /// allocation: binds it to a connection ID that waits for it, under the
    /// same user as the allocation. On success the driver sends the response
    /// and then pipes bytes ([`Output::ConnectionBound`]).
    pub(super) fn connection_bind(&mut self, tuple: FiveTuple, req: Request<'_>) -> Output {
        let Request { now, msg, auth, .. } = req;
        if !self.cfg.tcp_allocations || !tuple.transport.is_stream() {
            return self.reject(req, 400);
        }
        let conn = match msg.get::<ConnectionId>() {
            Some(Ok(ConnectionId(c))) => c,
            _ => return self.reject(req, 400),
        };
        let bound = {
            let mut t = self.tcp.lock();
            match t.get_mut(&conn) {
                Some(e) if *e.username == *auth.username => match e.state {
                    State::Pending { expires } if expires > now => {
                        e.state = State::Bound;
                        true
                    }
                    _ => false,
                },
                _ => false,
            }
        };
        if !bound {
            return self.reject(req, 400);
        }
        match self.answer(req, Class::Success).finish() {
            Output::Reply => Output::ConnectionBound { conn },
            o => o,
        }
    }

    /// The 5-tuple a ConnectionBind on `tuple` is authenticated as: nonces
    /// are bound to the client's transport address, and clients (coturn's
    /// among them) sign the ConnectionBind of a new data connection with the
    /// nonce of their control connection. So when the nonce is not one issued
    /// to this connection but one issued to the control connection of the
    /// connection the CONNECTION-ID names, from the same IP, it is checked
    /// as that connection's.
    pub(super) fn connection_bind_auth_tuple(
        &self,
        now: Instant,
        tuple: FiveTuple,
        msg: &crate::stun::Message<'_>,
    ) -> FiveTuple {
        let (Some(Ok(ConnectionId(conn))), Some(Ok(Nonce(nonce)))) =
            (msg.get::<ConnectionId>(), msg.get::<Nonce>())
        else {
            return tuple;
        };
        let (unix, lifetime) = (self.unix(now), self.cfg.nonce_lifetime.as_secs());
        let valid = |client| {
            matches!(
                self.nonces.verify(nonce, unix, client, lifetime),
                NonceCheck::Valid
            )
        };
        if valid(tuple.client) {
            return tuple;
        }
        let control = self.tcp.lock().get(&conn).map(|e| e.control);
        match control {
            Some(c) if c.ip() == tuple.client.ip() && valid(c) => FiveTuple { client: c, ..tuple },
            _ => tuple,
        }
    }

    /// The traffic counters of the TCP allocation that connection `conn`
    /// belongs to, for the driver that pipes its bytes.
    pub fn tcp_traffic(&self, conn: u32) -> Option<Arc<TcpTraffic>> {
        self.tcp.lock().get(&conn).map(|e| e.traffic.clone())
    }

    /// The byte budget of the user of connection `conn`, for the driver that
    /// pipes its bytes (see [`charge_tcp`](Self::charge_tcp)).
    pub fn tcp_budget(&self, conn: u32) -> Option<Arc<ByteBudget>> {
        self.tcp.lock().get(&conn).map(|e| e.budget.clone())
    }

    /// Charges `len` piped bytes to the user's byte budget: false when the
    /// budget of this period is used up, and the data connection must close
    /// (a byte stream cannot drop some bytes as UDP relaying drops datagrams).
    pub fn charge_tcp(&mut self, now: Instant, budget: &ByteBudget, len: u64) -> bool {
        let Some((period, limit)) = self.byte_budget(now) else {
            return true;
        };
        if budget.exhausted(period, limit) {
            self.stats.drops[super::stats::DropReason::ByteBudget as usize] += 1;
            return false;
        }
        budget.charge(period, len);
        true
    }

    /// The shared table of connection IDs.
    pub fn tcp_connections(&self) -> &Arc<TcpConnections> {
        &self.tcp
    }

    /// Counts bytes a data connection on `transport` relayed, for metrics.
    pub fn count_tcp_relayed(&mut self, transport: Transport, to_peer: u64, to_client: u64) {
        let t = transport.index();
        self.stats.to_peer_bytes[t] += to_peer;
        self.stats.to_client_bytes[t] += to_client;
    }

    /// An allocation closed: its connection IDs go, and with them (the driver
    /// polls [`TcpConnections::is_live`]) its peer and data connections.
    pub(super) fn tcp_allocation_closed(&mut self, alloc: u64) {
        self.tcp.remove_allocation(alloc);
    }
}
