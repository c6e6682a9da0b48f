//! The node registry (`[cluster]`, PostgreSQL only): each server's row with
//! the addresses it serves, its drain state and load, refreshed about once a
//! second by its store poller. Ages are measured by the database's clock, so
//! nodes' clocks need not agree.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

use super::{Backend, Store, StoreError};

/// One address a node serves clients on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// As clients reach it (the public address when one is configured).
    pub address: std::net::SocketAddr,
}

/// What a node writes at each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeBeat {
    pub node_id: String,
    /// Random per process: tells two processes claiming one `node_id` apart.
    pub instance: i64,
    pub addresses: Vec<NodeAddress>,
    pub draining: bool,
    pub allocations: u64,
    /// Relayed application bits per second, client to peer and back, over
    /// the last heartbeat interval.
    pub to_peer_bps: u64,
    pub to_client_bps: u64,
    /// CPU time of the process over the last interval, in % of one core.
    pub cpu_percent: f64,
    pub version: String,
    /// Unix second the process started.
    pub started: i64,
}

/// A node as the registry holds it, with the age of its last heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub beat: NodeBeat,
    /// Milliseconds since the last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
}

/// The database's clock in unix milliseconds.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    fn postgres(&self, what: &'static str) -> Result<&PgPool, StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => Ok(pool),
            Backend::Sqlite(_) => Err(StoreError::NeedsPostgres(what)),
        }
    }

    /// Writes `beat` as its node's row. Returns the instance and heartbeat
    /// age (ms) of the row it replaced when another process wrote it: two
    /// live processes with one `node_id` overwrite each other.
    pub async fn heartbeat(&self, beat: &NodeBeat) -> Result<Option<(i64, i64)>, StoreError> {
        let pool = self.postgres("the node registry")?;
        let addresses = serde_json::to_string(&beat.addresses)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let mut tx = pool.begin().await.map_err(|e| self.db_err(e))?;
        let previous: Option<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT instance, {NOW_MS} - heartbeat_ms FROM nodes WHERE node_id = $1 FOR UPDATE"
        ))
        .bind(&beat.node_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.db_err(e))?;
        sqlx::query(&format!(
            "INSERT INTO nodes (node_id, instance, addresses, draining, allocations, \
             to_peer_bps, to_client_bps, cpu_percent, version, started, heartbeat_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {NOW_MS}) \
             ON CONFLICT (node_id) DO UPDATE SET instance = excluded.instance, \
             addresses = excluded.addresses, draining = excluded.draining, \
             allocations = excluded.allocations, to_peer_bps = excluded.to_peer_bps, \
             to_client_bps = excluded.to_client_bps, cpu_percent = excluded.cpu_percent, \
             version = excluded.version, started = excluded.started, \
             heartbeat_ms = excluded.heartbeat_ms"
        ))
        .bind(&beat.node_id)
        .bind(beat.instance)
        .bind(addresses)
        .bind(beat.draining)
        .bind(count(beat.allocations))
        .bind(count(beat.to_peer_bps))
        .bind(count(beat.to_client_bps))
        .bind(beat.cpu_percent)
        .bind(&beat.version)
        .bind(beat.started)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(previous.filter(|&(instance, _)| instance != beat.instance))
    }

    /// Removes the row of `node_id` if `instance` still owns it (a node that
    /// stops cleanly leaves at once instead of going stale).
    pub async fn remove_node(&self, node_id: &str, instance: i64) -> Result<(), StoreError> {
        let pool = self.postgres("the node registry")?;
        let mut tx = pool.begin().await.map_err(|e| self.db_err(e))?;
        let gone = sqlx::query("DELETE FROM nodes WHERE node_id = $1 AND instance = $2")
            .bind(node_id)
            .bind(instance)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        if gone.rows_affected() > 0 {
            sqlx::query("DELETE FROM user_allocations WHERE node_id = $1")
                .bind(node_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
        }
        tx.commit().await.map_err(|e| self.db_err(e))
    }

    /// Sets this node's allocations per user: `counts` for the users whose
    /// count changed (0 removes the row), or with `replace` for every user
    /// (rows of users not in `counts` are removed: a restarted node's rows of
    /// its previous run go). One transaction.
    pub async fn publish_user_allocations(
        &self,
        node_id: &str,
        counts: &[(&str, u32)],
        replace: bool,
    ) -> Result<(), StoreError> {
        let pool = self.postgres("the cluster-wide allocation quota")?;
        let mut tx = pool.begin().await.map_err(|e| self.db_err(e))?;
        if replace {
            sqlx::query("DELETE FROM user_allocations WHERE node_id = $1")
                .bind(node_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
        }
        for &(user, n) in counts {
            // `$3 = 0` deletes: one statement (and one prepared plan) for both.
            sqlx::query(
                "WITH gone AS (DELETE FROM user_allocations \
                 WHERE node_id = $1 AND username = $2 AND $3 = 0) \
                 INSERT INTO user_allocations (node_id, username, allocations) \
                 SELECT $1, $2, $3 WHERE $3 > 0 \
                 ON CONFLICT (node_id, username) DO UPDATE SET allocations = excluded.allocations",
            )
            .bind(node_id)
            .bind(user)
            .bind(i64::from(n))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        }
        tx.commit().await.map_err(|e| self.db_err(e))
    }

    /// Allocations per user on the live nodes other than `node_id` (a
    /// heartbeat younger than `timeout_ms`).
    pub async fn others_user_allocations(
        &self,
        node_id: &str,
        timeout_ms: i64,
    ) -> Result<Vec<(String, u32)>, StoreError> {
        let pool = self.postgres("the cluster-wide allocation quota")?;
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT u.username, SUM(u.allocations)::bigint FROM user_allocations u \
             JOIN nodes n ON n.node_id = u.node_id \
             WHERE u.node_id <> $1 AND {NOW_MS} - n.heartbeat_ms < $2 \
             GROUP BY u.username"
        ))
        .bind(node_id)
        .bind(timeout_ms)
        .fetch_all(pool)
        .await
        .map_err(|e| self.db_err(e))?;
        Ok(rows
            .into_iter()
            .map(|(u, n)| (u, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect())
    }

    /// Every registered node, gone ones included (see `heartbeat_age_ms`),
    /// sorted by `node_id`.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, StoreError> {
        let pool = self.postgres("the node registry")?;
        type Row = (
            String,
            i64,
            String,
            bool,
            i64,
            i64,
            i64,
            f64,
            String,
            i64,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT node_id, instance, addresses, draining, allocations, to_peer_bps, \
             to_client_bps, cpu_percent, version, started, {NOW_MS} - heartbeat_ms \
             FROM nodes ORDER BY node_id"
        ))
        .fetch_all(pool)
        .await
        .map_err(|e| self.db_err(e))?;
        rows.into_iter()
            .map(|r| {
                let addresses = serde_json::from_str(&r.2).map_err(|e| {
                    StoreError::Corrupt(format!("addresses of node {:?}: {e}", r.0))
                })?;
                let n = |v: i64| u64::try_from(v).unwrap_or(0);
                Ok(NodeStatus {
                    beat: NodeBeat {
                        node_id: r.0,
                        instance: r.1,
                        addresses,
                        draining: r.3,
                        allocations: n(r.4),
                        to_peer_bps: n(r.5),
                        to_client_bps: n(r.6),
                        cpu_percent: r.7,
                        version: r.8,
                        started: r.9,
                    },
                    heartbeat_age_ms: r.10,
                })
            })
            .collect()
    }
}
