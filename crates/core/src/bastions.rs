//! Bastions in PostgreSQL (issue #18): credential profiles' and tenants' jump hosts, the
//! jump host a device resolves to as shown to people, and the bastions' pinned host keys.
//!
//! A bastion's host key is pinned once per bastion (tenant, host, port), not per device:
//! it is one machine, and one pin means one decision for an operator when it changes. A
//! changed key fails the devices behind it as `bastion_host_key_mismatch`, which blocks
//! them like a device's own changed key; [`reset_pin`] forgets the pin and lifts exactly
//! those blocks (the devices whose resolved bastion it is, [`crate::jump::resolve`]).
//!
//! Every face changes jump hosts through [`set_device_jump`], [`set_profile_jump`] and
//! [`set_tenant_jump`] (the CLI, the API and the dashboard alike): a device blocked
//! `bastion_host_key_mismatch` that no longer goes through that bastion (moved to another
//! one, or direct) has nothing left to be blocked for, so the change lifts its block and
//! makes it due now. Moving to the same bastion (new credentials, say) lifts nothing: the
//! changed key still needs an operator's look.

use crate::credentials::CredentialKey;
use crate::jump::JumpSetting;
use crate::jump::{JUMP_COLUMNS, JumpCandidates, JumpSource, JumpSpec, display, seal};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use uuid::Uuid;

/// What a jump-host change did beside storing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JumpChange {
    /// Devices whose `bastion_host_key_mismatch` block was lifted (due now): they no
    /// longer go through the bastion that blocked them.
    pub unblocked: u64,
}

/// Which devices a change may move: one device, a profile's or a tenant's.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Device(Uuid),
    Profile(Uuid),
    Tenant(Uuid),
}

/// The bastion (host, port) each device blocked `bastion_host_key_mismatch` in `scope`
/// goes through now.
async fn blocked_behind(
    store: &Store,
    scope: Scope,
) -> Result<HashMap<Uuid, Option<(String, u16)>>, StoreError> {
    let (device, profile, tenant) = match scope {
        Scope::Device(d) => (Some(d), None, None),
        Scope::Profile(p) => (None, Some(p), None),
        Scope::Tenant(t) => (None, None, Some(t)),
    };
    let blocked: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM devices WHERE blocked_reason = 'bastion_host_key_mismatch' \
         AND ($1::uuid IS NULL OR id = $1) AND ($2::uuid IS NULL OR credential_profile_id = $2) \
         AND ($3::uuid IS NULL OR tenant_id = $3)",
    )
    .bind(device)
    .bind(profile)
    .bind(tenant)
    .fetch_all(store.pool())
    .await?;
    if blocked.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(candidates(store, &blocked)
        .await?
        .into_iter()
        .map(|c| {
            let via = c.resolve().map(|(j, _)| (j.host.clone(), j.port()));
            (c.device_id(), via)
        })
        .collect())
}

/// Lift the blocks of the devices of `before` whose bastion is no longer the one they had.
async fn lift_moved(
    store: &Store,
    before: HashMap<Uuid, Option<(String, u16)>>,
) -> Result<JumpChange, StoreError> {
    if before.is_empty() {
        return Ok(JumpChange::default());
    }
    let ids: Vec<Uuid> = before.keys().copied().collect();
    let moved: Vec<Uuid> = candidates(store, &ids)
        .await?
        .into_iter()
        .filter(|c| {
            let now = c.resolve().map(|(j, _)| (j.host.clone(), j.port()));
            before.get(&c.device_id()).is_some_and(|was| *was != now)
        })
        .map(|c| c.device_id())
        .collect();
    Ok(JumpChange {
        unblocked: unblock_mismatch(store, &moved).await?,
    })
}

/// Lift the `bastion_host_key_mismatch` blocks of `devices` (due now).
async fn unblock_mismatch(store: &Store, devices: &[Uuid]) -> Result<u64, StoreError> {
    if devices.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "UPDATE devices SET blocked_reason = NULL, blocked_at = NULL, consecutive_failures = 0, \
         backoff_until = NULL, next_due_at = LEAST(next_due_at, now()), updated_at = now() \
         WHERE id = ANY($1) AND blocked_reason = 'bastion_host_key_mismatch'",
    )
    .bind(devices)
    .execute(store.pool())
    .await?
    .rows_affected())
}

/// Set a device's own jump setting (inherit, direct, or a jump host), lifting the block
/// it no longer has a reason for (module docs). `None`: no such device.
pub async fn set_device_jump(
    store: &Store,
    key: &CredentialKey,
    device: Uuid,
    setting: &JumpSetting,
) -> Result<Option<JumpChange>, StoreError> {
    let before = blocked_behind(store, Scope::Device(device)).await?;
    if !crate::jump::set_device(store.pool(), key, device, setting).await? {
        return Ok(None);
    }
    Ok(Some(lift_moved(store, before).await?))
}

/// Set or clear a credential profile's jump host, lifting the blocks of its devices
/// that no longer go through the bastion that blocked them. `None`: no such profile.
pub async fn set_profile_jump(
    store: &Store,
    key: &CredentialKey,
    profile: Uuid,
    spec: Option<&JumpSpec>,
) -> Result<Option<JumpChange>, StoreError> {
    let before = blocked_behind(store, Scope::Profile(profile)).await?;
    if !set_profile(store, key, profile, spec).await? {
        return Ok(None);
    }
    Ok(Some(lift_moved(store, before).await?))
}

/// Set or clear a tenant's default jump host, lifting the blocks of its devices that no
/// longer go through the bastion that blocked them.
pub async fn set_tenant_jump(
    store: &Store,
    key: &CredentialKey,
    tenant: Uuid,
    spec: Option<&JumpSpec>,
) -> Result<JumpChange, StoreError> {
    let before = blocked_behind(store, Scope::Tenant(tenant)).await?;
    set_tenant(store, key, tenant, spec).await?;
    lift_moved(store, before).await
}

/// A jump host as shown to people and the API: never its secrets, only whether it has
/// them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ShownJump {
    /// `[user@]host:port`.
    pub display: String,
    pub host: String,
    pub port: u16,
    /// Its own user on the bastion (`null`: the device's).
    pub username: Option<String>,
    pub has_password: bool,
    pub has_key: bool,
}

impl ShownJump {
    fn of(host: &str, port: u16, username: Option<&str>, password: bool, key: bool) -> Self {
        ShownJump {
            display: display(username, host, port),
            host: host.to_string(),
            port,
            username: username.map(str::to_string),
            has_password: password,
            has_key: key,
        }
    }
}

/// The jump hosts `devices` go through, shown without secrets, with where each comes
/// from (a device missing from the map connects directly).
pub async fn device_jumps(
    store: &Store,
    devices: &[Uuid],
) -> Result<HashMap<Uuid, (ShownJump, JumpSource)>, StoreError> {
    if devices.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(candidates(store, devices)
        .await?
        .into_iter()
        .filter_map(|c| {
            let (j, source) = c.resolve()?;
            let shown = ShownJump::of(
                &j.host,
                j.port(),
                j.username.as_deref(),
                j.password_enc.is_some(),
                j.key_enc.is_some(),
            );
            Some((c.device_id(), (shown, source)))
        })
        .collect())
}

/// A credential profile's jump host, shown without secrets.
pub async fn profile_jump_shown(
    store: &Store,
    profile: Uuid,
) -> Result<Option<ShownJump>, StoreError> {
    /// Host, port, user, has a password, has a key.
    type Row = (Option<String>, Option<i32>, Option<String>, bool, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT jump_host, jump_port, jump_username, jump_password_enc IS NOT NULL, \
         jump_key_enc IS NOT NULL FROM credential_profiles WHERE id = $1",
    )
    .bind(profile)
    .fetch_optional(store.pool())
    .await?;
    Ok(match row {
        Some((Some(h), Some(p), u, pw, k)) => Some(ShownJump::of(
            &h,
            u16::try_from(p).unwrap_or(22),
            u.as_deref(),
            pw,
            k,
        )),
        _ => None,
    })
}

/// A tenant's default jump host, shown without secrets.
pub async fn tenant_jump_shown(
    store: &Store,
    tenant: Uuid,
) -> Result<Option<ShownJump>, StoreError> {
    let row: Option<(String, i32, Option<String>, bool, bool)> = sqlx::query_as(
        "SELECT host, port, username, password_enc IS NOT NULL, key_enc IS NOT NULL \
         FROM tenant_jump_hosts WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(|(h, p, u, pw, k)| {
        ShownJump::of(&h, u16::try_from(p).unwrap_or(22), u.as_deref(), pw, k)
    }))
}

/// Set or clear a credential profile's jump host.
pub async fn set_profile(
    store: &Store,
    key: &CredentialKey,
    profile: Uuid,
    spec: Option<&JumpSpec>,
) -> Result<bool, StoreError> {
    let (user, password, sealed_key) = spec
        .map(|s| seal(key, &profile, s))
        .unwrap_or((None, None, None));
    let r = sqlx::query(
        "UPDATE credential_profiles SET jump_host = $2, jump_port = $3, jump_username = $4, \
         jump_password_enc = $5, jump_key_enc = $6, updated_at = now() WHERE id = $1",
    )
    .bind(profile)
    .bind(spec.map(|s| s.host.clone()))
    .bind(spec.map(|s| i32::from(s.port)))
    .bind(user)
    .bind(password)
    .bind(sealed_key)
    .execute(store.pool())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Set or clear a tenant's default jump host.
pub async fn set_tenant(
    store: &Store,
    key: &CredentialKey,
    tenant: Uuid,
    spec: Option<&JumpSpec>,
) -> Result<(), StoreError> {
    match spec {
        None => {
            sqlx::query("DELETE FROM tenant_jump_hosts WHERE tenant_id = $1")
                .bind(tenant)
                .execute(store.pool())
                .await?;
        }
        Some(spec) => {
            let (user, password, sealed_key) = seal(key, &tenant, spec);
            sqlx::query(
                "INSERT INTO tenant_jump_hosts (tenant_id, host, port, username, password_enc, key_enc) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) DO UPDATE SET \
                 host = EXCLUDED.host, port = EXCLUDED.port, username = EXCLUDED.username, \
                 password_enc = EXCLUDED.password_enc, key_enc = EXCLUDED.key_enc, updated_at = now()",
            )
            .bind(tenant)
            .bind(&spec.host)
            .bind(i32::from(spec.port))
            .bind(user)
            .bind(password)
            .bind(sealed_key)
            .execute(store.pool())
            .await?;
        }
    }
    Ok(())
}

/// A tenant's default jump host, shown without secrets: `[user@]host:port`.
pub async fn tenant_default(store: &Store, tenant: Uuid) -> Result<Option<String>, StoreError> {
    let row: Option<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT host, port, username FROM tenant_jump_hosts WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(store.pool())
            .await?;
    Ok(row.map(|(h, p, u)| display(u.as_deref(), &h, u16::try_from(p).unwrap_or(22))))
}

/// A credential profile's jump host, shown without secrets.
pub async fn profile_jump(store: &Store, profile: Uuid) -> Result<Option<String>, StoreError> {
    let row: Option<(Option<String>, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT jump_host, jump_port, jump_username FROM credential_profiles WHERE id = $1",
    )
    .bind(profile)
    .fetch_optional(store.pool())
    .await?;
    Ok(match row {
        Some((Some(h), Some(p), u)) => {
            Some(display(u.as_deref(), &h, u16::try_from(p).unwrap_or(22)))
        }
        _ => None,
    })
}

/// The jump host a device goes through now, shown without secrets (`host:port`, and
/// where it comes from); `None`: direct.
pub async fn device_jump(
    store: &Store,
    device: Uuid,
) -> Result<Option<(String, JumpSource)>, StoreError> {
    Ok(candidates(store, &[device])
        .await?
        .into_iter()
        .next()
        .and_then(|c| c.resolve())
        .map(|(j, s)| (display(None, &j.host, j.port()), s)))
}

/// The jump candidates of some devices.
async fn candidates(store: &Store, devices: &[Uuid]) -> Result<Vec<JumpCandidates>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT d.id, d.credential_profile_id AS profile_id, {JUMP_COLUMNS} FROM devices d \
         WHERE d.id = ANY($1) ORDER BY d.id"
    ));
    Ok(sqlx::query_as::<_, JumpCandidates>(sql)
        .bind(devices)
        .fetch_all(store.pool())
        .await?)
}

/// The pinned host key of a bastion, if any.
pub async fn pin(
    store: &Store,
    tenant: Uuid,
    host: &str,
    port: u16,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT fingerprint FROM bastion_host_keys WHERE tenant_id = $1 AND host = $2 AND port = $3",
    )
    .bind(tenant)
    .bind(host)
    .bind(i32::from(port))
    .fetch_optional(store.pool())
    .await?)
}

/// Pin a bastion's key on first use (the first pin wins; a later different key is a
/// mismatch at the next connection, never an overwrite).
pub async fn record_pin(
    store: &Store,
    tenant: Uuid,
    host: &str,
    port: u16,
    fingerprint: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO bastion_host_keys (tenant_id, host, port, fingerprint) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, host, port) DO NOTHING",
    )
    .bind(tenant)
    .bind(host)
    .bind(i32::from(port))
    .bind(fingerprint)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Remember the key a bastion presented instead of its pinned one (for the operator).
pub async fn record_mismatch(
    store: &Store,
    tenant: Uuid,
    host: &str,
    port: u16,
    presented: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE bastion_host_keys SET presented_fingerprint = $4, mismatch_at = now() \
         WHERE tenant_id = $1 AND host = $2 AND port = $3",
    )
    .bind(tenant)
    .bind(host)
    .bind(i32::from(port))
    .bind(presented)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// A bastion as `rosbackup bastions list` and the API show it.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    sqlx::FromRow,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Bastion {
    pub tenant_id: Uuid,
    pub host: String,
    pub port: i32,
    pub fingerprint: String,
    pub pinned_at: chrono::DateTime<chrono::Utc>,
    /// The key it presented instead, when it changed (devices behind it are blocked).
    pub presented_fingerprint: Option<String>,
    pub mismatch_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The pinned bastions (of one tenant, or all).
pub async fn bastions(store: &Store, tenant: Option<Uuid>) -> Result<Vec<Bastion>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, host, port, fingerprint, pinned_at, presented_fingerprint, mismatch_at \
         FROM bastion_host_keys WHERE ($1::uuid IS NULL OR tenant_id = $1) ORDER BY tenant_id, host, port",
    )
    .bind(tenant)
    .fetch_all(store.pool())
    .await?)
}

/// What [`reset_pin`] did.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Reset {
    /// A pin was forgotten.
    pub forgotten: bool,
    /// Devices whose `bastion_host_key_mismatch` block was lifted (due now).
    pub unblocked: u64,
}

/// Forget a bastion's pinned key (the next connection pins what it sees) and lift the
/// `bastion_host_key_mismatch` blocks of the tenant's devices that go through it.
pub async fn reset_pin(
    store: &Store,
    tenant: Uuid,
    host: &str,
    port: u16,
) -> Result<Reset, StoreError> {
    let forgotten = sqlx::query(
        "DELETE FROM bastion_host_keys WHERE tenant_id = $1 AND host = $2 AND port = $3",
    )
    .bind(tenant)
    .bind(host)
    .bind(i32::from(port))
    .execute(store.pool())
    .await?
    .rows_affected()
        > 0;
    let blocked: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM devices WHERE tenant_id = $1 AND blocked_reason = 'bastion_host_key_mismatch'",
    )
    .bind(tenant)
    .fetch_all(store.pool())
    .await?;
    let behind: Vec<Uuid> = candidates(store, &blocked)
        .await?
        .into_iter()
        .filter(|c| {
            c.resolve()
                .is_some_and(|(j, _)| j.host == host && j.port() == port)
        })
        .map(|c| c.device_id())
        .collect();
    let unblocked = unblock_mismatch(store, &behind).await?;
    Ok(Reset {
        forgotten,
        unblocked,
    })
}
