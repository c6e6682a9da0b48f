//! The PostgreSQL backend: connecting, with errors that say why and never
//! show the password, and the connection pool.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};

use super::{
    migrate, redact, unreachable, Backend, Store, StoreError, StoreLocation, CONNECT_TIMEOUT,
    MAX_CONNECTIONS,
};

/// The PostgreSQL channel every write notifies on commit; the payload is
/// the new generation in decimal.
pub const NOTIFY_CHANNEL: &str = "ferroturn_changes";

/// Connects to `url` (the PostgreSQL URL of `location`), migrates, and
/// returns a lazily connecting pool.
pub(super) async fn open(location: &StoreLocation, url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::BadUrl(format!("{location}: {}", scrub(&e.to_string(), url))))?;
    // One direct connection first: its error says why (refused,
    // unknown host, bad password) where the pool would only
    // report a timeout after retrying for a while.
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| unreachable(location, &"timed out connecting"))?
        .map_err(|e| unreachable(location, &scrub(&e.to_string(), url)))?;
    migrate(&mut conn, true, location).await?;
    // Best effort: the migration is committed either way.
    let _ = conn.close().await;
    Ok(PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options))
}

/// The store's commits as they happen: every write notifies
/// [`NOTIFY_CHANNEL`] on commit, and this holds a connection that listens.
///
/// Notifications are not stored: those sent while the connection is down are
/// lost, so a listener is a way to learn of changes early, never the only one.
pub struct ChangeListener(PgListener);

impl ChangeListener {
    /// Waits for the next committed write; its generation, when the payload
    /// is one. An error means the connection dropped (notifications may have
    /// been missed meanwhile): drop the listener and open a new one.
    pub async fn next(&mut self) -> Result<Option<i64>, StoreError> {
        // `try_recv` reports a lost connection as `None` instead of quietly
        // reconnecting as `recv` does, so the caller learns to look again.
        match self.0.try_recv().await {
            Ok(Some(n)) => Ok(n.payload().parse().ok()),
            Ok(None) => Err(StoreError::Unreachable(
                "the notification connection was closed".into(),
            )),
            Err(e) => Err(StoreError::Unreachable(e.to_string())),
        }
    }
}

impl Store {
    /// A [`ChangeListener`] on this store: PostgreSQL only (`None` on SQLite,
    /// which has no notifications; its writers and readers share a file).
    pub async fn listen(&self) -> Result<Option<ChangeListener>, StoreError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        let connect = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(l)) => Ok(Some(ChangeListener(l))),
            Ok(Err(e)) => Err(unreachable(
                &self.location,
                &scrub_location(&e, &self.location),
            )),
            Err(_) => Err(unreachable(&self.location, &"timed out listening")),
        }
    }
}

/// `e` with any password of `location`'s URL removed.
fn scrub_location(e: &sqlx::Error, location: &StoreLocation) -> String {
    match location {
        StoreLocation::Postgres(url) => scrub(&e.to_string(), url),
        StoreLocation::Sqlite(_) => e.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
