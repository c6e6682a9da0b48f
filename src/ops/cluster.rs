//! This node in the registry of a PostgreSQL store (`[cluster]`): about once
//! a second the store poller writes the node's row (addresses, drain state,
//! load) and reads everyone's, handing the shards the live nodes they may
//! redirect new clients to (`turn::cluster::ClusterView`). The data path
//! never waits on it: a slow or absent database only makes the view older.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::{Health, ShardSlot};
use crate::store::{NodeAddress, NodeBeat, NodeStatus, Store, StoreError};
use crate::turn::cluster::{ClusterView, Target};
use crate::turn::quota::QuotaTracker;
use crate::turn::Transport;

/// How often the node's row is written and the registry read.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// What the registry writer keeps.
pub struct Registry {
    node_id: String,
    instance: i64,
    addresses: Vec<NodeAddress>,
    started: i64,
    timeout: Duration,
    max_bps: u64,
    view: Arc<ClusterView>,
    health: Arc<Health>,
    quota: Arc<QuotaTracker>,
    slots: Vec<ShardSlot>,
    /// The previous beat: when, relayed bytes both ways, CPU seconds.
    last: Option<(Instant, u64, u64, f64)>,
    /// Whether another process's claim on `node_id` was reported already.
    warned: bool,
    /// The allocations per user last written to the registry.
    published: HashMap<Box<str>, u32>,
    /// Whether they were written once (the first write replaces all rows).
    shared_once: bool,
}

/// What [`Registry::new`] needs from the server.
pub struct RegistryParts {
    pub node_id: String,
    pub addresses: Vec<(Transport, SocketAddr)>,
    pub timeout: Duration,
    pub max_bps: u64,
    pub view: Arc<ClusterView>,
    pub health: Arc<Health>,
    pub quota: Arc<QuotaTracker>,
    pub slots: Vec<ShardSlot>,
}

impl Registry {
    pub fn new(p: RegistryParts) -> Self {
        let node_id = if p.node_id.is_empty() {
            host_name()
        } else {
            p.node_id
        };
        Self {
            node_id,
            instance: rand::random::<i64>(),
            addresses: p
                .addresses
                .into_iter()
                .map(|(t, address)| NodeAddress {
                    transport: t.name().into(),
                    address,
                })
                .collect(),
            started: crate::time::unix_now(),
            timeout: p.timeout,
            max_bps: p.max_bps,
            view: p.view,
            health: p.health,
            quota: p.quota,
            slots: p.slots,
            last: None,
            warned: false,
            published: HashMap::new(),
            shared_once: false,
        }
    }

    /// Whether a beat is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|(at, ..)| now.duration_since(at) >= HEARTBEAT_INTERVAL)
    }

    /// Writes this node's row and refreshes the shards' view of the others.
    pub async fn beat(&mut self, store: &Store) -> Result<(), StoreError> {
        let now = Instant::now();
        let (to_peer, to_client) = relayed_bytes(&self.slots);
        let cpu = cpu_seconds();
        let (to_peer_bps, to_client_bps, cpu_percent) = match self.last {
            Some((at, p, c, s)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                let bps =
                    |now: u64, then: u64| (now.saturating_sub(then) as f64 * 8.0 / secs) as u64;
                (
                    bps(to_peer, p),
                    bps(to_client, c),
                    ((cpu - s).max(0.0) / secs * 100.0 * 10.0).round() / 10.0,
                )
            }
            None => (0, 0, 0.0),
        };
        self.last = Some((now, to_peer, to_client, cpu));
        self.view.set_over_bandwidth(
            self.max_bps != 0 && to_peer_bps.saturating_add(to_client_bps) > self.max_bps,
        );
        let beat = NodeBeat {
            node_id: self.node_id.clone(),
            instance: self.instance,
            addresses: self.addresses.clone(),
            draining: self.health.draining.load(Ordering::SeqCst),
            allocations: u64::from(self.quota.total()),
            to_peer_bps,
            to_client_bps,
            cpu_percent,
            version: env!("CARGO_PKG_VERSION").into(),
            started: self.started,
        };
        if let Some((other, age_ms)) = store.heartbeat(&beat).await? {
            if !self.warned && u128::from(age_ms.unsigned_abs()) < self.timeout.as_millis() {
                tracing::error!(
                    node_id = %self.node_id,
                    other_instance = other,
                    "another live process registers with this cluster.node-id: give each node its own"
                );
                self.warned = true;
            }
        }
        let nodes = store.nodes().await?;
        self.view
            .set_targets(targets(&nodes, &self.node_id, self.timeout));
        self.share_allocations(store).await
    }

    /// Writes the users whose allocation count changed here and reads the
    /// other live nodes' counts (the cluster-wide per-user quota).
    async fn share_allocations(&mut self, store: &Store) -> Result<(), StoreError> {
        let now = self.quota.user_allocations();
        let mut changed: Vec<(&str, u32)> = now
            .iter()
            .filter(|(user, n)| self.published.get(*user) != Some(*n))
            .map(|(user, n)| (&**user, *n))
            .collect();
        changed.extend(
            self.published
                .keys()
                .filter(|user| !now.contains_key(*user))
                .map(|user| (&**user, 0)),
        );
        // The first time, every row of this node_id is replaced: a previous
        // run's rows must not count.
        let first = self.published.is_empty() && !self.shared_once;
        if first || !changed.is_empty() {
            store
                .publish_user_allocations(&self.node_id, &changed, first)
                .await?;
        }
        self.published = now;
        self.shared_once = true;
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let others = store
            .others_user_allocations(&self.node_id, timeout_ms)
            .await?;
        self.quota.set_remote_allocations(others);
        Ok(())
    }

    /// Leaves the registry (a clean stop): other nodes stop redirecting here
    /// at once instead of after `node-timeout`.
    pub async fn leave(&self, store: &Store) {
        if let Err(e) = store.remove_node(&self.node_id, self.instance).await {
            tracing::debug!(error = %e, "could not leave the node registry");
        }
    }
}

/// The nodes new clients may be sent to: live (a heartbeat within
/// `timeout`), not draining, not `me`.
pub fn targets(nodes: &[NodeStatus], me: &str, timeout: Duration) -> Vec<Target> {
    nodes
        .iter()
        .filter(|n| {
            n.beat.node_id != me
                && !n.beat.draining
                && u128::from(n.heartbeat_age_ms.unsigned_abs()) < timeout.as_millis()
        })
        .map(|n| {
            let addresses = n
                .beat
                .addresses
                .iter()
                .filter_map(|a| {
                    let t = Transport::ALL
                        .into_iter()
                        .find(|t| t.name() == a.transport)?;
                    Some((t, a.address))
                })
                .collect();
            Target::new(&n.beat.node_id, addresses, n.beat.allocations)
        })
        .collect()
}

/// Relayed application bytes so far, client to peer and peer to client, over
/// every shard's last publication.
fn relayed_bytes(slots: &[ShardSlot]) -> (u64, u64) {
    slots.iter().fold((0, 0), |(p, c), slot| {
        let s = slot.lock().unwrap_or_else(|e| e.into_inner());
        (
            p + s.stats.to_peer_bytes.iter().sum::<u64>(),
            c + s.stats.to_client_bytes.iter().sum::<u64>(),
        )
    })
}

/// CPU seconds this process used so far (user + system), from
/// `/proc/self/stat`; 0 where that cannot be read. Its fields 14 and 15 count
/// clock ticks of USER_HZ, which Linux fixes at 100 for user space.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / 100.0
}

/// This machine's host name, the default `cluster.node-id`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ferroturn".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, draining: bool, age_ms: i64, allocations: u64) -> NodeStatus {
        NodeStatus {
            beat: NodeBeat {
                node_id: id.into(),
                instance: 1,
                addresses: vec![
                    NodeAddress {
                        transport: "udp".into(),
                        address: "192.0.2.1:3478".parse().unwrap(),
                    },
                    NodeAddress {
                        transport: "quic".into(),
                        address: "192.0.2.1:443".parse().unwrap(),
                    },
                ],
                draining,
                allocations,
                to_peer_bps: 0,
                to_client_bps: 0,
                cpu_percent: 0.0,
                version: "0".into(),
                started: 0,
            },
            heartbeat_age_ms: age_ms,
        }
    }

    #[test]
    fn targets_are_live_other_nodes_not_draining() {
        let nodes = [
            node("me", false, 0, 0),
            node("draining", true, 0, 0),
            node("gone", false, 5_000, 0),
            node("live", false, 4_999, 7),
        ];
        let t = targets(&nodes, "me", Duration::from_secs(5));
        assert_eq!(t.len(), 1);
        assert_eq!(&*t[0].node_id, "live");
        assert_eq!(t[0].allocations, 7);
        // Transports this version does not know are left out.
        assert_eq!(
            t[0].addresses,
            [(Transport::Udp, "192.0.2.1:3478".parse().unwrap())]
        );
    }

    #[test]
    fn this_process_has_a_cpu_time_and_the_host_a_name() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_seconds() > 0.0);
        assert!(!host_name().is_empty());
    }
}
