//! Decoding of the values both engines store, each its own way: uuids, decimals and instants are
//! native on PostgreSQL and TEXT, TEXT and INTEGER microseconds on SQLite. Row mappers are written
//! once against [`Columns`]; `pg` and `sqlite` implement it for their rows.

use crate::StoreError;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A result row read by column index.
pub(crate) trait Columns {
    fn uuid(&self, i: usize) -> Result<Uuid, StoreError>;
    fn decimal(&self, i: usize) -> Result<Decimal, StoreError>;
    fn opt_decimal(&self, i: usize) -> Result<Option<Decimal>, StoreError>;
    fn instant(&self, i: usize) -> Result<DateTime<Utc>, StoreError>;
    fn opt_instant(&self, i: usize) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn int32(&self, i: usize) -> Result<i32, StoreError>;
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
}

/// The methods of [`Columns`] that both engines decode natively, for their `impl` blocks.
macro_rules! native_columns {
    () => {
        fn text(&self, i: usize) -> Result<String, StoreError> {
            Ok(self.try_get(i)?)
        }
        fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
            Ok(self.try_get(i)?)
        }
        fn int(&self, i: usize) -> Result<i64, StoreError> {
            Ok(self.try_get(i)?)
        }
        fn int32(&self, i: usize) -> Result<i32, StoreError> {
            Ok(self.try_get(i)?)
        }
        fn flag(&self, i: usize) -> Result<bool, StoreError> {
            Ok(self.try_get(i)?)
        }
    };
}
pub(crate) use native_columns;

/// Instants are kept to the microsecond by both engines; truncating up front makes what a caller
/// gets back from a write equal to what a later read returns.
pub(crate) fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
