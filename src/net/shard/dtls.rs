//! The DTLS path of a shard (RFC 7350, `tls.dtls-listen`): its UDP sockets, one
//! DTLS session per client address, each an OpenSSL DTLS 1.2 engine (the
//! `openssl` crate's [`SslStream`]) over in-memory datagrams, driven by the
//! shard's own event loop: a datagram from the client is handed to the engine,
//! and what the engine writes is queued to the client, one datagram per write.
//!
//! Each decrypted application record is one STUN message or ChannelData, fed to
//! the core as a UDP datagram would be, under a 5-tuple of transport
//! [`Transport::Dtls`]; what the core sends the client (replies, Data
//! indications, ChannelData) goes back as one record each. As over TLS, the
//! allocation lives with its session: when the session ends (close_notify,
//! a fatal DTLS error, the idle deadline) the allocation ends too.
//!
//! ALPN (RFC 7443) as over TLS: `stun.turn` or `stun.nat-discovery` is echoed
//! to a client offering it; a client offering only other protocols gets a fatal
//! `no_application_protocol` alert; one offering none is served (browsers send
//! none). Keys: RSA, ECDSA or Ed25519, with the chain of the certificate file.
//!
//! Abuse is bounded as for stream connections: every session, handshaking or
//! not, counts against `connections.max-per-ip` and `max-total` (a datagram from
//! a new address over a cap is dropped); a handshake must finish within
//! `tls.handshake-timeout`; a session must hold an allocation within
//! `connections.allocate-timeout` of its start, or of its allocation's end. The
//! engine answers a ClientHello with a cookie exchange (HelloVerifyRequest, a
//! random cookie per session) before any costly work, so a spoofed source gets
//! one small datagram, not the certificate flight; and only a datagram that
//! looks like a DTLS handshake record opens a session.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::{Id, PKey};
use openssl::ssl::{
    select_next_proto, AlpnError, ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod,
    SslMode, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use quinn_udp::RecvMeta;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::relay_reader::start_relay_readers;
use super::udp::{self, UdpListener};
use super::{ShardRef, State, STRIDE};
use crate::net::connections::{ConnClose, ConnGuard};
use crate::net::tls::{ReloadableCert, ALPN_WIRE};
use crate::turn::server::DropReason;
use crate::turn::{FastMap, FiveTuple, Output, Transport};

/// Datagrams read per recvmmsg call.
const BATCH: usize = 8;
/// How often sessions' handshake retransmissions and deadlines are checked.
const TICK: Duration = Duration::from_millis(50);
/// The largest plaintext a DTLS record carries (RFC 6347 §4.1): larger relayed
/// data is dropped, as a network with that MTU would drop it.
const MAX_RECORD: usize = 16 * 1024;
/// The path MTU the engine fragments handshake flights to (IP and UDP headers
/// not counted): relayed datagrams of usual sizes fit in one record.
const MTU: u32 = 1400;
/// Records read from one session at a time (a bound, never reached in practice).
const MAX_RECORDS: usize = 256;
/// The first byte of a DTLS handshake record (content type 22).
const HANDSHAKE: u8 = 22;
/// The cookie of the HelloVerifyRequest: random per session.
type Cookie = [u8; 16];
/// The TLS 1.2 cipher suites offered (Mozilla's "intermediate" list): forward
/// secret, AEAD only. OpenSSL's default list would also take static-RSA key
/// exchange and CBC suites. Ed25519 keys sign under the ECDSA suites.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// Where a session keeps its cookie (an OpenSSL ex_data slot, made once).
fn cookie_index() -> Option<Index<Ssl, Cookie>> {
    static INDEX: OnceLock<Option<Index<Ssl, Cookie>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

/// The OpenSSL server context for DTLS sessions with this certificate chain
/// and key: DTLS 1.2, no client certificate, the cookie exchange, no
/// renegotiation, ALPN as over TLS. Built once per certificate pair (at start
/// and on each reload): new sessions take the current one.
pub fn context(
    chain: &[CertificateDer<'_>],
    key: &PrivateKeyDer<'_>,
) -> Result<SslContext, DtlsKeyError> {
    let mut b = SslContextBuilder::new(SslMethod::dtls_server())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_options(
        SslOptions::COOKIE_EXCHANGE
            | SslOptions::NO_QUERY_MTU
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE,
    );
    b.set_mode(SslMode::RELEASE_BUFFERS);
    b.set_verify(SslVerifyMode::NONE);
    b.set_cipher_list(CIPHERS)?;
    let mut certs = chain.iter();
    if let Some(leaf) = certs.next() {
        let leaf = X509::from_der(leaf)?;
        b.set_certificate(&leaf)?;
    }
    for c in certs {
        b.add_extra_chain_cert(X509::from_der(c)?)?;
    }
    let key = PKey::private_key_from_der(key.secret_der())?;
    // OpenSSL loads an Ed25519 key but fails every DTLS 1.2 handshake with it
    // (handshake_failure): refused here, at start and on reload, instead.
    if !matches!(key.id(), Id::RSA | Id::EC) {
        return Err(DtlsKeyError::KeyType);
    }
    b.set_private_key(&key)?;
    b.check_private_key()?;
    // A client offering ALPN but no protocol of ours is refused with a fatal
    // `no_application_protocol`; one offering none never reaches this.
    b.set_alpn_select_callback(|_, offered| {
        select_next_proto(ALPN_WIRE, offered).ok_or(AlpnError::ALERT_FATAL)
    });
    b.set_cookie_generate_cb(|ssl, buf| {
        let cookie = cookie_index().and_then(|i| ssl.ex_data(i));
        match (cookie, buf.get_mut(..16)) {
            (Some(c), Some(dst)) => {
                dst.copy_from_slice(c);
                Ok(c.len())
            }
            _ => Err(ErrorStack::get()),
        }
    });
    b.set_cookie_verify_cb(|ssl, got| {
        cookie_index()
            .and_then(|i| ssl.ex_data(i))
            .is_some_and(|c| c[..] == *got)
    });
    Ok(b.build())
}

/// Why a certificate pair cannot serve DTLS.
#[derive(Debug, thiserror::Error)]
pub enum DtlsKeyError {
    #[error("DTLS needs an RSA or ECDSA key (OpenSSL's DTLS 1.2 does not sign with Ed25519)")]
    KeyType,
    #[error("{0}")]
    OpenSsl(#[from] ErrorStack),
}

/// What DTLS listeners need.
#[derive(Clone)]
pub struct DtlsParams {
    /// The certificate, shared with TLS: new sessions take the current one.
    pub certs: Arc<ReloadableCert>,
    pub handshake_timeout: Duration,
}

/// The engine's side of a session's UDP path: the datagram it reads next, and
/// the datagrams it wrote (each `write` one datagram), to be queued to the client.
#[derive(Default)]
struct Datagrams {
    inbound: Vec<u8>,
    has_inbound: bool,
    out: Vec<u8>,
    out_lens: Vec<usize>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.has_inbound {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.has_inbound = false;
        // A datagram longer than the engine's buffer is cut, and fails its MAC.
        let n = self.inbound.len().min(buf.len());
        buf[..n].copy_from_slice(&self.inbound[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        self.out_lens.push(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Session {
    tls: SslStream<Datagrams>,
    /// When the first ClientHello came.
    started: Instant,
    connected: bool,
    /// When the session is closed unless it holds an allocation by then (the
    /// handshake deadline first); `None` while it holds one.
    deadline: Option<(Instant, ConnClose)>,
    allocated: bool,
    /// Set on a fatal engine error or close_notify: reaped at the next tick.
    closed: bool,
    _guard: ConnGuard,
}

/// A new server-side engine for a client: the current certificate's context,
/// a fresh cookie, the MTU.
fn new_session(ctx: &SslContext) -> Result<SslStream<Datagrams>, ErrorStack> {
    let mut ssl = Ssl::new(ctx)?;
    let mut cookie: Cookie = [0; 16];
    openssl::rand::rand_bytes(&mut cookie)?;
    let index = cookie_index().ok_or_else(ErrorStack::get)?;
    ssl.set_ex_data(index, cookie);
    ssl.set_mtu(MTU)?;
    ssl.set_accept_state();
    SslStream::new(ssl, Datagrams::default())
}

/// Whether an engine error only means "waiting for the next datagram".
fn is_waiting(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::WANT_READ
}

/// The shard's DTLS listeners and sessions.
#[derive(Default)]
pub(super) struct DtlsState {
    pub(super) listeners: Vec<UdpListener>,
    sessions: FastMap<FiveTuple, Session>,
    params: Option<DtlsParams>,
    /// Scratch for one decrypted record.
    record: Vec<u8>,
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
            record: vec![0u8; MAX_RECORD],
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
        if sess.closed || !sess.connected || data.len() > MAX_RECORD {
            return 1;
        }
        match sess.tls.ssl_write(data) {
            Ok(n) if n == data.len() => {}
            Ok(_) => return 1,
            Err(_) => {
                sess.closed = true;
                return 1;
            }
        }
        drain(sess, tuple, &mut self.listeners)
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

/// Queues what the engine wrote to the client. Returns how many datagrams were
/// dropped for a full socket buffer.
fn drain(sess: &mut Session, tuple: &FiveTuple, listeners: &mut [UdpListener]) -> u64 {
    let io = sess.tls.get_mut();
    let mut dropped = 0;
    let mut at = 0;
    for &len in &io.out_lens {
        if let Some(p) = io.out.get(at..at + len) {
            dropped += udp::send(listeners, tuple, p);
        }
        at += len;
    }
    io.out.clear();
    io.out_lens.clear();
    dropped
}

/// Feeds one datagram to a session's engine: the handshake while it lasts,
/// then its records (into `rx`, their lengths into `lens`). `Err` is fatal for
/// the session (what the engine wrote, an alert, is still to be drained).
fn feed(
    sess: &mut Session,
    datagram: &[u8],
    record: &mut [u8],
    rx: &mut Vec<u8>,
    lens: &mut Vec<usize>,
) -> Result<(), openssl::ssl::Error> {
    let io = sess.tls.get_mut();
    io.inbound.clear();
    io.inbound.extend_from_slice(datagram);
    io.has_inbound = true;
    if !sess.connected {
        match sess.tls.do_handshake() {
            Ok(()) => sess.connected = true,
            Err(e) if is_waiting(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    // Every record of the datagram (OpenSSL keeps the rest of a datagram
    // between reads), until the engine wants the next one.
    for _ in 0..MAX_RECORDS {
        match sess.tls.ssl_read(record) {
            Ok(0) => break,
            Ok(n) => {
                rx.extend_from_slice(&record[..n]);
                lens.push(n);
            }
            Err(e) if is_waiting(&e) => break,
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                // close_notify.
                sess.closed = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
            let Some(ctx) = params.certs.dtls_context() else {
                return false;
            };
            let guard = match self.limits.admit(tuple.client.ip()) {
                Ok(g) => g,
                Err(why) => {
                    self.conn_closed[why as usize] += 1;
                    return false;
                }
            };
            let tls = match new_session(&ctx) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a DTLS session");
                    return false;
                }
            };
            let until = (now + params.handshake_timeout).min(now + self.limits.allocate_timeout());
            d.sessions.insert(
                tuple,
                Session {
                    tls,
                    started: now,
                    connected: false,
                    deadline: Some((until, ConnClose::AllocateTimeout)),
                    allocated: false,
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
        let was_connected = sess.connected;
        let r = feed(sess, datagram, &mut d.record, &mut d.rx, &mut d.rx_lens);
        // Handshake flights, alerts: what the engine wrote, in order.
        let dropped = drain(sess, &tuple, &mut d.listeners);
        if let Err(e) = r {
            // Fatal for the session. OpenSSL has queued the alert that tells a
            // client still in its handshake why (no_application_protocol,
            // protocol_version for DTLS 1.0, handshake_failure), already sent
            // above; then the session, and any allocation it held, ends now.
            tracing::debug!(client = %tuple.client, error = %e, "DTLS session failed");
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

    /// Runs handshakes' retransmission timers and sessions' deadlines; ends the
    /// sessions that are over, with their allocations.
    fn dtls_tick(&mut self, now: Instant) {
        let tuples: Vec<FiveTuple> = self.dtls.sessions.keys().copied().collect();
        let mut dropped = 0;
        for tuple in tuples {
            self.dtls_recheck(&tuple, now);
            let d = &mut self.dtls;
            let Some(sess) = d.sessions.get_mut(&tuple) else {
                continue;
            };
            if !sess.connected && !sess.closed {
                // OpenSSL checks its own retransmission timer on each call and
                // resends the last flight when it has run out (RFC 6347 §4.2.4).
                match sess.tls.do_handshake() {
                    // Not without a datagram from the client; harmless if so.
                    Ok(()) => sess.connected = true,
                    Err(e) if is_waiting(&e) => {}
                    Err(_) => sess.closed = true,
                }
                dropped += drain(sess, &tuple, &mut d.listeners);
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
                    if !sess.closed && sess.tls.shutdown().is_ok() {
                        dropped += drain(sess, &tuple, &mut d.listeners);
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
    let mut storage = vec![0u8; BATCH * STRIDE];
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
                for (m, buf) in meta.iter().zip(storage.chunks(STRIDE)).take(n) {
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
