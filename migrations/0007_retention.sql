-- Requests refused before a valid key was seen (no key, a wrong key, over the sender
-- address's rate) are counted rather than recorded one by one: anyone who knows a webhook's
-- URL can send them, and a row each would let them fill the disk. One row per webhook, per
-- minute (its start, Unix ms) and per reason. Kept as long as deliveries.
CREATE TABLE refusal_counts (
    action_id INTEGER NOT NULL REFERENCES precall_actions (id) ON DELETE CASCADE,
    minute    INTEGER NOT NULL,
    reason    TEXT    NOT NULL CHECK (reason IN ('missing_key', 'wrong_key', 'rate_limited')),
    count     INTEGER NOT NULL CHECK (count > 0),
    PRIMARY KEY (action_id, minute, reason)
) WITHOUT ROWID;
-- The sweep removes the oldest minutes of every webhook.
CREATE INDEX refusal_counts_by_minute ON refusal_counts (minute);
