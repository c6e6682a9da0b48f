//! The relaying checks of `ferroturn doctor`: a round trip through the server
//! between two of its allocations, the peer policy's refusal of private
//! addresses, and whether a relay port is reachable from where doctor runs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::checks::{bounded, join, same_host, Allocated, Transport};
use super::report::Check;
use super::Plan;
use crate::client::{Allocation, Client, ClientError, Received};

/// Private addresses the peer-policy check asks permissions for: one of each
/// RFC 1918 network, where a relay open to them would let any user with
/// credentials reach the operator's internal hosts.
const PRIVATE_PEERS: [&str; 3] = ["10.0.0.1:9", "172.16.0.1:9", "192.168.0.1:9"];

/// Two allocations of the same transport relaying to each other: A permits
/// B's relayed address and B A's, data goes A → B → A.
pub(super) async fn round_trip(plan: &Plan, a: &mut Allocated) -> Check {
    let transport = a.transport;
    let name = format!("round trip {transport}");
    let target = &plan.server;
    let credential = plan
        .credential
        .as_ref()
        .expect("allocated, so credentialed");
    let connected = match transport {
        Transport::Udp => Client::udp(target.addr).await,
        _ => Client::tcp(target.addr).await,
    };
    let mut b = match connected {
        Ok(c) => c.credentials(&credential.username, &credential.password),
        Err(e) => {
            return Check::fail(
                name,
                format!("second connection: {e}"),
                "see the binding check",
            )
        }
    };
    b.timeout = plan.timeout;
    let b_alloc = match bounded(plan, b.allocate()).await {
        Ok(alloc) => alloc,
        Err(e) => {
            return Check::fail(
                name,
                format!("a second allocation failed: {e}"),
                "the test needs two allocations at once: check quota.max-allocations-per-user",
            )
        }
    };
    let check = relay_between(plan, &name, a, &mut b, &b_alloc).await;
    let _ = bounded(plan, b.refresh(0)).await;
    check
}

async fn relay_between(
    plan: &Plan,
    name: &str,
    a: &mut Allocated,
    b: &mut Client,
    b_alloc: &Allocation,
) -> Check {
    let a_relayed = a.allocation.relayed[0];
    let b_relayed = b_alloc.relayed[0];
    for (client, peer) in [(&mut a.client, b_relayed), (&mut *b, a_relayed)] {
        match bounded(plan, client.create_permission(&[peer])).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(403) => {
                return Check::warn(
                    name,
                    format!(
                        "not tested: the peer policy denies the server's own relayed address {} (403): the default denies loopback and private peers, and a local test server relays from one",
                        peer.ip()
                    ),
                    format!(
                        "run doctor against the server's public address; or, on a test server only, allow it: peers.allow = [\"{}\"] (--allow-peer)",
                        peer.ip()
                    ),
                );
            }
            Err(e) => {
                return Check::fail(
                    name,
                    format!("CreatePermission for {peer}: {e}"),
                    "see the server's log for this request",
                )
            }
        }
    }
    let mut payload = b"ferroturn doctor ".to_vec();
    payload.extend_from_slice(&rand::random::<[u8; 8]>());
    let started = Instant::now();
    let there = async {
        a.client.send_indication(b_relayed, &payload).await?;
        wait_for(b, &payload, plan.timeout).await?;
        b.send_indication(a_relayed, &payload).await?;
        wait_for(&mut a.client, &payload, plan.timeout).await
    };
    match there.await {
        Ok(()) => {
            let rtt = started.elapsed();
            let mut check = Check::pass(
                name,
                format!(
                    "{a_relayed} -> {b_relayed} -> back in {:.2} ms",
                    rtt.as_secs_f64() * 1000.0
                ),
            );
            check.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
            check
        }
        Err(e) if !same_host(a_relayed.ip()) && same_host(plan.server.addr.ip()) => Check::warn(
            name,
            format!("relayed data did not come back ({e}) from {a_relayed}, which is not this host's address"),
            "a 1:1 NAT without hairpinning cannot relay to itself: check from a client outside the NAT",
        ),
        Err(e) => Check::fail(
            name,
            format!("relayed data did not come back: {e}"),
            "check the server's log for drops (ferroturn_dropped_total by reason) and the firewall between the relay addresses",
        ),
    }
}

/// Waits for relayed data carrying `payload`, skipping anything else.
async fn wait_for(
    client: &mut Client,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_data(left).await? {
            Received::Data { data, .. } | Received::Channel { data, .. } if data == payload => {
                return Ok(())
            }
            _ => {}
        }
    }
}

/// CreatePermission toward private addresses must be refused (403).
pub(super) async fn private_peers(plan: &Plan, a: &mut Allocated) -> Check {
    let name = "peer policy";
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for peer in PRIVATE_PEERS {
        let peer: SocketAddr = peer.parse().expect("constant address");
        match bounded(plan, a.client.create_permission(&[peer])).await {
            Ok(()) => allowed.push(peer.ip()),
            Err(e) if e.code() == Some(403) => refused.push(peer.ip()),
            Err(e) => {
                return Check::fail(
                    name,
                    format!("CreatePermission for {}: {e}", peer.ip()),
                    "see the server's log for this request",
                )
            }
        }
    }
    if allowed.is_empty() {
        Check::pass(
            name,
            format!("private peers refused (403 for {})", join(&refused)),
        )
    } else {
        Check::warn(
            name,
            format!(
                "the relay can reach your private network: CreatePermission for {} succeeded",
                join(&allowed)
            ),
            "set [peers]: remove private networks from peers.allow unless the relay must reach them",
        )
    }
}

/// A datagram from this host to a relayed address reaches the allocation: the
/// relay port is open from here.
pub(super) async fn relay_ports(plan: &Plan, a: &mut Allocated) -> Check {
    let name = "relay ports";
    let range = plan
        .port_range
        .map(|(lo, hi)| format!("relay.port-range {lo}-{hi}"))
        .unwrap_or_else(|| "the relay port range".to_owned());
    let cannot = format!(
        "cannot check from here: the other ports of {range}, nor a firewall that treats other networks differently"
    );
    // A fresh allocation: A already permits the round trip's addresses, which
    // may be this host's too, and would prove nothing.
    let credential = plan
        .credential
        .as_ref()
        .expect("allocated, so credentialed");
    let mut c = match Client::udp(plan.server.addr).await {
        Ok(c) => c.credentials(&credential.username, &credential.password),
        Err(e) => return Check::fail(name, format!("connection: {e}"), "see the binding check"),
    };
    c.timeout = plan.timeout;
    let alloc = match bounded(plan, c.allocate()).await {
        Ok(alloc) => alloc,
        Err(e) => {
            return Check::fail(
                name,
                format!("another allocation failed: {e}"),
                "check quota.max-allocations-per-user",
            )
        }
    };
    let check = probe_relay(plan, name, &cannot, &mut c, &alloc, a.allocation.mapped).await;
    let _ = bounded(plan, c.refresh(0)).await;
    check
}

async fn probe_relay(
    plan: &Plan,
    name: &str,
    cannot: &str,
    c: &mut Client,
    alloc: &Allocation,
    mapped: Option<SocketAddr>,
) -> Check {
    let relayed = alloc.relayed[0];
    let family_any: SocketAddr = if relayed.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = match tokio::net::UdpSocket::bind(family_any).await {
        Ok(s) => s,
        Err(e) => return Check::skip(name, format!("no local UDP socket: {e}"), cannot),
    };
    // This host as the server sees it: the mapped address of the allocation,
    // else the source address a datagram to the relay would get.
    let me = match mapped.or(alloc.mapped) {
        Some(m) if m.is_ipv4() == relayed.is_ipv4() => m.ip(),
        _ => match sock.connect(relayed).await.and_then(|()| sock.local_addr()) {
            Ok(local) => local.ip(),
            Err(e) => return Check::skip(name, format!("no route to {relayed}: {e}"), cannot),
        },
    };
    match bounded(plan, c.create_permission(&[SocketAddr::new(me, 0)])).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(403) => {
            return Check::skip(
                name,
                format!("the peer policy denies this host's address {me} (403), so no datagram from here may reach a relayed port"),
                format!("run doctor from another network; {cannot}"),
            )
        }
        Err(e) => {
            return Check::fail(name, format!("CreatePermission for {me}: {e}"), "see the server's log")
        }
    }
    let mut payload = b"ferroturn doctor probe ".to_vec();
    payload.extend_from_slice(&rand::random::<[u8; 8]>());
    if let Err(e) = sock.send_to(&payload, relayed).await {
        return Check::fail(
            name,
            format!("sending to {relayed}: {e}"),
            "check the route to the relay address",
        );
    }
    match wait_for(c, &payload, plan.timeout).await {
        Ok(()) => Check::pass(
            name,
            format!(
                "a datagram from this host to relayed port {relayed} reached the allocation; {cannot}"
            ),
        ),
        Err(e) => Check::fail(
            name,
            format!("a datagram from this host to {relayed} did not reach the allocation: {e}"),
            "open the relay ports (relay.port-range, UDP) in the firewall in front of the relay",
        ),
    }
}
