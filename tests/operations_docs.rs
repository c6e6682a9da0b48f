//! The operations documentation and the packaging files in `contrib/` against the
//! real server and binary:
//!
//! * every `ferroturn_*` metric family a running server exposes is documented,
//!   with its type, labels and label values, in the Metrics section of
//!   docs/operations.md;
//! * the systemd unit's and the Docker image's command lines are accepted by the
//!   binary, and the sample `turnserver.toml` they ship passes `ferroturn check`
//!   and starts a server;
//! * with `systemd-analyze` installed, the unit verifies cleanly and keeps its
//!   hardening.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferroturn::client::Received;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ferroturn");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `ferroturn_*` families of a scrape: name -> (type, label names seen).
fn families(scrape: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                panic!("malformed TYPE line: {line}");
            };
            if name.starts_with("ferroturn_") {
                out.entry(name.into()).or_default().0 = kind.into();
            }
        }
    }
    // Label names from the samples: `name{a="x",b="y"} value`.
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some(family) = out.get_mut(name) else {
            continue;
        };
        let labels = rest.split_once('}').expect("closing brace").0;
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            family
                .1
                .insert(pair.split_once('=').expect("label=value").0.into());
        }
    }
    out
}

/// The text of the `## Metrics` section of docs/operations.md.
fn metrics_section(doc: &str) -> &str {
    let start = doc
        .find("\n## Metrics\n")
        .expect("docs/operations.md has a \"## Metrics\" section");
    let body = &doc[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    &body[..end]
}

/// Every metric name string literal in src/ops/metrics.rs: what the code registers,
/// to make sure the traffic below brings every family into the scrape.
fn registered_in_source() -> BTreeSet<String> {
    let src = read("src/ops/metrics.rs");
    src.match_indices("\"ferroturn_")
        .filter_map(|(i, _)| {
            let literal = &src[i + 1..];
            let name = &literal[..literal.find('"')?];
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                .then(|| name.to_string())
        })
        .collect()
}

#[tokio::test]
async fn every_metric_family_is_documented() {
    // With the credentials API on (it needs a store), so that its family is in
    // the scrape too.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("creds.db");
    let mut opts = options("127.0.0.1:0");
    opts.store = Some(ferroturn::store::StoreLocation::parse(db.to_str().unwrap()).unwrap());
    opts.api = Some(
        ferroturn::config::Config::from_toml_str(&format!(
            "[store]\nurl = {db:?}\n[api]\nlisten = \"127.0.0.1:0\"\nurls = [\"turn:a\"]\n"
        ))
        .unwrap()
        .api,
    );
    let srv = ferroturn::net::start(opts).expect("server starts");
    let m = srv.metrics.expect("metrics on");
    let api = srv.api.as_ref().expect("API on").addr;
    let unauthenticated = http_request(api, "POST", "/v1/credentials", &[], None).await;
    assert_eq!(unauthenticated.status, 401);
    // Traffic, so that the families with series only for what happened
    // (ferroturn_requests_total) are in the scrape: an Allocate (challenged,
    // then granted) and data relayed both ways over UDP and over TCP.
    let peer = echo_peer("127.0.0.1:0", 100).await;
    let mut clients = Vec::new(); // Kept open until the end.
    for transport in [Transport::Udp, Transport::Tcp] {
        let (mut c, _) = allocated_client(&srv, transport).await;
        c.create_permission(&[peer]).await.unwrap();
        c.send_indication(peer, b"hello").await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Data { data, .. } => assert_eq!(data, b"hello"),
            other => panic!("{other:?}"),
        }
        clients.push(c);
    }

    // The shards publish every 250 ms: scrape until the traffic shows.
    let registered = registered_in_source();
    assert!(
        registered.len() >= 12,
        "metric names not found as literals in src/ops/metrics.rs: {registered:?}"
    );
    let what = "the traffic and every registered family in the scrape";
    let (scrape, found) = eventually_async(Duration::from_secs(3), what, async || {
        let (status, body) = http_get(m, "/metrics").await;
        assert_eq!(status, 200);
        let found = families(&body);
        let relayed = body.lines().any(|l| {
            l.starts_with(
                r#"ferroturn_relayed_packets_total{direction="peer_to_client",transport="tcp"} "#,
            ) && !l.ends_with(" 0")
        });
        if relayed && registered.iter().all(|n| found.contains_key(n)) {
            return Ok((body, found));
        }
        Err(format!(
            "registered families missing from the scrape: {:?}\n--- scrape ---\n{body}",
            registered
                .iter()
                .filter(|n| !found.contains_key(*n))
                .collect::<Vec<_>>()
        ))
    })
    .await;

    let doc = read("docs/operations.md");
    let section = metrics_section(&doc);
    let mut missing = Vec::new();
    for (name, (kind, labels)) in &found {
        // The family's row in the table: | `name` | type | labels | meaning |
        let Some(row) = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
        else {
            missing.push(format!("{name}: no table row"));
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.get(2) != Some(&kind.as_str()) {
            missing.push(format!(
                "{name}: type is {kind}, the row says {:?}",
                cells.get(2)
            ));
        }
        let documented: BTreeSet<String> = cells
            .get(3)
            .unwrap_or(&"")
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        if &documented != labels {
            missing.push(format!(
                "{name}: labels are {labels:?}, the row says {documented:?}"
            ));
        }
    }
    // Every value a label can take (a fixed list each) is named in the section.
    let words: BTreeSet<&str> = section
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    for (label, values) in ferroturn::ops::metrics::label_values() {
        for v in values {
            if !words.contains(v.as_str()) {
                missing.push(format!("label value {label}={v} is not mentioned"));
            }
        }
    }
    // The three paths of the endpoint, documented and served.
    for path in ["/metrics", "/healthz", "/readyz"] {
        if !doc.contains(&format!("`{path}`")) {
            missing.push(format!("path {path} is not documented"));
        }
        wait_http_200(m, path, Duration::from_secs(2)).await;
    }
    assert!(
        missing.is_empty(),
        "docs/operations.md, section Metrics, is out of date:\n  {}\n--- scrape ---\n{scrape}",
        missing.join("\n  ")
    );
    srv.stop().unwrap();
}

/// `[Service]` settings of a unit file: key -> values in order (comments and
/// other sections skipped, no line continuations).
fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line continuations not handled: {line}"
        );
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        if section == "[Service]" {
            out.entry(k.trim().into())
                .or_default()
                .push(v.trim().into());
        }
    }
    out
}

/// The long flags `ferroturn <subcommand> --help` lists.
fn flags_of(subcommand: &str) -> BTreeSet<String> {
    let out = ferroturn_cli(&[subcommand, "--help"], None);
    assert!(out.status.success(), "{subcommand} --help: {out:?}");
    out.stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect()
}

/// Checks that `argv` (after the program name) is a subcommand the binary has,
/// with flags its `--help` lists, and returns the `--config` value.
fn check_command_line(what: &str, argv: &[String]) -> String {
    let subcommand = argv
        .first()
        .unwrap_or_else(|| panic!("{what}: no subcommand"));
    assert_eq!(
        subcommand, "serve",
        "{what}: runs {subcommand:?}, not serve"
    );
    let known = flags_of(subcommand);
    for arg in &argv[1..] {
        if arg.starts_with("--") {
            let flag = arg.split('=').next().unwrap();
            assert!(
                known.contains(flag),
                "{what}: `{subcommand} {flag}` is not a flag of the binary (it has {known:?})"
            );
        }
    }
    let config = argv
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| argv.get(i + 1))
        .unwrap_or_else(|| panic!("{what}: no --config"));
    config.clone()
}

#[test]
fn packaged_command_lines_and_sample_config_work() {
    // The systemd unit.
    let unit = unit_settings(&read("contrib/ferroturn.service"));
    let one = |k: &str| -> &str {
        match unit.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("ferroturn.service: want exactly one {k}=, got {other:?}"),
        }
    };
    let exec_start = one("ExecStart");
    assert!(
        !exec_start.contains(['"', '\'', '%', '$']),
        "ExecStart is split on whitespace here: {exec_start}"
    );
    let argv: Vec<String> = exec_start.split_whitespace().map(String::from).collect();
    assert_eq!(argv[0], "/usr/bin/ferroturn", "ExecStart program");
    let unit_config = check_command_line("ferroturn.service ExecStart", &argv[1..]);
    // SIGHUP reloads and SIGTERM stops cleanly: the signals the server handles.
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("RuntimeDirectory"), "ferroturn");
    assert_eq!(one("StateDirectory"), "ferroturn");

    // The Docker image: ENTRYPOINT ["ferroturn"], CMD ["serve", ...], and the
    // sample configuration copied where the command looks for it.
    let dockerfile = read("contrib/Dockerfile");
    let instruction = |name: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .rfind(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("Dockerfile has no {name}"));
        serde_json::from_str(&line[name.len()..])
            .unwrap_or_else(|e| panic!("Dockerfile {name} is not an exec-form JSON array: {e}"))
    };
    assert_eq!(instruction("ENTRYPOINT"), ["ferroturn"]);
    let image_config = check_command_line("Dockerfile CMD", &instruction("CMD"));
    assert_eq!(image_config, unit_config, "the unit and the image differ");
    assert!(
        dockerfile.lines().any(|l| l.starts_with("COPY")
            && l.contains(" turnserver.toml ")
            && l.ends_with(&format!(" {image_config}"))),
        "the Dockerfile does not copy turnserver.toml to {image_config}"
    );

    // The sample configuration they ship is valid...
    let sample = repo("turnserver.toml");
    let out = ferroturn_cli(&["check", "--config", sample.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "ferroturn check turnserver.toml: {}",
        out.stderr
    );
    assert!(out.stdout.starts_with("ok: "));
    // ... and a server starts from it (listeners and metrics moved to loopback
    // port 0, as every test does).
    let bin = spawn_binary(&["--config", sample.to_str().unwrap()]);
    drop(bin);
}

/// `systemd-analyze` on PATH, or None.
fn systemd_analyze() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    })
}

#[test]
fn service_unit_passes_systemd_analyze() {
    let Some(analyze) = systemd_analyze() else {
        eprintln!(
            "SKIPPED: systemd-analyze is not on PATH; contrib/ferroturn.service not verified"
        );
        return;
    };
    // The unit with ExecStart pointing at a copy of the binary under test, so
    // that verify can resolve it. The unit keeps its name: verify checks it.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("ferroturn");
    std::fs::copy(BIN, &bin).unwrap();
    let unit =
        read("contrib/ferroturn.service").replace("/usr/bin/ferroturn", bin.to_str().unwrap());
    let path = dir.path().join("ferroturn.service");
    std::fs::write(&path, unit).unwrap();

    // verify exits 0 on unknown keys and bad values, which it only prints: any
    // output at all is a failure.
    let out = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ferroturn.service ({}):\n{said}",
        out.status
    );

    // The hardening stays: exposure 2.0 or less out of 10 (it is 1.4 now; the
    // network access a TURN server needs accounts for most of it).
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("--offline") || stderr.contains("--threshold") {
        eprintln!("SKIPPED: this systemd-analyze has no offline security review: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "systemd-analyze security: exposure above 2.0:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}
