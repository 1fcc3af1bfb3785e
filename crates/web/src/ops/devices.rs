//! Devices: the list, one device's view, creating one, its credentials, its export
//! timeout, actions (enable, disable, unblock, reset the host key) and removal. A new
//! device is validated like an inventory row (`inventory`'s field rules), so the API, the
//! page and the CSV refuse the same values.

use super::*;

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
pub(super) fn timeout_override(field: &str, seconds: i64) -> ApiResult<u32> {
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
pub(super) fn import_key(text: &str, passphrase: Option<&str>) -> ApiResult<UserKey> {
    import_key_field(("ssh_key", "ssh_key_passphrase"), text, passphrase)
}

/// [`import_key`] for the fields `(key, passphrase)`: the 422 names the key's field, and
/// for a protected key without its passphrase the field that takes it.
pub(super) fn import_key_field(
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
pub(super) fn key_or_refuse(s: &WebState) -> ApiResult<&CredentialKey> {
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
        match s.store().find_profile(Some(d.tenant_id), name).await {
            Ok(_) => {}
            Err(StoreError::Invalid(m)) => return Err(ApiError::invalid("credential_profile", m)),
            Err(e) => return Err(e.into()),
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
