//! The XDP ChannelData fast path (`[offload]`, docs/offload.md) on the wire.
//!
//! Topology: the server runs in a network namespace of the test's own,
//! reached over a veth pair whose other end stays in the test's namespace,
//! where the client and the peers are (198.18.N.0/30, the benchmarking range,
//! only on that pair). The server attaches XDP (generic mode) to its end, so
//! every packet of the client and the peers passes the program.
//!
//! Needs root (namespaces, BPF); skipped with a message only when the BPF
//! program cannot load at all on this machine.
//!
//! Also: the committed object matches the committed source (by hash; and by
//! rebuilding when clang is installed, as scripts/test.sh does in CI).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferroturn::client::{AllocateOptions, Client, Received};
use ferroturn::stun::attr::Family;
use support::*;
use tokio::net::UdpSocket;

fn bpf_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn committed_object_matches_the_committed_source() {
    let dir = bpf_dir();
    let source = std::fs::read(dir.join("channel_offload.c")).unwrap();
    let recorded = std::fs::read_to_string(dir.join("channel_offload.c.sha256")).unwrap();
    assert_eq!(
        sha256_hex(&source),
        recorded.trim(),
        "bpf/channel_offload.c changed since bpf/channel_offload.o was built: run bpf/build.sh and commit both"
    );
    let have_clang = Command::new("clang").arg("--version").output().is_ok()
        && Command::new("llvm-strip").arg("--version").output().is_ok();
    if !have_clang {
        eprintln!("clang/llvm-strip not installed: checked the source hash only");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let built = out.path().join("channel_offload.o");
    let status = Command::new(dir.join("build.sh"))
        .arg(&built)
        .status()
        .expect("bpf/build.sh runs");
    assert!(status.success(), "bpf/build.sh failed");
    let committed = std::fs::read(dir.join("channel_offload.o")).unwrap();
    assert!(
        std::fs::read(&built).unwrap() == committed,
        "rebuilding bpf/channel_offload.c does not give the committed bpf/channel_offload.o: run bpf/build.sh and commit it"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether this test can run here (root, a kernel that loads the program);
/// says why not when it cannot.
fn can_attach() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: tests/offload.rs needs root (network namespaces, BPF)");
        return false;
    }
    if let Err(e) = ferroturn::offload::probe() {
        eprintln!("SKIPPED: the BPF program cannot load on this machine: {e}");
        return false;
    }
    true
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with one end of a veth pair, the other end here; both
/// removed when dropped.
struct Topology {
    ns: String,
    outer: String,
    inner: String,
    /// This side's address and the server side's, IPv4 and IPv6.
    here: String,
    there: String,
    here6: String,
    there6: String,
}

impl Topology {
    /// Topology `tag` (0 to 3) of this process: its own names, its own /30
    /// in 198.18.0.0/15 and its own /64 in 2001:2::/48 (the benchmarking
    /// ranges), so tests in one process do not collide.
    fn new(tag: u32) -> Topology {
        let pid = std::process::id();
        let ns = format!("ft-offload-{pid}-{tag}");
        let outer = format!("fto{tag}{}", pid % 1_000_000);
        let inner = format!("fti{tag}{}", pid % 1_000_000);
        let net = ((pid + tag * 83) % 250) + 1;
        let octet = 18 + tag % 2;
        let prefix6 = format!("2001:2:0:{:x}", tag * 0x100 + net);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &outer]).output();
        ip(&["netns", "add", &ns]);
        let t = Topology {
            here: format!("198.{octet}.{net}.1"),
            there: format!("198.{octet}.{net}.2"),
            here6: format!("{prefix6}::1"),
            there6: format!("{prefix6}::2"),
            ns,
            outer,
            inner,
        };
        ip(&[
            "link", "add", &t.outer, "type", "veth", "peer", "name", &t.inner,
        ]);
        ip(&["link", "set", &t.inner, "netns", &t.ns]);
        ip(&["addr", "add", &format!("{}/30", t.here), "dev", &t.outer]);
        ip(&["link", "set", &t.outer, "up"]);
        ip(&["-n", &t.ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &t.ns,
            "addr",
            "add",
            &format!("{}/30", t.there),
            "dev",
            &t.inner,
        ]);
        ip(&["-n", &t.ns, "link", "set", &t.inner, "up"]);
        // IPv6 at once usable: no duplicate address detection.
        ip(&[
            "addr",
            "add",
            &format!("{}/64", t.here6),
            "dev",
            &t.outer,
            "nodad",
        ]);
        ip(&[
            "-n",
            &t.ns,
            "addr",
            "add",
            &format!("{}/64", t.there6),
            "dev",
            &t.inner,
            "nodad",
        ]);
        // Without checksum offload on the pair, senders write full UDP
        // checksums and receivers verify them (veth would otherwise mark
        // them as checked): a wrong checksum from the program is a lost
        // datagram, and the test fails.
        for (ns, dev) in [(None, &t.outer), (Some(&t.ns), &t.inner)] {
            let status = match ns {
                Some(ns) => Command::new("ip")
                    .args([
                        "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "rx", "off",
                    ])
                    .output(),
                None => Command::new("ethtool")
                    .args(["-K", dev, "tx", "off", "rx", "off"])
                    .output(),
            };
            assert!(
                status.is_ok_and(|o| o.status.success()),
                "ethtool -K {dev} tx off rx off (install ethtool; scripts/test.sh does)"
            );
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn value(scrape: &str, series: &str) -> u64 {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Counts {
    offload_up: u64,
    offload_down: u64,
    offload_up_bytes: u64,
    offload_down_bytes: u64,
    relayed_up: u64,
    relayed_down: u64,
    relayed_up_bytes: u64,
    no_permission: u64,
}

async fn counts(metrics: SocketAddr) -> Counts {
    let (_, m) = http_get(metrics, "/metrics").await;
    Counts {
        offload_up: value(
            &m,
            "ferroturn_offload_relayed_packets_total{direction=\"client_to_peer\"}",
        ),
        offload_down: value(
            &m,
            "ferroturn_offload_relayed_packets_total{direction=\"peer_to_client\"}",
        ),
        offload_up_bytes: value(
            &m,
            "ferroturn_offload_relayed_bytes_total{direction=\"client_to_peer\"}",
        ),
        offload_down_bytes: value(
            &m,
            "ferroturn_offload_relayed_bytes_total{direction=\"peer_to_client\"}",
        ),
        relayed_up: value(
            &m,
            "ferroturn_relayed_packets_total{direction=\"client_to_peer\",transport=\"udp\"}",
        ),
        relayed_down: value(
            &m,
            "ferroturn_relayed_packets_total{direction=\"peer_to_client\",transport=\"udp\"}",
        ),
        relayed_up_bytes: value(
            &m,
            "ferroturn_relayed_bytes_total{direction=\"client_to_peer\",transport=\"udp\"}",
        ),
        no_permission: value(
            &m,
            "ferroturn_dropped_packets_total{reason=\"no_permission\"}",
        ),
    }
}

/// `offload.mode` and `offload.native-on-veth` of a test server.
#[derive(Clone, Copy)]
struct Attach {
    mode: &'static str,
    native_on_veth: bool,
}

/// Generic mode, as the tests use it where the mode is not the point.
const GENERIC: Attach = Attach {
    mode: "generic",
    native_on_veth: false,
};

/// The server in `t`'s namespace with `[offload]` on its end of the pair
/// attached as `attach` says, listening on `listen` (metrics on `metrics`), permissions lasting
/// `permission_lifetime` seconds, usage records in `dir`/usage.jsonl. Fixed
/// ports are safe: the namespace is the test's own.
fn spawn_in(
    t: &Topology,
    dir: &std::path::Path,
    attach: Attach,
    permission_lifetime: u32,
    listen: &str,
    metrics: SocketAddr,
) -> Binary {
    spawn_relaying_on(
        t,
        dir,
        attach,
        permission_lifetime,
        listen,
        &t.there,
        metrics,
    )
}

/// [`spawn_in`] with the relayed addresses on `relay_ip`.
fn spawn_relaying_on(
    t: &Topology,
    dir: &std::path::Path,
    Attach {
        mode,
        native_on_veth,
    }: Attach,
    permission_lifetime: u32,
    listen: &str,
    relay_ip: &str,
    metrics: SocketAddr,
) -> Binary {
    let config = dir.join(format!("turnserver-{mode}-{native_on_veth}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
[server]
threads = 1
[relay]
relay-ips = ["{relay_ip}"]
permission-lifetime = {permission_lifetime}
channel-lifetime = 600
[auth.users]
alice = "alice-pw"
[peers]
allow = ["198.18.0.0/15", "2001:2::/48"]
[usage]
file = "{usage}"
[admin]
socket = "{admin}"
[offload]
enabled = true
interfaces = ["{inner}"]
mode = "{mode}"
native-on-veth = {native_on_veth}
"#,
            usage = dir.join("usage.jsonl").display(),
            admin = dir
                .join(format!("admin-{mode}-{native_on_veth}.sock"))
                .display(),
            inner = t.inner,
        ),
    )
    .unwrap();
    spawn_binary_in(
        Some(&t.ns),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            listen,
            "--metrics",
            &metrics.to_string(),
        ],
    )
}

/// Waits for the first usage record in `file` and checks it counts `bytes`
/// each way.
async fn usage_record_counts(file: &Path, bytes: u64) {
    eventually_async(Duration::from_secs(5), "a usage record", || async {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let Some(line) = text.lines().next() else {
            return Err("no record yet".to_string());
        };
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let got = (
            json_u64(&v, "to_peer_bytes"),
            json_u64(&v, "to_client_bytes"),
        );
        if got == (bytes, bytes) {
            Ok(())
        } else {
            Err(format!("record {v}"))
        }
    })
    .await;
}

/// Sends `n` datagrams of `size` bytes each way between the client (on
/// `channel`) and `peer`, and checks each arrives.
async fn exchange(
    client: &mut Client,
    channel: u16,
    peer: &UdpSocket,
    relay: SocketAddr,
    n: usize,
    size: usize,
) {
    let mut buf = vec![0u8; 4096];
    for i in 0..n {
        let payload = vec![i as u8; size];
        client.send_channel_data(channel, &payload).await.unwrap();
        let (len, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("the peer gets the client's datagram")
            .unwrap();
        assert_eq!((len, from), (size, relay));
        assert_eq!(&buf[..len], &payload[..]);
        peer.send_to(&payload, relay).await.unwrap();
        match client.recv_data(Duration::from_secs(5)).await {
            Ok(Received::Channel { channel: c, data }) => {
                assert_eq!(c, channel);
                assert_eq!(data, payload);
            }
            other => panic!("expected ChannelData, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_take_the_fast_path_with_exact_counts_expiry_and_rebind() {
    if !can_attach() {
        return;
    }
    let t = Topology::new(0);
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.jsonl");
    let listen = format!("{}:3478", t.there);
    let metrics: SocketAddr = format!("{}:9641", t.there).parse().unwrap();
    let server = spawn_in(&t, dir.path(), GENERIC, 3, &listen, metrics);
    server.wait_log(
        "XDP ChannelData fast path attached",
        Duration::from_secs(10),
    );
    let (_, m) = http_get(metrics, "/metrics").await;
    assert_eq!(value(&m, "ferroturn_offload_active"), 1, "{m}");

    let server_addr: SocketAddr = listen.parse().unwrap();
    let peer_a = UdpSocket::bind(format!("{}:0", t.here)).await.unwrap();
    let peer_b = UdpSocket::bind(format!("{}:0", t.here)).await.unwrap();
    let (pa, pb) = (peer_a.local_addr().unwrap(), peer_b.local_addr().unwrap());
    let mut client = Client::udp(server_addr)
        .await
        .unwrap()
        .credentials("alice", "alice-pw");
    let alloc = client.allocate().await.unwrap();
    let relay = alloc.relayed[0];
    client.channel_bind(0x4000, pa).await.unwrap();
    // The shard installs the entry right after the answer.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. Twenty 100-byte datagrams each way, all through the kernel.
    exchange(&mut client, 0x4000, &peer_a, relay, 20, 100).await;
    // 2. The permission (3 s) expires: the entry goes, with its last counts.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let c = counts(metrics).await;
    assert_eq!(
        (c.offload_up, c.offload_down),
        (20, 20),
        "the fast path took every packet"
    );
    assert_eq!((c.offload_up_bytes, c.offload_down_bytes), (2000, 2000));
    assert_eq!(
        (c.relayed_up, c.relayed_down, c.relayed_up_bytes),
        (20, 20, 2000),
        "relayed totals include the kernel's and nothing went through userspace"
    );
    // Now userspace sees the ChannelData and drops it: no permission.
    for _ in 0..5 {
        client.send_channel_data(0x4000, &[7; 100]).await.unwrap();
    }
    let mut buf = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), peer_a.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing reaches the peer without a permission"
    );
    let before = c.no_permission;
    eventually_async(
        Duration::from_secs(5),
        "5 drops for no permission",
        || async {
            let c = counts(metrics).await;
            if c.no_permission == before + 5 && c.offload_up == 20 {
                Ok(())
            } else {
                Err(format!(
                    "no_permission {} offload_up {}",
                    c.no_permission, c.offload_up
                ))
            }
        },
    )
    .await;

    // 3. A new channel number for a new peer moves the fast path there.
    client.channel_bind(0x4001, pb).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    exchange(&mut client, 0x4001, &peer_b, relay, 10, 300).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), peer_a.recv_from(&mut buf))
            .await
            .is_err(),
        "the old peer gets nothing"
    );
    // 4. The allocation ends: the usage record counts every byte.
    client.refresh(0).await.unwrap();
    usage_record_counts(&usage, 2000 + 3000).await;
    let c = counts(metrics).await;
    assert_eq!((c.offload_up, c.offload_down), (30, 30));
    assert_eq!((c.relayed_up, c.relayed_down), (30, 30));
    drop(server);
}

/// An all-IPv6 allocation (client, listener, relay and peer over IPv6) takes
/// the fast path both ways with exact counts, and its usage record counts
/// every byte; the UDP checksums the program rewrites are verified by the
/// receivers (checksum offload is off on the pair), so a wrong one would be
/// a lost datagram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_channel_takes_the_fast_path_with_exact_counts() {
    if !can_attach() {
        return;
    }
    let t = Topology::new(2);
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("[{}]:3478", t.there6);
    let metrics: SocketAddr = format!("{}:9641", t.there).parse().unwrap();
    let server = spawn_relaying_on(&t, dir.path(), GENERIC, 600, &listen, &t.there6, metrics);
    server.wait_log(
        "XDP ChannelData fast path attached",
        Duration::from_secs(10),
    );

    let peer = UdpSocket::bind(format!("[{}]:0", t.here6)).await.unwrap();
    let mut client = Client::udp(listen.parse().unwrap())
        .await
        .unwrap()
        .credentials("alice", "alice-pw");
    let alloc = client
        .allocate_with(&AllocateOptions {
            family: Some(Family::V6),
            ..Default::default()
        })
        .await
        .unwrap();
    let relay = alloc.relayed[0];
    assert!(relay.is_ipv6(), "{relay}");
    client
        .channel_bind(0x4000, peer.local_addr().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    exchange(&mut client, 0x4000, &peer, relay, 12, 100).await;
    exchange(&mut client, 0x4000, &peer, relay, 3, 1000).await;
    eventually_async(
        Duration::from_secs(5),
        "every packet in the kernel",
        || async {
            let c = counts(metrics).await;
            let got = (
                c.offload_up,
                c.offload_down,
                c.offload_up_bytes,
                c.offload_down_bytes,
                c.relayed_up,
                c.relayed_down,
            );
            if got == (15, 15, 4200, 4200, 15, 15) {
                Ok(())
            } else {
                Err(format!(
                    "offload up/down, bytes up/down, relayed up/down: {got:?}"
                ))
            }
        },
    )
    .await;
    client.refresh(0).await.unwrap();
    usage_record_counts(&dir.path().join("usage.jsonl"), 4200).await;
    drop(server);
}

/// A client of `listen` with an allocation and channel 0x4000 bound to
/// `peer`, once the shard has had time to install the entry; and its
/// relayed address.
async fn client_on_channel(listen: &str, peer: &UdpSocket) -> (Client, SocketAddr) {
    let mut client = Client::udp(listen.parse().unwrap())
        .await
        .unwrap()
        .credentials("alice", "alice-pw");
    let relay = client.allocate().await.unwrap().relayed[0];
    client
        .channel_bind(0x4000, peer.local_addr().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    (client, relay)
}

/// Waits until the metrics say (offload up, offload down, relayed up,
/// relayed down) = `want`.
async fn expect_counts(metrics: SocketAddr, want: (u64, u64, u64, u64), what: &str) {
    eventually_async(Duration::from_secs(5), what, || async {
        let c = counts(metrics).await;
        let got = (c.offload_up, c.offload_down, c.relayed_up, c.relayed_down);
        if got == want {
            Ok(())
        } else {
            Err(format!("offload up/down, relayed up/down {got:?}"))
        }
    })
    .await;
}

/// Waits until `server` has logged `text` `n` times (a reload repeats lines).
fn wait_log_count(server: &Binary, text: &str, n: usize) {
    eventually(
        Duration::from_secs(10),
        &format!("{n} log lines with {text:?}"),
        || {
            let log = server.log();
            if log.iter().filter(|l| l.contains(text)).count() >= n {
                Ok(())
            } else {
                Err(log.join("\n"))
            }
        },
    );
}

/// A reload turns the fast path off and on again under a live channel: the
/// channel leaves the kernel with its last counts, relays in userspace, and
/// goes back into the kernel; metrics and the usage record stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_fast_path_off_and_on_under_a_live_channel() {
    if !can_attach() {
        return;
    }
    let t = Topology::new(3);
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("{}:3478", t.there);
    let metrics: SocketAddr = format!("{}:9641", t.there).parse().unwrap();
    let server = spawn_in(&t, dir.path(), GENERIC, 600, &listen, metrics);
    let attached = "XDP ChannelData fast path attached";
    server.wait_log(attached, Duration::from_secs(10));
    let peer = UdpSocket::bind(format!("{}:0", t.here)).await.unwrap();
    let (mut client, relay) = client_on_channel(&listen, &peer).await;

    // 1. In the kernel.
    exchange(&mut client, 0x4000, &peer, relay, 10, 100).await;
    expect_counts(metrics, (10, 10, 10, 10), "ten each way through the kernel").await;

    // 2. Off by reload: the channel goes on relaying, in userspace.
    let config = dir.path().join("turnserver-generic-false.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("enabled = true", "enabled = false")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("offload: XDP fast path off", Duration::from_secs(10));
    let (_, m) = http_get(metrics, "/metrics").await;
    assert_eq!(value(&m, "ferroturn_offload_active"), 0, "{m}");
    exchange(&mut client, 0x4000, &peer, relay, 7, 100).await;
    expect_counts(
        metrics,
        (10, 10, 17, 17),
        "seven more each way, in userspace",
    )
    .await;

    // 3. On again: the live channel is installed in the new program.
    std::fs::write(&config, text).unwrap();
    server.signal(libc::SIGHUP);
    wait_log_count(&server, attached, 2);
    let (_, m) = http_get(metrics, "/metrics").await;
    assert_eq!(value(&m, "ferroturn_offload_active"), 1, "{m}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    exchange(&mut client, 0x4000, &peer, relay, 5, 100).await;
    expect_counts(
        metrics,
        (15, 15, 22, 22),
        "five more each way, in the kernel again",
    )
    .await;

    // The allocation ends: its record counts all 22 × 100 bytes each way.
    client.refresh(0).await.unwrap();
    usage_record_counts(&dir.path().join("usage.jsonl"), 2200).await;
    drop(server);
}

/// On a veth, native XDP attaches but cannot send anything back unless the
/// pair's other end runs an XDP program too: `auto` attaches in generic mode
/// there and relays through the kernel; `native` is refused with a message
/// naming the interface, and the server relays the same channel in
/// userspace. With `native-on-veth` and an XDP program on the other end
/// (the committed object with empty maps, loaded by iproute2: it passes
/// everything), native mode attaches and relays in the kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_veth_auto_means_generic_and_native_needs_xdp_on_the_other_end() {
    if !can_attach() {
        return;
    }
    let t = Topology::new(1);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("auto", false, Some("generic")),
        ("native", false, None),
        ("native", true, Some("native")),
    ];
    for (k, (mode, native_on_veth, attached)) in cases.into_iter().enumerate() {
        if native_on_veth {
            let object = bpf_dir().join("channel_offload.o");
            ip(&[
                "link",
                "set",
                "dev",
                &t.outer,
                "xdpdrv",
                "obj",
                object.to_str().unwrap(),
                "sec",
                "xdp",
            ]);
        }
        let in_kernel = attached.is_some();
        let listen = format!("{}:{}", t.there, 3478 + k);
        let metrics: SocketAddr = format!("{}:{}", t.there, 9641 + k).parse().unwrap();
        let attach = Attach {
            mode,
            native_on_veth,
        };
        let server = spawn_in(&t, dir.path(), attach, 600, &listen, metrics);
        if let Some(attached) = attached {
            let line = server.wait_log(
                "XDP ChannelData fast path attached",
                Duration::from_secs(10),
            );
            assert!(line.contains(attached), "{mode} on a veth: {line}");
        } else {
            let line = server.wait_log("offload: not available", Duration::from_secs(10));
            assert!(
                line.contains("is a veth") && line.contains(&t.inner),
                "{mode} on a veth: {line}"
            );
        }
        wait_http_200(metrics, "/metrics", Duration::from_secs(10)).await;
        let (_, m) = http_get(metrics, "/metrics").await;
        assert_eq!(
            value(&m, "ferroturn_offload_active"),
            u64::from(in_kernel),
            "{mode}: {m}"
        );

        let peer = UdpSocket::bind(format!("{}:0", t.here)).await.unwrap();
        let (mut client, relay) = client_on_channel(&listen, &peer).await;
        exchange(&mut client, 0x4000, &peer, relay, 5, 100).await;
        let want = if in_kernel { 5 } else { 0 };
        let what = format!("{mode} (native-on-veth {native_on_veth}): the relayed counts");
        expect_counts(metrics, (want, want, 5, 5), &what).await;
        drop(server);
    }
}

#[test]
fn check_names_a_missing_interface_and_a_bad_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("turnserver.toml");
    let check = |offload: &str| {
        std::fs::write(&file, format!("[offload]\n{offload}\n")).unwrap();
        ferroturn_cli(&["check", "--config", file.to_str().unwrap()], None)
    };
    let out = check("enabled = true\ninterfaces = [\"ft-no-such0\"]");
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("offload.interfaces[0]: no network interface 'ft-no-such0'"),
        "{}",
        out.stderr
    );
    let out = check("enabled = true\ninterfaces = [\"lo\"]\nmode = \"fast\"");
    assert!(!out.success());
    assert!(out.stderr.contains("offload.mode"), "{}", out.stderr);
    let out = check("enabled = true");
    assert!(!out.success());
    assert!(out.stderr.contains("offload.interfaces"), "{}", out.stderr);
    let out = check("enabled = true\ninterfaces = [\"lo\"]");
    assert!(out.success(), "{}", out.stderr);
}
