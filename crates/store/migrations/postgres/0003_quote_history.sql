-- Every successful quote a user asked for (seed 001's history and stats).
CREATE TABLE quote_history (
    id           BIGSERIAL PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code         TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    name         TEXT NOT NULL,
    open         NUMERIC NOT NULL,
    high         NUMERIC NOT NULL,
    low          NUMERIC NOT NULL,
    close        NUMERIC NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX quote_history_by_user ON quote_history (user_id, id DESC);
CREATE INDEX quote_history_by_code ON quote_history (code);
