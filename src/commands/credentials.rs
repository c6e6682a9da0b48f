//! The credential administration commands: `ferroturn user`, `secret` and
//! `credential`. They work on the store directly, so they need no running
//! server; a running server notices the change through the store's
//! generation counter.
//!
//! Output rules, so that scripts can use the commands: what was asked for
//! (a table, JSON, a generated password or secret, a minted credential)
//! goes to stdout; confirmations and notes go to stderr. Passwords are never
//! printed except a generated one, once.

use std::fmt;
use std::io::{self, BufRead as _, IsTerminal as _, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString as _};
use rand::rngs::OsRng;
use serde::Serialize;

use crate::cli::{
    CredentialCommand, MintArgs, PasswordArgs, RevokeArgs, SecretAddArgs, SecretCommand,
    SecretListArgs, StoreArgs, UserCommand, UserListArgs, UserNameArgs, UserPasswordArgs,
};
use crate::config::{Config, ConfigError};
use crate::store::{Store, StoreError, StoreLocation};
use crate::time::{format_unix, unix_now};
use crate::turn::auth::rest_password;

/// Length of a generated password: 24 alphanumerics, about 143 bits.
const GENERATED_PASSWORD_LEN: usize = 24;
/// Length of a generated REST secret: 40 alphanumerics, about 238 bits
/// (more than HMAC-SHA1's block-size key needs to be unguessable).
const GENERATED_SECRET_LEN: usize = 40;
/// Realm when neither `--realm` nor `--config` gives one: the server's
/// default realm.
const DEFAULT_REALM: &str = "ferroturn";
/// Characters of a secret that `secret list` shows without `--show`.
const MASK_SHOWN_CHARS: usize = 4;

/// Why a credential command failed. Displayed after `error: ` by `main`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// From the store (exists, no such user, unreachable, bad URL, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From loading `--config`.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad argument or a missing input; the message names it.
    #[error("{0}")]
    Usage(String),
    /// Reading stdin or writing stdout failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

pub(crate) type Result<T, E = CredentialsError> = std::result::Result<T, E>;

pub(crate) fn usage<T>(message: impl Into<String>) -> Result<T> {
    Err(CredentialsError::Usage(message.into()))
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> CredentialsError {
    move |source| CredentialsError::Io { context, source }
}

/// Runs `fut` on a small single-threaded runtime: the commands do one
/// thing at a time, and the server's multi-threaded runtime is not
/// involved.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting the async runtime"))?;
    Ok(rt.block_on(fut))
}

// ---------------------------------------------------------------------------
// Store and configuration lookup
// ---------------------------------------------------------------------------

/// What `--db` / `--config` resolve to.
pub(crate) struct Target {
    /// The loaded configuration, if `--config` was given.
    pub(crate) config: Option<Config>,
    /// The store, if one is named.
    location: Option<StoreLocation>,
}

impl Target {
    pub(crate) fn resolve(args: &StoreArgs) -> Result<Target> {
        let config = match &args.config {
            Some(path) => Some(Config::load(path)?),
            None => None,
        };
        let location = match &args.db {
            Some(db) => Some(StoreLocation::parse(db)?),
            None => config.as_ref().and_then(|c| c.store.url.clone()),
        };
        Ok(Target { config, location })
    }

    /// The store location, or the error every store command gives without
    /// one.
    pub(crate) fn require_location(&self) -> Result<StoreLocation> {
        match &self.location {
            Some(location) => Ok(location.clone()),
            None => usage("no store: pass --db URL or set store.url in --config FILE"),
        }
    }

    /// `--realm`, else the configuration's realm, else the default.
    fn realm(&self, flag: Option<&str>) -> String {
        match (flag, &self.config) {
            (Some(realm), _) => realm.to_owned(),
            (None, Some(config)) => config.realm.clone(),
            (None, None) => DEFAULT_REALM.to_owned(),
        }
    }
}

pub(crate) async fn open(location: StoreLocation) -> Result<Store> {
    Ok(Store::open_location(location).await?)
}

// ---------------------------------------------------------------------------
// user
// ---------------------------------------------------------------------------

/// `ferroturn user ...`
pub fn user(command: &UserCommand) -> Result<()> {
    match command {
        UserCommand::Add(args) => user_set(args, true),
        UserCommand::Passwd(args) => user_set(args, false),
        UserCommand::Remove(args) => user_remove(args),
        UserCommand::List(args) => user_list(args),
    }
}

/// `user add` (`adding`) and `user passwd`.
fn user_set(args: &UserPasswordArgs, adding: bool) -> Result<()> {
    let target = Target::resolve(&args.store)?;
    let location = target.require_location()?;
    let realm = target.realm(args.realm.as_deref());
    block_on(async {
        // Open (and so check) the store before asking for a password that
        // would be typed twice for nothing.
        let store = open(location).await?;
        if !adding {
            // Same reason: a typo in the name should not cost a prompt.
            let exists = store
                .list_users(Some(&realm))
                .await?
                .iter()
                .any(|u| u.name == args.name);
            if !exists {
                return Err(StoreError::NoSuchUser {
                    realm: realm.clone(),
                    name: args.name.clone(),
                }
                .into());
            }
        }
        let password = obtain_password(&args.password, &args.name, &realm)?;
        let result = if adding {
            store.add_user(&realm, &args.name, &password.value).await
        } else {
            store
                .set_password(&realm, &args.name, &password.value)
                .await
        };
        store.close().await;
        result?;
        if password.generated {
            print_line(&password.value)?;
        }
        note(format_args!(
            "{} user {:?} in realm {:?}",
            if adding {
                "added"
            } else {
                "changed the password of"
            },
            args.name,
            realm
        ));
        Ok(())
    })?
}

fn user_remove(args: &UserNameArgs) -> Result<()> {
    let target = Target::resolve(&args.store)?;
    let location = target.require_location()?;
    let realm = target.realm(args.realm.as_deref());
    block_on(async {
        let store = open(location).await?;
        let result = store.remove_user(&realm, &args.name).await;
        store.close().await;
        result?;
        note(format_args!(
            "removed user {:?} from realm {:?}",
            args.name, realm
        ));
        Ok(())
    })?
}

/// One row of `user list --json`.
#[derive(Serialize)]
struct UserJson<'a> {
    realm: &'a str,
    name: &'a str,
    /// Unix seconds.
    created: i64,
    /// Stored by its MD5 key only (imported from coturn): authenticates
    /// with the MD5 password algorithm only, until `user passwd`.
    key_only: bool,
}

fn user_list(args: &UserListArgs) -> Result<()> {
    let target = Target::resolve(&args.store)?;
    let location = target.require_location()?;
    let users = block_on(async {
        let store = open(location).await?;
        let users = store.list_users(args.realm.as_deref()).await;
        store.close().await;
        Ok::<_, CredentialsError>(users?)
    })??;
    if args.json {
        let rows: Vec<UserJson<'_>> = users
            .iter()
            .map(|u| UserJson {
                realm: &u.realm,
                name: &u.name,
                created: u.created,
                key_only: u.key_only,
            })
            .collect();
        return print_json(&rows);
    }
    if users.is_empty() {
        note(format_args!("no users"));
        return Ok(());
    }
    // KEYS: "md5+sha256" for a user added with a password, "md5 only" for
    // one imported from coturn by its key (SHA-256 clients are refused
    // until `user passwd`).
    let rows: Vec<[String; 4]> = users
        .iter()
        .map(|u| {
            let keys = if u.key_only { "md5 only" } else { "md5+sha256" };
            [
                u.realm.clone(),
                u.name.clone(),
                format_unix(u.created),
                keys.to_owned(),
            ]
        })
        .collect();
    print_table(["REALM", "NAME", "CREATED", "KEYS"], &rows)
}

/// A password and whether we made it up (then it is printed once).
struct Password {
    value: String,
    generated: bool,
}

/// Gets the new password from the source the flags name. Without flags a
/// terminal prompt, asked twice; without a terminal that is an error rather
/// than a silent read of whatever stdin holds.
fn obtain_password(args: &PasswordArgs, name: &str, realm: &str) -> Result<Password> {
    if args.generate {
        return Ok(Password {
            value: Alphanumeric.sample_string(&mut OsRng, GENERATED_PASSWORD_LEN),
            generated: true,
        });
    }
    let value = if args.password_stdin {
        read_stdin_line("password")?
    } else {
        if !io::stdin().is_terminal() {
            return usage(
                "no password: stdin is not a terminal, so cannot prompt; pass --password-stdin or --generate",
            );
        }
        let first =
            rpassword::prompt_password(format!("Password for {name:?} in realm {realm:?}: "))
                .map_err(io_err("reading the password"))?;
        let second = rpassword::prompt_password("Repeat password: ")
            .map_err(io_err("reading the password"))?;
        if first != second {
            return usage("the passwords do not match; nothing changed");
        }
        first
    };
    if value.is_empty() {
        return usage("the password is empty; nothing changed");
    }
    Ok(Password {
        value,
        generated: false,
    })
}

/// One line from stdin without its line ending (`\n` or `\r\n`). Only the
/// ending is stripped: spaces may belong to the password.
fn read_stdin_line(what: &'static str) -> Result<String> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(io_err("reading stdin"))?;
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    if line.is_empty() {
        return usage(format!("no {what} on stdin (expected one line)"));
    }
    Ok(line)
}

// ---------------------------------------------------------------------------
// secret
// ---------------------------------------------------------------------------

/// `ferroturn secret ...`
pub fn secret(command: &SecretCommand) -> Result<()> {
    match command {
        SecretCommand::Add(args) => secret_add(args),
        SecretCommand::Remove(args) => {
            let location = Target::resolve(&args.store)?.require_location()?;
            let id = block_on(async {
                let store = open(location).await?;
                let id = store.remove_secret(&args.id_or_secret).await;
                store.close().await;
                Ok::<_, CredentialsError>(id?)
            })??;
            note(format_args!("removed secret {id}"));
            Ok(())
        }
        SecretCommand::List(args) => secret_list(args),
    }
}

fn secret_add(args: &SecretAddArgs) -> Result<()> {
    let location = Target::resolve(&args.store)?.require_location()?;
    block_on(async {
        let store = open(location).await?;
        let (secret, generated) = match (&args.secret, args.generate) {
            (_, true) => (
                Alphanumeric.sample_string(&mut OsRng, GENERATED_SECRET_LEN),
                true,
            ),
            (Some(secret), false) => (secret.clone(), false),
            (None, false) if io::stdin().is_terminal() => (
                rpassword::prompt_password("Secret: ").map_err(io_err("reading the secret"))?,
                false,
            ),
            (None, false) => (read_stdin_line("secret")?, false),
        };
        let id = store.add_secret(&secret).await;
        store.close().await;
        let id = id?;
        if generated {
            print_line(&secret)?;
        }
        note(format_args!(
            "added secret {id}; it is now the newest and mints credentials"
        ));
        Ok(())
    })?
}

/// One row of `secret list --json`.
#[derive(Serialize)]
struct SecretJson {
    id: i64,
    /// Masked unless `--show`.
    secret: String,
    /// Unix seconds.
    created: i64,
}

fn secret_list(args: &SecretListArgs) -> Result<()> {
    let location = Target::resolve(&args.store)?.require_location()?;
    let secrets = block_on(async {
        let store = open(location).await?;
        let secrets = store.list_secrets().await;
        store.close().await;
        Ok::<_, CredentialsError>(secrets?)
    })??;
    let shown = |s: &str| {
        if args.show {
            s.to_owned()
        } else {
            mask(s)
        }
    };
    if args.json {
        let rows: Vec<SecretJson> = secrets
            .iter()
            .map(|s| SecretJson {
                id: s.id,
                secret: shown(&s.secret),
                created: s.created,
            })
            .collect();
        return print_json(&rows);
    }
    if secrets.is_empty() {
        note(format_args!("no secrets"));
        return Ok(());
    }
    let rows: Vec<[String; 3]> = secrets
        .iter()
        .map(|s| [s.id.to_string(), format_unix(s.created), shown(&s.secret)])
        .collect();
    print_table(["ID", "CREATED", "SECRET"], &rows)
}

/// The first few characters and `…`: enough to tell secrets apart, not
/// enough to use one. Short secrets show at most half of themselves.
pub fn mask(secret: &str) -> String {
    let chars = secret.chars().count();
    let shown = MASK_SHOWN_CHARS.min(chars / 2);
    let mut out: String = secret.chars().take(shown).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// credential
// ---------------------------------------------------------------------------

/// `ferroturn credential ...`
pub fn credential(command: &CredentialCommand) -> Result<()> {
    match command {
        CredentialCommand::Mint(args) => mint(args),
        CredentialCommand::Revoke(args) => revoke(args),
    }
}

/// A WebRTC `RTCIceServer` entry.
#[derive(Debug, Clone, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// The longest name part of a minted username: STUN USERNAME is under 509
/// bytes, and `EXPIRY:` takes up to 21 of them.
pub const MAX_REST_NAME_BYTES: usize = 480;

/// Why `name` cannot be the NAME of a TURN REST username (`EXPIRY:NAME`), if it
/// cannot: `credential mint --user` and the API's `name` both check it.
pub fn rest_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Some("must be a non-empty name without control characters");
    }
    if name.len() > MAX_REST_NAME_BYTES {
        return Some("is too long: at most 480 bytes");
    }
    None
}

/// A TURN REST credential for `name`, valid until `expiry` (unix seconds),
/// signed with `secret`: username `EXPIRY:NAME`, credential
/// base64(HMAC-SHA1(secret, username)) — what the server's REST check
/// recomputes. `credential mint` and the credentials API both mint with it.
pub fn mint_ice_server(secret: &str, name: &str, expiry: u64, urls: Vec<String>) -> IceServer {
    let username = format!("{expiry}:{name}");
    IceServer {
        credential: rest_password(secret.as_bytes(), &username),
        username,
        urls,
    }
}

fn mint(args: &MintArgs) -> Result<()> {
    // Check every argument before touching the store.
    let ttl = parse_ttl(&args.ttl)?;
    for url in &args.urls {
        check_ice_url(url)?;
    }
    if let Some(problem) = rest_name_problem(&args.user) {
        return usage(format!("--user: {problem}"));
    }
    let target = Target::resolve(&args.store)?;
    let urls = if args.urls.is_empty() {
        vec![default_url(target.config.as_ref())]
    } else {
        args.urls.clone()
    };
    let secret = match (&args.secret, &target.location) {
        (Some(secret), _) if secret.is_empty() => return usage("--secret: must not be empty"),
        (Some(secret), _) => secret.clone(),
        (None, Some(location)) => {
            match block_on(newest_secret(location.clone()))?? {
                Some(secret) => secret,
                None => {
                    return usage(
                        "the store has no REST secret: add one with `ferroturn secret add` or pass --secret",
                    )
                }
            }
        }
        (None, None) => match target
            .config
            .as_ref()
            .and_then(|c| c.auth.secrets.first())
        {
            Some(secret) => secret.clone(),
            None => {
                return usage(
                    "no REST secret: pass --secret, or a store (--db URL, or store.url in --config FILE) that has one",
                )
            }
        },
    };
    let now = u64::try_from(unix_now()).unwrap_or(0);
    let Some(expiry) = now.checked_add(ttl.as_secs()) else {
        return usage(format!("--ttl: {:?} is too long", args.ttl));
    };
    let entry = mint_ice_server(&secret, &args.user, expiry, urls);
    print_json(&entry)?;
    note(format_args!(
        "valid until {} ({})",
        format_unix(i64::try_from(expiry).unwrap_or(i64::MAX)),
        args.ttl
    ));
    Ok(())
}

/// The newest REST secret in the store at `location` (the one that mints), if
/// it has any. Also used by `ferroturn doctor` to mint its test credential.
pub(crate) async fn newest_secret(location: StoreLocation) -> Result<Option<String>> {
    let store = open(location).await?;
    let secrets = store.list_secrets().await;
    store.close().await;
    Ok(secrets?.into_iter().max_by_key(|s| s.id).map(|s| s.secret))
}

fn revoke(args: &RevokeArgs) -> Result<()> {
    let Some(expiry) = rest_expiry(&args.username) else {
        return usage(format!(
            "{:?} is not a TURN REST username: expected EXPIRY:NAME with EXPIRY in unix seconds",
            args.username
        ));
    };
    let location = Target::resolve(&args.store)?.require_location()?;
    let until = format_unix(i64::try_from(expiry).unwrap_or(i64::MAX));
    if i64::try_from(expiry).is_ok_and(|e| e <= unix_now()) {
        note(format_args!(
            "{:?} already expired at {until}: the server refuses it anyway; nothing recorded",
            args.username
        ));
        return Ok(());
    }
    block_on(async {
        let store = open(location).await?;
        let result = store.revoke(&args.username, expiry).await;
        store.close().await;
        Ok::<_, CredentialsError>(result?)
    })??;
    note(format_args!("revoked {:?} until {until}", args.username));
    Ok(())
}

/// The expiry of a TURN REST username, by the server's own rule: the part
/// before the first `:` (or all of it), a non-empty run of ASCII digits.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let ts = username.split_once(':').map_or(username, |(ts, _)| ts);
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok()
}

/// Parses `--ttl` with the CLI's one duration syntax
/// ([`crate::time::parse_duration`]: `90s`, `30m`, `1h 30m`, `7d` or plain
/// seconds), more than zero and whole seconds, since a TURN REST username
/// carries its expiry in unix seconds.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let ttl = crate::time::parse_duration(text)
        .map_err(|e| CredentialsError::Usage(format!("--ttl: {e}")))?;
    if ttl.subsec_nanos() != 0 {
        return usage(format!("--ttl: {text:?} is not a whole number of seconds"));
    }
    Ok(ttl)
}

/// A URL for an iceServers entry: `stun:`, `turn:` or `turns:` and a host
/// ([`crate::config::check_ice_url`], the check `api.urls` gets too).
pub fn check_ice_url(url: &str) -> Result<()> {
    crate::config::check_ice_url(url)
        .map_err(|problem| CredentialsError::Usage(format!("--url: {problem}")))
}

/// `turn:ADDR?transport=udp` for the first listen address of the
/// configuration, or 127.0.0.1:3478. A wildcard listen address is no
/// address a client can use, so it becomes loopback of the same family.
fn default_url(config: Option<&Config>) -> String {
    let addr = config
        .and_then(|c| c.listen.first().copied())
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478));
    format!("turn:{}?transport=udp", reachable(addr))
}

/// `addr` as a client on this host reaches it: a wildcard listen address
/// (`0.0.0.0`, `::`) becomes loopback of the same family.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    let ip = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, addr.port())
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// A note for the operator on stderr. Best effort: a closed stderr is no
/// reason to fail a command that already succeeded.
pub(crate) fn note(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

pub(crate) fn print_line(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(io_err("writing to stdout"))
}

pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CredentialsError::Usage(format!("cannot format JSON: {e}")))?;
    print_line(&text)
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        line
    };
    let mut text = line(header);
    for row in rows {
        text.push('\n');
        text.push_str(&line(row.each_ref().map(String::as_str)));
    }
    print_line(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_formats() {
        let secs = |t: &str| parse_ttl(t).map(|d| d.as_secs()).ok();
        assert_eq!(secs("90s"), Some(90));
        assert_eq!(secs("30m"), Some(1800));
        assert_eq!(secs("24h"), Some(86_400));
        assert_eq!(secs("7d"), Some(604_800));
        assert_eq!(secs("3600"), Some(3600));
        assert_eq!(secs("1h 30m"), Some(5400));
        assert_eq!(secs("1.5h"), Some(5400));
        for bad in [
            "",
            "0",
            "0h",
            "h",
            "-5",
            "5x",
            "1.5",
            "1500ms",
            "99999999999999999999",
            "999999999999999999999d",
            "5hh",
        ] {
            match parse_ttl(bad) {
                Err(CredentialsError::Usage(msg)) => assert!(msg.starts_with("--ttl: "), "{msg}"),
                other => panic!("{bad:?} -> {other:?}"),
            }
        }
    }

    #[test]
    fn ice_urls() {
        for good in [
            "turn:turn.example.com:3478?transport=udp",
            "turns:turn.example.com:5349?transport=tcp",
            "stun:stun.example.com",
            "turn:[2001:db8::1]:3478",
        ] {
            assert!(check_ice_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://x",
            "turn:",
            "turn:?transport=udp",
            "TURNX:a",
            "",
            "turn:a b",
        ] {
            match check_ice_url(bad) {
                Err(CredentialsError::Usage(msg)) => assert!(msg.starts_with("--url: "), "{msg}"),
                other => panic!("{bad:?} -> {other:?}"),
            }
        }
    }

    #[test]
    fn default_url_avoids_wildcards() {
        assert_eq!(default_url(None), "turn:127.0.0.1:3478?transport=udp");
        let config = Config::default();
        assert_eq!(
            default_url(Some(&config)),
            "turn:127.0.0.1:3478?transport=udp"
        );
        let config = Config::from_toml_str("[server]\nlisten = [\"[::]:3479\"]\n").expect("valid");
        assert_eq!(default_url(Some(&config)), "turn:[::1]:3479?transport=udp");
        let config =
            Config::from_toml_str("[server]\nlisten = [\"192.0.2.1:3478\"]\n").expect("valid");
        assert_eq!(
            default_url(Some(&config)),
            "turn:192.0.2.1:3478?transport=udp"
        );
    }

    #[test]
    fn rest_usernames() {
        assert_eq!(rest_expiry("1700000000:alice"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:a:b"), Some(1_700_000_000));
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry(":alice"), None);
        assert_eq!(rest_expiry("+17:alice"), None);
        assert_eq!(rest_expiry("99999999999999999999999:x"), None);
    }

    #[test]
    fn masking_never_shows_a_whole_secret() {
        assert_eq!(mask("abcdefghijklmnop"), "abcd…");
        assert_eq!(mask("abcdef"), "abc…");
        assert_eq!(mask("ab"), "a…");
        assert_eq!(mask("a"), "…");
        assert_eq!(mask(""), "…");
        assert_eq!(mask("ééééééééé"), "éééé…");
    }
}
