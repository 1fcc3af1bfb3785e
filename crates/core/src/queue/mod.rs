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
//!
//! Reading apalis' keys for the dashboard is in `inspect`; the poll strategy in `tick`.

mod inspect;
mod manual;
mod tick;

pub use inspect::{JobInfo, JobListState, WorkerInfo};
pub use manual::{Claim, ManualSlot, SlotView, finished_or_lost};
pub use tick::{BUSY_TICK, Tick};

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

/// The seed's key for a device's online status (`online`, `offline`, …; not prefixed by
/// the queue name: the seed writes it).
pub fn status_key(device_id: &Uuid) -> String {
    format!("device:{device_id}:status")
}

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
    /// Most manual jobs queued or running at once (`ROSBACKUP_MANUAL_MAX`); see
    /// [`crate::manual`].
    pub manual_max: u64,
    /// A manual request this soon after the device's last manual backup finished joins
    /// it (`ROSBACKUP_MANUAL_JOIN_WINDOW`); zero: never.
    pub manual_window: Duration,
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
            manual_max: 500,
            manual_window: Duration::from_secs(10),
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
    /// Its payload is in Redis but it is in no queue set and no worker's in-flight set:
    /// nothing will ever run it (part of Redis' data lost: eviction, a failover).
    Orphaned,
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

    /// The state of each job id, in order, read in one script so a job moving between
    /// apalis' sets (scheduled → active → a worker's in-flight set → done) is never seen
    /// in none of them. A job whose payload exists but that is in no set is
    /// [`JobState::Orphaned`].
    pub async fn job_states(&self, job_ids: &[String]) -> Result<Vec<JobState>, QueueError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.cfg.apalis();
        let script = redis::Script::new(JOB_STATES);
        let mut script = script.prepare_invoke();
        script
            .arg(c.job_data_hash())
            .arg(c.job_meta_hash())
            .arg(c.scheduled_jobs_set())
            .arg(c.active_jobs_list())
            .arg(c.workers_set())
            .arg(c.inflight_jobs_set())
            .arg(c.done_jobs_set())
            .arg(c.dead_jobs_set());
        for id in job_ids {
            script.arg(id);
        }
        let mut conn = self.conn.clone();
        let states: Vec<String> = script.invoke_async(&mut conn).await?;
        Ok(states.iter().map(|s| job_state(s)).collect())
    }

    /// Remove orphaned jobs' payload and meta, so the same job id can be pushed again
    /// (apalis ignores a push whose id it still holds).
    pub async fn forget(&self, job_ids: &[String]) -> Result<(), QueueError> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let c = self.cfg.apalis();
        let mut pipe = redis::pipe();
        for id in job_ids {
            pipe.hdel(c.job_data_hash(), id)
                .ignore()
                .del(format!("{}:{id}", c.job_meta_hash()))
                .ignore();
        }
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
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

    /// The seed's online rule: `device:{id}:status` missing means "maybe online". (With
    /// the Go poller's lock on, the worker reads it in the lock's script instead:
    /// [`crate::seed_lock::SeedLock::acquire`].)
    pub async fn device_online(&self, device_id: &Uuid) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let v: Option<String> = conn.get(status_key(device_id)).await?;
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
        // apalis lists every queue a worker registered on in one shared sorted set (by
        // its workers key); a purged queue leaves it too.
        let _: () = conn
            .zrem(QUEUES_LIST, self.cfg.apalis().workers_set())
            .await?;
        Ok(())
    }
}

/// apalis-redis' shared sorted set of queues (their workers keys), across every queue name
/// on the server.
const QUEUES_LIST: &str = "core:apalis:queues:list";

/// Per job id: where apalis-redis holds it, as one word. ARGV: data hash, meta prefix,
/// scheduled zset, active list, workers zset, in-flight set prefix, done set, dead set,
/// then the ids. Cheap checks first; `LPOS` over the active list only for a job found
/// nowhere else.
const JOB_STATES: &str = r#"
local workers = redis.call("ZRANGE", ARGV[5], 0, -1)
local out = {}
for i = 9, #ARGV do
  local id = ARGV[i]
  local state
  if redis.call("HEXISTS", ARGV[1], id) == 0 then
    state = "missing"
  else
    local status = redis.call("HGET", ARGV[2] .. ":" .. id, "status")
    if redis.call("SISMEMBER", ARGV[7], id) == 1 or status == "Done" then
      state = "done"
    elseif redis.call("SISMEMBER", ARGV[8], id) == 1 or status == "Killed" then
      state = "killed"
    else
      local placed = redis.call("ZSCORE", ARGV[3], id)
      if not placed then
        for _, w in ipairs(workers) do
          if redis.call("SISMEMBER", ARGV[6] .. ":" .. w, id) == 1 then
            placed = true
            break
          end
        end
      end
      if not placed then
        placed = redis.call("LPOS", ARGV[4], id)
      end
      if not placed then
        state = "orphaned"
      elseif status == "Running" then
        state = "running"
      elseif status == "Failed" then
        state = "failed"
      else
        state = "pending"
      end
    end
  end
  out[#out + 1] = state
end
return out
"#;

fn job_state(word: &str) -> JobState {
    match word {
        "missing" => JobState::Missing,
        "orphaned" => JobState::Orphaned,
        "running" => JobState::Running,
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        "killed" => JobState::Killed,
        _ => JobState::Pending,
    }
}
