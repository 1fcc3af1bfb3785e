//! The web layer's one error type: an HTTP status, a stable machine-readable code, a
//! human message and the offending field ([`ApiError`]), rendered as the JSON body of
//! every API error ([`ErrorBody`]) or as a plain HTML error page ([`error_page`]).
//!
//! Errors of the services below (store, queue, archive, manual requests) become
//! `ApiError`s here, so every face reports them alike. This module imports only
//! `layout` (for the page's icon); every other web module may depend on it.

use crate::layout::FAVICON;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, html};
use rosbackup_archive::ArchiveError;
use rosbackup_core::manual::ManualError;
use rosbackup_core::store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An API error: HTTP status, stable code, human message, and the offending field.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code: `unauthenticated`, `forbidden`, `csrf`,
    /// `not_found`, `method_not_allowed`, `bad_request`, `invalid_field`, `conflict`,
    /// `not_dead`, `in_use`, `too_large`, `too_many_requests` (with `Retry-After`),
    /// `unavailable`, `credentials_unavailable`, `key_unavailable`,
    /// `archive_unavailable`, `archive_unreadable`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What every fallible web operation returns.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid API token (Authorization: Bearer …) or session is required",
        )
    }
    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token's role may only read (viewer); acting needs an admin token",
        )
    }
    pub fn csrf() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong X-CSRF-Token for a session request",
        )
    }
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
    pub fn bad_request(message: impl Into<String>, field: Option<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            field,
        }
    }

    /// This error as an HTML error page (for the dashboard).
    pub fn page(self) -> Response {
        error_page(self.status, &self.message)
    }

    /// This error as a page about one device: not found says it may be another tenant's.
    pub fn device_page(self) -> Response {
        if self.status == StatusCode::NOT_FOUND {
            error_page(
                StatusCode::NOT_FOUND,
                "No such device (or not in your tenant).",
            )
        } else {
            self.page()
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(id) => ApiError::not_found(format!("no device {id}")),
            StoreError::Invalid(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            e @ StoreError::ProfileInUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, "in_use", e.to_string())
            }
            other => {
                // The message may name tables, never secrets; log it, keep the reply generic.
                tracing::error!(error = %other, "store error in API call");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the device store is unavailable; try again",
                )
            }
        }
    }
}

impl From<rosbackup_core::queue::QueueError> for ApiError {
    fn from(e: rosbackup_core::queue::QueueError) -> ApiError {
        tracing::error!(error = %e, "queue error in API call");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the job queue (Redis) is unavailable; try again",
        )
    }
}

impl From<ManualError> for ApiError {
    fn from(e: ManualError) -> ApiError {
        match e {
            // A device outside the caller's tenant is the same 404 as a missing one.
            ManualError::UnknownDevice(id) => ApiError::not_found(format!("no device {id}")),
            ManualError::Full { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                e.to_string(),
            ),
            ManualError::Contended => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            ManualError::Store(e) => e.into(),
            ManualError::Queue(e) => e.into(),
        }
    }
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> ApiError {
        tracing::error!(error = %e, "archive error in a web call");
        match e {
            ArchiveError::Decrypt(_) | ArchiveError::Decompress(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "archive_unreadable",
                "an archived version could not be opened (is ARCHIVE_ENCRYPTION_KEY the archiver's key?)",
            ),
            _ => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the config history is unavailable; try again",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(ErrorBody {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            }),
        )
            .into_response();
        retry_after(&mut res);
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"rosbackup\""),
            );
        }
        res
    }
}

/// A plain error page (also used before a caller is known).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Error · rosbackup" } link rel="icon" href=(FAVICON); link rel="stylesheet" href="/assets/app.css"; }
            body.center {
                div.card.narrow {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    p { (message) }
                    p { a href="/" { "Back to the overview" } }
                }
            }
        }
    };
    let mut res = (status, Html(body.into_string())).into_response();
    retry_after(&mut res);
    res
}

/// 429 is only ever the bound on manual backups: say when to try again (API and pages).
fn retry_after(res: &mut Response) {
    if res.status() == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(rosbackup_core::manual::RETRY_AFTER.as_secs()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_manual_backup_says_when_to_try_again_as_json_and_as_a_page() {
        let full = || {
            ApiError::from(ManualError::Full {
                pending: 500,
                limit: 500,
            })
        };
        for res in [full().into_response(), full().page()] {
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                res.headers().get(axum::http::header::RETRY_AFTER),
                Some(&axum::http::HeaderValue::from_static("30"))
            );
        }
        let other = error_page(StatusCode::NOT_FOUND, "no");
        assert!(
            other
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
