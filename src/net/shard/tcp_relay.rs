//! The sockets of TCP allocations (RFC 6062); the rules are the core's
//! (`crate::turn::tcp_relay`). A TCP allocation's relayed address is a
//! listening socket with an accept task ([`accept_peers`]); Connect opens a
//! connection from that address ([`start_connects`]); a peer connection waits,
//! parked in the shared [`PortBudget`](crate::net::relay::PortBudget), for
//! the ConnectionBind of a data connection at most `tcp-connection-timeout`;
//! then [`pipe`] copies bytes both ways, counted for metrics and the
//! allocation's usage record, until either side closes or the allocation ends.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ShardRef, State};
use crate::net::sockets::tcp_relay_connector;
use crate::turn::{RelayId, Transport};

/// How long a Connect's connection attempt may take: well inside the 30 s a
/// client waits for the Connect response.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a pipe checks that its connection ID is still live (the
/// allocation may have ended on its own shard).
const LIVENESS_CHECK: Duration = Duration::from_secs(1);
/// The buffer of each direction of a pipe.
const PIPE_BUFFER: usize = 16 * 1024;

/// Accepts peers' connections on a TCP allocation's relayed address: each is
/// refused (closed) or announced to the client by a ConnectionAttempt.
pub(super) async fn accept_peers(shard: ShardRef, id: RelayId, listener: std::net::TcpListener) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut guard = shard.borrow_mut();
        let s = &mut *guard;
        let mut out = std::mem::take(&mut s.reply);
        let accepted = s
            .server
            .tcp_peer_connected(Instant::now(), id, from, &mut out);
        if let Some((tuple, conn)) = accepted {
            if let Ok(std) = stream.into_std() {
                s.server.binder().shared().park_peer(conn, std);
                let dropped =
                    State::send_to_client(&mut s.udp, &mut s.dtls, &s.conns, &tuple, &out, false);
                s.server
                    .count_drop(crate::turn::server::DropReason::Backlog, dropped);
                drop(guard);
                tokio::task::spawn_local(expire_unbound(shard.clone(), conn));
                shard.borrow_mut().reply = out;
                continue;
            }
            s.server.tcp_connections().remove(conn);
        }
        s.reply = out;
    }
}

/// Starts the connection attempts of the Connects the core accepted.
pub(super) fn start_connects(shard: &ShardRef) {
    let connects = std::mem::take(&mut shard.borrow_mut().connects);
    for (conn, from, peer) in connects {
        tokio::task::spawn_local(connect(shard.clone(), conn, from, peer));
    }
}

async fn connect(shard: ShardRef, conn: u32, from: SocketAddr, peer: SocketAddr) {
    let attempt = async {
        let socket = tcp_relay_connector(from)?;
        socket.connect(peer).await
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(s)) => s.into_std().ok(),
        Ok(Err(e)) => {
            tracing::debug!(%from, %peer, error = %e, "RFC 6062 Connect failed");
            None
        }
        Err(_) => {
            tracing::debug!(%from, %peer, "RFC 6062 Connect timed out");
            None
        }
    };
    let mut guard = shard.borrow_mut();
    let s = &mut *guard;
    let ok = stream.is_some();
    let mut out = std::mem::take(&mut s.reply);
    // Parked before the response leaves (the writer task sends it later), so
    // a ConnectionBind on any shard finds it.
    let answer = s
        .server
        .connect_finished(Instant::now(), conn, ok, &mut out);
    if let Some(tuple) = answer {
        if let Some(stream) = stream {
            s.server.binder().shared().park_peer(conn, stream);
        }
        let dropped = State::send_to_client(&mut s.udp, &mut s.dtls, &s.conns, &tuple, &out, false);
        s.server
            .count_drop(crate::turn::server::DropReason::Backlog, dropped);
    }
    s.reply = out;
    drop(guard);
    if ok {
        tokio::task::spawn_local(expire_unbound(shard, conn));
    }
}

/// Closes the peer connection `conn` if no ConnectionBind took it in time, or
/// if its allocation ended meanwhile (its ID is gone then).
async fn expire_unbound(shard: ShardRef, conn: u32) {
    let timeout = shard.borrow().server.config().tcp_connection_timeout;
    tokio::time::sleep(timeout + Duration::from_millis(10)).await;
    let s = shard.borrow();
    let tcp = s.server.tcp_connections();
    if tcp.expire(conn, Instant::now()) || !tcp.is_live(conn) {
        // Bound already: taken by its pipe, nothing parked.
        s.server.binder().shared().take_peer(conn);
    }
}

/// A ConnectionBind bound the client connection (`rd`, `wr`; `early` holds
/// bytes the client sent after the ConnectionBind) to peer connection `conn`:
/// copies bytes both ways until both sides are done or the connection ID dies.
pub(super) async fn pipe<R, W>(
    shard: ShardRef,
    conn: u32,
    transport: Transport,
    mut rd: R,
    mut wr: W,
    early: BytesMut,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (peer, traffic, budget, tcp) = {
        let s = shard.borrow();
        (
            s.server.binder().shared().take_peer(conn),
            s.server.tcp_traffic(conn),
            s.server.tcp_budget(conn),
            s.server.tcp_connections().clone(),
        )
    };
    let (Some(peer), Some(traffic), Some(budget)) = (peer, traffic, budget) else {
        tcp.remove(conn);
        return;
    };
    let Ok(peer) = peer
        .set_nonblocking(true)
        .and_then(|()| TcpStream::from_std(peer))
    else {
        tcp.remove(conn);
        return;
    };
    let _ = peer.set_nodelay(true);
    let (mut prd, mut pwr) = peer.into_split();
    // Charges the user's byte budget, then counts: false when the budget is
    // used up, and the pipe ends (the connection ID is dropped, which the
    // liveness check below sees).
    let count = |shard: &ShardRef, up: u64, down: u64| {
        let mut s = shard.borrow_mut();
        if !s.server.charge_tcp(Instant::now(), &budget, up + down) {
            tcp.remove(conn);
            return false;
        }
        traffic.to_peer_bytes.fetch_add(up, Ordering::Relaxed);
        traffic.to_client_bytes.fetch_add(down, Ordering::Relaxed);
        s.server.count_tcp_relayed(transport, up, down);
        true
    };
    let up_shard = Rc::clone(&shard);
    let up = async {
        if !early.is_empty()
            && (!count(&up_shard, early.len() as u64, 0) || pwr.write_all(&early).await.is_err())
        {
            return;
        }
        let mut buf = vec![0u8; PIPE_BUFFER];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !count(&up_shard, n as u64, 0) || pwr.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = pwr.shutdown().await;
    };
    let down_shard = Rc::clone(&shard);
    let down = async {
        let mut buf = vec![0u8; PIPE_BUFFER];
        loop {
            match prd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !count(&down_shard, 0, n as u64) || wr.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = wr.flush().await;
                }
            }
        }
        let _ = wr.shutdown().await;
    };
    let both = async { tokio::join!(up, down) };
    tokio::pin!(both);
    let mut check = tokio::time::interval(LIVENESS_CHECK);
    loop {
        tokio::select! {
            _ = &mut both => break,
            _ = check.tick() => {
                if !tcp.is_live(conn) {
                    break;
                }
            }
        }
    }
    tcp.remove(conn);
}
