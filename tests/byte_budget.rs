//! Per-user byte budgets over the wire (`quota.max-bytes-per-user`), through
//! the real binary: one 10 kB budget shared by a user's UDP and TCP
//! allocations, relaying cut exactly when it is used up (counted as drop
//! reason `byte_budget`), a new Allocate refused with 486 (quota kind
//! `bytes`), other users unaffected, the state in `ferroturn sessions list`,
//! the metric and usage records, and a reload raising the budget resuming it.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferroturn::client::{Client, Received};
use serde_json::Value;
use support::*;

const PASSWORD: &str = "budget-pw";
const BUDGET: u64 = 10_000;
/// How long a datagram that does not come back is waited for.
const LOST: Duration = Duration::from_millis(500);

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, budget: u64) {
        let text = format!(
            "[server]\nrealm = \"budget.test\"\nthreads = 2\n\n\
             [peers]\nallow = [\"127.0.0.0/8\"]\n\n\
             [quota]\nmax-bytes-per-user = {budget}\nbytes-period = \"day\"\n\n\
             [admin]\nsocket = \"{}\"\n\n[usage]\nfile = \"{}\"\n\n\
             [auth.users]\nalice = \"{PASSWORD}\"\nbob = \"{PASSWORD}\"\n",
            self.path("admin.sock").display(),
            self.path("usage.jsonl").display(),
        );
        std::fs::write(self.path("turnserver.toml"), text).unwrap();
    }

    fn ctl(&self, args: &[&str]) -> CliOutput {
        let socket = self.path("admin.sock");
        let args = [args, &["--socket", socket.to_str().unwrap()]].concat();
        ferroturn_cli(&args, None)
    }

    fn sessions(&self) -> Vec<Value> {
        let out = self.ctl(&["sessions", "list", "--json"]).ok();
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

async fn allocation(b: &Binary, transport: Transport, user: &str, peer: SocketAddr) -> Client {
    let mut c = turn_client_as(b, transport, user, PASSWORD).await;
    c.allocate().await.unwrap();
    c.channel_bind(0x4000, peer).await.unwrap();
    c
}

/// A 1000-byte ChannelData round trip through the echo peer: whether it came
/// back (2000 bytes relayed: to the peer and back).
async fn round_trip(c: &mut Client, fill: u8) -> bool {
    let payload = [fill; 1000];
    c.send_channel_data(0x4000, &payload).await.unwrap();
    match c.recv_data(LOST).await {
        Ok(Received::Channel { data, .. }) => {
            assert_eq!(data, payload);
            true
        }
        Ok(other) => panic!("{other:?}"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_cuts_relaying_and_allocates_until_a_reload_raises_it() {
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
    };
    s.write(BUDGET);
    let config = s.path("turnserver.toml");
    let b = spawn_binary(&["--config", config.to_str().unwrap()]);
    let metrics = b.metrics.unwrap();
    let peer = echo_peer("127.0.0.1:0", 1000).await;
    let mut udp = allocation(&b, Transport::Udp, "alice", peer).await;
    let mut tcp = allocation(&b, Transport::Tcp, "alice", peer).await;

    // Alternating between the two allocations: 5 round trips of 2,000 bytes
    // use the 10,000 up (the fifth's way back starts at 9,000, under it),
    // the sixth is cut on its way to the peer.
    let mut back = 0;
    for i in 0..8u8 {
        let c = if i % 2 == 0 { &mut udp } else { &mut tcp };
        if !round_trip(c, i).await {
            break;
        }
        back += 1;
    }
    assert_eq!(back, 5, "round trips within the budget");
    // Cut for good, on both allocations.
    assert!(!round_trip(&mut udp, 0xAA).await);
    assert!(!round_trip(&mut tcp, 0xBB).await);
    // A new Allocate of alice: 486.
    let mut third = turn_client_as(&b, Transport::Udp, "alice", PASSWORD).await;
    assert_eq!(third.allocate().await.unwrap_err().code(), Some(486));
    // Bob has a budget of his own.
    let mut bob = allocation(&b, Transport::Udp, "bob", peer).await;
    assert!(round_trip(&mut bob, 1).await);
    wait_for_metrics(
        metrics,
        &[
            r#"ferroturn_dropped_packets_total{reason="byte_budget"} 3"#,
            r#"ferroturn_quota_rejections_total{kind="bytes"} 1"#,
            "ferroturn_byte_budget_exhausted_users 1",
        ],
    )
    .await;

    // `sessions list`: alice's allocations show her used-up budget, bob's his.
    let list = s.sessions();
    assert_eq!(list.len(), 3, "{list:?}");
    for v in &list {
        let used = if v["user"] == "alice" { BUDGET } else { 2000 };
        assert_eq!(json_u64(v, "budget_used"), used, "{v}");
        assert_eq!(json_u64(v, "budget_limit"), BUDGET, "{v}");
    }
    let table = s.ctl(&["sessions", "list"]).ok().stdout;
    assert!(table.contains("BUDGET"), "{table}");
    assert_eq!(
        table.matches("10000B/10000B EXHAUSTED").count(),
        2,
        "{table}"
    );
    assert!(table.contains("2000B/10000B"), "{table}");

    // Raised by a reload: the same allocations relay again, new ones are made.
    s.write(3 * BUDGET);
    s.ctl(&["reload"]).ok();
    assert!(round_trip(&mut udp, 2).await);
    assert!(round_trip(&mut tcp, 3).await);
    third.allocate().await.unwrap();
    wait_for_metrics(metrics, &["ferroturn_byte_budget_exhausted_users 0"]).await;

    // The usage record of a closed allocation carries the user's period total
    // (5 round trips and the 2 after the reload) and the budget.
    third.refresh(0).await.unwrap();
    let record = eventually(WAIT, "a usage record", || {
        let text = std::fs::read_to_string(s.path("usage.jsonl")).unwrap_or_default();
        text.lines()
            .next()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .ok_or(text)
    });
    assert_eq!(record["user"], "alice");
    assert_eq!(json_u64(&record, "user_period_bytes"), 14_000);
    assert_eq!(json_u64(&record, "user_byte_budget"), 3 * BUDGET);
}
