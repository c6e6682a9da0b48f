//! Shared helpers for the integration tests: an in-process server on loopback
//! port 0, and a UDP echo peer.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ferroturn::net::{start, NetOptions, Running};
use ferroturn::turn::ServerConfig;
use tokio::net::UdpSocket;

pub const USER: &str = "alice";
pub const PASS: &str = "correct horse";
pub const REALM: &str = "ferroturn.test";

/// Options for a server on `listen` (port 0), with one user, and loopback peers
/// opened explicitly (the default policy denies them).
pub fn options(listen: &str) -> NetOptions {
    let mut core = ServerConfig::with_realm(REALM);
    core.allow_peers = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    NetOptions {
        listen: vec![listen.parse().unwrap()],
        threads: 2,
        core,
        users: vec![(USER.to_owned(), PASS.to_owned())],
        secrets: Vec::new(),
        max_allocations_per_user: 10,
        max_allocations: 0,
        max_relay_ports: 0,
        store: None,
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        tls: None,
    }
}

pub fn server(listen: &str) -> Running {
    start(options(listen)).expect("server starts")
}

/// A UDP echo peer on `bind`, answering every datagram to its sender, for at most
/// `limit` datagrams or until the test's runtime ends.
pub async fn echo_peer(bind: &str, limit: usize) -> SocketAddr {
    let sock = UdpSocket::bind(bind).await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        for _ in 0..limit {
            match tokio::time::timeout(Duration::from_secs(30), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => {
                    let _ = sock.send_to(&buf[..n], from).await;
                }
                _ => return,
            }
        }
    });
    addr
}

pub const WAIT: Duration = Duration::from_secs(3);
