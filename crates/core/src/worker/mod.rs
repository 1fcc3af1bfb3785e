//! Running backup jobs: the per-job rules and the apalis worker around them.
//!
//! [`execute`] is one job from start to finish: skip what must be skipped, take the
//! device's lease, run the core pipeline (export → normalize → hash → publish, the same
//! code path for scheduled and manual jobs), and write the outcome under the lease. The
//! rules it follows are pure functions in [`rules`] (what to skip and what a skip
//! records, when to give a job up, what an outcome writes); `execute` does the I/O. It records every outcome in PostgreSQL itself and
//! returns `Ok`, so apalis-redis' hard-coded retry schedule never decides anything; only
//! an infrastructure failure (PostgreSQL down) returns `Err`, a bounded number of times.
//!
//! [`run`] wraps it in an apalis worker with the mitigations the queue needs (see
//! [`crate::queue`]) and supervision: a worker whose apalis monitor stops, or stops
//! heartbeating, takes the process down with a non-zero exit instead of idling alive.

mod execute;
mod group;
mod leases;
mod retry;
pub mod rules;

pub use execute::execute;
pub use group::{Enlisted, Outcomes};
pub use leases::Leases;
pub use rules::JobReport;

use crate::config::BackupSettings;
use crate::credentials::CredentialKey;
use crate::metrics::Metrics;
use crate::queue::{BackupJob, Queue};
use crate::schedule::ScheduleSettings;
use crate::snapshot::Publisher;
use crate::store::{Lease, Store};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{Instrument, debug, info, info_span, warn};

/// Everything a job needs, shared by all jobs of a worker process.
///
/// Built by [`JobEnv::new`], which makes the lease taker and the outcome writer over the
/// env's own store. The three are private, so no caller can swap one of them alone: a
/// job's statements never go to two databases, or to one reached through a proxy and one
/// not (as two tests once had it, when each caller assembled the env field by field).
/// `new` also reads `backup` (the batch sizes, jump-host connections) and `metrics` for
/// the gatherers and the bastion pool: give those to `new`; changing the fields later
/// reaches only the job's own steps.
#[derive(Debug, Clone)]
pub struct JobEnv {
    store: Store,
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
    /// The worker's jump-host connections, shared by all its jobs (one pool per worker
    /// process: [`crate::device::bastion`]).
    pub bastions: Arc<crate::device::BastionPool>,
    /// Where the jobs' outcomes are written, grouped ([`Outcomes`], issue #20).
    outcomes: Outcomes,
    /// Where the jobs' leases are taken, grouped when they meet ([`Leases`], issue #20).
    leases: Leases,
}

impl JobEnv {
    /// A worker's job environment over `store`, with the settings in `backup`
    /// (`ROSBACKUP_LEASE_BATCH`, `ROSBACKUP_OUTCOME_BATCH`, jump-host connections) and
    /// the product's defaults for the rest: the schedule's, a 30 s lease, 100 runs kept
    /// per device, a job given up after 3 starts. Its lease and outcome gatherers start on
    /// the current Tokio runtime.
    pub fn new(
        store: Store,
        queue: Queue,
        key: CredentialKey,
        publisher: Publisher,
        backup: BackupSettings,
        metrics: Metrics,
    ) -> JobEnv {
        let bastions = Arc::new(
            crate::device::BastionPool::new(backup.bastion_connections)
                .counting(metrics.bastion_connections_opened.clone()),
        );
        JobEnv {
            outcomes: Outcomes::new(
                store.clone(),
                backup.group_commit,
                metrics.outcome_batch.clone(),
            ),
            leases: Leases::new(
                store.clone(),
                backup.lease_batch,
                metrics.lease_batch.clone(),
            ),
            store,
            queue,
            key,
            publisher,
            backup,
            schedule: ScheduleSettings::default(),
            lease_ttl: Duration::from_secs(30),
            keep_runs: 100,
            max_job_starts: 3,
            metrics,
            held: Arc::default(),
            bastions,
        }
    }

    /// Where this environment's statements go.
    pub fn store(&self) -> &Store {
        &self.store
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
