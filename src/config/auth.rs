//! `[auth]` and `[auth.users]`: static long-term users, TURN REST shared
//! secrets and the NONCE lifetime. Nothing here ever prints a password or a
//! secret.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::validate::{invalid, seconds, Result};

/// The key path of a static user, as used in error messages and in
/// [`RawConfig::mark_override`](super::RawConfig::mark_override): `auth.users.alice`, or
/// `auth.users."two words"` when the name is not a bare TOML key.
pub fn user_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        format!("auth.users.{name}")
    } else {
        format!("auth.users.{name:?}")
    }
}

/// `[auth]` as written. `Debug` is written by hand so that passwords and
/// secrets never reach a log line.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAuth {
    /// `nonce-lifetime` in seconds.
    pub nonce_lifetime: i64,
    /// `secrets`: TURN REST shared secrets.
    pub secrets: Vec<String>,
    /// `[auth.users]`: name -> password. A `BTreeMap` so users come out
    /// sorted by name.
    pub users: BTreeMap<String, String>,
    /// `strict-expiry`: allocations made with a TURN REST credential end
    /// when it expires.
    pub strict_expiry: bool,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            nonce_lifetime: 600,
            secrets: Vec::new(),
            users: BTreeMap::new(),
            strict_expiry: false,
        }
    }
}

impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAuth")
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("secrets", &Redacted(self.secrets.len()))
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("strict_expiry", &self.strict_expiry)
            .finish()
    }
}

/// Prints `<N redacted>` in place of secret material.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted>", self.0)
    }
}

/// Credentials. `Debug` prints user names and a count of secrets, never
/// passwords or secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Static long-term credential users `(name, password)`, sorted by name.
    pub users: Vec<(String, String)>,
    /// TURN REST shared secrets; the first one is the one to mint with.
    pub secrets: Vec<String>,
    /// How long a NONCE stays valid.
    pub nonce_lifetime: Duration,
    /// Whether an allocation made with a TURN REST credential ends when the
    /// credential expires (see `ServerConfig::strict_expiry`).
    pub strict_expiry: bool,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("AuthConfig")
            .field("users", &names)
            .field("secrets", &Redacted(self.secrets.len()))
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("strict_expiry", &self.strict_expiry)
            .finish()
    }
}

pub(super) fn validate_auth(auth: &RawAuth) -> Result<AuthConfig> {
    let nonce_lifetime = seconds("auth.nonce-lifetime", auth.nonce_lifetime)?;
    for (i, secret) in auth.secrets.iter().enumerate() {
        // Never echo the secret itself.
        if secret.is_empty() {
            return invalid(format!("auth.secrets[{i}]"), "must not be empty");
        }
    }
    let mut users = Vec::with_capacity(auth.users.len());
    for (name, password) in &auth.users {
        let key = user_key(name);
        if name.is_empty() {
            return invalid(key, "user name must not be empty");
        }
        if name.chars().any(char::is_control) {
            return invalid(key, "user name must not contain control characters");
        }
        // Never echo the password itself.
        if password.is_empty() {
            return invalid(key, "password must not be empty");
        }
        users.push((name.clone(), password.clone()));
    }
    Ok(AuthConfig {
        users,
        secrets: auth.secrets.clone(),
        nonce_lifetime,
        strict_expiry: auth.strict_expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_key_quotes_non_bare_names() {
        assert_eq!(user_key("alice"), "auth.users.alice");
        assert_eq!(user_key("a b"), "auth.users.\"a b\"");
        assert_eq!(user_key(""), "auth.users.\"\"");
    }

    #[test]
    fn strict_expiry_is_off_by_default_and_read_from_the_file() {
        let off = super::super::Config::from_toml_str("").unwrap();
        assert!(!off.auth.strict_expiry);
        let on = super::super::Config::from_toml_str("[auth]\nstrict-expiry = true\n").unwrap();
        assert!(on.auth.strict_expiry);
        let err = super::super::Config::from_toml_str("[auth]\nstrict-expiry = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("strict-expiry"), "{err}");
    }
}
