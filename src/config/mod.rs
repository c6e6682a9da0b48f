//! Server configuration: a TOML file (see `turnserver.toml` and
//! `docs/configuration.md`), optionally overridden by command-line flags.
//!
//! Configuration is handled in two layers:
//!
//! * [`RawConfig`] mirrors the TOML file one-to-one. Every field has a
//!   default, so an empty file is valid, and unknown keys are rejected so that
//!   a typo (`realms = ...`) is an error instead of a silently ignored line.
//!   Values that need interpretation (addresses, ranges, CIDRs) are kept as
//!   strings and numbers as `i64`, so that *we* — not serde — report a bad
//!   value, and the report can always name the key it came from.
//! * [`Config`] is the validated, typed result of [`RawConfig::validate`].
//!   The server only ever sees a `Config`, so it never has to re-check
//!   anything.
//!
//! Command-line overrides (see [`crate::cli`]) are applied to the
//! `RawConfig` before validation, so a bad flag is reported exactly like a
//! bad file entry, with the flag named: `relay.port-range (from
//! --relay-ports): ...`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::store::{StoreError, StoreLocation};

/// RFC 8489 §14.9 / §14.14: REALM and SOFTWARE are "fewer than 128
/// characters (which can be as long as 763 bytes)".
const MAX_TEXT_CHARS: usize = 127;
/// See [`MAX_TEXT_CHARS`].
const MAX_TEXT_BYTES: usize = 763;
/// Upper bound for `server.threads`; anything above is surely a typo and
/// would only waste memory on idle shards.
const MAX_THREADS: i64 = 1024;
/// RFC 8656 §12: channel numbers are 0x4000 through 0x4FFF, so an allocation
/// can never have more than 4096 channels.
const MAX_CHANNELS: i64 = 0x1000;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a configuration could not be loaded.
///
/// Every variant says where the problem is: the file, the TOML location, or
/// the key path (`relay.port-range`, `peers.allow[2]`, `auth.users.alice`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("{}: cannot read configuration file: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or does not fit the schema (unknown key,
    /// wrong type). `message` is toml's own report, which names the key and
    /// shows the offending line.
    #[error("{}{message}", file_prefix(.file.as_deref()))]
    Parse {
        /// The file the text came from, if any.
        file: Option<PathBuf>,
        /// toml's error message (may span several lines).
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}{key}{}: {message}", invalid_prefix(.file.as_deref(), *.flag), flag_suffix(*.flag))]
    Invalid {
        /// Key path in the TOML schema, e.g. `relay.port-range` or
        /// `server.listen[1]`.
        key: String,
        /// What is wrong with the value.
        message: String,
        /// The command-line flag the value came from, if it was overridden.
        flag: Option<&'static str>,
        /// The file the value came from (only when not from a flag).
        file: Option<PathBuf>,
    },
}

impl ConfigError {
    /// The offending key path, for [`ConfigError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Builds an [`ConfigError::Invalid`] without origin information; the
    /// origin is attached by [`RawConfig::validate`].
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
            flag: None,
            file: None,
        }
    }
}

fn file_prefix(file: Option<&Path>) -> String {
    match file {
        Some(path) => format!("{}: ", path.display()),
        None => String::new(),
    }
}

/// A value that came from a flag did not come from the file, so the file is
/// only named when no flag is.
fn invalid_prefix(file: Option<&Path>, flag: Option<&'static str>) -> String {
    match flag {
        Some(_) => String::new(),
        None => file_prefix(file),
    }
}

fn flag_suffix(flag: Option<&'static str>) -> String {
    match flag {
        Some(flag) => format!(" (from {flag})"),
        None => String::new(),
    }
}

/// The key path of a static user, as used in error messages and in
/// [`RawConfig::mark_override`]: `auth.users.alice`, or
/// `auth.users."two words"` when the name is not a bare TOML key.
pub fn user_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        format!("auth.users.{name}")
    } else {
        format!("auth.users.{name:?}")
    }
}

// ---------------------------------------------------------------------------
// Raw layer (serde)
// ---------------------------------------------------------------------------

/// The configuration file as written, before validation.
///
/// Public so that the CLI can apply overrides; use [`RawConfig::validate`]
/// to turn it into a [`Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[relay]`
    pub relay: RawRelay,
    /// `[auth]`
    pub auth: RawAuth,
    /// `[peers]`
    pub peers: RawPeers,
    /// `[quota]`
    pub quota: RawQuota,
    /// `[store]`
    pub store: RawStore,
    /// `[metrics]`
    pub metrics: RawMetrics,
    /// `[tls]`
    pub tls: RawTls,
    /// `[drain]`
    pub drain: RawDrain,
    /// `[usage]`
    pub usage: RawUsage,
    /// `[admin]`
    pub admin: RawAdmin,
    /// Key path (or list key path) -> the flag that set it.
    #[serde(skip)]
    overrides: BTreeMap<String, &'static str>,
    /// The file this was loaded from, for error messages.
    #[serde(skip)]
    source_file: Option<PathBuf>,
}

/// `[server]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawServer {
    /// `listen`: socket addresses; UDP and TCP are served on each.
    pub listen: Vec<String>,
    /// `realm`
    pub realm: String,
    /// `software`; empty means no SOFTWARE attribute.
    pub software: String,
    /// `threads`; 0 means one per CPU core.
    pub threads: i64,
    /// `log-level`
    pub log_level: String,
    /// `log-format`
    pub log_format: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["0.0.0.0:3478".into(), "[::]:3478".into()],
            realm: "ferroturn".into(),
            software: String::new(),
            threads: 0,
            log_level: "info".into(),
            log_format: "human".into(),
        }
    }
}

/// `[relay]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRelay {
    /// `relay-ips`
    pub relay_ips: Vec<String>,
    /// `external-ips`: `PUBLIC` or `PUBLIC/PRIVATE`.
    pub external_ips: Vec<String>,
    /// `port-range`: `MIN-MAX`.
    pub port_range: String,
    /// `default-lifetime` in seconds.
    pub default_lifetime: i64,
    /// `max-lifetime` in seconds.
    pub max_lifetime: i64,
    /// `permission-lifetime` in seconds.
    pub permission_lifetime: i64,
    /// `channel-lifetime` in seconds.
    pub channel_lifetime: i64,
}

impl Default for RawRelay {
    fn default() -> Self {
        RawRelay {
            relay_ips: Vec::new(),
            external_ips: Vec::new(),
            // IANA dynamic/private range, as RFC 8656 §5 recommends.
            port_range: "49152-65535".into(),
            default_lifetime: 600,
            max_lifetime: 3600,
            permission_lifetime: 300,
            channel_lifetime: 600,
        }
    }
}

/// `[auth]` as written. `Debug` is written by hand so that passwords and
/// secrets never reach a log line.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAuth {
    /// `nonce-lifetime` in seconds.
    pub nonce_lifetime: i64,
    /// `secrets`: TURN REST shared secrets.
    pub secrets: Vec<String>,
    /// `[auth.users]`: name -> password. A `BTreeMap` so users come out
    /// sorted by name.
    pub users: BTreeMap<String, String>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            nonce_lifetime: 600,
            secrets: Vec::new(),
            users: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAuth")
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("secrets", &Redacted(self.secrets.len()))
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `[peers]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPeers {
    /// `allow`: CIDRs or bare IPs exempted from the default deny list.
    pub allow: Vec<String>,
    /// `deny`: extra denied CIDRs or bare IPs.
    pub deny: Vec<String>,
}

/// `[quota]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawQuota {
    /// `max-allocations-per-user`
    pub max_allocations_per_user: i64,
    /// `max-allocations`; 0 = unlimited.
    pub max_allocations: i64,
    /// `max-permissions-per-allocation`
    pub max_permissions_per_allocation: i64,
    /// `max-channels-per-allocation`
    pub max_channels_per_allocation: i64,
    /// `max-relay-ports`; 0 = limited by the port range only.
    pub max_relay_ports: i64,
    /// `max-bps-per-allocation`: bytes per second each way; 0 = unlimited.
    pub max_bps_per_allocation: i64,
}

impl Default for RawQuota {
    fn default() -> Self {
        RawQuota {
            max_allocations_per_user: 10,
            max_allocations: 0,
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            max_relay_ports: 0,
            max_bps_per_allocation: 0,
        }
    }
}

/// `[store]` as written. `Debug` is written by hand: a PostgreSQL URL may
/// carry a password.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawStore {
    /// `url`: SQLite path, `sqlite:` URL or `postgres://` URL; empty = no
    /// store.
    pub url: String,
}

/// `[tls]` as written: TURN over TLS (`turns:`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTls {
    /// `listen`: addresses for TLS over TCP; empty = 0.0.0.0:5349 and [::]:5349
    /// when a certificate is configured, none otherwise.
    pub listen: Vec<String>,
    /// `cert`: PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// `key`: PEM file with the private key of the leaf certificate.
    pub key: String,
    /// `handshake-timeout`: seconds a client has to finish the TLS handshake.
    pub handshake_timeout: i64,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            listen: Vec::new(),
            cert: String::new(),
            key: String::new(),
            handshake_timeout: 10,
        }
    }
}

impl fmt::Debug for RawStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawStore")
            .field("url", &crate::store::redact(&self.url))
            .finish()
    }
}

/// `[metrics]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMetrics {
    /// `listen`: IP:PORT of the HTTP endpoint (`/metrics`, `/healthz`,
    /// `/readyz`); empty = off.
    pub listen: String,
}

/// `[drain]` as written: what draining does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDrain {
    /// `alternate-server`: IP:PORT of servers to send new clients to (300 Try
    /// Alternate, in turn); empty = refuse them with 403.
    pub alternate_server: Vec<String>,
    /// `deadline`: seconds a drain started by SIGUSR1 waits for allocations
    /// to end before the process exits anyway.
    pub deadline: i64,
}

impl Default for RawDrain {
    fn default() -> Self {
        RawDrain {
            alternate_server: Vec::new(),
            deadline: 600,
        }
    }
}

/// `[usage]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUsage {
    /// `file`: where usage records go, one JSON line per finished
    /// allocation; "-" = stdout, "" = nowhere.
    pub file: String,
}

/// `[admin]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAdmin {
    /// `socket`: the admin Unix socket (mode 0600); "" = none.
    pub socket: String,
}

/// Where the admin socket is unless told otherwise (systemd's
/// `RuntimeDirectory=ferroturn` creates the directory).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/ferroturn/admin.sock";

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            socket: DEFAULT_ADMIN_SOCKET.into(),
        }
    }
}

/// Where the metrics endpoint listens unless told otherwise: loopback only, as
/// the endpoint has no authentication.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9641";

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: DEFAULT_METRICS_LISTEN.into(),
        }
    }
}

/// Prints `<N redacted>` in place of secret material.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted>", self.0)
    }
}

impl RawConfig {
    /// Parses TOML text. Unknown keys and wrong types are rejected with
    /// toml's message, which names the key and its line.
    pub fn from_toml_str(s: &str) -> Result<RawConfig, ConfigError> {
        Self::parse(s, None)
    }

    /// Reads and parses a file; later errors name the file.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    fn parse(s: &str, file: Option<&Path>) -> Result<RawConfig, ConfigError> {
        let mut raw: RawConfig = toml::from_str(s).map_err(|e| ConfigError::Parse {
            file: file.map(Path::to_path_buf),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.source_file = file.map(Path::to_path_buf);
        Ok(raw)
    }

    /// Records that `key` was set by command-line `flag`, so a validation
    /// error for it says `(from FLAG)` instead of blaming the file.
    ///
    /// `key` is either a whole key (`server.listen`, which then also covers
    /// `server.listen[N]`) or a single element (`peers.allow[3]`,
    /// `auth.users.alice` — see [`user_key`]).
    pub fn mark_override(&mut self, key: impl Into<String>, flag: &'static str) {
        self.overrides.insert(key.into(), flag);
    }

    /// Checks every value and produces the typed [`Config`].
    ///
    /// Stops at the first problem; the error names its key path.
    pub fn validate(self) -> Result<Config, ConfigError> {
        validate_parts(&self).map_err(|err| match err {
            ConfigError::Invalid { key, message, .. } => {
                let flag = origin(&self.overrides, &key);
                ConfigError::Invalid {
                    file: if flag.is_none() {
                        self.source_file
                    } else {
                        None
                    },
                    key,
                    message,
                    flag,
                }
            }
            other => other,
        })
    }
}

/// Which flag (if any) set `key`: an exact entry wins, else the entry for
/// the whole list that `key` indexes into.
fn origin(overrides: &BTreeMap<String, &'static str>, key: &str) -> Option<&'static str> {
    if let Some(flag) = overrides.get(key) {
        return Some(flag);
    }
    let list = key.split('[').next().unwrap_or(key);
    overrides.get(list).copied()
}

// ---------------------------------------------------------------------------
// Validated layer
// ---------------------------------------------------------------------------

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Addresses to serve STUN/TURN on, UDP and TCP each. Non-empty, no
    /// duplicates.
    pub listen: Vec<SocketAddr>,
    /// REALM sent in challenges and used in long-term credential keys.
    pub realm: String,
    /// SOFTWARE attribute text; `None` = don't send one (the default, so as
    /// not to advertise the version to scanners).
    pub software: Option<String>,
    /// Data-path shards; 0 = one per CPU core (see
    /// [`Config::effective_threads`]).
    pub threads: usize,
    /// Logging.
    pub log: LogConfig,
    /// Relay addresses, ports and lifetimes.
    pub relay: RelayConfig,
    /// Credentials.
    pub auth: AuthConfig,
    /// Peer address filtering.
    pub peers: PeerConfig,
    /// Resource limits.
    pub quota: QuotaConfig,
    /// The credential store, if any.
    pub store: StoreConfig,
    /// The metrics and health endpoint.
    pub metrics: MetricsConfig,
    /// TURN over TLS; `None` = no TLS listener.
    pub tls: Option<TlsConfig>,
    pub drain: DrainConfig,
    pub usage: UsageConfig,
    pub admin: AdminConfig,
}

/// `[drain]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// Where new clients are sent while draining; empty = 403.
    pub alternate_servers: Vec<SocketAddr>,
    /// How long a SIGUSR1 drain waits before exiting anyway.
    pub deadline: Duration,
}

/// `[usage]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    pub target: Option<UsageTarget>,
}

/// Where usage records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageTarget {
    Stdout,
    File(PathBuf),
}

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The admin socket's path; `None` = no admin socket.
    pub socket: Option<PathBuf>,
}

/// TURN over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Addresses to serve TLS on (TCP).
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain file (checked to exist; parsed at start).
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
    /// Time allowed for the handshake before the connection is closed.
    pub handshake_timeout: Duration,
}

/// The HTTP endpoint for Prometheus and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `None` = no endpoint.
    pub listen: Option<SocketAddr>,
}

/// Where users, REST secrets and revocations are kept besides the file.
/// `Debug` (via [`StoreLocation`]) hides a database password.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    /// The store's location; `None` = no store: the server uses only the
    /// users and secrets of `[auth]`.
    pub url: Option<StoreLocation>,
}

/// How to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive string (a bare level like `info` is
    /// one); already checked to parse.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Relay settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Addresses relay sockets bind to: at most one IPv4 and one IPv6.
    /// Empty = bind the wildcard address and advertise the address the
    /// client reached.
    pub relay_ips: Vec<IpAddr>,
    /// 1:1 NAT mappings advertised in XOR-RELAYED-ADDRESS; at most one per
    /// family.
    pub external_ips: Vec<ExternalIp>,
    /// Lowest relay port (inclusive), >= 1.
    pub port_min: u16,
    /// Highest relay port (inclusive), >= `port_min`.
    pub port_max: u16,
    /// Allocation lifetime when the client requests none.
    pub default_lifetime: Duration,
    /// Cap on requested allocation lifetimes; >= `default_lifetime`.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656 fixes 300 s; configurable for tests).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime.
    pub channel_lifetime: Duration,
}

/// One 1:1 NAT mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    /// The address clients and peers see.
    pub public: IpAddr,
    /// The local address that maps to `public`; `None` = whatever local
    /// address of the same family the relay socket has.
    pub private: Option<IpAddr>,
}

impl fmt::Display for ExternalIp {
    /// The configuration syntax: `PUBLIC` or `PUBLIC/PRIVATE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.private {
            Some(private) => write!(f, "{}/{private}", self.public),
            None => write!(f, "{}", self.public),
        }
    }
}

/// Credentials. `Debug` prints user names and a count of secrets, never
/// passwords or secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Static long-term credential users `(name, password)`, sorted by name.
    pub users: Vec<(String, String)>,
    /// TURN REST shared secrets; the first one is the one to mint with.
    pub secrets: Vec<String>,
    /// How long a NONCE stays valid.
    pub nonce_lifetime: Duration,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("AuthConfig")
            .field("users", &names)
            .field("secrets", &Redacted(self.secrets.len()))
            .field("nonce_lifetime", &self.nonce_lifetime)
            .finish()
    }
}

/// Peer filtering on top of the server's built-in deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Networks opened even though the default deny list covers them.
    pub allow: Vec<IpNet>,
    /// Additional denied networks.
    pub deny: Vec<IpNet>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Concurrent allocations per user name, >= 1.
    pub max_allocations_per_user: u32,
    /// Concurrent allocations server-wide; 0 = unlimited.
    pub max_allocations: u32,
    /// Permissions per allocation, >= 1.
    pub max_permissions_per_allocation: u32,
    /// Channels per allocation, 1..=4096.
    pub max_channels_per_allocation: u32,
    /// Relay ports in use server-wide; 0 = limited by the port range only.
    pub max_relay_ports: u32,
    /// Bytes per second an allocation may relay each way; 0 = unlimited.
    pub max_bps_per_allocation: u64,
}

impl Default for Config {
    /// The embedded safe defaults: exactly what an empty file validates to.
    fn default() -> Self {
        // The defaults are constants covered by a unit test, so this cannot
        // fail at run time.
        RawConfig::default()
            .validate()
            .expect("built-in configuration defaults are valid")
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        RawConfig::load(path)?.validate()
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        RawConfig::from_toml_str(s)?.validate()
    }

    /// `threads`, with 0 resolved to the number of CPU cores (1 if that
    /// cannot be determined).
    pub fn effective_threads(&self) -> usize {
        if self.threads != 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// A one-line, secret-free summary for `check` and the startup log.
    pub fn summary(&self) -> String {
        let listen: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
        let mut summary = format!(
            "listen [{}], realm {:?}, {} user(s), {} secret(s), relay ports {}-{}, threads {}",
            listen.join(", "),
            self.realm,
            self.auth.users.len(),
            self.auth.secrets.len(),
            self.relay.port_min,
            self.relay.port_max,
            if self.threads == 0 {
                "auto".to_owned()
            } else {
                self.threads.to_string()
            },
        );
        if let Some(store) = &self.store.url {
            summary.push_str(&format!(", store {store}"));
        }
        match self.metrics.listen {
            Some(addr) => summary.push_str(&format!(", metrics {addr}")),
            None => summary.push_str(", metrics off"),
        }
        summary
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn invalid<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(ConfigError::invalid(key, message))
}

/// Validates every section of `raw`; errors name their key.
fn validate_parts(raw: &RawConfig) -> Result<Config> {
    let RawConfig {
        server,
        relay,
        auth,
        peers,
        quota,
        store,
        metrics,
        tls,
        drain,
        usage,
        admin,
        ..
    } = raw;
    let listen = validate_listen(&server.listen)?;
    let realm = validate_text("server.realm", &server.realm)?;
    if realm.is_empty() {
        return invalid("server.realm", "must not be empty");
    }
    let software = validate_text("server.software", &server.software)?;
    let software = (!software.is_empty()).then_some(software);
    let threads = int_in("server.threads", server.threads, 0, MAX_THREADS)?;
    let log = LogConfig {
        level: validate_log_level(&server.log_level)?,
        format: match server.log_format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return invalid(
                    "server.log-format",
                    format!("{other:?} is not one of \"human\", \"json\""),
                )
            }
        },
    };

    let relay = validate_relay(relay)?;
    let auth = validate_auth(auth)?;
    let peers = PeerConfig {
        allow: validate_nets("peers.allow", &peers.allow)?,
        deny: validate_nets("peers.deny", &peers.deny)?,
    };
    let quota = QuotaConfig {
        max_allocations_per_user: int_in(
            "quota.max-allocations-per-user",
            quota.max_allocations_per_user,
            1,
            u32::MAX.into(),
        )?,
        max_allocations: int_in(
            "quota.max-allocations",
            quota.max_allocations,
            0,
            u32::MAX.into(),
        )?,
        max_permissions_per_allocation: int_in(
            "quota.max-permissions-per-allocation",
            quota.max_permissions_per_allocation,
            1,
            u32::MAX.into(),
        )?,
        max_channels_per_allocation: int_in(
            "quota.max-channels-per-allocation",
            quota.max_channels_per_allocation,
            1,
            MAX_CHANNELS,
        )?,
        max_relay_ports: int_in(
            "quota.max-relay-ports",
            quota.max_relay_ports,
            0,
            u16::MAX.into(),
        )?,
        max_bps_per_allocation: int_in(
            "quota.max-bps-per-allocation",
            quota.max_bps_per_allocation,
            0,
            i64::MAX,
        )?,
    };

    let store = validate_store(store)?;
    let metrics = validate_metrics(metrics)?;
    let tls = validate_tls(tls)?;
    if let Some(t) = &tls {
        // Port 0 means "any free port", which cannot clash.
        if let Some(a) = t
            .listen
            .iter()
            .find(|a| a.port() != 0 && listen.contains(a))
        {
            return invalid("tls.listen", format!("{a} is also in server.listen"));
        }
    }

    let drain = DrainConfig {
        alternate_servers: parse_addresses("drain.alternate-server", &drain.alternate_server)?,
        deadline: Duration::from_secs(int_in("drain.deadline", drain.deadline, 1, 7 * 86_400)?),
    };
    let usage = UsageConfig {
        target: match usage.file.trim() {
            "" => None,
            "-" => Some(UsageTarget::Stdout),
            path => Some(UsageTarget::File(PathBuf::from(path))),
        },
    };
    let admin = AdminConfig {
        socket: match admin.socket.trim() {
            "" => None,
            path if !path.starts_with('/') => {
                return invalid(
                    "admin.socket",
                    format!("{path:?} is not an absolute path (or \"\" for none)"),
                )
            }
            path => Some(PathBuf::from(path)),
        },
    };

    Ok(Config {
        listen,
        realm,
        software,
        threads,
        log,
        relay,
        auth,
        peers,
        quota,
        store,
        metrics,
        tls,
        drain,
        usage,
        admin,
    })
}

fn validate_metrics(metrics: &RawMetrics) -> Result<MetricsConfig> {
    let value = metrics.listen.trim();
    if value.is_empty() {
        return Ok(MetricsConfig { listen: None });
    }
    match value.parse::<SocketAddr>() {
        Ok(addr) => Ok(MetricsConfig { listen: Some(addr) }),
        Err(_) => invalid(
            "metrics.listen",
            format!("{value:?} is not IP:PORT (write IPv6 as [ADDR]:PORT), or \"\" for off"),
        ),
    }
}

/// Converts a raw integer to the target type if it is within
/// `min..=max`, naming `key` otherwise.
fn int_in<T: TryFrom<i64>>(key: &str, value: i64, min: i64, max: i64) -> Result<T> {
    if !(min..=max).contains(&value) {
        return invalid(key, format!("{value} is out of range {min}..={max}"));
    }
    T::try_from(value).or_else(|_| invalid(key, format!("{value} is out of range")))
}

/// A lifetime in whole seconds: at least 1 (0 would expire immediately),
/// at most what the 32-bit LIFETIME attribute can carry.
fn seconds(key: &str, value: i64) -> Result<Duration> {
    let secs: u32 = int_in(key, value, 1, u32::MAX.into())?;
    Ok(Duration::from_secs(secs.into()))
}

/// REALM/SOFTWARE text: no control characters (they would corrupt log
/// lines and some clients' parsers) and within RFC 8489's size limits.
fn validate_text(key: &str, value: &str) -> Result<String> {
    if value.chars().any(char::is_control) {
        return invalid(key, "must not contain control characters");
    }
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS || value.len() > MAX_TEXT_BYTES {
        return invalid(
            key,
            format!(
                "is {chars} characters / {} bytes; RFC 8489 allows fewer than 128 characters and at most {MAX_TEXT_BYTES} bytes",
                value.len()
            ),
        );
    }
    Ok(value.to_owned())
}

fn validate_log_level(value: &str) -> Result<String> {
    let level = value.trim();
    if level.is_empty() {
        return invalid(
            "server.log-level",
            "must not be empty (use trace, debug, info, warn, error or an EnvFilter directive)",
        );
    }
    match crate::logging::env_filter(level) {
        Ok(_) => Ok(level.to_owned()),
        Err(e) => invalid(
            "server.log-level",
            format!("{value:?} is not a level (trace, debug, info, warn, error) or a valid EnvFilter directive: {e}"),
        ),
    }
}

fn validate_listen(values: &[String]) -> Result<Vec<SocketAddr>> {
    if values.is_empty() {
        return invalid("server.listen", "at least one address is required");
    }
    parse_addresses("server.listen", values)
}

/// Parses a list of IP:PORT, naming `list[i]` in errors; no duplicates.
fn parse_addresses(list: &str, values: &[String]) -> Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let key = format!("{list}[{i}]");
        let Ok(addr) = value.trim().parse::<SocketAddr>() else {
            return invalid(
                key,
                format!("{value:?} is not IP:PORT (write IPv6 as [ADDR]:PORT)"),
            );
        };
        if let Some(j) = addrs.iter().position(|a| *a == addr) {
            return invalid(key, format!("{value:?} duplicates {list}[{j}]"));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A unicast address we can bind to or advertise: the wildcard means "no
/// address" (leave the list empty for that) and multicast cannot carry a
/// relayed transport address.
fn check_unicast(key: &str, what: &str, ip: IpAddr) -> Result<()> {
    if ip.is_unspecified() {
        return invalid(
            key,
            format!("{what} {ip} is the wildcard address; leave relay.relay-ips empty to bind the wildcard"),
        );
    }
    if ip.is_multicast() {
        return invalid(key, format!("{what} {ip} is a multicast address"));
    }
    Ok(())
}

fn validate_relay(relay: &RawRelay) -> Result<RelayConfig> {
    let mut relay_ips: Vec<IpAddr> = Vec::new();
    for (i, value) in relay.relay_ips.iter().enumerate() {
        let key = format!("relay.relay-ips[{i}]");
        let Ok(ip) = value.trim().parse::<IpAddr>() else {
            return invalid(key, format!("{value:?} is not an IP address"));
        };
        check_unicast(&key, "address", ip)?;
        if let Some(j) = relay_ips.iter().position(|r| r.is_ipv4() == ip.is_ipv4()) {
            return invalid(
                key,
                format!(
                    "second {} address (relay.relay-ips[{j}] is {}); at most one IPv4 and one IPv6 address are allowed",
                    family(&ip),
                    relay_ips[j]
                ),
            );
        }
        relay_ips.push(ip);
    }

    let mut external_ips: Vec<ExternalIp> = Vec::new();
    for (i, value) in relay.external_ips.iter().enumerate() {
        let key = format!("relay.external-ips[{i}]");
        let ext = parse_external_ip(&key, value)?;
        if let Some(j) = external_ips
            .iter()
            .position(|e| e.public.is_ipv4() == ext.public.is_ipv4())
        {
            return invalid(
                key,
                format!(
                    "second {} mapping (relay.external-ips[{j}] is one); at most one per address family",
                    family(&ext.public)
                ),
            );
        }
        // With both a relay IP and a private address for a family, the
        // relay socket is bound to the relay IP, so that is the only
        // address that can be the private side of the mapping.
        if let Some(private) = ext.private {
            if let Some(relay_ip) = relay_ips.iter().find(|r| r.is_ipv4() == private.is_ipv4()) {
                if *relay_ip != private {
                    return invalid(
                        key,
                        format!(
                            "PRIVATE {private} is not the {} relay address {relay_ip} from relay.relay-ips",
                            family(&private)
                        ),
                    );
                }
            }
        }
        external_ips.push(ext);
    }

    let (port_min, port_max) = parse_port_range(&relay.port_range).ok_or_else(|| {
        ConfigError::invalid(
            "relay.port-range",
            format!(
                "{:?} is not MIN-MAX with 1 <= MIN <= MAX <= 65535",
                relay.port_range
            ),
        )
    })?;

    let default_lifetime = seconds("relay.default-lifetime", relay.default_lifetime)?;
    let max_lifetime = seconds("relay.max-lifetime", relay.max_lifetime)?;
    if max_lifetime < default_lifetime {
        return invalid(
            "relay.max-lifetime",
            format!(
                "{} is less than relay.default-lifetime ({})",
                relay.max_lifetime, relay.default_lifetime
            ),
        );
    }
    Ok(RelayConfig {
        relay_ips,
        external_ips,
        port_min,
        port_max,
        default_lifetime,
        max_lifetime,
        permission_lifetime: seconds("relay.permission-lifetime", relay.permission_lifetime)?,
        channel_lifetime: seconds("relay.channel-lifetime", relay.channel_lifetime)?,
    })
}

fn parse_external_ip(key: &str, value: &str) -> Result<ExternalIp> {
    let text = value.trim();
    let (public_text, private_text) = match text.split_once('/') {
        Some((public, private)) => (public.trim(), Some(private.trim())),
        None => (text, None),
    };
    let bad = || {
        ConfigError::invalid(
            key,
            format!("{value:?} is not PUBLIC or PUBLIC/PRIVATE (two IP addresses, not a CIDR)"),
        )
    };
    let public: IpAddr = public_text.parse().map_err(|_| bad())?;
    let private: Option<IpAddr> = match private_text {
        Some(p) => Some(p.parse().map_err(|_| bad())?),
        None => None,
    };
    check_unicast(key, "PUBLIC", public)?;
    if let Some(private) = private {
        check_unicast(key, "PRIVATE", private)?;
        if private.is_ipv4() != public.is_ipv4() {
            return invalid(
                key,
                format!(
                    "PUBLIC {public} is {} but PRIVATE {private} is {}; both must be the same family",
                    family(&public),
                    family(&private)
                ),
            );
        }
    }
    Ok(ExternalIp { public, private })
}

/// `MIN-MAX` with `1 <= MIN <= MAX <= 65535`; `None` otherwise.
pub fn parse_port_range(value: &str) -> Option<(u16, u16)> {
    let (min, max) = value.trim().split_once('-')?;
    let min: u16 = min.trim().parse().ok()?;
    let max: u16 = max.trim().parse().ok()?;
    (min >= 1 && min <= max).then_some((min, max))
}

/// `store.url`: empty means no store; anything else must be a location
/// [`StoreLocation::parse`] accepts. Nothing connects here.
/// TLS needs a certificate and its key together; addresses default to port 5349.
fn validate_tls(tls: &RawTls) -> Result<Option<TlsConfig>> {
    let (cert, key) = (tls.cert.trim(), tls.key.trim());
    match (cert.is_empty(), key.is_empty()) {
        (true, true) if tls.listen.is_empty() => return Ok(None),
        (true, true) => return invalid("tls.cert", "required when tls.listen is set"),
        (false, true) => return invalid("tls.key", "required with tls.cert"),
        (true, false) => return invalid("tls.cert", "required with tls.key"),
        (false, false) => {}
    }
    // The files are read at start-up (`net::tls`), where a missing one or a key
    // that does not match stops the server with an error naming the key: a
    // configuration can be checked on a machine that does not hold the secrets.
    let listen = if tls.listen.is_empty() {
        vec![
            SocketAddr::from(([0, 0, 0, 0], 5349)),
            SocketAddr::from(([0u16; 8], 5349)),
        ]
    } else {
        parse_addresses("tls.listen", &tls.listen)?
    };
    let secs: u64 = int_in("tls.handshake-timeout", tls.handshake_timeout, 1, 300)?;
    Ok(Some(TlsConfig {
        listen,
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
        handshake_timeout: Duration::from_secs(secs),
    }))
}

fn validate_store(store: &RawStore) -> Result<StoreConfig> {
    if store.url.is_empty() {
        return Ok(StoreConfig { url: None });
    }
    match StoreLocation::parse(&store.url) {
        Ok(location) => Ok(StoreConfig {
            url: Some(location),
        }),
        // The message already shows the URL with its password redacted.
        Err(StoreError::BadUrl(message)) => invalid("store.url", message),
        Err(other) => invalid("store.url", other.to_string()),
    }
}

fn validate_auth(auth: &RawAuth) -> Result<AuthConfig> {
    let nonce_lifetime = seconds("auth.nonce-lifetime", auth.nonce_lifetime)?;
    for (i, secret) in auth.secrets.iter().enumerate() {
        // Never echo the secret itself.
        if secret.is_empty() {
            return invalid(format!("auth.secrets[{i}]"), "must not be empty");
        }
    }
    let mut users = Vec::with_capacity(auth.users.len());
    for (name, password) in &auth.users {
        let key = user_key(name);
        if name.is_empty() {
            return invalid(key, "user name must not be empty");
        }
        if name.chars().any(char::is_control) {
            return invalid(key, "user name must not contain control characters");
        }
        // Never echo the password itself.
        if password.is_empty() {
            return invalid(key, "password must not be empty");
        }
        users.push((name.clone(), password.clone()));
    }
    Ok(AuthConfig {
        users,
        secrets: auth.secrets.clone(),
        nonce_lifetime,
    })
}

/// Parses a CIDR or a bare IP (meaning a single host). A CIDR with host bits
/// set (`10.1.2.3/8`) is rejected rather than silently widened or narrowed:
/// in an access list the operator should see exactly what is opened.
fn parse_net(key: &str, value: &str) -> Result<IpNet> {
    let text = value.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return invalid(
                key,
                format!(
                    "{value:?} has host bits set; write the network {} or a bare IP",
                    net.trunc()
                ),
            );
        }
        return Ok(net);
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => invalid(
            key,
            format!("{value:?} is not a CIDR (ADDR/PREFIX) or an IP address"),
        ),
    }
}

fn validate_nets(list: &str, values: &[String]) -> Result<Vec<IpNet>> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| parse_net(&format!("{list}[{i}]"), value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_empty_file() {
        let from_empty = Config::from_toml_str("").expect("empty file is valid");
        assert_eq!(from_empty, Config::default());
        assert_eq!(from_empty.listen.len(), 2);
        assert_eq!(from_empty.software, None);
        assert_eq!(
            (from_empty.relay.port_min, from_empty.relay.port_max),
            (49152, 65535)
        );
    }

    #[test]
    fn origin_lookup_exact_then_list() {
        let mut o = BTreeMap::new();
        o.insert("server.listen".to_owned(), "--listen");
        o.insert("peers.allow[2]".to_owned(), "--allow-peer");
        assert_eq!(origin(&o, "server.listen[3]"), Some("--listen"));
        assert_eq!(origin(&o, "server.listen"), Some("--listen"));
        assert_eq!(origin(&o, "peers.allow[2]"), Some("--allow-peer"));
        assert_eq!(origin(&o, "peers.allow[1]"), None);
        assert_eq!(origin(&o, "server.realm"), None);
    }

    #[test]
    fn user_key_quotes_non_bare_names() {
        assert_eq!(user_key("alice"), "auth.users.alice");
        assert_eq!(user_key("a b"), "auth.users.\"a b\"");
        assert_eq!(user_key(""), "auth.users.\"\"");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let config = Config::from_toml_str(
            "[auth]\nsecrets = [\"s3cr3t-value\"]\n[auth.users]\nalice = \"pa55word\"\n",
        )
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("s3cr3t-value"));
        assert!(!shown.contains("pa55word"));
        let raw = RawConfig::from_toml_str(
            "[auth]\nsecrets = [\"s3cr3t-value\"]\n[auth.users]\nalice = \"pa55word\"\n",
        )
        .expect("valid");
        let shown = format!("{raw:?}");
        assert!(!shown.contains("s3cr3t-value"));
        assert!(!shown.contains("pa55word"));
    }

    #[test]
    fn port_range_parsing() {
        assert_eq!(parse_port_range("1-65535"), Some((1, 65535)));
        assert_eq!(parse_port_range("5000-5000"), Some((5000, 5000)));
        assert_eq!(parse_port_range("0-10"), None);
        assert_eq!(parse_port_range("10-9"), None);
        assert_eq!(parse_port_range("70000-1"), None);
        assert_eq!(parse_port_range("5000"), None);
    }

    #[test]
    fn external_ip_displays_in_config_syntax() {
        let config = Config::from_toml_str(
            "[relay]\nexternal-ips = [\"203.0.113.7/10.0.0.5\", \"2001:db8::7\"]\n",
        )
        .expect("valid");
        let shown: Vec<String> = config
            .relay
            .external_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["203.0.113.7/10.0.0.5", "2001:db8::7"]);
    }

    #[test]
    fn effective_threads_resolves_zero() {
        let mut config = Config::default();
        assert!(config.effective_threads() >= 1);
        config.threads = 3;
        assert_eq!(config.effective_threads(), 3);
    }
}
