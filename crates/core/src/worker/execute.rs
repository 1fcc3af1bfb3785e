//! One job from start to finish, as I/O around the decisions in [`super::rules`]: check
//! that the device is online, take the lease (whose statement returns the device row, its
//! credentials and every fact decided on before the export), apply the skip rules to that
//! row, back up under the lease, and write the outcome fenced by the lease token.
//!
//! With the Go poller's lock on (the default), the online check is not a round trip of
//! its own: the lock's script reads the status before it takes the lock, under the lease,
//! so a backup costs Redis two round trips (lock, release) instead of three, and an
//! offline device's skip releases the lease in the statement that records the skip, so it
//! still costs PostgreSQL two statements (the lease instead of the device read).
//!
//! Why so few round trips (issue #20): the shared services' work per backup bounds a
//! fleet, not the worker's, so a successful backup costs PostgreSQL three statements —
//! the lease, the fence right before publishing, and the outcome (state, run row, claim
//! and lease released, in one statement) — and only two of them write: the fence of an
//! export that ends before the first renewal is due reads the lease instead of renewing
//! it ([`rules::fence`]). Renewals beside the export only run when it outlives a third
//! of the lease. `tests/it/statement_counts.rs` holds us to that count.
//!
//! The export's timeout is the device's ([`crate::export_timeout`]: its override, its
//! credential profile's, else adapted to its recent runs), decided right after the lease
//! and before the Go poller's lock, whose TTL follows it; the run records it.
//!
//! A binary backup (issue #19), when due, runs on the export's SSH session after the
//! snapshot is published and is recorded after the text outcome, with its own run row,
//! kind, metric and backoff ([`crate::binary`]): it never changes the text backup's.

use super::JobEnv;
use super::group::Enlisted;
use super::retry::{bounded, refused_for_good, retry_transient, sqlstate};
use super::rules::{self, Failure, JobReport, Outcome, Skip, SkipRecord};
use crate::backup::{self, BackupError};
use crate::binary;
use crate::credentials::CredentialError;
use crate::device::binary::{BinaryError, BinaryErrorKind, BinaryFile};
use crate::device::{ExportError, ExportOptions, JumpHost, Target};
use crate::export_timeout::{self, Effective, TimeoutSource};
use crate::jump::{self, SealedJump};
use crate::marks::{self, Mark};
use crate::queue::BackupJob;
use crate::seed_lock::{self, Attempt, SeedLock};
use crate::store::{
    AppliedTimeout, Credentials, Device, Lease, LeaseAttempt, LeaseFacts, RunRecord, RunStatus,
    SealedCredentials, StoreError, Trigger,
};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Run one job. `worker` names the execution in the run history.
pub async fn execute(env: &JobEnv, job: &BackupJob, worker: &str) -> Result<JobReport, StoreError> {
    let started_at = Utc::now();
    // A Redis hiccup here must not fail the backup: the seed's rule treats an unknown
    // status as "maybe online". Without the Go poller's lock, an offline device is read
    // and skipped without a lease; any other goes straight to the lease, whose statement
    // returns the device row (one round trip fewer per backup than reading it first,
    // issue #20). With the lock, the status is read by the lock's script under the lease
    // instead (one Redis round trip for both, issue #20), and an offline device's skip
    // releases the lease in the statement that records it.
    if !env.backup.seed_lock
        && !env
            .queue
            .device_online(&job.device_id)
            .await
            .unwrap_or(true)
    {
        return skip_unleased(env, job, worker, started_at, |_| Skip::Offline).await;
    }

    marks::mark(Mark::Prechecked);

    // ---- the lease ----
    let lease = Lease {
        device_id: job.device_id,
        job_id: job.job_id.clone(),
        token: uuid::Uuid::new_v4(),
        worker: worker.to_string(),
        ttl: env.lease_ttl,
    };
    let (starts, previous, device, credentials, facts, leased_at) = loop {
        // The lease runs from no earlier than this moment (the database stamps it later).
        let asked = Instant::now();
        match bounded(env.leases.acquire(&lease)).await? {
            LeaseAttempt::Acquired {
                takeover,
                previous,
                starts,
                device,
                credentials,
                facts,
            } => {
                if takeover {
                    env.metrics.lease_takeovers.inc();
                    info!("took over an expired lease");
                }
                break (starts, previous, *device, credentials, facts, asked);
            }
            LeaseAttempt::NoDevice => {
                debug!("device no longer exists; job ends");
                return Ok(JobReport::quiet(RunStatus::Skipped, "device removed"));
            }
            LeaseAttempt::Held { job_id, expires_at } if job_id == job.job_id => {
                // This very job is still leased by an execution presumed dead (apalis
                // re-queued it). Wait for that lease to expire; never overlap.
                let wait = (expires_at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(env.lease_ttl)
                    + Duration::from_millis(200);
                debug!(
                    ?wait,
                    "waiting for the previous execution's lease to expire"
                );
                tokio::time::sleep(wait).await;
            }
            LeaseAttempt::Held { expires_at, .. } => {
                let locked = Skip::Locked { until: expires_at };
                return skip_unleased(env, job, worker, started_at, |_| locked).await;
            }
        }
    };
    // Decide on the row read under the lease: another execution may have pinned a host
    // key (never send the password to whatever key answers), blocked the device, changed
    // its failure count, or finished this very job (the one we waited for).
    if let Some(skip) = rules::precheck(&device, job) {
        return skip_job(env, job, &device, worker, started_at, &skip, Some(&lease)).await;
    }
    // The export timeout for this run (issue #18): decided before the Go poller's lock,
    // whose TTL follows it, from the facts the lease's statement returned.
    let timeout = export_timeout_for(env, &device, &facts);
    // The Go poller's lock, for fleets where its pollers still run beside us; its script
    // reads the device's online status first.
    let mut redis = env.queue.connection();
    let seed = if env.backup.seed_lock {
        let ttl = seed_lock::ttl(timeout.duration());
        let status = crate::queue::status_key(&device.id);
        match SeedLock::acquire(
            &mut redis,
            &device.id,
            &status,
            ttl,
            &lease.token,
            previous.as_ref(),
        )
        .await
        {
            Ok(Attempt::Obtained(lock)) => Some(lock),
            Ok(Attempt::Offline) => {
                let skip = Skip::Offline;
                return skip_job(env, job, &device, worker, started_at, &skip, Some(&lease)).await;
            }
            Ok(Attempt::Held(left)) => {
                debug!("the Go poller's lock is held: another poller is backing up this device");
                let left = chrono::Duration::from_std(left.unwrap_or(env.lease_ttl))
                    .unwrap_or(chrono::Duration::seconds(30));
                let skip = Skip::Locked {
                    until: Utc::now() + left,
                };
                return skip_job(env, job, &device, worker, started_at, &skip, Some(&lease)).await;
            }
            Err(e) => {
                // A Go poller cannot take its lock either while Redis fails (it skips),
                // so our lease alone still keeps the device to one backup; the status is
                // unknown, which the seed's rule reads as "maybe online".
                warn!(error = %e, "could not take the Go poller's lock; going on under our lease");
                None
            }
        }
    } else {
        None
    };
    env.held
        .lock()
        .map(|mut h| h.insert(job.job_id.clone(), lease.clone()))
        .ok();
    let result = run_leased(
        env,
        job,
        (&device, &credentials, &facts),
        &lease,
        starts,
        started_at,
        (leased_at, timeout),
    )
    .await;
    env.held.lock().map(|mut h| h.remove(&job.job_id)).ok();
    if let Some(lock) = seed
        && let Err(e) = lock.release(&mut redis).await
    {
        warn!(error = %e, "could not release the Go poller's lock; it expires on its own");
    }
    result
}

/// A skip decided without the lease (the device is offline, or another job holds its
/// lease): read the device, and carry out the skip its row calls for — the skip rules'
/// (removed, stale, superseded, disabled, blocked) before `otherwise`.
async fn skip_unleased(
    env: &JobEnv,
    job: &BackupJob,
    worker: &str,
    started_at: DateTime<Utc>,
    otherwise: impl FnOnce(&Device) -> Skip,
) -> Result<JobReport, StoreError> {
    let Some(device) = bounded(env.store.device(job.device_id)).await? else {
        debug!("device no longer exists; job ends");
        return Ok(JobReport::quiet(RunStatus::Skipped, "device removed"));
    };
    let skip = rules::precheck(&device, job).unwrap_or_else(|| otherwise(&device));
    skip_job(env, job, &device, worker, started_at, &skip, None).await
}

/// Carry out a skip: count it, give back `lease` when it was decided under one, write
/// what [`rules::skip_effect`] says, report it. A skip recorded with a rescheduled run
/// (offline) releases the lease in its own statement; any other releases it first.
async fn skip_job(
    env: &JobEnv,
    job: &BackupJob,
    device: &Device,
    worker: &str,
    started_at: DateTime<Utc>,
    skip: &Skip,
    lease: Option<&Lease>,
) -> Result<JobReport, StoreError> {
    let effect = rules::skip_effect(skip, job.trigger == Trigger::Manual);
    if let Some(lease) = lease
        && !matches!(effect.record, SkipRecord::SkippedAndRescheduled { .. })
    {
        bounded(env.store.release_lease(lease)).await?;
    }
    if let Some(label) = effect.metric {
        env.metrics.backup_total.with_label_values(&[label]).inc();
    }
    let run = |status: RunStatus, kind: Option<String>, message: String| RunRecord {
        device_id: device.id,
        tenant_id: device.tenant_id,
        job_id: job.job_id.clone(),
        trigger: job.trigger,
        worker: worker.to_string(),
        started_at,
        finished_at: Utc::now(),
        status,
        error_kind: kind,
        error_message: Some(message),
        bytes: None,
        sha256: None,
        timeout: None,
    };
    match effect.record {
        SkipRecord::Nothing => {
            debug!(?skip, "job skipped");
        }
        SkipRecord::ReleaseClaim => {
            bounded(env.store.release_claim(device.id, &job.job_id)).await?;
        }
        SkipRecord::ReleaseClaimUntil(until) => {
            bounded(env.store.release_claim_until(device.id, &job.job_id, until)).await?;
        }
        SkipRecord::Run {
            status,
            error_kind,
            message,
        } => {
            bounded(
                env.store
                    .record_run(&run(status, error_kind, message), env.keep_runs),
            )
            .await?;
        }
        SkipRecord::SkippedAndRescheduled { message } => {
            let sched = env.schedule.for_device(
                device.backup_interval_seconds,
                device.backup_cron.as_deref(),
            );
            let next = sched.next_after(Utc::now());
            bounded(env.store.record_skip(
                &run(RunStatus::Skipped, None, message),
                next,
                env.keep_runs,
                lease,
            ))
            .await?;
        }
    }
    Ok(effect.report)
}

/// The export timeout of a device's run, decided by [`export_timeout::effective`] from
/// its overrides and recent runs, as its lease's statement returned them.
fn export_timeout_for(env: &JobEnv, device: &Device, facts: &LeaseFacts) -> Effective {
    let inputs = export_timeout::inputs_from_lease(device.export_timeout_seconds, facts);
    let e = export_timeout::effective(&env.backup.timeouts(), &inputs);
    if e.source != TimeoutSource::Fleet {
        debug!(
            timeout_seconds = e.seconds,
            source = e.source.as_str(),
            "export timeout"
        );
    }
    e
}

/// The part of a job that runs under the lease.
async fn run_leased(
    env: &JobEnv,
    job: &BackupJob,
    (device, credentials, facts): (&Device, &SealedCredentials, &LeaseFacts),
    lease: &Lease,
    starts: i32,
    started_at: DateTime<Utc>,
    (leased_at, timeout): (Instant, Effective),
) -> Result<JobReport, StoreError> {
    // Counted among the jobs whose outcome a group may wait for, until it hands its
    // outcome in or ends without one (issue #20, group commit).
    let enlisted = env.outcomes.enlist();
    let sched = env.schedule.for_device(
        device.backup_interval_seconds,
        device.backup_cron.as_deref(),
    );
    let mut binary_step: Option<BinaryStep> = None;
    // What the run records about its export timeout (`None`: the device was not
    // contacted).
    let mut applied: Option<AppliedTimeout> = None;
    let outcome: Result<backup::Collected, Failure> =
        match rules::given_up(starts, env.max_job_starts) {
            Some(failure) => Err(failure),
            None => {
                // The credentials came with the lease (its own and its profile's, and
                // its jump host candidates with their pinned keys, in the same
                // statement).
                let jump = credentials
                    .jump()
                    .map(|(sealed, source)| (sealed, facts.jump_pin(source).map(str::to_string)));
                let opened = credentials.open(&env.key).and_then(|c| {
                    let j = match &jump {
                        None => None,
                        Some((sealed, pinned)) => Some(JumpHost {
                            known_fingerprint: pinned.clone(),
                            ..sealed.open(&env.key)?
                        }),
                    };
                    Ok((c, j))
                });
                let reaches_device = opened.is_ok();
                env.metrics.backup_active.inc();
                let timer = env.metrics.backup_duration.start_timer();
                let binary_state = binary_state(env, facts);
                let r = backup_under_lease(
                    env,
                    device,
                    lease,
                    leased_at,
                    opened,
                    (timeout, binary_state),
                )
                .await;
                if let Some((sealed, pinned)) = &jump {
                    note_bastion_key(env, device, sealed, pinned.as_deref(), &r).await;
                }
                timer.observe_duration();
                env.metrics.backup_active.dec();
                if reaches_device {
                    env.metrics
                        .export_timeouts
                        .with_label_values(&[timeout.source.as_str()])
                        .inc();
                    applied = Some(AppliedTimeout {
                        seconds: timeout.seconds,
                        source: timeout.source.as_str(),
                        export_ms: None,
                        timed_out: matches!(&r, Err(e) if e.export_timed_out()),
                    });
                }
                match r {
                    Ok(Some((c, b, took))) => {
                        binary_step = b;
                        if let Some(a) = applied.as_mut() {
                            a.export_ms = Some(i64::try_from(took.as_millis()).unwrap_or(i64::MAX));
                        }
                        Ok(c)
                    }
                    Ok(None) => {
                        env.metrics.lease_lost.inc();
                        warn!(
                            "lease lost during the backup; nothing published, no outcome written"
                        );
                        return Ok(JobReport::quiet(RunStatus::Skipped, "lease lost"));
                    }
                    Err(e) => Err(Failure {
                        kind: e.kind(),
                        message: e.to_string(),
                        presented_fingerprint: match &e {
                            BackupError::Export(x) => x.presented_fingerprint().map(str::to_string),
                            _ => None,
                        },
                    }),
                }
            }
        };

    let now = Utc::now();
    let settled = rules::settle(
        device,
        &sched,
        now,
        match &outcome {
            Ok(c) => Outcome::Success {
                sha256: &c.sha256,
                bytes: c.normalized.len(),
                fingerprint: &c.export.fingerprint,
                routeros_version: c.export.routeros_version.as_deref(),
            },
            Err(f) => Outcome::Failed(f),
        },
    );
    let record = RunRecord {
        device_id: device.id,
        tenant_id: device.tenant_id,
        job_id: job.job_id.clone(),
        trigger: job.trigger,
        worker: lease.worker.clone(),
        started_at,
        finished_at: now,
        status: settled.status,
        error_kind: settled.error_kind.clone(),
        error_message: settled.message.clone(),
        bytes: settled.bytes,
        sha256: settled.sha256.clone(),
        timeout: applied,
    };
    let written = write_outcome(env, &enlisted, lease, &record, &settled.state).await?;
    marks::mark(Mark::Recorded);
    if !written {
        env.metrics.lease_lost.inc();
        warn!("lease lost before the outcome was written; a newer execution owns the device");
        return Ok(JobReport::quiet(RunStatus::Skipped, "lease lost"));
    }
    if let (Ok(c), Some(step)) = (&outcome, binary_step) {
        record_binary(env, device, job, c, step).await;
    }
    match &outcome {
        Ok(_) => {
            env.metrics
                .backup_total
                .with_label_values(&["success"])
                .inc();
            info!(
                sha256 = settled.sha256.as_deref().unwrap_or(""),
                bytes = settled.bytes,
                "backup published"
            );
        }
        Err(failure) => {
            env.metrics.backup_total.with_label_values(&["error"]).inc();
            env.metrics
                .backup_errors
                .with_label_values(&[failure.kind.as_str()])
                .inc();
            warn!(
                error_kind = failure.kind.as_str(),
                error = settled.message.as_deref().unwrap_or(""),
                presented_fingerprint = failure.presented_fingerprint.as_deref().unwrap_or(""),
                hint = failure.kind.hint(),
                "backup failed"
            );
        }
    }
    Ok(JobReport {
        status: settled.status,
        error_kind: settled.error_kind,
        message: settled.message,
        sha256: settled.sha256,
    })
}

/// Pin a jump host's key on first use (once per bastion), or remember the key it
/// presented instead of its pinned one. Neither fails the job: the outcome is the
/// device's; a pin that could not be written is taken at the next backup.
async fn note_bastion_key(
    env: &JobEnv,
    device: &Device,
    bastion: &SealedJump,
    pinned: Option<&str>,
    result: &Result<Option<UnderLease>, BackupError>,
) {
    let (host, port) = (bastion.host.as_str(), bastion.port());
    let written = match result {
        Ok(Some((c, _, _))) if pinned.is_none() => match &c.export.bastion_fingerprint {
            Some(fp) if !fp.is_empty() => {
                info!(bastion = %jump::display(None, host, port), fingerprint = %fp, "pinned the jump host's key on first use");
                crate::bastions::record_pin(&env.store, device.tenant_id, host, port, fp).await
            }
            _ => Ok(()),
        },
        Err(BackupError::Export(ExportError::BastionHostKeyMismatch { got, .. })) => {
            crate::bastions::record_mismatch(&env.store, device.tenant_id, host, port, got).await
        }
        _ => Ok(()),
    };
    if let Err(e) = written {
        warn!(error = %e, "could not record the jump host's key");
    }
}

/// Write the outcome fenced by the lease (`Ok(false)`: the lease was lost). When
/// PostgreSQL refuses the row for good (a value it cannot store, e.g. device-supplied
/// text), retrying would fail the same way forever and the device would be exported
/// again and again with no run recorded, so the outcome is written once more without any
/// device-supplied text.
async fn write_outcome(
    env: &JobEnv,
    enlisted: &Enlisted,
    lease: &Lease,
    record: &RunRecord,
    state: &crate::store::StateUpdate,
) -> Result<bool, StoreError> {
    // While the lease holds (the statement is fenced by it), a connection error is asked
    // again rather than failing the job.
    let until = Instant::now() + env.lease_ttl / 2;
    match retry_transient(until, || {
        bounded(
            env.outcomes
                .record(enlisted, lease, record, state, env.keep_runs),
        )
    })
    .await
    {
        Err(err) if refused_for_good(&err) => {
            let code = sqlstate(&err).unwrap_or_default();
            warn!(sqlstate = %code, "outcome refused by PostgreSQL; recording it without device-supplied text");
            let mut record = record.clone();
            let mut state = state.clone();
            state.routeros_version = None;
            record.error_message = Some(format!(
                "the outcome could not be stored as reported (PostgreSQL SQLSTATE {code}); device-supplied text was dropped{}",
                record
                    .error_kind
                    .as_deref()
                    .map(|k| format!("; error kind was {k}"))
                    .unwrap_or_default()
            ));
            bounded(
                env.outcomes
                    .record(enlisted, lease, &record, &state, env.keep_runs),
            )
            .await
        }
        other => other,
    }
}

/// What a backup under the lease brings back: the collected export, the binary step
/// when one ran, and how long the export took (connect to normalized text).
type UnderLease = (backup::Collected, Option<BinaryStep>, Duration);

/// Export (with the run's export timeout), normalize, hash and publish while renewing
/// the lease. `Ok(None)` when the lease was lost: the export is abandoned and nothing is
/// published.
async fn backup_under_lease(
    env: &JobEnv,
    device: &Device,
    lease: &Lease,
    leased_at: Instant,
    credentials: Result<(Credentials, Option<JumpHost>), CredentialError>,
    (timeout, binary_state): (Effective, Option<binary::store::StateRow>),
) -> Result<Option<UnderLease>, BackupError> {
    // A seal our key cannot open is our configuration, not the device: a kind of its
    // own that blocks the device (retrying with the same key opens nothing) instead of
    // `unknown` every 5 minutes.
    let (credentials, jump) = credentials.map_err(BackupError::Credentials)?;
    let target = Target {
        host: device.host.clone(),
        port: u16::try_from(device.ssh_port).unwrap_or(22),
        username: credentials.username,
        password: credentials.password,
        key: credentials.key,
        jump,
        known_fingerprint: device.ssh_host_key_fingerprint.clone(),
        routeros_version: device.routeros_version.clone(),
    };
    // Whether a binary may be due decides whether the export's session is kept open.
    let options = ExportOptions {
        command_timeout: timeout.duration(),
        ..env.backup.export.clone()
    };
    let work = async {
        marks::mark(Mark::ExportStart);
        let exporting = Instant::now();
        let (collected, session) = match &binary_state {
            None => (
                backup::collect_via(
                    &target,
                    &options,
                    env.backup.normalization,
                    Some(&env.bastions),
                )
                .await?,
                None,
            ),
            Some(_) => {
                let (c, s) = backup::collect_session_via(
                    &target,
                    &options,
                    env.backup.normalization,
                    Some(&env.bastions),
                )
                .await?;
                (c, Some(s))
            }
        };
        let took = exporting.elapsed();
        // Fencing before the only externally visible step: publish only while ours. A
        // connection error is asked again (`under_lease` drops this at the lease's
        // deadline); only an answer that the lease is gone, or no answer in time, stops.
        // A fast export only reads the lease; a slow one renews it (`rules::fence`,
        // decided again on each attempt).
        let confirmed = retry_transient(Instant::now() + env.lease_ttl, || async {
            match rules::fence(leased_at.elapsed(), env.lease_ttl) {
                rules::Fence::Confirm => env.store.confirm_lease(lease).await,
                rules::Fence::Renew => env.store.renew_lease(lease).await,
            }
        })
        .await
        .unwrap_or(false);
        if !confirmed {
            if let Some(s) = session {
                s.close().await;
            }
            return Ok(None);
        }
        marks::mark(Mark::Fenced);
        let published = backup::publish_for_job(
            &env.publisher,
            &collected,
            &device.id.to_string(),
            &device.tenant_id.to_string(),
            &lease.job_id,
        )
        .await;
        let step = match (published, session, &binary_state) {
            (Err(e), session, _) => {
                if let Some(s) = session {
                    s.close().await;
                }
                return Err(e.into());
            }
            (Ok(_), Some(session), Some(state)) => {
                marks::mark(Mark::Published);
                let step =
                    take_binary(env, device, &lease.job_id, &session, &collected, state).await;
                session.close().await;
                step
            }
            (Ok(_), session, _) => {
                marks::mark(Mark::Published);
                if let Some(s) = session {
                    s.close().await;
                }
                None
            }
        };
        Ok(Some((collected, step, took)))
    };
    under_lease(env, lease, leased_at, work).await
}

/// Run `work` while the lease holds, and no longer. Renewals run beside it in a task of
/// their own (a slow PostgreSQL never delays the export), each moving the deadline to
/// when it was asked + the TTL; `work` is dropped — its SSH session disconnected — at
/// that deadline minus a margin, before another worker can take the lease over, or as
/// soon as a renewal finds the lease gone. `Ok(None)`: the lease was lost or could not be
/// confirmed in time; nothing may be recorded.
///
/// The first renewal is due a third of the TTL after the lease was asked for
/// (`leased_at`), as the deadline is counted from then too, not a third after this
/// function starts: what ran in between (a lease that waited on a busy device row, the Go
/// poller's lock) must not eat the time the first renewal has to answer in. (It did: a
/// lease that waited 1.3 s of a 2 s TTL left its first renewal due after the deadline.)
async fn under_lease<W, T>(
    env: &JobEnv,
    lease: &Lease,
    leased_at: Instant,
    work: W,
) -> Result<Option<T>, BackupError>
where
    W: std::future::Future<Output = Result<Option<T>, BackupError>>,
{
    let ttl = env.lease_ttl;
    let margin = rules::lease_margin(ttl);
    let (tx, mut rx) = tokio::sync::watch::channel(Some(leased_at + ttl));
    let renewals = tokio::spawn({
        let (store, lease) = (env.store.clone(), lease.clone());
        async move {
            // After a failed renewal the next one comes sooner (a restarting PostgreSQL
            // is back in well under a second), never later than the regular third.
            let mut due = leased_at + ttl / 3;
            loop {
                tokio::time::sleep_until(due.into()).await;
                let asked = Instant::now();
                match store.renew_lease(&lease).await {
                    Ok(true) => {
                        due = Instant::now() + ttl / 3;
                        if tx.send(Some(asked + ttl)).is_err() {
                            return;
                        }
                    }
                    Ok(false) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, "lease renewal failed");
                        due =
                            Instant::now() + (ttl / 10).clamp(Duration::from_millis(200), ttl / 3);
                    }
                }
            }
        }
    });
    // The task ends with this function, however it returns.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _renewals = AbortOnDrop(renewals);
    tokio::pin!(work);
    loop {
        let Some(valid_until) = *rx.borrow_and_update() else {
            return Ok(None);
        };
        let deadline = valid_until.checked_sub(margin).unwrap_or(valid_until);
        tokio::select! {
            r = &mut work => return r,
            _ = tokio::time::sleep_until(deadline.into()) => {
                warn!(
                    "the lease could not be renewed in time; disconnecting before it can expire"
                );
                return Ok(None);
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    // The renewal task is gone (it cannot be while we wait): stop safely.
                    return Ok(None);
                }
            }
        }
    }
}

/// A binary step's result, carried from the session to its recording.
struct BinaryStep {
    started_at: DateTime<Utc>,
    password: crate::Secret,
    result: Result<BinaryFile, BinaryError>,
}

/// The device's binary state when a binary may be due (its mode, after the device's
/// override, is not `off` and the step is not backing off); `None` otherwise. Read with
/// the lease ([`LeaseFacts`]).
fn binary_state(env: &JobEnv, facts: &LeaseFacts) -> Option<binary::store::StateRow> {
    let state = binary::store::state_from_lease(facts);
    let mode = state.facts.mode(env.backup.binary.mode);
    let backing_off = state.facts.retry_after.is_some_and(|t| t > Utc::now());
    if mode == binary::Mode::Off {
        None
    } else if backing_off {
        env.metrics
            .binary_total
            .with_label_values(&["skipped"])
            .inc();
        debug!("binary backup backing off after failures");
        None
    } else {
        Some(state)
    }
}

/// Decide on the export's hash and, when due, take the binary on the open session.
async fn take_binary(
    env: &JobEnv,
    device: &Device,
    job_id: &str,
    session: &crate::device::Session,
    collected: &backup::Collected,
    state: &binary::store::StateRow,
) -> Option<BinaryStep> {
    let settings = &env.backup.binary;
    let decision = binary::decide(
        settings.mode,
        &state.facts,
        &collected.sha256,
        Utc::now(),
        settings.max_age,
    );
    let binary::Decision::Take(why) = decision else {
        env.metrics
            .binary_total
            .with_label_values(&["skipped"])
            .inc();
        debug!(?decision, "no binary backup this time");
        return None;
    };
    let started_at = Utc::now();
    let password = match binary::store::device_password(&env.store, &env.key, device.id).await {
        Ok(p) => p,
        Err(e) => {
            // Its own failure (a stale key after a rotation, a database error), with a run
            // row and the step's backoff like any other.
            let kind = BinaryErrorKind::BinaryFailed;
            let message = format!("the device's backup password is unavailable: {e}");
            warn!(error_kind = kind.as_str(), error = %message, "binary backup failed");
            env.metrics.binary_total.with_label_values(&["error"]).inc();
            env.metrics
                .binary_errors
                .with_label_values(&[kind.as_str()])
                .inc();
            if let Err(e) = binary::store::record_failure(
                &env.store,
                device.id,
                job_id,
                started_at,
                kind.as_str(),
                &message,
                Utc::now(),
            )
            .await
            {
                warn!(error = %e, "could not record the binary backup's failure");
            }
            return None;
        }
    };
    debug!(?why, "taking a binary backup");
    let result = backup::binary(
        session,
        collected,
        binary::file_name(job_id),
        password.clone(),
        settings,
    )
    .await;
    Some(BinaryStep {
        started_at,
        password,
        result,
    })
}

/// Store a fetched binary, or record the step's failure; count and log either. Never
/// fails the job: the text outcome is already written.
async fn record_binary(
    env: &JobEnv,
    device: &Device,
    job: &BackupJob,
    collected: &backup::Collected,
    step: BinaryStep,
) {
    let now = Utc::now();
    let (kind, message) = match &step.result {
        Ok(file) => {
            let collected_at = DateTime::parse_from_rfc3339(&collected.collected_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now);
            let new = binary::store::NewBinary {
                device_id: device.id,
                tenant_id: device.tenant_id,
                job_id: &job.job_id,
                collected_at,
                data: &file.data,
                config_sha256: &collected.sha256,
                routeros_version: collected.export.routeros_version.as_deref(),
                format: file.format.as_str(),
                password: &step.password,
                removed: file.removed,
                started_at: step.started_at,
            };
            match binary::store::record_success(&env.store, &env.key, &new).await {
                Ok(id) => {
                    env.metrics
                        .binary_total
                        .with_label_values(&["success"])
                        .inc();
                    info!(
                        binary_id = id,
                        bytes = file.data.len(),
                        removed = file.removed,
                        "binary backup stored"
                    );
                    return;
                }
                Err(e) => (
                    BinaryErrorKind::BinaryFailed,
                    format!("the binary backup could not be stored: {e}"),
                ),
            }
        }
        Err(e) => (e.kind(), e.to_string()),
    };
    env.metrics.binary_total.with_label_values(&["error"]).inc();
    env.metrics
        .binary_errors
        .with_label_values(&[kind.as_str()])
        .inc();
    warn!(error_kind = kind.as_str(), error = %message, "binary backup failed");
    if let Err(e) = binary::store::record_failure(
        &env.store,
        device.id,
        &job.job_id,
        step.started_at,
        kind.as_str(),
        &message,
        now,
    )
    .await
    {
        warn!(error = %e, "could not record the binary backup's failure");
    }
}
