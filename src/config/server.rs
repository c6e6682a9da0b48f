//! `[server]`: listening addresses, REALM and SOFTWARE, threads, the
//! largest message taken from clients (`max-message-size`), and logging
//! (`log-level`, `log-format`).

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::validate::{int_in, invalid, parse_addresses, Result};

/// RFC 8489 §14.9 / §14.14: REALM and SOFTWARE are "fewer than 128
/// characters (which can be as long as 763 bytes)".
const MAX_TEXT_CHARS: usize = 127;
/// See [`MAX_TEXT_CHARS`].
const MAX_TEXT_BYTES: usize = 763;
/// Upper bound for `server.threads`; anything above is surely a typo and
/// would only waste memory on idle shards.
const MAX_THREADS: i64 = 1024;
/// Lower bound of `server.max-message-size`: 548 bytes is what RFC 8489 §6.1
/// lets a client send over UDP without knowing the path MTU (576-byte IPv4
/// datagrams minus the IP and UDP headers), so a smaller limit would refuse
/// well-behaved requests.
const MIN_MESSAGE_SIZE: i64 = 548;
/// Upper bound of `server.max-message-size`: the largest UDP payload and
/// more than any STUN message's 16-bit length allows.
const MAX_MESSAGE_SIZE: i64 = 65_535;

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
    /// `max-message-size`: bytes; longer client datagrams and stream frames
    /// are dropped unanswered.
    pub max_message_size: i64,
    /// `log-level`
    pub log_level: String,
    /// `log-format`
    pub log_format: String,
    /// `stun-only`: the whole server answers Binding only.
    pub stun_only: bool,
    /// `stun-only-listen`: which of `listen` answer Binding only.
    pub stun_only_listen: Vec<String>,
    /// `nat-discovery`: RFC 5780 NAT behaviour discovery over UDP.
    pub nat_discovery: bool,
    /// `other-address`: the alternate IP (RFC 5780 A2); empty = none.
    pub other_address: String,
    /// `other-port`: the alternate port (P2); 0 = `listen[0]`'s port + 1, or
    /// any free port when that is 0.
    pub other_port: i64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["0.0.0.0:3478".into(), "[::]:3478".into()],
            realm: "ferroturn".into(),
            software: String::new(),
            threads: 0,
            max_message_size: crate::turn::DEFAULT_MAX_MESSAGE_SIZE as i64,
            log_level: "info".into(),
            log_format: "human".into(),
            stun_only: false,
            stun_only_listen: Vec::new(),
            nat_discovery: false,
            other_address: String::new(),
            other_port: 0,
        }
    }
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

/// The `[server]` values, validated; [`Config`](super::Config) holds them
/// at its top level.
pub(super) struct Server {
    pub listen: Vec<SocketAddr>,
    pub realm: String,
    pub software: Option<String>,
    pub threads: usize,
    pub max_message_size: usize,
    pub log: LogConfig,
    pub stun_only: bool,
    pub stun_only_listen: Vec<SocketAddr>,
    pub nat_discovery: Option<NatDiscoveryConfig>,
}

/// `server.nat-discovery` with its addresses, validated: the primary address
/// is `server.listen[0]` (a specific IP), the alternate IP is
/// `server.other-address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatDiscoveryConfig {
    /// A1:P1, `server.listen[0]` (its port may be 0: chosen when bound).
    pub primary: SocketAddr,
    /// A2.
    pub other_ip: IpAddr,
    /// P2; 0 = P1 + 1, or any free port when P1 is 0.
    pub other_port: u16,
}

pub(super) fn validate_server(server: &RawServer) -> Result<Server> {
    let listen = validate_listen(&server.listen)?;
    let realm = validate_text("server.realm", &server.realm)?;
    if realm.is_empty() {
        return invalid("server.realm", "must not be empty");
    }
    let software = validate_text("server.software", &server.software)?;
    let software = (!software.is_empty()).then_some(software);
    let threads = int_in("server.threads", server.threads, 0, MAX_THREADS)?;
    let max_message_size = int_in(
        "server.max-message-size",
        server.max_message_size,
        MIN_MESSAGE_SIZE,
        MAX_MESSAGE_SIZE,
    )?;
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

    let stun_only_listen = parse_addresses("server.stun-only-listen", &server.stun_only_listen)?;
    // An address of its own would need sockets of its own; marking listeners
    // keeps one list of what is bound, and the core only has to recognise it.
    if let Some(i) = stun_only_listen.iter().position(|a| !listen.contains(a)) {
        return invalid(
            format!("server.stun-only-listen[{i}]"),
            format!(
                "{} is not in server.listen (list the address there too)",
                stun_only_listen[i]
            ),
        );
    }

    let nat_discovery = validate_nat_discovery(server, &listen)?;

    Ok(Server {
        nat_discovery,
        stun_only: server.stun_only,
        stun_only_listen,
        listen,
        realm,
        software,
        threads,
        max_message_size,
        log,
    })
}

/// `nat-discovery`, `other-address`, `other-port`.
fn validate_nat_discovery(
    server: &RawServer,
    listen: &[SocketAddr],
) -> Result<Option<NatDiscoveryConfig>> {
    let other_port: u16 = int_in("server.other-port", server.other_port, 0, 65_535)?;
    let other = server.other_address.trim();
    let other_ip = if other.is_empty() {
        None
    } else {
        match other.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                return invalid(
                    "server.other-address",
                    format!("{other:?} is not an IP address (give the alternate IP alone, no port: the port is server.other-port)"),
                )
            }
        }
    };
    if !server.nat_discovery {
        return Ok(None);
    }
    let Some(other_ip) = other_ip else {
        return invalid(
            "server.other-address",
            "server.nat-discovery needs a second IP address of this host (RFC 5780 answers CHANGE-REQUEST from it)",
        );
    };
    let primary = listen[0];
    if primary.ip().is_unspecified() {
        return invalid(
            "server.listen[0]",
            format!("{primary} is a wildcard; server.nat-discovery needs a specific IP as its primary address (the first of server.listen)"),
        );
    }
    if other_ip.is_unspecified() {
        return invalid(
            "server.other-address",
            format!("{other_ip} is a wildcard; give a specific IP"),
        );
    }
    if other_ip == primary.ip() {
        return invalid(
            "server.other-address",
            format!("{other_ip} is the primary address (server.listen[0]) itself; it must be a second IP"),
        );
    }
    if other_ip.is_ipv4() != primary.is_ipv4() {
        return invalid(
            "server.other-address",
            format!("{other_ip} is not of the same address family as server.listen[0] ({primary})"),
        );
    }
    if other_port != 0 && other_port == primary.port() {
        return invalid(
            "server.other-port",
            format!("{other_port} is the primary port (server.listen[0]) itself; it must differ"),
        );
    }
    if other_port == 0 && primary.port() == u16::MAX {
        return invalid(
            "server.other-port",
            "server.listen[0] has port 65535, so there is no port + 1: set server.other-port",
        );
    }
    Ok(Some(NatDiscoveryConfig {
        primary,
        other_ip,
        other_port,
    }))
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
    // Directives are ASCII (levels, module paths, field names); and
    // tracing-subscriber 0.3.23 panics on some non-ASCII text instead of
    // failing to parse it (found by the config_toml fuzz target), so it is
    // never handed any.
    if !level.is_ascii() {
        return invalid(
            "server.log-level",
            format!("{value:?} is not ASCII: use trace, debug, info, warn, error or an EnvFilter directive"),
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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn nat_discovery_is_validated() {
        let ok = Config::from_toml_str(
            "[server]\nlisten = [\"127.0.0.1:3478\"]\nnat-discovery = true\nother-address = \"127.0.0.2\"\n",
        )
        .unwrap();
        let n = ok.nat_discovery.unwrap();
        assert_eq!(n.primary, "127.0.0.1:3478".parse().unwrap());
        assert_eq!(n.other_ip, "127.0.0.2".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(n.other_port, 0);
        let off = Config::from_toml_str("[server]\nother-address = \"127.0.0.2\"\n").unwrap();
        assert!(off.nat_discovery.is_none());
        for (toml, key, words) in [
            ("listen = [\"127.0.0.1:3478\"]\nnat-discovery = true\n", "server.other-address", "second IP"),
            ("nat-discovery = true\nother-address = \"127.0.0.2\"\n", "server.listen[0]", "wildcard"),
            ("listen = [\"127.0.0.1:3478\"]\nnat-discovery = true\nother-address = \"127.0.0.1\"\n", "server.other-address", "primary address"),
            ("listen = [\"127.0.0.1:3478\"]\nnat-discovery = true\nother-address = \"::1\"\n", "server.other-address", "family"),
            ("listen = [\"127.0.0.1:3478\"]\nnat-discovery = true\nother-address = \"127.0.0.2:1\"\n", "server.other-address", "not an IP"),
            ("listen = [\"127.0.0.1:3478\"]\nnat-discovery = true\nother-address = \"127.0.0.2\"\nother-port = 3478\n", "server.other-port", "primary port"),
            ("listen = [\"127.0.0.1:3478\"]\nnat-discovery = true\nother-address = \"127.0.0.2\"\nother-port = 70000\n", "server.other-port", ""),
        ] {
            let err = Config::from_toml_str(&format!("[server]\n{toml}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
            assert!(err.contains(words), "{toml}: {err}");
        }
    }

    #[test]
    fn stun_only_listen_must_name_listeners() {
        let c = Config::from_toml_str(
            "[server]\nlisten = [\"0.0.0.0:3478\", \"0.0.0.0:3479\"]\nstun-only-listen = [\"0.0.0.0:3479\"]\n",
        )
        .unwrap();
        assert_eq!(c.stun_only_listen, vec!["0.0.0.0:3479".parse().unwrap()]);
        assert!(!c.stun_only);
        let err = Config::from_toml_str("[server]\nstun-only-listen = [\"0.0.0.0:3479\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.stun-only-listen[0]"), "{err}");
        assert!(err.contains("not in server.listen"), "{err}");
        let err = Config::from_toml_str("[server]\nstun-only-listen = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.stun-only-listen[0]"), "{err}");
    }
}
