-- The console as an investigation tool (issue 13): the original Wazuh alert kept beside
-- the normalized record (shown escaped on the verdict page), and queue pivots on the
-- verdict's facts (source/destination IP, user) — indexed like the other queue filters.
-- TEXT holding JSON with every non-ASCII character escaped: jsonb refuses \u0000 and a
-- lone surrogate, and alert content is attacker-controlled; nothing queries inside it.
ALTER TABLE alerts ADD COLUMN raw TEXT;  -- NULL for alerts stored before this migration

CREATE INDEX verdicts_queue_src_ip_idx
    ON verdicts (tenant_id, (facts->>'src_ip'), created_at DESC, id DESC)
    WHERE facts->>'src_ip' IS NOT NULL;
CREATE INDEX verdicts_queue_dst_ip_idx
    ON verdicts (tenant_id, (facts->>'dst_ip'), created_at DESC, id DESC)
    WHERE facts->>'dst_ip' IS NOT NULL;
CREATE INDEX verdicts_queue_user_idx
    ON verdicts (tenant_id, (facts->>'user'), created_at DESC, id DESC)
    WHERE facts->>'user' IS NOT NULL;

-- console_queue_ids (migration 0006) gains the entity filters. jsonb ->> is not
-- leakproof, so under row-level security these conditions could not use the indexes
-- above: pivots go through this owner function like searches do.
CREATE OR REPLACE FUNCTION console_queue_ids(filters JSONB, after_ts TIMESTAMPTZ,
                                             after_id BIGINT, lim INTEGER)
RETURNS SETOF BIGINT
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    tenant TEXT := current_setting('app.tenant_id', true);
    sql TEXT := 'SELECT v.id FROM verdicts v WHERE v.tenant_id = $1';
    entity TEXT;
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
    FOREACH entity IN ARRAY ARRAY['src_ip', 'dst_ip', 'user'] LOOP
        IF filters ? entity THEN  -- the names are the fixed list above, never user input
            sql := sql || format(' AND v.facts->>%L IS NOT NULL AND v.facts->>%L = $2->>%L',
                                 entity, entity, entity);
        END IF;
    END LOOP;
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
