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

mod credentials;
pub(in crate::turn) mod long_term;
mod nonce;
mod sign;

pub use credentials::{
    rest_password, ChainStore, CredentialStore, Lookup, RestSecrets, StaticUsers, UserKeys,
};
pub use nonce::{
    nonce_features, Nonce, NonceCheck, NonceKey, FEATURE_PASSWORD_ALGORITHMS,
    FEATURE_USERNAME_ANONYMITY, NONCE_COOKIE, NONCE_MAX_LEN,
};
pub use sign::{RequestAuth, RequestMac};
