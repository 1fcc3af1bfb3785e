//! The soak's audit: the simulator's session log, the run history and the NATS stream,
//! checked against each other (the module docs of [`super`] say what each check means).
//!
//! Why a module of its own: it is a pure function of those three records, so fabricated
//! records can prove that every check fails when it should (the tests below), apart from
//! the processes and servers the soak runs.

use chrono::{DateTime, Utc};
use rosbackup_sim::SessionRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

/// Clock allowance when matching a run to a simulator session (same host, same clock;
/// this only absorbs rounding and scheduling).
const MATCH_SKEW: chrono::Duration = chrono::Duration::seconds(2);

/// One row of the run history, as the audit needs it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RunRecord {
    pub device_id: Uuid,
    pub job_id: String,
    pub trigger: String,
    pub worker: String,
    pub status: String,
    pub error_kind: Option<String>,
    pub sha256: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// One message of the NATS stream, read back and checked while the soak runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRecord {
    pub seq: u64,
    pub msg_id: Option<String>,
    pub device_id: Option<Uuid>,
    pub sha256: String,
    /// The subject names the event's device.
    pub subject_ok: bool,
    /// The text (inline or in the object store) hashes to `sha256` and is not empty.
    pub hash_ok: bool,
}

/// A worker the soak killed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillRecord {
    pub at: DateTime<Utc>,
    pub worker: String,
    pub pid: u32,
}

/// Everything the audit looks at.
#[derive(Debug, Clone, Default)]
pub struct AuditInput {
    /// Devices that must be backed up in every interval.
    pub healthy: Vec<Uuid>,
    pub runs: Vec<RunRecord>,
    pub messages: Vec<MessageRecord>,
    pub sessions: Vec<SessionRecord>,
    /// Devices the simulator saw with two sessions at once.
    pub parallel_sessions: Vec<Uuid>,
    /// When the devices were imported (the first window starts here).
    pub start: Option<DateTime<Utc>>,
    /// End of the abuse phase (the last window ends by here).
    pub end: Option<DateTime<Utc>>,
    pub interval: Duration,
    pub kills: u64,
    /// Jobs one worker runs at once (what one kill can interrupt).
    pub concurrency: u64,
    /// NATS and PostgreSQL restarts (each can interrupt every running job).
    pub service_restarts: u64,
    /// Worker processes running at once.
    pub workers: u64,
    /// Stream messages that were gone before the soak could read them.
    pub messages_lost: u64,
}

/// One check: a name, whether it held, and the figures behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The audit's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditFigures {
    pub healthy_devices: usize,
    pub windows: u64,
    /// Device-windows without a success in the window or the next one.
    pub missed_windows: u64,
    /// Longest time a healthy device went without a successful backup (from the start,
    /// between successes, and up to the end), seconds.
    pub max_gap_seconds: f64,
    pub runs: usize,
    pub successes: usize,
    pub failures_by_kind: BTreeMap<String, usize>,
    pub messages: usize,
    pub sessions: usize,
    /// What kills and service restarts may interrupt (see the module docs).
    pub interrupt_allowance: u64,
    pub duplicate_msg_ids: usize,
    pub jobs_with_several_outcomes: usize,
    pub successes_without_message: usize,
    pub messages_without_run: usize,
    pub messages_invalid: usize,
    pub successes_without_session: usize,
    pub sessions_without_run: usize,
    pub sessions_allowance: u64,
    /// A few offending items per failing check, for the operator.
    pub examples: BTreeMap<String, Vec<String>>,
}

pub(super) fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.to_string(),
        ok,
        detail,
    }
}

fn example(f: &mut AuditFigures, check: &str, what: String) {
    let v = f.examples.entry(check.to_string()).or_default();
    if v.len() < 10 {
        v.push(what);
    }
}

/// Match the three records one to one; see the module docs for the rules.
pub fn audit(input: &AuditInput) -> (Vec<Check>, AuditFigures) {
    let mut f = AuditFigures {
        healthy_devices: input.healthy.len(),
        runs: input.runs.len(),
        messages: input.messages.len(),
        sessions: input.sessions.len(),
        ..AuditFigures::default()
    };
    let mut checks = Vec::new();
    let successes: Vec<&RunRecord> = input
        .runs
        .iter()
        .filter(|r| r.status == "success")
        .collect();
    f.successes = successes.len();
    for r in &input.runs {
        if r.status == "failed" {
            *f.failures_by_kind
                .entry(r.error_kind.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
        }
    }

    // 1. Every healthy device in every window (one window of slack).
    let interval = chrono::Duration::from_std(input.interval).unwrap_or(chrono::Duration::MAX);
    let mut by_device: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for r in &successes {
        by_device
            .entry(r.device_id)
            .or_default()
            .push(r.finished_at);
    }
    for v in by_device.values_mut() {
        v.sort();
    }
    if let (Some(start), Some(end)) = (input.start, input.end) {
        let span = (end - start).num_milliseconds().max(0) as u64;
        let step = (input.interval.as_millis() as u64).max(1);
        f.windows = span / step;
        let empty = Vec::new();
        for d in &input.healthy {
            let times = by_device.get(d).unwrap_or(&empty);
            for k in 0..f.windows as i32 {
                let from = start + interval * k;
                let to = start + interval * (k + 2);
                if !times.iter().any(|t| *t >= from && *t < to) {
                    f.missed_windows += 1;
                    example(
                        &mut f,
                        "every_interval_backed_up",
                        format!("{d}: no success in window {k} or {}", k + 1),
                    );
                }
            }
            let mut prev = start;
            let mut gap = chrono::Duration::zero();
            for t in times.iter().filter(|t| **t <= end) {
                gap = gap.max(*t - prev);
                prev = *t;
            }
            gap = gap.max(end - prev);
            f.max_gap_seconds = f
                .max_gap_seconds
                .max(gap.num_milliseconds() as f64 / 1000.0);
        }
    }
    checks.push(check(
        "every_interval_backed_up",
        f.missed_windows == 0 && input.start.is_some(),
        format!(
            "{} healthy devices × {} windows of {} s: {} missed (a success in the window or the next one counts); longest gap {:.0} s",
            f.healthy_devices,
            f.windows,
            input.interval.as_secs(),
            f.missed_windows,
            f.max_gap_seconds
        ),
    ));

    // 2. Messages are well-formed and stored once.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for m in &input.messages {
        if !(m.hash_ok && m.subject_ok && m.msg_id.is_some() && m.device_id.is_some()) {
            f.messages_invalid += 1;
            example(
                &mut f,
                "nats_messages_valid",
                format!(
                    "message {}: hash_ok={} subject_ok={}",
                    m.seq, m.hash_ok, m.subject_ok
                ),
            );
        }
        if let Some(id) = &m.msg_id {
            *ids.entry(id.as_str()).or_default() += 1;
        }
    }
    checks.push(check(
        "nats_messages_valid",
        f.messages_invalid == 0 && input.messages_lost == 0,
        format!(
            "{} messages read back, {} with a bad hash, subject or id, {} gone before they were read",
            f.messages, f.messages_invalid, input.messages_lost
        ),
    ));
    let dups: Vec<(&str, usize)> = ids
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (*k, *n))
        .collect();
    f.duplicate_msg_ids = dups.len();
    for (id, n) in &dups {
        example(
            &mut f,
            "no_duplicate_publish",
            format!("{id} stored {n} times"),
        );
    }

    // 3. One outcome per scheduled job.
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for r in &input.runs {
        if r.trigger == "scheduled" && (r.status == "success" || r.status == "failed") {
            *outcomes.entry(r.job_id.as_str()).or_default() += 1;
        }
    }
    let several: Vec<(&str, usize)> = outcomes
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (*k, *n))
        .collect();
    f.jobs_with_several_outcomes = several.len();
    for (job, n) in &several {
        example(
            &mut f,
            "one_outcome_per_job",
            format!("job {job}: {n} outcomes"),
        );
    }
    checks.push(check(
        "one_outcome_per_job",
        several.is_empty(),
        format!(
            "{} jobs with an outcome, {} with more than one",
            outcomes.len(),
            several.len()
        ),
    ));

    // 4. Messages ↔ successful runs, one to one (the message id is `<job id>:<hash>`).
    f.interrupt_allowance = input.kills * input.concurrency
        + input.service_restarts * input.workers * input.concurrency;
    let mut run_keys: HashMap<String, usize> = HashMap::new();
    for r in &successes {
        let key = format!("{}:{}", r.job_id, r.sha256.as_deref().unwrap_or(""));
        *run_keys.entry(key).or_default() += 1;
    }
    for r in &successes {
        let key = format!("{}:{}", r.job_id, r.sha256.as_deref().unwrap_or(""));
        if !ids.contains_key(key.as_str()) {
            f.successes_without_message += 1;
            example(
                &mut f,
                "runs_match_messages",
                format!(
                    "{}: success run of job {} has no message",
                    r.device_id, r.job_id
                ),
            );
        }
    }
    let mut jobs_published: HashMap<String, usize> = HashMap::new();
    for m in &input.messages {
        let Some(id) = &m.msg_id else { continue };
        if let Some((job, _)) = id.rsplit_once(':') {
            *jobs_published.entry(job.to_string()).or_default() += 1;
        }
        if !run_keys.contains_key(id) {
            f.messages_without_run += 1;
            example(
                &mut f,
                "runs_match_messages",
                format!("message {} ({id}) has no success run", m.seq),
            );
        }
    }
    // A job publishing two different hashes (a retry of a job whose success was not
    // recorded, on a device whose config changed in between) is a publish beyond what
    // `Nats-Msg-Id` dedup absorbs: allowed only as a consequence of a kill.
    let jobs_twice = jobs_published.values().filter(|n| **n > 1).count();
    checks.push(check(
        "no_duplicate_publish",
        dups.is_empty() && jobs_twice as u64 <= f.interrupt_allowance,
        format!(
            "{} Nats-Msg-Ids stored more than once; {} jobs published under two hashes (allowed ≤ {}: kills × concurrency + restarts × workers × concurrency)",
            dups.len(),
            jobs_twice,
            f.interrupt_allowance
        ),
    ));
    checks.push(check(
        "runs_match_messages",
        f.successes_without_message == 0 && f.messages_without_run as u64 <= f.interrupt_allowance,
        format!(
            "{} successes, {} messages: {} successes without a message, {} messages without a success run (allowed ≤ {}: a worker killed, or NATS or PostgreSQL restarted, between the publish and recording the outcome)",
            f.successes,
            f.messages,
            f.successes_without_message,
            f.messages_without_run,
            f.interrupt_allowance
        ),
    ));

    // 5. Successful runs ↔ completed simulator sessions, one to one: same device, same
    // (normalized) hash, the session inside the run's time span.
    let mut sessions: HashMap<Uuid, Vec<(&SessionRecord, bool)>> = HashMap::new();
    for s in &input.sessions {
        sessions.entry(s.device_id).or_default().push((s, false));
    }
    for v in sessions.values_mut() {
        v.sort_by_key(|(s, _)| s.finished_at);
    }
    let mut ordered = successes.clone();
    ordered.sort_by_key(|r| r.finished_at);
    for r in ordered {
        let found = sessions.get_mut(&r.device_id).and_then(|v| {
            v.iter_mut().find(|(s, used)| {
                !*used
                    && Some(s.normalized_sha256.as_str()) == r.sha256.as_deref()
                    && s.started_at >= r.started_at - MATCH_SKEW
                    && s.finished_at <= r.finished_at + MATCH_SKEW
            })
        });
        match found {
            Some(slot) => slot.1 = true,
            None => {
                f.successes_without_session += 1;
                example(
                    &mut f,
                    "runs_match_sessions",
                    format!(
                        "{}: success run of job {} ({} – {}) matches no session",
                        r.device_id, r.job_id, r.started_at, r.finished_at
                    ),
                );
            }
        }
    }
    let failed = input.runs.iter().filter(|r| r.status == "failed").count() as u64;
    f.sessions_allowance = f.interrupt_allowance + failed;
    let unmatched: Vec<&SessionRecord> = sessions
        .values()
        .flatten()
        .filter(|(_, used)| !used)
        .map(|(s, _)| *s)
        .collect();
    f.sessions_without_run = unmatched.len();
    for s in unmatched.iter().take(10) {
        example(
            &mut f,
            "sessions_explained",
            format!(
                "{}: session {} – {} has no success run",
                s.device_id, s.started_at, s.finished_at
            ),
        );
    }
    checks.push(check(
        "runs_match_sessions",
        f.successes_without_session == 0,
        format!(
            "{} successes, {} completed sessions: {} successes without a matching session",
            f.successes, f.sessions, f.successes_without_session
        ),
    ));
    checks.push(check(
        "sessions_explained",
        f.sessions_without_run as u64 <= f.sessions_allowance,
        format!(
            "{} sessions without a success run; allowed ≤ {} ({} kills × {} concurrency + {} restarts × {} workers × {} concurrency + {} failed runs)",
            f.sessions_without_run,
            f.sessions_allowance,
            input.kills,
            input.concurrency,
            input.service_restarts,
            input.workers,
            input.concurrency,
            failed
        ),
    ));
    checks.push(check(
        "one_session_at_a_time",
        input.parallel_sessions.is_empty(),
        format!(
            "{} devices had two sessions at once",
            input.parallel_sessions.len()
        ),
    ));
    (checks, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn run(dev: Uuid, job: &str, hash: &str, from: i64, to: i64) -> RunRecord {
        RunRecord {
            device_id: dev,
            job_id: job.into(),
            trigger: "scheduled".into(),
            worker: "w1".into(),
            status: "success".into(),
            error_kind: None,
            sha256: Some(hash.into()),
            started_at: t(from),
            finished_at: t(to),
        }
    }

    fn msg(seq: u64, dev: Uuid, job: &str, hash: &str) -> MessageRecord {
        MessageRecord {
            seq,
            msg_id: Some(format!("{job}:{hash}")),
            device_id: Some(dev),
            sha256: hash.into(),
            subject_ok: true,
            hash_ok: true,
        }
    }

    fn session(dev: Uuid, hash: &str, from: i64, to: i64) -> SessionRecord {
        SessionRecord {
            device_id: dev,
            started_at: t(from),
            finished_at: t(to),
            bytes: 100,
            sha256: "raw".into(),
            normalized_sha256: hash.into(),
        }
    }

    /// Two devices, a 10 s interval, 40 s: a backup of each every 10 s, all consistent.
    fn consistent() -> AuditInput {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut input = AuditInput {
            healthy: vec![a, b],
            start: Some(t(0)),
            end: Some(t(40)),
            interval: Duration::from_secs(10),
            concurrency: 5,
            ..AuditInput::default()
        };
        let mut seq = 0;
        for (dev, off) in [(a, 2), (b, 5)] {
            for k in 0..5 {
                let job = format!("{dev}-{k}");
                let from = k * 10 + off;
                input.runs.push(run(dev, &job, "h", from, from + 2));
                seq += 1;
                input.messages.push(msg(seq, dev, &job, "h"));
                input.sessions.push(session(dev, "h", from, from + 1));
            }
        }
        input
    }

    fn failing(checks: &[Check]) -> Vec<String> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn consistent_records_pass_every_check() {
        let (checks, f) = audit(&consistent());
        assert_eq!(failing(&checks), Vec::<String>::new(), "{checks:#?}");
        assert_eq!(f.windows, 4);
        assert_eq!(f.successes, 10);
        assert_eq!(f.missed_windows, 0);
    }

    #[test]
    fn a_missing_backup_fails_the_interval_check() {
        let mut input = consistent();
        // Device 1 loses its backups at 22 and 32 s: windows 2 and 3 have nothing, and
        // window 2's slack (window 3) has nothing either.
        let a = Uuid::from_u128(1);
        let drop =
            |r: &RunRecord| r.device_id == a && r.started_at >= t(20) && r.started_at < t(40);
        input.runs.retain(|r| !drop(r));
        input
            .messages
            .retain(|m| !(m.device_id == Some(a) && (m.seq == 3 || m.seq == 4)));
        input
            .sessions
            .retain(|s| !(s.device_id == a && s.started_at >= t(20) && s.started_at < t(40)));
        let (checks, f) = audit(&input);
        assert_eq!(failing(&checks), vec!["every_interval_backed_up"]);
        assert!(f.missed_windows >= 1);
        assert!(f.max_gap_seconds >= 20.0);
    }

    #[test]
    fn one_late_backup_is_within_the_slack() {
        let mut input = consistent();
        // Device 1's backup of window 1 slips into window 2 (a killed worker's job).
        let a = Uuid::from_u128(1);
        for r in input
            .runs
            .iter_mut()
            .filter(|r| r.device_id == a && r.started_at == t(12))
        {
            r.started_at = t(21);
            r.finished_at = t(23);
        }
        for s in input
            .sessions
            .iter_mut()
            .filter(|s| s.device_id == a && s.started_at == t(12))
        {
            s.started_at = t(21);
            s.finished_at = t(22);
        }
        let (checks, _) = audit(&input);
        assert_eq!(failing(&checks), Vec::<String>::new(), "{checks:#?}");
    }

    #[test]
    fn a_duplicate_publish_fails() {
        let mut input = consistent();
        let dup = input.messages[0].clone();
        input.messages.push(MessageRecord { seq: 99, ..dup });
        let (checks, f) = audit(&input);
        assert_eq!(failing(&checks), vec!["no_duplicate_publish"]);
        assert_eq!(f.duplicate_msg_ids, 1);
    }

    #[test]
    fn a_message_without_a_run_fails_without_kills_and_passes_with_one() {
        let mut input = consistent();
        let a = Uuid::from_u128(1);
        input.messages.push(msg(100, a, "orphan-job", "h2"));
        let (checks, _) = audit(&input);
        assert_eq!(failing(&checks), vec!["runs_match_messages"]);
        input.kills = 1;
        let (checks, _) = audit(&input);
        assert_eq!(failing(&checks), Vec::<String>::new());
    }

    #[test]
    fn a_service_restart_allows_what_every_worker_was_running() {
        let mut input = consistent();
        let a = Uuid::from_u128(1);
        input.workers = 2;
        // Two workers × 5 concurrent jobs = 10 messages a restart may leave without a run.
        for k in 0..10 {
            input
                .messages
                .push(msg(100 + k, a, &format!("cut-{k}"), "h2"));
        }
        let (checks, f) = audit(&input);
        assert_eq!(failing(&checks), vec!["runs_match_messages"]);
        assert_eq!(f.interrupt_allowance, 0);
        input.service_restarts = 1;
        let (checks, f) = audit(&input);
        assert_eq!(f.interrupt_allowance, 10);
        assert_eq!(failing(&checks), Vec::<String>::new());
        // One more than a restart can explain fails again.
        input.messages.push(msg(200, a, "cut-10", "h2"));
        let (checks, _) = audit(&input);
        assert_eq!(failing(&checks), vec!["runs_match_messages"]);
    }

    #[test]
    fn a_success_without_a_session_or_a_message_fails() {
        let mut input = consistent();
        let a = Uuid::from_u128(1);
        input.runs.push(run(a, "ghost", "h", 30, 31));
        let (checks, f) = audit(&input);
        let failed = failing(&checks);
        assert!(
            failed.contains(&"runs_match_sessions".to_string()),
            "{failed:?}"
        );
        assert!(
            failed.contains(&"runs_match_messages".to_string()),
            "{failed:?}"
        );
        assert_eq!(f.successes_without_session, 1);
    }

    #[test]
    fn a_session_with_another_hash_does_not_match() {
        let mut input = consistent();
        input.sessions[0].normalized_sha256 = "other".into();
        let (checks, _) = audit(&input);
        let failed = failing(&checks);
        assert!(
            failed.contains(&"runs_match_sessions".to_string()),
            "{failed:?}"
        );
        // The stray session is then unexplained too (no kills, no failures).
        assert!(
            failed.contains(&"sessions_explained".to_string()),
            "{failed:?}"
        );
    }

    #[test]
    fn unexplained_sessions_fail_and_failures_explain_them() {
        let mut input = consistent();
        let b = Uuid::from_u128(2);
        input.sessions.push(session(b, "h", 36, 37));
        let (checks, _) = audit(&input);
        assert_eq!(failing(&checks), vec!["sessions_explained"]);
        input.runs.push(RunRecord {
            status: "failed".into(),
            error_kind: Some("publish_failed".into()),
            sha256: None,
            ..run(b, "failed-job", "", 36, 38)
        });
        let (checks, f) = audit(&input);
        assert_eq!(failing(&checks), Vec::<String>::new(), "{checks:#?}");
        assert_eq!(f.failures_by_kind.get("publish_failed"), Some(&1));
    }

    #[test]
    fn two_outcomes_for_one_job_fail() {
        let mut input = consistent();
        let r = input.runs[0].clone();
        input.runs.push(RunRecord {
            status: "failed".into(),
            error_kind: Some("timeout".into()),
            sha256: None,
            ..r
        });
        let (checks, _) = audit(&input);
        assert_eq!(failing(&checks), vec!["one_outcome_per_job"]);
    }

    #[test]
    fn bad_messages_and_parallel_sessions_fail() {
        let mut input = consistent();
        input.messages[1].hash_ok = false;
        input.parallel_sessions.push(Uuid::from_u128(1));
        let (checks, _) = audit(&input);
        let failed = failing(&checks);
        assert!(failed.contains(&"nats_messages_valid".to_string()));
        assert!(failed.contains(&"one_session_at_a_time".to_string()));
        let mut input = consistent();
        input.messages_lost = 1;
        assert_eq!(failing(&audit(&input).0), vec!["nats_messages_valid"]);
    }
}
