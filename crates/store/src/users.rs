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
}

const COLUMNS: &str = "id, username, email, role, active, password_hash";

impl Store {
    /// Creates a user; `Conflict` when the username or (case-insensitively) the email is taken.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let id = Uuid::new_v4();
        let sql = "INSERT INTO users (id, username, email, first_name, last_name, password_hash, role, active, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let result = match &self.db {
            Db::Postgres(pool) => sqlx::query(sql)
                .bind(id)
                .bind(&new.username)
                .bind(&new.email)
                .bind(&new.first_name)
                .bind(&new.last_name)
                .bind(&new.password_hash)
                .bind(new.role.as_str())
                .bind(true)
                .bind(Utc::now())
                .execute(pool)
                .await
                .map(|_| ()),
            Db::Sqlite { write, .. } => sqlx::query(sql)
                .bind(id.to_string())
                .bind(&new.username)
                .bind(&new.email)
                .bind(&new.first_name)
                .bind(&new.last_name)
                .bind(&new.password_hash)
                .bind(new.role.as_str())
                .bind(1_i64)
                .bind(micros(Utc::now()))
                .execute(write)
                .await
                .map(|_| ()),
        };
        result.map_err(|e| StoreError::from_insert(e, "username or email already taken"))?;
        Ok(User {
            id,
            username: new.username.clone(),
            email: new.email.clone(),
            role: new.role,
            active: true,
        })
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
        match &self.db {
            Db::Postgres(pool) => {
                let condition = match key {
                    Key::Username => "username = $1",
                    Key::Id => "id = $1::uuid",
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
                    },
                    password_hash: r.try_get(5)?,
                }))
            }
            Db::Sqlite { read, .. } => {
                let condition = match key {
                    Key::Username => "username = ?",
                    Key::Id => "id = ?",
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
