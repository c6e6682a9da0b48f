//! `ferroturn import coturn` against coturn's own tools: a user database
//! written by `turnadmin` (Debian's `coturn` package, as for the interop
//! tests), a coturn configuration, the import into a ferroturn store and
//! TOML, then a real server on loopback serving that TOML, with our client
//! and coturn's `turnutils_uclient` authenticating as the imported users.
//! PostgreSQL as a coturn database too, on the suite's throwaway server.

mod pg;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ferroturn::client::Client;
use ferroturn::turn::auth::{rest_password, UserKeys};
use sqlx::Connection as _;
use support::*;

const REALM: &str = "example.org";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `turnadmin ARGS`, which must succeed.
fn turnadmin(args: &[&str]) {
    let out = Command::new(coturn_tool("turnadmin"))
        .args(args)
        .output()
        .expect("turnadmin runs");
    assert!(
        out.status.success(),
        "turnadmin {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// coturn's peer tables have no turnadmin command: rows as an operator
/// would insert them.
async fn add_peer_rows(url: &str) {
    let rows = [
        "INSERT INTO denied_peer_ip (realm, ip_range) VALUES ('example.org', '198.51.100.0-198.51.100.255')",
        "INSERT INTO allowed_peer_ip (realm, ip_range) VALUES ('example.org', '198.51.100.7')",
    ];
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
        for sql in rows {
            sqlx::query(sql).execute(&mut c).await.expect("insert");
        }
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        for sql in rows {
            sqlx::query(sql).execute(&mut c).await.expect("insert");
        }
        c.close().await.unwrap();
    }
}

/// A coturn configuration with users of both kinds, REST secrets, peer
/// rules and keys ferroturn has no use for.
fn coturn_conf(dir: &Path) -> PathBuf {
    let carol_key = hex(&UserKeys::derive("carol", REALM, "carol-pw").md5);
    let text = format!(
        "# coturn, as an operator might have it
listening-port=3478
realm={REALM}
lt-cred-mech
fingerprint
user=bob:builder
user=carol:0x{carol_key}
use-auth-secret
static-auth-secret=south
allow-loopback-peers
no-multicast-peers
denied-peer-ip=203.0.113.0-203.0.113.255
stale-nonce=600
max-bps=0
log-file=/var/log/turnserver.log
no-cli
mobility
"
    );
    let path = dir.join("turnserver.conf");
    std::fs::write(&path, text).unwrap();
    path
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Imports `db` with the configuration above into a SQLite store in `dir`,
/// checks the report, the TOML and the store, and returns (out, store).
fn import(dir: &Path, db: &str) -> (PathBuf, PathBuf) {
    let conf = coturn_conf(dir);
    let out = dir.join("ferroturn.toml");
    let store = dir.join("store.db");
    let run = run_import(&conf, db, &out, &store, &[]).ok();
    // Every key that is not translated is named, with its line and reason,
    // on stderr and at the top of the file.
    let file = std::fs::read_to_string(&out).unwrap();
    for needle in [
        "line 4: lt-cred-mech (not needed)",
        "line 15: log-file (unsupported)",
        "line 17: mobility (unsupported)",
        "line 10: allow-loopback-peers (translated, note)",
    ] {
        assert!(run.stderr.contains(needle), "{needle} in\n{}", run.stderr);
        assert!(
            file.contains(&format!("#   {needle}")),
            "{needle} in\n{file}"
        );
    }
    assert!(
        run.stdout.contains(
            "3 user(s) added (2 of those imported stored by MD5 key only), 2 REST secret(s) added"
        ),
        "{}",
        run.stdout
    );
    // The file is private and ferroturn accepts it.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let check = ferroturn_cli(&["check", "--config", path_str(&out)], None).ok();
    assert!(
        check.stdout.contains("realm \"example.org\""),
        "{}",
        check.stdout
    );
    // Peer rules: loopback opened, coturn's allowed address cut out of the
    // denied range, the config's denied range kept.
    let raw = ferroturn::config::Config::load(&out).unwrap();
    let allow: Vec<String> = raw.peers.allow.iter().map(ToString::to_string).collect();
    assert!(allow.contains(&"127.0.0.0/8".to_owned()), "{allow:?}");
    assert!(allow.contains(&"198.51.100.7/32".to_owned()), "{allow:?}");
    let denied = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        raw.peers.deny.iter().any(|n| n.contains(&ip))
    };
    assert!(denied("198.51.100.6") && denied("198.51.100.8") && !denied("198.51.100.7"));
    assert!(denied("203.0.113.99"));
    // The store: alice and carol by key only, bob with both keys.
    let list = ferroturn_cli(&["user", "list", "--json", "--db", path_str(&store)], None).ok();
    let users: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let summary: Vec<(String, bool)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_owned(),
                u["key_only"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("alice".to_owned(), true),
            ("bob".to_owned(), false),
            ("carol".to_owned(), true)
        ]
    );
    // A second run adds nothing and says so.
    let again = run_import(&conf, db, &out, &store, &["--force"]).ok();
    assert!(again.stdout.contains("0 user(s) added"), "{}", again.stdout);
    assert!(again
        .stderr
        .contains("\"alice\" of realm \"example.org\" is already in the store"));
    (out, store)
}

/// Serves the imported configuration and authenticates as each kind of
/// imported user.
async fn serve_and_authenticate(out: &Path) {
    let srv = spawn_binary(&["--config", path_str(out), "--admin-socket", "off"]);
    // alice: written by turnadmin, imported by key; MD5 (what browsers use).
    let mut alice = turn_client_as(&srv, Transport::Udp, "alice", "secret").await;
    alice
        .allocate()
        .await
        .expect("alice (key only) allocates with MD5");
    let mut wrong = turn_client_as(&srv, Transport::Tcp, "alice", "not-secret").await;
    assert_eq!(wrong.allocate().await.unwrap_err().code(), Some(401));
    // ... but not with SHA-256: no SHA-256 key without the password.
    let mut sha = turn_client_as(&srv, Transport::Udp, "alice", "secret")
        .await
        .with_sha256();
    assert_eq!(sha.allocate().await.unwrap_err().code(), Some(401));
    // carol: user=NAME:0xKEY of the file, same.
    let mut carol = turn_client_as(&srv, Transport::Tcp, "carol", "carol-pw").await;
    carol.allocate().await.expect("carol (0x key) allocates");
    // bob: a password in the file, so both keys, SHA-256 too.
    let mut bob = turn_client_as(&srv, Transport::Udp, "bob", "builder")
        .await
        .with_sha256();
    bob.allocate().await.expect("bob allocates with SHA-256");
    // REST credentials from the secret turnadmin stored and from the file's.
    let expiry = ferroturn::store::unix_now() + 3600;
    for secret in ["north", "south"] {
        let user = format!("{expiry}:app");
        let pw = rest_password(secret.as_bytes(), &user);
        let mut c = Client::udp(srv.udp).await.unwrap().credentials(&user, &pw);
        c.allocate()
            .await
            .unwrap_or_else(|e| panic!("REST credential of secret {secret}: {e}"));
    }
    // coturn's own client, as alice, relaying through ferroturn to a
    // loopback peer (allow-loopback-peers was imported).
    let (_peer, peer_port) = turnutils_peer();
    let port = srv.udp.port().to_string();
    let peer_port = peer_port.to_string();
    let text = turnutils_uclient(&[
        "-u",
        "alice",
        "-w",
        "secret",
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-n",
        "20",
        "-m",
        "1",
        "-l",
        "170",
        "-z",
        "5",
        "127.0.0.1",
    ]);
    assert!(uclient_total(&text, "tot_recv_msgs=") >= 20, "{text}");
}

#[tokio::test]
async fn imports_a_sqlite_database_written_by_turnadmin() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("turndb");
    let db_s = path_str(&db);
    turnadmin(&["-a", "-b", db_s, "-u", "alice", "-r", REALM, "-p", "secret"]);
    turnadmin(&["-s", "north", "-b", db_s, "-r", REALM]);
    add_peer_rows(&format!("sqlite://{db_s}")).await;
    let (out, _store) = import(dir.path(), db_s);
    serve_and_authenticate(&out).await;
}

#[tokio::test]
async fn imports_a_postgres_database_written_by_turnadmin() {
    let url = pg::fresh_database();
    // coturn's schema, as its package ships it.
    let schema = std::fs::read_to_string("/usr/share/coturn/schema.sql")
        .expect("coturn's schema.sql (Debian package coturn)");
    let mut c = sqlx::PgConnection::connect(&url).await.expect("pg");
    sqlx::raw_sql(&schema)
        .execute(&mut c)
        .await
        .expect("schema");
    c.close().await.unwrap();
    let server = pg::server();
    let database = url.rsplit('/').next().unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname={database} user=postgres",
        server.port
    );
    turnadmin(&[
        "-a", "-e", &conninfo, "-u", "alice", "-r", REALM, "-p", "secret",
    ]);
    turnadmin(&["-s", "north", "-e", &conninfo, "-r", REALM]);
    add_peer_rows(&url).await;
    let dir = tempfile::tempdir().unwrap();
    // The postgresql:// form of --db.
    let pg_url = url.replacen("postgres://", "postgresql://", 1);
    let (out, _store) = import(dir.path(), &pg_url);
    serve_and_authenticate(&out).await;
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("turnserver.conf");
    let out = dir.path().join("out.toml");
    let run = |conf_text: &str, extra: &[&str]| {
        std::fs::write(&conf, conf_text).unwrap();
        let mut args = vec![
            "import",
            "coturn",
            "--config",
            path_str(&conf),
            "--out",
            path_str(&out),
        ];
        args.extend_from_slice(extra);
        let r = ferroturn_cli(&args, None);
        assert_eq!(r.code(), Some(1), "{r:?}");
        assert!(!out.exists());
        r.stderr
    };
    let conf_s = path_str(&conf).to_owned();
    assert_eq!(
        run("realm=x\n\nmin-port=lots\n", &[]),
        format!("error: {conf_s}: line 3: min-port: \"lots\" is not a port number (1-65535)\n")
    );
    let key = hex(&[7; 16]);
    let e = run(&format!("realm=x\nuser=carol:0x{key}\n"), &[]);
    assert!(
        e.contains("known only by their key") && e.contains("--store"),
        "{e}"
    );
    let e = run(
        "realm=x\n",
        &["--db", path_str(&dir.path().join("missing.db"))],
    );
    assert!(e.contains("missing.db: no such file"), "{e}");
    // No database, no store: passwords and secrets go into the file.
    std::fs::write(
        &conf,
        "realm=x\nuser=bob:builder\nuse-auth-secret\nstatic-auth-secret=south\n",
    )
    .unwrap();
    let import_to_out = || {
        ferroturn_cli(
            &[
                "import",
                "coturn",
                "--config",
                &conf_s,
                "--out",
                path_str(&out),
            ],
            None,
        )
    };
    import_to_out().ok();
    let cfg = ferroturn::config::Config::load(&out).unwrap();
    assert_eq!(cfg.auth.users, [("bob".to_owned(), "builder".to_owned())]);
    assert_eq!(cfg.auth.secrets, ["south"]);
    // An existing --out is kept unless --force.
    let r = import_to_out();
    assert_eq!(r.code(), Some(1));
    assert!(r.stderr.contains("exists; pass --force"), "{}", r.stderr);
}

/// `ferroturn import coturn --config CONF --db DB --out OUT --store STORE`
/// plus `extra` flags.
fn run_import(conf: &Path, db: &str, out: &Path, store: &Path, extra: &[&str]) -> CliOutput {
    let mut args = vec![
        "import",
        "coturn",
        "--config",
        path_str(conf),
        "--db",
        db,
        "--out",
        path_str(out),
        "--store",
        path_str(store),
    ];
    args.extend_from_slice(extra);
    ferroturn_cli(&args, None)
}
