//! RFC 6062 TCP allocations on the wire, over loopback: Allocate TCP,
//! CreatePermission, Connect to a TCP echo peer, ConnectionBind on a second
//! connection, bytes both ways (counted in the metrics); a peer connecting to
//! the relayed address (ConnectionAttempt, ConnectionBind); a peer without a
//! permission refused; an unbound peer connection and an unbound data
//! connection closed after `tcp-connection-timeout` (2 s here, 30 s by default);
//! control and data connections over TLS.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ferroturn::client::{AllocateOptions, Client};
use ferroturn::net::{start, Running};
use ferroturn::stun::attr::PROTOCOL_TCP;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(2);

fn tcp_server() -> Running {
    let mut opts = options("127.0.0.1:0");
    opts.core.tcp_allocations = true;
    opts.core.tcp_connection_timeout = TIMEOUT;
    start(opts).expect("server starts")
}

/// A TCP echo peer on loopback: echoes what each of at most `limit`
/// connections sends, each for at most 30 s.
async fn tcp_echo_peer(limit: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..limit {
            let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_secs(30), l.accept()).await
            else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = tokio::time::timeout(Duration::from_secs(30), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                })
                .await;
            });
        }
    });
    addr
}

/// A control connection with a TCP allocation: the client and the relayed
/// address.
async fn tcp_allocation(srv: &Running) -> (Client, SocketAddr) {
    let mut c = turn_client(srv, Transport::Tcp).await;
    let a = c
        .allocate_with(&AllocateOptions {
            transport: Some(PROTOCOL_TCP),
            ..Default::default()
        })
        .await
        .expect("TCP allocation");
    (c, a.relayed[0])
}

/// Reads from a bound data connection until `want` bytes came (bounded).
async fn read_exactly(d: &mut Client, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..1000 {
        if got.len() >= want {
            break;
        }
        let chunk = d.recv_bytes(Duration::from_secs(5)).await.expect("data");
        assert!(!chunk.is_empty(), "data connection closed early");
        got.extend_from_slice(&chunk);
    }
    got
}

#[tokio::test]
async fn off_by_default_tcp_allocate_is_442() {
    let srv = server("127.0.0.1:0");
    let mut c = turn_client(&srv, Transport::Tcp).await;
    let e = c
        .allocate_with(&AllocateOptions {
            transport: Some(PROTOCOL_TCP),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(442));
    srv.stop().unwrap();
}

#[tokio::test]
async fn connect_bind_and_relay_both_ways() {
    let srv = tcp_server();
    let peer = tcp_echo_peer(4).await;
    let (mut c, relayed) = tcp_allocation(&srv).await;
    assert_eq!(relayed.ip(), peer.ip());
    // No permission yet: 403.
    assert_eq!(c.connect(peer).await.unwrap_err().code(), Some(403));
    c.create_permission(&[peer]).await.unwrap();
    let id = c.connect(peer).await.expect("Connect");
    // A second connection to the same peer: 446.
    assert_eq!(c.connect(peer).await.unwrap_err().code(), Some(446));
    // UDP-only methods: 400.
    assert_eq!(
        c.channel_bind(0x4000, peer).await.unwrap_err().code(),
        Some(400)
    );

    let mut d = turn_client(&srv, Transport::Tcp).await;
    d.connection_bind(id).await.expect("ConnectionBind");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    d.send_bytes(&payload).await.unwrap();
    let echoed = read_exactly(&mut d, payload.len()).await;
    assert_eq!(echoed, payload);

    let metrics = srv.metrics.expect("metrics listener");
    wait_for_metrics(
        metrics,
        &[
            r#"ferroturn_relayed_bytes_total{direction="client_to_peer",transport="tcp"} 100000"#,
            r#"ferroturn_relayed_bytes_total{direction="peer_to_client",transport="tcp"} 100000"#,
        ],
    )
    .await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_refused_connect_is_447() {
    let srv = tcp_server();
    // A loopback port nobody listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (mut c, _) = tcp_allocation(&srv).await;
    c.create_permission(&[closed]).await.unwrap();
    assert_eq!(c.connect(closed).await.unwrap_err().code(), Some(447));
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_peer_connects_to_the_relayed_address() {
    let srv = tcp_server();
    let (mut c, relayed) = tcp_allocation(&srv).await;
    // Without a permission the connection is closed at once.
    let mut refused = TcpStream::connect(relayed).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "refused peer: {r:?}");
    assert!(c
        .connection_attempt(Duration::from_millis(300))
        .await
        .is_err());

    c.create_permission(&["127.0.0.1:1".parse().unwrap()])
        .await
        .unwrap();
    let mut peer = TcpStream::connect(relayed).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (id, from) = c
        .connection_attempt(Duration::from_secs(5))
        .await
        .expect("ConnectionAttempt");
    assert_eq!(from, peer_addr);
    let mut d = turn_client(&srv, Transport::Tcp).await;
    d.connection_bind(id).await.expect("ConnectionBind");
    peer.write_all(b"from the peer").await.unwrap();
    assert_eq!(read_exactly(&mut d, 13).await, b"from the peer");
    d.send_bytes(b"from the client").await.unwrap();
    let mut buf = [0u8; 15];
    tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"from the client");

    // The allocation ends with its control connection; the data connection
    // follows within a second or so.
    drop(c);
    let mut closed = false;
    for _ in 0..50 {
        match d.recv_bytes(Duration::from_millis(200)).await {
            Ok(b) if b.is_empty() => {
                closed = true;
                break;
            }
            Ok(_) | Err(ferroturn::client::ClientError::Timeout) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the data connection outlived its allocation");
    srv.stop().unwrap();
}

#[tokio::test]
async fn unbound_connections_are_closed_after_the_timeout() {
    let srv = tcp_server();
    let (mut c, relayed) = tcp_allocation(&srv).await;
    c.create_permission(&["127.0.0.1:1".parse().unwrap()])
        .await
        .unwrap();
    // A peer connection nobody binds.
    let mut peer = TcpStream::connect(relayed).await.unwrap();
    let (id, _) = c.connection_attempt(Duration::from_secs(5)).await.unwrap();
    // A data connection that never binds.
    let mut idle = TcpStream::connect(srv.tcp[0]).await.unwrap();
    let started = std::time::Instant::now();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(10), peer.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "peer: {r:?}");
    let r = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "data connection: {r:?}"
    );
    assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(500));
    // The ID is gone: a late bind is 400.
    let mut d = turn_client(&srv, Transport::Tcp).await;
    assert_eq!(d.connection_bind(id).await.unwrap_err().code(), Some(400));
    srv.stop().unwrap();
}

#[tokio::test]
async fn a_waiting_peer_connection_goes_with_its_allocation() {
    let srv = tcp_server();
    let (mut c, relayed) = tcp_allocation(&srv).await;
    c.create_permission(&["127.0.0.1:1".parse().unwrap()])
        .await
        .unwrap();
    let mut peer = TcpStream::connect(relayed).await.unwrap();
    c.connection_attempt(Duration::from_secs(5)).await.unwrap();
    // The control connection closes: the allocation ends, and the peer
    // connection, never bound, is closed by the timeout at the latest.
    drop(c);
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(TIMEOUT * 5, peer.read(&mut b)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "peer: {r:?}");
    srv.stop().unwrap();
}

#[tokio::test]
async fn over_tls() {
    let p = pki();
    let mut opts = options("127.0.0.1:0");
    opts.core.tcp_allocations = true;
    opts.tls = Some(p.tls_config());
    let srv = start(opts).expect("server with TLS starts");
    let tls_client = async || {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(p.der.clone()).unwrap();
        Client::tls(srv.tls[0], "localhost", roots)
            .await
            .unwrap()
            .credentials(USER, PASS)
    };
    let peer = tcp_echo_peer(1).await;
    let mut c = tls_client().await;
    c.allocate_with(&AllocateOptions {
        transport: Some(PROTOCOL_TCP),
        ..Default::default()
    })
    .await
    .expect("TCP allocation over TLS");
    c.create_permission(&[peer]).await.unwrap();
    let id = c.connect(peer).await.expect("Connect");
    let mut d = tls_client().await;
    d.connection_bind(id)
        .await
        .expect("ConnectionBind over TLS");
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    d.send_bytes(&payload).await.unwrap();
    assert_eq!(read_exactly(&mut d, payload.len()).await, payload);
    wait_for_metrics(
        srv.metrics.expect("metrics listener"),
        &[r#"ferroturn_relayed_bytes_total{direction="peer_to_client",transport="tls"} 50000"#],
    )
    .await;
    srv.stop().unwrap();
}
