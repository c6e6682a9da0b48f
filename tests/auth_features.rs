//! RFC 8489 §9.2 security features end to end, over real loopback sockets with the
//! in-repo client: the SHA-256 password algorithm with MESSAGE-INTEGRITY-SHA256, and
//! USERHASH instead of USERNAME, over UDP and TCP, each followed by relaying to a
//! UDP echo peer through the allocation it authenticated.

mod support;

use ferroturn::client::{Client, Received};
use std::time::Duration;

use support::*;

/// Allocate, permission, a Send → Data round trip, ChannelBind, ChannelData both
/// ways, Refresh 0: every authenticated request goes through the client's chosen
/// mechanism, and data flows through the allocation it created.
async fn authenticate_and_relay(mut c: Client) {
    let peer = echo_peer("127.0.0.1:0", 100).await;
    let alloc = c.allocate().await.unwrap();
    assert_eq!(alloc.relayed.len(), 1);
    assert_eq!(alloc.lifetime, 600);
    c.create_permission(&[peer]).await.unwrap();
    for i in 0..5u8 {
        let payload = vec![i; 10 + usize::from(i) * 100];
        c.send_indication(peer, &payload).await.unwrap();
        assert_eq!(
            c.recv_data(WAIT).await.unwrap(),
            Received::Data {
                peer,
                data: payload
            }
        );
    }
    c.channel_bind(0x4002, peer).await.unwrap();
    for i in 0..5u8 {
        let payload = vec![i ^ 0xa5; 1 + usize::from(i) * 211];
        c.send_channel_data(0x4002, &payload).await.unwrap();
        assert_eq!(
            c.recv_data(WAIT).await.unwrap(),
            Received::Channel {
                channel: 0x4002,
                data: payload
            }
        );
    }
    assert_eq!(c.refresh(1200).await.unwrap(), 1200);
    assert_eq!(c.refresh(0).await.unwrap(), 0);
}

/// On a fresh server, a client of the test user over `transport` with the
/// security features `features` turns on authenticates and relays.
async fn one_client(transport: Transport, features: fn(Client) -> Client) {
    let srv = server("127.0.0.1:0");
    authenticate_and_relay(features(turn_client(&srv, transport).await)).await;
    srv.stop().unwrap();
}

#[tokio::test]
async fn sha256_over_udp_then_relay() {
    one_client(Transport::Udp, Client::with_sha256).await;
}

#[tokio::test]
async fn sha256_over_tcp_then_relay() {
    one_client(Transport::Tcp, Client::with_sha256).await;
}

#[tokio::test]
async fn userhash_over_udp_then_relay() {
    one_client(Transport::Udp, Client::with_userhash).await;
}

#[tokio::test]
async fn userhash_over_tcp_then_relay() {
    one_client(Transport::Tcp, Client::with_userhash).await;
}

#[tokio::test]
async fn sha256_and_userhash_together_over_udp_and_tcp() {
    let srv = server("127.0.0.1:0");
    for transport in [Transport::Udp, Transport::Tcp] {
        let c = turn_client(&srv, transport).await;
        authenticate_and_relay(c.with_sha256().with_userhash()).await;
    }
    srv.stop().unwrap();
}

#[tokio::test]
async fn wrong_password_or_unknown_userhash_is_401() {
    let srv = server("127.0.0.1:0");
    let mut c = turn_client_as(&srv, Transport::Udp, USER, "wrong")
        .await
        .with_sha256();
    assert_eq!(c.allocate().await.unwrap_err().code(), Some(401));
    let mut c = turn_client_as(&srv, Transport::Tcp, "mallory", PASS)
        .await
        .with_sha256()
        .with_userhash();
    assert_eq!(c.allocate().await.unwrap_err().code(), Some(401));
    srv.stop().unwrap();
}

#[tokio::test]
async fn classic_and_sha256_clients_share_a_server() {
    let srv = server("127.0.0.1:0");
    authenticate_and_relay(turn_client(&srv, Transport::Udp).await).await;
    authenticate_and_relay(turn_client(&srv, Transport::Udp).await.with_sha256()).await;
    srv.stop().unwrap();
}

/// A TURN REST credential (`EXPIRY:NAME`, HMAC-SHA1 password) of `secret`
/// expiring `ttl` seconds from now.
fn rest_credential(secret: &str, ttl: u64) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let user = format!("{}:carol", now + ttl);
    let pass = ferroturn::turn::auth::rest_password(secret.as_bytes(), &user);
    (user, pass)
}

/// A server taking REST credentials of "s3cret", with `auth.strict-expiry` as
/// given, writing usage records to `usage`.
fn rest_server(strict: bool, usage: &std::path::Path) -> ferroturn::net::Running {
    let mut opts = options("127.0.0.1:0");
    opts.secrets = vec!["s3cret".to_owned()];
    opts.core.strict_expiry = strict;
    opts.usage = Some(ferroturn::config::UsageTarget::File(usage.to_path_buf()));
    ferroturn::net::start(opts).expect("server starts")
}

/// With strict expiry, an allocation made with a credential that expires in
/// 2 s is granted at most those 2 s (not the 600 asked for), ends unrefreshed
/// when the credential expires, and its usage record says
/// `credential_expired`.
#[tokio::test]
async fn strict_expiry_ends_the_allocation_with_its_credential() {
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.jsonl");
    let srv = rest_server(true, &usage);
    let (user, pass) = rest_credential("s3cret", 2);
    let mut c = turn_client_as(&srv, Transport::Udp, &user, &pass).await;
    let alloc = c.allocate().await.unwrap();
    assert!(alloc.lifetime <= 2, "granted {}", alloc.lifetime);
    assert_eq!(srv.allocations(), 1);
    let record = eventually(Duration::from_secs(10), "the usage record", || {
        let text = std::fs::read_to_string(&usage).unwrap_or_default();
        match text.lines().next() {
            Some(line) if srv.allocations() == 0 => Ok(line.to_owned()),
            _ => Err(format!(
                "no usage record yet; {} allocation(s)",
                srv.allocations()
            )),
        }
    });
    let v: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(v["reason"], "credential_expired", "{record}");
    assert_eq!(v["user"], user.as_str());
    srv.stop().unwrap();
}

/// Without strict expiry the same credential gets the lifetime asked for.
#[tokio::test]
async fn without_strict_expiry_the_lifetime_outlasts_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let srv = rest_server(false, &dir.path().join("usage.jsonl"));
    let (user, pass) = rest_credential("s3cret", 2);
    let mut c = turn_client_as(&srv, Transport::Udp, &user, &pass).await;
    assert_eq!(c.allocate().await.unwrap().lifetime, 600);
    srv.stop().unwrap();
}
