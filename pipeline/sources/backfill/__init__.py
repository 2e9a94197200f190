"""`secanalyst backfill`: replay Wazuh archives into alerts.backfill (priority batch).

reader (files, lines, truncated gzip) → filters (time, level, groups) → runner (rate
limit, publish in acknowledged chunks, checkpoint per file) ; estimate (alerts,
fingerprints, tokens, cost) before anything is sent.
"""
