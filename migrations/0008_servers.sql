-- The servers running on this database and the configuration version each has applied, so
-- that a configuration command (the CLI) can wait until every running server obeys it.
CREATE TABLE servers (
    id           INTEGER PRIMARY KEY,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    seen_version INTEGER NOT NULL,
    seen_at      INTEGER NOT NULL
);
