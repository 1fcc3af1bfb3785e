//! Manual one-off backups: one path, three doors, bounded.
//!
//! `rosbackup enqueue`, the HTTP API and the seed's NATS request/reply subject
//! `config.backup.trigger` all call [`request`]. A worker runs a manual job through exactly
//! the same [`crate::worker::execute`] as a scheduled one (lease included: a manual backup
//! of a device a scheduled backup is running answers `locked`). [`wait`] follows the job
//! to its run record.
//!
//! **Bounded.** Anyone who can publish on the trigger subject, or click "back up now",
//! could once queue any number of jobs: thousands of SSH sessions to a small fleet, and at
//! ~8,000 due jobs apalis-redis fails every fetch and every worker stops. So:
//!
//! - **One manual backup per device at a time.** A request for a device whose manual job
//!   is queued or running *joins* it: it gets that job's id, so every requester (API
//!   `wait`, CLI `--wait`, NATS reply) waits for the same run record and sees the same
//!   outcome. So does a request within `ROSBACKUP_MANUAL_JOIN_WINDOW` after that job
//!   finished: a burst of clicks or retries is one backup — unless the device changed
//!   after that job was requested (new credentials, a host-key reset…): then the old
//!   outcome may be the very failure the change fixed, and a new backup is queued.
//! - **A global bound** (`ROSBACKUP_MANUAL_MAX`) on manual jobs queued or running; past
//!   it a request is refused ([`ManualError::Full`]: API 429 with `Retry-After`, NATS
//!   `failed`, CLI exit 1). With `ROSBACKUP_QUEUE_CAP` it keeps Redis under apalis'
//!   limit.
//!
//! **Why Redis, and how it stays right with many processes.** The jobs live in Redis, so
//! their count and their state (queued, running, done and when) are read where they are,
//! with no second record to drift from them (PostgreSQL would need its own bookkeeping of
//! jobs it cannot see finish or get lost). Each request reads the device's slot
//! ([`crate::queue::SlotView`]), decides with the pure [`decide`], and, to queue, takes
//! the slot with one Lua script ([`crate::queue::Queue::claim_manual`]) that succeeds only
//! if the slot still holds what was read and the bound is not reached. Redis runs scripts
//! atomically, so of any number of concurrent requesters in any number of processes one
//! takes the slot; the others see it changed, read again and join. Finished and lost jobs
//! leave the bound's set lazily ([`crate::queue::Queue::prune_manual`]): the oldest few on
//! every request, all of them before a refusal. A slot whose job Redis lost (in no set,
//! or gone) is replaced, never joined, so a device cannot get stuck behind it.
//!
//! `rosbackup_jobs_enqueued_total{trigger="manual"}` counts each job pushed, once,
//! whatever the door; `rosbackup_manual_requests_total{outcome}` counts requests as
//! `queued`, `joined` or `refused`.

use crate::metrics::Metrics;
#[cfg(test)]
use crate::queue::finished_or_lost;
use crate::queue::{BackupJob, Claim, JobState, ManualSlot, Queue, QueueError, SlotView};
use crate::store::{Run, Store, StoreError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tracing::{info, warn};
use uuid::Uuid;

/// The seed's subject for manual backup requests.
pub const TRIGGER_SUBJECT: &str = "config.backup.trigger";

/// What a refused request is told to wait before it tries again (`Retry-After`).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A slot's job that Redis does not hold (yet) is taken to be on its way for this long
/// after it was requested (the claim comes before the push), and lost after.
pub const PUSH_GRACE_S: i64 = 30;

/// How many of the oldest pending manual jobs each request checks for having finished.
const PRUNE_EACH: usize = 8;

/// Attempts to take a device's slot while other requesters change it.
const CLAIM_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("device {0} not found")]
    UnknownDevice(String),
    /// The global bound on manual jobs is reached.
    #[error(
        "too many manual backups: {pending} are queued or running, the limit \
         (ROSBACKUP_MANUAL_MAX) is {limit}; try again in {} s",
        RETRY_AFTER.as_secs()
    )]
    Full { pending: u64, limit: u64 },
    /// Other requesters kept changing the device's slot (not expected in practice).
    #[error("the device's manual backup kept changing under concurrent requests; try again")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl ManualError {
    /// The stable code of this error (API `code`, NATS `error_kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            ManualError::UnknownDevice(_) => "not_found",
            ManualError::Full { .. } => "too_many_requests",
            _ => "unavailable",
        }
    }
}

/// Why a request joined an existing manual backup instead of queueing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The device's manual job is queued (or its push is on its way).
    Queued,
    /// It is running.
    Running,
    /// It finished within the join window.
    Recent,
}

/// What to do with a request, given the device's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Join(Joined),
    /// Queue a new job (taking the slot; the bound is checked as it is taken).
    Queue,
}

/// Decide a request for a device whose slot reads `view` at `now` (Unix seconds), joining
/// a job that finished less than `window` ago — unless the device changed (credentials, a
/// host-key reset, an unblock, its address: anything that sets its `updated_at`, Unix
/// milliseconds in `device_changed_at_ms`) at or after that job was requested: its outcome may be
/// the very failure the change fixes ("fix the password, click Back up now" must back up).
pub fn decide(view: &SlotView, now: i64, window: Duration, device_changed_at_ms: i64) -> Decision {
    let Some(slot) = &view.slot else {
        return Decision::Queue;
    };
    match view.state {
        JobState::Pending | JobState::Failed => Decision::Join(Joined::Queued),
        JobState::Running => Decision::Join(Joined::Running),
        JobState::Missing if now - slot.requested_at() < PUSH_GRACE_S => {
            Decision::Join(Joined::Queued)
        }
        JobState::Done
            if view
                .done_at
                .is_some_and(|d| now - d < window.as_secs() as i64)
                && device_changed_at_ms < slot.requested_at_ms =>
        {
            Decision::Join(Joined::Recent)
        }
        // Finished long enough ago, aborted by the queue (no run to share), or lost.
        JobState::Done | JobState::Killed | JobState::Missing | JobState::Orphaned => {
            Decision::Queue
        }
    }
}

/// A manual request's job: a new one, or the one it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub job_id: String,
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    /// `None`: this request queued the job.
    pub joined: Option<Joined>,
}

/// Ask for a manual backup of `device_id` (checked to exist, and to belong to `tenant_id`
/// when given): join the device's pending (or just finished) manual job, or queue one
/// within the bound (see the module doc). Counted in `metrics`.
pub async fn request(
    store: &Store,
    queue: &Queue,
    metrics: &Metrics,
    device_id: Uuid,
    tenant_id: Option<Uuid>,
) -> Result<Requested, ManualError> {
    let device = store
        .device(device_id)
        .await?
        .filter(|d| tenant_id.is_none_or(|t| t == d.tenant_id))
        .ok_or_else(|| ManualError::UnknownDevice(device_id.to_string()))?;
    let (limit, window) = (queue.config().manual_max, queue.config().manual_window);
    let now = || chrono::Utc::now().timestamp();
    queue
        .prune_manual(now(), PUSH_GRACE_S, Some(PRUNE_EACH))
        .await?;
    let mut pruned_all = false;
    for _ in 0..CLAIM_ATTEMPTS {
        let view = queue.manual_slot(device.id).await?;
        let at_ms = chrono::Utc::now().timestamp_millis();
        let at = at_ms.div_euclid(1000);
        if let (Decision::Join(joined), Some(slot)) = (
            decide(&view, at, window, device.updated_at.timestamp_millis()),
            &view.slot,
        ) {
            metrics.manual_requests.with_label_values(&["joined"]).inc();
            info!(device_id = %device.id, job_id = %slot.job_id, ?joined, "manual backup request joined");
            return Ok(Requested {
                job_id: slot.job_id.clone(),
                device_id: device.id,
                tenant_id: device.tenant_id,
                joined: Some(joined),
            });
        }
        let job = BackupJob::manual(device.id, device.tenant_id);
        let slot = ManualSlot {
            job_id: job.job_id.clone(),
            requested_at_ms: at_ms,
        };
        let replaced = view.slot.as_ref().map(|s| s.job_id.as_str());
        match queue
            .claim_manual(device.id, view.raw.as_deref(), &slot, replaced, limit)
            .await?
        {
            Claim::Changed => continue,
            Claim::Full(_) if !pruned_all => {
                pruned_all = true;
                queue.prune_manual(at, PUSH_GRACE_S, None).await?;
                continue;
            }
            Claim::Full(pending) => {
                metrics
                    .manual_requests
                    .with_label_values(&["refused"])
                    .inc();
                warn!(device_id = %device.id, pending, limit, "manual backup request refused: too many manual jobs");
                return Err(ManualError::Full { pending, limit });
            }
            Claim::Claimed => {
                if let Err(e) = queue.push(std::slice::from_ref(&job)).await {
                    if let Err(undo) = queue.release_manual(device.id, &slot).await {
                        warn!(device_id = %device.id, job_id = %job.job_id, error = %undo, "could not release the manual slot after a failed push");
                    }
                    return Err(e.into());
                }
                metrics.jobs_enqueued.with_label_values(&["manual"]).inc();
                metrics.manual_requests.with_label_values(&["queued"]).inc();
                info!(device_id = %device.id, job_id = %job.job_id, "manual backup queued");
                return Ok(Requested {
                    job_id: job.job_id,
                    device_id: device.id,
                    tenant_id: device.tenant_id,
                    joined: None,
                });
            }
        }
    }
    Err(ManualError::Contended)
}

/// Wait up to `timeout` for the job's run record.
pub async fn wait(
    store: &Store,
    job_id: &str,
    timeout: Duration,
) -> Result<Option<Run>, StoreError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        if let Some(run) = store.runs_for_job(job_id).await?.into_iter().next() {
            return Ok(Some(run));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Whether any worker serves a queue, from the heartbeats of its registered workers
/// (`Queue::workers`). `rosbackup enqueue --wait` asks before it waits, so that nobody
/// waits two minutes in silence for a worker that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPresence {
    /// This many workers heartbeat within the orphan window.
    Alive(usize),
    /// Workers registered once; the latest heartbeat is `seconds` old.
    Gone { seconds: i64 },
    /// No worker is registered on the queue: none ever started, or every one stopped
    /// cleanly (a worker that stops deregisters; only a killed one leaves a heartbeat).
    NoneRegistered,
}

impl WorkerPresence {
    /// From the registered workers and the time now (Unix seconds).
    pub fn of(workers: &[crate::queue::WorkerInfo], now: i64) -> Self {
        let alive = workers.iter().filter(|w| w.alive).count();
        match workers.iter().map(|w| w.last_heartbeat).max() {
            None => WorkerPresence::NoneRegistered,
            Some(_) if alive > 0 => WorkerPresence::Alive(alive),
            Some(last) => WorkerPresence::Gone {
                seconds: (now - last).max(0),
            },
        }
    }

    /// For the operator, naming the queue; `None` when a worker is alive.
    pub fn problem(&self, queue: &str) -> Option<String> {
        match self {
            WorkerPresence::Alive(_) => None,
            WorkerPresence::Gone { seconds } => Some(format!(
                "no worker has been seen on queue {queue:?} for {seconds} s (start one: `rosbackup worker`)"
            )),
            WorkerPresence::NoneRegistered => Some(format!(
                "no worker is registered on queue {queue:?}: none was started, or every one \
                 stopped (start one: `rosbackup worker`; workers and this command must use the \
                 same REDIS_URL and ROSBACKUP_QUEUE)"
            )),
        }
    }
}

/// Why no worker would run a job pushed to `queue` now (its [`WorkerPresence::problem`]),
/// `None` when one is alive. Asked before pushing, so a worker that picks the job up in
/// between does not look absent. The CLI, the API and the NATS trigger all ask here.
pub async fn no_worker(queue: &Queue) -> Result<Option<String>, QueueError> {
    let workers = queue.workers().await?;
    Ok(WorkerPresence::of(&workers, chrono::Utc::now().timestamp()).problem(&queue.config().name))
}

/// What [`follow`] reports while it waits: each at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A worker took the job (its name, when the queue still shows it).
    PickedUp { worker: Option<String> },
    /// No worker has taken the job after `waited`.
    StillQueued { waited: Duration },
}

/// After how long a job nobody took is reported as [`Progress::StillQueued`].
pub const STILL_QUEUED_AFTER: Duration = Duration::from_secs(15);

/// [`wait`], telling `progress` when a worker picks the job up, or when none has after
/// [`STILL_QUEUED_AFTER`]. The queue is only read for progress: when Redis cannot say,
/// the wait goes on on the run record alone.
pub async fn follow(
    store: &Store,
    queue: &Queue,
    job_id: &str,
    timeout: Duration,
    mut progress: impl FnMut(Progress),
) -> Result<Option<Run>, StoreError> {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut pause = Duration::from_millis(50);
    let (mut picked_up, mut said_queued) = (false, false);
    loop {
        if let Some(run) = store.runs_for_job(job_id).await?.into_iter().next() {
            return Ok(Some(run));
        }
        if !picked_up {
            let ids = [job_id.to_string()];
            match queue
                .job_states(&ids)
                .await
                .ok()
                .and_then(|s| s.first().copied())
            {
                Some(crate::queue::JobState::Running) => {
                    picked_up = true;
                    let worker = queue.workers().await.ok().and_then(|ws| {
                        ws.into_iter()
                            .find(|w| w.inflight.iter().any(|j| j == job_id))
                            .map(|w| w.name)
                    });
                    progress(Progress::PickedUp { worker });
                }
                Some(crate::queue::JobState::Pending)
                    if !said_queued && start.elapsed() >= STILL_QUEUED_AFTER =>
                {
                    said_queued = true;
                    progress(Progress::StillQueued {
                        waited: start.elapsed(),
                    });
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The seed's trigger request.
#[derive(Debug, Clone, Deserialize)]
pub struct TriggerRequest {
    pub device_id: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// The seed's trigger reply, as the Go poller sends it: `status` is `success`, `failed` or
/// `locked`; every empty field is left out (Go's `omitempty`). On failure `error` is the
/// human-readable reason (the backend shows it to its user as the failure detail) and
/// `error_kind` (ours, extra) the stable code: an error kind of the README's table, or
/// `bad_request`, `not_found`, `unavailable`, `timeout`, `too_many_requests` for the request
/// itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TriggerReply {
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256_hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_kind: String,
}

/// The Go poller's `message` for a device whose backup is already running.
pub const LOCKED_MESSAGE: &str = "backup already in progress";
/// The Go poller's `message` for a published snapshot.
pub const SUCCESS_MESSAGE: &str = "Config snapshot collected";

impl TriggerReply {
    fn failed(reason: impl Into<String>, kind: impl Into<String>) -> Self {
        TriggerReply {
            status: "failed".into(),
            sha256_hash: String::new(),
            message: String::new(),
            error: reason.into(),
            error_kind: kind.into(),
        }
    }

    /// The reply for a finished run.
    pub fn from_run(run: &Run) -> Self {
        match run.status.as_str() {
            "success" => TriggerReply {
                status: "success".into(),
                sha256_hash: run.sha256.clone().unwrap_or_default(),
                message: SUCCESS_MESSAGE.into(),
                error: String::new(),
                error_kind: String::new(),
            },
            "locked" => TriggerReply {
                status: "locked".into(),
                sha256_hash: String::new(),
                message: LOCKED_MESSAGE.into(),
                error: String::new(),
                error_kind: String::new(),
            },
            _ => TriggerReply::failed(
                run.error_message
                    .clone()
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| format!("the backup ended {}", run.status)),
                run.error_kind.clone().unwrap_or_else(|| run.status.clone()),
            ),
        }
    }
}

/// Answer one trigger request.
pub async fn answer(
    store: &Store,
    queue: &Queue,
    metrics: &Metrics,
    payload: &[u8],
    timeout: Duration,
) -> TriggerReply {
    let req: TriggerRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return TriggerReply::failed(
                format!("malformed request: {e}; expected {{\"device_id\",\"tenant_id\"}}"),
                "bad_request",
            );
        }
    };
    let Ok(device_id) = Uuid::parse_str(req.device_id.trim()) else {
        return TriggerReply::failed("device_id is not a UUID", "bad_request");
    };
    let tenant = match req
        .tenant_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        None => None,
        Some(t) => match Uuid::parse_str(t) {
            Ok(t) => Some(t),
            Err(_) => return TriggerReply::failed("tenant_id is not a UUID", "bad_request"),
        },
    };
    // Redis unable to say: wait as before.
    let absent = no_worker(queue).await.ok().flatten();
    let job = match request(store, queue, metrics, device_id, tenant).await {
        Ok(j) => j,
        Err(ManualError::UnknownDevice(_)) => {
            return TriggerReply::failed("device not found", "not_found");
        }
        Err(e) => return TriggerReply::failed(e.to_string(), e.kind()),
    };
    // No worker to run it: say so now rather than after the whole timeout (a job that
    // joined a finished backup has its outcome already).
    if let Some(problem) = absent.filter(|_| job.joined != Some(Joined::Recent)) {
        return TriggerReply::failed(
            format!("{problem}; the backup stays queued as {}", job.job_id),
            "unavailable",
        );
    }
    match wait(store, &job.job_id, timeout).await {
        Ok(Some(run)) => TriggerReply::from_run(&run),
        Ok(None) => TriggerReply::failed(
            format!(
                "no result within {} s; the backup is still queued or running as {}",
                timeout.as_secs(),
                job.job_id
            ),
            "timeout",
        ),
        Err(e) => TriggerReply::failed(e.to_string(), "unavailable"),
    }
}

/// The NATS queue group of a fleet's trigger subscribers: one per job queue, so the
/// enqueuers of one fleet share requests while another fleet on the same NATS (which
/// should use its own `ROSBACKUP_TRIGGER_SUBJECT`) never takes them from its group.
pub fn trigger_group(queue_name: &str) -> String {
    let safe: String = queue_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("rosbackup-trigger-{safe}")
}

/// Serve `subject` (queue group [`trigger_group`], so several enqueuers share the
/// load and each request is answered once) until the subscription ends.
pub async fn serve_trigger(
    client: async_nats::Client,
    subject: String,
    store: Store,
    queue: Queue,
    timeout: Duration,
    metrics: Metrics,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client
        .queue_subscribe(subject.clone(), trigger_group(queue.config().name.as_str()))
        .await?;
    info!(subject = %subject, "answering manual backup requests");
    while let Some(msg) = sub.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            warn!("trigger request without a reply subject; ignored");
            continue;
        };
        let (client, store, queue, metrics) = (
            client.clone(),
            store.clone(),
            queue.clone(),
            metrics.clone(),
        );
        tokio::spawn(async move {
            let reply = answer(&store, &queue, &metrics, &msg.payload, timeout).await;
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(e) = client.publish(reply_to, body.into()).await {
                warn!(error = %e, "could not send the trigger reply");
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: JobState, requested_at: i64, done_at: Option<i64>) -> SlotView {
        SlotView {
            raw: Some(format!("{requested_at} manual:d:j")),
            slot: Some(ManualSlot {
                job_id: "manual:d:j".into(),
                requested_at_ms: requested_at * 1000,
            }),
            state,
            done_at,
        }
    }

    #[test]
    fn a_queued_or_running_job_is_joined() {
        let w = Duration::from_secs(10);
        assert_eq!(
            decide(&view(JobState::Pending, 0, None), 5_000, w, 0),
            Decision::Join(Joined::Queued)
        );
        // Failed: apalis re-scheduled it for a retry; still pending.
        assert_eq!(
            decide(&view(JobState::Failed, 0, None), 5_000, w, 0),
            Decision::Join(Joined::Queued)
        );
        assert_eq!(
            decide(&view(JobState::Running, 0, None), 5_000, w, 0),
            Decision::Join(Joined::Running)
        );
    }

    #[test]
    fn a_finished_job_is_joined_only_within_the_window() {
        let w = Duration::from_secs(10);
        let done = |at| view(JobState::Done, 900, Some(at));
        assert_eq!(
            decide(&done(991), 1_000, w, 0),
            Decision::Join(Joined::Recent)
        );
        assert_eq!(decide(&done(990), 1_000, w, 0), Decision::Queue);
        // Window zero: never.
        assert_eq!(
            decide(&done(1_000), 1_000, Duration::ZERO, 0),
            Decision::Queue
        );
        // Done without a time: not joinable.
        assert_eq!(
            decide(&view(JobState::Done, 900, None), 1_000, w, 0),
            Decision::Queue
        );
    }

    #[test]
    fn a_device_changed_since_the_finished_job_was_requested_gets_a_new_one() {
        let w = Duration::from_secs(10);
        // Requested at 900, finished at 995, asked again at 1_000.
        let done = view(JobState::Done, 900, Some(995));
        assert_eq!(
            decide(&done, 1_000, w, 899_999),
            Decision::Join(Joined::Recent),
            "changed before the job was requested: its run read the change"
        );
        for changed in [900_000, 900_001, 950_000, 999_999] {
            assert_eq!(
                decide(&done, 1_000, w, changed),
                Decision::Queue,
                "{changed}"
            );
        }
        // A queued job reads the row under its lease; a running one is not doubled.
        for (state, joined) in [
            (JobState::Pending, Joined::Queued),
            (JobState::Running, Joined::Running),
        ] {
            assert_eq!(
                decide(&view(state, 900, None), 1_000, w, 999_999),
                Decision::Join(joined)
            );
        }
    }

    #[test]
    fn an_empty_slot_or_a_lost_or_aborted_job_queues_a_new_one() {
        let w = Duration::from_secs(10);
        let empty = SlotView {
            raw: None,
            slot: None,
            state: JobState::Missing,
            done_at: None,
        };
        assert_eq!(decide(&empty, 1_000, w, 0), Decision::Queue);
        let garbage = SlotView {
            raw: Some("garbage".into()),
            ..empty
        };
        assert_eq!(decide(&garbage, 1_000, w, 0), Decision::Queue);
        assert_eq!(
            decide(&view(JobState::Killed, 999, None), 1_000, w, 0),
            Decision::Queue
        );
        assert_eq!(
            decide(&view(JobState::Orphaned, 999, None), 1_000, w, 0),
            Decision::Queue
        );
        // Not in Redis: on its way just after the claim, lost after the grace.
        assert_eq!(
            decide(
                &view(JobState::Missing, 1_000 - PUSH_GRACE_S + 1, None),
                1_000,
                w,
                0
            ),
            Decision::Join(Joined::Queued)
        );
        assert_eq!(
            decide(
                &view(JobState::Missing, 1_000 - PUSH_GRACE_S, None),
                1_000,
                w,
                0
            ),
            Decision::Queue
        );
    }

    #[test]
    fn only_unfinished_jobs_count_against_the_bound() {
        for s in [JobState::Pending, JobState::Running, JobState::Failed] {
            assert!(!finished_or_lost(s, 1_000, 30), "{s:?}");
        }
        for s in [JobState::Done, JobState::Killed, JobState::Orphaned] {
            assert!(finished_or_lost(s, 0, 30), "{s:?}");
        }
        assert!(!finished_or_lost(JobState::Missing, 29, 30));
        assert!(finished_or_lost(JobState::Missing, 30, 30));
    }

    #[test]
    fn a_refusal_says_why_and_when_to_retry() {
        let e = ManualError::Full {
            pending: 5,
            limit: 5,
        };
        assert_eq!(e.kind(), "too_many_requests");
        let m = e.to_string();
        assert!(m.contains("5 are queued or running"), "{m}");
        assert!(m.contains("ROSBACKUP_MANUAL_MAX"), "{m}");
        assert!(m.contains("try again in 30 s"), "{m}");
    }

    #[test]
    fn worker_presence_says_how_long_nobody_was_seen() {
        let w = |name: &str, last: i64, alive: bool| crate::queue::WorkerInfo {
            name: name.into(),
            last_heartbeat: last,
            alive,
            inflight: vec![],
        };
        assert_eq!(
            WorkerPresence::of(&[], 1_000),
            WorkerPresence::NoneRegistered
        );
        let none = WorkerPresence::NoneRegistered.problem("rosbackup").unwrap();
        assert!(
            none.contains("no worker is registered on queue \"rosbackup\"")
                && none.contains("every one stopped"),
            "{none}"
        );
        let gone = WorkerPresence::of(&[w("a", 900, false), w("b", 700, false)], 1_000);
        assert_eq!(gone, WorkerPresence::Gone { seconds: 100 });
        let msg = gone.problem("q").unwrap();
        assert!(
            msg.contains("no worker has been seen on queue \"q\" for 100 s"),
            "{msg}"
        );
        let alive = WorkerPresence::of(&[w("a", 995, true), w("b", 700, false)], 1_000);
        assert_eq!(alive, WorkerPresence::Alive(1));
        assert_eq!(alive.problem("q"), None);
    }
    use chrono::Utc;
    use uuid::Uuid;

    fn run(status: &str, kind: Option<&str>, message: Option<&str>, sha: Option<&str>) -> Run {
        Run {
            id: 1,
            device_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            job_id: "manual:x".into(),
            trigger: "manual".into(),
            worker: "w".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            status: status.into(),
            error_kind: kind.map(str::to_string),
            error_message: message.map(str::to_string),
            bytes: None,
            sha256: sha.map(str::to_string),
            duration_ms: 0,
            timeout_seconds: None,
            timeout_source: None,
            export_ms: None,
            timed_out: false,
        }
    }

    fn json(r: &TriggerReply) -> serde_json::Value {
        serde_json::to_value(r).expect("serializes")
    }

    /// The Go poller's `BackupTriggerResponse`: empty fields omitted, the reason for
    /// people in `error`, our code beside it in `error_kind`.
    #[test]
    fn replies_have_the_go_pollers_shape() {
        let sha = "a".repeat(64);
        assert_eq!(
            json(&TriggerReply::from_run(&run(
                "success",
                None,
                None,
                Some(&sha)
            ))),
            serde_json::json!({"status": "success", "sha256_hash": sha, "message": "Config snapshot collected"})
        );
        assert_eq!(
            json(&TriggerReply::from_run(&run(
                "locked",
                None,
                Some("another backup of this device is running"),
                None
            ))),
            serde_json::json!({"status": "locked", "message": "backup already in progress"})
        );
        assert_eq!(
            json(&TriggerReply::from_run(&run(
                "failed",
                Some("auth_failed"),
                Some("authentication failed for user backup"),
                None
            ))),
            serde_json::json!({
                "status": "failed",
                "error": "authentication failed for user backup",
                "error_kind": "auth_failed"
            })
        );
        // A failure without a message still says something in `error`.
        let r = TriggerReply::from_run(&run("skipped", None, None, None));
        assert_eq!(
            (r.status.as_str(), r.error_kind.as_str()),
            ("failed", "skipped")
        );
        assert!(!r.error.is_empty());
    }
}
