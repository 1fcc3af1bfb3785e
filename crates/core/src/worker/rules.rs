//! The decisions one job makes, as pure functions of the device row, the job and the
//! clock: whether to skip it and what a skip records ([`precheck`], [`skip_effect`]),
//! when to give a job up ([`given_up`]), and what an outcome writes ([`settle`]).
//!
//! They live apart from the I/O in `execute` so that every rule of the fleet is written
//! once and tested without PostgreSQL, Redis or a device; `execute` only carries out
//! what these functions decide.

use crate::error::ErrorKind;
use crate::queue::BackupJob;
use crate::schedule::{self, Schedule};
use crate::store::{Device, RunStatus, StateUpdate, Trigger};
use chrono::{DateTime, Utc};

/// How a job ended (also what a manual backup reports to its requester).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobReport {
    pub status: RunStatus,
    pub error_kind: Option<String>,
    pub message: Option<String>,
    pub sha256: Option<String>,
}

impl JobReport {
    /// A report without an error kind or hash (skips, lost leases).
    pub fn quiet(status: RunStatus, message: &str) -> Self {
        JobReport {
            status,
            error_kind: None,
            message: Some(message.to_string()),
            sha256: None,
        }
    }
}

/// Why a job does not talk to its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A scheduled job that is no longer the device's outstanding job.
    Stale,
    /// A scheduled job whose due time a manual backup moved since it was claimed.
    Superseded,
    Disabled,
    /// Blocked after `auth_failed` or `host_key_mismatch` until an operator acts.
    Blocked {
        reason: String,
    },
    /// The seed's online status says the device is offline.
    Offline,
    /// Another execution holds the device's lease until `until`.
    Locked {
        until: DateTime<Utc>,
    },
}

/// The checks on the device row before the lease (offline and locked need Redis and the
/// lease, and are decided by the caller). `None`: go on.
pub fn precheck(device: &Device, job: &BackupJob) -> Option<Skip> {
    if job.trigger != Trigger::Manual {
        if device.outstanding_job.as_deref() != Some(job.job_id.as_str()) {
            return Some(Skip::Stale);
        }
        if device.next_due_at.timestamp() > job.due_at + 1 {
            return Some(Skip::Superseded);
        }
    }
    if !device.enabled {
        return Some(Skip::Disabled);
    }
    device.blocked_reason.as_ref().map(|reason| Skip::Blocked {
        reason: reason.clone(),
    })
}

/// What a skip writes to PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipRecord {
    /// Nothing: the job is dropped (another job owns the device's schedule).
    Nothing,
    /// Give the scheduled claim back so the enqueuer schedules the device again.
    ReleaseClaim,
    /// Give the claim back, due again when the other execution's lease ends.
    ReleaseClaimUntil(DateTime<Utc>),
    /// A run row, so the requester of a manual backup sees why.
    Run {
        status: RunStatus,
        error_kind: Option<String>,
        message: String,
    },
    /// A skipped run row and the device's next regular due time.
    SkippedAndRescheduled { message: String },
}

/// A skip's metric label, record and report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipEffect {
    /// The `status` label of the backup counter, if the skip counts.
    pub metric: Option<&'static str>,
    pub record: SkipRecord,
    pub report: JobReport,
}

/// What a skip records. Manual requests get a run row (their requester waits for an
/// outcome); scheduled jobs give their claim back instead.
pub fn skip_effect(skip: &Skip, manual: bool) -> SkipEffect {
    let claim_or_run = |status: RunStatus, kind: Option<&str>, message: &str| {
        if manual {
            SkipRecord::Run {
                status,
                error_kind: kind.map(str::to_string),
                message: message.to_string(),
            }
        } else {
            SkipRecord::ReleaseClaim
        }
    };
    match skip {
        Skip::Stale => SkipEffect {
            metric: None,
            record: SkipRecord::Nothing,
            report: JobReport::quiet(RunStatus::Skipped, "stale job"),
        },
        Skip::Superseded => SkipEffect {
            metric: None,
            record: SkipRecord::ReleaseClaim,
            report: JobReport::quiet(RunStatus::Skipped, "superseded"),
        },
        Skip::Disabled => {
            let message = "device is disabled";
            SkipEffect {
                metric: Some("skipped_disabled"),
                record: claim_or_run(RunStatus::Skipped, None, message),
                report: JobReport::quiet(RunStatus::Skipped, message),
            }
        }
        Skip::Blocked { reason } => {
            let (label, hint) = match reason.as_str() {
                "auth_failed" => ("skipped_auth_blocked", ErrorKind::AuthFailed.hint()),
                // The Go poller's status values have no label of their own for it; it
                // is a credentials block too.
                "credentials_unreadable" => (
                    "skipped_auth_blocked",
                    ErrorKind::CredentialsUnreadable.hint(),
                ),
                _ => ("skipped_hostkey_blocked", ErrorKind::HostKeyMismatch.hint()),
            };
            let message = format!("device is blocked ({reason}): {hint}, or unblock it");
            SkipEffect {
                metric: Some(label),
                record: claim_or_run(RunStatus::Failed, Some(reason), &message),
                report: JobReport {
                    status: RunStatus::Failed,
                    error_kind: Some(reason.clone()),
                    message: Some(message),
                    sha256: None,
                },
            }
        }
        Skip::Offline => {
            let message = "device is offline";
            SkipEffect {
                metric: Some("skipped_offline"),
                record: SkipRecord::SkippedAndRescheduled {
                    message: message.to_string(),
                },
                report: JobReport::quiet(RunStatus::Skipped, message),
            }
        }
        Skip::Locked { until } => {
            let message = "another backup of this device is running";
            SkipEffect {
                metric: Some("skipped"),
                record: if manual {
                    SkipRecord::Run {
                        status: RunStatus::Locked,
                        error_kind: None,
                        message: message.to_string(),
                    }
                } else {
                    SkipRecord::ReleaseClaimUntil(*until)
                },
                report: JobReport::quiet(RunStatus::Locked, message),
            }
        }
    }
}

/// How long before its lease could expire an execution stops talking to its device: a
/// tenth of the TTL (3 s of the default 30 s), at least 100 ms. Renewals come every third
/// of the TTL, so an execution whose renewals succeed never reaches it.
pub fn lease_margin(ttl: std::time::Duration) -> std::time::Duration {
    (ttl / 10).max(std::time::Duration::from_millis(100))
}

/// Whether a group of outcomes waiting to be written goes now (issue #20, group commit;
/// `worker::group`): when it is full (`max`), or when no job of this worker could still
/// join it (`may_join`: jobs under a lease that have not handed in their outcome yet) —
/// waiting then would only delay the ones waiting. Otherwise it waits, at most the
/// linger, for the outcomes of the jobs still running.
pub fn group_ready(pending: usize, may_join: usize, max: usize) -> bool {
    pending >= max.max(1) || may_join == 0
}

/// How the fence before publishing makes sure the lease is still ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Read the lease (token ours, not expired): a statement that writes nothing.
    Confirm,
    /// Renew it, as the renewals beside the export do: a write.
    Renew,
}

/// The fence's kind for an execution whose lease was asked for `since_lease` ago (issue
/// #20: the renewal at the fence was one of a fast backup's three committed writes).
/// Before the first renewal is due (a third of the TTL) the lease taken at the start has
/// more than two thirds of the TTL left — at least what a renewal every third leaves —
/// so reading it is enough: nobody else can take it before it expires, and only its
/// holder can clear it. Later, the fence renews as before, so the publish and the
/// outcome still get most of a TTL. Both kinds stop the publish when the lease is gone.
pub fn fence(since_lease: std::time::Duration, ttl: std::time::Duration) -> Fence {
    if since_lease < ttl / 3 {
        Fence::Confirm
    } else {
        Fence::Renew
    }
}

/// Why a backup failed: its kind, a message for people, and the host key the device
/// presented when that is the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    pub presented_fingerprint: Option<String>,
}

/// A job id that took the lease `starts` times has killed its worker `starts - 1` times:
/// past `max_starts` it is recorded as a failure without contacting the device.
pub fn given_up(starts: i32, max_starts: i32) -> Option<Failure> {
    (starts > max_starts).then(|| Failure {
        kind: ErrorKind::Unknown,
        message: format!(
            "this job was interrupted {} times (its worker crashed or was killed); giving up on it",
            starts - 1
        ),
        presented_fingerprint: None,
    })
}

/// What a finished backup reports, in the terms [`settle`] needs.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Success {
        sha256: &'a str,
        bytes: usize,
        fingerprint: &'a str,
        routeros_version: Option<&'a str>,
    },
    Failed(&'a Failure),
}

/// What an outcome writes: the run row's fields and the device's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub status: RunStatus,
    pub error_kind: Option<String>,
    pub message: Option<String>,
    pub sha256: Option<String>,
    pub bytes: Option<i64>,
    pub state: StateUpdate,
}

/// The outcome → record mapping. A success resets the failure count, pins the host key
/// by trust on first use and schedules the next regular backup. A failure whose kind
/// blocks (`auth_failed`, `host_key_mismatch`) blocks the device; any other backs off
/// (5 min, 15 min, 1 h, or the regular schedule when that comes first).
pub fn settle(
    device: &Device,
    schedule: &Schedule,
    now: DateTime<Utc>,
    outcome: Outcome<'_>,
) -> Settled {
    match outcome {
        Outcome::Success {
            sha256,
            bytes,
            fingerprint,
            routeros_version,
        } => Settled {
            status: RunStatus::Success,
            error_kind: None,
            message: None,
            sha256: Some(sha256.to_string()),
            bytes: Some(bytes as i64),
            state: StateUpdate {
                next_due_at: schedule.next_after(now),
                consecutive_failures: 0,
                backoff_until: None,
                blocked_reason: None,
                tofu_fingerprint: Some(fingerprint.to_string()),
                routeros_version: routeros_version
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
            },
        },
        Outcome::Failed(failure) => {
            let failures = device.consecutive_failures.saturating_add(1);
            let (blocked, next, backoff_until) = if failure.kind.blocks() {
                // Blocked devices are not scheduled; next_due_at only matters once
                // unblocked (then it is set to now).
                (
                    Some(failure.kind.as_str().to_string()),
                    schedule.next_after(now),
                    None,
                )
            } else {
                let next = schedule::due_after_failure(schedule, now, failures);
                (None, next, Some(next))
            };
            Settled {
                status: RunStatus::Failed,
                error_kind: Some(failure.kind.as_str().to_string()),
                message: Some(failure.message.clone()),
                sha256: None,
                bytes: None,
                state: StateUpdate {
                    next_due_at: next,
                    consecutive_failures: failures,
                    backoff_until,
                    blocked_reason: blocked,
                    tofu_fingerprint: None,
                    routeros_version: None,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;
    use uuid::Uuid;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().expect("valid time")
    }

    fn device(job: Option<&str>, due: i64) -> Device {
        Device {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            name: "r1".into(),
            host: "127.0.0.1".into(),
            ssh_port: 22,
            username: "backup".into(),
            ssh_host_key_fingerprint: None,
            routeros_version: None,
            enabled: true,
            backup_interval_seconds: None,
            backup_cron: None,
            created_at: at(0),
            updated_at: at(0),
            next_due_at: at(due),
            last_attempt_at: None,
            last_success_at: None,
            last_status: None,
            last_error_kind: None,
            last_error_message: None,
            consecutive_failures: 0,
            backoff_until: None,
            blocked_reason: None,
            blocked_at: None,
            last_sha256: None,
            last_bytes: None,
            outstanding_job: job.map(str::to_string),
            outstanding_since: None,
            lease_job: None,
            lease_worker: None,
            lease_expires_at: None,
            lease_starts: 0,
            credential_profile_id: None,
            has_ssh_key: false,
            export_timeout_seconds: None,
            jump_host: None,
            jump_direct: false,
        }
    }

    fn job(trigger: Trigger, id: &str, due: i64) -> BackupJob {
        BackupJob {
            device_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            trigger,
            due_at: due,
            job_id: id.into(),
        }
    }

    #[test]
    fn scheduled_jobs_must_be_the_outstanding_one_and_not_superseded() {
        let j = job(Trigger::Scheduled, "backup:x:100", 100);
        assert_eq!(precheck(&device(Some("backup:x:100"), 100), &j), None);
        assert_eq!(precheck(&device(Some("backup:x:100"), 101), &j), None);
        assert_eq!(
            precheck(&device(Some("backup:x:40"), 100), &j),
            Some(Skip::Stale)
        );
        assert_eq!(precheck(&device(None, 100), &j), Some(Skip::Stale));
        assert_eq!(
            precheck(&device(Some("backup:x:100"), 102), &j),
            Some(Skip::Superseded)
        );
        // A manual job is neither stale nor superseded.
        let m = job(Trigger::Manual, "manual:x:1", 0);
        assert_eq!(precheck(&device(None, 500), &m), None);
    }

    #[test]
    fn disabled_comes_before_blocked_and_both_apply_to_manual_jobs() {
        let m = job(Trigger::Manual, "manual:x:1", 0);
        let mut d = device(None, 0);
        d.blocked_reason = Some("auth_failed".into());
        assert_eq!(
            precheck(&d, &m),
            Some(Skip::Blocked {
                reason: "auth_failed".into()
            })
        );
        d.enabled = false;
        assert_eq!(precheck(&d, &m), Some(Skip::Disabled));
    }

    #[test]
    fn skips_release_the_claim_when_scheduled_and_record_a_run_when_manual() {
        let blocked = Skip::Blocked {
            reason: "host_key_mismatch".into(),
        };
        let s = skip_effect(&blocked, false);
        assert_eq!(s.metric, Some("skipped_hostkey_blocked"));
        assert_eq!(s.record, SkipRecord::ReleaseClaim);
        assert_eq!(s.report.status, RunStatus::Failed);
        assert_eq!(s.report.error_kind.as_deref(), Some("host_key_mismatch"));
        let m = skip_effect(&blocked, true);
        assert!(matches!(
            &m.record,
            SkipRecord::Run { status: RunStatus::Failed, error_kind: Some(k), message }
                if k == "host_key_mismatch" && message.contains("unblock")
        ));
        let auth = skip_effect(
            &Skip::Blocked {
                reason: "auth_failed".into(),
            },
            false,
        );
        assert_eq!(auth.metric, Some("skipped_auth_blocked"));

        let d = skip_effect(&Skip::Disabled, true);
        assert_eq!(d.metric, Some("skipped_disabled"));
        assert!(matches!(
            d.record,
            SkipRecord::Run {
                status: RunStatus::Skipped,
                error_kind: None,
                ..
            }
        ));
        assert_eq!(
            skip_effect(&Skip::Disabled, false).record,
            SkipRecord::ReleaseClaim
        );

        let until = at(1_000);
        let l = skip_effect(&Skip::Locked { until }, false);
        assert_eq!(l.record, SkipRecord::ReleaseClaimUntil(until));
        assert_eq!(
            l.metric,
            Some("skipped"),
            "the Go poller's label for a locked device"
        );
        assert_eq!(l.report.status, RunStatus::Locked);
        assert!(matches!(
            skip_effect(&Skip::Locked { until }, true).record,
            SkipRecord::Run {
                status: RunStatus::Locked,
                ..
            }
        ));

        // Offline reschedules whatever the trigger; stale writes nothing.
        for manual in [false, true] {
            assert!(matches!(
                skip_effect(&Skip::Offline, manual).record,
                SkipRecord::SkippedAndRescheduled { .. }
            ));
            assert_eq!(
                skip_effect(&Skip::Stale, manual).record,
                SkipRecord::Nothing
            );
        }
        assert_eq!(
            skip_effect(&Skip::Superseded, false).record,
            SkipRecord::ReleaseClaim
        );
    }

    #[test]
    fn the_lease_margin_is_a_tenth_of_the_ttl_and_below_a_renewal_period() {
        assert_eq!(
            lease_margin(Duration::from_secs(30)),
            Duration::from_secs(3)
        );
        assert_eq!(
            lease_margin(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        for ttl in [1, 6, 30, 300].map(Duration::from_secs) {
            assert!(lease_margin(ttl) < ttl / 3, "{ttl:?}");
        }
    }

    #[test]
    fn the_fence_reads_the_lease_until_the_first_renewal_is_due_then_renews() {
        let ttl = Duration::from_secs(30);
        assert_eq!(fence(Duration::ZERO, ttl), Fence::Confirm);
        assert_eq!(fence(Duration::from_millis(9_999), ttl), Fence::Confirm);
        assert_eq!(fence(Duration::from_secs(10), ttl), Fence::Renew);
        assert_eq!(fence(Duration::from_secs(29), ttl), Fence::Renew);
        assert_eq!(fence(Duration::from_secs(3600), ttl), Fence::Renew);
        // Whatever the TTL, a confirmed lease has more than two thirds of it left, more
        // than the margin the execution stops at.
        for ttl in [1, 6, 30, 300].map(Duration::from_secs) {
            let last_confirmed = ttl / 3 - Duration::from_millis(1);
            assert_eq!(fence(last_confirmed, ttl), Fence::Confirm);
            assert!(
                ttl - last_confirmed > lease_margin(ttl) + ttl / 2,
                "{ttl:?}"
            );
        }
    }

    #[test]
    fn a_job_is_given_up_past_its_start_limit() {
        assert_eq!(given_up(3, 3), None);
        let f = given_up(4, 3).expect("given up");
        assert_eq!(f.kind, ErrorKind::Unknown);
        assert!(f.message.contains("interrupted 3 times"), "{}", f.message);
    }

    #[test]
    fn success_resets_failures_pins_the_key_and_schedules_the_interval() {
        let mut d = device(None, 0);
        d.consecutive_failures = 4;
        let sched = Schedule::Interval(Duration::from_secs(3600));
        let s = settle(
            &d,
            &sched,
            at(10_000),
            Outcome::Success {
                sha256: "abc",
                bytes: 42,
                fingerprint: "SHA256:k",
                routeros_version: Some(""),
            },
        );
        assert_eq!(s.status, RunStatus::Success);
        assert_eq!((s.sha256.as_deref(), s.bytes), (Some("abc"), Some(42)));
        assert_eq!(s.state.consecutive_failures, 0);
        assert_eq!(s.state.next_due_at, at(13_600));
        assert_eq!(s.state.tofu_fingerprint.as_deref(), Some("SHA256:k"));
        assert_eq!(
            s.state.routeros_version, None,
            "an empty version is not stored"
        );
        assert_eq!(s.state.backoff_until, None);
    }

    #[test]
    fn failures_back_off_and_blocking_kinds_block() {
        let sched = Schedule::Interval(Duration::from_secs(24 * 3600));
        let now = at(100_000);
        let timeout = Failure {
            kind: ErrorKind::Timeout,
            message: "slow".into(),
            presented_fingerprint: None,
        };
        let mut d = device(None, 0);
        let mut backoffs = vec![];
        for _ in 0..4 {
            let s = settle(&d, &sched, now, Outcome::Failed(&timeout));
            assert_eq!(s.status, RunStatus::Failed);
            assert_eq!(s.error_kind.as_deref(), Some("timeout"));
            assert_eq!(s.state.blocked_reason, None);
            assert_eq!(s.state.backoff_until, Some(s.state.next_due_at));
            backoffs.push((s.state.next_due_at - now).num_minutes());
            d.consecutive_failures = s.state.consecutive_failures;
        }
        assert_eq!(backoffs, [5, 15, 60, 60]);

        let auth = Failure {
            kind: ErrorKind::AuthFailed,
            message: "denied".into(),
            presented_fingerprint: None,
        };
        let s = settle(&device(None, 0), &sched, now, Outcome::Failed(&auth));
        assert_eq!(s.state.blocked_reason.as_deref(), Some("auth_failed"));
        assert_eq!(s.state.backoff_until, None);
        assert_eq!(s.state.tofu_fingerprint, None);
        assert_eq!(s.message.as_deref(), Some("denied"));

        // A password the worker's key does not open blocks too (never `unknown`, never
        // retried every few minutes), and a blocked device says why and what to do.
        let unreadable = Failure {
            kind: crate::backup::BackupError::Credentials(
                crate::credentials::CredentialError::Decrypt,
            )
            .kind(),
            message: "cannot open".into(),
            presented_fingerprint: None,
        };
        assert_eq!(unreadable.kind, ErrorKind::CredentialsUnreadable);
        let s = settle(&device(None, 0), &sched, now, Outcome::Failed(&unreadable));
        assert_eq!(s.error_kind.as_deref(), Some("credentials_unreadable"));
        assert_eq!(
            s.state.blocked_reason.as_deref(),
            Some("credentials_unreadable")
        );
        assert_eq!(s.state.backoff_until, None);
        let blocked = skip_effect(
            &Skip::Blocked {
                reason: "credentials_unreadable".into(),
            },
            true,
        );
        assert_eq!(blocked.metric, Some("skipped_auth_blocked"));
        assert_eq!(
            blocked.report.error_kind.as_deref(),
            Some("credentials_unreadable")
        );
        assert!(
            blocked
                .report
                .message
                .as_deref()
                .is_some_and(|m| m.contains("CREDENTIAL_ENCRYPTION_KEY")),
            "{:?}",
            blocked.report.message
        );
    }

    #[test]
    fn a_group_of_outcomes_goes_when_full_or_when_nobody_else_could_join() {
        // Others still under a lease: wait for them (up to the linger)...
        assert!(!group_ready(1, 3, 32));
        assert!(!group_ready(31, 1, 32));
        // ...unless the group is full,
        assert!(group_ready(32, 5, 32));
        assert!(group_ready(40, 5, 32));
        // or nobody could join: a lone job's outcome is never held back.
        assert!(group_ready(1, 0, 32));
        // A size of 1 (group commit off) never waits; 0 reads as 1.
        assert!(group_ready(1, 7, 1));
        assert!(group_ready(1, 7, 0));
    }
}
