//! One port for plain TCP and TLS (`tls.shared`), and ALPN (RFC 7443) on TLS:
//! on a shared TLS address a plain TCP client and a TLS client both allocate and
//! relay, each counted under its own transport; without `shared` the TLS port
//! turns plain TCP away; a TLS client offering `stun.turn` gets it, one offering
//! only `h2` is refused in the handshake, one offering no ALPN is served.

mod support;

use std::sync::Arc;

use ferroturn::client::{Client, Received};
use ferroturn::config::TlsConfig;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tls_server(p: &Pki, shared: bool) -> ferroturn::net::Running {
    let mut opts = options("127.0.0.1:0");
    opts.tls = Some(TlsConfig {
        shared,
        ..p.tls_config()
    });
    ferroturn::net::start(opts).expect("server with TLS starts")
}

fn roots(p: &Pki) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.der.clone()).unwrap();
    roots
}

/// A rustls client configuration trusting the test PKI and offering `alpn`.
fn client_config(p: &Pki, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(p))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

/// Completes a TLS handshake offering `alpn`; the negotiated protocol, or the
/// handshake's error.
async fn handshake(
    p: &Pki,
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> std::io::Result<Option<Vec<u8>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connect = tokio_rustls::TlsConnector::from(client_config(p, alpn)).connect(name, tcp);
    let tls = tokio::time::timeout(WAIT, connect)
        .await
        .expect("the handshake ends in time")?;
    Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

/// Allocates with `c`, relays one Send indication through an echo peer and
/// checks it comes back.
async fn allocate_and_relay(mut c: Client, what: &[u8]) -> Client {
    let peer = echo_peer("127.0.0.1:0", 10).await;
    c.allocate().await.unwrap();
    c.create_permission(&[peer]).await.unwrap();
    c.send_indication(peer, what).await.unwrap();
    assert_eq!(
        c.recv_data(WAIT).await.unwrap(),
        Received::Data {
            peer,
            data: what.to_vec()
        }
    );
    c
}

#[tokio::test]
async fn plain_tcp_and_tls_allocate_on_the_same_shared_port() {
    let p = pki();
    let srv = tls_server(&p, true);
    let addr = srv.tls[0];

    let plain = Client::tcp(addr).await.unwrap().credentials(USER, PASS);
    let plain = allocate_and_relay(plain, b"plain on the shared port").await;
    let tls = Client::tls(addr, "localhost", roots(&p))
        .await
        .unwrap()
        .credentials(USER, PASS);
    let tls = allocate_and_relay(tls, b"tls on the shared port").await;
    // Each is counted under its own transport, as if it had come to a listener
    // of its own.
    let metrics = srv.metrics.expect("metrics on");
    let want = [
        r#"ferroturn_tcp_connections_active{transport="tcp"} 1"#,
        r#"ferroturn_tcp_connections_active{transport="tls"} 1"#,
        "ferroturn_tls_handshake_failures_total 0",
    ];
    wait_for_metrics(metrics, &want).await;
    drop((plain, tls));
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_shared_port_closes_what_is_neither_tls_nor_stun() {
    let p = pki();
    let srv = tls_server(&p, true);
    let mut s = tokio::net::TcpStream::connect(srv.tls[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let metrics = srv.metrics.expect("metrics on");
    wait_for_metrics(
        metrics,
        &[
            r#"ferroturn_connections_closed_total{reason="not_stun"} 1"#,
            "ferroturn_tls_handshake_failures_total 0",
        ],
    )
    .await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn without_shared_the_tls_port_refuses_plain_tcp() {
    let p = pki();
    let srv = tls_server(&p, false);
    let mut c = Client::tcp(srv.tls[0]).await.unwrap();
    assert!(
        c.binding().await.is_err(),
        "plain STUN answered on a TLS-only port"
    );
    let metrics = srv.metrics.expect("metrics on");
    wait_for_metrics(metrics, &["ferroturn_tls_handshake_failures_total 1"]).await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn alpn_stun_turn_is_negotiated_and_other_protocols_are_refused() {
    let p = pki();
    let srv = tls_server(&p, false);
    let addr = srv.tls[0];

    let got = handshake(&p, addr, &[b"h2", b"stun.turn"]).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"stun.turn"[..]));
    let got = handshake(&p, addr, &[b"stun.nat-discovery"]).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"stun.nat-discovery"[..]));
    let err = handshake(&p, addr, &[b"h2"]).await.unwrap_err();
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("noapplicationprotocol")
            || err
                .to_string()
                .to_lowercase()
                .contains("no_application_protocol"),
        "{err}"
    );
    assert_eq!(handshake(&p, addr, &[]).await.unwrap(), None);

    // A client that negotiated `stun.turn` is served as any other.
    let c = Client::tls_with_config(addr, "localhost", client_config(&p, &[b"stun.turn"]))
        .await
        .unwrap()
        .credentials(USER, PASS);
    drop(allocate_and_relay(c, b"alpn").await);
    srv.stop().unwrap();
}
