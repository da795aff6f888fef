-- Orders (seed 002): the order, its outbox row (work for the relay, written in the same
-- transaction), its event history, and the idempotency keys of POST /orders, scoped to the user.
CREATE TABLE orders (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type        TEXT NOT NULL CHECK (type IN ('market', 'limit')),
    side        TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    instrument  TEXT NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    limit_price NUMERIC CHECK (limit_price > 0),
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'placed', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    placed_at   TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CHECK ((type = 'limit') = (limit_price IS NOT NULL))
);
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_by_created ON orders (created_at DESC, id DESC);

-- One row per order still to be placed. `next_attempt_at` is when it is due; a relay that claims
-- it moves `next_attempt_at` to the end of its lease (= `lease_until`), so an expired lease makes
-- the row due again without a separate scan.
CREATE TABLE outbox (
    order_id        UUID PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_by      TEXT,
    lease_until     TIMESTAMPTZ
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

-- Every state change of an order. `published_at` is set once the event reached RabbitMQ (when
-- one is configured), so that publishing survives crashes of the relay.
CREATE TABLE order_events (
    id           BIGSERIAL PRIMARY KEY,
    order_id     UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    event        TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    data         JSONB NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX order_events_by_order ON order_events (order_id, id);
CREATE INDEX order_events_unpublished ON order_events (id) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    order_id    UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
