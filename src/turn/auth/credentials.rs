//! Credential stores: the long-term keys of a (username, realm) pair (RFC 8489
//! §9.2.2), static users, TURN REST shared secrets, and chains of stores.

use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256, userhash};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

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
///
/// `sha256` is `None` for a user known only by its MD5 key, as coturn
/// stores users (`turnusers_lt.hmackey`) and as `ferroturn import coturn`
/// brings them over: the SHA-256 key cannot be computed without the
/// password. Such a user authenticates only with the MD5 password
/// algorithm (what every client that predates RFC 8489 uses, browsers
/// included); a request that negotiates SHA-256 gets 401 until the
/// password is set again.
#[derive(Clone)]
pub struct UserKeys {
    /// Key for MESSAGE-INTEGRITY (HMAC-SHA1) with the MD5 password algorithm.
    pub md5: [u8; 16],
    /// Key for the SHA-256 password algorithm; `None` for a key-only user.
    pub sha256: Option<[u8; 32]>,
}

impl UserKeys {
    /// Derive both keys from a plaintext password.
    pub fn derive(username: &str, realm: &str, password: &str) -> UserKeys {
        UserKeys {
            md5: long_term_key_md5(username, realm, password),
            sha256: Some(long_term_key_sha256(username, realm, password)),
        }
    }

    /// A user known only by its MD5 key, `MD5(username:realm:password)`
    /// (coturn's `hmackey`): no SHA-256 key.
    pub fn md5_only(md5: [u8; 16]) -> UserKeys {
        UserKeys { md5, sha256: None }
    }
}

impl fmt::Debug for UserKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserKeys { .. }")
    }
}

impl PartialEq for UserKeys {
    fn eq(&self, other: &Self) -> bool {
        let sha256 = match (&self.sha256, &other.sha256) {
            (Some(a), Some(b)) => a.ct_eq(b),
            (None, None) => subtle::Choice::from(1),
            _ => subtle::Choice::from(0),
        };
        (self.md5.ct_eq(&other.md5) & sha256).into()
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
        assert_eq!(k.sha256.unwrap().to_vec(), hex(NORTH_ALICE_SHA256));
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
    fn md5_only_keys_equal_only_md5_only_keys() {
        let full = UserKeys::derive("alice", REALM, "secret");
        let key_only = UserKeys::md5_only(full.md5);
        assert_eq!(key_only, UserKeys::md5_only(full.md5));
        assert_ne!(key_only, full);
        assert_ne!(full, key_only);
        assert_ne!(key_only, UserKeys::md5_only([0; 16]));
        assert_eq!(format!("{key_only:?}"), "UserKeys { .. }");
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
            format!("{:?}", crate::turn::auth::NonceKey::from_bytes([1; 32])),
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
}
