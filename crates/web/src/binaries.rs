//! Binary `.backup` files in the API (issue #19): a device's list for anyone who may see
//! the device, and — admins only, each an audit row (`binary_audit`, actor
//! `api:<caller>`) — the file and its password.
//!
//! On the dashboard, a device's page lists its binaries ([`section`]); admins get a
//! download link (`/devices/{id}/binaries/{binary}/download`, audited like the API's).
//!
//! A face of its own like `history`: it imports `ops`, `auth`, `error`, `layout` and
//! `state`; `api` routes and documents it, `pages` embeds its section. The file's bytes
//! and its password never reach a page, a log line or a viewer.

use crate::auth::{ApiCaller, Caller, PageCaller};
use crate::error::{ApiError, error_page};
use crate::ops;
use crate::state::WebState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
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

/// The password of a stored binary (admins only; audited). `Debug` leaves it out.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BinaryPassword {
    pub id: i64,
    pub password: String,
}

impl std::fmt::Debug for BinaryPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryPassword")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
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
    Ok(Json(store::list(s.store(), id, c.0.tenant(), 200).await?))
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
    store::open(s.store(), key, binary, id, c.tenant(), &actor, access)
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

/// A device's binaries on its page: when, size, file hash, config version; a download
/// link for admins only.
pub fn section(device: Uuid, list: &[BinaryInfo], admin: bool) -> Markup {
    html! {
        @if list.is_empty() {
            p.muted { "No binary backups. " code { "CONFIG_BACKUP_BINARY" } " (or the device's or tenant's mode) turns them on; see the README's Binary backups." }
        } @else {
            table.runs id="binaries" {
                thead { tr { th { "Collected" } th { "Bytes" } th { "SHA-256" } th { "Config version" } @if admin { th {} } } }
                tbody {
                    @for b in list {
                        tr data-binary=(b.id) {
                            td title=(b.collected_at.to_rfc3339()) { (crate::layout::ago(b.collected_at)) }
                            td { (b.size) }
                            td.mono.small { (b.sha256.get(..16).unwrap_or(&b.sha256)) "…" }
                            td {
                                @if let Some(v) = b.config_version {
                                    a href=(format!("/devices/{device}/versions/{v}")) { "#" (v) }
                                } @else { span.muted { "not archived (yet)" } }
                            }
                            @if admin {
                                td { a href=(format!("/devices/{device}/binaries/{}/download", b.id)) { "Download" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn page_routes() -> axum::Router<WebState> {
    axum::Router::new().route(
        "/devices/{id}/binaries/{binary}/download",
        axum::routing::get(download_page),
    )
}

async fn download_page(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path((id, binary)): Path<(String, String)>,
) -> Result<Response, Response> {
    let (id, binary) = parse(&id, &binary)
        .map_err(|_| error_page(StatusCode::NOT_FOUND, "No such binary backup."))?;
    let opened = open(&s, &c, id, binary, Access::File)
        .await
        .map_err(|e| error_page(e.status, &e.message))?;
    tracing::info!(device_id = %id, binary, by = %c.principal.name, "binary backup downloaded");
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
