-- Facts first, every model claim checked (issue 11): the facts block built without the
-- LLM, the named checks run on the model's claims (failed ones with their reason), and
-- the model's narrative only when it passed its checks.
ALTER TABLE verdicts
    ADD COLUMN facts       JSONB,
    ADD COLUMN checks      JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN explanation TEXT;
