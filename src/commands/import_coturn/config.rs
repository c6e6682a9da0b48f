//! coturn's `turnserver.conf`: the parser and the key-by-key translation
//! table into ferroturn's TOML sections.
//!
//! coturn reads its file as command-line options: one option per line,
//! `key=value`, `key value` or a bare `key` (a flag), `#` starts a comment
//! line, and an option may keep its command-line `--` prefix. A key may
//! repeat (`user`, `listening-ip`, `denied-peer-ip`, ...): list keys collect
//! every occurrence, single-valued keys keep the last, as coturn does.
//!
//! Every key lands in exactly one place: translated into a TOML key, or
//! listed in a [`Note`] with the reason it is not (unsupported, not needed,
//! insecure). A bad value is an error naming the key and its line, never a
//! guess.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

pub use super::peer_ranges::{peer_rules, IpRange};

/// coturn's defaults where they differ from ferroturn's or are needed to
/// complete a half-given pair.
const COTURN_LISTENING_PORT: u16 = 3478;
const COTURN_TLS_LISTENING_PORT: u16 = 5349;
const COTURN_MIN_PORT: u16 = 49152;
const COTURN_MAX_PORT: u16 = 65535;
const COTURN_STALE_NONCE: i64 = 600;
const COTURN_PROMETHEUS_PORT: u16 = 9641;
/// ferroturn's default allocation lifetime (RFC 8656).
const DEFAULT_LIFETIME: i64 = 600;

/// One option of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// 1-based line number.
    pub line: usize,
    /// The key without a leading `--`.
    pub key: String,
    /// The value; `None` for a bare flag.
    pub value: Option<String>,
}

/// A value coturn would not accept either, or that has no faithful
/// translation: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    /// 1-based line number.
    pub line: usize,
    /// The coturn key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.message)
    }
}

impl std::error::Error for BadValue {}

/// What happened to a key that is not simply translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Translated, but the operator should know something (a different
    /// default, a safer choice).
    Caveat,
    /// ferroturn does this already, or it has no meaning for ferroturn.
    NotNeeded,
    /// ferroturn has no such feature.
    Unsupported,
    /// Not translated because it would weaken the server.
    Insecure,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Caveat => "translated, note",
            Verdict::NotNeeded => "not needed",
            Verdict::Unsupported => "unsupported",
            Verdict::Insecure => "insecure, not translated",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 1-based line of the coturn file; 0 for notes about the database.
    pub line: usize,
    /// The coturn key (or database table).
    pub key: String,
    /// What happened.
    pub verdict: Verdict,
    /// Why, and what to do.
    pub reason: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        write!(
            f,
            "{} ({}): {}",
            self.key,
            self.verdict.label(),
            self.reason
        )
    }
}

/// A credential of a `user=` line.
#[derive(Clone, PartialEq, Eq)]
pub enum UserSecret {
    /// `NAME:PASSWORD`.
    Password(String),
    /// `NAME:0xHEX`: coturn's precomputed key, MD5(name:realm:password).
    Md5Key([u8; 16]),
}

impl fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserSecret::Password(_) => "Password(..)",
            UserSecret::Md5Key(_) => "Md5Key(..)",
        })
    }
}

/// A `user=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUser {
    /// Its line.
    pub line: usize,
    /// The user name.
    pub name: String,
    /// Password or key.
    pub secret: UserSecret,
}

/// Where coturn keeps its user database, from `userdb`/`db` or
/// `psql-userdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbSource {
    /// A SQLite file.
    Sqlite(String),
    /// A PostgreSQL connection string: a `postgresql://` URI or libpq
    /// `key=value` pairs.
    Postgres(String),
}

/// The translated file. `sections` holds everything but what `mod.rs`
/// decides with the database at hand: the realm, users, secrets and peers.
#[derive(Debug, Default)]
pub struct Translation {
    /// TOML section name → its keys.
    pub sections: BTreeMap<&'static str, toml::Table>,
    /// Everything not simply translated.
    pub notes: Vec<Note>,
    /// `realm`.
    pub realm: Option<String>,
    /// `user` lines.
    pub users: Vec<ConfigUser>,
    /// `static-auth-secret` values (only with `use-auth-secret`).
    pub secrets: Vec<String>,
    /// `use-auth-secret`: the REST secrets of the database count too.
    pub use_auth_secret: bool,
    /// `userdb` / `psql-userdb`.
    pub userdb: Option<DbSource>,
    /// `allowed-peer-ip` ranges.
    pub peers_allow: Vec<IpRange>,
    /// `denied-peer-ip` ranges.
    pub peers_deny: Vec<IpRange>,
}

impl Translation {
    /// Sets `key` of `section`.
    pub fn set(&mut self, section: &'static str, key: &str, value: impl Into<toml::Value>) {
        self.sections
            .entry(section)
            .or_default()
            .insert(key.to_owned(), value.into());
    }

    fn note(&mut self, d: &Directive, verdict: Verdict, reason: impl Into<String>) {
        self.notes.push(Note {
            line: d.line,
            key: d.key.clone(),
            verdict,
            reason: reason.into(),
        });
    }
}

/// Splits coturn's file into options. Never fails: every line is either a
/// comment, blank, or an option (whose value is judged by [`translate`]).
pub fn parse(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("--").unwrap_or(line);
        // `key=value` when the first separator is '=', else `key value`.
        let split_at = line.find(|c: char| c == '=' || c.is_whitespace());
        let (key, value) = match split_at {
            Some(at) => {
                let rest = line[at..].trim_start();
                let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
                (&line[..at], Some(unquote(rest).to_owned()))
            }
            None => (line, None),
        };
        out.push(Directive {
            line: i + 1,
            key: key.to_owned(),
            value,
        });
    }
    out
}

/// coturn accepts a value in double quotes (`realm="example.org"`).
fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Keys that are not translated, with the verdict and the reason. Keys with
/// a value-dependent verdict are handled in [`translate`].
const NOT_TRANSLATED: &[(&str, Verdict, &str)] = &[
    ("lt-cred-mech", Verdict::NotNeeded, "the long-term credential mechanism is always on"),
    ("fingerprint", Verdict::NotNeeded, "ferroturn adds FINGERPRINT to every response whose request had one (RFC 8489)"),
    ("no-multicast-peers", Verdict::NotNeeded, "multicast peers are denied by default"),
    ("no-loopback-peers", Verdict::NotNeeded, "loopback peers are denied by default"),
    ("no-software-attribute", Verdict::NotNeeded, "ferroturn sends no SOFTWARE attribute unless server.software is set"),
    ("no-tlsv1", Verdict::NotNeeded, "TLS is rustls: TLS 1.2 and 1.3 only"),
    ("no-tlsv1_1", Verdict::NotNeeded, "TLS is rustls: TLS 1.2 and 1.3 only"),
    ("no-tlsv1_2", Verdict::NotNeeded, "TLS is rustls: TLS 1.2 and 1.3, not configurable"),
    ("cipher-list", Verdict::NotNeeded, "rustls offers only modern AEAD cipher suites"),
    ("ec-curve-name", Verdict::NotNeeded, "rustls chooses the key exchange group"),
    ("dh-file", Verdict::NotNeeded, "rustls does not use finite-field Diffie-Hellman"),
    ("dh566", Verdict::NotNeeded, "rustls does not use finite-field Diffie-Hellman"),
    ("dh1066", Verdict::NotNeeded, "rustls does not use finite-field Diffie-Hellman"),
    ("no-stdout-log", Verdict::NotNeeded, "logs go to stderr only"),
    ("simple-log", Verdict::NotNeeded, "logs go to stderr (journald or your collector rotates them)"),
    ("new-log-timestamp", Verdict::NotNeeded, "log lines carry RFC 3339 timestamps"),
    ("new-log-timestamp-format", Verdict::NotNeeded, "log lines carry RFC 3339 timestamps"),
    ("log-binding", Verdict::NotNeeded, "Binding requests are not logged; see the metrics"),
    ("daemon", Verdict::NotNeeded, "run ferroturn under systemd (contrib/)"),
    ("pidfile", Verdict::NotNeeded, "run ferroturn under systemd (contrib/)"),
    ("proc-user", Verdict::NotNeeded, "set User= in the systemd unit"),
    ("proc-group", Verdict::NotNeeded, "set Group= in the systemd unit"),
    ("no-cli", Verdict::NotNeeded, "there is no telnet CLI; the admin socket (ferroturn sessions, reload, drain) replaces it"),
    ("cli-ip", Verdict::NotNeeded, "there is no telnet CLI; the admin socket replaces it"),
    ("cli-port", Verdict::NotNeeded, "there is no telnet CLI; the admin socket replaces it"),
    ("cli-max-output-sessions", Verdict::NotNeeded, "there is no telnet CLI; `ferroturn sessions list` replaces it"),
    ("cli-password", Verdict::Insecure, "a network CLI with a password; the admin socket is a mode-0600 Unix socket instead"),
    ("no-rfc5780", Verdict::NotNeeded, "RFC 5780 NAT behaviour discovery is off unless server.nat-discovery is set"),
    ("response-origin-only-with-rfc5780", Verdict::NotNeeded, "RESPONSE-ORIGIN is sent only with server.nat-discovery on"),
    ("no-stun-backward-compatibility", Verdict::NotNeeded, "ferroturn speaks RFC 8489 STUN"),
    ("max-allocate-timeout", Verdict::NotNeeded, "allocations are not queued"),
    ("no-dynamic-ip-list", Verdict::NotNeeded, "peer ranges come from the file (and the import); reload with SIGHUP"),
    ("no-dynamic-realms", Verdict::NotNeeded, "ferroturn serves one realm"),
    ("no-auth-pings", Verdict::NotNeeded, "there are no authentication pings"),
    ("secure-stun", Verdict::Unsupported, "STUN Binding is always answered without authentication"),
    ("no-stun", Verdict::Unsupported, "STUN Binding is always served"),
    ("stun-only", Verdict::Unsupported, "ferroturn always relays; give it no users to allow only Binding"),
    ("alt-listening-port", Verdict::Unsupported, "not translated: RFC 5780 takes server.nat-discovery, server.other-address and server.other-port, set by hand"),
    ("alt-tls-listening-port", Verdict::Unsupported, "no RFC 5780 over TLS (UDP only)"),
    ("aux-server", Verdict::Unsupported, "list the address in server.listen instead"),
    ("udp-self-balance", Verdict::Unsupported, "ferroturn spreads UDP over its shards itself"),
    ("alternate-server", Verdict::Unsupported, "load balancing by ALTERNATE-SERVER; ferroturn redirects only while draining (drain.alternate-server)"),
    ("tls-alternate-server", Verdict::Unsupported, "load balancing by ALTERNATE-SERVER; ferroturn redirects only while draining"),
    ("listening-device", Verdict::Unsupported, "bind by address (server.listen) instead of by device"),
    ("relay-device", Verdict::Unsupported, "bind by address (relay.relay-ips) instead of by device"),
    ("mobility", Verdict::Unsupported, "RFC 8016 mobility is not implemented"),
    ("oauth", Verdict::Unsupported, "third-party (OAuth) authorization is not implemented; use TURN REST secrets"),
    ("server-name", Verdict::Unsupported, "only used by coturn's OAuth"),
    ("CA-file", Verdict::Unsupported, "TLS client certificates are not checked"),
    ("pkey-pwd", Verdict::Unsupported, "the private key must be unencrypted PEM (protect it with file permissions)"),
    ("secret-key-file", Verdict::Unsupported, "encrypted passwords in the database are not supported"),
    ("web-admin", Verdict::Unsupported, "no web admin; use the ferroturn CLI and the admin socket"),
    ("web-admin-ip", Verdict::Unsupported, "no web admin"),
    ("web-admin-port", Verdict::Unsupported, "no web admin"),
    ("web-admin-listen-on-workers", Verdict::Unsupported, "no web admin"),
    ("redis-statsdb", Verdict::Unsupported, "statistics are Prometheus metrics ([metrics]) and usage records ([usage])"),
    ("redis-userdb", Verdict::Unsupported, "Redis is not a supported store; import from SQLite or PostgreSQL"),
    ("mysql-userdb", Verdict::Unsupported, "MySQL is not a supported store; import from SQLite or PostgreSQL"),
    ("mongo-userdb", Verdict::Unsupported, "MongoDB is not a supported store; import from SQLite or PostgreSQL"),
    ("check-origin-consistency", Verdict::Unsupported, "ORIGIN is not checked"),
    ("acme-redirect", Verdict::Unsupported, "there is no HTTP listener for ACME; renew certificates with your ACME client and SIGHUP"),
    ("keep-address-family", Verdict::Unsupported, "the relay address family follows REQUESTED-ADDRESS-FAMILY (RFC 6156)"),
    ("allocation-default-address-family", Verdict::Unsupported, "the relay address family follows REQUESTED-ADDRESS-FAMILY (RFC 6156)"),
    ("bps-capacity", Verdict::Unsupported, "no server-wide bandwidth cap; quota.max-bps-per-allocation limits each allocation"),
    ("tcp-proxy-port", Verdict::Unsupported, "no PROXY protocol listener"),
    ("no-udp-relay", Verdict::Unsupported, "UDP relaying cannot be switched off"),
    ("no-tcp-relay", Verdict::Unsupported, "RFC 6062 TCP relaying is not implemented, so there is nothing to switch off"),
    ("dtls-listening-port", Verdict::Unsupported, "not translated: set tls.dtls-listen (ADDR:PORT) by hand"),
    ("ne", Verdict::Unsupported, "no DTLS listener"),
    ("no-udp", Verdict::Unsupported, "every server.listen address serves both UDP and TCP; block the one you do not want in the firewall"),
    ("no-tcp", Verdict::Unsupported, "every server.listen address serves both UDP and TCP; block the one you do not want in the firewall"),
    ("syslog", Verdict::Unsupported, "logs go to stderr; journald forwards them to syslog"),
    ("syslog-facility", Verdict::Unsupported, "logs go to stderr; journald forwards them to syslog"),
    ("log-file", Verdict::Unsupported, "logs go to stderr (journald, or redirect it); server.log-format = \"json\" for collectors"),
    ("prometheus-username-labels", Verdict::Insecure, "metrics never carry user names"),
    ("no-auth", Verdict::Insecure, "an open relay; ferroturn always authenticates Allocate"),
    ("server-relay", Verdict::Insecure, "relaying to the server's own addresses; ferroturn denies them"),
    ("version", Verdict::NotNeeded, "not a setting"),
];

/// Translates the parsed options. A bad value is an error naming the key
/// and its line.
pub fn translate(directives: &[Directive]) -> Result<Translation, BadValue> {
    let mut t = Translation::default();
    let mut listening_port = None;
    let mut tls_listening_port = None;
    let mut listening_ips: Vec<IpAddr> = Vec::new();
    let mut relay_ips: Vec<IpAddr> = Vec::new();
    let mut external_ips: Vec<String> = Vec::new();
    let (mut min_port, mut max_port) = (None, None);
    let (mut cert, mut pkey) = (None, None);
    let mut no_tls = None;
    let mut no_dtls = false;
    let mut prometheus = None;
    let mut prometheus_port = None;
    let mut max_lifetime = None;
    let mut static_secrets: Vec<(usize, String)> = Vec::new();
    let mut allow_loopback = false;

    for d in directives {
        let key = d.key.as_str();
        match key {
            "listening-port" => listening_port = Some(port(d)?),
            "tls-listening-port" => tls_listening_port = Some(port(d)?),
            "listening-ip" => listening_ips.push(ip(d)?),
            "relay-ip" => {
                let ip = ip(d)?;
                if relay_ips.iter().any(|r| r.is_ipv4() == ip.is_ipv4()) {
                    t.note(d, Verdict::Unsupported, "ferroturn relays from one address per family; this one is left out");
                } else {
                    relay_ips.push(ip);
                }
            }
            "external-ip" => {
                let ext = external_ip(d)?;
                let v4 = !ext.contains(':');
                if external_ips.iter().any(|e| e.contains(':') != v4) {
                    t.note(d, Verdict::Unsupported, "ferroturn takes one external-ip mapping per family; this one is left out");
                } else {
                    external_ips.push(ext);
                }
            }
            "min-port" => min_port = Some(port(d)?),
            "max-port" => max_port = Some(port(d)?),
            "realm" => {
                let realm = value(d)?;
                if realm.is_empty() || realm.chars().any(char::is_control) {
                    return bad(d, "must be non-empty, without control characters");
                }
                t.realm = Some(realm.to_owned());
            }
            "user" => t.users.push(user(d)?),
            "use-auth-secret" => {
                flag(d)?;
                t.use_auth_secret = true;
            }
            "static-auth-secret" => {
                let secret = value(d)?;
                if secret.is_empty() {
                    return bad(d, "must not be empty");
                }
                static_secrets.push((d.line, secret.to_owned()));
            }
            "rest-api-separator" => {
                if value(d)? != ":" {
                    t.note(
                        d,
                        Verdict::Unsupported,
                        "TURN REST usernames are EXPIRY:NAME with ':'; clients minting with another separator must change",
                    );
                }
            }
            "cert" => cert = Some(value(d)?.to_owned()),
            "pkey" => pkey = Some(value(d)?.to_owned()),
            "no-tls" => {
                flag(d)?;
                no_tls = Some(d.line);
            }
            "no-dtls" => {
                flag(d)?;
                no_dtls = true;
            }
            "denied-peer-ip" => t.peers_deny.push(ip_range(d)?),
            "allowed-peer-ip" => t.peers_allow.push(ip_range(d)?),
            "allow-loopback-peers" => {
                flag(d)?;
                allow_loopback = true;
                t.note(
                    d,
                    Verdict::Caveat,
                    "peers.allow gets 127.0.0.0/8 and ::1/128: clients can reach services on the server's loopback; meant for tests only",
                );
            }
            "user-quota" => {
                let n = number(d, 0, i64::from(u32::MAX))?;
                if n == 0 {
                    t.note(d, Verdict::Caveat, "0 (unlimited) has no ferroturn equivalent; quota.max-allocations-per-user keeps its default of 10");
                } else {
                    t.set("quota", "max-allocations-per-user", n);
                }
            }
            "total-quota" => {
                t.set("quota", "max-allocations", number(d, 0, i64::from(u32::MAX))?);
            }
            "max-bps" => t.set("quota", "max-bps-per-allocation", number(d, 0, i64::MAX)?),
            "stale-nonce" => {
                let n = match d.value {
                    None => COTURN_STALE_NONCE,
                    Some(_) => number(d, 1, i64::from(u32::MAX))?,
                };
                t.set("auth", "nonce-lifetime", n);
            }
            "max-allocate-lifetime" => max_lifetime = Some(number(d, 1, i64::from(u32::MAX))?),
            "channel-lifetime" => {
                if let Some(n) = lifetime(d)? {
                    t.set("relay", "channel-lifetime", n);
                }
            }
            "permission-lifetime" => {
                if let Some(n) = lifetime(d)? {
                    t.set("relay", "permission-lifetime", n);
                }
            }
            "prometheus" => {
                flag(d)?;
                prometheus = Some(d.line);
            }
            "prometheus-port" => prometheus_port = Some(port(d)?),
            "verbose" | "v" => {
                flag(d)?;
                t.set("server", "log-level", "debug");
            }
            "Verbose" | "V" => {
                flag(d)?;
                t.set("server", "log-level", "trace");
            }
            "relay-threads" => t.set("server", "threads", number(d, 0, 1024)?),
            "userdb" | "db" | "b" => {
                t.userdb = Some(DbSource::Sqlite(value(d)?.to_owned()));
            }
            "psql-userdb" | "sql-userdb" | "e" => {
                t.userdb = Some(DbSource::Postgres(value(d)?.to_owned()));
            }
            _ => match NOT_TRANSLATED.iter().find(|(k, _, _)| *k == key) {
                Some(&(_, verdict, reason)) => t.note(d, verdict, reason),
                None => t.note(
                    d,
                    Verdict::Unsupported,
                    "not a key this importer knows; check coturn's documentation and docs/migrating-from-coturn.md",
                ),
            },
        }
    }

    // [server] listen: every listening-ip (coturn: all addresses) at the port.
    let addrs = if listening_ips.is_empty() {
        vec![
            IpAddr::from([0u8, 0, 0, 0]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 0]),
        ]
    } else {
        listening_ips
    };
    let with_port = |p: u16| -> toml::Value {
        toml::Value::Array(
            addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, p).to_string().into())
                .collect(),
        )
    };
    t.set(
        "server",
        "listen",
        with_port(listening_port.unwrap_or(COTURN_LISTENING_PORT)),
    );

    // [relay]
    if !relay_ips.is_empty() {
        let list: Vec<toml::Value> = relay_ips.iter().map(|ip| ip.to_string().into()).collect();
        t.set("relay", "relay-ips", list);
    }
    if !external_ips.is_empty() {
        let list: Vec<toml::Value> = external_ips.into_iter().map(Into::into).collect();
        t.set("relay", "external-ips", list);
    }
    if min_port.is_some() || max_port.is_some() {
        let (lo, hi) = (
            min_port.unwrap_or(COTURN_MIN_PORT),
            max_port.unwrap_or(COTURN_MAX_PORT),
        );
        if lo > hi {
            let line = directives
                .iter()
                .rev()
                .find(|d| d.key == "min-port")
                .map_or(0, |d| d.line);
            return Err(BadValue {
                line,
                key: "min-port".into(),
                message: format!("{lo} is above max-port {hi}"),
            });
        }
        t.set("relay", "port-range", format!("{lo}-{hi}"));
    }
    if let Some(max) = max_lifetime {
        t.set("relay", "max-lifetime", max);
        // ferroturn requires default-lifetime <= max-lifetime; coturn
        // simply caps the default.
        if max < DEFAULT_LIFETIME {
            t.set("relay", "default-lifetime", max);
        }
    }

    // [auth] secrets: coturn ignores static-auth-secret without
    // use-auth-secret.
    for (line, secret) in static_secrets {
        if t.use_auth_secret {
            t.secrets.push(secret);
        } else {
            t.notes.push(Note {
                line,
                key: "static-auth-secret".into(),
                verdict: Verdict::NotNeeded,
                reason: "coturn ignores it without use-auth-secret, so it is not imported".into(),
            });
        }
    }

    // [peers]
    if allow_loopback {
        for net in ["127.0.0.0/8", "::1/128"] {
            let net: IpNet = net.parse().expect("a valid CIDR literal");
            t.peers_allow.push(IpRange::from_net(net));
        }
    }

    // [tls]
    match (cert, pkey, no_tls) {
        (_, _, Some(line)) => t.notes.push(Note {
            line,
            key: "no-tls".into(),
            verdict: Verdict::Caveat,
            reason: "TLS and DTLS stay off: cert and pkey, if any, are not carried over".into(),
        }),
        (Some(cert), Some(pkey), None) => {
            t.set("tls", "cert", cert);
            t.set("tls", "key", pkey);
            let addrs = with_port(tls_listening_port.unwrap_or(COTURN_TLS_LISTENING_PORT));
            // coturn serves DTLS on its TLS ports (UDP) unless told `no-dtls`.
            if !no_dtls {
                t.set("tls", "dtls-listen", addrs.clone());
            }
            t.set("tls", "listen", addrs);
        }
        (None, None, None) => {}
        (cert, _, None) => {
            let missing = if cert.is_some() { "pkey" } else { "cert" };
            let given = if cert.is_some() { "cert" } else { "pkey" };
            let line = directives
                .iter()
                .rev()
                .find(|d| d.key == given)
                .map_or(0, |d| d.line);
            return Err(BadValue {
                line,
                key: given.into(),
                message: format!("given without {missing}: TLS needs both"),
            });
        }
    }

    // [metrics]: coturn serves Prometheus on every address when asked; the
    // import keeps it on loopback (no authentication there). Without
    // `prometheus` ferroturn's default stays: loopback, where /healthz and
    // /readyz serve the service manager and `ferroturn doctor`.
    if let Some(line) = prometheus {
        let p = prometheus_port.unwrap_or(COTURN_PROMETHEUS_PORT);
        t.set("metrics", "listen", format!("127.0.0.1:{p}"));
        t.notes.push(Note {
                line,
                key: "prometheus".into(),
                verdict: Verdict::Caveat,
                reason: format!("metrics.listen = \"127.0.0.1:{p}\": coturn listened on every address; widen it only behind a firewall (the endpoint has no authentication)"),
            });
    }
    Ok(t)
}

fn bad<T>(d: &Directive, message: impl Into<String>) -> Result<T, BadValue> {
    Err(BadValue {
        line: d.line,
        key: d.key.clone(),
        message: message.into(),
    })
}

fn value(d: &Directive) -> Result<&str, BadValue> {
    match d.value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => bad(d, "needs a value"),
    }
}

/// A bare flag; coturn also accepts `flag=1`/`true`/`yes`.
fn flag(d: &Directive) -> Result<(), BadValue> {
    match d.value.as_deref() {
        None | Some("1" | "true" | "yes" | "on") => Ok(()),
        Some(other) => bad(
            d,
            format!(
                "is a flag and takes no value (found {other:?}); remove the line to turn it off"
            ),
        ),
    }
}

fn number(d: &Directive, min: i64, max: i64) -> Result<i64, BadValue> {
    let v = value(d)?;
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => bad(d, format!("{n} is outside {min}..={max}")),
        Err(_) => bad(d, format!("{v:?} is not a whole number")),
    }
}

fn port(d: &Directive) -> Result<u16, BadValue> {
    let v = value(d)?;
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => bad(d, format!("{v:?} is not a port number (1-65535)")),
    }
}

fn ip(d: &Directive) -> Result<IpAddr, BadValue> {
    let v = value(d)?;
    v.parse()
        .or_else(|_| bad(d, format!("{v:?} is not an IP address")))
}

/// coturn lifetimes: seconds; `-1` or `0` mean "the default".
fn lifetime(d: &Directive) -> Result<Option<i64>, BadValue> {
    if matches!(value(d)?, "-1" | "0") {
        return Ok(None);
    }
    number(d, 1, i64::from(u32::MAX)).map(Some)
}

/// `PUBLIC` or `PUBLIC/PRIVATE`, both IP addresses: ferroturn's syntax is
/// the same, so the value is carried over once it parses.
fn external_ip(d: &Directive) -> Result<String, BadValue> {
    let v = value(d)?;
    let (public, private) = match v.split_once('/') {
        Some((public, private)) => (public, Some(private)),
        None => (v, None),
    };
    let Ok(public) = public.trim().parse::<IpAddr>() else {
        return bad(
            d,
            format!(
                "{v:?}: PUBLIC must be an IP address (coturn does not resolve names here either)"
            ),
        );
    };
    match private {
        None => Ok(public.to_string()),
        Some(private) => match private.trim().parse::<IpAddr>() {
            Ok(private) if private.is_ipv4() == public.is_ipv4() => {
                Ok(format!("{public}/{private}"))
            }
            Ok(_) => bad(
                d,
                format!("{v:?}: PUBLIC and PRIVATE must be of the same address family"),
            ),
            Err(_) => bad(d, format!("{v:?}: PRIVATE must be an IP address")),
        },
    }
}

/// `NAME:PASSWORD` or `NAME:0xKEY` (32 hex digits: the MD5 key).
fn user(d: &Directive) -> Result<ConfigUser, BadValue> {
    let v = value(d)?;
    let Some((name, secret)) = v.split_once(':') else {
        return bad(d, "expected NAME:PASSWORD or NAME:0xKEY");
    };
    if name.is_empty() || name.chars().any(char::is_control) {
        return bad(
            d,
            "the user name must be non-empty, without control characters",
        );
    }
    if secret.is_empty() {
        return bad(d, format!("user {name:?} has an empty password"));
    }
    let secret = match secret.strip_prefix("0x") {
        Some(hex) => match parse_md5_hex(hex) {
            Some(key) => UserSecret::Md5Key(key),
            None => {
                return bad(
                    d,
                    format!("user {name:?}: a 0x key must be 32 hex digits (the MD5 key); other key lengths belong to coturn's non-standard SHA password algorithms"),
                )
            }
        },
        None => UserSecret::Password(secret.to_owned()),
    };
    Ok(ConfigUser {
        line: d.line,
        name: name.to_owned(),
        secret,
    })
}

/// 32 hex digits → the 16-byte MD5 key; `None` otherwise.
pub fn parse_md5_hex(hex: &str) -> Option<[u8; 16]> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

fn ip_range(d: &Directive) -> Result<IpRange, BadValue> {
    let v = value(d)?;
    IpRange::parse(v).map_or_else(
        || {
            bad(
                d,
                format!("{v:?} is not an IP, a range IP1-IP2 (same family, IP1 <= IP2) or a CIDR"),
            )
        },
        Ok,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Translation, BadValue> {
        translate(&parse(text))
    }

    fn get<'a>(t: &'a Translation, section: &str, key: &str) -> Option<&'a toml::Value> {
        t.sections.get(section).and_then(|s| s.get(key))
    }

    fn err(text: &str) -> String {
        one(text).expect_err(text).to_string()
    }

    #[test]
    fn parses_the_three_syntaxes_comments_and_dashes() {
        let d = parse("# comment\n\nrealm=example.org\n--listening-port 3479\nlt-cred-mech\n  fingerprint  \nstale-nonce = 300\nrealm=\"quoted.example\"\n");
        let keys: Vec<(usize, &str, Option<&str>)> = d
            .iter()
            .map(|d| (d.line, d.key.as_str(), d.value.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                (3, "realm", Some("example.org")),
                (4, "listening-port", Some("3479")),
                (5, "lt-cred-mech", None),
                (6, "fingerprint", None),
                (7, "stale-nonce", Some("300")),
                (8, "realm", Some("quoted.example")),
            ]
        );
    }

    #[test]
    fn listening_addresses_and_ports() {
        let t =
            one("listening-port=3479\nlistening-ip=192.0.2.1\nlistening-ip=2001:db8::1\n").unwrap();
        assert_eq!(
            get(&t, "server", "listen").unwrap(),
            &toml::Value::from(vec!["192.0.2.1:3479", "[2001:db8::1]:3479"])
        );
        let t = one("").unwrap();
        assert_eq!(
            get(&t, "server", "listen").unwrap(),
            &toml::Value::from(vec!["0.0.0.0:3478", "[::]:3478"])
        );
        assert_eq!(
            err("listening-port=0\n"),
            "line 1: listening-port: \"0\" is not a port number (1-65535)"
        );
        assert_eq!(
            err("\nlistening-ip=host.example\n"),
            "line 2: listening-ip: \"host.example\" is not an IP address"
        );
        assert_eq!(
            err("listening-port\n"),
            "line 1: listening-port: needs a value"
        );
    }

    #[test]
    fn tls_needs_cert_and_pkey_and_takes_the_tls_port() {
        let t = one(
            "cert=/etc/c.pem\npkey=/etc/k.pem\ntls-listening-port=443\nlistening-ip=192.0.2.1\n",
        )
        .unwrap();
        assert_eq!(get(&t, "tls", "cert").unwrap().as_str(), Some("/etc/c.pem"));
        assert_eq!(get(&t, "tls", "key").unwrap().as_str(), Some("/etc/k.pem"));
        assert_eq!(
            get(&t, "tls", "listen").unwrap(),
            &toml::Value::from(vec!["192.0.2.1:443"])
        );
        let t = one("cert=/etc/c.pem\npkey=/etc/k.pem\nno-tls\n").unwrap();
        assert!(!t.sections.contains_key("tls"));
        assert_eq!(t.notes[0].key, "no-tls");
        assert_eq!(
            err("realm=r\ncert=/c.pem\n"),
            "line 2: cert: given without pkey: TLS needs both"
        );
        assert_eq!(err("no-tls=maybe\n"), "line 1: no-tls: is a flag and takes no value (found \"maybe\"); remove the line to turn it off");
    }

    #[test]
    fn dtls_listens_on_the_tls_ports_unless_no_dtls() {
        let conf =
            "cert=/etc/c.pem\npkey=/etc/k.pem\ntls-listening-port=443\nlistening-ip=192.0.2.1\n";
        let t = one(conf).unwrap();
        assert_eq!(
            get(&t, "tls", "dtls-listen").unwrap(),
            &toml::Value::from(vec!["192.0.2.1:443"])
        );
        let t = one(&format!("{conf}no-dtls\n")).unwrap();
        assert!(get(&t, "tls", "dtls-listen").is_none());
        assert!(get(&t, "tls", "listen").is_some(), "TLS stays on");
        assert_eq!(
            err("no-dtls=maybe\n"),
            "line 1: no-dtls: is a flag and takes no value (found \"maybe\"); remove the line to turn it off"
        );
    }

    #[test]
    fn relay_addresses_ports_and_lifetimes() {
        let t = one("relay-ip=10.0.0.5\nexternal-ip=203.0.113.7/10.0.0.5\nmin-port=50000\nmax-port=50100\nmax-allocate-lifetime=300\nchannel-lifetime=-1\npermission-lifetime=120\n").unwrap();
        assert_eq!(
            get(&t, "relay", "relay-ips").unwrap(),
            &toml::Value::from(vec!["10.0.0.5"])
        );
        assert_eq!(
            get(&t, "relay", "external-ips").unwrap(),
            &toml::Value::from(vec!["203.0.113.7/10.0.0.5"])
        );
        assert_eq!(
            get(&t, "relay", "port-range").unwrap().as_str(),
            Some("50000-50100")
        );
        assert_eq!(
            get(&t, "relay", "max-lifetime").unwrap().as_integer(),
            Some(300)
        );
        assert_eq!(
            get(&t, "relay", "default-lifetime").unwrap().as_integer(),
            Some(300)
        );
        assert_eq!(get(&t, "relay", "channel-lifetime"), None);
        assert_eq!(
            get(&t, "relay", "permission-lifetime")
                .unwrap()
                .as_integer(),
            Some(120)
        );
        // Half a pair takes coturn's default for the other half.
        let t = one("min-port=60000\n").unwrap();
        assert_eq!(
            get(&t, "relay", "port-range").unwrap().as_str(),
            Some("60000-65535")
        );
        let t = one("external-ip=203.0.113.7\nexternal-ip=203.0.113.8\nrelay-ip=10.0.0.5\nrelay-ip=10.0.0.6\n").unwrap();
        assert_eq!(t.notes.len(), 2);
        assert_eq!(
            get(&t, "relay", "relay-ips").unwrap(),
            &toml::Value::from(vec!["10.0.0.5"])
        );
        assert_eq!(
            get(&t, "relay", "external-ips").unwrap(),
            &toml::Value::from(vec!["203.0.113.7"])
        );
        assert_eq!(
            err("min-port=600\nmax-port=500\n"),
            "line 1: min-port: 600 is above max-port 500"
        );
        assert_eq!(err("external-ip=turn.example.org\n"), "line 1: external-ip: \"turn.example.org\": PUBLIC must be an IP address (coturn does not resolve names here either)");
        assert_eq!(err("external-ip=203.0.113.7/fd00::1\n"), "line 1: external-ip: \"203.0.113.7/fd00::1\": PUBLIC and PRIVATE must be of the same address family");
        assert_eq!(
            err("max-allocate-lifetime=soon\n"),
            "line 1: max-allocate-lifetime: \"soon\" is not a whole number"
        );
    }

    #[test]
    fn users_with_passwords_and_keys() {
        let t = one("user=alice:wonderland\nuser=bob:0x543e1aec5d3614f03141652d6ada51b2\nuser=carol:pa:ss\n").unwrap();
        assert_eq!(t.users.len(), 3);
        assert_eq!(t.users[0].secret, UserSecret::Password("wonderland".into()));
        assert_eq!(
            t.users[1].secret,
            UserSecret::Md5Key(parse_md5_hex("543e1aec5d3614f03141652d6ada51b2").unwrap())
        );
        assert_eq!(t.users[2].secret, UserSecret::Password("pa:ss".into()));
        assert_eq!(
            err("user=alice\n"),
            "line 1: user: expected NAME:PASSWORD or NAME:0xKEY"
        );
        assert_eq!(
            err("user=alice:\n"),
            "line 1: user: user \"alice\" has an empty password"
        );
        assert!(err("user=bob:0x1234\n")
            .starts_with("line 1: user: user \"bob\": a 0x key must be 32 hex digits"));
        // The password never shows in Debug.
        assert!(!format!("{:?}", t.users[0]).contains("wonderland"));
    }

    #[test]
    fn secrets_need_use_auth_secret() {
        let t =
            one("use-auth-secret\nstatic-auth-secret=north\nstatic-auth-secret=south\n").unwrap();
        assert!(t.use_auth_secret);
        assert_eq!(t.secrets, ["north", "south"]);
        let t = one("static-auth-secret=north\n").unwrap();
        assert!(t.secrets.is_empty());
        assert_eq!(t.notes[0].verdict, Verdict::NotNeeded);
        assert_eq!(
            err("use-auth-secret\nstatic-auth-secret=\n"),
            "line 2: static-auth-secret: needs a value"
        );
    }

    #[test]
    fn quotas_bandwidth_nonce_and_logging() {
        let t = one(
            "user-quota=4\ntotal-quota=100\nmax-bps=64000\nstale-nonce\nverbose\nrelay-threads=2\n",
        )
        .unwrap();
        assert_eq!(
            get(&t, "quota", "max-allocations-per-user")
                .unwrap()
                .as_integer(),
            Some(4)
        );
        assert_eq!(
            get(&t, "quota", "max-allocations").unwrap().as_integer(),
            Some(100)
        );
        assert_eq!(
            get(&t, "quota", "max-bps-per-allocation")
                .unwrap()
                .as_integer(),
            Some(64000)
        );
        assert_eq!(
            get(&t, "auth", "nonce-lifetime").unwrap().as_integer(),
            Some(600)
        );
        assert_eq!(
            get(&t, "server", "log-level").unwrap().as_str(),
            Some("debug")
        );
        assert_eq!(get(&t, "server", "threads").unwrap().as_integer(), Some(2));
        let t = one("stale-nonce=120\nVerbose\nuser-quota=0\n").unwrap();
        assert_eq!(
            get(&t, "auth", "nonce-lifetime").unwrap().as_integer(),
            Some(120)
        );
        assert_eq!(
            get(&t, "server", "log-level").unwrap().as_str(),
            Some("trace")
        );
        assert_eq!(get(&t, "quota", "max-allocations-per-user"), None);
        assert_eq!(t.notes[0].verdict, Verdict::Caveat);
        assert_eq!(
            err("max-bps=-5\n"),
            format!("line 1: max-bps: -5 is outside 0..={}", i64::MAX)
        );
        assert_eq!(
            err("stale-nonce=0\n"),
            format!("line 1: stale-nonce: 0 is outside 1..={}", u32::MAX)
        );
    }

    #[test]
    fn prometheus_stays_on_loopback() {
        let t = one("prometheus\nprometheus-port=9100\n").unwrap();
        assert_eq!(
            get(&t, "metrics", "listen").unwrap().as_str(),
            Some("127.0.0.1:9100")
        );
        assert_eq!(t.notes[0].verdict, Verdict::Caveat);
        let t = one("").unwrap();
        assert_eq!(get(&t, "metrics", "listen"), None);
    }

    #[test]
    fn every_other_key_has_a_verdict_and_a_reason() {
        let t = one("lt-cred-mech\nno-udp\nno-auth\nlog-file=/var/log/turn.log\nmysql-userdb=x\nmade-up-key=1\nrest-api-separator=.\n").unwrap();
        let verdicts: Vec<(&str, Verdict)> = t
            .notes
            .iter()
            .map(|n| (n.key.as_str(), n.verdict))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("lt-cred-mech", Verdict::NotNeeded),
                ("no-udp", Verdict::Unsupported),
                ("no-auth", Verdict::Insecure),
                ("log-file", Verdict::Unsupported),
                ("mysql-userdb", Verdict::Unsupported),
                ("made-up-key", Verdict::Unsupported),
                ("rest-api-separator", Verdict::Unsupported),
            ]
        );
        assert!(t.notes.iter().all(|n| !n.reason.is_empty()));
        assert_eq!(t.notes[2].to_string(), "line 3: no-auth (insecure, not translated): an open relay; ferroturn always authenticates Allocate");
    }

    #[test]
    fn userdb_keys() {
        assert_eq!(
            one("userdb=/var/lib/turn/turndb\n").unwrap().userdb,
            Some(DbSource::Sqlite("/var/lib/turn/turndb".into()))
        );
        assert_eq!(
            one("psql-userdb=\"host=localhost dbname=coturn user=turn password=x\"\n")
                .unwrap()
                .userdb,
            Some(DbSource::Postgres(
                "host=localhost dbname=coturn user=turn password=x".into()
            ))
        );
    }

    #[test]
    fn ip_ranges_become_cidrs() {
        let r = IpRange::parse("83.166.64.0-83.166.95.255").unwrap();
        assert_eq!(
            r.to_cidrs(),
            vec!["83.166.64.0/19".parse::<IpNet>().unwrap()]
        );
        let r = IpRange::parse("10.0.0.1-10.0.0.6").unwrap();
        let cidrs: Vec<String> = r.to_cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(
            cidrs,
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(
            IpRange::parse("192.0.2.9").unwrap().to_cidrs(),
            vec!["192.0.2.9/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            IpRange::parse("fd00::/8").unwrap().to_cidrs(),
            vec!["fd00::/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(IpRange::parse("::1-::2").unwrap().to_cidrs().len(), 2);
        for bad in ["10.0.0.9-10.0.0.1", "10.0.0.1-::1", "nonsense", ""] {
            assert_eq!(IpRange::parse(bad), None, "{bad}");
        }
        assert_eq!(err("denied-peer-ip=1.2.3.4-1.2.3.0\n"), "line 1: denied-peer-ip: \"1.2.3.4-1.2.3.0\" is not an IP, a range IP1-IP2 (same family, IP1 <= IP2) or a CIDR");
    }

    #[test]
    fn allowed_ranges_are_cut_out_of_denied_ones() {
        let allow = [IpRange::parse("83.166.68.45").unwrap()];
        let deny = [
            IpRange::parse("83.166.64.0-83.166.95.255").unwrap(),
            IpRange::parse("198.51.100.0/24").unwrap(),
        ];
        let (allow, deny) = peer_rules(&allow, &deny);
        assert_eq!(allow, vec!["83.166.68.45/32".parse::<IpNet>().unwrap()]);
        // What is left denies everything of the /19 but the one address.
        let contains = |ip: &str| {
            deny.iter()
                .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()))
        };
        assert!(!contains("83.166.68.45"));
        for ip in [
            "83.166.64.0",
            "83.166.68.44",
            "83.166.68.46",
            "83.166.95.255",
            "198.51.100.7",
        ] {
            assert!(contains(ip), "{ip}");
        }
        assert!(!contains("83.166.96.0"));
        let t = one("allow-loopback-peers\n").unwrap();
        assert_eq!(t.peers_allow.len(), 2);
        assert_eq!(t.notes[0].verdict, Verdict::Caveat);
    }
}
