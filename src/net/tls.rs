//! TLS for `turns:`: the rustls server configuration from PEM files.
//!
//! TLS 1.2 and 1.3 (rustls' safe defaults, ring as the crypto provider). No ALPN
//! is required: browsers do not send one for TURN, and a server that insisted on
//! `stun.turn` (RFC 7443) would turn them away.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Loads the certificate chain and key, and checks that they belong together:
/// every failure names the file and the key it came from.
pub fn server_config(cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| bad("tls.key does not match tls.cert, or is unusable:", key, &e))?;
    Ok(Arc::new(config))
}
