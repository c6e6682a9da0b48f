//! The stream path of a shard: TCP and TLS listeners share one accept loop (TLS
//! adds its handshake as one step) and one connection task, generic over the
//! stream's read and write halves, with a writer task per connection.

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
}

/// Accepts connections on one TCP listener of the shard; with `tls`, each
/// connection first completes a TLS handshake.
pub(super) async fn accept_loop(shard: ShardRef, listener: TcpListener, tls: Option<TlsParams>) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(connection(shard.clone(), stream, client, tls.clone()));
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One accepted connection: the TLS handshake if the listener speaks TLS, then
/// [`stream_connection`] over the plain or the TLS stream.
async fn connection(
    shard: ShardRef,
    stream: TcpStream,
    client: SocketAddr,
    tls: Option<TlsParams>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let Some(tls) = tls else {
        let tuple = FiveTuple {
            transport: Transport::Tcp,
            client,
            server: local,
        };
        let (rd, wr) = stream.into_split();
        stream_connection(shard, tuple, rd, wr).await;
        return;
    };
    // A client that does not finish the handshake in time is dropped:
    // half-open TLS connections must not pile up.
    let Ok(Ok(tls_stream)) =
        tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream)).await
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
    // Bytes of an oversized frame still to come, discarded as they arrive.
    let mut skip = 0usize;
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
                break 'read;
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
                Frame::ChannelData { .. } | Frame::Invalid => break 'read,
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
