//! `rosbackup-bench enqueuer`: how the scheduler scales with the size of the inventory.
//!
//! Each `--devices N` gets its own PostgreSQL database (`rbbench_<random>`, migrated, filled
//! with `COPY`: the insert is set-up, not the thing measured) and its own Redis queue name
//! (`rbbench:<random>`), and three measurements:
//!
//! 1. **steady** — the real `rosbackup-enqueuer` process with the default cap (2,000),
//!    N devices spread evenly over the backup interval (6 h, the default): the state of a
//!    fleet after its first interval. The devices that come due during the window are
//!    marked offline (the seed's `device:{id}:status` key), so one real `rosbackup-worker`
//!    completes their jobs through its skip path and the enqueuer keeps claiming as it
//!    would in production (N / 21,600 devices per second). Measured: the enqueuer's CPU
//!    over a window of one `DEVICE_REFRESH_SECONDS` period (so one reconciliation is
//!    included), divided by its ticks (one per second: `EnqueuerSettings::tick`), and its
//!    peak RSS.
//! 2. **schedule-all** — every device due now and the cap lifted to N, so the enqueuer
//!    must give every device exactly one outstanding job in Redis: the time that takes,
//!    jobs per second, CPU per job, peak RSS, and Redis memory per queued job. The
//!    `rosbackup-enqueuer` binary refuses a cap ≥ 8,000 (apalis-redis 1.0 fails every
//!    fetch at 8,000 due jobs; nothing fetches here), so this runs the library's
//!    `Enqueuer::run` — the same loop — in a child process of this binary, so its RSS and
//!    CPU are its own. Completion is read from outside: the scheduled set's size
//!    (`ZCARD`), then one check that claims, payloads and scheduled entries all number N.
//!    Redis memory is the `used_memory` delta (the Redis is shared: other users' writes
//!    land in it too, so it is cross-checked with `MEMORY USAGE` of this queue's own keys).
//! 3. **drain** (`--drain M`, once) — M devices all overdue, default cap, the real
//!    enqueuer and `--workers` real worker processes: the time until every device has a
//!    recorded attempt. Two targets (`--drain-mode`):
//!    - `skip`: every device is marked offline, so each job goes through the queue, the
//!      claim, the device lookup and the outcome transaction without SSH. This is the
//!      scheduling machinery's own ceiling (queue + PostgreSQL bookkeeping), labelled so.
//!    - `sim`: workers really export over SSH from the simulator (in this process):
//!      `--sim-devices` listeners on one loopback address, every inventory row pointing
//!      at one of them round-robin. A few hundred listeners stand in for M routers
//!      because the expensive part per backup (handshake, export, normalize, publish,
//!      bookkeeping) is per connection, not per listener, and M listening sockets on a
//!      shared 2-core machine would measure the kernel, not us. Each row is its own device
//!      to the fleet (own id, lease, host-key pin, run history).
//!
//! Everything created is removed at the end (database, queue keys, status keys, NATS
//! stream and bucket), also when a case fails.

use crate::procstat;
use crate::record::{Record, Sink};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use rosbackup::credentials::CredentialKey;
use rosbackup::queue::QueueConfig;
use rosbackup::secret::Secret;
use rosbackup::store::Store;
use rosbackup_harness::demo::with_database;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Flags of `rosbackup-bench enqueuer`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnqueuerArgs {
    /// Inventory sizes to measure (repeat the flag or separate with commas).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    pub devices: Vec<usize>,
    /// Size of the backlog to drain (0 = skip the drain case).
    #[arg(long, default_value_t = 100_000)]
    pub drain: usize,
    /// What the drain's workers back up: `skip` (offline rule, no SSH), `sim` (real
    /// exports from the simulator) or `both`.
    #[arg(long, default_value = "both")]
    pub drain_mode: String,
    /// Backlog for the `sim` drain when it should differ from --drain.
    #[arg(long)]
    pub drain_sim: Option<usize>,
    /// Worker processes for the drain.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// CONFIG_BACKUP_MAX_CONCURRENT of each drain worker. A worker's PostgreSQL pool is
    /// this + 4 connections (at most 64): keep workers × (this + 4) well under the
    /// server's max_connections (100 by default), which other users share.
    #[arg(long, default_value_t = 20)]
    pub worker_concurrency: usize,
    /// Simulated devices (listeners) behind the `sim` drain's inventory.
    #[arg(long, default_value_t = 200)]
    pub sim_devices: usize,
    /// Loopback address of the simulator's listeners (ephemeral ports).
    #[arg(long, default_value = "127.0.3.1")]
    pub sim_address: std::net::Ipv4Addr,
    /// Steady-state window, seconds (also the enqueuer's DEVICE_REFRESH_SECONDS, so the
    /// window holds one reconciliation).
    #[arg(long, default_value_t = 60)]
    pub steady_seconds: u64,
    /// Give up a case after this many seconds (what was reached is still recorded).
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Cases to run: any of steady, schedule-all, drain.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "steady,schedule-all,drain"
    )]
    pub cases: Vec<String>,
    /// Directory of the release binaries (rosbackup-enqueuer, rosbackup-worker).
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Server URL whose database name is replaced by each case's own database.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Diagnose schedule-all: the child runs `Enqueuer::tick`'s three steps (count
    /// outstanding claims, claim, push) in its own loop and times each, instead of
    /// `Enqueuer::run`; the case is recorded as "schedule-all … (profiled)".
    #[arg(long)]
    pub profile: bool,
    /// Child mode: run the library enqueuer with this cap until SIGTERM (used by the
    /// schedule-all case; reads DATABASE_URL, REDIS_URL, ROSBACKUP_QUEUE).
    #[arg(long, hide = true)]
    pub child_cap: Option<i64>,
}

const INTERVAL_S: i64 = 21_600; // CONFIG_BACKUP_INTERVAL's default
const SUITE: &str = "enqueuer";

pub async fn run(args: EnqueuerArgs, runs: u32, sink: &Sink) -> anyhow::Result<()> {
    if let Some(cap) = args.child_cap {
        return child(cap).await;
    }
    for bin in ["rosbackup-enqueuer", "rosbackup-worker"] {
        let p = args.bin_dir.join(bin);
        if !p.is_file() {
            bail!(
                "{} not found: build it first (cargo build --release -p {bin})",
                p.display()
            );
        }
    }
    let logs = std::env::temp_dir().join(format!("rbbench-enqueuer-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    eprintln!("enqueuer bench: process logs in {}", logs.display());
    let want = |c: &str| args.cases.iter().any(|x| x == c);
    // Cases that failed or timed out (what they reached is recorded); the others still run.
    let mut failed = Vec::new();
    for &n in &args.devices {
        for run in 1..=runs {
            if want("steady") {
                let mut ctx = Ctx::new(&args, &logs).await?;
                let r = steady(&mut ctx, n, run, sink).await;
                ctx.cleanup().await;
                report_err(&mut failed, "steady", n, r);
            }
            if want("schedule-all") {
                let mut ctx = Ctx::new(&args, &logs).await?;
                let r = schedule_all(&mut ctx, n, run, sink).await;
                ctx.cleanup().await;
                report_err(&mut failed, "schedule-all", n, r);
            }
        }
    }
    if want("drain") && args.drain > 0 {
        let modes: Vec<&str> = match args.drain_mode.as_str() {
            "both" => vec!["skip", "sim"],
            "skip" => vec!["skip"],
            "sim" => vec!["sim"],
            other => bail!("--drain-mode must be skip, sim or both, not {other:?}"),
        };
        for mode in modes {
            let m = if mode == "sim" {
                args.drain_sim.unwrap_or(args.drain)
            } else {
                args.drain
            };
            // A drain of 100,000 takes minutes: once, whatever --runs says.
            let mut ctx = Ctx::new(&args, &logs).await?;
            let r = drain(&mut ctx, m, mode, sink).await;
            ctx.cleanup().await;
            report_err(&mut failed, &format!("drain-{mode}"), m, r);
        }
    }
    if !failed.is_empty() {
        bail!("{} case(s) incomplete: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

fn report_err(failed: &mut Vec<String>, case: &str, n: usize, r: anyhow::Result<()>) {
    if let Err(e) = r {
        eprintln!("enqueuer bench: {case} with {n} devices failed: {e:#}");
        failed.push(format!("{case} {n}"));
    }
}

// ---- the isolated world of one case ------------------------------------------------------

struct Ctx {
    args: EnqueuerArgs,
    logs: PathBuf,
    tag: String,
    db_name: String,
    db_url: String,
    store: Store,
    queue: QueueConfig,
    redis: redis::aio::MultiplexedConnection,
    key_b64: String,
    key: CredentialKey,
    children: Vec<(String, Child)>,
    status_keys: Vec<String>,
    nats_stream: Option<String>,
}

impl Ctx {
    async fn new(args: &EnqueuerArgs, logs: &Path) -> anyhow::Result<Ctx> {
        let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
        let db_name = format!("rbbench_{tag}");
        let admin = with_database(&args.database_url, "postgres");
        {
            use sqlx::Connection;
            let mut c = sqlx::postgres::PgConnection::connect(&admin)
                .await
                .context("connect to PostgreSQL")?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{db_name}\""
            )))
            .execute(&mut c)
            .await?;
            let _ = c.close().await;
        }
        let db_url = with_database(&args.database_url, &db_name);
        let store = Store::connect(&db_url, 4).await?;
        store.migrate().await?;
        let queue = QueueConfig {
            redis_url: args.redis_url.clone(),
            name: format!("rbbench:{tag}"),
            ..QueueConfig::default()
        };
        // Long timeout: clean-up deletes a million keys from a shared, busy Redis.
        let redis = redis::Client::open(args.redis_url.as_str())?
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(60))),
            )
            .await
            .context("connect to Redis")?;
        let key_b64 = CredentialKey::generate_base64();
        let key = CredentialKey::from_base64(&key_b64)?;
        Ok(Ctx {
            args: args.clone(),
            logs: logs.to_path_buf(),
            tag,
            db_name,
            db_url,
            store,
            queue,
            redis,
            key_b64,
            key,
            children: Vec::new(),
            status_keys: Vec::new(),
            nats_stream: None,
        })
    }

    /// Environment shared by the enqueuer and the workers of this case.
    fn env(&self) -> Vec<(String, String)> {
        let t = &self.tag;
        [
            ("DATABASE_URL", self.db_url.clone()),
            ("REDIS_URL", self.args.redis_url.clone()),
            ("NATS_URL", self.args.nats_url.clone()),
            ("ROSBACKUP_QUEUE", self.queue.name.clone()),
            ("CREDENTIAL_ENCRYPTION_KEY", self.key_b64.clone()),
            ("ROSBACKUP_SUBJECT_PREFIX", format!("rbbench.{t}.snapshot")),
            ("ROSBACKUP_NATS_STREAM", format!("RBBENCH_{t}")),
            ("ROSBACKUP_NATS_OBJECT_BUCKET", format!("RBBENCH_{t}_TEXTS")),
            // A drain of 100,000 exports must not fill the shared NATS.
            (
                "ROSBACKUP_NATS_STREAM_MAX_BYTES",
                (256u64 << 20).to_string(),
            ),
            ("ROSBACKUP_TRIGGER_SUBJECT", format!("rbbench.{t}.trigger")),
            ("ROSBACKUP_HTTP_ADDR", "127.0.0.1:0".into()),
            ("ROSBACKUP_METRICS_ADDR", "127.0.0.1:0".into()),
            ("LOG_LEVEL", "warn".into()),
            ("LOG_FORMAT", "text".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        let log = std::fs::File::create(self.logs.join(format!("{}-{name}.log", self.tag)))?;
        let mut cmd = Command::new(program);
        crate::procstat::die_with_parent(&mut cmd);
        cmd.args(args)
            .envs(self.env())
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.clone())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let pid = child.id();
        self.children.push((name.to_string(), child));
        Ok(pid)
    }

    fn spawn_enqueuer(&mut self, extra: &[(&str, String)]) -> anyhow::Result<u32> {
        let bin = self.args.bin_dir.join("rosbackup-enqueuer");
        self.spawn("enqueuer", &bin, &["--insecure-no-auth"], extra)
    }

    fn spawn_worker(&mut self, i: usize, concurrency: usize) -> anyhow::Result<u32> {
        let bin = self.args.bin_dir.join("rosbackup-worker");
        let name = format!("rbbench-{}-w{i}", self.tag);
        self.spawn(
            &format!("worker{i}"),
            &bin,
            &[],
            &[
                ("ROSBACKUP_WORKER_NAME", name),
                ("CONFIG_BACKUP_MAX_CONCURRENT", concurrency.to_string()),
            ],
        )
    }

    /// Fails when a child has exited (with its log's tail), so a broken process is not
    /// mistaken for a slow one.
    fn check_children(&mut self) -> anyhow::Result<()> {
        for (name, c) in &mut self.children {
            if let Some(status) = c.try_wait()? {
                let log = self.logs.join(format!("{}-{name}.log", self.tag));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                bail!(
                    "{name} exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// SIGTERM every child, then SIGKILL what is left after 10 s.
    fn stop_children(&mut self) {
        for (_, c) in &self.children {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, c) in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
    }

    async fn cleanup(&mut self) {
        self.stop_children();
        self.store.pool().close().await;
        let admin = with_database(&self.args.database_url, "postgres");
        // The server is shared and may be out of connections for a moment: retry.
        let mut dropped = false;
        for _ in 0..30 {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::postgres::PgConnection::connect(&admin).await {
                dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.db_name
                )))
                .execute(&mut c)
                .await
                .is_ok();
                let _ = c.close().await;
            }
            if dropped {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !dropped {
            eprintln!("enqueuer bench: could not drop database {}", self.db_name);
        }
        if let Err(e) = self.delete_redis_keys().await {
            eprintln!("enqueuer bench: cleaning Redis: {e}");
        }
        if let Some(stream) = self.nats_stream.take()
            && let Ok(client) = async_nats::connect(&self.args.nats_url).await
        {
            let js = async_nats::jetstream::new(client);
            let _ = js.delete_stream(&stream).await;
            let _ = js.delete_object_store(format!("{stream}_TEXTS")).await;
        }
    }

    async fn delete_redis_keys(&mut self) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        for chunk in self.status_keys.chunks(1000) {
            let _: () = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
        }
        self.status_keys.clear();
        let pattern = format!("{}:*", self.queue.name);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    /// `n` devices via COPY. `target(i)` is where device `i` is (host, port, user,
    /// password); `due(i)` its first due time.
    async fn insert(
        &self,
        n: usize,
        target: impl Fn(usize) -> (String, u16, String, String),
        due: impl Fn(usize) -> DateTime<Utc>,
    ) -> anyhow::Result<(Vec<Uuid>, f64)> {
        let start = Instant::now();
        let tenant = Uuid::new_v4();
        let mut ids = Vec::with_capacity(n);
        let mut conn = self.store.pool().acquire().await?;
        let mut copy = conn
            .copy_in_raw(
                "COPY devices (id, tenant_id, name, host, ssh_port, username, password_enc, next_due_at) FROM STDIN",
            )
            .await?;
        let mut buf = String::with_capacity(4 << 20);
        for i in 0..n {
            let id = Uuid::new_v4();
            ids.push(id);
            let (host, port, user, password) = target(i);
            let sealed = self.key.seal(&id, &Secret::new(password));
            let mut hex = String::with_capacity(sealed.len() * 2);
            for b in &sealed {
                hex.push_str(&format!("{b:02x}"));
            }
            buf.push_str(&format!(
                "{id}\t{tenant}\tbench-{i:07}\t{host}\t{port}\t{user}\t\\\\x{hex}\t{}\n",
                due(i).to_rfc3339()
            ));
            if buf.len() > (4 << 20) - 1024 {
                copy.send(buf.as_bytes()).await?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            copy.send(buf.as_bytes()).await?;
        }
        copy.finish().await?;
        sqlx::query("ANALYZE devices").execute(&mut *conn).await?;
        Ok((ids, start.elapsed().as_secs_f64()))
    }

    /// Mark devices offline (the seed's `device:{id}:status` key; workers skip them).
    async fn mark_offline(&mut self, ids: &[Uuid]) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        for chunk in ids.chunks(10_000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                let k = format!("device:{id}:status");
                pipe.set_ex(&k, "offline", 3600).ignore();
                self.status_keys.push(k);
            }
            let _: () = pipe.query_async(&mut conn).await?;
        }
        Ok(())
    }

    async fn used_memory(&self) -> anyhow::Result<u64> {
        let mut conn = self.redis.clone();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory has no used_memory")
    }

    async fn zcard(&self, key: &str) -> anyhow::Result<u64> {
        let mut conn = self.redis.clone();
        Ok(redis::cmd("ZCARD").arg(key).query_async(&mut conn).await?)
    }

    async fn count(&self, sql: &'static str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(self.store.pool()).await?)
    }
}

fn nowhere(_: usize) -> (String, u16, String, String) {
    // Never contacted: steady and schedule-all have no worker that connects (steady's
    // worker only sees offline devices).
    ("127.0.3.250".into(), 22, "admin".into(), "bench".into())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Where one case's numbers go: its name, run and parameters ride along with each.
struct Out<'a> {
    sink: &'a Sink,
    case: &'a str,
    run: u32,
    params: &'a serde_json::Value,
}

impl Out<'_> {
    fn put(&self, metric: &str, unit: &str, value: f64) -> anyhow::Result<()> {
        self.sink.put(&Record {
            suite: SUITE.into(),
            case: self.case.into(),
            metric: metric.into(),
            unit: unit.into(),
            value,
            run: self.run,
            params: self.params.clone(),
        })
    }
}

// ---- the cases ---------------------------------------------------------------------------

async fn steady(ctx: &mut Ctx, n: usize, run: u32, sink: &Sink) -> anyhow::Result<()> {
    let window = ctx.args.steady_seconds.max(5);
    let warmup = 10u64;
    let now = Utc::now();
    // Device i is due at now + i * interval / n: evenly spread over one interval.
    let step = INTERVAL_S as f64 / n as f64;
    let (ids, insert_s) = ctx
        .insert(n, nowhere, |i| {
            now + chrono::Duration::milliseconds((i as f64 * step * 1000.0) as i64)
        })
        .await?;
    let case = format!("steady {n} devices");
    let params = json!({"devices": n, "interval_s": INTERVAL_S, "cap": 2000, "window_s": window, "tick_s": 1});
    let out = Out {
        sink,
        case: &case,
        run,
        params: &params,
    };
    out.put("insert_s", "s", insert_s)?;
    // Everything that comes due before the window ends (plus the 60 s horizon) is
    // offline, so the worker completes those jobs quickly and the enqueuer keeps claiming.
    let last = ((warmup + window + 120) as f64 / step).ceil() as usize;
    ctx.mark_offline(&ids[..last.min(n)]).await?;
    let epid = ctx.spawn_enqueuer(&[("DEVICE_REFRESH_SECONDS", window.to_string())])?;
    ctx.spawn_worker(0, 20)?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(warmup) {
        ctx.check_children()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let before = procstat::sample(epid).context("enqueuer gone")?;
    // The enqueuer uses about a millisecond a second: /proc's 10 ms ticks are too coarse,
    // schedstat counts nanoseconds.
    let precise_before = procstat::cpu_precise(epid);
    let runs_before = ctx.count("SELECT count(*) FROM backup_runs").await?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(window) {
        ctx.check_children()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = procstat::sample(epid).context("enqueuer gone")?;
    let precise_after = procstat::cpu_precise(epid);
    let elapsed = t0.elapsed().as_secs_f64();
    let runs_after = ctx.count("SELECT count(*) FROM backup_runs").await?;
    let cpu = match (precise_before, precise_after) {
        (Some(b), Some(a)) if a >= b => (a - b).as_secs_f64(),
        _ => (after.cpu - before.cpu).as_secs_f64(),
    };
    // One tick per second (tick work is a few ms, so the count is within a few percent).
    let ticks = elapsed / 1.0;
    out.put("cpu_ms_per_tick", "ms", cpu * 1000.0 / ticks)?;
    out.put("cpu_pct", "%", cpu * 100.0 / elapsed)?;
    out.put("peak_rss_mib", "MiB", mib(after.peak_rss))?;
    out.put(
        "jobs_per_s",
        "jobs/s",
        (runs_after - runs_before) as f64 / elapsed,
    )?;
    Ok(())
}

async fn schedule_all(ctx: &mut Ctx, n: usize, run: u32, sink: &Sink) -> anyhow::Result<()> {
    let now = Utc::now();
    // All overdue by up to an hour, distinct times.
    let (_ids, insert_s) = ctx
        .insert(n, nowhere, |i| {
            now - chrono::Duration::milliseconds(((i * 3_600_000) / n.max(1)) as i64 + 1000)
        })
        .await?;
    let case = if ctx.args.profile {
        format!("schedule-all {n} devices (profiled)")
    } else {
        format!("schedule-all {n} devices")
    };
    let batch = rosbackup::enqueuer::EnqueuerSettings {
        cap: n as i64,
        ..Default::default()
    }
    .tick_batch();
    let params = json!({"devices": n, "cap": n, "batch": batch, "process": if ctx.args.profile { "tick's steps timed in a child process" } else { "library Enqueuer::run in a child process" }});
    let out = Out {
        sink,
        case: &case,
        run,
        params: &params,
    };
    out.put("insert_s", "s", insert_s)?;
    let scheduled_key = ctx.queue.apalis().scheduled_jobs_set();
    let mem_before = ctx.used_memory().await?;
    let exe = std::env::current_exe()?;
    let cap = n.to_string();
    let started = Instant::now();
    let profile_file = ctx.logs.join(format!("{}-profile.jsonl", ctx.tag));
    let mut extra = vec![("DEVICE_REFRESH_SECONDS", "60".to_string())];
    if ctx.args.profile {
        extra.push(("RBBENCH_PROFILE", profile_file.display().to_string()));
    }
    let pid = ctx.spawn(
        "lib-enqueuer",
        &exe,
        &["enqueuer", "--child-cap", &cap],
        &extra,
    )?;
    let deadline = Duration::from_secs(ctx.args.timeout);
    let mut peak = 0u64;
    let mut last_print = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < deadline {
        ctx.check_children()?;
        done = ctx.zcard(&scheduled_key).await?;
        if let Some(s) = procstat::sample(pid) {
            peak = peak.max(s.peak_rss);
        }
        if done >= n as u64 {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  schedule-all {n}: {done} jobs after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let s = procstat::sample(pid).context("child enqueuer gone")?;
    peak = peak.max(s.peak_rss);
    if ctx.args.profile {
        // Cumulative step times after each tick: the average over all ticks, and over the
        // last 50 (a step whose cost grows with the jobs outstanding shows up there).
        let text = std::fs::read_to_string(&profile_file)?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(last) = lines.last() {
            let zero = json!({});
            let before = lines.len().checked_sub(51).map_or(&zero, |i| &lines[i]);
            let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
            let ticks = f(last, "ticks").max(1.0);
            let tail = (f(last, "ticks") - f(before, "ticks")).max(1.0);
            for step in ["count", "claim", "push"] {
                let k = format!("{step}_s");
                let all = f(last, &k) * 1000.0 / ticks;
                let end = (f(last, &k) - f(before, &k)) * 1000.0 / tail;
                out.put(&format!("{step}_ms_per_tick"), "ms", all)?;
                out.put(&format!("{step}_ms_per_tick_last50"), "ms", end)?;
            }
        }
    }
    if done < n as u64 {
        out.put("scheduled_fraction", "ratio", done as f64 / n as f64)?;
        out.put("jobs_per_s", "jobs/s", done as f64 / took)?;
        out.put("peak_rss_mib", "MiB", mib(peak))?;
        bail!(
            "only {done} of {n} jobs pushed within {} s",
            ctx.args.timeout
        );
    }
    // Stop the child before measuring memory: nothing moves any more.
    ctx.stop_children();
    let mem_after = ctx.used_memory().await?;
    // Exactly one outstanding job per device: N claims, N payloads, N scheduled entries,
    // and the claims' job ids are the ones in Redis.
    let claims = ctx
        .count("SELECT count(*) FROM devices WHERE outstanding_job IS NOT NULL")
        .await?;
    let c = ctx.queue.apalis();
    let mut conn = ctx.redis.clone();
    let payloads: u64 = redis::cmd("HLEN")
        .arg(c.job_data_hash())
        .query_async(&mut conn)
        .await?;
    let sample: Vec<String> = sqlx::query_scalar(
        "SELECT outstanding_job FROM devices WHERE outstanding_job IS NOT NULL ORDER BY random() LIMIT 200",
    )
    .fetch_all(ctx.store.pool())
    .await?;
    let mut pipe = redis::pipe();
    for id in &sample {
        pipe.zscore(&scheduled_key, id);
    }
    let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await?;
    let missing = scores.iter().filter(|s| s.is_none()).count();
    if claims != n as i64 || payloads != n as u64 || missing > 0 {
        bail!(
            "not one job per device: {claims} claims, {payloads} payloads, {} scheduled, {missing} of 200 sampled claims without a job",
            done
        );
    }
    // Redis memory per job, two ways: the used_memory delta (shared server), and this
    // queue's own keys — the data hash and scheduled set whole, the per-job meta hashes
    // from the 200 sampled jobs.
    let delta = mem_after.saturating_sub(mem_before) as f64 / n as f64;
    let samples = if n <= 200_000 { 0 } else { 5000 };
    let usage = |key: String| {
        let mut conn = ctx.redis.clone();
        async move {
            let v: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(samples)
                .query_async(&mut conn)
                .await?;
            anyhow::Ok(v.unwrap_or(0))
        }
    };
    let data = usage(c.job_data_hash()).await?;
    let zset = usage(scheduled_key.clone()).await?;
    let mut meta_sum = 0u64;
    for id in &sample {
        meta_sum += usage(format!("{}:{id}", c.job_meta_hash())).await?;
    }
    let meta_avg = meta_sum as f64 / sample.len().max(1) as f64;
    let own = (data + zset) as f64 / n as f64 + meta_avg;
    out.put("schedule_all_s", "s", took)?;
    out.put("jobs_per_s", "jobs/s", n as f64 / took)?;
    out.put("peak_rss_mib", "MiB", mib(peak))?;
    out.put("cpu_s", "s", s.cpu.as_secs_f64())?;
    out.put("cpu_us_per_job", "us", s.cpu.as_secs_f64() * 1e6 / n as f64)?;
    out.put("redis_bytes_per_job", "B", delta)?;
    out.put("redis_bytes_per_job_keys", "B", own)?;
    out.put("redis_bytes_per_job_meta", "B", meta_avg)?;
    Ok(())
}

async fn drain(ctx: &mut Ctx, m: usize, mode: &str, sink: &Sink) -> anyhow::Result<()> {
    let now = Utc::now();
    let due =
        |i: usize| now - chrono::Duration::milliseconds(((i * 3_600_000) / m.max(1)) as i64 + 1000);
    let mut sim = None;
    let ids = if mode == "sim" {
        let s = rosbackup::sim::Simulator::start(rosbackup::sim::SimConfig {
            devices: ctx.args.sim_devices.max(1),
            listen_base: ctx.args.sim_address,
            port: 0,
            one_address: true,
            ..rosbackup::sim::SimConfig::default()
        })
        .await
        .context("start the simulator")?;
        let devs: Vec<(String, u16, String, String)> = s
            .devices()
            .iter()
            .map(|d| {
                (
                    d.host.to_string(),
                    d.port,
                    d.username.clone(),
                    d.password.clone(),
                )
            })
            .collect();
        sim = Some(s);
        ctx.nats_stream = Some(format!("RBBENCH_{}", ctx.tag));
        let (ids, _) = ctx.insert(m, |i| devs[i % devs.len()].clone(), due).await?;
        ids
    } else {
        let (ids, _) = ctx.insert(m, nowhere, due).await?;
        ctx.mark_offline(&ids).await?;
        ids
    };
    drop(ids);
    let workers = ctx.args.workers.max(1);
    let conc = ctx.args.worker_concurrency.max(1);
    let case = format!("drain {m} backlog, {mode}, {workers} workers");
    let params = json!({
        "devices": m, "mode": mode, "workers": workers, "concurrency": conc, "cap": 2000,
        "sim_devices": if mode == "sim" { json!(ctx.args.sim_devices) } else { json!(null) },
        "what": if mode == "sim" { "real SSH exports from the simulator" } else { "queue + bookkeeping only (offline skip path, no SSH)" },
    });
    let out = Out {
        sink,
        case: &case,
        run: 1,
        params: &params,
    };
    let started = Instant::now();
    let epid = ctx.spawn_enqueuer(&[])?;
    let mut wpids = Vec::new();
    for i in 0..workers {
        wpids.push(ctx.spawn_worker(i, conc)?);
    }
    let deadline = Duration::from_secs(ctx.args.timeout);
    let mut attempted = 0i64;
    let mut last_print = Instant::now();
    let mut peaks = vec![0u64; workers + 1];
    let mut cpus = vec![Duration::ZERO; workers + 1];
    while started.elapsed() < deadline {
        ctx.check_children()?;
        attempted = ctx
            .count("SELECT count(*) FROM devices WHERE last_attempt_at IS NOT NULL")
            .await?;
        for (i, pid) in std::iter::once(epid)
            .chain(wpids.iter().copied())
            .enumerate()
        {
            if let Some(s) = procstat::sample(pid) {
                peaks[i] = peaks[i].max(s.peak_rss);
                cpus[i] = s.cpu;
            }
        }
        if attempted >= m as i64 {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "  drain {mode}: {attempted}/{m} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let failed = ctx
        .count("SELECT count(*) FROM devices WHERE last_status = 'failed'")
        .await?;
    ctx.stop_children();
    if let Some(s) = sim {
        s.shutdown().await;
    }
    out.put("jobs_per_s", "jobs/s", attempted as f64 / took)?;
    out.put("failed", "jobs", failed as f64)?;
    out.put("enqueuer_peak_rss_mib", "MiB", mib(peaks[0]))?;
    out.put("enqueuer_cpu_s", "s", cpus[0].as_secs_f64())?;
    let wcpu: f64 = cpus[1..].iter().map(Duration::as_secs_f64).sum();
    let wpeak = peaks[1..].iter().copied().max().unwrap_or(0);
    out.put("worker_peak_rss_mib", "MiB", mib(wpeak))?;
    out.put(
        "worker_cpu_ms_per_job",
        "ms",
        wcpu * 1000.0 / attempted.max(1) as f64,
    )?;
    if attempted < m as i64 {
        out.put("drained_fraction", "ratio", attempted as f64 / m as f64)?;
        bail!("drained {attempted} of {m} within {} s", ctx.args.timeout);
    }
    out.put("drain_s", "s", took)?;
    Ok(())
}

// ---- child mode: the library enqueuer with a lifted cap -------------------------------------

async fn child(cap: i64) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let store = Store::connect(&env("DATABASE_URL")?, 4).await?;
    let queue = rosbackup::queue::Queue::connect(QueueConfig {
        redis_url: env("REDIS_URL")?,
        name: env("ROSBACKUP_QUEUE")?,
        ..QueueConfig::default()
    })
    .await?;
    let refresh = env("DEVICE_REFRESH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let enq = rosbackup::enqueuer::Enqueuer {
        store,
        queue,
        settings: rosbackup::enqueuer::EnqueuerSettings {
            cap,
            refresh: Duration::from_secs(refresh),
            ..Default::default()
        },
        metrics: rosbackup::metrics::Metrics::new(),
    };
    if let Ok(path) = std::env::var("RBBENCH_PROFILE") {
        return profiled(&enq, Path::new(&path)).await;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    enq.run(async move {
        term.recv().await;
    })
    .await;
    Ok(())
}

/// `Enqueuer::tick`'s steps, timed (keep in step with src/enqueuer.rs): count the
/// outstanding claims, claim up to the room left, push. Runs until killed; appends the
/// cumulative times after every tick.
async fn profiled(enq: &rosbackup::enqueuer::Enqueuer, path: &Path) -> anyhow::Result<()> {
    use rosbackup::queue::BackupJob;
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let (mut count_s, mut claim_s, mut push_s) = (0.0, 0.0, 0.0);
    let (mut ticks, mut pushed) = (0u64, 0u64);
    loop {
        let t = Instant::now();
        let outstanding = enq.store.count_outstanding().await?;
        count_s += t.elapsed().as_secs_f64();
        let room = (enq.settings.cap - outstanding).min(enq.settings.tick_batch());
        let mut busy = false;
        if room > 0 {
            let horizon = Utc::now() + chrono::Duration::seconds(60);
            let t = Instant::now();
            let claims = enq.store.claim_due(horizon, room).await?;
            claim_s += t.elapsed().as_secs_f64();
            if !claims.is_empty() {
                let jobs: Vec<BackupJob> = claims
                    .iter()
                    .map(|c| {
                        BackupJob::scheduled(c.device_id, c.tenant_id, c.job_id.clone(), c.due_at)
                    })
                    .collect();
                let t = Instant::now();
                enq.queue.push(&jobs).await?;
                push_s += t.elapsed().as_secs_f64();
                pushed += jobs.len() as u64;
                busy = jobs.len() as i64 >= enq.settings.tick_batch();
            }
        }
        ticks += 1;
        writeln!(
            out,
            "{}",
            json!({"ticks": ticks, "pushed": pushed, "count_s": count_s, "claim_s": claim_s, "push_s": push_s})
        )?;
        if !busy {
            tokio::time::sleep(enq.settings.tick).await;
        }
    }
}
