//! A running server follows the credential store: users added, removed and
//! revoked with the real `ferroturn` CLI take effect without a restart, on SQLite
//! and on a real PostgreSQL (started by `tests/pg`), and two nodes sharing one
//! PostgreSQL both see a user added once. A database outage refuses new
//! allocations but never stops relaying for existing ones.

mod pg;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferroturn::client::{Client, Received};
use ferroturn::net::{start, Running};
use ferroturn::store::StoreLocation;
use ferroturn::turn::auth::rest_password;
use support::*;

/// How long a change may take to reach a running server (the bound).
const EFFECT: Duration = Duration::from_secs(2);

/// Runs `ferroturn ARGS --db DB`, which must succeed.
async fn cli(db: &str, args: &[&str], stdin: Option<&str>) {
    ferroturn_cli_async(&[args, &["--db", db]].concat(), stdin)
        .await
        .ok();
}

fn node(db: &str) -> Running {
    let mut opts = options("127.0.0.1:0");
    opts.users.clear();
    opts.store = Some(StoreLocation::parse(db).expect("store URL"));
    start(opts).expect("server with a store starts")
}

/// Retries `attempt` until it returns true or `EFFECT` (plus slack for a loaded
/// machine) runs out; returns how long it took.
async fn within_effect(what: &str, mut attempt: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    let within = EFFECT + Duration::from_secs(3);
    eventually_async(within, what, async || match attempt().await {
        true => Ok(()),
        false => Err("no effect yet"),
    })
    .await;
    started.elapsed()
}

/// Refreshes until the server answers 401 (bounded like `within_effect`).
async fn refused_within_effect(c: &mut Client, what: &str) -> Duration {
    within_effect(what, async || {
        c.refresh(600).await.map_err(|e| e.code()) == Err(Some(401))
    })
    .await
}

/// `ferroturn user add NAME --realm REALM --password-stdin` on `db`.
async fn add_user(db: &str, name: &str, password: &str) {
    let args = ["user", "add", name, "--realm", REALM, "--password-stdin"];
    cli(db, &args, Some(&format!("{password}\n"))).await;
}

async fn allocates(srv: &Running, user: &str, password: &str) -> bool {
    let mut c = turn_client_as(srv, Transport::Udp, user, password).await;
    c.allocate().await.is_ok()
}

async fn live_changes(db: &str) {
    let srv = node(db);
    let peer = echo_peer("127.0.0.1:0", 100).await;

    // A user added by the CLI to a running server can allocate.
    add_user(db, "dave", "dave-pw").await;
    let took = within_effect("user add", || allocates(&srv, "dave", "dave-pw")).await;
    println!("user add took effect in {took:?}");
    let mut dave = turn_client_as(&srv, Transport::Udp, "dave", "dave-pw").await;
    dave.allocate().await.unwrap();
    dave.channel_bind(0x4000, peer).await.unwrap();

    // A changed password: the new one works for new allocations, the old one no
    // longer does, and the allocation made with it goes on (only its next request
    // must use the new password).
    cli(
        db,
        &[
            "user",
            "passwd",
            "dave",
            "--realm",
            REALM,
            "--password-stdin",
        ],
        Some("dave-pw-2\n"),
    )
    .await;
    within_effect("user passwd", || allocates(&srv, "dave", "dave-pw-2")).await;
    assert!(
        !allocates(&srv, "dave", "dave-pw").await,
        "the old password still works"
    );
    dave.send_channel_data(0x4000, b"after passwd")
        .await
        .unwrap();
    assert!(matches!(
        dave.recv_data(WAIT).await.unwrap(),
        Received::Channel { .. }
    ));
    // Same 5-tuple, new password: the allocation refreshes.
    let mut dave = dave.credentials("dave", "dave-pw-2");
    assert_eq!(dave.refresh(600).await.unwrap(), 600);

    // `user remove` makes the next Refresh fail with 401, and ends the allocation.
    cli(db, &["user", "remove", "dave", "--realm", REALM], None).await;
    let took = refused_within_effect(&mut dave, "user remove").await;
    println!("user remove took effect in {took:?}");
    dave.send_channel_data(0x4000, b"after removal")
        .await
        .unwrap();
    assert!(
        dave.recv_data(Duration::from_millis(300)).await.is_err(),
        "a removed user still relays"
    );

    // Revocation ends a live ephemeral (REST) credential.
    cli(db, &["secret", "add", "shared-secret-1"], None).await;
    let username = format!("{}:erin", ferroturn::store::unix_now() + 3600);
    let password = rest_password(b"shared-secret-1", &username);
    within_effect("secret add", || allocates(&srv, &username, &password)).await;
    let mut erin = turn_client_as(&srv, Transport::Udp, &username, &password).await;
    erin.allocate().await.unwrap();
    erin.channel_bind(0x4001, peer).await.unwrap();
    erin.send_channel_data(0x4001, b"before").await.unwrap();
    assert!(matches!(
        erin.recv_data(WAIT).await.unwrap(),
        Received::Channel { .. }
    ));
    cli(db, &["credential", "revoke", &username], None).await;
    let took = refused_within_effect(&mut erin, "credential revoke").await;
    println!("credential revoke took effect in {took:?}");
    erin.send_channel_data(0x4001, b"after").await.unwrap();
    assert!(
        erin.recv_data(Duration::from_millis(300)).await.is_err(),
        "a revoked credential still relays"
    );
    srv.stop().unwrap();
}

#[tokio::test]
async fn sqlite_changes_reach_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("users.db").display());
    live_changes(&db).await;
}

#[tokio::test]
async fn postgres_changes_reach_a_running_server() {
    live_changes(&pg::fresh_database()).await;
}

#[tokio::test]
async fn two_nodes_on_one_postgres_both_accept_a_user_added_once() {
    let db = pg::fresh_database();
    cli(&db, &["user", "list"], None).await; // creates the schema
    let (a, b) = (node(&db), node(&db));
    add_user(&db, "frank", "frank-pw").await;
    within_effect("node A", || allocates(&a, "frank", "frank-pw")).await;
    within_effect("node B", || allocates(&b, "frank", "frank-pw")).await;
    a.stop().unwrap();
    b.stop().unwrap();
}

/// The database disappears under a running server: new allocations are refused
/// (500, logged), while an existing allocation keeps refreshing and relaying.
#[tokio::test]
async fn postgres_outage_keeps_existing_allocations_relaying() {
    let db = pg::fresh_database();
    let srv = node(&db);
    add_user(&db, "gina", "gina-pw").await;
    within_effect("user add", || allocates(&srv, "gina", "gina-pw")).await;
    let peer = echo_peer("127.0.0.1:0", 100).await;
    let mut gina = turn_client_as(&srv, Transport::Udp, "gina", "gina-pw").await;
    gina.allocate().await.unwrap();
    gina.channel_bind(0x4000, peer).await.unwrap();

    // Drop the database out from under the server (FORCE ends its connections).
    let name = db.rsplit('/').next().unwrap().to_owned();
    let server = pg::server();
    let status = Command::new(server.bindir().join("psql"))
        .args([
            &server.url("postgres"),
            "-c",
            &format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("psql runs");
    assert!(status.success(), "could not drop the test database");

    within_effect("outage noticed", || async { !srv.credentials.is_healthy() }).await;
    let mut newcomer = turn_client_as(&srv, Transport::Udp, "gina", "gina-pw").await;
    assert_eq!(newcomer.allocate().await.unwrap_err().code(), Some(500));
    assert_eq!(gina.refresh(600).await.unwrap(), 600);
    for i in 0..10u8 {
        gina.send_channel_data(0x4000, &[i; 40]).await.unwrap();
        assert_eq!(
            gina.recv_data(WAIT).await.unwrap(),
            Received::Channel {
                channel: 0x4000,
                data: vec![i; 40]
            }
        );
    }
    srv.stop().unwrap();
}
