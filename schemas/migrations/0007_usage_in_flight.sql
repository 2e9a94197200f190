-- Usage rows are reserved (error_kind 'in_flight') before a request is sent and settled
-- in place when it ends; a process killed mid-call leaves its rows in flight, and every
-- start settles those of earlier processes as 'abandoned' (pipeline/store/usage.py).
-- This partial index keeps that look-up to the few rows in flight, whatever the table's
-- size. status_code is NULL while in flight (and when abandoned): no HTTP answer.
CREATE INDEX IF NOT EXISTS llm_usage_events_in_flight_idx
    ON llm_usage_events (created_at) WHERE error_kind = 'in_flight';
