//! A small TURN client over UDP or TCP, for the integration tests, `ferroturn bench`
//! and self-tests.
//!
//! It speaks the long-term credential mechanism (the 401 → retry-with-nonce dance,
//! 438 → retry with the fresh nonce), retransmits requests over UDP with a bounded
//! back-off, and keeps relayed data that arrives while it waits for a response so
//! that nothing is lost.
//!
//! By default it is a classic (RFC 5389) client: USERNAME, the MD5 key and
//! MESSAGE-INTEGRITY. [`Client::with_sha256`] and [`Client::with_userhash`] turn on
//! the RFC 8489 §9.2 security features: the SHA-256 password algorithm with
//! MESSAGE-INTEGRITY-SHA256, and USERHASH instead of USERNAME.
#![forbid(unsafe_code)]

mod datagram_io;
pub use datagram_io::DatagramIo;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::stun::attr::*;
use crate::stun::channel_data::ChannelData;
use crate::stun::framing::{next_frame, Frame};
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};
use crate::turn::auth::{
    nonce_features, RequestAuth, RequestMac, FEATURE_PASSWORD_ALGORITHMS,
    FEATURE_USERNAME_ANONYMITY,
};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("no response in time")]
    Timeout,
    #[error("error response {code} {reason}")]
    Error {
        code: u16,
        reason: String,
        /// ALTERNATE-SERVER of a 300 (Try Alternate): where to go instead.
        alternate: Option<SocketAddr>,
    },
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

impl ClientError {
    /// The STUN error code, when the server answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Where a 300 (Try Alternate) sends the client: see
    /// [`Client::allocate_following`].
    pub fn alternate(&self) -> Option<SocketAddr> {
        match self {
            ClientError::Error { alternate, .. } => *alternate,
            _ => None,
        }
    }
}

/// Relayed data received from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A Data indication: the peer and the data.
    Data { peer: SocketAddr, data: Vec<u8> },
    /// ChannelData: the channel number and the data.
    Channel { channel: u16, data: Vec<u8> },
}

/// A byte stream the client can frame STUN on: TCP, or TLS over TCP.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

enum Conn {
    Udp(UdpSocket),
    Stream {
        stream: Box<dyn Stream>,
        local: SocketAddr,
        buf: BytesMut,
    },
}

/// What an Allocate granted.
#[derive(Clone, Debug)]
pub struct Allocation {
    pub relayed: Vec<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    pub lifetime: u32,
    pub reservation_token: Option<[u8; 8]>,
}

/// Options for an Allocate.
#[derive(Clone, Debug, Default)]
pub struct AllocateOptions {
    pub lifetime: Option<u32>,
    pub family: Option<Family>,
    pub additional_family: Option<Family>,
    pub even_port: Option<bool>,
    pub reservation_token: Option<[u8; 8]>,
    pub dont_fragment: bool,
    /// REQUESTED-TRANSPORT protocol; UDP (17) when `None`.
    pub transport: Option<u8>,
}

/// A TURN client bound to one server.
pub struct Client {
    conn: Conn,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
    /// PASSWORD-ALGORITHMS of the last 401/438, echoed byte for byte when
    /// negotiating (RFC 8489 §9.2.4 refuses anything else as a bid-down).
    offered_algorithms: Option<Vec<u8>>,
    /// Security features the current nonce advertises (its cookie bits).
    nonce_features: u32,
    /// Negotiate SHA-256 and sign with MESSAGE-INTEGRITY-SHA256.
    sha256: bool,
    /// Send USERHASH instead of USERNAME.
    userhash: bool,
    received: VecDeque<Received>,
    /// A stream client over plain TCP (not TLS): one a redirect can reconnect.
    plain_tcp: bool,
    /// RFC 6062 ConnectionAttempt indications: (CONNECTION-ID, peer).
    attempts: VecDeque<(u32, SocketAddr)>,
    /// Per-attempt wait for a response over UDP (doubles each retransmission).
    pub rto: Duration,
    /// Total time to wait for a response.
    pub timeout: Duration,
}

/// A long-term key (RFC 8489 §9.2.2), by password algorithm.
#[derive(Clone, Copy)]
enum Key {
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

impl Key {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Md5(k) => k,
            Key::Sha256(k) => k,
        }
    }
}

/// A response: owned bytes, parsed on demand.
#[derive(Clone, Debug)]
pub struct Response(pub Vec<u8>);

impl Response {
    pub fn message(&self) -> Message<'_> {
        // Only constructed from bytes that parsed.
        Message::parse(&self.0).unwrap_or_else(|_| unreachable!("response was validated"))
    }
}

impl Client {
    /// A client over UDP from an ephemeral port of the matching family.
    pub async fn udp(server: SocketAddr) -> io::Result<Self> {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().map_err(io::Error::other)?
        } else {
            "[::]:0".parse().map_err(io::Error::other)?
        };
        let sock = UdpSocket::bind(local).await?;
        sock.connect(server).await?;
        Ok(Self::new(Conn::Udp(sock), server))
    }

    /// [`allocate`](Self::allocate), following up to `hops` redirects: on a
    /// 300 (Try Alternate, RFC 8489 §10) this client is replaced by a new one
    /// of the same transport to the ALTERNATE-SERVER, with the same
    /// credentials and options but no nonce, as browsers do. UDP and TCP
    /// clients only: a TLS client would need the alternate's name, so its 300
    /// is returned.
    pub async fn allocate_following(&mut self, hops: usize) -> Result<Allocation, ClientError> {
        for _ in 0..hops {
            match self.allocate().await {
                Err(e) if e.code() == Some(300) => {
                    let Some(alt) = e.alternate() else {
                        return Err(e);
                    };
                    let next = match &self.conn {
                        Conn::Udp(_) => Client::udp(alt).await?,
                        Conn::Stream { .. } if self.plain_tcp => Client::tcp(alt).await?,
                        Conn::Stream { .. } => return Err(e),
                    };
                    let old = std::mem::replace(self, next);
                    self.username = old.username;
                    self.password = old.password;
                    self.sha256 = old.sha256;
                    self.userhash = old.userhash;
                    self.rto = old.rto;
                    self.timeout = old.timeout;
                }
                other => return other,
            }
        }
        self.allocate().await
    }

    /// A client over a UDP socket already connected to `server`, such as one
    /// taken with [`into_udp_socket`](Self::into_udp_socket) for raw traffic and
    /// handed back to delete the allocation afterwards. It starts without realm or
    /// nonce: its first request goes through the 401 round again.
    pub fn from_udp_socket(sock: UdpSocket, server: SocketAddr) -> Self {
        Self::new(Conn::Udp(sock), server)
    }

    /// A client over TCP.
    pub async fn tcp(server: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let mut c = Self::stream(Box::new(stream), local, server);
        c.plain_tcp = true;
        Ok(c)
    }

    /// A client over TLS (`turns:`), verifying the server against `roots` for
    /// `server_name`.
    pub async fn tls(
        server: SocketAddr,
        server_name: &str,
        roots: rustls::RootCertStore,
    ) -> io::Result<Self> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::tls_with_config(server, server_name, std::sync::Arc::new(config)).await
    }

    /// A client over TLS with a rustls configuration of the caller's: `ferroturn
    /// doctor` uses one whose verifier records the chain and its verdict instead of
    /// failing the handshake, so that a bad certificate is reported as such and the
    /// STUN checks over TLS still run.
    pub async fn tls_with_config(
        server: SocketAddr,
        server_name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> io::Result<Self> {
        let tcp = TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(Self::stream(Box::new(tls), local, server))
    }

    /// A client over a stream already connected to `server`, plain or TLS,
    /// from `local`: for a connection that had something to say first, such
    /// as a PROXY protocol header.
    pub fn over_stream<S>(stream: S, local: SocketAddr, server: SocketAddr) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        Self::stream(Box::new(stream), local, server)
    }

    fn stream(stream: Box<dyn Stream>, local: SocketAddr, server: SocketAddr) -> Self {
        Self::new(
            Conn::Stream {
                stream,
                local,
                buf: BytesMut::with_capacity(4096),
            },
            server,
        )
    }

    fn new(conn: Conn, server: SocketAddr) -> Self {
        Self {
            conn,
            server,
            username: String::new(),
            password: String::new(),
            realm: None,
            nonce: None,
            offered_algorithms: None,
            nonce_features: 0,
            sha256: false,
            userhash: false,
            received: VecDeque::new(),
            plain_tcp: false,
            attempts: VecDeque::new(),
            rto: Duration::from_millis(250),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the long-term credentials.
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.username = username.to_owned();
        self.password = password.to_owned();
        self
    }

    /// Use the SHA-256 password algorithm (RFC 8489 §9.2.3): echo the server's
    /// PASSWORD-ALGORITHMS, send PASSWORD-ALGORITHM SHA-256, sign requests with
    /// MESSAGE-INTEGRITY-SHA256 under the SHA-256 long-term key and expect responses
    /// signed the same way. If the server's challenge does not offer SHA-256 the
    /// request fails with [`ClientError::Protocol`] rather than quietly falling back
    /// to MD5: a client that asked for SHA-256 wants to know.
    pub fn with_sha256(mut self) -> Self {
        self.sha256 = true;
        self
    }

    /// Send USERHASH instead of USERNAME (RFC 8489 §9.2, username anonymity). Fails
    /// with [`ClientError::Protocol`] if the server's nonce does not offer it.
    pub fn with_userhash(mut self) -> Self {
        self.userhash = true;
        self
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The client's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.conn {
            Conn::Udp(s) => s.local_addr(),
            Conn::Stream { local, .. } => Ok(*local),
        }
    }

    fn is_stream(&self) -> bool {
        matches!(self.conn, Conn::Stream { .. })
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.conn {
            Conn::Udp(s) => s.send(bytes).await.map(|_| ()),
            Conn::Stream { stream, .. } => stream.write_all(bytes).await,
        }
    }

    /// Receives one message (STUN or ChannelData) as raw bytes.
    async fn recv_raw(&mut self) -> io::Result<Vec<u8>> {
        match &mut self.conn {
            Conn::Udp(s) => {
                let mut buf = vec![0u8; 65536];
                let n = s.recv(&mut buf).await?;
                buf.truncate(n);
                Ok(buf)
            }
            Conn::Stream { stream, buf, .. } => loop {
                match next_frame(buf) {
                    Frame::Stun(n) => return Ok(buf.split_to(n).to_vec()),
                    Frame::ChannelData { len, unpadded } => {
                        let v = buf[..unpadded].to_vec();
                        buf.advance(len);
                        return Ok(v);
                    }
                    Frame::Invalid => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "not STUN"))
                    }
                    Frame::NeedMore(_) => {
                        if stream.read_buf(buf).await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                }
            },
        }
    }

    /// Queues relayed data; returns true when `bytes` was relayed data.
    fn take_data(&mut self, bytes: &[u8]) -> bool {
        if let Ok(cd) = ChannelData::parse(bytes) {
            self.received.push_back(Received::Channel {
                channel: cd.channel,
                data: cd.payload.to_vec(),
            });
            return true;
        }
        if let Ok(m) = Message::parse(bytes) {
            if m.class() == Class::Indication && m.method() == Method::ConnectionAttempt {
                if let (Some(Ok(ConnectionId(id))), Some(Ok(XorPeerAddress(peer)))) =
                    (m.get::<ConnectionId>(), m.get::<XorPeerAddress>())
                {
                    self.attempts.push_back((id, peer));
                }
                return true;
            }
            if m.class() == Class::Indication && m.method() == Method::Data {
                if let (Some(Ok(XorPeerAddress(peer))), Some(Ok(Data(d)))) =
                    (m.get::<XorPeerAddress>(), m.get::<Data>())
                {
                    self.received.push_back(Received::Data {
                        peer,
                        data: d.to_vec(),
                    });
                }
                return true;
            }
        }
        false
    }

    /// Sends `request` and waits for the response with its transaction ID.
    async fn transact(
        &mut self,
        request: &[u8],
        tid: TransactionId,
    ) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut rto = self.rto;
        self.send_raw(request).await?;
        let mut next_send = tokio::time::Instant::now() + rto;
        loop {
            let wake = if self.is_stream() {
                deadline
            } else {
                next_send.min(deadline)
            };
            match tokio::time::timeout_at(wake, self.recv_raw()).await {
                Ok(Ok(bytes)) => {
                    if self.take_data(&bytes) {
                        continue;
                    }
                    if let Ok(m) = Message::parse(&bytes) {
                        if m.transaction_id() == tid
                            && matches!(m.class(), Class::Success | Class::Error)
                        {
                            return Ok(Response(bytes));
                        }
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(ClientError::Timeout);
                    }
                    rto = (rto * 2).min(Duration::from_secs(2));
                    next_send = now + rto;
                    self.send_raw(request).await?;
                }
            }
        }
    }

    /// The long-term key for the realm the server named: SHA-256 or MD5, as chosen.
    fn key(&self) -> Option<Key> {
        let realm = self.realm.as_ref()?;
        Some(if self.sha256 {
            Key::Sha256(long_term_key_sha256(&self.username, realm, &self.password))
        } else {
            Key::Md5(long_term_key_md5(&self.username, realm, &self.password))
        })
    }

    /// Refuses to go on when the server's challenge lacks a feature this client was
    /// told to use (see [`with_sha256`](Self::with_sha256)).
    fn check_features(&self) -> Result<(), ClientError> {
        if self.sha256 {
            let offers_sha256 = self.offered_algorithms.as_deref().is_some_and(|v| {
                PasswordAlgorithms(v)
                    .iter()
                    .any(|a| a.algorithm == ALGORITHM_SHA256 && a.params.is_empty())
            });
            if self.nonce_features & FEATURE_PASSWORD_ALGORITHMS == 0 || !offers_sha256 {
                return Err(ClientError::Protocol("the server does not offer SHA-256"));
            }
        }
        if self.userhash && self.nonce_features & FEATURE_USERNAME_ANONYMITY == 0 {
            return Err(ClientError::Protocol("the server does not offer USERHASH"));
        }
        Ok(())
    }

    /// Builds and sends an authenticated request, handling 401 and 438 by retrying
    /// with the realm and nonce the server sent. `attrs` adds the method's own
    /// attributes.
    pub async fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageBuilder<'_>),
    ) -> Result<Response, ClientError> {
        for _ in 0..3 {
            let tid = TransactionId::random();
            let mut buf = BytesMut::new();
            let mut b = MessageBuilder::new(&mut buf, method, Class::Request, tid);
            attrs(&mut b);
            let key = self.key();
            if let (Some(key), Some(realm), Some(nonce)) =
                (key, self.realm.as_deref(), self.nonce.as_deref())
            {
                self.check_features()?;
                let hash = self.userhash.then(|| userhash(&self.username, realm));
                let (algorithm, algorithms, mac) = match (key, self.offered_algorithms.as_deref()) {
                    (Key::Sha256(_), Some(offered)) => (
                        Some((ALGORITHM_SHA256, &[][..])),
                        Some(offered),
                        RequestMac::Sha256,
                    ),
                    _ => (None, None, RequestMac::Sha1),
                };
                RequestAuth {
                    username: (!self.userhash).then_some(self.username.as_str()),
                    userhash: hash.as_ref().map(|h| &h[..]),
                    realm,
                    nonce,
                    algorithm,
                    algorithms,
                    key: key.as_bytes(),
                    mac,
                }
                .write(&mut b);
            }
            b.add_fingerprint();
            b.finish();
            let resp = self.transact(&buf, tid).await?;
            let m = resp.message();
            if m.class() == Class::Success {
                if let Some(key) = key {
                    // The same kind of integrity attribute as the request (RFC 8489
                    // §9.2.5), under the same key.
                    let ok = match key {
                        Key::Sha256(k) => m.verify_integrity_sha256(&k).is_ok(),
                        Key::Md5(k) => m.verify_integrity(&k).is_ok(),
                    };
                    if !ok {
                        return Err(ClientError::Protocol(
                            "response MESSAGE-INTEGRITY does not verify",
                        ));
                    }
                }
                return Ok(resp.clone());
            }
            let Some(Ok(ErrorCode { code, reason })) = m.get::<ErrorCode>() else {
                return Err(ClientError::Protocol("error response without ERROR-CODE"));
            };
            let retry = match code {
                401 => {
                    self.nonce.is_none()
                        || self.realm.as_deref()
                            != m.get::<Realm>().and_then(Result::ok).map(|r| r.0)
                }
                438 => true,
                _ => false,
            };
            if retry {
                if let (Some(Ok(Realm(r))), Some(Ok(Nonce(n)))) =
                    (m.get::<Realm>(), m.get::<Nonce>())
                {
                    self.realm = Some(r.to_owned());
                    self.nonce = Some(n.to_vec());
                    self.nonce_features = nonce_features(n);
                    self.offered_algorithms = m
                        .get::<PasswordAlgorithms>()
                        .and_then(Result::ok)
                        .map(|a| a.0.to_vec());
                    continue;
                }
            }
            return Err(ClientError::Error {
                code,
                reason: reason.to_owned(),
                alternate: m.get::<AlternateServer>().and_then(Result::ok).map(|a| a.0),
            });
        }
        Err(ClientError::Protocol("authentication did not converge"))
    }

    /// A Binding request; returns the XOR-MAPPED-ADDRESS.
    pub async fn binding(&mut self) -> Result<SocketAddr, ClientError> {
        let tid = TransactionId::random();
        let mut buf = BytesMut::new();
        let mut b = MessageBuilder::new(&mut buf, Method::Binding, Class::Request, tid);
        b.add_fingerprint();
        b.finish();
        let resp = self.transact(&buf, tid).await?;
        match resp.message().get::<XorMappedAddress>() {
            Some(Ok(XorMappedAddress(a))) => Ok(a),
            _ => Err(ClientError::Protocol("no XOR-MAPPED-ADDRESS")),
        }
    }

    /// Allocate with default options (UDP relay, IPv4, default lifetime).
    pub async fn allocate(&mut self) -> Result<Allocation, ClientError> {
        self.allocate_with(&AllocateOptions::default()).await
    }

    pub async fn allocate_with(&mut self, o: &AllocateOptions) -> Result<Allocation, ClientError> {
        let resp = self
            .request(Method::Allocate, |b| {
                b.add(&RequestedTransport(o.transport.unwrap_or(PROTOCOL_UDP)));
                if let Some(l) = o.lifetime {
                    b.add(&Lifetime(l));
                }
                if let Some(f) = o.family {
                    b.add(&RequestedAddressFamily(f));
                }
                if let Some(f) = o.additional_family {
                    b.add(&AdditionalAddressFamily(f));
                }
                if let Some(r) = o.even_port {
                    b.add(&EvenPort { reserve: r });
                }
                if let Some(t) = &o.reservation_token {
                    b.add(&ReservationToken(t));
                }
                if o.dont_fragment {
                    b.add(&DontFragment);
                }
            })
            .await?;
        let m = resp.message();
        let tid = m.transaction_id();
        let relayed = m
            .attributes()
            .filter(|a| a.typ == XOR_RELAYED_ADDRESS)
            .filter_map(|a| XorRelayedAddress::decode(a.value, &tid).ok().map(|x| x.0))
            .collect::<Vec<_>>();
        if relayed.is_empty() {
            return Err(ClientError::Protocol("no XOR-RELAYED-ADDRESS"));
        }
        Ok(Allocation {
            relayed,
            mapped: m
                .get::<XorMappedAddress>()
                .and_then(Result::ok)
                .map(|a| a.0),
            lifetime: m.get::<Lifetime>().and_then(Result::ok).map_or(0, |l| l.0),
            reservation_token: m
                .get::<ReservationToken>()
                .and_then(Result::ok)
                .map(|t| *t.0),
        })
    }

    /// Refresh; returns the granted lifetime (0 deletes the allocation).
    pub async fn refresh(&mut self, lifetime: u32) -> Result<u32, ClientError> {
        let resp = self.request(Method::Refresh, |b| {
            b.add(&Lifetime(lifetime));
        });
        let resp = resp.await?;
        Ok(resp
            .message()
            .get::<Lifetime>()
            .and_then(Result::ok)
            .map_or(0, |l| l.0))
    }

    pub async fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<(), ClientError> {
        self.request(Method::CreatePermission, |b| {
            for p in peers {
                b.add(&XorPeerAddress(*p));
            }
        })
        .await
        .map(|_| ())
    }

    pub async fn channel_bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
    ) -> Result<(), ClientError> {
        self.request(Method::ChannelBind, |b| {
            b.add(&ChannelNumber(channel));
            b.add(&XorPeerAddress(peer));
        })
        .await
        .map(|_| ())
    }

    /// A Send indication carrying `data` to `peer`.
    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        self.send_raw(&send_indication(peer, data)).await
    }

    /// ChannelData on `channel` (padded on TCP).
    pub async fn send_channel_data(&mut self, channel: u16, data: &[u8]) -> io::Result<()> {
        let mut buf = BytesMut::with_capacity(data.len() + 8);
        ChannelData {
            channel,
            payload: data,
        }
        .write(&mut buf, self.is_stream());
        self.send_raw(&buf).await
    }

    /// The next relayed data (Data indication or ChannelData), waiting up to
    /// `timeout`.
    pub async fn recv_data(&mut self, timeout: Duration) -> Result<Received, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.received.pop_front() {
                return Ok(r);
            }
            match tokio::time::timeout_at(deadline, self.recv_raw()).await {
                Ok(Ok(bytes)) => {
                    self.take_data(&bytes);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(ClientError::Timeout),
            }
        }
    }

    /// The UDP socket, for driving raw traffic after setup (benchmarks, tests).
    pub fn into_udp_socket(self) -> Option<UdpSocket> {
        match self.conn {
            Conn::Udp(s) => Some(s),
            Conn::Stream { .. } => None,
        }
    }

    /// RFC 6062 Connect to `peer` on a TCP allocation: the CONNECTION-ID.
    pub async fn connect(&mut self, peer: SocketAddr) -> Result<u32, ClientError> {
        let resp = self
            .request(Method::Connect, |b| {
                b.add(&XorPeerAddress(peer));
            })
            .await?;
        match resp.message().get::<ConnectionId>() {
            Some(Ok(ConnectionId(id))) => Ok(id),
            _ => Err(ClientError::Protocol("no CONNECTION-ID")),
        }
    }

    /// RFC 6062 ConnectionBind: makes this (new, stream) client connection the
    /// data connection of `id`; from then on it carries raw bytes
    /// ([`send_bytes`](Self::send_bytes), [`recv_bytes`](Self::recv_bytes)).
    pub async fn connection_bind(&mut self, id: u32) -> Result<(), ClientError> {
        self.request(Method::ConnectionBind, |b| {
            b.add(&ConnectionId(id));
        })
        .await
        .map(|_| ())
    }

    /// Waits for an RFC 6062 ConnectionAttempt: (CONNECTION-ID, peer).
    pub async fn connection_attempt(
        &mut self,
        timeout: Duration,
    ) -> Result<(u32, SocketAddr), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(a) = self.attempts.pop_front() {
                return Ok(a);
            }
            match tokio::time::timeout_at(deadline, self.recv_raw()).await {
                Ok(Ok(bytes)) => {
                    self.take_data(&bytes);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(ClientError::Timeout),
            }
        }
    }

    /// Raw bytes from a stream connection (a bound RFC 6062 data connection):
    /// what is buffered, else one read; empty at end of stream.
    pub async fn recv_bytes(&mut self, timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let Conn::Stream { stream, buf, .. } = &mut self.conn else {
            return Err(ClientError::Protocol("not a stream"));
        };
        if !buf.is_empty() {
            return Ok(buf.split().to_vec());
        }
        let mut chunk = vec![0u8; 16 * 1024];
        match tokio::time::timeout(timeout, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => {
                chunk.truncate(n);
                Ok(chunk)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Sends raw bytes as they are (for tests of malformed input).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.send_raw(bytes).await
    }
}

/// A Send indication carrying `data` to `peer`, with a fresh transaction ID.
pub fn send_indication(peer: SocketAddr, data: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut b = MessageBuilder::new(
        &mut buf,
        Method::Send,
        Class::Indication,
        TransactionId::random(),
    );
    b.add(&XorPeerAddress(peer));
    b.add(&Data(data));
    b.finish();
    buf
}
