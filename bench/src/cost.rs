//! `rosbackup-bench cost`: worker CPU and wall time per backup, split by phase, against the
//! bare SSH export.
//!
//! **What is measured.** One simulated RouterOS device serving a ~20 KB export
//! (`SimConfig::config_size`) on loopback, backed up again and again, for two algorithm
//! sets: *modern* (the simulator's default: curve25519 kex, Ed25519 host key) and
//! *RouterOS 6* (`SimConfig::routeros_algorithms` on a 6.x device: DH group14 SHA-1, an
//! `ssh-rsa` host key, AES-CTR + HMAC-SHA1; the negotiated names are in the records). Three
//! kinds of backup are interleaved, so machine noise hits all of them alike:
//!
//! * **bare**: `device::export` alone — TCP connect, SSH handshake and password
//!   authentication, `/export`, read to EOF, disconnect — with the same `Target` the worker
//!   builds (pinned host key, known version). The baseline.
//! * **pipeline**: the real [`rosbackup::worker::execute`] on a real scheduled job (claimed
//!   like the enqueuer claims it), with real PostgreSQL (a database of its own), Redis (a
//!   queue name of its own) and NATS JetStream (a stream and subjects of its own): device
//!   row, online check, lease, password decryption, export, normalize + hash, fencing,
//!   publish with ack, outcome transaction. Its CPU is the pipeline CPU of the overhead
//!   ratio `(pipeline − bare) / bare`.
//! * **phases**: the same `worker::execute`, run inside `rosbackup::marks::with_marks`
//!   with a clock read at every boundary the job path marks: export start (device row,
//!   skip rules, online check, lease and password done), the end of the SSH handshake and
//!   authentication, the export complete, normalized and hashed, fenced, published. So the
//!   split comes from the real path, not a replica; its total is printed beside the
//!   pipeline case's as a check. The marks cost one task-local lookup each outside a
//!   benchmark. *Handshake* is connect + kex + auth, *transfer* exec + read + close.
//!   *Bookkeeping* is everything the worker does in PostgreSQL and Redis around the
//!   export: device row, online check (Redis), lease, password, fence, outcome.
//!
//! **How CPU is counted, and why this way.** Everything the worker side does runs on one
//! `current_thread` tokio runtime on the main thread: our code and every task the SSH,
//! PostgreSQL, Redis and NATS clients spawn. CPU is that thread's clock
//! (`CLOCK_THREAD_CPUTIME_ID`, nanoseconds, not tick-sampled) read at phase boundaries.
//! The simulator runs in this process too, but on a runtime of its own whose threads are
//! named `sim-rt`, so its CPU (key exchange on the server side, rendering the export) is
//! never on the clock. A thread clock would miss work a client library hands to another
//! thread (tokio's blocking pool); to show that it does not matter, the CPU of every other
//! thread of the process over the measured loop is read from `/proc/self/task` and
//! reported as `untracked_cpu_ms` (expected ≈ 0). One backup runs at a time, so a phase's
//! CPU is that phase's alone. Wall times are per phase too, but on a shared 2-core machine
//! they include waiting for the simulator (which needs CPU to answer); CPU is the figure
//! to compare.
//!
//! Logging is on, as in a worker (JSON, `info`), written to `/dev/null`.
//!
//! **Records.** Per run and algorithm set, medians over `--backups` backups:
//! `{bare,pipeline}_{cpu,wall}_ms`, `phases_{cpu,wall}_ms` (replica total),
//! `{handshake,transfer,normalize_hash,publish,bookkeeping}_{cpu,wall}_ms`,
//! `bare_{handshake,transfer}_cpu_ms`, `overhead_ratio` (from the medians) and
//! `untracked_cpu_ms` (per backup, averaged). Case: `cost per backup, modern, 20 KB`.

use crate::record::{Record, Sink};
use anyhow::{Context, anyhow, bail};
use rosbackup::config::BackupSettings;
use rosbackup::credentials::CredentialKey;
use rosbackup::device::{self, Phase, Target};
use rosbackup::marks::{self, Mark as JobMark};
use rosbackup::metrics::Metrics;
use rosbackup::queue::{BackupJob, Queue, QueueConfig};
use rosbackup::schedule::ScheduleSettings;
use rosbackup::sim::{SimConfig, Simulator};
use rosbackup::snapshot::{Publisher, PublisherConfig};
use rosbackup::store::{RunStatus, Store};
use rosbackup::worker::JobEnv;
use rosbackup_harness::demo::with_database;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Flags of `rosbackup-bench cost`.
#[derive(Debug, Clone, clap::Args)]
pub struct CostArgs {
    /// Backups per kind (bare, phases, pipeline) per run and algorithm set.
    #[arg(long, default_value_t = 40)]
    pub backups: usize,
    /// Size of the simulated export, bytes.
    #[arg(long, default_value_t = 20_000)]
    pub size: usize,
    /// Only this algorithm set (`modern` or `routeros6`); default both.
    #[arg(long)]
    pub algorithms: Option<String>,
    /// First simulator listen address (one device per set, each on its own address).
    #[arg(long, default_value = "127.62.0.1")]
    pub listen_base: Ipv4Addr,
    /// Only this kind of backup, `--backups` times per run, and no records: for counting
    /// instructions under callgrind, where the difference between two `--backups` sizes is
    /// one kind's cost per backup without the set-up (BENCHMARKS.md §2). Both kinds claim
    /// the device first, as the pipeline case must, so `pipeline − bare` is the overhead.
    #[arg(long, value_enum)]
    pub only: Option<OnlyKind>,
    /// ROSBACKUP_SEED_LOCK for the pipeline (default: on, the product's default): `false`
    /// measures a fleet after the Go poller's cutover, without its Redis lock.
    #[arg(long)]
    pub seed_lock: Option<bool>,
    /// ROSBACKUP_LEASE_BATCH for the pipeline (default: the product's, 16): `1` takes the
    /// lease without the worker's lease gatherer (`worker::leases`).
    #[arg(long)]
    pub lease_batch: Option<u32>,
    /// ROSBACKUP_OUTCOME_BATCH for the pipeline (default: the product's): `1` writes the
    /// outcome without the worker's outcome gatherer (`worker::group`).
    #[arg(long)]
    pub outcome_batch: Option<u32>,
}

/// The kinds `--only` can single out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnlyKind {
    /// `device::export` alone.
    Bare,
    /// The real `worker::execute`.
    Pipeline,
}

// ---- services of our own (shared with the fleet bench) ---------------------------------

/// Where the shared services are: `DATABASE_URL` (a server URL; we create a database of
/// our own there), `REDIS_URL`, `NATS_URL`, with the local defaults.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub database_url: String,
    pub redis_url: String,
    pub nats_url: String,
}

impl ServiceUrls {
    pub fn from_env() -> ServiceUrls {
        let var = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| d.to_string())
        };
        ServiceUrls {
            database_url: var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            redis_url: var("REDIS_URL", "redis://127.0.0.1:6379/0"),
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222"),
        }
    }
}

/// A name unique to this run: lowercase letters, digits and `_` (valid as a database,
/// queue, NATS token, stream and bucket name).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// A database of our own, migrated; [`BenchDb::drop`] removes it.
pub struct BenchDb {
    pub name: String,
    pub url: String,
    pub store: Store,
    admin_url: String,
}

impl BenchDb {
    pub async fn create(admin_url: &str, pool: u32) -> anyhow::Result<BenchDb> {
        let name = unique("rbbench");
        let admin = Store::connect(admin_url, 1)
            .await
            .context("PostgreSQL (DATABASE_URL)")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.pool())
            .await
            .context("creating the bench database")?;
        admin.pool().close().await;
        let url = with_database(admin_url, &name);
        let store = Store::connect(&url, pool).await?;
        store.migrate().await?;
        Ok(BenchDb {
            name,
            url,
            store,
            admin_url: admin_url.to_string(),
        })
    }

    pub async fn drop(self) {
        self.store.pool().close().await;
        if let Ok(admin) = Store::connect(&self.admin_url, 1).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(admin.pool())
            .await;
            admin.pool().close().await;
        }
    }
}

/// NATS names of our own: subjects `<token>.config.snapshot.create.<device>`, stream and
/// object bucket.
pub fn publisher_config(nats_url: &str, token: &str) -> PublisherConfig {
    PublisherConfig {
        nats_url: nats_url.to_string(),
        subject_prefix: format!("{token}.config.snapshot"),
        stream_name: format!("RBBENCH_{token}"),
        object_bucket: format!("RBBENCHTXT_{token}"),
        stream_max_bytes: 1024 * 1024 * 1024,
        ..PublisherConfig::default()
    }
}

/// Delete the stream and bucket of `cfg` (best effort).
pub async fn delete_nats(cfg: &PublisherConfig) {
    if let Ok(client) = async_nats::connect(&cfg.nats_url).await {
        let js = async_nats::jetstream::new(client);
        let _ = js.delete_stream(&cfg.stream_name).await;
        let _ = js.delete_object_store(&cfg.object_bucket).await;
    }
}

/// Raise this process's open-file limit to its hard limit (children inherit it).
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: plain C struct, written by getrlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: valid rlimit value.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur as u64;
        }
    }
    lim.rlim_cur as u64
}

pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

// ---- clocks -----------------------------------------------------------------------------

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    wall: Instant,
    cpu: Duration,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }
}

/// Wall and CPU milliseconds of one span.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    wall_ms: f64,
    cpu_ms: f64,
}

impl Cost {
    fn between(a: Mark, b: Mark) -> Cost {
        Cost {
            wall_ms: (b.wall - a.wall).as_secs_f64() * 1e3,
            cpu_ms: b.cpu.saturating_sub(a.cpu).as_secs_f64() * 1e3,
        }
    }
    fn add(self, o: Cost) -> Cost {
        Cost {
            wall_ms: self.wall_ms + o.wall_ms,
            cpu_ms: self.cpu_ms + o.cpu_ms,
        }
    }
}

/// CPU of every thread of this process except the main thread and the simulator's.
fn untracked_cpu() -> Duration {
    let me = std::process::id();
    let tps = {
        // SAFETY: no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as u64 } else { 100 }
    };
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for e in dir.flatten() {
        let tid = e.file_name().to_string_lossy().to_string();
        if tid == me.to_string() {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with("sim-rt") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += ticks(11) + ticks(12);
    }
    Duration::from_micros(total * 1_000_000 / tps)
}

// ---- one algorithm set ------------------------------------------------------------------

/// The per-backup numbers of one run.
#[derive(Default)]
struct RunSamples {
    bare: Vec<Cost>,
    bare_handshake: Vec<Cost>,
    bare_transfer: Vec<Cost>,
    pipeline: Vec<Cost>,
    phases: HashMap<&'static str, Vec<Cost>>,
    phases_total: Vec<Cost>,
    untracked_ms: f64,
}

const PHASES: [&str; 5] = [
    "handshake",
    "transfer",
    "normalize_hash",
    "publish",
    "bookkeeping",
];

struct Bench {
    env: Arc<JobEnv>,
    device_id: Uuid,
    /// Distinct due slots (Unix seconds) so every job id, hence every `Nats-Msg-Id`, is new.
    next_slot: i64,
}

impl Bench {
    /// Make the device due at a fresh slot and claim it, as the enqueuer would (untimed).
    async fn claim(&mut self) -> anyhow::Result<BackupJob> {
        self.next_slot += 1;
        sqlx::query(
            "UPDATE devices SET next_due_at = to_timestamp($2::float8), outstanding_job = NULL \
             WHERE id = $1",
        )
        .bind(self.device_id)
        .bind(self.next_slot as f64)
        .execute(self.env.store().pool())
        .await?;
        let horizon = chrono::Utc::now() + chrono::Duration::seconds(1);
        let claims = self.env.store().claim_due(horizon, 1).await?;
        let c = claims
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the device could not be claimed"))?;
        Ok(BackupJob::scheduled(
            c.device_id,
            c.tenant_id,
            c.job_id,
            c.due_at,
        ))
    }

    /// The worker's `Target` for the device (pinned key, known version), as
    /// `backup_under_lease` builds it.
    async fn target(&self) -> anyhow::Result<Target> {
        let device = self
            .env
            .store()
            .device(self.device_id)
            .await?
            .ok_or_else(|| anyhow!("device vanished"))?;
        Ok(Target {
            host: device.host.clone(),
            port: u16::try_from(device.ssh_port).unwrap_or(22),
            username: device.username.clone(),
            password: self.env.store().password(&self.env.key, device.id).await?,
            key: None,
            jump: None,
            known_fingerprint: device.ssh_host_key_fingerprint.clone(),
            routeros_version: device.routeros_version.clone(),
        })
    }

    /// The real worker path, timed as a whole.
    async fn pipeline(&mut self) -> anyhow::Result<Cost> {
        let job = self.claim().await?;
        let a = Mark::now();
        let report = rosbackup::worker::execute(&self.env, &job, "bench").await?;
        let b = Mark::now();
        if report.status != RunStatus::Success {
            bail!(
                "pipeline backup ended {:?}: {:?} {:?}",
                report.status,
                report.error_kind,
                report.message
            );
        }
        Ok(Cost::between(a, b))
    }

    /// The bare export.
    async fn bare(&self, target: &Target) -> anyhow::Result<(Cost, Cost, Cost)> {
        let opts = &self.env.backup.export;
        let mut marks: Vec<(Phase, Mark)> = Vec::with_capacity(3);
        let a = Mark::now();
        let export = device::export_with_marks(target, opts, &mut |p| marks.push((p, Mark::now())))
            .await
            .context("bare export")?;
        let b = Mark::now();
        std::hint::black_box(&export.raw);
        drop(export);
        let at = |phase: Phase| {
            marks
                .iter()
                .find(|(p, _)| *p == phase)
                .map(|(_, m)| *m)
                .ok_or_else(|| anyhow!("no {phase:?} mark"))
        };
        let hs = at(Phase::Handshake)?;
        Ok((
            Cost::between(a, b),
            Cost::between(a, hs),
            Cost::between(hs, b),
        ))
    }

    /// The real `worker::execute` with a clock read at every mark it passes
    /// (`rosbackup::marks`): the phases of the very path the pipeline case times.
    async fn phases(&mut self, s: &mut RunSamples) -> anyhow::Result<()> {
        let job = self.claim().await?;
        let seen: Arc<Mutex<Vec<(JobMark, Mark)>>> = Arc::new(Mutex::new(Vec::with_capacity(8)));
        let hook = {
            let seen = seen.clone();
            move |m: JobMark| {
                let now = Mark::now();
                if let Ok(mut v) = seen.lock() {
                    v.push((m, now));
                }
            }
        };
        let t0 = Mark::now();
        let report =
            marks::with_marks(hook, rosbackup::worker::execute(&self.env, &job, "bench")).await?;
        let end = Mark::now();
        if report.status != RunStatus::Success {
            bail!(
                "phases backup ended {:?}: {:?} {:?}",
                report.status,
                report.error_kind,
                report.message
            );
        }
        let seen = seen
            .lock()
            .map_err(|_| anyhow!("marks lock poisoned"))?
            .clone();
        let at = |m: JobMark| {
            seen.iter()
                .find(|(k, _)| *k == m)
                .map(|(_, t)| *t)
                .ok_or_else(|| anyhow!("execute passed no {m:?} mark"))
        };
        let (start, hs, exported, collected, fenced, published) = (
            at(JobMark::ExportStart)?,
            at(JobMark::Export(Phase::Handshake))?,
            at(JobMark::Exported)?,
            at(JobMark::Collected)?,
            at(JobMark::Fenced)?,
            at(JobMark::Published)?,
        );
        let mut costs: HashMap<&'static str, Cost> = HashMap::new();
        let mut add = |k: &'static str, c: Cost| {
            let e = costs.entry(k).or_default();
            *e = e.add(c);
        };
        // Bookkeeping: device row, skip rules, online check, lease, password (before the
        // export); the fence (before publishing); the outcome, metrics and log (after).
        add("bookkeeping", Cost::between(t0, start));
        add("handshake", Cost::between(start, hs));
        add("transfer", Cost::between(hs, exported));
        add("normalize_hash", Cost::between(exported, collected));
        add("bookkeeping", Cost::between(collected, fenced));
        add("publish", Cost::between(fenced, published));
        add("bookkeeping", Cost::between(published, end));

        let mut total = Cost::default();
        for (k, c) in costs {
            total = total.add(c);
            s.phases.entry(k).or_default().push(c);
        }
        s.phases_total.push(total);
        Ok(())
    }
}

struct SetResult {
    negotiated: device::Negotiated,
    runs: Vec<RunSamples>,
}

async fn run_set(
    urls: &ServiceUrls,
    listen: Ipv4Addr,
    legacy: bool,
    args: &CostArgs,
    runs: u32,
    sim_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<SetResult> {
    // The simulator on its own runtime (threads `sim-rt`), off the measured thread.
    let sim_cfg = SimConfig {
        devices: 1,
        listen_base: listen,
        port: 0,
        config_size: Some(args.size),
        routeros_algorithms: legacy,
        // RouterOS 6 offers only DH group14/GEX with SHA-1, `ssh-rsa` and AES-CTR; the
        // `v6` fault makes the device a 6.x one (the simulator picks the set by version).
        faults: if legacy {
            "v6=1".parse()?
        } else {
            Default::default()
        },
        seed: 40 + u64::from(legacy),
        ..SimConfig::default()
    };
    let sim = sim_rt
        .spawn(Simulator::start(sim_cfg))
        .await
        .context("simulator task")?
        .context("starting the simulator")?;
    let result = run_set_on(urls, &sim, args, runs).await;
    sim_rt
        .spawn(sim.shutdown())
        .await
        .context("simulator shutdown")?;
    result
}

async fn run_set_on(
    urls: &ServiceUrls,
    sim: &Simulator,
    args: &CostArgs,
    runs: u32,
) -> anyhow::Result<SetResult> {
    let db = BenchDb::create(&urls.database_url, 4).await?;
    let token = unique("cost");
    let pcfg = publisher_config(&urls.nats_url, &token);
    let result = async {
        let queue = Queue::connect(QueueConfig {
            redis_url: urls.redis_url.clone(),
            name: format!("rbbench:{token}"),
            ..QueueConfig::default()
        })
        .await
        .context("Redis (REDIS_URL)")?;
        let publisher = Publisher::connect(pcfg.clone())
            .await
            .context("NATS (NATS_URL)")?;
        let key_b64 = CredentialKey::generate_base64();
        let key = CredentialKey::from_base64(&key_b64)?;
        let d = sim
            .devices()
            .first()
            .ok_or_else(|| anyhow!("the simulator has no device"))?;
        db.store
            .upsert_devices(&key, &[d.new_device()], chrono::Utc::now)
            .await?;
        let settings = [
            (
                "ROSBACKUP_SEED_LOCK",
                args.seed_lock.map(|on| on.to_string()),
            ),
            (
                "ROSBACKUP_LEASE_BATCH",
                args.lease_batch.map(|n| n.to_string()),
            ),
            (
                "ROSBACKUP_OUTCOME_BATCH",
                args.outcome_batch.map(|n| n.to_string()),
            ),
        ];
        let backup = BackupSettings::from_env(&rosbackup::config::Env::from_pairs(
            settings
                .iter()
                .filter_map(|(k, v)| Some((*k, v.as_deref()?))),
        ))?;
        let mut env = JobEnv::new(
            db.store.clone(),
            queue.clone(),
            key,
            publisher,
            backup,
            Metrics::new(),
        );
        env.schedule = ScheduleSettings {
            interval: Duration::from_secs(3600),
            ..ScheduleSettings::default()
        };
        let env = Arc::new(env);
        let mut bench = Bench {
            env,
            device_id: d.id,
            next_slot: chrono::Utc::now().timestamp() - 10 * 86_400,
        };
        // Warm-up: the first backup pins the key and learns the version; pools fill.
        for _ in 0..3 {
            bench.pipeline().await?;
        }
        let target = bench.target().await?;
        let negotiated = device::export(&target, &bench.env.backup.export)
            .await?
            .negotiated;
        let mut out = Vec::new();
        if let Some(only) = args.only {
            for _ in 0..runs {
                for _ in 0..args.backups {
                    match only {
                        OnlyKind::Bare => {
                            // The claim the pipeline case makes before each backup, so
                            // that `pipeline − bare` is the pipeline's overhead alone.
                            bench.claim().await?;
                            bench.bare(&target).await?;
                        }
                        OnlyKind::Pipeline => {
                            bench.pipeline().await?;
                        }
                    }
                }
            }
        }
        for _ in 0..if args.only.is_some() { 0 } else { runs } {
            let mut s = RunSamples::default();
            let before = untracked_cpu();
            for _ in 0..args.backups {
                let (total, hs, tr) = bench.bare(&target).await?;
                s.bare.push(total);
                s.bare_handshake.push(hs);
                s.bare_transfer.push(tr);
                bench.phases(&mut s).await?;
                s.pipeline.push(bench.pipeline().await?);
            }
            let untracked = untracked_cpu().saturating_sub(before);
            s.untracked_ms = untracked.as_secs_f64() * 1e3 / (3 * args.backups.max(1)) as f64;
            out.push(s);
        }
        queue.purge().await.ok();
        Ok::<_, anyhow::Error>(SetResult {
            negotiated,
            runs: out,
        })
    }
    .await;
    delete_nats(&pcfg).await;
    db.drop().await;
    result
}

fn install_logging() {
    use tracing_subscriber::EnvFilter;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(null))
            .json()
            .with_current_span(true)
            .try_init();
    }
}

/// `rosbackup-bench cost`.
pub fn run(args: &CostArgs, runs: u32, sink: &Sink) -> anyhow::Result<()> {
    let urls = ServiceUrls::from_env();
    let sets: Vec<(&str, bool)> = match args.algorithms.as_deref() {
        None => vec![("modern", false), ("routeros6", true)],
        Some("modern") => vec![("modern", false)],
        Some("routeros6") => vec![("routeros6", true)],
        Some(other) => bail!("--algorithms: expected modern or routeros6, got {other:?}"),
    };
    install_logging();
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; build with --release for numbers worth reporting");
    }
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim-rt")
        .enable_all()
        .build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for (i, (name, legacy)) in sets.into_iter().enumerate() {
        let listen = Ipv4Addr::from(u32::from(args.listen_base) + i as u32);
        let set = rt.block_on(run_set(&urls, listen, legacy, args, runs, &sim_rt))?;
        let case = format!("cost per backup, {name}, {} KB", args.size / 1000);
        let params = serde_json::json!({
            "algorithms": name,
            "kex": set.negotiated.kex,
            "host_key": set.negotiated.host_key,
            "cipher": set.negotiated.cipher,
            "mac": set.negotiated.mac,
            "size_bytes": args.size,
            "backups": args.backups,
            "seed_lock": args.seed_lock,
            "lease_batch": args.lease_batch,
            "outcome_batch": args.outcome_batch,
            "profile": profile(),
        });
        println!(
            "# {case}: kex {}, host key {}, cipher {}",
            set.negotiated.kex, set.negotiated.host_key, set.negotiated.cipher
        );
        for (r, s) in set.runs.iter().enumerate() {
            let put = |metric: &str, unit: &str, value: f64| {
                sink.put(&Record {
                    suite: "cost".into(),
                    case: case.clone(),
                    metric: metric.into(),
                    unit: unit.into(),
                    value,
                    run: r as u32 + 1,
                    params: params.clone(),
                })
            };
            let med = |v: &[Cost]| {
                (
                    median(&v.iter().map(|c| c.cpu_ms).collect::<Vec<_>>()),
                    median(&v.iter().map(|c| c.wall_ms).collect::<Vec<_>>()),
                )
            };
            let (bare_cpu, bare_wall) = med(&s.bare);
            let (pipe_cpu, pipe_wall) = med(&s.pipeline);
            let (ph_cpu, ph_wall) = med(&s.phases_total);
            put("bare_cpu_ms", "ms", bare_cpu)?;
            put("bare_wall_ms", "ms", bare_wall)?;
            put("bare_handshake_cpu_ms", "ms", med(&s.bare_handshake).0)?;
            put("bare_transfer_cpu_ms", "ms", med(&s.bare_transfer).0)?;
            put("pipeline_cpu_ms", "ms", pipe_cpu)?;
            put("pipeline_wall_ms", "ms", pipe_wall)?;
            put("phases_cpu_ms", "ms", ph_cpu)?;
            put("phases_wall_ms", "ms", ph_wall)?;
            for p in PHASES {
                let v = s.phases.get(p).map(Vec::as_slice).unwrap_or(&[]);
                let (c, w) = med(v);
                put(&format!("{p}_cpu_ms"), "ms", c)?;
                put(&format!("{p}_wall_ms"), "ms", w)?;
            }
            put("overhead_ratio", "ratio", (pipe_cpu - bare_cpu) / bare_cpu)?;
            put("untracked_cpu_ms", "ms", s.untracked_ms)?;
        }
    }
    Ok(())
}
