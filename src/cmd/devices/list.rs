//! `devices list`: the fleet at a glance.
//!
//! One line per device with what an operator scans for (its tenant when the list spans
//! tenants, enabled, its last run's status, last success, next due — none while blocked
//! or disabled —, last error, block), or with `--json` every column as `devices show
//! --json` has it, for scripts. The JSON is `store::Device`'s own serialization, so a
//! field added to `Device` shows up here without a second list of fields to keep.

use super::host_port;
use crate::cmd::shared::{open_store, optional_tenant, print_table, store_error, time};
use crate::config::Env;
use crate::store::DeviceFilter;
use std::process::ExitCode;

/// When the next scheduled backup runs: never for a blocked or disabled device, whatever
/// its `next_due_at` says (a block waits for a person, not for the time).
fn next_due(d: &crate::store::Device) -> String {
    if d.blocked_reason.is_some() {
        "- (blocked)".into()
    } else if !d.enabled {
        "- (disabled)".into()
    } else {
        time(Some(d.next_due_at))
    }
}

/// List the devices (one tenant's with `tenant`), as a table or a JSON array.
pub(super) async fn run(env: &Env, tenant: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let tenant = optional_tenant(&store, tenant).await?;
    let devices = store
        .list_devices(&DeviceFilter {
            tenant_id: tenant,
            ..DeviceFilter::default()
        })
        .await
        .map_err(store_error)?;
    if json {
        // Through a `Value`, like `show`: the same bytes as `show`'s device (see there).
        println!("{}", serde_json::to_value(&devices)?);
        return Ok(ExitCode::SUCCESS);
    }
    // The tenant column only when the list spans tenants: its name, or its id unnamed.
    let names = match tenant {
        Some(_) => None,
        None => Some(crate::tenant::names(&store).await.map_err(store_error)?),
    };
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            let tenant = names.as_ref().map(|n| {
                n.get(&d.tenant_id)
                    .cloned()
                    .unwrap_or_else(|| d.tenant_id.to_string())
            });
            [d.name.clone()]
                .into_iter()
                .chain(tenant)
                .chain([
                    host_port(d),
                    if d.enabled { "yes" } else { "no" }.into(),
                    d.last_status.clone().unwrap_or_else(|| "never".into()),
                    time(d.last_success_at),
                    next_due(d),
                    d.last_error_kind.clone().unwrap_or_else(|| "-".into()),
                    d.blocked_reason.clone().unwrap_or_else(|| "-".into()),
                ])
                .collect()
        })
        .collect();
    let tenant_header = names.as_ref().map(|_| "TENANT");
    let headers: Vec<&str> = ["NAME"]
        .into_iter()
        .chain(tenant_header)
        .chain([
            "HOST:PORT",
            "ENABLED",
            "LAST RUN",
            "LAST SUCCESS",
            "NEXT DUE",
            "LAST ERROR",
            "BLOCKED",
        ])
        .collect();
    print_table(&headers, &rows);
    Ok(ExitCode::SUCCESS)
}
