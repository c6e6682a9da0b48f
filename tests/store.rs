//! The credential store and the admin CLI, against SQLite (a temporary
//! file) and a real PostgreSQL server (see `pg/mod.rs`).
//!
//! Each scenario is written once as a function of the store URL and run
//! against both backends, so the two cannot drift apart.

mod pg;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ferroturn::store::{Store, StoreError, NOTIFY_CHANNEL};
use ferroturn::stun::integrity::userhash;
use ferroturn::turn::auth::UserKeys;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use support::{ferroturn_cli, poll_until, CliOutput};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    dir.path().join("store.db").display().to_string()
}

// ---------------------------------------------------------------------------
// The API, every call
// ---------------------------------------------------------------------------

async fn exercise_api(url: &str) {
    let store = Store::open(url).await.expect("open");
    let g0 = store.generation().await.expect("generation");
    let empty = store.snapshot().await.expect("snapshot");
    assert_eq!(empty.generation, g0);
    assert!(empty.users.is_empty() && empty.secrets.is_empty() && empty.revocations.is_empty());

    // Users.
    store
        .add_user("example.org", "alice", "pw-alice")
        .await
        .expect("add alice");
    store
        .add_user("example.org", "bob", "pw-bob")
        .await
        .expect("add bob");
    store
        .add_user("other.net", "alice", "pw-alice-2")
        .await
        .expect("same name, other realm");
    let g1 = store.generation().await.expect("generation");
    assert_eq!(g1, g0 + 3, "each write bumps the generation once");

    match store.add_user("example.org", "alice", "again").await {
        Err(StoreError::UserExists { realm, name }) => {
            assert_eq!((realm.as_str(), name.as_str()), ("example.org", "alice"));
        }
        other => panic!("duplicate add: {other:?}"),
    }
    let err = store
        .add_user("example.org", "alice", "again")
        .await
        .expect_err("dup");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(matches!(
        store.add_user("example.org", "", "pw").await,
        Err(StoreError::Invalid {
            what: "user name",
            ..
        })
    ));
    assert!(matches!(
        store.add_user("example.org", "carol", "").await,
        Err(StoreError::Invalid {
            what: "password",
            ..
        })
    ));
    assert!(matches!(
        store.add_user("", "carol", "pw").await,
        Err(StoreError::Invalid { what: "realm", .. })
    ));
    assert_eq!(
        store.generation().await.expect("generation"),
        g1,
        "failed writes leave the generation alone"
    );

    let all = store.list_users(None).await.expect("list");
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|u| (u.realm.as_str(), u.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("example.org", "alice"),
            ("example.org", "bob"),
            ("other.net", "alice")
        ]
    );
    assert!(all
        .iter()
        .all(|u| u.created >= i64::try_from(now()).expect("now") - 60));
    let other = store
        .list_users(Some("other.net"))
        .await
        .expect("list realm");
    assert_eq!(other.len(), 1);
    assert!(store
        .list_users(Some("nowhere"))
        .await
        .expect("list")
        .is_empty());

    // Keys in the snapshot are what the server derives from the password.
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(snap.generation, g1);
    let alice = snap
        .users
        .iter()
        .find(|u| u.realm == "example.org" && u.name == "alice")
        .expect("alice in snapshot");
    assert_eq!(
        alice.keys,
        UserKeys::derive("alice", "example.org", "pw-alice")
    );
    assert_eq!(alice.userhash, userhash("alice", "example.org"));

    store
        .set_password("example.org", "alice", "new-pw")
        .await
        .expect("passwd");
    let snap = store.snapshot().await.expect("snapshot");
    let alice = snap
        .users
        .iter()
        .find(|u| u.name == "alice" && u.realm == "example.org")
        .expect("alice");
    assert_eq!(
        alice.keys,
        UserKeys::derive("alice", "example.org", "new-pw")
    );
    assert!(matches!(
        store.set_password("example.org", "nobody", "pw").await,
        Err(StoreError::NoSuchUser { .. })
    ));

    store
        .remove_user("example.org", "bob")
        .await
        .expect("remove bob");
    let err = store
        .remove_user("example.org", "bob")
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::NoSuchUser { .. }), "{err}");
    assert!(err.to_string().contains("no such user"), "{err}");
    assert_eq!(store.list_users(None).await.expect("list").len(), 2);

    // Secrets.
    let first = store.add_secret("secret-one").await.expect("add secret");
    let second = store.add_secret("secret-two").await.expect("add secret");
    assert!(second > first, "ids grow");
    assert!(matches!(
        store.add_secret("secret-one").await,
        Err(StoreError::SecretExists { id }) if id == first
    ));
    assert!(matches!(
        store.add_secret("").await,
        Err(StoreError::Invalid { .. })
    ));
    let listed = store.list_secrets().await.expect("list secrets");
    let values: Vec<&str> = listed.iter().map(|s| s.secret.as_str()).collect();
    assert_eq!(values, ["secret-one", "secret-two"]);
    assert!(
        !format!("{listed:?}").contains("secret-one"),
        "Debug hides secrets"
    );
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(snap.secrets, ["secret-two", "secret-one"], "newest first");
    assert!(
        !format!("{snap:?}").contains("secret-two"),
        "Debug hides secrets"
    );

    assert_eq!(
        store
            .remove_secret(&first.to_string())
            .await
            .expect("by id"),
        first
    );
    let third = store.add_secret("secret-three").await.expect("add");
    assert_eq!(
        store.remove_secret("secret-three").await.expect("by value"),
        third
    );
    assert!(matches!(
        store.remove_secret("secret-three").await,
        Err(StoreError::NoSuchSecret)
    ));
    assert!(matches!(
        store.remove_secret("424242").await,
        Err(StoreError::NoSuchSecret)
    ));
    let values: Vec<String> = store
        .list_secrets()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.secret)
        .collect();
    assert_eq!(values, ["secret-two"]);

    // Revocations: kept until expiry, re-revoking keeps the later expiry,
    // expired ones are left out of snapshots and pruned.
    let later = now() + 3600;
    store
        .revoke(&format!("{later}:alice"), later)
        .await
        .expect("revoke");
    store
        .revoke(&format!("{later}:alice"), later - 100)
        .await
        .expect("revoke again");
    store.revoke("100:old", 100).await.expect("revoke expired");
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(snap.revocations, [(format!("{later}:alice"), later)]);
    assert_eq!(store.prune_revocations(now()).await.expect("prune"), 1);
    let g = store.generation().await.expect("generation");
    assert_eq!(store.prune_revocations(now()).await.expect("prune"), 0);
    assert_eq!(
        store.generation().await.expect("generation"),
        g,
        "no-op prune is not a change"
    );
    assert!(store.revoke("", later).await.is_err());

    // API tokens: stored by hash, listed without it; adding and removing bump
    // the generation, recording a use does not.
    let h = ferroturn::api::tokens::hash("ftk_test");
    let g = store.generation().await.expect("generation");
    store.add_api_token("app", h).await.expect("add token");
    assert!(matches!(
        store.add_api_token("app", [1; 32]).await,
        Err(StoreError::ApiTokenExists(_))
    ));
    assert!(matches!(
        store.add_api_token("bad name", [2; 32]).await,
        Err(StoreError::Invalid {
            what: "token name",
            ..
        })
    ));
    assert_eq!(
        store.api_token_hashes().await.expect("hashes"),
        [("app".to_owned(), h)]
    );
    store
        .touch_api_token("app", 1_000_000)
        .await
        .expect("touch");
    // Within the minute: not written again.
    store
        .touch_api_token("app", 1_000_030)
        .await
        .expect("touch");
    let listed = store.list_api_tokens().await.expect("list");
    assert_eq!((listed.len(), listed[0].last_used), (1, Some(1_000_000)));
    assert_eq!(store.generation().await.expect("generation"), g + 1);
    store.add_api_token("gone", [3; 32]).await.expect("add");
    store.remove_api_token("gone").await.expect("remove");
    assert!(matches!(
        store.remove_api_token("gone").await,
        Err(StoreError::NoSuchApiToken(_))
    ));
    assert_eq!(store.generation().await.expect("generation"), g + 3);

    // Byte usage (quota.max-bytes-per-user): additions sum per user, period
    // length and period; rows are read by when they were last added to and
    // pruned by age; none of it is a credential change.
    let g = store.generation().await.expect("generation");
    let totals = store
        .add_byte_usage(3600, 7, 100, &[("amy", 300), ("ben", 5)])
        .await
        .expect("add byte usage");
    assert_eq!(totals, [300, 5]);
    let totals = store
        .add_byte_usage(3600, 7, 105, &[("amy", 200)])
        .await
        .expect("add byte usage");
    assert_eq!(totals, [500]);
    store
        .add_byte_usage(86_400, 7, 90, &[("amy", 1)])
        .await
        .expect("another period length");
    let mut rows = store.byte_usage_since(3600, 7, 0).await.expect("rows");
    rows.sort();
    assert_eq!(rows, [("amy".to_owned(), 500), ("ben".to_owned(), 5)]);
    assert_eq!(
        store.byte_usage_since(3600, 7, 101).await.expect("rows"),
        [("amy".to_owned(), 500)]
    );
    assert!(store
        .byte_usage_since(3600, 8, 0)
        .await
        .expect("rows")
        .is_empty());
    assert_eq!(store.prune_byte_usage(101).await.expect("prune"), 2);
    assert_eq!(
        store
            .byte_usage_since(3600, 7, 0)
            .await
            .expect("rows")
            .len(),
        1
    );
    assert_eq!(store.generation().await.expect("generation"), g);

    // A snapshot's generation always matches its content: after the last
    // write nothing changes any more.
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snap.generation,
        store.generation().await.expect("generation")
    );
    store.close().await;

    // Everything survives a reopen.
    let store = Store::open(url).await.expect("reopen");
    assert_eq!(store.snapshot().await.expect("snapshot"), snap);
    store.close().await;
}

#[tokio::test]
async fn sqlite_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    exercise_api(&sqlite_url(&dir)).await;
    // The sqlite: URL form reaches the same file.
    let url = format!("sqlite://{}", sqlite_url(&dir));
    let store = Store::open(&url).await.expect("open by sqlite: URL");
    assert_eq!(store.list_users(None).await.expect("list").len(), 2);
    store.close().await;
}

#[tokio::test]
async fn postgres_api() {
    exercise_api(&pg::fresh_database()).await;
}

// ---------------------------------------------------------------------------
// No plaintext passwords at rest
// ---------------------------------------------------------------------------

const DISTINCTIVE: &str = "Zebra-Quokka-7731-plaintext";
const DISTINCTIVE_2: &str = "Walrus-Ibis-9020-plaintext";

async fn add_distinctive_users(url: &str) {
    let store = Store::open(url).await.expect("open");
    store
        .add_user("ferroturn", "pat", DISTINCTIVE)
        .await
        .expect("add");
    store.add_user("ferroturn", "sam", "x").await.expect("add");
    store
        .set_password("ferroturn", "sam", DISTINCTIVE_2)
        .await
        .expect("passwd");
    store.close().await;
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn sqlite_file_never_contains_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir);
    add_distinctive_users(&url).await;
    // SQLite's worker thread finishes closing (folding the write-ahead log
    // into the file and deleting it) just after the pool reports closed;
    // scan once it is done, and skip a file that vanishes meanwhile.
    let wal = PathBuf::from(format!("{url}-wal"));
    let _ = poll_until(Duration::from_secs(5), || match wal.exists() {
        true => Err(()),
        false => Ok(()),
    });
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        for pw in [DISTINCTIVE, DISTINCTIVE_2] {
            assert!(
                !contains(&bytes, pw),
                "{} contains a plaintext password",
                path.display()
            );
        }
        scanned += bytes.len();
    }
    assert!(scanned > 0, "nothing scanned");
    // The file holds REST secrets: owner-only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&url).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "store file mode {mode:o}");
    }
}

#[tokio::test]
async fn postgres_never_contains_the_password() {
    let url = pg::fresh_database();
    add_distinctive_users(&url).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    assert!(tables.iter().any(|t| t == "users"), "{tables:?}");
    let mut rows = 0;
    for table in &tables {
        // Every column of every row, as PostgreSQL's own text rendering
        // (bytea as hex, so also check the hex of the password).
        let texts: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
            .fetch_all(&mut conn)
            .await
            .expect("select");
        for text in &texts {
            for pw in [DISTINCTIVE, DISTINCTIVE_2] {
                let hex: String = pw.bytes().map(|b| format!("{b:02x}")).collect();
                assert!(
                    !text.contains(pw) && !text.contains(&hex),
                    "{table}: {text}"
                );
            }
        }
        rows += texts.len();
    }
    assert!(rows >= 2, "nothing scanned");
}

// ---------------------------------------------------------------------------
// Migrations and change notification
// ---------------------------------------------------------------------------

async fn migrations_once(url: &str) -> i64 {
    let mut stores = Vec::new();
    for _ in 0..2 {
        stores.push(Store::open(url).await.expect("open"));
    }
    for store in &stores {
        store.close().await;
    }
    let store = Store::open(url).await.expect("open again");
    store.add_user("r", "u", "p").await.expect("schema works");
    let g = store.generation().await.expect("generation");
    store.close().await;
    g
}

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir);
    assert_eq!(migrations_once(&url).await, 1, "opening is no write");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
        .await
        .expect("connect");
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count");
    // Each migration once (0001 credentials, 0002 key-only users, 0003 API tokens,
    // 0004 byte usage, 0005 nodes).
    assert_eq!(applied, 5);
    pool.close().await;
}

#[tokio::test]
async fn postgres_migrations_are_idempotent_and_concurrent() {
    let url = pg::fresh_database();
    // Two nodes opening a fresh database at the same moment.
    let (a, b, c) = tokio::join!(Store::open(&url), Store::open(&url), Store::open(&url));
    for store in [a, b, c] {
        store.expect("concurrent open").close().await;
    }
    assert_eq!(migrations_once(&url).await, 1);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    // Each migration once (0001 credentials, 0002 key-only users, 0003 API tokens,
    // 0004 byte usage, 0005 nodes).
    assert_eq!(applied, 5);
}

#[tokio::test]
async fn postgres_writes_notify_with_the_generation() {
    let url = pg::fresh_database();
    let store = Store::open(&url).await.expect("open");
    let mut listener = sqlx::postgres::PgListener::connect(&url)
        .await
        .expect("listener");
    listener.listen(NOTIFY_CHANNEL).await.expect("listen");
    store.add_user("r", "u", "p").await.expect("add");
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("notification in time")
        .expect("notification");
    assert_eq!(note.channel(), NOTIFY_CHANNEL);
    assert_eq!(
        note.payload(),
        store.generation().await.expect("generation").to_string()
    );
    // A failed write sends nothing (rolled back with the transaction).
    assert!(store.add_user("r", "u", "p").await.is_err());
    store.add_secret("s").await.expect("add secret");
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("notification in time")
        .expect("notification");
    assert_eq!(
        note.payload(),
        store.generation().await.expect("generation").to_string()
    );
    store.close().await;
}

// ---------------------------------------------------------------------------
// Bad locations
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_and_unreachable_locations() {
    for bad in [
        "",
        "mysql://root:hunter2@db/x",
        "http://example.com/",
        "postgres:hunter2",
    ] {
        match Store::open(bad).await {
            Err(StoreError::BadUrl(msg)) => assert!(!msg.contains("hunter2"), "{msg}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // A closed port: refused at once, reported with the URL minus password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgres://turn:hunter2@127.0.0.1:{port}/turn");
    match Store::open(&url).await {
        Err(e @ StoreError::Unreachable(_)) => {
            let msg = e.to_string();
            assert!(msg.starts_with("store unreachable: "), "{msg}");
            assert!(
                msg.contains(&format!("postgres://turn:***@127.0.0.1:{port}/turn")),
                "{msg}"
            );
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // A SQLite file in a directory that does not exist.
    match Store::open("/nonexistent-ferroturn-dir/x/store.db").await {
        Err(StoreError::Unreachable(msg)) => {
            assert!(msg.contains("/nonexistent-ferroturn-dir"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The admin CLI, through the real binary
// ---------------------------------------------------------------------------

/// Runs and expects exit 0; returns stdout.
fn ok(args: &[&str], stdin: Option<&str>) -> String {
    ferroturn_cli(args, stdin).ok().stdout
}

/// Runs and expects exit 1 with `needle` in the `error: ...` line.
fn fails(args: &[&str], stdin: Option<&str>, needle: &str) -> String {
    let CliOutput { status, stderr, .. } = ferroturn_cli(args, stdin);
    assert_eq!(status.code(), Some(1), "ferroturn {args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    stderr
}

fn hmac_sha1_base64(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

async fn cli_round_trip(db: &str) {
    let run_ok = |args: &[&str], stdin: Option<&str>| ok(&[args, &["--db", db]].concat(), stdin);
    let run_fails = |args: &[&str], stdin: Option<&str>, needle: &str| {
        fails(&[args, &["--db", db]].concat(), stdin, needle)
    };

    // Users.
    run_ok(
        &["user", "add", "alice", "--password-stdin"],
        Some("alice-pw\n"),
    );
    run_ok(
        &[
            "user",
            "add",
            "bob",
            "--realm",
            "example.org",
            "--password-stdin",
        ],
        Some("bob pw\r\n"),
    );
    let generated = run_ok(&["user", "add", "carol", "--generate"], None);
    let generated = generated.trim();
    assert!(
        generated.len() >= 20 && generated.chars().all(|c| c.is_ascii_alphanumeric()),
        "{generated:?}"
    );
    run_fails(
        &["user", "add", "alice", "--password-stdin"],
        Some("x\n"),
        "already exists",
    );
    run_fails(
        &["user", "add", "dave"],
        None,
        "--password-stdin or --generate",
    );
    run_fails(
        &["user", "add", "dave", "--password-stdin"],
        Some(""),
        "no password on stdin",
    );

    let table = run_ok(&["user", "list"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REALM") && lines[0].contains("NAME") && lines[0].contains("CREATED"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[1].starts_with("example.org") && lines[1].contains("bob"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&run_ok(
        &["user", "list", "--realm", "ferroturn", "--json"],
        None,
    ))
    .expect("json");
    let names: Vec<&str> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alice", "carol"]);

    // The stored keys are those of the given passwords, line ending stripped.
    let store = Store::open(db).await.expect("open");
    let snap = store.snapshot().await.expect("snapshot");
    let keys = |realm: &str, name: &str| {
        snap.users
            .iter()
            .find(|u| u.realm == realm && u.name == name)
            .expect("user")
            .keys
            .clone()
    };
    assert_eq!(
        keys("ferroturn", "alice"),
        UserKeys::derive("alice", "ferroturn", "alice-pw")
    );
    assert_eq!(
        keys("example.org", "bob"),
        UserKeys::derive("bob", "example.org", "bob pw")
    );
    assert_eq!(
        keys("ferroturn", "carol"),
        UserKeys::derive("carol", "ferroturn", generated)
    );

    run_ok(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("alice-pw-2\n"),
    );
    run_fails(
        &["user", "passwd", "nobody", "--password-stdin"],
        Some("x\n"),
        "no such user",
    );
    let snap = store.snapshot().await.expect("snapshot");
    let alice = snap
        .users
        .iter()
        .find(|u| u.name == "alice")
        .expect("alice");
    assert_eq!(
        alice.keys,
        UserKeys::derive("alice", "ferroturn", "alice-pw-2")
    );

    run_ok(&["user", "remove", "carol"], None);
    run_fails(&["user", "remove", "carol"], None, "no such user");
    run_fails(&["user", "remove", "bob"], None, "no such user"); // wrong realm
    run_ok(&["user", "remove", "bob", "--realm", "example.org"], None);
    assert_eq!(store.list_users(None).await.expect("list").len(), 1);

    // Secrets.
    run_ok(&["secret", "add", "first-secret-value"], None);
    let generated_secret = run_ok(&["secret", "add", "--generate"], None);
    let generated_secret = generated_secret.trim().to_owned();
    assert!(generated_secret.len() >= 32, "{generated_secret:?}");
    run_ok(&["secret", "add"], Some("third-secret-from-stdin\n"));
    run_fails(
        &["secret", "add", "first-secret-value"],
        None,
        "already stored",
    );
    let masked = run_ok(&["secret", "list"], None);
    assert!(
        masked.contains("firs…") && masked.contains("thir…"),
        "{masked}"
    );
    assert!(
        !masked.contains("first-secret-value") && !masked.contains(&generated_secret),
        "{masked}"
    );
    let shown = run_ok(&["secret", "list", "--show"], None);
    assert!(
        shown.contains("first-secret-value") && shown.contains(&generated_secret),
        "{shown}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&run_ok(&["secret", "list", "--json"], None)).expect("json");
    let first_id = listed[0]["id"].as_i64().expect("id");
    run_ok(&["secret", "remove", &first_id.to_string()], None);
    run_ok(&["secret", "remove", "third-secret-from-stdin"], None);
    run_fails(
        &["secret", "remove", "third-secret-from-stdin"],
        None,
        "no such secret",
    );

    // Mint with the newest secret in the store (the generated one).
    let before = now();
    let minted: serde_json::Value = serde_json::from_str(&run_ok(
        &[
            "credential",
            "mint",
            "--user",
            "erin",
            "--ttl",
            "24h",
            "--url",
            "turn:turn.example.com:3478?transport=udp",
            "--url",
            "turns:turn.example.com:5349?transport=tcp",
        ],
        None,
    ))
    .expect("mint prints JSON");
    let username = minted["username"].as_str().expect("username");
    let (expiry, name) = username.split_once(':').expect("EXPIRY:NAME");
    assert_eq!(name, "erin");
    let expiry: u64 = expiry.parse().expect("expiry");
    assert!(
        (before + 86_400..=now() + 86_400).contains(&expiry),
        "{expiry}"
    );
    assert_eq!(
        minted["credential"].as_str().expect("credential"),
        hmac_sha1_base64(&generated_secret, username)
    );
    assert_eq!(
        minted["urls"],
        serde_json::json!([
            "turn:turn.example.com:3478?transport=udp",
            "turns:turn.example.com:5349?transport=tcp"
        ])
    );
    run_fails(
        &["credential", "mint", "--user", "erin", "--ttl", "soon"],
        None,
        "--ttl",
    );
    run_fails(
        &[
            "credential",
            "mint",
            "--user",
            "erin",
            "--ttl",
            "1h",
            "--url",
            "http://x",
        ],
        None,
        "--url",
    );

    // Revoke.
    run_ok(&["credential", "revoke", username], None);
    run_fails(
        &["credential", "revoke", "erin"],
        None,
        "not a TURN REST username",
    );
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(snap.revocations, [(username.to_owned(), expiry)]);
    store.close().await;
}

#[tokio::test]
async fn cli_round_trip_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli_round_trip(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn cli_round_trip_postgres() {
    cli_round_trip(&pg::fresh_database()).await;
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("turnserver.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn cli_uses_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("from-config.db");
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nrealm = \"conf.example\"\nlisten = [\"192.0.2.10:3479\"]\n[store]\nurl = {:?}\n",
            db.display().to_string()
        ),
    );
    let config = config.to_str().expect("utf-8 path");
    ok(
        &[
            "user",
            "add",
            "frank",
            "--config",
            config,
            "--password-stdin",
        ],
        Some("pw\n"),
    );
    let listed = ok(&["user", "list", "--config", config, "--json"], None);
    let json: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(json[0]["realm"], "conf.example", "realm from the config");
    assert!(db.exists(), "store created at store.url");

    // Mint defaults: newest store secret, URL from the first listen address.
    ok(&["secret", "add", "conf-secret", "--config", config], None);
    let minted: serde_json::Value = serde_json::from_str(&ok(
        &[
            "credential",
            "mint",
            "--user",
            "g",
            "--ttl",
            "90s",
            "--config",
            config,
        ],
        None,
    ))
    .expect("json");
    assert_eq!(
        minted["urls"],
        serde_json::json!(["turn:192.0.2.10:3479?transport=udp"])
    );
    let username = minted["username"].as_str().expect("username");
    assert_eq!(
        minted["credential"].as_str().expect("credential"),
        hmac_sha1_base64("conf-secret", username)
    );

    // --secret needs no store at all.
    let minted: serde_json::Value = serde_json::from_str(&ok(
        &[
            "credential",
            "mint",
            "--user",
            "h",
            "--ttl",
            "60",
            "--secret",
            "s3",
        ],
        None,
    ))
    .expect("json");
    assert_eq!(
        minted["urls"],
        serde_json::json!(["turn:127.0.0.1:3478?transport=udp"])
    );
    let username = minted["username"].as_str().expect("username");
    assert_eq!(
        minted["credential"].as_str().expect("credential"),
        hmac_sha1_base64("s3", username)
    );
}

#[test]
fn cli_errors_name_the_problem() {
    fails(
        &["user", "list"],
        None,
        "no store: pass --db URL or set store.url in --config FILE",
    );
    fails(&["secret", "list"], None, "no store");
    fails(&["credential", "revoke", "1:x"], None, "no store");
    fails(
        &["user", "list", "--db", "mysql://root:hunter2@db/x"],
        None,
        "bad store URL",
    );
    let err = fails(&["user", "list", "--db", "redis://h"], None, "redis");
    assert!(err.contains("unsupported scheme"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgres://turn:hunter2@127.0.0.1:{port}/turn");
    let err = fails(&["user", "list", "--db", &url], None, "store unreachable");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && !err.contains("hunter2"),
        "{err}"
    );
    fails(
        &["credential", "mint", "--user", "x", "--ttl", "1h"],
        None,
        "no REST secret",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "[store]\nurl = \"ftp://x\"\n");
    fails(
        &["user", "list", "--config", config.to_str().expect("utf-8")],
        None,
        "store.url",
    );
}

// ---------------------------------------------------------------------------
// Key-only users (imported from coturn)
// ---------------------------------------------------------------------------

/// A user stored by its MD5 key alone (coturn's `hmackey`): the snapshot
/// carries the key and no SHA-256 key, `list_users` marks it, the USERHASH is
/// there, a duplicate is refused, and setting a password stores both keys.
async fn key_only_users(url: &str) {
    let store = Store::open(url).await.expect("open");
    store
        .add_user("example.org", "bob", "pw")
        .await
        .expect("add");
    let key = UserKeys::derive("alice", "example.org", "secret").md5;
    store
        .add_user_md5_key("example.org", "alice", key)
        .await
        .expect("add key-only");
    assert!(matches!(
        store.add_user_md5_key("example.org", "alice", key).await,
        Err(StoreError::UserExists { .. })
    ));
    assert!(matches!(
        store.add_user_md5_key("", "alice", key).await,
        Err(StoreError::Invalid { what: "realm", .. })
    ));
    let listed: Vec<(String, bool)> = store
        .list_users(None)
        .await
        .expect("list")
        .into_iter()
        .map(|u| (u.name, u.key_only))
        .collect();
    assert_eq!(
        listed,
        [("alice".to_owned(), true), ("bob".to_owned(), false)]
    );
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(snap.users[0].name, "alice");
    assert_eq!(snap.users[0].keys, UserKeys::md5_only(key));
    assert_eq!(snap.users[0].userhash, userhash("alice", "example.org"));
    assert_eq!(
        snap.users[1].keys,
        UserKeys::derive("bob", "example.org", "pw")
    );
    // `user passwd` turns it into a full user.
    store
        .set_password("example.org", "alice", "secret")
        .await
        .expect("passwd");
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snap.users[0].keys,
        UserKeys::derive("alice", "example.org", "secret")
    );
    assert!(!store.list_users(None).await.expect("list")[0].key_only);
    store.close().await;
}

#[tokio::test]
async fn sqlite_key_only_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    key_only_users(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn postgres_key_only_users() {
    key_only_users(&pg::fresh_database()).await;
}
