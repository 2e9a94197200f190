-- Settling a usage row (pipeline/store/usage.py) rewrites its tokens, status and
-- error_kind in place. PostgreSQL can do that as a HOT update — the new row version on
-- the same page, no new entry in any index — only if no index refers to a changed column
-- (a partial index's WHERE counts) and the page has room. Measured on this machine
-- (bench/usage_events.py): a settle cost the server ~21 µs of CPU per row as a normal
-- update, ~7 µs as a HOT one. So:
-- 1. the partial index on in-flight rows (WHERE error_kind = 'in_flight', 0007) goes:
--    the start-up settlement of abandoned rows finds them instead from a mark of how far
--    earlier starts have settled (llm_usage_abandoned_mark) and a BRIN index on
--    created_at (rows arrive in time order; a summarizing index never blocks HOT);
-- 2. partitions keep half of each page free (fillfactor 50) for the settled versions
--    (at 70 only half of the settles found room). New partitions get it too
--    (pipeline/store/usage_partitions.py); existing pages keep their layout.
DROP INDEX IF EXISTS llm_usage_events_in_flight_idx;
CREATE INDEX IF NOT EXISTS llm_usage_events_created_brin
    ON llm_usage_events USING brin (created_at);

CREATE TABLE IF NOT EXISTS llm_usage_abandoned_mark (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    settled_before TIMESTAMPTZ NOT NULL  -- in-flight rows created before this: settled
);

DO $$
DECLARE
    part REGCLASS;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                WHERE inhparent = 'llm_usage_events'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', part);
    END LOOP;
END $$;
