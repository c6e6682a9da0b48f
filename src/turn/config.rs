//! The settings of the core ([`ServerConfig`]) and the buffer layout a driver
//! must respect ([`PEER_HEADROOM`], [`PEER_TAILROOM`]).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;

use super::source_limit::SourceRate;
use crate::stun::message::HEADER_LEN;

/// Bytes a driver must leave free before a payload handed to
/// [`Server::handle_peer`](super::Server::handle_peer): room for the largest Data-indication prefix (20-byte
/// header, XOR-PEER-ADDRESS for IPv6, DATA attribute header).
pub const PEER_HEADROOM: usize = HEADER_LEN + 24 + 4;
/// Bytes a driver must leave free after the payload: padding to 4 bytes.
pub const PEER_TAILROOM: usize = 3;

/// How long a port reserved by EVEN-PORT with R = 1 waits for its RESERVATION-TOKEN
/// (RFC 8656 §7.2 suggests about 30 seconds).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// The default of [`ServerConfig::max_message_size`] (`server.max-message-size`):
/// 2,048 bytes. What a WebRTC client sends stays far below it: media and data
/// channel packets carry at most about 1,200 bytes (libwebrtc's RTP and SCTP
/// packet size) and never more than a 1,500-byte Ethernet MTU allows (1,472
/// bytes of UDP payload over IPv4), with 4 bytes of ChannelData header (+3 of
/// padding on streams) or about 60 of Send indication around them; requests with
/// credentials are a few hundred bytes. So 2,048 leaves ~500 bytes of margin over
/// the largest packet a 1,500-byte path carries unfragmented, while a 4,000-byte
/// "request" (an amplification or parser probe) is dropped unparsed.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 2048;

/// The default limit on error answers to unauthenticated requests per source:
/// 10 a second with bursts of 20, in the order of coturn's `--401-ratelimit`.
/// A client needs one 401 to start (two after a stale nonce), so no real
/// client comes near it; a reflection flood aimed at one victim is cut to 10
/// small answers a second.
pub const DEFAULT_UNAUTHENTICATED_RATE: SourceRate = SourceRate {
    per_second: 10,
    burst: 20,
};

/// Settings of the core, derived from the validated configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub realm: String,
    pub software: Option<String>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub max_permissions_per_allocation: u32,
    pub max_channels_per_allocation: u32,
    /// Bytes per second each allocation may relay in each direction; 0 =
    /// unlimited. Beyond it datagrams are dropped (`DropReason::RateLimit`).
    pub max_bps_per_allocation: u64,
    /// Bytes each user may relay per [`bytes_period`](Self::bytes_period), both
    /// directions, over all of the user's allocations on all shards; 0 = no
    /// budget. Beyond it relayed data is dropped (`DropReason::ByteBudget`) and
    /// new Allocates get 486 until the next period.
    pub max_bytes_per_user: u64,
    /// The budget's period: periods start at multiples of it in unix time, so
    /// a day (the default) starts at UTC midnight and an hour on the hour.
    pub bytes_period: Duration,
    /// The longest datagram or stream frame taken from a client, in bytes (a
    /// stream's ChannelData counted with its padding). Longer ones are dropped
    /// unparsed and never answered (`DropReason::Oversized`). See
    /// [`DEFAULT_MAX_MESSAGE_SIZE`] for why 2,048; raised by operators who relay
    /// bigger payloads (jumbo frames, tests of 64 KiB datagrams).
    pub max_message_size: usize,
    /// Error answers to unauthenticated requests, per source IP (see
    /// [`SourceLimiter`](super::source_limit::SourceLimiter)); beyond it the
    /// request is dropped (`DropReason::UnauthenticatedRateLimit`).
    pub unauthenticated_rate: SourceRate,
    /// Addresses relay sockets bind to, at most one per family. Without one for a
    /// family, relays bind to the server address the client reached.
    pub relay_ips: Vec<IpAddr>,
    /// 1:1 NAT mappings: (public, private). A relay whose local IP is `private` (or
    /// any relay of that family when `private` is `None`) is advertised as `public`.
    pub external_ips: Vec<(IpAddr, Option<IpAddr>)>,
    pub relay_ports: RangeInclusive<u16>,
    /// The server's own service transport addresses (listeners, metrics, admin).
    /// A wildcard IP stands for every IP in `local_ips`.
    pub own_services: Vec<SocketAddr>,
    /// This host's own IPs: as peers they may only be relay ports.
    pub local_ips: Vec<IpAddr>,
    pub allow_peers: Vec<IpNet>,
    pub deny_peers: Vec<IpNet>,
    /// `auth.strict-expiry`: an allocation made with a TURN REST credential
    /// (`EXPIRY:NAME`) ends when the credential expires (its lifetime, granted
    /// by Allocate and by each Refresh, is cut to the expiry, and the close
    /// reason is `credential_expired`). Off, the lifetime is granted as asked
    /// and the allocation lives on until it runs out; only its next Refresh,
    /// with the expired credential, is refused (401), as with coturn.
    pub strict_expiry: bool,
    /// `server.stun-only`: the whole server answers Binding only; every TURN
    /// request gets 400 (what an RFC 8489 server answers to a method it does
    /// not implement) and Send indications and ChannelData are dropped
    /// (`DropReason::StunOnly`). Allocations made before a reload turned it on
    /// relay on, but cannot be refreshed.
    pub stun_only: bool,
    /// `relay.tcp-allocations`: Allocate with REQUESTED-TRANSPORT = TCP over
    /// TCP/TLS client connections, Connect and ConnectionBind (RFC 6062).
    /// Off: 442, as without RFC 6062.
    pub tcp_allocations: bool,
    /// `relay.tcp-connection-timeout`: how long a peer connection waits for its
    /// ConnectionBind, and a data connection for its bind (RFC 6062: 30 s).
    pub tcp_connection_timeout: Duration,
    /// `quota.max-tcp-connections-per-allocation`: peer connections of one TCP
    /// allocation, pending or bound (0 = no limit).
    pub max_tcp_connections_per_allocation: u32,
    /// The listeners that serve STUN only (`server.stun-only-listen`), as the
    /// driver bound them: transport and local address (a wildcard IP covers
    /// every address of its family on that port). A handful at most, scanned
    /// only for TURN requests and for data that found no allocation, never on
    /// the relaying path.
    pub stun_only_listeners: Vec<(super::Transport, SocketAddr)>,
    /// `drain.alternate-server`: where new Allocates go, in turn, when this
    /// server is above a `cluster.redirect-above-*` threshold and no cluster
    /// node suits (a drain carries its own copy in [`Drain`](super::Drain)).
    pub alternate_servers: Vec<SocketAddr>,
    /// RFC 5780 NAT behaviour discovery (`server.nat-discovery`): the two IPs
    /// and two ports of the four UDP listeners that answer Binding with
    /// OTHER-ADDRESS and RESPONSE-ORIGIN and honour CHANGE-REQUEST,
    /// RESPONSE-PORT and PADDING. `None` (the default): those three are
    /// unknown comprehension-required attributes (420).
    pub nat_discovery: Option<NatDiscovery>,
}

/// The addresses of RFC 5780 §6: IPs A1 and A2, ports P1 and P2, bound as the
/// four UDP listeners A1:P1 (`server.listen[0]`), A1:P2, A2:P1 and A2:P2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatDiscovery {
    /// A1 (the primary IP) and A2 (`server.other-address`).
    pub ips: [IpAddr; 2],
    /// P1 (the primary port) and P2 (`server.other-port`), as bound.
    pub ports: [u16; 2],
}

impl NatDiscovery {
    /// Which of the four listeners `local` is: (IP index, port index).
    pub fn position(&self, local: SocketAddr) -> Option<(usize, usize)> {
        let i = self.ips.iter().position(|&ip| ip == local.ip())?;
        let j = self.ports.iter().position(|&p| p == local.port())?;
        Some((i, j))
    }

    /// The listener with IP index `i` and port index `j` (each 0 or 1).
    pub fn addr(&self, i: usize, j: usize) -> SocketAddr {
        SocketAddr::new(self.ips[i & 1], self.ports[j & 1])
    }

    /// The three listeners besides the primary one (A1:P2, A2:P1, A2:P2).
    pub fn alternates(&self) -> [SocketAddr; 3] {
        [self.addr(0, 1), self.addr(1, 0), self.addr(1, 1)]
    }
}

impl ServerConfig {
    /// Whether `tuple` reached a listener that serves STUN only: the whole
    /// server is, or its server address matches one of
    /// `stun_only_listeners` (no allocation, a short scan).
    pub fn is_stun_only(&self, tuple: &super::FiveTuple) -> bool {
        self.stun_only
            || self.stun_only_listeners.iter().any(|&(t, l)| {
                t == tuple.transport
                    && l.port() == tuple.server.port()
                    && (l.ip() == tuple.server.ip()
                        || (l.ip().is_unspecified() && l.is_ipv4() == tuple.server.is_ipv4()))
            })
    }

    /// A configuration with the RFC defaults and no relay or listener addresses,
    /// for tests and as a base.
    pub fn with_realm(realm: &str) -> Self {
        Self {
            realm: realm.to_owned(),
            software: None,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            max_bps_per_allocation: 0,
            max_bytes_per_user: 0,
            bytes_period: Duration::from_secs(super::quota::DAY),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            unauthenticated_rate: DEFAULT_UNAUTHENTICATED_RATE,
            relay_ips: Vec::new(),
            external_ips: Vec::new(),
            relay_ports: 49152..=65535,
            own_services: Vec::new(),
            local_ips: Vec::new(),
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            strict_expiry: false,
            stun_only: false,
            tcp_allocations: false,
            tcp_connection_timeout: super::tcp_relay::CONNECTION_TIMEOUT,
            max_tcp_connections_per_allocation: 64,
            stun_only_listeners: Vec::new(),
            alternate_servers: Vec::new(),
            nat_discovery: None,
        }
    }
}
