//! `rosbackup enqueue`: a manual backup of one device, through the queue.
//!
//! It goes through `manual::request`, the path the API's "back up now" and the NATS
//! trigger take, rather than running the export here: a worker does the backup with its
//! lease, run record and snapshot, so a manual run never overlaps a scheduled one (it
//! answers `locked`) and shows up in the history like any other. `--wait` polls the run record for the job and exits
//! by its outcome, which is what a script or an operator after a fix wants to know.
//!
//! At most one manual backup per device is pending: a request for a device whose manual
//! backup is queued, running or just finished joins it (printed as `joined`, and `--wait`
//! reports that backup's outcome). Past the fleet's bound on manual jobs
//! (`ROSBACKUP_MANUAL_MAX`) the request is refused: a message on stderr and exit 1.
//!
//! Waiting only makes sense with a worker to wait for: the queue's worker heartbeats are
//! read first, and with no live worker the job is still queued (it runs when one starts)
//! but the command says so at once and exits 3 with the job id instead of waiting two
//! minutes in silence. While it waits, one line on stderr when a worker picks the job up
//! (and one if none has after 15 s).

use super::shared::{open_store, store_error};
use crate::config::Env;
use crate::manual::{Joined, Progress};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct EnqueueArgs {
    /// Device id or name.
    device: String,
    /// Wait for the result and print it (exit 1 unless it succeeded; exit 3 at once, the
    /// job queued, when no worker is alive).
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Queue the job (`DATABASE_URL`, `REDIS_URL`); with `--wait`, print the run it became.
pub async fn run(env: &Env, a: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let EnqueueArgs {
        device,
        wait,
        timeout,
        json,
    } = a;
    let store = open_store(env).await?;
    let cfg = crate::config::queue_config(env)?;
    let shown = crate::secret::redact_url(&cfg.redis_url);
    let queue = crate::queue::Queue::connect(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {shown}: {e}"))?;
    let d = store.find_device(&device).await.map_err(store_error)?;
    let absent = match crate::manual::no_worker(&queue).await {
        Ok(absent) => absent,
        Err(e) => {
            eprintln!("warning: cannot read the queue's workers: {e}");
            None
        }
    };
    // A one-shot process exports no metrics; `request` counts into this throwaway
    // registry, as it counts into the enqueuer's for the API and the NATS trigger.
    let metrics = crate::metrics::Metrics::new();
    let job = match crate::manual::request(&store, &queue, &metrics, d.id, None).await {
        Ok(job) => job,
        Err(e @ crate::manual::ManualError::Full { .. }) => {
            // Refused, not broken: say so plainly and exit 1 (a script may retry later).
            eprintln!("refused: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    // What to print: a new job, or the device's manual backup this request joined.
    let verb = match job.joined {
        None => "queued",
        Some(_) => "joined",
    };
    let why = match job.joined {
        None => String::new(),
        Some(Joined::Queued) => " (its manual backup was already queued)".into(),
        Some(Joined::Running) => " (its manual backup was already running)".into(),
        Some(Joined::Recent) => " (its manual backup had just finished)".into(),
    };
    if let Some(problem) = &absent {
        eprintln!("{problem}");
    }
    if wait && let Some(problem) = absent {
        // Queued all the same (it runs when a worker starts), but waiting would be silent
        // for nothing: say so and exit 3 with the job id.
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "job_id": job.job_id,
                    "device_id": d.id,
                    "joined": job.joined.is_some(),
                    "waited": false,
                    "reason": problem,
                })
            );
        } else {
            println!("{verb} {} for {} ({}){why}", job.job_id, d.name, d.id);
        }
        eprintln!(
            "not waiting: {} stays queued and runs when a worker starts",
            job.job_id
        );
        return Ok(ExitCode::from(3));
    }
    if !wait {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "job_id": job.job_id,
                    "device_id": d.id,
                    "joined": job.joined.is_some(),
                })
            );
        } else {
            println!("{verb} {} for {} ({}){why}", job.job_id, d.name, d.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{verb} {}{why}; waiting up to {timeout} s", job.job_id);
    let run = crate::manual::follow(
        &store,
        &queue,
        &job.job_id,
        Duration::from_secs(timeout),
        |p| match p {
            Progress::PickedUp { worker: Some(w) } => eprintln!("picked up by worker {w}"),
            Progress::PickedUp { worker: None } => eprintln!("picked up by a worker"),
            Progress::StillQueued { waited } => eprintln!(
                "still queued after {} s: no worker has taken it yet (busy workers, or a backlog)",
                waited.as_secs()
            ),
        },
    )
    .await
    .map_err(store_error)?;
    let Some(run) = run else {
        eprintln!(
            "no result within {timeout} s; {} is still queued (are workers running?)",
            job.job_id
        );
        return Ok(ExitCode::FAILURE);
    };
    let ok = run.status == "success";
    if json {
        println!("{}", serde_json::to_string(&run)?);
    } else if ok {
        println!(
            "{}: success, sha256 {}, {} bytes, {} ms",
            d.name,
            run.sha256.as_deref().unwrap_or(""),
            run.bytes.unwrap_or(0),
            run.duration_ms
        );
    } else {
        let kind = run.error_kind.as_deref().unwrap_or(run.status.as_str());
        let message = run.error_message.as_deref().unwrap_or("");
        let hint = kind
            .parse::<crate::ErrorKind>()
            .ok()
            .filter(|k| !message.contains(k.hint()))
            .map(|k| format!(" ({})", k.hint()))
            .unwrap_or_default();
        println!(
            "{}: {}{}: {}{hint}",
            d.name,
            run.status,
            run.error_kind
                .as_deref()
                .map(|k| format!(" [{k}]"))
                .unwrap_or_default(),
            run.error_message.as_deref().unwrap_or("")
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
