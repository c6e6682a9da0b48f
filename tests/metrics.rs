//! The metrics and health endpoints, scraped with a real HTTP client (hyper's)
//! from an in-process server whose traffic the test knows exactly.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferroturn::client::{Client, ClientError, Received};
use ferroturn::net::Running;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::metric_value as value;

/// Scrapes until every series has its expected value (the shards publish every
/// 250 ms), or panics with the last scrape after ~2 s.
async fn expect(metrics: SocketAddr, want: &[(impl AsRef<str>, u64)]) {
    eventually_async(Duration::from_secs(2), "the expected series", async || {
        let (status, body) = http_get(metrics, "/metrics").await;
        assert_eq!(status, 200);
        let wrong: Vec<_> = want
            .iter()
            .map(|(s, v)| (s.as_ref(), v))
            .filter(|(s, v)| value(&body, s) != Some(**v))
            .map(|(s, v)| format!("{s}: want {v}, got {:?}", value(&body, s)))
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\n--- scrape ---\n{body}", wrong.join("\n")))
        }
    })
    .await
}

/// Sends `n` Send indications and `n` ChannelData messages through the echo
/// peer and back; returns the payload bytes sent one way.
async fn relay(c: &mut Client, peer: SocketAddr, n: u8) -> u64 {
    let mut total = 0;
    c.create_permission(&[peer]).await.unwrap();
    for i in 0..n {
        let payload = vec![i; 10 + i as usize];
        total += payload.len() as u64;
        c.send_indication(peer, &payload).await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Data { data, .. } => assert_eq!(data, payload),
            other => panic!("{other:?}"),
        }
    }
    c.channel_bind(0x4000, peer).await.unwrap();
    for i in 0..n {
        let payload = vec![i; 1 + i as usize * 3];
        total += payload.len() as u64;
        c.send_channel_data(0x4000, &payload).await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Channel { data, .. } => assert_eq!(data, payload),
            other => panic!("{other:?}"),
        }
    }
    total
}

/// A fresh server and an allocation over `transport` that relays `n` Send and
/// `n` ChannelData round trips through an echo peer; returns once the relayed
/// byte and packet series of `transport` count them exactly, both ways, and the
/// other transport's stay 0.
async fn relay_and_count(transport: Transport, n: u8) -> (Running, SocketAddr, Client) {
    let srv = server("127.0.0.1:0");
    let m = srv.metrics.expect("metrics on");
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut c, _) = allocated_client(&srv, transport).await;
    let bytes = relay(&mut c, peer, n).await;
    let packets = 2 * u64::from(n);
    let (t, other) = match transport {
        Transport::Udp => ("udp", "tcp"),
        Transport::Tcp => ("tcp", "udp"),
    };
    let series = |kind: &str, direction: &str, transport: &str| {
        format!(
            r#"ferroturn_relayed_{kind}_total{{direction="{direction}",transport="{transport}"}}"#
        )
    };
    expect(
        m,
        &[
            (series("bytes", "client_to_peer", t), bytes),
            (series("bytes", "peer_to_client", t), bytes),
            (series("packets", "client_to_peer", t), packets),
            (series("packets", "peer_to_client", t), packets),
            (series("bytes", "client_to_peer", other), 0),
        ],
    )
    .await;
    (srv, m, c)
}

#[tokio::test]
async fn udp_relay_counts_are_exact_and_live() {
    let (srv, m, mut c) = relay_and_count(Transport::Udp, 10).await;
    // Live, while the allocation is still open.
    expect(
        m,
        &[
            ("ferroturn_allocations_active", 1),
            ("ferroturn_allocations_created_total", 1),
            ("ferroturn_permissions_active", 1),
            ("ferroturn_channels_active", 1),
            // The client's first Allocate is challenged, the retry succeeds.
            (
                r#"ferroturn_requests_total{code="401",method="allocate"}"#,
                1,
            ),
            (
                r#"ferroturn_requests_total{code="200",method="allocate"}"#,
                1,
            ),
            (
                r#"ferroturn_requests_total{code="200",method="create_permission"}"#,
                1,
            ),
            (
                r#"ferroturn_requests_total{code="200",method="channel_bind"}"#,
                1,
            ),
        ],
    )
    .await;
    assert_eq!(c.refresh(0).await.unwrap(), 0);
    expect(
        m,
        &[
            ("ferroturn_allocations_active", 0),
            ("ferroturn_permissions_active", 0),
            ("ferroturn_channels_active", 0),
            ("ferroturn_allocations_created_total", 1),
            (
                r#"ferroturn_requests_total{code="200",method="refresh"}"#,
                1,
            ),
        ],
    )
    .await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn tcp_relay_counts_by_transport_and_connections() {
    let (srv, m, c) = relay_and_count(Transport::Tcp, 7).await;
    expect(
        m,
        &[
            (r#"ferroturn_tcp_connections_active{transport="tcp"}"#, 1),
            (r#"ferroturn_tcp_connections_total{transport="tcp"}"#, 1),
            ("ferroturn_allocations_active", 1),
        ],
    )
    .await;
    drop(c);
    // Closing the connection ends its allocation (RFC 8656 §3.1).
    expect(
        m,
        &[
            (r#"ferroturn_tcp_connections_active{transport="tcp"}"#, 0),
            (r#"ferroturn_tcp_connections_total{transport="tcp"}"#, 1),
            ("ferroturn_allocations_active", 0),
        ],
    )
    .await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn refusals_auth_failures_and_quotas_are_counted() {
    let mut opts = options("127.0.0.1:0");
    opts.max_allocations_per_user = 1;
    let srv = ferroturn::net::start(opts).unwrap();
    let m = srv.metrics.unwrap();
    // A wrong password, then an unknown user: both a plain 401 on the wire.
    let mut bad = turn_client_as(&srv, Transport::Udp, USER, "wrong").await;
    assert!(bad.allocate().await.is_err());
    let mut nobody = turn_client_as(&srv, Transport::Udp, "nobody", PASS).await;
    assert!(nobody.allocate().await.is_err());
    // A peer the default policy denies (private range, not opened): 403.
    let (mut c, _) = allocated_client(&srv, Transport::Udp).await;
    let err = c
        .create_permission(&["10.1.2.3:5000".parse().unwrap()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(403));
    // A second allocation for the same user: 486.
    let mut c2 = turn_client(&srv, Transport::Udp).await;
    let e: ClientError = c2.allocate().await.unwrap_err();
    assert_eq!(e.code(), Some(486));
    expect(
        m,
        &[
            (
                r#"ferroturn_requests_total{code="403",method="create_permission"}"#,
                1,
            ),
            (
                r#"ferroturn_requests_total{code="486",method="allocate"}"#,
                1,
            ),
            (r#"ferroturn_quota_rejections_total{kind="user"}"#, 1),
            (r#"ferroturn_quota_rejections_total{kind="total"}"#, 0),
            (r#"ferroturn_auth_failures_total{reason="unknown_user"}"#, 1),
            (r#"ferroturn_auth_failures_total{reason="stale_nonce"}"#, 0),
        ],
    )
    .await;
    // The client retries a 401 with the nonce it got, so a wrong password fails
    // at least once; the exact count is the client's business.
    let (_, body) = http_get(m, "/metrics").await;
    assert!(
        value(
            &body,
            r#"ferroturn_auth_failures_total{reason="bad_integrity"}"#
        )
        .unwrap()
            >= 1,
        "{body}"
    );
    srv.stop().unwrap();
}

#[tokio::test]
async fn health_endpoints_and_unknown_paths() {
    let srv = server("127.0.0.1:0");
    let m = srv.metrics.unwrap();
    assert_eq!(http_get(m, "/healthz").await, (200, "ok\n".into()));
    // Ready once every shard serves its listeners.
    wait_http_200(m, "/readyz", Duration::from_secs(2)).await;
    assert_eq!(http_get(m, "/nope").await.0, 404);
    assert_eq!(http_get(m, "/metrics/extra").await.0, 404);
    srv.health.draining.store(true, Ordering::SeqCst);
    assert_eq!(http_get(m, "/readyz").await, (503, "draining\n".into()));
    assert_eq!(http_get(m, "/healthz").await.0, 200);
    srv.health.draining.store(false, Ordering::SeqCst);
    assert_eq!(http_get(m, "/readyz").await.0, 200);

    // Garbage instead of HTTP: answered with an error or closed, and the
    // endpoint keeps serving.
    let mut s = TcpStream::connect(m).await.unwrap();
    s.write_all(b"\x16\x03\x01\x00\xff garbage\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    assert_eq!(http_get(m, "/healthz").await.0, 200);
    srv.stop().unwrap();
}

#[test]
fn metrics_can_be_turned_off() {
    let mut opts = options("127.0.0.1:0");
    opts.metrics = None;
    let srv = ferroturn::net::start(opts).unwrap();
    assert_eq!(srv.metrics, None);
    srv.stop().unwrap();
}

/// The endpoint is one of the server's own services: a client cannot relay to it.
#[tokio::test]
async fn metrics_address_is_not_a_relay_target() {
    let srv = server("127.0.0.1:0");
    let m = srv.metrics.unwrap();
    let (mut c, _) = allocated_client(&srv, Transport::Udp).await;
    let err = c.channel_bind(0x4000, m).await.unwrap_err();
    assert_eq!(err.code(), Some(403));
    srv.stop().unwrap();
}
