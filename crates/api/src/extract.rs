//! Extractors whose rejections speak the API's error format instead of axum's plain text.

use crate::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `Json<T>` with a 400 JSON body on malformed input.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("expected a JSON body (Content-Type: application/json)".into())
        }
        other => ApiError::BadRequest(format!("malformed JSON body: {}", other.body_text())),
    }
}

/// `Query<T>` with a 400 JSON body; pair it with `#[serde(deny_unknown_fields)]` so that unknown
/// parameters are refused rather than silently ignored.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::BadRequest(format!("invalid query string: {}", e.body_text()))
}

/// `Path<T>` with a 400 JSON body.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(e) => Err(path_rejection(e)),
        }
    }
}

fn path_rejection(e: PathRejection) -> ApiError {
    ApiError::BadRequest(format!("invalid path parameter: {}", e.body_text()))
}

/// A body of named fields sent as JSON, as an HTML form (`application/x-www-form-urlencoded`)
/// or as `multipart/form-data` (`curl --form`), as one JSON value: the JSON as is,
/// form fields as an object of strings (a repeated field keeps its last value). Anything else
/// is a 400.
pub struct FieldsBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for FieldsBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence == "application/x-www-form-urlencoded" {
            let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(req, state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("malformed form: {}", e.body_text())))?;
            Ok(FieldsBody(fields_object(pairs)))
        } else if essence == "multipart/form-data" {
            let mut multipart = axum::extract::Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("malformed form: {}", e.body_text())))?;
            let mut pairs = Vec::new();
            let malformed = |e: axum::extract::multipart::MultipartError| {
                ApiError::BadRequest(format!("malformed form: {}", e.body_text()))
            };
            while let Some(field) = multipart.next_field().await.map_err(malformed)? {
                let name = field.name().unwrap_or_default().to_owned();
                pairs.push((name, field.text().await.map_err(malformed)?));
            }
            Ok(FieldsBody(fields_object(pairs)))
        } else if essence == "application/json" || essence.ends_with("+json") {
            let JsonBody(value) = JsonBody::from_request(req, state).await?;
            Ok(FieldsBody(value))
        } else {
            Err(ApiError::BadRequest(
                "expected a JSON or form body (application/json, application/x-www-form-urlencoded or multipart/form-data)".into(),
            ))
        }
    }
}

fn fields_object(pairs: Vec<(String, String)>) -> serde_json::Value {
    serde_json::Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    )
}
