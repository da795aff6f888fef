/// Errors of the storage layer. The API maps `Conflict` to 409 and everything else to 500
/// without showing the text to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A background writer (see [`crate::group_commit`]) is gone: shutting down.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Maps a unique-constraint violation to `Conflict` and leaves anything else as it is.
    pub(crate) fn from_insert(err: sqlx::Error, what: &str) -> StoreError {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return StoreError::Conflict(what.to_string());
            }
        }
        StoreError::Database(err)
    }
}

impl StoreError {
    /// True when the database refused the data itself (a value out of range, a constraint): the
    /// same data fails again however often it is retried. Anything else (connection refused or
    /// lost, pool exhausted, shutdown, lock contention, an error not known to be about the data)
    /// is treated as an outage and worth retrying as is: stalling is visible, dropping is not.
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                db.code().is_some_and(|code| data_code(&code))
            }
            StoreError::Database(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    }
}

/// PostgreSQL SQLSTATE classes 22 (data exception) and 23 (integrity constraint); SQLite's TOOBIG,
/// CONSTRAINT, MISMATCH and RANGE primary codes (extended codes keep them in the low byte).
/// SQLSTATEs always have five characters; SQLite's codes are numbers of at most four digits.
fn data_code(code: &str) -> bool {
    if code.len() < 5 {
        return code
            .parse::<u32>()
            .is_ok_and(|sqlite| matches!(sqlite & 0xff, 18 | 19 | 20 | 25));
    }
    matches!(code.get(..2), Some("22" | "23"))
}

#[cfg(test)]
mod tests {
    use super::data_code;

    #[test]
    fn data_errors_are_told_from_outages() {
        for code in [
            "22008", "22003", "23514", "23505", "19", "1811", "2067", "20", "25",
        ] {
            assert!(data_code(code), "{code}");
        }
        for code in [
            "08006", "08001", "57P01", "53300", "40001", "55000", "5", "517", "10", "13",
        ] {
            assert!(!data_code(code), "{code}");
        }
    }
}
