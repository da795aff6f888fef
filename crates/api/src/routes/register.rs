//! Self-service API keys: `POST /register` creates a user and shows their key once.

use crate::api_key;
use crate::extract::FieldsBody;
use crate::routes::quotes::TokenView;
use crate::{ApiContext, ApiError};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bourse_domain::Registration;
use bourse_store::users::{NewUser, Role};
use bourse_store::StoreError;
use serde::Deserialize;
use utoipa::ToSchema;

pub fn router() -> Router<ApiContext> {
    // DRF-style clients post to `/api/v1/register/`, with the trailing slash.
    Router::new()
        .route("/register", post(register))
        .route("/register/", post(register))
}

/// The fields of `POST /register` (documentation; validation is [`Registration::from_json`]).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RegisterBody {
    /// First name: 1 to 150 characters once trimmed, no control character (the pattern says
    /// what `bourse_domain::registration` checks).
    #[schema(
        example = "Dave",
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,148}[^\s\x00-\x1f\x7f-\x9f])?\s*$"
    )]
    name: String,
    /// Last name: the same rules.
    #[schema(
        example = "Mustaine",
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,148}[^\s\x00-\x1f\x7f-\x9f])?\s*$"
    )]
    last_name: String,
    /// Unique, case-insensitively; at most 254 characters (64 before the `@`), an ASCII
    /// dot-atom, `@`, then two or more DNS labels, the last alphabetic or `xn--`. (The pattern
    /// bounds the part before the `@` by up to 4 atoms of 15 characters: a regular expression
    /// without lookahead cannot count 64 across dots.)
    #[schema(
        example = "examplemail@email.com",
        max_length = 254,
        pattern = r"^\s*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,15}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,15}){0,3}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|[Xx][Nn]--[A-Za-z0-9-]{0,58}[A-Za-z0-9])\s*$"
    )]
    email: String,
}

/// Creates a user (username = the email in lower case, no password) with an API key, shown in this answer only:
/// send it as `Authorization: Token <key>`.
#[utoipa::path(post, path = "/register", tag = "keys",
    request_body(content(
        (RegisterBody = "application/json"),
        (RegisterBody = "application/x-www-form-urlencoded"),
        (RegisterBody = "multipart/form-data"))),
    responses(
        (status = 201, body = TokenView, description = "the API key, shown once"),
        (status = 400, description = "not JSON nor a form"),
        (status = 409, description = "the email is already registered (case-insensitively)"),
        (status = 422, description = "a field is invalid")))]
pub async fn register(
    State(ctx): State<ApiContext>,
    FieldsBody(body): FieldsBody,
) -> Result<Response, ApiError> {
    let registration = Registration::from_json(&body)?;
    let issued = api_key::generate();
    let new = NewUser {
        // The email, lowercased, so `bourse user token --username` finds the user predictably.
        username: registration.email.to_lowercase(),
        email: Some(registration.email),
        first_name: Some(registration.name),
        last_name: Some(registration.last_name),
        password_hash: None,
        role: Role::User,
    };
    let user = ctx
        .store
        .register_user(&new, &issued.stored)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::Conflict("this email is already registered".into())
            }
            other => other.into(),
        })?;
    tracing::info!(user = %user.id, key = %issued.stored.prefix, "user registered");
    Ok((
        StatusCode::CREATED,
        // A secret: no cache may keep it.
        [(header::CACHE_CONTROL, "no-store")],
        Json(TokenView { token: issued.key }),
    )
        .into_response())
}
