-- Same schema as PostgreSQL's. Decimals are TEXT (exact), instants INTEGER microseconds since
-- the epoch (ordered and comparable), UUIDs hyphenated TEXT.
CREATE TABLE stocks (
    stock_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    price        TEXT NOT NULL,
    availability INTEGER NOT NULL,
    price_at     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX stocks_by_name ON stocks (name, stock_id);

CREATE TABLE ticks (
    stock_id     TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    price        TEXT NOT NULL,
    availability INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (stock_id, ts)
) WITHOUT ROWID;

CREATE TABLE analyses (
    stock_id    TEXT PRIMARY KEY REFERENCES stocks (stock_id) ON DELETE CASCADE,
    target      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('UP', 'DOWN')),
    target_hit  INTEGER NOT NULL DEFAULT 0,
    hit_price   TEXT,
    hit_at      INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    payload     BLOB NOT NULL,
    reason      TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT,
    first_name    TEXT,
    last_name     TEXT,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    active        INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_email_ci ON users (lower(email));
