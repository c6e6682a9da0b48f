//! ferroturn: a STUN/TURN server.
//!
//! # The sans-IO contract
//!
//! The protocol logic never touches a socket or a clock. [`stun`] is the wire format
//! only. The TURN core ([`turn`]) is a plain state machine handed bytes, the
//! addresses they came from and went to, and `now`; it hands back what to send and
//! when it next wants to be woken. Tokio lives only in the drivers under `net` and in the services beside them
//! under `ops`.

pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod logging;
pub mod net;
pub mod ops;
pub mod store;
pub mod stun;
pub mod time;
pub mod turn;
