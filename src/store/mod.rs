//! The credential store: long-term users, TURN REST shared secrets and
//! revoked REST usernames, in SQLite (embedded, one node) or PostgreSQL
//! (several nodes sharing one set of credentials).
//!
//! # What is stored
//!
//! * **Users**, per realm: the RFC 8489 long-term keys
//!   ([`UserKeys::derive`]: MD5 and SHA-256 of `name:realm:password`) and
//!   the USERHASH ([`userhash`]). Never the plaintext password: a stolen
//!   database does not hand out passwords that users reuse elsewhere. The
//!   price is that a user is tied to the realm it was added in (the realm is
//!   hashed into the keys), so changing the realm means setting passwords
//!   again.
//! * **REST secrets**, as given: the server must compute
//!   `HMAC-SHA1(secret, username)` for every REST login, so the secret
//!   itself is needed. Protect the database accordingly (the SQLite file is
//!   created mode 0600).
//! * **Revocations** of REST usernames (`EXPIRY:NAME`) together with the
//!   credential's expiry, so rows can be pruned once the credential would be
//!   refused anyway.
//!
//! # How a running server follows changes
//!
//! Every write runs in one transaction that also increments a single
//! `generation` counter. A server polls [`Store::generation`] (one
//! single-row read) and, when it changed, loads everything at once with
//! [`Store::snapshot`], a read in one consistent transaction. On PostgreSQL
//! each write also sends `NOTIFY ferroturn_changes` (payload: the new
//! generation) on commit, for servers that would rather `LISTEN` than poll.
//!
//! # Why sqlx, and no `query!` macros
//!
//! sqlx speaks both SQLite (bundled C library, no system dependency) and
//! PostgreSQL (pure Rust protocol) behind one async API, and ships a
//! migrator with PostgreSQL advisory locking. Queries are checked at run
//! time (`sqlx::query`), not at compile time, so building needs no
//! database. The SQL is written once: placeholders are `$1, $2, ...`,
//! which both dialects accept, and only the migrations differ per dialect.
#![forbid(unsafe_code)]

//!
//! # Layout
//!
//! This file holds the API: errors, the public types, [`Store`] and opening
//! it. The SQL both backends run is in `queries.rs`; what differs per
//! backend (connecting, the SQLite file's permissions) in `sqlite.rs` and
//! `postgres.rs`; the node registry (PostgreSQL only) in `nodes.rs`; `location.rs` parses `store.url`, `migrations.rs` holds the
//! per-dialect schema.

mod location;
mod migrations;
mod nodes;
mod postgres;
mod queries;
mod sqlite;

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

/// Re-exported from [`crate::time`], where it now lives.
pub use crate::time::unix_now;
pub use location::{redact, SqliteTarget, StoreLocation};
pub use nodes::{NodeAddress, NodeBeat, NodeStatus};
pub use postgres::{ChangeListener, NOTIFY_CHANNEL};

use crate::turn::auth::UserKeys;

/// STUN USERNAME is "less than 509 bytes" (RFC 8489 §14.3).
const MAX_NAME_BYTES: usize = 508;
/// REALM: "fewer than 128 characters ... 763 bytes" (RFC 8489 §14.9).
const MAX_REALM_CHARS: usize = 127;
/// See [`MAX_REALM_CHARS`].
const MAX_REALM_BYTES: usize = 763;
/// How long connecting (and waiting for a pooled connection) may take
/// before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per process: the CLI needs one, a server a few for
/// polling and the occasional snapshot.
const MAX_CONNECTIONS: u32 = 4;
/// Migration attempts on open. Two processes creating the same SQLite file
/// at the same moment can collide (SQLite has no migration lock); the
/// loser simply finds the schema in place on the next attempt.
const MIGRATION_ATTEMPTS: u32 = 3;
// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a store operation failed. Messages never contain passwords, REST
/// secrets or a database URL's password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL or path is not a store location (unsupported scheme, empty,
    /// malformed); the message shows it, redacted.
    #[error("bad store URL: {0}")]
    BadUrl(String),
    /// The database could not be reached or opened: connection refused,
    /// unknown host, timeout, a SQLite file that cannot be created. The
    /// message names the (redacted) location and the cause.
    #[error("store unreachable: {0}")]
    Unreachable(String),
    /// The schema could not be brought up to date.
    #[error("store schema migration failed: {0}")]
    Migration(String),
    /// `add_user` for a name that already exists in that realm.
    #[error("user {name:?} already exists in realm {realm:?}")]
    UserExists {
        /// The realm.
        realm: String,
        /// The user name.
        name: String,
    },
    /// The user does not exist in that realm.
    #[error("no such user {name:?} in realm {realm:?}")]
    NoSuchUser {
        /// The realm.
        realm: String,
        /// The user name.
        name: String,
    },
    /// `add_secret` with a secret that is already stored (its value is not
    /// shown).
    #[error("that secret is already stored (id {id})")]
    SecretExists {
        /// The id it is stored under.
        id: i64,
    },
    /// `remove_secret` matched neither an id nor a stored value (the
    /// argument is not shown: it may be a secret).
    #[error("no such secret (no stored secret has that id or value)")]
    NoSuchSecret,
    /// `add_api_token` for a name that is taken.
    #[error("API token {0:?} already exists")]
    ApiTokenExists(String),
    /// `remove_api_token` for a name that is not there.
    #[error("no such API token {0:?}")]
    NoSuchApiToken(String),
    /// An argument is unacceptable (empty name, control characters, ...).
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which argument: `user name`, `realm`, `password`, ...
        what: &'static str,
        /// What is wrong with it (never the value of a password or secret).
        message: String,
    },
    /// The database answered with an error (constraint, SQL, I/O inside
    /// the database).
    #[error("store error: {0}")]
    Database(String),
    /// A stored value is malformed (a key of the wrong length): the
    /// database was edited by hand or is damaged.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// A cluster feature (the node registry) on a SQLite store.
    #[error("{0} needs a PostgreSQL store (SQLite stays single-node)")]
    NeedsPostgres(&'static str),
}

fn invalid<T>(what: &'static str, message: impl Into<String>) -> Result<T, StoreError> {
    Err(StoreError::Invalid {
        what,
        message: message.into(),
    })
}

// ---------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------

/// A user as listed by [`Store::list_users`]: no key material.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserInfo {
    /// The realm the keys were derived for.
    pub realm: String,
    /// The user name.
    pub name: String,
    /// When the user was added, unix seconds.
    pub created: i64,
    /// Stored by its MD5 key only (imported from coturn): no SHA-256 key,
    /// so only the MD5 password algorithm authenticates it until the
    /// password is set with `ferroturn user passwd`.
    pub key_only: bool,
}

/// A REST shared secret as listed by [`Store::list_secrets`]. `Debug`
/// shows only its length.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretInfo {
    /// Its id (grows with each added secret: the highest is the newest).
    pub id: i64,
    /// The secret itself.
    pub secret: String,
    /// When it was added, unix seconds.
    pub created: i64,
}

impl fmt::Debug for SecretInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretInfo")
            .field("id", &self.id)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("created", &self.created)
            .finish()
    }
}

/// A credentials-API token as listed by [`Store::list_api_tokens`]: its name
/// and times, never the token (which is not stored) nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiTokenInfo {
    pub name: String,
    /// When it was added, unix seconds.
    pub created: i64,
    /// When it last authenticated a request (to the minute), if ever.
    pub last_used: Option<i64>,
}

/// The longest API token name.
const MAX_TOKEN_NAME_CHARS: usize = 64;

/// A token name: what `api-token remove` and the logs use, so printable and
/// short (letters, digits, `.`, `_`, `-`).
fn check_token_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_CHARS {
        return invalid("token name", "must be 1 to 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return invalid(
            "token name",
            "may contain only ASCII letters, digits, '.', '_' and '-'",
        );
    }
    Ok(())
}

/// One user with the keys a server authenticates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// The realm the keys were derived for.
    pub realm: String,
    /// The user name.
    pub name: String,
    /// Long-term keys (MD5 and SHA-256 of `name:realm:password`; MD5 only
    /// for a key-only user).
    pub keys: UserKeys,
    /// USERHASH: SHA-256 of `name:realm` (RFC 8489 §14.4), to find the
    /// user when a client hides its name.
    pub userhash: [u8; 32],
}

/// Everything a server needs, read in one consistent transaction.
/// `Debug` does not show the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The generation this snapshot reflects: poll [`Store::generation`]
    /// and reload when it differs.
    pub generation: i64,
    /// All users, sorted by realm then name.
    pub users: Vec<StoredUser>,
    /// REST secrets, **newest first**: the first one mints, all are
    /// accepted (the order `RestSecrets::new` expects).
    pub secrets: Vec<String>,
    /// Revoked REST usernames with their credential's expiry (unix
    /// seconds), only those not yet expired when the snapshot was read.
    pub revocations: Vec<(String, u64)>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("users", &self.users)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("revocations", &self.revocations)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// A connection pool to one credential database, schema up to date.
///
/// Cheap to clone (the pool is shared). All methods are async and need a
/// tokio runtime.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    location: StoreLocation,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (SQLite: creating the file if needed) and migrates the store at
    /// `url`: a SQLite path, a `sqlite:` URL or a `postgres://` URL.
    ///
    /// Migrating runs every time and is idempotent; on PostgreSQL it is
    /// serialised by an advisory lock, so several nodes may open the same
    /// database at once.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let location = StoreLocation::parse(url)?;
        Store::open_location(location).await
    }

    /// [`Store::open`] for an already parsed location.
    pub async fn open_location(location: StoreLocation) -> Result<Store, StoreError> {
        let backend = match &location {
            StoreLocation::Postgres(url) => {
                Backend::Postgres(postgres::open(&location, url).await?)
            }
            StoreLocation::Sqlite(target) => {
                Backend::Sqlite(sqlite::open(&location, target).await?)
            }
        };
        Ok(Store { backend, location })
    }

    /// Where this store lives (displays redacted).
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }
}

/// [`StoreError::Unreachable`] for `location`, with the cause.
fn unreachable(location: &StoreLocation, e: &dyn fmt::Display) -> StoreError {
    StoreError::Unreachable(format!("{location}: {e}"))
}

/// Applies the embedded migrations on `conn`, retrying a couple of times
/// (see [`MIGRATION_ATTEMPTS`]).
async fn migrate<C>(
    conn: &mut C,
    postgres: bool,
    location: &StoreLocation,
) -> Result<(), StoreError>
where
    C: sqlx::migrate::Migrate + Send,
{
    let migrator = migrations::migrator(postgres)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let mut attempt = 1;
    loop {
        match migrator.run_direct(conn).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::VersionMissing(v)) => {
                return Err(StoreError::Migration(format!(
                    "{location} has schema version {v}, newer than this ferroturn knows (up to {}): upgrade ferroturn",
                    migrations::latest_version(postgres)
                )))
            }
            Err(e) if attempt < MIGRATION_ATTEMPTS => {
                tracing::debug!(%location, attempt, error = %e, "migration failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(e) => return Err(StoreError::Migration(format!("{location}: {e}"))),
        }
    }
}
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return invalid("user name", "must not be empty");
    }
    if name.chars().any(char::is_control) {
        return invalid("user name", "must not contain control characters");
    }
    if name.len() > MAX_NAME_BYTES {
        return invalid(
            "user name",
            format!(
                "is {} bytes; STUN allows at most {MAX_NAME_BYTES}",
                name.len()
            ),
        );
    }
    Ok(())
}

fn check_realm(realm: &str) -> Result<(), StoreError> {
    if realm.is_empty() {
        return invalid("realm", "must not be empty");
    }
    if realm.chars().any(char::is_control) {
        return invalid("realm", "must not contain control characters");
    }
    if realm.chars().count() > MAX_REALM_CHARS || realm.len() > MAX_REALM_BYTES {
        return invalid(
            "realm",
            "is too long: RFC 8489 allows fewer than 128 characters and at most 763 bytes",
        );
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        return invalid("password", "must not be empty");
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    /// A server runs store calls in spawned tasks, which need `Send`
    /// futures; this fails to compile if one stops being `Send`.
    #[allow(dead_code)]
    fn futures_are_send(store: &Store) {
        assert_send(Store::open("x.db"));
        assert_send(store.generation());
        assert_send(store.snapshot());
        assert_send(store.add_user("r", "n", "p"));
        assert_send(store.add_user_md5_key("r", "n", [0; 16]));
        assert_send(store.remove_user("r", "n"));
        assert_send(store.set_password("r", "n", "p"));
        assert_send(store.list_users(None));
        assert_send(store.add_secret("s"));
        assert_send(store.remove_secret("s"));
        assert_send(store.list_secrets());
        assert_send(store.revoke("1:n", 1));
        assert_send(store.prune_revocations(1));
        assert_send(store.add_api_token("n", [0; 32]));
        assert_send(store.list_api_tokens());
        assert_send(store.api_token_hashes());
        assert_send(store.touch_api_token("n", 1));
        assert_send(store.remove_api_token("n"));
        assert_send(store.close());
    }

    #[test]
    fn store_is_shareable() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Store>();
    }

    #[test]
    fn argument_checks() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(check_realm("example.org").is_ok());
        assert!(check_realm("").is_err());
        assert!(check_realm(&"r".repeat(128)).is_err());
        assert!(check_password("").is_err());
        assert!(check_password(" ").is_ok());
        assert!(check_token_name("app-1.prod_x").is_ok());
        assert!(check_token_name("").is_err());
        assert!(check_token_name("a b").is_err());
        assert!(check_token_name(&"t".repeat(65)).is_err());
    }
}
