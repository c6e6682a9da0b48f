//! Faults a relay meets on a real network, produced on loopback: a peer that
//! answers with ICMP port unreachable, a relay port another process holds.
//! (ENOBUFS on send cannot be produced on loopback; its classification is
//! unit-tested in `net::mmsg::send`.)

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ferroturn::client::{Client, Received};
use ferroturn::net::start;
use support::*;

/// Sends `data` to `peer` through the allocation and expects it echoed back.
async fn round_trip(c: &mut Client, to: SocketAddr, data: &[u8]) {
    c.send_indication(to, data).await.unwrap();
    match c.recv_data(WAIT).await.unwrap() {
        Received::Data { data: got, peer } => {
            assert_eq!(got, data);
            assert_eq!(peer, to);
        }
        other => panic!("{other:?}"),
    }
}

/// A loopback UDP port nothing listens on: sending there draws an ICMP port
/// unreachable.
fn closed_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icmp_port_unreachable_from_a_peer_ends_no_allocation_and_no_shard() {
    let srv = server("127.0.0.1:0");
    let echo = echo_peer("127.0.0.1:0", 1000).await;
    let closed = closed_port();
    let (mut a, _) = allocated_client(&srv, Transport::Udp).await;
    let (mut b, _) = allocated_client(&srv, Transport::Tcp).await;
    a.create_permission(&[echo, closed]).await.unwrap();
    b.create_permission(&[echo, closed]).await.unwrap();
    round_trip(&mut a, echo, b"before").await;
    // Each datagram to the closed port draws an ICMP error back to the relay
    // socket; interleaved with live traffic, from both allocations.
    for i in 0..20u8 {
        a.send_indication(closed, &[i; 40]).await.unwrap();
        b.send_indication(closed, &[i; 40]).await.unwrap();
        if i % 5 == 4 {
            round_trip(&mut a, echo, &[i; 10]).await;
            round_trip(&mut b, echo, &[i; 11]).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Both allocations still relay, refresh and hold their relay; a new one on
    // either transport works too (no shard stopped).
    round_trip(&mut a, echo, b"after, udp").await;
    round_trip(&mut b, echo, b"after, tcp").await;
    a.refresh(600).await.unwrap();
    b.refresh(600).await.unwrap();
    assert_eq!(srv.allocations(), 2);
    for transport in [Transport::Udp, Transport::Tcp, Transport::Udp] {
        let (mut c, _) = allocated_client(&srv, transport).await;
        c.create_permission(&[echo]).await.unwrap();
        round_trip(&mut c, echo, b"new").await;
    }
    wait_http_200(srv.metrics.unwrap(), "/readyz", WAIT).await;
    srv.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_port_held_by_another_process_is_skipped_for_the_next() {
    // A two-port range whose first port another socket holds (it stands for
    // another process). The second port is the kernel's to give; if something
    // else holds it too, try another pair.
    for _ in 0..10 {
        let holder = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        if taken == u16::MAX {
            continue;
        }
        let mut opts = options("127.0.0.1:0");
        opts.core.relay_ports = taken..=taken + 1;
        let srv = start(opts).expect("server starts");
        let mut c = turn_client(&srv, Transport::Udp).await;
        let a = match c.allocate().await {
            Ok(a) => a,
            // taken + 1 was not free either (508): another pair.
            Err(e) if e.code() == Some(508) => {
                srv.stop().unwrap();
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(a.relayed[0].port(), taken + 1, "not the free port");
        // The range is now full: the next allocation is refused, not broken.
        let mut second = turn_client(&srv, Transport::Udp).await;
        assert_eq!(second.allocate().await.unwrap_err().code(), Some(508));
        // Once the other process lets go, the port is used.
        drop(holder);
        let b = second.allocate().await.unwrap();
        assert_eq!(b.relayed[0].port(), taken);
        // And the first allocation relays on.
        let echo = echo_peer("127.0.0.1:0", 10).await;
        c.create_permission(&[echo]).await.unwrap();
        round_trip(&mut c, echo, b"still relaying").await;
        srv.stop().unwrap();
        return;
    }
    panic!("no pair of free ports found in 10 tries");
}
