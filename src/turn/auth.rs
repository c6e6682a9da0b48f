//! Credentials and nonces for the STUN long-term credential mechanism
//! (RFC 8489 §9.2) and the TURN REST ("ephemeral credentials") scheme.
//!
//! Everything here is pure: no I/O, no clock reads. The current wall-clock
//! time is passed in as unix seconds so the sans-IO core and its tests stay
//! deterministic.
//!
//! * [`CredentialStore`] maps (username, realm) to long-term keys
//!   ([`UserKeys`]). Implementations: [`StaticUsers`] (config file),
//!   [`RestSecrets`] (TURN REST shared secrets), [`ChainStore`] (several
//!   stores in order). Database-backed stores plug into the same trait.
//! * [`NonceKey`] issues and verifies stateless nonces, so the server keeps
//!   no per-client nonce table (which an attacker could otherwise fill).

use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore as _;
use sha1::Sha1;
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------
// Keys and the store trait
// ---------------------------------------------------------------------------

/// Long-term keys for one (username, realm) pair (RFC 8489 §9.2.2):
/// `md5 = MD5(username ":" realm ":" OpaqueString(password))` for
/// MESSAGE-INTEGRITY, `sha256` = SHA-256 of the same string for
/// MESSAGE-INTEGRITY-SHA256.
///
/// Only keys are kept, never passwords, so a memory disclosure does not
/// reveal reusable passwords. `Debug` is redacted and equality is
/// constant-time.
#[derive(Clone)]
pub struct UserKeys {
    /// Key for MESSAGE-INTEGRITY (HMAC-SHA1) with the MD5 password algorithm.
    pub md5: [u8; 16],
    /// Key for MESSAGE-INTEGRITY-SHA256 / the SHA-256 password algorithm.
    pub sha256: [u8; 32],
}

impl UserKeys {
    /// Derive both keys from a plaintext password.
    pub fn derive(username: &str, realm: &str, password: &str) -> UserKeys {
        UserKeys {
            md5: long_term_key_md5(username, realm, password),
            sha256: long_term_key_sha256(username, realm, password),
        }
    }
}

impl fmt::Debug for UserKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserKeys { .. }")
    }
}

impl PartialEq for UserKeys {
    fn eq(&self, other: &Self) -> bool {
        (self.md5.ct_eq(&other.md5) & self.sha256.ct_eq(&other.sha256)).into()
    }
}

impl Eq for UserKeys {}

/// Result of a credential lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The user exists: keys, and the credential's expiry in unix seconds
    /// if it has one (the core may cap allocation lifetime by it).
    Found(UserKeys, Option<u64>),
    /// This store knows nothing about the username; a [`ChainStore`] moves
    /// on to the next store.
    Unknown,
    /// The credential exists but its expiry is at or before `now_unix`.
    Expired,
    /// The credential was administratively revoked.
    Revoked,
}

/// Source of long-term credentials.
///
/// Kept small and object-safe so that `Box<dyn CredentialStore>` works and
/// database-backed stores can implement it. Implementations must be pure
/// with respect to time: use `now_unix`, never read the clock.
pub trait CredentialStore: Send + Sync {
    /// Look up the keys for `username` in `realm` at wall-clock time
    /// `now_unix` (unix seconds).
    fn lookup(&self, username: &str, realm: &str, now_unix: u64) -> Lookup;

    /// Candidate `index` for stores that can have several valid keys for
    /// one username at once — notably [`RestSecrets`] during secret
    /// rotation, where the store cannot know which secret minted the
    /// credential until MESSAGE-INTEGRITY is checked.
    ///
    /// The caller verifies the message against candidate 0, 1, 2, … and
    /// stops at the first match or at the first non-[`Lookup::Found`]
    /// result. Index 0 is always equal to [`CredentialStore::lookup`]. The
    /// default (single candidate) is right for most stores.
    fn lookup_candidate(&self, username: &str, realm: &str, now_unix: u64, index: usize) -> Lookup {
        if index == 0 {
            self.lookup(username, realm, now_unix)
        } else {
            Lookup::Unknown
        }
    }

    /// Whether new allocations may be created now. A store whose backing
    /// database is unreachable answers `false`: its cached view may be stale,
    /// so new logins are refused, while requests on existing allocations keep
    /// authenticating from the cache and relaying never stops.
    fn accepts_new_allocations(&self) -> bool {
        true
    }

    /// The username whose USERHASH (RFC 8489 §14.4,
    /// `SHA-256(OpaqueString(username) ":" OpaqueString(realm))`) is
    /// `userhash` in `realm`, for requests that hide the username
    /// ("username anonymity", RFC 8489 §9.2). The core then looks the
    /// returned name up as if it had arrived in USERNAME.
    ///
    /// The default knows no hashes: a hash cannot be inverted, so only a
    /// store that can enumerate its users (and precompute their hashes)
    /// can answer. [`RestSecrets`] therefore cannot: its usernames are
    /// minted elsewhere and unbounded, so REST clients must send USERNAME.
    fn lookup_userhash(
        &self,
        _userhash: &[u8; 32],
        _realm: &str,
        _now_unix: u64,
    ) -> Option<String> {
        None
    }
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<T: CredentialStore + ?Sized> CredentialStore for $ty {
            fn lookup(&self, username: &str, realm: &str, now_unix: u64) -> Lookup {
                (**self).lookup(username, realm, now_unix)
            }
            fn lookup_candidate(
                &self,
                username: &str,
                realm: &str,
                now_unix: u64,
                index: usize,
            ) -> Lookup {
                (**self).lookup_candidate(username, realm, now_unix, index)
            }
            fn accepts_new_allocations(&self) -> bool {
                (**self).accepts_new_allocations()
            }
            fn lookup_userhash(
                &self,
                userhash: &[u8; 32],
                realm: &str,
                now_unix: u64,
            ) -> Option<String> {
                (**self).lookup_userhash(userhash, realm, now_unix)
            }
        }
    )*};
}

forward_store!(&T, Box<T>, Arc<T>);

// ---------------------------------------------------------------------------
// Static users
// ---------------------------------------------------------------------------

/// Users from the configuration file. Keys are derived once per configured
/// realm at construction; plaintext passwords are not retained.
#[derive(Debug, Clone, Default)]
pub struct StaticUsers {
    /// realm → username → keys. Nested maps so lookups by `&str` need no
    /// allocation.
    by_realm: HashMap<Box<str>, HashMap<Box<str>, UserKeys>>,
    /// realm → USERHASH → username, precomputed so that a request carrying
    /// USERHASH costs one map lookup, not a hash per configured user.
    by_userhash: HashMap<Box<str>, HashMap<[u8; 32], Box<str>>>,
}

impl StaticUsers {
    /// Precompute keys for every `(username, password)` in every realm.
    /// A later duplicate username replaces an earlier one (the config
    /// layer is expected to reject duplicates with a proper message).
    pub fn new<R, U, P>(realms: &[R], users: &[(U, P)]) -> StaticUsers
    where
        R: AsRef<str>,
        U: AsRef<str>,
        P: AsRef<str>,
    {
        let mut by_realm = HashMap::with_capacity(realms.len());
        let mut by_userhash = HashMap::with_capacity(realms.len());
        for realm in realms {
            let realm = realm.as_ref();
            let mut map = HashMap::with_capacity(users.len());
            let mut hashes = HashMap::with_capacity(users.len());
            for (user, password) in users {
                let user = user.as_ref();
                map.insert(
                    Box::from(user),
                    UserKeys::derive(user, realm, password.as_ref()),
                );
                hashes.insert(userhash(user, realm), Box::from(user));
            }
            by_realm.insert(Box::from(realm), map);
            by_userhash.insert(Box::from(realm), hashes);
        }
        StaticUsers {
            by_realm,
            by_userhash,
        }
    }

    /// Number of distinct usernames (per realm).
    pub fn len(&self) -> usize {
        self.by_realm.values().map(HashMap::len).max().unwrap_or(0)
    }

    /// `true` if no users are configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CredentialStore for StaticUsers {
    fn lookup(&self, username: &str, realm: &str, _now_unix: u64) -> Lookup {
        match self.by_realm.get(realm).and_then(|m| m.get(username)) {
            Some(keys) => Lookup::Found(keys.clone(), None),
            None => Lookup::Unknown,
        }
    }

    fn lookup_userhash(&self, userhash: &[u8; 32], realm: &str, _now_unix: u64) -> Option<String> {
        self.by_userhash
            .get(realm)
            .and_then(|m| m.get(userhash))
            .map(|u| String::from(&**u))
    }
}

// ---------------------------------------------------------------------------
// TURN REST shared secrets
// ---------------------------------------------------------------------------

/// TURN REST API ephemeral credentials (draft-uberti-behave-turn-rest,
/// as implemented by coturn's `use-auth-secret`).
///
/// A web service sharing a secret with the TURN server mints
/// `username = "EXPIRY:USER"` (or just `"EXPIRY"`), EXPIRY in unix seconds,
/// and `password = base64(HMAC-SHA1(secret, username))`. The server
/// recomputes the password and derives the long-term keys from it.
///
/// Several secrets may be configured for rotation; they are offered to the
/// caller as successive candidates (see
/// [`CredentialStore::lookup_candidate`]) in configuration order. With no
/// secrets configured every lookup is [`Lookup::Unknown`].
#[derive(Clone)]
pub struct RestSecrets {
    /// One HMAC state per secret with the key already absorbed, cloned per
    /// lookup (saves re-hashing the key; secrets are not kept otherwise).
    macs: Vec<HmacSha1>,
}

impl fmt::Debug for RestSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestSecrets")
            .field("secrets", &self.macs.len())
            .finish()
    }
}

/// Length of base64 (padded) of a 20-byte HMAC-SHA1.
const REST_PASSWORD_LEN: usize = 28;

impl RestSecrets {
    /// Secrets in the order they are tried (put the current one first).
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> RestSecrets {
        RestSecrets {
            // HMAC accepts keys of any length, so `new_from_slice` never
            // fails and nothing is dropped here.
            macs: secrets
                .iter()
                .filter_map(|s| HmacSha1::new_from_slice(s.as_ref()).ok())
                .collect(),
        }
    }

    /// The password the REST scheme assigns to `username` under the
    /// secret at `index`, written into a stack buffer (no allocation).
    fn password_with(&self, index: usize, username: &str) -> Option<[u8; REST_PASSWORD_LEN]> {
        let mut mac = self.macs.get(index)?.clone();
        mac.update(username.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; REST_PASSWORD_LEN];
        let n = STANDARD.encode_slice(tag, &mut out).ok()?;
        (n == REST_PASSWORD_LEN).then_some(out)
    }
}

/// The TURN REST password for `username` under `secret`:
/// `base64(HMAC-SHA1(secret, username))`. Useful for minting test
/// credentials and for a CLI helper.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    RestSecrets::new(&[secret])
        .password_with(0, username)
        .map(|b| b.iter().map(|&c| char::from(c)).collect())
        .unwrap_or_default()
}

/// Expiry (unix seconds) of a TURN REST username: the part before the
/// first `':'`, or the whole username if it has none. `None` unless that
/// part is a non-empty run of ASCII digits fitting in `u64` (a `+` sign,
/// spaces etc. are rejected so that one credential has one spelling).
fn parse_rest_expiry(username: &str) -> Option<u64> {
    let ts = username.split_once(':').map_or(username, |(ts, _)| ts);
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok()
}

impl CredentialStore for RestSecrets {
    fn lookup(&self, username: &str, realm: &str, now_unix: u64) -> Lookup {
        self.lookup_candidate(username, realm, now_unix, 0)
    }

    fn lookup_candidate(&self, username: &str, realm: &str, now_unix: u64, index: usize) -> Lookup {
        if index >= self.macs.len() {
            return Lookup::Unknown;
        }
        let Some(expiry) = parse_rest_expiry(username) else {
            return Lookup::Unknown;
        };
        // "Valid until EXPIRY": a credential whose expiry equals now is
        // already expired.
        if expiry <= now_unix {
            return Lookup::Expired;
        }
        let Some(pw) = self.password_with(index, username) else {
            return Lookup::Unknown;
        };
        let Ok(pw) = std::str::from_utf8(&pw) else {
            return Lookup::Unknown;
        };
        Lookup::Found(UserKeys::derive(username, realm, pw), Some(expiry))
    }
}

// ---------------------------------------------------------------------------
// Chain
// ---------------------------------------------------------------------------

/// Several stores consulted in order; the first result that is not
/// [`Lookup::Unknown`] wins — including `Expired`/`Revoked`, so an earlier
/// store can shadow a same-named user in a later one (put the
/// authoritative store first).
#[derive(Default)]
pub struct ChainStore {
    stores: Vec<Box<dyn CredentialStore>>,
}

impl fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainStore")
            .field("stores", &self.stores.len())
            .finish()
    }
}

impl ChainStore {
    /// A chain over `stores`, tried front to back.
    pub fn new(stores: Vec<Box<dyn CredentialStore>>) -> ChainStore {
        ChainStore { stores }
    }

    /// Append a store at the end of the chain.
    pub fn push(&mut self, store: Box<dyn CredentialStore>) {
        self.stores.push(store);
    }
}

impl CredentialStore for ChainStore {
    fn lookup(&self, username: &str, realm: &str, now_unix: u64) -> Lookup {
        self.stores
            .iter()
            .map(|s| s.lookup(username, realm, now_unix))
            .find(|r| !matches!(r, Lookup::Unknown))
            .unwrap_or(Lookup::Unknown)
    }

    /// Further candidates come only from the store that won for index 0,
    /// so a later store cannot supply keys for a username an earlier store
    /// owns.
    fn lookup_candidate(&self, username: &str, realm: &str, now_unix: u64, index: usize) -> Lookup {
        if index == 0 {
            return self.lookup(username, realm, now_unix);
        }
        for s in &self.stores {
            if !matches!(s.lookup(username, realm, now_unix), Lookup::Unknown) {
                return s.lookup_candidate(username, realm, now_unix, index);
            }
        }
        Lookup::Unknown
    }

    /// The first store that knows the hash names the user. The keys then
    /// come from [`lookup`](CredentialStore::lookup) over the whole chain,
    /// so an earlier store still shadows a same-named user in a later one,
    /// exactly as with USERNAME.
    fn lookup_userhash(&self, userhash: &[u8; 32], realm: &str, now_unix: u64) -> Option<String> {
        self.stores
            .iter()
            .find_map(|s| s.lookup_userhash(userhash, realm, now_unix))
    }
}

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

    const REALM: &str = "example.org";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn found_keys(l: Lookup) -> (UserKeys, Option<u64>) {
        match l {
            Lookup::Found(k, e) => (k, e),
            other => panic!("expected Found, got {other:?}"),
        }
    }

    // ---- REST -----------------------------------------------------------

    /// Known answer, derived independently with:
    /// python3 -c "import hmac,hashlib,base64;u=b'1700000000:alice';
    ///   p=base64.b64encode(hmac.new(b'north',u,hashlib.sha1).digest());
    ///   print(p.decode()); s=u+b':example.org:'+p;
    ///   print(hashlib.md5(s).hexdigest()); print(hashlib.sha256(s).hexdigest())"
    const NORTH_ALICE_PW: &str = "Cd/49soE35ICqcJF/bCTn8Z4OyE=";
    const NORTH_ALICE_MD5: &str = "d9a6a3d964467baeffd2fce41704a913";
    const NORTH_ALICE_SHA256: &str =
        "83d3954925462c35e3434563f6add993af0c083deb1cc493ec1873fb82b0ad1d";
    /// Same one-liner with secret b'south'.
    const SOUTH_ALICE_PW: &str = "FJeNoC0yJtNekwCa5JT/sW/1Ls4=";

    #[test]
    fn rest_password_known_answer() {
        assert_eq!(rest_password(b"north", "1700000000:alice"), NORTH_ALICE_PW);
        assert_eq!(rest_password(b"south", "1700000000:alice"), SOUTH_ALICE_PW);
    }

    #[test]
    fn rest_keys_known_answer() {
        let s = RestSecrets::new(&["north"]);
        let (k, exp) = found_keys(s.lookup("1700000000:alice", REALM, 1_600_000_000));
        assert_eq!(exp, Some(1_700_000_000));
        assert_eq!(k.md5.to_vec(), hex(NORTH_ALICE_MD5));
        assert_eq!(k.sha256.to_vec(), hex(NORTH_ALICE_SHA256));
        assert_eq!(
            k,
            UserKeys::derive("1700000000:alice", REALM, NORTH_ALICE_PW)
        );
    }

    #[test]
    fn rest_expiry_edges() {
        let s = RestSecrets::new(&["north"]);
        let u = "1700000000:alice";
        assert!(matches!(
            s.lookup(u, REALM, 1_699_999_999),
            Lookup::Found(..)
        ));
        assert_eq!(s.lookup(u, REALM, 1_700_000_000), Lookup::Expired);
        assert_eq!(s.lookup(u, REALM, 1_700_000_001), Lookup::Expired);
        assert_eq!(s.lookup(u, REALM, u64::MAX), Lookup::Expired);
        assert_eq!(s.lookup("0", REALM, 0), Lookup::Expired);
    }

    #[test]
    fn rest_wrong_secret_gives_different_keys() {
        let good = RestSecrets::new(&["north"]);
        let bad = RestSecrets::new(&["not-north"]);
        let u = "1700000000:alice";
        let (kg, _) = found_keys(good.lookup(u, REALM, 0));
        let (kb, _) = found_keys(bad.lookup(u, REALM, 0));
        assert_ne!(kg, kb);
        assert_ne!(kg.md5, kb.md5);
        assert_ne!(kg.sha256, kb.sha256);
    }

    #[test]
    fn rest_rotation_two_secrets() {
        let s = RestSecrets::new(&["south", "north"]);
        let u = "1700000000:alice";
        let (k0, _) = found_keys(s.lookup_candidate(u, REALM, 0, 0));
        let (k1, _) = found_keys(s.lookup_candidate(u, REALM, 0, 1));
        assert_eq!(k0, UserKeys::derive(u, REALM, SOUTH_ALICE_PW));
        assert_eq!(k1, UserKeys::derive(u, REALM, NORTH_ALICE_PW));
        assert_eq!(s.lookup_candidate(u, REALM, 0, 2), Lookup::Unknown);
        assert_eq!(s.lookup(u, REALM, 0), s.lookup_candidate(u, REALM, 0, 0));
        // Expiry applies to every candidate.
        assert_eq!(
            s.lookup_candidate(u, REALM, 1_700_000_000, 1),
            Lookup::Expired
        );
    }

    #[test]
    fn rest_username_forms() {
        let s = RestSecrets::new(&["north"]);
        // No ':' — the whole username is the expiry.
        let (k, e) = found_keys(s.lookup("1700000000", REALM, 0));
        assert_eq!(e, Some(1_700_000_000));
        let pw = rest_password(b"north", "1700000000");
        assert_eq!(k, UserKeys::derive("1700000000", REALM, &pw));
        // User part may itself contain ':'.
        assert!(matches!(
            s.lookup("1700000000:a:b", REALM, 0),
            Lookup::Found(..)
        ));
        // Non-numeric or otherwise malformed expiry → not ours.
        for u in [
            "alice",
            "alice:1700000000",
            "",
            ":alice",
            "+1700000000:alice",
            " 1700000000:alice",
            "17e8:alice",
            "-1:alice",
            "99999999999999999999999:alice", // overflows u64
            "１７:alice",                    // non-ASCII digits
        ] {
            assert_eq!(s.lookup(u, REALM, 0), Lookup::Unknown, "{u:?}");
        }
    }

    #[test]
    fn rest_without_secrets_is_unknown() {
        let s = RestSecrets::new::<&str>(&[]);
        assert_eq!(s.lookup("1700000000:alice", REALM, 0), Lookup::Unknown);
    }

    #[test]
    fn rest_long_secret_is_kept() {
        let long = [7u8; 200];
        let s = RestSecrets::new(&[&long[..]]);
        assert!(matches!(
            s.lookup("1700000000:x", REALM, 0),
            Lookup::Found(..)
        ));
    }

    // ---- static users ---------------------------------------------------

    #[test]
    fn static_users_found_and_unknown() {
        let s = StaticUsers::new(
            &[REALM, "other.example"],
            &[("alice", "wonderland"), ("bob", "builder")],
        );
        assert_eq!(s.len(), 2);
        let (k, e) = found_keys(s.lookup("alice", REALM, 0));
        assert_eq!(e, None);
        assert_eq!(k, UserKeys::derive("alice", REALM, "wonderland"));
        let (k2, _) = found_keys(s.lookup("alice", "other.example", 0));
        assert_eq!(k2, UserKeys::derive("alice", "other.example", "wonderland"));
        assert_ne!(k, k2);
        assert_eq!(s.lookup("carol", REALM, 0), Lookup::Unknown);
        assert_eq!(s.lookup("alice", "unconfigured.realm", 0), Lookup::Unknown);
        assert_eq!(s.lookup("Alice", REALM, 0), Lookup::Unknown);
        assert_eq!(s.lookup_candidate("alice", REALM, 0, 1), Lookup::Unknown);
        // Owned strings work too.
        let owned = StaticUsers::new(
            &[String::from(REALM)],
            &[(String::from("a"), String::from("b"))],
        );
        assert!(matches!(owned.lookup("a", REALM, 0), Lookup::Found(..)));
    }

    #[test]
    fn debug_output_does_not_leak_keys() {
        let s = StaticUsers::new(&[REALM], &[("alice", "wonderland")]);
        let dbg = format!("{s:?}");
        let k = UserKeys::derive("alice", REALM, "wonderland");
        let md5_hex: String = k.md5.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains("wonderland"));
        assert!(!dbg.contains(&md5_hex));
        assert!(!dbg.contains(&format!("{:?}", k.md5)));
        assert_eq!(
            format!("{:?}", NonceKey::from_bytes([1; 32])),
            "NonceKey { .. }"
        );
    }

    // ---- chain ----------------------------------------------------------

    struct Fixed(Lookup);
    impl CredentialStore for Fixed {
        fn lookup(&self, _: &str, _: &str, _: u64) -> Lookup {
            self.0.clone()
        }
    }

    #[test]
    fn chain_first_non_unknown_wins() {
        let static_users = StaticUsers::new(&[REALM], &[("alice", "wonderland")]);
        let chain = ChainStore::new(vec![
            Box::new(Fixed(Lookup::Unknown)),
            Box::new(static_users.clone()),
            Box::new(Fixed(Lookup::Revoked)),
        ]);
        assert_eq!(
            chain.lookup("alice", REALM, 0),
            Lookup::Found(UserKeys::derive("alice", REALM, "wonderland"), None)
        );
        assert_eq!(chain.lookup("bob", REALM, 0), Lookup::Revoked);

        // Expired in an earlier store shadows a later Found.
        let chain = ChainStore::new(vec![
            Box::new(RestSecrets::new(&["north"])),
            Box::new(StaticUsers::new(&[REALM], &[("5", "pw")])),
        ]);
        assert_eq!(chain.lookup("5", REALM, 10), Lookup::Expired);

        let empty = ChainStore::default();
        assert_eq!(empty.lookup("alice", REALM, 0), Lookup::Unknown);

        // Order matters: swap.
        let mut chain = ChainStore::new(vec![Box::new(Fixed(Lookup::Expired))]);
        chain.push(Box::new(static_users));
        assert_eq!(chain.lookup("alice", REALM, 0), Lookup::Expired);
    }

    #[test]
    fn chain_candidates_come_from_the_winning_store() {
        let chain = ChainStore::new(vec![
            Box::new(StaticUsers::new(&[REALM], &[("alice", "pw")])),
            Box::new(RestSecrets::new(&["south", "north"])),
            Box::new(Fixed(Lookup::Revoked)),
        ]);
        let u = "1700000000:alice";
        let (k1, _) = found_keys(chain.lookup_candidate(u, REALM, 0, 1));
        assert_eq!(k1, UserKeys::derive(u, REALM, NORTH_ALICE_PW));
        // Candidate 2: REST has no third secret; the later store is not
        // consulted.
        assert_eq!(chain.lookup_candidate(u, REALM, 0, 2), Lookup::Unknown);
        // Static user has a single candidate.
        assert_eq!(
            chain.lookup_candidate("alice", REALM, 0, 1),
            Lookup::Unknown
        );
        // Trait objects and smart pointers forward.
        let arc: Arc<dyn CredentialStore> = Arc::new(chain);
        assert!(matches!(
            arc.lookup_candidate(u, REALM, 0, 1),
            Lookup::Found(..)
        ));
    }

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
    fn userhash_lookups() {
        use crate::stun::integrity::userhash;
        let s = StaticUsers::new(
            &[REALM, "other.example"],
            &[("alice", "wonderland"), ("bob", "builder")],
        );
        let h = userhash("alice", REALM);
        assert_eq!(s.lookup_userhash(&h, REALM, 0).as_deref(), Some("alice"));
        // The hash covers the realm.
        assert_eq!(s.lookup_userhash(&h, "other.example", 0), None);
        assert_eq!(
            s.lookup_userhash(&userhash("alice", "other.example"), "other.example", 0)
                .as_deref(),
            Some("alice")
        );
        assert_eq!(s.lookup_userhash(&userhash("carol", REALM), REALM, 0), None);
        assert_eq!(s.lookup_userhash(&[0; 32], REALM, 0), None);
        // REST secrets cannot invert a hash.
        let rest = RestSecrets::new(&["north"]);
        assert_eq!(
            rest.lookup_userhash(&userhash("1700000000:alice", REALM), REALM, 0),
            None
        );
        // A chain asks each store; smart pointers and trait objects forward.
        let chain = ChainStore::new(vec![
            Box::new(rest),
            Box::new(Fixed(Lookup::Revoked)),
            Box::new(s),
        ]);
        assert_eq!(
            chain
                .lookup_userhash(&userhash("bob", REALM), REALM, 0)
                .as_deref(),
            Some("bob")
        );
        let arc: Arc<dyn CredentialStore> = Arc::new(chain);
        assert_eq!(arc.lookup_userhash(&h, REALM, 0).as_deref(), Some("alice"));
        let boxed: Box<dyn CredentialStore> = Box::new(arc.clone());
        assert_eq!(
            boxed.lookup_userhash(&h, REALM, 0).as_deref(),
            Some("alice")
        );
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
