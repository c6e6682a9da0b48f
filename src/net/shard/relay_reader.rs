//! Relay readers: one task per relay socket of the shard, reading peers'
//! datagrams with `recvmmsg` into the shard's one buffer set and handing them to
//! the core, which frames them for the client in place.

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use super::{ShardRef, State};
use crate::net::relay::RelaySocket;
use crate::turn::server::{DropReason, PEER_HEADROOM};
use crate::turn::{PeerOutput, RelayId};

/// Datagrams read per recvmmsg call (one buffer set per shard, so the cost is
/// per shard, not per allocation).
pub(super) const BATCH: usize = 8;
/// Packets one relay socket handles before it yields to the others.
const RELAY_BUDGET: usize = 64;

/// Starts reader tasks for relay sockets the core opened since the last call.
pub(super) fn start_relay_readers(shard: &ShardRef) {
    let mut s = shard.borrow_mut();
    if !s.server.binder().has_pending() {
        return;
    }
    for (id, socket) in s.server.binder_mut().take_pending() {
        let task = tokio::task::spawn_local(relay_reader(shard.clone(), id, socket));
        s.server.binder_mut().set_reader(id, task.abort_handle());
    }
    for (id, listener) in s.server.binder_mut().take_tcp_pending() {
        let task =
            tokio::task::spawn_local(super::tcp_relay::accept_peers(shard.clone(), id, listener));
        s.server.binder_mut().set_acceptor(id, task.abort_handle());
    }
}

/// Sends what the core made of a peer's datagram to its client (`buf` holds
/// it). A macro, not a function: `buf` borrows one field of the shard's state
/// while the others are used.
macro_rules! relay_to_client {
    ($s:expr, $out:expr, $buf:expr) => {
        if let PeerOutput::ToClient { tuple, start, end } = $out {
            let dropped = State::send_to_client(
                &mut $s.udp,
                &mut $s.dtls,
                &$s.conns,
                &tuple,
                &$buf[start..end],
                true,
            );
            $s.server.count_drop(DropReason::Backlog, dropped);
        }
    };
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
        for _ in 0..RELAY_BUDGET / BATCH {
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
                let segment = s.relay_rx.segment(i);
                let Some((from, buf, start, end)) = s.relay_rx.get(i) else {
                    s.server.count_drop(DropReason::Malformed, 1);
                    continue;
                };
                let Some(size) = segment else {
                    let out = s.server.handle_peer(now, id, from, buf, start, end);
                    relay_to_client!(s, out, buf);
                    continue;
                };
                // A GRO train: each datagram is handed to the core alone, copied
                // into the peer buffer so that its framing (headroom before,
                // padding after) does not overwrite its neighbours.
                s.gro_segments += (end - start).div_ceil(size) as u64;
                for datagram in buf[start..end].chunks(size) {
                    let e = PEER_HEADROOM + datagram.len();
                    s.peer_buf[PEER_HEADROOM..e].copy_from_slice(datagram);
                    let out =
                        s.server
                            .handle_peer(now, id, from, &mut s.peer_buf, PEER_HEADROOM, e);
                    relay_to_client!(s, out, s.peer_buf);
                }
            }
            if n < BATCH {
                drained = true;
                break;
            }
        }
        if drained {
            ready.clear_ready();
        }
        drop(ready);
        shard.borrow().flush_soon();
        if !drained {
            // The budget is spent and datagrams wait: let the other tasks
            // run first. Only then: tokio defers a yielded task until the
            // driver has polled the kernel again (an epoll_wait), which a
            // drained socket, waiting for readiness anyway, does not need.
            tokio::task::yield_now().await;
        }
    }
}
