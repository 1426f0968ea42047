-- Admin API tokens for the management API: each acts for one admin and can do what that
-- admin can do in the console (read-only tokens: only read). Only a SHA-256 of each token is
-- kept; a token stops working when revoked or when its admin is removed.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    admin_id     INTEGER NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 80),
    token_hash   BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    last_chars   TEXT    NOT NULL,
    read_only    INTEGER NOT NULL CHECK (read_only IN (0, 1)),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_tokens_by_admin ON api_tokens (admin_id);
