//! Relay sockets: the [`RelayBinder`] of a shard, and the task that reads each one.
//!
//! Ports are drawn from the relay range by a CSPRNG (`rand::thread_rng`, a ChaCha
//! generator seeded from the OS) so that relayed addresses cannot be guessed, and
//! return to the pool when the socket closes: the kernel is the pool, which keeps
//! shards from needing a shared port table.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::io::unix::AsyncFd;

/// A relay socket as its reader waits on it: registered for reading only (a UDP
/// send never waits), with readiness the reader clears itself when a batch read
/// shows the queue empty, which saves the extra read that would only say so.
pub type RelaySocket = AsyncFd<std::net::UdpSocket>;
use tokio::task::AbortHandle;

use super::sockets::{self, relay_socket};
use crate::turn::{BindError, Bound, PortRequest, RelayBinder, RelayId};

/// Random tries before the binder scans the range in order: with a mostly free
/// range the first try nearly always works; a nearly full one needs the scan.
const RANDOM_TRIES: usize = 32;

struct Slot {
    socket: Rc<RelaySocket>,
    reader: Option<AbortHandle>,
    /// The accept task of a TCP allocation's listening socket (RFC 6062).
    acceptor: Option<AbortHandle>,
    addr: SocketAddr,
    id: RelayId,
}

/// What the binders of all shards share: relay-port accounting (the
/// `max-relay-ports` quota) and the parked sockets of reserved ports, which any
/// shard may adopt when the RESERVATION-TOKEN comes back to it.
#[derive(Debug, Default)]
pub struct PortBudget {
    pub in_use: AtomicU32,
    /// `max-relay-ports` (0 = the range only); a reload may change it.
    pub max: AtomicU32,
    pub parked: Mutex<HashMap<SocketAddr, std::net::UdpSocket>>,
    /// Peer connections of TCP allocations waiting for their ConnectionBind,
    /// by connection ID (RFC 6062): the data connection may reach any shard.
    pub peer_streams: Mutex<HashMap<u32, std::net::TcpStream>>,
}

impl PortBudget {
    /// Parks the peer connection of connection ID `conn` until its bind.
    pub fn park_peer(&self, conn: u32, stream: std::net::TcpStream) {
        self.peer_streams().insert(conn, stream);
    }

    /// Takes (binds, or closes by dropping) the peer connection `conn`.
    pub fn take_peer(&self, conn: u32) -> Option<std::net::TcpStream> {
        self.peer_streams().remove(&conn)
    }

    fn peer_streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, std::net::TcpStream>> {
        self.peer_streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, std::net::UdpSocket>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens relay sockets for one shard's core.
pub struct Binder {
    ports: RangeInclusive<u16>,
    slots: Vec<Option<Slot>>,
    /// Per slot, the generation its next socket gets (see [`RelayId`]).
    generations: Vec<u32>,
    free: Vec<u32>,
    /// Sockets opened since the driver last collected them: each needs a reader.
    pending: Vec<(RelayId, Rc<RelaySocket>)>,
    budget: Arc<PortBudget>,
    /// Relay sockets of this shard by local address, so that data for a peer that
    /// is another allocation of this shard is handed over in-process.
    by_local: crate::turn::FastMap<SocketAddr, RelayId>,
    /// Listening sockets of TCP allocations opened since the driver last
    /// collected them: each needs an accept task.
    tcp_pending: Vec<(RelayId, std::net::TcpListener)>,
}

impl Binder {
    pub fn new(ports: RangeInclusive<u16>, budget: Arc<PortBudget>) -> Self {
        Self {
            ports,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            pending: Vec::new(),
            budget,
            by_local: Default::default(),
            tcp_pending: Vec::new(),
        }
    }

    /// The live slot `id` names: none once that socket was released, even after
    /// the slot holds another socket.
    fn slot(&self, id: RelayId) -> Option<&Slot> {
        self.slots
            .get(id.index as usize)?
            .as_ref()
            .filter(|s| s.id == id)
    }

    /// The socket of a relay, for sending.
    pub fn socket(&self, id: RelayId) -> Option<&std::net::UdpSocket> {
        self.slot(id).map(|s| s.socket.get_ref())
    }

    /// The relay of this shard bound to `addr`, if any.
    pub fn local_relay(&self, addr: SocketAddr) -> Option<RelayId> {
        if self.by_local.is_empty() {
            return None;
        }
        self.by_local.get(&addr).copied()
    }

    /// The local address of a relay.
    pub fn local_addr(&self, id: RelayId) -> Option<SocketAddr> {
        self.slot(id).map(|s| s.addr)
    }

    /// Sockets opened since the last call, for the driver to start readers on.
    pub fn take_pending(&mut self) -> Vec<(RelayId, Rc<RelaySocket>)> {
        std::mem::take(&mut self.pending)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.tcp_pending.is_empty()
    }

    /// TCP allocations' listening sockets opened since the last call.
    pub fn take_tcp_pending(&mut self) -> Vec<(RelayId, std::net::TcpListener)> {
        std::mem::take(&mut self.tcp_pending)
    }

    /// The budget shared by all shards (with the parked peer connections).
    pub fn shared(&self) -> &Arc<PortBudget> {
        &self.budget
    }

    /// Records the accept task of a TCP relay so that closing the relay stops it.
    pub fn set_acceptor(&mut self, id: RelayId, acceptor: AbortHandle) {
        match self.slots.get_mut(id.index as usize) {
            Some(Some(slot)) if slot.id == id => slot.acceptor = Some(acceptor),
            _ => acceptor.abort(),
        }
    }

    /// Records the reader task of a relay so that closing the relay stops it.
    pub fn set_reader(&mut self, id: RelayId, reader: AbortHandle) {
        match self.slots.get_mut(id.index as usize) {
            Some(Some(slot)) if slot.id == id => slot.reader = Some(reader),
            // Closed before its reader started.
            _ => reader.abort(),
        }
    }

    fn take_budget(&self, n: u32) -> bool {
        let max = self.budget.max.load(Ordering::Relaxed);
        let prev = self.budget.in_use.fetch_add(n, Ordering::Relaxed);
        if max != 0 && prev + n > max {
            self.budget.in_use.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn open(&mut self, socket: std::net::UdpSocket) -> io::Result<(RelayId, SocketAddr)> {
        let addr = socket.local_addr()?;
        let socket = Rc::new(sockets::register_readable(socket)?);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        // A reused slot gets the next generation, so IDs of its earlier
        // sockets (still queued somewhere, say) never find this one.
        let generation = self.generations[index as usize];
        let id = RelayId::new(index, generation);
        self.slots[index as usize] = Some(Slot {
            socket: socket.clone(),
            reader: None,
            acceptor: None,
            addr,
            id,
        });
        self.by_local.insert(addr, id);
        self.pending.push((id, socket));
        Ok((id, addr))
    }

    /// Tries ports until one binds: random first, then a scan from a random start.
    fn bind_port(
        &self,
        ip: IpAddr,
        even: bool,
        pair: bool,
        df: bool,
    ) -> Option<(std::net::UdpSocket, Option<std::net::UdpSocket>)> {
        let (lo, hi) = (u32::from(*self.ports.start()), u32::from(*self.ports.end()));
        let span = hi - lo + 1;
        let mut rng = rand::thread_rng();
        let try_port = |p: u32| -> Option<(std::net::UdpSocket, Option<std::net::UdpSocket>)> {
            if p > hi || (even && !p.is_multiple_of(2)) || (pair && p + 1 > hi) {
                return None;
            }
            let first = relay_socket(ip, p as u16, df).ok()?;
            if !pair {
                return Some((first, None));
            }
            let second = relay_socket(ip, (p + 1) as u16, df).ok()?;
            Some((first, Some(second)))
        };
        for _ in 0..RANDOM_TRIES {
            if let Some(s) = try_port(lo + rng.gen_range(0..span)) {
                return Some(s);
            }
        }
        let start = rng.gen_range(0..span);
        (0..span).find_map(|i| try_port(lo + (start + i) % span))
    }
}

impl RelayBinder for Binder {
    fn bind(
        &mut self,
        ip: IpAddr,
        port: PortRequest,
        dont_fragment: bool,
    ) -> Result<Bound, BindError> {
        let pair = port == PortRequest::EvenPair;
        let even = port != PortRequest::Any;
        let need = if pair { 2 } else { 1 };
        if !self.take_budget(need) {
            return Err(BindError::Exhausted);
        }
        let Some((first, second)) = self.bind_port(ip, even, pair, dont_fragment) else {
            self.budget.in_use.fetch_sub(need, Ordering::Relaxed);
            return Err(match relay_socket(ip, 0, false) {
                // The IP itself cannot be bound: not an address of this host.
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                    BindError::FamilyUnavailable
                }
                _ => BindError::Exhausted,
            });
        };
        let reserved = match second.map(|s| s.local_addr().map(|a| (a, s))).transpose() {
            Ok(r) => r,
            Err(_) => {
                self.budget.in_use.fetch_sub(need, Ordering::Relaxed);
                return Err(BindError::Exhausted);
            }
        };
        match self.open(first) {
            Ok((id, addr)) => {
                let reserved = reserved.map(|(a, s)| {
                    self.budget.parked().insert(a, s);
                    a
                });
                Ok(Bound { id, addr, reserved })
            }
            Err(_) => {
                self.budget.in_use.fetch_sub(need, Ordering::Relaxed);
                Err(BindError::Exhausted)
            }
        }
    }

    /// A TCP allocation's relay: a UDP relay socket holds the port and the
    /// slot (no reader is started on it, so it relays nothing), and a
    /// listening TCP socket on the same port takes the peers' connections.
    /// A port whose TCP side is taken is given back and another one tried.
    fn bind_tcp(&mut self, ip: IpAddr) -> Result<Bound, BindError> {
        for _ in 0..RANDOM_TRIES {
            let bound = self.bind(ip, PortRequest::Any, false)?;
            self.pending.retain(|(p, _)| *p != bound.id);
            match sockets::tcp_relay_listener(bound.addr.ip(), bound.addr.port()) {
                Ok(l) => {
                    self.tcp_pending.push((bound.id, l));
                    return Ok(bound);
                }
                Err(_) => self.release(bound.id),
            }
        }
        Err(BindError::Exhausted)
    }

    fn adopt(&mut self, addr: SocketAddr) -> Result<Bound, BindError> {
        let socket = self
            .budget
            .parked()
            .remove(&addr)
            .ok_or(BindError::Exhausted)?;
        match self.open(socket) {
            Ok((id, addr)) => Ok(Bound {
                id,
                addr,
                reserved: None,
            }),
            Err(_) => {
                self.budget.in_use.fetch_sub(1, Ordering::Relaxed);
                Err(BindError::Exhausted)
            }
        }
    }

    fn discard(&mut self, addr: SocketAddr) {
        if self.budget.parked().remove(&addr).is_some() {
            self.budget.in_use.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn release(&mut self, id: RelayId) {
        if self.slot(id).is_none() {
            return;
        }
        let index = id.index as usize;
        if let Some(slot) = self.slots.get_mut(index).and_then(Option::take) {
            self.generations[index] = id.generation.wrapping_add(1);
            if let Some(r) = slot.reader {
                r.abort();
            }
            if let Some(a) = slot.acceptor {
                a.abort();
            }
            self.tcp_pending.retain(|(p, _)| *p != id);
            self.by_local.remove(&slot.addr);
            self.pending.retain(|(p, _)| *p != id);
            self.free.push(id.index);
            self.budget.in_use.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::{PortRequest, RelayBinder};

    /// A datagram queued for a relay that a request then closed is keyed by the
    /// old ID; the next allocation may get the same slot in the same batch. The
    /// old ID must find no socket then, so the datagram is dropped instead of
    /// leaving from the new allocation's address. (Before relay IDs carried a
    /// generation, the shard sent its peer queue before every STUN request to
    /// keep this from happening.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_released_relay_id_never_names_the_socket_that_reuses_its_slot() {
        let budget = Arc::new(PortBudget {
            in_use: AtomicU32::new(0),
            max: AtomicU32::new(0),
            parked: Mutex::new(HashMap::new()),
            peer_streams: Mutex::new(HashMap::new()),
        });
        let mut binder = Binder::new(40000..=60000, budget);
        let ip = "127.0.0.1".parse().unwrap();
        let old = binder.bind(ip, PortRequest::Any, false).unwrap();
        assert!(binder.socket(old.id).is_some());
        binder.release(old.id);
        assert!(binder.socket(old.id).is_none());
        let new = binder.bind(ip, PortRequest::Any, false).unwrap();
        assert_eq!(new.id.index, old.id.index, "the freed slot is reused");
        assert_ne!(new.id, old.id);
        assert!(
            binder.socket(old.id).is_none(),
            "the old ID names no socket"
        );
        assert!(binder.local_addr(old.id).is_none());
        assert_eq!(binder.local_addr(new.id), Some(new.addr));
        // Releasing the stale ID again must not close the new socket.
        binder.release(old.id);
        assert!(binder.socket(new.id).is_some());
        // Round trip through the send-queue key.
        assert_eq!(RelayId::from_bits(new.id.to_bits()), new.id);
    }
}
