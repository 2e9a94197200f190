-- The review console (issue #6): tenants, analyst accounts, sessions, feedback, audit log,
-- and tenant isolation in the database itself.
--
-- The pipeline connects as the table owner, which row-level security does not apply to
-- (no FORCE here). The console runs every tenant query under `SET LOCAL ROLE
-- secanalyst_console` (a non-owner, non-login role) with `SET LOCAL app.tenant_id`, so the
-- policies below decide what it can see and change.

CREATE TABLE tenants (
    tenant_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE console_users (
    id            BIGSERIAL PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (tenant_id),
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,              -- argon2id (PHC string)
    role          TEXT NOT NULL CHECK (role IN ('analyst', 'admin')),
    disabled_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX console_users_email_idx ON console_users (lower(email));

-- Only a SHA-256 of the session token is stored; the cookie holds the token.
CREATE TABLE console_sessions (
    token_hash  BYTEA PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES console_users (id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);

CREATE TABLE feedback (
    id            BIGSERIAL PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    verdict_id    BIGINT NOT NULL REFERENCES verdicts (id) ON DELETE CASCADE,
    user_id       BIGINT REFERENCES console_users (id),
    user_email    TEXT NOT NULL,
    action        TEXT NOT NULL
                  CHECK (action IN ('confirm', 'severity', 'false_positive', 'attack', 'note')),
    old_value     JSONB,
    new_value     JSONB,
    note          TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX feedback_verdict_idx ON feedback (tenant_id, verdict_id, created_at DESC);

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    user_id     BIGINT,
    user_email  TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    detail      JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, action, created_at);

-- The queue: keyset pagination (tenant, created_at DESC, id DESC) exists
-- (verdicts_queue_idx); the filtered variants and full-text search need their own.
CREATE INDEX verdicts_queue_severity_idx
    ON verdicts (tenant_id, severity, created_at DESC, id DESC);
CREATE INDEX verdicts_queue_status_idx
    ON verdicts (tenant_id, analyst_status, created_at DESC, id DESC);
CREATE INDEX verdicts_queue_rule_idx
    ON verdicts (tenant_id, rule_id, created_at DESC, id DESC);
CREATE INDEX verdicts_summary_fts_idx
    ON verdicts USING gin (to_tsvector('english', summary));
CREATE INDEX verdicts_attack_idx ON verdicts USING gin (attack jsonb_path_ops);

-- Tenant isolation. current_setting(..., true) is NULL when unset: no rows at all.
ALTER TABLE verdicts ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE feedback ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_usage_events ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON verdicts
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY tenant_isolation ON alerts
    USING (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY tenant_isolation ON feedback
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
-- Usage rows: the tenant's own, or every tenant's for the platform's admins (the console
-- sets app.usage_all_tenants only for admins of console.platform_tenant).
CREATE POLICY tenant_isolation ON llm_usage_events
    USING (tenant_id = current_setting('app.tenant_id', true)
           OR current_setting('app.usage_all_tenants', true) = 'on');

-- Row-level security keeps non-leakproof operators (tsvector @@, jsonb @>) out of index
-- conditions, so under the console's role the GIN indexes could not serve a search: a
-- rare term would scan the whole tenant. For queue pages that search, this function runs
-- as the owner (every index usable, one plan per call), restricted to the tenant in
-- app.tenant_id, and returns only the page's ids; the console then reads those rows under
-- its own role, where the policies still apply.
CREATE FUNCTION console_queue_ids(filters JSONB, after_ts TIMESTAMPTZ, after_id BIGINT,
                                  lim INTEGER) RETURNS SETOF BIGINT
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    tenant TEXT := current_setting('app.tenant_id', true);
    sql TEXT := 'SELECT v.id FROM verdicts v WHERE v.tenant_id = $1';
BEGIN
    IF tenant IS NULL THEN
        RETURN;
    END IF;
    IF filters ? 'severity' THEN sql := sql || ' AND v.severity = $2->>''severity'''; END IF;
    IF filters ? 'status' THEN
        sql := sql || ' AND v.analyst_status = $2->>''status''';
    END IF;
    IF filters ? 'rule' THEN sql := sql || ' AND v.rule_id = $2->>''rule'''; END IF;
    IF filters ? 'agent' THEN
        sql := sql || ' AND EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = v.tenant_id'
                   || ' AND a.alert_id = v.alert_id AND a.agent_name = $2->>''agent'')';
    END IF;
    IF filters ? 'technique' THEN
        sql := sql || ' AND v.attack @> jsonb_build_array(jsonb_build_object('
                   || '''id'', $2->>''technique''))';
    END IF;
    IF filters ? 'since' THEN
        sql := sql || ' AND v.created_at >= ($2->>''since'')::timestamptz';
    END IF;
    IF filters ? 'until' THEN
        sql := sql || ' AND v.created_at < ($2->>''until'')::timestamptz';
    END IF;
    IF filters ? 'search' THEN
        sql := sql || ' AND to_tsvector(''english'', v.summary)'
                   || ' @@ websearch_to_tsquery(''english'', $2->>''search'')';
    END IF;
    IF after_ts IS NOT NULL THEN
        sql := sql || ' AND (v.created_at, v.id) < ($3, $4)';
    END IF;
    sql := sql || ' ORDER BY v.created_at DESC, v.id DESC LIMIT $5';
    RETURN QUERY EXECUTE sql USING tenant, filters, after_ts, after_id, lim;
END $$;
REVOKE ALL ON FUNCTION console_queue_ids(JSONB, TIMESTAMPTZ, BIGINT, INTEGER) FROM PUBLIC;

-- The console's role and its privileges, in a function the console also calls at start
-- (as the owner, idempotent): a database migrated before the role existed gets its
-- grants then. Creating the role needs CREATEROLE or a superuser (the embedded stack's
-- bootstrap creates it); without it the console refuses to start and says why, and the
-- pipeline is unaffected. The console may read accounts of its tenant but never their
-- password hashes.
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;  -- the gateway reads keys as the owner
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
ALTER TABLE console_users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_users
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));

CREATE FUNCTION console_grant() RETURNS BOOLEAN LANGUAGE plpgsql AS $$
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
