//! The credential key's operations on the store: its rotation (every sealed password,
//! key, jump host credential and binary backup re-sealed in one transaction), the check
//! that a process's key is the fleet's, and lifting the blocks a stale key left.
//!
//! Why apart from the devices: these touch every sealed column at once and are run by an
//! operator, never by a job; what they must keep (all or nothing, never a wrong key
//! accepted) is theirs alone.

use super::{CREDENTIAL_COLUMNS, SealedCredentials, SealedProfile, Store, StoreError};
use crate::credentials::{CredentialError, CredentialKey};
use uuid::Uuid;

/// The binary backups (issue #19) are sealed under the credential key too: re-seal their
/// files and passwords, and the devices' backup passwords, in the rotation's transaction.
async fn reseal_binaries(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    old: &CredentialKey,
    new: &CredentialKey,
) -> Result<(), StoreError> {
    use crate::credentials::binary_device_password_aad;
    // Lock every row first (ids only), then read the files a few at a time: files are up
    // to tens of MiB and a fleet keeps many, so all of them at once could exhaust memory.
    const CHUNK: usize = 8;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM binary_backups ORDER BY id FOR UPDATE")
        .fetch_all(&mut **tx)
        .await?;
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<SealedBinaryRow> = sqlx::query_as(
            "SELECT id, device_id, sha256, config_sha256, file_enc, password_enc \
             FROM binary_backups WHERE id = ANY($1) ORDER BY id",
        )
        .bind(chunk)
        .fetch_all(&mut **tx)
        .await?;
        reseal_binary_rows(tx, old, new, rows).await?;
    }
    let states: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT device_id, password_enc FROM binary_state ORDER BY device_id FOR UPDATE",
    )
    .fetch_all(&mut **tx)
    .await?;
    for (device, sealed) in states {
        let aad = binary_device_password_aad(&device);
        let password = old.open_bytes(&aad, &sealed)?;
        sqlx::query("UPDATE binary_state SET password_enc = $2 WHERE device_id = $1")
            .bind(device)
            .bind(new.seal_bytes(&aad, &password))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A binary's sealed columns: id, device, file SHA-256, config SHA-256, file, password.
type SealedBinaryRow = (i64, Uuid, String, String, Vec<u8>, Vec<u8>);

/// Re-seal some binary rows (part of [`reseal_binaries`]).
async fn reseal_binary_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    old: &CredentialKey,
    new: &CredentialKey,
    rows: Vec<SealedBinaryRow>,
) -> Result<(), StoreError> {
    use crate::credentials::{binary_file_aad, binary_password_aad};
    for (id, device, sha, config_sha, file_enc, password_enc) in rows {
        let file_aad = binary_file_aad(&device, &sha, &config_sha);
        let password_aad = binary_password_aad(&device, &sha);
        let file = old.open_bytes(&file_aad, &file_enc)?;
        let password = old.open_bytes(&password_aad, &password_enc)?;
        sqlx::query("UPDATE binary_backups SET file_enc = $2, password_enc = $3 WHERE id = $1")
            .bind(id)
            .bind(new.seal_bytes(&file_aad, &file))
            .bind(new.seal_bytes(&password_aad, &password))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Re-seal every stored jump secret from `old` to `new` (the key rotation's transaction).
async fn reseal_jumps(
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

/// How [`Store::check_credential_key`] accepted a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// It opens the stored key check value.
    Matches,
    /// There was none; the key opened the stored passwords (or there are none) and its
    /// check value is stored now.
    Recorded,
    /// The database is not migrated to the check table; the key opened a stored password
    /// (or there are none).
    NotRecorded,
}

impl KeyCheck {
    /// For the start-up log line.
    pub fn describe(self) -> &'static str {
        match self {
            KeyCheck::Matches => "matches the stored key check value",
            KeyCheck::Recorded => "recorded as the fleet's credential key (none was stored)",
            KeyCheck::NotRecorded => {
                "opens the stored passwords (not recorded: the database is not migrated)"
            }
        }
    }
}

/// [`KeyCheck::Matches`] if `key` opens the check value, else the wrong key.
fn verdict(key: &CredentialKey, check: &[u8]) -> Result<KeyCheck, StoreError> {
    if key.opens_check_value(check) {
        Ok(KeyCheck::Matches)
    } else {
        Err(CredentialError::WrongKey.into())
    }
}

/// Does `key` open one of the first stored passwords (true when there are none)? One
/// that opens is proof enough (AES-GCM does not open under another key); several are
/// tried so that one altered row does not condemn the right key.
async fn opens_a_password(
    key: &CredentialKey,
    conn: &mut sqlx::PgConnection,
) -> Result<bool, StoreError> {
    let rows: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT id, password_enc FROM devices ORDER BY id LIMIT 16")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.is_empty() || rows.iter().any(|(id, sealed)| key.open(id, sealed).is_ok()))
}

impl Store {
    /// Re-encrypt every device password from `old` to `new`, in one transaction: all or
    /// nothing. An `old` that does not open the key check value ([`CredentialError::WrongKey`])
    /// or a password ([`CredentialError::Decrypt`]) stops the rotation and changes
    /// nothing. The check value is replaced by `new`'s in the same transaction, and
    /// `credentials_unreadable` blocks are lifted (every password opens under `new`
    /// now). Returns the number of devices re-encrypted.
    pub async fn rotate_key(
        &self,
        old: &CredentialKey,
        new: &CredentialKey,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let check: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed FROM credential_key_check FOR UPDATE")
                .fetch_optional(&mut *tx)
                .await?;
        if check.is_some_and(|c| !old.opens_check_value(&c)) {
            return Err(CredentialError::WrongKey.into());
        }
        let rows: Vec<(Uuid, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, password_enc, ssh_key_enc FROM devices ORDER BY id FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut n = 0;
        for (id, sealed, sealed_key) in rows {
            let password = old.open(&id, &sealed)?;
            let ssh_key = match sealed_key {
                Some(k) => Some(new.seal_key(&id, &old.open_key(&id, &k)?)),
                None => None,
            };
            sqlx::query("UPDATE devices SET password_enc = $2, ssh_key_enc = $3 WHERE id = $1")
                .bind(id)
                .bind(new.seal(&id, &password))
                .bind(ssh_key)
                .execute(&mut *tx)
                .await?;
            n += 1;
        }
        reseal_binaries(&mut tx, old, new).await?;
        reseal_jumps(&mut tx, old, new).await?;
        let profiles: Vec<SealedProfile> = sqlx::query_as(
            "SELECT id, password_enc, ssh_key_enc FROM credential_profiles ORDER BY id FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, sealed, sealed_key) in profiles {
            let password = match sealed {
                Some(p) => Some(new.seal(&id, &old.open(&id, &p)?)),
                None => None,
            };
            let ssh_key = match sealed_key {
                Some(k) => Some(new.seal_key(&id, &old.open_key(&id, &k)?)),
                None => None,
            };
            sqlx::query(
                "UPDATE credential_profiles SET password_enc = $2, ssh_key_enc = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(password)
            .bind(ssh_key)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO credential_key_check (id, sealed) VALUES (true, $1) \
             ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()",
        )
        .bind(new.check_value())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE devices SET blocked_reason = NULL, blocked_at = NULL, consecutive_failures = 0, \
             next_due_at = LEAST(next_due_at, now()), updated_at = now() \
             WHERE blocked_reason = 'credentials_unreadable'",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Is `key` the fleet's credential key? Checked by every process that seals or opens
    /// passwords before it does (the worker, the enqueuer, `rosbackup devices …`), so a
    /// wrong key stops it at start instead of failing every backup.
    ///
    /// With a key check value stored, the key must open it. Without one (a fresh database,
    /// or one from before the check existed), the key must open at least one of the first
    /// stored passwords, if there are any; then its check value is stored, under a table
    /// lock so that two first processes with different keys cannot both record theirs.
    /// Before `rosbackup migrate` created the table, only the passwords are checked.
    /// A wrong key is [`CredentialError::WrongKey`].
    pub async fn check_credential_key(&self, key: &CredentialKey) -> Result<KeyCheck, StoreError> {
        let stored: Result<Option<Vec<u8>>, sqlx::Error> =
            sqlx::query_scalar("SELECT sealed FROM credential_key_check")
                .fetch_optional(&self.pool)
                .await;
        match stored {
            Ok(Some(check)) => return verdict(key, &check),
            Ok(None) => {}
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
                let mut conn = self.pool.acquire().await?;
                return if opens_a_password(key, &mut conn).await? {
                    Ok(KeyCheck::NotRecorded)
                } else {
                    Err(CredentialError::WrongKey.into())
                };
            }
            Err(e) => return Err(e.into()),
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE credential_key_check IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let check: Option<Vec<u8>> = sqlx::query_scalar("SELECT sealed FROM credential_key_check")
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(check) = check {
            return verdict(key, &check);
        }
        if !opens_a_password(key, &mut tx).await? {
            return Err(CredentialError::WrongKey.into());
        }
        sqlx::query("INSERT INTO credential_key_check (id, sealed) VALUES (true, $1)")
            .bind(key.check_value())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(KeyCheck::Recorded)
    }

    /// Lift the `credentials_unreadable` blocks of devices whose password `key` opens (a
    /// worker with the fleet's key, after workers that still ran with the key before a
    /// rotation blocked them); they are due now. Returns how many were lifted.
    pub async fn lift_readable_blocks(&self, key: &CredentialKey) -> Result<u64, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT d.id, d.username, {CREDENTIAL_COLUMNS} FROM devices d \
             WHERE d.blocked_reason = 'credentials_unreadable'"
        ));
        let rows: Vec<SealedCredentials> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
        let readable: Vec<Uuid> = rows
            .into_iter()
            .filter(|c| c.open(key).is_ok() && c.jump().is_none_or(|(j, _)| j.open(key).is_ok()))
            .map(|c| c.device_id)
            .collect();
        if readable.is_empty() {
            return Ok(0);
        }
        let r = sqlx::query(
            "UPDATE devices SET blocked_reason = NULL, blocked_at = NULL, consecutive_failures = 0, \
             next_due_at = LEAST(next_due_at, now()), updated_at = now() \
             WHERE id = ANY($1) AND blocked_reason = 'credentials_unreadable'",
        )
        .bind(&readable)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
