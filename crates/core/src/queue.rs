//! Backup jobs in Redis (apalis-redis 1.0), configured around its measured defects.
//!
//! Why each setting (see `../shared/notes/apalis-redis.md` and ARCHITECTURE.md):
//!
//! - **Response timeout ≥ 5 s** on the connection: redis-rs' default 500 ms turns any slow
//!   Redis reply into a dead worker.
//! - **Heartbeat 5 s × 3 missed**: a `kill -9`'d worker's jobs are re-queued by another
//!   worker after ~15 s, not the default 300 s. Pickup of new jobs is also bounded by it.
//! - **Small `batch_size`** ([`QueueConfig::fetch_batch`], `ROSBACKUP_FETCH_BATCH`): a
//!   worker claims one job at a time at the default 10 slots, so it does not hoard jobs
//!   while another worker idles; a worker with hundreds of slots takes a few per fetch,
//!   because apalis sizes its lock/ack event channel from the batch (see [`Tick`]).
//! - **[`Tick`]**: our own poll strategy, always leaving a registered timer armed. The
//!   stock `IntervalStrategy` can lose its wake-up and stall until the next heartbeat.
//! - **Queue bound**: the enqueuer keeps the number of outstanding jobs far below 8,000,
//!   where `fetch_next.lua`'s `unpack` fails every fetch.
//! - **No reliance on backend retries** (hard-coded 25, linear): the worker records every
//!   outcome in PostgreSQL and returns `Ok`; only infrastructure errors return `Err`,
//!   and only a few times before the job is aborted (the enqueuer then reschedules it).
//! - **Trimming**: apalis never trims its done/dead sets; [`Queue::trim`] does.
//!
//! ## Introspection (dashboard and JSON API)
//!
//! [`Queue::jobs`], [`Queue::job`], [`Queue::workers`] and [`Queue::take_dead`] read and
//! change apalis-redis' keys directly, because its own query API is broken or O(queue)
//! (`list_tasks` reads a key nobody writes, `list_all_tasks` loads the whole data hash,
//! `list_workers` fails to decode) and it has no "remove a dead job" operation. The layout,
//! as written by its Lua scripts (`lua/*.lua` in apalis-redis 1.0.0), with `{q}` the
//! queue name:
//!
//! | key | type | content |
//! |---|---|---|
//! | `{q}:data` | hash | task id → payload (`JsonCodec`: JSON bytes of [`BackupJob`]) |
//! | `{q}:meta:{id}` | hash | `attempts`, `max_attempts`, `status`, `result`, `done_at`, `locked_at`, `locked_by`, `idempotency_key` |
//! | `{q}:scheduled` | zset | id, score = run-at (Unix s); push clamps run-at to "now", so every push lands here |
//! | `{q}:active` | list | ids ready to run (promoted from `scheduled` by `fetch_next.lua`; re-queued orphans) |
//! | `{q}:inflight:{worker}` | set | ids a worker has fetched (running, or about to) |
//! | `{q}:workers` | zset | worker name, score = last heartbeat (Unix s) |
//! | `{q}:done`, `{q}:dead` | sets | finished ids (`{q}:failed` exists in the config but no script writes it) |
//!
//! How a job ends (`handle_results.lua`): `Done` → `done`; `Failed` (any plain `Err`)
//! with attempt < 25 → back into `scheduled` at `done_at + attempt` s; `Killed` (an
//! `AbortError`, which is also what `catch_panic` makes of a panic) or attempt ≥ 25 →
//! `dead`. The meta hash then holds `status`, `attempts` (the runs so far: apalis counts
//! from 0 at push and adds 1 as each run starts, so the first run acks `attempts = 1`), `done_at`
//! and `result`, the JSON of `Result<_, String>`: `{"Err":"<Display of the error>"}` (for
//! an abort: `"AbortError: <inner>"`). `max_attempts` (25 unless set) is stored but
//! ignored by the backend. A crashed run is re-queued without touching `attempts`.

use crate::store::Trigger;
use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy, PollWith};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_redis::{ConnectionManager, RedisStorage};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use uuid::Uuid;

/// One backup job. The device's details are loaded from PostgreSQL when it runs, so a
/// job queued before a credential change uses the new credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupJob {
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub trigger: Trigger,
    /// The due slot (Unix seconds) a scheduled job was claimed for.
    pub due_at: i64,
    /// The job id (also the apalis task id): `backup:{device}:{slot}` or
    /// `manual:{device}:{uuid}`.
    pub job_id: String,
}

impl BackupJob {
    pub fn scheduled(
        device_id: Uuid,
        tenant_id: Uuid,
        job_id: String,
        due_at: DateTime<Utc>,
    ) -> Self {
        BackupJob {
            device_id,
            tenant_id,
            trigger: Trigger::Scheduled,
            due_at: due_at.timestamp(),
            job_id,
        }
    }

    pub fn manual(device_id: Uuid, tenant_id: Uuid) -> Self {
        BackupJob {
            device_id,
            tenant_id,
            trigger: Trigger::Manual,
            due_at: Utc::now().timestamp(),
            job_id: format!("manual:{device_id}:{}", Uuid::new_v4()),
        }
    }
}

/// Queue settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub redis_url: String,
    /// apalis queue name, also the prefix of every key (tests use their own).
    pub name: String,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub response_timeout: Duration,
    /// How often an idle worker looks for due jobs.
    pub poll_interval: Duration,
    /// Jobs a worker takes per fetch (apalis `batch_size`). It also sizes apalis' channel
    /// of lock/ack events (4 × batch), which is what limits how many jobs a busy worker
    /// starts and finishes per wake-up; see [`Tick`].
    pub fetch_batch: usize,
    /// CA and client certificate for `rediss://` (see [`crate::tls`]).
    pub tls: crate::tls::TlsFiles,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            redis_url: "redis://127.0.0.1:6379/0".into(),
            name: "rosbackup:backups".into(),
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 3,
            response_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            fetch_batch: 1,
            tls: crate::tls::TlsFiles::default(),
        }
    }
}

impl QueueConfig {
    pub fn apalis(&self) -> apalis_redis::Config {
        apalis_redis::Config::default()
            .queue(&self.name)
            .batch_size(self.fetch_batch.max(1))
            .heartbeat_interval(self.heartbeat)
            .missed_heartbeats(self.missed_heartbeats)
            // `persist_results(false)` also disables acks in apalis-core 1.0: finished jobs
            // would stay "in flight" forever. Keep it on (the stored result is tiny).
            .persist_results(true)
            .emit_events(false)
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("push: {0}")]
    Push(String),
    /// A job's stored payload is not a [`BackupJob`] (only where the payload itself is
    /// the answer, as in [`Queue::take_dead`]; listings report undecodable payloads as
    /// jobs without a device instead).
    #[error("job {job_id}: payload does not decode: {reason}")]
    Decode { job_id: String, reason: String },
    /// A TLS file named by the configuration cannot be read.
    #[error("Redis TLS: {0}")]
    Tls(String),
}

/// Connect with a response timeout that survives a slow Redis (the default 500 ms kills
/// workers) and reconnects by itself.
pub async fn connect(
    url: &str,
    tls: &crate::tls::TlsFiles,
    response_timeout: Duration,
) -> Result<ConnectionManager, QueueError> {
    let client = tls.redis_client(url).map_err(|e| match e {
        crate::tls::RedisTlsError::Redis(e) => QueueError::from(e),
        crate::tls::RedisTlsError::File(e) => QueueError::Tls(e.to_string()),
    })?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3);
    Ok(ConnectionManager::new_with_config(client, cfg).await?)
}

/// What Redis knows about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not in Redis (never pushed, trimmed, or Redis lost its data).
    Missing,
    Pending,
    Running,
    Done,
    Failed,
    Killed,
}

/// Queue depth by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    /// Delayed jobs not yet due.
    pub scheduled: u64,
    /// Due jobs (delayed ones whose time has come, and ready ones).
    pub due: u64,
    pub running: u64,
    pub done: u64,
    pub dead: u64,
    /// Workers with a heartbeat within the orphan window.
    pub workers: u64,
}

/// The backup queue.
#[derive(Clone)]
pub struct Queue {
    cfg: QueueConfig,
    conn: ConnectionManager,
    storage: RedisStorage<BackupJob>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

impl Queue {
    pub async fn connect(cfg: QueueConfig) -> Result<Queue, QueueError> {
        let conn = connect(&cfg.redis_url, &cfg.tls, cfg.response_timeout).await?;
        let storage = RedisStorage::new(conn.clone()).with_config(cfg.apalis());
        Ok(Queue { cfg, conn, storage })
    }

    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The apalis backend for a worker: our storage polled by [`Tick`].
    pub fn backend(&self) -> PollWith<RedisStorage<BackupJob>, Tick> {
        PollWith::new(self.storage.clone(), Tick::new(self.cfg.poll_interval))
    }

    /// As [`Queue::backend`], waking often while `busy()` says jobs are running (see
    /// [`Tick`]).
    pub fn backend_busy(
        &self,
        busy: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> PollWith<RedisStorage<BackupJob>, Tick> {
        PollWith::new(
            self.storage.clone(),
            Tick::new(self.cfg.poll_interval).with_busy(busy),
        )
    }

    /// Push jobs (each due at its `due_at`; manual ones now). A job id already in Redis
    /// is left alone (apalis dedupes on the id).
    pub async fn push(&self, jobs: &[BackupJob]) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut storage = self.storage.clone();
        let tasks: Vec<_> = jobs
            .iter()
            .map(|j| {
                let run_at = u64::try_from(j.due_at).unwrap_or(0);
                TaskBuilder::new(j.clone())
                    .task_id(TaskId::from_string(j.job_id.clone()))
                    .run_at_timestamp(run_at)
                    .build()
            })
            .collect();
        storage
            .push_all(futures::stream::iter(tasks))
            .await
            .map_err(|e| QueueError::Push(e.to_string()))
    }

    /// The state of each job id, in order.
    pub async fn job_states(&self, job_ids: &[String]) -> Result<Vec<JobState>, QueueError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let data = self.cfg.apalis().job_data_hash();
        let meta = self.cfg.apalis().job_meta_hash();
        for id in job_ids {
            pipe.hexists(&data, id)
                .hget(format!("{meta}:{id}"), "status");
        }
        let mut conn = self.conn.clone();
        let replies: Vec<(bool, Option<String>)> = pipe.query_async(&mut conn).await?;
        Ok(replies
            .into_iter()
            .map(|(exists, status)| {
                if !exists {
                    return JobState::Missing;
                }
                match status.as_deref() {
                    Some("Running") => JobState::Running,
                    Some("Done") => JobState::Done,
                    Some("Failed") => JobState::Failed,
                    Some("Killed") => JobState::Killed,
                    _ => JobState::Pending,
                }
            })
            .collect())
    }

    /// Counts by state, read directly (apalis-redis' own metrics queries are broken).
    /// Running jobs are the in-flight sets of the registered workers (a dead worker stays
    /// registered until its jobs are re-queued), so no keyspace scan is needed.
    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let c = self.cfg.apalis();
        let now = Utc::now().timestamp();
        let mut conn = self.conn.clone();
        let workers: Vec<String> = conn.zrange(c.workers_set(), 0, -1).await?;
        // MULTI/EXEC: one consistent snapshot. apalis moves jobs between these sets with
        // Lua scripts; read one by one, a job moving meanwhile could count twice.
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.zcount(c.scheduled_jobs_set(), format!("({now}"), "+inf")
            .zcount(c.scheduled_jobs_set(), "-inf", now)
            .llen(c.active_jobs_list())
            .scard(c.done_jobs_set())
            .scard(c.dead_jobs_set())
            .zcount(
                c.workers_set(),
                now - c.orphaned_duration().as_secs() as i64,
                "+inf",
            );
        for w in &workers {
            pipe.scard(format!("{}:{w}", c.inflight_jobs_set()));
        }
        let r: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(QueueDepth {
            scheduled: r[0],
            due: r[1] + r[2],
            done: r[3],
            dead: r[4],
            workers: r[5],
            running: r[6..].iter().sum(),
        })
    }

    /// Put a stopped worker's claimed jobs back on the ready list at once (instead of
    /// waiting for orphan detection) and drop its registration.
    pub async fn requeue_worker(&self, worker: &str) -> Result<u64, QueueError> {
        let c = self.cfg.apalis();
        let inflight = format!("{}:{worker}", c.inflight_jobs_set());
        let script = redis::Script::new(
            "local ids = redis.call('SMEMBERS', KEYS[1]) \
             for _, id in ipairs(ids) do redis.call('RPUSH', KEYS[2], id) end \
             redis.call('DEL', KEYS[1]) \
             redis.call('ZREM', KEYS[3], ARGV[1]) \
             return #ids",
        );
        let mut conn = self.conn.clone();
        let n: u64 = script
            .key(&inflight)
            .key(c.active_jobs_list())
            .key(c.workers_set())
            .arg(worker)
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }

    /// Delete finished jobs (done and dead) whose `done_at` is older than `retention`,
    /// at most `batch` per call: their data, their meta hash and their set entry. apalis
    /// never trims the sets; without this Redis grows by one entry per backup forever.
    pub async fn trim(&self, retention: Duration, batch: usize) -> Result<u64, QueueError> {
        let c = self.cfg.apalis();
        let cutoff = Utc::now().timestamp() - retention.as_secs() as i64;
        let script = redis::Script::new(
            "local removed = 0 \
             local ids = redis.call('SRANDMEMBER', KEYS[1], tonumber(ARGV[2])) \
             for _, id in ipairs(ids) do \
               local meta = KEYS[3] .. ':' .. id \
               local done_at = tonumber(redis.call('HGET', meta, 'done_at') or '0') or 0 \
               if done_at <= tonumber(ARGV[1]) then \
                 redis.call('SREM', KEYS[1], id) \
                 redis.call('HDEL', KEYS[2], id) \
                 redis.call('DEL', meta) \
                 removed = removed + 1 \
               end \
             end \
             return removed",
        );
        let mut conn = self.conn.clone();
        let mut total = 0;
        for set in [c.done_jobs_set(), c.dead_jobs_set()] {
            let n: u64 = script
                .key(&set)
                .key(c.job_data_hash())
                .key(c.job_meta_hash())
                .arg(cutoff)
                .arg(batch)
                .invoke_async(&mut conn)
                .await?;
            total += n;
        }
        Ok(total)
    }

    /// The seed's online rule: `device:{id}:status` missing means "maybe online".
    pub async fn device_online(&self, device_id: &Uuid) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let v: Option<String> = conn.get(format!("device:{device_id}:status")).await?;
        Ok(v.is_none_or(|s| s == "online"))
    }

    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    /// Remove every key of this queue (tests and `--reset`).
    pub async fn purge(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.cfg.name);
        let mut keys = Vec::new();
        {
            let mut iter: redis::AsyncIter<String> = conn.scan_match(pattern).await?;
            while let Some(k) = futures::StreamExt::next(&mut iter).await {
                keys.push(k?);
            }
        }
        for chunk in keys.chunks(500) {
            let _: () = conn.del(chunk).await?;
        }
        Ok(())
    }
}

/// Which jobs to list.
///
/// `Done` is not part of the listing interface the dashboard asked for, but
/// [`Queue::job`] must be able to say "finished" for a job that is still in Redis, so
/// it exists (and [`Queue::jobs`] supports it too, most recently finished first).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobListState {
    /// Delayed jobs not yet due (scheduled zset, score > now).
    Scheduled,
    /// Due jobs: the ready list plus scheduled-zset members with score <= now.
    Due,
    /// Jobs in a registered worker's in-flight set.
    Running,
    /// Jobs in the dead set (aborted, or 25 failed attempts).
    Dead,
    /// Jobs in the done set (finished with `Ok`), until [`Queue::trim`] removes them.
    Done,
}

/// One job as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct JobInfo {
    pub job_id: String,
    pub state: JobListState,
    /// None if the payload could not be decoded (each field is read on its own, so a
    /// payload with one bad field still shows the others).
    pub device_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    pub trigger: Option<Trigger>,
    /// Unix seconds, from the payload.
    pub due_at: Option<i64>,
    /// The scheduled zset score (Unix seconds) for jobs still in the zset; None for
    /// jobs on the ready list, running or finished.
    pub run_at: Option<i64>,
    /// Runs so far (meta `attempts`; 0 until the first run is acknowledged).
    pub attempts: u32,
    /// Meta `max_attempts` (25 unless set at push). apalis-redis ignores it.
    pub max_attempts: Option<u32>,
    /// For running jobs: the worker whose in-flight set holds it.
    pub worker: Option<String>,
    /// The error of the last acknowledged run (apalis' stored `{"Err": ...}` result), at
    /// most 500 characters. Set for dead jobs, and for jobs waiting for a retry.
    pub last_error: Option<String>,
    /// apalis' raw meta `status`: Pending, Running, Done, Failed or Killed. Note that a
    /// re-queued orphan keeps "Running" although it waits in the ready list; `state` is
    /// the truth.
    pub status: Option<String>,
    /// When the last run was acknowledged (Unix seconds, meta `done_at`).
    pub done_at: Option<i64>,
    /// When the current or last run took its lease (Unix seconds, meta `locked_at`).
    pub locked_at: Option<i64>,
}

/// One registered apalis worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub name: String,
    /// Unix seconds (workers zset score).
    pub last_heartbeat: i64,
    /// Heartbeat within the orphan window (same rule as [`Queue::depth`]). A worker that
    /// stopped cleanly stays registered (apalis' `poll_close` removes the wrong member)
    /// and shows as not alive once its heartbeat is older than the window.
    pub alive: bool,
    /// Job ids in its in-flight set, sorted.
    pub inflight: Vec<String>,
}

/// The meta hash fields [`JobInfo`] reads, in this order.
const META_FIELDS: [&str; 7] = [
    "attempts",
    "max_attempts",
    "status",
    "result",
    "done_at",
    "locked_at",
    "locked_by",
];

/// Payload chunk size when a tenant filter forces a scan.
const SCAN_CHUNK: u64 = 1000;

/// Maximum length (characters) of [`JobInfo::last_error`].
const LAST_ERROR_MAX: usize = 500;

/// Where a job was found, before its payload and meta hash are read.
#[derive(Debug, Clone)]
struct Located {
    id: String,
    state: JobListState,
    run_at: Option<i64>,
    worker: Option<String>,
}

/// Payload fields, each decoded on its own.
#[derive(Debug, Default)]
struct PayloadFields {
    device_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
    trigger: Option<Trigger>,
    due_at: Option<i64>,
}

fn payload_fields(raw: Option<&[u8]>) -> PayloadFields {
    let Some(v) = raw.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) else {
        return PayloadFields::default();
    };
    let uuid = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    PayloadFields {
        device_id: uuid("device_id"),
        tenant_id: uuid("tenant_id"),
        trigger: v.get("trigger").and_then(|t| Trigger::deserialize(t).ok()),
        due_at: v.get("due_at").and_then(serde_json::Value::as_i64),
    }
}

fn payload_tenant(raw: Option<&[u8]>) -> Option<Uuid> {
    payload_fields(raw).tenant_id
}

fn meta_str(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn meta_int(v: &Option<Vec<u8>>) -> Option<i64> {
    let s = meta_str(v)?;
    let s = s.trim();
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
}

/// The error text of apalis' stored result: `{"Err":"..."}` → the message; `{"Ok":..}`
/// → None; anything else → the raw text.
fn last_error(result: Option<String>) -> Option<String> {
    let raw = result?;
    let text = match serde_json::from_str::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::Object(map)) => match map.get("Err") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None if map.contains_key("Ok") => return None,
            None => raw,
        },
        Ok(serde_json::Value::Null) => return None,
        _ => raw,
    };
    Some(text.chars().take(LAST_ERROR_MAX).collect())
}

fn job_info(loc: Located, payload: Option<&[u8]>, meta: &[Option<Vec<u8>>]) -> JobInfo {
    let field = |i: usize| meta.get(i).cloned().flatten();
    let p = payload_fields(payload);
    JobInfo {
        job_id: loc.id,
        state: loc.state,
        device_id: p.device_id,
        tenant_id: p.tenant_id,
        trigger: p.trigger,
        due_at: p.due_at,
        run_at: loc.run_at,
        attempts: meta_int(&field(0))
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0),
        max_attempts: meta_int(&field(1)).and_then(|a| u32::try_from(a).ok()),
        worker: loc.worker,
        last_error: last_error(meta_str(&field(3))),
        status: meta_str(&field(2)),
        done_at: meta_int(&field(4)),
        locked_at: meta_int(&field(5)),
    }
}

fn from_value<T: redis::FromRedisValue>(v: redis::Value) -> Result<T, QueueError> {
    redis::from_redis_value(v).map_err(|e| QueueError::Redis(e.into()))
}

fn score(s: f64) -> i64 {
    s as i64
}

impl Queue {
    /// Jobs in `state`, most urgent / newest first, `limit` of them from `offset`.
    ///
    /// Order: `Scheduled` soonest run-at first; `Due` in pick-up order (the ready list
    /// from its head, then due zset members by run-at); `Running` most recently locked
    /// first (fetched-not-yet-locked ones before those); `Dead` and `Done` most recently
    /// finished first.
    ///
    /// The second value is the **exact number of jobs in `state` that pass the filter**:
    /// with `tenant: None` all of them (ZCOUNT / LLEN / SCARD, nothing scanned), with
    /// `Some(t)` only those whose payload has `tenant_id == t` (payloads are scanned in
    /// chunks of 1,000; a payload that does not decode belongs to no tenant). A
    /// tenant-scoped caller never sees another tenant's job.
    ///
    /// Without a tenant filter a page costs one range query plus one pipeline (HMGET on
    /// the data hash and one HMGET per meta hash), whatever the queue size; `limit` is
    /// taken as given, so the caller caps it. `Running` always reads every in-flight set
    /// (a handful of jobs per worker); a job held by a worker that died is listed as
    /// running until another worker re-queues it (see [`WorkerInfo::alive`]).
    ///
    /// Needs Redis ≥ 6.0.6 (`LPOS` in [`Queue::job`]) and a queue name without `*`
    /// (`Dead`/`Done` are ordered with `SORT … BY {q}:meta:*->done_at`).
    pub async fn jobs(
        &self,
        state: JobListState,
        tenant: Option<Uuid>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<JobInfo>, u64), QueueError> {
        let now = Utc::now().timestamp();
        if state == JobListState::Running {
            return self.running_jobs(tenant, offset, limit).await;
        }
        let Some(tenant) = tenant else {
            let total = self.count_in(state, now).await?;
            if limit == 0 || offset >= total {
                return Ok((Vec::new(), total));
            }
            let page = self.page_ids(state, now, offset, limit).await?;
            let jobs = self.describe(page, None).await?;
            return Ok((jobs, total));
        };

        // Tenant filter: scan the state's ids in order, decoding payloads chunk by chunk.
        let sorted_all = match state {
            JobListState::Dead | JobListState::Done => {
                Some(self.sorted_finished(state, None).await?)
            }
            _ => None,
        };
        let c = self.cfg.apalis();
        let data = c.job_data_hash();
        let mut conn = self.conn.clone();
        let mut matched: u64 = 0;
        let mut page: Vec<Located> = Vec::new();
        let mut page_payloads: Vec<Option<Vec<u8>>> = Vec::new();
        let mut start: u64 = 0;
        loop {
            let chunk: Vec<Located> = match &sorted_all {
                Some(all) => all
                    .iter()
                    .skip(usize::try_from(start).unwrap_or(usize::MAX))
                    .take(SCAN_CHUNK as usize)
                    .cloned()
                    .collect(),
                None => self.page_ids(state, now, start, SCAN_CHUNK).await?,
            };
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len() as u64;
            let ids: Vec<&str> = chunk.iter().map(|l| l.id.as_str()).collect();
            let payloads: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&data)
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
            for (loc, payload) in chunk.into_iter().zip(payloads) {
                if payload_tenant(payload.as_deref()) != Some(tenant) {
                    continue;
                }
                if matched >= offset && matched - offset < limit {
                    page.push(loc);
                    page_payloads.push(payload);
                }
                matched += 1;
            }
            if n < SCAN_CHUNK {
                break;
            }
            start += n;
        }
        let jobs = self.describe(page, Some(page_payloads)).await?;
        Ok((jobs, matched))
    }

    /// One job by id, in whatever state; None if Redis knows nothing of it (never
    /// pushed, trimmed, taken). A job found in no list or set but with a data or meta
    /// hash (held by a worker that is no longer registered) is reported by its meta
    /// status: Done → `Done`, Killed/Failed → `Dead`, otherwise `Running` with
    /// `worker` = its `locked_by`.
    pub async fn job(&self, job_id: &str) -> Result<Option<JobInfo>, QueueError> {
        let c = self.cfg.apalis();
        let mut conn = self.conn.clone();
        let workers: Vec<String> = conn.zrange(c.workers_set(), 0, -1).await?;
        let mut pipe = redis::pipe();
        pipe.hexists(c.job_data_hash(), job_id)
            .exists(format!("{}:{job_id}", c.job_meta_hash()))
            .sismember(c.dead_jobs_set(), job_id)
            .sismember(c.done_jobs_set(), job_id)
            .zscore(c.scheduled_jobs_set(), job_id)
            .cmd("LPOS")
            .arg(c.active_jobs_list())
            .arg(job_id);
        for w in &workers {
            pipe.sismember(format!("{}:{w}", c.inflight_jobs_set()), job_id);
        }
        let r: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut it = r.into_iter();
        let mut next = || it.next().unwrap_or(redis::Value::Nil);
        let has_data: bool = from_value(next())?;
        let has_meta: bool = from_value(next())?;
        let dead: bool = from_value(next())?;
        let done: bool = from_value(next())?;
        let zscore: Option<f64> = from_value(next())?;
        let lpos: Option<i64> = from_value(next())?;
        let mut holder = None;
        for w in &workers {
            let member: bool = from_value(next())?;
            if member && holder.is_none() {
                holder = Some(w.clone());
            }
        }
        let now = Utc::now().timestamp();
        let found = if dead {
            Some((JobListState::Dead, None, None))
        } else if done {
            Some((JobListState::Done, None, None))
        } else if let Some(w) = holder {
            Some((JobListState::Running, None, Some(w)))
        } else if let Some(s) = zscore {
            let run_at = score(s);
            let st = if run_at <= now {
                JobListState::Due
            } else {
                JobListState::Scheduled
            };
            Some((st, Some(run_at), None))
        } else if lpos.is_some() {
            Some((JobListState::Due, None, None))
        } else {
            None
        };
        let loc = match found {
            Some((state, run_at, worker)) => Located {
                id: job_id.to_string(),
                state,
                run_at,
                worker,
            },
            None if !has_data && !has_meta => return Ok(None),
            None => {
                // Stray: in no structure; classify by what apalis last wrote.
                let (status, locked_by): (Option<String>, Option<String>) = redis::cmd("HMGET")
                    .arg(format!("{}:{job_id}", c.job_meta_hash()))
                    .arg("status")
                    .arg("locked_by")
                    .query_async(&mut conn)
                    .await?;
                let (state, worker) = match status.as_deref() {
                    Some("Done") => (JobListState::Done, None),
                    Some("Killed") | Some("Failed") => (JobListState::Dead, None),
                    _ => (JobListState::Running, locked_by),
                };
                Located {
                    id: job_id.to_string(),
                    state,
                    run_at: None,
                    worker,
                }
            }
        };
        let mut infos = self.describe(vec![loc], None).await?;
        Ok(infos.pop())
    }

    /// Registered workers, most recent heartbeat first.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        let c = self.cfg.apalis();
        let mut conn = self.conn.clone();
        let workers: Vec<(String, f64)> = conn.zrevrange_withscores(c.workers_set(), 0, -1).await?;
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (w, _) in &workers {
            pipe.smembers(format!("{}:{w}", c.inflight_jobs_set()));
        }
        let sets: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let alive_from = Utc::now().timestamp() - c.orphaned_duration().as_secs() as i64;
        Ok(workers
            .into_iter()
            .zip(sets)
            .map(|((name, s), mut inflight)| {
                inflight.sort();
                WorkerInfo {
                    name,
                    last_heartbeat: score(s),
                    alive: score(s) >= alive_from,
                    inflight,
                }
            })
            .collect())
    }

    /// Remove a dead job from Redis entirely (dead set, data hash, meta hash, and its
    /// idempotency key if it has one) and return its payload; None if it is not dead
    /// (then nothing changes). The payload is read and decoded first; the removal is one
    /// Lua script that re-checks that the job is still dead with that same payload, so
    /// two concurrent callers cannot both get it. A dead job whose payload does not decode
    /// is left in place and reported as [`QueueError::Decode`].
    ///
    /// Typical use: re-push the returned job (its id is free again once removed).
    pub async fn take_dead(&self, job_id: &str) -> Result<Option<BackupJob>, QueueError> {
        let c = self.cfg.apalis();
        let mut conn = self.conn.clone();
        let (dead, payload): (bool, Option<Vec<u8>>) = redis::pipe()
            .sismember(c.dead_jobs_set(), job_id)
            .hget(c.job_data_hash(), job_id)
            .query_async(&mut conn)
            .await?;
        if !dead {
            return Ok(None);
        }
        let Some(payload) = payload else {
            return Err(QueueError::Decode {
                job_id: job_id.to_string(),
                reason: "dead job without a payload in the data hash".into(),
            });
        };
        let job: BackupJob = serde_json::from_slice(&payload).map_err(|e| QueueError::Decode {
            job_id: job_id.to_string(),
            reason: e.to_string(),
        })?;
        let script = redis::Script::new(
            "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end \
             if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end \
             local meta = KEYS[3] .. ':' .. ARGV[1] \
             local idem = redis.call('HGET', meta, 'idempotency_key') \
             if idem and #idem > 0 then \
               local ik = KEYS[4] .. ':' .. idem \
               if redis.call('GET', ik) == ARGV[1] then redis.call('DEL', ik) end \
             end \
             redis.call('SREM', KEYS[1], ARGV[1]) \
             redis.call('HDEL', KEYS[2], ARGV[1]) \
             redis.call('DEL', meta) \
             return 1",
        );
        let removed: i64 = script
            .key(c.dead_jobs_set())
            .key(c.job_data_hash())
            .key(c.job_meta_hash())
            .key(c.idempotency_key_set())
            .arg(job_id)
            .arg(payload.as_slice())
            .invoke_async(&mut conn)
            .await?;
        Ok((removed == 1).then_some(job))
    }

    /// Exact number of jobs in `state` (not `Running`).
    async fn count_in(&self, state: JobListState, now: i64) -> Result<u64, QueueError> {
        let c = self.cfg.apalis();
        let mut conn = self.conn.clone();
        Ok(match state {
            JobListState::Scheduled => {
                conn.zcount(c.scheduled_jobs_set(), format!("({now}"), "+inf")
                    .await?
            }
            JobListState::Due => {
                let (z, l): (u64, u64) = redis::pipe()
                    .zcount(c.scheduled_jobs_set(), "-inf", now)
                    .llen(c.active_jobs_list())
                    .query_async(&mut conn)
                    .await?;
                z + l
            }
            JobListState::Dead => conn.scard(c.dead_jobs_set()).await?,
            JobListState::Done => conn.scard(c.done_jobs_set()).await?,
            JobListState::Running => 0,
        })
    }

    /// Ids `offset..offset+count` of `state` in listing order (not `Running`).
    async fn page_ids(
        &self,
        state: JobListState,
        now: i64,
        offset: u64,
        count: u64,
    ) -> Result<Vec<Located>, QueueError> {
        let c = self.cfg.apalis();
        let mut conn = self.conn.clone();
        let off = isize::try_from(offset).unwrap_or(isize::MAX);
        let cnt = isize::try_from(count).unwrap_or(isize::MAX);
        let zloc = |(id, s): (String, f64), state| Located {
            id,
            state,
            run_at: Some(score(s)),
            worker: None,
        };
        match state {
            JobListState::Scheduled => {
                let ids: Vec<(String, f64)> = conn
                    .zrangebyscore_limit_withscores(
                        c.scheduled_jobs_set(),
                        format!("({now}"),
                        "+inf",
                        off,
                        cnt,
                    )
                    .await?;
                Ok(ids
                    .into_iter()
                    .map(|x| zloc(x, JobListState::Scheduled))
                    .collect())
            }
            JobListState::Due => {
                let last = off.saturating_add(cnt).saturating_sub(1);
                let (len, ready): (u64, Vec<String>) = redis::pipe()
                    .llen(c.active_jobs_list())
                    .lrange(c.active_jobs_list(), off, last)
                    .query_async(&mut conn)
                    .await?;
                let mut out: Vec<Located> = ready
                    .into_iter()
                    .map(|id| Located {
                        id,
                        state: JobListState::Due,
                        run_at: None,
                        worker: None,
                    })
                    .collect();
                let want = count.saturating_sub(out.len() as u64);
                if want > 0 {
                    let zoff = isize::try_from(offset.saturating_sub(len)).unwrap_or(isize::MAX);
                    let zcnt = isize::try_from(want).unwrap_or(isize::MAX);
                    let ids: Vec<(String, f64)> = conn
                        .zrangebyscore_limit_withscores(
                            c.scheduled_jobs_set(),
                            "-inf",
                            now,
                            zoff,
                            zcnt,
                        )
                        .await?;
                    out.extend(ids.into_iter().map(|x| zloc(x, JobListState::Due)));
                }
                Ok(out)
            }
            JobListState::Dead | JobListState::Done => {
                self.sorted_finished(state, Some((offset, count))).await
            }
            JobListState::Running => Ok(Vec::new()),
        }
    }

    /// Dead or done ids, most recently finished first (server-side `SORT … BY
    /// {q}:meta:*->done_at DESC`; ties are broken lexicographically by Redis), optionally
    /// one page of them.
    async fn sorted_finished(
        &self,
        state: JobListState,
        page: Option<(u64, u64)>,
    ) -> Result<Vec<Located>, QueueError> {
        let c = self.cfg.apalis();
        let set = match state {
            JobListState::Done => c.done_jobs_set(),
            _ => c.dead_jobs_set(),
        };
        let mut cmd = redis::cmd("SORT");
        cmd.arg(set)
            .arg("BY")
            .arg(format!("{}:*->done_at", c.job_meta_hash()));
        if let Some((offset, count)) = page {
            let max = i64::MAX as u64;
            cmd.arg("LIMIT").arg(offset.min(max)).arg(count.min(max));
        }
        cmd.arg("DESC");
        let mut conn = self.conn.clone();
        let ids: Vec<String> = cmd.query_async(&mut conn).await?;
        Ok(ids
            .into_iter()
            .map(|id| Located {
                id,
                state,
                run_at: None,
                worker: None,
            })
            .collect())
    }

    /// Running jobs: every registered worker's in-flight set (small), described, filtered,
    /// sorted and paged in memory.
    async fn running_jobs(
        &self,
        tenant: Option<Uuid>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<JobInfo>, u64), QueueError> {
        let c = self.cfg.apalis();
        let mut conn = self.conn.clone();
        let workers: Vec<String> = conn.zrange(c.workers_set(), 0, -1).await?;
        let mut located = Vec::new();
        if !workers.is_empty() {
            let mut pipe = redis::pipe();
            for w in &workers {
                pipe.smembers(format!("{}:{w}", c.inflight_jobs_set()));
            }
            let sets: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
            for (w, ids) in workers.iter().zip(sets) {
                located.extend(ids.into_iter().map(|id| Located {
                    id,
                    state: JobListState::Running,
                    run_at: None,
                    worker: Some(w.clone()),
                }));
            }
        }
        let mut jobs = self.describe(located, None).await?;
        if let Some(t) = tenant {
            jobs.retain(|j| j.tenant_id == Some(t));
        }
        jobs.sort_by(|a, b| {
            let key = |j: &JobInfo| j.locked_at.unwrap_or(i64::MAX);
            key(b).cmp(&key(a)).then_with(|| a.job_id.cmp(&b.job_id))
        });
        let total = jobs.len() as u64;
        let page = jobs
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok((page, total))
    }

    /// Payloads (unless given) and meta hashes of `located`, in one pipeline.
    async fn describe(
        &self,
        located: Vec<Located>,
        payloads: Option<Vec<Option<Vec<u8>>>>,
    ) -> Result<Vec<JobInfo>, QueueError> {
        if located.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.cfg.apalis();
        let meta = c.job_meta_hash();
        let mut pipe = redis::pipe();
        let fetch_payloads = payloads.is_none();
        if fetch_payloads {
            let ids: Vec<&str> = located.iter().map(|l| l.id.as_str()).collect();
            pipe.cmd("HMGET").arg(c.job_data_hash()).arg(&ids);
        }
        for l in &located {
            pipe.cmd("HMGET")
                .arg(format!("{meta}:{}", l.id))
                .arg(&META_FIELDS[..]);
        }
        let mut conn = self.conn.clone();
        let mut replies: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut conn).await?;
        let payloads = match payloads {
            Some(p) => p,
            None if replies.is_empty() => Vec::new(),
            None => replies.remove(0),
        };
        let mut payloads = payloads.into_iter();
        let mut metas = replies.into_iter();
        Ok(located
            .into_iter()
            .map(|loc| {
                let payload = payloads.next().flatten();
                let meta = metas.next().unwrap_or_default();
                job_info(loc, payload.as_deref(), &meta)
            })
            .collect())
    }
}

/// Poll strategy that fires every `every` and always leaves a timer armed with the
/// current waker, so an idle worker never misses its next look at the queue.
///
/// While the worker is busy (its `busy` probe says jobs are running, or a job was fetched
/// within the last second) it fires every `busy_every` instead. apalis-core 1.0 drains the
/// lock/ack events of running jobs only when the worker task is woken (`try_recv`, which
/// registers no waker) through a channel of `4 × batch_size` slots; with a 250 ms tick a
/// worker started about 4 jobs a second however many slots it had free (measured by the
/// fleet benchmark). Waking often while busy keeps those events flowing; an idle worker
/// still costs Redis one fetch per `every`.
pub struct Tick {
    every: Duration,
    busy_every: Duration,
    busy: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for Tick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tick")
            .field("every", &self.every)
            .field("busy_every", &self.busy_every)
            .finish_non_exhaustive()
    }
}

/// How often a busy worker wakes (see [`Tick`]).
pub const BUSY_TICK: Duration = Duration::from_millis(20);

impl Tick {
    pub fn new(every: Duration) -> Self {
        Tick {
            every,
            busy_every: BUSY_TICK.min(every),
            busy: None,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }

    /// Fire every [`BUSY_TICK`] while `busy()` is true.
    pub fn with_busy(mut self, busy: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.busy = Some(busy);
        self
    }

    fn period(&self, snapshot: &PollSnapshot) -> Duration {
        let recently_fed = snapshot.total_ready > 0 && snapshot.idle_for < Duration::from_secs(1);
        if recently_fed || self.busy.as_ref().is_some_and(|b| b()) {
            self.busy_every
        } else {
            self.every
        }
    }
}

impl PollStrategy for Tick {
    fn poll_drive(&mut self, cx: &mut Context<'_>, snapshot: &PollSnapshot) -> Poll<Option<()>> {
        let period = self.period(snapshot);
        // A timer armed for the idle period is pulled in when the worker becomes busy.
        let soon = tokio::time::Instant::now() + period;
        if self.sleep.deadline() > soon {
            self.sleep.as_mut().reset(soon);
        }
        let mut fired = false;
        while self.sleep.as_mut().poll(cx).is_ready() {
            let next = tokio::time::Instant::now() + period;
            self.sleep.as_mut().reset(next);
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tick_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn snap(total_ready: u64, idle_for: Duration) -> PollSnapshot {
        PollSnapshot {
            consecutive_ready: 0,
            total_ready,
            total_pending: 0,
            idle_for,
        }
    }

    #[tokio::test]
    async fn a_busy_worker_wakes_often_an_idle_one_at_its_interval() {
        let every = Duration::from_millis(250);
        let idle = Tick::new(every);
        // Never fed, or fed long ago: the idle interval.
        assert_eq!(idle.period(&snap(0, Duration::ZERO)), every);
        assert_eq!(idle.period(&snap(5, Duration::from_secs(3))), every);
        // A job fetched within the last second: busy.
        assert_eq!(idle.period(&snap(5, Duration::from_millis(10))), BUSY_TICK);
        // Jobs running (the probe), however long ago the last fetch was.
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = running.clone();
        let busy = Tick::new(every).with_busy(Arc::new(move || r.load(Ordering::SeqCst)));
        assert_eq!(busy.period(&snap(5, Duration::from_secs(3))), BUSY_TICK);
        running.store(false, Ordering::SeqCst);
        assert_eq!(busy.period(&snap(5, Duration::from_secs(3))), every);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timer_is_pulled_in_when_the_worker_becomes_busy() {
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = running.clone();
        let mut tick =
            Tick::new(Duration::from_secs(5)).with_busy(Arc::new(move || r.load(Ordering::SeqCst)));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let s = snap(0, Duration::ZERO);
        assert!(tick.poll_drive(&mut cx, &s).is_pending());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(
            tick.poll_drive(&mut cx, &s).is_pending(),
            "idle: 5 s not over"
        );
        running.store(true, Ordering::SeqCst);
        assert!(tick.poll_drive(&mut cx, &s).is_pending());
        tokio::time::advance(BUSY_TICK).await;
        assert!(
            tick.poll_drive(&mut cx, &s).is_ready(),
            "busy: fires after {BUSY_TICK:?}, not after the idle 5 s"
        );
    }
}
