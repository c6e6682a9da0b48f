//! `Message<'a>`: a validated, borrowed view of one STUN message (RFC 8489 §5, §14).
//!
//! [`Message::parse`] walks the header and every attribute TLV exactly once. After it
//! succeeds, every attribute lies inside the buffer, so iteration and the typed getters
//! cannot fail on bounds and never copy: they hand out sub-slices of the input.
//!
//! Only attributes before MESSAGE-INTEGRITY are honoured; after it only
//! MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count, and after FINGERPRINT nothing
//! (RFC 8489 §14.5–14.7). The parser records where those three sit so that
//! verification can hash the covered prefix in place, with the length field patched,
//! without copying the message.

use super::attr::{self, Attr, AttrError};
use super::MAGIC_COOKIE;

/// Size of the fixed STUN header.
pub const HEADER_LEN: usize = 20;

/// How many unknown comprehension-required attribute types one message may report
/// for 420 UNKNOWN-ATTRIBUTES. More than this are still detected (the count keeps
/// rising) but only the first ones are listed, which keeps the view `Copy`-sized.
pub const MAX_UNKNOWN_LISTED: usize = 8;

/// The 96-bit transaction ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// A fresh random transaction ID (RFC 8489 §6: uniformly random).
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// The message class, carried in bits C1 C0 of the type field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// STUN and TURN methods this server knows. Unknown methods parse as [`Method::Other`]
/// so that a request for one can be answered 400 rather than dropped silently.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
    ConnectionAttempt,
    Other(u16),
}

impl Method {
    /// The 12-bit method number.
    pub const fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
            Method::Connect => 0x00A,
            Method::ConnectionBind => 0x00B,
            Method::ConnectionAttempt => 0x00C,
            Method::Other(c) => c & 0x0FFF,
        }
    }

    /// The method for a 12-bit method number.
    pub const fn from_code(code: u16) -> Self {
        match code {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            0x00A => Method::Connect,
            0x00B => Method::ConnectionBind,
            0x00C => Method::ConnectionAttempt,
            c => Method::Other(c),
        }
    }

    /// A short stable name, for logs and metric labels (bounded cardinality).
    pub const fn name(self) -> &'static str {
        match self {
            Method::Binding => "binding",
            Method::Allocate => "allocate",
            Method::Refresh => "refresh",
            Method::Send => "send",
            Method::Data => "data",
            Method::CreatePermission => "create_permission",
            Method::ChannelBind => "channel_bind",
            Method::Connect => "connect",
            Method::ConnectionBind => "connection_bind",
            Method::ConnectionAttempt => "connection_attempt",
            Method::Other(_) => "other",
        }
    }
}

/// Encodes method and class into the 14-bit message type (RFC 8489 §5, figure 3).
pub const fn message_type(method: Method, class: Class) -> u16 {
    let m = method.code();
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// Decodes a 14-bit message type into method and class.
pub const fn split_message_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 0b01) | ((t >> 7) & 0b10) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (Method::from_code(m), class)
}

/// Why a datagram is not a well-formed STUN message. Small and `Copy`: parse errors
/// are counted on the hot path, never allocated.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("shorter than the 20-byte STUN header")]
    TooShort,
    #[error("the two most significant bits are not zero")]
    NotStun,
    #[error("wrong magic cookie")]
    BadCookie,
    #[error("message length is not a multiple of 4")]
    UnalignedLength,
    #[error("message length field disagrees with the bytes received")]
    LengthMismatch,
    #[error("an attribute runs past the end of the message")]
    AttributeOverrun,
    #[error("MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT has the wrong size")]
    BadIntegrityAttribute,
}

/// One attribute TLV as it sits on the wire: its type and its value bytes (without
/// padding).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawAttr<'a> {
    pub typ: u16,
    pub value: &'a [u8],
}

/// A validated, borrowed STUN message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    method: Method,
    class: Class,
    /// End (exclusive) of the region whose ordinary attributes are honoured: the start
    /// of the first MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT.
    honoured_end: u16,
    /// Offsets of the attribute headers of the integrity and fingerprint attributes.
    integrity: Option<u16>,
    integrity_sha256: Option<u16>,
    fingerprint: Option<u16>,
    unknown: [u16; MAX_UNKNOWN_LISTED],
    unknown_len: u8,
}

impl<'a> Message<'a> {
    /// Validates `buf` as exactly one STUN message and returns a view of it.
    ///
    /// Checks: the header fits, the top two bits are zero, the magic cookie, the
    /// length is a multiple of 4 and equal to what follows the header, every TLV (with
    /// its padding) lies inside the message, and the sizes of MESSAGE-INTEGRITY (20),
    /// MESSAGE-INTEGRITY-SHA256 (16–32, a multiple of 4) and FINGERPRINT (4).
    /// Padding bytes may hold anything (RFC 5769 §2.1 pads with spaces on purpose).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let header: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(ParseError::TooShort)?;
        if header[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadCookie);
        }
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length % 4 != 0 {
            return Err(ParseError::UnalignedLength);
        }
        if HEADER_LEN + length != buf.len() {
            return Err(ParseError::LengthMismatch);
        }
        let (method, class) = split_message_type(u16::from_be_bytes([header[0], header[1]]));

        let mut msg = Message {
            buf,
            method,
            class,
            honoured_end: buf.len() as u16,
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
            unknown: [0; MAX_UNKNOWN_LISTED],
            unknown_len: 0,
        };
        // `buf.len()` ≤ 20 + 65535, which fits in u16 only up to 65535: a message that
        // long cannot have its offsets stored, and no STUN transport carries one.
        if buf.len() > usize::from(u16::MAX) {
            return Err(ParseError::LengthMismatch);
        }

        let mut off = HEADER_LEN;
        let mut honoured = true;
        while off < buf.len() {
            let (typ, len) = match buf.get(off..off + 4) {
                Some(&[a, b, c, d]) => (
                    u16::from_be_bytes([a, b]),
                    usize::from(u16::from_be_bytes([c, d])),
                ),
                _ => return Err(ParseError::AttributeOverrun),
            };
            let padded = (len + 3) & !3;
            if off + 4 + padded > buf.len() {
                return Err(ParseError::AttributeOverrun);
            }
            let at = off as u16;
            match typ {
                attr::MESSAGE_INTEGRITY => {
                    if len != 20 {
                        return Err(ParseError::BadIntegrityAttribute);
                    }
                    if msg.integrity.is_none()
                        && msg.integrity_sha256.is_none()
                        && msg.fingerprint.is_none()
                    {
                        msg.integrity = Some(at);
                    }
                    if honoured {
                        msg.honoured_end = at;
                        honoured = false;
                    }
                }
                attr::MESSAGE_INTEGRITY_SHA256 => {
                    if !(16..=32).contains(&len) || len % 4 != 0 {
                        return Err(ParseError::BadIntegrityAttribute);
                    }
                    if msg.integrity_sha256.is_none() && msg.fingerprint.is_none() {
                        msg.integrity_sha256 = Some(at);
                    }
                    if honoured {
                        msg.honoured_end = at;
                        honoured = false;
                    }
                }
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(ParseError::BadIntegrityAttribute);
                    }
                    if msg.fingerprint.is_none() {
                        msg.fingerprint = Some(at);
                    }
                    if honoured {
                        msg.honoured_end = at;
                        honoured = false;
                    }
                }
                _ if honoured && typ < 0x8000 && !attr::is_known(typ) => {
                    if usize::from(msg.unknown_len) < MAX_UNKNOWN_LISTED {
                        msg.unknown[usize::from(msg.unknown_len)] = typ;
                    }
                    msg.unknown_len = msg.unknown_len.saturating_add(1);
                }
                _ => {}
            }
            off += 4 + padded;
        }
        Ok(msg)
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn class(&self) -> Class {
        self.class
    }

    /// The raw 14-bit message type.
    pub fn message_type(&self) -> u16 {
        u16::from_be_bytes([self.buf[0], self.buf[1]])
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.buf[8..HEADER_LEN]);
        TransactionId(t)
    }

    /// The honoured attributes, in wire order, excluding MESSAGE-INTEGRITY,
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (see the typed accessors for those).
    pub fn attributes(&self) -> AttrIter<'a> {
        AttrIter {
            buf: &self.buf[..usize::from(self.honoured_end)],
            off: HEADER_LEN,
        }
    }

    /// The first honoured attribute of type `typ`, raw. RFC 8489 §14: when an
    /// attribute appears more than once, only the first is processed.
    pub fn get_raw(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes().find(|a| a.typ == typ).map(|a| a.value)
    }

    /// The first honoured attribute of type `A`, decoded. `None` when absent,
    /// `Some(Err(_))` when present but malformed.
    pub fn get<A: Attr<'a>>(&self) -> Option<Result<A, AttrError>> {
        self.get_raw(A::TYPE)
            .map(|v| A::decode(v, &self.transaction_id()))
    }

    /// Whether an honoured attribute of this type is present.
    pub fn has(&self, typ: u16) -> bool {
        self.get_raw(typ).is_some()
    }

    /// Unknown comprehension-required attribute types (< 0x8000) among the honoured
    /// attributes, for 420 UNKNOWN-ATTRIBUTES. Empty when there are none.
    pub fn unknown_required(&self) -> &[u16] {
        let n = usize::from(self.unknown_len).min(MAX_UNKNOWN_LISTED);
        &self.unknown[..n]
    }

    /// Offset of the MESSAGE-INTEGRITY attribute header, if the message has one.
    pub(crate) fn integrity_offset(&self) -> Option<usize> {
        self.integrity.map(usize::from)
    }

    pub(crate) fn integrity_sha256_offset(&self) -> Option<usize> {
        self.integrity_sha256.map(usize::from)
    }

    pub(crate) fn fingerprint_offset(&self) -> Option<usize> {
        self.fingerprint.map(usize::from)
    }

    /// Whether the message carries MESSAGE-INTEGRITY.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether the message carries MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Whether the message carries FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// The value bytes of the attribute whose header starts at `off` (an offset the
    /// parser recorded, so it is known to be in bounds).
    pub(crate) fn value_at(&self, off: usize) -> &'a [u8] {
        let len = usize::from(u16::from_be_bytes([self.buf[off + 2], self.buf[off + 3]]));
        &self.buf[off + 4..off + 4 + len]
    }
}

/// Iterator over honoured attributes. The bounds were checked by [`Message::parse`],
/// so it cannot fail; it still stops rather than panics if handed a shorter slice.
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = RawAttr<'a>;

    fn next(&mut self) -> Option<RawAttr<'a>> {
        let head = self.buf.get(self.off..self.off + 4)?;
        let typ = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = self.buf.get(self.off + 4..self.off + 4 + len)?;
        self.off += 4 + ((len + 3) & !3);
        Some(RawAttr { typ, value })
    }
}

/// Whether `buf` could be a STUN message: at least a header, top bits zero and the
/// magic cookie. Used to demultiplex STUN from ChannelData and from garbage cheaply.
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] & 0xC0 == 0 && buf[4..8] == MAGIC_COOKIE.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_for_every_method_and_class() {
        for code in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let m = Method::from_code(code);
                let t = message_type(m, class);
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_message_type(t), (m, class));
            }
        }
        assert_eq!(message_type(Method::Binding, Class::Request), 0x0001);
        assert_eq!(message_type(Method::Binding, Class::Success), 0x0101);
        assert_eq!(message_type(Method::Binding, Class::Error), 0x0111);
        assert_eq!(message_type(Method::Allocate, Class::Request), 0x0003);
        assert_eq!(message_type(Method::Send, Class::Indication), 0x0016);
        assert_eq!(message_type(Method::Data, Class::Indication), 0x0017);
    }

    fn header(typ: u16, len: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&[7; 12]);
        v
    }

    #[test]
    fn header_checks() {
        assert_eq!(Message::parse(&[0; 19]).unwrap_err(), ParseError::TooShort);
        let mut h = header(0x0001, 0);
        assert!(Message::parse(&h).is_ok());
        h[0] = 0x40;
        assert_eq!(Message::parse(&h).unwrap_err(), ParseError::NotStun);
        let mut h = header(0x0001, 0);
        h[4] = 0;
        assert_eq!(Message::parse(&h).unwrap_err(), ParseError::BadCookie);
        let h = header(0x0001, 2);
        assert_eq!(Message::parse(&h).unwrap_err(), ParseError::UnalignedLength);
        let h = header(0x0001, 4);
        assert_eq!(Message::parse(&h).unwrap_err(), ParseError::LengthMismatch);
    }

    #[test]
    fn attribute_overrun_is_rejected() {
        let mut h = header(0x0001, 8);
        h.extend_from_slice(&[0x80, 0x22, 0x00, 0x05, b'a', b'b', b'c', b'd']);
        assert_eq!(
            Message::parse(&h).unwrap_err(),
            ParseError::AttributeOverrun
        );
    }

    #[test]
    fn unknown_required_and_optional_attributes() {
        let mut h = header(0x0001, 16);
        h.extend_from_slice(&[0x7F, 0xF0, 0x00, 0x00]); // unknown, comprehension-required
        h.extend_from_slice(&[0xFF, 0xF0, 0x00, 0x00]); // unknown, comprehension-optional
        h.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0, 0, 0, 1]); // PRIORITY (known)
        let m = Message::parse(&h).unwrap();
        assert_eq!(m.unknown_required(), &[0x7FF0]);
        assert_eq!(m.attributes().count(), 3);
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut h = header(0x0001, 24 + 8 + 8);
        h.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        h.extend_from_slice(&[0u8; 20]);
        h.extend_from_slice(&[0x7F, 0xF0, 0x00, 0x04, 1, 2, 3, 4]); // ignored, even unknown
        h.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]); // FINGERPRINT honoured
        let m = Message::parse(&h).unwrap();
        assert_eq!(m.attributes().count(), 0);
        assert!(m.unknown_required().is_empty());
        assert!(m.has_integrity());
        assert!(m.has_fingerprint());
    }
}
