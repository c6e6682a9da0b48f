//! `ferroturn doctor`: one command that tells an operator whether their server
//! works, from where they run it.
//!
//! It is a TURN client (the crate's own, [`crate::client`]) that runs the
//! steps a WebRTC app depends on — Binding, Allocate, a relay round trip, the
//! TLS certificate, DTLS, the peer policy — and reports each as PASS, WARN, FAIL or
//! SKIP with the reason and the fix ([`report`]). Everything it needs
//! defaults to the server's configuration file, so on the server's host
//! `ferroturn doctor --config FILE` is the whole command; from elsewhere,
//! `--server`, `--tls-server` and a credential say where and as whom.
//!
//! - this module: turning the flags and the configuration into a [`Plan`];
//! - [`checks`]: the checks, each bounded by `--timeout`;
//! - [`report`]: the table and the JSON.
#![forbid(unsafe_code)]

mod certificate;
mod checks;
mod dtls;
mod relaying;
pub mod report;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::cli::DoctorArgs;
use crate::commands::credentials::{newest_secret, reachable};
use crate::config::{Config, ConfigError};
use crate::store::StoreLocation;
use crate::time::unix_now;
use crate::turn::auth::rest_password;

/// How long a credential minted by doctor stays valid: long enough to paste
/// the printed iceServers entry into an app and try it.
const MINTED_TTL_SECS: u64 = 3600;
/// The name part of a minted REST username (`EXPIRY:ferroturn-doctor`), so
/// that usage records show which allocations were doctor's.
const MINTED_NAME: &str = "ferroturn-doctor";
const DEFAULT_PORT: u16 = 3478;
const DEFAULT_TLS_PORT: u16 = 5349;

/// Why doctor could not even start checking (bad flags, unreadable files).
/// Problems with the server are reported as FAIL lines instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DoctorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn usage<T>(message: impl Into<String>) -> Result<T, DoctorError> {
    Err(DoctorError::Usage(message.into()))
}

/// A server address: as written (for the iceServers URLs, which should name
/// the host clients use) and resolved.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

impl Target {
    /// `HOST:PORT` for a URL: an IPv6 literal in brackets.
    fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.addr.port()),
            _ => format!("{}:{}", self.host, self.addr.port()),
        }
    }
}

/// The credential doctor authenticates with, and where it came from (shown
/// in the report; never the password).
#[derive(Clone)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub source: String,
}

/// Everything the checks need, resolved from the flags and the configuration.
pub struct Plan {
    pub server: Target,
    pub tls: Option<Target>,
    pub tls_name: String,
    /// The DTLS address (`tls.dtls-listen`), when DTLS is checked.
    pub dtls: Option<Target>,
    /// Trust anchors for the certificate check.
    pub roots: rustls::RootCertStore,
    pub roots_source: String,
    pub credential: Option<Credential>,
    /// Why there is no credential, or what went wrong finding one.
    pub credential_note: Option<String>,
    /// Addresses allocations must be relayed from, and where that came from.
    pub expected_relay: Vec<IpAddr>,
    pub expected_source: &'static str,
    /// The relay port range, when the configuration is known.
    pub port_range: Option<(u16, u16)>,
    pub timeout: Duration,
}

/// Runs doctor; the number of FAILed checks (the report is printed).
pub fn run(args: &DoctorArgs) -> Result<usize, DoctorError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DoctorError::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    let report = rt.block_on(async {
        let plan = plan(args).await?;
        Ok::<_, DoctorError>(checks::run(&plan).await)
    })?;
    let text = if args.json {
        report.json()
    } else {
        report.table()
    };
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())
        .and_then(|()| out.flush())
        .map_err(|source| DoctorError::Io {
            context: "writing to stdout".into(),
            source,
        })?;
    Ok(report.failed())
}

async fn plan(args: &DoctorArgs) -> Result<Plan, DoctorError> {
    let config = match &args.config {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let server = match (&args.server, &config) {
        (Some(text), _) => resolve("--server", text, DEFAULT_PORT).await?,
        (None, Some(c)) => literal(reachable(c.listen[0])),
        (None, None) => literal(SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))),
    };
    let tls = match (
        &args.tls_server,
        config.as_ref().and_then(|c| c.tls.as_ref()),
    ) {
        (Some(text), _) => Some(resolve("--tls-server", text, DEFAULT_TLS_PORT).await?),
        (None, Some(t)) => t.listen.first().map(|a| literal(reachable(*a))),
        (None, None) => None,
    };
    let dtls = match (
        &args.dtls_server,
        config.as_ref().and_then(|c| c.tls.as_ref()),
    ) {
        (Some(text), _) => Some(resolve("--dtls-server", text, DEFAULT_TLS_PORT).await?),
        (None, Some(t)) => t.dtls_listen.first().map(|a| literal(reachable(*a))),
        (None, None) => None,
    };
    let tls_name = match (&args.tls_name, &tls) {
        (Some(name), _) => name.clone(),
        (None, Some(t)) => t.host.clone(),
        (None, None) => String::new(),
    };
    if rustls::pki_types::ServerName::try_from(tls_name.clone()).is_err() && tls.is_some() {
        return usage(format!(
            "--tls-name: {tls_name:?} is not a DNS name or an IP address"
        ));
    }
    let (roots, roots_source) = match &args.ca {
        Some(path) => (load_ca(path)?, format!("--ca {}", path.display())),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            (roots, "the built-in Mozilla roots".to_owned())
        }
    };
    let (credential, credential_note) = credential(args, config.as_ref()).await?;
    let (expected_relay, expected_source) = if !args.expect_relay_ips.is_empty() {
        (args.expect_relay_ips.clone(), "--expect-relay-ip")
    } else {
        let publics: Vec<IpAddr> = config
            .iter()
            .flat_map(|c| c.relay.external_ips.iter().map(|e| e.public))
            .collect();
        (publics, "relay.external-ips of --config")
    };
    Ok(Plan {
        server,
        tls,
        tls_name,
        dtls,
        roots,
        roots_source,
        credential,
        credential_note,
        expected_relay,
        expected_source,
        port_range: config
            .as_ref()
            .map(|c| (c.relay.port_min, c.relay.port_max)),
        timeout: args.timeout,
    })
}

fn literal(addr: SocketAddr) -> Target {
    Target {
        host: addr.ip().to_string(),
        addr,
    }
}

/// `HOST`, `HOST:PORT`, `IP`, `IP:PORT` or `[IPv6]:PORT`, resolved (the first
/// address the resolver gives).
async fn resolve(flag: &str, text: &str, default_port: u16) -> Result<Target, DoctorError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(literal(addr));
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(literal(SocketAddr::new(ip, default_port)));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) => (host, port),
            Err(_) => return usage(format!("{flag}: {text:?}: the port is not a number")),
        },
        None => (text, default_port),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return usage(format!("{flag}: {text:?} is not HOST[:PORT]"));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| DoctorError::Io {
            context: format!("{flag}: cannot resolve {host:?}"),
            source,
        })?;
    match addrs.next() {
        Some(addr) => Ok(Target {
            host: host.to_owned(),
            addr,
        }),
        None => usage(format!("{flag}: {host:?} resolves to no address")),
    }
}

/// The certificates of a PEM file, as trust anchors.
fn load_ca(path: &Path) -> Result<rustls::RootCertStore, DoctorError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let io = |source| DoctorError::Io {
        context: format!("--ca {}", path.display()),
        source,
    };
    let text = std::fs::read(path).map_err(io)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| DoctorError::Usage(format!("--ca {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| DoctorError::Usage(format!("--ca {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return usage(format!("--ca {}: no PEM certificate in it", path.display()));
    }
    Ok(roots)
}

/// `--user`, else a REST credential minted with `--secret`, the store's newest
/// secret or the first of auth.secrets, else the first of auth.users. REST
/// first: that is what an app gets, and it needs no password on disk.
async fn credential(
    args: &DoctorArgs,
    config: Option<&Config>,
) -> Result<(Option<Credential>, Option<String>), DoctorError> {
    if let Some(user) = &args.user {
        let Some((name, password)) = user.split_once(':') else {
            // Not echoed: it may be a bare password.
            return usage("--user: not NAME:PASSWORD (value not shown; it may contain a password)");
        };
        return Ok((
            Some(Credential {
                username: name.to_owned(),
                password: password.to_owned(),
                source: "--user".into(),
            }),
            None,
        ));
    }
    if let Some(secret) = &args.secret {
        if secret.is_empty() {
            return usage("--secret: must not be empty");
        }
        return Ok((Some(mint(secret, "--secret")), None));
    }
    let mut note = None;
    let location = match &args.db {
        Some(db) => {
            Some(StoreLocation::parse(db).map_err(|e| DoctorError::Usage(format!("--db: {e}")))?)
        }
        None => config.and_then(|c| c.store.url.clone()),
    };
    if let Some(location) = location {
        match newest_secret(location).await {
            Ok(Some(secret)) => {
                return Ok((Some(mint(&secret, "the store's newest secret")), None))
            }
            Ok(None) => note = Some("the store has no REST secret".to_owned()),
            Err(e) => note = Some(format!("cannot read the store's secrets: {e}")),
        }
    }
    if let Some(config) = config {
        if let Some(secret) = config.auth.secrets.first() {
            return Ok((Some(mint(secret, "auth.secrets of --config")), note));
        }
        if let Some((name, password)) = config.auth.users.first() {
            return Ok((
                Some(Credential {
                    username: name.clone(),
                    password: password.clone(),
                    source: "auth.users of --config".into(),
                }),
                note,
            ));
        }
    }
    Ok((None, note))
}

/// A TURN REST credential (`EXPIRY:ferroturn-doctor`, HMAC of the secret).
fn mint(secret: &str, source: &str) -> Credential {
    let expiry = u64::try_from(unix_now()).unwrap_or(0) + MINTED_TTL_SECS;
    let username = format!("{expiry}:{MINTED_NAME}");
    Credential {
        password: rest_password(secret.as_bytes(), &username),
        username,
        source: format!("a TURN REST credential minted with {source}, valid 1 h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_take_default_ports_and_ipv6_brackets() {
        let t = resolve("--server", "192.0.2.1", 3478).await.unwrap();
        assert_eq!(t.addr, "192.0.2.1:3478".parse().unwrap());
        let t = resolve("--server", "[2001:db8::1]:5349", 3478)
            .await
            .unwrap();
        assert_eq!(t.authority(), "[2001:db8::1]:5349");
        let t = resolve("--server", "::1", 5349).await.unwrap();
        assert_eq!(t.authority(), "[::1]:5349");
        let t = resolve("--server", "localhost:3479", 3478).await.unwrap();
        assert_eq!(t.authority(), "localhost:3479");
        assert!(resolve("--server", "localhost:port", 3478).await.is_err());
    }

    #[test]
    fn minted_credentials_verify_with_the_secret() {
        let c = mint("s3cret", "--secret");
        assert!(c.username.ends_with(":ferroturn-doctor"));
        assert_eq!(c.password, rest_password(b"s3cret", &c.username));
    }
}
