-- OHLCV bars: daily bars from `bourse import`, 1-minute bars rolled up from live ticks (under the
-- stock's name). The primary key is the (symbol, ts) index that every range scan uses.
-- open_at / close_at: timestamps of the ticks that set open and close (minute bars of live
-- ticks only), so that a late, older tick can still become the open; NULL for imported bars.
CREATE TABLE bars (
    symbol   TEXT NOT NULL,
    ts       TIMESTAMPTZ NOT NULL,
    open     NUMERIC NOT NULL,
    high     NUMERIC NOT NULL,
    low      NUMERIC NOT NULL,
    close    NUMERIC NOT NULL,
    volume   BIGINT NOT NULL,
    open_at  TIMESTAMPTZ,
    close_at TIMESTAMPTZ,
    PRIMARY KEY (symbol, ts)
);
