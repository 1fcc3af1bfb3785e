//! The OpenAPI document of `/api/v1`, generated from the handlers' annotations (and
//! history's), with the responses every operation can give and the bearer scheme added.
//!
//! Part of `api`; imports `api::handlers`, `history`, `error` and `ops` (for schemas).

use super::handlers::*;
use crate::auth::ApiCaller;
use crate::error::ErrorBody;
use crate::ops::{OrderParam, SortParam, StatusParam};
use axum::Json;
use utoipa::OpenApi;

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "auth",
    responses((status = 200, description = "this document")))]
pub(super) async fn openapi(_c: ApiCaller) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Responses every operation can give, added where a handler does not list them: 400
/// (a bad parameter), 401 (no or a bad token), 503 (a backing service is down), and for
/// operations with a body 413, 415 and 422.
struct StandardResponses;

impl utoipa::Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let error = |desc: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(desc)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                let has_body = op.request_body.is_some();
                let r = &mut op.responses.responses;
                let mut add = |code: &str, desc: &str| {
                    r.entry(code.to_string()).or_insert_with(|| error(desc));
                };
                add("400", "bad parameter (`bad_request`, naming the field)");
                add("401", "no, or an invalid, token (`unauthenticated`)");
                add("503", "PostgreSQL or Redis unavailable (`unavailable`)");
                if has_body {
                    add("413", "body too large (`too_large`)");
                    add("415", "not application/json");
                    add("422", "a field is invalid (`invalid_field`, naming it)");
                }
            }
        }
    }
}

/// Adds the bearer security scheme.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "rosbackup API", version = "1",
         description = "Back up MikroTik RouterOS fleets: devices, manual backups, runs, queue."),
    paths(whoami, openapi, list_devices, create_device, get_device, delete_device,
          set_credentials, set_export_timeout, set_device_jump, set_profile_jump, tenant_jump,
          set_tenant_jump, list_bastions, reset_bastion, set_profile_export_timeout, list_profiles, create_profile, get_profile, update_profile,
          delete_profile, enable, disable, unblock, reset_host_key, backup, device_runs,
          recent_runs, queue, overview, activity, backup_ages, tenants, name_tenant, jobs, retry_job,
          discard_job, crate::history::versions_api, crate::history::diff_api,
          crate::history::text_api, crate::history::changes_api,
          crate::binaries::list_api, crate::binaries::download_api,
          crate::binaries::password_api),
    components(schemas(ErrorBody, StatusParam, SortParam, OrderParam)),
    modifiers(&BearerAuth, &StandardResponses),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/devices",
            "/api/v1/devices/{id}",
            "/api/v1/devices/{id}/backup",
            "/api/v1/jobs/{id}/retry",
            "/api/v1/openapi.json",
            "/api/v1/credential-profiles",
            "/api/v1/credential-profiles/{id}",
            "/api/v1/devices/{id}/jump-host",
            "/api/v1/credential-profiles/{id}/jump-host",
            "/api/v1/tenants/{id}/jump-host",
            "/api/v1/bastions",
            "/api/v1/bastions/reset-host-key",
        ] {
            assert!(
                paths.contains_key(p),
                "{p} missing from the OpenAPI document"
            );
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
