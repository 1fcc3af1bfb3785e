//! `/api/v1`: everything the dashboard does, as JSON, described by an OpenAPI document
//! generated from these handlers (`GET /api/v1/openapi.json`).
//!
//! Errors are `{"code": "...", "message": "...", "field": "..."}` with a stable `code`
//! (see [`ApiError`]); a body or query that does not parse names the field. A device or
//! job outside the caller's tenant is a 404, exactly like one that does not exist.

use super::WebState;
use super::auth::ApiCaller;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rosbackup_core::inventory;
use rosbackup_core::queue::{BackupJob, JobInfo, JobListState, QueueDepth, WorkerInfo};
use rosbackup_core::report::{
    ActivityBucket, AgeBucket, DeviceQuery, DeviceRow, DeviceSort, Freshness, RecentRun,
    StatusFilter, TenantCount, TenantQueue,
};
use rosbackup_core::store::{NewDevice, Run, StoreError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

// ---- errors ------------------------------------------------------------------------

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
    /// `not_found`, `bad_request`, `invalid_field`, `conflict`, `not_dead`,
    /// `credentials_unavailable`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

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
    fn bad_request(message: impl Into<String>, field: Option<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            field,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(id) => ApiError::not_found(format!("no device {id}")),
            StoreError::Invalid(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
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
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"rosbackup\""),
            );
        }
        res
    }
}

type ApiResult<T> = Result<T, ApiError>;

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

// ---- views -------------------------------------------------------------------------

/// A device as the API shows it. Never carries the password or any config text.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub routeros_version: Option<String>,
    pub enabled: bool,
    pub backup_interval_seconds: Option<i32>,
    pub backup_cron: Option<String>,
    /// `ok`, `never`, `failing`, `backing_off`, `offline`, `blocked_auth`,
    /// `blocked_host_key` or `disabled`.
    pub state: String,
    /// What an operator should do, for devices that need attention.
    pub hint: Option<String>,
    pub host_key_fingerprint: Option<String>,
    pub next_due_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_status: Option<String>,
    pub last_error_kind: Option<String>,
    pub last_error_message: Option<String>,
    pub consecutive_failures: i32,
    pub backoff_until: Option<DateTime<Utc>>,
    pub blocked_reason: Option<String>,
    pub last_sha256: Option<String>,
    pub last_bytes: Option<i64>,
    pub outstanding_job: Option<String>,
    pub lease_worker: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The operator hint for a device's state and last error.
pub fn hint_for(row: &DeviceRow) -> Option<String> {
    use rosbackup_core::report::DeviceState::*;
    let kind_hint = || {
        row.device
            .last_error_kind
            .as_deref()
            .and_then(|k| k.parse::<rosbackup_core::ErrorKind>().ok())
            .map(|k| k.hint().to_string())
    };
    match row.state() {
        BlockedAuth => Some("update the credentials".into()),
        BlockedHostKey => Some("the host key changed: verify, then reset it".into()),
        Failing | BackingOff | Offline => kind_hint(),
        Never if row.device.last_attempt_at.is_none() => {
            Some("waiting for its first backup".into())
        }
        _ => None,
    }
}

impl From<DeviceRow> for DeviceView {
    fn from(row: DeviceRow) -> DeviceView {
        let hint = hint_for(&row);
        let d = row.device;
        DeviceView {
            id: d.id,
            tenant_id: d.tenant_id,
            name: d.name,
            host: d.host,
            port: u16::try_from(d.ssh_port).unwrap_or(22),
            username: d.username,
            routeros_version: d.routeros_version,
            enabled: d.enabled,
            backup_interval_seconds: d.backup_interval_seconds,
            backup_cron: d.backup_cron,
            state: row.state,
            hint,
            host_key_fingerprint: d.ssh_host_key_fingerprint,
            next_due_at: d.next_due_at,
            last_attempt_at: d.last_attempt_at,
            last_success_at: d.last_success_at,
            last_status: d.last_status,
            last_error_kind: d.last_error_kind,
            last_error_message: d.last_error_message,
            consecutive_failures: d.consecutive_failures,
            backoff_until: d.backoff_until,
            blocked_reason: d.blocked_reason,
            last_sha256: d.last_sha256,
            last_bytes: d.last_bytes,
            outstanding_job: d.outstanding_job,
            lease_worker: d
                .lease_worker
                .filter(|_| d.lease_expires_at.is_some_and(|t| t > Utc::now())),
            lease_expires_at: d.lease_expires_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    /// Devices matching the filters, over all pages.
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
    pub items: Vec<DeviceView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceListParams {
    /// Substring of name or host, or an exact device id.
    pub search: Option<String>,
    /// A state, or `attention` for every state that needs an operator.
    #[param(value_type = Option<StatusParam>)]
    pub status: Option<String>,
    /// Only this tenant (a tenant-scoped token is always limited to its own).
    /// Empty means all tenants (the dashboard's filter form sends `tenant_id=`).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub tenant_id: Option<Uuid>,
    /// Only devices whose last error has this kind.
    pub error_kind: Option<String>,
    /// `name`, `host`, `version`, `last_success`, `next_due`, `state` or `failures`.
    #[param(value_type = Option<SortParam>)]
    pub sort: Option<String>,
    /// `asc` or `desc`.
    #[param(value_type = Option<OrderParam>)]
    pub order: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// Device states accepted by `status` (documentation of the string parameter).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum StatusParam {
    Ok,
    Never,
    Failing,
    BackingOff,
    Offline,
    BlockedAuth,
    BlockedHostKey,
    Disabled,
    Attention,
}

/// Sort keys accepted by `sort`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SortParam {
    Name,
    Host,
    Version,
    LastSuccess,
    NextDue,
    State,
    Failures,
}

/// Sort orders accepted by `order`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OrderParam {
    Asc,
    Desc,
}

/// An optional query value where an empty string means absent (HTML forms send empty
/// fields as `name=`).
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

impl DeviceListParams {
    /// Validate into a query, with the caller's scope applied.
    pub fn to_query(&self, scope: Option<Uuid>) -> ApiResult<DeviceQuery> {
        // PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
        for (field, v) in [("search", &self.search), ("error_kind", &self.error_kind)] {
            if v.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(ApiError::bad_request(
                    format!("{field} must not contain NUL characters"),
                    Some(field.into()),
                ));
            }
        }
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(StatusFilter::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!("unknown status {s:?}"), Some("status".into()))
            })?),
        };
        let sort = match self.sort.as_deref().filter(|s| !s.is_empty()) {
            None => DeviceSort::default(),
            Some(s) => DeviceSort::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!("unknown sort {s:?}"), Some("sort".into()))
            })?,
        };
        let descending = match self.order.as_deref() {
            None | Some("") | Some("asc") => false,
            Some("desc") => true,
            Some(o) => {
                return Err(ApiError::bad_request(
                    format!("order must be asc or desc, not {o:?}"),
                    Some("order".into()),
                ));
            }
        };
        let limit = self.limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::bad_request(
                "limit must be 1 to 1000",
                Some("limit".into()),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::bad_request(
                "offset must not be negative",
                Some("offset".into()),
            ));
        }
        let tenant_id = match (scope, self.tenant_id) {
            (Some(s), Some(t)) if s != t => Some(Uuid::nil()), // sees nothing, like a 404
            (Some(s), _) => Some(s),
            (None, t) => t,
        };
        Ok(DeviceQuery {
            tenant_id,
            search: self.search.clone().filter(|s| !s.trim().is_empty()),
            status,
            error_kind: self.error_kind.clone().filter(|s| !s.is_empty()),
            sort,
            descending,
            limit,
            offset,
        })
    }
}

/// A new device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// Defaults to a new random id.
    pub id: Option<Uuid>,
    /// Required unless the token is scoped to a tenant (then it must be that tenant).
    pub tenant_id: Option<Uuid>,
    pub name: String,
    /// IPv4/IPv6 address or DNS name.
    pub host: String,
    /// SSH port (default 22).
    pub port: Option<u16>,
    pub username: String,
    pub password: String,
    pub routeros_version: Option<String>,
    pub enabled: Option<bool>,
    pub backup_interval_seconds: Option<i32>,
    pub backup_cron: Option<String>,
}

/// New credentials; `username` stays as it is when absent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BackupParams {
    /// Wait for the outcome (up to `timeout` seconds).
    pub wait: Option<bool>,
    /// Seconds to wait, at least 1; capped at the server's ROSBACKUP_MANUAL_TIMEOUT
    /// (also the default).
    #[param(minimum = 1)]
    pub timeout: Option<u64>,
}

/// A manual backup: queued, or finished when waited for.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackupOutcome {
    pub job_id: String,
    pub device_id: Uuid,
    /// `queued` (not waited for), `pending` (wait timed out), or the run's status:
    /// `success`, `failed`, `skipped`, `locked`.
    pub status: String,
    pub run: Option<Run>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitParams {
    /// 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsParams {
    /// 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only failed runs.
    pub failures: Option<bool>,
}

fn limit_of(l: Option<i64>) -> ApiResult<i64> {
    let l = l.unwrap_or(50);
    if (1..=1000).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::bad_request(
            "limit must be 1 to 1000",
            Some("limit".into()),
        ))
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub name: String,
    /// `viewer` or `admin`.
    pub role: String,
    pub tenant_id: Option<Uuid>,
    pub auth: String,
}

/// The queue as the caller may see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStats {
    /// Whole-queue depth (callers without a tenant scope).
    pub depth: Option<QueueDepth>,
    /// The caller's tenant's share (tenant-scoped callers), from the device store.
    pub tenant: Option<TenantQueue>,
    /// Dead jobs visible to the caller.
    pub dead: u64,
    pub workers: Vec<WorkerInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    pub freshness: Freshness,
    /// Devices per state.
    pub states: BTreeMap<String, i64>,
    pub queue: QueueStats,
    pub recent_failures: Vec<RecentRun>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityParams {
    /// Minutes of history, 1 to 10080 (default 180).
    #[param(minimum = 1, maximum = 10080)]
    pub minutes: Option<i64>,
    /// Minutes per bucket, 1 to 1440 (default 1).
    #[param(minimum = 1, maximum = 1440)]
    pub bucket: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsParams {
    /// `scheduled`, `due`, `running` or `dead` (default `dead`).
    pub state: Option<JobListState>,
    pub offset: Option<u64>,
    /// 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub total: u64,
    pub items: Vec<JobInfo>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetriedJob {
    /// The dead job that was removed.
    pub dead_job_id: String,
    /// The new manual job for the same device.
    pub job_id: String,
}

// ---- handlers ----------------------------------------------------------------------

fn require_admin(c: &ApiCaller) -> ApiResult<()> {
    if c.0.principal.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// The device if the caller may see it.
async fn visible(s: &WebState, c: &ApiCaller, id: Uuid) -> ApiResult<DeviceRow> {
    s.report()
        .device(id, c.0.tenant())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)))]
async fn whoami(State(s): State<WebState>, c: ApiCaller) -> Json<Whoami> {
    Json(Whoami {
        name: c.0.principal.name.clone(),
        role: c.0.principal.role.as_str().into(),
        tenant_id: c.0.principal.tenant_id,
        auth: match s.settings().auth {
            super::AuthMode::Required => "required".into(),
            super::AuthMode::Disabled => "disabled".into(),
        },
    })
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceListParams),
    responses((status = 200, body = DeviceList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
async fn list_devices(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<DeviceListParams>,
) -> ApiResult<Json<DeviceList>> {
    let q = p.to_query(c.0.tenant())?;
    let page = s.report().devices(&q).await?;
    Ok(Json(DeviceList {
        total: page.total,
        offset: q.offset,
        limit: q.limit,
        items: page.rows.into_iter().map(DeviceView::from).collect(),
    }))
}

/// Validate a create body into a device (the caller's scope applied).
fn new_device(c: &ApiCaller, b: CreateDevice) -> ApiResult<NewDevice> {
    let tenant_id = match (c.0.tenant(), b.tenant_id) {
        (Some(scope), Some(t)) if scope != t => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may only create devices in its own tenant",
            ));
        }
        (Some(scope), _) => scope,
        (None, Some(t)) => t,
        (None, None) => return Err(ApiError::invalid("tenant_id", "tenant_id is required")),
    };
    let f = |field: &'static str| move |reason: String| ApiError::invalid(field, reason);
    let interval = match b.backup_interval_seconds {
        None => None,
        Some(n) => {
            inventory::parse_interval(&n.to_string()).map_err(f("backup_interval_seconds"))?
        }
    };
    Ok(NewDevice {
        id: b.id.unwrap_or_else(Uuid::new_v4),
        tenant_id,
        name: inventory::parse_name(&b.name).map_err(f("name"))?,
        host: inventory::parse_host(&b.host).map_err(f("host"))?,
        ssh_port: match b.port {
            Some(0) => return Err(ApiError::invalid("port", "port must be 1 to 65535")),
            Some(p) => p,
            None => 22,
        },
        username: inventory::parse_username(&b.username).map_err(f("username"))?,
        password: inventory::parse_password(&b.password).map_err(f("password"))?,
        routeros_version: inventory::parse_routeros_version(
            b.routeros_version.as_deref().unwrap_or(""),
        )
        .map_err(f("routeros_version"))?,
        enabled: b.enabled.unwrap_or(true),
        backup_interval_seconds: interval,
        backup_cron: inventory::parse_cron_field(b.backup_cron.as_deref().unwrap_or(""))
            .map_err(f("backup_cron"))?,
    })
}

fn key_or_refuse(s: &WebState) -> ApiResult<&rosbackup_core::credentials::CredentialKey> {
    s.key().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "credentials_unavailable",
            "this server has no CREDENTIAL_ENCRYPTION_KEY, so it cannot store passwords",
        )
    })
}

#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = CreateDevice,
    responses((status = 201, body = DeviceView), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_device(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiJson(body): ApiJson<CreateDevice>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    require_admin(&c)?;
    let d = new_device(&c, body)?;
    let key = key_or_refuse(&s)?;
    if s.store().device(d.id).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("device {} already exists", d.id),
        ));
    }
    let taken: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM devices WHERE tenant_id = $1 AND name = $2")
            .bind(d.tenant_id)
            .bind(&d.name)
            .fetch_optional(s.store().pool())
            .await
            .map_err(StoreError::from)?;
    if let Some(other) = taken {
        return Err(ApiError {
            field: Some("name".into()),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "the tenant already has a device named {:?} ({other})",
                    d.name
                ),
            )
        });
    }
    let schedule = s.schedule().clone();
    let now = Utc::now();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    s.store()
        .upsert_devices(key, std::slice::from_ref(&d), || {
            schedule.first_due(now, &mut rng)
        })
        .await?;
    let row = visible(&s, &c, d.id).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody)))]
async fn get_device(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    Ok(Json(visible(&s, &c, id).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_device(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<StatusCode> {
    require_admin(&c)?;
    visible(&s, &c, id).await?;
    s.store().remove_device(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/devices/{id}/credentials", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")), request_body = Credentials,
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn set_credentials(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<Json<DeviceView>> {
    require_admin(&c)?;
    visible(&s, &c, id).await?;
    let username = match &body.username {
        None => None,
        Some(u) => {
            Some(inventory::parse_username(u).map_err(|r| ApiError::invalid("username", r))?)
        }
    };
    let password =
        inventory::parse_password(&body.password).map_err(|r| ApiError::invalid("password", r))?;
    let key = key_or_refuse(&s)?;
    s.store()
        .set_credentials(key, id, username.as_deref(), &password)
        .await?;
    Ok(Json(visible(&s, &c, id).await?.into()))
}

/// One of the state actions on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    Enable,
    Disable,
    Unblock,
    ResetHostKey,
}

impl DeviceAction {
    pub fn parse(s: &str) -> Option<DeviceAction> {
        match s {
            "enable" => Some(DeviceAction::Enable),
            "disable" => Some(DeviceAction::Disable),
            "unblock" => Some(DeviceAction::Unblock),
            "reset-host-key" => Some(DeviceAction::ResetHostKey),
            _ => None,
        }
    }

    pub fn done(self) -> &'static str {
        match self {
            DeviceAction::Enable => "enabled",
            DeviceAction::Disable => "disabled",
            DeviceAction::Unblock => "unblocked",
            DeviceAction::ResetHostKey => "host key reset: the next backup pins what it sees",
        }
    }
}

/// Apply an action to a device the caller may see and act on.
pub async fn apply_action(
    s: &WebState,
    tenant: Option<Uuid>,
    id: Uuid,
    action: DeviceAction,
) -> ApiResult<DeviceRow> {
    s.report()
        .device(id, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let store = s.store();
    match action {
        DeviceAction::Enable => store.set_enabled(id, true).await?,
        DeviceAction::Disable => store.set_enabled(id, false).await?,
        DeviceAction::Unblock => store.unblock(id).await?,
        DeviceAction::ResetHostKey => store.reset_host_key(id).await?,
    }
    s.report()
        .device(id, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

async fn action(
    s: WebState,
    c: ApiCaller,
    id: Uuid,
    action: DeviceAction,
) -> ApiResult<Json<DeviceView>> {
    require_admin(&c)?;
    Ok(Json(
        apply_action(&s, c.0.tenant(), id, action).await?.into(),
    ))
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/enable", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn enable(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::Enable).await
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/disable", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn disable(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::Disable).await
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/unblock", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unblock(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::Unblock).await
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/reset-host-key", tag = "devices",
    params(("id" = Uuid, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reset_host_key(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<DeviceView>> {
    action(s, c, id, DeviceAction::ResetHostKey).await
}

/// Queue a manual backup of a device the caller may see.
pub async fn request_backup(s: &WebState, tenant: Option<Uuid>, id: Uuid) -> ApiResult<BackupJob> {
    let row = s
        .report()
        .device(id, tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let job = BackupJob::manual(row.device.id, row.device.tenant_id);
    s.queue().push(std::slice::from_ref(&job)).await?;
    s.metrics()
        .jobs_enqueued
        .with_label_values(&["manual"])
        .inc();
    Ok(job)
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/backup", tag = "devices",
    params(("id" = Uuid, Path, description = "device id"), BackupParams),
    responses((status = 200, body = BackupOutcome, description = "finished (wait=true)"),
              (status = 202, body = BackupOutcome, description = "queued, or still running when the wait ended"),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn backup(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiQuery(p): ApiQuery<BackupParams>,
) -> ApiResult<(StatusCode, Json<BackupOutcome>)> {
    require_admin(&c)?;
    let max = s.settings().manual_timeout;
    let timeout = match p.timeout {
        None => max,
        Some(0) => {
            return Err(ApiError::bad_request(
                "timeout must be at least 1 second",
                Some("timeout".into()),
            ));
        }
        Some(t) => Duration::from_secs(t).min(max),
    };
    let job = request_backup(&s, c.0.tenant(), id).await?;
    if !p.wait.unwrap_or(false) {
        return Ok((
            StatusCode::ACCEPTED,
            Json(BackupOutcome {
                job_id: job.job_id,
                device_id: id,
                status: "queued".into(),
                run: None,
            }),
        ));
    }
    let run = rosbackup_core::manual::wait(s.store(), &job.job_id, timeout).await?;
    Ok(match run {
        Some(run) => (
            StatusCode::OK,
            Json(BackupOutcome {
                job_id: job.job_id,
                device_id: id,
                status: run.status.clone(),
                run: Some(run),
            }),
        ),
        None => (
            StatusCode::ACCEPTED,
            Json(BackupOutcome {
                job_id: job.job_id,
                device_id: id,
                status: "pending".into(),
                run: None,
            }),
        ),
    })
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/runs", tag = "runs",
    params(("id" = Uuid, Path, description = "device id"), LimitParams),
    responses((status = 200, body = Vec<Run>), (status = 404, body = ErrorBody)))]
async fn device_runs(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiQuery(p): ApiQuery<LimitParams>,
) -> ApiResult<Json<Vec<Run>>> {
    let limit = limit_of(p.limit)?;
    visible(&s, &c, id).await?;
    Ok(Json(s.store().runs(id, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsParams),
    responses((status = 200, body = Vec<RecentRun>)))]
async fn recent_runs(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<RunsParams>,
) -> ApiResult<Json<Vec<RecentRun>>> {
    let limit = limit_of(p.limit)?;
    Ok(Json(
        s.report()
            .recent_runs(c.0.tenant(), p.failures.unwrap_or(false), limit)
            .await?,
    ))
}

/// Queue stats for a caller: whole-queue for unscoped callers; a tenant's own share,
/// and only its own in-flight job ids, for scoped ones.
pub async fn queue_stats(s: &WebState, tenant: Option<Uuid>) -> ApiResult<QueueStats> {
    let mut workers = s.queue().workers().await?;
    let (_, dead) = s.queue().jobs(JobListState::Dead, tenant, 0, 1).await?;
    match tenant {
        None => Ok(QueueStats {
            depth: Some(s.queue().depth().await?),
            tenant: None,
            dead,
            workers,
        }),
        Some(t) => {
            for w in &mut workers {
                let mut own = Vec::new();
                for id in &w.inflight {
                    if let Some(job) = s.queue().job(id).await?
                        && job.tenant_id == Some(t)
                    {
                        own.push(id.clone());
                    }
                }
                w.inflight = own;
            }
            Ok(QueueStats {
                depth: None,
                tenant: Some(s.report().tenant_queue(t).await?),
                dead,
                workers,
            })
        }
    }
}

#[utoipa::path(get, path = "/api/v1/queue", tag = "queue",
    responses((status = 200, body = QueueStats)))]
async fn queue(State(s): State<WebState>, c: ApiCaller) -> ApiResult<Json<QueueStats>> {
    Ok(Json(queue_stats(&s, c.0.tenant()).await?))
}

/// The overview numbers for a caller's scope.
pub async fn overview_for(s: &WebState, tenant: Option<Uuid>) -> ApiResult<Overview> {
    let default_interval = s.schedule().interval;
    let (freshness, states, queue, recent_failures) = tokio::join!(
        s.report().freshness(tenant, default_interval),
        s.report().states(tenant),
        queue_stats(s, tenant),
        s.report().recent_runs(tenant, true, 10),
    );
    Ok(Overview {
        freshness: freshness?,
        states: states?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        queue: queue?,
        recent_failures: recent_failures?,
    })
}

#[utoipa::path(get, path = "/api/v1/overview", tag = "queue",
    responses((status = 200, body = Overview)))]
async fn overview(State(s): State<WebState>, c: ApiCaller) -> ApiResult<Json<Overview>> {
    Ok(Json(overview_for(&s, c.0.tenant()).await?))
}

#[utoipa::path(get, path = "/api/v1/stats/activity", tag = "queue", params(ActivityParams),
    responses((status = 200, body = Vec<ActivityBucket>)))]
async fn activity(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<ActivityParams>,
) -> ApiResult<Json<Vec<ActivityBucket>>> {
    let minutes = p.minutes.unwrap_or(180);
    if !(1..=10080).contains(&minutes) {
        return Err(ApiError::bad_request(
            "minutes must be 1 to 10080",
            Some("minutes".into()),
        ));
    }
    let bucket = p.bucket.unwrap_or(1);
    if !(1..=1440).contains(&bucket) {
        return Err(ApiError::bad_request(
            "bucket must be 1 to 1440 minutes",
            Some("bucket".into()),
        ));
    }
    Ok(Json(
        s.report().activity(c.0.tenant(), minutes, bucket).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/stats/backup-ages", tag = "queue",
    responses((status = 200, body = Vec<AgeBucket>)))]
async fn backup_ages(State(s): State<WebState>, c: ApiCaller) -> ApiResult<Json<Vec<AgeBucket>>> {
    Ok(Json(s.report().backup_ages(c.0.tenant()).await?))
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "devices",
    responses((status = 200, body = Vec<TenantCount>)))]
async fn tenants(State(s): State<WebState>, c: ApiCaller) -> ApiResult<Json<Vec<TenantCount>>> {
    Ok(Json(s.report().tenants(c.0.tenant()).await?))
}

/// Validate job-list parameters.
pub fn jobs_params(p: &JobsParams) -> ApiResult<(JobListState, u64, u64)> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit must be 1 to 500",
            Some("limit".into()),
        ));
    }
    Ok((
        p.state.unwrap_or(JobListState::Dead),
        p.offset.unwrap_or(0),
        limit,
    ))
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "queue", params(JobsParams),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody)))]
async fn jobs(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<JobsParams>,
) -> ApiResult<Json<JobList>> {
    let (state, offset, limit) = jobs_params(&p)?;
    let (items, total) = s.queue().jobs(state, c.0.tenant(), offset, limit).await?;
    Ok(Json(JobList { total, items }))
}

/// Retry a dead job the caller may see: it leaves the dead set and the device gets a
/// fresh manual job (which takes the device's lease like any other, so it cannot run
/// beside a scheduled one).
pub async fn retry_dead(s: &WebState, tenant: Option<Uuid>, job_id: &str) -> ApiResult<RetriedJob> {
    let job = dead_job(s, tenant, job_id).await?;
    let device_id = job.device_id.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the dead job's payload does not decode; discard it",
        )
    })?;
    let taken = s.queue().take_dead(job_id).await?;
    if taken.is_none() {
        return Err(not_dead(job_id));
    }
    let job = request_backup(s, tenant, device_id).await?;
    Ok(RetriedJob {
        dead_job_id: job_id.to_string(),
        job_id: job.job_id,
    })
}

/// Discard a dead job the caller may see.
pub async fn discard_dead(s: &WebState, tenant: Option<Uuid>, job_id: &str) -> ApiResult<()> {
    dead_job(s, tenant, job_id).await?;
    match s.queue().take_dead(job_id).await? {
        Some(_) => Ok(()),
        None => Err(not_dead(job_id)),
    }
}

fn not_dead(job_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_dead",
        format!("job {job_id} is not dead; only dead jobs can be retried or discarded"),
    )
}

async fn dead_job(s: &WebState, tenant: Option<Uuid>, job_id: &str) -> ApiResult<JobInfo> {
    let job = s
        .queue()
        .job(job_id)
        .await?
        .filter(|j| tenant.is_none() || (j.tenant_id.is_some() && j.tenant_id == tenant))
        .ok_or_else(|| ApiError::not_found(format!("no job {job_id}")))?;
    if job.state != JobListState::Dead {
        return Err(not_dead(job_id));
    }
    Ok(job)
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "queue",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = RetriedJob), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn retry_job(
    State(s): State<WebState>,
    c: ApiCaller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<RetriedJob>> {
    require_admin(&c)?;
    Ok(Json(retry_dead(&s, c.0.tenant(), &id).await?))
}

#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "queue",
    params(("id" = String, Path, description = "job id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn discard_job(
    State(s): State<WebState>,
    c: ApiCaller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&c)?;
    discard_dead(&s, c.0.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "auth",
    responses((status = 200, description = "this document")))]
async fn openapi(_c: ApiCaller) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn no_route(_c: ApiCaller) -> ApiError {
    ApiError::not_found("no such API route")
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

/// The OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "rosbackup API", version = "1",
         description = "Back up MikroTik RouterOS fleets: devices, manual backups, runs, queue."),
    paths(whoami, openapi, list_devices, create_device, get_device, delete_device,
          set_credentials, enable, disable, unblock, reset_host_key, backup, device_runs,
          recent_runs, queue, overview, activity, backup_ages, tenants, jobs, retry_job,
          discard_job, super::history::versions_api, super::history::diff_api,
          super::history::text_api, super::history::changes_api),
    components(schemas(ErrorBody, StatusParam, SortParam, OrderParam)),
    modifiers(&BearerAuth, &StandardResponses),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/openapi.json", get(openapi))
        .route("/devices", get(list_devices).post(create_device))
        .route("/devices/{id}", get(get_device).delete(delete_device))
        .route("/devices/{id}/credentials", put(set_credentials))
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
        .route("/jobs", get(jobs))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/jobs/{id}", axum::routing::delete(discard_job))
        .route("/devices/{id}/versions", get(super::history::versions_api))
        .route(
            "/devices/{id}/versions/{version}/diff",
            get(super::history::diff_api),
        )
        .route(
            "/devices/{id}/versions/{version}/text",
            get(super::history::text_api),
        )
        .route("/changes", get(super::history::changes_api))
        .fallback(no_route)
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
        ] {
            assert!(
                paths.contains_key(p),
                "{p} missing from the OpenAPI document"
            );
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
