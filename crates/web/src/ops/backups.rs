//! Manual backups, through [`rosbackup_core::manual::request`] like every other door (the
//! CLI, the NATS trigger); with a wait, followed to the outcome, or answered `pending` at
//! once when no worker serves the queue.

use super::*;

/// Queue a manual backup of a device the caller may see (admins), or join the one it
/// has, through [`rosbackup_core::manual::request`] like every other door.
pub async fn request_backup(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<Requested> {
    require_admin(c)?;
    enqueue_manual(s, c, id).await
}

pub(super) async fn enqueue_manual(s: &WebState, c: &Caller, id: Uuid) -> ApiResult<Requested> {
    Ok(rosbackup_core::manual::request(s.store(), s.queue(), s.metrics(), id, c.tenant()).await?)
}

/// A manual backup (admins): queued, or followed to its outcome with `wait` (for at most
/// `timeout` seconds, capped at the server's manual timeout). `run` is set when it
/// finished.
pub async fn backup(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    p: &BackupParams,
) -> ApiResult<BackupOutcome> {
    require_admin(c)?;
    let max = s.settings().manual_timeout;
    let timeout = match p.timeout {
        None => max,
        Some(0) => {
            return Err(ApiError::bad_request(
                "timeout must be at least 1 second",
                Some("timeout".into()),
            ));
        }
        Some(t) => Duration::from_secs(t).min(max),
    };
    let wait = p.wait.unwrap_or(false);
    // Redis unable to say: wait as before.
    let absent = match wait {
        true => rosbackup_core::manual::no_worker(s.queue())
            .await
            .ok()
            .flatten(),
        false => None,
    };
    let job = enqueue_manual(s, c, id).await?;
    let joined = job.joined.is_some();
    if !wait {
        return Ok(BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: "queued".into(),
            joined,
            run: None,
            problem: None,
        });
    }
    // No worker to run it: pending now rather than after the whole wait (a job that
    // joined a finished backup has its outcome already).
    let finished = job.joined == Some(rosbackup_core::manual::Joined::Recent);
    if let Some(problem) = absent.filter(|_| !finished) {
        return Ok(BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: "pending".into(),
            joined,
            run: None,
            problem: Some(problem),
        });
    }
    let run = rosbackup_core::manual::wait(s.store(), &job.job_id, timeout).await?;
    Ok(match run {
        Some(run) => BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: run.status.clone(),
            joined,
            run: Some(run),
            problem: None,
        },
        None => BackupOutcome {
            job_id: job.job_id,
            device_id: id,
            status: "pending".into(),
            joined,
            run: None,
            problem: None,
        },
    })
}
