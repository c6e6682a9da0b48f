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

mod location;
mod migrations;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};

pub use location::{redact, SqliteTarget, StoreLocation};
/// Re-exported from [`crate::time`], where it now lives.
pub use crate::time::unix_now;

use crate::stun::integrity::userhash;
use crate::turn::auth::UserKeys;

/// The PostgreSQL channel every write notifies on commit; the payload is
/// the new generation in decimal.
pub const NOTIFY_CHANNEL: &str = "ferroturn_changes";

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The realm the keys were derived for.
    pub realm: String,
    /// The user name.
    pub name: String,
    /// When the user was added, unix seconds.
    pub created: i64,
}

/// A REST shared secret as listed by [`Store::list_secrets`]. `Debug`
/// shows only its length.
#[derive(Clone, PartialEq, Eq)]
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

/// One user with the keys a server authenticates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// The realm the keys were derived for.
    pub realm: String,
    /// The user name.
    pub name: String,
    /// Long-term keys (MD5 and SHA-256 of `name:realm:password`).
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

/// Runs `$body` with `$pool` bound to whichever pool the store has. The
/// body is the same text for both backends: sqlx's API is the same, and the
/// SQL is written in the common subset (`$N` placeholders, `RETURNING`,
/// `ON CONFLICT`).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:block) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Begins a write transaction on `$pool` and bumps the generation first.
///
/// Bumping first matters for SQLite: a transaction whose first statement
/// writes takes the write lock at once (waiting out the busy timeout if
/// another process holds it), instead of starting as a reader and failing
/// to upgrade. On PostgreSQL it serialises writers on the `meta` row, so
/// generations are handed out in commit order. Dropping the transaction
/// without commit rolls the bump back with everything else.
macro_rules! begin_write {
    ($store:expr, $pool:ident) => {{
        let mut tx = $pool.begin().await.map_err(|e| $store.db_err(e))?;
        let generation: i64 = sqlx::query_scalar(
            "UPDATE meta SET generation = generation + 1 WHERE id = 1 RETURNING generation",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| $store.db_err(e))?;
        if $store.location.is_postgres() {
            // Delivered when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(generation.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| $store.db_err(e))?;
        }
        tx
    }};
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
        let unreachable =
            |e: &dyn fmt::Display| StoreError::Unreachable(format!("{location}: {e}"));
        let backend = match &location {
            StoreLocation::Postgres(url) => {
                let options = PgConnectOptions::from_str(url).map_err(|e| {
                    StoreError::BadUrl(format!("{location}: {}", scrub(&e.to_string(), url)))
                })?;
                // One direct connection first: its error says why (refused,
                // unknown host, bad password) where the pool would only
                // report a timeout after retrying for a while.
                let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
                    .await
                    .map_err(|_| unreachable(&"timed out connecting"))?
                    .map_err(|e| unreachable(&scrub(&e.to_string(), url)))?;
                migrate(&mut conn, true, &location).await?;
                // Best effort: the migration is committed either way.
                let _ = conn.close().await;
                Backend::Postgres(
                    PgPoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_lazy_with(options),
                )
            }
            StoreLocation::Sqlite(target) => {
                let options = match target {
                    SqliteTarget::Path(path) => SqliteConnectOptions::new().filename(path),
                    SqliteTarget::Url(url) => SqliteConnectOptions::from_str(url)
                        .map_err(|e| StoreError::BadUrl(format!("{location}: {e}")))?,
                }
                .create_if_missing(true)
                // WAL: the server's polling reads never block the CLI's
                // writes and vice versa. NORMAL is durable in WAL mode
                // except for the last commits on power loss.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(CONNECT_TIMEOUT)
                .foreign_keys(true);
                create_private_file(&options).map_err(|e| unreachable(&e))?;
                let mut conn = options.connect().await.map_err(|e| unreachable(&e))?;
                migrate(&mut conn, false, &location).await?;
                let _ = conn.close().await;
                Backend::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_lazy_with(options),
                )
            }
        };
        Ok(Store { backend, location })
    }

    /// Where this store lives (displays redacted).
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Closes the pool, waiting for connections to finish (SQLite then
    /// folds its write-ahead log back into the database file).
    pub async fn close(&self) {
        on_pool!(self, |pool| { pool.close().await })
    }

    /// Classifies a sqlx error: connection-level failures are
    /// [`StoreError::Unreachable`] with the redacted location, anything
    /// else [`StoreError::Database`].
    fn db_err(&self, e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => {
                StoreError::Unreachable(format!("{}: {e}", self.location))
            }
            other => StoreError::Database(other.to_string()),
        }
    }

    // -- users --------------------------------------------------------------

    /// Adds a user: stores the keys derived from `password`, never the
    /// password. [`StoreError::UserExists`] if `(realm, name)` exists.
    pub async fn add_user(
        &self,
        realm: &str,
        name: &str,
        password: &str,
    ) -> Result<(), StoreError> {
        check_realm(realm)?;
        check_name(name)?;
        check_password(password)?;
        let keys = UserKeys::derive(name, realm, password);
        let hash = userhash(name, realm);
        let now = unix_now();
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            let inserted = sqlx::query(
                "INSERT INTO users (realm, name, key_md5, key_sha256, userhash, created, updated) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (realm, name) DO NOTHING",
            )
            .bind(realm)
            .bind(name)
            .bind(&keys.md5[..])
            .bind(&keys.sha256[..])
            .bind(&hash[..])
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::UserExists {
                    realm: realm.to_owned(),
                    name: name.to_owned(),
                });
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    /// Removes a user. [`StoreError::NoSuchUser`] if there is none.
    pub async fn remove_user(&self, realm: &str, name: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            let deleted = sqlx::query("DELETE FROM users WHERE realm = $1 AND name = $2")
                .bind(realm)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            if deleted.rows_affected() == 0 {
                return Err(no_such_user(realm, name));
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    /// Replaces a user's keys with those derived from a new password.
    /// [`StoreError::NoSuchUser`] if there is none.
    pub async fn set_password(
        &self,
        realm: &str,
        name: &str,
        password: &str,
    ) -> Result<(), StoreError> {
        check_password(password)?;
        let keys = UserKeys::derive(name, realm, password);
        let now = unix_now();
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            let updated = sqlx::query(
                "UPDATE users SET key_md5 = $1, key_sha256 = $2, updated = $3 \
                 WHERE realm = $4 AND name = $5",
            )
            .bind(&keys.md5[..])
            .bind(&keys.sha256[..])
            .bind(now)
            .bind(realm)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            if updated.rows_affected() == 0 {
                return Err(no_such_user(realm, name));
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    /// Users, sorted by realm then name; only those of `realm` if given.
    pub async fn list_users(&self, realm: Option<&str>) -> Result<Vec<UserInfo>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT realm, name, created FROM users \
                 WHERE $1 IS NULL OR realm = $1 ORDER BY realm, name",
            )
            .bind(realm)
            .fetch_all(pool)
            .await
            .map_err(|e| self.db_err(e))?;
            rows.iter()
                .map(|row| {
                    Ok(UserInfo {
                        realm: row.try_get("realm").map_err(|e| self.db_err(e))?,
                        name: row.try_get("name").map_err(|e| self.db_err(e))?,
                        created: row.try_get("created").map_err(|e| self.db_err(e))?,
                    })
                })
                .collect()
        })
    }

    // -- REST secrets ---------------------------------------------------------

    /// Stores a REST shared secret as given and returns its id (the
    /// highest id is the newest, which mints credentials).
    /// [`StoreError::SecretExists`] if the same secret is already stored.
    pub async fn add_secret(&self, secret: &str) -> Result<i64, StoreError> {
        if secret.is_empty() {
            return invalid("secret", "must not be empty");
        }
        let now = unix_now();
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO secrets (secret, created) VALUES ($1, $2) \
                 ON CONFLICT (secret) DO NOTHING RETURNING id",
            )
            .bind(secret)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            let Some(id) = id else {
                let id: i64 = sqlx::query_scalar("SELECT id FROM secrets WHERE secret = $1")
                    .bind(secret)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                return Err(StoreError::SecretExists { id });
            };
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(id)
        })
    }

    /// Removes a secret by id or, failing that, by value, and returns the
    /// id it had. An id wins over a secret whose value happens to be that
    /// number. [`StoreError::NoSuchSecret`] if neither matches.
    pub async fn remove_secret(&self, id_or_value: &str) -> Result<i64, StoreError> {
        let id: Option<i64> = id_or_value.parse().ok();
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            let mut removed: Option<i64> = None;
            if let Some(id) = id {
                removed = sqlx::query_scalar("DELETE FROM secrets WHERE id = $1 RETURNING id")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            if removed.is_none() {
                removed = sqlx::query_scalar("DELETE FROM secrets WHERE secret = $1 RETURNING id")
                    .bind(id_or_value)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            let Some(removed) = removed else {
                return Err(StoreError::NoSuchSecret);
            };
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(removed)
        })
    }

    /// All secrets, oldest (lowest id) first.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query("SELECT id, secret, created FROM secrets ORDER BY id")
                .fetch_all(pool)
                .await
                .map_err(|e| self.db_err(e))?;
            rows.iter()
                .map(|row| {
                    Ok(SecretInfo {
                        id: row.try_get("id").map_err(|e| self.db_err(e))?,
                        secret: row.try_get("secret").map_err(|e| self.db_err(e))?,
                        created: row.try_get("created").map_err(|e| self.db_err(e))?,
                    })
                })
                .collect()
        })
    }

    // -- revocations ------------------------------------------------------------

    /// Revokes REST username `username` until `expires_unix` (the
    /// credential's own expiry: after it the server refuses the credential
    /// anyway, so the row is no longer needed). Revoking again keeps the
    /// later expiry. Expired revocations are pruned in the same
    /// transaction.
    pub async fn revoke(&self, username: &str, expires_unix: u64) -> Result<(), StoreError> {
        if username.is_empty() {
            return invalid("username", "must not be empty");
        }
        let Ok(expires) = i64::try_from(expires_unix) else {
            return invalid("expiry", format!("{expires_unix} is too large"));
        };
        let now = unix_now();
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            sqlx::query("DELETE FROM revocations WHERE expires <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            sqlx::query(
                "INSERT INTO revocations (username, expires, created) VALUES ($1, $2, $3) \
                 ON CONFLICT (username) DO UPDATE SET expires = \
                 CASE WHEN excluded.expires > revocations.expires \
                 THEN excluded.expires ELSE revocations.expires END",
            )
            .bind(username)
            .bind(expires)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    /// Deletes revocations whose credential expired at or before `now_unix`
    /// and returns how many. Changes the generation only if it deleted
    /// something (an idle store is not reloaded by every server for
    /// nothing).
    pub async fn prune_revocations(&self, now_unix: u64) -> Result<u64, StoreError> {
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        on_pool!(self, |pool| {
            let expired: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM revocations WHERE expires <= $1")
                    .bind(now)
                    .fetch_one(pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
            if expired == 0 {
                return Ok(0);
            }
            let mut tx = begin_write!(self, pool);
            let deleted = sqlx::query("DELETE FROM revocations WHERE expires <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(deleted.rows_affected())
        })
    }

    // -- change tracking ----------------------------------------------------------

    /// The change counter: increases with every committed write. Cheap (one
    /// single-row read), meant to be polled.
    pub async fn generation(&self) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                .fetch_one(pool)
                .await
                .map_err(|e| self.db_err(e))
        })
    }

    /// Everything a server needs, in one consistent read: a write that
    /// commits meanwhile is either wholly in it (with its generation) or
    /// not at all.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let now = unix_now();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(|e| self.db_err(e))?;
            if self.location.is_postgres() {
                // READ COMMITTED (the default) would give each SELECT its own
                // snapshot. SQLite's read transaction is one snapshot
                // already.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            }
            let generation: i64 = sqlx::query_scalar("SELECT generation FROM meta WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            let rows = sqlx::query(
                "SELECT realm, name, key_md5, key_sha256, userhash FROM users ORDER BY realm, name",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            let mut users = Vec::with_capacity(rows.len());
            for row in &rows {
                let realm: String = row.try_get("realm").map_err(|e| self.db_err(e))?;
                let name: String = row.try_get("name").map_err(|e| self.db_err(e))?;
                let md5: Vec<u8> = row.try_get("key_md5").map_err(|e| self.db_err(e))?;
                let sha256: Vec<u8> = row.try_get("key_sha256").map_err(|e| self.db_err(e))?;
                let hash: Vec<u8> = row.try_get("userhash").map_err(|e| self.db_err(e))?;
                let corrupt = |what: &str| {
                    StoreError::Corrupt(format!(
                        "{what} of user {name:?} in realm {realm:?} has the wrong length"
                    ))
                };
                users.push(StoredUser {
                    keys: UserKeys {
                        md5: md5.try_into().map_err(|_| corrupt("MD5 key"))?,
                        sha256: sha256.try_into().map_err(|_| corrupt("SHA-256 key"))?,
                    },
                    userhash: hash.try_into().map_err(|_| corrupt("USERHASH"))?,
                    realm,
                    name,
                });
            }
            let secrets: Vec<String> =
                sqlx::query_scalar("SELECT secret FROM secrets ORDER BY id DESC")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
            let rows = sqlx::query(
                "SELECT username, expires FROM revocations WHERE expires > $1 ORDER BY username",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            let mut revocations = Vec::with_capacity(rows.len());
            for row in &rows {
                let username: String = row.try_get("username").map_err(|e| self.db_err(e))?;
                let expires: i64 = row.try_get("expires").map_err(|e| self.db_err(e))?;
                // Positive: only rows with expires > now (>= 0) are read.
                revocations.push((username, u64::try_from(expires).unwrap_or(0)));
            }
            // Read-only: ending it either way is fine; commit is the cheap path.
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(Snapshot {
                generation,
                users,
                secrets,
                revocations,
            })
        })
    }
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

/// Creates the SQLite file, empty and readable by its owner only, unless
/// it exists (SQLite would create it with the umask's permissions, and it
/// holds REST secrets). SQLite gives its `-wal` and `-shm` files the same
/// permissions as the database.
fn create_private_file(options: &SqliteConnectOptions) -> std::io::Result<()> {
    let path = options.get_filename();
    let name = path.as_os_str();
    if name.is_empty() || name == ":memory:" || path.exists() {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        open.mode(0o600);
    }
    match open.open(path) {
        Ok(_) => Ok(()),
        // Created by someone else in the meantime: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the URL's password from a message that might quote the URL.
fn scrub(message: &str, url: &str) -> String {
    let redacted = redact(url);
    if redacted == url {
        return message.to_owned();
    }
    let mut message = message.replace(url, &redacted);
    // The password on its own, in case the message quotes only that part.
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(password) = parsed.password().filter(|p| p.len() >= 3) {
            message = message.replace(password, "***");
        }
    }
    message
}

fn no_such_user(realm: &str, name: &str) -> StoreError {
    StoreError::NoSuchUser {
        realm: realm.to_owned(),
        name: name.to_owned(),
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
        assert_send(store.remove_user("r", "n"));
        assert_send(store.set_password("r", "n", "p"));
        assert_send(store.list_users(None));
        assert_send(store.add_secret("s"));
        assert_send(store.remove_secret("s"));
        assert_send(store.list_secrets());
        assert_send(store.revoke("1:n", 1));
        assert_send(store.prune_revocations(1));
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
    }

    #[test]
    fn scrub_removes_passwords_from_messages() {
        let url = "postgres://turn:s3cr3t-pw@db/turn";
        let msg = format!("cannot connect to {url}: password s3cr3t-pw rejected");
        let scrubbed = scrub(&msg, url);
        assert!(!scrubbed.contains("s3cr3t-pw"), "{scrubbed}");
        assert!(
            scrubbed.contains("postgres://turn:***@db/turn"),
            "{scrubbed}"
        );
    }
}
