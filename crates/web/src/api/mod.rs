//! `/api/v1`: everything the dashboard does, as JSON, described by an OpenAPI document
//! generated from these handlers (`GET /api/v1/openapi.json`).
//!
//! Errors are `{"code": "...", "message": "...", "field": "..."}` with a stable `code`
//! (see [`ApiError`](crate::error::ApiError)); a body or query that does not parse names
//! the field. A device or job outside the caller's tenant is a 404, exactly like one
//! that does not exist.
//!
//! A face: `handlers` (one operation of `ops` each) and `openapi` (the document). It
//! also routes `history`'s JSON handlers. Nothing in the crate imports `api` but the
//! router in `lib`.

mod handlers;
mod openapi;

pub use openapi::ApiDoc;

use crate::state::WebState;
use axum::Router;
use axum::routing::{get, post, put};
use handlers::*;

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/openapi.json", get(openapi::openapi))
        .route("/devices", get(list_devices).post(create_device))
        .route("/devices/{id}", get(get_device).delete(delete_device))
        .route("/devices/{id}/credentials", put(set_credentials))
        .route("/devices/{id}/export-timeout", put(set_export_timeout))
        .route("/devices/{id}/jump-host", put(set_device_jump))
        .route("/credential-profiles/{id}/jump-host", put(set_profile_jump))
        .route(
            "/tenants/{id}/jump-host",
            get(tenant_jump).put(set_tenant_jump),
        )
        .route("/bastions", get(list_bastions))
        .route("/bastions/reset-host-key", post(reset_bastion))
        .route(
            "/credential-profiles/{id}/export-timeout",
            put(set_profile_export_timeout),
        )
        .route(
            "/credential-profiles",
            get(list_profiles).post(create_profile),
        )
        .route(
            "/credential-profiles/{id}",
            get(get_profile).put(update_profile).delete(delete_profile),
        )
        .route("/devices/{id}/enable", post(enable))
        .route("/devices/{id}/disable", post(disable))
        .route("/devices/{id}/unblock", post(unblock))
        .route("/devices/{id}/reset-host-key", post(reset_host_key))
        .route("/devices/{id}/backup", post(backup))
        .route("/devices/{id}/runs", get(device_runs))
        .route("/runs", get(recent_runs))
        .route("/queue", get(queue))
        .route("/overview", get(overview))
        .route("/stats/activity", get(activity))
        .route("/stats/backup-ages", get(backup_ages))
        .route("/tenants", get(tenants))
        .route("/tenants/{id}", put(name_tenant))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/jobs/{id}", axum::routing::delete(discard_job))
        .route("/devices/{id}/versions", get(crate::history::versions_api))
        .route(
            "/devices/{id}/versions/{version}/diff",
            get(crate::history::diff_api),
        )
        .route(
            "/devices/{id}/versions/{version}/text",
            get(crate::history::text_api),
        )
        .route("/changes", get(crate::history::changes_api))
        .route("/devices/{id}/binaries", get(crate::binaries::list_api))
        .route(
            "/devices/{id}/binaries/{binary}",
            get(crate::binaries::download_api),
        )
        .route(
            "/devices/{id}/binaries/{binary}/password",
            get(crate::binaries::password_api),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
}
