//! [`UserRepo`] on PostgreSQL, with credential changes announced by `NOTIFY`.

use super::Pg;
use crate::credentials::{self, ChangeSignal, CredentialChange};
use crate::users::{self, Credentials, Lookup, NewApiKey, Registration, UserRepo};
use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgConnection;
use uuid::Uuid;

/// The channel that wakes replicas after a change.
const CHANNEL: &str = "bourse_credentials";

/// Stores an API key of `user`.
async fn insert_key(
    conn: &mut PgConnection,
    user: Uuid,
    key: &NewApiKey,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let insert = sqlx::query(
        "INSERT INTO api_keys (key_hash, user_id, prefix, created_at) VALUES ($1, $2, $3, $4)",
    );
    let insert = users::bind_key(insert, key, user, at);
    insert.execute(conn).await.map_err(users::key_taken)?;
    Ok(())
}

struct Listener(PgListener);

#[async_trait]
impl ChangeSignal for Listener {
    async fn recv(&mut self) -> Result<(), StoreError> {
        self.0.recv().await?;
        Ok(())
    }
}

#[async_trait]
impl UserRepo for Pg {
    async fn insert_user(&self, new: Registration<'_>) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let insert = sqlx::query(
            "INSERT INTO users (id, username, email, first_name, last_name, password_hash, role, active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new.id);
        users::bind_profile(insert, new.user)
            .bind(true)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(users::user_taken)?;
        if let Some(key) = new.key {
            insert_key(&mut tx, new.id, key, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_api_key(&self, user_id: Uuid, key: &NewApiKey) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_key(&mut conn, user_id, key, Utc::now()).await
    }

    async fn find(&self, key: Lookup, value: &str) -> Result<Option<Credentials>, StoreError> {
        let condition = match key {
            Lookup::Username => "username = $1",
            Lookup::Id => "id = $1::uuid",
            Lookup::ApiKeyHash => {
                "id = (SELECT user_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL)"
            }
        };
        let sql = format!("SELECT {} FROM users WHERE {condition}", users::COLUMNS);
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(users::credentials).transpose()
    }

    async fn count_users(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM users";
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    async fn change_credentials(
        &self,
        id: Uuid,
        change: &CredentialChange,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        // Changes commit one at a time, so that `seq` grows in commit order and a replica that
        // has read up to `seq` N can never later see a row below N appear.
        sqlx::query("LOCK TABLE credential_changes IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let statement = match change {
            CredentialChange::Disable => sqlx::query(
                "UPDATE users SET active = $2, token_version = token_version + 1 WHERE id = $1",
            )
            .bind(id)
            .bind(false),
            CredentialChange::Enable => sqlx::query("UPDATE users SET active = $2 WHERE id = $1")
                .bind(id)
                .bind(true),
            CredentialChange::Password(hash) => sqlx::query(
                "UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1",
            )
            .bind(id)
            .bind(hash.as_str()),
            CredentialChange::RevokeKeys => sqlx::query(
                "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now),
        };
        let changed = statement.execute(&mut *tx).await?.rows_affected();
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO credential_changes (user_id, action, changed_at) VALUES ($1, $2, $3) RETURNING seq",
        )
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

    async fn latest_credential_change(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(seq), 0) FROM credential_changes";
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    async fn credential_changes_since(&self, seq: i64) -> Result<Vec<(i64, Uuid)>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, user_id FROM credential_changes WHERE seq > $1 ORDER BY seq")
                .bind(seq)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(credentials::change).collect()
    }

    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>, StoreError> {
        // A connection of its own, not one taken from the pool for good.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Box::new(Listener(listener))))
    }
}
