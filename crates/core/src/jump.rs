//! Stored jump hosts (bastions) for the fleet (issue #18): where they are configured, which
//! one a device goes through, and the bastions' own pinned host keys.
//!
//! A device, its credential profile or its tenant (a default) may name a jump host. The
//! device's own wins, else its profile's, else its tenant's ([`resolve`]); a device marked
//! *direct* ignores the inherited ones — a router on the management LAN of a tenant whose
//! other routers all sit behind a bastion. The bastion's secrets are sealed like the
//! device's (associated data: owner id + `/jump-password` or `/jump-key`), opened only by
//! the worker for the session, and never displayed: what is shown is the host.
//!
//! A bastion's host key is pinned once per bastion (tenant, host, port), not per device:
//! it is one machine, and one pin means one decision for an operator when it changes. A
//! changed key fails the devices behind it as `bastion_host_key_mismatch`, which blocks
//! them like a device's own changed key; [`reset_pin`] forgets the pin and lifts exactly
//! those blocks (the devices whose resolved bastion it is).

use crate::credentials::{CredentialError, CredentialKey};
use crate::device::JumpHost;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use crate::userkey::UserKey;
use uuid::Uuid;

/// Where a device's jump host comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JumpSource {
    Device,
    Profile,
    Tenant,
}

/// The jump host a device uses (see the module docs): its own, else — unless it is marked
/// direct — its profile's, else its tenant's.
pub fn resolve<'a, T>(
    own: Option<&'a T>,
    direct: bool,
    profile: Option<&'a T>,
    tenant: Option<&'a T>,
) -> Option<(&'a T, JumpSource)> {
    if let Some(j) = own {
        return Some((j, JumpSource::Device));
    }
    if direct {
        return None;
    }
    profile
        .map(|j| (j, JumpSource::Profile))
        .or_else(|| tenant.map(|j| (j, JumpSource::Tenant)))
}

/// A jump host to store: `[user@]host[:port]` plus optional secrets for the bastion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    pub host: String,
    pub port: u16,
    /// `None`: the device's user.
    pub username: Option<String>,
    /// `None`: no password of its own.
    pub password: Option<Secret>,
    /// `None`: the device's key, if it has one.
    pub key: Option<UserKey>,
}

impl JumpSpec {
    /// Parse `[user@]host[:port]` (as `ssh -J`), no secrets.
    pub fn parse(s: &str) -> Result<JumpSpec, String> {
        let (username, host, port) = crate::device::parse_jump_host(s)?;
        Ok(JumpSpec {
            host,
            port,
            username,
            password: None,
            key: None,
        })
    }

    /// `[user@]host:port`, as shown (no secrets).
    pub fn display(&self) -> String {
        display(self.username.as_deref(), &self.host, self.port)
    }
}

/// `[user@]host:port`, brackets around an IPv6 host.
pub fn display(user: Option<&str>, host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match user {
        Some(u) if !u.is_empty() => format!("{u}@{host}:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// How a device's own jump setting changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JumpSetting {
    /// No jump host of its own: inherit its profile's or tenant's, if any.
    Inherit,
    /// Connect directly, whatever the profile or tenant says.
    Direct,
    Via(JumpSpec),
}

impl JumpSetting {
    /// Parse the inventory/CLI form: empty = inherit, `direct`, or `[user@]host[:port]`.
    pub fn parse(s: &str) -> Result<JumpSetting, String> {
        match s.trim() {
            "" => Ok(JumpSetting::Inherit),
            "direct" => Ok(JumpSetting::Direct),
            other => JumpSpec::parse(other).map(JumpSetting::Via),
        }
    }
}

/// A stored jump host, secrets sealed: one of the three candidates of a device.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedJump {
    /// Whose it is (the associated data of its secrets).
    pub owner: Uuid,
    pub host: String,
    pub port: i32,
    pub username: Option<String>,
    pub password_enc: Option<Vec<u8>>,
    pub key_enc: Option<Vec<u8>>,
}

impl std::fmt::Debug for SealedJump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedJump")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("has_password", &self.password_enc.is_some())
            .field("has_key", &self.key_enc.is_some())
            .finish_non_exhaustive()
    }
}

impl SealedJump {
    pub fn port(&self) -> u16 {
        u16::try_from(self.port).unwrap_or(22)
    }

    /// Open it into what the SSH layer takes (`known_fingerprint` is the caller's).
    pub fn open(&self, key: &CredentialKey) -> Result<JumpHost, CredentialError> {
        Ok(JumpHost {
            host: self.host.clone(),
            port: self.port(),
            username: self.username.clone().unwrap_or_default(),
            password: match &self.password_enc {
                Some(s) => key.open_jump_password(&self.owner, s)?,
                None => Secret::default(),
            },
            key: match &self.key_enc {
                Some(s) => Some(key.open_jump_key(&self.owner, s)?),
                None => None,
            },
            known_fingerprint: None,
        })
    }
}

/// The columns of a device's three jump candidates, for a query over `devices d` (the
/// lease's `RETURNING`): scalar subqueries on primary keys, like the profile's
/// credentials.
pub(crate) const JUMP_COLUMNS: &str = "d.tenant_id AS jump_tenant_id, d.jump_host, d.jump_port, \
    d.jump_username, d.jump_password_enc, d.jump_key_enc, d.jump_direct, \
    (SELECT p.jump_host FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_jump_host, \
    (SELECT p.jump_port FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_jump_port, \
    (SELECT p.jump_username FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_jump_username, \
    (SELECT p.jump_password_enc FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_jump_password_enc, \
    (SELECT p.jump_key_enc FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_jump_key_enc, \
    (SELECT t.host FROM tenant_jump_hosts t WHERE t.tenant_id = d.tenant_id) AS tenant_jump_host, \
    (SELECT t.port FROM tenant_jump_hosts t WHERE t.tenant_id = d.tenant_id) AS tenant_jump_port, \
    (SELECT t.username FROM tenant_jump_hosts t WHERE t.tenant_id = d.tenant_id) AS tenant_jump_username, \
    (SELECT t.password_enc FROM tenant_jump_hosts t WHERE t.tenant_id = d.tenant_id) AS tenant_jump_password_enc, \
    (SELECT t.key_enc FROM tenant_jump_hosts t WHERE t.tenant_id = d.tenant_id) AS tenant_jump_key_enc";

/// A device's jump candidates as [`JUMP_COLUMNS`] read them.
#[derive(Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct JumpCandidates {
    #[sqlx(rename = "id")]
    device_id: Uuid,
    #[sqlx(rename = "profile_id")]
    profile_id: Option<Uuid>,
    jump_tenant_id: Uuid,
    jump_host: Option<String>,
    jump_port: Option<i32>,
    jump_username: Option<String>,
    jump_password_enc: Option<Vec<u8>>,
    jump_key_enc: Option<Vec<u8>>,
    jump_direct: bool,
    profile_jump_host: Option<String>,
    profile_jump_port: Option<i32>,
    profile_jump_username: Option<String>,
    profile_jump_password_enc: Option<Vec<u8>>,
    profile_jump_key_enc: Option<Vec<u8>>,
    tenant_jump_host: Option<String>,
    tenant_jump_port: Option<i32>,
    tenant_jump_username: Option<String>,
    tenant_jump_password_enc: Option<Vec<u8>>,
    tenant_jump_key_enc: Option<Vec<u8>>,
}

impl std::fmt::Debug for JumpCandidates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JumpCandidates")
            .field("resolved", &self.resolve())
            .finish_non_exhaustive()
    }
}

fn candidate(
    owner: Option<Uuid>,
    host: &Option<String>,
    port: Option<i32>,
    username: &Option<String>,
    password_enc: &Option<Vec<u8>>,
    key_enc: &Option<Vec<u8>>,
) -> Option<SealedJump> {
    Some(SealedJump {
        owner: owner?,
        host: host.clone()?,
        port: port?,
        username: username.clone(),
        password_enc: password_enc.clone(),
        key_enc: key_enc.clone(),
    })
}

impl JumpCandidates {
    /// The jump host the device goes through, and where it comes from ([`resolve`]).
    pub fn resolve(&self) -> Option<(SealedJump, JumpSource)> {
        let own = candidate(
            Some(self.device_id),
            &self.jump_host,
            self.jump_port,
            &self.jump_username,
            &self.jump_password_enc,
            &self.jump_key_enc,
        );
        let profile = candidate(
            self.profile_id,
            &self.profile_jump_host,
            self.profile_jump_port,
            &self.profile_jump_username,
            &self.profile_jump_password_enc,
            &self.profile_jump_key_enc,
        );
        let tenant = candidate(
            Some(self.jump_tenant_id),
            &self.tenant_jump_host,
            self.tenant_jump_port,
            &self.tenant_jump_username,
            &self.tenant_jump_password_enc,
            &self.tenant_jump_key_enc,
        );
        resolve(
            own.as_ref(),
            self.jump_direct,
            profile.as_ref(),
            tenant.as_ref(),
        )
        .map(|(j, s)| (j.clone(), s))
    }
}

/// Seal a jump host's secrets for `owner`: (user, sealed password, sealed key).
fn seal(
    key: &CredentialKey,
    owner: &Uuid,
    spec: &JumpSpec,
) -> (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) {
    (
        spec.username.clone().filter(|u| !u.is_empty()),
        spec.password
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| key.seal_jump_password(owner, p)),
        spec.key.as_ref().map(|k| key.seal_jump_key(owner, k)),
    )
}

/// Set a device's own jump setting (inside the caller's transaction or on the pool).
pub async fn set_device<'c, E>(
    exec: E,
    key: &CredentialKey,
    device: Uuid,
    setting: &JumpSetting,
) -> Result<bool, StoreError>
where
    E: sqlx::PgExecutor<'c>,
{
    let (spec, direct) = match setting {
        JumpSetting::Inherit => (None, false),
        JumpSetting::Direct => (None, true),
        JumpSetting::Via(s) => (Some(s), false),
    };
    let (user, password, sealed_key) = spec
        .map(|s| seal(key, &device, s))
        .unwrap_or((None, None, None));
    let r = sqlx::query(
        "UPDATE devices SET jump_host = $2, jump_port = $3, jump_username = $4, \
         jump_password_enc = $5, jump_key_enc = $6, jump_direct = $7, updated_at = now() \
         WHERE id = $1",
    )
    .bind(device)
    .bind(spec.map(|s| s.host.clone()))
    .bind(spec.map(|s| i32::from(s.port)))
    .bind(user)
    .bind(password)
    .bind(sealed_key)
    .bind(direct)
    .execute(exec)
    .await?;
    Ok(r.rows_affected() == 1)
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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
        .map(|c| c.device_id)
        .collect();
    let unblocked = if behind.is_empty() {
        0
    } else {
        sqlx::query(
            "UPDATE devices SET blocked_reason = NULL, blocked_at = NULL, consecutive_failures = 0, \
             backoff_until = NULL, next_due_at = LEAST(next_due_at, now()), updated_at = now() \
             WHERE id = ANY($1) AND blocked_reason = 'bastion_host_key_mismatch'",
        )
        .bind(&behind)
        .execute(store.pool())
        .await?
        .rows_affected()
    };
    Ok(Reset {
        forgotten,
        unblocked,
    })
}

/// Re-seal every stored jump secret from `old` to `new` (the key rotation's transaction).
pub(crate) async fn reseal(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    old: &CredentialKey,
    new: &CredentialKey,
) -> Result<(), StoreError> {
    type Row = (Uuid, Option<Vec<u8>>, Option<Vec<u8>>);
    for (select, update) in [
        (
            "SELECT id, jump_password_enc, jump_key_enc FROM devices \
             WHERE jump_password_enc IS NOT NULL OR jump_key_enc IS NOT NULL ORDER BY id FOR UPDATE",
            "UPDATE devices SET jump_password_enc = $2, jump_key_enc = $3 WHERE id = $1",
        ),
        (
            "SELECT id, jump_password_enc, jump_key_enc FROM credential_profiles \
             WHERE jump_password_enc IS NOT NULL OR jump_key_enc IS NOT NULL ORDER BY id FOR UPDATE",
            "UPDATE credential_profiles SET jump_password_enc = $2, jump_key_enc = $3 WHERE id = $1",
        ),
        (
            "SELECT tenant_id, password_enc, key_enc FROM tenant_jump_hosts \
             WHERE password_enc IS NOT NULL OR key_enc IS NOT NULL ORDER BY tenant_id FOR UPDATE",
            "UPDATE tenant_jump_hosts SET password_enc = $2, key_enc = $3 WHERE tenant_id = $1",
        ),
    ] {
        let rows: Vec<Row> = sqlx::query_as(select).fetch_all(&mut **tx).await?;
        for (owner, password, sealed_key) in rows {
            let password = match password {
                Some(p) => {
                    Some(new.seal_jump_password(&owner, &old.open_jump_password(&owner, &p)?))
                }
                None => None,
            };
            let sealed_key = match sealed_key {
                Some(k) => Some(new.seal_jump_key(&owner, &old.open_jump_key(&owner, &k)?)),
                None => None,
            };
            sqlx::query(update)
                .bind(owner)
                .bind(password)
                .bind(sealed_key)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_reads_the_same_jump_columns() {
        assert!(
            crate::store::CREDENTIAL_COLUMNS.ends_with(JUMP_COLUMNS),
            "store::CREDENTIAL_COLUMNS must end with jump::JUMP_COLUMNS"
        );
    }

    #[test]
    fn the_device_wins_then_its_profile_then_its_tenant() {
        let (d, p, t) = ("device", "profile", "tenant");
        assert_eq!(
            resolve(Some(&d), false, Some(&p), Some(&t)),
            Some((&d, JumpSource::Device))
        );
        assert_eq!(
            resolve(None, false, Some(&p), Some(&t)),
            Some((&p, JumpSource::Profile))
        );
        assert_eq!(
            resolve(None, false, None, Some(&t)),
            Some((&t, JumpSource::Tenant))
        );
        assert_eq!(resolve::<&str>(None, false, None, None), None);
    }

    #[test]
    fn direct_on_the_device_overrides_inherited_jump_hosts_only() {
        let (d, p, t) = ("device", "profile", "tenant");
        assert_eq!(resolve(None, true, Some(&p), Some(&t)), None);
        assert_eq!(resolve(None, true, None, Some(&t)), None);
        // A device's own jump host and `direct` cannot both be stored (a CHECK); if they
        // were, its own host wins.
        assert_eq!(
            resolve(Some(&d), true, Some(&p), None),
            Some((&d, JumpSource::Device))
        );
    }

    #[test]
    fn settings_parse_from_the_inventory_form() {
        assert_eq!(JumpSetting::parse(" ").unwrap(), JumpSetting::Inherit);
        assert_eq!(JumpSetting::parse("direct").unwrap(), JumpSetting::Direct);
        let JumpSetting::Via(s) = JumpSetting::parse("ops@10.0.0.1:2222").unwrap() else {
            panic!()
        };
        assert_eq!(s.display(), "ops@10.0.0.1:2222");
        assert_eq!(
            JumpSpec::parse("[2001:db8::1]:22").unwrap().display(),
            "[2001:db8::1]:22"
        );
        assert!(JumpSetting::parse("h:0").is_err());
    }

    #[test]
    fn candidates_resolve_and_debug_shows_no_secret() {
        let c = JumpCandidates {
            device_id: Uuid::from_u128(1),
            profile_id: Some(Uuid::from_u128(2)),
            jump_tenant_id: Uuid::from_u128(3),
            jump_host: None,
            jump_port: None,
            jump_username: None,
            jump_password_enc: None,
            jump_key_enc: None,
            jump_direct: false,
            profile_jump_host: Some("bastion".into()),
            profile_jump_port: Some(2222),
            profile_jump_username: None,
            profile_jump_password_enc: Some(b"sealed-secret-bytes".to_vec()),
            profile_jump_key_enc: None,
            tenant_jump_host: Some("tenant-bastion".into()),
            tenant_jump_port: Some(22),
            tenant_jump_username: None,
            tenant_jump_password_enc: None,
            tenant_jump_key_enc: None,
        };
        let (j, s) = c.resolve().unwrap();
        assert_eq!(
            (j.host.as_str(), j.port(), s),
            ("bastion", 2222, JumpSource::Profile)
        );
        assert_eq!(j.owner, Uuid::from_u128(2), "sealed for the profile");
        let shown = format!("{c:?}");
        // Neither the text nor the bytes of the sealed value ("sea" is 115, 101, 97).
        assert!(!shown.contains("sealed-secret"), "{shown}");
        assert!(!shown.contains("115, 101, 97"), "{shown}");
        assert!(shown.contains("bastion"), "{shown}");
        let direct = JumpCandidates {
            jump_direct: true,
            ..c
        };
        assert!(direct.resolve().is_none());
    }
}
