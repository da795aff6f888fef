//! Authentication: one extractor, [`AuthUser`], for every scheme bourse accepts, so that a route
//! declares *that* it needs a user and never *how* the user proved who they are.
//!
//! `Basic` checks the password against its argon2id hash. Because that check is slow by design
//! and clients send Basic credentials on every request, a successful check is remembered for a
//! minute under a SHA-256 of the credentials (never the password itself, see
//! [`crate::credential_cache`]). `Bearer` verifies a JWT
//! from `/login`; `Token` looks an API key up by its hash (see [`crate::api_key`]). A change to a
//! user's credentials, on any replica, makes every replica forget that user's cached entries
//! (see [`crate::revocation`]).
//!
//! When quotas or the request log are on, the credentials are resolved once per request, before
//! the handler, by the [`crate::gate`] (both need to know who is calling); the extractors
//! here then reuse that [`Credential`] instead of checking again.

use crate::api_key;
use crate::error::ApiError;
use crate::identity::{Caller, Credential};
use crate::login::Scheme;
use crate::state::ApiContext;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use bourse_store::users::{Role, User};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

/// An authenticated, active user.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

/// An authenticated user with the `admin` role (403 for any other user).
#[derive(Debug, Clone)]
pub struct AdminUser(pub User);

/// The user if the request carries credentials, `None` if it carries none (bad credentials are
/// still 401).
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<User>);

impl FromRequestParts<ApiContext> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, ApiError> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let resolved = match parts.extensions.get::<Caller>().map(|c| &c.credential) {
            Some(Credential::Valid(user)) => Some(user.clone()),
            Some(Credential::Invalid) => return Err(ApiError::BadCredentials),
            Some(Credential::Absent) => None,
            Some(&Credential::Refused { busy, retry_after }) => {
                return Err(if busy {
                    ApiError::hashing_busy(retry_after)
                } else {
                    ApiError::Throttled { retry_after }
                })
            }
            Some(Credential::Unchecked) | None => authenticate(parts, ctx).await?,
        };
        let user = resolved.ok_or(ApiError::Unauthorized)?;
        let user = AuthUser(user);
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

impl FromRequestParts<ApiContext> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, ApiError> {
        let AuthUser(user) = AuthUser::from_request_parts(parts, ctx).await?;
        if user.role == Role::Admin {
            Ok(AdminUser(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequestParts<ApiContext> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, ApiError> {
        if parts.headers.contains_key(AUTHORIZATION) {
            Ok(MaybeUser(Some(
                AuthUser::from_request_parts(parts, ctx).await?.0,
            )))
        } else {
            Ok(MaybeUser(None))
        }
    }
}

/// Resolves the request's credentials for the [`crate::gate`].
pub async fn resolve(parts: &Parts, ctx: &ApiContext) -> Credential {
    match authenticate(parts, ctx).await {
        Ok(None) => Credential::Absent,
        Ok(Some(user)) => Credential::Valid(user),
        Err(ApiError::BadCredentials | ApiError::Unauthorized) => Credential::Invalid,
        Err(ApiError::Throttled { retry_after }) => Credential::Refused {
            busy: false,
            retry_after,
        },
        Err(ApiError::Busy { retry_after, .. }) => Credential::Refused {
            busy: true,
            retry_after,
        },
        Err(e) => {
            tracing::warn!(error = %e, "credentials could not be checked");
            Credential::Unchecked
        }
    }
}

/// `Ok(None)` when there is no `Authorization` header; an error when there is one that does not
/// identify an active user.
async fn authenticate(parts: &Parts, ctx: &ApiContext) -> Result<Option<User>, ApiError> {
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let header = header.to_str().map_err(|_| ApiError::BadCredentials)?;
    let (scheme, value) = header.split_once(' ').ok_or(ApiError::BadCredentials)?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        basic(value, client_ip(parts, ctx), ctx).await.map(Some)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        bearer(value, ctx).await.map(Some)
    } else if scheme.eq_ignore_ascii_case("token") {
        token(value, ctx).await.map(Some)
    } else {
        Err(ApiError::BadCredentials)
    }
}

/// The client's address, as the gate finds it (the socket's, or a trusted proxy's header).
pub fn client_ip(parts: &Parts, ctx: &ApiContext) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    ctx.client_addr.client_ip(&parts.headers, peer)
}

/// The client's address, for handlers: the gate's when it ran, else found the same way.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<ApiContext> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(match parts.extensions.get::<Caller>() {
            Some(caller) => caller.addr,
            None => client_ip(parts, ctx),
        }))
    }
}

async fn basic(encoded: &str, addr: Option<IpAddr>, ctx: &ApiContext) -> Result<User, ApiError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| ApiError::BadCredentials)?;
    let text = String::from_utf8(decoded).map_err(|_| ApiError::BadCredentials)?;
    let (username, password) = text.split_once(':').ok_or(ApiError::BadCredentials)?;
    let key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    if let Some(user) = ctx.credentials.get(&key) {
        return Ok(user);
    }
    let seen = ctx.credentials.generation();
    ctx.logins
        .one_at_a_time(key, async {
            if let Some(user) = ctx.credentials.get(&key) {
                return Ok(user);
            }
            let user = check_password(ctx, Scheme::Basic, addr, username, password).await?;
            ctx.credentials.put(key, user.clone(), seen);
            Ok(user)
        })
        .await
}

async fn bearer(token: &str, ctx: &ApiContext) -> Result<User, ApiError> {
    let claims = ctx.jwt.verify(token).ok_or(ApiError::BadCredentials)?;
    let user = active_user(claims.sub, token, ctx).await?;
    // A token issued before the user's password changed or the user was disabled.
    if user.token_version != claims.ver {
        return Err(ApiError::BadCredentials);
    }
    Ok(user)
}

/// An API key: refused at once unless it has the shape of our keys, else looked up by its
/// SHA-256, which is also the cache key (the stored hash, see [`crate::api_key`]).
async fn token(key: &str, ctx: &ApiContext) -> Result<User, ApiError> {
    if !api_key::well_formed(key) {
        return Err(ApiError::BadCredentials);
    }
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if let Some(user) = ctx.credentials.get(&digest) {
        return Ok(user);
    }
    let seen = ctx.credentials.generation();
    let user = ctx
        .store
        .user_by_api_key(&hex::encode(digest))
        .await?
        .filter(|u| u.active)
        .ok_or(ApiError::BadCredentials)?;
    ctx.credentials.put(digest, user.clone(), seen);
    Ok(user)
}

/// Loads a user named by a verified credential, refusing inactive or deleted users; remembered
/// under the credential's hash like Basic credentials.
async fn active_user(id: uuid::Uuid, credential: &str, ctx: &ApiContext) -> Result<User, ApiError> {
    let key: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
    if let Some(user) = ctx.credentials.get(&key) {
        return Ok(user);
    }
    let seen = ctx.credentials.generation();
    let user = ctx
        .store
        .user_by_id(id)
        .await?
        .filter(|u| u.active)
        .ok_or(ApiError::BadCredentials)?;
    ctx.credentials.put(key, user.clone(), seen);
    Ok(user)
}

/// Checks a username and password from `addr`: throttled before anything else (see
/// [`crate::login`]), and as slow for an unknown user as for a wrong password.
pub async fn check_password(
    ctx: &ApiContext,
    scheme: Scheme,
    addr: Option<IpAddr>,
    username: &str,
    password: &str,
) -> Result<User, ApiError> {
    let attempt = ctx.logins.begin(scheme, addr, username).await?;
    let creds = ctx.store.credentials_by_username(username).await?;
    // An inactive user's password is not checked: the dummy is, so the answer takes as long.
    let creds = creds.filter(|c| c.user.active);
    let stored = creds.as_ref().and_then(|c| c.password_hash.as_deref());
    let matched = attempt.check(password, stored).await?;
    match creds {
        Some(creds) if matched => Ok(creds.user),
        _ => Err(ApiError::BadCredentials),
    }
}
