//! The checks of `ferroturn doctor`, in the order a client meets them:
//! listeners (Binding), credentials and relay address (Allocate), relaying
//! (two allocations sending to each other), the TLS certificate, DTLS (a
//! handshake with ALPN and a Binding inside it), the peer
//! policy and the relay ports. Each network step is bounded by the plan's
//! timeout, so a silent server makes a FAIL line, never a hang.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::certificate::{certificate, Recorder};
use super::relaying::{private_peers, relay_ports, round_trip};
use super::report::{Check, IceServer, Report, Status};
use super::{Plan, Target};
use crate::client::{Allocation, Client, ClientError};
use crate::turn::policy::default_deny_list;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
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
pub(super) struct Allocated {
    pub(super) transport: Transport,
    pub(super) client: Client,
    pub(super) allocation: Allocation,
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
    if let Some(dtls) = &plan.dtls {
        report.checks.push(super::dtls::check(plan, dtls).await);
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
pub(super) async fn bounded<T>(
    plan: &Plan,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(plan.timeout, fut)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

pub(super) fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn seconds(d: Duration) -> String {
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

pub(super) async fn connect(
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
pub(super) fn same_host(ip: IpAddr) -> bool {
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
