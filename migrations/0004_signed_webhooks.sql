-- Signed webhooks (Standard Webhooks): a signing secret per Webhook action and whether
-- ingest requires signed requests. Unlike API keys the secret is kept as it is: HMAC needs
-- it to check a signature. It is made when signing is first turned on, and kept when signing
-- is turned off, so that turning it on again does not break senders that still sign.
ALTER TABLE webhook_actions ADD COLUMN signing_secret TEXT;
ALTER TABLE webhook_actions ADD COLUMN signing_required INTEGER NOT NULL DEFAULT 0
    CHECK (signing_required IN (0, 1));

-- Signing is only required with a secret to check against.
CREATE TRIGGER webhook_signing_needs_a_secret
BEFORE UPDATE OF signing_required, signing_secret ON webhook_actions
WHEN NEW.signing_required = 1 AND NEW.signing_secret IS NULL
BEGIN
    SELECT RAISE(ABORT, 'webhook_signing_needs_a_secret');
END;
