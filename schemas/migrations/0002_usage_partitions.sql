-- llm_usage_events becomes partitioned by month (declarative partitioning), so that
-- retention is a DETACH + DROP of whole months instead of a DELETE that bloats the table.
-- A DEFAULT partition catches rows no monthly partition covers (never lose a write);
-- `secanalyst db migrate` creates the months ahead (pipeline/store/usage_partitions.py).
DROP INDEX IF EXISTS llm_usage_events_tenant_time_idx;
ALTER TABLE llm_usage_events RENAME TO llm_usage_events_old;
ALTER TABLE llm_usage_events_old RENAME CONSTRAINT llm_usage_events_pkey
    TO llm_usage_events_old_pkey;

CREATE TABLE llm_usage_events (
    id               UUID NOT NULL,
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
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX llm_usage_events_tenant_time_idx ON llm_usage_events (tenant_id, created_at);
CREATE INDEX llm_usage_events_alert_idx ON llm_usage_events (tenant_id, alert_id);

CREATE TABLE llm_usage_events_default PARTITION OF llm_usage_events DEFAULT;

-- One partition for every month that already has rows, and this month: named
-- llm_usage_events_pYYYY_MM, bounds [first of month, first of next month) in UTC.
DO $$
DECLARE
    month_start TIMESTAMPTZ;
BEGIN
    FOR month_start IN
        SELECT DISTINCT date_trunc('month', COALESCE(created_at, now()) AT TIME ZONE 'UTC')
                            AT TIME ZONE 'UTC'
        FROM llm_usage_events_old
        UNION
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF llm_usage_events FOR VALUES FROM (%L) TO (%L)',
            'llm_usage_events_p' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM'),
            month_start, month_start + interval '1 month');
    END LOOP;
END $$;

INSERT INTO llm_usage_events (id, tenant_id, model_name, pool, replica, priority, request_id,
                              alert_id, input_tokens, output_tokens, total_tokens, ttft_ms,
                              total_latency_ms, status_code, error_kind, created_at)
SELECT id, tenant_id, model_name, pool, replica, priority, request_id, alert_id,
       input_tokens, output_tokens, total_tokens, ttft_ms, total_latency_ms, status_code,
       error_kind, COALESCE(created_at, now())
FROM llm_usage_events_old;

DROP TABLE llm_usage_events_old;
