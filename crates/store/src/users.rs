//! Users and their roles. Password hashing happens above this layer; only hashes are stored.

use crate::credentials::{ChangeSignal, CredentialChange};
use crate::row::Columns;
use crate::{Store, StoreError};
use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};
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

    pub(crate) fn parse(text: &str) -> Result<Role, StoreError> {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Username,
    Id,
    /// The hash of one of the user's unrevoked API keys.
    ApiKeyHash,
}

/// The columns of a user, in the order [`credentials`] decodes them.
pub(crate) const COLUMNS: &str = "id, username, email, role, active, password_hash, token_version";

/// A row of [`COLUMNS`].
pub(crate) fn credentials(r: &impl Columns) -> Result<Credentials, StoreError> {
    Ok(Credentials {
        user: User {
            id: r.uuid(0)?,
            username: r.text(1)?,
            email: r.opt_text(2)?,
            role: Role::parse(&r.text(3)?)?,
            active: r.flag(4)?,
            token_version: r.int(6)?,
        },
        password_hash: r.opt_text(5)?,
    })
}

/// "username or email already taken" when `e` is a unique violation.
pub(crate) fn user_taken(e: sqlx::Error) -> StoreError {
    StoreError::from_insert(e, "username or email already taken")
}

/// A key hash collision means a duplicated key, which 256 random bits make practically impossible.
pub(crate) fn key_taken(e: sqlx::Error) -> StoreError {
    StoreError::from_insert(e, "API key already exists")
}

/// An API key as stored: its hash and a short prefix, never the key itself (hashing happens
/// above this layer, like password hashing).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// The first characters of the key, to recognise it in a list.
    pub prefix: String,
}

/// A user to insert, with an API key when registering.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub id: Uuid,
    pub user: &'a NewUser,
    pub key: Option<&'a NewApiKey>,
}

/// Binds `username, email, first_name, last_name, password_hash, role` of `new`, in that order.
pub(crate) fn bind_profile<'q, DB>(
    query: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    new: &'q NewUser,
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
{
    query
        .bind(new.username.as_str())
        .bind(new.email.as_deref())
        .bind(new.first_name.as_deref())
        .bind(new.last_name.as_deref())
        .bind(new.password_hash.as_deref())
        .bind(new.role.as_str())
}

/// Binds `key_hash, user_id, prefix, created_at` of an API key of `user`.
pub(crate) fn bind_key<'q, DB, U, T>(
    query: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    key: &'q NewApiKey,
    user: U,
    at: T,
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    U: 'q + Encode<'q, DB> + Type<DB>,
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    query
        .bind(key.hash.as_str())
        .bind(user)
        .bind(key.prefix.as_str())
        .bind(at)
}

/// Users, their API keys and their credential changes, one implementation per engine.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// Inserts the user, and their key when given, in one transaction.
    async fn insert_user(&self, new: Registration<'_>) -> Result<(), StoreError>;
    async fn add_api_key(&self, user_id: Uuid, key: &NewApiKey) -> Result<(), StoreError>;
    /// The user whose `key` is `value` (never containing NUL).
    async fn find(&self, key: Lookup, value: &str) -> Result<Option<Credentials>, StoreError>;
    async fn count_users(&self) -> Result<i64, StoreError>;
    /// [`Store::change_credentials`].
    async fn change_credentials(
        &self,
        id: Uuid,
        change: &CredentialChange,
    ) -> Result<u64, StoreError>;
    async fn latest_credential_change(&self) -> Result<i64, StoreError>;
    async fn credential_changes_since(&self, seq: i64) -> Result<Vec<(i64, Uuid)>, StoreError>;
    /// What wakes a [`crate::credentials::CredentialWatch`] early; `None`: the timer alone.
    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>, StoreError>;
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
        let registration = Registration { id, user: new, key };
        self.users.insert_user(registration).await?;
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
        self.users.add_api_key(user_id, key).await
    }

    /// The user owning the API key with this hash, if the key exists and is not revoked.
    /// Inactive users are returned too (with `active` false): refusing them is the caller's rule.
    pub async fn user_by_api_key(&self, key_hash: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .credentials_where(Lookup::ApiKeyHash, key_hash)
            .await?
            .map(|c| c.user))
    }

    pub async fn credentials_by_username(
        &self,
        username: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        self.credentials_where(Lookup::Username, username).await
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        Ok(self
            .credentials_where(Lookup::Id, &id.to_string())
            .await?
            .map(|c| c.user))
    }

    async fn credentials_where(
        &self,
        key: Lookup,
        value: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        if value.contains('\0') {
            // PostgreSQL's text refuses NUL (an error, not "no such user"); no stored value has one.
            return Ok(None);
        }
        self.users.find(key, value).await
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        self.users.count_users().await
    }
}
