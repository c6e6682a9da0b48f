//! `[store]`: where users, REST secrets and revocations are kept besides
//! the file.

use std::fmt;

use serde::Deserialize;

use super::validate::{invalid, Result};
use crate::store::{StoreError, StoreLocation};

/// `[store]` as written. `Debug` is written by hand: a PostgreSQL URL may
/// carry a password.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawStore {
    /// `url`: SQLite path, `sqlite:` URL or `postgres://` URL; empty = no
    /// store.
    pub url: String,
}

impl fmt::Debug for RawStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawStore")
            .field("url", &crate::store::redact(&self.url))
            .finish()
    }
}

/// Where users, REST secrets and revocations are kept besides the file.
/// `Debug` (via [`StoreLocation`]) hides a database password.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    /// The store's location; `None` = no store: the server uses only the
    /// users and secrets of `[auth]`.
    pub url: Option<StoreLocation>,
}

/// `store.url`: empty means no store; anything else must be a location
/// [`StoreLocation::parse`] accepts. Nothing connects here.
pub(super) fn validate_store(store: &RawStore) -> Result<StoreConfig> {
    if store.url.is_empty() {
        return Ok(StoreConfig { url: None });
    }
    match StoreLocation::parse(&store.url) {
        Ok(location) => Ok(StoreConfig {
            url: Some(location),
        }),
        // The message already shows the URL with its password redacted.
        Err(StoreError::BadUrl(message)) => invalid("store.url", message),
        Err(other) => invalid("store.url", other.to_string()),
    }
}
