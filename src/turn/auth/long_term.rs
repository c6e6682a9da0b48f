//! The long-term credential mechanism on the server side (RFC 8489 §9.2): the
//! 401/438 challenge with REALM, NONCE and PASSWORD-ALGORITHMS, the nonce check,
//! password algorithm negotiation with bid-down protection (§9.2.4), USERHASH,
//! MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256, and the key responses are
//! signed with (§9.2.5).

use std::borrow::Cow;
use std::time::Instant;

use bytes::BytesMut;

use super::{
    nonce_features, Lookup, NonceCheck, FEATURE_PASSWORD_ALGORITHMS, FEATURE_USERNAME_ANONYMITY,
};
use crate::stun::attr::*;
use crate::stun::{Class, Message};
use crate::turn::output::Output;
use crate::turn::responses::{reason_phrase, Reply};
use crate::turn::server::Server;
use crate::turn::stats::AuthFailure;
use crate::turn::{FiveTuple, RelayBinder};

/// How many credentials one username may match (REST secrets in rotation).
const MAX_CREDENTIAL_CANDIDATES: usize = 8;

/// The security features every nonce advertises (RFC 8489 §9.2): password
/// algorithm negotiation (with bid-down protection) and USERHASH.
const NONCE_FEATURES: u32 = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY;

/// The PASSWORD-ALGORITHMS value of every 401 and 438, in the server's order of
/// preference: SHA-256, then MD5, both without parameters (RFC 8489 §14.12,
/// §18.5). A client that negotiates must echo exactly these bytes (§9.2.4).
const OFFERED_ALGORITHMS: [u8; 8] = [
    0x00, 0x02, 0x00, 0x00, // SHA-256, no parameters
    0x00, 0x01, 0x00, 0x00, // MD5, no parameters
];

/// The long-term key a request was verified with. Which of the user's two keys it
/// is follows from the password algorithm (RFC 8489 §9.2.2), not from the integrity
/// attribute: either key may key either MAC.
#[derive(Clone, Copy)]
pub(in crate::turn) enum LongTermKey {
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

impl LongTermKey {
    pub(in crate::turn) fn as_bytes(&self) -> &[u8] {
        match self {
            LongTermKey::Md5(k) => k,
            LongTermKey::Sha256(k) => k,
        }
    }
}

/// How responses to an authenticated request are protected (RFC 8489 §9.2.5 via
/// §9.1.4): with the key the request was verified with, in the same kind of
/// integrity attribute the request was verified by. `Copy` and on the stack, so
/// signing a response allocates nothing.
#[derive(Clone, Copy)]
pub(in crate::turn) struct ReplyKey {
    pub(in crate::turn) key: LongTermKey,
    /// MESSAGE-INTEGRITY-SHA256 rather than MESSAGE-INTEGRITY.
    pub(in crate::turn) sha256_mac: bool,
}

/// The password algorithm of a request (RFC 8489 §18.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PasswordAlgo {
    Md5,
    Sha256,
}

/// Who a request claims to be: a USERNAME, or a USERHASH still to be resolved.
enum Claimed<'m> {
    Name(&'m str),
    Hash(&'m [u8; 32]),
}

/// A request that passed the long-term credential check.
pub(in crate::turn) struct Authed<'m> {
    /// The USERNAME as sent, or the name a USERHASH resolved to (owned then), so
    /// that 441 checks and quotas see the same user either way.
    pub(in crate::turn) username: Cow<'m, str>,
    pub(in crate::turn) key: ReplyKey,
    pub(in crate::turn) expiry: Option<u64>,
}

/// The password algorithm a request uses, or `None` when the request must be
/// refused with 400 (RFC 8489 §9.2.4, the bid-down checks). `features` are those of
/// the request's nonce, which the caller has already verified as ours.
///
/// - Neither PASSWORD-ALGORITHM nor PASSWORD-ALGORITHMS: MD5, as for every client
///   that predates RFC 8489 (their requests are processed exactly as before).
/// - Otherwise both must be present and well formed, PASSWORD-ALGORITHMS must be
///   byte for byte the list the server sent (a man in the middle who removed
///   SHA-256 from the 401 is caught here, since the nonce, whose MAC covers the
///   feature bits, says a list was sent), and PASSWORD-ALGORITHM must be one of its
///   entries, i.e. SHA-256 or MD5 without parameters. Anything else, an unknown
///   algorithm included, is 400.
/// - Under a nonce without the password-algorithms bit no list was ever offered,
///   so either attribute is a protocol error: 400. (Every nonce this server issues
///   has the bit; this only guards the rule.)
fn password_algorithm(msg: &Message<'_>, features: u32) -> Option<PasswordAlgo> {
    let (one, list) = match (
        msg.get::<PasswordAlgorithm>(),
        msg.get::<PasswordAlgorithms>(),
    ) {
        (None, None) => return Some(PasswordAlgo::Md5),
        (Some(Ok(one)), Some(Ok(list))) => (one, list),
        _ => return None,
    };
    if features & FEATURE_PASSWORD_ALGORITHMS == 0 || list.0 != OFFERED_ALGORITHMS {
        return None;
    }
    if !list.iter().any(|offered| offered == one) || !one.params.is_empty() {
        return None;
    }
    match one.algorithm {
        ALGORITHM_MD5 => Some(PasswordAlgo::Md5),
        ALGORITHM_SHA256 => Some(PasswordAlgo::Sha256),
        _ => None,
    }
}

/// Whether USERNAME, USERHASH, REALM or NONCE is present but breaks its
/// attribute's format (length, UTF-8): the codec's `decode` holds the rules.
fn malformed_identity(msg: &Message<'_>) -> bool {
    matches!(msg.get::<Username>(), Some(Err(_)))
        || matches!(msg.get::<Userhash>(), Some(Err(_)))
        || matches!(msg.get::<Realm>(), Some(Err(_)))
        || matches!(msg.get::<Nonce>(), Some(Err(_)))
}

impl<B: RelayBinder> Server<B> {
    /// 401 or 438 with REALM, a fresh NONCE advertising the security features, and
    /// PASSWORD-ALGORITHMS (RFC 8489 §9.2.4 asks for all three in both).
    pub(in crate::turn) fn challenge(
        &self,
        now: Instant,
        tuple: FiveTuple,
        out: &mut BytesMut,
        msg: &Message<'_>,
        code: u16,
    ) -> Output {
        let nonce = self
            .nonces
            .issue(self.unix(now), tuple.client, NONCE_FEATURES);
        let mut r = Reply::new(out, msg, Class::Error, None, self.cfg.software.as_deref());
        r.b.add(&ErrorCode::new(code, reason_phrase(code)));
        r.b.add(&Realm(&self.cfg.realm));
        r.b.add(&Nonce(nonce.as_bytes()));
        // Comprehension-optional: clients that predate RFC 8489 ignore it.
        r.b.add(&PasswordAlgorithms(&OFFERED_ALGORITHMS));
        r.finish()
    }

    /// The long-term credential check (RFC 8489 §9.2.4), with the security features
    /// of §9.2: password algorithm negotiation, MESSAGE-INTEGRITY-SHA256 and USERHASH.
    /// On failure the error response is already in `out`.
    ///
    /// Order: a malformed USERNAME, USERHASH, REALM or NONCE → 400; no integrity
    /// attribute → 401; a missing or malformed USERNAME/USERHASH,
    /// REALM or NONCE → 400; a nonce that is not ours, or too old → 438; the bid-down
    /// checks → 400; then the credential lookup and MAC → 401. The nonce is checked
    /// before the bid-down rules (the RFC lists them first) because those rules
    /// depend on its feature bits, which can only be trusted once its MAC verified.
    pub(in crate::turn) fn authenticate<'m>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'m>,
        out: &mut BytesMut,
    ) -> Result<Authed<'m>, Output> {
        // RFC 8489 §14.3, §14.9, §14.10: a USERNAME of 509 bytes or more or not
        // UTF-8, a REALM or NONCE of 128 characters or more than 763 bytes, is a
        // malformed request: 400, signed or not, before the nonce check and any
        // credential lookup (which an oversized name must not cost).
        if malformed_identity(msg) {
            return Err(self.error(out, msg, 400, None));
        }
        // RFC 8489 §9.2.4 with §14.6: when both integrity attributes are present only
        // MESSAGE-INTEGRITY-SHA256 is checked (and the response carries that kind).
        let sha256_mac = msg.has_integrity_sha256();
        if !msg.has_integrity() && !sha256_mac {
            return Err(self.challenge(now, tuple, out, msg, 401));
        }
        // Exactly one of USERNAME and USERHASH: both at once is ambiguous, so 400.
        let claimed = match (msg.get::<Username>(), msg.get::<Userhash>()) {
            (Some(Ok(Username(u))), None) => Claimed::Name(u),
            (None, Some(Ok(Userhash(h)))) => Claimed::Hash(h),
            _ => return Err(self.error(out, msg, 400, None)),
        };
        let (Some(Ok(Realm(realm))), Some(Ok(Nonce(nonce)))) =
            (msg.get::<Realm>(), msg.get::<Nonce>())
        else {
            return Err(self.error(out, msg, 400, None));
        };
        let unix = self.unix(now);
        match self
            .nonces
            .verify(nonce, unix, tuple.client, self.cfg.nonce_lifetime.as_secs())
        {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                self.stats.auth_failures[AuthFailure::StaleNonce as usize] += 1;
                return Err(self.challenge(now, tuple, out, msg, 438));
            }
        }
        let features = nonce_features(nonce);
        let Some(algorithm) = password_algorithm(msg, features) else {
            return Err(self.error(out, msg, 400, None));
        };
        // USERHASH is only defined under a nonce that offered username anonymity.
        if matches!(claimed, Claimed::Hash(_)) && features & FEATURE_USERNAME_ANONYMITY == 0 {
            return Err(self.error(out, msg, 400, None));
        }
        let verify = |key: &LongTermKey| {
            if sha256_mac {
                msg.verify_integrity_sha256(key.as_bytes()).is_ok()
            } else {
                msg.verify_integrity(key.as_bytes()).is_ok()
            }
        };
        // Unknown users (by name or by hash), expired or revoked credentials and a
        // wrong realm cost the same MAC as a wrong password and get the same 401, so
        // that neither timing nor the answer tells an attacker which usernames exist.
        // Several candidates when REST secrets rotate: the store only learns which
        // secret minted a credential when its MAC checks out.
        let username: Option<Cow<'m, str>> = if realm != self.cfg.realm {
            None
        } else {
            match claimed {
                Claimed::Name(u) => Some(Cow::Borrowed(u)),
                Claimed::Hash(h) => self
                    .creds
                    .lookup_userhash(h, &self.cfg.realm, unix)
                    .map(Cow::Owned),
            }
        };
        let mut matched = None;
        let mut tried = 0;
        // Why the first lookup found nothing usable, for the counters only.
        let mut failure = AuthFailure::UnknownUser;
        if let Some(name) = &username {
            while tried < MAX_CREDENTIAL_CANDIDATES {
                let keys_expiry =
                    match self
                        .creds
                        .lookup_candidate(name, &self.cfg.realm, unix, tried)
                    {
                        Lookup::Found(keys, expiry) => (keys, expiry),
                        Lookup::Expired if tried == 0 => {
                            failure = AuthFailure::ExpiredCredential;
                            break;
                        }
                        Lookup::Revoked if tried == 0 => {
                            failure = AuthFailure::Revoked;
                            break;
                        }
                        _ => break,
                    };
                let (keys, expiry) = keys_expiry;
                tried += 1;
                // A key-only user (imported from coturn: MD5 key, no password)
                // has no SHA-256 key: a request that negotiated SHA-256 costs
                // the same MAC as any other and fails like a wrong password.
                let key = match algorithm {
                    PasswordAlgo::Md5 => Some(LongTermKey::Md5(keys.md5)),
                    PasswordAlgo::Sha256 => keys.sha256.map(LongTermKey::Sha256),
                };
                match key {
                    Some(key) if verify(&key) => {
                        matched = Some((key, expiry));
                        break;
                    }
                    Some(_) => {}
                    None => {
                        let _ = verify(&LongTermKey::Sha256([0; 32]));
                    }
                }
            }
        }
        if tried == 0 {
            let dummy = match algorithm {
                PasswordAlgo::Md5 => LongTermKey::Md5([0; 16]),
                PasswordAlgo::Sha256 => LongTermKey::Sha256([0; 32]),
            };
            let _ = verify(&dummy);
        }
        let (Some((key, expiry)), Some(username)) = (matched, username) else {
            if tried > 0 {
                failure = AuthFailure::BadIntegrity;
            }
            self.stats.auth_failures[failure as usize] += 1;
            return Err(self.challenge(now, tuple, out, msg, 401));
        };
        Ok(Authed {
            username,
            key: ReplyKey { key, sha256_mac },
            expiry,
        })
    }
}
