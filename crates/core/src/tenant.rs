//! Tenant names: a person picks "acme" from a menu and types `--tenant acme`, never a
//! UUID. A tenant is still only the `tenant_id` its devices carry (tokens, queries and the
//! snapshot events keep using ids); the `tenants` table just names ids, and a tenant
//! without a name is shown by its id.
//!
//! Ids for names are derived, not drawn: a name without an id always maps to the same
//! UUID ([`id_for_name`]), so `tenants add acme` on one machine and an inventory row with
//! `tenant=acme` on another agree without asking the database first. Likewise a device
//! row without an id gets [`device_id_for`] its tenant and name, so importing the same
//! CSV twice updates instead of duplicating.

use crate::store::{Store, StoreError};
use std::collections::HashMap;
use uuid::Uuid;

/// The tenant of devices added without one: the nil UUID, named `default`.
pub const DEFAULT_TENANT: Uuid = Uuid::nil();

/// Namespace of the derived ids (a fixed random UUID; never change it).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f3b_1c2e_8d4a_4e7b_9a51_2c7d_0e8f_4b13);

/// A tenant name: 1-100 characters after trimming, no control characters, and not a
/// UUID (so a `--tenant` value is unambiguously an id or a name).
pub fn parse_tenant_name(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty".into());
    }
    if t.chars().count() > 100 {
        return Err("longer than 100 characters".into());
    }
    if t.chars().any(char::is_control) {
        return Err(format!("{t:?} contains a control character"));
    }
    if Uuid::parse_str(t).is_ok() {
        return Err(format!("{t:?} is a UUID; a name must not look like one"));
    }
    Ok(t.to_string())
}

/// The id a tenant name stands for when no id is given (case-insensitive, like the
/// names' uniqueness).
pub fn id_for_name(name: &str) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("tenant:{}", name.trim().to_lowercase()).as_bytes(),
    )
}

/// The id of a device given without one: fixed by its tenant and name.
pub fn device_id_for(tenant: Uuid, name: &str) -> Uuid {
    let mut key = b"device:".to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key.extend_from_slice(name.as_bytes());
    Uuid::new_v5(&NAMESPACE, &key)
}

/// A tenant as listings show it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TenantInfo {
    pub id: Uuid,
    pub name: Option<String>,
    pub devices: i64,
}

/// Every tenant that has a name or a device.
pub async fn list(store: &Store) -> Result<Vec<TenantInfo>, StoreError> {
    Ok(sqlx::query_as::<_, TenantInfo>(
        "SELECT COALESCE(t.id, d.tenant_id) AS id, t.name, count(d.id) AS devices \
         FROM tenants t FULL JOIN devices d ON d.tenant_id = t.id \
         GROUP BY 1, 2 ORDER BY t.name NULLS LAST, 1",
    )
    .fetch_all(store.pool())
    .await?)
}

/// Names of the tenants that have one.
pub async fn names(store: &Store) -> Result<HashMap<Uuid, String>, StoreError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, name FROM tenants")
        .fetch_all(store.pool())
        .await?;
    Ok(rows.into_iter().collect())
}

/// A `--tenant` value: a UUID as it is, or the id of an existing tenant name.
pub async fn resolve(store: &Store, text: &str) -> Result<Uuid, StoreError> {
    if let Ok(id) = Uuid::parse_str(text.trim()) {
        return Ok(id);
    }
    let id: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE lower(name) = lower($1)")
            .bind(text.trim())
            .fetch_optional(store.pool())
            .await?;
    id.ok_or_else(|| {
        StoreError::Invalid(format!(
            "no tenant named {:?} (see `rosbackup tenants list`; `rosbackup tenants add NAME` creates one)",
            text.trim()
        ))
    })
}

/// Give tenant `id` the name `name` (a new tenant, or a rename). A name another tenant
/// has is refused.
pub async fn set_name(store: &Store, id: Uuid, name: &str) -> Result<(), StoreError> {
    let name =
        parse_tenant_name(name).map_err(|r| StoreError::Invalid(format!("tenant name: {r}")))?;
    let other: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE lower(name) = lower($1) AND id <> $2")
            .bind(&name)
            .bind(id)
            .fetch_optional(store.pool())
            .await?;
    if let Some(other) = other {
        return Err(StoreError::Invalid(format!(
            "the name {name:?} belongs to tenant {other}"
        )));
    }
    sqlx::query(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
    )
    .bind(id)
    .bind(&name)
    .execute(store.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_never_look_like_ids() {
        assert_eq!(parse_tenant_name("  acme corp "), Ok("acme corp".into()));
        assert!(parse_tenant_name(" ").is_err());
        assert!(parse_tenant_name("a\tb").is_err());
        assert!(parse_tenant_name(&"x".repeat(101)).is_err());
        assert!(parse_tenant_name(&Uuid::new_v4().to_string()).is_err());
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(id_for_name("Acme"), id_for_name(" acme"));
        assert_ne!(id_for_name("acme"), id_for_name("globex"));
        assert_ne!(id_for_name("acme"), DEFAULT_TENANT);
        let t = id_for_name("acme");
        assert_eq!(device_id_for(t, "core-1"), device_id_for(t, "core-1"));
        assert_ne!(device_id_for(t, "core-1"), device_id_for(t, "core-2"));
        assert_ne!(
            device_id_for(t, "core-1"),
            device_id_for(DEFAULT_TENANT, "core-1")
        );
    }
}
