//! Attribute types and their typed, zero-copy representations (RFC 8489 §14,
//! RFC 8656 §18, RFC 6156, RFC 6062, RFC 8445 §16.1 for the ICE attributes that the
//! RFC 5769 vectors carry).
//!
//! Each typed attribute implements [`Attr`]: a `const TYPE`, a `decode` from the value
//! bytes (a slice the parser already bounds-checked) and an `encode` that appends the
//! value bytes; the builder writes the TLV header and the padding around it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};

use super::message::TransactionId;
use super::MAGIC_COOKIE;

// Comprehension-required range (0x0000–0x7FFF).
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
pub const CONNECTION_ID: u16 = 0x002A;
/// RFC 5780 §7: comprehension-required, yet deliberately not in [`is_known`]:
/// only a server with NAT behaviour discovery on understands them (the core
/// decides per request), so without it they earn a 420 as RFC 5780 §6 asks.
pub const CHANGE_REQUEST: u16 = 0x0003;
pub const PADDING: u16 = 0x0026;
pub const RESPONSE_PORT: u16 = 0x0027;
// Comprehension-optional range (0x8000–0xFFFF).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ICMP: u16 = 0x8004;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;
pub const RESPONSE_ORIGIN: u16 = 0x802B;
pub const OTHER_ADDRESS: u16 = 0x802C;

/// Comprehension-required attribute types this implementation understands. Any
/// other type below 0x8000 in a request earns a 420 (RFC 8489 §7.3.1).
pub fn is_known(typ: u16) -> bool {
    matches!(
        typ,
        MAPPED_ADDRESS
            | USERNAME
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | MESSAGE_INTEGRITY_SHA256
            | PASSWORD_ALGORITHM
            | USERHASH
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
            | PRIORITY
            | USE_CANDIDATE
            | CONNECTION_ID
    )
}

/// Why an attribute value could not be decoded. The TLV itself is in bounds (the
/// parser checked that); this is about the value's own format.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttrError {
    #[error("attribute value has the wrong length")]
    BadLength,
    #[error("unknown address family")]
    BadFamily,
    #[error("attribute value is not valid UTF-8")]
    BadUtf8,
    #[error("attribute value is longer than the RFC allows")]
    TooLong,
    #[error("attribute value is out of range")]
    BadValue,
}

/// A typed attribute.
pub trait Attr<'a>: Sized {
    /// The attribute type on the wire.
    const TYPE: u16;
    /// Decodes the value bytes. `tid` is needed by the XOR-ed address attributes.
    fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError>;
    /// Appends the value bytes (no TLV header, no padding).
    fn encode(&self, tid: &TransactionId, out: &mut BytesMut);
}

/// Address family numbers used in address attributes and REQUESTED-ADDRESS-FAMILY.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn code(self) -> u8 {
        match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        }
    }

    pub const fn from_code(c: u8) -> Option<Family> {
        match c {
            0x01 => Some(Family::V4),
            0x02 => Some(Family::V6),
            _ => None,
        }
    }

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

fn decode_address(value: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, AttrError> {
    let (&[_, family, p0, p1], rest) =
        value.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let mut port = u16::from_be_bytes([p0, p1]);
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match Family::from_code(family).ok_or(AttrError::BadFamily)? {
        Family::V4 => {
            let mut a: [u8; 4] = rest.try_into().map_err(|_| AttrError::BadLength)?;
            if xor.is_some() {
                a.iter_mut().zip(cookie).for_each(|(b, k)| *b ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        Family::V6 => {
            let mut a: [u8; 16] = rest.try_into().map_err(|_| AttrError::BadLength)?;
            if let Some(tid) = xor {
                a.iter_mut()
                    .zip(cookie.iter().chain(tid.0.iter()))
                    .for_each(|(b, k)| *b ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// The value bytes of an address attribute in a fixed buffer, and how many of them
/// are used (8 for IPv4, 20 for IPv6). Lets the relay path write XOR-PEER-ADDRESS
/// into packet headroom without allocating.
pub fn address_value(addr: &SocketAddr, xor: Option<&TransactionId>) -> ([u8; 20], usize) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut out = [0u8; 20];
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[1] = Family::of(addr.ip()).code();
    out[2..4].copy_from_slice(&port.to_be_bytes());
    let len = match addr.ip() {
        IpAddr::V4(ip) => {
            let mut a = ip.octets();
            if xor.is_some() {
                a.iter_mut().zip(cookie).for_each(|(b, k)| *b ^= k);
            }
            out[4..8].copy_from_slice(&a);
            8
        }
        IpAddr::V6(ip) => {
            let mut a = ip.octets();
            if let Some(tid) = xor {
                a.iter_mut()
                    .zip(cookie.iter().chain(tid.0.iter()))
                    .for_each(|(b, k)| *b ^= k);
            }
            out[4..20].copy_from_slice(&a);
            20
        }
    };
    (out, len)
}

fn encode_address(addr: &SocketAddr, xor: Option<&TransactionId>, out: &mut BytesMut) {
    let (bytes, len) = address_value(addr, xor);
    out.put_slice(&bytes[..len]);
}

/// Defines an address attribute newtype over `SocketAddr`, plain or XOR-ed.
macro_rules! address_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, xor = $xor:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, AttrError> {
                decode_address(value, if $xor { Some(tid) } else { None }).map($name)
            }
            fn encode(&self, tid: &TransactionId, out: &mut BytesMut) {
                encode_address(&self.0, if $xor { Some(tid) } else { None }, out)
            }
        }
    };
}

address_attr!(
    /// MAPPED-ADDRESS (RFC 8489 §14.1), for pre-RFC 5389 clients.
    MappedAddress, MAPPED_ADDRESS, xor = false);
address_attr!(
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2): the client's reflexive transport address.
    XorMappedAddress, XOR_MAPPED_ADDRESS, xor = true);
address_attr!(
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3).
    XorPeerAddress, XOR_PEER_ADDRESS, xor = true);
address_attr!(
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    XorRelayedAddress, XOR_RELAYED_ADDRESS, xor = true);
address_attr!(
    /// ALTERNATE-SERVER (RFC 8489 §14.15): plain address format.
    AlternateServer, ALTERNATE_SERVER, xor = false);
address_attr!(
    /// RESPONSE-ORIGIN (RFC 5780 §7.3): where the response was sent from.
    ResponseOrigin, RESPONSE_ORIGIN, xor = false);
address_attr!(
    /// OTHER-ADDRESS (RFC 5780 §7.4): where a response with "change IP" and
    /// "change port" would come from.
    OtherAddress, OTHER_ADDRESS, xor = false);

fn decode_text(value: &[u8], max: usize) -> Result<&str, AttrError> {
    if value.len() > max {
        return Err(AttrError::TooLong);
    }
    std::str::from_utf8(value).map_err(|_| AttrError::BadUtf8)
}

/// RFC 8489 §14.9, §14.10, §14.14: REALM, NONCE and SOFTWARE are "fewer than
/// 128 characters (which can be as long as ... 763 bytes when decoding them)".
pub const MAX_TEXT_CHARS: usize = 127;
/// See [`MAX_TEXT_CHARS`].
pub const MAX_TEXT_BYTES: usize = 763;

/// Text of at most [`MAX_TEXT_BYTES`] bytes and [`MAX_TEXT_CHARS`] characters.
/// The character count only runs when the byte count could exceed it.
fn decode_short_text(value: &[u8]) -> Result<&str, AttrError> {
    let s = decode_text(value, MAX_TEXT_BYTES)?;
    if s.len() > MAX_TEXT_CHARS && s.chars().count() > MAX_TEXT_CHARS {
        return Err(AttrError::TooLong);
    }
    Ok(s)
}

/// Defines a UTF-8 text attribute borrowing the message bytes, with its RFC
/// length cap (`decode` is a function checking it, returning the text).
macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, decode = $decode:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: u16 = $typ;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                $decode(value).map($name)
            }
            fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
                out.put_slice(self.0.as_bytes())
            }
        }
    };
}

/// USERNAME is "fewer than 509 bytes" of UTF-8 (RFC 8489 §14.3).
pub const MAX_USERNAME_BYTES: usize = 508;

text_attr!(
    /// USERNAME (RFC 8489 §14.3): UTF-8, fewer than 509 bytes. A longer or
    /// invalid one is malformed, which the server answers with 400 before any
    /// credential lookup.
    Username, USERNAME, decode = |v| decode_text(v, MAX_USERNAME_BYTES));
text_attr!(
    /// REALM (RFC 8489 §14.9): UTF-8, fewer than 128 characters, ≤ 763 bytes.
    Realm, REALM, decode = decode_short_text);
text_attr!(
    /// SOFTWARE (RFC 8489 §14.14): UTF-8, fewer than 128 characters, ≤ 763 bytes.
    Software, SOFTWARE, decode = decode_short_text);
text_attr!(
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16).
    AlternateDomain, ALTERNATE_DOMAIN, decode = |v| decode_text(v, 255));

/// NONCE (RFC 8489 §14.10): fewer than 128 characters, ≤ 763 bytes. Kept as
/// bytes: a server compares it with what it issued, it never needs it as text.
/// Characters are UTF-8 scalar values where the value is UTF-8; a value that is
/// not (it cannot be one of ours) counts one character per byte, and is left to
/// the nonce check (438, which hands the client a fresh nonce).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Nonce<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for Nonce<'a> {
    const TYPE: u16 = NONCE;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len() > MAX_TEXT_BYTES {
            return Err(AttrError::TooLong);
        }
        if value.len() > MAX_TEXT_CHARS {
            let chars = match std::str::from_utf8(value) {
                Ok(s) => s.chars().count(),
                Err(_) => value.len(),
            };
            if chars > MAX_TEXT_CHARS {
                return Err(AttrError::TooLong);
            }
        }
        Ok(Nonce(value))
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(self.0)
    }
}

/// Defines an attribute that is a fixed-size byte array, borrowed.
macro_rules! bytes_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, $n:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name<'a>(pub &'a [u8; $n]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: u16 = $typ;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                value.try_into().map($name).map_err(|_| AttrError::BadLength)
            }
            fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
                out.put_slice(self.0)
            }
        }
    };
}

bytes_attr!(
    /// USERHASH (RFC 8489 §14.4): SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
    Userhash, USERHASH, 32);
bytes_attr!(
    /// RESERVATION-TOKEN (RFC 8656 §18.9).
    ReservationToken, RESERVATION_TOKEN, 8);

/// Defines an attribute whose value is one big-endian integer.
macro_rules! int_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr, $int:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(pub $int);

        impl<'a> Attr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                value
                    .try_into()
                    .map(|b| $name(<$int>::from_be_bytes(b)))
                    .map_err(|_| AttrError::BadLength)
            }
            fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
                out.put_slice(&self.0.to_be_bytes())
            }
        }
    };
}

int_attr!(
    /// LIFETIME (RFC 8656 §18.4), seconds.
    Lifetime, LIFETIME, u32);
int_attr!(
    /// FINGERPRINT (RFC 8489 §14.7) value as carried; see `integrity` for computing it.
    Fingerprint, FINGERPRINT, u32);
int_attr!(
    /// CONNECTION-ID (RFC 6062 §6.2.1).
    ConnectionId, CONNECTION_ID, u32);
int_attr!(
    /// PRIORITY (RFC 8445 §16.1).
    Priority, PRIORITY, u32);
int_attr!(
    /// ICE-CONTROLLED (RFC 8445 §16.1): the tie-breaker.
    IceControlled, ICE_CONTROLLED, u64);
int_attr!(
    /// ICE-CONTROLLING (RFC 8445 §16.1): the tie-breaker.
    IceControlling, ICE_CONTROLLING, u64);

/// Defines an attribute with an empty value (its presence is the information).
macro_rules! flag_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name;

        impl<'a> Attr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                if value.is_empty() { Ok($name) } else { Err(AttrError::BadLength) }
            }
            fn encode(&self, _tid: &TransactionId, _out: &mut BytesMut) {}
        }
    };
}

flag_attr!(
    /// DONT-FRAGMENT (RFC 8656 §18.8).
    DontFragment, DONT_FRAGMENT);
flag_attr!(
    /// USE-CANDIDATE (RFC 8445 §16.1).
    UseCandidate, USE_CANDIDATE);

/// MESSAGE-INTEGRITY (RFC 8489 §14.5) value as carried: 20 bytes of HMAC-SHA1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MessageIntegrity<'a>(pub &'a [u8; 20]);

impl<'a> Attr<'a> for MessageIntegrity<'a> {
    const TYPE: u16 = MESSAGE_INTEGRITY;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        value
            .try_into()
            .map(MessageIntegrity)
            .map_err(|_| AttrError::BadLength)
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(self.0)
    }
}

/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) value as carried: 16 to 32 bytes, a
/// multiple of 4 (a truncated HMAC-SHA256).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for MessageIntegritySha256<'a> {
    const TYPE: u16 = MESSAGE_INTEGRITY_SHA256;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if (16..=32).contains(&value.len()) && value.len().is_multiple_of(4) {
            Ok(MessageIntegritySha256(value))
        } else {
            Err(AttrError::BadLength)
        }
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(self.0)
    }
}

/// ERROR-CODE (RFC 8489 §14.8): class and number, plus a UTF-8 reason phrase.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorCode<'a> {
    pub code: u16,
    pub reason: &'a str,
}

impl<'a> ErrorCode<'a> {
    pub const fn new(code: u16, reason: &'a str) -> Self {
        Self { code, reason }
    }
}

fn decode_error_code(value: &[u8]) -> Result<(u16, &str), AttrError> {
    let (&[_, _, class, number], reason) =
        value.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let class = u16::from(class & 0x07);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::BadValue);
    }
    Ok((class * 100 + u16::from(number), decode_text(reason, 763)?))
}

fn encode_error_code(code: u16, reason: &str, out: &mut BytesMut) {
    out.put_u16(0);
    out.put_u8((code / 100) as u8);
    out.put_u8((code % 100) as u8);
    out.put_slice(reason.as_bytes());
}

impl<'a> Attr<'a> for ErrorCode<'a> {
    const TYPE: u16 = ERROR_CODE;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        decode_error_code(value).map(|(code, reason)| ErrorCode { code, reason })
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        encode_error_code(self.code, self.reason, out)
    }
}

/// ADDRESS-ERROR-CODE (RFC 8656 §18.13): like ERROR-CODE, for one address family of a
/// dual-stack Allocate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AddressErrorCode<'a> {
    pub family: Family,
    pub code: u16,
    pub reason: &'a str,
}

impl<'a> Attr<'a> for AddressErrorCode<'a> {
    const TYPE: u16 = ADDRESS_ERROR_CODE;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let family = Family::from_code(*value.first().ok_or(AttrError::BadLength)?)
            .ok_or(AttrError::BadFamily)?;
        let (code, reason) = decode_error_code(value)?;
        Ok(AddressErrorCode {
            family,
            code,
            reason,
        })
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        let start = out.len();
        encode_error_code(self.code, self.reason, out);
        out[start] = self.family.code();
    }
}

/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): a list of 16-bit types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownAttributes<'a>(&'a [u8]);

impl<'a> UnknownAttributes<'a> {
    pub fn types(&self) -> impl Iterator<Item = u16> + 'a {
        self.0
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}

impl<'a> Attr<'a> for UnknownAttributes<'a> {
    const TYPE: u16 = UNKNOWN_ATTRIBUTES;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len().is_multiple_of(2) {
            Ok(UnknownAttributes(value))
        } else {
            Err(AttrError::BadLength)
        }
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(self.0)
    }
}

/// The encodable form of UNKNOWN-ATTRIBUTES, built from a list of types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownAttributeList<'a>(pub &'a [u16]);

impl<'a> Attr<'a> for UnknownAttributeList<'a> {
    const TYPE: u16 = UNKNOWN_ATTRIBUTES;
    fn decode(_value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        // Decoding goes through `UnknownAttributes`, which borrows the wire bytes.
        Err(AttrError::BadValue)
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        self.0.iter().for_each(|t| out.put_u16(*t))
    }
}

/// Password algorithm numbers (RFC 8489 §18.5).
pub const ALGORITHM_MD5: u16 = 0x0001;
pub const ALGORITHM_SHA256: u16 = 0x0002;

/// PASSWORD-ALGORITHM (RFC 8489 §14.11): one algorithm and its parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PasswordAlgorithm<'a> {
    pub algorithm: u16,
    pub params: &'a [u8],
}

fn split_algorithm(value: &[u8]) -> Result<(u16, &[u8], &[u8]), AttrError> {
    let (&[a0, a1, l0, l1], rest) = value.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let padded = (len + 3) & !3;
    let params = rest.get(..len).ok_or(AttrError::BadLength)?;
    let next = rest.get(padded..).unwrap_or(&[]);
    Ok((u16::from_be_bytes([a0, a1]), params, next))
}

impl<'a> Attr<'a> for PasswordAlgorithm<'a> {
    const TYPE: u16 = PASSWORD_ALGORITHM;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let (algorithm, params, rest) = split_algorithm(value)?;
        if !rest.is_empty() {
            return Err(AttrError::BadLength);
        }
        Ok(PasswordAlgorithm { algorithm, params })
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_u16(self.algorithm);
        out.put_u16(self.params.len() as u16);
        out.put_slice(self.params);
        out.put_bytes(0, ((self.params.len() + 3) & !3) - self.params.len());
    }
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.12): the list a server offers, in its order of
/// preference. Stored as its wire bytes; both decode and encode are byte-exact, which
/// matters because the bid-down check compares the list the client echoes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PasswordAlgorithms<'a>(pub &'a [u8]);

impl<'a> PasswordAlgorithms<'a> {
    /// The algorithms listed, in order. Stops at the first malformed entry.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let (algorithm, params, next) = split_algorithm(rest).ok()?;
            rest = next;
            Some(PasswordAlgorithm { algorithm, params })
        })
    }
}

impl<'a> Attr<'a> for PasswordAlgorithms<'a> {
    const TYPE: u16 = PASSWORD_ALGORITHMS;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            rest = split_algorithm(rest)?.2;
        }
        Ok(PasswordAlgorithms(value))
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(self.0)
    }
}

/// REQUESTED-TRANSPORT (RFC 8656 §18.7): an IANA protocol number (17 = UDP, 6 = TCP).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RequestedTransport(pub u8);

/// IANA protocol numbers used in REQUESTED-TRANSPORT.
pub const PROTOCOL_UDP: u8 = 17;
pub const PROTOCOL_TCP: u8 = 6;

impl<'a> Attr<'a> for RequestedTransport {
    const TYPE: u16 = REQUESTED_TRANSPORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        match value {
            [proto, _, _, _] => Ok(RequestedTransport(*proto)),
            _ => Err(AttrError::BadLength),
        }
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(&[self.0, 0, 0, 0])
    }
}

/// CHANGE-REQUEST (RFC 5780 §7.2): 32 bits of which only "change IP" (0x4)
/// and "change port" (0x2) mean anything; the other bits are ignored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChangeRequest {
    pub change_ip: bool,
    pub change_port: bool,
}

impl<'a> Attr<'a> for ChangeRequest {
    const TYPE: u16 = CHANGE_REQUEST;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let v: [u8; 4] = value.try_into().map_err(|_| AttrError::BadLength)?;
        Ok(ChangeRequest {
            change_ip: v[3] & 0x4 != 0,
            change_port: v[3] & 0x2 != 0,
        })
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        let bits = u8::from(self.change_ip) << 2 | u8::from(self.change_port) << 1;
        out.put_slice(&[0, 0, 0, bits])
    }
}

/// RESPONSE-PORT (RFC 5780 §7.5): a port, then two bytes of padding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ResponsePort(pub u16);

impl<'a> Attr<'a> for ResponsePort {
    const TYPE: u16 = RESPONSE_PORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        match value {
            [a, b, _, _] => Ok(ResponsePort(u16::from_be_bytes([*a, *b]))),
            _ => Err(AttrError::BadLength),
        }
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(&self.0.to_be_bytes());
        out.put_slice(&[0, 0]);
    }
}

/// Defines a family attribute (one family byte then three reserved bytes).
macro_rules! family_attr {
    ($(#[$doc:meta])* $name:ident, $typ:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(pub Family);

        impl<'a> Attr<'a> for $name {
            const TYPE: u16 = $typ;
            fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
                match value {
                    [f, _, _, _] => Family::from_code(*f).map($name).ok_or(AttrError::BadFamily),
                    _ => Err(AttrError::BadLength),
                }
            }
            fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
                out.put_slice(&[self.0.code(), 0, 0, 0])
            }
        }
    };
}

family_attr!(
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
    RequestedAddressFamily, REQUESTED_ADDRESS_FAMILY);
family_attr!(
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.12); only IPv6 is meaningful in it.
    AdditionalAddressFamily, ADDITIONAL_ADDRESS_FAMILY);

/// EVEN-PORT (RFC 8656 §18.10): ask for an even relay port, and with R set, reserve
/// the next higher port too.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EvenPort {
    pub reserve: bool,
}

impl<'a> Attr<'a> for EvenPort {
    const TYPE: u16 = EVEN_PORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        match value {
            [b] => Ok(EvenPort {
                reserve: b & 0x80 != 0,
            }),
            _ => Err(AttrError::BadLength),
        }
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_u8(if self.reserve { 0x80 } else { 0 })
    }
}

/// DATA (RFC 8656 §18.4): the application payload of Send and Data indications.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Data<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for Data<'a> {
    const TYPE: u16 = DATA;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        Ok(Data(value))
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_slice(self.0)
    }
}

/// CHANNEL-NUMBER (RFC 8656 §18.1): the number, then two reserved bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChannelNumber(pub u16);

impl<'a> Attr<'a> for ChannelNumber {
    const TYPE: u16 = CHANNEL_NUMBER;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        match value {
            [a, b, _, _] => Ok(ChannelNumber(u16::from_be_bytes([*a, *b]))),
            _ => Err(AttrError::BadLength),
        }
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_u16(self.0);
        out.put_u16(0);
    }
}

/// ICMP (RFC 8656 §18.14): an ICMP type and code seen on the relay, and error data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Icmp {
    pub typ: u8,
    pub code: u8,
    pub data: u32,
}

impl<'a> Attr<'a> for Icmp {
    const TYPE: u16 = ICMP;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        match value {
            [_, _, t, c, d0, d1, d2, d3] => Ok(Icmp {
                typ: *t,
                code: *c,
                data: u32::from_be_bytes([*d0, *d1, *d2, *d3]),
            }),
            _ => Err(AttrError::BadLength),
        }
    }
    fn encode(&self, _tid: &TransactionId, out: &mut BytesMut) {
        out.put_u16(0);
        out.put_u8(self.typ);
        out.put_u8(self.code);
        out.put_u32(self.data);
    }
}
