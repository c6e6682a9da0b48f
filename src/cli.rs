//! Command-line interface: `ferroturn serve`, `ferroturn check`, the
//! credential administration commands `user`, `secret` and `credential`
//! (carried out by [`crate::commands`]) and the load generator `bench`
//! ([`crate::bench`]).
//!
//! `serve` flags override the configuration file. They are applied to the
//! [`RawConfig`] *before* validation, so a bad flag value is reported by the
//! same rules and with the same key path as a bad file entry, plus the flag
//! it came from: `relay.port-range (from --relay-ports): ...`.
//!
//! Values that need interpretation (addresses, ranges, `NAME:PASSWORD`) are
//! taken as plain strings here for that reason — and, for credentials, so
//! that clap never echoes a password in a usage error.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{user_key, Config, ConfigError, RawConfig};

mod credentials;
pub use credentials::*;

/// A STUN/TURN server (RFC 8489, RFC 8656, RFC 6156).
#[derive(Debug, Parser)]
#[command(name = "ferroturn", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per process, so the size difference between variants is
// irrelevant; boxing would only make matching on them clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Load and validate a configuration file, then exit.
    Check(CheckArgs),
    /// Manage long-term credential users in the store.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage TURN REST shared secrets in the store.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Mint or revoke TURN REST (ephemeral) credentials.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// List or end the allocations of a running server (admin socket).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Make a running server re-read its configuration (admin socket; same as
    /// SIGHUP, but reports whether the new configuration was accepted).
    Reload(AdminArgs),
    /// Make a running server drain: refuse new allocations, keep relaying the
    /// existing ones, exit when none is left or at the deadline.
    Drain(DrainArgs),
    /// Load-test a STUN/TURN server (this one or another): Binding, allocation,
    /// relay throughput, latency and memory per allocation.
    Bench(crate::bench::BenchArgs),
    /// Check a running server from where you are: listeners, credentials,
    /// relay address, relaying, TLS certificate, peer policy; prints an
    /// iceServers entry for the app. Exit status 0 only when nothing FAILs.
    Doctor(DoctorArgs),
    /// Manage the bearer tokens of the credentials API ([api]) in the store.
    #[command(subcommand)]
    ApiToken(ApiTokenCommand),
    /// Move from another TURN server: translate its configuration and
    /// import its users, secrets and peer rules.
    #[command(subcommand)]
    Import(ImportCommand),
    /// The nodes sharing this PostgreSQL store ([cluster]).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `ferroturn import ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ImportCommand {
    /// From coturn: translates turnserver.conf into a ferroturn TOML (listing
    /// every key that is not translated, and why) and imports the users, REST
    /// secrets and peer ranges of coturn's SQLite or PostgreSQL database.
    Coturn(ImportCoturnArgs),
}

/// `ferroturn import coturn`. `Debug` is written by hand: database URLs may
/// carry passwords.
#[derive(Clone, Args)]
pub struct ImportCoturnArgs {
    /// coturn's configuration file (e.g. /etc/turnserver.conf).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// coturn's user database: a SQLite file or a postgresql:// URL.
    /// Default: userdb / psql-userdb of --config, if set.
    #[arg(long, value_name = "FILE|URL")]
    pub db: Option<String>,
    /// The ferroturn configuration to write (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// ferroturn credential store to import users and secrets into (a SQLite
    /// path or postgres:// URL; created if needed). Required for users coturn
    /// knows only by key. Without it, passwords and secrets go into --out.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

impl fmt::Debug for ImportCoturnArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportCoturnArgs")
            .field("config", &self.config)
            .field("db", &self.db.as_deref().map(crate::store::redact))
            .field("out", &self.out)
            .field("store", &self.store.as_deref().map(crate::store::redact))
            .field("force", &self.force)
            .finish()
    }
}

/// `ferroturn serve`: configuration file plus overrides.
///
/// List flags either *replace* the file's list (`--listen`, `--relay-ip`,
/// `--external-ip`) because mixing an operator's one-off addresses with the
/// file's is rarely what is meant, or *add* to it (`--user`,
/// `--auth-secret`, `--allow-peer`, `--deny-peer`) because credentials and
/// peer rules are naturally cumulative.
///
/// `Debug` is written by hand: it shows user names, never passwords or
/// secrets.
#[derive(Clone, Default, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it the built-in defaults apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on (UDP and TCP); repeatable; replaces
    /// server.listen.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<String>,

    /// Overrides server.realm.
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,

    /// Overrides server.software (empty = send no SOFTWARE attribute).
    #[arg(long, value_name = "TEXT")]
    pub software: Option<String>,

    /// Overrides server.threads (0 = one per CPU core).
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,

    /// Overrides server.log-level (level or EnvFilter directive).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Overrides server.log-format: human or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Static user NAME:PASSWORD; repeatable; adds to auth.users (same name
    /// replaces the file's password). The name cannot contain ':'.
    /// Command lines are visible to other local users: prefer the file.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,

    /// TURN REST shared secret; repeatable; adds to auth.secrets.
    /// Command lines are visible to other local users: prefer the file, or
    /// the environment (FERROTURN_AUTH_SECRET, one secret, used when no
    /// --auth-secret is given; e.g. from a Kubernetes Secret).
    #[arg(
        long = "auth-secret",
        value_name = "SECRET",
        env = "FERROTURN_AUTH_SECRET",
        hide_env_values = true
    )]
    pub auth_secrets: Vec<String>,

    /// Relay bind address; repeatable; replaces relay.relay-ips.
    #[arg(long = "relay-ip", value_name = "IP")]
    pub relay_ips: Vec<String>,

    /// 1:1 NAT mapping PUBLIC[/PRIVATE]; repeatable; replaces
    /// relay.external-ips.
    #[arg(long = "external-ip", value_name = "PUBLIC[/PRIVATE]")]
    pub external_ips: Vec<String>,

    /// Overrides relay.port-range.
    #[arg(long, value_name = "MIN-MAX")]
    pub relay_ports: Option<String>,

    /// TLS listen address (repeatable); replaces tls.listen.
    #[arg(long = "tls-listen", value_name = "ADDR:PORT")]
    pub tls_listen: Vec<String>,

    /// DTLS (UDP) listen address (repeatable); replaces tls.dtls-listen.
    #[arg(long = "dtls-listen", value_name = "ADDR:PORT")]
    pub dtls_listen: Vec<String>,

    /// PEM certificate chain for TLS; overrides tls.cert.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<String>,

    /// PEM private key for TLS; overrides tls.key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<String>,

    /// Peer network to allow despite the default deny list; repeatable; adds
    /// to peers.allow.
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peers: Vec<String>,

    /// Peer network to deny; repeatable; adds to peers.deny.
    #[arg(long = "deny-peer", value_name = "CIDR")]
    pub deny_peers: Vec<String>,

    /// Overrides quota.max-allocations-per-user.
    #[arg(long, value_name = "N")]
    pub max_allocations_per_user: Option<u32>,

    /// Turns on RFC 6062 TCP allocations (relay.tcp-allocations = true).
    #[arg(long)]
    pub tcp_allocations: bool,

    /// Overrides quota.max-allocations-per-ip (0 = unlimited).
    #[arg(long, value_name = "N")]
    pub max_allocations_per_ip: Option<u32>,
    /// Overrides rate-limit.unauthenticated-per-second (0 = no limit on error
    /// answers to unauthenticated requests; load tests from one address).
    #[arg(long, value_name = "N")]
    pub unauthenticated_per_second: Option<u32>,

    /// Credential store: a SQLite path, sqlite: URL or postgres:// URL;
    /// overrides store.url. Also read from FERROTURN_DB, as the admin
    /// commands do, so that a URL with a password stays off the command line.
    #[arg(long, value_name = "URL", env = "FERROTURN_DB", hide_env_values = true)]
    pub db: Option<String>,

    /// Metrics and health endpoint address (IP:PORT), or "off"; overrides
    /// metrics.listen.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Credentials API address (IP:PORT), or "off"; overrides api.listen.
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,

    /// Admin socket path, or "off"; overrides admin.socket.
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<String>,

    /// Usage records file ("-" = stdout, "off" = none); overrides usage.file.
    #[arg(long, value_name = "PATH")]
    pub usage_file: Option<String>,

    /// Server to redirect new clients to while draining (IP:PORT);
    /// repeatable; replaces drain.alternate-server.
    #[arg(long = "alternate-server", value_name = "ADDR:PORT")]
    pub alternate_servers: Vec<String>,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user_names: Vec<&str> = self
            .users
            .iter()
            .map(|u| u.split_once(':').map_or("<malformed>", |(name, _)| name))
            .collect();
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("realm", &self.realm)
            .field("software", &self.software)
            .field("threads", &self.threads)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("users", &user_names)
            .field(
                "auth_secrets",
                &format_args!("<{} redacted>", self.auth_secrets.len()),
            )
            .field("relay_ips", &self.relay_ips)
            .field("external_ips", &self.external_ips)
            .field("relay_ports", &self.relay_ports)
            .field("allow_peers", &self.allow_peers)
            .field("deny_peers", &self.deny_peers)
            .field("max_allocations_per_user", &self.max_allocations_per_user)
            .field("max_allocations_per_ip", &self.max_allocations_per_ip)
            .field("tcp_allocations", &self.tcp_allocations)
            .field(
                "unauthenticated_per_second",
                &self.unauthenticated_per_second,
            )
            .field("db", &self.db.as_deref().map(crate::store::redact))
            .field("metrics", &self.metrics)
            .field("api_listen", &self.api_listen)
            .finish()
    }
}

impl ServeArgs {
    /// Loads `--config` (or the defaults), applies the overrides and
    /// validates.
    pub fn build_config(&self) -> Result<Config, ConfigError> {
        let mut raw = match &self.config {
            Some(path) => RawConfig::load(path)?,
            None => RawConfig::default(),
        };
        self.apply_overrides(&mut raw)?;
        raw.validate()
    }

    /// Applies the flags to `raw`, recording which keys they set so that
    /// validation errors name the flag.
    ///
    /// Fails only for a `--user` value without `:`; everything else is
    /// checked by [`RawConfig::validate`].
    pub fn apply_overrides(&self, raw: &mut RawConfig) -> Result<(), ConfigError> {
        if !self.listen.is_empty() {
            raw.server.listen = self.listen.clone();
            raw.mark_override("server.listen", "--listen");
        }
        if let Some(realm) = &self.realm {
            raw.server.realm = realm.clone();
            raw.mark_override("server.realm", "--realm");
        }
        if let Some(software) = &self.software {
            raw.server.software = software.clone();
            raw.mark_override("server.software", "--software");
        }
        if let Some(threads) = self.threads {
            raw.server.threads = threads.into();
            raw.mark_override("server.threads", "--threads");
        }
        if let Some(level) = &self.log_level {
            raw.server.log_level = level.clone();
            raw.mark_override("server.log-level", "--log-level");
        }
        if let Some(format) = &self.log_format {
            raw.server.log_format = format.clone();
            raw.mark_override("server.log-format", "--log-format");
        }
        for (i, user) in self.users.iter().enumerate() {
            let Some((name, password)) = user.split_once(':') else {
                // The value is not echoed: it may well be a bare password.
                return Err(ConfigError::Invalid {
                    key: "auth.users".into(),
                    message: format!(
                        "--user value #{} is not NAME:PASSWORD (value not shown; it may contain a password)",
                        i + 1
                    ),
                    flag: Some("--user"),
                    file: None,
                });
            };
            raw.auth.users.insert(name.to_owned(), password.to_owned());
            raw.mark_override(user_key(name), "--user");
        }
        for secret in &self.auth_secrets {
            let index = raw.auth.secrets.len();
            raw.auth.secrets.push(secret.clone());
            raw.mark_override(format!("auth.secrets[{index}]"), "--auth-secret");
        }
        if !self.relay_ips.is_empty() {
            raw.relay.relay_ips = self.relay_ips.clone();
            raw.mark_override("relay.relay-ips", "--relay-ip");
        }
        if !self.external_ips.is_empty() {
            raw.relay.external_ips = self.external_ips.clone();
            raw.mark_override("relay.external-ips", "--external-ip");
        }
        if let Some(range) = &self.relay_ports {
            raw.relay.port_range = range.clone();
            raw.mark_override("relay.port-range", "--relay-ports");
        }
        if !self.tls_listen.is_empty() {
            raw.tls.listen = self.tls_listen.clone();
            raw.mark_override("tls.listen", "--tls-listen");
        }
        if !self.dtls_listen.is_empty() {
            raw.tls.dtls_listen = self.dtls_listen.clone();
            raw.mark_override("tls.dtls-listen", "--dtls-listen");
        }
        if let Some(cert) = &self.cert {
            raw.tls.cert = cert.clone();
            raw.mark_override("tls.cert", "--cert");
        }
        if let Some(key) = &self.key {
            raw.tls.key = key.clone();
            raw.mark_override("tls.key", "--key");
        }
        for net in &self.allow_peers {
            let index = raw.peers.allow.len();
            raw.peers.allow.push(net.clone());
            raw.mark_override(format!("peers.allow[{index}]"), "--allow-peer");
        }
        for net in &self.deny_peers {
            let index = raw.peers.deny.len();
            raw.peers.deny.push(net.clone());
            raw.mark_override(format!("peers.deny[{index}]"), "--deny-peer");
        }
        if let Some(db) = &self.db {
            raw.store.url = db.clone();
            raw.mark_override("store.url", "--db");
        }
        if let Some(m) = &self.metrics {
            raw.metrics.listen = if m.trim() == "off" {
                String::new()
            } else {
                m.clone()
            };
            raw.mark_override("metrics.listen", "--metrics");
        }
        if let Some(a) = &self.api_listen {
            raw.api.listen = if a.trim() == "off" {
                String::new()
            } else {
                a.clone()
            };
            raw.mark_override("api.listen", "--api-listen");
        }
        if let Some(a) = &self.admin_socket {
            raw.admin.socket = if a.trim() == "off" {
                String::new()
            } else {
                a.clone()
            };
            raw.mark_override("admin.socket", "--admin-socket");
        }
        if let Some(u) = &self.usage_file {
            raw.usage.file = if u.trim() == "off" {
                String::new()
            } else {
                u.clone()
            };
            raw.mark_override("usage.file", "--usage-file");
        }
        if !self.alternate_servers.is_empty() {
            raw.drain.alternate_server = self.alternate_servers.clone();
            raw.mark_override("drain.alternate-server", "--alternate-server");
        }
        if self.tcp_allocations {
            raw.relay.tcp_allocations = true;
            raw.mark_override("relay.tcp-allocations", "--tcp-allocations");
        }
        if let Some(n) = self.max_allocations_per_ip {
            raw.quota.max_allocations_per_ip = n.into();
            raw.mark_override("quota.max-allocations-per-ip", "--max-allocations-per-ip");
        }
        if let Some(n) = self.max_allocations_per_user {
            raw.quota.max_allocations_per_user = n.into();
            raw.mark_override(
                "quota.max-allocations-per-user",
                "--max-allocations-per-user",
            );
        }
        if let Some(n) = self.unauthenticated_per_second {
            raw.rate_limit.unauthenticated_per_second = n.into();
            raw.mark_override(
                "rate-limit.unauthenticated-per-second",
                "--unauthenticated-per-second",
            );
        }
        Ok(())
    }
}

/// Where an admin command finds the running server's admin socket.
#[derive(Debug, Clone, Default, Args)]
pub struct AdminArgs {
    /// The admin socket (default: admin.socket of --config, else
    /// /run/ferroturn/admin.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Configuration file whose admin.socket to use.
    #[arg(long, value_name = "FILE", conflicts_with = "socket")]
    pub config: Option<PathBuf>,
}

/// `ferroturn drain`.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub admin: AdminArgs,

    /// How long to wait for allocations to end before exiting anyway
    /// (e.g. 90s, 10m, 1h; default drain.deadline of the server).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub deadline: Option<std::time::Duration>,

    /// Cancel the drain in progress: accept new allocations again.
    #[arg(long, conflicts_with = "deadline")]
    pub cancel: bool,
}

/// `ferroturn sessions ...`
#[derive(Debug, Clone, Subcommand)]
pub enum SessionsCommand {
    /// List the live allocations: ID, user, client, relayed addresses, age,
    /// traffic.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// One JSON object per allocation instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End allocations at once (usage record reason "killed").
    Kill {
        #[command(flatten)]
        admin: AdminArgs,
        /// Every allocation of this user.
        #[arg(
            long,
            value_name = "NAME",
            required_unless_present = "id",
            conflicts_with = "id"
        )]
        user: Option<String>,
        /// The allocation with this ID (from `sessions list`).
        #[arg(long, value_name = "ID")]
        id: Option<u64>,
    },
}

/// A duration such as `90s`, `10m` or `1h 30m` ([`crate::time::parse_duration`]),
/// at least one second.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match crate::time::parse_duration(s)? {
        d if d >= std::time::Duration::from_secs(1) => Ok(d),
        _ => Err(format!("{s:?} is shorter than 1s")),
    }
}

/// `ferroturn doctor`: where the server is, how to authenticate, what to
/// expect. Everything defaults to what `--config` says, so that on the
/// server's own host `ferroturn doctor --config FILE` is enough.
///
/// `Debug` is written by hand: it shows the user name, never a password, a
/// secret or a store URL's password.
#[derive(Clone, Args)]
pub struct DoctorArgs {
    /// The server's configuration file (as for `serve`): its listen and TLS
    /// addresses, credentials (auth.secrets, auth.users, store.url) and
    /// relay.external-ips are used unless a flag says otherwise.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// STUN/TURN address for UDP and TCP (HOST[:PORT], default port 3478).
    /// Default: the first server.listen of --config (a wildcard address
    /// means loopback), else 127.0.0.1:3478.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,

    /// TURN-over-TLS address (HOST[:PORT], default port 5349). Default: the
    /// first tls.listen of --config; without either, TLS is not checked.
    #[arg(long, value_name = "HOST:PORT")]
    pub tls_server: Option<String>,

    /// TURN-over-DTLS address (HOST[:PORT], UDP, default port 5349). Default:
    /// the first tls.dtls-listen of --config; without either, DTLS is not checked.
    #[arg(long, value_name = "HOST:PORT")]
    pub dtls_server: Option<String>,

    /// Authenticate as this static user. Command lines are visible to other
    /// local users: prefer --config.
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub user: Option<String>,

    /// Mint a TURN REST credential with this shared secret (default: the
    /// newest secret of the store, else the first of auth.secrets, else the
    /// first user of auth.users of --config).
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,

    /// Credential store to take the newest REST secret from; overrides
    /// store.url of --config.
    #[arg(long, value_name = "URL", env = "FERROTURN_DB", hide_env_values = true)]
    pub db: Option<String>,

    /// The public address allocations must be relayed from; repeatable.
    /// Default: the public addresses of relay.external-ips of --config.
    #[arg(long = "expect-relay-ip", value_name = "IP")]
    pub expect_relay_ips: Vec<std::net::IpAddr>,

    /// Name the TLS certificate must be valid for (default: the host of the
    /// TLS address).
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,

    /// PEM file of the CA(s) to verify the certificate with, for a private
    /// CA (default: the Mozilla roots built in, as browsers use).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// How long each check may take (e.g. 3s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,

    /// One JSON object ({"checks": [...], "iceServers": [...]}) instead of a
    /// table.
    #[arg(long)]
    pub json: bool,
}

impl fmt::Debug for DoctorArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoctorArgs")
            .field("config", &self.config)
            .field("server", &self.server)
            .field("tls_server", &self.tls_server)
            .field("dtls_server", &self.dtls_server)
            .field(
                "user",
                &self
                    .user
                    .as_deref()
                    .map(|u| u.split_once(':').map_or("<malformed>", |(name, _)| name)),
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db.as_deref().map(crate::store::redact))
            .field("expect_relay_ips", &self.expect_relay_ips)
            .field("tls_name", &self.tls_name)
            .field("ca", &self.ca)
            .field("timeout", &self.timeout)
            .field("json", &self.json)
            .finish()
    }
}

/// `ferroturn check`: validate a configuration file.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Configuration file (TOML) to check.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_args_debug_hides_credentials() {
        let args = ServeArgs {
            users: vec!["alice:hunter2".into()],
            auth_secrets: vec!["topsecret".into()],
            ..ServeArgs::default()
        };
        let shown = format!("{args:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("topsecret"));
    }
}
