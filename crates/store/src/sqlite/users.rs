//! [`UserRepo`] on SQLite. There are no notifications between processes: credential changes are
//! found by polling alone.

use super::{micros, Sqlite};
use crate::credentials::{self, ChangeSignal, CredentialChange};
use crate::users::{self, Credentials, Lookup, NewApiKey, Registration, UserRepo};
use crate::StoreError;
use async_trait::async_trait;
use chrono::Utc;
use sqlx::SqliteConnection;
use uuid::Uuid;

/// Stores an API key of `user` (`at` in microseconds).
async fn insert_key(
    conn: &mut SqliteConnection,
    user: &str,
    key: &NewApiKey,
    at: i64,
) -> Result<(), StoreError> {
    let insert = sqlx::query(
        "INSERT INTO api_keys (key_hash, user_id, prefix, created_at) VALUES (?, ?, ?, ?)",
    );
    let insert = users::bind_key(insert, key, user, at);
    insert.execute(conn).await.map_err(users::key_taken)?;
    Ok(())
}

#[async_trait]
impl UserRepo for Sqlite {
    async fn insert_user(&self, new: Registration<'_>) -> Result<(), StoreError> {
        let (id, at) = (new.id.to_string(), micros(Utc::now()));
        let mut tx = self.begin_write().await?;
        let insert = sqlx::query(
            "INSERT INTO users (id, username, email, first_name, last_name, password_hash, role, active, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
        )
        .bind(id.as_str());
        users::bind_profile(insert, new.user)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(users::user_taken)?;
        if let Some(key) = new.key {
            insert_key(&mut tx, &id, key, at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_api_key(&self, user_id: Uuid, key: &NewApiKey) -> Result<(), StoreError> {
        let mut writer = self.write.acquire().await?;
        let user = user_id.to_string();
        insert_key(&mut writer, &user, key, micros(Utc::now())).await
    }

    async fn find(&self, key: Lookup, value: &str) -> Result<Option<Credentials>, StoreError> {
        let condition = match key {
            Lookup::Username => "username = ?",
            Lookup::Id => "id = ?",
            Lookup::ApiKeyHash => {
                "id = (SELECT user_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL)"
            }
        };
        let sql = format!("SELECT {} FROM users WHERE {condition}", users::COLUMNS);
        let found = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.read)
            .await?;
        found.as_ref().map(users::credentials).transpose()
    }

    async fn count_users(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await?;
        Ok(count)
    }

    /// One writer connection: commits are already in `seq` order.
    async fn change_credentials(
        &self,
        id: Uuid,
        change: &CredentialChange,
    ) -> Result<u64, StoreError> {
        let now = micros(Utc::now());
        let user = id.to_string();
        let mut tx = self.begin_write().await?;
        let statement = match change {
            CredentialChange::Disable => sqlx::query(
                "UPDATE users SET active = ?2, token_version = token_version + 1 WHERE id = ?1",
            )
            .bind(user.as_str())
            .bind(false),
            CredentialChange::Enable => sqlx::query("UPDATE users SET active = ?2 WHERE id = ?1")
                .bind(user.as_str())
                .bind(true),
            CredentialChange::Password(hash) => sqlx::query(
                "UPDATE users SET password_hash = ?2, token_version = token_version + 1 WHERE id = ?1",
            )
            .bind(user.as_str())
            .bind(hash.as_str()),
            CredentialChange::RevokeKeys => sqlx::query(
                "UPDATE api_keys SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            )
            .bind(user.as_str())
            .bind(now),
        };
        let changed = statement.execute(&mut *tx).await?.rows_affected();
        sqlx::query(
            "INSERT INTO credential_changes (user_id, action, changed_at) VALUES (?, ?, ?)",
        )
        .bind(user.as_str())
        .bind(change.action())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn latest_credential_change(&self) -> Result<i64, StoreError> {
        let latest = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM credential_changes")
            .fetch_one(&self.read)
            .await?;
        Ok(latest)
    }

    async fn credential_changes_since(&self, seq: i64) -> Result<Vec<(i64, Uuid)>, StoreError> {
        let changes =
            sqlx::query("SELECT seq, user_id FROM credential_changes WHERE seq > ? ORDER BY seq")
                .bind(seq)
                .fetch_all(&self.read)
                .await?;
        changes.iter().map(credentials::change).collect()
    }

    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>, StoreError> {
        Ok(None)
    }
}
