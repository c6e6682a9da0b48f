-- Bearer tokens of the credentials API ([api], `ferroturn api-token`).
-- Keep in step with migrations/postgres/0003_api_tokens.sql.
--
-- Only the SHA-256 of a token is stored, never the token: it is shown once
-- when added, and a stolen database does not let anyone call the API. A
-- token is 40 random alphanumerics (about 238 bits), so an unsalted fast hash
-- is enough: there is nothing to guess. `last_used` is updated at most once a
-- minute per token and does not bump `meta.generation` (it is no credential).
CREATE TABLE api_tokens (
    name TEXT PRIMARY KEY,
    token_sha256 BLOB NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created BIGINT NOT NULL,
    last_used BIGINT
);
