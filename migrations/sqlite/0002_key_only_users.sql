-- Users known only by their MD5 long-term key, as coturn stores them
-- (`ferroturn import coturn`): key_sha256 becomes nullable, NULL meaning
-- "no SHA-256 key: the password was never known". Every existing row keeps
-- both keys. Keep in step with migrations/postgres/0002_key_only_users.sql.
--
-- SQLite cannot drop a NOT NULL constraint in place, so the table is
-- rebuilt (inside the migration's transaction) and the rows copied.
CREATE TABLE users_0002 (
    realm TEXT NOT NULL,
    name TEXT NOT NULL,
    key_md5 BLOB NOT NULL CHECK (length(key_md5) = 16),
    key_sha256 BLOB CHECK (key_sha256 IS NULL OR length(key_sha256) = 32),
    userhash BLOB NOT NULL CHECK (length(userhash) = 32),
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (realm, name)
);
INSERT INTO users_0002 (realm, name, key_md5, key_sha256, userhash, created, updated)
    SELECT realm, name, key_md5, key_sha256, userhash, created, updated FROM users;
DROP TABLE users;
ALTER TABLE users_0002 RENAME TO users;
