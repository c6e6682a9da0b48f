//! `ferroturn cluster status`: the node registry of a PostgreSQL store (see
//! `ops::cluster`), read directly from the store like the credential
//! commands, so it works from any host that reaches the database.

use serde::Serialize;

use super::credentials::{
    block_on, open, print_json, print_table, usage, CredentialsError, Result, Target,
};
use crate::cli::{ClusterCommand, ClusterStatusArgs};
use crate::store::{NodeStatus, StoreLocation};

/// `ferroturn cluster ...`
pub fn run(command: &ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status(args) => status(args),
    }
}

/// A node's state for an operator.
fn state(n: &NodeStatus, timeout_ms: u128) -> &'static str {
    if u128::from(n.heartbeat_age_ms.unsigned_abs()) >= timeout_ms {
        "gone"
    } else if n.beat.draining {
        "draining"
    } else {
        "live"
    }
}

/// One node of `cluster status --json`.
#[derive(Serialize)]
struct NodeJson<'a> {
    state: &'static str,
    #[serde(flatten)]
    node: &'a NodeStatus,
}

fn status(args: &ClusterStatusArgs) -> Result<()> {
    let target = Target::resolve(&args.store)?;
    let location = target.require_location()?;
    if !matches!(location, StoreLocation::Postgres(_)) {
        return usage("the node registry is kept only in a PostgreSQL store (--db postgres://...)");
    }
    let timeout = args.timeout.map_or_else(
        || {
            target
                .config
                .as_ref()
                .map_or(5_000, |c| c.cluster.node_timeout.as_millis())
        },
        |s| u128::from(s) * 1000,
    );
    let nodes = block_on(async {
        let store = open(location).await?;
        let nodes = store.nodes().await;
        store.close().await;
        Ok::<_, CredentialsError>(nodes?)
    })??;
    if args.json {
        let rows: Vec<NodeJson> = nodes
            .iter()
            .map(|n| NodeJson {
                state: state(n, timeout),
                node: n,
            })
            .collect();
        return print_json(&rows);
    }
    let rows: Vec<[String; 8]> = nodes
        .iter()
        .map(|n| {
            let b = &n.beat;
            let addresses: Vec<String> = b
                .addresses
                .iter()
                .map(|a| format!("{}://{}", a.transport, a.address))
                .collect();
            [
                b.node_id.clone(),
                state(n, timeout).into(),
                format!("{:.1}s", n.heartbeat_age_ms as f64 / 1000.0),
                b.allocations.to_string(),
                mbps(b.to_peer_bps),
                mbps(b.to_client_bps),
                format!("{:.1}%", b.cpu_percent),
                addresses.join(" "),
            ]
        })
        .collect();
    print_table(
        [
            "NODE",
            "STATE",
            "HEARTBEAT",
            "ALLOCATIONS",
            "TO PEERS",
            "TO CLIENTS",
            "CPU",
            "ADDRESSES",
        ],
        &rows,
    )
}

fn mbps(bps: u64) -> String {
    format!("{:.2} Mbit/s", bps as f64 / 1e6)
}
