//! The stream path of a shard: TCP and TLS listeners share one accept loop (TLS
//! adds its handshake as one step; a `tls.shared` listener first peeks one byte
//! to choose between TLS and plain TCP) and one connection task, generic over the
//! stream's read and write halves, with a writer task per connection.
//!
//! Behind an L4 load balancer (`connections.proxy-protocol-from`) a
//! connection first yields its PROXY header (see [`crate::net::proxy_protocol`]),
//! and the client it names is the connection's client from then on.
//!
//! Stream abuse is bounded here (see [`crate::net::connections`]): connections
//! beyond `connections.max-per-ip` or `max-total` are closed at accept, and a
//! connection is closed when it holds no allocation `allocate-timeout` after
//! its accept (an absolute deadline, which bytes trickling in do not move: a
//! slow-loris client is closed on time), or `allocate-timeout` after its
//! allocation ended (expired, deleted or killed) without a new one.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::relay_reader::start_relay_readers;
use super::{ShardRef, TlsParams};
use crate::net::connections::{ConnClose, ConnGuard};
use crate::net::proxy_protocol;
use crate::stun::framing::{next_frame, Frame};
use crate::turn::server::DropReason;
use crate::turn::{FiveTuple, Output, Transport};

/// Relayed bytes a slow TCP client may have queued before further ones are
/// dropped, as UDP would drop them.
const MAX_TCP_BACKLOG: usize = 1 << 20;
/// A TCP client must send its first complete STUN message within this time.
const TCP_FIRST_MESSAGE: Duration = Duration::from_secs(10);

/// Bytes queued for a TCP client, written by its writer task.
#[derive(Default)]
pub(super) struct ConnOut {
    pending: RefCell<BytesMut>,
    notify: Notify,
    /// Set when the reader is done: the writer flushes what is queued and exits.
    closed: Cell<bool>,
    /// Woken when the connection's allocation ended other than by the
    /// connection closing, so that its allocate timeout starts again.
    ended: Notify,
    /// Set with `closed` when a ConnectionBind made this a data connection
    /// (RFC 6062): the writer hands its half back instead of shutting it.
    handoff: Cell<bool>,
}

impl ConnOut {
    /// Queues `bytes`; false when relayed data was dropped for a full backlog.
    pub(super) fn push(&self, bytes: &[u8], relayed: bool) -> bool {
        let mut p = self.pending.borrow_mut();
        if relayed && p.len() + bytes.len() > MAX_TCP_BACKLOG {
            return false;
        }
        p.extend_from_slice(bytes);
        drop(p);
        self.notify.notify_one();
        true
    }

    /// The core ended this connection's allocation (expiry, Refresh 0, kill).
    pub(super) fn allocation_ended(&self) {
        self.ended.notify_one();
    }
}

/// Accepts connections on one TCP listener of the shard; with `tls`, each
/// connection first completes a TLS handshake. Connections over the caps are
/// closed at once (the peer sees the close: TCP has no refusal after accept).
pub(super) async fn accept_loop(shard: ShardRef, listener: TcpListener, tls: Option<TlsParams>) {
    let limits = shard.borrow().limits.clone();
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                // A load balancer's connection is counted under the client it
                // names, once its PROXY header is read (in `connection`).
                let proxied = limits.from_trusted_proxy(client.ip());
                let guard = match proxied {
                    true => None,
                    false => match limits.admit(client.ip()) {
                        Ok(g) => Some(g),
                        Err(why) => {
                            shard.borrow_mut().conn_closed[why as usize] += 1;
                            drop(stream);
                            continue;
                        }
                    },
                };
                // Absolute from the accept: nothing the client sends moves it.
                // With TCP allocations on, a connection may be a data
                // connection, which must bind within tcp-connection-timeout
                // (RFC 6062 §5.4): no connection holds nothing longer.
                let mut timeout = limits.allocate_timeout();
                {
                    let s = shard.borrow();
                    let cfg = s.server.config();
                    if cfg.tcp_allocations {
                        timeout = timeout.min(cfg.tcp_connection_timeout);
                    }
                }
                let deadline = tokio::time::Instant::now() + timeout;
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(connection(
                    shard.clone(),
                    stream,
                    client,
                    tls.clone(),
                    guard,
                    deadline,
                ));
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One accepted connection: the TLS handshake if the listener speaks TLS (on a
/// shared listener, if the first byte opens a TLS handshake), then
/// [`stream_connection`] over the plain or the TLS stream. `guard` counts it
/// against the connection caps until it ends; `deadline` is when it must hold
/// an allocation.
async fn connection(
    shard: ShardRef,
    mut stream: TcpStream,
    client: SocketAddr,
    tls: Option<TlsParams>,
    guard: Option<ConnGuard>,
    deadline: tokio::time::Instant,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // Through a trusted load balancer: the PROXY header names the client,
    // who is then counted against the caps like a direct one.
    let (client, guard) = match guard {
        Some(g) => (client, g),
        None => {
            let until = (tokio::time::Instant::now() + TCP_FIRST_MESSAGE).min(deadline);
            let header =
                tokio::time::timeout_at(until, proxy_protocol::read_header(&mut stream)).await;
            let client = match header {
                Ok(Ok(named)) => named.unwrap_or(client),
                Ok(Err(_)) | Err(_) => {
                    shard.borrow_mut().conn_closed[ConnClose::ProxyHeader as usize] += 1;
                    return;
                }
            };
            let limits = shard.borrow().limits.clone();
            match limits.admit(client.ip()) {
                Ok(g) => (client, g),
                Err(why) => {
                    shard.borrow_mut().conn_closed[why as usize] += 1;
                    return;
                }
            }
        }
    };
    // A client that does not finish the handshake in time is dropped:
    // half-open TLS connections must not pile up. The allocate deadline runs
    // from the accept, so the handshake counts against it too.
    let until = tls
        .as_ref()
        .map(|t| (tokio::time::Instant::now() + t.handshake_timeout).min(deadline));
    // On a shared port the first byte decides, once per connection: 0x16 opens
    // every TLS record carrying a handshake (the ClientHello), while a STUN
    // message opens with 0b00 and no STUN method is high enough for a 0x16
    // first byte, and ChannelData opens with 0x40..=0x7F. The byte is peeked,
    // not read, so either side then sees the stream from its start.
    let tls = match (tls, until) {
        (Some(t), Some(until)) if t.shared => match first_byte(&stream, until).await {
            FirstByte::Tls => Some(t),
            FirstByte::Plain => None,
            FirstByte::Closed => return,
            FirstByte::Silent => {
                shard.borrow_mut().conn_closed[ConnClose::FirstMessageTimeout as usize] += 1;
                return;
            }
        },
        (tls, _) => tls,
    };
    let (Some(tls), Some(until)) = (tls, until) else {
        let tuple = FiveTuple {
            transport: Transport::Tcp,
            client,
            server: local,
        };
        let (rd, wr) = stream.into_split();
        stream_connection(shard, tuple, rd, wr, deadline).await;
        drop(guard);
        return;
    };
    let Ok(Ok(tls_stream)) = tokio::time::timeout_at(until, tls.acceptor.accept(stream)).await
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
    stream_connection(shard, tuple, rd, wr, deadline).await;
    drop(guard);
}

/// What the first byte on a shared TLS/TCP port says.
enum FirstByte {
    /// 0x16: a TLS handshake record.
    Tls,
    /// Anything else: a plain STUN/TURN stream (which rejects non-STUN itself).
    Plain,
    /// The client closed (or the socket failed) before sending a byte.
    Closed,
    /// Nothing arrived before the handshake deadline.
    Silent,
}

/// The TLS handshake record type (RFC 8446 §5.1, `ContentType.handshake`).
const TLS_HANDSHAKE: u8 = 0x16;

/// Peeks the first byte of `stream` without consuming it, waiting at most until
/// `until` (the handshake deadline: a client must speak first either way).
async fn first_byte(stream: &TcpStream, until: tokio::time::Instant) -> FirstByte {
    let mut byte = [0u8; 1];
    match tokio::time::timeout_at(until, stream.peek(&mut byte)).await {
        Err(_) => FirstByte::Silent,
        Ok(Ok(0) | Err(_)) => FirstByte::Closed,
        Ok(Ok(_)) if byte[0] == TLS_HANDSHAKE => FirstByte::Tls,
        Ok(Ok(_)) => FirstByte::Plain,
    }
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

/// Serves one stream connection (TCP, or TLS after its handshake): STUN and
/// ChannelData framed by `stun::framing`, replies and relayed data queued for a
/// writer task. The allocation, if any, ends with the connection.
async fn stream_connection<R, W>(
    shard: ShardRef,
    tuple: FiveTuple,
    mut rd: R,
    mut wr: W,
    deadline: tokio::time::Instant,
) where
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
                return None;
            }
            chunk.clear();
            if writer_out.closed.get() && writer_out.pending.borrow().is_empty() {
                if writer_out.handoff.get() {
                    return Some(wr);
                }
                let _ = wr.shutdown().await;
                return None;
            }
        }
    });

    let mut buf = BytesMut::with_capacity(4096);
    let mut first = true;
    // Bytes of an oversized frame still to come, discarded as they arrive.
    let mut skip = 0usize;
    let opened = tokio::time::Instant::now();
    let allocate_timeout = shard.borrow().limits.allocate_timeout();
    // When the connection is closed unless it holds an allocation by then, and
    // why; none while it holds one.
    let mut deadline = Some((deadline, ConnClose::AllocateTimeout));
    let mut allocated = false;
    // A ConnectionBind succeeded: the connection ID this becomes the data
    // connection of (RFC 6062).
    let mut bound: Option<u32> = None;
    // One timer, moved when the deadline moves: nothing is set up per read.
    let sleep = tokio::time::sleep_until(opened + TCP_FIRST_MESSAGE);
    tokio::pin!(sleep);
    // Whether the allocation came or went; moves the deadline accordingly.
    let recheck = |allocated: &mut bool,
                   deadline: &mut Option<(tokio::time::Instant, ConnClose)>| {
        let has = shard.borrow().server.has_allocation(&tuple);
        if has && !*allocated {
            *deadline = None;
        } else if !has && *allocated {
            *deadline = Some((
                tokio::time::Instant::now() + allocate_timeout,
                ConnClose::Idle,
            ));
        }
        *allocated = has;
    };
    let closed_by: Option<ConnClose> = 'read: loop {
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(4096);
        }
        let first_message = (opened + TCP_FIRST_MESSAGE, ConnClose::FirstMessageTimeout);
        let limit = match deadline {
            Some(d) if first && first_message.0 < d.0 => Some(first_message),
            None if first => Some(first_message),
            d => d,
        };
        if let Some((when, _)) = limit {
            if sleep.deadline() != when {
                sleep.as_mut().reset(when);
            }
        }
        // The deadline first: a client that keeps the socket readable (Binding
        // requests in a loop) must not starve it.
        let read = tokio::select! {
            biased;
            () = &mut sleep, if limit.is_some() => break 'read limit.map(|(_, why)| why),
            () = out.ended.notified() => {
                recheck(&mut allocated, &mut deadline);
                continue;
            }
            r = rd.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
        if skip > 0 {
            let n = skip.min(buf.len());
            buf.advance(n);
            skip -= n;
            if skip > 0 {
                continue;
            }
        }
        let max = shard.borrow().server.config().max_message_size;
        let mut control = false;
        loop {
            // A connection must open with a STUN message (top bits 00): this closes
            // HTTP and TLS probes at once instead of reading "GET " as a ChannelData
            // header with 21 KB to come.
            if first && buf.first().is_some_and(|b| b & 0xC0 != 0) {
                break 'read Some(ConnClose::NotStun);
            }
            let len = match next_frame(&buf) {
                Frame::Stun(n) => n,
                Frame::ChannelData { len, .. } if !first => len,
                // A frame over `max-message-size` is known by its header: skip it
                // without buffering it (its length keeps the framing), as UDP
                // drops such a datagram. Closing instead would end the
                // allocation (RFC 8656 §3.1) over one packet.
                Frame::NeedMore(n) if n > max => n,
                Frame::NeedMore(_) => break,
                // Not STUN: close. A connection must open with a STUN message, which
                // also keeps HTTP and TLS probes from being read as ChannelData.
                Frame::ChannelData { .. } | Frame::Invalid => break 'read Some(ConnClose::NotStun),
            };
            if len > max {
                shard
                    .borrow_mut()
                    .server
                    .count_drop(DropReason::Oversized, 1);
                let n = len.min(buf.len());
                buf.advance(n);
                skip = len - n;
                if skip > 0 {
                    break;
                }
                continue;
            }
            first = false;
            let now = Instant::now();
            {
                let mut guard = shard.borrow_mut();
                let s = &mut *guard;
                let frame = &buf[..len];
                let mut reply = std::mem::take(&mut s.reply);
                let o = s.server.handle_client(now, tuple, frame, &mut reply);
                s.reply = reply;
                control |= matches!(o, Output::Reply | Output::Connect { .. });
                if let Output::ConnectionBound { conn } = o {
                    bound = Some(conn);
                }
                s.dispatch(now, &tuple, frame, o);
            }
            buf.advance(len);
            if bound.is_some() {
                break 'read None;
            }
        }
        // Data for peers goes out now; data relayed in-process to a UDP client
        // of this shard goes with the flusher.
        let mut s = shard.borrow_mut();
        s.flush_peers();
        s.flush_soon();
        drop(s);
        if control {
            // Only a request (answered) can create or delete an allocation.
            recheck(&mut allocated, &mut deadline);
            start_relay_readers(&shard);
            super::tcp_relay::start_connects(&shard);
        }
    };
    {
        let mut s = shard.borrow_mut();
        s.conns.remove(&tuple);
        s.tcp_active[usize::from(tls)] = s.tcp_active[usize::from(tls)].saturating_sub(1);
        if let Some(why) = closed_by {
            s.conn_closed[why as usize] += 1;
        }
        s.server.connection_closed(Instant::now(), tuple);
    }
    // Let the writer flush what is queued, but not wait on a client that stopped
    // reading.
    out.handoff.set(bound.is_some());
    out.closed.set(true);
    out.notify.notify_one();
    let abort = writer.abort_handle();
    let wr = match tokio::time::timeout(Duration::from_secs(2), writer).await {
        Ok(Ok(wr)) => wr,
        Ok(Err(_)) => None,
        Err(_) => {
            abort.abort();
            None
        }
    };
    // A data connection: after the ConnectionBind response, raw bytes.
    match (bound, wr) {
        (Some(conn), Some(wr)) => {
            super::tcp_relay::pipe(shard, conn, tuple.transport, rd, wr, buf).await;
        }
        (Some(conn), None) => shard.borrow().server.tcp_connections().remove(conn),
        _ => {}
    }
}
