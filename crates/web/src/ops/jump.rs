//! Jump hosts (bastions): a device's, a credential profile's and a tenant's, with the
//! bastion's pinned key, and resetting that pin. Never a bastion's secret.

use super::*;

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
