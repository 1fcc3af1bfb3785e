//! `devices import`: a whole inventory CSV into the store, all or none.
//!
//! The CSV is the one `rosbackup sim --inventory` writes and a fleet's own inventory can
//! be turned into: every row is checked before anything is written, then all rows are
//! upserted in one transaction, so a bad file never leaves half a fleet behind. When the
//! database refuses the import (an id that belongs to another tenant, a name the tenant
//! already gives another device), the error names the CSV line it was about, because that
//! is what the operator has to fix.
//!
//! Rows without an id get one derived from their tenant and name — or the id of the
//! device the store already has under that tenant and name (added by `devices add` with
//! a random id, say), so such a row updates it. The `tenant` column names tenants; a name
//! that another tenant has stops the import before any device is written.

use super::{check_key, credential_key};
use crate::cmd::shared::{database_url, open_store, read_key_file, store_error};
use crate::config::{Env, schedule_settings};
use crate::inventory::{self, InventoryRow};
use crate::store::{NewDevice, Store, StoreError};
use anyhow::Context;
use chrono::Utc;
use std::process::ExitCode;

/// Import the CSV at `file`.
pub(super) async fn run(
    env: &Env,
    file: &std::path::Path,
    key_passphrase_env: Option<&str>,
) -> anyhow::Result<ExitCode> {
    database_url(env)?;
    let key = credential_key(env)?;
    let schedule = schedule_settings(env)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let rows = inventory::parse_inventory_rows(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing imported", file.display()))?;
    // Key files are named relative to the CSV's directory; every one is read (and
    // decrypted) before anything is written.
    let base = file.parent().unwrap_or(std::path::Path::new("."));
    let mut devices: Vec<NewDevice> = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut d = r.device.clone();
        if let Some(f) = &r.ssh_key_file {
            d.ssh_key = Some(
                read_key_file(&base.join(f), key_passphrase_env).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: line {}, column {}: {e:#}; nothing imported",
                        file.display(),
                        r.line,
                        inventory::SSH_KEY_FILE
                    )
                })?,
            );
        }
        devices.push(d);
    }
    let store = open_store(env).await?;
    check_key(&store, &key).await?;
    let rows = adopt_existing_ids(&store, rows)
        .await
        .map_err(store_error)?;
    name_tenants(&store, &rows)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e:#}; nothing imported", file.display()))?;
    // A row without an id may have taken an existing device's id.
    for (d, r) in devices.iter_mut().zip(&rows) {
        d.id = r.device.id;
    }
    let mut rng = rand::thread_rng();
    let result = store
        .upsert_devices(&key, &devices, || schedule.first_due(Utc::now(), &mut rng))
        .await;
    let count = match result {
        Ok(c) => c,
        Err(e) => {
            let at = match conflict_line(&store, &rows, &e).await {
                Some(line) => format!("line {line}: "),
                None => String::new(),
            };
            anyhow::bail!(
                "{}: {at}{:#}; nothing imported",
                file.display(),
                store_error(e)
            );
        }
    };
    println!(
        "imported {} devices ({} new, {} updated)",
        count.inserted + count.updated,
        count.inserted,
        count.updated
    );
    Ok(ExitCode::SUCCESS)
}

/// Rows without an id take the id of the device the store has under their tenant and name.
async fn adopt_existing_ids(
    store: &Store,
    mut rows: Vec<InventoryRow>,
) -> Result<Vec<InventoryRow>, StoreError> {
    let derived: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].id_derived).collect();
    if derived.is_empty() {
        return Ok(rows);
    }
    let tenants: Vec<uuid::Uuid> = derived.iter().map(|&i| rows[i].device.tenant_id).collect();
    let names: Vec<String> = derived
        .iter()
        .map(|&i| rows[i].device.name.clone())
        .collect();
    let found: Vec<(i64, uuid::Uuid)> = sqlx::query_as(
        "SELECT n.ord, d.id FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS n(tenant_id, name, ord) \
         JOIN devices d ON d.tenant_id = n.tenant_id AND d.name = n.name",
    )
    .bind(&tenants)
    .bind(&names)
    .fetch_all(store.pool())
    .await?;
    for (ord, id) in found {
        if let Some(&i) = usize::try_from(ord - 1).ok().and_then(|k| derived.get(k)) {
            rows[i].device.id = id;
        }
    }
    Ok(rows)
}

/// Store the `tenant` column's names (before any device: a refused name writes nothing).
async fn name_tenants(store: &Store, rows: &[InventoryRow]) -> anyhow::Result<()> {
    let mut named: Vec<(uuid::Uuid, &str, u64)> = Vec::new();
    for r in rows {
        if let Some(n) = r.tenant_name.as_deref()
            && !named.iter().any(|(id, _, _)| *id == r.device.tenant_id)
        {
            named.push((r.device.tenant_id, n, r.line));
        }
    }
    for (id, name, line) in named {
        crate::tenant::set_name(store, id, name)
            .await
            .map_err(|e| anyhow::anyhow!("line {line}, column tenant: {}", store_error(e)))?;
    }
    Ok(())
}

/// The database refused the import: find the row it was about, if it can be told.
async fn conflict_line(store: &Store, rows: &[InventoryRow], e: &StoreError) -> Option<u64> {
    match e {
        // "device <id> already exists in another tenant", "device <id>: no credential
        // profile named …"
        StoreError::Invalid(msg) => rows
            .iter()
            .find(|r| msg.contains(&r.device.id.to_string()))
            .map(|r| r.line),
        // (tenant_id, name) is taken by another device already in the store.
        StoreError::Db(sqlx::Error::Database(d))
            if d.constraint() == Some("devices_tenant_name") =>
        {
            let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.device.id).collect();
            let tenants: Vec<uuid::Uuid> = rows.iter().map(|r| r.device.tenant_id).collect();
            let names: Vec<String> = rows.iter().map(|r| r.device.name.clone()).collect();
            let ord: Option<i64> = sqlx::query_scalar(
                "SELECT n.ord FROM unnest($1::uuid[], $2::uuid[], $3::text[]) \
                 WITH ORDINALITY AS n(id, tenant_id, name, ord) \
                 JOIN devices d ON d.tenant_id = n.tenant_id AND d.name = n.name AND d.id <> n.id \
                 ORDER BY n.ord LIMIT 1",
            )
            .bind(&ids)
            .bind(&tenants)
            .bind(&names)
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten();
            let index = usize::try_from(ord?).ok()?.checked_sub(1)?;
            rows.get(index).map(|r| r.line)
        }
        _ => None,
    }
}
