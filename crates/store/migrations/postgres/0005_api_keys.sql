-- API keys (seed 004). Only a SHA-256 of each key is stored (hex, 64 characters): keys are 256
-- random bits, so a fast unsalted hash is safe and keeps the lookup an index probe. `prefix` is
-- the first characters of the key, enough to recognise it in a list, useless to an attacker.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prefix     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
