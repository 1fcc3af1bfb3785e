//! Manual one-off backups: one path, three doors.
//!
//! `rosbackup enqueue`, the HTTP API and the seed's NATS request/reply subject
//! `config.backup.trigger` all call [`request`]: it pushes a `manual:{device}:{uuid}` job
//! due now, which a worker runs through exactly the same [`crate::worker::execute`] as a
//! scheduled job (lease included: a manual backup of a device that is being backed up
//! answers `locked`). [`wait`] follows the job to its run record. [`request`] counts
//! `rosbackup_jobs_enqueued_total{trigger="manual"}` for the job it pushes, so every door
//! counts each manual job exactly once.

use crate::metrics::Metrics;
use crate::queue::{BackupJob, Queue, QueueError};
use crate::store::{Run, Store, StoreError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tracing::{info, warn};
use uuid::Uuid;

/// The seed's subject for manual backup requests.
pub const TRIGGER_SUBJECT: &str = "config.backup.trigger";

#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("device {0} not found")]
    UnknownDevice(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Queue a manual backup of `device_id` (checked to exist, and to belong to `tenant_id`
/// when given) and count it in `metrics`. Returns the job.
pub async fn request(
    store: &Store,
    queue: &Queue,
    metrics: &Metrics,
    device_id: Uuid,
    tenant_id: Option<Uuid>,
) -> Result<BackupJob, ManualError> {
    let device = store
        .device(device_id)
        .await?
        .filter(|d| tenant_id.is_none_or(|t| t == d.tenant_id))
        .ok_or_else(|| ManualError::UnknownDevice(device_id.to_string()))?;
    let job = BackupJob::manual(device.id, device.tenant_id);
    queue.push(std::slice::from_ref(&job)).await?;
    metrics.jobs_enqueued.with_label_values(&["manual"]).inc();
    Ok(job)
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
    /// No worker ever registered on the queue.
    Never,
}

impl WorkerPresence {
    /// From the registered workers and the time now (Unix seconds).
    pub fn of(workers: &[crate::queue::WorkerInfo], now: i64) -> Self {
        let alive = workers.iter().filter(|w| w.alive).count();
        match workers.iter().map(|w| w.last_heartbeat).max() {
            None => WorkerPresence::Never,
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
            WorkerPresence::Never => Some(format!(
                "no worker has ever registered on queue {queue:?} (start one: `rosbackup worker`; \
                 workers and this command must use the same REDIS_URL and ROSBACKUP_QUEUE)"
            )),
        }
    }
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
/// `bad_request`, `not_found`, `unavailable`, `timeout` for the request itself.
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
    let job = match request(store, queue, metrics, device_id, tenant).await {
        Ok(j) => j,
        Err(ManualError::UnknownDevice(_)) => {
            return TriggerReply::failed("device not found", "not_found");
        }
        Err(e) => return TriggerReply::failed(e.to_string(), "unavailable"),
    };
    match wait(store, &job.job_id, timeout).await {
        Ok(Some(run)) => TriggerReply::from_run(&run),
        Ok(None) => TriggerReply::failed(
            format!(
                "no result within {} s; the backup is still queued as {}",
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

    #[test]
    fn worker_presence_says_how_long_nobody_was_seen() {
        let w = |name: &str, last: i64, alive: bool| crate::queue::WorkerInfo {
            name: name.into(),
            last_heartbeat: last,
            alive,
            inflight: vec![],
        };
        assert_eq!(WorkerPresence::of(&[], 1_000), WorkerPresence::Never);
        let never = WorkerPresence::Never.problem("rosbackup").unwrap();
        assert!(
            never.contains("no worker has ever registered on queue \"rosbackup\""),
            "{never}"
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
