//! Message integrity and fingerprints (RFC 8489 §9.2.2, §14.5–14.7), long-term keys
//! and USERHASH.
//!
//! Verification hashes the message in place: the header with its length field
//! patched to end at the attribute being checked, then the attributes before it. No
//! copy of the message is made. MAC comparison is constant time.

use hmac::{Hmac, Mac};
use md5::{digest, Digest, Md5};
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::message::{Message, HEADER_LEN};

/// XOR-ed into the CRC-32 of a message to form FINGERPRINT (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Why integrity or fingerprint verification failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("the message carries no such attribute")]
    Missing,
    #[error("the MAC does not match")]
    Mismatch,
}

/// Applies OpaqueString (RFC 8265 §4.2), the preparation RFC 8489 §9.2.2 requires for
/// passwords. A string that OpaqueString rejects (e.g. one with control characters)
/// is used as-is: refusing it here would make a configured user unusable for a
/// reason the operator cannot see, and the bytes are still the bytes the client hashes
/// if it skips preparation too.
fn opaque(s: &str) -> std::borrow::Cow<'_, str> {
    OpaqueString::enforce(s).unwrap_or(std::borrow::Cow::Borrowed(s))
}

/// DIGEST(username ":" realm ":" OpaqueString(password)): the long-term key for the
/// password algorithm whose hash is `D` (RFC 8489 §9.2.2, §18.5.1).
fn long_term_key<D: Digest>(username: &str, realm: &str, password: &str) -> digest::Output<D> {
    let mut h = D::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(opaque(password).as_bytes());
    h.finalize()
}

/// The classic long-term key, with MD5 (password algorithm 0x0001).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    long_term_key::<Md5>(username, realm, password).into()
}

/// The long-term key for password algorithm SHA-256 (0x0002).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    long_term_key::<Sha256>(username, realm, password).into()
}

/// USERHASH value: SHA-256(OpaqueString(username) ":" OpaqueString(realm))
/// (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(opaque(username).as_bytes());
    h.update(b":");
    h.update(opaque(realm).as_bytes());
    h.finalize().into()
}

/// The bytes covered by an integrity attribute at `attr_off`, in three parts: the
/// message type, the patched length (ending just after the attribute, whose value is
/// `value_len` bytes) and everything from the cookie to the attribute header.
fn covered(buf: &[u8], attr_off: usize, value_len: usize) -> ([u8; 2], [u8; 2], &[u8]) {
    let patched = (attr_off + 4 + value_len - HEADER_LEN) as u16;
    ([buf[0], buf[1]], patched.to_be_bytes(), &buf[4..attr_off])
}

/// HMAC-SHA1 over the message prefix before `attr_off`, with the length patched as if
/// the message ended after a 20-byte MESSAGE-INTEGRITY there.
pub(crate) fn hmac_sha1_prefix(key: &[u8], buf: &[u8], attr_off: usize) -> [u8; 20] {
    let (t, l, rest) = covered(buf, attr_off, 20);
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&t);
    mac.update(&l);
    mac.update(rest);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over the message prefix before `attr_off`, the length patched for a
/// MESSAGE-INTEGRITY-SHA256 of `value_len` bytes.
pub(crate) fn hmac_sha256_prefix(
    key: &[u8],
    buf: &[u8],
    attr_off: usize,
    value_len: usize,
) -> [u8; 32] {
    let (t, l, rest) = covered(buf, attr_off, value_len);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&t);
    mac.update(&l);
    mac.update(rest);
    mac.finalize().into_bytes().into()
}

/// CRC-32 of the message prefix before `attr_off`, length patched for a FINGERPRINT
/// there, XOR 0x5354554e.
pub(crate) fn fingerprint_prefix(buf: &[u8], attr_off: usize) -> u32 {
    let (t, l, rest) = covered(buf, attr_off, 4);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&t);
    crc.update(&l);
    crc.update(rest);
    crc.finalize() ^ FINGERPRINT_XOR
}

impl Message<'_> {
    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1) with `key`: the long-term key (16 bytes
    /// of MD5) or the short-term password bytes.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let off = self.integrity_offset().ok_or(IntegrityError::Missing)?;
        let expected = hmac_sha1_prefix(key, self.as_bytes(), off);
        ct_verify(&expected, self.value_at(off))
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256, accepting the truncations RFC 8489 §14.6
    /// allows (16 to 32 bytes).
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let off = self
            .integrity_sha256_offset()
            .ok_or(IntegrityError::Missing)?;
        let got = self.value_at(off);
        let expected = hmac_sha256_prefix(key, self.as_bytes(), off, got.len());
        ct_verify(&expected[..got.len()], got)
    }

    /// Verifies FINGERPRINT.
    pub fn verify_fingerprint(&self) -> Result<(), IntegrityError> {
        let off = self.fingerprint_offset().ok_or(IntegrityError::Missing)?;
        let expected = fingerprint_prefix(self.as_bytes(), off);
        ct_verify(&expected.to_be_bytes(), self.value_at(off))
    }
}

fn ct_verify(expected: &[u8], got: &[u8]) -> Result<(), IntegrityError> {
    if expected.len() == got.len() && bool::from(expected.ct_eq(got)) {
        Ok(())
    } else {
        Err(IntegrityError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_string_passes_ascii_through_and_maps_wide_spaces() {
        assert_eq!(opaque("TheMatrIX"), "TheMatrIX");
        // U+3000 IDEOGRAPHIC SPACE maps to U+0020 under OpaqueString.
        assert_eq!(opaque("a\u{3000}b"), "a b");
        assert_eq!(
            long_term_key_md5("u", "r", "a\u{3000}b"),
            long_term_key_md5("u", "r", "a b")
        );
    }

    #[test]
    fn sha256_key_differs_from_md5_key() {
        let md5 = long_term_key_md5("user", "realm", "pass");
        let sha = long_term_key_sha256("user", "realm", "pass");
        assert_ne!(&sha[..16], &md5[..]);
    }
}
