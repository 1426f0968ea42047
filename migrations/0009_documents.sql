-- An agent's behaviour as versioned documents (see domain::document): the draft that admins
-- and the management API edit, and the immutable, numbered versions that calls run. Flows,
-- blocks, pre-call Filter and End Call actions and the variable schema live in them from now
-- on; the server moves what the older tables hold into each agent's first version when it
-- starts (store::documents::upgrade).

CREATE TABLE drafts (
    agent_id   INTEGER PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    document   TEXT    NOT NULL CHECK (json_valid(document)),
    -- Bumped by every save: the draft's ETag.
    revision   INTEGER NOT NULL CHECK (revision >= 1),
    updated_at INTEGER NOT NULL,
    -- Who saved it last: an admin's email, an API token's name, or the command line.
    updated_by TEXT    NOT NULL
);

CREATE TABLE versions (
    agent_id     INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    number       INTEGER NOT NULL CHECK (number >= 1),
    document     TEXT    NOT NULL CHECK (json_valid(document)),
    published_at INTEGER NOT NULL,
    published_by TEXT    NOT NULL,
    message      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (agent_id, number)
) WITHOUT ROWID;

-- Versions are never changed nor removed (but with their agent).
CREATE TRIGGER versions_are_immutable BEFORE UPDATE ON versions
BEGIN SELECT RAISE(ABORT, 'versions_are_immutable'); END;

-- The version calls run.
ALTER TABLE agents ADD COLUMN published_version INTEGER;

-- A Webhook action's endpoint (URL, keys, signing secret: what a document never holds) is
-- found by the action's key in the agent's documents.
ALTER TABLE precall_actions ADD COLUMN key TEXT;
CREATE UNIQUE INDEX precall_actions_by_key ON precall_actions (agent_id, key);

-- Endpoints come and go with the documents, not with a First Flow row.
DROP TRIGGER precall_actions_need_a_first_flow;
DROP TRIGGER first_flow_kept_while_actions_exist;

-- The version a call ran.
ALTER TABLE calls ADD COLUMN version INTEGER;

-- What servers cache changes with the drafts (a Webhook action not yet published takes its
-- settings from the draft) and with every publish.
CREATE TRIGGER drafts_insert_bumps_config AFTER INSERT ON drafts
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER drafts_update_bumps_config AFTER UPDATE ON drafts
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER versions_insert_bumps_config AFTER INSERT ON versions
BEGIN UPDATE config_version SET version = version + 1; END;
