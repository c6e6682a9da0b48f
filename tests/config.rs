//! Configuration, CLI overrides and the `check` subcommand.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ferroturn::cli::{Cli, Command as Sub, ServeArgs};
use ferroturn::config::{Config, ConfigError, ExternalIp, LogFormat, RawConfig};
use ferroturn::store::StoreLocation;
use support::ferroturn_cli;

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("turnserver.toml")
}

fn invalid_key(toml: &str) -> (String, String) {
    match Config::from_toml_str(toml) {
        Ok(config) => panic!("accepted invalid config:\n{toml}\n=> {config:?}"),
        Err(err) => {
            let key = err
                .key()
                .unwrap_or_else(|| panic!("no key in error for:\n{toml}\n=> {err}"))
                .to_owned();
            (key, err.to_string())
        }
    }
}

// ---------------------------------------------------------------------------
// Defaults and the shipped sample
// ---------------------------------------------------------------------------

#[test]
fn empty_file_gives_defaults() {
    let config = Config::from_toml_str("").expect("empty file is valid");
    assert_eq!(config, Config::default());

    let expected_listen: Vec<SocketAddr> = vec![
        "0.0.0.0:3478".parse().expect("addr"),
        "[::]:3478".parse().expect("addr"),
    ];
    assert_eq!(config.listen, expected_listen);
    assert_eq!(config.realm, "ferroturn");
    assert_eq!(config.software, None);
    assert_eq!(config.threads, 0);
    assert_eq!(config.max_message_size, 2048);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Human);
    assert!(config.relay.relay_ips.is_empty());
    assert!(config.relay.external_ips.is_empty());
    assert_eq!(
        (config.relay.port_min, config.relay.port_max),
        (49152, 65535)
    );
    assert_eq!(config.relay.default_lifetime, Duration::from_secs(600));
    assert_eq!(config.relay.max_lifetime, Duration::from_secs(3600));
    assert_eq!(config.relay.permission_lifetime, Duration::from_secs(300));
    assert_eq!(config.relay.channel_lifetime, Duration::from_secs(600));
    assert!(config.auth.users.is_empty());
    assert!(config.auth.secrets.is_empty());
    assert_eq!(config.auth.nonce_lifetime, Duration::from_secs(600));
    assert!(config.peers.allow.is_empty());
    assert!(config.peers.deny.is_empty());
    assert_eq!(config.quota.max_allocations_per_user, 6144);
    assert_eq!(config.quota.max_allocations_per_ip, 512);
    assert_eq!(config.connections.max_per_ip, 512);
    assert_eq!(config.connections.max_total, 16_384);
    assert_eq!(config.connections.allocate_timeout, Duration::from_secs(60));
    assert_eq!(config.quota.max_allocations, 0);
    assert_eq!(config.quota.max_permissions_per_allocation, 64);
    assert_eq!(config.quota.max_channels_per_allocation, 64);
    assert_eq!(config.quota.max_relay_ports, 0);
    // On by default: 10 a second, bursts of 20, like coturn's --401-ratelimit.
    assert_eq!(config.rate_limit.unauthenticated_per_second, 10);
    assert_eq!(config.rate_limit.unauthenticated_burst, 20);
    assert_eq!(config.store.url, None);
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9641".parse().expect("addr"))
    );
}

#[test]
fn empty_sections_give_defaults() {
    let config =
        Config::from_toml_str("[server]\n[relay]\n[auth]\n[auth.users]\n[peers]\n[quota]\n")
            .expect("empty sections are valid");
    assert_eq!(config, Config::default());
}

/// The sample deliberately spells out every default (and keeps example
/// credentials commented out, so that nobody ships a known password), so it
/// must be exactly the defaults — both as written and once validated. If a
/// default changes, this test points at the sample to update.
#[test]
fn shipped_sample_equals_defaults() {
    let path = sample_path();
    // Compare the values as written (before validation), so a sample value
    // that differs from the raw default is caught even if it would validate
    // to the same thing. (`RawConfig::load` also remembers the file name,
    // so parse the text for this comparison.)
    let text = std::fs::read_to_string(&path).expect("read sample");
    let raw = RawConfig::from_toml_str(&text).expect("sample parses");
    assert_eq!(
        raw,
        RawConfig::default(),
        "sample's values differ from the defaults"
    );

    let config = raw.validate().expect("sample is valid");
    assert_eq!(config, Config::default());
    assert_eq!(
        Config::load(&path).expect("sample loads"),
        Config::default()
    );
}

/// The examples in docs/configuration.md must stay valid.
#[test]
fn documentation_examples_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = std::fs::read_to_string(path).expect("read docs/configuration.md");
    let mut examples = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + "```toml\n".len()..];
        let end = body.find("```").expect("unterminated code block");
        if let Err(e) = Config::from_toml_str(&body[..end]) {
            panic!(
                "invalid example in docs/configuration.md:\n{}\n=> {e}",
                &body[..end]
            );
        }
        examples += 1;
        rest = &body[end + 3..];
    }
    assert!(examples >= 2, "expected the NAT and loopback examples");
}

#[test]
fn every_key_can_be_set() {
    let config = Config::from_toml_str(
        r#"
        [server]
        listen = ["127.0.0.1:3478", "[::1]:3479"]
        realm = "example.org"
        software = "ferroturn test"
        threads = 4
        max-message-size = 9000
        log-level = "info,ferroturn=debug"
        log-format = "json"

        [relay]
        relay-ips = ["10.0.0.5", "fd00::5"]
        external-ips = ["203.0.113.7/10.0.0.5", "2001:db8::7"]
        port-range = "40000-40999"
        default-lifetime = 300
        max-lifetime = 1200
        permission-lifetime = 5
        channel-lifetime = 7

        [auth]
        nonce-lifetime = 30
        secrets = ["new-secret", "old-secret"]

        [auth.users]
        zed = "pw-z"
        alice = "pw-a"
        "with space" = "pw-s"

        [peers]
        allow = ["127.0.0.0/8", "::1", "10.1.2.3"]
        deny = ["198.51.100.0/24"]

        [quota]
        max-allocations-per-user = 3
        max-allocations = 100
        max-permissions-per-allocation = 8
        max-channels-per-allocation = 4096
        max-relay-ports = 500
        max-bps-per-allocation = 250000
        max-bytes-per-user = 5000000000
        bytes-period = "hour"

        [rate-limit]
        unauthenticated-per-second = 50
        unauthenticated-burst = 200

        [store]
        url = "postgres://turn:db-pw@db.example:5432/turn"
        "#,
    )
    .expect("valid");

    assert_eq!(config.listen.len(), 2);
    assert_eq!(config.realm, "example.org");
    assert_eq!(config.software.as_deref(), Some("ferroturn test"));
    assert_eq!(config.threads, 4);
    assert_eq!(config.effective_threads(), 4);
    assert_eq!(config.max_message_size, 9000);
    assert_eq!(config.log.level, "info,ferroturn=debug");
    assert_eq!(config.log.format, LogFormat::Json);

    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(config.relay.relay_ips, vec![ip("10.0.0.5"), ip("fd00::5")]);
    assert_eq!(
        config.relay.external_ips,
        vec![
            ExternalIp {
                public: ip("203.0.113.7"),
                private: Some(ip("10.0.0.5"))
            },
            ExternalIp {
                public: ip("2001:db8::7"),
                private: None
            },
        ]
    );
    assert_eq!(
        (config.relay.port_min, config.relay.port_max),
        (40000, 40999)
    );
    assert_eq!(config.relay.default_lifetime, Duration::from_secs(300));
    assert_eq!(config.relay.max_lifetime, Duration::from_secs(1200));
    assert_eq!(config.relay.permission_lifetime, Duration::from_secs(5));
    assert_eq!(config.relay.channel_lifetime, Duration::from_secs(7));

    assert_eq!(config.auth.nonce_lifetime, Duration::from_secs(30));
    assert_eq!(config.auth.secrets, vec!["new-secret", "old-secret"]);
    let names: Vec<&str> = config.auth.users.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec!["alice", "with space", "zed"],
        "users sorted by name"
    );
    assert_eq!(config.auth.users[0].1, "pw-a");

    let nets: Vec<String> = config.peers.allow.iter().map(ToString::to_string).collect();
    assert_eq!(nets, vec!["127.0.0.0/8", "::1/128", "10.1.2.3/32"]);
    assert_eq!(config.peers.deny[0].to_string(), "198.51.100.0/24");

    assert_eq!(config.quota.max_allocations_per_user, 3);
    assert_eq!(config.quota.max_allocations, 100);
    assert_eq!(config.quota.max_permissions_per_allocation, 8);
    assert_eq!(config.quota.max_channels_per_allocation, 4096);
    assert_eq!(config.quota.max_relay_ports, 500);
    assert_eq!(config.quota.max_bps_per_allocation, 250_000);
    assert_eq!(config.quota.max_bytes_per_user, 5_000_000_000);
    assert_eq!(config.quota.bytes_period, Duration::from_secs(3600));
    assert_eq!(config.rate_limit.unauthenticated_per_second, 50);
    assert_eq!(config.rate_limit.unauthenticated_burst, 200);
    assert_eq!(
        config.store.url,
        Some(
            StoreLocation::parse("postgres://turn:db-pw@db.example:5432/turn").expect("valid URL")
        )
    );

    // Debug must not leak credentials.
    let shown = format!("{config:?}");
    for secret in ["pw-a", "pw-z", "pw-s", "new-secret", "old-secret", "db-pw"] {
        assert!(!shown.contains(secret), "Debug leaks {secret}: {shown}");
    }
    assert!(shown.contains("alice"));
}

/// `store.url`: the three accepted forms, and a bad one named by its key
/// without showing a password.
#[test]
fn store_url_forms() {
    for (url, postgres) in [
        ("/var/lib/ferroturn/users.db", false),
        ("users.db", false),
        ("sqlite:///var/lib/ferroturn/users.db", false),
        ("postgres://turn@db/turn", true),
        ("postgresql://turn:pw@db/turn?sslmode=disable", true),
    ] {
        let config = Config::from_toml_str(&format!("[store]\nurl = {url:?}\n"))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let location = config.store.url.expect("a store");
        assert_eq!(location.is_postgres(), postgres, "{url}");
    }
    let (key, message) = invalid_key("[store]\nurl = \"mysql://root:hunter2@db/turn\"\n");
    assert_eq!(key, "store.url");
    assert!(message.contains("unsupported scheme"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let raw =
        RawConfig::from_toml_str("[store]\nurl = \"postgres://u:hunter2@db/x\"\n").expect("parses");
    assert!(!format!("{raw:?}").contains("hunter2"));
    let config = raw.validate().expect("valid");
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(!config.summary().contains("hunter2"));
    assert!(config.summary().contains("store postgres://u:***@db/x"));
}

#[test]
fn serve_db_flag_overrides_store_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "[store]\nurl = \"file.db\"\n");
    let path = path.to_str().expect("utf-8 temp path");
    let config = serve_args(&["--config", path, "--db", "postgres://db/turn"])
        .build_config()
        .expect("valid");
    assert_eq!(
        config.store.url,
        Some(StoreLocation::parse("postgres://db/turn").expect("valid"))
    );
    let err = serve_args(&["--db", "ftp://x"])
        .build_config()
        .expect_err("bad scheme");
    assert_eq!(err.key(), Some("store.url"));
    assert!(
        err.to_string().starts_with("store.url (from --db): "),
        "{err}"
    );
    let shown = format!("{:?}", serve_args(&["--db", "postgres://u:hunter2@db/x"]));
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn empty_software_means_none() {
    let config = Config::from_toml_str("[server]\nsoftware = \"\"\n").expect("valid");
    assert_eq!(config.software, None);
}

// ---------------------------------------------------------------------------
// Validation: one case per rule, each must name its key
// ---------------------------------------------------------------------------

#[test]
fn each_rule_names_its_key() {
    let long = "x".repeat(128);
    let long_bytes = "é".repeat(100) + &"x".repeat(27); // 127 chars, 227 bytes: ok
    let cases: Vec<(&str, String, &str)> = vec![
        // server
        (
            "listen empty",
            "[server]\nlisten = []".into(),
            "server.listen",
        ),
        (
            "listen malformed",
            "[server]\nlisten = [\"0.0.0.0:3478\", \"nope\"]".into(),
            "server.listen[1]",
        ),
        (
            "listen no port",
            "[server]\nlisten = [\"10.0.0.1\"]".into(),
            "server.listen[0]",
        ),
        (
            "listen duplicate",
            "[server]\nlisten = [\"10.0.0.1:1\", \"10.0.0.1:1\"]".into(),
            "server.listen[1]",
        ),
        (
            "realm empty",
            "[server]\nrealm = \"\"".into(),
            "server.realm",
        ),
        (
            "realm too long",
            format!("[server]\nrealm = \"{long}\""),
            "server.realm",
        ),
        (
            "realm control char",
            "[server]\nrealm = \"a\\u0007b\"".into(),
            "server.realm",
        ),
        (
            "software too long",
            format!("[server]\nsoftware = \"{long}\""),
            "server.software",
        ),
        (
            "software control char",
            "[server]\nsoftware = \"a\\nb\"".into(),
            "server.software",
        ),
        (
            "threads negative",
            "[server]\nthreads = -1".into(),
            "server.threads",
        ),
        (
            "threads huge",
            "[server]\nthreads = 100000".into(),
            "server.threads",
        ),
        (
            "max-message-size below 548",
            "[server]\nmax-message-size = 547".into(),
            "server.max-message-size",
        ),
        (
            "max-message-size over 65535",
            "[server]\nmax-message-size = 65536".into(),
            "server.max-message-size",
        ),
        (
            "log-level empty",
            "[server]\nlog-level = \" \"".into(),
            "server.log-level",
        ),
        (
            "log-level bad directive",
            "[server]\nlog-level = \"info,x=loud\"".into(),
            "server.log-level",
        ),
        (
            // The config_toml fuzz target's crash: tracing-subscriber 0.3.23
            // panicked parsing this instead of failing.
            "log-level not ASCII",
            "[server]\nlog-level = \"ee\u{ffff}  H  \u{e4}  ,  SSSS  admin \u{e4} , SS\"".into(),
            "server.log-level",
        ),
        (
            "log-format unknown",
            "[server]\nlog-format = \"xml\"".into(),
            "server.log-format",
        ),
        // relay
        (
            "relay-ip malformed",
            "[relay]\nrelay-ips = [\"10.0.0.300\"]".into(),
            "relay.relay-ips[0]",
        ),
        (
            "relay-ip two v4",
            "[relay]\nrelay-ips = [\"10.0.0.1\", \"::1\", \"10.0.0.2\"]".into(),
            "relay.relay-ips[2]",
        ),
        (
            "relay-ip two v6",
            "[relay]\nrelay-ips = [\"fd00::1\", \"fd00::2\"]".into(),
            "relay.relay-ips[1]",
        ),
        (
            "relay-ip wildcard",
            "[relay]\nrelay-ips = [\"0.0.0.0\"]".into(),
            "relay.relay-ips[0]",
        ),
        (
            "relay-ip multicast",
            "[relay]\nrelay-ips = [\"ff02::1\"]".into(),
            "relay.relay-ips[0]",
        ),
        (
            "external-ip malformed",
            "[relay]\nexternal-ips = [\"203.0.113.7/24\"]".into(),
            "relay.external-ips[0]",
        ),
        (
            "external-ip mixed family",
            "[relay]\nexternal-ips = [\"203.0.113.7/fd00::1\"]".into(),
            "relay.external-ips[0]",
        ),
        (
            "external-ip two v4",
            "[relay]\nexternal-ips = [\"203.0.113.7\", \"203.0.113.8\"]".into(),
            "relay.external-ips[1]",
        ),
        (
            "external-ip wildcard",
            "[relay]\nexternal-ips = [\"0.0.0.0/10.0.0.1\"]".into(),
            "relay.external-ips[0]",
        ),
        (
            "external-ip private is not the relay-ip",
            "[relay]\nrelay-ips = [\"10.0.0.5\"]\nexternal-ips = [\"203.0.113.7/10.0.0.6\"]".into(),
            "relay.external-ips[0]",
        ),
        (
            "port-range over 65535",
            "[relay]\nport-range = \"70000-1\"".into(),
            "relay.port-range",
        ),
        (
            "port-range zero",
            "[relay]\nport-range = \"0-100\"".into(),
            "relay.port-range",
        ),
        (
            "port-range reversed",
            "[relay]\nport-range = \"2000-1000\"".into(),
            "relay.port-range",
        ),
        (
            "port-range single",
            "[relay]\nport-range = \"2000\"".into(),
            "relay.port-range",
        ),
        (
            "default-lifetime zero",
            "[relay]\ndefault-lifetime = 0".into(),
            "relay.default-lifetime",
        ),
        (
            "default-lifetime over u32",
            "[relay]\ndefault-lifetime = 4294967296".into(),
            "relay.default-lifetime",
        ),
        (
            "max-lifetime below default",
            "[relay]\ndefault-lifetime = 600\nmax-lifetime = 599".into(),
            "relay.max-lifetime",
        ),
        (
            "permission-lifetime zero",
            "[relay]\npermission-lifetime = 0".into(),
            "relay.permission-lifetime",
        ),
        (
            "channel-lifetime zero",
            "[relay]\nchannel-lifetime = 0".into(),
            "relay.channel-lifetime",
        ),
        // auth
        (
            "nonce-lifetime zero",
            "[auth]\nnonce-lifetime = 0".into(),
            "auth.nonce-lifetime",
        ),
        (
            "secret empty",
            "[auth]\nsecrets = [\"ok\", \"\"]".into(),
            "auth.secrets[1]",
        ),
        (
            "user name empty",
            "[auth.users]\n\"\" = \"pw\"".into(),
            "auth.users.\"\"",
        ),
        (
            "user name control char",
            "[auth.users]\n\"a\\tb\" = \"pw\"".into(),
            "auth.users.\"a\\tb\"",
        ),
        (
            "user password empty",
            "[auth.users]\nalice = \"\"".into(),
            "auth.users.alice",
        ),
        // peers
        (
            "allow malformed",
            "[peers]\nallow = [\"127.0.0.0/8\", \"nope\"]".into(),
            "peers.allow[1]",
        ),
        (
            "allow prefix too long",
            "[peers]\nallow = [\"10.0.0.0/33\"]".into(),
            "peers.allow[0]",
        ),
        (
            "allow host bits",
            "[peers]\nallow = [\"10.1.2.3/8\"]".into(),
            "peers.allow[0]",
        ),
        (
            "deny malformed",
            "[peers]\ndeny = [\"::g\"]".into(),
            "peers.deny[0]",
        ),
        // quota
        (
            "per-user zero",
            "[quota]\nmax-allocations-per-user = 0".into(),
            "quota.max-allocations-per-user",
        ),
        // connections
        (
            "connections per-ip negative",
            "[connections]\nmax-per-ip = -1".into(),
            "connections.max-per-ip",
        ),
        (
            "connections total over u32",
            "[connections]\nmax-total = 4294967296".into(),
            "connections.max-total",
        ),
        (
            "allocate-timeout zero",
            "[connections]\nallocate-timeout = 0".into(),
            "connections.allocate-timeout",
        ),
        (
            "per-ip negative",
            "[quota]\nmax-allocations-per-ip = -1".into(),
            "quota.max-allocations-per-ip",
        ),
        (
            "max-allocations negative",
            "[quota]\nmax-allocations = -1".into(),
            "quota.max-allocations",
        ),
        (
            "max-allocations over u32",
            "[quota]\nmax-allocations = 4294967296".into(),
            "quota.max-allocations",
        ),
        (
            "permissions zero",
            "[quota]\nmax-permissions-per-allocation = 0".into(),
            "quota.max-permissions-per-allocation",
        ),
        (
            "channels zero",
            "[quota]\nmax-channels-per-allocation = 0".into(),
            "quota.max-channels-per-allocation",
        ),
        (
            "channels over 4096",
            "[quota]\nmax-channels-per-allocation = 4097".into(),
            "quota.max-channels-per-allocation",
        ),
        (
            "relay ports over 65535",
            "[quota]\nmax-relay-ports = 65536".into(),
            "quota.max-relay-ports",
        ),
        // rate-limit
        (
            "unauthenticated rate negative",
            "[rate-limit]\nunauthenticated-per-second = -1".into(),
            "rate-limit.unauthenticated-per-second",
        ),
        (
            "unauthenticated rate over a million",
            "[rate-limit]\nunauthenticated-per-second = 1000001".into(),
            "rate-limit.unauthenticated-per-second",
        ),
        (
            "unauthenticated burst zero",
            "[rate-limit]\nunauthenticated-burst = 0".into(),
            "rate-limit.unauthenticated-burst",
        ),
    ];

    for (name, toml, key) in &cases {
        let (got_key, message) = invalid_key(toml);
        assert_eq!(&got_key, key, "case {name:?}: wrong key in {message:?}");
        assert!(
            message.starts_with(&format!("{key}: ")),
            "case {name:?}: message must start with the key: {message:?}"
        );
    }

    // Boundary values that must be accepted.
    for ok in [
        format!("[server]\nrealm = \"{long_bytes}\""),
        "[server]\nthreads = 1024".to_owned(),
        "[server]\nmax-message-size = 548".to_owned(),
        "[server]\nmax-message-size = 65535".to_owned(),
        "[relay]\nport-range = \"1-65535\"".to_owned(),
        "[relay]\nport-range = \"5000-5000\"".to_owned(),
        "[relay]\ndefault-lifetime = 600\nmax-lifetime = 600".to_owned(),
        "[relay]\nrelay-ips = [\"10.0.0.5\"]\nexternal-ips = [\"203.0.113.7/10.0.0.5\"]".to_owned(),
        "[quota]\nmax-relay-ports = 65535".to_owned(),
        "[rate-limit]\nunauthenticated-per-second = 0".to_owned(),
        "[rate-limit]\nunauthenticated-per-second = 1000000\nunauthenticated-burst = 1".to_owned(),
    ] {
        if let Err(e) = Config::from_toml_str(&ok) {
            panic!("rejected valid config {ok:?}: {e}");
        }
    }
}

#[test]
fn port_range_message_is_exact() {
    let (_, message) = invalid_key("[relay]\nport-range = \"70000-1\"");
    assert_eq!(
        message,
        "relay.port-range: \"70000-1\" is not MIN-MAX with 1 <= MIN <= MAX <= 65535"
    );
}

#[test]
fn credential_errors_do_not_echo_values() {
    let (_, message) = invalid_key("[auth.users]\n\"\" = \"hunter2-secret\"");
    assert!(!message.contains("hunter2-secret"), "{message}");
}

#[test]
fn wrong_type_is_rejected_with_location() {
    let err = Config::from_toml_str("[server]\nthreads = \"four\"\n").expect_err("wrong type");
    let message = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn unknown_key_in_each_section_is_rejected() {
    let cases = [
        ("bogus-key = 1\n", "bogus-key"),
        ("[server]\nlistn = [\"0.0.0.0:3478\"]\n", "listn"),
        ("[relay]\nport_range = \"1-2\"\n", "port_range"),
        ("[auth]\nuser = \"x\"\n", "user"),
        ("[peers]\nallowed = []\n", "allowed"),
        ("[quota]\nmax-allocation = 1\n", "max-allocation"),
        (
            "[rate-limit]\nunauthenticated-rate = 1\n",
            "unauthenticated-rate",
        ),
        ("[store]\nuri = \"x.db\"\n", "uri"),
        ("[logging]\nlevel = \"info\"\n", "logging"),
    ];
    for (toml, key) in cases {
        let err = Config::from_toml_str(toml).expect_err(toml);
        let message = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{message}");
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{toml:?}: {message}"
        );
    }
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[relay]\nbogus = 1\n").expect("write");
    let message = Config::load(&unknown).expect_err("unknown key").to_string();
    assert!(
        message.starts_with(&format!("{}: ", unknown.display())),
        "{message}"
    );
    assert!(message.contains("bogus"), "{message}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[relay]\nport-range = \"9-1\"\n").expect("write");
    let message = Config::load(&bad).expect_err("bad range").to_string();
    assert_eq!(
        message,
        format!(
            "{}: relay.port-range: \"9-1\" is not MIN-MAX with 1 <= MIN <= MAX <= 65535",
            bad.display()
        )
    );

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing).expect_err("missing file");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("missing.toml"));
}

// ---------------------------------------------------------------------------
// CLI parsing and overrides
// ---------------------------------------------------------------------------

fn serve_args(args: &[&str]) -> ServeArgs {
    let mut argv = vec!["ferroturn", "serve"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).expect("parses").command {
        Sub::Serve(args) => args,
        other => panic!("expected serve, got {other:?}"),
    }
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("turnserver.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn serve_without_flags_gives_defaults() {
    let config = serve_args(&[]).build_config().expect("defaults");
    assert_eq!(config, Config::default());
}

#[test]
fn overrides_replace_or_extend_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        &dir,
        r#"
        [server]
        listen = ["10.0.0.1:3478"]
        realm = "file-realm"
        [relay]
        relay-ips = ["10.0.0.1"]
        external-ips = ["203.0.113.1"]
        [auth]
        secrets = ["file-secret"]
        [auth.users]
        alice = "file-pw"
        bob = "bob-pw"
        [peers]
        allow = ["192.168.0.0/16"]
        deny = ["198.51.100.0/24"]
        "#,
    );
    let path_str = path.to_str().expect("utf-8 temp path");
    let args = serve_args(&[
        "--config",
        path_str,
        "--listen",
        "127.0.0.1:3478",
        "--listen",
        "[::1]:3478",
        "--realm",
        "cli-realm",
        "--software",
        "ft",
        "--threads",
        "2",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "--user",
        "alice:cli:pw",
        "--user",
        "carol:carol-pw",
        "--auth-secret",
        "cli-secret",
        "--relay-ip",
        "127.0.0.1",
        "--external-ip",
        "198.51.100.9/127.0.0.1",
        "--relay-ports",
        "50000-50010",
        "--allow-peer",
        "127.0.0.0/8",
        "--deny-peer",
        "203.0.113.0/24",
        "--max-allocations-per-user",
        "2",
        "--unauthenticated-per-second",
        "0",
    ]);
    let config = args.build_config().expect("valid");

    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    assert_eq!(
        listen,
        vec!["127.0.0.1:3478", "[::1]:3478"],
        "--listen replaces"
    );
    assert_eq!(config.realm, "cli-realm");
    assert_eq!(config.software.as_deref(), Some("ft"));
    assert_eq!(config.threads, 2);
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(
        config.auth.users,
        vec![
            ("alice".to_owned(), "cli:pw".to_owned()),
            ("bob".to_owned(), "bob-pw".to_owned()),
            ("carol".to_owned(), "carol-pw".to_owned()),
        ],
        "--user adds; same name replaces; password may contain ':'"
    );
    assert_eq!(
        config.auth.secrets,
        vec!["file-secret", "cli-secret"],
        "--auth-secret adds"
    );
    assert_eq!(
        config.relay.relay_ips,
        vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(config.relay.external_ips.len(), 1, "--external-ip replaces");
    assert_eq!(
        config.relay.external_ips[0].public.to_string(),
        "198.51.100.9"
    );
    assert_eq!(
        (config.relay.port_min, config.relay.port_max),
        (50000, 50010)
    );
    let allow: Vec<String> = config.peers.allow.iter().map(ToString::to_string).collect();
    assert_eq!(
        allow,
        vec!["192.168.0.0/16", "127.0.0.0/8"],
        "--allow-peer adds"
    );
    let deny: Vec<String> = config.peers.deny.iter().map(ToString::to_string).collect();
    assert_eq!(
        deny,
        vec!["198.51.100.0/24", "203.0.113.0/24"],
        "--deny-peer adds"
    );
    assert_eq!(config.quota.max_allocations_per_user, 2);
    assert_eq!(config.rate_limit.unauthenticated_per_second, 0);

    let shown = format!("{args:?}");
    assert!(
        !shown.contains("cli:pw") && !shown.contains("cli-secret"),
        "{shown}"
    );
}

#[test]
fn override_errors_name_key_and_flag() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--relay-ports", "70000-1"],
            "relay.port-range (from --relay-ports): \"70000-1\"",
        ),
        (
            vec!["--listen", "nope"],
            "server.listen[0] (from --listen): ",
        ),
        (vec!["--realm", ""], "server.realm (from --realm): "),
        (
            vec!["--software", "a\u{7}"],
            "server.software (from --software): ",
        ),
        (
            vec!["--threads", "5000"],
            "server.threads (from --threads): ",
        ),
        (
            vec!["--log-level", "x=loud"],
            "server.log-level (from --log-level): ",
        ),
        (
            vec!["--log-format", "xml"],
            "server.log-format (from --log-format): ",
        ),
        (vec!["--user", "alice:"], "auth.users.alice (from --user): "),
        (
            vec!["--auth-secret", ""],
            "auth.secrets[0] (from --auth-secret): ",
        ),
        (
            vec!["--relay-ip", "1.2.3.4", "--relay-ip", "5.6.7.8"],
            "relay.relay-ips[1] (from --relay-ip): ",
        ),
        (
            vec!["--external-ip", "1.2.3.4/::1"],
            "relay.external-ips[0] (from --external-ip): ",
        ),
        (
            vec!["--allow-peer", "bad"],
            "peers.allow[0] (from --allow-peer): ",
        ),
        (
            vec!["--deny-peer", "10.0.0.1/8"],
            "peers.deny[0] (from --deny-peer): ",
        ),
        (
            vec!["--max-allocations-per-user", "0"],
            "quota.max-allocations-per-user (from --max-allocations-per-user): ",
        ),
        (
            vec!["--unauthenticated-per-second", "2000000"],
            "rate-limit.unauthenticated-per-second (from --unauthenticated-per-second): ",
        ),
    ];
    for (flags, prefix) in cases {
        let message = serve_args(&flags)
            .build_config()
            .expect_err(prefix)
            .to_string();
        assert!(message.starts_with(prefix), "{flags:?}: {message:?}");
    }
}

#[test]
fn added_entries_blame_flag_and_file_entries_blame_file() {
    let dir = tempfile::tempdir().expect("tempdir");

    let good_file = write_config(&dir, "[peers]\nallow = [\"127.0.0.0/8\"]\n");
    let good = good_file.to_str().expect("utf-8 temp path");
    let message = serve_args(&["--config", good, "--allow-peer", "nope"])
        .build_config()
        .expect_err("bad flag")
        .to_string();
    assert!(
        message.starts_with("peers.allow[1] (from --allow-peer): "),
        "{message}"
    );

    let bad_dir = tempfile::tempdir().expect("tempdir");
    let bad_file = write_config(&bad_dir, "[peers]\nallow = [\"nope\"]\n");
    let bad = bad_file.to_str().expect("utf-8 temp path");
    let message = serve_args(&["--config", bad, "--allow-peer", "127.0.0.0/8"])
        .build_config()
        .expect_err("bad file")
        .to_string();
    assert!(
        message.starts_with(&format!("{bad}: peers.allow[0]: ")),
        "{message}"
    );
}

#[test]
fn malformed_user_flag_does_not_echo_password() {
    let message = serve_args(&["--user", "justapassword"])
        .build_config()
        .expect_err("no colon")
        .to_string();
    assert!(
        message.starts_with("auth.users (from --user): "),
        "{message}"
    );
    assert!(!message.contains("justapassword"), "{message}");
}

#[test]
fn clap_rejects_bad_invocations() {
    for argv in [
        vec!["ferroturn"],
        vec!["ferroturn", "check"],
        vec!["ferroturn", "serve", "--threads", "many"],
        vec!["ferroturn", "serve", "--max-allocations-per-user", "-1"],
        vec!["ferroturn", "serve", "--no-such-flag"],
        vec!["ferroturn", "frobnicate"],
    ] {
        assert!(
            Cli::try_parse_from(&argv).is_err(),
            "{argv:?} should not parse"
        );
    }
    match Cli::try_parse_from(["ferroturn", "check", "--config", "x.toml"])
        .expect("parses")
        .command
    {
        Sub::Check(args) => assert_eq!(args.config, PathBuf::from("x.toml")),
        other => panic!("expected check, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

#[test]
fn check_accepts_the_sample() {
    let sample = sample_path();
    let sample = sample.to_str().expect("utf-8 path");
    let out = ferroturn_cli(&["check", "--config", sample], None);
    let stdout = &out.stdout;
    assert!(out.status.success(), "stderr: {}", out.stderr);
    assert!(stdout.starts_with(&format!("ok: {sample}\n")), "{stdout}");
    assert!(stdout.contains("realm \"ferroturn\""), "{stdout}");
}

#[test]
fn check_rejects_bad_files_with_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "range.toml",
            "[relay]\nport-range = \"70000-1\"\n",
            "relay.port-range",
        ),
        ("unknown.toml", "[quota]\nmax-allocs = 1\n", "max-allocs"),
        ("syntax.toml", "[server\n", "line 1"),
    ];
    for (name, text, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = ferroturn_cli(
            &["check", "--config", path.to_str().expect("utf-8 path")],
            None,
        );
        let stderr = &out.stderr;
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
    }

    let missing = dir.path().join("missing.toml");
    let out = ferroturn_cli(
        &["check", "--config", missing.to_str().expect("utf-8 path")],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_with_bad_flag_exits_1_before_starting() {
    let out = ferroturn_cli(&["serve", "--relay-ports", "9-1"], None);
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: relay.port-range (from --relay-ports): "),
        "{stderr}"
    );
}

/// `metrics.listen`: an address, "" for off, anything else named by its key;
/// `--metrics ADDR` and `--metrics off` override it.
#[test]
fn metrics_listen_and_flag() {
    let config = Config::from_toml_str("[metrics]\nlisten = \"[::1]:9100\"\n").expect("valid");
    assert_eq!(
        config.metrics.listen,
        Some("[::1]:9100".parse().expect("addr"))
    );
    let off = Config::from_toml_str("[metrics]\nlisten = \"\"\n").expect("valid");
    assert_eq!(off.metrics.listen, None);
    let (key, message) = invalid_key("[metrics]\nlisten = \"localhost\"\n");
    assert_eq!(key, "metrics.listen");
    assert!(message.contains("localhost"), "{message}");

    let config = serve_args(&["--metrics", "0.0.0.0:9642"])
        .build_config()
        .expect("valid");
    assert_eq!(
        config.metrics.listen,
        Some("0.0.0.0:9642".parse().expect("addr"))
    );
    let config = serve_args(&["--metrics", "off"])
        .build_config()
        .expect("valid");
    assert_eq!(config.metrics.listen, None);
    assert!(
        config.summary().ends_with(", metrics off"),
        "{}",
        config.summary()
    );
    let err = serve_args(&["--metrics", "nope"])
        .build_config()
        .expect_err("not an address");
    assert_eq!(err.key(), Some("metrics.listen"));
    assert!(
        err.to_string()
            .starts_with("metrics.listen (from --metrics): "),
        "{err}"
    );
}

/// `[drain]`, `[usage]` and `[admin]`: values, defaults, flags and errors.
#[test]
fn drain_usage_and_admin_sections() {
    use ferroturn::config::UsageTarget;
    let config = Config::from_toml_str(
        "[drain]\nalternate-server = [\"203.0.113.1:3478\", \"[2001:db8::1]:3478\"]\ndeadline = 30\n\
         [usage]\nfile = \"/var/log/ferroturn/usage.jsonl\"\n\
         [admin]\nsocket = \"/tmp/ft.sock\"\n",
    )
    .expect("valid");
    assert_eq!(config.drain.alternate_servers.len(), 2);
    assert_eq!(config.drain.deadline, Duration::from_secs(30));
    assert_eq!(
        config.usage.target,
        Some(UsageTarget::File("/var/log/ferroturn/usage.jsonl".into()))
    );
    assert_eq!(config.admin.socket, Some("/tmp/ft.sock".into()));

    let defaults = Config::default();
    assert!(defaults.drain.alternate_servers.is_empty());
    assert_eq!(defaults.drain.deadline, Duration::from_secs(600));
    assert_eq!(defaults.usage.target, None);
    assert_eq!(
        defaults.admin.socket,
        Some(ferroturn::config::DEFAULT_ADMIN_SOCKET.into())
    );
    let stdout = Config::from_toml_str("[usage]\nfile = \"-\"\n").expect("valid");
    assert_eq!(stdout.usage.target, Some(UsageTarget::Stdout));

    for (toml, key) in [
        (
            "[drain]\nalternate-server = [\"turn.example\"]\n",
            "drain.alternate-server[0]",
        ),
        ("[drain]\ndeadline = 0\n", "drain.deadline"),
        ("[admin]\nsocket = \"relative.sock\"\n", "admin.socket"),
        (
            "[quota]\nmax-bps-per-allocation = -1\n",
            "quota.max-bps-per-allocation",
        ),
        (
            "[quota]\nmax-bytes-per-user = -1\n",
            "quota.max-bytes-per-user",
        ),
        ("[quota]\nbytes-period = \"week\"\n", "quota.bytes-period"),
    ] {
        let (k, _) = invalid_key(toml);
        assert_eq!(k, key, "{toml}");
    }

    let config = serve_args(&[
        "--admin-socket",
        "off",
        "--usage-file",
        "-",
        "--alternate-server",
        "192.0.2.9:3478",
    ])
    .build_config()
    .expect("valid");
    assert_eq!(config.admin.socket, None);
    assert_eq!(config.usage.target, Some(UsageTarget::Stdout));
    assert_eq!(
        config.drain.alternate_servers,
        vec!["192.0.2.9:3478".parse::<std::net::SocketAddr>().unwrap()]
    );
    let err = serve_args(&["--alternate-server", "nope"])
        .build_config()
        .expect_err("not an address");
    assert!(
        err.to_string()
            .starts_with("drain.alternate-server[0] (from --alternate-server): "),
        "{err}"
    );
}

/// Every input kept in fuzz/regressions/config_toml (a panic and a
/// minutes-long regex compilation in tracing-subscriber's directive parser,
/// both from `server.log-level`) validates to an answer, as the fuzz target
/// reads it: no panic, no hang (nextest ends a hung test).
#[test]
fn config_fuzz_regressions_get_an_answer() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/config_toml");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let _ = ferroturn::config::Config::from_toml_str(&text);
        n += 1;
    }
    assert!(
        n >= 2,
        "the regression inputs are missing from {}",
        dir.display()
    );
}
