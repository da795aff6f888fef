-- Live feed: the latest state per stock, every tick, analyst targets, and rejected messages.
CREATE TABLE stocks (
    stock_id     UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    price        NUMERIC NOT NULL,
    availability BIGINT NOT NULL,
    price_at     TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX stocks_by_name ON stocks (name, stock_id);

CREATE TABLE ticks (
    stock_id     UUID NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    price        NUMERIC NOT NULL,
    availability BIGINT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stock_id, ts)
);

CREATE TABLE analyses (
    stock_id    UUID PRIMARY KEY REFERENCES stocks (stock_id) ON DELETE CASCADE,
    target      NUMERIC NOT NULL CHECK (target > 0),
    kind        TEXT NOT NULL CHECK (kind IN ('UP', 'DOWN')),
    target_hit  BOOLEAN NOT NULL DEFAULT false,
    hit_price   NUMERIC,
    hit_at      TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    reason      TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT,
    first_name    TEXT,
    last_name     TEXT,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    active        BOOLEAN NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_ci ON users (lower(email));
