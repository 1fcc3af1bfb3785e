//! `rosbackup soak`: a long run of the whole fleet under abuse, then an audit.
//!
//! Why it exists: the fault tests prove each promise once, for a few devices, for a minute.
//! Leaks, slow drifts and bookkeeping mismatches show only over many intervals and many
//! thousands of backups. The soak runs the real processes (an enqueuer and workers as
//! `rosbackup` processes, the simulator as a `rosbackup sim` process, PostgreSQL and NATS
//! as found or private, and a **private** Redis it owns) for a long time, kills a random
//! worker with SIGKILL every so often (and starts a replacement), restarts Redis with its
//! data gone, restarts NATS and PostgreSQL with their data kept (each one the soak was
//! asked to restart is a private server it owns), samples memory, file descriptors and the
//! Redis key count, and at the end audits three independent records against each other:
//!
//! * the simulator's **session log** — what the devices actually sent (one line per
//!   completed export, with the hash a correct backup of those bytes carries),
//! * the **run history** in PostgreSQL — what the workers say they did,
//! * the **NATS stream** — what consumers received (read back by the soak while it runs,
//!   each message's text checked against its hash).
//!
//! The audit ([`audit`]) is a pure function of those records so that it can be tested
//! with fabricated ones: a missing backup, a duplicate publish or an unexplained session
//! must fail it.
//!
//! What "every interval it was healthy for" means here: the run is cut into windows of
//! one interval from the import; every device without a fault must have a successful
//! backup that finished in each window **or the next one** (one interval of slack). The
//! slack is what a killed worker or a Redis restart may cost: a killed worker's jobs run
//! again after its lease expires and missed heartbeats (seconds), and jobs lost with
//! Redis are rescheduled from PostgreSQL once their claim is `stale_after` (30 s) old and
//! a refresh runs. So the one-interval promise needs an interval of at least ~20 s.
//!
//! What a disruption may cost the one-to-one checks: a killed worker may leave each of
//! its running jobs published without a recorded outcome (or a session without a run);
//! a PostgreSQL restart may do that to every running job of every worker (they cannot
//! confirm their lease or write their outcome), and a NATS restart too (a publish whose
//! acknowledgement was lost is recorded as failed though the stream kept it). So the
//! allowance is kills × concurrency + restarts × workers × concurrency.
//!
//! What "flat" means: for each sampled series (RSS and open fds of the enqueuer, the
//! simulator and the largest live worker; the Redis key count), the average over the
//! last third of the samples is at most the average over a reference window × (1 +
//! [`FLAT_REL`]) + a small absolute allowance ([`FLAT_ABS_RSS_KIB`], [`FLAT_ABS_FDS`],
//! [`FLAT_ABS_KEYS`]). The reference window is the second third (the first third is
//! warm-up); for the Redis key count, when the Redis restart falls after the second
//! third began, it is the window of the same length just before the restart (a restarted
//! Redis starts empty and fills up again, which is not growth). Workers are killed and
//! replaced, so their series is the largest RSS/fd count among the live workers.

use crate::services::{self, Service, ServiceError, spawn_self, stop_child};
use chrono::{DateTime, Utc};
use rand::Rng;
use rosbackup_core::access::{Access, Role};
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::secret::redact_url;
use rosbackup_core::snapshot::{ConfigSnapshotEvent, Publisher, PublisherConfig};
use rosbackup_core::store::Store;
use rosbackup_sim::{Fault, FaultSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;
use uuid::Uuid;

/// The soak's knobs (the CLI's flags).
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub devices: usize,
    pub interval: Duration,
    pub duration: Duration,
    pub workers: usize,
    /// `CONFIG_BACKUP_MAX_CONCURRENT` of each worker.
    pub concurrency: usize,
    /// SIGKILL a random worker after a random pause in this range (then start a
    /// replacement); `None`: no kills.
    pub kill_every: Option<(Duration, Duration)>,
    /// Restart the private Redis (data gone) this long after the start.
    pub redis_restart_at: Option<Duration>,
    /// Restart NATS (streams kept) this long after the start; NATS is then private.
    pub nats_restart_at: Option<Duration>,
    /// Restart PostgreSQL (fast shutdown, data kept) this long after the start;
    /// PostgreSQL is then private.
    pub postgres_restart_at: Option<Duration>,
    pub faults: FaultSpec,
    /// Simulated device `i` listens on `listen_base + i`.
    pub listen_base: Ipv4Addr,
    /// Sampling period of RSS, fds and the Redis key count.
    pub sample_every: Duration,
    pub report: Option<PathBuf>,
    pub database_url: String,
    pub database_url_strict: bool,
    pub nats_url: String,
    /// Private PostgreSQL and NATS too (Redis is always private).
    pub private: bool,
    /// Scratch space (private services, logs, the session log).
    pub dir: PathBuf,
}

impl SoakOptions {
    /// Device lease: half an interval, between 6 and 30 s (the product default).
    pub fn lease(&self) -> Duration {
        Duration::from_secs((self.interval.as_secs() / 2).clamp(6, 30))
    }

    /// Queue heartbeat: a tenth of an interval, between 1 and 5 s (the default).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs((self.interval.as_secs() / 10).clamp(1, 5))
    }

    /// Enqueuer refresh (how soon jobs lost with Redis are noticed): a tenth of an
    /// interval, between 1 and 60 s.
    pub fn refresh(&self) -> Duration {
        Duration::from_secs((self.interval.as_secs() / 10).clamp(1, 60))
    }

    /// The final quiescent period: no kills, no restarts; one interval (the last
    /// window's slack) plus a lease plus a margin, so every window can complete.
    pub fn quiescent(&self) -> Duration {
        self.interval + self.lease() + Duration::from_secs(5)
    }
}

/// Faults a device can be backed up with in every interval.
pub fn healthy_every_interval(fault: Option<Fault>) -> bool {
    matches!(
        fault,
        None | Some(Fault::V6 | Fault::Annotate | Fault::Change | Fault::Keys | Fault::KeyOnly)
    )
}

/// Why the soak could not run (a failing audit is not an error: see [`SoakReport`]).
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot write the report {path}: {reason}")]
    Report { path: String, reason: String },
}

fn setup(what: &str) -> impl Fn(String) -> SoakError + '_ {
    move |e| SoakError::Setup(format!("{what}: {e}"))
}

mod abuse;
mod audit;
mod series;
mod stream;

use abuse::{Abuse, RedisAt, abuse};
use audit::check;
pub use audit::*;
pub use series::*;
use stream::read_stream;

// ---------------------------------------------------------------------------------------
// The report.

/// Everything the soak measured and concluded (`--report FILE` writes it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    pub devices: usize,
    pub healthy_devices: usize,
    pub faults: String,
    pub interval_seconds: u64,
    pub duration_seconds: u64,
    pub workers: usize,
    pub concurrency: usize,
    pub lease_seconds: u64,
    pub started_at: DateTime<Utc>,
    pub abuse_ended_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub kills: Vec<KillRecord>,
    pub redis_restarts: Vec<DateTime<Utc>>,
    /// DBSIZE right after the restart (0: the data was gone).
    pub redis_keys_after_restart: Option<u64>,
    /// Seconds from the Redis restart to the next successful backup.
    pub first_success_after_restart_seconds: Option<f64>,
    /// NATS and PostgreSQL restarts.
    #[serde(default)]
    pub service_restarts: Vec<ServiceRestart>,
    /// Processes that exited without being killed by the soak.
    pub unexpected_exits: Vec<String>,
    pub figures: AuditFigures,
    pub series: Vec<Series>,
    pub checks: Vec<Check>,
    pub ok: bool,
    /// Where the processes' logs are.
    pub logs: String,
}

/// A restart of NATS or PostgreSQL during the soak.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRestart {
    /// `NATS` or `PostgreSQL`.
    pub service: String,
    /// When it was up again.
    pub at: DateTime<Utc>,
    /// From the stop signal until it answered again, seconds.
    pub down_seconds: f64,
    /// Seconds from `at` to the next successful backup that started after it.
    pub first_success_after_seconds: Option<f64>,
}

impl SoakReport {
    /// The summary table printed at the end.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let f = &self.figures;
        let _ = writeln!(
            s,
            "soak: {} devices ({} healthy{}), interval {} s, {} s of abuse + quiescent interval, {} workers × {} concurrent",
            self.devices,
            self.healthy_devices,
            if self.faults.is_empty() {
                String::new()
            } else {
                format!("; faults {}", self.faults)
            },
            self.interval_seconds,
            self.duration_seconds,
            self.workers,
            self.concurrency
        );
        let _ = writeln!(
            s,
            "  worker kills {}, Redis restarts {} (keys after restart: {}, first success {} s later)",
            self.kills.len(),
            self.redis_restarts.len(),
            self.redis_keys_after_restart
                .map_or("-".into(), |k| k.to_string()),
            self.first_success_after_restart_seconds
                .map_or("-".into(), |t| format!("{t:.1}"))
        );
        for r in &self.service_restarts {
            let _ = writeln!(
                s,
                "  {} restarted: down {:.1} s, first success {} s later",
                r.service,
                r.down_seconds,
                r.first_success_after_seconds
                    .map_or("-".into(), |t| format!("{t:.1}"))
            );
        }
        let _ = writeln!(
            s,
            "  runs {} (success {}, failed {:?}), NATS messages {}, simulator sessions {}",
            f.runs, f.successes, f.failures_by_kind, f.messages, f.sessions
        );
        let _ = writeln!(
            s,
            "  {:<32} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>5}",
            "series", "first", "last", "max", "slope/min", "ref avg", "last 1/3", "flat"
        );
        for x in &self.series {
            let _ = writeln!(
                s,
                "  {:<32} {:>10.0} {:>10.0} {:>10.0} {:>11.1} {:>10.0} {:>10.0} {:>5}",
                x.name,
                x.first,
                x.last,
                x.max,
                x.slope_per_min,
                x.reference_avg,
                x.last_third_avg,
                if x.flat { "yes" } else { "NO" }
            );
        }
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {:<26} {}",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(s, "soak {}", if self.ok { "passed" } else { "FAILED" });
        s
    }
}

// ---------------------------------------------------------------------------------------
// Running it.

struct Proc {
    name: String,
    child: Child,
    pid: u32,
}

impl Proc {
    fn new(name: String, child: Child) -> Result<Proc, SoakError> {
        let pid = child
            .id()
            .ok_or_else(|| SoakError::Setup(format!("{name} exited at once")))?;
        Ok(Proc { name, child, pid })
    }
}

struct Running {
    enqueuer: Option<Proc>,
    workers: Vec<Proc>,
    sim: Option<Proc>,
    services: Vec<Service>,
    redis: Option<Service>,
    cleanup: Option<(String, String, crate::demo::Names)>,
}

impl Running {
    async fn stop_fleet(&mut self) {
        for w in self.workers.iter_mut() {
            stop_child(&mut w.child, Duration::from_secs(20)).await;
        }
        if let Some(e) = self.enqueuer.as_mut() {
            stop_child(&mut e.child, Duration::from_secs(15)).await;
        }
    }

    async fn stop_all(&mut self) {
        self.stop_fleet().await;
        if let Some(s) = self.sim.as_mut() {
            stop_child(&mut s.child, Duration::from_secs(15)).await;
        }
        if let Some((admin_url, nats_url, names)) = self.cleanup.take() {
            if let Ok(admin) = Store::connect(&admin_url, 1).await {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", names.database);
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(admin.pool())
                    .await;
                admin.pool().close().await;
            }
            if let Ok(client) = async_nats::connect(nats_url.as_str()).await {
                let js = async_nats::jetstream::new(client);
                let _ = js.delete_stream(&names.stream).await;
                let _ = js.delete_object_store(&names.bucket).await;
            }
        }
        if let Some(r) = self.redis.as_mut() {
            r.stop(Duration::from_secs(10)).await;
        }
        for s in self.services.iter_mut().rev() {
            s.stop(Duration::from_secs(15)).await;
        }
    }
}

/// Run the soak and audit it. `Ok` carries the report whether or not every check held.
pub async fn run(opts: SoakOptions) -> Result<SoakReport, SoakError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| setup("scratch directory")(e.to_string()))?;
    let logs = opts.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| setup("log directory")(e.to_string()))?;
    let mut running = Running {
        enqueuer: None,
        workers: Vec::new(),
        sim: None,
        services: Vec::new(),
        redis: None,
        cleanup: None,
    };
    let outcome = run_inner(&opts, &logs, &mut running).await;
    running.stop_all().await;
    for sub in ["postgres", "nats"] {
        let _ = std::fs::remove_dir_all(opts.dir.join(sub));
    }
    let report = outcome?;
    if let Some(path) = &opts.report {
        let json = serde_json::to_vec_pretty(&report).map_err(|e| SoakError::Report {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, json).map_err(|e| SoakError::Report {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(report)
}

fn say(msg: impl AsRef<str>) {
    println!("[{}] {}", Utc::now().format("%H:%M:%S"), msg.as_ref());
}

async fn run_inner(
    opts: &SoakOptions,
    logs: &Path,
    running: &mut Running,
) -> Result<SoakReport, SoakError> {
    if opts.devices == 0 || opts.workers == 0 || opts.concurrency == 0 {
        return Err(SoakError::Setup(
            "--devices, --workers and the concurrency must be at least 1".into(),
        ));
    }
    let run_id = std::process::id();
    let names = crate::demo::Names::for_run("soak", run_id);

    // 1. Services: PostgreSQL and NATS as found (or private; private when the soak is to
    // restart them: it restarts only servers it owns), Redis always private.
    let pg = services::postgres(
        &opts.database_url,
        opts.database_url_strict,
        opts.private || opts.postgres_restart_at.is_some(),
        &opts.dir,
    )
    .await?;
    let nats = services::nats(
        &opts.nats_url,
        opts.private || opts.nats_restart_at.is_some(),
        &opts.dir,
    )
    .await?;
    let redis_port = services::free_port().map_err(|e| setup("Redis port")(e.to_string()))?;
    let redis_dir = opts.dir.join("redis");
    std::fs::create_dir_all(&redis_dir).map_err(|e| setup("Redis directory")(e.to_string()))?;
    let redis = services::redis_at("redis://127.0.0.1/0", redis_port, &redis_dir).await?;
    let (pg_url, nats_url, redis_url) = (pg.url.clone(), nats.url.clone(), redis.url.clone());
    for s in [&pg, &nats, &redis] {
        say(format!(
            "{:<10} {} ({})",
            s.name,
            redact_url(&s.url),
            if s.private() { "private" } else { "shared" }
        ));
    }
    running.cleanup = Some((pg_url.clone(), nats_url.clone(), names.clone()));
    running.services.extend([pg, nats]);
    running.redis = Some(redis);

    // 2. A database of its own.
    let (db_url, store) = crate::demo::fresh_database(&pg_url, &names.database)
        .await
        .map_err(SoakError::Setup)?;

    // 3. The simulator as its own process, with a session log.
    let SimFiles {
        devices,
        session_log,
        stats,
    } = start_simulator(opts, logs, running).await?;
    let healthy: Vec<Uuid> = devices
        .iter()
        .enumerate()
        .filter(|(i, _)| healthy_every_interval(opts.faults.fault_for(*i)))
        .map(|(_, d)| d.id)
        .collect();
    say(format!(
        "simulator  {} devices from {} ({} healthy)",
        devices.len(),
        opts.listen_base,
        healthy.len()
    ));

    // 4. Our own reader of the stream (it creates the stream the workers will find).
    let publisher_cfg = PublisherConfig {
        nats_url: nats_url.clone(),
        subject_prefix: names.subject_prefix.clone(),
        stream_name: names.stream.clone(),
        object_bucket: names.bucket.clone(),
        stream_max_bytes: 16 * 1024 * 1024 * 1024,
        ..PublisherConfig::default()
    };
    let publisher = Publisher::connect(publisher_cfg)
        .await
        .map_err(|e| setup("NATS")(e.to_string()))?;
    let (reader_stop, reader_stop_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(read_stream(
        publisher.jetstream().clone(),
        names.stream.clone(),
        names.subject_prefix.clone(),
        reader_stop_rx,
    ));

    // 5. Import: first due spread over one interval.
    let key_b64 = CredentialKey::generate_base64();
    let key = CredentialKey::from_base64(&key_b64).map_err(|e| setup("key")(e.to_string()))?;
    let start = Utc::now();
    let spread = opts.interval.as_millis().max(2_000) as i64;
    let mut rng = rand::thread_rng();
    store
        .upsert_devices(&key, &devices, || {
            start + chrono::Duration::milliseconds(rng.gen_range(1_000..spread))
        })
        .await
        .map_err(|e| setup("import")(e.to_string()))?;
    Access::new(store.clone())
        .create_token("soak", Role::Viewer, None)
        .await
        .map_err(|e| setup("token")(e.to_string()))?;

    // 6. Enqueuer and workers.
    let mut fleet = Spawner {
        env: fleet_env(opts, &names, &db_url, &redis_url, &nats_url, &key_b64),
        logs,
        next_worker: 1,
    };
    let enq = spawn_self(&["enqueuer"], &fleet.env, &logs.join("enqueuer.log"))
        .map_err(|e| setup("enqueuer")(e.to_string()))?;
    running.enqueuer = Some(Proc::new("enqueuer".into(), enq)?);
    for _ in 0..opts.workers {
        running.workers.push(fleet.worker()?);
    }
    say(format!(
        "fleet      1 enqueuer, {} workers × {} concurrent; lease {} s, heartbeat {} s, refresh {} s; logs in {}",
        opts.workers,
        opts.concurrency,
        opts.lease().as_secs(),
        opts.heartbeat().as_secs(),
        opts.refresh().as_secs(),
        logs.display()
    ));

    // 7. The abuse phase: sample, kill, restart NATS, Redis and PostgreSQL; then a
    // quiescent interval.
    let Abuse {
        samples,
        kills,
        redis_restarts: restarts,
        redis_restart_t: restart_t,
        keys_after_restart,
        mut service_restarts,
        unexpected,
        abuse_ended_at,
        total,
    } = abuse(
        opts,
        running,
        &mut fleet,
        &RedisAt {
            url: &redis_url,
            port: redis_port,
            dir: &redis_dir,
        },
        &store,
    )
    .await?;

    // 8. Stop the fleet (SIGTERM: running backups finish), let the reader catch up,
    // stop the simulator (its session log is complete then).
    running.stop_fleet().await;
    running.workers.clear();
    running.enqueuer = None;
    let _ = reader_stop.send(true);
    let (messages, lost) = reader
        .await
        .map_err(|e| setup("stream reader")(e.to_string()))?;
    if let Some(s) = running.sim.as_mut() {
        stop_child(&mut s.child, Duration::from_secs(15)).await;
    }
    running.sim = None;
    let sessions = rosbackup_sim::read_session_log(&session_log)
        .map_err(|e| setup("session log")(e.to_string()))?;
    let parallel: Vec<Uuid> = std::fs::read(&stats)
        .ok()
        .and_then(|b| serde_json::from_slice::<BTreeMap<Uuid, rosbackup_sim::DeviceStats>>(&b).ok())
        .map(|m| {
            m.into_iter()
                .filter(|(_, s)| s.max_concurrent > 1)
                .map(|(id, _)| id)
                .collect()
        })
        .unwrap_or_default();
    let runs: Vec<RunRecord> = sqlx::query_as(
        "SELECT device_id, job_id, trigger, worker, status, error_kind, sha256, started_at, finished_at \
         FROM backup_runs ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .map_err(|e| setup("run history")(e.to_string()))?;
    let trimmed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT device_id FROM backup_runs GROUP BY device_id HAVING count(*) >= 100) x",
    )
    .fetch_one(store.pool())
    .await
    .unwrap_or(0);
    store.pool().close().await;

    // 9. The audit.
    let input = AuditInput {
        healthy: healthy.clone(),
        runs,
        messages,
        sessions,
        parallel_sessions: parallel,
        start: Some(start),
        end: Some(abuse_ended_at),
        interval: opts.interval,
        kills: kills.len() as u64,
        concurrency: opts.concurrency as u64,
        service_restarts: service_restarts.len() as u64,
        workers: opts.workers as u64,
        messages_lost: lost,
    };
    let (mut checks, figures) = audit(&input);
    let first_success_after_restart_seconds = restarts.first().and_then(|r| {
        input
            .runs
            .iter()
            .filter(|x| x.status == "success" && x.started_at >= *r)
            .map(|x| x.finished_at)
            .min()
            .map(|t| (t - *r).num_milliseconds() as f64 / 1000.0)
    });
    for r in service_restarts.iter_mut() {
        r.first_success_after_seconds = input
            .runs
            .iter()
            .filter(|x| x.status == "success" && x.started_at >= r.at)
            .map(|x| x.finished_at)
            .min()
            .map(|t| (t - r.at).num_milliseconds() as f64 / 1000.0);
    }
    for (_, which) in opts.service_restarts() {
        let name = which.name();
        let done: Vec<&ServiceRestart> = service_restarts
            .iter()
            .filter(|r| r.service == name)
            .collect();
        checks.push(check(
            &format!("{}_restarted", name.to_lowercase()),
            done.len() == 1 && done.iter().all(|r| r.first_success_after_seconds.is_some()),
            format!(
                "{} restarts; down {:?} s; first success after: {:?} s",
                done.len(),
                done.iter().map(|r| r.down_seconds).collect::<Vec<_>>(),
                done.iter()
                    .map(|r| r.first_success_after_seconds)
                    .collect::<Vec<_>>()
            ),
        ));
    }
    checks.push(check(
        "run_history_complete",
        trimmed == 0,
        format!("{trimmed} devices reached the 100-runs-per-device history cap (runs may be trimmed: use a shorter soak or a longer interval)"),
    ));
    let series = all_series(&samples, total, restart_t);
    for s in &series {
        checks.push(check(
            &format!("flat: {}", s.name),
            s.flat,
            format!(
                "last third avg {:.0} ≤ allowed {:.0} (reference avg {:.0} × {} + abs); {} samples, slope {:.1}/min",
                s.last_third_avg,
                s.allowed,
                s.reference_avg,
                1.0 + FLAT_REL,
                s.samples,
                s.slope_per_min
            ),
        ));
    }
    checks.push(check(
        "processes_stayed_up",
        unexpected.is_empty(),
        if unexpected.is_empty() {
            "no process exited unless the soak killed it".into()
        } else {
            unexpected.join("; ")
        },
    ));
    if opts.redis_restart_at.is_some() {
        checks.push(check(
            "redis_restarted_empty",
            restarts.len() == 1 && keys_after_restart.is_some_and(|k| k < 10),
            format!(
                "{} restarts; DBSIZE right after: {:?}",
                restarts.len(),
                keys_after_restart
            ),
        ));
    }
    let ok = checks.iter().all(|c| c.ok);
    Ok(SoakReport {
        devices: opts.devices,
        healthy_devices: healthy.len(),
        faults: opts.faults.to_string(),
        interval_seconds: opts.interval.as_secs(),
        duration_seconds: opts.duration.as_secs(),
        workers: opts.workers,
        concurrency: opts.concurrency,
        lease_seconds: opts.lease().as_secs(),
        started_at: start,
        abuse_ended_at,
        finished_at: Utc::now(),
        kills,
        redis_restarts: restarts,
        redis_keys_after_restart: keys_after_restart,
        first_success_after_restart_seconds,
        service_restarts,
        unexpected_exits: unexpected,
        figures,
        series,
        checks,
        ok,
        logs: logs.display().to_string(),
    })
}

/// The simulator's devices and the files it writes.
struct SimFiles {
    devices: Vec<rosbackup_core::store::NewDevice>,
    /// One line per completed export.
    session_log: PathBuf,
    /// Per-device counters, written when it stops.
    stats: PathBuf,
}

/// Start the simulator as a `rosbackup sim` process and wait for its inventory (with the
/// `keys`/`key-only` devices' key files read in).
async fn start_simulator(
    opts: &SoakOptions,
    logs: &Path,
    running: &mut Running,
) -> Result<SimFiles, SoakError> {
    let inventory = opts.dir.join("inventory.csv");
    let session_log = opts.dir.join("sessions.jsonl");
    let stats = opts.dir.join("sim-stats.json");
    let _ = std::fs::remove_file(&inventory);
    let _ = std::fs::remove_file(&session_log);
    let sim_env: Vec<(String, String)> = [("LOG_LEVEL", "warn"), ("LOG_FORMAT", "text")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .collect();
    let sim_child = spawn_self(
        &[
            "sim",
            "--devices",
            &opts.devices.to_string(),
            "--listen-base",
            &opts.listen_base.to_string(),
            "--port",
            "0",
            "--faults",
            &opts.faults.to_string(),
            "--seed",
            "7",
            "--inventory",
            &inventory.display().to_string(),
            "--session-log",
            &session_log.display().to_string(),
            "--stats",
            &stats.display().to_string(),
        ],
        &sim_env,
        &logs.join("simulator.log"),
    )
    .map_err(|e| setup("simulator")(e.to_string()))?;
    running.sim = Some(Proc::new("simulator".into(), sim_child)?);
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(bytes) = std::fs::read(&inventory) {
            let rows = rosbackup_core::inventory::parse_inventory_rows(&bytes)
                .map_err(|e| setup("the simulator's inventory")(e.to_string()))?;
            // The `keys`/`key-only` devices' key files, beside the inventory.
            let base = inventory.parent().unwrap_or(std::path::Path::new("."));
            let mut devices = Vec::with_capacity(rows.len());
            for r in rows {
                let mut d = r.device;
                if let Some(f) = &r.ssh_key_file {
                    let text = std::fs::read_to_string(base.join(f))
                        .map_err(|e| setup("a simulator key file")(e.to_string()))?;
                    d.ssh_key = Some(
                        rosbackup_core::userkey::UserKey::import(&text, None)
                            .map_err(|e| setup("a simulator key file")(e.to_string()))?,
                    );
                }
                devices.push(d);
            }
            return Ok(SimFiles {
                devices,
                session_log,
                stats,
            });
        }
        if let Some(s) = running.sim.as_mut()
            && let Ok(Some(status)) = s.child.try_wait()
        {
            return Err(SoakError::Setup(format!(
                "the simulator exited ({status}); see {}",
                logs.join("simulator.log").display()
            )));
        }
        if Instant::now() > until {
            return Err(SoakError::Setup(
                "the simulator wrote no inventory within 300 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts workers with the fleet's environment, each with a name of its own.
struct Spawner<'a> {
    env: Vec<(String, String)>,
    logs: &'a Path,
    next_worker: usize,
}

impl Spawner<'_> {
    fn worker(&mut self) -> Result<Proc, SoakError> {
        let name = format!("soak-worker-{}", self.next_worker);
        self.next_worker += 1;
        let mut e = self.env.clone();
        e.push(("ROSBACKUP_WORKER_NAME".into(), name.clone()));
        let child = spawn_self(&["worker"], &e, &self.logs.join(format!("{name}.log")))
            .map_err(|e| setup("worker")(e.to_string()))?;
        Proc::new(name, child)
    }
}

/// The environment of the soak's enqueuer and workers.
fn fleet_env(
    opts: &SoakOptions,
    names: &crate::demo::Names,
    db_url: &str,
    redis_url: &str,
    nats_url: &str,
    key_b64: &str,
) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", db_url.to_string()),
        ("REDIS_URL", redis_url.to_string()),
        ("NATS_URL", nats_url.to_string()),
        ("CREDENTIAL_ENCRYPTION_KEY", key_b64.to_string()),
        ("ROSBACKUP_QUEUE", names.queue.clone()),
        ("ROSBACKUP_SUBJECT_PREFIX", names.subject_prefix.clone()),
        ("ROSBACKUP_TRIGGER_SUBJECT", names.trigger_subject.clone()),
        ("ROSBACKUP_NATS_STREAM", names.stream.clone()),
        ("ROSBACKUP_NATS_OBJECT_BUCKET", names.bucket.clone()),
        (
            "CONFIG_BACKUP_INTERVAL",
            opts.interval.as_secs().to_string(),
        ),
        ("CONFIG_BACKUP_COMMAND_TIMEOUT", "60".into()),
        ("CONFIG_BACKUP_CONNECT_TIMEOUT", "15".into()),
        ("CONFIG_BACKUP_MAX_CONCURRENT", opts.concurrency.to_string()),
        (
            "ROSBACKUP_LEASE_SECONDS",
            opts.lease().as_secs().to_string(),
        ),
        (
            "ROSBACKUP_QUEUE_HEARTBEAT",
            opts.heartbeat().as_secs().to_string(),
        ),
        (
            "DEVICE_REFRESH_SECONDS",
            opts.refresh().as_secs().to_string(),
        ),
        // The shortest retention the enqueuer takes: finished jobs leave Redis after a
        // minute, so the key count reaches its plateau early in the run.
        ("ROSBACKUP_JOB_RETENTION", "60".into()),
        ("ROSBACKUP_METRICS_ADDR", "127.0.0.1:0".into()),
        ("ROSBACKUP_HTTP_ADDR", "127.0.0.1:0".into()),
        ("LOG_FORMAT", "text".into()),
        ("LOG_LEVEL", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
    .collect()
}

fn check_exits(running: &mut Running, unexpected: &mut Vec<String>) {
    let procs = running
        .workers
        .iter_mut()
        .chain(running.enqueuer.as_mut())
        .chain(running.sim.as_mut());
    for p in procs {
        if let Ok(Some(status)) = p.child.try_wait() {
            let what = format!("{} (pid {}) exited: {status}", p.name, p.pid);
            if !unexpected.contains(&what) {
                say(format!("UNEXPECTED {what}"));
                unexpected.push(what);
            }
        }
    }
}

async fn redis_keys(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut con = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("DBSIZE").query_async::<u64>(&mut con),
    )
    .await
    .ok()?
    .ok()
}

async fn sample(running: &Running, redis_url: &str, t0: Instant) -> Sample {
    Sample {
        t: t0.elapsed().as_secs_f64(),
        enqueuer: running.enqueuer.as_ref().and_then(|p| proc_sample(p.pid)),
        simulator: running.sim.as_ref().and_then(|p| proc_sample(p.pid)),
        workers: running
            .workers
            .iter()
            .filter_map(|w| proc_sample(w.pid).map(|s| (w.name.clone(), s)))
            .collect(),
        redis_keys: redis_keys(redis_url).await,
    }
}

/// Parse `60-180` (seconds; one number: a fixed pause).
pub fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let parse = |x: &str| -> Result<Duration, String> { parse_duration(x.trim()) };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let d = parse(s)?;
            (d, d)
        }
    };
    if lo.is_zero() || hi < lo {
        return Err(format!(
            "{s:?}: expected MIN-MAX with 0 < MIN ≤ MAX, e.g. 60-180"
        ));
    }
    Ok((lo, hi))
}

/// Parse `90`, `90s`, `30m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix('h') {
        (n, 3600)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1)
    } else {
        (s, 1)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90, 90s, 30m, 2h)"))?;
    Ok(Duration::from_secs(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_durations_parse() {
        assert_eq!(
            parse_range("60-180"),
            Ok((Duration::from_secs(60), Duration::from_secs(180)))
        );
        assert_eq!(
            parse_range("30"),
            Ok((Duration::from_secs(30), Duration::from_secs(30)))
        );
        assert!(parse_range("180-60").is_err());
        assert!(parse_range("0-5").is_err());
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }
}
