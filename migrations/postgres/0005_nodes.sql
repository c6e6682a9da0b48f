-- The node registry ([cluster]): every server using this PostgreSQL store
-- registers itself and refreshes its row about once a second. A node whose
-- heartbeat is older than cluster.node-timeout (by the database's clock) is gone.
-- Keep in step with migrations/sqlite/0005_nodes.sql (SQLite stays single-node:
-- the table exists there only so that both dialects have the same versions).
--
-- `addresses` is the JSON list of what the node serves, as clients reach it:
-- [{"transport": "udp", "address": "203.0.113.5:3478"}, ...]. `instance` is
-- random per process, so that two live processes claiming one node_id are
-- noticed. Not credentials: writes here do not bump meta.generation.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    instance BIGINT NOT NULL,
    addresses TEXT NOT NULL,
    draining BOOLEAN NOT NULL,
    allocations BIGINT NOT NULL,
    to_peer_bps BIGINT NOT NULL,
    to_client_bps BIGINT NOT NULL,
    cpu_percent DOUBLE PRECISION NOT NULL,
    version TEXT NOT NULL,
    started BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

-- Allocations per user on each node, for the cluster-wide
-- quota.max-allocations-per-user: each node writes the users whose count
-- changed at its heartbeat (a row disappears at 0), and sums the rows of the
-- other live nodes. A gone node's rows stop counting with its heartbeat.
CREATE TABLE user_allocations (
    node_id TEXT NOT NULL,
    username TEXT NOT NULL,
    allocations BIGINT NOT NULL,
    PRIMARY KEY (node_id, username)
);
