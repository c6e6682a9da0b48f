-- Users known only by their MD5 long-term key, as coturn stores them
-- (`ferroturn import coturn`): key_sha256 becomes nullable, NULL meaning
-- "no SHA-256 key: the password was never known". Every existing row keeps
-- both keys; the length CHECK lets NULL through. Keep in step with
-- migrations/sqlite/0002_key_only_users.sql.
ALTER TABLE users ALTER COLUMN key_sha256 DROP NOT NULL;
