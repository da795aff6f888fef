CREATE TABLE quote_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code         TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    name         TEXT NOT NULL,
    open         TEXT NOT NULL,
    high         TEXT NOT NULL,
    low          TEXT NOT NULL,
    close        TEXT NOT NULL,
    requested_at INTEGER NOT NULL
);
CREATE INDEX quote_history_by_user ON quote_history (user_id, id DESC);
CREATE INDEX quote_history_by_code ON quote_history (code);
