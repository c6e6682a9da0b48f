//! Interop with coturn's real client tools (Debian package `coturn`, installed by
//! `scripts/test.sh`): `turnutils_stunclient` for Binding, `turnutils_uclient` with
//! `turnutils_peer` for relaying over UDP and TCP, with channels, with Send/Data
//! indications and client to client. Everything runs on loopback.
//!
//! These tests fail, rather than skip, when the tools are missing: the suite's
//! command installs them, and a silently skipped interop test proves nothing.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod support;

use support::{spawn_binary, Binary};

const USER: &str = "ninefingers";
const PASS: &str = "youhavetoberealistic";

fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's `coturn` package (scripts/test.sh does)");
}

/// A child process killed (by its PID, which we started) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn peer() -> (Proc, u16) {
    let port = free_udp_port();
    let child = Command::new(tool("turnutils_peer"))
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer starts");
    std::thread::sleep(Duration::from_millis(200));
    (Proc(child), port)
}

#[test]
fn turnutils_stunclient_gets_the_mapped_address() {
    let (_srv, addr) = ferroturn(&[]);
    let out = Command::new(tool("turnutils_stunclient"))
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
    let (_srv, addr) = ferroturn(&["--allow-peer", "127.0.0.0/8"]);
    let (_peer, peer_port) = peer();
    let (messages, clients) = (40, 3);
    let out = Command::new(tool("turnutils_uclient"))
        .args(flags)
        .args(["-u", USER, "-w", PASS, "-p", &addr.port().to_string()])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args([
            "-n",
            &messages.to_string(),
            "-m",
            &clients.to_string(),
            "-l",
            "170",
            "-z",
            "5",
        ])
        .arg("127.0.0.1")
        .output()
        .expect("turnutils_uclient runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "uclient {flags:?} failed:\n{text}");
    let lost = text
        .lines()
        .find_map(|l| l.split("Total lost packets ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no loss report from uclient {flags:?}:\n{text}"));
    assert_eq!(lost, "0", "uclient {flags:?} lost packets:\n{text}");
    // Every client's messages, both directions (each client has an RTP and an
    // RTCP allocation unless -c).
    let recv = text
        .lines()
        .rev()
        .find_map(|l| l.split("tot_recv_msgs=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no receive count from uclient {flags:?}:\n{text}"));
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

#[test]
fn uclient_ipv6_relay() {
    uclient(&["-x", "-c"]);
}
