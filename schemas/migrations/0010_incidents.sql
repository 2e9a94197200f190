-- Incidents (issue 13): the verdicts that share an incident key (the storm fingerprint
-- without the agent) are one row of the console's queue, with its workflow: assignee,
-- status new → in_progress → resolved (true/false positive, benign) and a note.
--
-- Kept by triggers on verdicts, so the queue reads one row per incident instead of
-- grouping a tenant's verdicts at every page view: BEFORE INSERT finds or creates the
-- incident and stamps verdicts.incident_id; AFTER INSERT (rows actually inserted, not
-- the redeliveries ON CONFLICT skips) adds the verdict to its counters.
CREATE TABLE incidents (
    id              BIGSERIAL PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    incident_key    TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    title           TEXT NOT NULL,
    first_seen      TIMESTAMPTZ NOT NULL,
    last_seen       TIMESTAMPTZ NOT NULL,
    alert_count     INTEGER NOT NULL DEFAULT 0,
    severity        TEXT NOT NULL,               -- the highest of its verdicts
    agents          TEXT[] NOT NULL DEFAULT '{}', -- distinct, at most 20 kept
    status          TEXT NOT NULL DEFAULT 'new'
                    CHECK (status IN ('new', 'in_progress', 'resolved')),
    resolution      TEXT CHECK (resolution IN ('true_positive', 'false_positive', 'benign')),
    resolution_note TEXT,
    assignee_id     BIGINT REFERENCES console_users (id) ON DELETE SET NULL,
    assignee_email  TEXT,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, incident_key),
    CHECK ((status = 'resolved') = (resolution IS NOT NULL))
);
CREATE INDEX incidents_queue_idx ON incidents (tenant_id, last_seen DESC, id DESC);
CREATE INDEX incidents_status_idx ON incidents (tenant_id, status, last_seen DESC, id DESC);
CREATE INDEX incidents_assignee_idx
    ON incidents (tenant_id, assignee_id, last_seen DESC, id DESC);

ALTER TABLE verdicts ADD COLUMN incident_id BIGINT;
CREATE INDEX verdicts_incident_id_idx
    ON verdicts (tenant_id, incident_id, created_at DESC, id DESC);

CREATE FUNCTION incident_severity_rank(severity TEXT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_position(ARRAY['info', 'low', 'medium', 'high', 'critical'], severity)
$$;

CREATE FUNCTION verdict_incident_key(v verdicts) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(NULLIF(v.incident_key, ''), 'fingerprint:' || NULLIF(v.fingerprint, ''),
                    'alert:' || v.alert_id)
$$;

CREATE FUNCTION verdict_incident_stamp() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    seen TIMESTAMPTZ := COALESCE(NEW.created_at, now());
BEGIN
    INSERT INTO incidents AS i (tenant_id, incident_key, rule_id, title, first_seen,
                                last_seen, severity)
    VALUES (NEW.tenant_id, verdict_incident_key(NEW), NEW.rule_id,
            COALESCE(NEW.facts->>'rule_description', 'rule ' || NEW.rule_id), seen, seen,
            NEW.severity)
    ON CONFLICT (tenant_id, incident_key) DO UPDATE SET first_seen = i.first_seen
    RETURNING id INTO NEW.incident_id;
    RETURN NEW;
END $$;

CREATE FUNCTION verdict_incident_count() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    seen TIMESTAMPTZ := COALESCE(NEW.created_at, now());
    agent TEXT := NEW.facts->>'agent';
BEGIN
    UPDATE incidents SET
        alert_count = alert_count + 1,
        first_seen = LEAST(first_seen, seen),
        last_seen = GREATEST(last_seen, seen),
        severity = CASE WHEN incident_severity_rank(NEW.severity)
                             > incident_severity_rank(severity)
                        THEN NEW.severity ELSE severity END,
        agents = CASE WHEN agent IS NULL OR agent = ANY(agents)
                           OR cardinality(agents) >= 20
                      THEN agents ELSE agents || agent END
    WHERE id = NEW.incident_id;
    RETURN NULL;
END $$;

-- The verdicts already stored: one incident per key, counted.
INSERT INTO incidents (tenant_id, incident_key, rule_id, title, first_seen, last_seen,
                       alert_count, severity, agents)
SELECT v.tenant_id, verdict_incident_key(v), min(v.rule_id),
       COALESCE(min(v.facts->>'rule_description'), 'rule ' || min(v.rule_id)),
       min(v.created_at), max(v.created_at), count(*),
       (ARRAY['info', 'low', 'medium', 'high', 'critical'])[
           max(incident_severity_rank(v.severity))],
       COALESCE((array_agg(DISTINCT v.facts->>'agent')
                 FILTER (WHERE v.facts->>'agent' IS NOT NULL))[1:20], '{}')
FROM verdicts v GROUP BY v.tenant_id, verdict_incident_key(v);
UPDATE verdicts v SET incident_id = i.id FROM incidents i
WHERE i.tenant_id = v.tenant_id AND i.incident_key = verdict_incident_key(v);

CREATE TRIGGER verdicts_incident_stamp BEFORE INSERT ON verdicts
    FOR EACH ROW EXECUTE FUNCTION verdict_incident_stamp();
CREATE TRIGGER verdicts_incident_count AFTER INSERT ON verdicts
    FOR EACH ROW EXECUTE FUNCTION verdict_incident_count();

ALTER TABLE incidents ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON incidents
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

-- Related alerts of one verdict: the same agent, source address or user within a window
-- around it, each lane from its own index. Runs as the owner (->> is not leakproof, so
-- under row-level security no index could serve it), restricted to app.tenant_id; the
-- console reads the rows of the returned ids back under its own role. The three lanes
-- are spelled out: an expression index only serves a constant key (facts->>'agent').
CREATE INDEX verdicts_queue_agent_idx
    ON verdicts (tenant_id, (facts->>'agent'), created_at DESC, id DESC)
    WHERE facts->>'agent' IS NOT NULL;

CREATE FUNCTION console_related_ids(center BIGINT, window_s DOUBLE PRECISION,
                                    per_lane INTEGER)
RETURNS TABLE (id BIGINT, via TEXT)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH c AS (
        SELECT v.tenant_id, v.created_at, v.facts,
               v.created_at - make_interval(secs => window_s) AS lo,
               v.created_at + make_interval(secs => window_s) AS hi
        FROM verdicts v
        WHERE v.id = center AND v.tenant_id = current_setting('app.tenant_id', true))
    SELECT r.id, 'agent' FROM c CROSS JOIN LATERAL (
        SELECT v.id FROM verdicts v
        WHERE v.tenant_id = c.tenant_id AND v.facts->>'agent' IS NOT NULL
          AND v.facts->>'agent' = c.facts->>'agent'
          AND v.created_at BETWEEN c.lo AND c.hi AND v.id <> center
        ORDER BY v.created_at DESC, v.id DESC LIMIT per_lane) r
    UNION ALL
    SELECT r.id, 'src_ip' FROM c CROSS JOIN LATERAL (
        SELECT v.id FROM verdicts v
        WHERE v.tenant_id = c.tenant_id AND v.facts->>'src_ip' IS NOT NULL
          AND v.facts->>'src_ip' = c.facts->>'src_ip'
          AND v.created_at BETWEEN c.lo AND c.hi AND v.id <> center
        ORDER BY v.created_at DESC, v.id DESC LIMIT per_lane) r
    UNION ALL
    SELECT r.id, 'user' FROM c CROSS JOIN LATERAL (
        SELECT v.id FROM verdicts v
        WHERE v.tenant_id = c.tenant_id AND v.facts->>'user' IS NOT NULL
          AND v.facts->>'user' = c.facts->>'user'
          AND v.created_at BETWEEN c.lo AND c.hi AND v.id <> center
        ORDER BY v.created_at DESC, v.id DESC LIMIT per_lane) r
$$;
REVOKE ALL ON FUNCTION console_related_ids(BIGINT, DOUBLE PRECISION, INTEGER) FROM PUBLIC;

-- console_grant (migration 0006) as it was, plus the console's rights on incidents and
-- related alerts: the
-- console calls it at start, so a database whose role came later gets them too.
CREATE OR REPLACE FUNCTION console_grant() RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'secanalyst_console') THEN
        BEGIN
            CREATE ROLE secanalyst_console NOLOGIN NOINHERIT;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role secanalyst_console: create it as a superuser';
            RETURN false;
        END;
    END IF;
    EXECUTE 'GRANT USAGE ON SCHEMA public TO secanalyst_console';
    EXECUTE 'GRANT SELECT ON verdicts, alerts, runbook_chunks, llm_usage_events, '
            'feedback, audit_log TO secanalyst_console';
    EXECUTE 'GRANT UPDATE (severity, severity_source, attack, analyst_status) '
            'ON verdicts TO secanalyst_console';
    EXECUTE 'GRANT INSERT ON feedback, audit_log TO secanalyst_console';
    EXECUTE 'GRANT SELECT (id, tenant_id, email, role, disabled_at, created_at), '
            'INSERT (tenant_id, email, role, password_hash), UPDATE (role, disabled_at) '
            'ON console_users TO secanalyst_console';
    EXECUTE 'GRANT SELECT (key_id, tenant_id, name, created_at, revoked_at), '
            'INSERT (key_id, tenant_id, name, key_hash), UPDATE (revoked_at) '
            'ON api_keys TO secanalyst_console';
    EXECUTE 'GRANT EXECUTE ON FUNCTION '
            'console_queue_ids(JSONB, TIMESTAMPTZ, BIGINT, INTEGER) TO secanalyst_console';
    EXECUTE 'GRANT EXECUTE ON FUNCTION '
            'console_related_ids(BIGINT, DOUBLE PRECISION, INTEGER) TO secanalyst_console';
    EXECUTE 'GRANT SELECT, UPDATE (status, resolution, resolution_note, assignee_id, '
            'assignee_email, updated_at) ON incidents TO secanalyst_console';
    EXECUTE 'GRANT USAGE ON SEQUENCE feedback_id_seq, audit_log_id_seq, '
            'console_users_id_seq TO secanalyst_console';
    BEGIN
        EXECUTE format('GRANT secanalyst_console TO %I', current_user);
    EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
        NULL;  -- already a member (granted by the superuser that created the role)
    END;
    RETURN true;
END $$;
SELECT console_grant();
