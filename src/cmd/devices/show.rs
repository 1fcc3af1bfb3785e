//! `devices show`: everything the store knows about one device, and its last 20 runs.
//!
//! The page to read when a device misbehaves: its schedule, pinned host key, last error,
//! backoff, block, outstanding job and lease, each in words, then its recent runs
//! newest first. `--json` gives the same as one object: the device row (every column but
//! the sealed password and the lease token, which `store::Device` does not hold) with
//! its runs under `runs` and the export timeout its next run will have under
//! `export_timeout` (`seconds` and `source`: device, profile, adaptive or fleet, decided
//! by `export_timeout::effective` with this process's CONFIG_BACKUP_COMMAND_TIMEOUT and
//! ROSBACKUP_EXPORT_TIMEOUT_MAX), and its last five binary runs under `binary_runs` (the
//! binary step's failures never touch the text backup's state above).

use super::{find, host_port};
use crate::cmd::shared::{open_store, print_table, store_error, time};
use crate::config::Env;
use crate::store::Run;
use std::process::ExitCode;

/// How the device logs in, in words (never a secret): its own key is tried first, then
/// its own password; without either its credential profile's.
fn login(has_key: bool, profile: Option<&str>) -> String {
    let own = if has_key {
        "its own key, then its password if it has one"
    } else {
        "its own password"
    };
    match profile {
        Some(p) => format!("{own}; without them, credential profile {p}"),
        None => own.to_string(),
    }
}

/// The binary step's last run in words (`-`: none yet, or binaries are off).
fn last_binary(run: Option<&crate::binary::store::BinaryRun>) -> String {
    let Some(r) = run else {
        return "-".into();
    };
    match (r.status.as_str(), &r.error_kind, &r.error_message) {
        ("success", _, _) => format!(
            "success at {}{}",
            time(Some(r.finished_at)),
            r.size.map(|b| format!(" ({b} bytes)")).unwrap_or_default()
        ),
        (_, Some(k), Some(m)) => format!("failed at {}: {k}: {m}", time(Some(r.finished_at))),
        (_, Some(k), None) => format!("failed at {}: {k}", time(Some(r.finished_at))),
        (status, None, _) => format!("{status} at {}", time(Some(r.finished_at))),
    }
}

/// Show one device by id or name, in words or as JSON.
pub(super) async fn run(env: &Env, device: &str, json: bool) -> anyhow::Result<ExitCode> {
    let settings = crate::config::export_timeouts(env)?;
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    let runs = store.runs(d.id, 20).await.map_err(store_error)?;
    let binary_runs = crate::binary::store::recent_runs(&store, d.id, 5)
        .await
        .map_err(store_error)?;
    let inputs = store.timeout_inputs(d.id).await.map_err(store_error)?;
    let timeout = crate::export_timeout::effective(&settings, &inputs);
    if json {
        // Through a `Value`, whose map sorts its keys (serde_json without `preserve_order`):
        // alphabetical, as when this object was written by hand, not `Device`'s field order.
        let mut v = serde_json::to_value(&d)?;
        v["runs"] = serde_json::to_value(&runs)?;
        v["binary_runs"] = serde_json::to_value(&binary_runs)?;
        v["export_timeout"] = serde_json::to_value(timeout)?;
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let via = crate::bastions::device_jump(&store, d.id)
        .await
        .map_err(store_error)?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let schedule = match (&d.backup_cron, d.backup_interval_seconds) {
        (Some(c), _) => format!("cron {c:?}"),
        (None, Some(s)) => format!("every {s} s"),
        (None, None) => "fleet schedule".into(),
    };
    let tenant = match crate::tenant::names(&store)
        .await
        .map_err(store_error)?
        .remove(&d.tenant_id)
    {
        Some(name) => format!("{name} ({})", d.tenant_id),
        None => d.tenant_id.to_string(),
    };
    let profile = match d.credential_profile_id {
        Some(id) => Some(store.profile(id).await.map_err(store_error)?.name),
        None => None,
    };
    let fields: Vec<(&str, String)> = vec![
        ("id", d.id.to_string()),
        ("tenant", tenant),
        ("name", d.name.clone()),
        ("host", host_port(&d)),
        (
            "via",
            match &via {
                Some((host, source)) => format!("bastion {host} ({source:?})").to_lowercase(),
                None => "direct".into(),
            },
        ),
        ("username", d.username.clone()),
        ("login", login(d.has_ssh_key, profile.as_deref())),
        ("enabled", if d.enabled { "yes" } else { "no" }.into()),
        ("routeros", opt(&d.routeros_version)),
        ("schedule", schedule),
        (
            "timeout",
            format!("{} s ({})", timeout.seconds, timeout.source.as_str()),
        ),
        (
            "host key",
            d.ssh_host_key_fingerprint
                .clone()
                .unwrap_or_else(|| "not pinned (trusted on first use)".into()),
        ),
        (
            "status",
            d.last_status.clone().unwrap_or_else(|| "never".into()),
        ),
        ("last attempt", time(d.last_attempt_at)),
        ("last success", time(d.last_success_at)),
        (
            "last error",
            match (&d.last_error_kind, &d.last_error_message) {
                (Some(k), Some(m)) => format!("{k}: {m}"),
                (Some(k), None) => k.clone(),
                _ => "-".into(),
            },
        ),
        ("failures", d.consecutive_failures.to_string()),
        ("backoff until", time(d.backoff_until)),
        (
            "blocked",
            match &d.blocked_reason {
                Some(r) => format!("{r} since {}", time(d.blocked_at)),
                None => "no".into(),
            },
        ),
        ("next due", time(Some(d.next_due_at))),
        ("last binary", last_binary(binary_runs.first())),
        (
            "last backup",
            match (&d.last_sha256, d.last_bytes) {
                (Some(h), Some(b)) => format!("{h} ({b} bytes)"),
                (Some(h), None) => h.clone(),
                _ => "-".into(),
            },
        ),
        (
            "outstanding",
            match &d.outstanding_job {
                Some(j) => format!("{j} since {}", time(d.outstanding_since)),
                None => "-".into(),
            },
        ),
        (
            "lease",
            match &d.lease_job {
                Some(j) => format!(
                    "{j} by {} until {}",
                    opt(&d.lease_worker),
                    time(d.lease_expires_at)
                ),
                None => "-".into(),
            },
        ),
        ("created", time(Some(d.created_at))),
        ("updated", time(Some(d.updated_at))),
    ];
    for (k, v) in fields {
        println!("{k:<14}{v}");
    }
    println!();
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!("last {} runs, newest first:", runs.len());
    let rows: Vec<Vec<String>> = runs.iter().map(run_row).collect();
    print_table(
        &[
            "STARTED", "STATUS", "TRIGGER", "MS", "TIMEOUT", "BYTES", "ERROR", "WORKER",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// A run as a row of the runs table.
fn run_row(r: &Run) -> Vec<String> {
    vec![
        time(Some(r.started_at)),
        r.status.clone(),
        r.trigger.clone(),
        r.duration_ms.to_string(),
        match (r.timeout_seconds, &r.timeout_source) {
            (Some(s), Some(source)) => format!("{s} s {source}"),
            _ => "-".into(),
        },
        r.bytes.map_or_else(|| "-".into(), |b| b.to_string()),
        r.error_kind.clone().unwrap_or_else(|| "-".into()),
        r.worker.clone(),
    ]
}
