//! `ferroturn bench` end to end: the real binary loads a real ferroturn started
//! with `spawn_binary`, and the JSON it prints is checked for consistency.

mod support;

use serde_json::Value;
use support::{ferroturn_cli, json_f64 as f, json_u64 as u, spawn_bench_target};

fn server() -> support::Binary {
    spawn_bench_target("1000", &[])
}

/// Runs `ferroturn bench ARGS --json` and returns its JSON.
fn bench(args: &[&str]) -> Value {
    let fixed = [
        "--json",
        "--quiet",
        "--user",
        "bench:bench",
        "--threads",
        "1",
    ];
    let out = ferroturn_cli(&[&["bench"], args, &fixed].concat(), None);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("bench {args:?} printed no JSON ({e}): {}", out.stdout))
}

#[test]
fn binding_alloc_relay_and_hold_against_the_real_binary() {
    let srv = server();
    let addr = srv.udp.to_string();
    let pid = srv.pid().to_string();
    let common = ["--server", &addr, "--server-pid", &pid];

    let v = bench(
        &[
            &common[..],
            &["--duration", "500ms", "binding", "--sockets", "4"],
        ]
        .concat(),
    );
    assert_eq!(v["format"], 1);
    assert_eq!(v["scenario"], "binding");
    let r = &v["results"][0];
    assert!(u(r, "received") > 0, "{r}");
    assert!(u(r, "received") <= u(r, "sent"), "{r}");
    assert!(f(r, "rate_per_s") > 0.0);
    assert!(f(r, "server_cpu_s") >= 0.0);
    // The whole machine's busy time (/proc/stat) brackets the server's: it counts
    // the server, the load and the kernel work of both.
    assert!(f(r, "machine_cpu_s") >= 0.0, "{r}");
    assert!(
        (f(r, "machine_cpu_us_per_op") - f(r, "machine_cpu_s") * 1e6 / u(r, "received") as f64)
            .abs()
            < 1e-6,
        "{r}"
    );

    let v = bench(
        &[
            &common[..],
            &["--count", "200", "alloc", "--concurrency", "4"],
        ]
        .concat(),
    );
    let r = &v["results"][0];
    assert_eq!(u(r, "received"), 200, "{r}");
    assert_eq!(u(r, "errors"), 0, "{r}");

    // A low rate on loopback: nothing may be lost, ChannelData and Send alike,
    // to the echo peer and client to client.
    let v = bench(
        &[
            &common[..],
            &[
                "--count",
                "2000",
                "--duration",
                "2s",
                "relay",
                "--allocations",
                "2",
                "--window",
                "2",
                "--size",
                "100,1200",
            ],
        ]
        .concat(),
    );
    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows.len(), 8, "{v}");
    for r in rows {
        assert_eq!(u(r, "window"), 2, "{r}");
        assert!(r["machine_cpu_us_per_op"].is_number(), "{r}");
        assert!(u(r, "sent") > 0, "{r}");
        assert_eq!(u(r, "received"), u(r, "sent"), "{r}");
        assert_eq!(u(r, "lost"), 0, "{r}");
        let size = u(r, "payload_bytes") as f64;
        assert!(
            (f(r, "bytes_per_s") - f(r, "rate_per_s") * size).abs() < 1.0,
            "{r}"
        );
    }
    let modes: Vec<_> = rows
        .iter()
        .map(|r| (r["mode"].clone(), r["peer"].clone()))
        .collect();
    for m in ["channel", "send"] {
        for p in ["echo", "client"] {
            assert!(
                modes.contains(&(m.into(), p.into())),
                "{m} {p} missing: {v}"
            );
        }
    }

    // The single bursty flow of bench/compare.sh (1 flow × 64 in flight).
    let v = bench(
        &[
            &common[..],
            &[
                "--count",
                "5000",
                "--duration",
                "2s",
                "relay",
                "--allocations",
                "1",
                "--window",
                "64",
                "--mode",
                "channel",
                "--peer",
                "echo",
                "--size",
                "100",
            ],
        ]
        .concat(),
    );
    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows.len(), 1, "{v}");
    let r = &rows[0];
    assert_eq!(r["name"], "relay channel echo 100B", "{r}");
    assert_eq!((u(r, "allocations"), u(r, "window")), (1, 64), "{r}");
    assert_eq!(u(r, "lost"), 0, "{r}");
    assert!(u(r, "received") > 0, "{r}");
    assert!(f(r, "server_cpu_us_per_op") >= 0.0, "{r}");
    assert!(f(r, "machine_cpu_us_per_op") >= 0.0, "{r}");

    let v = bench(
        &[
            &common[..],
            &[
                "--duration",
                "1s",
                "latency",
                "--rate",
                "2000",
                "--allocations",
                "2",
            ],
        ]
        .concat(),
    );
    for r in v["results"].as_array().expect("results") {
        let l = &r["latency"];
        assert!(u(l, "samples") > 0, "{r}");
        assert!(
            f(l, "p50_us") <= f(l, "p99_us") && f(l, "p99_us") <= f(l, "p999_us"),
            "{r}"
        );
    }

    let v = bench(&[&common[..], &["hold", "--allocations", "200"]].concat());
    let r = &v["results"][0];
    assert_eq!(u(r, "allocations"), 200, "{r}");
    assert!(u(r, "rss_before_bytes") > 0, "{r}");
    assert!(u(r, "rss_after_bytes") > 0, "{r}");
    assert!(r["rss_per_allocation_bytes"].is_number(), "{r}");

    // Every allocation was deleted again: a second hold fits in the quota.
    let v = bench(&[&common[..], &["hold", "--allocations", "900"]].concat());
    assert_eq!(u(&v["results"][0], "allocations"), 900);
}

#[test]
fn a_silent_server_is_named_and_bad_arguments_are_refused() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    // The bench's stderr against the silent server, which must fail.
    let against_silent = |scenario: &str| {
        let out = ferroturn_cli(
            &[
                "bench",
                "--server",
                &addr,
                "--timeout",
                "500ms",
                "-q",
                scenario,
            ],
            None,
        );
        assert!(!out.status.success(), "{scenario}");
        out.stderr
    };
    let err = against_silent("binding");
    assert!(err.contains(&addr), "{err}");
    let err = against_silent("alloc");
    assert!(err.contains(&addr) && err.contains("no response"), "{err}");

    for bad in [
        &["bench", "--duration", "1h", "binding"][..],
        &["bench", "relay", "--mode", "carrier-pigeon"],
        &["bench", "relay", "--size", "5"],
        &["bench", "--count", "0", "binding"],
    ] {
        let out = ferroturn_cli(bad, None);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(!out.stderr.is_empty(), "{bad:?}: no message");
    }
}
