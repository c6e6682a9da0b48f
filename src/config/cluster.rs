//! `[cluster]`: nodes that share a PostgreSQL store register there, and a
//! node above its load threshold sends new clients to the least loaded other
//! node (see `turn::redirect` and `ops::cluster`).

use std::time::Duration;

use serde::Deserialize;

use super::validate::{int_in, invalid, Result};

/// `[cluster]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCluster {
    /// `node-id`: this node's name in the registry; empty = the host name.
    pub node_id: String,
    /// `node-timeout`: seconds without a heartbeat after which a node is gone.
    pub node_timeout: i64,
    /// `redirect-above-allocations`: new Allocates go elsewhere while this
    /// node holds at least this many allocations; 0 = never.
    pub redirect_above_allocations: i64,
    /// `redirect-above-mbps`: ... while it relays more than this many
    /// Mbit/s (both directions summed); 0 = never.
    pub redirect_above_mbps: i64,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            node_id: String::new(),
            node_timeout: 5,
            redirect_above_allocations: 0,
            redirect_above_mbps: 0,
        }
    }
}

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's registry name; empty = the host name (resolved at start).
    pub node_id: String,
    pub node_timeout: Duration,
    /// 0 = never.
    pub redirect_above_allocations: u32,
    /// Relayed bits per second, both directions; 0 = never.
    pub redirect_above_bps: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        validate_cluster(&RawCluster::default()).expect("cluster defaults are valid")
    }
}

/// The longest `node-id`, in bytes.
const MAX_NODE_ID: usize = 64;

pub(super) fn validate_cluster(c: &RawCluster) -> Result<ClusterConfig> {
    if c.node_id.len() > MAX_NODE_ID
        || !c
            .node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return invalid(
            "cluster.node-id",
            format!("must be at most {MAX_NODE_ID} letters, digits, '-', '.' or '_'"),
        );
    }
    let mbps: u64 = int_in(
        "cluster.redirect-above-mbps",
        c.redirect_above_mbps,
        0,
        10_000_000,
    )?;
    Ok(ClusterConfig {
        node_id: c.node_id.clone(),
        node_timeout: Duration::from_secs(int_in("cluster.node-timeout", c.node_timeout, 2, 3600)?),
        redirect_above_allocations: int_in(
            "cluster.redirect-above-allocations",
            c.redirect_above_allocations,
            0,
            i64::from(u32::MAX),
        )?,
        redirect_above_bps: mbps * 1_000_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_bounds() {
        let ok = |c: RawCluster| validate_cluster(&c).unwrap();
        let err = |c: RawCluster| validate_cluster(&c).unwrap_err().to_string();
        assert_eq!(
            ok(RawCluster::default()).node_timeout,
            Duration::from_secs(5)
        );
        let c = ok(RawCluster {
            node_id: "turn-1.eu_west".into(),
            redirect_above_mbps: 800,
            ..Default::default()
        });
        assert_eq!(c.redirect_above_bps, 800_000_000);
        for bad in ["a b", "ü", &"x".repeat(65)] {
            let e = err(RawCluster {
                node_id: bad.into(),
                ..Default::default()
            });
            assert!(e.contains("cluster.node-id"), "{e}");
        }
        let e = err(RawCluster {
            node_timeout: 1,
            ..Default::default()
        });
        assert!(e.contains("cluster.node-timeout"), "{e}");
        let e = err(RawCluster {
            redirect_above_allocations: -1,
            ..Default::default()
        });
        assert!(e.contains("cluster.redirect-above-allocations"), "{e}");
    }
}
