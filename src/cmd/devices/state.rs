//! `devices remove`, `reset-host-key`, `unblock`, `enable` and `disable`: one device's
//! place in the schedule.
//!
//! Each finds the device by id or name, changes one thing in the store and confirms it in
//! one line naming the device. The enqueuer reads the store on its next tick, so nothing
//! else needs telling. `reset-host-key` is the deliberate answer to `host_key_mismatch`:
//! the next backup pins whatever key it sees, so it is for after the new key was checked.

use super::{find, label};
use crate::cmd::shared::{open_store, store_error};
use crate::config::{ConfigError, Env};
use std::process::ExitCode;

/// Delete a device and its run history.
pub(super) async fn remove(env: &Env, device: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    if !store.remove_device(d.id).await.map_err(store_error)? {
        anyhow::bail!("device {} not found", d.id);
    }
    println!("removed {}", label(&d));
    Ok(ExitCode::SUCCESS)
}

/// Forget the pinned host key; lifts a `host_key_mismatch` block.
pub(super) async fn reset_host_key(env: &Env, device: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    store.reset_host_key(d.id).await.map_err(store_error)?;
    let lifted = d.blocked_reason.as_deref() == Some("host_key_mismatch");
    println!(
        "host key reset for {}{}",
        label(&d),
        if lifted {
            "; host_key_mismatch block lifted, due now"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Lift any block and backoff: the device is due now.
pub(super) async fn unblock(env: &Env, device: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    store.unblock(d.id).await.map_err(store_error)?;
    println!("unblocked {}; due now", label(&d));
    Ok(ExitCode::SUCCESS)
}

/// `enable` and `disable`: whether the device is scheduled (it stays in the store).
pub(super) async fn set_enabled(
    env: &Env,
    device: &str,
    enabled: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    store
        .set_enabled(d.id, enabled)
        .await
        .map_err(store_error)?;
    println!(
        "{} {}",
        if enabled { "enabled" } else { "disabled" },
        label(&d)
    );
    Ok(ExitCode::SUCCESS)
}

/// A device's export timeout override, or none (`auto`); prints the timeout its next
/// run will have and where it comes from.
pub(super) async fn set_timeout(
    env: &Env,
    device: &str,
    timeout: &str,
) -> anyhow::Result<ExitCode> {
    let seconds =
        crate::export_timeout::parse_override(timeout).map_err(|e| crate::config::ConfigError {
            var: "TIMEOUT".into(),
            value: Some(timeout.to_string()),
            reason: e.to_string(),
        })?;
    let settings = crate::config::export_timeouts(env)?;
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    store
        .set_export_timeout(d.id, seconds)
        .await
        .map_err(store_error)?;
    let next = store.timeout_inputs(d.id).await.map_err(store_error)?;
    let next = crate::export_timeout::effective(&settings, &next);
    println!(
        "export timeout of {}: {} s ({})",
        label(&d),
        next.seconds,
        next.source.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

/// `off`, `on-change`, `always`, or `fleet` (none of its own).
/// A bad mode is the argument's mistake: a configuration error (exit 2) naming it.
fn parse_binary_mode(mode: &str) -> Result<Option<crate::binary::Mode>, ConfigError> {
    match mode {
        "fleet" => Ok(None),
        m => Ok(Some(m.parse::<crate::binary::Mode>().map_err(|e| {
            ConfigError {
                var: "MODE".into(),
                value: Some(m.to_string()),
                reason: format!("{e}, or fleet"),
            }
        })?)),
    }
}

/// A tenant's binary backup mode, or none (`fleet`).
pub(super) async fn tenant_binary_mode(
    env: &Env,
    tenant: String,
    mode: &str,
) -> anyhow::Result<ExitCode> {
    let parsed = parse_binary_mode(mode)?;
    let store = open_store(env).await?;
    let tenant = crate::tenant::resolve(&store, &tenant)
        .await
        .map_err(store_error)?;
    crate::binary::store::set_tenant_mode(&store, tenant, parsed)
        .await
        .map_err(store_error)?;
    println!(
        "binary backups of tenant {tenant}: {}",
        parsed.map_or("as the fleet (CONFIG_BACKUP_BINARY)", |m| m.as_str())
    );
    Ok(ExitCode::SUCCESS)
}

/// A device's own binary backup mode, or none (`fleet`): its tenant's or
/// `CONFIG_BACKUP_BINARY` applies.
pub(super) async fn binary_mode(env: &Env, device: &str, mode: &str) -> anyhow::Result<ExitCode> {
    let parsed = parse_binary_mode(mode)?;
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    if !crate::binary::store::set_device_mode(&store, d.id, parsed)
        .await
        .map_err(store_error)?
    {
        anyhow::bail!("device {} not found", d.id);
    }
    println!(
        "binary backups of {}: {}",
        label(&d),
        parsed.map_or("as the fleet (CONFIG_BACKUP_BINARY)", |m| m.as_str())
    );
    Ok(ExitCode::SUCCESS)
}
