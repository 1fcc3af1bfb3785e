//! Credential profiles: named credentials (a user with a password and/or a key) that many
//! devices of a tenant share.
//!
//! Why: fleets give one backup account to hundreds of routers. With a profile, changing
//! that account's password or key is one change, applied to every device using it at
//! once — and it lifts their `auth_failed` (and `credentials_unreadable`) blocks, since
//! what they were blocked on has been fixed. A device still uses its own credentials when
//! it has a password or a key of its own (see [`crate::store::uses_own_credentials`]), as
//! the-other-dude resolves them; the profile is its fallback. Secrets are sealed like a
//! device's, bound to the profile's id; nothing here returns them.
//!
//! A profile still in use cannot be removed: [`Store::remove_profile`] refuses with the
//! number of devices (and the database's `ON DELETE RESTRICT` holds the same line against
//! a race with an import).

use crate::credentials::CredentialKey;
use crate::secret::Secret;
use crate::store::{KeyChange, Store, StoreError};
use crate::userkey::UserKey;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A profile as shown: never its secrets, only whether it has them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct CredentialProfile {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub username: String,
    pub has_password: bool,
    pub has_ssh_key: bool,
    /// Devices that name it (whether or not they have credentials of their own).
    pub devices: i64,
    /// The export timeout of the devices using it, seconds, unless a device has its own
    /// (`None`: adaptive; see [`crate::export_timeout`]).
    pub export_timeout_seconds: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A profile to create.
#[derive(Debug, Clone)]
pub struct NewProfile {
    pub tenant_id: Uuid,
    pub name: String,
    pub username: String,
    pub password: Option<Secret>,
    pub ssh_key: Option<UserKey>,
}

const PROFILE_COLUMNS: &str = "p.id, p.tenant_id, p.name, p.username, \
    (p.password_enc IS NOT NULL) AS has_password, (p.ssh_key_enc IS NOT NULL) AS has_ssh_key, \
    (SELECT count(*) FROM devices d WHERE d.credential_profile_id = p.id) AS devices, \
    p.export_timeout_seconds, p.created_at, p.updated_at";

/// Is a profile with these parts usable? It needs a password or a key.
pub fn profile_has_secret(password: bool, key: bool) -> bool {
    password || key
}

/// What [`Store::update_profile`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub profile: CredentialProfile,
    /// Devices whose `auth_failed`/`credentials_unreadable` block was lifted.
    pub lifted: u64,
}

impl Store {
    /// Create a profile. A name the tenant already uses is [`StoreError::Invalid`].
    pub async fn create_profile(
        &self,
        key: &CredentialKey,
        p: &NewProfile,
    ) -> Result<CredentialProfile, StoreError> {
        let password = p.password.as_ref().filter(|s| !s.is_empty());
        if !profile_has_secret(password.is_some(), p.ssh_key.is_some()) {
            return Err(StoreError::Invalid(
                "a credential profile needs a password or a key".into(),
            ));
        }
        let id = Uuid::new_v4();
        let r = sqlx::query(
            "INSERT INTO credential_profiles (id, tenant_id, name, username, password_enc, ssh_key_enc) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(p.tenant_id)
        .bind(&p.name)
        .bind(&p.username)
        .bind(password.map(|s| key.seal(&id, s)))
        .bind(p.ssh_key.as_ref().map(|k| key.seal_key(&id, k)))
        .execute(self.pool())
        .await;
        match r {
            Ok(_) => {}
            Err(sqlx::Error::Database(d))
                if d.constraint() == Some("credential_profiles_tenant_name") =>
            {
                return Err(StoreError::Invalid(format!(
                    "tenant {} already has a credential profile named {:?}",
                    p.tenant_id, p.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.profile(id).await
    }

    /// One profile by id.
    pub async fn profile(&self, id: Uuid) -> Result<CredentialProfile, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PROFILE_COLUMNS} FROM credential_profiles p WHERE p.id = $1"
        ));
        sqlx::query_as::<_, CredentialProfile>(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::Invalid(format!("no credential profile {id}")))
    }

    /// The profiles of a tenant (or of all), by tenant and name.
    pub async fn list_profiles(
        &self,
        tenant: Option<Uuid>,
    ) -> Result<Vec<CredentialProfile>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PROFILE_COLUMNS} FROM credential_profiles p \
             WHERE ($1::uuid IS NULL OR p.tenant_id = $1) ORDER BY p.tenant_id, p.name"
        ));
        Ok(sqlx::query_as::<_, CredentialProfile>(sql)
            .bind(tenant)
            .fetch_all(self.pool())
            .await?)
    }

    /// A profile by id or by name (in `tenant` when given; a name used by several
    /// tenants needs the tenant or the id).
    pub async fn find_profile(
        &self,
        tenant: Option<Uuid>,
        id_or_name: &str,
    ) -> Result<CredentialProfile, StoreError> {
        if let Ok(id) = Uuid::parse_str(id_or_name) {
            let p = self.profile(id).await?;
            if tenant.is_none_or(|t| t == p.tenant_id) {
                return Ok(p);
            }
            return Err(StoreError::Invalid(format!("no credential profile {id}")));
        }
        let mut found: Vec<CredentialProfile> = self
            .list_profiles(tenant)
            .await?
            .into_iter()
            .filter(|p| p.name == id_or_name)
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(StoreError::Invalid(match tenant {
                None => format!("no credential profile named {id_or_name:?}"),
                Some(t) => {
                    let label: Option<String> =
                        sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
                            .bind(t)
                            .fetch_optional(self.pool())
                            .await?;
                    format!(
                        "no credential profile named {id_or_name:?} in tenant {} (a \
                         profile belongs to one tenant)",
                        label.unwrap_or_else(|| t.to_string())
                    )
                }
            })),
            _ => Err(StoreError::Invalid(format!(
                "several tenants have a credential profile named {id_or_name:?}; give --tenant or its id"
            ))),
        }
    }

    /// Change a profile's user, password (an empty one removes it) and key, in one
    /// transaction with lifting the `auth_failed`/`credentials_unreadable` blocks of the
    /// devices that log in with it (those without credentials of their own): they are
    /// due now. A change that would leave it without password and key is refused.
    pub async fn update_profile(
        &self,
        key: &CredentialKey,
        id: Uuid,
        username: Option<&str>,
        password: Option<&Secret>,
        ssh_key: KeyChange<'_>,
    ) -> Result<ProfileUpdate, StoreError> {
        let mut tx = self.pool().begin().await?;
        let current: Option<(bool, bool)> = sqlx::query_as(
            "SELECT password_enc IS NOT NULL, ssh_key_enc IS NOT NULL \
             FROM credential_profiles WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (had_password, had_key) =
            current.ok_or_else(|| StoreError::Invalid(format!("no credential profile {id}")))?;
        let will_have_password = password.map_or(had_password, |p| !p.is_empty());
        let will_have_key = match ssh_key {
            KeyChange::Keep => had_key,
            KeyChange::Set(_) => true,
            KeyChange::Clear => false,
        };
        if !profile_has_secret(will_have_password, will_have_key) {
            return Err(StoreError::Invalid(
                "a credential profile needs a password or a key; nothing changed".into(),
            ));
        }
        let (change_password, sealed_password) = match password {
            None => (false, None),
            Some(p) if p.is_empty() => (true, None),
            Some(p) => (true, Some(key.seal(&id, p))),
        };
        let (change_key, sealed_key) = match ssh_key {
            KeyChange::Keep => (false, None),
            KeyChange::Set(k) => (true, Some(key.seal_key(&id, k))),
            KeyChange::Clear => (true, None),
        };
        sqlx::query(
            "UPDATE credential_profiles SET username = COALESCE($2, username), \
             password_enc = CASE WHEN $3 THEN $4 ELSE password_enc END, \
             ssh_key_enc = CASE WHEN $5 THEN $6 ELSE ssh_key_enc END, updated_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .bind(username)
        .bind(change_password)
        .bind(sealed_password)
        .bind(change_key)
        .bind(sealed_key)
        .execute(&mut *tx)
        .await?;
        // Its devices' effective credentials changed: so did they (`updated_at`: a manual
        // backup that finished before this is not joined, see `manual::decide`).
        sqlx::query("UPDATE devices SET updated_at = now() WHERE credential_profile_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // The blocked devices that log in with the profile: no key of their own, and a
        // password of their own that is empty (opened to tell; one that does not open is
        // left blocked, it is not the profile's to fix).
        let blocked: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT id, password_enc FROM devices WHERE credential_profile_id = $1 \
             AND ssh_key_enc IS NULL \
             AND blocked_reason IN ('auth_failed', 'credentials_unreadable') FOR UPDATE",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let users: Vec<Uuid> = blocked
            .into_iter()
            .filter(|(d, sealed)| key.open(d, sealed).is_ok_and(|p| p.is_empty()))
            .map(|(d, _)| d)
            .collect();
        let lifted = sqlx::query(
            "UPDATE devices SET blocked_reason = NULL, blocked_at = NULL, consecutive_failures = 0, \
             next_due_at = LEAST(next_due_at, now()), updated_at = now() \
             WHERE id = ANY($1) AND blocked_reason IN ('auth_failed', 'credentials_unreadable')",
        )
        .bind(&users)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(ProfileUpdate {
            profile: self.profile(id).await?,
            lifted,
        })
    }

    /// Remove a profile no device names; one still in use is refused with the count.
    pub async fn remove_profile(&self, id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM credential_profiles WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let name =
            name.ok_or_else(|| StoreError::Invalid(format!("no credential profile {id}")))?;
        let used: i64 =
            sqlx::query_scalar("SELECT count(*) FROM devices WHERE credential_profile_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if used > 0 {
            return Err(StoreError::ProfileInUse {
                name,
                devices: used,
            });
        }
        sqlx::query("DELETE FROM credential_profiles WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Make a device use a profile of its tenant (or none). Lifts an `auth_failed` or
    /// `credentials_unreadable` block like any change of credentials.
    pub async fn set_device_profile(
        &self,
        device: Uuid,
        profile: Option<Uuid>,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET credential_profile_id = $2, updated_at = now(), \
             next_due_at = CASE WHEN blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN now() ELSE next_due_at END, \
             consecutive_failures = CASE WHEN blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN 0 ELSE consecutive_failures END, \
             blocked_reason = CASE WHEN blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN NULL ELSE blocked_reason END \
             WHERE id = $1",
        )
        .bind(device)
        .bind(profile)
        .execute(self.pool())
        .await;
        match r {
            Ok(r) if r.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(StoreError::NotFound(device)),
            Err(sqlx::Error::Database(d))
                if d.constraint() == Some("devices_credential_profile_fk") =>
            {
                Err(StoreError::Invalid(
                    "the credential profile is not of the device's tenant".into(),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::uses_own_credentials;

    #[test]
    fn a_profile_needs_a_secret_and_a_device_s_own_credentials_win() {
        assert!(!profile_has_secret(false, false));
        assert!(profile_has_secret(true, false));
        assert!(profile_has_secret(false, true));
        // Own password or own key: its own. Neither, with a profile: the profile's.
        assert!(uses_own_credentials(true, false, true));
        assert!(uses_own_credentials(false, true, true));
        assert!(!uses_own_credentials(false, false, true));
        // No profile: its own, even empty (auth_failed like a wrong password).
        assert!(uses_own_credentials(false, false, false));
    }
}
