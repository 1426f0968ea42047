-- Console tokens: the credential the console's own scripts (the flow canvas) present to the
-- management API as `Authorization: Bearer pcct_…`, one per admin session. It is derived
-- from the session's secret (so the page can be handed the same one each time) and kept
-- only as a SHA-256. It ends with its session: sign-out, Sign out everywhere, expiry or the
-- admin's removal delete the session row, and this one with it. Never listed with the API
-- tokens admins make.
CREATE TABLE console_tokens (
    session_id  INTEGER PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  INTEGER NOT NULL
);
