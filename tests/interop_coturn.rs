//! Interop with coturn's real client tools (Debian package `coturn`, installed by
//! `scripts/test.sh`): `turnutils_stunclient` for Binding, `turnutils_uclient` with
//! `turnutils_peer` for relaying over UDP and TCP, with channels, with Send/Data
//! indications and client to client, over RFC 6062 TCP allocations (`-T`), over
//! DTLS (`-S` without `-t`), and `turnutils_natdiscovery` for RFC 5780 NAT behaviour
//! discovery (127.0.0.2 as the other address). Everything runs on loopback.
//!
//! These tests fail, rather than skip, when the tools are missing: the suite's
//! command installs them, and a silently skipped interop test proves nothing.

use std::net::SocketAddr;
use std::process::Command;

mod support;

use support::{
    coturn_tool, pki, spawn_binary, turnutils_peer, turnutils_uclient, uclient_total, Binary, Proc,
};

const USER: &str = "ninefingers";
const PASS: &str = "youhavetoberealistic";

/// `ferroturn serve` on 127.0.0.1 port 0 with the test user; returns it and its
/// UDP address.
fn ferroturn(extra: &[&str]) -> (Binary, SocketAddr) {
    let user = format!("{USER}:{PASS}");
    let mut args = vec!["--realm", "north.gov", "--user", &user];
    args.extend_from_slice(extra);
    let srv = spawn_binary(&args);
    let udp = srv.udp;
    (srv, udp)
}

#[test]
fn turnutils_stunclient_gets_the_mapped_address() {
    let (_srv, addr) = ferroturn(&[]);
    let out = Command::new(coturn_tool("turnutils_stunclient"))
        .args(["-p", &addr.port().to_string(), "127.0.0.1"])
        .output()
        .expect("turnutils_stunclient runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // "UDP reflexive addr: 127.0.0.1:PORT"
    let mapped = text
        .lines()
        .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
        .unwrap_or_else(|| panic!("no reflexive address in:\n{text}"));
    let mapped: SocketAddr = mapped.trim().parse().expect("mapped address parses");
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");
    assert_ne!(mapped.port(), 0);
    assert_ne!(mapped.port(), addr.port());
}

/// Runs turnutils_uclient with `flags` against a fresh ferroturn and peer, and
/// asserts every packet came back.
fn uclient(flags: &[&str]) {
    uclient_on(&[], flags);
}

/// [`uclient`] against a ferroturn started with `server_flags` as well.
fn uclient_on(server_flags: &[&str], flags: &[&str]) {
    let (_srv, addr) = ferroturn(&[&["--allow-peer", "127.0.0.0/8"], server_flags].concat());
    let (_peer, peer_port) = turnutils_peer();
    let (messages, clients) = (40, 3);
    let (port, peer_port) = (addr.port().to_string(), peer_port.to_string());
    let (n, m) = (messages.to_string(), clients.to_string());
    let args = [
        flags,
        &["-u", USER, "-w", PASS, "-p", &port],
        &["-e", "127.0.0.1", "-r", &peer_port],
        &["-n", &n, "-m", &m, "-l", "170", "-z", "5"],
        &["127.0.0.1"],
    ]
    .concat();
    let text = turnutils_uclient(&args);
    // Every client's messages, both directions (each client has an RTP and an
    // RTCP allocation unless -c).
    let recv = uclient_total(&text, "tot_recv_msgs=");
    assert!(
        recv >= messages * clients,
        "uclient {flags:?} received {recv}:\n{text}"
    );
}

#[test]
fn uclient_udp_channels() {
    uclient(&[]);
}

#[test]
fn uclient_udp_send_indications() {
    uclient(&["-s"]);
}

#[test]
fn uclient_tcp_channels() {
    uclient(&["-t"]);
}

#[test]
fn uclient_tcp_send_indications() {
    uclient(&["-t", "-s"]);
}

#[test]
fn uclient_client_to_client_udp() {
    uclient(&["-y"]);
}

#[test]
fn uclient_client_to_client_tcp() {
    uclient(&["-y", "-t"]);
}

/// RFC 6062: `-T` relays over TCP allocations (Connect, ConnectionAttempt,
/// ConnectionBind), client to client over TCP (it implies `-t -y -c` and
/// ignores the peer).
#[test]
fn uclient_tcp_relay_rfc6062() {
    uclient_on(&["--tcp-allocations"], &["-T"]);
}

#[test]
fn uclient_ipv6_relay() {
    uclient(&["-x", "-c"]);
}

/// Runs `turnutils_natdiscovery ARGS` for at most a minute (killed by its PID
/// past that); returns its stdout and stderr.
fn natdiscovery(args: &[&str]) -> String {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let child = Command::new(coturn_tool("turnutils_natdiscovery"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("turnutils_natdiscovery runs");
    let mut p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "natdiscovery {args:?} still running after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut text = String::new();
    p.0.stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    p.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// RFC 5780 on: ferroturn on 127.0.0.1 (port chosen by the system) with
/// 127.0.0.2 as `server.other-address`; natdiscovery's mapping and filtering
/// tests (with and without 1,500 bytes of PADDING) get their answers from the
/// addresses OTHER-ADDRESS names and report loopback for what it is: no NAT,
/// so endpoint-independent mapping and filtering.
#[test]
fn turnutils_natdiscovery_reports_mapping_and_filtering() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("turnserver.toml");
    std::fs::write(
        &config,
        "[server]\nnat-discovery = true\nother-address = \"127.0.0.2\"\n[admin]\nsocket = \"\"\n",
    )
    .unwrap();
    let (_srv, addr) = ferroturn(&["--config", config.to_str().unwrap()]);
    let port = addr.port().to_string();
    for padding in [false, true] {
        let mut args = vec!["-m", "-f", "-p", &port, "127.0.0.1"];
        if padding {
            args.insert(0, "-P");
        }
        let text = natdiscovery(&args);
        for want in [
            "NAT with Endpoint Independent Mapping!",
            "NAT with Endpoint Independent Filtering!",
            "Other addr: : 127.0.0.2:",
            "Response origin: : 127.0.0.2:",
        ] {
            assert!(
                text.contains(want),
                "natdiscovery {args:?}: no {want:?} in:\n{text}"
            );
        }
    }
}

/// RFC 5780 off (the default): Binding answers carry no OTHER-ADDRESS, so
/// natdiscovery answers with the reflexive address only and reports no
/// behaviour.
#[test]
fn turnutils_natdiscovery_without_rfc_5780() {
    let (_srv, addr) = ferroturn(&[]);
    let port = addr.port().to_string();
    let text = natdiscovery(&["-m", "-f", "-p", &port, "127.0.0.1"]);
    // Binding itself is answered; the RFC 5780 tests are not run.
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
    assert!(!text.contains("NAT with"), "{text}");
    assert!(!text.contains("Other addr"), "{text}");
}

/// `turnutils_uclient -S` over UDP speaks DTLS: against `tls.dtls-listen` with
/// the suite's ECDSA certificate, every session that connects loses nothing.
#[test]
fn uclient_dtls_loses_nothing() {
    let p = pki();
    let (cert, key) = (p.cert.to_str().unwrap(), p.key.to_str().unwrap());
    let (srv, _) = ferroturn(&[
        "--allow-peer",
        "127.0.0.0/8",
        "--dtls-listen",
        "127.0.0.1:0",
        "--cert",
        cert,
        "--key",
        key,
    ]);
    let addr = srv.dtls.expect("a DTLS listener");
    let (peer, peer_port) = turnutils_peer();
    let (port, peer_port) = (addr.port().to_string(), peer_port.to_string());
    let text = turnutils_uclient(&[
        "-S",
        "-u",
        USER,
        "-w",
        PASS,
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-n",
        "40",
        "-m",
        "6",
        "-l",
        "170",
        "-z",
        "5",
        "127.0.0.1",
    ]);
    drop(peer);
    drop(srv);
    // uclient picks its DTLS method at random per session, DTLS 1.0 among them,
    // which ferroturn refuses with a protocol_version alert (OpenSSL's DTLS 1.2
    // only): how many sessions run varies, and each that connected must have
    // had every message echoed.
    assert!(
        text.contains("method=DTLSv1.2"),
        "no DTLS 1.2 session:\n{text}"
    );
    let sent = uclient_total(&text, "tot_send_msgs=");
    let received = uclient_total(&text, "tot_recv_msgs=");
    assert!(sent >= 40, "no session completed over DTLS:\n{text}");
    assert_eq!(sent, received, "{text}");
}
