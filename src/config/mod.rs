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
//!
//! The loading and merging live here; each section of the file has a module
//! of its own with its raw and validated types and its checks (`server`,
//! `relay`, `auth`, `peers`, `quota`, `rate_limit`, `connections`, `store`, `metrics`,
//! `tls`, `drain`, `cluster`, `usage`, `admin`, `api`), checks shared between sections are in
//! `validate`, and
//! [`ConfigError`] in `error`. Everything public is re-exported here, so
//! paths are `crate::config::Name`.
#![forbid(unsafe_code)]

mod admin;
mod api;
mod auth;
mod cluster;
mod connections;
mod drain;
mod error;
mod metrics;
mod offload;
mod peers;
mod quota;
mod rate_limit;
mod relay;
mod server;
mod store;
mod tls;
mod usage;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use admin::{AdminConfig, RawAdmin, DEFAULT_ADMIN_SOCKET};
pub use api::{check_ice_url, ApiConfig, RawApi};
pub use auth::{user_key, AuthConfig, RawAuth};
pub use cluster::{ClusterConfig, RawCluster};
pub use connections::{ConnectionsConfig, RawConnections};
pub use drain::{DrainConfig, RawDrain};
pub use error::ConfigError;
pub use metrics::{MetricsConfig, RawMetrics, DEFAULT_METRICS_LISTEN};
pub use offload::{OffloadConfig, OffloadMode, RawOffload};
pub use peers::{PeerConfig, RawPeers};
pub use quota::{QuotaConfig, RawQuota};
pub use rate_limit::{RateLimitConfig, RawRateLimit};
pub use relay::{parse_port_range, ExternalIp, RawRelay, RelayConfig};
pub use server::{LogConfig, LogFormat, NatDiscoveryConfig, RawServer};
pub use store::{RawStore, StoreConfig};
pub use tls::{RawTls, TlsConfig};
pub use usage::{RawUsage, UsageConfig, UsageTarget};

use admin::validate_admin;
use api::validate_api;
use auth::validate_auth;
use cluster::validate_cluster;
use connections::validate_connections;
use drain::validate_drain;
use metrics::validate_metrics;
use offload::validate_offload;
use peers::validate_peers;
use quota::validate_quota;
use rate_limit::validate_rate_limit;
use relay::validate_relay;
use server::validate_server;
use store::validate_store;
use tls::validate_tls;
use usage::validate_usage;
use validate::{invalid, Result};

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
    /// `[rate-limit]`
    pub rate_limit: RawRateLimit,
    /// `[connections]`
    pub connections: RawConnections,
    /// `[store]`
    pub store: RawStore,
    /// `[metrics]`
    pub metrics: RawMetrics,
    /// `[tls]`
    pub tls: RawTls,
    /// `[drain]`
    pub drain: RawDrain,
    /// `[cluster]`
    pub cluster: RawCluster,
    /// `[usage]`
    pub usage: RawUsage,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[api]`
    pub api: RawApi,
    /// `[offload]`
    pub offload: RawOffload,
    /// Key path (or list key path) -> the flag that set it.
    #[serde(skip)]
    overrides: BTreeMap<String, &'static str>,
    /// The file this was loaded from, for error messages.
    #[serde(skip)]
    source_file: Option<PathBuf>,
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
    /// The longest datagram or stream frame taken from a client
    /// (`server.max-message-size`); see [`crate::turn::DEFAULT_MAX_MESSAGE_SIZE`].
    pub max_message_size: usize,
    /// Logging.
    pub log: LogConfig,
    /// `server.stun-only`: answer Binding only, refuse every TURN request.
    pub stun_only: bool,
    /// `server.stun-only-listen`: the addresses of `listen` that answer
    /// Binding only.
    pub stun_only_listen: Vec<SocketAddr>,
    /// `server.nat-discovery` (RFC 5780) with its addresses; `None` when off.
    pub nat_discovery: Option<NatDiscoveryConfig>,
    /// Relay addresses, ports and lifetimes.
    pub relay: RelayConfig,
    /// Credentials.
    pub auth: AuthConfig,
    /// Peer address filtering.
    pub peers: PeerConfig,
    /// Resource limits.
    pub quota: QuotaConfig,
    /// Limits on unauthenticated work per source.
    pub rate_limit: RateLimitConfig,
    /// Limits on TCP/TLS client connections.
    pub connections: ConnectionsConfig,
    /// The credential store, if any.
    pub store: StoreConfig,
    /// The metrics and health endpoint.
    pub metrics: MetricsConfig,
    /// TURN over TLS; `None` = no TLS listener.
    pub tls: Option<TlsConfig>,
    pub drain: DrainConfig,
    /// The node registry and redirect by load.
    pub cluster: ClusterConfig,
    pub usage: UsageConfig,
    pub admin: AdminConfig,
    /// The credentials API for apps.
    pub api: ApiConfig,
    /// The in-kernel ChannelData fast path (off by default).
    pub offload: OffloadConfig,
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
        if let Some(addr) = self.api.listen {
            summary.push_str(&format!(", api {addr}"));
        }
        summary
    }
}

/// Validates every section of `raw`, in file order (a struct expression's fields
/// are evaluated in the order written); errors name their key.
fn validate_parts(raw: &RawConfig) -> Result<Config> {
    let server = validate_server(&raw.server)?;
    // Validated ahead of the rest (in file order still) because `[api]` needs them.
    let relay = validate_relay(&raw.relay)?;
    let auth = validate_auth(&raw.auth)?;
    let peers = validate_peers(&raw.peers)?;
    let quota = validate_quota(&raw.quota)?;
    let rate_limit = validate_rate_limit(&raw.rate_limit)?;
    let connections = validate_connections(&raw.connections)?;
    let store = validate_store(&raw.store)?;
    let metrics = validate_metrics(&raw.metrics)?;
    let tls = validate_tls_beside(&raw.tls, &server.listen)?;
    Ok(Config {
        relay,
        auth,
        peers,
        quota,
        rate_limit,
        connections,
        metrics,
        cluster: validate_cluster_beside(
            &raw.cluster,
            &store,
            &validate_drain(&raw.drain)?.alternate_servers,
        )?,
        drain: validate_drain(&raw.drain)?,
        usage: validate_usage(&raw.usage)?,
        admin: validate_admin(&raw.admin)?,
        offload: validate_offload(&raw.offload)?,
        api: validate_api_beside(&raw.api, &store, tls.is_some())?,
        store,
        tls,
        listen: server.listen,
        realm: server.realm,
        software: server.software,
        threads: server.threads,
        max_message_size: server.max_message_size,
        log: server.log,
        stun_only: server.stun_only,
        stun_only_listen: server.stun_only_listen,
        nat_discovery: server.nat_discovery,
    })
}

/// `[cluster]`, whose registry lives in a PostgreSQL store: a redirect
/// threshold needs one, or static `drain.alternate-server`s, to find
/// somewhere to send clients.
fn validate_cluster_beside(
    raw: &RawCluster,
    store: &StoreConfig,
    alternates: &[SocketAddr],
) -> Result<ClusterConfig> {
    let cluster = validate_cluster(raw)?;
    let has_targets = matches!(store.url, Some(crate::store::StoreLocation::Postgres(_)))
        || !alternates.is_empty();
    for (key, set) in [
        (
            "cluster.redirect-above-allocations",
            cluster.redirect_above_allocations != 0,
        ),
        (
            "cluster.redirect-above-mbps",
            cluster.redirect_above_bps != 0,
        ),
    ] {
        if set && !has_targets {
            return invalid(
                key,
                "needs a PostgreSQL store.url (the nodes to redirect to are found in its registry) or drain.alternate-server",
            );
        }
    }
    Ok(cluster)
}

/// `[api]`, which keeps its tokens in the credential store and serves HTTPS
/// with the `[tls]` certificate.
fn validate_api_beside(raw: &RawApi, store: &StoreConfig, has_tls: bool) -> Result<ApiConfig> {
    let api = validate_api(raw)?;
    if api.listen.is_some() && store.url.is_none() {
        return invalid(
            "api.listen",
            "the API's bearer tokens live in the credential store: set store.url too",
        );
    }
    if api.tls && !has_tls {
        return invalid(
            "api.tls",
            "true needs the [tls] certificate: set tls.cert and tls.key",
        );
    }
    Ok(api)
}

/// `[tls]`, whose listeners must not repeat one of `server.listen`.
fn validate_tls_beside(raw: &RawTls, listen: &[SocketAddr]) -> Result<Option<TlsConfig>> {
    let tls = validate_tls(raw)?;
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
    Ok(tls)
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
    fn dtls_listen_is_off_by_default_and_needs_the_certificate() {
        let tls = Config::from_toml_str("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n")
            .unwrap()
            .tls
            .expect("TLS on with a certificate");
        assert!(tls.dtls_listen.is_empty(), "no DTLS unless asked for");
        let tls = Config::from_toml_str(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\ndtls-listen = [\"0.0.0.0:5349\"]\n",
        )
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(tls.dtls_listen, vec!["0.0.0.0:5349".parse().unwrap()]);
        let err = Config::from_toml_str("[tls]\ndtls-listen = [\"0.0.0.0:5349\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls.cert") && err.contains("dtls-listen"),
            "{err}"
        );
        let err = Config::from_toml_str(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\ndtls-listen = [\"5349\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls.dtls-listen[0]"), "{err}");
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
    fn api_needs_a_store_and_tls_for_https() {
        let err = |toml: &str| match Config::from_toml_str(toml) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let api = "[api]\nlisten = \"127.0.0.1:0\"\nurls = [\"turn:a\"]\n";
        assert_eq!(err(api), "api.listen");
        let with_store = format!("[store]\nurl = \"x.db\"\n{api}");
        let config = Config::from_toml_str(&with_store).expect("valid");
        assert!(config.api.listen.is_some());
        assert!(config.summary().contains(", api 127.0.0.1:0"));
        assert_eq!(err(&format!("{with_store}tls = true\n")), "api.tls");
    }

    #[test]
    fn tls_shared_defaults_off_and_needs_a_certificate() {
        let tls = |toml: &str| Config::from_toml_str(toml).map(|c| c.tls);
        assert_eq!(tls("").expect("valid"), None);
        let cert = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        assert!(!tls(cert).expect("valid").expect("TLS on").shared);
        let shared = tls(&format!("{cert}shared = true\n")).expect("valid");
        assert!(shared.expect("TLS on").shared);
        match tls("[tls]\nshared = true\n") {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "tls.shared"),
            other => panic!("{other:?}"),
        }
        match tls("[tls]\nshared = \"yes\"\n") {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains("shared"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn effective_threads_resolves_zero() {
        let mut config = Config::default();
        assert!(config.effective_threads() >= 1);
        config.threads = 3;
        assert_eq!(config.effective_threads(), 3);
    }
}
