//! Stream abuse limits (`[connections]`), against an in-process server over
//! loopback TCP: connections per client address and in total, the allocate
//! deadline (absolute from the accept, so a slow-loris client is closed on
//! time), the idle rule after an allocation ends, and the closures counted by
//! reason in `ferroturn_connections_closed_total`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferroturn::config::ConnectionsConfig;
use ferroturn::net::{start, Running};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn server_with(c: ConnectionsConfig) -> Running {
    let mut opts = options("127.0.0.1:0");
    opts.connections = c;
    start(opts).expect("server starts")
}

fn limits(max_per_ip: u32, max_total: u32, allocate_timeout: u64) -> ConnectionsConfig {
    ConnectionsConfig {
        max_per_ip,
        max_total,
        allocate_timeout: Duration::from_secs(allocate_timeout),
        proxy_protocol_from: Vec::new(),
    }
}

/// A TCP connection to `server` from `source` (any 127.x address).
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    sock.connect(server).await.unwrap()
}

/// A STUN Binding request (no attributes).
fn binding(tid: u8) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[1] = 0x01;
    m[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    m[8..].fill(tid);
    m
}

/// Sends a Binding request and reads the success response: the connection is
/// open and served.
async fn served(c: &mut TcpStream, tid: u8) -> Result<(), String> {
    c.write_all(&binding(tid))
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 20];
    match tokio::time::timeout(WAIT, c.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("read: {e}")),
        Err(_) => return Err("no answer".into()),
    }
    if head[..2] != [0x01, 0x01] || head[8..] != [tid; 12] {
        return Err(format!("not our Binding success: {head:?}"));
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut rest = vec![0u8; len];
    c.read_exact(&mut rest).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Waits (at most `within`) for the server to close `c`: end of file or a
/// reset. Anything the server sent before is skipped. True if it closed.
async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn expect_closed(metrics: SocketAddr, reason: &str, n: u64) {
    wait_for_metrics(
        metrics,
        &[&format!(
            "ferroturn_connections_closed_total{{reason=\"{reason}\"}} {n}"
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_closed_other_addresses_are_not() {
    let srv = server_with(limits(2, 0, 60));
    let addr = srv.tcp[0];
    let mut a = connect_from("127.0.0.1", addr).await;
    let mut b = connect_from("127.0.0.1", addr).await;
    served(&mut a, 1).await.unwrap();
    served(&mut b, 2).await.unwrap();
    let mut extra = connect_from("127.0.0.1", addr).await;
    assert!(
        closed_within(&mut extra, WAIT).await,
        "the third connection from 127.0.0.1 stays open"
    );
    // Another address is not affected, nor are the two open ones.
    let mut other = connect_from("127.0.0.2", addr).await;
    served(&mut other, 3).await.unwrap();
    served(&mut a, 4).await.unwrap();
    expect_closed(srv.metrics.unwrap(), "per_ip_limit", 1).await;
    // A closed connection gives its place back.
    drop(b);
    let mut again = eventually_async(WAIT, "a place for 127.0.0.1 again", async || {
        let mut c = connect_from("127.0.0.1", addr).await;
        served(&mut c, 5).await.map(|()| c)
    })
    .await;
    served(&mut again, 6).await.unwrap();
    srv.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_cap_are_closed() {
    let srv = server_with(limits(0, 3, 60));
    let addr = srv.tcp[0];
    let mut open = Vec::new();
    for (i, source) in ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().enumerate() {
        let mut c = connect_from(source, addr).await;
        served(&mut c, i as u8).await.unwrap();
        open.push(c);
    }
    let mut extra = connect_from("127.0.0.4", addr).await;
    assert!(
        closed_within(&mut extra, WAIT).await,
        "a fourth connection stays open"
    );
    for (i, c) in open.iter_mut().enumerate() {
        served(c, 10 + i as u8).await.unwrap();
    }
    expect_closed(srv.metrics.unwrap(), "total_limit", 1).await;
    srv.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_an_allocation_is_closed_at_the_deadline_one_with_stays() {
    let srv = server_with(limits(0, 0, 1));
    let addr = srv.tcp[0];
    let started = Instant::now();
    let mut idle = connect_from("127.0.0.1", addr).await;
    // Binding requests are answered but do not count as an allocation.
    served(&mut idle, 1).await.unwrap();
    let (mut client, _) = allocated_client(&srv, Transport::Tcp).await;
    assert!(closed_within(&mut idle, WAIT).await, "not closed");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before its 1 s deadline"
    );
    // Well past the deadline, the allocated connection still works.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.refresh(600).await.unwrap();
    expect_closed(srv.metrics.unwrap(), "allocate_timeout", 1).await;
    srv.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_is_closed_at_its_deadline() {
    let srv = server_with(limits(0, 0, 2));
    let addr = srv.tcp[0];
    let started = Instant::now();
    let mut c = connect_from("127.0.0.1", addr).await;
    // A 2,000-byte Binding request, one byte every 300 ms: it would take ten
    // minutes to arrive; each byte is read, none moves the deadline.
    let mut request = [0u8; 20];
    request[1] = 0x01;
    request[2..4].copy_from_slice(&2000u16.to_be_bytes());
    request[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    let mut closed_at = None;
    for byte in request.iter().chain(std::iter::repeat(&0u8)).take(40) {
        if c.write_all(&[*byte]).await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_at = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("{n} bytes answered to a partial request"),
            Err(_) => {}
        }
    }
    let closed_at = closed_at.expect("still open after 40 bytes (12 s)");
    assert!(
        closed_at >= Duration::from_millis(1900),
        "closed after {closed_at:?}, before its 2 s deadline"
    );
    expect_closed(srv.metrics.unwrap(), "allocate_timeout", 1).await;
    srv.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_allocation_ended_is_closed_when_it_does_not_allocate_again() {
    let srv = server_with(limits(0, 0, 1));
    // Deleted by the client (Refresh 0), then nothing: closed a second later.
    let (mut c, _) = allocated_client(&srv, Transport::Tcp).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.refresh(0).await.unwrap();
    let deleted = Instant::now();
    let closed = eventually_async(WAIT, "the connection closed", async || {
        match c.binding().await {
            Err(e) => Ok(e),
            Ok(_) => Err("still answered"),
        }
    })
    .await;
    assert!(deleted.elapsed() >= Duration::from_millis(900), "{closed}");
    expect_closed(srv.metrics.unwrap(), "idle", 1).await;

    // Deleted and allocated again in time: it stays.
    let (mut c, _) = allocated_client(&srv, Transport::Tcp).await;
    c.refresh(0).await.unwrap();
    c.allocate().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.refresh(600).await.unwrap();
    srv.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_allocation_expired_is_closed_allocate_timeout_later() {
    let mut opts = options("127.0.0.1:0");
    opts.connections = limits(0, 0, 1);
    opts.core.default_lifetime = Duration::from_secs(1);
    opts.core.max_lifetime = Duration::from_secs(1);
    let srv = start(opts).expect("server starts");
    let (mut c, a) = allocated_client(&srv, Transport::Tcp).await;
    assert_eq!(a.lifetime, 1);
    let allocated = Instant::now();
    // Nothing more from the client: the allocation expires at 1 s, the
    // connection goes a second later.
    let closed = tokio::time::timeout(WAIT + WAIT, async {
        loop {
            match c.recv_data(Duration::from_millis(200)).await {
                Err(ferroturn::client::ClientError::Timeout) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "still open {:?} after the allocation",
        allocated.elapsed()
    );
    assert!(
        allocated.elapsed() >= Duration::from_millis(1800),
        "closed {:?} after allocating, before expiry + 1 s",
        allocated.elapsed()
    );
    expect_closed(srv.metrics.unwrap(), "idle", 1).await;
    srv.stop().unwrap();
}
