//! Running backup jobs: the per-job rules and the apalis worker around them.
//!
//! [`execute`] is one job from start to finish and holds every rule of the fleet: skip
//! what must be skipped, take the device's lease, run the core pipeline (export →
//! normalize → hash → publish, the same code path for scheduled and manual jobs), and
//! write the outcome under the lease. It records every outcome in PostgreSQL itself and
//! returns `Ok`, so apalis-redis' hard-coded retry schedule never decides anything; only
//! an infrastructure failure (PostgreSQL down) returns `Err`, a bounded number of times.
//!
//! [`run`] wraps it in an apalis worker with the mitigations the queue needs (see
//! [`crate::queue`]) and supervision: a worker whose apalis monitor stops, or stops
//! heartbeating, takes the process down with a non-zero exit instead of idling alive.

use crate::backup::{self, BackupError};
use crate::config::BackupSettings;
use crate::credentials::CredentialKey;
use crate::device::Target;
use crate::error::ErrorKind;
use crate::metrics::Metrics;
use crate::queue::{BackupJob, Queue};
use crate::schedule::{self, ScheduleSettings};
use crate::snapshot::Publisher;
use crate::store::{
    Device, Lease, LeaseAttempt, RunRecord, RunStatus, StateUpdate, Store, StoreError, Trigger,
};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{Instrument, debug, info, info_span, warn};

/// Everything a job needs, shared by all jobs of a worker process.
#[derive(Debug, Clone)]
pub struct JobEnv {
    pub store: Store,
    pub queue: Queue,
    pub key: CredentialKey,
    pub publisher: Publisher,
    pub backup: BackupSettings,
    pub schedule: ScheduleSettings,
    pub lease_ttl: Duration,
    /// Runs kept per device.
    pub keep_runs: i64,
    /// A job id that took the lease this many times without finishing is given up.
    pub max_job_starts: i32,
    pub metrics: Metrics,
    /// Leases held right now (released at shutdown so the next holder need not wait).
    pub held: Arc<Mutex<HashMap<String, Lease>>>,
}

/// How a job ended (also what a manual backup reports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobReport {
    pub status: RunStatus,
    pub error_kind: Option<String>,
    pub message: Option<String>,
    pub sha256: Option<String>,
}

impl JobReport {
    fn quiet(status: RunStatus, message: &str) -> Self {
        JobReport {
            status,
            error_kind: None,
            message: Some(message.to_string()),
            sha256: None,
        }
    }
}

/// Run one job. `worker` names the execution in the run history.
pub async fn execute(env: &JobEnv, job: &BackupJob, worker: &str) -> Result<JobReport, StoreError> {
    let started_at = Utc::now();
    let Some(device) = env.store.device(job.device_id).await? else {
        debug!("device no longer exists; job ends");
        return Ok(JobReport::quiet(RunStatus::Skipped, "device removed"));
    };
    let manual = job.trigger == Trigger::Manual;
    let run = |status: RunStatus, kind: Option<&str>, message: &str| RunRecord {
        device_id: device.id,
        tenant_id: device.tenant_id,
        job_id: job.job_id.clone(),
        trigger: job.trigger,
        worker: worker.to_string(),
        started_at,
        finished_at: Utc::now(),
        status,
        error_kind: kind.map(str::to_string),
        error_message: Some(message.to_string()),
        bytes: None,
        sha256: None,
    };

    if !manual {
        if device.outstanding_job.as_deref() != Some(job.job_id.as_str()) {
            debug!("stale job: the device's outstanding job is another one");
            return Ok(JobReport::quiet(RunStatus::Skipped, "stale job"));
        }
        if device.next_due_at.timestamp() > job.due_at + 1 {
            // A manual backup ran since this job was claimed and moved the due time.
            env.store.release_claim(device.id, &job.job_id).await?;
            return Ok(JobReport::quiet(RunStatus::Skipped, "superseded"));
        }
    }
    if !device.enabled {
        env.metrics
            .backup_total
            .with_label_values(&["skipped_disabled"])
            .inc();
        if manual {
            env.store
                .record_run(
                    &run(RunStatus::Skipped, None, "device is disabled"),
                    env.keep_runs,
                )
                .await?;
        } else {
            env.store.release_claim(device.id, &job.job_id).await?;
        }
        return Ok(JobReport::quiet(RunStatus::Skipped, "device is disabled"));
    }
    if let Some(reason) = device.blocked_reason.as_deref() {
        let (label, hint) = match reason {
            "auth_failed" => ("skipped_auth_blocked", ErrorKind::AuthFailed.hint()),
            _ => ("skipped_hostkey_blocked", ErrorKind::HostKeyMismatch.hint()),
        };
        env.metrics.backup_total.with_label_values(&[label]).inc();
        let message = format!("device is blocked ({reason}): {hint}, or unblock it");
        if manual {
            env.store
                .record_run(
                    &run(RunStatus::Failed, Some(reason), &message),
                    env.keep_runs,
                )
                .await?;
        } else {
            env.store.release_claim(device.id, &job.job_id).await?;
        }
        return Ok(JobReport {
            status: RunStatus::Failed,
            error_kind: Some(reason.to_string()),
            message: Some(message),
            sha256: None,
        });
    }
    // A Redis hiccup here must not fail the backup: the seed's rule treats an unknown
    // status as "maybe online".
    let online = env.queue.device_online(&device.id).await.unwrap_or(true);
    if !online {
        env.metrics
            .backup_total
            .with_label_values(&["skipped_offline"])
            .inc();
        let sched = env.schedule.for_device(
            device.backup_interval_seconds,
            device.backup_cron.as_deref(),
        );
        let next = sched.next_after(Utc::now());
        env.store
            .record_skip(
                &run(RunStatus::Skipped, None, "device is offline"),
                next,
                env.keep_runs,
            )
            .await?;
        return Ok(JobReport::quiet(RunStatus::Skipped, "device is offline"));
    }

    // ---- the lease ----
    let lease = Lease {
        device_id: device.id,
        job_id: job.job_id.clone(),
        token: uuid::Uuid::new_v4(),
        worker: worker.to_string(),
        ttl: env.lease_ttl,
    };
    let mut waited = false;
    let starts = loop {
        match env.store.acquire_lease(&lease).await? {
            LeaseAttempt::Acquired { takeover, starts } => {
                if takeover {
                    env.metrics.lease_takeovers.inc();
                    info!("took over an expired lease");
                }
                if waited && !manual {
                    // The execution we waited for may have finished this very job.
                    let fresh = env.store.device(device.id).await?;
                    if fresh
                        .is_none_or(|d| d.outstanding_job.as_deref() != Some(job.job_id.as_str()))
                    {
                        env.store.release_lease(&lease).await?;
                        return Ok(JobReport::quiet(
                            RunStatus::Skipped,
                            "completed by an earlier execution",
                        ));
                    }
                }
                break starts;
            }
            LeaseAttempt::NoDevice => {
                return Ok(JobReport::quiet(RunStatus::Skipped, "device removed"));
            }
            LeaseAttempt::Held { job_id, expires_at } if job_id == job.job_id => {
                // This very job is still leased by an execution presumed dead (apalis
                // re-queued it). Wait for that lease to expire; never overlap.
                let wait = (expires_at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(env.lease_ttl)
                    + Duration::from_millis(200);
                debug!(
                    ?wait,
                    "waiting for the previous execution's lease to expire"
                );
                tokio::time::sleep(wait).await;
                waited = true;
            }
            LeaseAttempt::Held { expires_at, .. } => {
                env.metrics
                    .backup_total
                    .with_label_values(&["locked"])
                    .inc();
                let message = "another backup of this device is running";
                if manual {
                    env.store
                        .record_run(&run(RunStatus::Locked, None, message), env.keep_runs)
                        .await?;
                } else {
                    env.store
                        .release_claim_until(device.id, &job.job_id, expires_at)
                        .await?;
                }
                return Ok(JobReport::quiet(RunStatus::Locked, message));
            }
        }
    };
    env.held
        .lock()
        .map(|mut h| h.insert(job.job_id.clone(), lease.clone()))
        .ok();
    let result = run_leased(env, job, &device, &lease, starts, started_at).await;
    env.held.lock().map(|mut h| h.remove(&job.job_id)).ok();
    result
}

/// The part of a job that runs under the lease.
async fn run_leased(
    env: &JobEnv,
    job: &BackupJob,
    device: &Device,
    lease: &Lease,
    starts: i32,
    started_at: chrono::DateTime<Utc>,
) -> Result<JobReport, StoreError> {
    let sched = env.schedule.for_device(
        device.backup_interval_seconds,
        device.backup_cron.as_deref(),
    );
    let outcome: Result<backup::Collected, (ErrorKind, String, Option<String>)> = if starts
        > env.max_job_starts
    {
        Err((
            ErrorKind::Unknown,
            format!(
                "this job was interrupted {} times (its worker crashed or was killed); giving up on it",
                starts - 1
            ),
            None,
        ))
    } else {
        env.metrics.backup_active.inc();
        let timer = env.metrics.backup_duration.start_timer();
        let r = backup_under_lease(env, device, lease).await;
        timer.observe_duration();
        env.metrics.backup_active.dec();
        match r {
            Ok(Some(c)) => Ok(c),
            Ok(None) => {
                env.metrics.lease_lost.inc();
                warn!("lease lost during the backup; nothing published, no outcome written");
                return Ok(JobReport::quiet(RunStatus::Skipped, "lease lost"));
            }
            Err(e) => {
                let presented = match &e {
                    BackupError::Export(x) => x.presented_fingerprint().map(str::to_string),
                    _ => None,
                };
                Err((e.kind(), e.to_string(), presented))
            }
        }
    };

    let now = Utc::now();
    let (run_status, kind, message, sha, bytes, state) = match &outcome {
        Ok(c) => (
            RunStatus::Success,
            None,
            None,
            Some(c.sha256.clone()),
            Some(c.normalized.len() as i64),
            StateUpdate {
                next_due_at: sched.next_after(now),
                consecutive_failures: 0,
                backoff_until: None,
                blocked_reason: None,
                tofu_fingerprint: Some(c.export.fingerprint.clone()),
                routeros_version: c.export.routeros_version.clone().filter(|v| !v.is_empty()),
            },
        ),
        Err((kind, message, _)) => {
            let failures = device.consecutive_failures.saturating_add(1);
            let (blocked, next, backoff_until) = if kind.blocks() {
                // Blocked devices are not scheduled; next_due_at only matters once
                // unblocked (then it is set to now).
                (Some(kind.as_str().to_string()), sched.next_after(now), None)
            } else {
                let next = schedule::due_after_failure(&sched, now, failures);
                (None, next, Some(next))
            };
            (
                RunStatus::Failed,
                Some(kind.as_str().to_string()),
                Some(message.clone()),
                None,
                None,
                StateUpdate {
                    next_due_at: next,
                    consecutive_failures: failures,
                    backoff_until,
                    blocked_reason: blocked,
                    tofu_fingerprint: None,
                    routeros_version: None,
                },
            )
        }
    };
    let record = RunRecord {
        device_id: device.id,
        tenant_id: device.tenant_id,
        job_id: job.job_id.clone(),
        trigger: job.trigger,
        worker: lease.worker.clone(),
        started_at,
        finished_at: now,
        status: run_status,
        error_kind: kind.clone(),
        error_message: message.clone(),
        bytes,
        sha256: sha.clone(),
    };
    let written = match env
        .store
        .record_outcome(lease, &record, &state, env.keep_runs)
        .await
    {
        Err(err) if refused_for_good(&err) => {
            // PostgreSQL answered and refused the row (a value it cannot store, e.g.
            // device-supplied text). Retrying would fail the same way forever and the
            // device would be exported again and again with no run recorded, so write
            // the outcome again without any device-supplied text.
            let code = sqlstate(&err).unwrap_or_default();
            warn!(sqlstate = %code, "outcome refused by PostgreSQL; recording it without device-supplied text");
            let mut record = record.clone();
            let mut state = state.clone();
            state.routeros_version = None;
            record.error_message = Some(format!(
                "the outcome could not be stored as reported (PostgreSQL SQLSTATE {code}); device-supplied text was dropped{}",
                record
                    .error_kind
                    .as_deref()
                    .map(|k| format!("; error kind was {k}"))
                    .unwrap_or_default()
            ));
            env.store
                .record_outcome(lease, &record, &state, env.keep_runs)
                .await?
        }
        other => other?,
    };
    if !written {
        env.metrics.lease_lost.inc();
        warn!("lease lost before the outcome was written; a newer execution owns the device");
        return Ok(JobReport::quiet(RunStatus::Skipped, "lease lost"));
    }
    match &outcome {
        Ok(_) => {
            env.metrics
                .backup_total
                .with_label_values(&["success"])
                .inc();
            info!(
                sha256 = sha.as_deref().unwrap_or(""),
                bytes, "backup published"
            );
        }
        Err((kind, _, presented)) => {
            env.metrics.backup_total.with_label_values(&["error"]).inc();
            env.metrics
                .backup_errors
                .with_label_values(&[kind.as_str()])
                .inc();
            warn!(
                error_kind = kind.as_str(),
                error = message.as_deref().unwrap_or(""),
                presented_fingerprint = presented.as_deref().unwrap_or(""),
                hint = kind.hint(),
                "backup failed"
            );
        }
    }
    Ok(JobReport {
        status: run_status,
        error_kind: kind,
        message,
        sha256: sha,
    })
}

/// Export, normalize, hash and publish while renewing the lease. `Ok(None)` when the
/// lease was lost: the export is abandoned and nothing is published.
async fn backup_under_lease(
    env: &JobEnv,
    device: &Device,
    lease: &Lease,
) -> Result<Option<backup::Collected>, BackupError> {
    let password = match env.store.password(&env.key, device.id).await {
        Ok(p) => p,
        Err(e) => {
            return Err(BackupError::Export(
                crate::device::ExportError::InvalidTarget(format!("credentials: {e}")),
            ));
        }
    };
    let target = Target {
        host: device.host.clone(),
        port: u16::try_from(device.ssh_port).unwrap_or(22),
        username: device.username.clone(),
        password,
        known_fingerprint: device.ssh_host_key_fingerprint.clone(),
        routeros_version: device.routeros_version.clone(),
    };
    let renew_every = env.lease_ttl / 3;
    let work = async {
        let collected =
            backup::collect(&target, &env.backup.export, env.backup.normalization).await?;
        // Fencing before the only externally visible step: publish only while ours.
        if !env.store.renew_lease(lease).await.unwrap_or(false) {
            return Ok(None);
        }
        backup::publish_for_job(
            &env.publisher,
            &collected,
            &device.id.to_string(),
            &device.tenant_id.to_string(),
            &lease.job_id,
        )
        .await?;
        Ok(Some(collected))
    };
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(renew_every);
    ticker.tick().await;
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = ticker.tick() => {
                match env.store.renew_lease(lease).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(None),
                    // PostgreSQL unreachable: keep going while the lease may still be
                    // valid; the fenced outcome write decides in the end.
                    Err(e) => warn!(error = %e, "lease renewal failed"),
                }
            }
        }
    }
}

/// Give back every lease this process holds (graceful shutdown past the grace period).
pub async fn release_held(env: &JobEnv) {
    let leases: Vec<Lease> = env
        .held
        .lock()
        .map(|h| h.values().cloned().collect())
        .unwrap_or_default();
    for lease in leases {
        let _ = env.store.release_lease(&lease).await;
    }
}

/// apalis handler: one job in a span carrying device_id and job_id.
pub async fn handle(
    job: BackupJob,
    attempt: apalis_core::task::attempt::Attempt,
    wctx: apalis_core::worker::context::WorkerContext,
    env: apalis_core::task::data::Data<Arc<JobEnv>>,
) -> Result<(), apalis_core::error::BoxDynError> {
    let span = info_span!(
        "job",
        device_id = %job.device_id,
        job_id = %job.job_id,
        trigger = job.trigger.as_str(),
        worker = wctx.name()
    );
    async move {
        match execute(&env, &job, wctx.name()).await {
            Ok(report) => {
                debug!(status = report.status.as_str(), "job finished");
                Ok(())
            }
            Err(e) => {
                // PostgreSQL trouble: let apalis retry a few times, then give the job up
                // (the enqueuer notices the dead job and reschedules the device).
                warn!(error = %e, attempt = attempt.current(), "job could not record its outcome");
                if attempt.current() >= 3 {
                    Err(apalis_core::error::AbortError::new(e).into())
                } else {
                    Err(e.into())
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Worker process settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Base name; each apalis worker instance gets a unique suffix.
    pub name: String,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
}

/// Shared liveness signal: the last apalis heartbeat (Unix seconds).
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    last_heartbeat: Arc<AtomicI64>,
}

impl Liveness {
    pub fn beat(&self) {
        self.last_heartbeat
            .store(Utc::now().timestamp(), Ordering::Relaxed);
    }
    /// Seconds since the last heartbeat (None before the first).
    pub fn age(&self) -> Option<i64> {
        match self.last_heartbeat.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Utc::now().timestamp() - t),
        }
    }
}

/// Seconds without a queue heartbeat after which a worker counts as stuck: six
/// heartbeat intervals, at least 30 s. The watchdog exits on it and `/healthz` fails on it.
pub fn stall_limit(heartbeat: Duration) -> i64 {
    (heartbeat.as_secs() as i64 * 6).max(30)
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerExit {
    #[error("the apalis monitor stopped on its own: {0}")]
    MonitorStopped(String),
    #[error("no queue heartbeat for {0} s; the worker is stuck")]
    Stalled(i64),
}

/// Run a worker until `shutdown` resolves (graceful: Ok) or the worker breaks (Err, so
/// the process exits non-zero and its supervisor restarts it).
pub async fn run(
    env: Arc<JobEnv>,
    settings: WorkerSettings,
    liveness: Liveness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerExit> {
    use apalis::prelude::WorkerBuilderExt;
    use apalis_core::monitor::Monitor;
    use apalis_core::worker::builder::WorkerBuilder;
    use apalis_core::worker::event::Event;

    let stop_requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let names: Arc<Mutex<Vec<String>>> = Arc::default();
    let queue = env.queue.clone();
    let heartbeat = queue.config().heartbeat;
    let base = settings.name.clone();
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let env_w = env.clone();
    let names_w = names.clone();
    let concurrency = settings.concurrency.max(1);
    let live = liveness.clone();
    let active = env.metrics.backup_active.clone();
    let busy: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || active.get() > 0);
    let monitor = Monitor::new()
        .register(move |restarts| {
            // Unique per process and restart: apalis must never see two live workers
            // under one name, and a restart must not wait for the old name to expire.
            let name = format!("{base}-{suffix}-r{restarts}");
            if let Ok(mut n) = names_w.lock() {
                n.push(name.clone());
            }
            WorkerBuilder::new(name)
                .backend(queue.backend_busy(busy.clone()))
                .data(env_w.clone())
                .concurrency(concurrency)
                .catch_panic()
                .build(handle)
        })
        .on_event(move |ctx, ev| match ev {
            Event::HeartBeat | Event::Start => live.beat(),
            Event::Error(e) => warn!(worker = ctx.name(), error = %e, "worker error"),
            Event::Exit => info!(worker = ctx.name(), "worker exited"),
            _ => {}
        })
        .should_restart(|ctx, err| {
            warn!(worker = ctx.name(), error = %err, "apalis worker stopped; restarting it");
            true
        })
        .shutdown_timeout(settings.shutdown_grace);

    let stop_flag = stop_requested.clone();
    let signal = async move {
        shutdown.await;
        stop_flag.store(true, Ordering::SeqCst);
        info!("shutting down: no new jobs; waiting for running ones");
        Ok::<(), std::io::Error>(())
    };
    liveness.beat();
    let stall_limit = stall_limit(heartbeat);
    let watchdog = {
        let liveness = liveness.clone();
        let stop = stop_requested.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stop.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                if let Some(age) = liveness.age()
                    && age > stall_limit
                {
                    return age;
                }
            }
        }
    };
    let result = tokio::select! {
        r = monitor.run_with_signal(signal) => {
            if stop_requested.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(WorkerExit::MonitorStopped(match r {
                    Ok(()) => "returned Ok without a shutdown request".to_string(),
                    Err(e) => e.to_string(),
                }))
            }
        }
        age = watchdog => Err(WorkerExit::Stalled(age)),
    };
    // Whatever is still running past the grace period: hand its leases and its queue
    // entries back now, so another worker picks it up without waiting for expiry.
    release_held(&env).await;
    let names = names.lock().map(|n| n.clone()).unwrap_or_default();
    for name in names {
        match env.queue.requeue_worker(&name).await {
            Ok(0) => {}
            Ok(n) => info!(worker = %name, jobs = n, "returned unfinished jobs to the queue"),
            Err(e) => warn!(worker = %name, error = %e, "could not return jobs to the queue"),
        }
    }
    result
}

/// The SQLSTATE of an error PostgreSQL answered with, if it is one.
fn sqlstate(err: &StoreError) -> Option<String> {
    match err {
        StoreError::Db(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// PostgreSQL refused a value for good: class 22 (data exception: invalid byte sequence,
/// value too long, out of range) or 54 (program limit exceeded). Connection failures and
/// everything else are retried as before.
fn refused_for_good(err: &StoreError) -> bool {
    sqlstate(err).is_some_and(|c| c.starts_with("22") || c.starts_with("54"))
}
