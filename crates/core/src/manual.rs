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

/// The seed's trigger request.
#[derive(Debug, Clone, Deserialize)]
pub struct TriggerRequest {
    pub device_id: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// The seed's trigger reply: `status` is `success`, `failed` or `locked`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TriggerReply {
    pub status: String,
    #[serde(default)]
    pub sha256_hash: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error: String,
}

impl TriggerReply {
    fn failed(message: impl Into<String>, error: impl Into<String>) -> Self {
        TriggerReply {
            status: "failed".into(),
            sha256_hash: String::new(),
            message: message.into(),
            error: error.into(),
        }
    }

    /// The reply for a finished run.
    pub fn from_run(run: &Run) -> Self {
        match run.status.as_str() {
            "success" => TriggerReply {
                status: "success".into(),
                sha256_hash: run.sha256.clone().unwrap_or_default(),
                message: "backup published".into(),
                error: String::new(),
            },
            "locked" => TriggerReply {
                status: "locked".into(),
                sha256_hash: String::new(),
                message: run.error_message.clone().unwrap_or_default(),
                error: String::new(),
            },
            _ => TriggerReply::failed(
                run.error_message
                    .clone()
                    .unwrap_or_else(|| run.status.clone()),
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
