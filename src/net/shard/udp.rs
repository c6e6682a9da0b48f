//! The UDP path of a shard: its listener sockets, read with `recvmmsg` through
//! quinn-udp, and what goes back to UDP clients, queued per listener and sent with
//! one `sendmmsg` per batch.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

use super::relay_reader::start_relay_readers;
use super::{ShardRef, State, SLOT, STRIDE};
use crate::net::mmsg::{classify_send_error, SendBatch, SendFailure};
use crate::net::relay::RelaySocket;
use crate::net::sockets;
use crate::turn::server::DropReason;
use crate::turn::{FiveTuple, Output, Transport};

/// Datagrams read per recvmmsg call.
const BATCH: usize = 16;

pub(super) struct UdpListener {
    pub(super) local: SocketAddr,
    /// Registered for reading only, like relay sockets (see [`RelaySocket`]).
    pub(super) socket: Rc<RelaySocket>,
    pub(super) state: UdpSocketState,
    /// Datagrams to clients, sent together with one `sendmmsg`.
    pub(super) tx: SendBatch,
}

impl UdpListener {
    /// Takes over one of the shard's SO_REUSEPORT listener sockets; called on
    /// the shard's runtime, whose reactor it registers with.
    pub(super) fn new(s: std::net::UdpSocket) -> io::Result<Self> {
        let local = s.local_addr()?;
        let state = UdpSocketState::new((&s).into())?;
        sockets::drop_unread_control_messages(&s);
        s.set_nonblocking(true)?;
        let socket = sockets::register_readable(s)?;
        Ok(Self {
            local,
            socket: Rc::new(socket),
            state,
            tx: SendBatch::new(),
        })
    }
}

/// Sends `data` to a UDP client: queued on the listener the client reached (it
/// gets the reply from the address it sent to; see [`State::flush_udp`]). Returns
/// how many datagrams were dropped for a full buffer.
pub(super) fn send(udp: &mut [UdpListener], tuple: &FiveTuple, data: &[u8]) -> u64 {
    let Some(l) = udp.iter_mut().find(|l| {
        l.local.port() == tuple.server.port()
            && (l.local.ip() == tuple.server.ip()
                || (l.local.ip().is_unspecified() && l.local.is_ipv4() == tuple.server.is_ipv4()))
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
    let full = match l.state.try_send(socket.into(), &t) {
        Ok(()) => false,
        Err(e) => classify_send_error(&e) == SendFailure::Full,
    };
    dropped + u64::from(full)
}

impl State {
    /// Sends every queued client datagram.
    pub(super) fn flush_udp(&mut self) {
        let mut dropped = 0;
        for l in &mut self.udp {
            if !l.tx.is_empty() {
                dropped += l.tx.flush(l.socket.as_raw_fd());
            }
        }
        dropped += self.dtls.flush();
        if dropped > 0 {
            self.server.count_drop(DropReason::Backlog, dropped);
        }
    }

    /// Has the flusher send the queued datagrams once the tasks that are ready
    /// now have run, so that they go out together.
    pub(super) fn flush_soon(&self) {
        if self.udp.iter().any(|l| !l.tx.is_empty()) || self.dtls.has_queued() {
            self.flush.notify_one();
        }
    }
}

/// One `recvmmsg` batch from `l` into `storage` (`SLOT` bytes per datagram,
/// `STRIDE` apart) and `meta`: for the UDP and the DTLS listeners alike.
pub(super) fn recv_batch<const N: usize>(
    l: &UdpListener,
    storage: &mut [u8],
    meta: &mut [RecvMeta; N],
) -> io::Result<usize> {
    let mut chunks = storage.chunks_mut(STRIDE);
    let mut slices: [IoSliceMut<'_>; N] = std::array::from_fn(|_| {
        let chunk = chunks.next().unwrap_or_default();
        let len = chunk.len().min(SLOT);
        IoSliceMut::new(&mut chunk[..len])
    });
    l.state.recv(l.socket.get_ref().into(), &mut slices, meta)
}

pub(super) async fn listener(shard: ShardRef, index: usize) {
    let socket = shard.borrow().udp[index].socket.clone();
    let mut storage = vec![0u8; BATCH * STRIDE];
    let mut meta = [RecvMeta::default(); BATCH];
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return;
        };
        loop {
            let n = recv_batch(&shard.borrow().udp[index], &mut storage, &mut meta);
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
                for (m, buf) in meta.iter().zip(storage.chunks(STRIDE)).take(n) {
                    let server_addr = SocketAddr::new(m.dst_ip.unwrap_or(local.ip()), local.port());
                    let tuple = FiveTuple {
                        transport: Transport::Udp,
                        client: m.addr,
                        server: server_addr,
                    };
                    let stride = m.stride.max(1);
                    if stride < m.len {
                        // A GRO train from one client, split like the relay
                        // readers split theirs.
                        s.gro_segments += m.len.div_ceil(stride) as u64;
                    }
                    for datagram in buf[..m.len].chunks(stride) {
                        let mut reply = std::mem::take(&mut s.reply);
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
