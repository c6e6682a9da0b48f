//! The checks of `ferroturn doctor`, in the order a client meets them:
//! listeners (Binding), credentials and relay address (Allocate), relaying
//! (two allocations sending to each other), the TLS certificate, the peer
//! policy and the relay ports. Each network step is bounded by the plan's
//! timeout, so a silent server makes a FAIL line, never a hang.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::report::{Check, IceServer, Report, Status};
use super::{Plan, Target};
use crate::client::{Allocation, Client, ClientError, Received};
use crate::time::{format_unix, unix_now};
use crate::turn::policy::default_deny_list;

/// Days before expiry from which the certificate check warns.
const EXPIRY_WARN_DAYS: i64 = 14;
/// Private addresses the peer-policy check asks permissions for: one of each
/// RFC 1918 network, where a relay open to them would let any user with
/// credentials reach the operator's internal hosts.
const PRIVATE_PEERS: [&str; 3] = ["10.0.0.1:9", "172.16.0.1:9", "192.168.0.1:9"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// A transport's client and what its Allocate granted, kept for the checks
/// that need an allocation.
struct Allocated {
    transport: Transport,
    client: Client,
    allocation: Allocation,
}

/// Runs every check of `plan`.
pub async fn run(plan: &Plan) -> Report {
    let mut report = Report::default();
    let mut transports = vec![
        (Transport::Udp, &plan.server),
        (Transport::Tcp, &plan.server),
    ];
    if let Some(tls) = &plan.tls {
        transports.push((Transport::Tls, tls));
    }

    report.checks.push(credential_check(plan));

    let recorder = Arc::new(Recorder::new(plan));
    let mut allocated = Vec::new();
    let mut bound = Vec::new();
    for &(transport, target) in &transports {
        let client = match connect(plan, transport, target, &recorder).await {
            Ok(client) => client,
            Err(e) => {
                report.checks.push(Check::fail(
                    format!("binding {transport}"),
                    format!("cannot connect to {}: {e}", target.addr),
                    format!(
                        "is the server running and listening on {transport} {}? is that port open in the firewall?",
                        target.addr
                    ),
                ));
                continue;
            }
        };
        let (check, client) = binding(plan, transport, target, client).await;
        let answered = check.status != Status::Fail;
        report.checks.push(check);
        if answered {
            bound.push(transport);
        }
        let Some(mut client) = client else { continue };
        let Some(credential) = &plan.credential else {
            continue;
        };
        client = client.credentials(&credential.username, &credential.password);
        client.timeout = plan.timeout;
        match bounded(plan, client.allocate()).await {
            Ok(allocation) => {
                report.checks.push(Check::pass(
                    format!("allocate {transport}"),
                    format!(
                        "relayed address {} (lifetime {} s)",
                        join(&allocation.relayed),
                        allocation.lifetime
                    ),
                ));
                allocated.push(Allocated {
                    transport,
                    client,
                    allocation,
                });
            }
            Err(e) => report
                .checks
                .push(allocate_failed(plan, transport, target, &e)),
        }
    }
    if plan.credential.is_some() {
        report.checks.push(relay_address(plan, &allocated));
    }

    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some(a) = allocated.iter_mut().find(|a| a.transport == transport) {
            report.checks.push(round_trip(plan, a).await);
        } else if plan.credential.is_some() {
            report.checks.push(Check::skip(
                format!("round trip {transport}"),
                format!("no allocation over {transport}"),
                "fix the allocate check above first",
            ));
        }
    }

    if let Some(tls) = &plan.tls {
        report.checks.push(certificate(plan, tls, &recorder));
    }

    if let Some(a) = allocated.first_mut() {
        report.checks.push(private_peers(plan, a).await);
    }
    if let Some(a) = allocated.iter_mut().find(|a| a.transport == Transport::Udp) {
        report.checks.push(relay_ports(plan, a).await);
    }

    // Free what doctor holds: its allocations count against the user's quota.
    for a in &mut allocated {
        let _ = bounded(plan, a.client.refresh(0)).await;
    }

    report.ice_servers = ice_servers(plan, &report, &bound, &allocated);
    report
}

/// `fut`, or [`ClientError::Timeout`] after the plan's timeout.
async fn bounded<T>(
    plan: &Plan,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(plan.timeout, fut)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn credential_check(plan: &Plan) -> Check {
    match (&plan.credential, &plan.credential_note) {
        (Some(c), None) => Check::pass(
            "credentials",
            format!("user {:?} from {}", c.username, c.source),
        ),
        (Some(c), Some(note)) => Check::warn(
            "credentials",
            format!("user {:?} from {} ({note})", c.username, c.source),
            "add a REST secret to the store (`ferroturn secret add`) if apps mint from it",
        ),
        (None, note) => Check::warn(
            "credentials",
            format!(
                "none found{}: the TURN checks (allocate, relaying, peer policy) are skipped",
                note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            ),
            "pass --user NAME:PASSWORD or --secret SECRET, or --config with auth.secrets, auth.users or store.url",
        ),
    }
}

async fn connect(
    plan: &Plan,
    transport: Transport,
    target: &Target,
    recorder: &Arc<Recorder>,
) -> Result<Client, String> {
    let connecting = async {
        match transport {
            Transport::Udp => Client::udp(target.addr).await,
            Transport::Tcp => Client::tcp(target.addr).await,
            Transport::Tls => {
                Client::tls_with_config(target.addr, &plan.tls_name, recorder.config()?).await
            }
        }
    };
    match tokio::time::timeout(plan.timeout, connecting).await {
        Ok(Ok(mut client)) => {
            client.timeout = plan.timeout;
            Ok(client)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {}", seconds(plan.timeout))),
    }
}

/// Binding: the listener answers, and XOR-MAPPED-ADDRESS is the caller's.
async fn binding(
    plan: &Plan,
    transport: Transport,
    target: &Target,
    mut client: Client,
) -> (Check, Option<Client>) {
    let name = format!("binding {transport}");
    let mapped = match bounded(plan, client.binding()).await {
        Ok(mapped) => mapped,
        Err(e) => {
            let fix = match transport {
                Transport::Udp => format!(
                    "check that the server listens on UDP {} (server.listen) and that the firewall lets UDP port {} in",
                    target.addr,
                    target.addr.port()
                ),
                _ => format!(
                    "check that the server speaks STUN on {transport} {} ({})",
                    target.addr,
                    if transport == Transport::Tls { "tls.listen" } else { "server.listen" }
                ),
            };
            return (
                Check::fail(
                    name,
                    format!("no Binding answer from {}: {e}", target.addr),
                    fix,
                ),
                None,
            );
        }
    };
    let local = client.local_addr().ok();
    let check = match local {
        Some(local) if local == mapped => Check::pass(
            name,
            format!("{} answered; mapped address {mapped} is this socket's", target.addr),
        ),
        Some(local) if same_host(target.addr.ip()) => Check::fail(
            name,
            format!(
                "{} answered with mapped address {mapped}, but this socket is {local} on the same host",
                target.addr
            ),
            "something between rewrites addresses (a proxy?): clients will get wrong candidates",
        ),
        Some(local) => Check::pass(
            name,
            format!(
                "{} answered; mapped address {mapped} (this socket is {local}: a NAT is between, as expected from a private network)",
                target.addr
            ),
        ),
        None => Check::pass(name, format!("{} answered; mapped address {mapped}", target.addr)),
    };
    (check, Some(client))
}

/// Whether `ip` is this host's: loopback or an address of one of its
/// interfaces. Only then must the mapped address equal the local one.
fn same_host(ip: IpAddr) -> bool {
    ip.is_loopback()
        || if_addrs::get_if_addrs()
            .map(|ifs| ifs.iter().any(|i| i.ip() == ip))
            .unwrap_or(false)
}

fn allocate_failed(plan: &Plan, transport: Transport, target: &Target, e: &ClientError) -> Check {
    let name = format!("allocate {transport}");
    let source = plan
        .credential
        .as_ref()
        .map(|c| c.source.as_str())
        .unwrap_or("?");
    let (detail, fix) = match e.code() {
        Some(401) => (
            format!("{e}: the server refused the credentials from {source}"),
            "the password or secret does not match the server's (auth.users, auth.secrets or the store), or the realm differs".to_owned(),
        ),
        Some(403) => (
            format!("{e}: allocations are forbidden (is the server draining?)"),
            "`ferroturn drain --cancel`, or check the server's log".to_owned(),
        ),
        Some(486) => (
            format!("{e}: the user's allocation quota is full"),
            "raise quota.max-allocations-per-user, or end allocations with `ferroturn sessions kill`".to_owned(),
        ),
        Some(508) => (
            format!("{e}: no relay port is free"),
            "widen relay.port-range or raise quota.max-relay-ports".to_owned(),
        ),
        Some(_) => (e.to_string(), "see the server's log for this request".to_owned()),
        None => (
            format!("no Allocate answer from {}: {e}", target.addr),
            "the Binding worked, so check the server's log: it may be overloaded".to_owned(),
        ),
    };
    Check::fail(name, detail, fix)
}

/// Whether the server's built-in deny list covers `ip`: private, loopback,
/// link-local, documentation and the like — addresses peers on the Internet
/// cannot send to.
fn non_global(ip: IpAddr) -> bool {
    default_deny_list().iter().any(|net| net.contains(&ip))
}

/// The relayed addresses: the configured public one when there is one, and
/// not a private one when clients reach the server at a public address.
fn relay_address(plan: &Plan, allocated: &[Allocated]) -> Check {
    let name = "relay address";
    let relayed: Vec<SocketAddr> = allocated
        .iter()
        .flat_map(|a| a.allocation.relayed.iter().copied())
        .collect();
    if relayed.is_empty() {
        return Check::skip(name, "no allocation", "fix the allocate checks above first");
    }
    let ips: Vec<IpAddr> = {
        let mut ips: Vec<IpAddr> = relayed.iter().map(SocketAddr::ip).collect();
        ips.sort();
        ips.dedup();
        ips
    };
    if !plan.expected_relay.is_empty() {
        let wrong: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| !plan.expected_relay.contains(ip))
            .collect();
        return if wrong.is_empty() {
            Check::pass(
                name,
                format!(
                    "relayed from {} as {} expects",
                    join(&ips),
                    plan.expected_source
                ),
            )
        } else {
            Check::fail(
                name,
                format!(
                    "relayed from {}, but {} says {}: peers would send to an address that is not the relay's public one",
                    join(&wrong),
                    plan.expected_source,
                    join(&plan.expected_relay)
                ),
                "set relay.external-ips = [\"PUBLIC/PRIVATE\"] for a 1:1 NAT (or relay.relay-ips to the public address) and reload",
            )
        };
    }
    let private: Vec<IpAddr> = ips.iter().copied().filter(|ip| non_global(*ip)).collect();
    if !private.is_empty() && !non_global(plan.server.addr.ip()) {
        return Check::warn(
            name,
            format!(
                "relayed from private {} while clients reach the server at public {}",
                join(&private),
                plan.server.addr.ip()
            ),
            "set relay.external-ips = [\"PUBLIC/PRIVATE\"] so allocations carry the public address",
        );
    }
    Check::pass(
        name,
        if private.is_empty() {
            format!("relayed from {}", join(&ips))
        } else {
            format!(
                "relayed from {} (not public, like the server address {}: right for a LAN or a test; no external-ips configured to compare with)",
                join(&ips),
                plan.server.addr.ip()
            )
        },
    )
}

/// Two allocations of the same transport relaying to each other: A permits
/// B's relayed address and B A's, data goes A → B → A.
async fn round_trip(plan: &Plan, a: &mut Allocated) -> Check {
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
async fn private_peers(plan: &Plan, a: &mut Allocated) -> Check {
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
async fn relay_ports(plan: &Plan, a: &mut Allocated) -> Check {
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

/// The certificate check, from what the TLS connection's verifier saw.
fn certificate(plan: &Plan, tls: &Target, recorder: &Recorder) -> Check {
    let name = "tls certificate";
    let Some(seen) = recorder.seen() else {
        return Check::fail(
            name,
            format!("no TLS handshake with {} reached the certificate", tls.addr),
            "see the binding tls check: is tls.listen reachable and serving TLS?",
        );
    };
    let expiry = x509_parser::parse_x509_certificate(&seen.leaf)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp());
    let days = expiry.map(|t| (t - unix_now()).div_euclid(86_400));
    let when = match (expiry, days) {
        (Some(t), Some(d)) if d >= 0 => format!("expires {} (in {d} days)", format_unix(t)),
        (Some(t), _) => format!("EXPIRED {}", format_unix(t)),
        _ => "expiry unreadable".to_owned(),
    };
    match (&seen.verdict, days) {
        (Err(e), _) => {
            let fix = if e.contains("xpired") {
                "renew the certificate; the server reads tls.cert again on `ferroturn reload` (or SIGHUP)".to_owned()
            } else if e.contains("NotValidForName") || e.contains("not valid for name") {
                format!(
                    "serve a certificate for {:?}, or pass --tls-name with the name clients use",
                    plan.tls_name
                )
            } else if e.contains("UnknownIssuer") || e.contains("issuer") {
                format!(
                    "put the whole chain (leaf first, then intermediates) in tls.cert; for a private CA pass --ca FILE (verified against {})",
                    plan.roots_source
                )
            } else {
                "check tls.cert".to_owned()
            };
            Check::fail(
                name,
                format!("does not verify for {:?}: {e}; {when}", plan.tls_name),
                fix,
            )
        }
        (Ok(()), Some(d)) if d < EXPIRY_WARN_DAYS => Check::warn(
            name,
            format!("valid for {:?} but {when}", plan.tls_name),
            "renew it now; then `ferroturn reload` (or SIGHUP)",
        ),
        (Ok(()), _) => Check::pass(
            name,
            format!(
                "valid for {:?} against {}; {when}",
                plan.tls_name, plan.roots_source
            ),
        ),
    }
}

/// The iceServers entry: turn:/turns: URLs whose Allocate passed (turns: only
/// with a certificate that verifies: browsers refuse the others), with the
/// credential used; without a credential, stun: URLs whose Binding passed.
fn ice_servers(
    plan: &Plan,
    report: &Report,
    bound: &[Transport],
    allocated: &[Allocated],
) -> Vec<IceServer> {
    let cert_ok = !report
        .checks
        .iter()
        .any(|c| c.check == "tls certificate" && c.status == Status::Fail);
    let url = |t: Transport| match t {
        Transport::Udp => format!("turn:{}?transport=udp", plan.server.authority()),
        Transport::Tcp => format!("turn:{}?transport=tcp", plan.server.authority()),
        Transport::Tls => {
            let tls = plan.tls.as_ref().expect("a TLS check ran");
            let host = Target {
                host: plan.tls_name.clone(),
                addr: tls.addr,
            };
            format!("turns:{}?transport=tcp", host.authority())
        }
    };
    match &plan.credential {
        Some(credential) => {
            let urls: Vec<String> = allocated
                .iter()
                .filter(|a| a.transport != Transport::Tls || cert_ok)
                .map(|a| url(a.transport))
                .collect();
            if urls.is_empty() {
                return Vec::new();
            }
            vec![IceServer {
                urls,
                username: Some(credential.username.clone()),
                credential: Some(credential.password.clone()),
            }]
        }
        None if bound.contains(&Transport::Udp) => vec![IceServer {
            urls: vec![format!("stun:{}", plan.server.authority())],
            username: None,
            credential: None,
        }],
        None => Vec::new(),
    }
}

/// What the TLS verifier saw: the leaf and whether the chain verified.
#[derive(Clone)]
struct Seen {
    leaf: Vec<u8>,
    verdict: Result<(), String>,
}

/// A certificate verifier that verifies with webpki as a browser would, but
/// records the verdict and lets the handshake go on, so that one connection
/// both reports the certificate and runs the STUN checks over TLS. Handshake
/// signatures are still verified.
#[derive(Debug)]
struct Recorder {
    inner: Result<Arc<WebPkiServerVerifier>, String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<Seen>>,
}

impl fmt::Debug for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seen")
            .field("verdict", &self.verdict)
            .finish()
    }
}

impl Recorder {
    fn new(plan: &Plan) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(plan.roots.clone()),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string());
        Recorder {
            inner,
            provider,
            seen: Mutex::new(None),
        }
    }

    /// A client configuration verifying through this recorder.
    fn config(self: &Arc<Self>) -> std::io::Result<Arc<rustls::ClientConfig>> {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn seen(&self) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Ok(inner) => inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("no trust anchors: {e}")),
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen {
            leaf: end_entity.to_vec(),
            verdict,
        });
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
