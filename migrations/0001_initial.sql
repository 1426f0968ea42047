-- Precall's model. Times are Unix milliseconds (INTEGER); JSON columns are TEXT.

-- A voice agent. `public_id` is what senders put in `agentId`.
CREATE TABLE agents (
    id             INTEGER PRIMARY KEY,
    public_id      TEXT    NOT NULL UNIQUE CHECK (length(public_id) = 20),
    name           TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    default_region TEXT    NOT NULL DEFAULT 'US' CHECK (length(default_region) = 2),
    created_at     INTEGER NOT NULL
);

-- A named graph of blocks. At most one flow per agent is its First Flow.
CREATE TABLE flows (
    id         INTEGER PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    is_first   INTEGER NOT NULL DEFAULT 0 CHECK (is_first IN (0, 1)),
    created_at INTEGER NOT NULL,
    UNIQUE (agent_id, name)
);
-- The First Flow flag is exclusive per agent: moving it is "clear, then set" in one transaction.
CREATE UNIQUE INDEX flows_one_first_flow_per_agent ON flows (agent_id) WHERE is_first = 1;

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

-- Pre-call actions live above the First Flow, so an agent without one cannot take any.
CREATE TRIGGER precall_actions_need_a_first_flow
BEFORE INSERT ON precall_actions
WHEN NOT EXISTS (SELECT 1 FROM flows WHERE agent_id = NEW.agent_id AND is_first = 1)
BEGIN
    SELECT RAISE(ABORT, 'precall_actions_need_a_first_flow');
END;

-- The First Flow cannot be deleted from under its pre-call actions (a whole agent can).
CREATE TRIGGER first_flow_kept_while_actions_exist
BEFORE DELETE ON flows
WHEN OLD.is_first = 1
 AND EXISTS (SELECT 1 FROM agents WHERE id = OLD.agent_id)
 AND EXISTS (SELECT 1 FROM precall_actions WHERE agent_id = OLD.agent_id)
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

CREATE TRIGGER contexts_swept_unused
BEFORE DELETE ON contexts
WHEN OLD.call_id IS NULL
BEGIN
    UPDATE deliveries SET outcome = 'expired' WHERE context_id = OLD.id AND outcome = 'cached';
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
CREATE INDEX calls_by_agent_caller ON calls (agent_id, caller, started_at);
CREATE INDEX calls_by_agent_time ON calls (agent_id, started_at);

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
