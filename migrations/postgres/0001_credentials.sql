-- ferroturn credential store, PostgreSQL dialect. Keep in step with
-- migrations/sqlite/0001_credentials.sql: same tables, columns and meaning.
-- Times are unix seconds. Never a plaintext password: only the RFC 8489
-- long-term keys and the USERHASH derived from it.

-- One row: the change counter a running server polls. Every write bumps it
-- in the same transaction (and sends NOTIFY ferroturn_changes).
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO meta (id, generation) VALUES (1, 0);

-- Long-term credential users, per realm (the keys hash the realm in).
CREATE TABLE users (
    realm TEXT NOT NULL,
    name TEXT NOT NULL,
    key_md5 BYTEA NOT NULL CHECK (octet_length(key_md5) = 16),
    key_sha256 BYTEA NOT NULL CHECK (octet_length(key_sha256) = 32),
    userhash BYTEA NOT NULL CHECK (octet_length(userhash) = 32),
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (realm, name)
);

-- TURN REST shared secrets, as given: the server needs them to compute
-- HMACs. The newest (highest id) mints credentials.
CREATE TABLE secrets (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    secret TEXT NOT NULL UNIQUE,
    created BIGINT NOT NULL
);

-- Revoked REST usernames ("EXPIRY:NAME") until the credential expires;
-- rows past `expires` are pruned.
CREATE TABLE revocations (
    username TEXT PRIMARY KEY,
    expires BIGINT NOT NULL,
    created BIGINT NOT NULL
);
CREATE INDEX revocations_expires ON revocations (expires);
