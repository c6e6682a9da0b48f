//! `[tls]`: TURN over TLS (`turns:`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::{int_in, invalid, parse_addresses, Result};

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
    /// `shared`: each `listen` address also serves plain TCP clients, told apart
    /// by their first byte, so that `turn:HOST:443?transport=tcp` and
    /// `turns:HOST:443` can share the one port a strict firewall leaves open.
    pub shared: bool,
    /// `dtls-listen`: addresses for DTLS over UDP (RFC 7350, `turns:` with
    /// `transport=udp`), with the same certificate; empty (the default) = no
    /// DTLS. The conventional port is 5349/udp, beside TLS on 5349/tcp.
    pub dtls_listen: Vec<String>,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            listen: Vec::new(),
            cert: String::new(),
            key: String::new(),
            handshake_timeout: 10,
            shared: false,
            dtls_listen: Vec::new(),
        }
    }
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
    /// Whether the TLS addresses also take plain TCP (STUN/TURN) clients.
    pub shared: bool,
    /// Addresses to serve DTLS on (UDP); empty = none.
    pub dtls_listen: Vec<SocketAddr>,
}

/// TLS needs a certificate and its key together; addresses default to port 5349.
pub(super) fn validate_tls(tls: &RawTls) -> Result<Option<TlsConfig>> {
    let (cert, key) = (tls.cert.trim(), tls.key.trim());
    match (cert.is_empty(), key.is_empty()) {
        (true, true) if tls.shared => {
            return invalid(
                "tls.shared",
                "true needs tls.cert and tls.key (TLS listeners)",
            )
        }
        (true, true) if !tls.dtls_listen.is_empty() => {
            return invalid("tls.cert", "required when tls.dtls-listen is set")
        }
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
    let dtls_listen = parse_addresses("tls.dtls-listen", &tls.dtls_listen)?;
    let secs: u64 = int_in("tls.handshake-timeout", tls.handshake_timeout, 1, 300)?;
    Ok(Some(TlsConfig {
        listen,
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
        handshake_timeout: Duration::from_secs(secs),
        shared: tls.shared,
        dtls_listen,
    }))
}
