-- Same as PostgreSQL's: decimals TEXT (exact), instants INTEGER microseconds. WITHOUT ROWID keeps
-- the rows clustered by (symbol, ts), so a range scan of one symbol reads consecutive pages.
CREATE TABLE bars (
    symbol   TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    open     TEXT NOT NULL,
    high     TEXT NOT NULL,
    low      TEXT NOT NULL,
    close    TEXT NOT NULL,
    volume   INTEGER NOT NULL,
    open_at  INTEGER,
    close_at INTEGER,
    PRIMARY KEY (symbol, ts)
) WITHOUT ROWID;
