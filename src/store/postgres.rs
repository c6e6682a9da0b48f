//! The PostgreSQL backend: connecting, with errors that say why and never
//! show the password, and the connection pool.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};

use super::{
    migrate, redact, unreachable, StoreError, StoreLocation, CONNECT_TIMEOUT, MAX_CONNECTIONS,
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
