//! `ferroturn import coturn`: moving from coturn in one command.
//!
//! Reads coturn's `turnserver.conf` ([`config`]: the parser and the
//! key-by-key translation table) and, if it has one, coturn's user database
//! ([`db`]: SQLite or PostgreSQL), then writes a ferroturn TOML that
//! `ferroturn check` accepts and, with `--store`, fills a ferroturn
//! credential store:
//!
//! * users: `user=NAME:PASSWORD` lines, `user=NAME:0xKEY` lines and the
//!   `turnusers_lt` rows. coturn keeps only the key MD5(name:realm:password),
//!   so those users are stored by that key ([`Store::add_user_md5_key`]):
//!   they authenticate with the MD5 password algorithm (every browser), not
//!   with SHA-256, until `ferroturn user passwd` sets their password. Keys
//!   need a store (the TOML holds passwords only).
//! * REST secrets (`static-auth-secret`, `turn_secret`): into the store, or
//!   `auth.secrets` without one.
//! * peer ranges (`denied-peer-ip`, `allowed-peer-ip`, and the tables of the
//!   same names): always into `[peers]` of the TOML, as CIDRs (the store
//!   holds no peer rules).
//!
//! Every key that is not translated is listed with the reason, on stderr
//! and as comments at the top of the written file.

pub mod config;
pub mod db;
pub mod peer_ranges;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use config::{peer_rules, ConfigUser, DbSource, IpRange, Note, Translation, UserSecret, Verdict};

use crate::cli::ImportCoturnArgs;
use crate::config::RawConfig;
use crate::store::{Store, StoreError};

/// ferroturn's realm when neither the file nor the database names one.
const DEFAULT_REALM: &str = "ferroturn";

/// Why the import stopped. Nothing is written to `--out` then; the store
/// may hold what was added before the failure (re-running skips it).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A bad value in the coturn file.
    #[error("{file}: {bad}")]
    Config {
        /// The file.
        file: String,
        /// Where and what.
        bad: config::BadValue,
    },
    /// The coturn database.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The ferroturn store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else, spelled out.
    #[error("{0}")]
    Other(String),
}

/// Runs the import. Notes go to stderr, the summary to stdout.
pub fn run(args: &ImportCoturnArgs) -> Result<(), ImportError> {
    let file = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| ImportError::Other(format!("cannot read {file}: {e}")))?;
    if args.out.exists() && !args.force {
        return Err(ImportError::Other(format!(
            "{} exists; pass --force to replace it",
            args.out.display()
        )));
    }
    let mut t = config::translate(&config::parse(&text)).map_err(|bad| ImportError::Config {
        file: file.clone(),
        bad,
    })?;
    let source = match &args.db {
        Some(db) if db.starts_with("postgres://") || db.starts_with("postgresql://") => {
            Some(DbSource::Postgres(db.clone()))
        }
        Some(db) => Some(DbSource::Sqlite(db.clone())),
        None => t.userdb.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ImportError::Other(format!("starting the async runtime: {e}")))?;
    let summary = rt.block_on(import(args, &mut t, source.as_ref()))?;

    let out = render(&file, &t);
    // The file must be one ferroturn accepts: a failure here is a bug in the
    // translation, reported rather than written.
    RawConfig::from_toml_str(&out)
        .and_then(RawConfig::validate)
        .map_err(|e| ImportError::Other(format!("the translated configuration is not valid ({e}); please report this with the coturn file")))?;
    write_private(&args.out, &out)
        .map_err(|e| ImportError::Other(format!("cannot write {}: {e}", args.out.display())))?;

    let mut stderr = std::io::stderr().lock();
    for note in &t.notes {
        let _ = writeln!(stderr, "note: {note}");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{summary}");
    let _ = writeln!(
        stdout,
        "wrote {}; check it with: ferroturn check --config {}",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// A user to create, from the file or the database.
struct NewUser {
    realm: String,
    name: String,
    secret: UserSecret,
}

/// Reads the database, decides the realm, and puts users, secrets and peer
/// ranges where they belong. Returns the summary.
async fn import(
    args: &ImportCoturnArgs,
    t: &mut Translation,
    source: Option<&DbSource>,
) -> Result<String, ImportError> {
    let db = match source {
        Some(source) => Some(db::read(source).await?),
        None => None,
    };
    let db_note = |t: &mut Translation, key: &str, verdict, reason: String| {
        t.notes.push(Note {
            line: 0,
            key: key.to_owned(),
            verdict,
            reason,
        })
    };

    // The realm: the file's, else the database's when it has exactly one.
    let db_realms: BTreeSet<&str> = db
        .iter()
        .flat_map(|db| db.users.iter().map(|u| u.realm.as_str()))
        .filter(|r| !r.is_empty())
        .collect();
    let realm = match (&t.realm, db_realms.len()) {
        (Some(realm), _) => realm.clone(),
        (None, 1) => db_realms
            .iter()
            .next()
            .map(|r| (*r).to_owned())
            .unwrap_or_default(),
        (None, _) => DEFAULT_REALM.to_owned(),
    };
    t.set("server", "realm", realm.clone());

    let mut users: Vec<NewUser> = t
        .users
        .iter()
        .map(|ConfigUser { name, secret, .. }| NewUser {
            realm: realm.clone(),
            name: name.clone(),
            secret: secret.clone(),
        })
        .collect();
    let mut secrets: Vec<String> = t.secrets.clone();
    let mut allow: Vec<IpRange> = t.peers_allow.clone();
    let mut deny: Vec<IpRange> = t.peers_deny.clone();

    if let Some(db) = &db {
        for table in &db.missing {
            db_note(
                t,
                table,
                Verdict::NotNeeded,
                "this coturn schema has no such table; nothing to import from it".into(),
            );
        }
        let mut other_realm = 0;
        for u in &db.users {
            if u.realm.is_empty() {
                db_note(t, "turnusers_lt", Verdict::Unsupported, format!("user {:?} has no realm; its key cannot be used in any realm, so it is left out", u.name));
                continue;
            }
            let Some(key) = config::parse_md5_hex(&u.hmackey) else {
                db_note(t, "turnusers_lt", Verdict::Unsupported, format!("user {:?} of realm {:?}: the key has {} hex digits, not 32 (coturn's non-standard SHA password algorithm); set the password with `ferroturn user add`", u.name, u.realm, u.hmackey.len()));
                continue;
            };
            if u.realm != realm {
                other_realm += 1;
            }
            users.push(NewUser {
                realm: u.realm.clone(),
                name: u.name.clone(),
                secret: UserSecret::Md5Key(key),
            });
        }
        if other_realm > 0 {
            db_note(t, "turnusers_lt", Verdict::Caveat, format!("{other_realm} user(s) belong to realms other than {realm:?}; they are imported but authenticate only while server.realm is their realm (ferroturn serves one realm)"));
        }
        if !db.secrets.is_empty() {
            if t.use_auth_secret {
                secrets.extend(db.secrets.iter().map(|(_, s)| s.clone()));
            } else {
                db_note(
                    t,
                    "turn_secret",
                    Verdict::NotNeeded,
                    "coturn ignores these without use-auth-secret, so they are not imported".into(),
                );
            }
        }
        for (table, rows, out) in [
            ("allowed_peer_ip", &db.allowed, &mut allow),
            ("denied_peer_ip", &db.denied, &mut deny),
        ] {
            for (_, range) in rows {
                let r = IpRange::parse(range).ok_or_else(|| {
                    ImportError::Other(format!("coturn database, table {table}: {range:?} is not an IP, a range IP1-IP2 or a CIDR"))
                })?;
                out.push(r);
            }
        }
    }

    let (allow, deny) = peer_rules(&allow, &deny);
    let nets = |v: &[ipnet::IpNet]| -> toml::Value {
        toml::Value::Array(v.iter().map(|n| n.to_string().into()).collect())
    };
    if !allow.is_empty() {
        t.set("peers", "allow", nets(&allow));
    }
    if !deny.is_empty() {
        t.set("peers", "deny", nets(&deny));
    }

    let mut summary = String::new();
    match &args.store {
        Some(url) => {
            let store = Store::open(url).await?;
            let result = fill_store(&store, &users, &secrets, t).await;
            store.close().await;
            let (added_users, added_secrets) = result?;
            t.set("store", "url", url.clone());
            let key_only = users
                .iter()
                .filter(|u| matches!(u.secret, UserSecret::Md5Key(_)))
                .count();
            let _ = writeln!(
                summary,
                "store {}: {added_users} user(s) added ({key_only} of those imported stored by MD5 key only), {added_secrets} REST secret(s) added",
                store.location()
            );
        }
        None => {
            let keyed: Vec<&str> = users
                .iter()
                .filter(|u| matches!(u.secret, UserSecret::Md5Key(_)))
                .map(|u| u.name.as_str())
                .collect();
            if !keyed.is_empty() {
                return Err(ImportError::Other(format!(
                    "{} user(s) are known only by their key (coturn's database or user=NAME:0xKEY), e.g. {:?}; the TOML file holds passwords only: give --store FILE|URL to import them",
                    keyed.len(),
                    keyed[0]
                )));
            }
            let mut table = toml::Table::new();
            for u in &users {
                if let UserSecret::Password(p) = &u.secret {
                    table.insert(u.name.clone(), p.clone().into());
                }
            }
            if !table.is_empty() {
                t.set("auth", "users", table);
            }
            if !secrets.is_empty() {
                let list: Vec<toml::Value> = secrets.iter().map(|s| s.clone().into()).collect();
                t.set("auth", "secrets", list);
            }
            let _ = writeln!(
                summary,
                "{} user(s) and {} REST secret(s) written to the file (no --store)",
                users.len(),
                secrets.len()
            );
        }
    }
    t.notes.push(Note {
        line: 0,
        key: "peers".into(),
        verdict: Verdict::Caveat,
        reason: "ferroturn denies loopback, private (RFC 1918), link-local and other special-purpose peers by default, where coturn allowed them unless denied-peer-ip said otherwise; add networks your peers really are on to peers.allow".into(),
    });
    let _ = writeln!(
        summary,
        "realm {realm:?}; {} peer rule(s) allowed, {} denied; {} key(s) not translated (see the notes)",
        allow.len(),
        deny.len(),
        t.notes.iter().filter(|n| n.verdict != Verdict::Caveat).count()
    );
    Ok(summary)
}

/// Adds users and secrets; what is there already is kept and noted, so a
/// second run adds nothing. Returns (users added, secrets added).
async fn fill_store(
    store: &Store,
    users: &[NewUser],
    secrets: &[String],
    t: &mut Translation,
) -> Result<(usize, usize), ImportError> {
    let (mut added_users, mut added_secrets) = (0, 0);
    for u in users {
        let result = match &u.secret {
            UserSecret::Password(p) => store.add_user(&u.realm, &u.name, p).await,
            UserSecret::Md5Key(k) => store.add_user_md5_key(&u.realm, &u.name, *k).await,
        };
        match result {
            Ok(()) => added_users += 1,
            Err(StoreError::UserExists { realm, name }) => t.notes.push(Note {
                line: 0,
                key: "user".into(),
                verdict: Verdict::NotNeeded,
                reason: format!(
                    "{name:?} of realm {realm:?} is already in the store; kept as it is"
                ),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    // The store mints with the newest secret: add in reverse so that the
    // first one coturn listed ends up newest.
    for secret in secrets.iter().rev() {
        match store.add_secret(secret).await {
            Ok(_) => added_secrets += 1,
            Err(StoreError::SecretExists { id }) => t.notes.push(Note {
                line: 0,
                key: "static-auth-secret".into(),
                verdict: Verdict::NotNeeded,
                reason: format!("a secret is already in the store (id {id}); kept"),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((added_users, added_secrets))
}

/// Sections in the order of turnserver.toml.
const SECTIONS: [&str; 8] = [
    "server", "relay", "auth", "peers", "quota", "store", "metrics", "tls",
];

/// The output file: the notes as comments, then the sections.
fn render(file: &str, t: &Translation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Translated from coturn's {file} by `ferroturn import coturn`."
    );
    out.push_str("# Keys not set here keep ferroturn's defaults (see turnserver.toml).\n");
    out.push_str("# May hold passwords or secrets: readable by the server's user only.\n");
    if !t.notes.is_empty() {
        out.push_str("#\n# What was not translated as is, and why:\n");
        for note in &t.notes {
            let _ = writeln!(out, "#   {note}");
        }
    }
    for name in SECTIONS {
        let Some(section) = t.sections.get(name) else {
            continue;
        };
        let mut one = toml::Table::new();
        one.insert(name.to_owned(), toml::Value::Table(section.clone()));
        out.push('\n');
        // A table of strings, integers and arrays always serialises.
        out.push_str(&toml::to_string(&one).unwrap_or_default());
    }
    out
}

/// Writes `text` to `path`, created (or truncated) with mode 0600.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every translated key lands in a file ferroturn accepts, and the
    /// values arrive with their meaning.
    #[test]
    fn a_full_translation_is_a_valid_ferroturn_configuration() {
        let coturn = "\
listening-port=3479
tls-listening-port=5350
listening-ip=127.0.0.1
relay-ip=127.0.0.1
external-ip=203.0.113.7/127.0.0.1
min-port=50000
max-port=50100
realm=example.org
lt-cred-mech
user=alice:wonderland
use-auth-secret
static-auth-secret=north
cert=/etc/ssl/turn.pem
pkey=/etc/ssl/turn.key
denied-peer-ip=83.166.64.0-83.166.95.255
allowed-peer-ip=83.166.68.45
no-multicast-peers
user-quota=4
total-quota=100
max-bps=64000
stale-nonce=300
max-allocate-lifetime=1800
channel-lifetime=600
permission-lifetime=300
prometheus
no-tlsv1
fingerprint
no-software-attribute
log-file=/var/log/turn.log
verbose
";
        let mut t = config::translate(&config::parse(coturn)).unwrap();
        t.set("server", "realm", t.realm.clone().unwrap());
        let (allow, deny) = peer_rules(&t.peers_allow, &t.peers_deny);
        let nets = |v: &[ipnet::IpNet]| -> toml::Value {
            toml::Value::Array(v.iter().map(|n| n.to_string().into()).collect())
        };
        t.set("peers", "allow", nets(&allow));
        t.set("peers", "deny", nets(&deny));
        let text = render("turnserver.conf", &t);
        let cfg = RawConfig::from_toml_str(&text).unwrap().validate().unwrap();
        assert_eq!(cfg.realm, "example.org");
        assert_eq!(cfg.listen, ["127.0.0.1:3479".parse().unwrap()]);
        assert_eq!(cfg.relay.port_min, 50000);
        assert_eq!(cfg.relay.port_max, 50100);
        assert_eq!(
            cfg.relay.external_ips[0].to_string(),
            "203.0.113.7/127.0.0.1"
        );
        assert_eq!(cfg.relay.max_lifetime.as_secs(), 1800);
        assert_eq!(cfg.quota.max_allocations_per_user, 4);
        assert_eq!(cfg.quota.max_allocations, 100);
        assert_eq!(cfg.quota.max_bps_per_allocation, 64000);
        assert_eq!(cfg.auth.nonce_lifetime.as_secs(), 300);
        let tls = cfg.tls.unwrap();
        assert_eq!(tls.listen, ["127.0.0.1:5350".parse().unwrap()]);
        assert_eq!(cfg.log.level, "debug");
        assert_eq!(cfg.peers.allow.len(), 1);
        assert!(cfg.peers.deny.len() > 1);
        // The notes are comments at the top.
        assert!(
            text.contains("#   line 29: log-file (unsupported)"),
            "{text}"
        );
        assert!(
            text.contains("#   line 9: lt-cred-mech (not needed)"),
            "{text}"
        );
    }
}
