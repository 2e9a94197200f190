-- Per-tenant API keys of the gateway. A key reads "sak_<key_id>_<secret>": key_id is
-- public (shown by `apikeys list`, used to revoke) and is the indexed lookup; only an
-- HMAC-SHA256 of the whole key under a server-side pepper is stored, never the key.
CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    key_hash    BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at);
