//! `[server]`: listening addresses, REALM and SOFTWARE, threads, the
//! largest message taken from clients (`max-message-size`), and logging
//! (`log-level`, `log-format`).

use std::net::SocketAddr;

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

    Ok(Server {
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
