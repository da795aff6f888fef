//! Ending a user's access: disabling, enabling, a new password, revoking API keys; and the
//! feed of those changes that lets every API replica forget the user's cached credentials.
//!
//! Each change updates the user (or their keys) and appends a row to `credential_changes` in one
//! transaction. Replicas read the rows after the last one they saw: on PostgreSQL when
//! `NOTIFY bourse_credentials` wakes them (sent by the same transaction, so on commit) and on a
//! timer in any case, because a notification sent while a listener reconnects is lost; on SQLite,
//! which has no notifications between processes, on the timer alone (an index probe a second).

use crate::sqlite_codec::{micros, uuid};
use crate::{Db, Store, StoreError};
use chrono::Utc;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

/// The PostgreSQL channel that wakes replicas after a change.
const CHANNEL: &str = "bourse_credentials";

/// A change to a user's credentials.
#[derive(Clone)]
pub enum CredentialChange {
    /// Refuse every credential of the user and end their login tokens.
    Disable,
    /// Accept the user's password and API keys again (login tokens ended by a disable stay ended).
    Enable,
    /// Replace the password (its hash) and end the user's login tokens.
    Password(String),
    /// Revoke every API key of the user. Login tokens stay: they were issued for the password,
    /// and no key can be exchanged for one.
    RevokeKeys,
}

impl std::fmt::Debug for CredentialChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.action())
    }
}

impl CredentialChange {
    /// The name recorded in `credential_changes.action` (never the hash).
    pub fn action(&self) -> &'static str {
        match self {
            CredentialChange::Disable => "disable",
            CredentialChange::Enable => "enable",
            CredentialChange::Password(_) => "password",
            CredentialChange::RevokeKeys => "revoke-keys",
        }
    }
}

const RECORD: &str =
    "INSERT INTO credential_changes (user_id, action, changed_at) VALUES ($1, $2, $3) RETURNING seq";
const SINCE: &str = "SELECT seq, user_id FROM credential_changes WHERE seq > $1 ORDER BY seq";
const LATEST: &str = "SELECT COALESCE(MAX(seq), 0) FROM credential_changes";

/// Runs the statement of `$change` in `$tx` with the user id and the instant as each engine binds
/// them; evaluates to the number of rows it changed (the keys revoked, or 1 for the user).
macro_rules! apply {
    ($change:expr, $tx:expr, $id:expr, $now:expr) => {
        match $change {
            CredentialChange::Disable => sqlx::query(
                "UPDATE users SET active = $2, token_version = token_version + 1 WHERE id = $1",
            )
            .bind($id)
            .bind(false),
            CredentialChange::Enable => {
                sqlx::query("UPDATE users SET active = $2 WHERE id = $1")
                    .bind($id)
                    .bind(true)
            }
            CredentialChange::Password(hash) => sqlx::query(
                "UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1",
            )
            .bind($id)
            .bind(hash.as_str()),
            CredentialChange::RevokeKeys => sqlx::query(
                "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind($id)
            .bind($now),
        }
        .execute(&mut *$tx)
        .await?
        .rows_affected()
    };
}

impl Store {
    /// Applies `change` to the user `id` and records it, in one transaction; returns the rows
    /// changed (for `RevokeKeys`, the keys revoked).
    pub async fn change_credentials(
        &self,
        id: Uuid,
        change: &CredentialChange,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Changes commit one at a time, so that `seq` grows in commit order and a replica
                // that has read up to `seq` N can never later see a row below N appear.
                sqlx::query("LOCK TABLE credential_changes IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                let changed = apply!(change, tx, id, now);
                let seq: i64 = sqlx::query_scalar(RECORD)
                    .bind(id)
                    .bind(change.action())
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(seq.to_string())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(changed)
            }
            // One writer connection: commits are already in `seq` order.
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                let changed = apply!(change, tx, id.to_string(), micros(now));
                sqlx::query(RECORD)
                    .bind(id.to_string())
                    .bind(change.action())
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(changed)
            }
        }
    }

    /// The last recorded change (0 when there is none).
    pub async fn latest_credential_change(&self) -> Result<i64, StoreError> {
        Ok(match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar(LATEST).fetch_one(pool).await?,
            Db::Sqlite { read, .. } => sqlx::query_scalar(LATEST).fetch_one(read).await?,
        })
    }

    /// The changes after `seq`, oldest first: `(seq, user id)`.
    pub async fn credential_changes_since(&self, seq: i64) -> Result<Vec<(i64, Uuid)>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(SINCE).bind(seq).fetch_all(pool).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            }
            Db::Sqlite { read, .. } => {
                let rows = sqlx::query(SINCE).bind(seq).fetch_all(read).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, uuid(&r.try_get::<String, _>(1)?)?)))
                    .collect()
            }
        }
    }

    /// Starts following credential changes from now on (see the module doc).
    pub async fn watch_credentials(&self, every: Duration) -> Result<CredentialWatch, StoreError> {
        let listener = match &self.db {
            Db::Postgres(pool) => {
                // A connection of its own, not one taken from the pool for good.
                let own = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with((*pool.connect_options()).clone());
                let mut listener = PgListener::connect_with(&own).await?;
                listener.listen(CHANNEL).await?;
                Some(listener)
            }
            Db::Sqlite { .. } => None,
        };
        let mut timer = tokio::time::interval(every.max(Duration::from_millis(10)));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(CredentialWatch {
            last: self.latest_credential_change().await?,
            store: self.clone(),
            listener,
            timer,
        })
    }
}

/// Credential changes as they happen, from [`Store::watch_credentials`].
pub struct CredentialWatch {
    store: Store,
    last: i64,
    listener: Option<PgListener>,
    timer: tokio::time::Interval,
}

impl CredentialWatch {
    /// Waits for the next changes and returns the users they concern.
    pub async fn next(&mut self) -> Result<Vec<Uuid>, StoreError> {
        loop {
            match &mut self.listener {
                // `recv` is cancel-safe; it reconnects by itself after an error, which is
                // returned once (and then the timer paces the retries).
                Some(listener) => tokio::select! {
                    woken = listener.recv() => {
                        if let Err(e) = woken {
                            tracing::warn!(error = %e, "credential notifications interrupted");
                            self.timer.tick().await;
                        }
                    }
                    _ = self.timer.tick() => {}
                },
                None => {
                    self.timer.tick().await;
                }
            }
            let changes = self.store.credential_changes_since(self.last).await?;
            if let Some((seq, _)) = changes.last() {
                self.last = *seq;
                return Ok(changes.into_iter().map(|(_, user)| user).collect());
            }
        }
    }
}
