//! Credential profiles (admins): the credentials many devices of a tenant share; a
//! change applies to all of them at once and lifts their `auth_failed` blocks.

use super::*;

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
