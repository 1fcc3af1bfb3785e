//! the-other-dude's device database as an inventory source.
//!
//! A the-other-dude deployment keeps its routers in the backend's PostgreSQL (`devices`,
//! with credentials on the device or on a `credential_profiles` row), and its Go poller
//! reads them from there. To replace the poller without a second inventory to keep up
//! by hand, rosbackup reads the same rows: [`sync`] makes the device store agree with
//! them (`rosbackup devices sync --from-tod URL` once, or the enqueuer every
//! `DEVICE_REFRESH_SECONDS` with `ROSBACKUP_TOD_DATABASE_URL`).
//!
//! What it takes over and how (the rules are pure functions in `plan.rs`):
//! - RouterOS devices (`device_type` `routeros`) with credentials, under their id and
//!   tenant id; `ip_address` and `ssh_port` (22 when NULL) as host and port, `hostname`
//!   as the name, `routeros_version` as a version hint.
//! - Credentials chosen as the Go poller chooses them (the device's, then its profile's)
//!   and opened in the backend's legacy format (`legacy.rs`), then sealed under our own
//!   key as every password here is. OpenBao Transit ciphertexts cannot be opened without
//!   OpenBao: such a device is reported as skipped, with every other one synced.
//! - The host key pin, shared: an upstream pin is ours; a pin we learn on first use is
//!   written back to the upstream column where it is NULL, empty or equal — the only
//!   write the sync ever makes upstream.
//! - A device synced from there and deleted there is removed here; its config history is
//!   kept unless asked otherwise ([`SyncOptions::drop_history`]).
//!
//! Safety rails: a key that opens none of the legacy ciphertexts is an error naming
//! `CREDENTIAL_ENCRYPTION_KEY` and writes nothing; our writes are one transaction; an
//! upstream with no RouterOS device at all removes nothing (a wrong URL must not empty
//! the fleet). Nothing here logs or returns a credential.

mod apply;
pub mod legacy;
pub mod plan;
mod upstream;

pub use plan::{SkipReason, Skipped, SyncReport};
pub use upstream::UpstreamError;

use crate::credentials::CredentialKey;
use crate::schedule::ScheduleSettings;
use crate::store::{Store, StoreError};
use chrono::Utc;
use std::collections::HashMap;
use std::time::Duration;
use tracing::{info, warn};
use uuid::Uuid;

/// How a sync treats removed devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Also delete a removed device's config history (versions, sightings, orphans).
    /// Off by default: the history of a decommissioned router is an audit record, and
    /// `rosbackup history` still reads it by the device id.
    pub drop_history: bool,
}

/// Why a sync did nothing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the-other-dude's database: {0}{hint}", hint = schema_hint(.0))]
    Upstream(#[from] UpstreamError),
    #[error(
        "CREDENTIAL_ENCRYPTION_KEY opens none of the {failed} legacy credentials in \
         the-other-dude's database: it is not the key the backend encrypts with (its \
         CREDENTIAL_ENCRYPTION_KEY); nothing imported"
    )]
    WrongKey { failed: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn schema_hint(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Db(sqlx::Error::Database(d))
            if matches!(d.code().as_deref(), Some("42P01" | "42703")) =>
        {
            " (is this the-other-dude's database, with its SSH and credential profile \
             columns? The sync needs backend migrations 028 and 039)"
        }
        _ => "",
    }
}

/// Make the device store agree with the-other-dude's database at `upstream_url`.
/// `key` is `CREDENTIAL_ENCRYPTION_KEY`: it opens the backend's legacy ciphertexts and
/// seals the passwords here. New devices are first due after the fleet's jitter.
pub async fn sync(
    store: &Store,
    upstream_url: &str,
    key: &CredentialKey,
    schedule: &ScheduleSettings,
    opts: SyncOptions,
) -> Result<SyncReport, SyncError> {
    let mut up = upstream::connect(upstream_url).await?;
    let rows = upstream::fetch(&mut up).await?;
    let triage = plan::triage(&rows, key).map_err(|w| SyncError::WrongKey { failed: w.failed })?;
    let ids: Vec<Uuid> = triage.candidates.iter().map(|c| c.id).collect();
    let names: Vec<(Uuid, String)> = triage
        .candidates
        .iter()
        .map(|c| (c.tenant_id, c.name.clone()))
        .collect();

    let mut tx = apply::begin(store.pool()).await?;
    let ours = tx.ours(key, &ids).await?;
    let holders = tx.holders(&names).await?;
    let plan = plan::plan(triage, &ours, &holders);
    // StdRng, not thread_rng: this future runs on the enqueuer's tasks (Send).
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    tx.apply(key, &plan, opts.drop_history, || {
        schedule.first_due(Utc::now(), &mut rng)
    })
    .await?;
    tx.commit().await?;

    let mut report = SyncReport {
        inserted: plan.inserts.len(),
        updated: plan.updates.len(),
        unchanged: plan.unchanged,
        removed: plan.removals.len(),
        skipped: plan.skipped,
        written_back: 0,
        notes: plan.notes,
    };
    // Our side is committed; a failing write-back only delays agreement on pins until
    // the next sync, so it is a note, not a failure.
    match upstream::write_back(&mut up, &plan.write_back).await {
        Ok(written) => {
            report.written_back = written.len();
            apply::remember_written(store.pool(), &written).await?;
        }
        Err(e) => report.notes.push(format!(
            "host keys could not be written back to the-other-dude's database ({e}); \
             the next sync tries again"
        )),
    }
    use sqlx::Connection;
    let _ = up.close().await;
    Ok(report)
}

/// The enqueuer's side: [`sync`] every `period` until `shutdown`. Failures are logged
/// and retried next period; the report is logged when it changes, and a skipped
/// device's reason when it first appears (not once a minute).
pub async fn run_periodic(
    store: Store,
    upstream_url: String,
    key: CredentialKey,
    schedule: ScheduleSettings,
    opts: SyncOptions,
    period: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last_summary = String::new();
    let mut reasons: HashMap<Uuid, String> = HashMap::new();
    let mut failing: Option<String> = None;
    loop {
        match sync(&store, &upstream_url, &key, &schedule, opts).await {
            Ok(report) => {
                if failing.take().is_some() {
                    info!("the-other-dude sync recovered");
                }
                let summary = report.summary();
                if summary != last_summary || !report.notes.is_empty() {
                    info!(summary = %summary, "the-other-dude sync");
                    for n in &report.notes {
                        warn!(note = %n, "the-other-dude sync");
                    }
                    last_summary = summary;
                }
                let now: HashMap<Uuid, String> = report
                    .skipped
                    .iter()
                    .map(|s| (s.id, s.reason.to_string()))
                    .collect();
                for s in &report.skipped {
                    if reasons.get(&s.id) != now.get(&s.id) {
                        warn!(device_id = %s.id, tenant_id = %s.tenant_id, name = %s.name,
                              reason = %s.reason, "the-other-dude device skipped");
                    }
                }
                reasons = now;
            }
            Err(e) => {
                let msg = e.to_string();
                if failing.as_deref() != Some(msg.as_str()) {
                    warn!(error = %msg, "the-other-dude sync failed; retrying every period");
                }
                failing = Some(msg);
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
