//! The arguments of the credential administration commands: `user`, `secret`,
//! `credential` and `api-token`, and where they find their store.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Where a store command finds its store (and, from the configuration, its
/// default realm and listen address).
///
/// `Debug` is written by hand: a PostgreSQL URL may carry a password.
#[derive(Clone, Default, Args)]
pub struct StoreArgs {
    /// Credential store: a SQLite path, sqlite: URL or postgres:// URL.
    /// Overrides store.url of --config.
    #[arg(long, value_name = "URL", env = "FERROTURN_DB", hide_env_values = true)]
    pub db: Option<String>,

    /// Configuration file: supplies store.url (unless --db is given), the
    /// default realm and the listen address for minted credentials.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreArgs")
            .field("db", &self.db.as_deref().map(crate::store::redact))
            .field("config", &self.config)
            .finish()
    }
}

/// Where a new password comes from. Neither flag: an interactive prompt
/// (asked twice), which needs a terminal on stdin.
#[derive(Debug, Clone, Default, Args)]
pub struct PasswordArgs {
    /// Read the password from stdin (one line; the line ending is
    /// stripped). For scripts; keeps it off the command line.
    #[arg(long, conflicts_with = "generate")]
    pub password_stdin: bool,

    /// Generate a strong random password and print it (once) to stdout.
    #[arg(long)]
    pub generate: bool,
}

/// `ferroturn user ...`
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Add a user (password from a prompt, --password-stdin or --generate).
    Add(UserPasswordArgs),
    /// Remove a user.
    Remove(UserNameArgs),
    /// List users.
    List(UserListArgs),
    /// Set a user's password.
    Passwd(UserPasswordArgs),
}

/// `user add` / `user passwd`.
#[derive(Debug, Clone, Args)]
pub struct UserPasswordArgs {
    /// The user name.
    pub name: String,
    /// Realm (default: server.realm of --config, else "ferroturn"). The
    /// realm is hashed into the stored keys.
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// Password source.
    #[command(flatten)]
    pub password: PasswordArgs,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `user remove`.
#[derive(Debug, Clone, Args)]
pub struct UserNameArgs {
    /// The user name.
    pub name: String,
    /// Realm (default: server.realm of --config, else "ferroturn").
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `user list`.
#[derive(Debug, Clone, Args)]
pub struct UserListArgs {
    /// Only users of this realm (default: all realms).
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `ferroturn secret ...`
#[derive(Debug, Clone, Subcommand)]
pub enum SecretCommand {
    /// Add a REST shared secret (the newest one mints credentials).
    Add(SecretAddArgs),
    /// Remove a secret by id or by value.
    Remove(SecretRemoveArgs),
    /// List secrets (masked unless --show).
    List(SecretListArgs),
}

/// `secret add`. `Debug` hides the secret.
#[derive(Clone, Args)]
pub struct SecretAddArgs {
    /// The secret. Without it (and without --generate) it is read from
    /// stdin: a hidden prompt on a terminal, else one line. Command lines
    /// are visible to other local users: prefer stdin.
    #[arg(value_name = "SECRET")]
    pub secret: Option<String>,
    /// Generate a strong random secret and print it (once) to stdout.
    #[arg(long, conflicts_with = "secret")]
    pub generate: bool,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

impl fmt::Debug for SecretAddArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretAddArgs")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("generate", &self.generate)
            .field("store", &self.store)
            .finish()
    }
}

/// `secret remove`. `Debug` hides the argument (it may be the secret).
#[derive(Clone, Args)]
pub struct SecretRemoveArgs {
    /// The secret's id (see `secret list`) or the secret itself.
    #[arg(value_name = "ID_OR_SECRET")]
    pub id_or_secret: String,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

impl fmt::Debug for SecretRemoveArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRemoveArgs")
            .field("id_or_secret", &"<redacted>")
            .field("store", &self.store)
            .finish()
    }
}

/// `secret list`.
#[derive(Debug, Clone, Args)]
pub struct SecretListArgs {
    /// Show the secrets in full (default: the first characters and `…`).
    #[arg(long)]
    pub show: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `ferroturn credential ...`
#[derive(Debug, Clone, Subcommand)]
pub enum CredentialCommand {
    /// Mint a TURN REST credential and print it as a WebRTC iceServers
    /// entry (JSON).
    Mint(MintArgs),
    /// Revoke a TURN REST username (EXPIRY:NAME) until it expires.
    Revoke(RevokeArgs),
}

/// `credential mint`. `Debug` hides `--secret`.
#[derive(Clone, Args)]
pub struct MintArgs {
    /// The name part of the username (`EXPIRY:NAME`).
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// How long the credential is valid: 90s, 30m, 24h, 7d or plain
    /// seconds.
    #[arg(long, value_name = "DURATION")]
    pub ttl: String,
    /// TURN/STUN URL for the entry (stun:, turn: or turns:); repeatable.
    /// Default: turn:<first listen address of --config, else
    /// 127.0.0.1:3478>?transport=udp.
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Shared secret to mint with (default: the newest secret in the
    /// store, else the first of auth.secrets in --config). Command lines
    /// are visible to other local users.
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

impl fmt::Debug for MintArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintArgs")
            .field("user", &self.user)
            .field("ttl", &self.ttl)
            .field("urls", &self.urls)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("store", &self.store)
            .finish()
    }
}

/// `credential revoke`.
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// The REST username to revoke: `EXPIRY:NAME` (or a bare `EXPIRY`).
    #[arg(value_name = "USERNAME")]
    pub username: String,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `ferroturn api-token ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ApiTokenCommand {
    /// Add a token and print it (once: the store keeps only its SHA-256).
    Add(ApiTokenNameArgs),
    /// List tokens: names, when added, when last used (never the token).
    List(ApiTokenListArgs),
    /// Remove a token: requests bearing it get 401 from then on.
    Remove(ApiTokenNameArgs),
}

/// `api-token add` / `api-token remove`.
#[derive(Debug, Clone, Args)]
pub struct ApiTokenNameArgs {
    /// The token's name (letters, digits, '.', '_', '-'; at most 64), e.g.
    /// the app that uses it.
    pub name: String,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `ferroturn cluster ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Every node of the registry with its state (live, draining, gone),
    /// load and addresses.
    Status(ClusterStatusArgs),
}

/// `cluster status`.
#[derive(Debug, Clone, Args)]
pub struct ClusterStatusArgs {
    /// Print JSON (an array of nodes) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds without a heartbeat after which a node counts as gone
    /// (default: cluster.node-timeout of --config, else 5).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `api-token list`.
#[derive(Debug, Clone, Args)]
pub struct ApiTokenListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
}
