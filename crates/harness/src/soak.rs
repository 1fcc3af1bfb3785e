//! `rosbackup soak`: a long run of the whole fleet under abuse, then an audit.
//!
//! Why it exists: the fault tests prove each promise once, for a few devices, for a minute.
//! Leaks, slow drifts and bookkeeping mismatches show only over many intervals and many
//! thousands of backups. The soak runs the real processes (an enqueuer and workers as
//! `rosbackup` processes, the simulator as a `rosbackup sim` process, PostgreSQL and NATS
//! as found or private, and a **private** Redis it owns) for a long time, kills a random
//! worker with SIGKILL every so often (and starts a replacement), restarts Redis with its
//! data gone, restarts NATS and PostgreSQL with their data kept (each one the soak was
//! asked to restart is a private server it owns), samples memory, file descriptors and the
//! Redis key count, and at the end audits three independent records against each other:
//!
//! * the simulator's **session log** — what the devices actually sent (one line per
//!   completed export, with the hash a correct backup of those bytes carries),
//! * the **run history** in PostgreSQL — what the workers say they did,
//! * the **NATS stream** — what consumers received (read back by the soak while it runs,
//!   each message's text checked against its hash).
//!
//! The audit ([`audit`]) is a pure function of those records so that it can be tested
//! with fabricated ones: a missing backup, a duplicate publish or an unexplained session
//! must fail it.
//!
//! What "every interval it was healthy for" means here: the run is cut into windows of
//! one interval from the import; every device without a fault must have a successful
//! backup that finished in each window **or the next one** (one interval of slack). The
//! slack is what a killed worker or a Redis restart may cost: a killed worker's jobs run
//! again after its lease expires and missed heartbeats (seconds), and jobs lost with
//! Redis are rescheduled from PostgreSQL once their claim is `stale_after` (30 s) old and
//! a refresh runs. So the one-interval promise needs an interval of at least ~20 s.
//!
//! What a disruption may cost the one-to-one checks: a killed worker may leave each of
//! its running jobs published without a recorded outcome (or a session without a run);
//! a PostgreSQL restart may do that to every running job of every worker (they cannot
//! confirm their lease or write their outcome), and a NATS restart too (a publish whose
//! acknowledgement was lost is recorded as failed though the stream kept it). So the
//! allowance is kills × concurrency + restarts × workers × concurrency.
//!
//! What "flat" means: for each sampled series (RSS and open fds of the enqueuer, the
//! simulator and the largest live worker; the Redis key count), the average over the
//! last third of the samples is at most the average over a reference window × (1 +
//! [`FLAT_REL`]) + a small absolute allowance ([`FLAT_ABS_RSS_KIB`], [`FLAT_ABS_FDS`],
//! [`FLAT_ABS_KEYS`]). The reference window is the second third (the first third is
//! warm-up); for the Redis key count, when the Redis restart falls after the second
//! third began, it is the window of the same length just before the restart (a restarted
//! Redis starts empty and fills up again, which is not growth). Workers are killed and
//! replaced, so their series is the largest RSS/fd count among the live workers.

use crate::services::{self, Service, ServiceError, spawn_self, stop_child};
use chrono::{DateTime, Utc};
use rand::Rng;
use rosbackup_core::access::{Access, Role};
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::secret::redact_url;
use rosbackup_core::snapshot::{ConfigSnapshotEvent, Publisher, PublisherConfig};
use rosbackup_core::store::Store;
use rosbackup_sim::{Fault, FaultSpec, SessionRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Child;
use uuid::Uuid;

/// Relative tolerance of the flatness checks (see the module docs).
pub const FLAT_REL: f64 = 0.15;
/// Absolute allowance for RSS series, KiB.
pub const FLAT_ABS_RSS_KIB: f64 = 16.0 * 1024.0;
/// Absolute allowance for open-fd series.
pub const FLAT_ABS_FDS: f64 = 32.0;
/// Absolute allowance for the Redis key count.
pub const FLAT_ABS_KEYS: f64 = 50.0;
/// Clock allowance when matching a run to a simulator session (same host, same clock;
/// this only absorbs rounding and scheduling).
const MATCH_SKEW: chrono::Duration = chrono::Duration::seconds(2);

/// The soak's knobs (the CLI's flags).
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub devices: usize,
    pub interval: Duration,
    pub duration: Duration,
    pub workers: usize,
    /// `CONFIG_BACKUP_MAX_CONCURRENT` of each worker.
    pub concurrency: usize,
    /// SIGKILL a random worker after a random pause in this range (then start a
    /// replacement); `None`: no kills.
    pub kill_every: Option<(Duration, Duration)>,
    /// Restart the private Redis (data gone) this long after the start.
    pub redis_restart_at: Option<Duration>,
    /// Restart NATS (streams kept) this long after the start; NATS is then private.
    pub nats_restart_at: Option<Duration>,
    /// Restart PostgreSQL (fast shutdown, data kept) this long after the start;
    /// PostgreSQL is then private.
    pub postgres_restart_at: Option<Duration>,
    pub faults: FaultSpec,
    /// Simulated device `i` listens on `listen_base + i`.
    pub listen_base: Ipv4Addr,
    /// Sampling period of RSS, fds and the Redis key count.
    pub sample_every: Duration,
    pub report: Option<PathBuf>,
    pub database_url: String,
    pub database_url_strict: bool,
    pub nats_url: String,
    /// Private PostgreSQL and NATS too (Redis is always private).
    pub private: bool,
    /// Scratch space (private services, logs, the session log).
    pub dir: PathBuf,
}

impl SoakOptions {
    /// Device lease: half an interval, between 6 and 30 s (the product default).
    pub fn lease(&self) -> Duration {
        Duration::from_secs((self.interval.as_secs() / 2).clamp(6, 30))
    }

    /// Queue heartbeat: a tenth of an interval, between 1 and 5 s (the default).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs((self.interval.as_secs() / 10).clamp(1, 5))
    }

    /// Enqueuer refresh (how soon jobs lost with Redis are noticed): a tenth of an
    /// interval, between 1 and 60 s.
    pub fn refresh(&self) -> Duration {
        Duration::from_secs((self.interval.as_secs() / 10).clamp(1, 60))
    }

    /// The final quiescent period: no kills, no restarts; one interval (the last
    /// window's slack) plus a lease plus a margin, so every window can complete.
    pub fn quiescent(&self) -> Duration {
        self.interval + self.lease() + Duration::from_secs(5)
    }
}

/// Faults a device can be backed up with in every interval.
pub fn healthy_every_interval(fault: Option<Fault>) -> bool {
    matches!(
        fault,
        None | Some(Fault::V6 | Fault::Annotate | Fault::Change | Fault::Keys | Fault::KeyOnly)
    )
}

/// Why the soak could not run (a failing audit is not an error: see [`SoakReport`]).
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot write the report {path}: {reason}")]
    Report { path: String, reason: String },
}

fn setup(what: &str) -> impl Fn(String) -> SoakError + '_ {
    move |e| SoakError::Setup(format!("{what}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Records and the audit (pure).

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

fn check(name: &str, ok: bool, detail: String) -> Check {
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

// ---------------------------------------------------------------------------------------
// Samples and flatness (pure).

/// One sample of one process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub fds: u64,
}

/// One sampling instant.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    pub enqueuer: Option<ProcSample>,
    pub simulator: Option<ProcSample>,
    /// Per live worker (name → sample).
    pub workers: BTreeMap<String, ProcSample>,
    /// `DBSIZE` of the private Redis (`None` while it is down).
    pub redis_keys: Option<u64>,
}

/// A sampled series and its verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub samples: usize,
    pub first: f64,
    pub last: f64,
    pub max: f64,
    /// Least-squares slope, units per minute.
    pub slope_per_min: f64,
    pub reference_avg: f64,
    pub last_third_avg: f64,
    pub allowed: f64,
    pub flat: bool,
}

/// Evaluate one series. `points` are (seconds, value); `reference` is the window the last
/// third is compared with (default: the second third).
pub fn series(
    name: &str,
    points: &[(f64, f64)],
    total: f64,
    reference: Option<(f64, f64)>,
    abs: f64,
) -> Series {
    let third = total / 3.0;
    let avg = |from: f64, to: f64| {
        let v: Vec<f64> = points
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, v)| *v)
            .collect();
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let (rf, rt) = reference.unwrap_or((third, 2.0 * third));
    let reference_avg = avg(rf, rt);
    let last_avg = avg(2.0 * third, f64::INFINITY);
    let n = points.len() as f64;
    let slope = if points.len() >= 2 {
        let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
        let num: f64 = points.iter().map(|(t, v)| (t - mt) * (v - mv)).sum();
        let den: f64 = points.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
        if den > 0.0 { num / den * 60.0 } else { 0.0 }
    } else {
        0.0
    };
    let (flat, reference_avg, last_third_avg, allowed) = match (reference_avg, last_avg) {
        (Some(r), Some(l)) => {
            let allowed = r * (1.0 + FLAT_REL) + abs;
            (l <= allowed, r, l, allowed)
        }
        // Too few samples to say anything: not flat (a soak must be long enough).
        _ => (false, 0.0, 0.0, 0.0),
    };
    Series {
        name: name.to_string(),
        samples: points.len(),
        first: points.first().map_or(0.0, |p| p.1),
        last: points.last().map_or(0.0, |p| p.1),
        max: points.iter().map(|p| p.1).fold(0.0, f64::max),
        slope_per_min: slope,
        reference_avg,
        last_third_avg,
        allowed,
        flat,
    }
}

/// The series the soak reports, from its samples.
pub fn all_series(samples: &[Sample], total: f64, redis_restart: Option<f64>) -> Vec<Series> {
    let pick = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t, v)))
            .collect()
    };
    let third = total / 3.0;
    let keys_reference = redis_restart
        .filter(|r| *r > third)
        .map(|r| ((r - third).max(0.0), r));
    vec![
        series(
            "enqueuer RSS KiB",
            &pick(&|s| s.enqueuer.map(|p| p.rss_kib as f64)),
            total,
            None,
            FLAT_ABS_RSS_KIB,
        ),
        series(
            "enqueuer fds",
            &pick(&|s| s.enqueuer.map(|p| p.fds as f64)),
            total,
            None,
            FLAT_ABS_FDS,
        ),
        series(
            "worker RSS KiB (largest live)",
            &pick(&|s| {
                s.workers
                    .values()
                    .map(|p| p.rss_kib as f64)
                    .reduce(f64::max)
            }),
            total,
            None,
            FLAT_ABS_RSS_KIB,
        ),
        series(
            "worker fds (largest live)",
            &pick(&|s| s.workers.values().map(|p| p.fds as f64).reduce(f64::max)),
            total,
            None,
            FLAT_ABS_FDS,
        ),
        series(
            "simulator RSS KiB",
            &pick(&|s| s.simulator.map(|p| p.rss_kib as f64)),
            total,
            None,
            FLAT_ABS_RSS_KIB,
        ),
        series(
            "simulator fds",
            &pick(&|s| s.simulator.map(|p| p.fds as f64)),
            total,
            None,
            FLAT_ABS_FDS,
        ),
        series(
            "Redis keys",
            &pick(&|s| s.redis_keys.map(|k| k as f64)),
            total,
            keys_reference,
            FLAT_ABS_KEYS,
        ),
    ]
}

/// RSS (KiB) and open fds of a process, from /proc.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample { rss_kib, fds })
}

// ---------------------------------------------------------------------------------------
// The report.

/// Everything the soak measured and concluded (`--report FILE` writes it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    pub devices: usize,
    pub healthy_devices: usize,
    pub faults: String,
    pub interval_seconds: u64,
    pub duration_seconds: u64,
    pub workers: usize,
    pub concurrency: usize,
    pub lease_seconds: u64,
    pub started_at: DateTime<Utc>,
    pub abuse_ended_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub kills: Vec<KillRecord>,
    pub redis_restarts: Vec<DateTime<Utc>>,
    /// DBSIZE right after the restart (0: the data was gone).
    pub redis_keys_after_restart: Option<u64>,
    /// Seconds from the Redis restart to the next successful backup.
    pub first_success_after_restart_seconds: Option<f64>,
    /// NATS and PostgreSQL restarts.
    #[serde(default)]
    pub service_restarts: Vec<ServiceRestart>,
    /// Processes that exited without being killed by the soak.
    pub unexpected_exits: Vec<String>,
    pub figures: AuditFigures,
    pub series: Vec<Series>,
    pub checks: Vec<Check>,
    pub ok: bool,
    /// Where the processes' logs are.
    pub logs: String,
}

/// A restart of NATS or PostgreSQL during the soak.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRestart {
    /// `NATS` or `PostgreSQL`.
    pub service: String,
    /// When it was up again.
    pub at: DateTime<Utc>,
    /// From the stop signal until it answered again, seconds.
    pub down_seconds: f64,
    /// Seconds from `at` to the next successful backup that started after it.
    pub first_success_after_seconds: Option<f64>,
}

impl SoakReport {
    /// The summary table printed at the end.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let f = &self.figures;
        let _ = writeln!(
            s,
            "soak: {} devices ({} healthy{}), interval {} s, {} s of abuse + quiescent interval, {} workers × {} concurrent",
            self.devices,
            self.healthy_devices,
            if self.faults.is_empty() {
                String::new()
            } else {
                format!("; faults {}", self.faults)
            },
            self.interval_seconds,
            self.duration_seconds,
            self.workers,
            self.concurrency
        );
        let _ = writeln!(
            s,
            "  worker kills {}, Redis restarts {} (keys after restart: {}, first success {} s later)",
            self.kills.len(),
            self.redis_restarts.len(),
            self.redis_keys_after_restart
                .map_or("-".into(), |k| k.to_string()),
            self.first_success_after_restart_seconds
                .map_or("-".into(), |t| format!("{t:.1}"))
        );
        for r in &self.service_restarts {
            let _ = writeln!(
                s,
                "  {} restarted: down {:.1} s, first success {} s later",
                r.service,
                r.down_seconds,
                r.first_success_after_seconds
                    .map_or("-".into(), |t| format!("{t:.1}"))
            );
        }
        let _ = writeln!(
            s,
            "  runs {} (success {}, failed {:?}), NATS messages {}, simulator sessions {}",
            f.runs, f.successes, f.failures_by_kind, f.messages, f.sessions
        );
        let _ = writeln!(
            s,
            "  {:<32} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>5}",
            "series", "first", "last", "max", "slope/min", "ref avg", "last 1/3", "flat"
        );
        for x in &self.series {
            let _ = writeln!(
                s,
                "  {:<32} {:>10.0} {:>10.0} {:>10.0} {:>11.1} {:>10.0} {:>10.0} {:>5}",
                x.name,
                x.first,
                x.last,
                x.max,
                x.slope_per_min,
                x.reference_avg,
                x.last_third_avg,
                if x.flat { "yes" } else { "NO" }
            );
        }
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {:<26} {}",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(s, "soak {}", if self.ok { "passed" } else { "FAILED" });
        s
    }
}

// ---------------------------------------------------------------------------------------
// Running it.

struct Proc {
    name: String,
    child: Child,
    pid: u32,
}

impl Proc {
    fn new(name: String, child: Child) -> Result<Proc, SoakError> {
        let pid = child
            .id()
            .ok_or_else(|| SoakError::Setup(format!("{name} exited at once")))?;
        Ok(Proc { name, child, pid })
    }
}

struct Running {
    enqueuer: Option<Proc>,
    workers: Vec<Proc>,
    sim: Option<Proc>,
    services: Vec<Service>,
    redis: Option<Service>,
    cleanup: Option<(String, String, crate::demo::Names)>,
}

impl Running {
    async fn stop_fleet(&mut self) {
        for w in self.workers.iter_mut() {
            stop_child(&mut w.child, Duration::from_secs(20)).await;
        }
        if let Some(e) = self.enqueuer.as_mut() {
            stop_child(&mut e.child, Duration::from_secs(15)).await;
        }
    }

    async fn stop_all(&mut self) {
        self.stop_fleet().await;
        if let Some(s) = self.sim.as_mut() {
            stop_child(&mut s.child, Duration::from_secs(15)).await;
        }
        if let Some((admin_url, nats_url, names)) = self.cleanup.take() {
            if let Ok(admin) = Store::connect(&admin_url, 1).await {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", names.database);
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(admin.pool())
                    .await;
                admin.pool().close().await;
            }
            if let Ok(client) = async_nats::connect(nats_url.as_str()).await {
                let js = async_nats::jetstream::new(client);
                let _ = js.delete_stream(&names.stream).await;
                let _ = js.delete_object_store(&names.bucket).await;
            }
        }
        if let Some(r) = self.redis.as_mut() {
            r.stop(Duration::from_secs(10)).await;
        }
        for s in self.services.iter_mut().rev() {
            s.stop(Duration::from_secs(15)).await;
        }
    }
}

/// Run the soak and audit it. `Ok` carries the report whether or not every check held.
pub async fn run(opts: SoakOptions) -> Result<SoakReport, SoakError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| setup("scratch directory")(e.to_string()))?;
    let logs = opts.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| setup("log directory")(e.to_string()))?;
    let mut running = Running {
        enqueuer: None,
        workers: Vec::new(),
        sim: None,
        services: Vec::new(),
        redis: None,
        cleanup: None,
    };
    let outcome = run_inner(&opts, &logs, &mut running).await;
    running.stop_all().await;
    for sub in ["postgres", "nats"] {
        let _ = std::fs::remove_dir_all(opts.dir.join(sub));
    }
    let report = outcome?;
    if let Some(path) = &opts.report {
        let json = serde_json::to_vec_pretty(&report).map_err(|e| SoakError::Report {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, json).map_err(|e| SoakError::Report {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(report)
}

fn say(msg: impl AsRef<str>) {
    println!("[{}] {}", Utc::now().format("%H:%M:%S"), msg.as_ref());
}

async fn run_inner(
    opts: &SoakOptions,
    logs: &Path,
    running: &mut Running,
) -> Result<SoakReport, SoakError> {
    if opts.devices == 0 || opts.workers == 0 || opts.concurrency == 0 {
        return Err(SoakError::Setup(
            "--devices, --workers and the concurrency must be at least 1".into(),
        ));
    }
    let run_id = std::process::id();
    let names = crate::demo::Names::for_run("soak", run_id);

    // 1. Services: PostgreSQL and NATS as found (or private; private when the soak is to
    // restart them: it restarts only servers it owns), Redis always private.
    let pg = services::postgres(
        &opts.database_url,
        opts.database_url_strict,
        opts.private || opts.postgres_restart_at.is_some(),
        &opts.dir,
    )
    .await?;
    let nats = services::nats(
        &opts.nats_url,
        opts.private || opts.nats_restart_at.is_some(),
        &opts.dir,
    )
    .await?;
    let redis_port = services::free_port().map_err(|e| setup("Redis port")(e.to_string()))?;
    let redis_dir = opts.dir.join("redis");
    std::fs::create_dir_all(&redis_dir).map_err(|e| setup("Redis directory")(e.to_string()))?;
    let redis = services::redis_at("redis://127.0.0.1/0", redis_port, &redis_dir).await?;
    let (pg_url, nats_url, redis_url) = (pg.url.clone(), nats.url.clone(), redis.url.clone());
    for s in [&pg, &nats, &redis] {
        say(format!(
            "{:<10} {} ({})",
            s.name,
            redact_url(&s.url),
            if s.private() { "private" } else { "shared" }
        ));
    }
    running.cleanup = Some((pg_url.clone(), nats_url.clone(), names.clone()));
    running.services.extend([pg, nats]);
    running.redis = Some(redis);

    // 2. A database of its own.
    let (db_url, store) = crate::demo::fresh_database(&pg_url, &names.database)
        .await
        .map_err(SoakError::Setup)?;

    // 3. The simulator as its own process, with a session log.
    let inventory = opts.dir.join("inventory.csv");
    let session_log = opts.dir.join("sessions.jsonl");
    let stats = opts.dir.join("sim-stats.json");
    let _ = std::fs::remove_file(&inventory);
    let _ = std::fs::remove_file(&session_log);
    let sim_env: Vec<(String, String)> = [("LOG_LEVEL", "warn"), ("LOG_FORMAT", "text")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .collect();
    let sim_child = spawn_self(
        &[
            "sim",
            "--devices",
            &opts.devices.to_string(),
            "--listen-base",
            &opts.listen_base.to_string(),
            "--port",
            "0",
            "--faults",
            &opts.faults.to_string(),
            "--seed",
            "7",
            "--inventory",
            &inventory.display().to_string(),
            "--session-log",
            &session_log.display().to_string(),
            "--stats",
            &stats.display().to_string(),
        ],
        &sim_env,
        &logs.join("simulator.log"),
    )
    .map_err(|e| setup("simulator")(e.to_string()))?;
    running.sim = Some(Proc::new("simulator".into(), sim_child)?);
    let until = Instant::now() + Duration::from_secs(300);
    let devices = loop {
        if let Ok(bytes) = std::fs::read(&inventory) {
            let rows = rosbackup_core::inventory::parse_inventory_rows(&bytes)
                .map_err(|e| setup("the simulator's inventory")(e.to_string()))?;
            // The `keys`/`key-only` devices' key files, beside the inventory.
            let base = inventory.parent().unwrap_or(std::path::Path::new("."));
            let mut devices = Vec::with_capacity(rows.len());
            for r in rows {
                let mut d = r.device;
                if let Some(f) = &r.ssh_key_file {
                    let text = std::fs::read_to_string(base.join(f))
                        .map_err(|e| setup("a simulator key file")(e.to_string()))?;
                    d.ssh_key = Some(
                        rosbackup_core::userkey::UserKey::import(&text, None)
                            .map_err(|e| setup("a simulator key file")(e.to_string()))?,
                    );
                }
                devices.push(d);
            }
            break devices;
        }
        if let Some(s) = running.sim.as_mut()
            && let Ok(Some(status)) = s.child.try_wait()
        {
            return Err(SoakError::Setup(format!(
                "the simulator exited ({status}); see {}",
                logs.join("simulator.log").display()
            )));
        }
        if Instant::now() > until {
            return Err(SoakError::Setup(
                "the simulator wrote no inventory within 300 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let healthy: Vec<Uuid> = devices
        .iter()
        .enumerate()
        .filter(|(i, _)| healthy_every_interval(opts.faults.fault_for(*i)))
        .map(|(_, d)| d.id)
        .collect();
    say(format!(
        "simulator  {} devices from {} ({} healthy)",
        devices.len(),
        opts.listen_base,
        healthy.len()
    ));

    // 4. Our own reader of the stream (it creates the stream the workers will find).
    let publisher_cfg = PublisherConfig {
        nats_url: nats_url.clone(),
        subject_prefix: names.subject_prefix.clone(),
        stream_name: names.stream.clone(),
        object_bucket: names.bucket.clone(),
        stream_max_bytes: 16 * 1024 * 1024 * 1024,
        ..PublisherConfig::default()
    };
    let publisher = Publisher::connect(publisher_cfg)
        .await
        .map_err(|e| setup("NATS")(e.to_string()))?;
    let (reader_stop, reader_stop_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(read_stream(
        publisher.jetstream().clone(),
        names.stream.clone(),
        names.subject_prefix.clone(),
        reader_stop_rx,
    ));

    // 5. Import: first due spread over one interval.
    let key_b64 = CredentialKey::generate_base64();
    let key = CredentialKey::from_base64(&key_b64).map_err(|e| setup("key")(e.to_string()))?;
    let start = Utc::now();
    let spread = opts.interval.as_millis().max(2_000) as i64;
    let mut rng = rand::thread_rng();
    store
        .upsert_devices(&key, &devices, || {
            start + chrono::Duration::milliseconds(rng.gen_range(1_000..spread))
        })
        .await
        .map_err(|e| setup("import")(e.to_string()))?;
    Access::new(store.clone())
        .create_token("soak", Role::Viewer, None)
        .await
        .map_err(|e| setup("token")(e.to_string()))?;

    // 6. Enqueuer and workers.
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db_url.clone()),
        ("REDIS_URL", redis_url.clone()),
        ("NATS_URL", nats_url.clone()),
        ("CREDENTIAL_ENCRYPTION_KEY", key_b64.clone()),
        ("ROSBACKUP_QUEUE", names.queue.clone()),
        ("ROSBACKUP_SUBJECT_PREFIX", names.subject_prefix.clone()),
        ("ROSBACKUP_TRIGGER_SUBJECT", names.trigger_subject.clone()),
        ("ROSBACKUP_NATS_STREAM", names.stream.clone()),
        ("ROSBACKUP_NATS_OBJECT_BUCKET", names.bucket.clone()),
        (
            "CONFIG_BACKUP_INTERVAL",
            opts.interval.as_secs().to_string(),
        ),
        ("CONFIG_BACKUP_COMMAND_TIMEOUT", "60".into()),
        ("CONFIG_BACKUP_CONNECT_TIMEOUT", "15".into()),
        ("CONFIG_BACKUP_MAX_CONCURRENT", opts.concurrency.to_string()),
        (
            "ROSBACKUP_LEASE_SECONDS",
            opts.lease().as_secs().to_string(),
        ),
        (
            "ROSBACKUP_QUEUE_HEARTBEAT",
            opts.heartbeat().as_secs().to_string(),
        ),
        (
            "DEVICE_REFRESH_SECONDS",
            opts.refresh().as_secs().to_string(),
        ),
        // The shortest retention the enqueuer takes: finished jobs leave Redis after a
        // minute, so the key count reaches its plateau early in the run.
        ("ROSBACKUP_JOB_RETENTION", "60".into()),
        ("ROSBACKUP_METRICS_ADDR", "127.0.0.1:0".into()),
        ("ROSBACKUP_HTTP_ADDR", "127.0.0.1:0".into()),
        ("LOG_FORMAT", "text".into()),
        ("LOG_LEVEL", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
    .collect();
    let enq = spawn_self(&["enqueuer"], &env, &logs.join("enqueuer.log"))
        .map_err(|e| setup("enqueuer")(e.to_string()))?;
    running.enqueuer = Some(Proc::new("enqueuer".into(), enq)?);
    let mut next_worker = 1;
    let spawn_worker = |n: usize| -> Result<Proc, SoakError> {
        let name = format!("soak-worker-{n}");
        let mut e = env.clone();
        e.push(("ROSBACKUP_WORKER_NAME".into(), name.clone()));
        let child = spawn_self(&["worker"], &e, &logs.join(format!("{name}.log")))
            .map_err(|e| setup("worker")(e.to_string()))?;
        Proc::new(name, child)
    };
    for _ in 0..opts.workers {
        running.workers.push(spawn_worker(next_worker)?);
        next_worker += 1;
    }
    say(format!(
        "fleet      1 enqueuer, {} workers × {} concurrent; lease {} s, heartbeat {} s, refresh {} s; logs in {}",
        opts.workers,
        opts.concurrency,
        opts.lease().as_secs(),
        opts.heartbeat().as_secs(),
        opts.refresh().as_secs(),
        logs.display()
    ));

    // 7. The abuse phase: sample, kill, restart Redis.
    let t0 = Instant::now();
    let abuse_end = t0 + opts.duration;
    let mut samples: Vec<Sample> = Vec::new();
    let mut kills: Vec<KillRecord> = Vec::new();
    let mut restarts: Vec<DateTime<Utc>> = Vec::new();
    let mut restart_t: Option<f64> = None;
    let mut keys_after_restart = None;
    let mut unexpected: Vec<String> = Vec::new();
    let pick_pause = |r: &mut rand::rngs::ThreadRng| {
        opts.kill_every.map(|(lo, hi)| {
            if hi > lo {
                Duration::from_millis(r.gen_range(lo.as_millis() as u64..=hi.as_millis() as u64))
            } else {
                lo
            }
        })
    };
    let mut next_kill = pick_pause(&mut rand::thread_rng()).map(|d| t0 + d);
    let mut next_restart = opts.redis_restart_at.map(|d| t0 + d);
    let mut service_restarts: Vec<ServiceRestart> = Vec::new();
    let mut next_service_restarts: Vec<(Instant, &'static str)> = [
        (opts.nats_restart_at, "NATS"),
        (opts.postgres_restart_at, "PostgreSQL"),
    ]
    .into_iter()
    .filter_map(|(at, name)| at.map(|d| (t0 + d, name)))
    .collect();
    let mut next_sample = t0;
    let mut last_progress = t0;
    let mut interrupted = std::pin::pin!(rosbackup_core::shutdown::signal());
    loop {
        let now = Instant::now();
        if now >= abuse_end {
            break;
        }
        check_exits(running, &mut unexpected);
        if now >= next_sample {
            samples.push(sample(running, &redis_url, t0).await);
            next_sample += opts.sample_every;
        }
        if let Some(at) = next_kill
            && now >= at
            && !running.workers.is_empty()
        {
            let i = rand::thread_rng().gen_range(0..running.workers.len());
            let mut w = running.workers.remove(i);
            // SAFETY: kill(2) on a child we spawned and still own.
            unsafe {
                libc::kill(w.pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = w.child.wait().await;
            say(format!("kill -9     {} (pid {})", w.name, w.pid));
            kills.push(KillRecord {
                at: Utc::now(),
                worker: w.name.clone(),
                pid: w.pid,
            });
            running.workers.push(spawn_worker(next_worker)?);
            next_worker += 1;
            next_kill = pick_pause(&mut rand::thread_rng()).map(|d| Instant::now() + d);
        }
        if let Some(at) = next_restart
            && now >= at
        {
            next_restart = None;
            if let Some(r) = running.redis.as_mut() {
                r.stop(Duration::from_secs(10)).await;
            }
            running.redis = None;
            let r = services::redis_at("redis://127.0.0.1/0", redis_port, &redis_dir).await?;
            running.redis = Some(r);
            restarts.push(Utc::now());
            restart_t = Some(t0.elapsed().as_secs_f64());
            keys_after_restart = redis_keys(&redis_url).await;
            say(format!(
                "Redis      restarted empty (DBSIZE {})",
                keys_after_restart.map_or("?".into(), |k| k.to_string())
            ));
        }
        if let Some(i) = next_service_restarts.iter().position(|(at, _)| now >= *at) {
            let (_, name) = next_service_restarts.remove(i);
            service_restarts.push(restart_service(running, name, &opts.dir).await?);
        }
        if now.duration_since(last_progress) >= Duration::from_secs(60) {
            last_progress = now;
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM backup_runs WHERE status = 'success'")
                    .fetch_one(store.pool())
                    .await
                    .unwrap_or(-1);
            say(format!(
                "progress   {:.0} s: {done} successful backups, {} kills, last sample {}",
                t0.elapsed().as_secs_f64(),
                kills.len(),
                samples
                    .last()
                    .map(|s| format!("redis keys {:?}, workers {}", s.redis_keys, s.workers.len()))
                    .unwrap_or_default()
            ));
        }
        tokio::select! {
            _ = &mut interrupted => {
                return Err(SoakError::Setup("interrupted".into()));
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    let abuse_ended_at = Utc::now();
    let total = t0.elapsed().as_secs_f64();
    say(format!(
        "quiescent  abuse over after {total:.0} s; {} s more for the last window",
        opts.quiescent().as_secs()
    ));
    let q_end = Instant::now() + opts.quiescent();
    while Instant::now() < q_end {
        check_exits(running, &mut unexpected);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 8. Stop the fleet (SIGTERM: running backups finish), let the reader catch up,
    // stop the simulator (its session log is complete then).
    running.stop_fleet().await;
    running.workers.clear();
    running.enqueuer = None;
    let _ = reader_stop.send(true);
    let (messages, lost) = reader
        .await
        .map_err(|e| setup("stream reader")(e.to_string()))?;
    if let Some(s) = running.sim.as_mut() {
        stop_child(&mut s.child, Duration::from_secs(15)).await;
    }
    running.sim = None;
    let sessions = rosbackup_sim::read_session_log(&session_log)
        .map_err(|e| setup("session log")(e.to_string()))?;
    let parallel: Vec<Uuid> = std::fs::read(&stats)
        .ok()
        .and_then(|b| serde_json::from_slice::<BTreeMap<Uuid, rosbackup_sim::DeviceStats>>(&b).ok())
        .map(|m| {
            m.into_iter()
                .filter(|(_, s)| s.max_concurrent > 1)
                .map(|(id, _)| id)
                .collect()
        })
        .unwrap_or_default();
    let runs: Vec<RunRecord> = sqlx::query_as(
        "SELECT device_id, job_id, trigger, worker, status, error_kind, sha256, started_at, finished_at \
         FROM backup_runs ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .map_err(|e| setup("run history")(e.to_string()))?;
    let trimmed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT device_id FROM backup_runs GROUP BY device_id HAVING count(*) >= 100) x",
    )
    .fetch_one(store.pool())
    .await
    .unwrap_or(0);
    store.pool().close().await;

    // 9. The audit.
    let input = AuditInput {
        healthy: healthy.clone(),
        runs,
        messages,
        sessions,
        parallel_sessions: parallel,
        start: Some(start),
        end: Some(abuse_ended_at),
        interval: opts.interval,
        kills: kills.len() as u64,
        concurrency: opts.concurrency as u64,
        service_restarts: service_restarts.len() as u64,
        workers: opts.workers as u64,
        messages_lost: lost,
    };
    let (mut checks, figures) = audit(&input);
    let first_success_after_restart_seconds = restarts.first().and_then(|r| {
        input
            .runs
            .iter()
            .filter(|x| x.status == "success" && x.started_at >= *r)
            .map(|x| x.finished_at)
            .min()
            .map(|t| (t - *r).num_milliseconds() as f64 / 1000.0)
    });
    for r in service_restarts.iter_mut() {
        r.first_success_after_seconds = input
            .runs
            .iter()
            .filter(|x| x.status == "success" && x.started_at >= r.at)
            .map(|x| x.finished_at)
            .min()
            .map(|t| (t - r.at).num_milliseconds() as f64 / 1000.0);
    }
    for (asked, name) in [
        (opts.nats_restart_at, "NATS"),
        (opts.postgres_restart_at, "PostgreSQL"),
    ] {
        if asked.is_some() {
            let done: Vec<&ServiceRestart> = service_restarts
                .iter()
                .filter(|r| r.service == name)
                .collect();
            checks.push(check(
                &format!("{}_restarted", name.to_lowercase()),
                done.len() == 1 && done.iter().all(|r| r.first_success_after_seconds.is_some()),
                format!(
                    "{} restarts; down {:?} s; first success after: {:?} s",
                    done.len(),
                    done.iter().map(|r| r.down_seconds).collect::<Vec<_>>(),
                    done.iter()
                        .map(|r| r.first_success_after_seconds)
                        .collect::<Vec<_>>()
                ),
            ));
        }
    }
    checks.push(check(
        "run_history_complete",
        trimmed == 0,
        format!("{trimmed} devices reached the 100-runs-per-device history cap (runs may be trimmed: use a shorter soak or a longer interval)"),
    ));
    let series = all_series(&samples, total, restart_t);
    for s in &series {
        checks.push(check(
            &format!("flat: {}", s.name),
            s.flat,
            format!(
                "last third avg {:.0} ≤ allowed {:.0} (reference avg {:.0} × {} + abs); {} samples, slope {:.1}/min",
                s.last_third_avg,
                s.allowed,
                s.reference_avg,
                1.0 + FLAT_REL,
                s.samples,
                s.slope_per_min
            ),
        ));
    }
    checks.push(check(
        "processes_stayed_up",
        unexpected.is_empty(),
        if unexpected.is_empty() {
            "no process exited unless the soak killed it".into()
        } else {
            unexpected.join("; ")
        },
    ));
    if opts.redis_restart_at.is_some() {
        checks.push(check(
            "redis_restarted_empty",
            restarts.len() == 1 && keys_after_restart.is_some_and(|k| k < 10),
            format!(
                "{} restarts; DBSIZE right after: {:?}",
                restarts.len(),
                keys_after_restart
            ),
        ));
    }
    let ok = checks.iter().all(|c| c.ok);
    Ok(SoakReport {
        devices: opts.devices,
        healthy_devices: healthy.len(),
        faults: opts.faults.to_string(),
        interval_seconds: opts.interval.as_secs(),
        duration_seconds: opts.duration.as_secs(),
        workers: opts.workers,
        concurrency: opts.concurrency,
        lease_seconds: opts.lease().as_secs(),
        started_at: start,
        abuse_ended_at,
        finished_at: Utc::now(),
        kills,
        redis_restarts: restarts,
        redis_keys_after_restart: keys_after_restart,
        first_success_after_restart_seconds,
        service_restarts,
        unexpected_exits: unexpected,
        figures,
        series,
        checks,
        ok,
        logs: logs.display().to_string(),
    })
}

/// Restart the private NATS or PostgreSQL `name` on its port with its data kept:
/// PostgreSQL with a fast shutdown (SIGINT: sessions are cut, as a crash or a failover
/// cuts them), NATS with SIGTERM. Returns when it answers again.
async fn restart_service(
    running: &mut Running,
    name: &'static str,
    dir: &Path,
) -> Result<ServiceRestart, SoakError> {
    let i = running
        .services
        .iter()
        .position(|s| s.name == name && s.private())
        .ok_or_else(|| SoakError::Setup(format!("{name} is not a private server of the soak")))?;
    let mut svc = running.services.remove(i);
    let default_port = if name == "NATS" { 4222 } else { 5432 };
    let port = services::host_port(&svc.url, default_port)
        .map(|(_, p)| p)
        .ok_or_else(|| SoakError::Setup(format!("{name}: no port in its URL")))?;
    let stopped = Instant::now();
    let signal = if name == "NATS" {
        libc::SIGTERM
    } else {
        libc::SIGINT
    };
    svc.stop_with(signal, Duration::from_secs(30)).await;
    let url = svc.url.clone();
    let again = if name == "NATS" {
        services::nats_at(&url, port, dir).await
    } else {
        services::postgres_at(&url, port, dir).await
    };
    let again = match again {
        Ok(s) => s,
        Err(e) => {
            // Keep the stopped one listed so the cleanup still knows about it.
            running.services.push(svc);
            return Err(e.into());
        }
    };
    running.services.push(again);
    let down_seconds = stopped.elapsed().as_secs_f64();
    say(format!(
        "{name:<10} restarted (down {down_seconds:.1} s, data kept)"
    ));
    Ok(ServiceRestart {
        service: name.into(),
        at: Utc::now(),
        down_seconds,
        first_success_after_seconds: None,
    })
}

fn check_exits(running: &mut Running, unexpected: &mut Vec<String>) {
    let procs = running
        .workers
        .iter_mut()
        .chain(running.enqueuer.as_mut())
        .chain(running.sim.as_mut());
    for p in procs {
        if let Ok(Some(status)) = p.child.try_wait() {
            let what = format!("{} (pid {}) exited: {status}", p.name, p.pid);
            if !unexpected.contains(&what) {
                say(format!("UNEXPECTED {what}"));
                unexpected.push(what);
            }
        }
    }
}

async fn redis_keys(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut con = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("DBSIZE").query_async::<u64>(&mut con),
    )
    .await
    .ok()?
    .ok()
}

async fn sample(running: &Running, redis_url: &str, t0: Instant) -> Sample {
    Sample {
        t: t0.elapsed().as_secs_f64(),
        enqueuer: running.enqueuer.as_ref().and_then(|p| proc_sample(p.pid)),
        simulator: running.sim.as_ref().and_then(|p| proc_sample(p.pid)),
        workers: running
            .workers
            .iter()
            .filter_map(|w| proc_sample(w.pid).map(|s| (w.name.clone(), s)))
            .collect(),
        redis_keys: redis_keys(redis_url).await,
    }
}

/// Read every message of the stream as it arrives (so the audit needs no retention of
/// the texts), checking each one's hash against its text. Returns the records and how
/// many messages were gone before they could be read. After `stop`, it reads up to the
/// stream's last sequence, then returns.
async fn read_stream(
    js: async_nats::jetstream::Context,
    stream_name: String,
    subject_prefix: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<MessageRecord>, u64) {
    let mut out = Vec::new();
    let mut lost = 0u64;
    let mut next = 1u64;
    let mut stopping = false;
    loop {
        let mut caught_up = false;
        if let Ok(mut stream) = js.get_stream(&stream_name).await
            && let Ok(info) = stream.info().await
        {
            let state = info.state.clone();
            if state.first_sequence > next && state.messages > 0 {
                lost += state.first_sequence - next;
                next = state.first_sequence;
            }
            caught_up = true;
            while next <= state.last_sequence {
                match stream.get_raw_message(next).await {
                    Ok(msg) => {
                        out.push(check_message(&js, &subject_prefix, next, &msg).await);
                        next += 1;
                    }
                    Err(_) => {
                        caught_up = false;
                        break;
                    }
                }
            }
        }
        if stopping && caught_up {
            return (out, lost);
        }
        tokio::select! {
            _ = stop.changed(), if !stopping => { stopping = true; }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn check_message(
    js: &async_nats::jetstream::Context,
    subject_prefix: &str,
    seq: u64,
    msg: &async_nats::jetstream::message::StreamMessage,
) -> MessageRecord {
    let msg_id = msg
        .headers
        .get("Nats-Msg-Id")
        .map(|v| v.as_str().to_string());
    let Ok(event) = ConfigSnapshotEvent::decode(&msg.payload) else {
        return MessageRecord {
            seq,
            msg_id,
            device_id: None,
            sha256: String::new(),
            subject_ok: false,
            hash_ok: false,
        };
    };
    let device_id: Option<Uuid> = event.device_id.parse().ok();
    let subject_ok =
        device_id.is_some_and(|d| msg.subject.as_str() == format!("{subject_prefix}.create.{d}"));
    let hash_ok = match rosbackup_core::snapshot::fetch_config_text(js, &event).await {
        Ok(text) => !text.is_empty() && rosbackup_core::normalize::hash(&text) == event.sha256_hash,
        Err(_) => false,
    };
    MessageRecord {
        seq,
        msg_id,
        device_id,
        sha256: event.sha256_hash,
        subject_ok,
        hash_ok,
    }
}

/// Parse `60-180` (seconds; one number: a fixed pause).
pub fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let parse = |x: &str| -> Result<Duration, String> { parse_duration(x.trim()) };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let d = parse(s)?;
            (d, d)
        }
    };
    if lo.is_zero() || hi < lo {
        return Err(format!(
            "{s:?}: expected MIN-MAX with 0 < MIN ≤ MAX, e.g. 60-180"
        ));
    }
    Ok((lo, hi))
}

/// Parse `90`, `90s`, `30m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix('h') {
        (n, 3600)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1)
    } else {
        (s, 1)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90, 90s, 30m, 2h)"))?;
    Ok(Duration::from_secs(n * mult))
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

    #[test]
    fn growth_is_not_flat_and_noise_is() {
        let grow: Vec<(f64, f64)> = (0..90)
            .map(|i| (i as f64, 100_000.0 + i as f64 * 2_000.0))
            .collect();
        let s = series("x", &grow, 90.0, None, FLAT_ABS_RSS_KIB);
        assert!(!s.flat, "{s:?}");
        assert!(s.slope_per_min > 100_000.0);
        let noise: Vec<(f64, f64)> = (0..90)
            .map(|i| {
                (
                    i as f64,
                    100_000.0 + if i % 2 == 0 { 3_000.0 } else { -3_000.0 },
                )
            })
            .collect();
        let s = series("x", &noise, 90.0, None, FLAT_ABS_RSS_KIB);
        assert!(s.flat, "{s:?}");
        // Too few samples is not a pass.
        assert!(!series("x", &[(1.0, 1.0)], 90.0, None, 0.0).flat);
    }

    #[test]
    fn a_redis_restart_moves_the_key_count_reference() {
        // Keys: 1000 until the restart at 50 s, then 0 rising back to 1000 by 80 s.
        let pts: Vec<(f64, f64)> = (0..90)
            .map(|i| {
                let t = i as f64;
                let v = if t < 50.0 {
                    1000.0
                } else {
                    ((t - 50.0) * 33.0).min(1000.0)
                };
                (t, v)
            })
            .collect();
        let series = all_series(
            &pts.iter()
                .map(|(t, v)| Sample {
                    t: *t,
                    redis_keys: Some(*v as u64),
                    ..Sample::default()
                })
                .collect::<Vec<_>>(),
            90.0,
            Some(50.0),
        );
        let keys = series
            .iter()
            .find(|s| s.name == "Redis keys")
            .expect("keys");
        assert!(keys.flat, "{keys:?}");
        assert!((keys.reference_avg - 1000.0).abs() < 1.0);
    }

    #[test]
    fn ranges_and_durations_parse() {
        assert_eq!(
            parse_range("60-180"),
            Ok((Duration::from_secs(60), Duration::from_secs(180)))
        );
        assert_eq!(
            parse_range("30"),
            Ok((Duration::from_secs(30), Duration::from_secs(30)))
        );
        assert!(parse_range("180-60").is_err());
        assert!(parse_range("0-5").is_err());
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }
}
