//! One shard: a thread with a current-thread tokio runtime that owns one sans-IO
//! core, its own SO_REUSEPORT listener sockets and its own relay sockets.
//!
//! Everything a shard touches per packet is its own, behind an `Rc<RefCell<_>>`
//! that is never held across an `.await`: no lock, no atomic reference count per
//! packet. Shards share only the read-mostly credentials, the nonce key, quota
//! counts and the live-relay-port bitmap (see [`crate::turn::Shared`]).
//!
//! This module holds the shard's [`State`], what the core's output turns into
//! (replies, datagrams for peers, in-process hand-over) and [`run`]. The tasks
//! live in submodules: [`udp`] (listeners, datagrams to UDP clients), [`stream`]
//! (TCP and TLS), [`relay_reader`] (peers' datagrams) and [`tasks`] (timer,
//! flusher, publisher, commands, credential watch).

mod dtls;
mod relay_reader;
mod stream;
mod tasks;
mod tcp_relay;
mod udp;

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::connections::{ConnClose, ConnLimits};
use super::mmsg::{classify_send_error, RecvBatch, SendBatch, SendFailure};
use super::relay::{Binder, PortBudget};
use crate::ops::metrics::{Health, ShardSlot};
use crate::ops::usage::UsageLog;
use crate::turn::server::{Drain, DropReason, KillFilter, Session, PEER_HEADROOM, PEER_TAILROOM};
use crate::turn::{
    FastMap, FiveTuple, Output, PeerOutput, RelayId, Server, ServerConfig, Shared, Transport,
};
use dtls::DtlsState;
pub use dtls::{context as dtls_context, DtlsKeyError, DtlsParams};
use stream::ConnOut;
use udp::UdpListener;

/// Room for one datagram, or one GRO-coalesced train of them.
const SLOT: usize = 64 * 1024;
/// How far apart the slots of a listener's receive buffer start: one cache
/// line more than a slot. At exactly 64 KiB apart, the first bytes of every
/// slot map to the same cache set, so the 16 small datagrams of one batch,
/// copied in by the kernel, would compete for that one set's few ways.
const STRIDE: usize = SLOT + 64;

/// Sockets handed to a shard thread.
pub struct ShardSockets {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    /// TCP listeners that speak TLS.
    pub tls: Vec<std::net::TcpListener>,
    /// UDP sockets that speak DTLS.
    pub dtls: Vec<std::net::UdpSocket>,
}

/// What TLS listeners need.
#[derive(Clone)]
pub struct TlsParams {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub handshake_timeout: Duration,
    /// `tls.shared`: the listener also serves plain TCP clients, whose first
    /// byte is not a TLS handshake record's.
    pub shared: bool,
}

struct State {
    server: Server<Binder>,
    /// TCP client connections open now and accepted in all (for metrics).
    /// Indexed 0 = TCP, 1 = TLS.
    tcp_active: [u64; 2],
    tcp_total: [u64; 2],
    /// Datagrams delivered in-process between this shard's allocations.
    in_process: u64,
    /// Datagrams that relay sockets received coalesced in GRO trains.
    gro_segments: u64,
    /// TLS connections that did not complete their handshake (in time).
    tls_handshake_failures: u64,
    /// Stream connections the server closed or refused, by [`ConnClose`].
    conn_closed: [u64; ConnClose::COUNT],
    /// The connection caps and allocate timeout all shards share.
    limits: Arc<ConnLimits>,
    udp: Vec<UdpListener>,
    /// DTLS listeners and sessions.
    dtls: DtlsState,
    conns: FastMap<FiveTuple, Rc<ConnOut>>,
    reply: BytesMut,
    peer_buf: Box<[u8]>,
    /// What relay readers read peers' datagrams into (one set per shard).
    relay_rx: RecvBatch,
    /// Datagrams for peers from a batch of client messages, sent per relay
    /// socket with one `sendmmsg` each (see [`State::flush_peers`]).
    peer_tx: SendBatch,
    timer: Rc<Notify>,
    /// Wakes the task that sends what relay readers queued (see [`tasks::flusher`]).
    flush: Rc<Notify>,
    usage: Arc<UsageLog>,
    /// RFC 6062 Connects the core asked for, (connection ID, relayed address,
    /// peer): started by the stream task that handled them.
    connects: Vec<(u32, SocketAddr, SocketAddr)>,
    /// This shard's entries in the XDP fast path (`[offload]`), if attached.
    offload: Option<crate::offload::ShardOffload>,
}

type ShardRef = Rc<RefCell<State>>;

fn unix_now() -> u64 {
    u64::try_from(crate::time::unix_now()).unwrap_or(0)
}

impl State {
    /// Sends `data` to a client: queued on its UDP listener (see
    /// [`udp::send`]), into its TCP connection's queue, or encrypted by its DTLS
    /// session. Returns how many datagrams were dropped for a full buffer or
    /// backlog (for `DropReason::Backlog`).
    #[must_use]
    fn send_to_client(
        udp: &mut [UdpListener],
        dtls: &mut DtlsState,
        conns: &FastMap<FiveTuple, Rc<ConnOut>>,
        tuple: &FiveTuple,
        data: &[u8],
        relayed: bool,
    ) -> u64 {
        match tuple.transport {
            Transport::Udp => udp::send(udp, tuple, data),
            Transport::Dtls => dtls.send(tuple, data),
            Transport::Tcp | Transport::Tls => match conns.get(tuple) {
                Some(c) => u64::from(!c.push(data, relayed)),
                None => 0,
            },
        }
    }

    /// Sends the datagrams queued for peers, each out of its relay socket.
    fn flush_peers(&mut self) {
        if self.peer_tx.is_empty() {
            return;
        }
        let binder = self.server.binder();
        let dropped = self
            .peer_tx
            .flush_by_key(|k| binder.socket(RelayId::from_bits(k)).map(|s| s.as_raw_fd()));
        self.server.count_drop(DropReason::Backlog, dropped);
    }

    /// UDP GSO sends and the datagrams they carried, over every send queue of
    /// the shard (listeners, DTLS listeners, relay sockets).
    fn gso_counts(&self) -> (u64, u64) {
        let mut sum = self.peer_tx.gso_counts();
        for l in self.udp.iter().chain(&self.dtls.listeners) {
            let (sends, segments) = l.tx.gso_counts();
            sum.0 += sends;
            sum.1 += segments;
        }
        sum
    }

    /// Acts on what the core returned for a client message.
    fn dispatch(&mut self, now: Instant, tuple: &FiveTuple, data: &[u8], out: Output) {
        match out {
            Output::None => {}
            Output::Connect {
                conn, from, peer, ..
            } => self.connects.push((conn, from, peer)),
            Output::Reply | Output::ConnectionBound { .. } => {
                let dropped = Self::send_to_client(
                    &mut self.udp,
                    &mut self.dtls,
                    &self.conns,
                    tuple,
                    &self.reply,
                    false,
                );
                self.server.count_drop(DropReason::Backlog, dropped);
                self.timer.notify_one();
            }
            Output::ReplyFrom { from, to } => {
                // RFC 5780: from another of the NAT-discovery listeners, or to
                // another port of the same client IP (the core decided which).
                let tuple = FiveTuple {
                    transport: Transport::Udp,
                    client: to,
                    server: from,
                };
                let dropped = udp::send(&mut self.udp, &tuple, &self.reply);
                self.server.count_drop(DropReason::Backlog, dropped);
            }
            Output::ToPeer {
                relay,
                peer,
                start,
                end,
            } => {
                let Some(payload) = data.get(start..end) else {
                    return;
                };
                if let Some(target) = self.server.binder().local_relay(peer) {
                    self.deliver_in_process(now, relay, target, payload);
                    return;
                }
                if self
                    .peer_tx
                    .push_keyed(relay.to_bits(), payload, peer, None)
                {
                    return;
                }
                // Full, or too big to queue: what is queued goes first.
                self.flush_peers();
                if self
                    .peer_tx
                    .push_keyed(relay.to_bits(), payload, peer, None)
                {
                    return;
                }
                if let Some(sock) = self.server.binder().socket(relay) {
                    if send_udp(sock, payload, peer) {
                        self.server.count_drop(DropReason::Backlog, 1);
                    }
                }
            }
        }
    }

    /// The peer is another allocation's relay on this shard: hand the datagram
    /// straight to it, as if it had come in on that relay socket from `from`'s
    /// address (which is exactly what the kernel would deliver), without the
    /// two system calls and the loopback (or cloud NAT hairpin) in between.
    fn deliver_in_process(&mut self, now: Instant, from: RelayId, to: RelayId, payload: &[u8]) {
        let Some(source) = self.server.binder().local_addr(from) else {
            return;
        };
        let end = PEER_HEADROOM + payload.len();
        if end + PEER_TAILROOM > self.peer_buf.len() {
            return;
        }
        self.peer_buf[PEER_HEADROOM..end].copy_from_slice(payload);
        self.in_process += 1;
        let out = self
            .server
            .handle_peer(now, to, source, &mut self.peer_buf, PEER_HEADROOM, end);
        if let PeerOutput::ToClient { tuple, start, end } = out {
            let dropped = Self::send_to_client(
                &mut self.udp,
                &mut self.dtls,
                &self.conns,
                &tuple,
                &self.peer_buf[start..end],
                true,
            );
            self.server.count_drop(DropReason::Backlog, dropped);
        }
    }
}

/// Sends a datagram with a direct `sendto`. Tokio's `try_send_to` refuses until the
/// reactor has seen the socket become writable, which for a relay socket opened a
/// moment ago may not have happened yet: the first datagram out of a fresh
/// allocation would be dropped. A full buffer (EAGAIN, ENOBUFS) still drops it,
/// as the network would; true then, for the backlog count. Other errors (an
/// unreachable peer) drop this datagram only.
fn send_udp(sock: &std::net::UdpSocket, payload: &[u8], to: SocketAddr) -> bool {
    loop {
        match socket2::SockRef::from(sock).send_to(payload, &to.into()) {
            Ok(_) => return false,
            Err(e) => match classify_send_error(&e) {
                SendFailure::Retry => continue,
                SendFailure::Full => return true,
                SendFailure::Refused => return false,
            },
        }
    }
}

/// What the main thread asks of a shard (reload, drain, the admin socket).
#[derive(Debug)]
pub enum ShardCommand {
    /// A reloaded configuration: applied to new requests, then allocations
    /// whose credential is gone are ended.
    Reconfigure(Arc<ServerConfig>),
    /// Start (`Some`) or stop draining.
    Drain(Option<Drain>),
    Sessions(oneshot::Sender<Vec<Session>>),
    Kill(KillFilter, oneshot::Sender<usize>),
    /// A reload changed `[offload]`: leave the fast path the shard is on
    /// (its entries' last counts folded in), then take this one (`None`:
    /// userspace only). The sender, if any, hears when that is done.
    Offload(
        Option<Arc<crate::offload::Offload>>,
        Option<std::sync::mpsc::Sender<()>>,
    ),
}

/// What a shard thread is handed.
pub struct ShardParams {
    /// Where the shard publishes its counters for the metrics endpoint.
    pub slot: ShardSlot,
    /// Counts this shard as serving its listeners while it runs.
    pub health: Arc<Health>,
    pub index: usize,
    pub cfg: Arc<ServerConfig>,
    pub shared: Shared,
    pub budget: Arc<PortBudget>,
    /// The stream connection limits all shards share.
    pub conn_limits: Arc<ConnLimits>,
    pub sockets: ShardSockets,
    /// Flips to true to stop the shard.
    pub shutdown: watch::Receiver<bool>,
    /// The credentials' generation: when it moves, allocations whose credential
    /// is gone are ended.
    pub credentials: watch::Receiver<i64>,
    /// For the TLS listeners in `sockets.tls`.
    pub tls: Option<TlsParams>,
    /// For the DTLS sockets in `sockets.dtls`.
    pub dtls: Option<DtlsParams>,
    /// How many shards there are (allocation IDs are unique across them).
    pub shards: usize,
    pub commands: mpsc::UnboundedReceiver<ShardCommand>,
    pub usage: Arc<UsageLog>,
    /// The XDP fast path, when `[offload]` attached it.
    pub offload: Option<Arc<crate::offload::Offload>>,
}

/// Runs one shard until `shutdown` flips to true.
pub fn run(params: ShardParams) -> io::Result<()> {
    let ShardParams {
        index,
        cfg,
        shared,
        budget,
        conn_limits,
        sockets,
        mut shutdown,
        credentials,
        slot,
        health,
        tls,
        dtls,
        shards,
        commands: command_rx,
        usage,
        offload,
    } = params;
    // I/O and time only: the main thread's runtime alone has a signal driver.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let binder = Binder::new(cfg.relay_ports.clone(), budget);
        let seed = rand::random();
        let mut server = Server::new(cfg, &shared, binder, Instant::now(), unix_now(), seed);
        server.set_id_space(index, shards);
        server.set_offload(offload.is_some());
        let mut udp = Vec::new();
        for s in sockets.udp {
            udp.push(UdpListener::new(s)?);
        }
        let dtls = DtlsState::new(sockets.dtls, dtls)?;
        let shard: ShardRef = Rc::new(RefCell::new(State {
            server,
            tcp_active: [0; 2],
            tcp_total: [0; 2],
            in_process: 0,
            gro_segments: 0,
            tls_handshake_failures: 0,
            conn_closed: [0; ConnClose::COUNT],
            limits: conn_limits,
            udp,
            dtls,
            conns: FastMap::default(),
            reply: BytesMut::with_capacity(1024),
            peer_buf: vec![0u8; PEER_HEADROOM + SLOT + PEER_TAILROOM].into_boxed_slice(),
            relay_rx: RecvBatch::new(relay_reader::BATCH, PEER_HEADROOM, SLOT, PEER_TAILROOM),
            peer_tx: SendBatch::new(),
            timer: Rc::new(Notify::new()),
            flush: Rc::new(Notify::new()),
            usage,
            connects: Vec::new(),
            offload: offload.map(crate::offload::ShardOffload::new),
        }));
        let n_udp = shard.borrow().udp.len();
        for i in 0..n_udp {
            tokio::task::spawn_local(udp::listener(shard.clone(), i));
        }
        for l in sockets.tcp {
            let l = TcpListener::from_std(l)?;
            tokio::task::spawn_local(stream::accept_loop(shard.clone(), l, None));
        }
        if let Some(tls) = tls {
            for l in sockets.tls {
                let l = TcpListener::from_std(l)?;
                tokio::task::spawn_local(stream::accept_loop(shard.clone(), l, Some(tls.clone())));
            }
        }
        let n_dtls = shard.borrow().dtls.listeners.len();
        for i in 0..n_dtls {
            tokio::task::spawn_local(dtls::listener(shard.clone(), i));
        }
        if n_dtls > 0 {
            tokio::task::spawn_local(dtls::ticker(shard.clone()));
        }
        tokio::task::spawn_local(tasks::timer(shard.clone()));
        tokio::task::spawn_local(tasks::flusher(shard.clone()));
        tokio::task::spawn_local(tasks::recheck_on_change(shard.clone(), credentials));
        tokio::task::spawn_local(tasks::publisher(shard.clone(), slot.clone(), index));
        tokio::task::spawn_local(tasks::commands(shard.clone(), command_rx));
        let _running = health.shard_running();
        tracing::debug!(shard = index, "shard running");
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        let mut guard = shard.borrow_mut();
        let s = &mut *guard;
        let n = s.server.allocations();
        s.server.close_all(Instant::now());
        tasks::log_events(&mut s.server, &mut s.offload, &s.usage, &s.conns);
        drop(guard);
        // The last word: allocations closed, every counter final.
        tasks::publish(&shard, &slot);
        tracing::debug!(shard = index, allocations = n, "shard stopped");
        Ok(())
    })
}
