-- Same schema as PostgreSQL's (see there). Decimals TEXT, instants INTEGER microseconds, UUIDs
-- TEXT, JSON TEXT.
CREATE TABLE orders (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type        TEXT NOT NULL CHECK (type IN ('market', 'limit')),
    side        TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    instrument  TEXT NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    limit_price TEXT,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'placed', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    placed_at   INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK ((type = 'limit') = (limit_price IS NOT NULL))
);
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_by_created ON orders (created_at DESC, id DESC);

CREATE TABLE outbox (
    order_id        TEXT PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    claimed_by      TEXT,
    lease_until     INTEGER
) WITHOUT ROWID;
CREATE INDEX outbox_due ON outbox (next_attempt_at);

CREATE TABLE order_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id     TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    event        TEXT NOT NULL,
    at           INTEGER NOT NULL,
    data         TEXT NOT NULL,
    published_at INTEGER
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);
CREATE INDEX order_events_unpublished ON order_events (id) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    order_id    TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
