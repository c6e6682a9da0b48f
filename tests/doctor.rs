//! `ferroturn doctor` against the real binary: a correctly configured server
//! (UDP, TCP and TLS with a test CA, loopback peers allowed) passes every check
//! and yields an iceServers entry with its turn:/turns: URLs; each failure the
//! command exists to find makes its check FAIL and the exit status non-zero (a
//! wrong password, a relay address other than the expected one — from the flag
//! or from the configuration —, an expired certificate, a silent server); the
//! default peer policy makes the round trip a WARN, not a FAIL; a relay open to
//! private networks makes the peer-policy check WARN; with `--dtls-server`, a
//! DTLS handshake with ALPN and a Binding inside it PASS, and FAIL against a
//! port that is not DTLS.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;
use support::*;

/// A test CA and a leaf it signed for localhost and 127.0.0.1, valid until
/// `not_after` (unix seconds), as PEM files in a temporary directory.
struct TestPki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn test_pki(not_before: i64, not_after: i64) -> TestPki {
    let at = |unix: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix as u64);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferroturn doctor test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.not_before = at(not_before);
    params.not_after = at(not_after);
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    TestPki {
        ca: write("ca.pem", ca_cert.pem()),
        cert: write("cert.pem", leaf.pem()),
        key: write("key.pem", key.serialize_pem()),
        _dir: dir,
    }
}

fn now() -> i64 {
    ferroturn::time::unix_now()
}

const DAY: i64 = 86_400;
const SECRET: &str = "doctor-test-secret";

/// The real server with UDP, TCP and TLS (the certificate of `pki`), the test
/// user and a REST secret, plus `extra` flags.
fn tls_server(pki: &TestPki, extra: &[&str]) -> Binary {
    let user = format!("{USER}:{PASS}");
    let mut args = vec!["--auth-secret", SECRET];
    args.extend_from_slice(extra);
    spawn_tls_binary(&pki.cert, &pki.key, REALM, &user, &args)
}

/// `ferroturn doctor` against `srv` (its UDP/TCP and, if any, TLS listener),
/// trusting `pki`'s CA, plus `extra` flags.
fn doctor(srv: &Binary, pki: Option<&TestPki>, extra: &[&str]) -> CliOutput {
    let server = srv.udp.to_string();
    let tls = srv.tls.map(|a| a.to_string());
    let mut args = vec!["doctor", "--server", &server, "--timeout", "3s"];
    if let Some(tls) = &tls {
        args.extend(["--tls-server", tls, "--tls-name", "localhost"]);
    }
    if let Some(pki) = pki {
        args.extend(["--ca", pki.ca.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    ferroturn_cli(&args, None)
}

/// The `--json` report, parsed.
fn json(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}):\n{}\n{}",
            out.stdout, out.stderr
        )
    })
}

/// The status of the check named `name` in a `--json` report.
fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

#[test]
fn a_correctly_configured_server_passes_every_check() {
    let pki = test_pki(now() - DAY, now() + 365 * DAY);
    let srv = tls_server(&pki, &["--allow-peer", "127.0.0.0/8"]);
    let user = format!("{USER}:{PASS}");

    // The table: one line per check, every one PASS, exit status 0.
    let out = doctor(&srv, Some(&pki), &["--user", &user]).ok();
    let checks: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.trim_start().starts_with("fix:"))
        .collect();
    let names = [
        "credentials",
        "binding udp",
        "allocate udp",
        "binding tcp",
        "allocate tcp",
        "binding tls",
        "allocate tls",
        "relay address",
        "round trip udp",
        "round trip tcp",
        "tls certificate",
        "peer policy",
        "relay ports",
    ];
    assert_eq!(checks.len(), names.len(), "{}", out.stdout);
    for name in names {
        let line = checks
            .iter()
            .find(|l| l[8..].starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name:?} line:\n{}", out.stdout));
        assert!(line.starts_with("PASS "), "{line}\n{}", out.stdout);
    }
    assert!(
        out.stdout
            .contains("13 passed, 0 warned, 0 failed, 0 skipped"),
        "{}",
        out.stdout
    );

    // --json, with a credential minted from the REST secret: one object, its
    // iceServers entry carrying every URL and the credential that worked.
    let out = doctor(&srv, Some(&pki), &["--secret", SECRET, "--json"]).ok();
    let report = json(&out);
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["status"], "PASS", "{check}");
    }
    let rtt = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "round trip udp")
        .and_then(|c| c["rtt_ms"].as_f64())
        .expect("round trip udp has rtt_ms");
    assert!(rtt > 0.0);
    let ice = &report["iceServers"][0];
    let urls: Vec<&str> = ice["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let tls = srv.tls.unwrap();
    assert_eq!(
        urls,
        [
            format!("turn:{}?transport=udp", srv.udp),
            format!("turn:{}?transport=tcp", srv.udp),
            format!("turns:localhost:{}?transport=tcp", tls.port()),
        ]
    );
    let username = ice["username"].as_str().unwrap();
    assert!(username.ends_with(":ferroturn-doctor"), "{username}");
    assert_eq!(
        ice["credential"].as_str().unwrap(),
        ferroturn::turn::auth::rest_password(SECRET.as_bytes(), username)
    );
}

#[test]
fn a_wrong_password_fails() {
    let srv = spawn_binary(&["--realm", REALM, "--user", &format!("{USER}:{PASS}")]);
    let out = doctor(&srv, None, &["--user", &format!("{USER}:wrong"), "--json"]);
    assert_eq!(out.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("FAILED"), "{}", out.stderr);
    let report = json(&out);
    assert_eq!(status(&report, "binding udp"), "PASS");
    assert_eq!(status(&report, "allocate udp"), "FAIL");
    assert_eq!(status(&report, "allocate tcp"), "FAIL");
    assert!(out.stdout.contains("401"), "{}", out.stdout);
    // Nothing worked that needs the credential: no TURN URL to give an app.
    assert!(report["iceServers"].as_array().unwrap().is_empty());
}

#[test]
fn a_relay_address_other_than_the_expected_one_fails() {
    let srv = spawn_binary(&["--realm", REALM, "--user", &format!("{USER}:{PASS}")]);
    let user = format!("{USER}:{PASS}");
    let out = doctor(
        &srv,
        None,
        &[
            "--user",
            &user,
            "--expect-relay-ip",
            "203.0.113.9",
            "--json",
        ],
    );
    assert_eq!(out.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    let report = json(&out);
    assert_eq!(status(&report, "allocate udp"), "PASS");
    assert_eq!(status(&report, "relay address"), "FAIL");
    assert!(out.stdout.contains("203.0.113.9"), "{}", out.stdout);
}

/// With only `--config`, doctor takes the addresses, the credential and the
/// expected relay address from the file: here one whose external-ips the
/// running server does not use.
#[test]
fn doctor_reads_the_configuration_and_its_external_ip() {
    let srv = spawn_binary(&["--realm", REALM, "--user", &format!("{USER}:{PASS}")]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferroturn.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{}\"]\nrealm = \"{REALM}\"\n\
             [relay]\nexternal-ips = [\"203.0.113.9\"]\n\
             [auth.users]\n{USER} = \"{PASS}\"\n",
            srv.udp
        ),
    )
    .unwrap();
    let out = ferroturn_cli(
        &[
            "doctor",
            "--config",
            config.to_str().unwrap(),
            "--timeout",
            "3s",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    let report = json(&out);
    assert_eq!(status(&report, "credentials"), "PASS");
    assert_eq!(status(&report, "binding udp"), "PASS");
    assert_eq!(status(&report, "allocate udp"), "PASS");
    assert_eq!(status(&report, "relay address"), "FAIL");
    assert!(out.stdout.contains("relay.external-ips"), "{}", out.stdout);
}

#[test]
fn an_expired_certificate_fails() {
    let pki = test_pki(now() - 30 * DAY, now() - DAY);
    let srv = tls_server(&pki, &["--allow-peer", "127.0.0.0/8"]);
    let out = doctor(
        &srv,
        Some(&pki),
        &["--user", &format!("{USER}:{PASS}"), "--json"],
    );
    assert_eq!(out.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    let report = json(&out);
    assert_eq!(status(&report, "tls certificate"), "FAIL");
    assert!(out.stdout.contains("EXPIRED"), "{}", out.stdout);
    // The STUN checks over TLS still ran, but browsers would refuse turns:.
    assert_eq!(status(&report, "allocate tls"), "PASS");
    let urls = report["iceServers"][0]["urls"].to_string();
    assert!(urls.contains("turn:") && !urls.contains("turns:"), "{urls}");
}

#[test]
fn a_certificate_expiring_soon_warns() {
    let pki = test_pki(now() - DAY, now() + 3 * DAY + 3600);
    let srv = tls_server(&pki, &["--allow-peer", "127.0.0.0/8"]);
    let out = doctor(
        &srv,
        Some(&pki),
        &["--user", &format!("{USER}:{PASS}"), "--json"],
    )
    .ok();
    let report = json(&out);
    assert_eq!(status(&report, "tls certificate"), "WARN");
    assert!(out.stdout.contains("in 3 days"), "{}", out.stdout);
}

#[test]
fn a_certificate_of_an_unknown_ca_fails() {
    let pki = test_pki(now() - DAY, now() + 365 * DAY);
    let srv = tls_server(&pki, &[]);
    // Without --ca the test CA is not among the built-in roots.
    let out = doctor(&srv, None, &["--user", &format!("{USER}:{PASS}"), "--json"]);
    assert_eq!(out.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(status(&json(&out), "tls certificate"), "FAIL");
    assert!(out.stdout.contains("--ca FILE"), "{}", out.stdout);
}

/// The default policy denies the server's own loopback relayed addresses, so
/// the round trip cannot be tested here: WARN with the reason, not FAIL; and
/// private peers are refused: PASS.
#[test]
fn the_default_peer_policy_makes_the_round_trip_a_warning() {
    let srv = spawn_binary(&["--realm", REALM, "--user", &format!("{USER}:{PASS}")]);
    let out = doctor(&srv, None, &["--user", &format!("{USER}:{PASS}"), "--json"]).ok();
    let report = json(&out);
    assert_eq!(status(&report, "round trip udp"), "WARN");
    assert_eq!(status(&report, "round trip tcp"), "WARN");
    assert!(out.stdout.contains("403"), "{}", out.stdout);
    assert_eq!(status(&report, "peer policy"), "PASS");
    assert_eq!(status(&report, "relay ports"), "SKIP");
}

#[test]
fn a_relay_open_to_private_networks_warns() {
    let srv = spawn_binary(&[
        "--realm",
        REALM,
        "--user",
        &format!("{USER}:{PASS}"),
        "--allow-peer",
        "10.0.0.0/8",
    ]);
    let out = doctor(&srv, None, &["--user", &format!("{USER}:{PASS}"), "--json"]).ok();
    let report = json(&out);
    assert_eq!(status(&report, "peer policy"), "WARN");
    assert!(out.stdout.contains("10.0.0.1"), "{}", out.stdout);
    assert!(out.stdout.contains("[peers]"), "{}", out.stdout);
}

/// A server that does not answer: the Binding checks FAIL within the timeout
/// instead of hanging.
#[test]
fn a_silent_server_fails_within_the_timeout() {
    // Bound, so nothing else gets the port, and never read.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = ferroturn_cli(
        &[
            "doctor",
            "--server",
            &addr,
            "--timeout",
            "1s",
            "--user",
            "a:b",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    let report = json(&out);
    assert_eq!(status(&report, "binding udp"), "FAIL");
    assert_eq!(status(&report, "binding tcp"), "FAIL");
    assert!(report["iceServers"].as_array().unwrap().is_empty());
}

/// With `--dtls-server`, a DTLS handshake offering ALPN `stun.turn` and a
/// Binding inside it: PASS against `tls.dtls-listen`; FAIL against a port that
/// answers STUN but not DTLS (the plain UDP listener ignores the ClientHello).
#[test]
fn dtls_is_checked_with_alpn_and_a_binding() {
    let pki = test_pki(now() - DAY, now() + 365 * DAY);
    let srv = tls_server(&pki, &["--dtls-listen", "127.0.0.1:0"]);
    let dtls = srv.dtls.expect("a DTLS listener").to_string();
    let user = format!("{USER}:{PASS}");
    let out = doctor(&srv, Some(&pki), &["--user", &user, "--dtls-server", &dtls]);
    let report = json(&doctor(
        &srv,
        Some(&pki),
        &["--user", &user, "--dtls-server", &dtls, "--json"],
    ));
    assert_eq!(status(&report, "dtls"), "PASS", "{report:#}");
    assert!(
        out.stdout.contains("ALPN stun.turn, Binding answered"),
        "{}",
        out.stdout
    );
    let udp = srv.udp.to_string();
    let out = doctor(
        &srv,
        Some(&pki),
        &["--user", &user, "--dtls-server", &udp, "--json"],
    );
    assert_eq!(out.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(status(&json(&out), "dtls"), "FAIL");
    assert!(out.stdout.contains("tls.dtls-listen"), "{}", out.stdout);
}
