//! ferroturn: a STUN/TURN server.
//!
//! # The sans-IO contract
//!
//! The protocol logic never touches a socket or a clock. [`stun`] is the wire format
//! only. The TURN core ([`turn`]) is a plain state machine handed bytes, the
//! addresses they came from and went to, and `now`; it hands back what to send and
//! when it next wants to be woken. Tokio lives only in the drivers under `net` and in the services beside them
//! under `ops`.
//!
//! # The run loop
//!
//! A driver owns one [`turn::Server`] per shard and feeds it everything that
//! happens: a datagram or framed message from a client (`handle_client`), a
//! datagram a relay socket received from a peer (`handle_peer`), and the passing of
//! time (`poll_timeout` says when, `handle_timeout` is the call). Each call returns
//! what to send; the driver sends it. Nothing in the core blocks, sleeps or reads
//! a clock, so the same loop runs over real sockets (`net::shard`), in the unit
//! tests with a fake clock, and in the fuzzer. The relay sockets come from a
//! [`turn::RelayBinder`] the driver implements; here it is a stub that never binds.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use ferroturn::stun::{Class, Message, MessageBuilder, Method, TransactionId};
//! use ferroturn::turn::auth::{NonceKey, StaticUsers};
//! use ferroturn::turn::live::LiveRelayPorts;
//! use ferroturn::turn::quota::QuotaTracker;
//! use ferroturn::turn::reservations::Reservations;
//! use ferroturn::turn::source_limit::SourceLimiter;
//! use ferroturn::turn::{
//!     BindError, Bound, FiveTuple, Output, PortRequest, RelayBinder, RelayId, Server,
//!     ServerConfig, Shared, Transport,
//! };
//!
//! /// The driver's side of relay sockets (net::relay::Binder over real sockets).
//! struct NoSockets;
//! impl RelayBinder for NoSockets {
//!     fn bind(&mut self, _: std::net::IpAddr, _: PortRequest, _: bool) -> Result<Bound, BindError> {
//!         Err(BindError::Exhausted)
//!     }
//!     fn release(&mut self, _: RelayId) {}
//!     fn adopt(&mut self, _: std::net::SocketAddr) -> Result<Bound, BindError> {
//!         Err(BindError::Exhausted)
//!     }
//!     fn discard(&mut self, _: std::net::SocketAddr) {}
//! }
//!
//! let cfg = ServerConfig::with_realm("example.org");
//! let shared = Shared {
//!     creds: Arc::new(StaticUsers::new(&["example.org"], &[("alice", "secret")])),
//!     nonces: Arc::new(NonceKey::from_bytes([7; 32])),
//!     quota: Arc::new(QuotaTracker::new(10, 0)),
//!     live: Arc::new(LiveRelayPorts::default()),
//!     reservations: Arc::new(Reservations::default()),
//!     source_limits: Arc::new(SourceLimiter::new(0)),
//!     cluster: Default::default(),
//!     tcp: Default::default(),
//! };
//! // Time is an input: the driver passes Instant::now(); tests pass a fake clock.
//! let mut now = Instant::now();
//! let mut server = Server::new(Arc::new(cfg), &shared, NoSockets, now, 1_700_000_000, 42);
//!
//! // A Binding request arrives on a UDP listener.
//! let tuple = FiveTuple {
//!     transport: Transport::Udp,
//!     client: "192.0.2.1:50000".parse().unwrap(),
//!     server: "198.51.100.1:3478".parse().unwrap(),
//! };
//! let mut request = BytesMut::new();
//! MessageBuilder::new(&mut request, Method::Binding, Class::Request, TransactionId([1; 12])).finish();
//!
//! let mut out = BytesMut::new();
//! match server.handle_client(now, tuple, &request, &mut out) {
//!     // Send `out` back to `tuple.client` from `tuple.server`.
//!     Output::Reply => assert_eq!(Message::parse(&out).unwrap().class(), Class::Success),
//!     // Send `request[start..end]` from relay socket `relay` to `peer`.
//!     Output::ToPeer { .. } => unreachable!("a Binding is answered, never relayed"),
//!     // RFC 5780 (off here): send `out` from the listener on `from` to `to`.
//!     Output::ReplyFrom { .. } => unreachable!("NAT discovery is off"),
//!     Output::None => unreachable!("a Binding request is always answered"),
//!     // RFC 6062 (TCP allocations, off by default): connect, or pipe bytes.
//!     Output::Connect { .. } | Output::ConnectionBound { .. } => unreachable!(),
//! }
//! // A datagram from a peer would go to `server.handle_peer(now, relay, from, buf,
//! // start, end)`, which frames it in place and says which client gets it.
//!
//! // The timer: sleep until poll_timeout(), then handle_timeout().
//! now += Duration::from_secs(60);
//! if server.poll_timeout().is_some_and(|t| t <= now) {
//!     server.handle_timeout(now);
//! }
//! // Events (allocations created and closed) feed logs and usage records.
//! for _event in server.drain_events() {}
//! ```

#![deny(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod logging;
pub mod net;
pub mod offload;
pub mod ops;
pub mod store;
pub mod stun;
pub mod time;
pub mod turn;
