-- Precall's model. Times are Unix milliseconds (INTEGER); JSON columns are TEXT.

-- A voice agent. `public_id` is what senders put in `agentId`. `first_flow_id` is the
-- agent's First Flow: one column, so the flag is exclusive by construction, and a composite
-- key so that it can only name one of the agent's own flows.
CREATE TABLE agents (
    id             INTEGER PRIMARY KEY,
    public_id      TEXT    NOT NULL UNIQUE CHECK (length(public_id) = 20),
    name           TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    default_region TEXT    NOT NULL DEFAULT 'US' CHECK (length(default_region) = 2),
    first_flow_id  INTEGER,
    created_at     INTEGER NOT NULL,
    FOREIGN KEY (first_flow_id, id) REFERENCES flows (id, agent_id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX agents_by_first_flow ON agents (first_flow_id);

-- A named graph of blocks belonging to an agent. The First Flow cannot be deleted while
-- it is the First Flow (the key above forbids it); deleting the agent deletes its flows.
CREATE TABLE flows (
    id         INTEGER PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at INTEGER NOT NULL,
    UNIQUE (agent_id, name),
    UNIQUE (id, agent_id)
);

-- A block of a flow. `config` holds the kind's settings and its outgoing connections.
CREATE TABLE blocks (
    id       INTEGER PRIMARY KEY,
    flow_id  INTEGER NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('greeting', 'start', 'talk', 'collect', 'filter',
                                             'transfer_call', 'transfer_flow', 'end_call')),
    config   TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(config))
);
CREATE INDEX blocks_by_flow ON blocks (flow_id, position);

-- The ordered list of actions that run before the First Flow's greeting.
CREATE TABLE precall_actions (
    id         INTEGER PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('webhook', 'filter', 'end_call')),
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    config     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
    created_at INTEGER NOT NULL
);
CREATE INDEX precall_actions_by_agent ON precall_actions (agent_id, position);

-- Pre-call actions live above the First Flow, so an agent without one cannot take any,
-- and an agent with some cannot lose its First Flow.
CREATE TRIGGER precall_actions_need_a_first_flow
BEFORE INSERT ON precall_actions
WHEN (SELECT first_flow_id FROM agents WHERE id = NEW.agent_id) IS NULL
BEGIN
    SELECT RAISE(ABORT, 'precall_actions_need_a_first_flow');
END;

CREATE TRIGGER first_flow_kept_while_actions_exist
BEFORE UPDATE OF first_flow_id ON agents
WHEN NEW.first_flow_id IS NULL
 AND EXISTS (SELECT 1 FROM precall_actions WHERE agent_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'first_flow_kept_while_actions_exist');
END;

-- Settings of a Webhook pre-call action.
CREATE TABLE webhook_actions (
    action_id        INTEGER PRIMARY KEY REFERENCES precall_actions (id) ON DELETE CASCADE,
    slug             TEXT    NOT NULL UNIQUE CHECK (length(slug) >= 22),
    fallback_wait_ms INTEGER NOT NULL DEFAULT 2000 CHECK (fallback_wait_ms BETWEEN 0 AND 10000),
    ttl_secs         INTEGER NOT NULL DEFAULT 600 CHECK (ttl_secs BETWEEN 1 AND 604800),
    enabled          INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1))
);

-- API keys of a webhook action: only a SHA-256 of each key is kept.
-- `expires_at` is NULL for the current key and set for a rotated key in its grace period.
CREATE TABLE webhook_keys (
    id         INTEGER PRIMARY KEY,
    action_id  INTEGER NOT NULL REFERENCES webhook_actions (action_id) ON DELETE CASCADE,
    key_hash   BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    last_chars TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX webhook_keys_by_action ON webhook_keys (action_id);

-- An agent's variable schema.
CREATE TABLE variables (
    id               INTEGER PRIMARY KEY,
    agent_id         INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    type             TEXT    NOT NULL CHECK (type IN ('string', 'number', 'boolean', 'list')),
    default_value    TEXT    CHECK (default_value IS NULL OR json_valid(default_value)),
    description      TEXT    NOT NULL DEFAULT '',
    source_action_id INTEGER REFERENCES precall_actions (id) ON DELETE SET NULL,
    source_block_id  INTEGER REFERENCES blocks (id) ON DELETE SET NULL,
    created_at       INTEGER NOT NULL,
    UNIQUE (agent_id, name)
);
CREATE INDEX variables_by_source_action ON variables (source_action_id);
CREATE INDEX variables_by_source_block ON variables (source_block_id);

-- What a webhook told us about one caller, until a call uses it or it expires.
CREATE TABLE contexts (
    id          INTEGER PRIMARY KEY,
    action_id   INTEGER NOT NULL REFERENCES precall_actions (id) ON DELETE CASCADE,
    phone       TEXT    NOT NULL,
    fields      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    call_id     TEXT
);
-- One unused context per caller and action: later webhooks merge into it.
CREATE UNIQUE INDEX contexts_unused_by_caller ON contexts (action_id, phone) WHERE call_id IS NULL;
CREATE INDEX contexts_by_expiry ON contexts (expires_at);
CREATE INDEX contexts_by_action ON contexts (action_id);


-- One row per request that reached an ingest URL, accepted or refused. Never the key.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    action_id       INTEGER NOT NULL REFERENCES precall_actions (id) ON DELETE CASCADE,
    received_at     INTEGER NOT NULL,
    status          INTEGER NOT NULL,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('refused', 'cached', 'used', 'expired', 'late', 'replayed')),
    phone           TEXT,
    fields          TEXT,
    problems        TEXT,
    body_excerpt    TEXT,
    idempotency_key TEXT,
    latency_us      INTEGER NOT NULL,
    context_id      INTEGER REFERENCES contexts (id) ON DELETE SET NULL,
    call_id         TEXT
);
CREATE INDEX deliveries_by_action ON deliveries (action_id, id);
CREATE INDEX deliveries_by_context ON deliveries (context_id);

-- Data that expired unused, whether swept or overwritten by a fresh webhook for the same
-- caller: its deliveries say so, whatever the new data becomes.
CREATE TRIGGER contexts_refreshed_after_expiry
AFTER UPDATE OF fields ON contexts
WHEN OLD.expires_at <= NEW.updated_at AND OLD.call_id IS NULL
BEGIN
    UPDATE deliveries SET outcome = 'expired' WHERE context_id = OLD.id AND outcome = 'cached';
END;

-- What became of a delivery's data is read through its context while the context exists
-- (used by a call once the context names one); when the context is swept, the answer is
-- written into the delivery, so that the calls' hot path never updates deliveries.
CREATE TRIGGER contexts_swept
BEFORE DELETE ON contexts
BEGIN
    UPDATE deliveries
       SET outcome = CASE WHEN OLD.call_id IS NULL THEN 'expired' ELSE 'used' END,
           call_id = coalesce(OLD.call_id, call_id)
     WHERE context_id = OLD.id
       AND (outcome = 'cached' OR (outcome = 'late' AND OLD.call_id IS NOT NULL));
END;

-- Idempotency-Key / webhook-id answers, kept 24 hours.
CREATE TABLE idempotency_keys (
    action_id  INTEGER NOT NULL REFERENCES precall_actions (id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    body_hash  BLOB    NOT NULL,
    response   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (action_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- One inbound call.
CREATE TABLE calls (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT    NOT NULL UNIQUE,
    agent_id    INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    caller      TEXT    NOT NULL,
    called      TEXT,
    started_at  INTEGER NOT NULL,
    waited_ms   INTEGER NOT NULL,
    source      TEXT    NOT NULL CHECK (source IN ('webhook', 'fallback')),
    variables   TEXT    NOT NULL,
    trace       TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'active',
    outcome     TEXT,
    late_fields TEXT,
    late_at     INTEGER
);
CREATE INDEX calls_by_agent_time ON calls (agent_id, started_at);

-- The Webhook actions a call fell back on: data for them that lands soon after is late,
-- and is recorded against the call.
CREATE TABLE call_fallbacks (
    call_id   INTEGER NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    action_id INTEGER NOT NULL REFERENCES precall_actions (id) ON DELETE CASCADE,
    phone     TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (call_id, action_id)
) WITHOUT ROWID;
CREATE INDEX call_fallbacks_by_caller ON call_fallbacks (action_id, phone, at);

-- Bearer tokens of the call runtime, one agent each. Only a SHA-256 of each token is kept.
CREATE TABLE runtime_tokens (
    id         INTEGER PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    token_hash BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    last_chars TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX runtime_tokens_by_agent ON runtime_tokens (agent_id);

-- A counter bumped by every configuration change, so that servers caching configuration
-- notice changes made by other processes (the CLI, other nodes).
CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);
CREATE TRIGGER agents_insert_bumps_config AFTER INSERT ON agents
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER agents_update_bumps_config AFTER UPDATE ON agents
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER agents_delete_bumps_config AFTER DELETE ON agents
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER flows_insert_bumps_config AFTER INSERT ON flows
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER flows_update_bumps_config AFTER UPDATE ON flows
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER flows_delete_bumps_config AFTER DELETE ON flows
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER blocks_insert_bumps_config AFTER INSERT ON blocks
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER blocks_update_bumps_config AFTER UPDATE ON blocks
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER blocks_delete_bumps_config AFTER DELETE ON blocks
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER precall_actions_insert_bumps_config AFTER INSERT ON precall_actions
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER precall_actions_update_bumps_config AFTER UPDATE ON precall_actions
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER precall_actions_delete_bumps_config AFTER DELETE ON precall_actions
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER webhook_actions_insert_bumps_config AFTER INSERT ON webhook_actions
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER webhook_actions_update_bumps_config AFTER UPDATE ON webhook_actions
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER webhook_actions_delete_bumps_config AFTER DELETE ON webhook_actions
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER webhook_keys_insert_bumps_config AFTER INSERT ON webhook_keys
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER webhook_keys_update_bumps_config AFTER UPDATE ON webhook_keys
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER webhook_keys_delete_bumps_config AFTER DELETE ON webhook_keys
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER variables_insert_bumps_config AFTER INSERT ON variables
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER variables_update_bumps_config AFTER UPDATE ON variables
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER variables_delete_bumps_config AFTER DELETE ON variables
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER runtime_tokens_insert_bumps_config AFTER INSERT ON runtime_tokens
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER runtime_tokens_update_bumps_config AFTER UPDATE ON runtime_tokens
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER runtime_tokens_delete_bumps_config AFTER DELETE ON runtime_tokens
BEGIN UPDATE config_version SET version = version + 1; END;
