-- Same schema as PostgreSQL's; replicas poll credential_changes (SQLite has no NOTIFY).
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE credential_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT NOT NULL,
    action     TEXT NOT NULL,
    changed_at INTEGER NOT NULL
);
