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
