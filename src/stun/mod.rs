//! The STUN wire format (RFC 8489), with the TURN additions (RFC 8656, RFC 6156).
//!
//! Wire format only: no state, no clock, no I/O. Parsing borrows the input and never
//! allocates; building writes into a caller-owned `BytesMut`.
#![forbid(unsafe_code)]

pub mod attr;
pub mod builder;
pub mod channel_data;
pub mod data_indication;
pub mod framing;
pub mod integrity;
pub mod message;

pub use builder::MessageBuilder;
pub use channel_data::ChannelData;
pub use message::{Class, Message, Method, ParseError, RawAttr, TransactionId};

/// The fixed magic cookie that marks RFC 5389/8489 STUN (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
