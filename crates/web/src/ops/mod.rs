//! The operations both faces call: the JSON API (`api`) and the dashboard (`pages`,
//! `history`) do nothing to devices, jobs or the queue except through these.
//!
//! Two checks live here once: [`device`] is the tenant check (a device outside the
//! caller's tenant is the same 404 as one that does not exist), and [`require_admin`]
//! the role check; every operation that acts calls it first. Manual backups go through
//! [`rosbackup_core::manual::request`], the same function the CLI and the NATS trigger
//! use (it counts `jobs_enqueued{trigger="manual"}`).
//!
//! Imports `auth`, `error` and `state`; must not import a face (`api`, `pages`,
//! `history`). The types operations take and return are in [`types`].

pub mod types;

pub use types::*;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::{AuthMode, WebState};
use axum::http::StatusCode;
use chrono::Utc;
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::inventory;
use rosbackup_core::manual::Requested;
use rosbackup_core::queue::{JobInfo, JobListState};
use rosbackup_core::report::{ActivityBucket, AgeBucket, DeviceRow, RecentRun, TenantCount};
use rosbackup_core::store::{KeyChange, NewDevice, Run, StoreError};
use rosbackup_core::userkey::UserKey;
use std::time::Duration;
use uuid::Uuid;

// ---- the two checks ----------------------------------------------------------------

/// Acting (anything but reading) needs an admin.
pub fn require_admin(c: &Caller) -> ApiResult<()> {
    if c.principal.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// The device if the caller may see it: the tenant check.
pub async fn device(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<DeviceRow> {
    s.report()
        .device(id, c.tenant())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))
}

// ---- who ---------------------------------------------------------------------------

pub fn whoami(s: &WebState, c: &Caller) -> Whoami {
    Whoami {
        name: c.principal.name.clone(),
        role: c.principal.role.as_str().into(),
        tenant_id: c.principal.tenant_id,
        auth: match s.settings().auth {
            AuthMode::Required => "required".into(),
            AuthMode::Disabled => "disabled".into(),
        },
    }
}

// ---- devices -----------------------------------------------------------------------

/// A page of the devices the caller may see.
pub async fn list_devices(s: &WebState, c: &Caller, p: &DeviceListParams) -> ApiResult<DeviceList> {
    let q = p.to_query(c.tenant())?;
    let page = s.report().devices(&q).await?;
    let ids: Vec<Uuid> = page.rows.iter().map(|r| r.device.id).collect();
    let mut jumps = rosbackup_core::bastions::device_jumps(s.store(), &ids).await?;
    Ok(DeviceList {
        total: page.total,
        offset: q.offset,
        limit: q.limit,
        items: page
            .rows
            .into_iter()
            .map(|r| {
                let jump = jumps.remove(&r.device.id);
                let mut v = DeviceView::from(r);
                v.jump_host = jump.map(|(j, source)| JumpHostView {
                    source: Some(source),
                    ..j.into()
                });
                v
            })
            .collect(),
    })
}

/// Validate a create body into a device (the caller's scope applied).
fn new_device(c: &Caller, b: CreateDevice) -> ApiResult<NewDevice> {
    let tenant_id = match (c.tenant(), b.tenant_id) {
        (Some(scope), Some(t)) if scope != t => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may only create devices in its own tenant",
            ));
        }
        (Some(scope), _) => scope,
        (None, Some(t)) => t,
        // As the CLI and the inventory CSV: no tenant named, the default one.
        (None, None) => rosbackup_core::tenant::DEFAULT_TENANT,
    };
    let f = |field: &'static str| move |reason: String| ApiError::invalid(field, reason);
    let interval = match b.backup_interval_seconds {
        None => None,
        Some(n) => {
            inventory::parse_interval(&n.to_string()).map_err(f("backup_interval_seconds"))?
        }
    };
    let ssh_key = match &b.ssh_key {
        None => None,
        Some(text) => Some(import_key(text, b.ssh_key_passphrase.as_deref())?),
    };
    let credential_profile = match b.credential_profile.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) => Some(inventory::parse_name(name).map_err(f("credential_profile"))?),
    };
    // Validated like an inventory row: a key or a profile makes the password optional,
    // a profile the user too (unless the device has a password or key of its own).
    let username = if credential_profile.is_some()
        && b.username.is_empty()
        && b.password.is_empty()
        && ssh_key.is_none()
    {
        String::new()
    } else if b.username.trim().is_empty() {
        return Err(ApiError::invalid(
            "username",
            "required (or a credential_profile, whose user is used)",
        ));
    } else {
        inventory::parse_username(&b.username).map_err(f("username"))?
    };
    let password = if (ssh_key.is_some() || credential_profile.is_some()) && b.password.is_empty() {
        rosbackup_core::Secret::default()
    } else if b.password.is_empty() {
        return Err(ApiError::invalid(
            "password",
            "required (or an ssh_key, or a credential_profile)",
        ));
    } else {
        inventory::parse_password(&b.password).map_err(f("password"))?
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
        username,
        password,
        ssh_key,
        credential_profile,
        keep_ssh_key: false,
        keep_credential_profile: false,
        jump: None,
        routeros_version: inventory::parse_routeros_version(
            b.routeros_version.as_deref().unwrap_or(""),
        )
        .map_err(f("routeros_version"))?,
        enabled: b.enabled.unwrap_or(true),
        backup_interval_seconds: interval,
        backup_cron: inventory::parse_cron_field(b.backup_cron.as_deref().unwrap_or(""))
            .map_err(f("backup_cron"))?,
        export_timeout_seconds: b
            .export_timeout_seconds
            .map(|s| timeout_override("export_timeout_seconds", s))
            .transpose()?
            .map(Some),
    })
}

/// An export timeout override from a request body: a clear 422 on `field` for 0, a
/// negative or an absurd value.
fn timeout_override(field: &str, seconds: i64) -> ApiResult<u32> {
    use rosbackup_core::export_timeout::OverrideError;
    rosbackup_core::export_timeout::check_override(seconds).map_err(|e| {
        // The CLI's word for "no override" is `auto`; in JSON it is `null`.
        let reason = match e {
            OverrideError::TooSmall => {
                "must be at least 1 second (null removes the override)".into()
            }
            e => e.to_string(),
        };
        ApiError::invalid(field, format!("{seconds}: {reason}"))
    })
}

/// A private key from a request body, decrypted with its passphrase; refused with the
/// reason (never the key) as a 422 on `ssh_key`.
fn import_key(text: &str, passphrase: Option<&str>) -> ApiResult<UserKey> {
    import_key_field(("ssh_key", "ssh_key_passphrase"), text, passphrase)
}

/// [`import_key`] for the fields `(key, passphrase)`: the 422 names the key's field, and
/// for a protected key without its passphrase the field that takes it.
fn import_key_field(
    (field, passphrase_field): (&str, &str),
    text: &str,
    passphrase: Option<&str>,
) -> ApiResult<UserKey> {
    let passphrase = passphrase.map(rosbackup_core::Secret::new);
    UserKey::import(text, passphrase.as_ref()).map_err(|e| match e {
        rosbackup_core::userkey::KeyImportError::NeedsPassphrase => ApiError::invalid(
            field,
            format!("{e}; give its passphrase in {passphrase_field}"),
        ),
        e => ApiError::invalid(field, e.to_string()),
    })
}

/// The credential key, or a refusal when the server has none.
fn key_or_refuse(s: &WebState) -> ApiResult<&CredentialKey> {
    s.key().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "credentials_unavailable",
            "this server has no CREDENTIAL_ENCRYPTION_KEY, so it cannot store passwords",
        )
    })
}

/// Create a device (admins; in the caller's tenant when scoped).
pub async fn create_device(s: &WebState, c: &Caller, body: CreateDevice) -> ApiResult<DeviceRow> {
    require_admin(c)?;
    let d = new_device(c, body)?;
    let key = key_or_refuse(s)?;
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
    // A profile the tenant does not have is the body's mistake (422 naming the field), not
    // a conflict: asked here rather than left to the insert's own refusal.
    if let Some(name) = &d.credential_profile {
        let known: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM credential_profiles WHERE tenant_id = $1 AND name = $2",
        )
        .bind(d.tenant_id)
        .bind(name)
        .fetch_optional(s.store().pool())
        .await
        .map_err(StoreError::from)?;
        if known.is_none() {
            return Err(ApiError::invalid(
                "credential_profile",
                format!("the tenant has no credential profile named {name:?}"),
            ));
        }
    }
    let schedule = s.schedule().clone();
    let now = Utc::now();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    s.store()
        .upsert_devices(key, std::slice::from_ref(&d), || {
            schedule.first_due(now, &mut rng)
        })
        .await?;
    device(s, c, d.id).await
}

/// A device the caller may see, with the export timeout its next run will have.
pub async fn device_view(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<DeviceView> {
    let row = device(s, c, id).await?;
    let inputs = s.store().timeout_inputs(id).await?;
    let tenant = row.device.tenant_id;
    let mut view = DeviceView::from(row);
    view.export_timeout = Some(
        rosbackup_core::export_timeout::effective(&s.settings().export_timeouts, &inputs).into(),
    );
    view.jump_host = device_jump(s, tenant, id).await?;
    view.binary_runs = Some(rosbackup_core::binary::store::recent_runs(s.store(), id, 5).await?);
    Ok(view)
}

/// The jump host a device goes through, with its source and the bastion's pinned key.
pub async fn device_jump(s: &WebState, tenant: Uuid, id: Uuid) -> ApiResult<Option<JumpHostView>> {
    let Some((j, source)) = rosbackup_core::bastions::device_jumps(s.store(), &[id])
        .await?
        .remove(&id)
    else {
        return Ok(None);
    };
    let pinned = rosbackup_core::bastions::pin(s.store(), tenant, &j.host, j.port).await?;
    Ok(Some(JumpHostView {
        source: Some(source),
        pinned_fingerprint: pinned,
        ..j.into()
    }))
}

/// A jump host from a request body: `None` for none of its own (`null` or empty), else
/// the setting with its secrets imported; a 422 names the field. `direct` only where
/// `direct_allowed` (a device).
fn jump_setting(
    b: &SetJumpHost,
    direct_allowed: bool,
) -> ApiResult<rosbackup_core::jump::JumpSetting> {
    use rosbackup_core::jump::{JumpSetting, JumpSpec};
    let text = b.jump_host.as_deref().map(str::trim).unwrap_or("");
    let has_secret =
        b.jump_password.as_deref().is_some_and(|p| !p.is_empty()) || b.jump_key.is_some();
    if text.is_empty() || text == "direct" {
        if text == "direct" && !direct_allowed {
            return Err(ApiError::invalid(
                "jump_host",
                "`direct` is for a device; for a profile or tenant give null for none",
            ));
        }
        if has_secret {
            return Err(ApiError::invalid(
                if b.jump_key.is_some() {
                    "jump_key"
                } else {
                    "jump_password"
                },
                "jump credentials need a jump_host to go with",
            ));
        }
        return Ok(if text.is_empty() {
            JumpSetting::Inherit
        } else {
            JumpSetting::Direct
        });
    }
    let mut spec = JumpSpec::parse(text).map_err(|r| ApiError::invalid("jump_host", r))?;
    spec.password = b
        .jump_password
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(rosbackup_core::Secret::new);
    spec.key = match &b.jump_key {
        None => None,
        Some(k) => Some(import_key_field(
            ("jump_key", "jump_key_passphrase"),
            k,
            b.jump_key_passphrase.as_deref(),
        )?),
    };
    Ok(JumpSetting::Via(spec))
}

/// Set or clear a device's own jump host, or make it direct (admins). A device blocked
/// `bastion_host_key_mismatch` that no longer goes through that bastion is unblocked
/// (`rosbackup_core::bastions::set_device_jump`, as the CLI).
pub async fn set_device_jump(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: SetJumpHost,
) -> ApiResult<DeviceView> {
    require_admin(c)?;
    let setting = jump_setting(&body, true)?;
    device(s, c, id).await?;
    let key = key_or_refuse(s)?;
    rosbackup_core::bastions::set_device_jump(s.store(), key, id, &setting)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    device_view(s, c, id).await
}

/// Set or clear a credential profile's jump host (admins); its devices that no longer go
/// through a bastion that blocked them are unblocked.
pub async fn set_profile_jump(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: SetJumpHost,
) -> ApiResult<CredentialProfileView> {
    require_admin(c)?;
    let spec = match jump_setting(&body, false)? {
        rosbackup_core::jump::JumpSetting::Via(spec) => Some(spec),
        _ => None,
    };
    profile(s, c, id).await?;
    let key = key_or_refuse(s)?;
    rosbackup_core::bastions::set_profile_jump(s.store(), key, id, spec.as_ref())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no credential profile {id}")))?;
    profile(s, c, id).await
}

/// The tenant if the caller may see it (a scoped caller only its own: a 404 otherwise).
fn own_tenant(c: &Caller, id: Uuid) -> ApiResult<()> {
    if c.tenant().is_some_and(|t| t != id) {
        return Err(ApiError::not_found(format!("no tenant {id}")));
    }
    Ok(())
}

/// A tenant's default jump host (never its secrets).
pub async fn tenant_jump(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<TenantJumpHost> {
    own_tenant(c, id)?;
    let shown = rosbackup_core::bastions::tenant_jump_shown(s.store(), id).await?;
    let jump_host = match shown {
        None => None,
        Some(j) => {
            let pinned = rosbackup_core::bastions::pin(s.store(), id, &j.host, j.port).await?;
            Some(JumpHostView {
                pinned_fingerprint: pinned,
                ..j.into()
            })
        }
    };
    Ok(TenantJumpHost {
        tenant_id: id,
        jump_host,
    })
}

/// Set or clear a tenant's default jump host (admins; a scoped admin only its own).
pub async fn set_tenant_jump(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: SetJumpHost,
) -> ApiResult<TenantJumpHost> {
    require_admin(c)?;
    own_tenant(c, id)?;
    let spec = match jump_setting(&body, false)? {
        rosbackup_core::jump::JumpSetting::Via(spec) => Some(spec),
        _ => None,
    };
    let key = key_or_refuse(s)?;
    rosbackup_core::bastions::set_tenant_jump(s.store(), key, id, spec.as_ref()).await?;
    tenant_jump(s, c, id).await
}

/// The pinned bastion keys of the caller's tenant (all, unscoped), with the key a
/// bastion presented instead when it changed (admins).
pub async fn bastions(
    s: &WebState,
    c: &Caller,
) -> ApiResult<Vec<rosbackup_core::bastions::Bastion>> {
    require_admin(c)?;
    Ok(rosbackup_core::bastions::bastions(s.store(), c.tenant()).await?)
}

/// Forget a bastion's pinned key and lift the `bastion_host_key_mismatch` blocks of the
/// devices behind it (admins), as `rosbackup bastions reset-host-key`.
pub async fn reset_bastion(
    s: &WebState,
    c: &Caller,
    body: ResetBastion,
) -> ApiResult<rosbackup_core::bastions::Reset> {
    require_admin(c)?;
    let spec = rosbackup_core::jump::JumpSpec::parse(&body.bastion)
        .map_err(|r| ApiError::invalid("bastion", r))?;
    let tenant = match (c.tenant(), body.tenant_id) {
        (Some(scope), Some(t)) if scope != t => {
            return Err(ApiError::not_found(format!("no tenant {t}")));
        }
        (Some(scope), _) => scope,
        (None, Some(t)) => t,
        (None, None) => rosbackup_core::tenant::DEFAULT_TENANT,
    };
    Ok(rosbackup_core::bastions::reset_pin(s.store(), tenant, &spec.host, spec.port).await?)
}

/// Set or remove a device's export timeout override (admins); a 422 on `seconds` for 0,
/// a negative or an absurd value.
pub async fn set_export_timeout(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: ExportTimeout,
) -> ApiResult<DeviceView> {
    require_admin(c)?;
    let seconds = body
        .seconds
        .map(|v| timeout_override("seconds", v))
        .transpose()?;
    device(s, c, id).await?;
    s.store().set_export_timeout(id, seconds).await?;
    device_view(s, c, id).await
}

/// Set or remove a credential profile's export timeout override (admins).
pub async fn set_profile_export_timeout(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: ExportTimeout,
) -> ApiResult<CredentialProfileView> {
    require_admin(c)?;
    let seconds = body
        .seconds
        .map(|v| timeout_override("seconds", v))
        .transpose()?;
    profile(s, c, id).await?;
    s.store().set_profile_export_timeout(id, seconds).await?;
    profile(s, c, id).await
}

/// Delete a device the caller may see (admins).
pub async fn delete_device(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<()> {
    require_admin(c)?;
    device(s, c, id).await?;
    s.store().remove_device(id).await?;
    Ok(())
}

/// Replace a device's password (and username, when given) (admins).
pub async fn set_credentials(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: Credentials,
) -> ApiResult<DeviceRow> {
    require_admin(c)?;
    let current = device(s, c, id).await?.device;
    let username = match &body.username {
        None => None,
        Some(u) => {
            Some(inventory::parse_username(u).map_err(|r| ApiError::invalid("username", r))?)
        }
    };
    let password = body.password.as_deref().map(rosbackup_core::Secret::new);
    let ssh_key = match &body.ssh_key {
        None => None,
        Some(text) => Some(import_key(text, body.ssh_key_passphrase.as_deref())?),
    };
    if username.is_none() && password.is_none() && ssh_key.is_none() && !body.remove_ssh_key {
        return Err(ApiError::invalid(
            "password",
            "nothing to change: give a username, a password, an ssh_key, or remove_ssh_key",
        ));
    }
    if ssh_key.is_some() && body.remove_ssh_key {
        return Err(ApiError::invalid(
            "remove_ssh_key",
            "ssh_key and remove_ssh_key together",
        ));
    }
    let change = match (&ssh_key, body.remove_ssh_key) {
        (Some(k), _) => KeyChange::Set(k),
        (None, true) => KeyChange::Clear,
        (None, false) => KeyChange::Keep,
    };
    let key = key_or_refuse(s)?;
    // As the CLI: a change must leave the device a way to log in (a key, a password, or a
    // credential profile); otherwise its next backup is a certain `auth_failed`.
    let keeps_key = current.has_ssh_key && matches!(change, KeyChange::Keep);
    let no_password = match &password {
        Some(p) => p.is_empty(),
        None => s.store().password(key, id).await?.is_empty(),
    };
    if no_password && ssh_key.is_none() && !keeps_key && current.credential_profile_id.is_none() {
        return Err(ApiError::invalid(
            if body.remove_ssh_key {
                "remove_ssh_key"
            } else {
                "password"
            },
            "the device would have neither a password nor a key (and no credential profile); nothing changed",
        ));
    }
    s.store()
        .update_credentials(key, id, username.as_deref(), password.as_ref(), change)
        .await?;
    device(s, c, id).await
}

// ---- credential profiles (admins) ------------------------------------------------

/// The profiles of the caller's tenant (all, for an unscoped admin).
pub async fn list_profiles(s: &WebState, c: &Caller) -> ApiResult<Vec<CredentialProfileView>> {
    require_admin(c)?;
    let mut out = Vec::new();
    for p in s.store().list_profiles(c.tenant()).await? {
        out.push(with_jump(s, p.into()).await?);
    }
    Ok(out)
}

/// A profile view with its jump host (and the bastion's pinned key).
async fn with_jump(s: &WebState, mut p: CredentialProfileView) -> ApiResult<CredentialProfileView> {
    if let Some(j) = rosbackup_core::bastions::profile_jump_shown(s.store(), p.id).await? {
        let pinned = rosbackup_core::bastions::pin(s.store(), p.tenant_id, &j.host, j.port).await?;
        p.jump_host = Some(JumpHostView {
            pinned_fingerprint: pinned,
            ..j.into()
        });
    }
    Ok(p)
}

/// A profile the caller may see (a 404 otherwise, like one that does not exist).
pub async fn profile(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<CredentialProfileView> {
    require_admin(c)?;
    match s.store().profile(id).await {
        Ok(p) if c.tenant().is_none_or(|t| t == p.tenant_id) => with_jump(s, p.into()).await,
        Ok(_) | Err(StoreError::Invalid(_)) => {
            Err(ApiError::not_found(format!("no credential profile {id}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Create a profile.
pub async fn create_profile(
    s: &WebState,
    c: &Caller,
    b: CreateCredentialProfile,
) -> ApiResult<CredentialProfileView> {
    require_admin(c)?;
    let tenant_id = match (c.tenant(), b.tenant_id) {
        (Some(scope), Some(t)) if scope != t => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may only create profiles in its own tenant",
            ));
        }
        (Some(scope), _) => scope,
        (None, Some(t)) => t,
        // As the CLI and the inventory CSV: no tenant named, the default one.
        (None, None) => rosbackup_core::tenant::DEFAULT_TENANT,
    };
    let name = inventory::parse_name(&b.name).map_err(|r| ApiError::invalid("name", r))?;
    let username =
        inventory::parse_username(&b.username).map_err(|r| ApiError::invalid("username", r))?;
    let ssh_key = match &b.ssh_key {
        None => None,
        Some(text) => Some(import_key(text, b.ssh_key_passphrase.as_deref())?),
    };
    let password = b
        .password
        .filter(|p| !p.is_empty())
        .map(rosbackup_core::Secret::new);
    if password.is_none() && ssh_key.is_none() {
        return Err(ApiError::invalid(
            "password",
            "a credential profile needs a password or an ssh_key",
        ));
    }
    let key = key_or_refuse(s)?;
    let p = s
        .store()
        .create_profile(
            key,
            &rosbackup_core::profiles::NewProfile {
                tenant_id,
                name,
                username,
                password,
                ssh_key,
            },
        )
        .await?;
    Ok(p.into())
}

/// Change a profile; all its devices log in with the change at once.
pub async fn update_profile(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    b: UpdateCredentialProfile,
) -> ApiResult<CredentialProfileView> {
    profile(s, c, id).await?;
    // As `credentials set`: a request that changes nothing is refused, not answered 200.
    if b.username.is_none() && b.password.is_none() && b.ssh_key.is_none() && !b.remove_ssh_key {
        return Err(ApiError::invalid(
            "password",
            "nothing to change: give a username, a password, an ssh_key, or remove_ssh_key",
        ));
    }
    let username = match &b.username {
        None => None,
        Some(u) => {
            Some(inventory::parse_username(u).map_err(|r| ApiError::invalid("username", r))?)
        }
    };
    let ssh_key = match &b.ssh_key {
        None => None,
        Some(text) => Some(import_key(text, b.ssh_key_passphrase.as_deref())?),
    };
    if ssh_key.is_some() && b.remove_ssh_key {
        return Err(ApiError::invalid(
            "remove_ssh_key",
            "ssh_key and remove_ssh_key together",
        ));
    }
    let change = match (&ssh_key, b.remove_ssh_key) {
        (Some(k), _) => KeyChange::Set(k),
        (None, true) => KeyChange::Clear,
        (None, false) => KeyChange::Keep,
    };
    let password = b.password.as_deref().map(rosbackup_core::Secret::new);
    let key = key_or_refuse(s)?;
    let u = match s
        .store()
        .update_profile(key, id, username.as_deref(), password.as_ref(), change)
        .await
    {
        Err(StoreError::Invalid(m)) => return Err(ApiError::invalid("password", m)),
        other => other?,
    };
    with_jump(s, u.profile.into()).await
}

/// Remove a profile no device uses (a 409 with the count otherwise).
pub async fn delete_profile(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<()> {
    profile(s, c, id).await?;
    s.store().remove_profile(id).await?;
    Ok(())
}

/// Apply an action to a device the caller may see (admins).
pub async fn apply_action(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    action: DeviceAction,
) -> ApiResult<DeviceRow> {
    require_admin(c)?;
    device(s, c, id).await?;
    let store = s.store();
    match action {
        DeviceAction::Enable => store.set_enabled(id, true).await?,
        DeviceAction::Disable => store.set_enabled(id, false).await?,
        DeviceAction::Unblock => store.unblock(id).await?,
        DeviceAction::ResetHostKey => store.reset_host_key(id).await?,
    }
    device(s, c, id).await
}

// ---- manual backups ----------------------------------------------------------------

/// Queue a manual backup of a device the caller may see (admins), or join the one it
/// has, through [`rosbackup_core::manual::request`] like every other door.
pub async fn request_backup(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<Requested> {
    require_admin(c)?;
    enqueue_manual(s, c, id).await
}

async fn enqueue_manual(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<Requested> {
    Ok(rosbackup_core::manual::request(s.store(), s.queue(), s.metrics(), id, c.tenant()).await?)
}

/// A manual backup (admins): queued, or followed to its outcome with `wait` (for at most
/// `timeout` seconds, capped at the server's manual timeout). `run` is set when it
/// finished.
pub async fn backup(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    p: &BackupParams,
) -> ApiResult<BackupOutcome> {
    require_admin(c)?;
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
    let wait = p.wait.unwrap_or(false);
    // Before pushing: a worker that picks the job up in between must not look absent.
    let absent = match wait {
        true => rosbackup_core::manual::presence(s.queue())
            .await
            .and_then(|w| w.problem(&s.queue().config().name)),
        false => None,
    };
    let job = enqueue_manual(s, c, id).await?;
    let joined = job.joined.is_some();
    if !wait {
        return Ok(BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: "queued".into(),
            joined,
            run: None,
            problem: None,
        });
    }
    // No worker to run it: pending now rather than after the whole wait (a job that
    // joined a finished backup has its outcome already).
    let finished = job.joined == Some(rosbackup_core::manual::Joined::Recent);
    if let Some(problem) = absent.filter(|_| !finished) {
        return Ok(BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: "pending".into(),
            joined,
            run: None,
            problem: Some(problem),
        });
    }
    let run = rosbackup_core::manual::wait(s.store(), &job.job_id, timeout).await?;
    Ok(match run {
        Some(run) => BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: run.status.clone(),
            joined,
            run: Some(run),
            problem: None,
        },
        None => BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: "pending".into(),
            joined,
            run: None,
            problem: None,
        },
    })
}

// ---- runs and stats ----------------------------------------------------------------

/// A device's runs, newest first.
pub async fn device_runs(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    p: &LimitParams,
) -> ApiResult<Vec<Run>> {
    let limit = limit_of(p.limit)?;
    device(s, c, id).await?;
    Ok(s.store().runs(id, limit).await?)
}

/// Recent runs across the caller's devices.
pub async fn recent_runs(s: &WebState, c: &Caller, p: &RunsParams) -> ApiResult<Vec<RecentRun>> {
    let limit = limit_of(p.limit)?;
    Ok(s.report()
        .recent_runs(c.tenant(), p.failures.unwrap_or(false), limit)
        .await?)
}

/// Queue stats for a caller: whole-queue for unscoped callers; a tenant's own share,
/// and only its own in-flight job ids, for scoped ones.
pub async fn queue_stats(s: &WebState, c: &Caller) -> ApiResult<QueueStats> {
    let tenant = c.tenant();
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

/// The overview numbers for a caller's scope.
pub async fn overview(s: &WebState, c: &Caller) -> ApiResult<Overview> {
    let tenant = c.tenant();
    let default_interval = s.schedule().interval;
    let (freshness, states, queue, recent_failures) = tokio::join!(
        s.report().freshness(tenant, default_interval),
        s.report().states(tenant),
        queue_stats(s, c),
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

/// Backups per time bucket.
pub async fn activity(
    s: &WebState,
    c: &Caller,
    p: &ActivityParams,
) -> ApiResult<Vec<ActivityBucket>> {
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
    Ok(s.report().activity(c.tenant(), minutes, bucket).await?)
}

/// Enabled devices by the age of their last successful backup.
pub async fn backup_ages(s: &WebState, c: &Caller) -> ApiResult<Vec<AgeBucket>> {
    Ok(s.report().backup_ages(c.tenant()).await?)
}

/// Devices per tenant.
pub async fn tenants(s: &WebState, c: &Caller) -> ApiResult<Vec<TenantCount>> {
    Ok(s.report().tenants(c.tenant()).await?)
}

/// Name a tenant (admins; a tenant-scoped admin only its own, another is a 404).
pub async fn name_tenant(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: TenantName,
) -> ApiResult<TenantCount> {
    require_admin(c)?;
    if c.tenant().is_some_and(|t| t != id) {
        return Err(ApiError::not_found(format!("no tenant {id}")));
    }
    let name = rosbackup_core::tenant::parse_tenant_name(&body.name)
        .map_err(|r| ApiError::invalid("name", r))?;
    rosbackup_core::tenant::set_name(s.store(), id, &name).await?;
    let devices = s
        .report()
        .tenants(Some(id))
        .await?
        .first()
        .map_or(0, |t| t.devices);
    Ok(TenantCount {
        tenant_id: id,
        name: Some(name),
        devices,
    })
}

// ---- jobs --------------------------------------------------------------------------

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

/// A page of the caller's jobs in one state.
pub async fn jobs(s: &WebState, c: &Caller, p: &JobsParams) -> ApiResult<JobList> {
    let (state, offset, limit) = jobs_params(p)?;
    let (items, total) = s.queue().jobs(state, c.tenant(), offset, limit).await?;
    Ok(JobList { total, items })
}

/// Retry a dead job the caller may see (admins): it leaves the dead set and the device
/// gets a fresh manual job (which takes the device's lease like any other, so it cannot
/// run beside a scheduled one).
pub async fn retry_dead(s: &WebState, c: &Caller, job_id: &str) -> ApiResult<RetriedJob> {
    require_admin(c)?;
    let job = dead_job(s, c, job_id).await?;
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
    let job = enqueue_manual(s, c, device_id).await?;
    Ok(RetriedJob {
        dead_job_id: job_id.to_string(),
        job_id: job.job_id,
    })
}

/// Discard a dead job the caller may see (admins).
pub async fn discard_dead(s: &WebState, c: &Caller, job_id: &str) -> ApiResult<()> {
    require_admin(c)?;
    dead_job(s, c, job_id).await?;
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

/// A dead job the caller may see (jobs of other tenants, and jobs without a tenant for
/// scoped callers, are a 404).
async fn dead_job(s: &WebState, c: &Caller, job_id: &str) -> ApiResult<JobInfo> {
    let tenant = c.tenant();
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
