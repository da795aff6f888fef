//! Bar import on PostgreSQL through `COPY … FROM STDIN (FORMAT binary)`.

use crate::bars::Durability;
use crate::StoreError;
use bourse_domain::Bar;
use sqlx::encode::IsNull;
use sqlx::postgres::PgArgumentBuffer;
use sqlx::Postgres;

/// PostgreSQL import of a batch, first choice: `COPY` straight into `bars`. It is the cheapest
/// way in (no per-row statement or conflict check beyond the primary key's own), and it succeeds
/// whenever every key of the batch is new, as on a first import. A key that already exists makes
/// it fail with a unique violation, and the whole batch goes through [`STAGING`] instead.
const COPY_INTO_BARS: &str =
    "COPY bars (symbol, ts, open, high, low, close, volume) FROM STDIN (FORMAT binary)";

/// Second choice, for batches with stored keys: the batch is copied into a temporary table that
/// lives for the transaction only (no state left on a pooled connection), then upserted from it.
const STAGING: &str = "CREATE TEMP TABLE bars_import (symbol text, ts timestamptz, \
     open numeric, high numeric, low numeric, close numeric, volume int8) ON COMMIT DROP";

const COPY_INTO_STAGING: &str = "COPY bars_import FROM STDIN (FORMAT binary)";

/// The upsert from the staging table: an imported bar replaces the stored one (and forgets the
/// tick times of a live minute bar); unchanged rows are not rewritten. `ON CONFLICT` rather than
/// MERGE because it stays correct when a concurrent writer (the live roll-up, another import)
/// inserts one of these keys meanwhile, and because MERGE's join with a staging table that has no
/// statistics may be planned as a hash join over the whole of `bars`
/// (docs/decisions/0003-bar-import-upsert.md). `ORDER BY` locks rows in key order, as every
/// writer does, so that two of them cannot deadlock.
const UPSERT_STAGED: &str = "INSERT INTO bars (symbol, ts, open, high, low, close, volume) \
     SELECT symbol, ts, open, high, low, close, volume FROM bars_import ORDER BY symbol, ts \
     ON CONFLICT (symbol, ts) DO UPDATE SET open = EXCLUDED.open, high = EXCLUDED.high, \
       low = EXCLUDED.low, close = EXCLUDED.close, volume = EXCLUDED.volume, \
       open_at = NULL, close_at = NULL \
     WHERE (bars.open, bars.high, bars.low, bars.close, bars.volume, bars.open_at, bars.close_at) \
       IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, \
                         EXCLUDED.volume, NULL::timestamptz, NULL::timestamptz)";

/// Appends one field of a binary `COPY` row: its length, then the value as sqlx encodes it for a
/// bind parameter (PostgreSQL's binary send format, the same one `COPY … (FORMAT binary)` reads).
fn copy_field<'q, T>(buf: &mut PgArgumentBuffer, value: &'q T) -> Result<(), StoreError>
where
    T: sqlx::Encode<'q, Postgres>,
{
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let null = value
        .encode_by_ref(buf)
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
    let len = match null {
        // No column of `bars` is written as NULL, but a NULL is -1 with no bytes.
        IsNull::Yes => {
            buf.truncate(at + 4);
            -1
        }
        IsNull::No => i32::try_from(buf.len() - at - 4)
            .map_err(|_| StoreError::Database(sqlx::Error::Encode("field too long".into())))?,
    };
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A batch as the data of `COPY … FROM STDIN (FORMAT binary)`: signature, flags and header
/// extension length, then per row its field count and fields, then the -1 trailer. Binary rather
/// than text so that the server does not parse timestamps and decimals from text.
pub(super) fn copy_binary(bars: &[&Bar]) -> Result<Vec<u8>, StoreError> {
    let mut buf = PgArgumentBuffer::default();
    buf.reserve(19 + 2 + bars.len() * 96);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for b in bars {
        buf.extend_from_slice(&7i16.to_be_bytes());
        copy_field(&mut buf, &b.symbol.as_str())?;
        copy_field(&mut buf, &b.time)?;
        copy_field(&mut buf, &b.open)?;
        copy_field(&mut buf, &b.high)?;
        copy_field(&mut buf, &b.low)?;
        copy_field(&mut buf, &b.close)?;
        copy_field(&mut buf, &b.volume)?;
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(std::mem::take(&mut *buf))
}

/// Writes one batch (`data` from [`copy_binary`]) in a transaction of its own: straight into
/// `bars`, or through the staging table and the upsert.
pub(super) async fn copy_batch(
    pool: &sqlx::PgPool,
    data: &[u8],
    durability: Durability,
    staged: bool,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if durability == Durability::Deferred {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    if staged {
        sqlx::query(STAGING).execute(&mut *tx).await?;
    }
    let statement = if staged {
        COPY_INTO_STAGING
    } else {
        COPY_INTO_BARS
    };
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await?;
    if staged {
        sqlx::query(UPSERT_STAGED).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
