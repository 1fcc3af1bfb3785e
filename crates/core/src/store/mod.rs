//! The device store in PostgreSQL: devices, their backup state, the lease, run history.
//!
//! PostgreSQL is the fleet's source of truth. Redis holds only jobs that are due soon; if
//! it loses them, everything needed to schedule again is here. Three conditional updates
//! carry the fleet's invariants, and every one of them is a single SQL statement so it
//! holds with any number of enqueuers and workers:
//!
//! - [`Store::claim_due`]: an enqueuer claims a due device by setting `outstanding_job`
//!   only where it is NULL (with `SKIP LOCKED`), so a device has at most one outstanding
//!   scheduled job however many enqueuers run.
//! - [`Store::acquire_lease`]: a job execution may talk to a device only while it holds
//!   the device's lease (job id + random token + expiry, renewed while it runs); a lease
//!   is taken only when free or expired, so two executions never overlap on one device.
//! - [`Store::record_outcome`]: an outcome is written only `WHERE lease_token = $token`
//!   (a fencing check), so an execution that lost its lease — its worker was presumed
//!   dead — can never overwrite a newer result.

use crate::credentials::{CredentialError, CredentialKey};
use crate::secret::Secret;
use crate::userkey::UserKey;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

/// The embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

mod claims;
mod keys;
mod lease;
mod outcomes;
pub use claims::{Claim, scheduled_job_id};
pub use keys::KeyCheck;
pub use lease::{
    AppliedTimeout, GroupedLease, Lease, LeaseAttempt, LeaseFacts, RECENT_RUNS, RunRecord,
    StateUpdate, lane_statements,
};
pub use outcomes::OutcomeRow;

/// Why a store operation failed. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("device {0} not found")]
    NotFound(Uuid),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "credential profile {name:?} is used by {devices} device(s); move them to other credentials first"
    )]
    ProfileInUse { name: String, devices: i64 },
}

/// A device row with its backup state. `password_enc` stays sealed until
/// [`Store::password`] opens it, and neither it nor `lease_token` is a field here, so the
/// serialization (`rosbackup devices show/list --json`) is every column but those two. A
/// secret added to this struct needs `#[serde(skip)]`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Device {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub host: String,
    pub ssh_port: i32,
    pub username: String,
    pub ssh_host_key_fingerprint: Option<String>,
    pub routeros_version: Option<String>,
    pub enabled: bool,
    pub backup_interval_seconds: Option<i32>,
    pub backup_cron: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_due_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_status: Option<String>,
    pub last_error_kind: Option<String>,
    pub last_error_message: Option<String>,
    pub consecutive_failures: i32,
    pub backoff_until: Option<DateTime<Utc>>,
    pub blocked_reason: Option<String>,
    pub blocked_at: Option<DateTime<Utc>>,
    pub last_sha256: Option<String>,
    pub last_bytes: Option<i64>,
    pub outstanding_job: Option<String>,
    pub outstanding_since: Option<DateTime<Utc>>,
    pub lease_job: Option<String>,
    pub lease_worker: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub lease_starts: i32,
    /// The credential profile whose credentials it uses when it has none of its own.
    pub credential_profile_id: Option<Uuid>,
    /// Whether the device has a user key of its own (never the key itself).
    pub has_ssh_key: bool,
    /// Its export timeout override, seconds (`None`: its profile's, else adaptive; see
    /// `export_timeout`).
    pub export_timeout_seconds: Option<i32>,
    /// The host of its own jump host, if it names one (never its credentials); its
    /// profile's or tenant's may apply otherwise (`jump::device_jump`).
    pub jump_host: Option<String>,
    /// Connects directly whatever its profile or tenant names.
    pub jump_direct: bool,
}

pub(crate) const DEVICE_COLUMNS: &str = "id, tenant_id, name, host, ssh_port, username, \
    ssh_host_key_fingerprint, routeros_version, enabled, backup_interval_seconds, backup_cron, \
    created_at, updated_at, next_due_at, last_attempt_at, last_success_at, last_status, \
    last_error_kind, last_error_message, consecutive_failures, backoff_until, blocked_reason, \
    blocked_at, last_sha256, last_bytes, outstanding_job, outstanding_since, lease_job, \
    lease_worker, lease_expires_at, lease_starts, credential_profile_id, \
    (ssh_key_enc IS NOT NULL) AS has_ssh_key, export_timeout_seconds, jump_host, jump_direct";

/// A device to add or update (import, `devices add`, the API).
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub host: String,
    pub ssh_port: u16,
    pub username: String,
    /// Empty for a device that logs in with a key only, or with its profile's
    /// credentials.
    pub password: Secret,
    /// A user key, tried before the password.
    pub ssh_key: Option<UserKey>,
    /// The name of a credential profile of the device's tenant.
    pub credential_profile: Option<String>,
    /// The source said nothing about the device's own key (an inventory without the
    /// `ssh_key_file` column): an existing device keeps the key it has, set another way
    /// (`devices set-credentials`, the API), instead of losing it on a re-import.
    pub keep_ssh_key: bool,
    /// Likewise for its credential profile (no `credential_profile` column).
    pub keep_credential_profile: bool,
    /// Its own jump host setting; `None`: left as it is (a new device: none, inheriting).
    pub jump: Option<crate::jump::JumpSetting>,
    pub routeros_version: Option<String>,
    pub enabled: bool,
    pub backup_interval_seconds: Option<i32>,
    pub backup_cron: Option<String>,
    /// The export timeout override: `None` keeps what the device has (a new device has
    /// none), `Some(None)` removes it (`auto`), `Some(Some(s))` sets it to `s` seconds.
    pub export_timeout_seconds: Option<Option<u32>>,
}

/// What [`Store::upsert_devices`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpsertCount {
    pub inserted: u64,
    pub updated: u64,
}

/// The columns a device's credentials are resolved from, for a query over `devices d`:
/// its own (sealed) and its profile's, and its jump host candidates
/// ([`crate::jump::JUMP_COLUMNS`]'s text, through its macro). Three scalar subqueries on the profile's primary
/// key, so it fits into any statement that reads the device (the lease's `RETURNING`).
pub(crate) const CREDENTIAL_COLUMNS: &str = concat!(
    "d.password_enc, d.ssh_key_enc, \
    d.credential_profile_id AS profile_id, \
    (SELECT p.username FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_username, \
    (SELECT p.password_enc FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_password_enc, \
    (SELECT p.ssh_key_enc FROM credential_profiles p WHERE p.id = d.credential_profile_id) AS profile_ssh_key_enc, ",
    crate::jump::jump_columns!()
);

/// A device's credentials as stored: its own, sealed, and its profile's, sealed. `Debug`
/// shows only which parts exist.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SealedCredentials {
    #[sqlx(rename = "id")]
    device_id: Uuid,
    username: String,
    password_enc: Vec<u8>,
    ssh_key_enc: Option<Vec<u8>>,
    profile_id: Option<Uuid>,
    profile_username: Option<String>,
    profile_password_enc: Option<Vec<u8>>,
    profile_ssh_key_enc: Option<Vec<u8>>,
    #[sqlx(flatten)]
    jump: crate::jump::JumpCandidates,
}

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredentials")
            .field("device_id", &self.device_id)
            .field("own_key", &self.ssh_key_enc.is_some())
            .field("profile_id", &self.profile_id)
            .finish_non_exhaustive()
    }
}

/// Credentials to log in with. `Debug` never shows the secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    /// Empty: no password (key only).
    pub password: Secret,
    pub key: Option<UserKey>,
    /// The profile they came from, or `None` for the device's own.
    pub profile: Option<Uuid>,
}

/// Whose credentials a device logs in with: its own when it has any (a password or a
/// key), else its profile's, else its own anyway (an empty password, which fails as
/// `auth_failed` like any wrong one). The device's own win, as in the-other-dude.
pub fn uses_own_credentials(own_password: bool, own_key: bool, has_profile: bool) -> bool {
    own_password || own_key || !has_profile
}

impl SealedCredentials {
    /// The jump host the device goes through (sealed), and where it comes from.
    pub fn jump(&self) -> Option<(crate::jump::SealedJump, crate::jump::JumpSource)> {
        self.jump.resolve()
    }

    /// Open the credentials the device logs in with (see [`uses_own_credentials`]).
    pub fn open(&self, key: &CredentialKey) -> Result<Credentials, CredentialError> {
        let password = key.open(&self.device_id, &self.password_enc)?;
        let own_key = match &self.ssh_key_enc {
            Some(sealed) => Some(key.open_key(&self.device_id, sealed)?),
            None => None,
        };
        let profile = match (&self.profile_id, &self.profile_username) {
            (Some(id), Some(user)) => Some((id, user)),
            _ => None,
        };
        match profile {
            Some((id, user))
                if !uses_own_credentials(!password.is_empty(), own_key.is_some(), true) =>
            {
                let password = match &self.profile_password_enc {
                    Some(sealed) => key.open(id, sealed)?,
                    None => Secret::default(),
                };
                let key = match &self.profile_ssh_key_enc {
                    Some(sealed) => Some(key.open_key(id, sealed)?),
                    None => None,
                };
                Ok(Credentials {
                    username: user.clone(),
                    password,
                    key,
                    profile: Some(*id),
                })
            }
            _ => Ok(Credentials {
                username: self.username.clone(),
                password,
                key: own_key,
                profile: None,
            }),
        }
    }
}

/// A device's stored credentials as an upsert compares them: tenant, user, sealed
/// password, sealed key, profile.
type ExistingCredentials = (Uuid, String, Vec<u8>, Option<Vec<u8>>, Option<Uuid>);
/// A profile's id, sealed password and sealed key.
type SealedProfile = (Uuid, Option<Vec<u8>>, Option<Vec<u8>>);

/// What to do with a device's user key when its credentials change.
#[derive(Debug, Clone, Copy)]
pub enum KeyChange<'a> {
    Keep,
    Set(&'a UserKey),
    Clear,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Success,
    Failed,
    Skipped,
    Locked,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Locked => "locked",
        }
    }
}

impl serde::Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Who asked for a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Scheduled,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Manual => "manual",
        }
    }
}

/// A run row for history views.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: String,
    pub trigger: String,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: String,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub duration_ms: i64,
    /// The export timeout that applied, seconds, and where it came from (`device`,
    /// `profile`, `adaptive`, `fleet`); absent when the run never reached the device.
    pub timeout_seconds: Option<i32>,
    pub timeout_source: Option<String>,
    /// How long a successful export took, milliseconds (without the publish).
    pub export_ms: Option<i64>,
    /// Whether the export timeout expired.
    pub timed_out: bool,
}

/// The columns of a [`Run`].
pub(crate) const RUN_COLUMNS: &str = "id, device_id, tenant_id, job_id, trigger, worker, \
    started_at, finished_at, status, error_kind, error_message, bytes, sha256, duration_ms, \
    timeout_seconds, timeout_source, export_ms, timed_out";

/// Filters for listing devices.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub tenant_id: Option<Uuid>,
    pub limit: Option<i64>,
    pub offset: i64,
}

/// Counts of device states (for progress lines and metrics).
#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize, PartialEq, Eq)]
pub struct FleetCounts {
    pub total: i64,
    pub enabled: i64,
    pub backed_up: i64,
    pub failing: i64,
    pub blocked: i64,
    pub never: i64,
    pub outstanding: i64,
    pub leased: i64,
}

/// The pool's and the lanes' ping threshold and acquire timeout (defined with the lanes).
pub use crate::lanes::{ACQUIRE_TIMEOUT, PING_IF_IDLE};

/// The device store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// Connections for a job's statements, without the ping on return
    /// ([`crate::lanes`]); as many as the pool's.
    lanes: crate::lanes::Lanes,
}

impl Store {
    /// Connect with a pool of `max_connections`. Connection errors are reported without
    /// the URL (it may carry a password).
    ///
    /// sqlx pings every pooled connection when it hands it out and again when it takes it
    /// back: two PostgreSQL round trips besides each statement, which no
    /// `pg_stat_statements` count shows. The ping on hand-out is kept only for a
    /// connection idle for [`PING_IF_IDLE`] or longer (issue #20: one round trip fewer per
    /// statement on a busy worker); the ping on return stays (sqlx always makes it). A
    /// PostgreSQL restart takes longer than that, so a connection that was in the pool
    /// across one is still pinged, and dropped, before use; a connection broken within
    /// the last second fails its statement, which the fence and the outcome ask again
    /// ([`crate::worker`]) and any other job's step leaves to apalis' retry; a
    /// black-holed one (no error, no answer) is cut off by the worker's bound on each
    /// statement, [`ACQUIRE_TIMEOUT`], as the ping used to be by the acquire timeout.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        use sqlx::Connection;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await?;
        Ok(Store::from_pool(pool))
    }

    /// A store over `pool`; its lanes connect with the pool's options, as many.
    pub fn from_pool(pool: PgPool) -> Store {
        let lanes = crate::lanes::Lanes::new(
            (*pool.connect_options()).clone(),
            pool.options().get_max_connections(),
        );
        Store { pool, lanes }
    }

    /// The same store with `max` lanes for job statements instead of as many as the
    /// pool's connections (a worker: many lanes, a small pool for everything else).
    pub fn with_lanes(self, max: u32) -> Store {
        let lanes = crate::lanes::Lanes::new((*self.pool.connect_options()).clone(), max);
        Store {
            pool: self.pool,
            lanes,
        }
    }

    /// The lanes a job's statements run on (see [`crate::lanes`]).
    pub fn lanes(&self) -> &crate::lanes::Lanes {
        &self.lanes
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply pending migrations (idempotent; safe from several processes at once, sqlx
    /// takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Is the database reachable (for `/readyz`)?
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    // ---- devices ---------------------------------------------------------------------

    /// Insert or update devices in one transaction: all of them or none. New devices are
    /// first due at `first_due()`; an update that changes the credentials lifts an
    /// `auth_failed` or `credentials_unreadable` block (the operator fixed them).
    pub async fn upsert_devices(
        &self,
        key: &CredentialKey,
        devices: &[NewDevice],
        mut first_due: impl FnMut() -> DateTime<Utc>,
    ) -> Result<UpsertCount, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut count = UpsertCount::default();
        for d in devices {
            let profile_id = match &d.credential_profile {
                None => None,
                Some(name) => Some(
                    sqlx::query_scalar::<_, Uuid>(
                        "SELECT id FROM credential_profiles WHERE tenant_id = $1 AND name = $2",
                    )
                    .bind(d.tenant_id)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "device {}: no credential profile named {name:?} in tenant {}",
                            d.id, d.tenant_id
                        ))
                    })?,
                ),
            };
            let existing: Option<ExistingCredentials> = sqlx::query_as(
                "SELECT tenant_id, username, password_enc, ssh_key_enc, credential_profile_id \
                     FROM devices WHERE id = $1 FOR UPDATE",
            )
            .bind(d.id)
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                None => {
                    sqlx::query(
                        "INSERT INTO devices (id, tenant_id, name, host, ssh_port, username, password_enc, \
                         routeros_version, enabled, backup_interval_seconds, backup_cron, next_due_at, \
                         ssh_key_enc, credential_profile_id, export_timeout_seconds) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                    )
                    .bind(d.id)
                    .bind(d.tenant_id)
                    .bind(&d.name)
                    .bind(&d.host)
                    .bind(i32::from(d.ssh_port))
                    .bind(&d.username)
                    .bind(key.seal(&d.id, &d.password))
                    .bind(&d.routeros_version)
                    .bind(d.enabled)
                    .bind(d.backup_interval_seconds)
                    .bind(&d.backup_cron)
                    .bind(first_due())
                    .bind(d.ssh_key.as_ref().map(|k| key.seal_key(&d.id, k)))
                    .bind(profile_id)
                    .bind(timeout_column(d.export_timeout_seconds.flatten()))
                    .execute(&mut *tx)
                    .await?;
                    count.inserted += 1;
                }
                Some((tenant, username, sealed, sealed_key, old_profile)) => {
                    if tenant != d.tenant_id {
                        return Err(StoreError::Invalid(format!(
                            "device {} already exists in another tenant",
                            d.id
                        )));
                    }
                    let same_password = key
                        .open(&d.id, &sealed)
                        .map(|p| p == d.password)
                        .unwrap_or(false);
                    let profile_id = if d.keep_credential_profile {
                        old_profile
                    } else {
                        profile_id
                    };
                    let same_key = match (&sealed_key, &d.ssh_key) {
                        _ if d.keep_ssh_key => true,
                        (None, None) => true,
                        (Some(s), Some(k)) => key.open_key(&d.id, s).is_ok_and(|old| old == *k),
                        _ => false,
                    };
                    let creds_changed = username != d.username
                        || !same_password
                        || !same_key
                        || old_profile != profile_id;
                    let sealed = if same_password {
                        sealed
                    } else {
                        key.seal(&d.id, &d.password)
                    };
                    let sealed_key = if same_key {
                        sealed_key
                    } else {
                        d.ssh_key.as_ref().map(|k| key.seal_key(&d.id, k))
                    };
                    sqlx::query(
                        "UPDATE devices SET name = $2, host = $3, ssh_port = $4, username = $5, \
                         password_enc = $6, routeros_version = COALESCE($7, routeros_version), \
                         enabled = $8, backup_interval_seconds = $9, backup_cron = $10, updated_at = now(), \
                         ssh_key_enc = $12, credential_profile_id = $13, \
                         export_timeout_seconds = CASE WHEN $14 THEN $15 ELSE export_timeout_seconds END, \
                         blocked_reason = CASE WHEN $11 AND blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN NULL ELSE blocked_reason END, \
                         consecutive_failures = CASE WHEN $11 AND blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN 0 ELSE consecutive_failures END \
                         WHERE id = $1",
                    )
                    .bind(d.id)
                    .bind(&d.name)
                    .bind(&d.host)
                    .bind(i32::from(d.ssh_port))
                    .bind(&d.username)
                    .bind(sealed)
                    .bind(&d.routeros_version)
                    .bind(d.enabled)
                    .bind(d.backup_interval_seconds)
                    .bind(&d.backup_cron)
                    .bind(creds_changed)
                    .bind(sealed_key)
                    .bind(profile_id)
                    .bind(d.export_timeout_seconds.is_some())
                    .bind(timeout_column(d.export_timeout_seconds.flatten()))
                    .execute(&mut *tx)
                    .await?;
                    count.updated += 1;
                }
            }
            if let Some(setting) = &d.jump {
                crate::jump::set_device(&mut *tx, key, d.id, setting).await?;
            }
        }
        tx.commit().await?;
        Ok(count)
    }

    pub async fn device(&self, id: Uuid) -> Result<Option<Device>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ));
        Ok(sqlx::query_as::<_, Device>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Find a device by id or by name (names are unique per tenant; an ambiguous name
    /// across tenants is an error).
    pub async fn find_device(&self, id_or_name: &str) -> Result<Device, StoreError> {
        if let Ok(id) = Uuid::parse_str(id_or_name) {
            return self.device(id).await?.ok_or(StoreError::NotFound(id));
        }
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE name = $1 ORDER BY tenant_id LIMIT 2"
        ));
        let mut rows = sqlx::query_as::<_, Device>(sql)
            .bind(id_or_name)
            .fetch_all(&self.pool)
            .await?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            0 => Err(StoreError::Invalid(format!(
                "no device named {id_or_name:?}"
            ))),
            _ => Err(StoreError::Invalid(format!(
                "several tenants have a device named {id_or_name:?}; use its id"
            ))),
        }
    }

    pub async fn list_devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE ($1::uuid IS NULL OR tenant_id = $1) \
             ORDER BY tenant_id, name LIMIT $2 OFFSET $3"
        ));
        Ok(sqlx::query_as::<_, Device>(sql)
            .bind(filter.tenant_id)
            .bind(filter.limit.unwrap_or(i64::MAX))
            .bind(filter.offset)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The device's password, decrypted.
    pub async fn password(&self, key: &CredentialKey, id: Uuid) -> Result<Secret, StoreError> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT password_enc FROM devices WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let sealed = sealed.ok_or(StoreError::NotFound(id))?;
        Ok(key.open(&id, &sealed)?)
    }

    /// The credentials the device logs in with, opened (see [`SealedCredentials::open`]).
    pub async fn credentials(
        &self,
        key: &CredentialKey,
        id: Uuid,
    ) -> Result<Credentials, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT d.id, d.username, {CREDENTIAL_COLUMNS} FROM devices d WHERE d.id = $1"
        ));
        let sealed = sqlx::query_as::<_, SealedCredentials>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        Ok(sealed.open(key)?)
    }

    /// Delete a device and its history. Its queued job, if any, finds nothing and ends.
    pub async fn remove_device(&self, id: Uuid) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A new password (the key, if any, is kept); see [`update_credentials`](Self::update_credentials).
    pub async fn set_credentials(
        &self,
        key: &CredentialKey,
        id: Uuid,
        username: Option<&str>,
        password: &Secret,
    ) -> Result<(), StoreError> {
        self.update_credentials(key, id, username, Some(password), KeyChange::Keep)
            .await
    }

    /// New credentials: the user if given, the password if given (an empty one: none,
    /// key only), the key as `ssh_key` says. Lifts an `auth_failed` or
    /// `credentials_unreadable` block and makes the device due now.
    pub async fn update_credentials(
        &self,
        key: &CredentialKey,
        id: Uuid,
        username: Option<&str>,
        password: Option<&Secret>,
        ssh_key: KeyChange<'_>,
    ) -> Result<(), StoreError> {
        let (change_key, sealed_key) = match ssh_key {
            KeyChange::Keep => (false, None),
            KeyChange::Set(k) => (true, Some(key.seal_key(&id, k))),
            KeyChange::Clear => (true, None),
        };
        let r = sqlx::query(
            "UPDATE devices SET username = COALESCE($2, username), password_enc = COALESCE($3, password_enc), \
             ssh_key_enc = CASE WHEN $4 THEN $5 ELSE ssh_key_enc END, updated_at = now(), \
             next_due_at = CASE WHEN blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN now() ELSE next_due_at END, \
             consecutive_failures = CASE WHEN blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN 0 ELSE consecutive_failures END, \
             blocked_reason = CASE WHEN blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN NULL ELSE blocked_reason END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(username)
        .bind(password.map(|p| key.seal(&id, p)))
        .bind(change_key)
        .bind(sealed_key)
        .execute(&self.pool)
        .await?;
        found(r, id)
    }

    /// Forget the pinned host key (the next backup pins what it sees); lifts a
    /// `host_key_mismatch` block and makes the device due now.
    pub async fn reset_host_key(&self, id: Uuid) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET ssh_host_key_fingerprint = NULL, updated_at = now(), \
             next_due_at = CASE WHEN blocked_reason = 'host_key_mismatch' THEN now() ELSE next_due_at END, \
             consecutive_failures = CASE WHEN blocked_reason = 'host_key_mismatch' THEN 0 ELSE consecutive_failures END, \
             blocked_reason = CASE WHEN blocked_reason = 'host_key_mismatch' THEN NULL ELSE blocked_reason END \
             WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        found(r, id)
    }

    /// Lift any block and the backoff; the device is due now.
    pub async fn unblock(&self, id: Uuid) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET blocked_reason = NULL, blocked_at = NULL, backoff_until = NULL, \
             consecutive_failures = 0, next_due_at = LEAST(next_due_at, now()), updated_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        found(r, id)
    }

    pub async fn set_enabled(&self, id: Uuid, enabled: bool) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE devices SET enabled = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(enabled)
            .execute(&self.pool)
            .await?;
        found(r, id)
    }

    /// Set or clear a device's schedule override.
    pub async fn set_schedule(
        &self,
        id: Uuid,
        interval_seconds: Option<i32>,
        cron: Option<&str>,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET backup_interval_seconds = $2, backup_cron = $3, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(interval_seconds)
        .bind(cron)
        .execute(&self.pool)
        .await?;
        found(r, id)
    }

    pub async fn counts(&self, tenant_id: Option<Uuid>) -> Result<FleetCounts, StoreError> {
        Ok(sqlx::query_as::<_, FleetCounts>(
            "SELECT count(*) AS total, \
               count(*) FILTER (WHERE enabled) AS enabled, \
               count(*) FILTER (WHERE enabled AND last_success_at IS NOT NULL) AS backed_up, \
               count(*) FILTER (WHERE enabled AND consecutive_failures > 0 AND blocked_reason IS NULL) AS failing, \
               count(*) FILTER (WHERE enabled AND blocked_reason IS NOT NULL) AS blocked, \
               count(*) FILTER (WHERE enabled AND last_attempt_at IS NULL) AS never, \
               count(*) FILTER (WHERE outstanding_job IS NOT NULL) AS outstanding, \
               count(*) FILTER (WHERE lease_expires_at > now()) AS leased \
             FROM devices WHERE ($1::uuid IS NULL OR tenant_id = $1)",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?)
    }

    // ---- run history (the lease, the outcome and the run rows: `lease.rs`) ------------

    /// The runs of one job (a manual backup's answer), newest first.
    pub async fn runs_for_job(&self, job_id: &str) -> Result<Vec<Run>, StoreError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT {RUN_COLUMNS} FROM backup_runs WHERE job_id = $1 ORDER BY id DESC")
        });
        Ok(sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// A device's run history, newest first.
    pub async fn runs(&self, device_id: Uuid, limit: i64) -> Result<Vec<Run>, StoreError> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {RUN_COLUMNS} FROM backup_runs WHERE device_id = $1 ORDER BY id DESC LIMIT $2"
            )
        });
        Ok(sqlx::query_as::<_, Run>(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(device_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Delete runs that finished before `before`, at most `batch` at a time.
    pub async fn trim_runs(&self, before: DateTime<Utc>, batch: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM backup_runs WHERE id IN \
             (SELECT id FROM backup_runs WHERE finished_at < $1 ORDER BY finished_at LIMIT $2)",
        )
        .bind(before)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

/// An export timeout override as its column holds it.
fn timeout_column(seconds: Option<u32>) -> Option<i32> {
    seconds.map(|s| i32::try_from(s).unwrap_or(i32::MAX))
}

/// `NotFound` when an update by id touched no row.
fn found(r: sqlx::postgres::PgQueryResult, id: Uuid) -> Result<(), StoreError> {
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::{LineEnding, private::Ed25519Keypair};

    fn key_of(seed: u8) -> UserKey {
        let k = russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]));
        UserKey::import(&k.to_openssh(LineEnding::LF).unwrap(), None).unwrap()
    }

    /// The resolution the worker runs on the lease's row: own password or key wins, else
    /// the profile's (opened with the profile's id), else the (empty) own; a key sealed
    /// for another owner does not open.
    #[test]
    fn sealed_credentials_open_the_device_s_own_or_its_profile_s() {
        let ck = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
        let (dev, prof) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = |own_pw: &str, own_key: Option<&UserKey>| SealedCredentials {
            device_id: dev,
            username: "own-user".into(),
            password_enc: ck.seal(&dev, &Secret::new(own_pw)),
            ssh_key_enc: own_key.map(|k| ck.seal_key(&dev, k)),
            profile_id: Some(prof),
            profile_username: Some("profile-user".into()),
            profile_password_enc: Some(ck.seal(&prof, &Secret::new("profile-pw"))),
            profile_ssh_key_enc: Some(ck.seal_key(&prof, &key_of(2))),
            jump: Default::default(),
        };
        let c = sealed("", None).open(&ck).unwrap();
        assert_eq!(c.profile, Some(prof));
        assert_eq!(c.username, "profile-user");
        assert_eq!(c.password.expose(), "profile-pw");
        assert_eq!(c.key, Some(key_of(2)));
        let c = sealed("own-pw", None).open(&ck).unwrap();
        assert_eq!((c.profile, c.username.as_str()), (None, "own-user"));
        assert_eq!(c.key, None);
        let c = sealed("", Some(&key_of(1))).open(&ck).unwrap();
        assert_eq!(c.profile, None);
        assert_eq!(c.key, Some(key_of(1)));
        assert!(c.password.is_empty());
        // A key sealed for the profile, put on the device's row, does not open there.
        let mut moved = sealed("", None);
        moved.ssh_key_enc = moved.profile_ssh_key_enc.clone();
        assert_eq!(moved.open(&ck).unwrap_err(), CredentialError::Decrypt);
        // Debug names no secret.
        let dbg = format!("{:?}", sealed("own-pw", Some(&key_of(1))));
        assert!(
            !dbg.contains("own-pw") && dbg.contains("own_key: true"),
            "{dbg}"
        );
    }
}
