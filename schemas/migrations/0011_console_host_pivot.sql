-- The host pivot (issue 13): "everything on this host" reads the agent from the
-- verdict's facts through verdicts_queue_agent_idx (migration 0010). The `agent` filter
-- (an EXISTS on alerts) stays for verdicts stored before facts existed, but for a rare
-- agent it walks the whole tenant; pivots from a verdict page use `host`.
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
    IF filters ? 'host' THEN  -- the agent named in the verdict's facts (indexed)
        sql := sql || ' AND v.facts->>''agent'' IS NOT NULL'
                   || ' AND v.facts->>''agent'' = $2->>''host''';
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
