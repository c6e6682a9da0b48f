//! Nodes that meet in one PostgreSQL store (`[cluster]`), as real processes
//! on loopback with a throwaway PostgreSQL (`tests/pg`): the node registry and
//! `ferroturn cluster status`, a node killed with SIGKILL going from live to
//! gone and never being a redirect target, and new Allocates redirected by load
//! and by drain to other nodes, followed by the in-repo client.

mod pg;
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferroturn::client::Client;
use serde_json::Value;
use support::*;

const PASSWORD: &str = "alice-pw";
/// `cluster.node-timeout` of the test nodes (seconds).
const TIMEOUT: u64 = 2;
/// How long a killed node may take to show as gone: the timeout, a heartbeat
/// and slack for a loaded machine.
const GONE: Duration = Duration::from_secs(10);
/// Long enough for every node to have written and read the registry again
/// (it does every second).
const VIEW_REFRESH: Duration = Duration::from_millis(2500);

struct Node {
    _dir: tempfile::TempDir,
    bin: Binary,
}

impl Node {
    fn start(db: &str, id: &str, extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config: PathBuf = dir.path().join("turnserver.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nrealm = \"{REALM}\"\n\n[peers]\nallow = [\"127.0.0.0/8\"]\n\n\
                 [store]\nurl = \"{db}\"\n\n[cluster]\nnode-id = \"{id}\"\n\
                 node-timeout = {TIMEOUT}\n{extra}\n"
            ),
        )
        .unwrap();
        let bin = spawn_binary(&[
            "--config",
            config.to_str().unwrap(),
            "--admin-socket",
            "off",
        ]);
        Node { _dir: dir, bin }
    }
}

/// `ferroturn cluster status --json` on `db`: node ID → its JSON line.
fn status(db: &str) -> Vec<Value> {
    let timeout = TIMEOUT.to_string();
    let args = [
        "cluster",
        "status",
        "--json",
        "--timeout",
        &timeout,
        "--db",
        db,
    ];
    let out = ferroturn_cli(&args, None).ok();
    serde_json::from_str(&out.stdout).unwrap()
}

/// `ferroturn cluster status` on `db`, as a table.
fn status_table(db: &str) -> String {
    let timeout = TIMEOUT.to_string();
    let args = ["cluster", "status", "--timeout", &timeout, "--db", db];
    ferroturn_cli(&args, None).ok().stdout
}

fn state_of(nodes: &[Value], id: &str) -> String {
    nodes
        .iter()
        .find(|n| n["node_id"] == id)
        .map_or("absent".into(), |n| n["state"].as_str().unwrap().to_owned())
}

fn setup() -> String {
    let db = pg::fresh_database();
    let args = [
        "user",
        "add",
        "alice",
        "--realm",
        REALM,
        "--password-stdin",
        "--db",
        &db,
    ];
    ferroturn_cli(&args, Some(&format!("{PASSWORD}\n"))).ok();
    db
}

async fn alice(addr: SocketAddr) -> Client {
    Client::udp(addr)
        .await
        .unwrap()
        .credentials("alice", PASSWORD)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_register_show_their_load_and_a_killed_one_is_gone() {
    let db = setup();
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(&db, id, ""))
        .collect();
    let mut c = alice(nodes[0].bin.udp).await;
    c.allocate().await.unwrap();

    let live = eventually(WAIT, "three live nodes, n1 with its allocation", || {
        let s = status(&db);
        let n1_allocations = s
            .iter()
            .find(|n| n["node_id"] == "n1")
            .map(|n| json_u64(n, "allocations"));
        if s.len() == 3 && s.iter().all(|n| n["state"] == "live") && n1_allocations == Some(1) {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    // Each advertises the UDP address it really listens on.
    for (node, id) in nodes.iter().zip(["n1", "n2", "n3"]) {
        let row = live.iter().find(|n| n["node_id"] == id).unwrap();
        let udp = format!("{}", node.bin.udp);
        assert!(
            row["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["transport"] == "udp" && a["address"] == udp.as_str()),
            "{row}"
        );
    }
    let table = status_table(&db);
    println!("{table}");
    assert_eq!(table.matches(" live ").count(), 3, "{table}");

    // SIGKILL: no goodbye, so the row stays until its heartbeat is too old.
    nodes[2].bin.signal(libc::SIGKILL);
    let s = eventually(GONE, "n3 gone", || {
        let s = status(&db);
        (state_of(&s, "n3") == "gone")
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    });
    assert_eq!(state_of(&s, "n1"), "live");
    assert_eq!(state_of(&s, "n2"), "live");
    let table = status_table(&db);
    println!("{table}");
    assert_eq!(table.matches(" live ").count(), 2, "{table}");

    // A clean stop leaves the registry at once.
    nodes[1].bin.signal(libc::SIGTERM);
    nodes[1].bin.wait_exit(WAIT).expect("n2 stops");
    eventually(WAIT, "n2 left", || {
        let s = status(&db);
        (state_of(&s, "n2") == "absent")
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
}

/// Allocates from a fresh client of `node`, following redirects; returns the
/// node it ended on.
async fn allocate_following(node: SocketAddr) -> (Client, SocketAddr) {
    let mut c = alice(node).await;
    c.allocate_following(3).await.unwrap();
    let server = c.server();
    (c, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_clients_are_redirected_by_load_and_by_drain_never_to_a_gone_node() {
    let db = setup();
    let n1 = Node::start(&db, "n1", "redirect-above-allocations = 1\n");
    let n2 = Node::start(&db, "n2", "");
    let n3 = Node::start(&db, "n3", "");
    let n4 = Node::start(&db, "n4", "");
    let (a1, a2, a3) = (n1.bin.udp, n2.bin.udp, n3.bin.udp);
    let mut keep = Vec::new();

    // n1 takes one allocation, then is at its threshold: once it has read the
    // registry, a new client is sent elsewhere.
    let mut first = alice(a1).await;
    first.allocate().await.unwrap();
    // n4 dies before anyone could be sent to it, and must never be chosen.
    eventually(WAIT, "four live nodes", || {
        let s = status(&db);
        (s.iter().filter(|n| n["state"] == "live").count() == 4)
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
    n4.bin.signal(libc::SIGKILL);
    eventually(GONE, "n4 gone", || {
        let s = status(&db);
        (state_of(&s, "n4") == "gone")
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
    // One more heartbeat of n1, so that its view no longer has n4.
    tokio::time::sleep(VIEW_REFRESH).await;

    let mut c = alice(a1).await;
    let e = c.allocate().await.unwrap_err();
    assert_eq!(e.code(), Some(300), "{e}");
    let alt = e.alternate().unwrap();
    assert!(alt == a2 || alt == a3, "redirected to {alt}, not n2 or n3");
    let mut landed = HashSet::new();
    for _ in 0..6 {
        let (c, server) = allocate_following(a1).await;
        assert!(server == a2 || server == a3, "{server}");
        landed.insert(server);
        keep.push(c);
    }
    assert_eq!(
        landed.len(),
        2,
        "new clients spread over n2 and n3: {landed:?}"
    );
    wait_for_metrics(
        n1.bin.metrics.unwrap(),
        &[r#"ferroturn_redirects_total{reason="load"} 7"#],
    )
    .await;

    // n2 drains (SIGUSR1): its clients stay, new ones go to n3, the least
    // loaded node that is neither draining nor gone (n1 is above its threshold
    // but live: a client sent there would be sent on).
    n2.bin.signal(libc::SIGUSR1);
    eventually(WAIT, "n2 draining", || {
        let s = status(&db);
        (state_of(&s, "n2") == "draining")
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
    // One more heartbeat of n1 and n3, so that they no longer send anyone to n2.
    tokio::time::sleep(VIEW_REFRESH).await;
    for _ in 0..2 {
        let (c, server) = allocate_following(a2).await;
        assert!(server != a2, "a draining node allocated");
        keep.push(c);
    }
    // At least the two first Allocates (a client sent on from n1 to a node
    // whose view was a heartbeat old could come back once more).
    let drained = eventually_async(WAIT, "n2's drain redirects", async || {
        let (_, text) = http_get(n2.bin.metrics.unwrap(), "/metrics").await;
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"ferroturn_redirects_total{reason="drain"} "#))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if n >= 2 {
            Ok(n)
        } else {
            Err(n)
        }
    })
    .await;
    println!("n2 redirected {drained} Allocates while draining");
    drop(first);
}

#[test]
fn cluster_status_needs_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let out = ferroturn_cli(&["cluster", "status", "--db", db.to_str().unwrap()], None);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("PostgreSQL"), "{}", out.stderr);
}

/// `quota.max-allocations-per-user` counts a user's allocations on every live
/// node: with a limit of 3 and attempts alternating between two nodes (one
/// heartbeat apart, the documented bound), exactly 3 are granted; when the
/// node holding two of them is killed, they stop counting once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_allocation_quota_holds_across_nodes() {
    let db = setup();
    let quota = "\n[quota]\nmax-allocations-per-user = 3\n";
    let a = Node::start(&db, "qa", quota);
    let b = Node::start(&db, "qb", quota);
    let mut held = Vec::new();
    let mut granted = Vec::new();
    for (i, node) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        tokio::time::sleep(VIEW_REFRESH).await;
        let mut c = alice(node.bin.udp).await;
        match c.allocate().await {
            Ok(_) => {
                granted.push(i);
                held.push(c);
            }
            Err(e) => assert_eq!(e.code(), Some(486), "attempt {i}: {e}"),
        }
    }
    assert_eq!(granted, [0, 1, 2], "exactly 3 of 5 granted");

    // qa (holding two) dies: once it is gone, qb may grant two more.
    a.bin.signal(libc::SIGKILL);
    eventually(GONE, "qa gone", || {
        let s = status(&db);
        (state_of(&s, "qa") == "gone")
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
    tokio::time::sleep(VIEW_REFRESH).await;
    let mut more = 0;
    for _ in 0..3 {
        let mut c = alice(b.bin.udp).await;
        if c.allocate().await.is_ok() {
            more += 1;
            held.push(c);
        }
    }
    assert_eq!(more, 2, "qb's own one and two more");
}
