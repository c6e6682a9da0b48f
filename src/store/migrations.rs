//! The schema, as versioned sqlx migrations compiled into the binary.
//!
//! The SQL lives in `migrations/sqlite/` and `migrations/postgres/` (one
//! dialect each, same tables and meaning) and is embedded with
//! `include_str!`, so an installed binary needs no migration files next to
//! it. sqlx's `migrate!` macro would do the same, but it needs the `macros`
//! feature (and its build-time machinery), which this crate avoids.
//!
//! sqlx records applied versions and checksums in `_sqlx_migrations`, so
//! running the migrator on every open is idempotent, and an edited
//! migration that was already applied is reported instead of silently
//! diverging. On PostgreSQL the migrator holds an advisory lock while it
//! works, so nodes that start at the same moment migrate one at a time.
//!
//! To change the schema: add `NNNN_what.sql` to *both* directories and a
//! line to each list below. Never edit a migration that has shipped.

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// One embedded migration: version, description, SQL.
type Embedded = (i64, &'static str, &'static str);

/// SQLite migrations, oldest first.
const SQLITE: &[Embedded] = &[
    (
        1,
        "credentials",
        include_str!("../../migrations/sqlite/0001_credentials.sql"),
    ),
    (
        2,
        "key only users",
        include_str!("../../migrations/sqlite/0002_key_only_users.sql"),
    ),
    (
        3,
        "api tokens",
        include_str!("../../migrations/sqlite/0003_api_tokens.sql"),
    ),
    (
        4,
        "byte usage",
        include_str!("../../migrations/sqlite/0004_byte_usage.sql"),
    ),
    (
        5,
        "nodes",
        include_str!("../../migrations/sqlite/0005_nodes.sql"),
    ),
];

/// PostgreSQL migrations, oldest first.
const POSTGRES: &[Embedded] = &[
    (
        1,
        "credentials",
        include_str!("../../migrations/postgres/0001_credentials.sql"),
    ),
    (
        2,
        "key only users",
        include_str!("../../migrations/postgres/0002_key_only_users.sql"),
    ),
    (
        3,
        "api tokens",
        include_str!("../../migrations/postgres/0003_api_tokens.sql"),
    ),
    (
        4,
        "byte usage",
        include_str!("../../migrations/postgres/0004_byte_usage.sql"),
    ),
    (
        5,
        "nodes",
        include_str!("../../migrations/postgres/0005_nodes.sql"),
    ),
];

/// A [`MigrationSource`] over migrations compiled into the binary.
#[derive(Debug, Clone, Copy)]
struct EmbeddedSource(&'static [Embedded]);

impl<'s> MigrationSource<'s> for EmbeddedSource {
    fn resolve(self) -> futures_core_compat::BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The `BoxFuture` that [`MigrationSource::resolve`] returns, spelled out so
/// that this crate needs no `futures` dependency for one type name.
mod futures_core_compat {
    use std::future::Future;
    use std::pin::Pin;

    pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
}

/// The migrator for one dialect.
pub(super) async fn migrator(postgres: bool) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(EmbeddedSource(if postgres { POSTGRES } else { SQLITE })).await
}

/// The newest schema version this binary knows.
pub(super) fn latest_version(postgres: bool) -> i64 {
    let list = if postgres { POSTGRES } else { SQLITE };
    list.last().map_or(0, |m| m.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both dialects must describe the same versions: a migration added to
    /// one directory only would leave the backends with different schemas.
    #[test]
    fn dialects_have_the_same_versions() {
        let versions = |list: &[Embedded]| -> Vec<(i64, &str)> {
            list.iter().map(|&(v, d, _)| (v, d)).collect()
        };
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert!(SQLITE.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(latest_version(true), latest_version(false));
    }

    /// A database written by a ferroturn that knew only migration 1 (both
    /// keys NOT NULL) keeps every row readable after migration 2 made
    /// `key_sha256` nullable for key-only users.
    #[tokio::test]
    async fn sqlite_rows_of_version_1_survive_migration_2() {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        Migrator::new(EmbeddedSource(&SQLITE[..1]))
            .await
            .unwrap()
            .run_direct(&mut conn)
            .await
            .unwrap();
        let keys = crate::turn::auth::UserKeys::derive("old", "r", "pw");
        sqlx::query(
            "INSERT INTO users (realm, name, key_md5, key_sha256, userhash, created, updated) \
             VALUES ('r', 'old', $1, $2, $3, 1, 1)",
        )
        .bind(&keys.md5[..])
        .bind(&keys.sha256.unwrap()[..])
        .bind(&crate::stun::integrity::userhash("old", "r")[..])
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let store = crate::store::Store::open(path.to_str().unwrap())
            .await
            .unwrap();
        let snap = store.snapshot().await.unwrap();
        assert_eq!(snap.users.len(), 1);
        assert_eq!(snap.users[0].keys, keys);
        let listed = store.list_users(None).await.unwrap();
        assert!(!listed[0].key_only);
        store.close().await;
    }
}
