//! `ferroturn bench churn` against the real binary: a short soak of the allocation
//! life cycle (delete, expiry, TCP close, EVEN-PORT reservations redeemed and left
//! to expire) must leave the server with the file descriptors and sockets it had
//! before, and fail no cycle.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{json_i64 as i, json_u64 as u, spawn_bench_target};

/// The server's fds and sockets must come back to the baseline exactly: every
/// relay socket, reservation and TCP connection of the run is gone after the settle
/// time. (RSS is reported but not checked: the allocator keeps freed memory.)
const FD_TOLERANCE: i64 = 0;

#[test]
fn churn_returns_the_server_to_its_baseline() {
    // Short lifetimes so that the expire cycles end within the test: allocations
    // granted 3 s. The admin socket is off (tests run in parallel).
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("churn.toml");
    std::fs::write(
        &config,
        "[relay]\ndefault-lifetime = 3\n\n[admin]\nsocket = \"\"\n",
    )
    .expect("config written");
    let srv = spawn_bench_target(
        "100000",
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let udp = srv.udp.to_string();
    let tcp = srv.tcp.to_string();
    let pid = srv.pid().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ferroturn"))
        .args([
            "bench",
            "--server",
            &udp,
            "--server-pid",
            &pid,
            "--user",
            "bench:bench",
            "--threads",
            "1",
            "--json",
            "--quiet",
            "--count",
            "2000",
            "--duration",
            "120s",
            "churn",
            "--tcp-server",
            &tcp,
            "--concurrency",
            "16",
            "--lifetime",
            "3",
            "--datagrams",
            "2",
            // A tenth of the reservations left unredeemed: the server releases
            // them after 30 s, which the settle time waits for.
            "--even-port-percent",
            "10",
            "--unredeemed-percent",
            "10",
            "--settle-max",
            "60s",
        ])
        .output()
        .expect("ferroturn bench churn runs");
    assert!(
        out.status.success(),
        "bench churn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench churn printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["scenario"], "churn");
    let r = &v["results"][0];
    let c = &r["churn"];
    assert_eq!(u(r, "errors"), 0, "{r}");
    assert_eq!(u(c, "cycles_done"), 2000, "{c}");
    assert_eq!(u(c, "cycles_failed"), 0, "{c}");
    assert!(
        c["errors_by_kind"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "{c}"
    );
    // Every way of ending an allocation was exercised.
    for key in [
        "deleted",
        "expired",
        "tcp_closed",
        "tcp_cycles",
        "reservations_redeemed",
        "reservations_unredeemed",
    ] {
        assert!(u(c, key) > 0, "no {key}: {c}");
    }
    assert_eq!(u(c, "expire_fallbacks"), 0, "{c}");
    assert_eq!(u(c, "granted_lifetime_s"), 3, "{c}");
    assert_eq!(
        u(c, "deleted") + u(c, "expired") + u(c, "tcp_closed"),
        2000,
        "{c}"
    );
    assert!(u(c, "datagrams_echoed") >= 2 * 2000, "{c}");

    let before = &c["before"];
    let after = &c["after"];
    let diff = &c["diff"];
    assert!(
        u(before, "udp_sockets") >= 1 && u(before, "tcp_sockets") >= 1,
        "{c}"
    );
    for key in ["fds", "socket_fds", "udp_sockets", "tcp_sockets"] {
        assert!(
            i(diff, key) <= FD_TOLERANCE,
            "{key}: {} before, {} after the churn: {c}",
            u(before, key),
            u(after, key)
        );
    }
}
