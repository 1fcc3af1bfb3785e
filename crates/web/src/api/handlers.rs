//! The `/api/v1` handlers: each extracts its caller and parameters, calls one operation
//! in `ops`, and answers JSON. The `#[utoipa::path]` annotations are the OpenAPI
//! document's source (collected in `api::openapi`).
//!
//! Part of `api`; imports `ops`, `auth`, `extract`, `error` and `state`.

use crate::auth::ApiCaller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, DeviceId, ProfileId};
use crate::ops::{
    self, ActivityParams, BackupOutcome, BackupParams, CreateCredentialProfile, CreateDevice,
    CredentialProfileView, Credentials, DeviceAction, DeviceList, DeviceListParams, DeviceView,
    ExportTimeout, JobList, JobsParams, LimitParams, Overview, QueueStats, ResetBastion,
    RetriedJob, RunsParams, SetJumpHost, TenantJumpHost, TenantName, UpdateCredentialProfile,
    Whoami,
};
use crate::state::WebState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rosbackup_core::bastions::{Bastion, Reset};
use rosbackup_core::report::{ActivityBucket, AgeBucket, RecentRun, TenantCount};
use rosbackup_core::store::Run;
use uuid::Uuid;

#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)))]
pub(super) async fn whoami(State(s): State<WebState>, c: ApiCaller) -> Json<Whoami> {
    Json(ops::whoami(&s, &c.0))
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceListParams),
    responses((status = 200, body = DeviceList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn list_devices(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<DeviceListParams>,
) -> ApiResult<Json<DeviceList>> {
    Ok(Json(ops::list_devices(&s, &c.0, &p).await?))
}

#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = CreateDevice,
    responses((status = 201, body = DeviceView), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(super) async fn create_device(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiJson(body): ApiJson<CreateDevice>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    let row = ops::create_device(&s, &c.0, body).await?;
    let view = ops::device_view(&s, &c.0, row.device.id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_device(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    Ok(Json(ops::device_view(&s, &c.0, id).await?))
}

#[utoipa::path(put, path = "/api/v1/devices/{id}/export-timeout", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")), request_body = ExportTimeout,
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_export_timeout(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiJson(body): ApiJson<ExportTimeout>,
) -> ApiResult<Json<DeviceView>> {
    Ok(Json(ops::set_export_timeout(&s, &c.0, id, body).await?))
}

#[utoipa::path(put, path = "/api/v1/credential-profiles/{id}/export-timeout",
    tag = "credential-profiles",
    params(("id" = Uuid, Path, description = "credential profile id")),
    request_body = ExportTimeout,
    responses((status = 200, body = CredentialProfileView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_profile_export_timeout(
    State(s): State<WebState>,
    c: ApiCaller,
    ProfileId(id): ProfileId,
    ApiJson(body): ApiJson<ExportTimeout>,
) -> ApiResult<Json<CredentialProfileView>> {
    Ok(Json(
        ops::set_profile_export_timeout(&s, &c.0, id, body).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_device(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<StatusCode> {
    ops::delete_device(&s, &c.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/devices/{id}/credentials", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")), request_body = Credentials,
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(super) async fn set_credentials(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<Json<DeviceView>> {
    Ok(Json(ops::set_credentials(&s, &c.0, id, body).await?.into()))
}

/// Set a device's own jump host (`[user@]host[:port]`), make it `direct`, or clear it
/// (`null`: its profile's or tenant's applies). Secrets are write-only; a device blocked
/// `bastion_host_key_mismatch` that no longer goes through that bastion is unblocked.
#[utoipa::path(put, path = "/api/v1/devices/{id}/jump-host", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")), request_body = SetJumpHost,
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_device_jump(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiJson(body): ApiJson<SetJumpHost>,
) -> ApiResult<Json<DeviceView>> {
    Ok(Json(ops::set_device_jump(&s, &c.0, id, body).await?))
}

/// Set or clear (`null`) a credential profile's jump host; secrets are write-only.
#[utoipa::path(put, path = "/api/v1/credential-profiles/{id}/jump-host",
    tag = "credential-profiles",
    params(("id" = Uuid, Path, description = "credential profile id")),
    request_body = SetJumpHost,
    responses((status = 200, body = CredentialProfileView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_profile_jump(
    State(s): State<WebState>,
    c: ApiCaller,
    ProfileId(id): ProfileId,
    ApiJson(body): ApiJson<SetJumpHost>,
) -> ApiResult<Json<CredentialProfileView>> {
    Ok(Json(ops::set_profile_jump(&s, &c.0, id, body).await?))
}

/// A tenant's default jump host (never its secrets).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/jump-host", tag = "devices",
    params(("id" = Uuid, Path, description = "tenant id")),
    responses((status = 200, body = TenantJumpHost), (status = 404, body = ErrorBody)))]
pub(super) async fn tenant_jump(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<TenantJumpHost>> {
    Ok(Json(ops::tenant_jump(&s, &c.0, id).await?))
}

/// Set or clear (`null`) a tenant's default jump host; a tenant-scoped admin only its own.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/jump-host", tag = "devices",
    params(("id" = Uuid, Path, description = "tenant id")), request_body = SetJumpHost,
    responses((status = 200, body = TenantJumpHost), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn set_tenant_jump(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiJson(body): ApiJson<SetJumpHost>,
) -> ApiResult<Json<TenantJumpHost>> {
    Ok(Json(ops::set_tenant_jump(&s, &c.0, id, body).await?))
}

/// Pinned bastion host keys, and the key a bastion presented instead when it changed.
#[utoipa::path(get, path = "/api/v1/bastions", tag = "devices",
    responses((status = 200, body = Vec<Bastion>), (status = 403, body = ErrorBody)))]
pub(super) async fn list_bastions(
    State(s): State<WebState>,
    c: ApiCaller,
) -> ApiResult<Json<Vec<Bastion>>> {
    Ok(Json(ops::bastions(&s, &c.0).await?))
}

/// Forget a bastion's pinned key (the next backup through it pins what it sees) and lift
/// the `bastion_host_key_mismatch` blocks of the devices behind it.
#[utoipa::path(post, path = "/api/v1/bastions/reset-host-key", tag = "devices",
    request_body = ResetBastion,
    responses((status = 200, body = Reset), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn reset_bastion(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiJson(body): ApiJson<ResetBastion>,
) -> ApiResult<Json<Reset>> {
    Ok(Json(ops::reset_bastion(&s, &c.0, body).await?))
}

#[utoipa::path(get, path = "/api/v1/credential-profiles", tag = "credential-profiles",
    responses((status = 200, body = Vec<CredentialProfileView>), (status = 403, body = ErrorBody)))]
pub(super) async fn list_profiles(
    State(s): State<WebState>,
    c: ApiCaller,
) -> ApiResult<Json<Vec<CredentialProfileView>>> {
    Ok(Json(ops::list_profiles(&s, &c.0).await?))
}

#[utoipa::path(post, path = "/api/v1/credential-profiles", tag = "credential-profiles",
    request_body = CreateCredentialProfile,
    responses((status = 201, body = CredentialProfileView), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn create_profile(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiJson(body): ApiJson<CreateCredentialProfile>,
) -> ApiResult<(StatusCode, Json<CredentialProfileView>)> {
    let p = ops::create_profile(&s, &c.0, body).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

#[utoipa::path(get, path = "/api/v1/credential-profiles/{id}", tag = "credential-profiles",
    params(("id" = Uuid, Path, description = "credential profile id")),
    responses((status = 200, body = CredentialProfileView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(super) async fn get_profile(
    State(s): State<WebState>,
    c: ApiCaller,
    ProfileId(id): ProfileId,
) -> ApiResult<Json<CredentialProfileView>> {
    Ok(Json(ops::profile(&s, &c.0, id).await?))
}

#[utoipa::path(put, path = "/api/v1/credential-profiles/{id}", tag = "credential-profiles",
    params(("id" = Uuid, Path, description = "credential profile id")),
    request_body = UpdateCredentialProfile,
    responses((status = 200, body = CredentialProfileView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn update_profile(
    State(s): State<WebState>,
    c: ApiCaller,
    ProfileId(id): ProfileId,
    ApiJson(body): ApiJson<UpdateCredentialProfile>,
) -> ApiResult<Json<CredentialProfileView>> {
    Ok(Json(ops::update_profile(&s, &c.0, id, body).await?))
}

#[utoipa::path(delete, path = "/api/v1/credential-profiles/{id}", tag = "credential-profiles",
    params(("id" = Uuid, Path, description = "credential profile id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(super) async fn delete_profile(
    State(s): State<WebState>,
    c: ApiCaller,
    ProfileId(id): ProfileId,
) -> ApiResult<StatusCode> {
    ops::delete_profile(&s, &c.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn action(
    s: WebState,
    c: ApiCaller,
    id: Uuid,
    action: DeviceAction,
) -> ApiResult<Json<DeviceView>> {
    Ok(Json(ops::apply_action(&s, &c.0, id, action).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/enable", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn enable(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::Enable).await
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/disable", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn disable(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::Disable).await
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/unblock", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn unblock(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::Unblock).await
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/reset-host-key", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn reset_host_key(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::ResetHostKey).await
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/backup", tag = "devices",
    params(("id" = Uuid, Path, description = "device id"), BackupParams),
    responses((status = 200, body = BackupOutcome, description = "finished (wait=true)"),
              (status = 202, body = BackupOutcome, description = "queued, or still running when the wait ended"),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "too many manual backups queued (ROSBACKUP_MANUAL_MAX); see Retry-After")))]
pub(super) async fn backup(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiQuery(p): ApiQuery<BackupParams>,
) -> ApiResult<(StatusCode, Json<BackupOutcome>)> {
    let outcome = ops::backup(&s, &c.0, id, &p).await?;
    let status = if outcome.run.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(outcome)))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/runs", tag = "runs",
    params(("id" = Uuid, Path, description = "device id"), LimitParams),
    responses((status = 200, body = Vec<Run>), (status = 404, body = ErrorBody)))]
pub(super) async fn device_runs(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiQuery(p): ApiQuery<LimitParams>,
) -> ApiResult<Json<Vec<Run>>> {
    Ok(Json(ops::device_runs(&s, &c.0, id, &p).await?))
}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsParams),
    responses((status = 200, body = Vec<RecentRun>)))]
pub(super) async fn recent_runs(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<RunsParams>,
) -> ApiResult<Json<Vec<RecentRun>>> {
    Ok(Json(ops::recent_runs(&s, &c.0, &p).await?))
}

#[utoipa::path(get, path = "/api/v1/queue", tag = "queue",
    responses((status = 200, body = QueueStats)))]
pub(super) async fn queue(State(s): State<WebState>, c: ApiCaller) -> ApiResult<Json<QueueStats>> {
    Ok(Json(ops::queue_stats(&s, &c.0).await?))
}

#[utoipa::path(get, path = "/api/v1/overview", tag = "queue",
    responses((status = 200, body = Overview)))]
pub(super) async fn overview(State(s): State<WebState>, c: ApiCaller) -> ApiResult<Json<Overview>> {
    Ok(Json(ops::overview(&s, &c.0).await?))
}

#[utoipa::path(get, path = "/api/v1/stats/activity", tag = "queue", params(ActivityParams),
    responses((status = 200, body = Vec<ActivityBucket>)))]
pub(super) async fn activity(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<ActivityParams>,
) -> ApiResult<Json<Vec<ActivityBucket>>> {
    Ok(Json(ops::activity(&s, &c.0, &p).await?))
}

#[utoipa::path(get, path = "/api/v1/stats/backup-ages", tag = "queue",
    responses((status = 200, body = Vec<AgeBucket>)))]
pub(super) async fn backup_ages(
    State(s): State<WebState>,
    c: ApiCaller,
) -> ApiResult<Json<Vec<AgeBucket>>> {
    Ok(Json(ops::backup_ages(&s, &c.0).await?))
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "devices",
    responses((status = 200, body = Vec<TenantCount>)))]
pub(super) async fn tenants(
    State(s): State<WebState>,
    c: ApiCaller,
) -> ApiResult<Json<Vec<TenantCount>>> {
    Ok(Json(ops::tenants(&s, &c.0).await?))
}

/// Name (or rename) a tenant; a tenant-scoped admin may name only its own.
#[utoipa::path(put, path = "/api/v1/tenants/{id}", tag = "devices",
    params(("id" = Uuid, Path, description = "tenant id")), request_body = TenantName,
    responses((status = 200, body = TenantCount), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn name_tenant(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiJson(body): ApiJson<TenantName>,
) -> ApiResult<Json<TenantCount>> {
    Ok(Json(ops::name_tenant(&s, &c.0, id, body).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "queue", params(JobsParams),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
pub(super) async fn jobs(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<JobsParams>,
) -> ApiResult<Json<JobList>> {
    Ok(Json(ops::jobs(&s, &c.0, &p).await?))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "queue",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = RetriedJob), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(super) async fn retry_job(
    State(s): State<WebState>,
    c: ApiCaller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<RetriedJob>> {
    Ok(Json(ops::retry_dead(&s, &c.0, &id).await?))
}

#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "queue",
    params(("id" = String, Path, description = "job id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn discard_job(
    State(s): State<WebState>,
    c: ApiCaller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    ops::discard_dead(&s, &c.0, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Any other path under `/api/v1` (after authentication: no route list for strangers).
pub(super) async fn no_route(_c: ApiCaller) -> ApiError {
    ApiError::not_found("no such API route")
}

/// A route that exists, asked with a method it does not take: our JSON error (the
/// `Allow` header is axum's), not an empty body. Authenticated first, like every route.
pub(super) async fn wrong_method(_c: ApiCaller) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (see the Allow header)",
    )
}
