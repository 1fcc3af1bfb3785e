//! Binary `.backup` files in the API (issue #19): a device's list for anyone who may see
//! the device, and — admins only, each an audit row (`binary_audit`, actor
//! `api:<caller>`) — the file and its password.
//!
//! A face of its own like `history`: it imports `ops`, `auth`, `error` and `state`; `api`
//! routes and documents it. The file's bytes and its password never reach a page, a log
//! line or a viewer.

use crate::auth::{ApiCaller, Caller};
use crate::error::ApiError;
use crate::ops;
use crate::state::WebState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rosbackup_core::binary::store::{self, Access, BinaryInfo};
use uuid::Uuid;

fn parse(id: &str, binary: &str) -> Result<(Uuid, i64), ApiError> {
    let id = Uuid::try_parse(id).map_err(|_| ApiError {
        field: Some("id".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "device id must be a UUID",
        )
    })?;
    let binary = binary.parse::<i64>().map_err(|_| ApiError {
        field: Some("binary".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "binary id must be an integer",
        )
    })?;
    Ok((id, binary))
}

/// The password of a stored binary (admins only; audited).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BinaryPassword {
    pub id: i64,
    pub password: String,
}

/// A device's stored binary backups, newest first (no bytes, no passwords).
#[utoipa::path(get, path = "/api/v1/devices/{id}/binaries", tag = "binaries",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = Vec<BinaryInfo>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list_api(
    State(s): State<WebState>,
    c: ApiCaller,
    crate::extract::DeviceId(id): crate::extract::DeviceId,
) -> Result<Json<Vec<BinaryInfo>>, ApiError> {
    ops::device(&s, &c.0, id).await?;
    Ok(Json(store::list(s.store(), id, 200).await?))
}

async fn open(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    binary: i64,
    access: Access,
) -> Result<store::Opened, ApiError> {
    ops::require_admin(c)?;
    ops::device(s, c, id).await?;
    let key = s.key().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "key_unavailable",
            "this server has no CREDENTIAL_ENCRYPTION_KEY, so it cannot open binary backups",
        )
    })?;
    let actor = format!("api:{}", c.principal.name);
    store::open(s.store(), key, binary, id, &actor, access)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no binary backup {binary} of device {id}")))
}

/// Download a stored `.backup` file (admins only; audited). The file is still encrypted
/// with the device's backup password (`…/password`).
#[utoipa::path(get, path = "/api/v1/devices/{id}/binaries/{binary}", tag = "binaries",
    params(("id" = Uuid, Path, description = "device id"), ("binary" = i64, Path, description = "binary id")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn download_api(
    State(s): State<WebState>,
    c: ApiCaller,
    Path((id, binary)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (id, binary) = parse(&id, &binary)?;
    let opened = open(&s, &c.0, id, binary, Access::File).await?;
    tracing::info!(device_id = %id, binary, by = %c.0.principal.name, "binary backup downloaded");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}-{binary}.backup\""),
            ),
        ],
        opened.data,
    )
        .into_response())
}

/// The password a stored `.backup` file is encrypted with (admins only; audited).
#[utoipa::path(get, path = "/api/v1/devices/{id}/binaries/{binary}/password", tag = "binaries",
    params(("id" = Uuid, Path, description = "device id"), ("binary" = i64, Path, description = "binary id")),
    responses((status = 200, body = BinaryPassword),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn password_api(
    State(s): State<WebState>,
    c: ApiCaller,
    Path((id, binary)): Path<(String, String)>,
) -> Result<Json<BinaryPassword>, ApiError> {
    let (id, binary) = parse(&id, &binary)?;
    let opened = open(&s, &c.0, id, binary, Access::Password).await?;
    tracing::info!(device_id = %id, binary, by = %c.0.principal.name, "binary backup password shown");
    Ok(Json(BinaryPassword {
        id: binary,
        password: opened
            .password
            .map(|p| p.expose().to_string())
            .unwrap_or_default(),
    }))
}
