//! The DTLS check of `ferroturn doctor` (`tls.dtls-listen`, or `--dtls-server`):
//! a DTLS 1.2 handshake offering ALPN `stun.turn` (OpenSSL's client side, as
//! coturn's clients), then a Binding over DTLS. The certificate itself is the
//! TLS one, verified by the certificate check; this one shows the UDP port is
//! open, the handshake completes and STUN is answered inside it.

use std::sync::Arc;

use bytes::BytesMut;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};
use tokio::net::UdpSocket;

use super::checks::seconds;
use super::report::Check;
use super::{Plan, Target};
use crate::client::DatagramIo;
use crate::stun::attr::XorMappedAddress;
use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};

const NAME: &str = "dtls";

/// What went wrong, and where in the exchange.
enum Failure {
    Setup(String),
    Handshake(String),
    Binding(String),
}

/// Runs the check against `target`, bounded by the plan's timeout.
pub(super) async fn check(plan: &Plan, target: &Target) -> Check {
    let fix_port = format!(
        "is the server listening for DTLS on UDP {} (tls.dtls-listen)? is that UDP port open in the firewall?",
        target.addr
    );
    match tokio::time::timeout(plan.timeout, exchange(target)).await {
        Ok(Ok((alpn, mapped))) => Check::pass(
            NAME,
            format!(
                "{}: DTLS 1.2 handshake, ALPN {alpn}, Binding answered (mapped address {mapped})",
                target.addr
            ),
        ),
        Ok(Err(Failure::Setup(e))) => Check::fail(NAME, e, "report this as a bug"),
        Ok(Err(Failure::Handshake(e))) => Check::fail(
            NAME,
            format!("DTLS handshake with {} failed: {e}", target.addr),
            fix_port,
        ),
        Ok(Err(Failure::Binding(e))) => Check::fail(
            NAME,
            format!("{}: DTLS handshake done, but {e}", target.addr),
            "the server behind that port does not speak STUN over DTLS: is it ferroturn's tls.dtls-listen?",
        ),
        Err(_) => Check::fail(
            NAME,
            format!(
                "no DTLS handshake and Binding with {} within {}",
                target.addr,
                seconds(plan.timeout)
            ),
            fix_port,
        ),
    }
}

/// The handshake and a Binding: the ALPN protocol chosen and the mapped address.
async fn exchange(target: &Target) -> Result<(String, std::net::SocketAddr), Failure> {
    let setup = |e: &dyn std::fmt::Display| Failure::Setup(format!("DTLS client: {e}"));
    let bind: std::net::SocketAddr = if target.addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| setup(&e))?;
    socket
        .connect(target.addr)
        .await
        .map_err(|e| Failure::Handshake(e.to_string()))?;
    // Until asked, tokio does not know the socket is writable.
    socket.writable().await.map_err(|e| setup(&e))?;
    let socket = Arc::new(socket);
    let mut ctx = SslContext::builder(SslMethod::dtls_client()).map_err(|e| setup(&e))?;
    ctx.set_verify(SslVerifyMode::NONE);
    ctx.set_alpn_protos(b"\x09stun.turn")
        .map_err(|e| setup(&e))?;
    let mut ssl = Ssl::new(&ctx.build()).map_err(|e| setup(&e))?;
    ssl.set_connect_state();
    let mut tls = SslStream::new(ssl, DatagramIo(socket.clone())).map_err(|e| setup(&e))?;
    // OpenSSL retransmits its flight on its own timer when called again.
    loop {
        match tls.do_handshake() {
            Ok(()) => break,
            Err(e) if e.code() == ErrorCode::WANT_READ => {}
            Err(e) => return Err(Failure::Handshake(e.to_string())),
        }
        tokio::select! {
            _ = socket.readable() => {}
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
    let alpn = match tls.ssl().selected_alpn_protocol() {
        Some(p) => String::from_utf8_lossy(p).into_owned(),
        None => "not negotiated".to_owned(),
    };
    let tid = TransactionId::random();
    let mut request = BytesMut::new();
    let mut b = MessageBuilder::new(&mut request, Method::Binding, Class::Request, tid);
    b.add_fingerprint();
    b.finish();
    tls.ssl_write(&request)
        .map_err(|e| Failure::Binding(format!("the Binding could not be sent: {e}")))?;
    let mut buf = vec![0u8; 2048];
    loop {
        match tls.ssl_read(&mut buf) {
            Ok(n) => {
                let Ok(msg) = Message::parse(&buf[..n]) else {
                    return Err(Failure::Binding("the answer is not STUN".to_owned()));
                };
                if msg.transaction_id() != tid {
                    continue;
                }
                return match msg.get::<XorMappedAddress>() {
                    Some(Ok(XorMappedAddress(mapped))) => Ok((alpn, mapped)),
                    _ => Err(Failure::Binding(
                        "the Binding answer has no XOR-MAPPED-ADDRESS".to_owned(),
                    )),
                };
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                // Over UDP a request can be lost: sent again each second
                // until an answer or the plan's timeout.
                tokio::select! {
                    _ = socket.readable() => {}
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                        let _ = tls.ssl_write(&request);
                    }
                }
            }
            Err(e) => {
                return Err(Failure::Binding(format!(
                    "the session ended before a Binding answer: {e}"
                )))
            }
        }
    }
}
