//! The DTLS path of a shard (RFC 7350, `tls.dtls-listen`): its UDP sockets, one
//! DTLS session per client address, driven by the sans-IO `dimpl` engine.
//!
//! Each decrypted application record is one STUN message or ChannelData, fed to
//! the core as a UDP datagram would be, under a 5-tuple of transport
//! [`Transport::Dtls`]; what the core sends the client (replies, Data
//! indications, ChannelData) goes back as one record each. As over TLS, the
//! allocation lives with its session: when the session ends (close_notify,
//! a fatal DTLS error, the idle deadline) the allocation ends too.
//!
//! Abuse is bounded as for stream connections: every session, handshaking or
//! not, counts against `connections.max-per-ip` and `max-total` (a datagram from
//! a new address over a cap is dropped); a handshake must finish within
//! `tls.handshake-timeout`; a session must hold an allocation within
//! `connections.allocate-timeout` of its start, or of its allocation's end. The
//! engine answers a ClientHello with a cookie exchange (HelloVerifyRequest)
//! before any costly work, so a spoofed source gets one small datagram, not
//! the certificate flight; and only a datagram that looks like a DTLS handshake
//! record opens a session.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Dtls, Output as DtlsOutput};
use quinn_udp::RecvMeta;

use super::relay_reader::start_relay_readers;
use super::udp::{self, UdpListener};
use super::{ShardRef, State, SLOT};
use crate::net::connections::{ConnClose, ConnGuard};
use crate::net::tls::ReloadableCert;
use crate::turn::server::DropReason;
use crate::turn::{FastMap, FiveTuple, Output, Transport};

/// Datagrams read per recvmmsg call.
const BATCH: usize = 8;
/// How often sessions' retransmission timers and deadlines are checked.
const TICK: Duration = Duration::from_millis(50);
/// The largest plaintext a DTLS record carries (RFC 6347 §4.1): larger relayed
/// data is dropped, as a network with that MTU would drop it.
const MAX_RECORD: usize = 16 * 1024;
/// Outputs drained from one session at a time (a bound, never reached in practice).
const MAX_OUTPUTS: usize = 256;
/// The first byte of a DTLS handshake record (content type 22).
const HANDSHAKE: u8 = 22;
/// Fatal alerts (RFC 5246 §7.2): `handshake_failure` and `protocol_version`.
const ALERT_HANDSHAKE_FAILURE: u8 = 40;
const ALERT_PROTOCOL_VERSION: u8 = 70;
/// A plaintext alert record: the 13-byte record header, level and description.
const ALERT_LEN: usize = 15;

/// A plaintext fatal alert record (epoch 0) answering the handshake record
/// `to`, in its record version: 15 bytes.
fn plaintext_alert(to: &[u8], code: u8) -> [u8; ALERT_LEN] {
    let (hi, lo) = match to.get(1..3) {
        Some(&[hi, lo]) => (hi, lo),
        _ => (0xfe, 0xfd),
    };
    [21, hi, lo, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, code]
}

/// What DTLS listeners need.
#[derive(Clone)]
pub struct DtlsParams {
    /// The certificate, shared with TLS: new sessions take the current one.
    pub certs: Arc<ReloadableCert>,
    pub config: Arc<dimpl::Config>,
    pub handshake_timeout: Duration,
}

/// The engine configuration for the server side: no client certificate, the
/// cookie exchange on, an MTU that fits relayed datagrams in one record.
pub fn engine_config(handshake_timeout: Duration) -> io::Result<Arc<dimpl::Config>> {
    dimpl::Config::builder()
        .require_client_certificate(false)
        .use_server_cookie(true)
        .handshake_timeout(handshake_timeout)
        .mtu(1400)
        .build()
        .map(Arc::new)
        .map_err(|e| io::Error::other(format!("DTLS configuration: {e}")))
}

struct Session {
    dtls: Dtls,
    /// When the first ClientHello came.
    started: Instant,
    connected: bool,
    /// When the session is closed unless it holds an allocation by then (the
    /// handshake deadline first); `None` while it holds one.
    deadline: Option<(Instant, ConnClose)>,
    allocated: bool,
    /// The engine's next timer (retransmission).
    wake: Option<Instant>,
    /// Set on a fatal engine error or close_notify: reaped at the next tick.
    closed: bool,
    _guard: ConnGuard,
}

/// The shard's DTLS listeners and sessions.
#[derive(Default)]
pub(super) struct DtlsState {
    pub(super) listeners: Vec<UdpListener>,
    sessions: FastMap<FiveTuple, Session>,
    params: Option<DtlsParams>,
    /// Scratch for the engine's output.
    out: Vec<u8>,
    /// Plaintext records decrypted from one datagram, and their lengths.
    rx: Vec<u8>,
    rx_lens: Vec<usize>,
}

impl DtlsState {
    pub(super) fn new(
        sockets: Vec<std::net::UdpSocket>,
        params: Option<DtlsParams>,
    ) -> io::Result<Self> {
        let mut listeners = Vec::new();
        if params.is_some() {
            for s in sockets {
                listeners.push(UdpListener::new(s)?);
            }
        }
        Ok(Self {
            listeners,
            sessions: FastMap::default(),
            params,
            out: vec![0u8; 2048],
            rx: Vec::new(),
            rx_lens: Vec::new(),
        })
    }

    /// Encrypts `data` as one record to the client of `tuple`; returns how many
    /// datagrams were dropped (no session, too big, a full socket buffer).
    pub(super) fn send(&mut self, tuple: &FiveTuple, data: &[u8]) -> u64 {
        let Some(sess) = self.sessions.get_mut(tuple) else {
            return 0;
        };
        if sess.closed || data.len() > MAX_RECORD {
            return 1;
        }
        match sess.dtls.send_application_data(data) {
            Ok(n) if n == data.len() => {}
            Ok(_) => return 1,
            Err(_) => {
                sess.closed = true;
                return 1;
            }
        }
        drain(sess, tuple, &mut self.listeners, &mut self.out, None)
    }

    /// Sends every queued datagram.
    pub(super) fn flush(&mut self) -> u64 {
        let mut dropped = 0;
        for l in &mut self.listeners {
            if !l.tx.is_empty() {
                dropped += l.tx.flush(l.socket.as_raw_fd());
            }
        }
        dropped
    }

    pub(super) fn has_queued(&self) -> bool {
        self.listeners.iter().any(|l| !l.tx.is_empty())
    }
}

/// Drains the engine's output: packets queued to the client, the next timer,
/// and (into `rx`, when given) decrypted records. Returns how many packets were
/// dropped for a full socket buffer.
fn drain(
    sess: &mut Session,
    tuple: &FiveTuple,
    listeners: &mut [UdpListener],
    out: &mut Vec<u8>,
    mut rx: Option<(&mut Vec<u8>, &mut Vec<usize>)>,
) -> u64 {
    let mut dropped = 0;
    sess.wake = None;
    for _ in 0..MAX_OUTPUTS {
        match sess.dtls.poll_output(out) {
            DtlsOutput::Packet(p) => dropped += udp::send(listeners, tuple, p),
            DtlsOutput::BufferTooSmall { needed } => {
                if needed > 2 * SLOT {
                    sess.closed = true;
                    break;
                }
                out.resize(needed, 0);
            }
            DtlsOutput::Timeout(t) => {
                sess.wake = Some(t);
                break;
            }
            DtlsOutput::Connected => sess.connected = true,
            DtlsOutput::ApplicationData(d) => {
                if let Some((buf, lens)) = rx.as_mut() {
                    buf.extend_from_slice(d);
                    lens.push(d.len());
                }
            }
            DtlsOutput::CloseNotify => sess.closed = true,
            _ => {}
        }
    }
    dropped
}

impl State {
    /// One datagram from a DTLS client: to its session (opened for a
    /// ClientHello from a new address, within the caps), then each decrypted
    /// record to the core.
    fn dtls_datagram(&mut self, now: Instant, tuple: FiveTuple, datagram: &[u8]) -> bool {
        let d = &mut self.dtls;
        if !d.sessions.contains_key(&tuple) {
            // Only a handshake record opens a session: stray datagrams cost nothing.
            if datagram.first() != Some(&HANDSHAKE) {
                return false;
            }
            let Some(params) = d.params.as_ref() else {
                return false;
            };
            let guard = match self.limits.admit(tuple.client.ip()) {
                Ok(g) => g,
                Err(why) => {
                    self.conn_closed[why as usize] += 1;
                    return false;
                }
            };
            let Some(cert) = params.certs.dtls_certificate() else {
                return false;
            };
            let dtls = Dtls::new_auto(params.config.clone(), (*cert).clone(), now);
            let until = (now + params.handshake_timeout).min(now + self.limits.allocate_timeout());
            let started = now;
            d.sessions.insert(
                tuple,
                Session {
                    dtls,
                    started,
                    connected: false,
                    deadline: Some((until, ConnClose::AllocateTimeout)),
                    allocated: false,
                    wake: None,
                    closed: false,
                    _guard: guard,
                },
            );
        }
        let Some(sess) = d.sessions.get_mut(&tuple) else {
            return false;
        };
        d.rx.clear();
        d.rx_lens.clear();
        if sess.closed {
            // Done with, to be reaped at the next tick: the engine is not fed again.
            return false;
        }
        let r = sess
            .dtls
            .handle_timeout(now)
            .and_then(|()| sess.dtls.handle_packet(datagram));
        let was_connected = sess.connected;
        let dropped = drain(
            sess,
            &tuple,
            &mut d.listeners,
            &mut d.out,
            Some((&mut d.rx, &mut d.rx_lens)),
        );
        if let Err(e) = r {
            // Fatal for the session (dimpl has no recoverable errors). A client
            // still in its handshake is told so with an alert (a DTLS 1.0 client,
            // say, which would otherwise retransmit its ClientHello until it gives
            // up); then the session, and any allocation it held, ends now.
            tracing::debug!(client = %tuple.client, error = %e, "DTLS session failed");
            if !sess.connected && datagram.len() >= ALERT_LEN {
                // Never more bytes back than came in: no amplification.
                let code = match datagram.get(1..3) {
                    Some(&[0xfe, 0xfd]) => ALERT_HANDSHAKE_FAILURE,
                    _ => ALERT_PROTOCOL_VERSION,
                };
                let alert = plaintext_alert(datagram, code);
                let _ = udp::send(&mut d.listeners, &tuple, &alert);
            }
            if !sess.connected {
                self.tls_handshake_failures += 1;
            }
            d.sessions.remove(&tuple);
            self.server.connection_closed(now, tuple);
            self.server.count_drop(DropReason::Backlog, dropped);
            return false;
        }
        if !was_connected && sess.connected {
            // The handshake is done: now the allocate deadline, from the start.
            sess.deadline = Some((
                (sess.started + self.limits.allocate_timeout()).max(now),
                ConnClose::AllocateTimeout,
            ));
        }
        self.server.count_drop(DropReason::Backlog, dropped);
        // The records, to the core: taken out so that replies can use the session.
        let rx = std::mem::take(&mut self.dtls.rx);
        let lens = std::mem::take(&mut self.dtls.rx_lens);
        let mut control = false;
        let mut at = 0;
        let max = self.server.config().max_message_size;
        for &len in &lens {
            let Some(record) = rx.get(at..at + len) else {
                break;
            };
            at += len;
            if len > max {
                self.server.count_drop(DropReason::Oversized, 1);
                continue;
            }
            let mut reply = std::mem::take(&mut self.reply);
            let out = self.server.handle_client(now, tuple, record, &mut reply);
            self.reply = reply;
            control |= out == Output::Reply;
            self.dispatch(now, &tuple, record, out);
        }
        self.dtls.rx = rx;
        self.dtls.rx_lens = lens;
        if control {
            self.dtls_recheck(&tuple, now);
        }
        control
    }

    /// Whether the session's allocation came or went; moves its deadline.
    fn dtls_recheck(&mut self, tuple: &FiveTuple, now: Instant) {
        let has = self.server.has_allocation(tuple);
        let allocate_timeout = self.limits.allocate_timeout();
        let Some(sess) = self.dtls.sessions.get_mut(tuple) else {
            return;
        };
        if has && !sess.allocated {
            sess.deadline = None;
        } else if !has && sess.allocated {
            sess.deadline = Some((now + allocate_timeout, ConnClose::Idle));
        }
        sess.allocated = has;
    }

    /// Runs sessions' timers and deadlines; ends the sessions that are over,
    /// with their allocations.
    fn dtls_tick(&mut self, now: Instant) {
        let tuples: Vec<FiveTuple> = self.dtls.sessions.keys().copied().collect();
        let mut dropped = 0;
        for tuple in tuples {
            self.dtls_recheck(&tuple, now);
            let d = &mut self.dtls;
            let Some(sess) = d.sessions.get_mut(&tuple) else {
                continue;
            };
            if sess.wake.is_some_and(|w| w <= now) {
                if sess.dtls.handle_timeout(now).is_err() {
                    sess.closed = true;
                }
                dropped += drain(sess, &tuple, &mut d.listeners, &mut d.out, None);
            }
            let expired = sess.deadline.filter(|(when, _)| *when <= now);
            if !sess.closed && expired.is_none() {
                continue;
            }
            if let Some((_, why)) = expired {
                if !sess.connected {
                    self.tls_handshake_failures += 1;
                } else {
                    self.conn_closed[why as usize] += 1;
                    // A close_notify, so that the client knows.
                    if sess.dtls.close().is_ok() {
                        dropped += drain(sess, &tuple, &mut d.listeners, &mut d.out, None);
                    }
                }
            } else if !sess.connected {
                self.tls_handshake_failures += 1;
            }
            d.sessions.remove(&tuple);
            self.server.connection_closed(now, tuple);
        }
        self.server.count_drop(DropReason::Backlog, dropped);
        let dropped = self.dtls.flush();
        self.server.count_drop(DropReason::Backlog, dropped);
    }
}

/// Reads one DTLS listener of the shard.
pub(super) async fn listener(shard: ShardRef, index: usize) {
    let socket = shard.borrow().dtls.listeners[index].socket.clone();
    let mut storage = vec![0u8; BATCH * SLOT];
    let mut meta = [RecvMeta::default(); BATCH];
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return;
        };
        loop {
            let n = udp::recv_batch(
                &shard.borrow().dtls.listeners[index],
                &mut storage,
                &mut meta,
            );
            let n = match n {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    break;
                }
                Err(_) => break,
            };
            let now = Instant::now();
            let mut control = false;
            {
                let mut guard = shard.borrow_mut();
                let s = &mut *guard;
                let local = s.dtls.listeners[index].local;
                for (m, buf) in meta.iter().zip(storage.chunks(SLOT)).take(n) {
                    let server_addr = SocketAddr::new(m.dst_ip.unwrap_or(local.ip()), local.port());
                    let tuple = FiveTuple {
                        transport: Transport::Dtls,
                        client: m.addr,
                        server: server_addr,
                    };
                    let stride = m.stride.max(1);
                    for datagram in buf[..m.len].chunks(stride) {
                        control |= s.dtls_datagram(now, tuple, datagram);
                    }
                }
                s.flush_peers();
                let dropped = s.dtls.flush();
                s.server.count_drop(DropReason::Backlog, dropped);
                s.flush_udp();
            }
            if control {
                start_relay_readers(&shard);
                shard.borrow().timer.notify_one();
            }
            if n < BATCH {
                ready.clear_ready();
                break;
            }
        }
    }
}

/// Drives the sessions' timers and deadlines.
pub(super) async fn ticker(shard: ShardRef) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut s = shard.borrow_mut();
        if s.dtls.sessions.is_empty() {
            continue;
        }
        s.dtls_tick(Instant::now());
    }
}
