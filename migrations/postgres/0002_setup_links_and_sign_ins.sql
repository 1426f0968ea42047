-- What a server kept in its memory and every server on this database must see alike: the
-- first-run setup link each running server printed (any of them opens the setup page on
-- any server), and failed sign-ins (counted once for all servers, so that more servers do
-- not mean more guesses). As migrations/0013 on SQLite.
CREATE TABLE setup_tokens (
    server_id  BIGINT PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    token_hash BYTEA  NOT NULL CHECK (length(token_hash) = 32),
    created_at BIGINT NOT NULL
);

CREATE TABLE sign_in_failures (
    -- `account:<email>` or `address:<ip>`
    subject  TEXT   PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_at  BIGINT NOT NULL
);
CREATE INDEX sign_in_failures_by_time ON sign_in_failures (last_at);
