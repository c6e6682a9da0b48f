//! The client side of the long-term credential mechanism: the attributes that
//! authenticate a request (RFC 8489 §9.2.4), written one way for every client in
//! the crate ([`crate::client`], the test kit `turn::testing`, the fuzz harness).

use crate::stun::attr::{self, *};
use crate::stun::MessageBuilder;

/// Which integrity attribute(s) sign a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestMac<'a> {
    /// MESSAGE-INTEGRITY (HMAC-SHA1) under the key.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256 under the key.
    Sha256,
    /// MESSAGE-INTEGRITY under `sha1_key`, then MESSAGE-INTEGRITY-SHA256 under
    /// the key (RFC 8489 §14.6 lets a client send both).
    Both { sha1_key: &'a [u8] },
}

/// The credential attributes of an authenticated request, in the order
/// [`write`](Self::write) adds them: USERHASH, USERNAME, REALM, NONCE,
/// PASSWORD-ALGORITHM, PASSWORD-ALGORITHMS, then the integrity attribute(s).
/// Each field is written as given, so a test can send what a well-behaved
/// client would not (both user attributes, a tampered algorithm list...).
#[derive(Clone, Copy, Debug)]
pub struct RequestAuth<'a> {
    /// USERNAME, when sent.
    pub username: Option<&'a str>,
    /// USERHASH (32 bytes when well formed), when sent.
    pub userhash: Option<&'a [u8]>,
    pub realm: &'a str,
    pub nonce: &'a [u8],
    /// PASSWORD-ALGORITHM: (algorithm number, parameters).
    pub algorithm: Option<(u16, &'a [u8])>,
    /// PASSWORD-ALGORITHMS, echoed as the server's challenge carried it.
    pub algorithms: Option<&'a [u8]>,
    /// The long-term key (MD5 or SHA-256, RFC 8489 §9.2.2).
    pub key: &'a [u8],
    pub mac: RequestMac<'a>,
}

impl RequestAuth<'_> {
    /// Adds the credential attributes and signs the message. The caller adds
    /// FINGERPRINT afterwards, if wanted.
    pub fn write(&self, b: &mut MessageBuilder<'_>) {
        if let Some(h) = self.userhash {
            b.add_raw(attr::USERHASH, h);
        }
        if let Some(u) = self.username {
            b.add(&Username(u));
        }
        b.add(&Realm(self.realm));
        b.add(&Nonce(self.nonce));
        if let Some((algorithm, params)) = self.algorithm {
            b.add(&PasswordAlgorithm { algorithm, params });
        }
        if let Some(list) = self.algorithms {
            b.add_raw(attr::PASSWORD_ALGORITHMS, list);
        }
        match self.mac {
            RequestMac::Sha1 => {
                b.add_message_integrity(self.key);
            }
            RequestMac::Sha256 => {
                b.add_message_integrity_sha256(self.key);
            }
            RequestMac::Both { sha1_key } => {
                b.add_message_integrity(sha1_key);
                b.add_message_integrity_sha256(self.key);
            }
        }
    }
}
