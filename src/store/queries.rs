//! The SQL both backends run: the same text on SQLite and PostgreSQL
//! (`$N` placeholders, `RETURNING`, `ON CONFLICT`), through whichever pool
//! the [`Store`] has.

use sqlx::Row as _;

use super::{
    check_name, check_password, check_realm, check_token_name, invalid, ApiTokenInfo, Backend,
    SecretInfo, Snapshot, Store, StoreError, StoredUser, UserInfo, NOTIFY_CHANNEL,
};
use crate::stun::integrity::userhash;
use crate::time::unix_now;
use crate::turn::auth::UserKeys;

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
    /// Closes the pool, waiting for connections to finish (SQLite then
    /// folds its write-ahead log back into the database file).
    pub async fn close(&self) {
        on_pool!(self, |pool| { pool.close().await })
    }
    /// Classifies a sqlx error: connection-level failures are
    /// [`StoreError::Unreachable`] with the redacted location, anything
    /// else [`StoreError::Database`].
    pub(super) fn db_err(&self, e: sqlx::Error) -> StoreError {
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
        self.insert_user(realm, name, &keys).await
    }

    /// Adds a user known only by its MD5 long-term key,
    /// `MD5(name:realm:password)` — what coturn stores in `turnusers_lt` —
    /// with no SHA-256 key (the column is NULL). It authenticates with the
    /// MD5 password algorithm only; `set_password` later stores both keys.
    /// USERHASH needs no password and is stored as for any user.
    /// [`StoreError::UserExists`] if `(realm, name)` exists.
    pub async fn add_user_md5_key(
        &self,
        realm: &str,
        name: &str,
        md5: [u8; 16],
    ) -> Result<(), StoreError> {
        check_realm(realm)?;
        check_name(name)?;
        self.insert_user(realm, name, &UserKeys::md5_only(md5))
            .await
    }

    /// Inserts a user with `keys` (a NULL SHA-256 key for one known only by
    /// its MD5 key) and its USERHASH.
    async fn insert_user(
        &self,
        realm: &str,
        name: &str,
        keys: &UserKeys,
    ) -> Result<(), StoreError> {
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
            .bind(keys.sha256.as_ref().map(|k| &k[..]))
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
            .bind(keys.sha256.as_ref().map(|k| &k[..]))
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
            sqlx::query_as::<_, UserInfo>(
                "SELECT realm, name, created, key_sha256 IS NULL AS key_only FROM users \
                 WHERE $1 IS NULL OR realm = $1 ORDER BY realm, name",
            )
            .bind(realm)
            .fetch_all(pool)
            .await
            .map_err(|e| self.db_err(e))
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
            sqlx::query_as::<_, SecretInfo>("SELECT id, secret, created FROM secrets ORDER BY id")
                .fetch_all(pool)
                .await
                .map_err(|e| self.db_err(e))
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

    // -- API tokens -------------------------------------------------------------

    /// Stores a credentials-API token by the SHA-256 of the token (the token
    /// itself is never stored). [`StoreError::ApiTokenExists`] if `name` is
    /// taken.
    pub async fn add_api_token(&self, name: &str, sha256: [u8; 32]) -> Result<(), StoreError> {
        check_token_name(name)?;
        let now = unix_now();
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            let inserted = sqlx::query(
                "INSERT INTO api_tokens (name, token_sha256, created) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(&sha256[..])
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::ApiTokenExists(name.to_owned()));
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    /// Removes a token: requests bearing it are refused from then on.
    pub async fn remove_api_token(&self, name: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            let mut tx = begin_write!(self, pool);
            let deleted = sqlx::query("DELETE FROM api_tokens WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NoSuchApiToken(name.to_owned()));
            }
            tx.commit().await.map_err(|e| self.db_err(e))
        })
    }

    /// Every token's name and times, sorted by name.
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiTokenInfo>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_as::<_, ApiTokenInfo>(
                "SELECT name, created, last_used FROM api_tokens ORDER BY name",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| self.db_err(e))
        })
    }

    /// Every token's name and SHA-256, for the API to compare a presented
    /// token against (all of them, in constant time).
    pub async fn api_token_hashes(&self) -> Result<Vec<(String, [u8; 32])>, StoreError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query("SELECT name, token_sha256 FROM api_tokens")
                .fetch_all(pool)
                .await
                .map_err(|e| self.db_err(e))?;
            rows.iter()
                .map(|row| {
                    let name: String = row.try_get("name").map_err(|e| self.db_err(e))?;
                    let hash: Vec<u8> = row.try_get("token_sha256").map_err(|e| self.db_err(e))?;
                    let hash = hash.try_into().map_err(|_| {
                        StoreError::Corrupt(format!("hash of API token {name:?} is not 32 bytes"))
                    })?;
                    Ok((name, hash))
                })
                .collect()
        })
    }

    /// Records that token `name` was used at `now_unix`, unless that was
    /// already recorded within the last minute: one write per token per
    /// minute at most, and no generation bump (servers need not reload for it).
    pub async fn touch_api_token(&self, name: &str, now_unix: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE api_tokens SET last_used = $2 WHERE name = $1 \
                 AND (last_used IS NULL OR last_used < $3)",
            )
            .bind(name)
            .bind(now_unix)
            .bind(now_unix.saturating_sub(60))
            .execute(pool)
            .await
            .map_err(|e| self.db_err(e))?;
            Ok(())
        })
    }

    // -- byte budgets ------------------------------------------------------------

    /// Adds each `(user, bytes)` to the user's row of `period` (of
    /// `period_secs`-second periods) in one transaction, stamped `now_unix`;
    /// returns the rows' new totals, in order. No generation bump: byte counts
    /// are no credentials.
    pub async fn add_byte_usage(
        &self,
        period_secs: u64,
        period: u64,
        now_unix: i64,
        deltas: &[(&str, u64)],
    ) -> Result<Vec<u64>, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(|e| self.db_err(e))?;
            let mut totals = Vec::with_capacity(deltas.len());
            for &(user, bytes) in deltas {
                let total: i64 = sqlx::query_scalar(
                    "INSERT INTO byte_usage (username, period_secs, period, bytes, updated) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (username, period_secs, period) \
                     DO UPDATE SET bytes = byte_usage.bytes + excluded.bytes, updated = excluded.updated \
                     RETURNING bytes",
                )
                .bind(user)
                .bind(to_i64(period_secs))
                .bind(to_i64(period))
                .bind(to_i64(bytes))
                .bind(now_unix)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
                totals.push(u64::try_from(total).unwrap_or(0));
            }
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(totals)
        })
    }

    /// The rows of `period` (of `period_secs`-second periods) added to at or
    /// after unix second `since`: `(user, total bytes)`.
    pub async fn byte_usage_since(
        &self,
        period_secs: u64,
        period: u64,
        since: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        on_pool!(self, |pool| {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT username, bytes FROM byte_usage \
                 WHERE period_secs = $1 AND period = $2 AND updated >= $3",
            )
            .bind(to_i64(period_secs))
            .bind(to_i64(period))
            .bind(since)
            .fetch_all(pool)
            .await
            .map_err(|e| self.db_err(e))?;
            Ok(rows
                .into_iter()
                .map(|(user, bytes)| (user, u64::try_from(bytes).unwrap_or(0)))
                .collect())
        })
    }

    /// Removes byte counts last added to before unix second `before`; returns
    /// how many.
    pub async fn prune_byte_usage(&self, before: i64) -> Result<u64, StoreError> {
        on_pool!(self, |pool| {
            let deleted = sqlx::query("DELETE FROM byte_usage WHERE updated < $1")
                .bind(before)
                .execute(pool)
                .await
                .map_err(|e| self.db_err(e))?;
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
                // NULL for a key-only user (imported from coturn).
                let sha256: Option<Vec<u8>> =
                    row.try_get("key_sha256").map_err(|e| self.db_err(e))?;
                let hash: Vec<u8> = row.try_get("userhash").map_err(|e| self.db_err(e))?;
                let corrupt = |what: &str| {
                    StoreError::Corrupt(format!(
                        "{what} of user {name:?} in realm {realm:?} has the wrong length"
                    ))
                };
                users.push(StoredUser {
                    keys: UserKeys {
                        md5: md5.try_into().map_err(|_| corrupt("MD5 key"))?,
                        sha256: sha256
                            .map(|k| k.try_into().map_err(|_| corrupt("SHA-256 key")))
                            .transpose()?,
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

fn no_such_user(realm: &str, name: &str) -> StoreError {
    StoreError::NoSuchUser {
        realm: realm.to_owned(),
        name: name.to_owned(),
    }
}

/// A count for an SQL BIGINT (both backends store signed 64-bit integers);
/// counts beyond it (never reached: 8 EiB) are stored as the largest.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
