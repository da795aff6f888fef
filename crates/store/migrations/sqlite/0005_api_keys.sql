-- Same schema as PostgreSQL's (instants in INTEGER microseconds, UUIDs as TEXT).
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prefix     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
