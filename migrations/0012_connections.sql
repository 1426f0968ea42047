-- Voice platforms' connections: the endpoint a platform (Retell, Synthflow, Vapi, Telnyx,
-- Twilio) asks about an inbound call, one agent each. Like a webhook's URL and keys, a
-- connection belongs to the server and never to an agent's documents (which hold no secret
-- and no URL): its flow → platform-agent mapping lives here too.
--
-- How its requests are verified (`secret_kind`):
--   hmac        the platform signs with a shared secret (Retell's API key, Twilio's auth
--               token, Synthflow's and Vapi's HMAC secrets): kept as it is, HMAC needs it,
--               as a webhook's signing secret is;
--   hash        the platform sends a shared secret as it is (Vapi's server secret): only its
--               SHA-256 is kept, for a comparison;
--   public_key  the platform signs with its private key (Telnyx's Ed25519): its public key
--               is no secret.
CREATE TABLE connections (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id          INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    platform          TEXT    NOT NULL CHECK (platform IN ('retell', 'synthflow', 'vapi', 'telnyx', 'twilio')),
    name              TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    slug              TEXT    NOT NULL UNIQUE CHECK (length(slug) >= 22),
    secret_kind       TEXT    NOT NULL CHECK (secret_kind IN ('hmac', 'hash', 'public_key')),
    secret            TEXT,
    secret_hash       BLOB    CHECK (secret_hash IS NULL OR length(secret_hash) = 32),
    secret_last_chars TEXT    NOT NULL DEFAULT '',
    -- {"defaultAgent": "…", "flowAgents": {"flowKey": "…"}}
    mapping           TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(mapping)),
    -- The platform's deadline for an answer (Telnyx's is set per assistant).
    deadline_ms       INTEGER NOT NULL CHECK (deadline_ms BETWEEN 1 AND 60000),
    created_at        INTEGER NOT NULL,
    CHECK ((secret_kind = 'hash') = (secret_hash IS NOT NULL)),
    CHECK ((secret_kind = 'hash') = (secret IS NULL))
);
CREATE INDEX connections_by_agent ON connections (agent_id);

CREATE TRIGGER connections_insert_bumps_config AFTER INSERT ON connections
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER connections_update_bumps_config AFTER UPDATE ON connections
BEGIN UPDATE config_version SET version = version + 1; END;
CREATE TRIGGER connections_delete_bumps_config AFTER DELETE ON connections
BEGIN UPDATE config_version SET version = version + 1; END;
