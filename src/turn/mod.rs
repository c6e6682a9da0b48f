//! The sans-IO TURN server core (RFC 8656, RFC 6156).
//!
//! [`server::Server`] is handed datagrams (or framed stream messages), the 5-tuple
//! they arrived on and `now`; it answers with what to send. It never reads a clock
//! and never touches a socket: relay sockets come from an injected [`RelayBinder`],
//! and wall-clock seconds (for REST credential expiry and nonces) are derived from
//! the injected `Instant` through a base the driver sets.
#![forbid(unsafe_code)]

pub mod allocation;
pub mod auth;
pub mod cluster;
pub mod live;
pub mod offload;
pub mod policy;
pub mod quota;
pub mod reservations;
pub mod server;
pub mod source_limit;
pub mod table;
pub mod tcp_relay;

// The rules of `Server`, one file each (each adds an `impl Server` block); their
// public types are re-exported from `server`.
mod allocate;
mod byte_budget;
mod channel;
mod client_to_peer;
mod config;
mod nat_discovery;
mod operations;
mod output;
mod peer_address;
mod peer_to_client;
mod permission;
mod redirect;
mod responses;
mod stats;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

pub use server::{
    AllocationSummary, Output, PeerOutput, Server, ServerConfig, Shared, DEFAULT_MAX_MESSAGE_SIZE,
};

/// A hash map for lookups on the packet path: foldhash's quality hasher, seeded
/// at random per map, several times faster than std's SipHash on a 5-tuple
/// while still keeping keys an attacker chooses (source ports) from colliding
/// predictably.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

/// The transport between the client and the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    /// DTLS over UDP (RFC 7350): datagrams, one STUN message or ChannelData per
    /// record, and, as over TLS, the allocation ends with the DTLS session.
    Dtls,
}

impl Transport {
    pub const COUNT: usize = 4;
    pub const ALL: [Transport; Self::COUNT] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Dtls,
    ];

    /// This transport's slot in per-transport counter arrays.
    pub const fn index(self) -> usize {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Dtls => 3,
        }
    }

    /// Streams frame ChannelData with padding to 4 bytes (RFC 8656 §12.5).
    pub const fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp | Transport::Dtls)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Dtls => "dtls",
        }
    }
}

/// The 5-tuple that identifies an allocation (RFC 8656 §2): the client's transport
/// address, the server's transport address the client reached, and the transport.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// A relay socket, as named by the [`RelayBinder`] that opened it: a dense slot
/// `index` (binders reuse freed slots, so tables can be plain vectors) and the
/// slot's `generation`, which the binder bumps each time it reuses the slot. An ID
/// kept past its socket's release (a datagram still queued for it, say) therefore
/// never names the next socket in that slot: lookups compare the whole ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RelayId {
    pub index: u32,
    pub generation: u32,
}

impl RelayId {
    pub const fn new(index: u32, generation: u32) -> Self {
        RelayId { index, generation }
    }

    /// The ID as one integer (generation high, index low), e.g. as a send-queue key.
    pub const fn to_bits(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    pub const fn from_bits(bits: u64) -> Self {
        RelayId {
            index: bits as u32,
            generation: (bits >> 32) as u32,
        }
    }
}

/// Which port a relay socket should get.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PortRequest {
    /// Any free port in the relay range, chosen at random.
    Any,
    /// An even port (EVEN-PORT with R = 0).
    Even,
    /// An even port P, and P + 1 held in reserve (EVEN-PORT with R = 1).
    EvenPair,
}

/// A relay socket the binder opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Bound {
    pub id: RelayId,
    /// The local address the socket is bound to.
    pub addr: SocketAddr,
    /// For [`PortRequest::EvenPair`]: the address of the reserved socket on the
    /// next port. It is parked, not yet relaying, and may be adopted by any
    /// shard's binder ([`RelayBinder::adopt`]): the Allocate that redeems the token
    /// can arrive on another shard.
    pub reserved: Option<SocketAddr>,
}

/// Why a relay socket could not be opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum BindError {
    /// No free port in the range (or the relay-port quota is used up): 508.
    #[error("no free relay port")]
    Exhausted,
    /// The server has no usable address of that family: 440.
    #[error("address family not available")]
    FamilyUnavailable,
}

/// Opens and closes relay sockets for the core. The driver implements it over real
/// sockets; tests fake it.
pub trait RelayBinder {
    /// Opens a relay socket on `ip` (an address of this host) with a port from the
    /// relay range. `dont_fragment` asks for the DF bit on what it sends.
    fn bind(
        &mut self,
        ip: IpAddr,
        port: PortRequest,
        dont_fragment: bool,
    ) -> Result<Bound, BindError>;
    /// Closes a relay socket; its port returns to the pool.
    fn release(&mut self, id: RelayId);
    /// Takes over the parked socket reserved at `addr` and starts relaying on it.
    fn adopt(&mut self, addr: SocketAddr) -> Result<Bound, BindError>;
    /// Closes the parked socket reserved at `addr` (its reservation expired).
    fn discard(&mut self, addr: SocketAddr);
    /// Opens the relay of a TCP allocation (RFC 6062) on `ip`: a listening TCP
    /// socket on a port from the relay range, released with
    /// [`release`](Self::release) like any other. By default the binder's
    /// plain [`bind`](Self::bind), which is enough for fakes.
    fn bind_tcp(&mut self, ip: IpAddr) -> Result<Bound, BindError> {
        self.bind(ip, PortRequest::Any, false)
    }
}
