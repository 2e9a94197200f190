-- Which weights and which engine made each runbook passage's vector (issue 15). A passage
-- whose vector came from other weights, or from an engine whose vectors are not
-- interchangeable with the current one (int8 vs float), is re-embedded by
-- `secanalyst runbooks load`. '' = loaded before this was recorded (re-embedded once).
ALTER TABLE runbook_chunks
    ADD COLUMN embedding_model   TEXT NOT NULL DEFAULT '',
    ADD COLUMN embedding_backend TEXT NOT NULL DEFAULT '';
