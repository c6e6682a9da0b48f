//! contrib/monitoring/ against the real binary and promtool:
//!
//! * every `ferroturn_*` metric that the Grafana dashboard's queries and the
//!   alerting rules' expressions name is exported by a running server (with TLS,
//!   a static user and some relayed traffic);
//! * `ferroturn_tls_certificate_expiry_timestamp_seconds` is the served
//!   certificate's notAfter, and follows the certificate a SIGHUP reload installs;
//! * `promtool check rules` accepts alerts.yml (and every dashboard query, as a
//!   recording rule), and `promtool test rules` passes alerts_test.yml;
//! * the dashboard is valid JSON whose every panel has the `${DS_PROMETHEUS}`
//!   datasource and at least one query.
//!
//! promtool comes with Debian's `prometheus` package, which scripts/test.sh
//! installs. Without it these tests fail rather than skip.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferroturn::client::{Client, Received};
use support::*;

const DASHBOARD: &str = "contrib/monitoring/ferroturn.json";
const ALERTS: &str = "contrib/monitoring/alerts.yml";
const ALERTS_TEST: &str = "contrib/monitoring/alerts_test.yml";
const DATASOURCE: &str = "${DS_PROMETHEUS}";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The dashboard, parsed.
fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel of the dashboard, those inside rows included, rows themselves not.
fn panels(dash: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'a>(list: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The PromQL of every panel query: (panel title, expression).
fn dashboard_queries(dash: &serde_json::Value) -> Vec<(String, String)> {
    panels(dash)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

/// The queries of the dashboard's template variables (`label_values(...)`).
fn variable_queries(dash: &serde_json::Value) -> Vec<String> {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .map(String::from)
        })
        .collect()
}

/// The `expr` of every rule in a Prometheus rules file: one-line values and
/// `|` blocks (the lines indented deeper than the `expr:` key).
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value == "|" || value == "|-" || value == ">" {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(value.trim_matches('\'').trim_matches('"').to_string());
        }
    }
    out
}

/// The `ferroturn_*` identifiers in a PromQL expression (not inside a string: a
/// label value such as `job="ferroturn_x"` is no metric).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_string = false;
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("ferroturn_") {
            assert!(
                word.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "not a ferroturn metric name: {word} in {expr}"
            );
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    out
}

/// The metric families of a scrape, by name, with their TYPE.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut it = rest.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// Whether `name` is exported: a family of that name, or a histogram's or
/// summary's `_bucket`/`_sum`/`_count` series.
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                families
                    .get(base)
                    .is_some_and(|t| t == "histogram" || (t == "summary" && *suffix != "_bucket"))
            })
        })
}

/// The value of the unlabelled series `name` in a scrape.
fn value(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// promtool, from Debian's `prometheus` package: on PATH, or a failure that
/// says how to get it.
fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("promtool"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "promtool is not on PATH: run scripts/test.sh, which installs Debian's \
                 `prometheus` package (its service kept stopped), or install it yourself"
            )
        })
}

/// Runs `promtool ARGS` in `dir`; panics with its output unless it exits 0.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("promtool {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A self-signed certificate for localhost valid until `not_after` (midnight UTC
/// of that day), with its key, written over `cert` and `key`; the notAfter in
/// unix seconds.
fn write_cert(cert: &Path, key: &Path, not_after: (i32, u8, u8)) -> (i64, rustls::RootCertStore) {
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let c = params.self_signed(&signing_key).unwrap();
    std::fs::write(key, signing_key.serialize_pem()).unwrap();
    std::fs::write(cert, c.pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.der().clone()).unwrap();
    (params.not_after.unix_timestamp(), roots)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo("contrib/monitoring");
    let out = run_promtool(&dir, &["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_promtool(&dir, &["test", "rules", "alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // The unit tests look at every alert.
    let (rules, tests) = (read(ALERTS), read(ALERTS_TEST));
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            let name = name.trim();
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "{ALERTS_TEST} does not test {name}"
            );
        }
    }
}

#[test]
fn dashboard_is_importable_and_its_queries_parse() {
    let dash = dashboard();
    // Imports anywhere: the datasource is an input chosen at import.
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    let all = panels(&dash);
    assert!(all.len() >= 14, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: id reused"
        );
        assert_eq!(p["datasource"]["uid"], DATASOURCE, "{title}: datasource");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}: datasource");
        let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{title}: a target without expr: {t}"
            );
            assert!(
                t.get("datasource").is_none() || t["datasource"]["uid"] == DATASOURCE,
                "{title}: a target with another datasource: {t}"
            );
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            assert_eq!(v["datasource"]["uid"], DATASOURCE, "variable {}", v["name"]);
        }
    }
    for title in [
        "Allocations active",
        "Relayed bandwidth",
        "Error answers by code",
        "Auth failures by reason",
        "Drops by reason",
        "TLS handshake failures",
        "Certificate days to expiry",
        "Ready",
        "Draining",
    ] {
        assert!(
            all.iter().any(|p| p["title"] == title),
            "no panel {title:?}"
        );
    }

    // Every query is valid PromQL: checked by promtool as the expression of a
    // recording rule, with Grafana's variables given values.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in dashboard_queries(&dash).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$job", ".*");
        assert!(
            !expr.contains('$'),
            "{title}: an unknown variable in {expr}"
        );
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        # {title}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), &rules).unwrap();
    run_promtool(dir.path(), &["check", "rules", "dashboard.yml"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    // The names referenced: panel queries, variable queries and alert rules.
    let dash = dashboard();
    let mut referenced: BTreeMap<String, &str> = BTreeMap::new();
    for (_, expr) in dashboard_queries(&dash) {
        referenced.extend(metric_names(&expr).into_iter().map(|n| (n, DASHBOARD)));
    }
    for q in variable_queries(&dash) {
        referenced.extend(metric_names(&q).into_iter().map(|n| (n, DASHBOARD)));
    }
    let exprs = rule_expressions(&read(ALERTS));
    let alerts = read(ALERTS).matches("- alert:").count();
    assert_eq!(exprs.len(), alerts, "one expr per alert: {exprs:#?}");
    for expr in &exprs {
        referenced.extend(metric_names(expr).into_iter().map(|n| (n, ALERTS)));
    }
    assert!(
        referenced.len() >= 12,
        "too few names found, is the parsing right? {referenced:?}"
    );
    for name in [
        "ferroturn_ready",
        "ferroturn_draining",
        "ferroturn_tls_certificate_expiry_timestamp_seconds",
    ] {
        assert!(referenced.contains_key(name), "{name} is not used");
    }

    // The real binary with TLS and a static user.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (not_after, roots) = write_cert(&cert, &key, (2031, 5, 17));
    let user = format!("{USER}:{PASS}");
    let bin = spawn_tls_binary(&cert, &key, REALM, &user, &["--allow-peer", "127.0.0.0/8"]);
    let metrics = bin.metrics.expect("metrics on");
    let tls = bin.tls.expect("a TLS listener");

    // A little traffic: relayed over UDP and over TLS, so that every family and
    // the tls series have values.
    let peer = echo_peer("127.0.0.1:0", 100).await;
    let (mut udp, _) = allocated_client(&bin, Transport::Udp).await;
    let mut tls_client = Client::tls(tls, "localhost", roots)
        .await
        .unwrap()
        .credentials(USER, PASS);
    tls_client.allocate().await.unwrap();
    for c in [&mut udp, &mut tls_client] {
        c.create_permission(&[peer]).await.unwrap();
        c.send_indication(peer, b"monitoring").await.unwrap();
        match c.recv_data(WAIT).await.unwrap() {
            Received::Data { data, .. } => assert_eq!(data, b"monitoring"),
            other => panic!("{other:?}"),
        }
    }
    let scrape = eventually_async(
        Duration::from_secs(5),
        "relayed TLS traffic in the scrape",
        async || {
            let (status, body) = http_get(metrics, "/metrics").await;
            assert_eq!(status, 200);
            let relayed = body.lines().any(|l| {
                l.starts_with(
                    r#"ferroturn_relayed_packets_total{direction="peer_to_client",transport="tls"} "#,
                ) && !l.ends_with(" 0")
            });
            if relayed {
                Ok(body)
            } else {
                Err(body)
            }
        },
    )
    .await;

    let found = families(&scrape);
    let missing: Vec<String> = referenced
        .iter()
        .filter(|(name, _)| !exported(name, &found))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:?}\n--- scrape ---\n{scrape}"
    );

    // Ready and not draining; the certificate's expiry to the second.
    wait_http_200(metrics, "/readyz", WAIT).await;
    wait_for_metrics(metrics, &["ferroturn_ready 1", "ferroturn_draining 0"]).await;
    let expiry = value(
        &scrape,
        "ferroturn_tls_certificate_expiry_timestamp_seconds",
    )
    .expect("the expiry gauge");
    assert!(
        (expiry - not_after as f64).abs() <= 1.0,
        "expiry gauge {expiry}, the certificate's notAfter {not_after}"
    );

    // A renewed certificate, loaded by SIGHUP: the gauge follows.
    let (renewed, _) = write_cert(&cert, &key, (2032, 8, 1));
    bin.signal(libc::SIGHUP);
    bin.wait_log("configuration reloaded", WAIT);
    wait_for_metrics(
        metrics,
        &[&format!(
            "ferroturn_tls_certificate_expiry_timestamp_seconds {renewed}"
        )],
    )
    .await;
    drop((udp, tls_client));
}

#[test]
fn the_name_extraction_finds_what_it_should() {
    let exprs = rule_expressions(
        "rules:\n  - alert: A\n    expr: up == 0\n  - alert: B\n    expr: |\n      ferroturn_a\n        > on (x) ferroturn_b_total\n    for: 5m\n",
    );
    assert_eq!(
        exprs,
        ["up == 0", "ferroturn_a\n> on (x) ferroturn_b_total"]
    );
    assert_eq!(
        metric_names(r#"sum(rate(ferroturn_x_total{job="ferroturn_not"}[5m])) / ferroturn_y"#),
        ["ferroturn_x_total", "ferroturn_y"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let fams: BTreeMap<String, String> = [("ferroturn_h".into(), "histogram".into())].into();
    assert!(exported("ferroturn_h_bucket", &fams));
    assert!(!exported("ferroturn_g_bucket", &fams));
}
