//! The TLS certificate check of `ferroturn doctor`: a verifier that judges the
//! chain as a browser would (webpki, the given CA or the web's roots) but lets
//! the handshake finish, so that one connection both reports the certificate
//! and runs the STUN checks over TLS; then the days to expiry.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::report::Check;
use super::{Plan, Target};
use crate::time::{format_unix, unix_now};

/// Days before expiry from which the certificate check warns.
const EXPIRY_WARN_DAYS: i64 = 14;

/// The certificate check, from what the TLS connection's verifier saw.
pub(super) fn certificate(plan: &Plan, tls: &Target, recorder: &Recorder) -> Check {
    let name = "tls certificate";
    let Some(seen) = recorder.seen() else {
        return Check::fail(
            name,
            format!("no TLS handshake with {} reached the certificate", tls.addr),
            "see the binding tls check: is tls.listen reachable and serving TLS?",
        );
    };
    let expiry = x509_parser::parse_x509_certificate(&seen.leaf)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp());
    let days = expiry.map(|t| (t - unix_now()).div_euclid(86_400));
    let when = match (expiry, days) {
        (Some(t), Some(d)) if d >= 0 => format!("expires {} (in {d} days)", format_unix(t)),
        (Some(t), _) => format!("EXPIRED {}", format_unix(t)),
        _ => "expiry unreadable".to_owned(),
    };
    match (&seen.verdict, days) {
        (Err(e), _) => {
            let fix = if e.contains("xpired") {
                "renew the certificate; the server reads tls.cert again on `ferroturn reload` (or SIGHUP)".to_owned()
            } else if e.contains("NotValidForName") || e.contains("not valid for name") {
                format!(
                    "serve a certificate for {:?}, or pass --tls-name with the name clients use",
                    plan.tls_name
                )
            } else if e.contains("UnknownIssuer") || e.contains("issuer") {
                format!(
                    "put the whole chain (leaf first, then intermediates) in tls.cert; for a private CA pass --ca FILE (verified against {})",
                    plan.roots_source
                )
            } else {
                "check tls.cert".to_owned()
            };
            Check::fail(
                name,
                format!("does not verify for {:?}: {e}; {when}", plan.tls_name),
                fix,
            )
        }
        (Ok(()), Some(d)) if d < EXPIRY_WARN_DAYS => Check::warn(
            name,
            format!("valid for {:?} but {when}", plan.tls_name),
            "renew it now; then `ferroturn reload` (or SIGHUP)",
        ),
        (Ok(()), _) => Check::pass(
            name,
            format!(
                "valid for {:?} against {}; {when}",
                plan.tls_name, plan.roots_source
            ),
        ),
    }
}

/// What the TLS verifier saw: the leaf and whether the chain verified.
#[derive(Clone)]
struct Seen {
    leaf: Vec<u8>,
    verdict: Result<(), String>,
}

/// A certificate verifier that verifies with webpki as a browser would, but
/// records the verdict and lets the handshake go on, so that one connection
/// both reports the certificate and runs the STUN checks over TLS. Handshake
/// signatures are still verified.
#[derive(Debug)]
pub(super) struct Recorder {
    inner: Result<Arc<WebPkiServerVerifier>, String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<Seen>>,
}

impl fmt::Debug for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seen")
            .field("verdict", &self.verdict)
            .finish()
    }
}

impl Recorder {
    pub(super) fn new(plan: &Plan) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(plan.roots.clone()),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string());
        Recorder {
            inner,
            provider,
            seen: Mutex::new(None),
        }
    }

    /// A client configuration verifying through this recorder.
    pub(super) fn config(self: &Arc<Self>) -> std::io::Result<Arc<rustls::ClientConfig>> {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn seen(&self) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Ok(inner) => inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("no trust anchors: {e}")),
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen {
            leaf: end_entity.to_vec(),
            verdict,
        });
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
