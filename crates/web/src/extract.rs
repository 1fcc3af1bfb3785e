//! Request extractors whose rejections are our errors: JSON bodies and queries that do
//! not parse name the field (`ApiJson`, `ApiQuery`), a device id that is not a UUID is a
//! 400 naming `id` (`DeviceId`), and a dashboard link with a bad query gets a styled
//! error page (`PageQuery`).
//!
//! Imports only `error`; the faces (`api`, `pages`, `history`) use it.

use crate::error::{ApiError, error_page};
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The field a deserialization message is about: the path serde_path_to_error puts in
/// front ("port: invalid value …"), else the name in "missing field `x`" / "unknown
/// field `x`".
fn field_in(message: &str) -> Option<String> {
    if let Some((path, _)) = message.split_once(": ")
        && path != "."
        && !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    {
        return Some(path.to_string());
    }
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

/// `Json<T>` whose rejections are our JSON errors: 400 for unparseable JSON, 415 for a
/// wrong content type, 413 for oversized bodies, 422 naming the field for wrong data.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(match rej {
                JsonRejection::JsonDataError(e) => {
                    let detail = std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.body_text());
                    ApiError {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        code: "invalid_field",
                        field: field_in(&detail),
                        message: detail,
                    }
                }
                JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
                    std::error::Error::source(&e)
                        .map(|s| format!("malformed JSON: {s}"))
                        .unwrap_or_else(|| e.body_text()),
                    None,
                ),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "bad_request",
                    "expected Content-Type: application/json",
                ),
                other => {
                    let status = other.status();
                    ApiError::new(
                        status,
                        if status == StatusCode::PAYLOAD_TOO_LARGE {
                            "too_large"
                        } else {
                            "bad_request"
                        },
                        other.body_text(),
                    )
                }
            }),
        }
    }
}

/// `Query<T>` with JSON errors naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                let detail = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.body_text());
                ApiError::bad_request(format!("bad query: {detail}"), field_in(&detail))
            })
    }
}

/// A device id in the path; anything but a UUID is a 400 naming `id`.
pub struct DeviceId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for DeviceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e: PathRejection| {
                    ApiError::bad_request(e.body_text(), Some("id".into()))
                })?;
        Uuid::try_parse(&raw)
            .map(DeviceId)
            .map_err(|_| ApiError::bad_request("device id must be a UUID", Some("id".into())))
    }
}

/// A credential profile id in the path, as [`DeviceId`].
pub struct ProfileId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ProfileId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e: PathRejection| {
                    ApiError::bad_request(e.body_text(), Some("id".into()))
                })?;
        Uuid::try_parse(&raw).map(ProfileId).map_err(|_| {
            ApiError::bad_request("credential profile id must be a UUID", Some("id".into()))
        })
    }
}

/// `Query<T>` whose rejection is a styled error page (not axum's plain text).
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for PageQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| PageQuery(q.0))
            .map_err(|e| {
                let detail = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.body_text());
                error_page(StatusCode::BAD_REQUEST, &format!("Bad link: {detail}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_their_field() {
        assert_eq!(
            field_in("missing field `host` at line 1 column 2").as_deref(),
            Some("host")
        );
        assert_eq!(field_in("expected a string"), None);
        assert_eq!(
            field_in("port: invalid value: integer `70000`, expected u16").as_deref(),
            Some("port")
        );
        assert_eq!(
            field_in(". : unknown field `colour`, expected one of `id`").as_deref(),
            Some("colour")
        );
    }
}
