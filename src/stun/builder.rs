//! `MessageBuilder`: writes a STUN message into a caller's `BytesMut`.
//!
//! The caller owns and reuses the buffer, so building a response allocates nothing
//! once the buffer has grown to its working size. TLVs are padded with zero bytes.
//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are written last, in
//! that order, each after patching the header length to cover it (RFC 8489 §14.5–14.7).

use bytes::{BufMut, BytesMut};

use super::attr::{self, Attr};
use super::integrity::{fingerprint_prefix, hmac_sha1_prefix, hmac_sha256_prefix};
use super::message::{message_type, Class, Method, TransactionId, HEADER_LEN};
use super::MAGIC_COOKIE;

/// Builds one message at the end of `buf`.
pub struct MessageBuilder<'b> {
    buf: &'b mut BytesMut,
    start: usize,
    tid: TransactionId,
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message of `method`/`class` with transaction ID `tid`, appended to
    /// whatever `buf` already holds.
    pub fn new(buf: &'b mut BytesMut, method: Method, class: Class, tid: TransactionId) -> Self {
        let start = buf.len();
        buf.reserve(HEADER_LEN + 128);
        buf.put_u16(message_type(method, class));
        buf.put_u16(0);
        buf.put_u32(MAGIC_COOKIE);
        buf.put_slice(&tid.0);
        Self { buf, start, tid }
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    fn set_length(&mut self) {
        let len = (self.buf.len() - self.start - HEADER_LEN) as u16;
        self.buf[self.start + 2..self.start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a typed attribute.
    pub fn add<'a, A: Attr<'a>>(&mut self, a: &A) -> &mut Self {
        let head = self.buf.len();
        self.buf.put_u16(A::TYPE);
        self.buf.put_u16(0);
        a.encode(&self.tid, self.buf);
        self.finish_tlv(head)
    }

    /// Appends an attribute from its type and raw value bytes.
    pub fn add_raw(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        let head = self.buf.len();
        self.buf.put_u16(typ);
        self.buf.put_u16(0);
        self.buf.put_slice(value);
        self.finish_tlv(head)
    }

    /// Appends an attribute of `typ` whose value is `n` zero bytes (PADDING).
    pub fn add_zeros(&mut self, typ: u16, n: usize) -> &mut Self {
        let head = self.buf.len();
        self.buf.put_u16(typ);
        self.buf.put_u16(0);
        self.buf.put_bytes(0, n);
        self.finish_tlv(head)
    }

    /// Bytes of the message written so far, header included.
    pub fn written(&self) -> usize {
        self.buf.len() - self.start
    }

    fn finish_tlv(&mut self, head: usize) -> &mut Self {
        let len = self.buf.len() - head - 4;
        self.buf[head + 2..head + 4].copy_from_slice(&(len as u16).to_be_bytes());
        self.buf.put_bytes(0, ((len + 3) & !3) - len);
        self.set_length();
        self
    }

    /// Appends MESSAGE-INTEGRITY: HMAC-SHA1 under `key` (the long-term key or the
    /// short-term password).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> &mut Self {
        let off = self.buf.len() - self.start;
        let mac = hmac_sha1_prefix(key, &self.buf[self.start..], off);
        self.add_raw(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes) under `key`.
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let off = self.buf.len() - self.start;
        let mac = hmac_sha256_prefix(key, &self.buf[self.start..], off, 32);
        self.add_raw(attr::MESSAGE_INTEGRITY_SHA256, &mac)
    }

    /// Appends FINGERPRINT. Must be the last attribute.
    pub fn add_fingerprint(&mut self) -> &mut Self {
        let off = self.buf.len() - self.start;
        let crc = fingerprint_prefix(&self.buf[self.start..], off);
        self.add_raw(attr::FINGERPRINT, &crc.to_be_bytes())
    }

    /// Finishes the message; returns its length in bytes.
    pub fn finish(self) -> usize {
        self.buf.len() - self.start
    }
}
