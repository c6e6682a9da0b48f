//! TLS for `turns:`: the rustls server configuration from PEM files, with the
//! certificate reloadable while the server runs.
//!
//! TLS 1.2 and 1.3 (rustls' safe defaults, ring as the crypto provider). ALPN
//! (RFC 7443): the server offers `stun.turn` and `stun.nat-discovery`. A client
//! that offers ALPN values but none of these is refused in the handshake (rustls
//! sends `no_application_protocol`): it means to speak something else (h2 on a
//! shared 443, say) and would only be closed as "not STUN" later. A client that
//! offers no ALPN at all is served: browsers send none for TURN.
//!
//! The certificate comes from a [`ReloadableCert`] resolver rather than being fixed
//! in the configuration: on SIGHUP the files are read again and, if they are good,
//! swapped in. Handshakes from then on use the new certificate; connections already
//! established keep their session and are not disturbed. A bad new pair is refused
//! and the old one stays in force.
//!
//! The same pair serves DTLS (`tls.dtls-listen`, see `net::shard::dtls`): when
//! DTLS is on, an OpenSSL context holding the same chain and key (and the same
//! ALPN choice) is built beside the rustls key, so a pair OpenSSL cannot use is
//! refused at start and on reload like a broken one.
//!
//! The served certificate's notAfter is kept beside it, as unix seconds, for the
//! `ferroturn_tls_certificate_expiry_timestamp_seconds` gauge.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use openssl::ssl::SslContext;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and key, read and checked: the rustls form, and with DTLS on
/// the OpenSSL context DTLS sessions are made from.
#[derive(Debug, Clone)]
pub struct CertPair {
    rustls: Arc<CertifiedKey>,
    dtls: Option<SslContext>,
}

/// Reads the chain and key and checks that they belong together: every failure
/// names the file and the configuration key it came from. With `dtls`, OpenSSL
/// must take them too.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider, dtls: bool) -> io::Result<CertPair> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {}: {e}", path.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("tls.cert", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("tls.cert", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("tls.cert", cert, &"no PEM certificate in the file"));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls.key", key, &e))?;
    let dtls_context = if dtls {
        let ctx = crate::net::shard::dtls_context(&chain, &private_key).map_err(|e| {
            bad(
                "tls.key (with tls.cert, for tls.dtls-listen) is unusable for DTLS:",
                key,
                &e,
            )
        })?;
        Some(ctx)
    } else {
        None
    };
    let certified = CertifiedKey::from_der(chain, private_key, provider)
        .map_err(|e| bad("tls.key does not match tls.cert, or is unusable:", key, &e))?;
    Ok(CertPair {
        rustls: Arc::new(certified),
        dtls: dtls_context,
    })
}

/// The server's certificate and key, re-read from their files on request.
#[derive(Debug)]
pub struct ReloadableCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// Whether DTLS serves this pair too (OpenSSL must take it).
    dtls: bool,
    current: RwLock<CertPair>,
    /// `current`'s end-entity notAfter in unix seconds; 0 if it could not be read.
    not_after: AtomicI64,
}

/// The notAfter of `key`'s end-entity certificate in unix seconds, or 0 (with a
/// warning) when x509-parser cannot read it: rustls accepted the certificate, so
/// it is served all the same; only the expiry gauge goes without.
fn read_not_after(key: &CertifiedKey) -> i64 {
    let parsed = key
        .end_entity_cert()
        .map_err(|e| e.to_string())
        .and_then(|der| {
            x509_parser::parse_x509_certificate(der)
                .map(|(_, cert)| cert.validity().not_after.timestamp())
                .map_err(|e| e.to_string())
        });
    parsed.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the TLS certificate's expiry time");
        0
    })
}

impl ReloadableCert {
    /// Loads the pair; a missing file or a mismatched key is an error.
    pub fn load(cert: &Path, key: &Path) -> io::Result<Arc<Self>> {
        Self::load_for(cert, key, false)
    }

    /// Loads the pair, for DTLS too when `dtls` (then a pair OpenSSL cannot
    /// use is an error, now and on every reload).
    pub fn load_for(cert: &Path, key: &Path, dtls: bool) -> io::Result<Arc<Self>> {
        let provider = provider();
        let current = load(cert, key, &provider, dtls)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            dtls,
            not_after: AtomicI64::new(read_not_after(&current.rustls)),
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again and, if they form a good pair, uses them for every
    /// handshake from now on. On error the previous pair stays in force.
    pub fn reload(&self) -> io::Result<()> {
        let next = load(&self.cert, &self.key, &self.provider, self.dtls)?;
        self.install(next);
        Ok(())
    }

    /// Reads a pair (maybe from new paths) without using it yet: a
    /// configuration reload checks every part before it applies any.
    pub fn prepare(&self, cert: &Path, key: &Path) -> io::Result<CertPair> {
        load(cert, key, &self.provider, self.dtls)
    }

    /// Uses `next` for every handshake from now on; live connections keep theirs.
    pub fn install(&self, next: CertPair) {
        let expiry = read_not_after(&next.rustls);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.not_after.store(expiry, Ordering::Relaxed);
    }

    /// The served certificate's notAfter in unix seconds (0 if unreadable).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// The OpenSSL context of the current pair, for a new DTLS session; `None`
    /// when DTLS is off.
    pub fn dtls_context(&self) -> Option<SslContext> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .dtls
            .clone()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .rustls
                .clone(),
        )
    }
}

/// The ALPN protocol IDs the server offers (RFC 7443 §6), in order of preference:
/// TURN first, then STUN NAT behaviour discovery.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// [`ALPN_PROTOCOLS`] in the wire form OpenSSL takes (each ID after its length
/// byte), for DTLS.
pub const ALPN_WIRE: &[u8] = b"\x09stun.turn\x12stun.nat-discovery";

/// The rustls configuration for `turns:` listeners: [`server_config`] offering
/// [`ALPN_PROTOCOLS`].
pub fn turn_server_config(certs: Arc<ReloadableCert>) -> io::Result<Arc<rustls::ServerConfig>> {
    let mut config = base_config(certs)?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The rustls server configuration without ALPN, taking its certificate from
/// `certs`: the HTTPS API uses it, whose clients offer `h2` or `http/1.1` and
/// would be refused by a server offering only the STUN protocol IDs.
pub fn server_config(certs: Arc<ReloadableCert>) -> io::Result<Arc<rustls::ServerConfig>> {
    Ok(Arc::new(base_config(certs)?))
}

fn base_config(certs: Arc<ReloadableCert>) -> io::Result<rustls::ServerConfig> {
    let config = rustls::ServerConfig::builder_with_provider(certs.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_wire_form_is_the_protocol_list() {
        let mut wire = Vec::new();
        for p in ALPN_PROTOCOLS {
            wire.push(u8::try_from(p.len()).unwrap());
            wire.extend_from_slice(p);
        }
        assert_eq!(ALPN_WIRE, &wire[..]);
    }
}
