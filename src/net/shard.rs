//! One shard: a thread with a current-thread tokio runtime that owns one sans-IO
//! core, its own SO_REUSEPORT listener sockets and its own relay sockets.
//!
//! Everything a shard touches per packet is its own, behind an `Rc<RefCell<_>>`
//! that is never held across an `.await`: no lock, no atomic reference count per
//! packet. Shards share only the read-mostly credentials, the nonce key, quota
//! counts and the live-relay-port bitmap (see [`crate::turn::Shared`]).

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::recv_batch::{RecvBatch, BATCH as RECV_BATCH};
use super::relay::{Binder, PortBudget, RelaySocket};
use super::send_batch::SendBatch;
use crate::ops::flood::FloodWatch;
use crate::ops::metrics::{Health, ShardSlot, ShardSnapshot, PUBLISH_INTERVAL};
use crate::ops::usage::{UsageLog, UsageRecord};
use crate::stun::framing::{next_frame, Frame};
use crate::turn::server::{
    Drain, DropReason, Event, KillFilter, Session, PEER_HEADROOM, PEER_TAILROOM,
};
use crate::turn::{
    FastMap, FiveTuple, Output, PeerOutput, RelayId, Server, ServerConfig, Shared, Transport,
};

/// Datagrams read per recvmmsg call.
const BATCH: usize = 16;
/// Room for one datagram, or one GRO-coalesced train of them.
const SLOT: usize = 64 * 1024;
/// Relayed bytes a slow TCP client may have queued before further ones are
/// dropped, as UDP would drop them.
const MAX_TCP_BACKLOG: usize = 1 << 20;
/// Packets one relay socket handles before it yields to the others.
const RELAY_BUDGET: usize = 64;
/// A TCP client must send its first complete STUN message within this time.
const TCP_FIRST_MESSAGE: Duration = Duration::from_secs(10);

/// Sockets handed to a shard thread.
pub struct ShardSockets {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    /// TCP listeners that speak TLS.
    pub tls: Vec<std::net::TcpListener>,
}

/// What TLS listeners need.
#[derive(Clone)]
pub struct TlsParams {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub handshake_timeout: Duration,
}

struct UdpListener {
    local: SocketAddr,
    /// Registered for reading only, like relay sockets (see [`RelaySocket`]).
    socket: Rc<RelaySocket>,
    state: UdpSocketState,
    /// Datagrams to clients, sent together with one `sendmmsg`.
    tx: SendBatch,
}

/// Bytes queued for a TCP client, written by its writer task.
#[derive(Default)]
struct ConnOut {
    pending: RefCell<BytesMut>,
    notify: Notify,
    /// Set when the reader is done: the writer flushes what is queued and exits.
    closed: std::cell::Cell<bool>,
}

impl ConnOut {
    /// Queues `bytes`; false when relayed data was dropped for a full backlog.
    fn push(&self, bytes: &[u8], relayed: bool) -> bool {
        let mut p = self.pending.borrow_mut();
        if relayed && p.len() + bytes.len() > MAX_TCP_BACKLOG {
            return false;
        }
        p.extend_from_slice(bytes);
        drop(p);
        self.notify.notify_one();
        true
    }
}

struct State {
    server: Server<Binder>,
    /// TCP client connections open now and accepted in all (for metrics).
    /// Indexed 0 = TCP, 1 = TLS.
    tcp_active: [u64; 2],
    tcp_total: [u64; 2],
    /// Datagrams delivered in-process between this shard's allocations.
    in_process: u64,
    /// TLS connections that did not complete their handshake (in time).
    tls_handshake_failures: u64,
    udp: Vec<UdpListener>,
    conns: FastMap<FiveTuple, Rc<ConnOut>>,
    reply: BytesMut,
    peer_buf: Box<[u8]>,
    /// What relay readers read peers' datagrams into (one set per shard).
    relay_rx: RecvBatch,
    /// Datagrams for peers from a batch of client messages, sent per relay
    /// socket with one `sendmmsg` each (see [`State::flush_peers`]).
    peer_tx: SendBatch,
    timer: Rc<Notify>,
    /// Wakes the task that sends what relay readers queued (see [`flusher`]).
    flush: Rc<Notify>,
    usage: Arc<UsageLog>,
}

type ShardRef = Rc<RefCell<State>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl State {
    /// Sends `data` to a client: queued on its UDP listener (the client gets
    /// it from the address it reached; see [`State::flush_udp`]), or into its
    /// TCP connection's queue. Returns how many datagrams were dropped for a
    /// full buffer or backlog (for `DropReason::Backlog`).
    #[must_use]
    fn send_to_client(
        udp: &mut [UdpListener],
        conns: &FastMap<FiveTuple, Rc<ConnOut>>,
        tuple: &FiveTuple,
        data: &[u8],
        relayed: bool,
    ) -> u64 {
        match tuple.transport {
            Transport::Udp => {
                let Some(l) = udp.iter_mut().find(|l| {
                    l.local.port() == tuple.server.port()
                        && (l.local.ip() == tuple.server.ip()
                            || (l.local.ip().is_unspecified()
                                && l.local.is_ipv4() == tuple.server.is_ipv4()))
                }) else {
                    return 0;
                };
                let src = l.local.ip().is_unspecified().then_some(tuple.server.ip());
                if l.tx.push(data, tuple.client, src) {
                    return 0;
                }
                // Full, or too big to queue: what is queued goes first, in order.
                let dropped = l.tx.flush(l.socket.as_raw_fd());
                if l.tx.push(data, tuple.client, src) {
                    return dropped;
                }
                let t = Transmit {
                    destination: tuple.client,
                    ecn: None,
                    contents: data,
                    segment_size: None,
                    src_ip: src,
                };
                let socket = l.socket.get_ref();
                // Straight to sendmsg, not gated on readiness tokio has seen: a UDP
                // send never needs to wait, and a full socket buffer drops the
                // datagram, as the network would.
                let full = l.state.try_send(socket.into(), &t).is_err();
                dropped + u64::from(full)
            }
            Transport::Tcp | Transport::Tls => match conns.get(tuple) {
                Some(c) => u64::from(!c.push(data, relayed)),
                None => 0,
            },
        }
    }

    /// Sends every queued client datagram.
    fn flush_udp(&mut self) {
        let mut dropped = 0;
        for l in &mut self.udp {
            if !l.tx.is_empty() {
                dropped += l.tx.flush(l.socket.as_raw_fd());
            }
        }
        if dropped > 0 {
            self.server.count_drop(DropReason::Backlog, dropped);
        }
    }

    /// A request may end an allocation and a later one in the same batch may
    /// reuse its relay ID for a new socket: datagrams queued for the old relay
    /// must not leave from the new one. So the peer queue is sent before any
    /// STUN request is handled (data and indications keep batching).
    fn before_client_message(&mut self, data: &[u8]) {
        if !self.peer_tx.is_empty() && is_stun_request(data) {
            self.flush_peers();
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
            .flush_by_key(|k| binder.socket(RelayId(k)).map(|s| s.as_raw_fd()));
        self.server.count_drop(DropReason::Backlog, dropped);
    }

    /// Has the flusher send the queued datagrams once the tasks that are ready
    /// now have run, so that they go out together.
    fn flush_soon(&self) {
        if self.udp.iter().any(|l| !l.tx.is_empty()) {
            self.flush.notify_one();
        }
    }

    /// Acts on what the core returned for a client message.
    fn dispatch(&mut self, now: Instant, tuple: &FiveTuple, data: &[u8], out: Output) {
        match out {
            Output::None => {}
            Output::Reply => {
                let dropped =
                    Self::send_to_client(&mut self.udp, &self.conns, tuple, &self.reply, false);
                self.server.count_drop(DropReason::Backlog, dropped);
                self.timer.notify_one();
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
                if self.peer_tx.push_keyed(relay.0, payload, peer, None) {
                    return;
                }
                // Full, or too big to queue: what is queued goes first.
                self.flush_peers();
                if self.peer_tx.push_keyed(relay.0, payload, peer, None) {
                    return;
                }
                if let Some(sock) = self.server.binder().socket(relay) {
                    send_udp(sock, payload, peer);
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
                &self.conns,
                &tuple,
                &self.peer_buf[start..end],
                true,
            );
            self.server.count_drop(DropReason::Backlog, dropped);
        }
    }
}

/// Whether `data` starts like a STUN request (top bits 00, class bits 00).
fn is_stun_request(data: &[u8]) -> bool {
    let [b0, b1, ..] = *data else {
        return false;
    };
    b0 & 0xC0 == 0 && b0 & 0x01 == 0 && b1 & 0x10 == 0
}

/// Sends a datagram with a direct `sendto`. Tokio's `try_send_to` refuses until the
/// reactor has seen the socket become writable, which for a relay socket opened a
/// moment ago may not have happened yet: the first datagram out of a fresh
/// allocation would be dropped. A full buffer still drops it (EAGAIN), as the
/// network would.
fn send_udp(sock: &std::net::UdpSocket, payload: &[u8], to: SocketAddr) {
    let _ = socket2::SockRef::from(sock).send_to(payload, &to.into());
}

/// Starts reader tasks for relay sockets the core opened since the last call.
fn start_relay_readers(shard: &ShardRef) {
    let mut s = shard.borrow_mut();
    if !s.server.binder().has_pending() {
        return;
    }
    for (id, socket) in s.server.binder_mut().take_pending() {
        let task = tokio::task::spawn_local(relay_reader(shard.clone(), id, socket));
        s.server.binder_mut().set_reader(id, task.abort_handle());
    }
}

async fn relay_reader(shard: ShardRef, id: RelayId, socket: Rc<RelaySocket>) {
    let fd = socket.as_raw_fd();
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return;
        };
        // Drained: a batch came back short (or empty), so the queue was empty
        // then; clearing readiness saves the read that would only say so. A
        // datagram arriving after that raises readiness anew (tokio compares
        // the readiness tick, so none is missed).
        let mut drained = false;
        for _ in 0..RELAY_BUDGET / RECV_BATCH {
            let mut guard = shard.borrow_mut();
            let s = &mut *guard;
            let n = match s.relay_rx.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                // ICMP errors surface here on some kernels; the socket stays usable.
                Err(_) => break,
            };
            let now = Instant::now();
            for i in 0..n {
                let Some((from, buf, start, end)) = s.relay_rx.get(i) else {
                    s.server.count_drop(DropReason::Malformed, 1);
                    continue;
                };
                let out = s.server.handle_peer(now, id, from, buf, start, end);
                if let PeerOutput::ToClient { tuple, start, end } = out {
                    let dropped =
                        State::send_to_client(&mut s.udp, &s.conns, &tuple, &buf[start..end], true);
                    s.server.count_drop(DropReason::Backlog, dropped);
                }
            }
            if n < RECV_BATCH {
                drained = true;
                break;
            }
        }
        if drained {
            ready.clear_ready();
        }
        drop(ready);
        shard.borrow().flush_soon();
        tokio::task::yield_now().await;
    }
}

async fn udp_listener(shard: ShardRef, index: usize) {
    let socket = shard.borrow().udp[index].socket.clone();
    let mut storage = vec![0u8; BATCH * SLOT];
    let mut meta = [RecvMeta::default(); BATCH];
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return;
        };
        loop {
            let n = {
                let s = shard.borrow();
                let l = &s.udp[index];
                let mut chunks = storage.chunks_mut(SLOT);
                let mut slices: [IoSliceMut<'_>; BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                l.state
                    .recv(socket.get_ref().into(), &mut slices, &mut meta)
            };
            let n = match n {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    break;
                }
                // An ICMP error and the like: try again at the next readiness.
                Err(_) => break,
            };
            let now = Instant::now();
            let mut control = false;
            {
                let mut guard = shard.borrow_mut();
                let s = &mut *guard;
                let local = s.udp[index].local;
                for (m, buf) in meta.iter().zip(storage.chunks(SLOT)).take(n) {
                    let server_addr = SocketAddr::new(m.dst_ip.unwrap_or(local.ip()), local.port());
                    let tuple = FiveTuple {
                        transport: Transport::Udp,
                        client: m.addr,
                        server: server_addr,
                    };
                    let stride = m.stride.max(1);
                    for datagram in buf[..m.len].chunks(stride) {
                        let mut reply = std::mem::take(&mut s.reply);
                        s.before_client_message(datagram);
                        let out = s.server.handle_client(now, tuple, datagram, &mut reply);
                        s.reply = reply;
                        control |= out == Output::Reply;
                        s.dispatch(now, &tuple, datagram, out);
                    }
                }
                s.flush_peers();
                s.flush_udp();
            }
            if control {
                start_relay_readers(&shard);
            }
            // A short batch: the queue was empty a moment ago. Readiness is
            // cleared instead of asking again (see `relay_reader`).
            if n < BATCH {
                ready.clear_ready();
                break;
            }
        }
    }
}

async fn tcp_acceptor(shard: ShardRef, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(tcp_connection(shard.clone(), stream, client));
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn tcp_connection(shard: ShardRef, stream: TcpStream, client: SocketAddr) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let tuple = FiveTuple {
        transport: Transport::Tcp,
        client,
        server: local,
    };
    let (rd, wr) = stream.into_split();
    stream_connection(shard, tuple, rd, wr).await;
}

/// Writes queued frames to a stream. Over TCP the whole batch goes in one write.
/// Over TLS each STUN or ChannelData message gets a TLS record of its own: TLS is a
/// byte stream and browsers frame it as one, but some clients (coturn's own
/// `turnutils_uclient -S` among them) take each `SSL_read` for exactly one
/// message, and coturn writes one message per record. Then flush: rustls may keep
/// the last records buffered when the socket was momentarily full, and nothing
/// else would push them out until the next write (over TCP, flush is a no-op).
async fn write_frames<W>(wr: &mut W, chunk: &[u8], tls: bool) -> io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    if !tls {
        wr.write_all(chunk).await?;
        return wr.flush().await;
    }
    let mut rest = chunk;
    while !rest.is_empty() {
        // The frames are our own, so they are whole; anything else is written as is.
        let n = match next_frame(rest) {
            Frame::Stun(n) | Frame::ChannelData { len: n, .. } => n.min(rest.len()),
            Frame::NeedMore(_) | Frame::Invalid => rest.len(),
        };
        wr.write_all(&rest[..n]).await?;
        rest = &rest[n..];
    }
    wr.flush().await
}

async fn tls_acceptor(shard: ShardRef, listener: TcpListener, tls: TlsParams) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                let (shard, acceptor, timeout) =
                    (shard.clone(), tls.acceptor.clone(), tls.handshake_timeout);
                tokio::task::spawn_local(async move {
                    let Ok(local) = stream.local_addr() else {
                        return;
                    };
                    // A client that does not finish the handshake in time is dropped:
                    // half-open TLS connections must not pile up.
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    else {
                        shard.borrow_mut().tls_handshake_failures += 1;
                        return;
                    };
                    let tuple = FiveTuple {
                        transport: Transport::Tls,
                        client,
                        server: local,
                    };
                    let (rd, wr) = tokio::io::split(tls_stream);
                    stream_connection(shard, tuple, rd, wr).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Serves one stream connection (TCP, or TLS after its handshake): STUN and
/// ChannelData framed by `stun::framing`, replies and relayed data queued for a
/// writer task. The allocation, if any, ends with the connection.
async fn stream_connection<R, W>(shard: ShardRef, tuple: FiveTuple, mut rd: R, mut wr: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + 'static,
{
    let tls = tuple.transport == Transport::Tls;
    let out = Rc::new(ConnOut::default());
    {
        let mut s = shard.borrow_mut();
        s.conns.insert(tuple, out.clone());
        s.tcp_active[usize::from(tls)] += 1;
        s.tcp_total[usize::from(tls)] += 1;
    }
    let writer_out = out.clone();
    let writer = tokio::task::spawn_local(async move {
        let mut chunk = BytesMut::new();
        loop {
            writer_out.notify.notified().await;
            std::mem::swap(&mut chunk, &mut *writer_out.pending.borrow_mut());
            if !chunk.is_empty() && write_frames(&mut wr, &chunk, tls).await.is_err() {
                return;
            }
            chunk.clear();
            if writer_out.closed.get() && writer_out.pending.borrow().is_empty() {
                let _ = wr.shutdown().await;
                return;
            }
        }
    });

    let mut buf = BytesMut::with_capacity(4096);
    let mut first = true;
    let opened = tokio::time::Instant::now();
    'read: loop {
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(4096);
        }
        let read = if first {
            match tokio::time::timeout_at(opened + TCP_FIRST_MESSAGE, rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            rd.read_buf(&mut buf).await
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut control = false;
        loop {
            // A connection must open with a STUN message (top bits 00): this closes
            // HTTP and TLS probes at once instead of reading "GET " as a ChannelData
            // header with 21 KB to come.
            if first && buf.first().is_some_and(|b| b & 0xC0 != 0) {
                break 'read;
            }
            let len = match next_frame(&buf) {
                Frame::Stun(n) => n,
                Frame::ChannelData { len, .. } if !first => len,
                Frame::NeedMore(_) => break,
                // Not STUN: close. A connection must open with a STUN message, which
                // also keeps HTTP and TLS probes from being read as ChannelData.
                Frame::ChannelData { .. } | Frame::Invalid => break 'read,
            };
            first = false;
            let now = Instant::now();
            {
                let mut guard = shard.borrow_mut();
                let s = &mut *guard;
                let frame = &buf[..len];
                let mut reply = std::mem::take(&mut s.reply);
                s.before_client_message(frame);
                let o = s.server.handle_client(now, tuple, frame, &mut reply);
                s.reply = reply;
                control |= o == Output::Reply;
                s.dispatch(now, &tuple, frame, o);
            }
            buf.advance(len);
        }
        // Data for peers goes out now; data relayed in-process to a UDP client
        // of this shard goes with the flusher.
        let mut s = shard.borrow_mut();
        s.flush_peers();
        s.flush_soon();
        drop(s);
        if control {
            start_relay_readers(&shard);
        }
    }
    {
        let mut s = shard.borrow_mut();
        s.conns.remove(&tuple);
        s.tcp_active[usize::from(tls)] = s.tcp_active[usize::from(tls)].saturating_sub(1);
        s.server.connection_closed(Instant::now(), tuple);
    }
    // Let the writer flush what is queued, but not wait on a client that stopped
    // reading.
    out.closed.set(true);
    out.notify.notify_one();
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Sends what relay readers (and stream connections) queued for UDP clients,
/// once the tasks that were ready with it have run: the datagrams of all the
/// relay sockets that became readable together go out in one `sendmmsg`.
async fn flusher(shard: ShardRef) {
    let notify = shard.borrow().flush.clone();
    loop {
        notify.notified().await;
        shard.borrow_mut().flush_udp();
    }
}

async fn timer(shard: ShardRef) {
    let notify = shard.borrow().timer.clone();
    let mut last_anchor = Instant::now();
    loop {
        let deadline = shard.borrow().server.poll_timeout();
        // Wake at least once a minute to re-anchor wall-clock time.
        let cap = Instant::now() + Duration::from_secs(60);
        let wake = deadline.map_or(cap, |d| d.min(cap));
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            _ = notify.notified() => {
                // A reply went out: an allocation may have been created or
                // deleted. Report it now, not at the next expiry.
                let mut s = shard.borrow_mut();
                let s = &mut *s;
                log_events(&mut s.server, &s.usage);
                continue;
            }
        }
        let now = Instant::now();
        let mut s = shard.borrow_mut();
        let s = &mut *s;
        if now.duration_since(last_anchor) >= Duration::from_secs(60) {
            s.server.set_wall_clock(now, unix_now());
            last_anchor = now;
        }
        s.server.handle_timeout(now);
        log_events(&mut s.server, &s.usage);
    }
}

/// Logs what the core reports (at debug: one line per allocation, never per
/// packet) and writes a usage record per finished allocation.
fn log_events(server: &mut Server<Binder>, usage: &UsageLog) {
    let record = usage.enabled();
    for e in server.drain_events() {
        match e {
            Event::AllocationCreated { tuple } => {
                tracing::debug!(transport = tuple.transport.name(), client = %tuple.client, "allocation created")
            }
            Event::AllocationClosed {
                id,
                tuple,
                username,
                realm,
                started_unix,
                relays,
                duration,
                traffic,
                peers,
                reason,
            } => {
                tracing::debug!(
                    id,
                    transport = tuple.transport.name(),
                    client = %tuple.client,
                    reason = reason.name(),
                    to_peer_bytes = traffic.to_peer_bytes,
                    to_client_bytes = traffic.to_client_bytes,
                    "allocation closed"
                );
                if record {
                    usage.write(&UsageRecord::new(
                        id,
                        &tuple,
                        &username,
                        &realm,
                        &relays,
                        peers,
                        &traffic,
                        started_unix,
                        duration,
                        reason,
                    ));
                }
            }
        }
    }
}

/// Copies the shard's counters into its metrics slot: one uncontended lock and a
/// copy of plain integers, a few times a second. The gauges are counted here, off
/// the packet path.
fn publish(shard: &ShardRef, slot: &ShardSlot) {
    let s = shard.borrow();
    let g = s.server.gauges(Instant::now());
    let snap = ShardSnapshot {
        stats: s.server.stats().clone(),
        allocations: g.allocations,
        permissions: g.permissions,
        channels: g.channels,
        tcp_active: s.tcp_active,
        tcp_total: s.tcp_total,
        in_process: s.in_process,
        tls_handshake_failures: s.tls_handshake_failures,
    };
    drop(s);
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = snap;
}

async fn publisher(shard: ShardRef, slot: ShardSlot, index: usize) {
    let mut every = tokio::time::interval(PUBLISH_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flood = FloodWatch::default();
    let mut window = Instant::now();
    loop {
        every.tick().await;
        publish(&shard, &slot);
        if window.elapsed() >= crate::ops::flood::WINDOW {
            window = Instant::now();
            flood.warn(index, shard.borrow().server.stats());
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
}

async fn commands(shard: ShardRef, mut rx: mpsc::UnboundedReceiver<ShardCommand>) {
    while let Some(cmd) = rx.recv().await {
        let mut guard = shard.borrow_mut();
        let s = &mut *guard;
        let now = Instant::now();
        match cmd {
            ShardCommand::Reconfigure(cfg) => {
                s.server.reconfigure(cfg);
                let ended = s.server.recheck_credentials(now);
                if ended > 0 {
                    tracing::info!(
                        allocations = ended,
                        "reload: users no longer configured, allocations ended"
                    );
                }
            }
            ShardCommand::Drain(d) => s.server.set_drain(d),
            ShardCommand::Sessions(reply) => {
                let _ = reply.send(s.server.sessions(now));
            }
            ShardCommand::Kill(filter, reply) => {
                let _ = reply.send(s.server.kill(now, &filter));
            }
        }
        log_events(&mut s.server, &s.usage);
    }
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
    pub sockets: ShardSockets,
    /// Flips to true to stop the shard.
    pub shutdown: watch::Receiver<bool>,
    /// The credentials' generation: when it moves, allocations whose credential
    /// is gone are ended.
    pub credentials: watch::Receiver<i64>,
    /// For the TLS listeners in `sockets.tls`.
    pub tls: Option<TlsParams>,
    /// How many shards there are (allocation IDs are unique across them).
    pub shards: usize,
    pub commands: mpsc::UnboundedReceiver<ShardCommand>,
    pub usage: Arc<UsageLog>,
}

/// Ends allocations whose credential vanished, each time the credentials change.
async fn recheck_on_change(shard: ShardRef, mut generation: watch::Receiver<i64>) {
    while generation.changed().await.is_ok() {
        let mut s = shard.borrow_mut();
        let s = &mut *s;
        let ended = s.server.recheck_credentials(Instant::now());
        if ended > 0 {
            tracing::info!(
                allocations = ended,
                "credentials removed or revoked: allocations ended"
            );
        }
        log_events(&mut s.server, &s.usage);
    }
}

/// Runs one shard until `shutdown` flips to true.
pub fn run(params: ShardParams) -> io::Result<()> {
    let ShardParams {
        index,
        cfg,
        shared,
        budget,
        sockets,
        mut shutdown,
        credentials,
        slot,
        health,
        tls,
        shards,
        commands: command_rx,
        usage,
    } = params;
    // I/O and time only: the main thread's runtime alone has a signal driver.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let binder = Binder::new(cfg.relay_ports.clone(), budget);
        let mut server = Server::new(cfg, &shared, binder, Instant::now(), unix_now());
        server.set_id_space(index, shards);
        let mut udp = Vec::new();
        for s in sockets.udp {
            let local = s.local_addr()?;
            let state = UdpSocketState::new((&s).into())?;
            s.set_nonblocking(true)?;
            // SAFETY: the AsyncFd owns the socket, whose descriptor stays open
            // and the same until the AsyncFd is dropped.
            let socket = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE)
            }?;
            udp.push(UdpListener {
                local,
                socket: Rc::new(socket),
                state,
                tx: SendBatch::new(),
            });
        }
        let shard: ShardRef = Rc::new(RefCell::new(State {
            server,
            tcp_active: [0; 2],
            tcp_total: [0; 2],
            in_process: 0,
            tls_handshake_failures: 0,
            udp,
            conns: FastMap::default(),
            reply: BytesMut::with_capacity(1024),
            peer_buf: vec![0u8; PEER_HEADROOM + SLOT + PEER_TAILROOM].into_boxed_slice(),
            relay_rx: RecvBatch::new(PEER_HEADROOM, SLOT, PEER_TAILROOM),
            peer_tx: SendBatch::new(),
            timer: Rc::new(Notify::new()),
            flush: Rc::new(Notify::new()),
            usage,
        }));
        let n_udp = shard.borrow().udp.len();
        for i in 0..n_udp {
            tokio::task::spawn_local(udp_listener(shard.clone(), i));
        }
        for l in sockets.tcp {
            let l = TcpListener::from_std(l)?;
            tokio::task::spawn_local(tcp_acceptor(shard.clone(), l));
        }
        if let Some(tls) = tls {
            for l in sockets.tls {
                let l = TcpListener::from_std(l)?;
                tokio::task::spawn_local(tls_acceptor(shard.clone(), l, tls.clone()));
            }
        }
        tokio::task::spawn_local(timer(shard.clone()));
        tokio::task::spawn_local(flusher(shard.clone()));
        tokio::task::spawn_local(recheck_on_change(shard.clone(), credentials));
        tokio::task::spawn_local(publisher(shard.clone(), slot.clone(), index));
        tokio::task::spawn_local(commands(shard.clone(), command_rx));
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
        log_events(&mut s.server, &s.usage);
        drop(guard);
        // The last word: allocations closed, every counter final.
        publish(&shard, &slot);
        tracing::debug!(shard = index, allocations = n, "shard stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Class, MessageBuilder, Method, TransactionId};

    #[test]
    fn stun_requests_are_told_from_indications_responses_and_channel_data() {
        let message = |method, class| {
            let mut buf = BytesMut::new();
            MessageBuilder::new(&mut buf, method, class, TransactionId::random()).finish();
            buf.to_vec()
        };
        for m in [
            Method::Allocate,
            Method::Refresh,
            Method::ChannelBind,
            Method::Binding,
        ] {
            assert!(is_stun_request(&message(m, Class::Request)), "{m:?}");
            assert!(!is_stun_request(&message(m, Class::Success)));
            assert!(!is_stun_request(&message(m, Class::Error)));
        }
        assert!(!is_stun_request(&message(Method::Send, Class::Indication)));
        assert!(!is_stun_request(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]));
        assert!(!is_stun_request(&[0x00]));
    }
}
