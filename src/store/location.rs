//! Where a store lives: parsing `store.url` / `--db` and showing it without
//! its password.
//!
//! Parsing is pure (no file or network access), so the configuration layer
//! can reject a bad URL at load time, naming `store.url`, long before
//! anything connects.

use std::fmt;
use std::path::PathBuf;

use super::StoreError;

/// A parsed store location.
///
/// `Debug` and `Display` both show the redacted form (see
/// [`StoreLocation::redacted`]), so a location can go into an error or a
/// log line without leaking a database password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An embedded SQLite database: a plain file path, or a `sqlite:` URL
    /// (`sqlite:relative.db`, `sqlite:///abs/path.db`, `sqlite::memory:`,
    /// with optional `?mode=...` parameters), kept as written so sqlx
    /// interprets it.
    Sqlite(SqliteTarget),
    /// A PostgreSQL server: `postgres://` or `postgresql://` URL, kept as
    /// written (it may carry a password and `sslmode` etc.).
    Postgres(String),
}

/// How a SQLite database was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteTarget {
    /// A file path (no scheme).
    Path(PathBuf),
    /// A `sqlite:` URL.
    Url(String),
}

impl StoreLocation {
    /// Parses a store URL or path.
    ///
    /// Accepted: a SQLite file path (`/var/lib/ferroturn/users.db`,
    /// `users.db`), a `sqlite:` URL, or a `postgres://` / `postgresql://`
    /// URL. Anything else with a scheme (`mysql://`, `http://`) and an empty
    /// string are [`StoreError::BadUrl`], whose message shows the value with
    /// any password replaced.
    pub fn parse(url: &str) -> Result<StoreLocation, StoreError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(StoreError::BadUrl(
                "empty store URL: expected a SQLite file path, a sqlite: URL or a postgres:// URL"
                    .into(),
            ));
        }
        if trimmed != url {
            return Err(StoreError::BadUrl(format!(
                "{}: leading or trailing whitespace",
                redact(url)
            )));
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            // Let the url crate vet it now, so that a typo is a BadUrl at
            // parse time rather than a connection error later.
            if let Err(e) = url::Url::parse(url) {
                return Err(StoreError::BadUrl(format!("{}: {e}", redact(url))));
            }
            return Ok(StoreLocation::Postgres(url.to_owned()));
        }
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            // Not shown: without "//" there is no telling which part
            // might be a password.
            return Err(StoreError::BadUrl(
                "a PostgreSQL URL starts with postgres:// or postgresql:// (value not shown)"
                    .into(),
            ));
        }
        if lower.starts_with("sqlite:") {
            if url.len() == "sqlite:".len() || url == "sqlite://" {
                return Err(StoreError::BadUrl(format!(
                    "{url}: no database file after sqlite:"
                )));
            }
            if lower.contains(":memory:") || lower.contains("mode=memory") {
                // Each pooled connection would see its own empty database,
                // and it would vanish on exit: never what an admin means.
                return Err(StoreError::BadUrl(format!(
                    "{url}: an in-memory SQLite database cannot hold a store; use a file"
                )));
            }
            return Ok(StoreLocation::Sqlite(SqliteTarget::Url(url.to_owned())));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(StoreError::BadUrl(format!(
                "{}: unsupported scheme {scheme:?}; expected a SQLite file path, a sqlite: URL or a postgres:// URL",
                redact(url)
            )));
        }
        Ok(StoreLocation::Sqlite(SqliteTarget::Path(PathBuf::from(
            url,
        ))))
    }

    /// `true` for PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }

    /// The location for messages and logs: a PostgreSQL password is
    /// replaced by `***`; SQLite paths are shown as they are.
    pub fn redacted(&self) -> String {
        match self {
            StoreLocation::Sqlite(SqliteTarget::Path(path)) => path.display().to_string(),
            StoreLocation::Sqlite(SqliteTarget::Url(url)) => url.clone(),
            StoreLocation::Postgres(url) => redact(url),
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(_) => write!(f, "Sqlite({})", self.redacted()),
            StoreLocation::Postgres(_) => write!(f, "Postgres({})", self.redacted()),
        }
    }
}

/// `url` with the password of its userinfo (`user:PASSWORD@host`) and any
/// `password=` query parameter replaced by `***`.
///
/// Works on text, not only on URLs the url crate accepts, because it is
/// also used to report URLs that failed to parse.
pub fn redact(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    // Userinfo: between "://" and the last '@' before the first '/', '?' or '#'.
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    out.push_str(head);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) if !head.is_empty() => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        _ => out.push_str(authority),
    }
    // Query parameters named password (libpq style) are redacted too.
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_accepted_forms() {
        assert_eq!(
            StoreLocation::parse("/var/lib/ferroturn/users.db").ok(),
            Some(StoreLocation::Sqlite(SqliteTarget::Path(
                "/var/lib/ferroturn/users.db".into()
            )))
        );
        assert_eq!(
            StoreLocation::parse("users.db").ok(),
            Some(StoreLocation::Sqlite(SqliteTarget::Path("users.db".into())))
        );
        assert!(matches!(
            StoreLocation::parse("sqlite:///tmp/x.db"),
            Ok(StoreLocation::Sqlite(SqliteTarget::Url(_)))
        ));
        assert!(
            StoreLocation::parse("postgres://u:p@db.example/turn").is_ok_and(|l| l.is_postgres())
        );
        assert!(
            StoreLocation::parse("postgresql://db.example/turn?sslmode=require")
                .is_ok_and(|l| l.is_postgres())
        );
    }

    #[test]
    fn rejects_bad_urls_without_showing_passwords() {
        for bad in [
            "",
            "  ",
            "mysql://root:hunter2@db/turn",
            "http://example.com/x",
            "postgres:hunter2",
            "sqlite:",
            "sqlite::memory:",
            "sqlite://x.db?mode=memory",
            "postgres://u:hunter2@[::1/turn",
        ] {
            match StoreLocation::parse(bad) {
                Err(StoreError::BadUrl(msg)) => {
                    assert!(!msg.contains("hunter2"), "{bad:?} -> {msg}");
                }
                other => panic!("{bad:?} -> {other:?}"),
            }
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("postgres://turn:s3cret@db:5432/turn"),
            "postgres://turn:***@db:5432/turn"
        );
        assert_eq!(redact("postgres://turn@db/turn"), "postgres://turn@db/turn");
        assert_eq!(
            redact("postgres://db/turn?user=x&password=s3cret&sslmode=require"),
            "postgres://db/turn?user=x&password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://a:b:c@d@host/x"),
            "postgres://a:***@host/x"
        );
        assert_eq!(redact("/var/lib/x@y.db"), "/var/lib/x@y.db");
        let loc = StoreLocation::parse("postgres://turn:s3cret@db/turn").expect("valid");
        assert!(!format!("{loc} {loc:?}").contains("s3cret"));
    }
}
