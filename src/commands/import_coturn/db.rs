//! Reading coturn's user database (`/usr/share/coturn/schema.sql`): the
//! long-term users (`turnusers_lt(realm, name, hmackey)`), the TURN REST
//! secrets (`turn_secret(realm, value)`) and the peer ranges
//! (`allowed_peer_ip`, `denied_peer_ip`), from SQLite or PostgreSQL.
//!
//! The database is only read: SQLite is opened read-only, PostgreSQL only
//! runs `SELECT`s. A table that an older coturn schema lacks counts as
//! empty (and is reported); a database without `turnusers_lt` is not
//! coturn's, and is an error.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};

use super::config::DbSource;

/// One `turnusers_lt` row.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUser {
    /// Its realm (coturn's default is the empty string).
    pub realm: String,
    /// The user name.
    pub name: String,
    /// `hmackey`: hex of MD5(name:realm:password) (32 digits), or of a
    /// longer SHA key with coturn's non-standard password algorithms.
    pub hmackey: String,
}

impl std::fmt::Debug for DbUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbUser")
            .field("realm", &self.realm)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What the import takes from coturn's database. Rows with a NULL in a
/// needed column are left out.
#[derive(Debug, Default)]
pub struct CoturnDb {
    /// `turnusers_lt`.
    pub users: Vec<DbUser>,
    /// `turn_secret`: (realm, secret).
    pub secrets: Vec<(String, String)>,
    /// `allowed_peer_ip`: (realm, range).
    pub allowed: Vec<(String, String)>,
    /// `denied_peer_ip`: (realm, range).
    pub denied: Vec<(String, String)>,
    /// Tables this schema did not have (read as empty).
    pub missing: Vec<&'static str>,
}

/// Why the database could not be read. Never shows a password of a
/// PostgreSQL connection string.
#[derive(Debug, thiserror::Error)]
#[error("coturn database {location}: {message}")]
pub struct DbError {
    /// The file, or the PostgreSQL location without its password.
    pub location: String,
    /// What went wrong.
    pub message: String,
}

enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// Runs `$body` with `$c` bound to whichever connection it is: the sqlx
/// calls are the same text for both.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:block) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
}

/// Reads everything the import needs.
pub async fn read(source: &DbSource) -> Result<CoturnDb, DbError> {
    let (mut conn, location) = connect(source).await?;
    let password = password_of(source);
    let fail = |e: sqlx::Error| DbError {
        location: location.clone(),
        message: hide(&e.to_string(), password.as_deref()),
    };
    let mut db = CoturnDb::default();
    if !has_table(&mut conn, "turnusers_lt").await.map_err(fail)? {
        return Err(DbError {
            location,
            message: "has no turnusers_lt table: not a coturn user database".into(),
        });
    }
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = on_conn!(&mut conn, |c| {
        sqlx::query_as("SELECT realm, name, hmackey FROM turnusers_lt ORDER BY realm, name")
            .fetch_all(&mut *c)
            .await
    })
    .map_err(fail)?;
    db.users = rows
        .into_iter()
        .filter_map(|(realm, name, key)| {
            Some(DbUser {
                realm: realm.unwrap_or_default(),
                name: name?,
                // char(128) on PostgreSQL pads with blanks.
                hmackey: key?.trim().to_owned(),
            })
        })
        .collect();
    for (table, column, out) in [
        ("turn_secret", "value", &mut db.secrets),
        ("allowed_peer_ip", "ip_range", &mut db.allowed),
        ("denied_peer_ip", "ip_range", &mut db.denied),
    ] {
        if !has_table(&mut conn, table).await.map_err(fail)? {
            db.missing.push(table);
            continue;
        }
        // Table and column names are the constants above, not input.
        let sql = format!("SELECT realm, {column} FROM {table} ORDER BY realm, {column}");
        let rows: Vec<(Option<String>, Option<String>)> = on_conn!(&mut conn, |c| {
            sqlx::query_as(&sql).fetch_all(&mut *c).await
        })
        .map_err(fail)?;
        *out = rows
            .into_iter()
            .filter_map(|(realm, v)| Some((realm.unwrap_or_default(), v?.trim().to_owned())))
            .collect();
    }
    let _ = on_conn!(conn, |c| { c.close().await });
    Ok(db)
}

async fn has_table(conn: &mut Conn, table: &str) -> Result<bool, sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
            )
            .bind(table)
            .fetch_one(&mut *c)
            .await?;
            Ok(n > 0)
        }
        Conn::Postgres(c) => {
            sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(table)
                .fetch_one(&mut *c)
                .await
        }
    }
}

async fn connect(source: &DbSource) -> Result<(Conn, String), DbError> {
    match source {
        DbSource::Sqlite(path) => {
            let path = path.strip_prefix("sqlite://").unwrap_or(path);
            let path = path.strip_prefix("sqlite:").unwrap_or(path);
            let location = path.to_owned();
            if !std::path::Path::new(path).is_file() {
                return Err(DbError {
                    location,
                    message: "no such file".into(),
                });
            }
            let conn = SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .connect()
                .await
                .map_err(|e| DbError {
                    location: location.clone(),
                    message: e.to_string(),
                })?;
            Ok((Conn::Sqlite(conn), location))
        }
        DbSource::Postgres(text) => {
            let options = pg_options(text)?;
            let password = password_of(source);
            let location = format!(
                "postgresql://{}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("")
            );
            let conn = options.connect().await.map_err(|e| DbError {
                location: location.clone(),
                message: hide(&e.to_string(), password.as_deref()),
            })?;
            Ok((Conn::Postgres(conn), location))
        }
    }
}

/// coturn's `psql-userdb`: a `postgresql://` URI, or libpq `key=value`
/// pairs (`host=... dbname=... user=... password=... port=...`), values
/// optionally in single quotes.
pub fn pg_options(text: &str) -> Result<PgConnectOptions, DbError> {
    let text = text.trim();
    let bad = |message: String| DbError {
        location: "(PostgreSQL)".into(),
        message,
    };
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return PgConnectOptions::from_str(text).map_err(|e| {
            bad(hide(
                &e.to_string(),
                password_of(&DbSource::Postgres(text.to_owned())).as_deref(),
            ))
        });
    }
    let mut options = PgConnectOptions::new();
    for pair in split_pairs(text) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(bad(format!("{pair:?} is not key=value")));
        };
        let value = value.trim_matches('\'');
        options = match key.trim() {
            "host" | "hostaddr" => options.host(value),
            "port" => options.port(
                value
                    .parse()
                    .map_err(|_| bad(format!("port {value:?} is not a number")))?,
            ),
            "dbname" => options.database(value),
            "user" => options.username(value),
            "password" => options.password(value),
            "sslmode" => options.ssl_mode(
                value
                    .parse()
                    .map_err(|_| bad(format!("sslmode {value:?} is unknown")))?,
            ),
            // connect_timeout, application_name and the like do not change
            // what is read.
            _ => options,
        };
    }
    Ok(options)
}

/// The password of a PostgreSQL connection string, to keep it out of
/// error messages.
fn password_of(source: &DbSource) -> Option<String> {
    let DbSource::Postgres(text) = source else {
        return None;
    };
    if let Ok(url) = url::Url::parse(text.trim()) {
        return url.password().map(str::to_owned);
    }
    split_pairs(text).into_iter().find_map(|pair| {
        let value = pair.strip_prefix("password=")?;
        Some(value.trim_matches('\'').to_owned())
    })
}

/// `message` with `secret` (if any, and not trivially short) replaced.
fn hide(message: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if secret.len() >= 3 => message.replace(secret, "***"),
        _ => message.to_owned(),
    }
}

/// Splits libpq `key=value` pairs at blanks outside single quotes.
fn split_pairs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_key_value_strings() {
        let o = pg_options(
            "host=db.example port=5433 dbname=coturn user=turn password='a b' connect_timeout=30",
        )
        .unwrap();
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_database(), Some("coturn"));
        assert_eq!(o.get_username(), "turn");
        let o = pg_options("postgresql://turn:pw@127.0.0.1:6000/coturn").unwrap();
        assert_eq!(o.get_port(), 6000);
        assert!(pg_options("host").is_err());
        let e = pg_options("port=abc password=hunter2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port \"abc\"") && !e.contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn missing_file_and_foreign_database_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.db");
        let e = read(&DbSource::Sqlite(path.display().to_string()))
            .await
            .unwrap_err();
        assert!(e.to_string().ends_with("no such file"), "{e}");
        // A SQLite file that is not coturn's.
        let path = dir.path().join("other.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut c = SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        let e = read(&DbSource::Sqlite(path.display().to_string()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a coturn user database"), "{e}");
    }

    #[tokio::test]
    async fn reads_coturn_schema_and_tolerates_missing_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turndb");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut c = SqliteConnection::connect(&url).await.unwrap();
        for sql in [
            "CREATE TABLE turnusers_lt (realm varchar(127) default '', name varchar(512), hmackey char(128), PRIMARY KEY (realm,name))",
            "CREATE TABLE denied_peer_ip (realm varchar(127) default '', ip_range varchar(256), primary key (realm,ip_range))",
            "INSERT INTO turnusers_lt VALUES ('example.org', 'alice', '543e1aec5d3614f03141652d6ada51b2')",
            "INSERT INTO turnusers_lt (name, hmackey) VALUES ('nobody', '00')",
            "INSERT INTO denied_peer_ip VALUES ('example.org', '10.0.0.0-10.255.255.255')",
        ] {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
        let db = read(&DbSource::Sqlite(format!("sqlite:{}", path.display())))
            .await
            .unwrap();
        assert_eq!(db.users.len(), 2);
        assert_eq!(db.users[0].realm, "");
        assert_eq!(db.users[1].name, "alice");
        assert_eq!(db.users[1].hmackey, "543e1aec5d3614f03141652d6ada51b2");
        assert_eq!(
            db.denied,
            [("example.org".into(), "10.0.0.0-10.255.255.255".into())]
        );
        assert!(db.secrets.is_empty() && db.allowed.is_empty());
        assert_eq!(db.missing, ["turn_secret", "allowed_peer_ip"]);
        assert!(!format!("{:?}", db.users[1]).contains("543e"));
    }
}
