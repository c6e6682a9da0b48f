//! What the core hands back to its driver: [`Output`] and [`PeerOutput`] (what to
//! send), [`Event`]s (what happened), and the operator-facing views and requests
//! ([`Session`], [`Drain`], [`KillFilter`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::allocation::Traffic;
use super::{FiveTuple, RelayId};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Output {
    /// Nothing (dropped, or an indication that needs no answer).
    None,
    /// Send the message now in `out` back to the client on the same 5-tuple.
    Reply,
    /// Send the message now in `out` from the UDP listener bound to `from` to
    /// `to`: an RFC 5780 Binding answer with CHANGE-REQUEST or RESPONSE-PORT.
    /// `to` has the request's source IP always; only its port may differ.
    ReplyFrom { from: SocketAddr, to: SocketAddr },
    /// Send `data[start..end]` from relay socket `relay` to `peer`.
    ToPeer {
        relay: RelayId,
        peer: SocketAddr,
        start: usize,
        end: usize,
    },
    /// RFC 6062 Connect: open a TCP connection from the relayed address `from`
    /// (the listening socket of relay `relay`) to `peer`, then report the
    /// outcome with `Server::connect_finished(conn, ..)`. Nothing is sent now.
    Connect {
        conn: u32,
        relay: RelayId,
        from: SocketAddr,
        peer: SocketAddr,
    },
    /// RFC 6062 ConnectionBind succeeded: send the response in `out`, then this
    /// client connection carries the bytes of peer connection `conn`, raw.
    ConnectionBound { conn: u32 },
}

/// What [`Server::handle_peer`] wants sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum PeerOutput {
    None,
    /// Send `buf[start..end]` to the client of this 5-tuple.
    ToClient {
        tuple: FiveTuple,
        start: usize,
        end: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CloseReason {
    Expired,
    Deleted,
    ConnectionClosed,
    /// The credential was removed or revoked (see `recheck_credentials`).
    Revoked,
    /// An operator ended it (`ferroturn sessions kill`).
    Killed,
    Shutdown,
    /// Its TURN REST credential expired while `auth.strict-expiry` was on: the
    /// allocation's deadline was the credential's expiry, not its lifetime.
    CredentialExpired,
}

impl CloseReason {
    /// The word used in usage records and logs.
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::Expired => "expired",
            CloseReason::Deleted => "deleted",
            CloseReason::ConnectionClosed => "connection_closed",
            CloseReason::Revoked => "revoked",
            CloseReason::Killed => "killed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::CredentialExpired => "credential_expired",
        }
    }
}

/// What new Allocates get while the server drains (existing allocations are
/// untouched): 403, or 300 Try Alternate naming one of `alternates` in turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drain {
    pub alternates: Vec<SocketAddr>,
}

/// What an allocation is, as operators see it: the one description shared by the
/// session list ([`Session`]), the close event ([`Event::AllocationClosed`]),
/// usage records and the admin socket's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationSummary {
    /// Unique among the allocations of this process (all shards).
    pub id: u64,
    pub username: Box<str>,
    /// The realm it authenticated in.
    pub realm: Arc<str>,
    /// Transport, client and server (listener) address.
    pub tuple: FiveTuple,
    /// Advertised relayed addresses.
    pub relays: Vec<SocketAddr>,
    /// Distinct peer IPs the allocation was ever permitted to reach.
    pub peers: u32,
    /// Bytes and packets relayed each way.
    pub traffic: Traffic,
    /// Unix seconds when it was created.
    pub started_unix: u64,
    /// How long it has existed (when it closed, for a closed one).
    pub duration: Duration,
    /// Its user's byte budget, when `max-bytes-per-user` is set.
    pub budget: Option<BudgetUse>,
}

/// A user's byte budget at one moment: bytes relayed in the current period
/// over all of the user's allocations, and the limit. `used >= limit` means
/// used up: the user's allocations relay nothing until the next period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetUse {
    pub used: u64,
    pub limit: u64,
}

/// One live allocation as `ferroturn sessions list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub allocation: AllocationSummary,
    /// Seconds until it expires unless refreshed.
    pub expires_in: u64,
    pub permissions: u32,
    pub channels: u32,
}

/// Which allocations `Server::kill` ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillFilter {
    User(String),
    Id(u64),
}

/// Something that happened, for metrics and usage records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    AllocationCreated {
        tuple: FiveTuple,
    },
    AllocationClosed {
        allocation: AllocationSummary,
        reason: CloseReason,
    },
}
