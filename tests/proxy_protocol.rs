//! The PROXY protocol (v1 and v2) on TCP and TLS listeners behind an L4 load
//! balancer (`connections.proxy-protocol-from`), over real loopback sockets:
//! a connection from the trusted source (127.0.0.2 here) opens with a header,
//! and the client it names is the one the server sees — XOR-MAPPED-ADDRESS of
//! Binding and Allocate, `sessions`, the per-address connection cap; a trusted
//! source without a valid header is closed (`proxy_header`); an untrusted
//! source's header is never believed (its connection is closed as not STUN,
//! or its TLS handshake fails), while its plain connections work as before.

mod support;

use std::net::SocketAddr;

use ferroturn::client::Client;
use ferroturn::net::Running;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// The load balancer's address: trusted.
const BALANCER: &str = "127.0.0.2";
/// The client a header names.
const NAMED: &str = "198.51.100.7:40000";

fn server(tls: Option<&Pki>, max_per_ip: u32) -> Running {
    let mut opts = options("127.0.0.1:0");
    opts.connections.proxy_protocol_from = vec![format!("{BALANCER}/32").parse().unwrap()];
    opts.connections.max_per_ip = max_per_ip;
    opts.tls = tls.map(|p| p.tls_config());
    ferroturn::net::start(opts).expect("server starts")
}

/// A TCP connection from `from` (port chosen by the kernel) to `to` that
/// first writes `preamble`.
async fn connect(from: &str, to: SocketAddr, preamble: &[u8]) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    s.write_all(preamble).await.unwrap();
    s
}

fn v1(named: &str, server: SocketAddr) -> Vec<u8> {
    let n: SocketAddr = named.parse().unwrap();
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        n.ip(),
        server.ip(),
        n.port(),
        server.port()
    )
    .into_bytes()
}

fn v2(named: &str, server: SocketAddr) -> Vec<u8> {
    let n: SocketAddr = named.parse().unwrap();
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (n.ip(), server.ip()) else {
        unreachable!()
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&n.port().to_be_bytes());
    h.extend_from_slice(&server.port().to_be_bytes());
    h
}

async fn client_over(s: TcpStream, server: SocketAddr) -> Client {
    let local = s.local_addr().unwrap();
    Client::over_stream(s, local, server).credentials(USER, PASS)
}

#[tokio::test]
async fn tcp_through_a_trusted_balancer_is_the_named_client_with_v1_and_v2() {
    let srv = server(None, 0);
    let tcp = srv.tcp[0];
    for header in [v1(NAMED, tcp), v2(NAMED, tcp)] {
        let mut c = client_over(connect(BALANCER, tcp, &header).await, tcp).await;
        assert_eq!(c.binding().await.unwrap(), NAMED.parse().unwrap());
        let a = c.allocate().await.unwrap();
        assert_eq!(a.mapped, Some(NAMED.parse().unwrap()));
        let sessions = srv.sessions().await;
        assert!(
            sessions
                .iter()
                .any(|s| s.allocation.tuple.client == NAMED.parse().unwrap()),
            "{sessions:?}"
        );
        c.refresh(0).await.unwrap();
    }
    // A header naming no client (the balancer's health check, v1 UNKNOWN)
    // keeps the balancer's address.
    let mut c = client_over(connect(BALANCER, tcp, b"PROXY UNKNOWN\r\n").await, tcp).await;
    assert_eq!(c.binding().await.unwrap().ip().to_string(), BALANCER);
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_trusted_source_without_a_header_and_untrusted_headers_are_closed() {
    let srv = server(None, 0);
    let tcp = srv.tcp[0];
    // From the balancer, STUN without a header: closed, counted.
    let mut c = client_over(connect(BALANCER, tcp, b"").await, tcp).await;
    assert!(c.binding().await.is_err());
    // From anyone else, a header is not STUN: closed, and never believed.
    let mut c = client_over(connect("127.0.0.1", tcp, &v1(NAMED, tcp)).await, tcp).await;
    assert!(c.binding().await.is_err());
    // Their plain connections work as before, under their own address.
    let mut c = client_over(connect("127.0.0.1", tcp, b"").await, tcp).await;
    assert_eq!(c.binding().await.unwrap().ip().to_string(), "127.0.0.1");
    wait_for_metrics(
        srv.metrics.unwrap(),
        &[
            r#"ferroturn_connections_closed_total{reason="proxy_header"} 1"#,
            r#"ferroturn_connections_closed_total{reason="not_stun"} 1"#,
        ],
    )
    .await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn the_connection_cap_counts_the_named_client_not_the_balancer() {
    let srv = server(None, 2);
    let tcp = srv.tcp[0];
    let mut held = Vec::new();
    // Two connections of one named client fill its cap; a third is closed,
    // while another client behind the same balancer still gets in.
    for _ in 0..2 {
        let mut c = client_over(connect(BALANCER, tcp, &v1(NAMED, tcp)).await, tcp).await;
        c.binding().await.unwrap();
        held.push(c);
    }
    let mut third = client_over(connect(BALANCER, tcp, &v1(NAMED, tcp)).await, tcp).await;
    assert!(third.binding().await.is_err());
    let other = "198.51.100.8:40000";
    let mut c = client_over(connect(BALANCER, tcp, &v1(other, tcp)).await, tcp).await;
    assert_eq!(c.binding().await.unwrap(), other.parse().unwrap());
    srv.stop().unwrap();
}

#[tokio::test]
async fn tls_through_a_trusted_balancer_is_the_named_client() {
    let p = pki();
    let srv = server(Some(&p), 0);
    let tls = srv.tls[0];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.der.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    for (from, header, named) in [
        (BALANCER, v2(NAMED, tls), Some(NAMED)),
        ("127.0.0.1", v2(NAMED, tls), None),
    ] {
        let tcp = connect(from, tls, &header).await;
        let local = tcp.local_addr().unwrap();
        let stream = tokio::time::timeout(WAIT, connector.connect(name.clone(), tcp)).await;
        match named {
            Some(named) => {
                let stream = stream.unwrap().unwrap();
                let mut c = Client::over_stream(stream, local, tls).credentials(USER, PASS);
                assert_eq!(c.binding().await.unwrap(), named.parse().unwrap());
                c.allocate().await.unwrap();
            }
            // An untrusted header ruins the handshake.
            None => assert!(!matches!(stream, Ok(Ok(_)))),
        }
    }
    srv.stop().unwrap();
}
