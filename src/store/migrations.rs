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
const SQLITE: &[Embedded] = &[(
    1,
    "credentials",
    include_str!("../../migrations/sqlite/0001_credentials.sql"),
)];

/// PostgreSQL migrations, oldest first.
const POSTGRES: &[Embedded] = &[(
    1,
    "credentials",
    include_str!("../../migrations/postgres/0001_credentials.sql"),
)];

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
}
