-- Relayed bytes per user and budget period (quota.max-bytes-per-user), summed
-- over every server that uses this store, so that nodes sharing one database
-- (and one node across restarts) count one budget.
-- Keep in step with migrations/sqlite/0004_byte_usage.sql.
--
-- Each server adds what it relayed since its last visit (about twice a second)
-- and reads the rows others changed since then: `updated` is the unix second of
-- the last addition, by the adding server's clock. Rows are per period length
-- too, so that changing quota.bytes-period never mixes days with hours. Rows
-- older than a few days are removed by the servers. Not credentials: writes
-- here do not bump meta.generation.
CREATE TABLE byte_usage (
    username TEXT NOT NULL,
    period_secs BIGINT NOT NULL,
    period BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (username, period_secs, period)
);
CREATE INDEX byte_usage_updated ON byte_usage (period_secs, period, updated);
