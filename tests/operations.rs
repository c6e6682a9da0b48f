//! Operating a running server, through the real binary: reload (SIGHUP and
//! `ferroturn reload`) during a live relay, a bad reload, drain (SIGUSR1 and
//! `ferroturn drain`) with 403 and 300, usage records with exact byte counts and
//! rotation, `ferroturn sessions list/kill` over the admin socket, SIGTERM, and
//! logs free of secrets and per-packet lines.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferroturn::client::{Client, Received};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "pw-Kx81-not-in-logs";

/// A test's scratch directory with a config file, an admin socket path and a
/// usage file path.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("turnserver.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn usage(&self) -> PathBuf {
        self.dir.path().join("usage.jsonl")
    }

    /// Writes the config file: realm, users, loopback peers opened, admin
    /// socket and usage file in the scratch directory, plus `extra` TOML.
    fn write(&self, users: &[(&str, &str)], quota_per_user: u32, extra: &str) {
        let mut text = format!(
            "[server]\nrealm = \"ops.test\"\nthreads = 2\n\n\
             [peers]\nallow = [\"127.0.0.0/8\"]\n\n\
             [quota]\nmax-allocations-per-user = {quota_per_user}\n\n\
             [admin]\nsocket = \"{}\"\n\n[usage]\nfile = \"{}\"\n\n",
            self.socket().display(),
            self.usage().display()
        );
        text.push_str(extra);
        text.push_str("\n[auth.users]\n");
        for (u, p) in users {
            text.push_str(&format!("{u} = \"{p}\"\n"));
        }
        std::fs::write(self.config(), text).unwrap();
    }

    fn spawn(&self, more: &[&str]) -> Binary {
        let config = self.config();
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(more);
        spawn_binary(&args)
    }

    /// Runs `ferroturn ARGS --socket <admin socket>`.
    fn ctl(&self, args: &[&str]) -> CliOutput {
        let socket = self.socket();
        let args = [args, &["--socket", socket.to_str().unwrap()]].concat();
        ferroturn_cli(&args, None)
    }

    /// The usage records written so far.
    fn records(&self) -> Vec<Value> {
        read_records(&self.usage())
    }

    /// Waits for `n` usage records.
    #[track_caller]
    fn wait_records(&self, n: usize) -> Vec<Value> {
        let r = eventually(
            Duration::from_secs(5),
            &format!("{n} usage records"),
            || {
                let r = self.records();
                if r.len() >= n {
                    Ok(r)
                } else {
                    Err(format!("{r:?}"))
                }
            },
        );
        assert_eq!(r.len(), n, "usage records: {r:?}");
        r
    }
}

fn read_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a usage record is one JSON line"))
        .collect()
}

/// An allocation for `user` with a channel to `peer`; returns the client and
/// its relayed address.
async fn allocation(b: &Binary, user: &str, peer: SocketAddr) -> (Client, SocketAddr) {
    let mut c = turn_client_as(b, Transport::Udp, user, PASSWORD).await;
    let a = c.allocate().await.unwrap();
    c.channel_bind(0x4000, peer).await.unwrap();
    (c, a.relayed[0])
}

/// One ChannelData round trip through the echo peer.
async fn round_trip(c: &mut Client, payload: &[u8]) {
    c.send_channel_data(0x4000, payload).await.unwrap();
    match c.recv_data(WAIT).await.unwrap() {
        Received::Channel { data, .. } => assert_eq!(data, payload),
        other => panic!("{other:?}"),
    }
}

/// Tries to allocate as `user`; the error code, or None on success (the
/// allocation is then deleted again).
async fn try_allocate(b: &Binary, user: &str) -> Option<u16> {
    let mut c = turn_client_as(b, Transport::Udp, user, PASSWORD).await;
    match c.allocate().await {
        Ok(_) => {
            c.refresh(0).await.unwrap();
            None
        }
        Err(e) => Some(e.code().expect("an error response")),
    }
}

async fn readyz(metrics: SocketAddr) -> u16 {
    http_get(metrics, "/readyz").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_during_a_live_relay_keeps_it_relaying_and_applies_the_new_config() {
    let s = Setup::new();
    s.write(&[("alice", PASSWORD)], 10, "");
    let b = s.spawn(&[]);
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut a, _) = allocation(&b, "alice", peer).await;
    round_trip(&mut a, b"before").await;
    assert_eq!(try_allocate(&b, "bob").await, Some(401));

    // bob added, alice limited to one allocation, realm unchanged: SIGHUP.
    s.write(&[("alice", PASSWORD), ("bob", PASSWORD)], 1, "");
    b.signal(libc::SIGHUP);
    b.wait_log("configuration reloaded", WAIT);
    assert_eq!(try_allocate(&b, "bob").await, None);
    assert_eq!(try_allocate(&b, "alice").await, Some(486));
    // The allocation made before the reload relays and refreshes on.
    round_trip(&mut a, b"after SIGHUP").await;
    a.refresh(600).await.unwrap();

    // `ferroturn reload` does the same and says so; a key that needs a
    // restart is named.
    s.write(
        &[("alice", PASSWORD), ("bob", PASSWORD)],
        10,
        "[relay]\nport-range = \"50000-50100\"\n",
    );
    let out = s.ctl(&["reload"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("relay.port-range"), "{}", out.stdout);
    assert_eq!(try_allocate(&b, "alice").await, None);
    round_trip(&mut a, b"after reload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_and_the_old_config_stays() {
    let s = Setup::new();
    s.write(&[("alice", PASSWORD)], 10, "");
    let b = s.spawn(&[]);
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut a, _) = allocation(&b, "alice", peer).await;

    // An invalid value: the CLI names the key and fails; nothing changes.
    s.write(&[("bob", PASSWORD)], 0, "");
    let out = s.ctl(&["reload"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("quota.max-allocations-per-user"),
        "{}",
        out.stderr
    );
    // Not even parseable TOML, by SIGHUP: logged, nothing changes.
    std::fs::write(s.config(), "[server\nrealm = ").unwrap();
    b.signal(libc::SIGHUP);
    b.wait_log("configuration NOT reloaded", WAIT);

    assert_eq!(try_allocate(&b, "alice").await, None);
    assert_eq!(try_allocate(&b, "bob").await, Some(401));
    round_trip(&mut a, b"still relaying").await;
    a.refresh(600).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_allocations_while_old_ones_relay_then_exits() {
    let s = Setup::new();
    s.write(&[("alice", PASSWORD)], 10, "");
    let mut b = s.spawn(&[]);
    let metrics = b.metrics.unwrap();
    // Ready once every shard runs, a moment after the listeners are logged.
    wait_http_200(metrics, "/readyz", WAIT).await;
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut a, _) = allocation(&b, "alice", peer).await;

    // A drain can be cancelled: back to normal.
    assert!(s.ctl(&["drain"]).status.success());
    assert_eq!(try_allocate(&b, "alice").await, Some(403));
    let out = s.ctl(&["drain", "--cancel"]);
    assert!(out.stdout.contains("drain cancelled"), "{}", out.stderr);
    assert_eq!(readyz(metrics).await, 200);
    assert_eq!(try_allocate(&b, "alice").await, None);
    let out = s.ctl(&["drain", "--cancel"]);
    assert!(out.stderr.contains("not draining"), "{}", out.stderr);

    let out = s.ctl(&["drain", "--deadline", "60s"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("1 allocation"), "{}", out.stdout);
    assert_eq!(try_allocate(&b, "alice").await, Some(403));
    assert_eq!(readyz(metrics).await, 503);
    for i in 0..20u8 {
        round_trip(&mut a, &[i; 64]).await;
    }
    a.refresh(600).await.unwrap();
    assert!(
        b.wait_exit(Duration::from_millis(500)).is_none(),
        "exited early"
    );

    // The last allocation ends: the server exits by itself, cleanly.
    a.refresh(0).await.unwrap();
    let status = b
        .wait_exit(Duration::from_secs(5))
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}");
    assert!(!s.socket().exists(), "the admin socket is removed at exit");
    // The allocation made while the drain was cancelled, and the old one.
    let r = s.wait_records(2);
    assert!(r.iter().all(|r| r["reason"] == "deleted"), "{r:?}");
    assert_eq!(r[1]["to_peer_bytes"], 20 * 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_drain_redirects_with_300_and_ends_at_its_deadline() {
    let s = Setup::new();
    s.write(
        &[("alice", PASSWORD)],
        10,
        "[drain]\nalternate-server = [\"192.0.2.7:3478\"]\ndeadline = 2\n",
    );
    let mut b = s.spawn(&[]);
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut a, _) = allocation(&b, "alice", peer).await;
    b.signal(libc::SIGUSR1);
    b.wait_log("draining", WAIT);
    assert_eq!(try_allocate(&b, "alice").await, Some(300));
    round_trip(&mut a, b"during the drain").await;
    // The allocation outlives the 2 s deadline: the server ends it and exits.
    let status = b
        .wait_exit(Duration::from_secs(6))
        .expect("exits at the deadline");
    assert!(status.success(), "{status:?}");
    let r = s.wait_records(1);
    assert_eq!(r[0]["reason"], "shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_records_have_exact_byte_counts_and_the_file_reopens_on_sighup() {
    let s = Setup::new();
    s.write(&[("alice", PASSWORD)], 10, "");
    let b = s.spawn(&[]);
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut a, relayed) = allocation(&b, "alice", peer).await;
    let client = a.local_addr().unwrap();
    let (n, size) = (37u64, 150usize);
    for i in 0..n {
        round_trip(&mut a, &vec![i as u8; size]).await;
    }
    a.refresh(0).await.unwrap();
    let r = s.wait_records(1);
    let r = &r[0];
    assert_eq!(r["user"], "alice");
    assert_eq!(r["realm"], "ops.test");
    assert_eq!(r["transport"], "udp");
    assert_eq!(r["client"], client.to_string());
    assert_eq!(r["server"], b.udp.to_string());
    assert_eq!(r["relays"][0], relayed.to_string());
    assert_eq!(r["peers"], 1);
    assert_eq!(r["to_peer_packets"], n);
    assert_eq!(r["to_peer_bytes"], n * size as u64);
    assert_eq!(r["to_client_packets"], n);
    assert_eq!(r["to_client_bytes"], n * size as u64);
    assert_eq!(r["reason"], "deleted");
    assert!(r["duration"].as_f64().unwrap() > 0.0);
    assert!(r["start"].as_str().unwrap().ends_with('Z'));

    // Rotation: rename the file, SIGHUP, and the next record starts a new one.
    let rotated = s.dir.path().join("usage.jsonl.1");
    std::fs::rename(s.usage(), &rotated).unwrap();
    b.signal(libc::SIGHUP);
    b.wait_log("configuration reloaded", WAIT);
    let (mut c, _) = allocation(&b, "alice", peer).await;
    round_trip(&mut c, b"x").await;
    c.refresh(0).await.unwrap();
    let r = s.wait_records(1);
    assert_eq!(r[0]["to_peer_bytes"], 1);
    assert_eq!(read_records(&rotated).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_and_kill_over_the_admin_socket() {
    let s = Setup::new();
    s.write(&[("alice", PASSWORD), ("bob", PASSWORD)], 10, "");
    let b = s.spawn(&[]);
    let mode = std::fs::metadata(s.socket()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut a1, _) = allocation(&b, "alice", peer).await;
    let (mut a2, _) = allocation(&b, "alice", peer).await;
    let (mut bob, bob_relay) = allocation(&b, "bob", peer).await;
    round_trip(&mut bob, b"hello").await;

    let out = s.ctl(&["sessions", "list", "--json"]);
    assert!(out.status.success(), "{}", out.stderr);
    let list: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(list.len(), 3);
    let bob_session = list.iter().find(|v| v["user"] == "bob").unwrap();
    assert_eq!(bob_session["relays"][0], bob_relay.to_string());
    assert_eq!(bob_session["to_peer_bytes"], 5);
    assert_eq!(bob_session["channels"], 1);
    let table = s.ctl(&["sessions", "list"]).stdout;
    assert!(
        table.contains("alice") && table.contains("3 allocation(s)"),
        "{table}"
    );

    // By ID: bob's allocation ends; the server no longer knows it.
    let id = bob_session["id"].as_u64().unwrap().to_string();
    let out = s.ctl(&["sessions", "kill", "--id", &id]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(bob.refresh(600).await.unwrap_err().code(), Some(437));
    // By user: both of alice's.
    let out = s.ctl(&["sessions", "kill", "--user", "alice"]);
    assert!(out.stdout.contains("killed 2"), "{}", out.stdout);
    assert_eq!(a1.refresh(600).await.unwrap_err().code(), Some(437));
    assert_eq!(a2.refresh(600).await.unwrap_err().code(), Some(437));
    let out = s.ctl(&["sessions", "kill", "--user", "nobody"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no allocation of user"),
        "{}",
        out.stderr
    );
    let r = s.wait_records(3);
    assert!(r.iter().all(|r| r["reason"] == "killed"), "{r:?}");

    // A second server on the same admin socket is refused, and says why.
    let socket = s.socket();
    let second = ferroturn_cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--admin-socket",
            socket.to_str().unwrap(),
        ],
        None,
    );
    assert!(!second.status.success());
    assert!(
        second.stderr.contains("another ferroturn"),
        "{}",
        second.stderr
    );
    // The first one still answers.
    assert!(s.ctl(&["sessions", "list"]).status.success());
}

#[test]
fn admin_commands_without_a_server_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.sock");
    let out = ferroturn_cli(
        &["sessions", "list", "--socket", none.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("cannot reach the admin socket"),
        "{}",
        out.stderr
    );
    let out = ferroturn_cli(&["drain", "--deadline", "soon"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("--deadline"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_allocations_and_exits_promptly() {
    let s = Setup::new();
    s.write(&[("alice", PASSWORD)], 10, "");
    let mut b = s.spawn(&[]);
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let (mut a, _) = allocation(&b, "alice", peer).await;
    round_trip(&mut a, b"bye").await;
    let t = Instant::now();
    b.signal(libc::SIGTERM);
    let status = b.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let r = s.wait_records(1);
    assert_eq!(r[0]["reason"], "shutdown");
    assert_eq!(r[0]["to_client_bytes"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_secrets_and_no_per_packet_lines() {
    let s = Setup::new();
    let secret = "rest-secret-Zq93-not-in-logs";
    s.write(
        &[("alice", PASSWORD)],
        10,
        &format!("[auth]\nsecrets = [\"{secret}\"]\n"),
    );
    // Debug level: even there no secret may appear.
    let b = s.spawn(&["--log-level", "debug"]);
    let peer = echo_peer("127.0.0.1:0", 10_000).await;
    let (mut a, _) = allocation(&b, "alice", peer).await;
    for i in 0..200u8 {
        round_trip(&mut a, &[i; 20]).await;
    }
    let mut c = Client::udp(b.udp).await.unwrap();
    for _ in 0..200 {
        c.binding().await.unwrap();
    }
    // A REST credential and a wrong password, both logged about at most
    // in general terms.
    let user = "4000000000:carol";
    let rest_pw = ferroturn::turn::auth::rest_password(secret.as_bytes(), user);
    let mut r = turn_client_as(&b, Transport::Udp, user, &rest_pw).await;
    r.allocate().await.unwrap();
    let mut w = turn_client_as(&b, Transport::Udp, "alice", "wrong-password-Pp4").await;
    assert!(w.allocate().await.is_err());
    a.refresh(0).await.unwrap();
    b.signal(libc::SIGHUP);
    b.wait_log("configuration reloaded", WAIT);
    let log = b.log();
    for needle in [PASSWORD, secret, rest_pw.as_str(), "wrong-password-Pp4"] {
        assert!(
            !log.iter().any(|l| l.contains(needle)),
            "{needle:?} logged:\n{}",
            log.join("\n")
        );
    }
    // 200 relayed round trips and 200 Bindings: not a line each, even at debug.
    assert!(log.len() < 60, "{} lines:\n{}", log.len(), log.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_per_address_allocation_and_connection_caps() {
    let s = Setup::new();
    s.write(&[("alice", PASSWORD)], 10, "");
    let b = s.spawn(&[]);
    let mut first = turn_client_as(&b, Transport::Udp, "alice", PASSWORD).await;
    first.allocate().await.unwrap();
    let mut open = tokio::net::TcpStream::connect(b.tcp).await.unwrap();

    // One allocation and one stream connection per address from now on.
    s.write(
        &[("alice", PASSWORD)],
        10,
        "[connections]\nmax-per-ip = 1\n\n",
    );
    let text = std::fs::read_to_string(s.config()).unwrap();
    let text = text.replace("[quota]\n", "[quota]\nmax-allocations-per-ip = 1\n");
    std::fs::write(s.config(), text).unwrap();
    let out = s.ctl(&["reload"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(try_allocate(&b, "alice").await, Some(486));
    let mut extra = tokio::net::TcpStream::connect(b.tcp).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, extra.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a second connection from 127.0.0.1 stays open: {read:?}"
    );
    // The allocation and the connection made before stay.
    first.refresh(600).await.unwrap();
    let mut req = [0u8; 20];
    req[1] = 1;
    req[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    open.write_all(&req).await.unwrap();
    let n = tokio::time::timeout(WAIT, open.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0, "the open connection is served");

    // Lifted again.
    s.write(&[("alice", PASSWORD)], 10, "");
    let out = s.ctl(&["reload"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(try_allocate(&b, "alice").await, None);
}
