//! The SQLite backend: the connection options (WAL, busy timeout), a
//! database file only its owner can read, and the connection pool.

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _};

use super::{
    migrate, unreachable, SqliteTarget, StoreError, StoreLocation, CONNECT_TIMEOUT, MAX_CONNECTIONS,
};

/// Opens (creating the file if needed) the SQLite database `target` of
/// `location`, migrates, and returns a lazily connecting pool.
pub(super) async fn open(
    location: &StoreLocation,
    target: &SqliteTarget,
) -> Result<SqlitePool, StoreError> {
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
    create_private_file(&options).map_err(|e| unreachable(location, &e))?;
    let mut conn = options
        .connect()
        .await
        .map_err(|e| unreachable(location, &e))?;
    migrate(&mut conn, false, location).await?;
    let _ = conn.close().await;
    Ok(SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_lazy_with(options))
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
