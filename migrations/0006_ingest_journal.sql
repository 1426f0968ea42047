-- The last entry of the writer's ingest journal that the database holds: it is updated in
-- the transaction that commits the entry's webhooks, so that replaying the journal after a
-- crash applies each entry exactly once.
CREATE TABLE ingest_journal (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    applied_seq INTEGER NOT NULL
);
INSERT INTO ingest_journal (id, applied_seq) VALUES (1, 0);
