-- The node registry ([cluster]) is PostgreSQL-only; this table exists so that
-- both dialects have the same schema versions and is never written on SQLite.
-- Keep in step with migrations/postgres/0005_nodes.sql.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    instance INTEGER NOT NULL,
    addresses TEXT NOT NULL,
    draining INTEGER NOT NULL,
    allocations INTEGER NOT NULL,
    to_peer_bps INTEGER NOT NULL,
    to_client_bps INTEGER NOT NULL,
    cpu_percent REAL NOT NULL,
    version TEXT NOT NULL,
    started INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);

CREATE TABLE user_allocations (
    node_id TEXT NOT NULL,
    username TEXT NOT NULL,
    allocations INTEGER NOT NULL,
    PRIMARY KEY (node_id, username)
);
