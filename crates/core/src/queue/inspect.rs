//! Introspection for the dashboard and the JSON API: listing, describing and removing
//! jobs and workers by reading apalis-redis' keys.
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

use super::*;

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
