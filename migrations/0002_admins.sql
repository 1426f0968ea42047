-- Admins of the console and their sessions.

CREATE TABLE admins (
    id            INTEGER PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE CHECK (length(email) BETWEEN 3 AND 254),
    -- argon2id, PHC string format.
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    INTEGER REFERENCES admins (id) ON DELETE SET NULL
);
CREATE INDEX admins_by_creator ON admins (created_by);

-- Server-side sessions: the cookie holds a random token, the table its SHA-256.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    token_hash  BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    admin_id    INTEGER NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    -- Sent with every form and checked on every state-changing request.
    csrf_token  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_by_admin ON sessions (admin_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
