//! The types the operations take and return: request bodies and query parameters (with
//! their validation), and the views the API serializes and the pages render.
//!
//! Part of `ops`; imports only `error`. Never carries a password or config text.

use crate::error::{ApiError, ApiResult};
use chrono::{DateTime, Utc};
use rosbackup_core::queue::{JobInfo, JobListState, QueueDepth, WorkerInfo};
use rosbackup_core::report::{
    DeviceQuery, DeviceRow, DeviceSort, Freshness, RecentRun, StatusFilter, TenantQueue,
};
use rosbackup_core::store::Run;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A device as the API shows it. Never carries the password or any config text.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The tenant's name (`rosbackup tenants`), when it has one.
    pub tenant_name: Option<String>,
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
    /// Whether the device has an SSH user key of its own (the key is never shown).
    #[serde(default)]
    pub has_ssh_key: bool,
    /// The credential profile it uses when it has no password or key of its own.
    #[serde(default)]
    pub credential_profile_id: Option<Uuid>,
    /// Its own export timeout override, seconds (`null`: its profile's, else adaptive).
    #[serde(default)]
    pub export_timeout_seconds: Option<i32>,
    /// The export timeout its next run will have and where it comes from (`device`,
    /// `profile`, `adaptive`, `fleet`); only on a single device (`GET /devices/{id}`,
    /// `POST /devices`, `PUT /devices/{id}/export-timeout`), not in lists.
    #[serde(default)]
    pub export_timeout: Option<EffectiveTimeout>,
    /// The jump host (bastion) it is reached through — its own, its profile's or its
    /// tenant's (`source`) — never its secrets; `null`: direct.
    #[serde(default)]
    pub jump_host: Option<JumpHostView>,
    /// It connects directly whatever its profile or tenant names (`jump_host` `direct`).
    #[serde(default)]
    pub jump_direct: bool,
    /// Its last five binary backup runs, newest first (a failed one changes nothing
    /// above); only on a single device, not in lists.
    #[serde(default)]
    pub binary_runs: Option<Vec<rosbackup_core::binary::store::BinaryRun>>,
}

/// A jump host as shown: `[user@]host:port` and whether a password or key is stored for
/// it, never the secrets themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JumpHostView {
    /// `[user@]host:port`.
    pub display: String,
    pub host: String,
    pub port: u16,
    /// Its own user on the bastion (`null`: the device's user).
    pub username: Option<String>,
    pub has_password: bool,
    pub has_key: bool,
    /// Where a device's jump host comes from: `device`, `profile` or `tenant` (only on a
    /// device).
    #[serde(default)]
    pub source: Option<rosbackup_core::jump::JumpSource>,
    /// The bastion's pinned host key (`null`: not pinned yet); not in device lists.
    #[serde(default)]
    pub pinned_fingerprint: Option<String>,
}

impl From<rosbackup_core::bastions::ShownJump> for JumpHostView {
    fn from(j: rosbackup_core::bastions::ShownJump) -> Self {
        JumpHostView {
            display: j.display,
            host: j.host,
            port: j.port,
            username: j.username,
            has_password: j.has_password,
            has_key: j.has_key,
            source: None,
            pinned_fingerprint: None,
        }
    }
}

/// A new jump host for a device, a credential profile or a tenant. Write-only secrets;
/// `Debug` leaves them out.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetJumpHost {
    /// `[user@]host[:port]` (as `ssh -J`); for a device also `direct` (ignore its
    /// profile's and tenant's). `null` or empty: none of its own (a device then inherits
    /// its profile's or tenant's).
    pub jump_host: Option<String>,
    /// A password for the bastion (stored sealed, never shown).
    pub jump_password: Option<String>,
    /// A private key for the bastion (OpenSSH or PEM text; Ed25519 or RSA; stored sealed,
    /// never shown). Without one the device's key is tried there.
    pub jump_key: Option<String>,
    /// The passphrase of `jump_key`, when it is protected (used once, never stored).
    pub jump_key_passphrase: Option<String>,
}

impl std::fmt::Debug for SetJumpHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetJumpHost")
            .field("jump_host", &self.jump_host)
            .finish_non_exhaustive()
    }
}

/// A tenant's default jump host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantJumpHost {
    pub tenant_id: Uuid,
    /// `null`: none (its devices connect directly unless their profile names one).
    pub jump_host: Option<JumpHostView>,
}

/// A bastion whose pinned key to forget.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBastion {
    /// `host[:port]` (port 22 by default).
    pub bastion: String,
    /// Its tenant: a scoped token's own; otherwise the default tenant when absent.
    pub tenant_id: Option<Uuid>,
}

/// The export timeout that applies and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EffectiveTimeout {
    pub seconds: u32,
    /// `device`, `profile`, `adaptive` or `fleet`.
    pub source: rosbackup_core::export_timeout::TimeoutSource,
}

impl From<rosbackup_core::export_timeout::Effective> for EffectiveTimeout {
    fn from(e: rosbackup_core::export_timeout::Effective) -> Self {
        EffectiveTimeout {
            seconds: e.seconds,
            source: e.source,
        }
    }
}

/// An export timeout override to set: whole seconds from 1 to 3600, or `null` (or
/// absent) for none — the profile's, else the adaptive timeout.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportTimeout {
    pub seconds: Option<i64>,
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
            tenant_name: row.tenant_name,
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
            has_ssh_key: d.has_ssh_key,
            credential_profile_id: d.credential_profile_id,
            export_timeout_seconds: d.export_timeout_seconds,
            export_timeout: None,
            jump_host: None,
            jump_direct: d.jump_direct,
            binary_runs: None,
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
        // A typo must not read as "no device has this error": refuse an unknown kind.
        if let Some(k) = self.error_kind.as_deref().filter(|s| !s.is_empty())
            && k.parse::<rosbackup_core::error::ErrorKind>().is_err()
        {
            let known: Vec<&str> = rosbackup_core::error::ErrorKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect();
            return Err(ApiError::bad_request(
                format!("unknown error_kind {k:?} (known: {})", known.join(", ")),
                Some("error_kind".into()),
            ));
        }
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

/// A new device. Its secrets (`password`, `ssh_key`, `ssh_key_passphrase`) are
/// write-only: no response carries them. `Debug` leaves them out.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// Defaults to a new random id.
    pub id: Option<Uuid>,
    /// The default tenant (all zeros) when absent; a token scoped to a tenant creates
    /// in its own (naming another is refused).
    pub tenant_id: Option<Uuid>,
    pub name: String,
    /// IPv4/IPv6 address or DNS name.
    pub host: String,
    /// SSH port (default 22).
    pub port: Option<u16>,
    /// Optional with `credential_profile` (the profile's user is used).
    #[serde(default)]
    pub username: String,
    /// Optional with `ssh_key` or `credential_profile`.
    #[serde(default)]
    pub password: String,
    /// A private key (OpenSSH or PEM text; Ed25519 or RSA), tried before the password.
    pub ssh_key: Option<String>,
    /// The passphrase of `ssh_key`, when it is protected (used once, never stored).
    pub ssh_key_passphrase: Option<String>,
    /// The name of a credential profile of the tenant, used when the device has no
    /// password or key of its own.
    pub credential_profile: Option<String>,
    pub routeros_version: Option<String>,
    pub enabled: Option<bool>,
    pub backup_interval_seconds: Option<i32>,
    pub backup_cron: Option<String>,
    /// The device's export timeout, seconds (1 to 3600); without it, its profile's or
    /// the adaptive one.
    pub export_timeout_seconds: Option<i64>,
}

impl std::fmt::Debug for CreateDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateDevice")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("credential_profile", &self.credential_profile)
            .finish_non_exhaustive()
    }
}

/// A tenant's new name: unique (case-insensitive), 1-100 characters, not a UUID.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantName {
    pub name: String,
}

/// New credentials; `username` stays as it is when absent, and so do the password and
/// the key. Write-only; `Debug` leaves the secrets out.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: Option<String>,
    /// A new password; an empty one removes it (key only).
    pub password: Option<String>,
    /// A new private key (OpenSSH or PEM text; Ed25519 or RSA).
    pub ssh_key: Option<String>,
    /// The passphrase of `ssh_key`, when it is protected (used once, never stored).
    pub ssh_key_passphrase: Option<String>,
    /// Remove the device's key.
    #[serde(default)]
    pub remove_ssh_key: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("remove_ssh_key", &self.remove_ssh_key)
            .finish_non_exhaustive()
    }
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
    /// This request joined the device's queued, running or just finished manual backup
    /// (at most one per device; everyone who joins gets its outcome).
    pub joined: bool,
    pub run: Option<Run>,
    /// Why a wait ended `pending` at once: no worker serves the queue (none registered, or
    /// none seen for a while). The job stays queued and runs when a worker starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
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

pub(crate) fn limit_of(l: Option<i64>) -> ApiResult<i64> {
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

/// A credential profile as the API shows it: never its secrets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialProfileView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub username: String,
    pub has_password: bool,
    pub has_ssh_key: bool,
    /// Devices that name the profile.
    pub devices: i64,
    /// The export timeout of its devices, seconds, unless a device has its own (`null`:
    /// adaptive).
    #[serde(default)]
    pub export_timeout_seconds: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its devices' jump host unless a device has its own or is direct (never its
    /// secrets).
    #[serde(default)]
    pub jump_host: Option<JumpHostView>,
}

impl From<rosbackup_core::profiles::CredentialProfile> for CredentialProfileView {
    fn from(p: rosbackup_core::profiles::CredentialProfile) -> Self {
        CredentialProfileView {
            id: p.id,
            tenant_id: p.tenant_id,
            name: p.name,
            username: p.username,
            has_password: p.has_password,
            has_ssh_key: p.has_ssh_key,
            devices: p.devices,
            export_timeout_seconds: p.export_timeout_seconds,
            created_at: p.created_at,
            updated_at: p.updated_at,
            jump_host: None,
        }
    }
}

/// A new credential profile: a user with a password and/or a key. The secrets are
/// write-only; `Debug` leaves them out.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredentialProfile {
    /// The default tenant (all zeros) when absent; a token scoped to a tenant creates
    /// in its own (naming another is refused).
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub username: String,
    pub password: Option<String>,
    /// A private key (OpenSSH or PEM text; Ed25519 or RSA).
    pub ssh_key: Option<String>,
    /// The passphrase of `ssh_key`, when it is protected (used once, never stored).
    pub ssh_key_passphrase: Option<String>,
}

impl std::fmt::Debug for CreateCredentialProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateCredentialProfile")
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A change to a credential profile, applied to all its devices at once (their
/// `auth_failed` blocks are lifted). Absent fields stay; an empty `password` removes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredentialProfile {
    pub username: Option<String>,
    pub password: Option<String>,
    pub ssh_key: Option<String>,
    pub ssh_key_passphrase: Option<String>,
    #[serde(default)]
    pub remove_ssh_key: bool,
}

impl std::fmt::Debug for UpdateCredentialProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateCredentialProfile")
            .field("username", &self.username)
            .field("remove_ssh_key", &self.remove_ssh_key)
            .finish_non_exhaustive()
    }
}
