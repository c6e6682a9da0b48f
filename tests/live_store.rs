//! A running server follows the credential store: users added, removed and
//! revoked with the real `ferroturn` CLI take effect without a restart, on SQLite
//! and on a real PostgreSQL (started by `tests/pg`), and two nodes sharing one
//! PostgreSQL both see a user added once and count one byte budget per user. A
//! database outage refuses new allocations but never stops relaying for
//! existing ones.

mod pg;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferroturn::client::{Client, Received};
use ferroturn::net::{start, Running};
use ferroturn::store::StoreLocation;
use ferroturn::turn::auth::rest_password;
use support::*;

/// How long a change may take to reach a running server (the issue's bound).
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

/// A node of a byte-budget cluster: `node` with `quota.max-bytes-per-user`
/// of [`BUDGET`] bytes a day.
fn budget_node(db: &str) -> Running {
    let mut opts = options("127.0.0.1:0");
    opts.users.clear();
    opts.store = Some(StoreLocation::parse(db).expect("store URL"));
    opts.core.max_bytes_per_user = BUDGET;
    start(opts).expect("server with a store starts")
}

const BUDGET: u64 = 10_000;

/// A UDP allocation of `user` with channel 0x4000 bound to `peer`.
async fn budget_allocation(srv: &Running, user: &str, peer: std::net::SocketAddr) -> Client {
    let mut c = turn_client_as(srv, Transport::Udp, user, &format!("{user}-pw")).await;
    c.allocate().await.unwrap();
    c.channel_bind(0x4000, peer).await.unwrap();
    c
}

/// A 1000-byte ChannelData round trip through the echo peer (2000 bytes
/// relayed): whether it came back within half a second.
async fn budget_round_trip(c: &mut Client) -> bool {
    c.send_channel_data(0x4000, &[7; 1000]).await.unwrap();
    matches!(
        c.recv_data(Duration::from_millis(500)).await,
        Ok(Received::Channel { .. })
    )
}

/// Whether an Allocate of `user` on `srv` gets 486; an allocation made
/// instead is deleted again.
async fn refuses_with_486(srv: &Running, user: &str) -> bool {
    let mut c = turn_client_as(srv, Transport::Udp, user, &format!("{user}-pw")).await;
    match c.allocate().await {
        Ok(_) => {
            c.refresh(0).await.unwrap();
            false
        }
        Err(e) => e.code() == Some(486),
    }
}

/// Nodes sharing one PostgreSQL count one byte budget per user: alice uses
/// hers up on node A, and node B, where she relayed nothing, then stops
/// relaying for her and refuses her Allocates with 486, while bob goes on; a
/// node started afterwards knows it from the store at once. The store's row
/// holds what both relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_postgres_count_one_byte_budget() {
    let db = pg::fresh_database();
    cli(&db, &["user", "list"], None).await; // creates the schema
    add_user(&db, "alice", "alice-pw").await;
    add_user(&db, "bob", "bob-pw").await;
    let (a, b) = (budget_node(&db), budget_node(&db));
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let mut alice_b = budget_allocation(&b, "alice", peer).await;

    // On A alone, the budget runs out after 5 round trips, as on one node.
    let mut alice_a = budget_allocation(&a, "alice", peer).await;
    let mut back = 0;
    while back < 8 && budget_round_trip(&mut alice_a).await {
        back += 1;
    }
    assert_eq!(back, 5, "round trips on node A");

    // B learns it from the store within a poll or two: its Allocates for
    // alice get 486 (tried without relaying, so that B's own count stays 0),
    // and her allocation there relays no more.
    within_effect("node B refuses alice", || refuses_with_486(&b, "alice")).await;
    assert!(
        !budget_round_trip(&mut alice_b).await,
        "node B relayed for alice"
    );
    let mut bob = budget_allocation(&b, "bob", peer).await;
    assert!(
        budget_round_trip(&mut bob).await,
        "bob has a budget of his own"
    );

    // A node started now reads the period's counts on its first visit.
    let c = budget_node(&db);
    within_effect("node C refuses alice", || refuses_with_486(&c, "alice")).await;

    // The store holds alice's 10,000 bytes.
    let store = ferroturn::store::Store::open(&db).await.unwrap();
    let day = u64::try_from(ferroturn::store::unix_now()).unwrap() / 86_400;
    let rows = store.byte_usage_since(86_400, day, 0).await.unwrap();
    let alice = rows
        .iter()
        .find(|(u, _)| u == "alice")
        .expect("alice's row")
        .1;
    assert!(alice >= BUDGET, "alice's row: {alice}");
    store.close().await;
    for srv in [a, b, c] {
        srv.stop().unwrap();
    }
}

/// After a write to `store` committed, how long until `srv` reloaded its
/// snapshot (polled every millisecond, for at most 5 s).
async fn reload_latency(srv: &Running, store: &ferroturn::store::Store, name: &str) -> Duration {
    let before = srv.credentials.generation();
    store.add_user(REALM, name, "pw").await.unwrap();
    let committed = Instant::now();
    let g = store.generation().await.unwrap();
    assert!(g > before);
    while srv.credentials.generation() < g {
        assert!(
            committed.elapsed() < Duration::from_secs(5),
            "no reload of {name}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    committed.elapsed()
}

/// Reloads counted as woken by a notification.
fn notified(srv: &Running) -> u64 {
    srv.credentials.reloads()[1].1
}

/// Changes are pushed: a write on PostgreSQL reaches a running node through
/// LISTEN/NOTIFY, not the 500 ms poll (the figures are printed: the issue asks
/// for 200 ms). When the notification connection is killed, the poller reads
/// the store and listens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_are_pushed_and_polling_covers_a_lost_listener() {
    let db = pg::fresh_database();
    let store = ferroturn::store::Store::open(&db).await.unwrap();
    let srv = node(&db);
    // The listener opens after the first poll.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut times = Vec::new();
    for i in 0..20 {
        times.push(reload_latency(&srv, &store, &format!("pushed{i}")).await);
    }
    times.sort();
    println!(
        "store change to reload, 20 writes: median {:?}, max {:?}; {} of 20 by notification",
        times[10],
        times[19],
        notified(&srv)
    );
    // A poll may catch a change first now and then; most must be pushed.
    assert!(notified(&srv) >= 15, "{:?}", srv.credentials.reloads());
    let (code, text) = http_get(srv.metrics.unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains(r#"ferroturn_credential_reloads_total{trigger="notify"}"#),
        "{text}"
    );

    // Kill the listening connection: the poller notices, reads the store at
    // once (whatever was notified meanwhile is lost) and listens again, so
    // later changes are pushed as before.
    let server = pg::server();
    let out = Command::new(server.bindir().join("psql"))
        .args([
            &db,
            "-tAc",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'",
        ])
        .output()
        .expect("psql runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "t",
        "one listener killed"
    );
    let pushed = notified(&srv);
    let took = reload_latency(&srv, &store, "after_kill").await;
    println!("first change after the listener was killed: {took:?}");
    let mut n = 0;
    within_effect("notifications back", async || {
        n += 1;
        reload_latency(&srv, &store, &format!("back{n}")).await;
        notified(&srv) > pushed
    })
    .await;
    store.close().await;
    srv.stop().unwrap();
}
