//! Users and their roles. Password hashing happens above this layer; only hashes are stored.

use crate::sqlite_codec::{micros, uuid};
use crate::{Db, Store, StoreError};
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Result<Role, StoreError> {
        match text {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(StoreError::Corrupt(format!("role {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub role: Role,
    pub active: bool,
    /// Login tokens carry this and end when it changes (disable, password change).
    pub token_version: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password_hash: Option<String>,
    pub role: Role,
}

/// A user with the stored password hash, for credential checks only.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: Option<String>,
}

/// The unique keys a user is looked up by.
#[derive(Clone, Copy)]
enum Key {
    Username,
    Id,
    /// The hash of one of the user's unrevoked API keys.
    ApiKeyHash,
}

const INSERT_KEY: &str =
    "INSERT INTO api_keys (key_hash, user_id, prefix, created_at) VALUES ($1, $2, $3, $4)";

/// A key hash collision means a duplicated key, which 256 random bits make practically impossible.
fn key_taken(e: sqlx::Error) -> StoreError {
    StoreError::from_insert(e, "API key already exists")
}

const COLUMNS: &str = "id, username, email, role, active, password_hash, token_version";

/// An API key as stored: its hash and a short prefix, never the key itself (hashing happens
/// above this layer, like password hashing).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// The first characters of the key, to recognise it in a list.
    pub prefix: String,
}

impl Store {
    /// Creates a user; `Conflict` when the username or (case-insensitively) the email is taken.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        self.insert_user(new, None).await
    }

    /// Creates a user together with an API key, in one transaction: both or neither.
    /// `Conflict` when the username or (case-insensitively) the email is taken.
    pub async fn register_user(&self, new: &NewUser, key: &NewApiKey) -> Result<User, StoreError> {
        self.insert_user(new, Some(key)).await
    }

    async fn insert_user(
        &self,
        new: &NewUser,
        key: Option<&NewApiKey>,
    ) -> Result<User, StoreError> {
        let id = Uuid::new_v4();
        let now = Utc::now();
        let taken = |e| StoreError::from_insert(e, "username or email already taken");
        let sql = "INSERT INTO users (id, username, email, first_name, last_name, password_hash, role, active, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(sql)
                    .bind(id)
                    .bind(&new.username)
                    .bind(&new.email)
                    .bind(&new.first_name)
                    .bind(&new.last_name)
                    .bind(&new.password_hash)
                    .bind(new.role.as_str())
                    .bind(true)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(taken)?;
                if let Some(key) = key {
                    sqlx::query(INSERT_KEY)
                        .bind(&key.hash)
                        .bind(id)
                        .bind(&key.prefix)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(key_taken)?;
                }
                tx.commit().await?;
            }
            Db::Sqlite { write, .. } => {
                let mut tx = write.begin_with(crate::SQLITE_BEGIN_WRITE).await?;
                sqlx::query(sql)
                    .bind(id.to_string())
                    .bind(&new.username)
                    .bind(&new.email)
                    .bind(&new.first_name)
                    .bind(&new.last_name)
                    .bind(&new.password_hash)
                    .bind(new.role.as_str())
                    .bind(1_i64)
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(taken)?;
                if let Some(key) = key {
                    sqlx::query(INSERT_KEY)
                        .bind(&key.hash)
                        .bind(id.to_string())
                        .bind(&key.prefix)
                        .bind(micros(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(key_taken)?;
                }
                tx.commit().await?;
            }
        }
        Ok(User {
            id,
            username: new.username.clone(),
            email: new.email.clone(),
            role: new.role,
            active: true,
            token_version: 0,
        })
    }

    /// Adds an API key to an existing user (`bourse user token`).
    pub async fn add_api_key(&self, user_id: Uuid, key: &NewApiKey) -> Result<(), StoreError> {
        let now = Utc::now();
        let result = match &self.db {
            Db::Postgres(pool) => sqlx::query(INSERT_KEY)
                .bind(&key.hash)
                .bind(user_id)
                .bind(&key.prefix)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ()),
            Db::Sqlite { write, .. } => sqlx::query(INSERT_KEY)
                .bind(&key.hash)
                .bind(user_id.to_string())
                .bind(&key.prefix)
                .bind(micros(now))
                .execute(write)
                .await
                .map(|_| ()),
        };
        result.map_err(key_taken)?;
        Ok(())
    }

    /// The user owning the API key with this hash, if the key exists and is not revoked.
    /// Inactive users are returned too (with `active` false): refusing them is the caller's rule.
    pub async fn user_by_api_key(&self, key_hash: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .credentials_where(Key::ApiKeyHash, key_hash)
            .await?
            .map(|c| c.user))
    }

    pub async fn credentials_by_username(
        &self,
        username: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        self.credentials_where(Key::Username, username).await
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        Ok(self
            .credentials_where(Key::Id, &id.to_string())
            .await?
            .map(|c| c.user))
    }

    async fn credentials_where(
        &self,
        key: Key,
        value: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        if value.contains('\0') {
            // PostgreSQL's text refuses NUL (an error, not "no such user"); no stored value has one.
            return Ok(None);
        }
        match &self.db {
            Db::Postgres(pool) => {
                let condition = match key {
                    Key::Username => "username = $1",
                    Key::Id => "id = $1::uuid",
                    Key::ApiKeyHash => {
                        "id = (SELECT user_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL)"
                    }
                };
                let sql = format!("SELECT {COLUMNS} FROM users WHERE {condition}");
                let Some(r) = sqlx::query(&sql).bind(value).fetch_optional(pool).await? else {
                    return Ok(None);
                };
                Ok(Some(Credentials {
                    user: User {
                        id: r.try_get(0)?,
                        username: r.try_get(1)?,
                        email: r.try_get(2)?,
                        role: Role::parse(&r.try_get::<String, _>(3)?)?,
                        active: r.try_get(4)?,
                        token_version: r.try_get(6)?,
                    },
                    password_hash: r.try_get(5)?,
                }))
            }
            Db::Sqlite { read, .. } => {
                let condition = match key {
                    Key::Username => "username = ?",
                    Key::Id => "id = ?",
                    Key::ApiKeyHash => {
                        "id = (SELECT user_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL)"
                    }
                };
                let sql = format!("SELECT {COLUMNS} FROM users WHERE {condition}");
                let Some(r) = sqlx::query(&sql).bind(value).fetch_optional(read).await? else {
                    return Ok(None);
                };
                Ok(Some(Credentials {
                    user: User {
                        id: uuid(&r.try_get::<String, _>(0)?)?,
                        username: r.try_get(1)?,
                        email: r.try_get(2)?,
                        role: Role::parse(&r.try_get::<String, _>(3)?)?,
                        active: r.try_get::<i64, _>(4)? != 0,
                        token_version: r.try_get(6)?,
                    },
                    password_hash: r.try_get(5)?,
                }))
            }
        }
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM users";
        Ok(match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Db::Sqlite { read, .. } => sqlx::query_scalar(sql).fetch_one(read).await?,
        })
    }
}
