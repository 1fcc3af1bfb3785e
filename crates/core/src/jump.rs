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
//! What PostgreSQL keeps about bastions beyond these settings (their pinned host keys,
//! profiles' and tenants' jump hosts) is in [`crate::bastions`]; this module stays below
//! the store, which reads a device's jump candidates in its lease statement.

use crate::credentials::{CredentialError, CredentialKey};
use crate::device::JumpHost;
use crate::secret::Secret;
use crate::userkey::UserKey;
use uuid::Uuid;

/// Where a device's jump host comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
/// The text of [`JUMP_COLUMNS`], for `concat!` where a statement needs it inside a
/// longer literal (`store::CREDENTIAL_COLUMNS`): one copy of the SQL.
macro_rules! jump_columns {
    () => {
        "d.tenant_id AS jump_tenant_id, d.jump_host, d.jump_port, \
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
    (SELECT t.key_enc FROM tenant_jump_hosts t WHERE t.tenant_id = d.tenant_id) AS tenant_jump_key_enc"
    };
}
pub(crate) use jump_columns;

pub(crate) const JUMP_COLUMNS: &str = jump_columns!();

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
    /// The device they are of.
    pub fn device_id(&self) -> Uuid {
        self.device_id
    }

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
pub fn seal(
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
) -> Result<bool, sqlx::Error>
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

#[cfg(test)]
mod tests {
    use super::*;

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
