//! Stateless nonces (RFC 8489 §9.2): issued and verified under a key shared by
//! all shards, bound to the client's address and an issue time, with the
//! security-feature cookie of §9.2.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha2::Sha256;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------
// Stateless nonces
// ---------------------------------------------------------------------------

/// The RFC 8489 §9.2 "nonce cookie": a nonce starting with it advertises
/// security features (password algorithms, username anonymity) in the
/// next 4 base64 characters (24 bits).
pub const NONCE_COOKIE: &[u8; 9] = b"obMatJos2";

/// Security feature "Password algorithms" (RFC 8489 §18.1 bit 0): the
/// server negotiates the password algorithm with PASSWORD-ALGORITHMS, and
/// the bid-down checks of §9.2.4 apply.
///
/// Bit numbering: the printed §18.1 says bit 0 is the *leftmost* bit of
/// the 24, but verified erratum 6290 reverses that (bit 0 is the
/// *rightmost*), and the RFC's own example (Appendix B.1, a request with
/// USERHASH, nonce `obMatJos2AAAC…`, i.e. only bit 1 set) only makes sense
/// with the corrected numbering. libjuice and others follow the erratum; so
/// do we. Both bits set therefore encode as `obMatJos2AAAD`.
pub const FEATURE_PASSWORD_ALGORITHMS: u32 = 1 << 0;
/// Security feature "Username anonymity" (RFC 8489 §18.1 bit 1): the client
/// may send USERHASH instead of USERNAME. See
/// [`FEATURE_PASSWORD_ALGORITHMS`] for the bit numbering.
pub const FEATURE_USERNAME_ANONYMITY: u32 = 1 << 1;

/// The security features a nonce advertises: the 24 bits after the nonce
/// cookie, or 0 for a nonce without the cookie (or with a cookie whose 4
/// feature characters are not base64).
///
/// Only meaningful for a nonce that [`NonceKey::verify`] accepted: the MAC
/// covers the cookie, so the bits of a verified nonce are the ones the
/// server issued and a man in the middle cannot have cleared them (the
/// bid-down protection of RFC 8489 §9.2.1). A client reads the bits of the
/// nonce a server sent it with the same function.
pub fn nonce_features(nonce: &[u8]) -> u32 {
    let Some(chars) = nonce
        .strip_prefix(&NONCE_COOKIE[..])
        .and_then(|rest| rest.get(..4))
    else {
        return 0;
    };
    let mut bits = [0u8; 3];
    match STANDARD.decode_slice(chars, &mut bits) {
        Ok(3) => u32::from_be_bytes([0, bits[0], bits[1], bits[2]]),
        _ => 0,
    }
}

/// Capacity of [`Nonce`]; far below the 763-byte NONCE limit and enough
/// for cookie (13) + body (32).
pub const NONCE_MAX_LEN: usize = 64;

/// Length of the cookie plus its 4 feature characters.
const COOKIE_PREFIX_LEN: usize = NONCE_COOKIE.len() + 4;
/// Raw nonce body: 8-byte big-endian timestamp + 16-byte truncated MAC.
const BODY_RAW_LEN: usize = 24;
/// base64url (no padding) of the body; 24 bytes encode to exactly 32.
const BODY_LEN: usize = 32;
/// 128-bit truncated HMAC-SHA256: ample against forgery for a nonce.
const TAG_LEN: usize = 16;
/// Domain separation so the nonce key can never produce a MAC that is
/// meaningful in another context.
const NONCE_DOMAIN: &[u8] = b"ferroturn nonce v1";

/// A nonce as sent in the NONCE attribute: printable ASCII in an inline
/// buffer (no heap allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    buf: [u8; NONCE_MAX_LEN],
    len: u8,
}

impl Nonce {
    /// The nonce bytes to put in the NONCE attribute.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The nonce as text (always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// `true` if empty (never the case for an issued nonce).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({:?})", self.as_str())
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of [`NonceKey::verify`].
///
/// RFC 8489 §9.2.4 answers any nonce that is "no longer valid" with 438
/// (Stale Nonce) and a fresh nonce, so the core will usually treat
/// `Stale` and `Invalid` alike on the wire; the distinction is for logs
/// and metrics (`Invalid` also covers nonces from before a restart, since
/// the key is random per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NonceCheck {
    /// Issued by this key, for this client, and younger than the lifetime.
    Valid,
    /// Authentic but too old (or issued "in the future" after the wall
    /// clock stepped back).
    Stale,
    /// Not issued by this key for this client address (malformed,
    /// tampered, other key, or other client address).
    Invalid,
}

/// Secret key for stateless nonces.
///
/// A nonce is `[cookie] base64url(timestamp ‖ HMAC-SHA256(key, domain ‖
/// cookie ‖ timestamp ‖ client address)[..16])`. Verification recomputes
/// the MAC, so no per-client state is needed and a nonce replayed from a
/// different client address is rejected. Lifetime is checked against the
/// embedded timestamp at verify time, so it can be changed without
/// invalidating the format.
#[derive(Clone)]
pub struct NonceKey {
    /// HMAC state with the key absorbed (cloned per use).
    mac: HmacSha256,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey { .. }")
    }
}

impl NonceKey {
    /// A fresh random key from the operating system RNG.
    pub fn generate() -> Result<NonceKey, rand::Error> {
        let mut key = [0u8; 32];
        OsRng.try_fill_bytes(&mut key)?;
        Ok(NonceKey::from_bytes(key))
    }

    /// A key from fixed bytes (tests; sharing a key between processes).
    pub fn from_bytes(key: [u8; 32]) -> NonceKey {
        // HMAC zero-pads keys shorter than the block size (RFC 2104), so
        // passing the zero-padded 64-byte block is the same HMAC and uses
        // the infallible fixed-size constructor.
        let mut block = hmac::digest::Key::<HmacSha256>::default();
        block[..key.len()].copy_from_slice(&key);
        NonceKey {
            mac: <HmacSha256 as hmac::digest::KeyInit>::new(&block),
        }
    }

    fn tag(&self, prefix: &[u8], ts: u64, client: SocketAddr) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(NONCE_DOMAIN);
        // Length-prefix the variable-length cookie part so fields cannot
        // slide into each other.
        mac.update(&[prefix.len() as u8]);
        mac.update(prefix);
        mac.update(&ts.to_be_bytes());
        match client.ip() {
            IpAddr::V4(a) => {
                mac.update(&[4]);
                mac.update(&a.octets());
            }
            IpAddr::V6(a) => {
                mac.update(&[6]);
                mac.update(&a.octets());
            }
        }
        mac.update(&client.port().to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// Issue a nonce for `client` at `now_unix`.
    ///
    /// `features` is the RFC 8489 §9.2 security-feature set, e.g.
    /// [`FEATURE_PASSWORD_ALGORITHMS`] `|` [`FEATURE_USERNAME_ANONYMITY`].
    /// Only its low 24 bits are used. When they are non-zero the nonce
    /// starts with the nonce cookie `obMatJos2` followed by the 24 bits as
    /// 4 base64 characters, big-endian (`features` bit 23 is the first bit
    /// of the first character, feature bit 0 the last; see
    /// [`FEATURE_PASSWORD_ALGORITHMS`] on the numbering). The cookie is
    /// covered by the MAC so a man in the middle cannot strip or alter the
    /// advertised features. With 0 the nonce has no cookie, as a server
    /// without the security features would send.
    pub fn issue(&self, now_unix: u64, client: SocketAddr, features: u32) -> Nonce {
        let mut nonce = Nonce {
            buf: [0; NONCE_MAX_LEN],
            len: 0,
        };
        let mut len = 0;
        let features = features & 0x00ff_ffff;
        if features != 0 {
            nonce.buf[..NONCE_COOKIE.len()].copy_from_slice(NONCE_COOKIE);
            let bits = features.to_be_bytes();
            if let Ok(n) = STANDARD.encode_slice(&bits[1..], &mut nonce.buf[NONCE_COOKIE.len()..]) {
                len = NONCE_COOKIE.len() + n;
            }
        }
        let tag = self.tag(&nonce.buf[..len], now_unix, client);
        let mut raw = [0u8; BODY_RAW_LEN];
        raw[..8].copy_from_slice(&now_unix.to_be_bytes());
        raw[8..].copy_from_slice(&tag);
        if let Ok(n) = URL_SAFE_NO_PAD.encode_slice(raw, &mut nonce.buf[len..]) {
            len += n;
        }
        // len <= 13 + 32 < 64, so the cast cannot truncate.
        nonce.len = len as u8;
        nonce
    }

    /// Check a NONCE attribute value received from `client` at `now_unix`.
    /// A nonce is stale once it is `lifetime_secs` or more old. The MAC is
    /// checked before the age so a forged nonce is always `Invalid`.
    pub fn verify(
        &self,
        nonce: &[u8],
        now_unix: u64,
        client: SocketAddr,
        lifetime_secs: u64,
    ) -> NonceCheck {
        let (prefix, body) = if nonce.starts_with(NONCE_COOKIE) {
            if nonce.len() < COOKIE_PREFIX_LEN {
                return NonceCheck::Invalid;
            }
            nonce.split_at(COOKIE_PREFIX_LEN)
        } else {
            (&[][..], nonce)
        };
        if body.len() != BODY_LEN {
            return NonceCheck::Invalid;
        }
        let mut raw = [0u8; BODY_RAW_LEN];
        match URL_SAFE_NO_PAD.decode_slice(body, &mut raw) {
            Ok(BODY_RAW_LEN) => {}
            _ => return NonceCheck::Invalid,
        }
        let mut ts_bytes = [0u8; 8];
        ts_bytes.copy_from_slice(&raw[..8]);
        let ts = u64::from_be_bytes(ts_bytes);
        let expected = self.tag(prefix, ts, client);
        if !bool::from(expected.ct_eq(&raw[8..])) {
            return NonceCheck::Invalid;
        }
        match now_unix.checked_sub(ts) {
            Some(age) if age < lifetime_secs => NonceCheck::Valid,
            _ => NonceCheck::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- nonces ---------------------------------------------------------

    fn key() -> NonceKey {
        NonceKey::from_bytes(*b"0123456789abcdef0123456789abcdef")
    }

    fn client() -> SocketAddr {
        "192.0.2.10:40000".parse().unwrap()
    }

    const T0: u64 = 1_700_000_000;
    const LIFE: u64 = 600;

    #[test]
    fn nonce_format() {
        let n = key().issue(T0, client(), 0);
        assert_eq!(n.len(), BODY_LEN);
        assert!(n.as_bytes().iter().all(|b| b.is_ascii_graphic()));
        assert!(!n.as_bytes().starts_with(NONCE_COOKIE));
        assert_eq!(n.to_string(), n.as_str());
        // Deterministic for the same inputs, different for other inputs.
        assert_eq!(n, key().issue(T0, client(), 0));
        assert_ne!(n, key().issue(T0 + 1, client(), 0));
    }

    #[test]
    fn nonce_valid_and_stale_at_exactly_lifetime() {
        let k = key();
        let n = k.issue(T0, client(), 0);
        let v = |now| k.verify(n.as_bytes(), now, client(), LIFE);
        assert_eq!(v(T0), NonceCheck::Valid);
        assert_eq!(v(T0 + LIFE - 1), NonceCheck::Valid);
        assert_eq!(v(T0 + LIFE), NonceCheck::Stale);
        assert_eq!(v(u64::MAX), NonceCheck::Stale);
        // Clock stepped back: authentic but not acceptable.
        assert_eq!(v(T0 - 1), NonceCheck::Stale);
        // Lifetime 0: never valid.
        assert_eq!(k.verify(n.as_bytes(), T0, client(), 0), NonceCheck::Stale);
    }

    #[test]
    fn nonce_any_byte_flip_is_invalid() {
        let k = key();
        for features in [0, 0x80_0001] {
            let n = k.issue(T0, client(), features);
            for i in 0..n.len() {
                for bit in 0..8 {
                    let mut b = n.as_bytes().to_vec();
                    b[i] ^= 1 << bit;
                    assert_eq!(
                        k.verify(&b, T0, client(), LIFE),
                        NonceCheck::Invalid,
                        "byte {i} bit {bit} features {features:#x}"
                    );
                }
            }
            // Truncation / extension.
            let b = n.as_bytes();
            assert_eq!(
                k.verify(&b[..b.len() - 1], T0, client(), LIFE),
                NonceCheck::Invalid
            );
            let mut longer = b.to_vec();
            longer.push(b'A');
            assert_eq!(k.verify(&longer, T0, client(), LIFE), NonceCheck::Invalid);
        }
        assert_eq!(k.verify(b"", T0, client(), LIFE), NonceCheck::Invalid);
        assert_eq!(
            k.verify(NONCE_COOKIE, T0, client(), LIFE),
            NonceCheck::Invalid
        );
        assert_eq!(
            k.verify(&[0xff; 32], T0, client(), LIFE),
            NonceCheck::Invalid
        );
        assert_eq!(
            k.verify(&[b'A'; 1000], T0, client(), LIFE),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn nonce_other_client_or_key_is_invalid() {
        let k = key();
        let n = k.issue(T0, client(), 0);
        for other in [
            "192.0.2.10:40001",
            "192.0.2.11:40000",
            "[::ffff:192.0.2.10]:40000",
            "[2001:db8::1]:40000",
        ] {
            let other: SocketAddr = other.parse().unwrap();
            assert_eq!(
                k.verify(n.as_bytes(), T0, other, LIFE),
                NonceCheck::Invalid,
                "{other}"
            );
        }
        let other_key = NonceKey::from_bytes([9; 32]);
        assert_eq!(
            other_key.verify(n.as_bytes(), T0, client(), LIFE),
            NonceCheck::Invalid
        );
        // Even a stale-aged forged nonce is Invalid, not Stale.
        assert_eq!(
            other_key.verify(n.as_bytes(), T0 + LIFE * 10, client(), LIFE),
            NonceCheck::Invalid
        );
        // IPv6 clients round-trip.
        let v6: SocketAddr = "[2001:db8::7]:3478".parse().unwrap();
        let n6 = k.issue(T0, v6, 0);
        assert_eq!(k.verify(n6.as_bytes(), T0, v6, LIFE), NonceCheck::Valid);
    }

    #[test]
    fn nonce_cookie_with_features() {
        let k = key();
        // Most significant of the 24 feature bits set.
        let n = k.issue(T0, client(), 0x80_0000);
        assert_eq!(&n.as_bytes()[..9], NONCE_COOKIE);
        assert_eq!(&n.as_bytes()[9..13], b"gAAA"); // base64 of 80 00 00
        assert_eq!(n.len(), 13 + BODY_LEN);
        assert!(n.len() <= NONCE_MAX_LEN);
        assert!(n.as_bytes().iter().all(|b| b.is_ascii_graphic()));
        assert_eq!(
            k.verify(n.as_bytes(), T0, client(), LIFE),
            NonceCheck::Valid
        );
        // Stripping the cookie (bid-down) invalidates the MAC.
        assert_eq!(
            k.verify(&n.as_bytes()[13..], T0, client(), LIFE),
            NonceCheck::Invalid
        );
        // Changing the advertised features invalidates the MAC.
        let mut b = n.as_bytes().to_vec();
        b[9..13].copy_from_slice(b"AAAB");
        assert_eq!(k.verify(&b, T0, client(), LIFE), NonceCheck::Invalid);
        // Bits above 24 are ignored.
        assert_eq!(k.issue(T0, client(), 0xff00_0000), k.issue(T0, client(), 0));
    }

    #[test]
    fn nonce_cookie_encodes_the_two_security_features_as_the_rfc_does() {
        let both = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY;
        let n = key().issue(T0, client(), both);
        // 24 bits 0x000003: bits 0 and 1, counted from the right (erratum 6290).
        assert_eq!(&n.as_bytes()[..13], b"obMatJos2AAAD");
        assert_eq!(nonce_features(n.as_bytes()), both);
        assert_eq!(
            key().verify(n.as_bytes(), T0, client(), LIFE),
            NonceCheck::Valid
        );
        // Each bit alone.
        let pa = key().issue(T0, client(), FEATURE_PASSWORD_ALGORITHMS);
        assert_eq!(&pa.as_bytes()[..13], b"obMatJos2AAAB");
        assert_eq!(nonce_features(pa.as_bytes()), FEATURE_PASSWORD_ALGORITHMS);
        // RFC 8489 Appendix B.1: a USERHASH request whose nonce advertises
        // username anonymity only.
        assert_eq!(
            nonce_features(b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
            FEATURE_USERNAME_ANONYMITY
        );
        // No cookie, a short or non-base64 cookie: no features.
        let plain = key().issue(T0, client(), 0);
        assert_eq!(nonce_features(plain.as_bytes()), 0);
        assert_eq!(nonce_features(b"obMatJos2AA"), 0);
        assert_eq!(nonce_features(b"obMatJos2!!!!abc"), 0);
        assert_eq!(nonce_features(b""), 0);
        // The highest feature bit.
        assert_eq!(nonce_features(b"obMatJos2gAAA"), 0x80_0000);
    }

    #[test]
    fn nonce_generate_works() {
        let a = NonceKey::generate().unwrap();
        let b = NonceKey::generate().unwrap();
        let n = a.issue(T0, client(), 0);
        assert_eq!(
            a.verify(n.as_bytes(), T0, client(), LIFE),
            NonceCheck::Valid
        );
        assert_eq!(
            b.verify(n.as_bytes(), T0, client(), LIFE),
            NonceCheck::Invalid
        );
    }
}
