//! Where binary backups are kept: PostgreSQL (`migrations/0009_binary_backups.sql`).
//!
//! Why PostgreSQL and not the JetStream object store: a binary is written by the worker
//! in the job that exported the config and read only by admins; it must never travel in
//! a NATS event, and its retention follows the config history's rules, which live in
//! PostgreSQL (`ARCHIVE_KEEP_VERSIONS`, `ARCHIVE_MAX_AGE_DAYS`, per-tenant overrides,
//! applied by the archiver's retention pass). A row is one transaction with its run row
//! and the device's binary state, so nothing partial is ever visible. Files are small
//! (tens of KiB to a few MiB) next to what PostgreSQL stores comfortably in `bytea`.
//!
//! The file and its password are sealed with AES-256-GCM under
//! `CREDENTIAL_ENCRYPTION_KEY` (the key every worker holds for device passwords; fresh
//! nonce each), the associated data binding the device, the file's SHA-256 and the
//! config hash, so a row moved to another device or version does not open.
//!
//! **Sealed under the current key only.** Workers check their key once, at startup; a
//! worker still running with the old key after `devices rotate-key` would seal files the
//! next rotation cannot open (it stops at the first) and no admin can download. So every
//! write that seals checks the key against `credential_key_check` in its own transaction
//! ([`current_key`], `FOR SHARE` — the rotation holds the row `FOR UPDATE`): a write
//! either commits before the rotation reads the rows it re-seals, or is refused after it.

use super::Mode;
use crate::credentials::{CredentialError, CredentialKey};
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A stored binary as listed (no bytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BinaryInfo {
    pub id: i64,
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub collected_at: DateTime<Utc>,
    pub size: i64,
    /// SHA-256 (hex) of the `.backup` file.
    pub sha256: String,
    /// The normalized hash of the export taken with it.
    pub config_sha256: String,
    /// The archive's config version with that hash, when the archiver has stored it.
    pub config_version: Option<i64>,
    pub routeros_version: Option<String>,
    pub format: String,
}

/// A binary to store. `Debug` shows sizes only.
pub struct NewBinary<'a> {
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: &'a str,
    pub collected_at: DateTime<Utc>,
    pub data: &'a [u8],
    pub config_sha256: &'a str,
    pub routeros_version: Option<&'a str>,
    pub format: &'a str,
    pub password: &'a Secret,
    pub removed: bool,
    pub started_at: DateTime<Utc>,
}

/// What the worker reads before deciding ([`super::decide`]).
#[derive(Debug, Clone, Default)]
pub struct StateRow {
    pub facts: super::BinaryFacts,
    pub consecutive_failures: i32,
}

fn file_aad(device: Uuid, sha256: &str, config_sha256: &str) -> Vec<u8> {
    crate::credentials::binary_file_aad(&device, sha256, config_sha256)
}

fn password_aad(device: Uuid, sha256: &str) -> Vec<u8> {
    crate::credentials::binary_password_aad(&device, sha256)
}

fn state_aad(device: Uuid) -> Vec<u8> {
    crate::credentials::binary_device_password_aad(&device)
}

const INFO_COLUMNS: &str = "b.id, b.device_id, b.tenant_id, b.collected_at, b.size, b.sha256, \
    b.config_sha256, (SELECT v.id FROM config_versions v WHERE v.device_id = b.device_id \
    AND v.sha256 = b.config_sha256 ORDER BY v.id DESC LIMIT 1) AS config_version, \
    b.routeros_version, b.format";

type StateTuple = (
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i32>,
);

/// The device's mode override, newest binary and backoff.
pub async fn state(store: &Store, device_id: Uuid) -> Result<StateRow, StoreError> {
    let row: Option<StateTuple> = sqlx::query_as(
        "SELECT d.backup_binary, t.mode, n.collected_at, n.config_sha256, s.retry_after, \
                    s.consecutive_failures \
             FROM devices d \
             LEFT JOIN binary_state s ON s.device_id = d.id \
             LEFT JOIN binary_tenant_mode t ON t.tenant_id = d.tenant_id \
             LEFT JOIN LATERAL (SELECT collected_at, config_sha256 FROM binary_backups b \
                                WHERE b.device_id = d.id \
                                ORDER BY collected_at DESC, id DESC LIMIT 1) n ON true \
             WHERE d.id = $1",
    )
    .bind(device_id)
    .fetch_optional(store.pool())
    .await?;
    let Some(row) = row else {
        return Err(StoreError::NotFound(device_id));
    };
    Ok(state_from(row))
}

/// The binary step's state from the facts a lease's statement returned
/// ([`crate::store::LeaseFacts`]): the same as [`state`] reads, without another round
/// trip per backup.
pub fn state_from_lease(facts: &crate::store::LeaseFacts) -> StateRow {
    state_from((
        facts.binary_device_mode.clone(),
        facts.binary_tenant_mode.clone(),
        facts.binary_newest_at,
        facts.binary_newest_sha256.clone(),
        facts.binary_retry_after,
        facts.binary_failures,
    ))
}

/// A state row from its columns (`state`'s query or the lease's).
fn state_from((mode, tenant_mode, at, sha, retry_after, failures): StateTuple) -> StateRow {
    StateRow {
        facts: super::BinaryFacts {
            device_mode: mode.and_then(|m| m.parse::<Mode>().ok()),
            tenant_mode: tenant_mode.and_then(|m| m.parse::<Mode>().ok()),
            newest: at.zip(sha),
            retry_after,
        },
        consecutive_failures: failures.unwrap_or(0),
    }
}

/// The device's backup password: generated and sealed on first use, the same after.
pub async fn device_password(
    store: &Store,
    key: &CredentialKey,
    device_id: Uuid,
) -> Result<Secret, StoreError> {
    let fresh = super::generate_password();
    let sealed = key.seal_bytes(&state_aad(device_id), fresh.expose().as_bytes());
    let mut tx = store.pool().begin().await?;
    current_key(&mut tx, key).await?;
    sqlx::query(
        "INSERT INTO binary_state (device_id, password_enc) VALUES ($1, $2) \
         ON CONFLICT (device_id) DO NOTHING",
    )
    .bind(device_id)
    .bind(&sealed)
    .execute(&mut *tx)
    .await?;
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT password_enc FROM binary_state WHERE device_id = $1")
            .bind(device_id)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    let plain = key.open_bytes(&state_aad(device_id), &stored)?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| StoreError::Invalid("the stored backup password is not text".into()))
}

/// Refuse to seal under a key that is not the current one (see the module docs); holds
/// the check row `FOR SHARE` until the transaction ends.
async fn current_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &CredentialKey,
) -> Result<(), StoreError> {
    let check: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed FROM credential_key_check FOR SHARE")
            .fetch_optional(&mut **tx)
            .await?;
    if check.is_some_and(|c| !key.opens_check_value(&c)) {
        return Err(CredentialError::WrongKey.into());
    }
    Ok(())
}

/// Store a fetched binary, its run row and the device's state, in one transaction.
/// Returns the binary's id (`None`: this job had stored one already).
pub async fn record_success(
    store: &Store,
    key: &CredentialKey,
    b: &NewBinary<'_>,
) -> Result<Option<i64>, StoreError> {
    let sha = super::sha256_hex(b.data);
    let file_enc = key.seal_bytes(&file_aad(b.device_id, &sha, b.config_sha256), b.data);
    let password_enc = key.seal_bytes(
        &password_aad(b.device_id, &sha),
        b.password.expose().as_bytes(),
    );
    let mut tx = store.pool().begin().await?;
    current_key(&mut tx, key).await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO binary_backups (device_id, tenant_id, job_id, collected_at, size, sha256, \
           config_sha256, routeros_version, format, file_enc, password_enc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (job_id) DO NOTHING RETURNING id",
    )
    .bind(b.device_id)
    .bind(b.tenant_id)
    .bind(b.job_id)
    .bind(b.collected_at)
    .bind(b.data.len() as i64)
    .bind(&sha)
    .bind(b.config_sha256)
    .bind(b.routeros_version)
    .bind(b.format)
    .bind(&file_enc)
    .bind(&password_enc)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE binary_state SET last_binary_at = $2, consecutive_failures = 0, \
           retry_after = NULL, last_error_kind = NULL, last_error_message = NULL \
         WHERE device_id = $1",
    )
    .bind(b.device_id)
    .bind(b.collected_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO binary_runs (device_id, job_id, started_at, finished_at, status, size, \
           binary_id, removed) VALUES ($1, $2, $3, now(), 'success', $4, $5, $6)",
    )
    .bind(b.device_id)
    .bind(b.job_id)
    .bind(b.started_at)
    .bind(b.data.len() as i64)
    .bind(id)
    .bind(b.removed)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Record a failed binary step: its run row, the failure count and the backoff.
pub async fn record_failure(
    store: &Store,
    device_id: Uuid,
    job_id: &str,
    started_at: DateTime<Utc>,
    kind: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = store.pool().begin().await?;
    let failures: Option<i32> = sqlx::query_scalar(
        "UPDATE binary_state SET consecutive_failures = consecutive_failures + 1, \
           last_error_kind = $2, last_error_message = $3 \
         WHERE device_id = $1 RETURNING consecutive_failures",
    )
    .bind(device_id)
    .bind(kind)
    .bind(message)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query("UPDATE binary_state SET retry_after = $2 WHERE device_id = $1")
        .bind(device_id)
        .bind(super::retry_after(failures.unwrap_or(1), now))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO binary_runs (device_id, job_id, started_at, finished_at, status, \
           error_kind, error_message) VALUES ($1, $2, $3, now(), 'failed', $4, $5)",
    )
    .bind(device_id)
    .bind(job_id)
    .bind(started_at)
    .bind(kind)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A device's stored binaries, newest first; with `tenant`, only those collected while the
/// device belonged to it (as the config history: a device id re-created in another
/// tenant does not show the old tenant's files).
pub async fn list(
    store: &Store,
    device_id: Uuid,
    tenant: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BinaryInfo>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INFO_COLUMNS} FROM binary_backups b WHERE b.device_id = $1 \
         AND ($3::uuid IS NULL OR b.tenant_id = $3) \
         ORDER BY b.collected_at DESC, b.id DESC LIMIT $2"
    )))
    .bind(device_id)
    .bind(limit)
    .bind(tenant)
    .fetch_all(store.pool())
    .await?)
}

/// One binary's run rows (`status`, `error_kind`), newest first — for operators and tests.
pub async fn runs(
    store: &Store,
    device_id: Uuid,
) -> Result<Vec<(String, Option<String>, Option<bool>)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT status, error_kind, removed FROM binary_runs WHERE device_id = $1 ORDER BY id DESC",
    )
    .bind(device_id)
    .fetch_all(store.pool())
    .await?)
}

/// One run of the binary step as operators see it (`devices show`, `history
/// --binaries`, a device in the API): a failed step never changes the text backup's
/// state, so without this its failures were visible only in logs and metrics.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    sqlx::FromRow,
    utoipa::ToSchema,
)]
pub struct BinaryRun {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `success` or `failed`.
    pub status: String,
    /// The binary step's error kind (`binary_no_space`, `binary_truncated`, …).
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// The file's size in bytes, when one was taken.
    pub size: Option<i64>,
    /// The stored binary (`history --binaries`), when one was kept.
    pub binary_id: Option<i64>,
}

/// A device's last `limit` binary runs, newest first.
pub async fn recent_runs(
    store: &Store,
    device_id: Uuid,
    limit: i64,
) -> Result<Vec<BinaryRun>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT started_at, finished_at, status, error_kind, error_message, size, binary_id \
         FROM binary_runs WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(device_id)
    .bind(limit)
    .fetch_all(store.pool())
    .await?)
}

/// What [`open`] hands an admin.
pub struct Opened {
    pub info: BinaryInfo,
    pub data: Vec<u8>,
    pub password: Option<Secret>,
}

/// What an admin asks of a stored binary (each is an audit row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    File,
    Password,
    FileAndPassword,
}

impl Access {
    fn actions(self) -> &'static [&'static str] {
        match self {
            Access::File => &["download"],
            Access::Password => &["password"],
            Access::FileAndPassword => &["download", "password"],
        }
    }
}

/// Decrypt a stored binary (and, on request, its password) for an admin, writing the
/// audit rows in the same transaction: no download without its audit entry. `None`: no
/// such binary of that device (of `tenant`, when given: see [`list`]).
#[allow(clippy::too_many_arguments)]
pub async fn open(
    store: &Store,
    key: &CredentialKey,
    binary_id: i64,
    device_id: Uuid,
    tenant: Option<Uuid>,
    actor: &str,
    access: Access,
) -> Result<Option<Opened>, StoreError> {
    let with_password = access != Access::File;
    let mut tx = store.pool().begin().await?;
    let info: Option<BinaryInfo> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INFO_COLUMNS} FROM binary_backups b WHERE b.id = $1 AND b.device_id = $2 \
         AND ($3::uuid IS NULL OR b.tenant_id = $3)"
    )))
    .bind(binary_id)
    .bind(device_id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(info) = info else {
        return Ok(None);
    };
    let (file_enc, password_enc): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT file_enc, password_enc FROM binary_backups WHERE id = $1")
            .bind(binary_id)
            .fetch_one(&mut *tx)
            .await?;
    let data = key.open_bytes(
        &file_aad(device_id, &info.sha256, &info.config_sha256),
        &file_enc,
    )?;
    if super::sha256_hex(&data) != info.sha256 {
        return Err(StoreError::Invalid(format!(
            "binary {binary_id}: the decrypted file does not match its SHA-256"
        )));
    }
    let password = if with_password {
        let p = key.open_bytes(&password_aad(device_id, &info.sha256), &password_enc)?;
        Some(Secret::new(String::from_utf8(p).map_err(|_| {
            StoreError::Invalid("the stored backup password is not text".into())
        })?))
    } else {
        None
    };
    for action in access.actions() {
        sqlx::query(
            "INSERT INTO binary_audit (binary_id, device_id, actor, action) VALUES ($1, $2, $3, $4)",
        )
        .bind(binary_id)
        .bind(device_id)
        .bind(actor)
        .bind(action)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(Opened {
        info,
        data,
        password,
    }))
}

/// Set (or clear, with `None`) a device's own mode.
pub async fn set_device_mode(
    store: &Store,
    device_id: Uuid,
    mode: Option<Mode>,
) -> Result<bool, StoreError> {
    let r = sqlx::query("UPDATE devices SET backup_binary = $2 WHERE id = $1")
        .bind(device_id)
        .bind(mode.map(Mode::as_str))
        .execute(store.pool())
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Set (or clear, with `None`) a tenant's mode.
pub async fn set_tenant_mode(
    store: &Store,
    tenant_id: Uuid,
    mode: Option<Mode>,
) -> Result<(), StoreError> {
    match mode {
        Some(m) => {
            sqlx::query(
                "INSERT INTO binary_tenant_mode (tenant_id, mode) VALUES ($1, $2) \
                 ON CONFLICT (tenant_id) DO UPDATE SET mode = EXCLUDED.mode",
            )
            .bind(tenant_id)
            .bind(m.as_str())
            .execute(store.pool())
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM binary_tenant_mode WHERE tenant_id = $1")
                .bind(tenant_id)
                .execute(store.pool())
                .await?;
        }
    }
    Ok(())
}
