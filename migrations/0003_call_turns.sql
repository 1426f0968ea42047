-- A call's turns: each answer to a Collect continues the call and bumps this counter, so
-- that two answers racing for the same question cannot both continue it.
ALTER TABLE calls ADD COLUMN turns INTEGER NOT NULL DEFAULT 0;
-- Call history lists an agent's calls newest first, optionally by outcome.
CREATE INDEX calls_by_agent_outcome ON calls (agent_id, outcome, started_at);
