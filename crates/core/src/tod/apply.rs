//! Our side of a sync: read the devices a plan is about, write the plan, in one
//! transaction.
//!
//! All of it or none of it, like an inventory import: a sync that fails half way leaves
//! the store as it was. One sync at a time (a transaction-level advisory lock), so two
//! enqueuers syncing the same database take turns. The rows read are locked until the
//! commit, so a worker recording a host key it just pinned waits for the sync instead of
//! being overwritten by it.

use super::plan::{Ours, Plan, Write};
use crate::credentials::CredentialKey;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use uuid::Uuid;

/// `pg_advisory_xact_lock` key of the sync ("tod-sync" in ASCII).
const LOCK: i64 = 0x746f_642d_7379_6e63;

/// A sync transaction, holding the lock.
pub struct SyncTx<'c> {
    tx: sqlx::Transaction<'c, sqlx::Postgres>,
}

/// Begin: take the lock (waiting for another sync to finish).
pub async fn begin(pool: &PgPool) -> Result<SyncTx<'static>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(SyncTx { tx })
}

#[derive(sqlx::FromRow)]
struct OursRow {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    host: String,
    ssh_port: i32,
    username: String,
    password_enc: Vec<u8>,
    routeros_version: Option<String>,
    ssh_host_key_fingerprint: Option<String>,
    synced: bool,
    upstream_host_key: Option<String>,
}

impl SyncTx<'_> {
    /// Every synced device and every device with one of `ids`, locked; passwords opened
    /// with `key` (one that does not open counts as different, and is replaced).
    pub async fn ours(
        &mut self,
        key: &CredentialKey,
        ids: &[Uuid],
    ) -> Result<Vec<Ours>, StoreError> {
        let rows: Vec<OursRow> = sqlx::query_as(
            "SELECT d.id, d.tenant_id, d.name, d.host, d.ssh_port, d.username, d.password_enc, \
               d.routeros_version, d.ssh_host_key_fingerprint, \
               (t.device_id IS NOT NULL) AS synced, t.upstream_host_key \
             FROM devices d LEFT JOIN tod_devices t ON t.device_id = d.id \
             WHERE t.device_id IS NOT NULL OR d.id = ANY($1) \
             ORDER BY d.id FOR UPDATE OF d",
        )
        .bind(ids)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Ours {
                password: key.open(&r.id, &r.password_enc).ok(),
                id: r.id,
                tenant_id: r.tenant_id,
                name: r.name,
                host: r.host,
                ssh_port: r.ssh_port,
                username: r.username,
                routeros_version: r.routeros_version,
                fingerprint: r.ssh_host_key_fingerprint,
                synced: r.synced,
                upstream_host_key: r.upstream_host_key,
            })
            .collect())
    }

    /// Devices here holding one of the `(tenant, name)` pairs.
    pub async fn holders(
        &mut self,
        names: &[(Uuid, String)],
    ) -> Result<Vec<(Uuid, Uuid, String)>, StoreError> {
        let tenants: Vec<Uuid> = names.iter().map(|(t, _)| *t).collect();
        let names: Vec<String> = names.iter().map(|(_, n)| n.clone()).collect();
        Ok(sqlx::query_as(
            "SELECT d.id, d.tenant_id, d.name FROM devices d \
             JOIN unnest($1::uuid[], $2::text[]) AS n(tenant_id, name) \
               ON d.tenant_id = n.tenant_id AND d.name = n.name",
        )
        .bind(&tenants)
        .bind(&names)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// Write the plan: removals, then renames out of the way, updates, inserts and the
    /// `tod_devices` markers. New devices are first due at `first_due()`. With
    /// `drop_history`, a removed device's config history goes too.
    pub async fn apply(
        &mut self,
        key: &CredentialKey,
        plan: &Plan,
        drop_history: bool,
        mut first_due: impl FnMut() -> DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = &mut self.tx;
        if !plan.removals.is_empty() {
            // The runs and the marker go with the row (ON DELETE CASCADE).
            sqlx::query("DELETE FROM devices WHERE id = ANY($1)")
                .bind(&plan.removals)
                .execute(&mut **tx)
                .await?;
            if drop_history {
                for table in ["config_sightings", "config_versions", "archive_orphans"] {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE device_id = ANY($1)"
                    ));
                    sqlx::query(sql)
                        .bind(&plan.removals)
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        // Names are unique per tenant at every statement: a device that is renamed moves
        // out of the way first, so two devices can swap names.
        let renamed: Vec<Uuid> = plan.updates.iter().map(|w| w.device.id).collect();
        if !renamed.is_empty() {
            sqlx::query("UPDATE devices SET name = 'tod-sync:' || id::text WHERE id = ANY($1)")
                .bind(&renamed)
                .execute(&mut **tx)
                .await?;
        }
        for w in &plan.updates {
            update(tx, key, w).await?;
        }
        for w in &plan.inserts {
            insert(tx, key, w, first_due()).await?;
        }
        let mut markers: Vec<(Uuid, Option<String>)> = plan.adopt.clone();
        markers.extend(plan.seen.iter().cloned());
        markers.extend(
            plan.updates
                .iter()
                .chain(&plan.inserts)
                .map(|w| (w.device.id, w.seen_upstream.clone())),
        );
        for (id, seen) in markers {
            remember(tx, id, seen.as_deref()).await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Mark a device as synced and remember the upstream pin as seen.
async fn remember(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    seen: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tod_devices (device_id, upstream_host_key) VALUES ($1, $2) \
         ON CONFLICT (device_id) DO UPDATE SET upstream_host_key = EXCLUDED.upstream_host_key",
    )
    .bind(id)
    .bind(seen)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Remember pins written back upstream (after the upstream write, in its own statement).
pub async fn remember_written(pool: &PgPool, written: &[(Uuid, String)]) -> Result<(), StoreError> {
    if written.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = written.iter().map(|(id, _)| *id).collect();
    let fps: Vec<String> = written.iter().map(|(_, fp)| fp.clone()).collect();
    sqlx::query(
        "UPDATE tod_devices t SET upstream_host_key = v.fp \
         FROM unnest($1::uuid[], $2::text[]) AS v(id, fp) WHERE t.device_id = v.id",
    )
    .bind(&ids)
    .bind(&fps)
    .execute(pool)
    .await?;
    Ok(())
}

/// An existing device to the plan's values. Changed credentials lift an `auth_failed` (or `credentials_unreadable`)
/// block, a changed pin a `host_key_mismatch` block (as `set-credentials` and
/// `reset-host-key` do): due now, failures counted from zero. Enabled and the per-device
/// schedule stay as they are here.
async fn update(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &CredentialKey,
    w: &Write,
) -> Result<(), StoreError> {
    let d = &w.device;
    let sealed = w.password_changed.then(|| key.seal(&d.id, &d.password));
    sqlx::query(
        "UPDATE devices SET name = $2, host = $3, ssh_port = $4, username = $5, \
           password_enc = COALESCE($6, password_enc), routeros_version = $7, \
           ssh_host_key_fingerprint = $8, updated_at = now(), \
           next_due_at = CASE WHEN ($9 AND blocked_reason IN ('auth_failed', 'credentials_unreadable')) \
             OR ($10 AND blocked_reason = 'host_key_mismatch') THEN now() ELSE next_due_at END, \
           consecutive_failures = CASE WHEN ($9 AND blocked_reason IN ('auth_failed', 'credentials_unreadable')) \
             OR ($10 AND blocked_reason = 'host_key_mismatch') THEN 0 ELSE consecutive_failures END, \
           blocked_at = CASE WHEN ($9 AND blocked_reason IN ('auth_failed', 'credentials_unreadable')) \
             OR ($10 AND blocked_reason = 'host_key_mismatch') THEN NULL ELSE blocked_at END, \
           blocked_reason = CASE WHEN ($9 AND blocked_reason IN ('auth_failed', 'credentials_unreadable')) \
             OR ($10 AND blocked_reason = 'host_key_mismatch') THEN NULL ELSE blocked_reason END \
         WHERE id = $1",
    )
    .bind(d.id)
    .bind(&d.name)
    .bind(&d.host)
    .bind(i32::from(d.ssh_port))
    .bind(&d.username)
    .bind(sealed)
    .bind(&d.routeros_version)
    .bind(&w.fingerprint)
    .bind(w.credentials_changed)
    .bind(w.pin_changed)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A new device, enabled, on the fleet's schedule, with the upstream pin if any.
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &CredentialKey,
    w: &Write,
    first_due: DateTime<Utc>,
) -> Result<(), StoreError> {
    let d = &w.device;
    sqlx::query(
        "INSERT INTO devices (id, tenant_id, name, host, ssh_port, username, password_enc, \
         routeros_version, ssh_host_key_fingerprint, enabled, next_due_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, true, $10)",
    )
    .bind(d.id)
    .bind(d.tenant_id)
    .bind(&d.name)
    .bind(&d.host)
    .bind(i32::from(d.ssh_port))
    .bind(&d.username)
    .bind(key.seal(&d.id, &d.password))
    .bind(&d.routeros_version)
    .bind(&w.fingerprint)
    .bind(first_due)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
