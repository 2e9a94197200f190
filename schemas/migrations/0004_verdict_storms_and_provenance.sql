-- Storm de-duplication, provenance and replay data on verdicts (issue #4).
ALTER TABLE verdicts
    ADD COLUMN fingerprint     TEXT,
    ADD COLUMN incident_key    TEXT,            -- fingerprint without the agent
    ADD COLUMN reused_from     TEXT,            -- alert id of the verdict this one reuses
    ADD COLUMN seen_count      INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN last_seen_at    TIMESTAMPTZ,
    ADD COLUMN embedding       vector(384),
    ADD COLUMN retrieval_ids   TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN provenance      JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN confidence      REAL,
    ADD COLUMN attack_dropped  INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN analyst_status  TEXT NOT NULL DEFAULT 'new';

-- "Has this incident been explained recently?" — originals only.
CREATE INDEX verdicts_storm_idx ON verdicts (tenant_id, fingerprint, created_at DESC)
    WHERE reused_from IS NULL;
CREATE INDEX verdicts_incident_idx ON verdicts (tenant_id, incident_key, created_at DESC)
    WHERE reused_from IS NULL;
