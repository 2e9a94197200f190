-- secanalyst: the first schema. Applied once by `secanalyst db migrate`.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE alerts (
    tenant_id    TEXT NOT NULL,
    alert_id     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    rule_id      TEXT NOT NULL,
    rule_level   INTEGER NOT NULL,
    agent_name   TEXT,
    alert_ts     TIMESTAMPTZ,
    priority     TEXT NOT NULL DEFAULT 'live',
    normalized   JSONB NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, alert_id)
);
CREATE INDEX alerts_fingerprint_idx ON alerts (tenant_id, fingerprint);

CREATE TABLE verdicts (
    id              BIGSERIAL PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    alert_id        TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    rule_level      INTEGER NOT NULL,
    severity        TEXT NOT NULL CHECK (severity IN ('info','low','medium','high','critical')),
    severity_source TEXT NOT NULL,
    summary         TEXT NOT NULL,
    attack          JSONB NOT NULL DEFAULT '[]',
    next_steps      JSONB NOT NULL DEFAULT '[]',
    cited_chunks    TEXT[] NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL,
    review_reason   TEXT,
    model_name      TEXT NOT NULL,
    prompt_version  TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL,
    output_tokens   INTEGER NOT NULL,
    latency_ms      INTEGER NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, alert_id)
);
CREATE INDEX verdicts_queue_idx ON verdicts (tenant_id, created_at DESC, id DESC);

CREATE TABLE llm_usage_events (
    id               UUID PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    model_name       TEXT NOT NULL,
    pool             TEXT,
    replica          TEXT,
    priority         TEXT,
    request_id       TEXT,
    alert_id         TEXT,
    input_tokens     INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    total_tokens     INTEGER NOT NULL,
    ttft_ms          INTEGER,
    total_latency_ms INTEGER,
    status_code      INTEGER,
    error_kind       TEXT,
    created_at       TIMESTAMPTZ DEFAULT now()
);
CREATE INDEX llm_usage_events_tenant_time_idx ON llm_usage_events (tenant_id, created_at);

CREATE TABLE runbook_chunks (
    chunk_id    TEXT PRIMARY KEY,
    runbook     TEXT NOT NULL,
    title       TEXT NOT NULL,
    heading     TEXT NOT NULL,
    attack_ids  TEXT[] NOT NULL DEFAULT '{}',
    wazuh_groups TEXT[] NOT NULL DEFAULT '{}',
    wazuh_rules TEXT[] NOT NULL DEFAULT '{}',
    content     TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    embedding   vector(384) NOT NULL,
    loaded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX runbook_chunks_embedding_idx ON runbook_chunks
    USING hnsw (embedding vector_cosine_ops);
