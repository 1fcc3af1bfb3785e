//! A job's statements: the lease, the fence before publishing, the outcome and the run
//! rows — what a worker sends PostgreSQL for every backup, on [`crate::lanes`].
//!
//! Why apart from the rest of the store: these run once or more per backup, so their
//! count and their plans are what a fleet's PostgreSQL pays for (issue #20;
//! `tests/it/statement_counts.rs` holds the count, `tests/it/lanes.rs` the plans). Each
//! call is one statement (the lone lease's "why not" read aside, which runs only when it
//! took nothing), so it is atomic, and those under a lease are fenced by its token in
//! SQL, so asking again after a connection error is safe. The statements are named at
//! module level for [`lane_statements`].

use super::{
    CREDENTIAL_COLUMNS, DEVICE_COLUMNS, Device, RunStatus, SealedCredentials, Store, StoreError,
    Trigger,
};
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// Result of trying to take a device's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// The lease is ours. `takeover` when it replaced an expired lease of another
    /// execution (whose token is `previous`: that execution never finished); `starts`
    /// counts how often this job id took the lease without finishing.
    Acquired {
        takeover: bool,
        previous: Option<Uuid>,
        starts: i32,
        /// The device row as it is under the lease.
        device: Box<Device>,
        /// Its credentials (its own and its profile's), sealed, read in the same
        /// statement.
        credentials: Box<SealedCredentials>,
        /// What the export's timeout and the binary step decide from, read in the same
        /// statement too.
        facts: Box<LeaseFacts>,
    },
    /// Another execution holds it until `expires_at`.
    Held {
        job_id: String,
        expires_at: DateTime<Utc>,
    },
    /// The device is gone.
    NoDevice,
}

/// One lease's answer from [`Store::acquire_leases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupedLease {
    /// What [`Store::acquire_lease`] would have answered.
    Answered(LeaseAttempt),
    /// Another transaction holds the device's row (an import, a key rotation, another
    /// group): the group did not wait for it. Ask for this lease on its own.
    Busy,
}

/// The facts besides the device row and its credentials that a backup decides on
/// before its export, returned by the lease's statement (issue #20: one round trip
/// instead of four). Raw columns: the store decides nothing with them —
/// [`crate::export_timeout::inputs_from_lease`] turns them into the export timeout's
/// inputs (the same as [`Store::timeout_inputs`] reads) and
/// [`crate::binary::store::state_from_lease`] into the binary step's state (the same as
/// [`crate::binary::store::state`] reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseFacts {
    /// The credential profile's export timeout override, seconds.
    pub profile_timeout_seconds: Option<i32>,
    /// The device's last [`RECENT_RUNS`] runs that reached it (`success`, `failed`),
    /// newest first, as three columns of equal length: status, whether the export
    /// timed out, and how long the export (else the whole run) took, ms.
    pub recent_status: Vec<String>,
    pub recent_timed_out: Vec<bool>,
    pub recent_export_ms: Vec<Option<i64>>,
    /// The device's binary backup mode override, its tenant's, its newest binary's
    /// time and config hash, and the binary step's backoff and failure count.
    pub binary_device_mode: Option<String>,
    pub binary_tenant_mode: Option<String>,
    pub binary_newest_at: Option<DateTime<Utc>>,
    pub binary_newest_sha256: Option<String>,
    pub binary_retry_after: Option<DateTime<Utc>>,
    pub binary_failures: Option<i32>,
    /// The pinned host key of each jump host candidate (the device's, its profile's,
    /// its tenant's: `bastion_host_keys` by tenant, host and port), so a backup through
    /// a bastion needs no read of its own for it ([`LeaseFacts::jump_pin`]).
    pub device_jump_pin: Option<String>,
    pub profile_jump_pin: Option<String>,
    pub tenant_jump_pin: Option<String>,
}

impl LeaseFacts {
    /// The pinned key of the jump host the device resolved to, by where it came from
    /// ([`crate::jump::JumpSource`]).
    pub fn jump_pin(&self, source: crate::jump::JumpSource) -> Option<&str> {
        match source {
            crate::jump::JumpSource::Device => self.device_jump_pin.as_deref(),
            crate::jump::JumpSource::Profile => self.profile_jump_pin.as_deref(),
            crate::jump::JumpSource::Tenant => self.tenant_jump_pin.as_deref(),
        }
    }
}

/// The runs [`LeaseFacts`] (and [`Store::timeout_inputs`]) look at, newest first.
pub const RECENT_RUNS: i64 = 20;

/// A job execution's hold on a device.
#[derive(Debug, Clone)]
pub struct Lease {
    pub device_id: Uuid,
    pub job_id: String,
    pub token: Uuid,
    pub worker: String,
    pub ttl: Duration,
}

/// One attempt, as written to `backup_runs`.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: String,
    pub trigger: Trigger,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: RunStatus,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    /// The export timeout that applied (`None`: the run never reached the device).
    pub timeout: Option<AppliedTimeout>,
}

/// The export timeout a run applied, and what the adaptive timeout learns from the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedTimeout {
    /// The timeout, whole seconds.
    pub seconds: u32,
    /// Where it came from (`export_timeout::TimeoutSource::as_str`: the store stays
    /// below `export_timeout`, which reads the store).
    pub source: &'static str,
    /// How long a successful export took (connect, login, export, normalize).
    pub export_ms: Option<i64>,
    /// The export timeout expired.
    pub timed_out: bool,
}

/// The state change an outcome makes to its device (computed by the worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateUpdate {
    pub next_due_at: DateTime<Utc>,
    pub consecutive_failures: i32,
    pub backoff_until: Option<DateTime<Utc>>,
    pub blocked_reason: Option<String>,
    /// Pin this fingerprint if none is pinned yet (trust on first use).
    pub tofu_fingerprint: Option<String>,
    pub routeros_version: Option<String>,
}

impl Store {
    /// Take the device's lease for `lease.job_id` if it is free or expired. The device
    /// row comes back as it is once the lease is held, so every decision after it is made
    /// on data no other execution can change meanwhile (pins, blocks, failure counts).
    pub async fn acquire_lease(&self, lease: &Lease) -> Result<LeaseAttempt, StoreError> {
        Ok(match self.lone_lease(&LEASE_SQL, lease).await? {
            Ok(taken) => taken,
            // Waiting on the row, nothing skipped it: whatever the read found is why.
            Err(held) => not_taken(held.map(|(job, until, _)| (job, until))),
        })
    }

    /// [`Store::acquire_lease`], except that it does not wait for a device row another
    /// transaction holds: then [`GroupedLease::Busy`]. What a worker's lone lease runs
    /// inside the slots of `worker::leases`, so one busy row cannot hold a slot.
    pub async fn try_acquire_lease(&self, lease: &Lease) -> Result<GroupedLease, StoreError> {
        Ok(match self.lone_lease(&LEASE_SKIP_SQL, lease).await? {
            Ok(taken) => GroupedLease::Answered(taken),
            // Not taken: held by another execution, gone, or skipped because another
            // transaction holds the row — which the lease being free tells apart.
            Err(Some((_, _, true))) => GroupedLease::Busy,
            Err(held) => {
                GroupedLease::Answered(not_taken(held.map(|(job, until, _)| (job, until))))
            }
        })
    }

    /// One lease in its own statement (`sql`: [`LEASE_SQL`] or [`LEASE_SKIP_SQL`]); when
    /// it took nothing, the device's lease read after it on the same connection
    /// ([`HELD_OR_FREE_SQL`]; `None`: no device).
    async fn lone_lease(
        &self,
        sql: &str,
        lease: &Lease,
    ) -> Result<Result<LeaseAttempt, Option<HeldOrFree>>, StoreError> {
        let mut lane = self.lanes.acquire().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease.device_id)
            .bind(&lease.job_id)
            .bind(lease.token)
            .bind(&lease.worker)
            .bind(lease.ttl.as_secs_f64())
            .fetch_optional(lane.conn())
            .await?;
        if let Some(row) = row {
            lane.done();
            return acquired(&row).map(Ok);
        }
        let held: Option<HeldOrFree> = sqlx::query_as(HELD_OR_FREE_SQL)
            .bind(lease.device_id)
            .fetch_optional(lane.conn())
            .await?;
        lane.done();
        Ok(Err(held))
    }

    /// [`Store::acquire_lease`] for several leases in one statement (issue #20: the
    /// lease is the largest statement a backup sends, and most of its cost is per
    /// statement). Each lease gets, in the order given, the answer it would get alone
    /// (why one was not taken is read in the same statement), or [`GroupedLease::Busy`]
    /// when another transaction holds its device's row: the group skips a locked row
    /// rather than wait on it. A row that does not decode is that lease's error alone.
    /// The devices must be distinct.
    pub async fn acquire_leases(
        &self,
        leases: &[Lease],
    ) -> Result<Vec<Result<GroupedLease, StoreError>>, StoreError> {
        use sqlx::Row;
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = leases.iter().find(|l| !seen.insert(l.device_id)) {
            return Err(StoreError::Invalid(format!(
                "device {} twice in one group of leases",
                twice.device_id
            )));
        }
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| l.device_id).collect();
        let jobs: Vec<&str> = leases.iter().map(|l| l.job_id.as_str()).collect();
        let tokens: Vec<Uuid> = leases.iter().map(|l| l.token).collect();
        let workers: Vec<&str> = leases.iter().map(|l| l.worker.as_str()).collect();
        let ttls: Vec<f64> = leases.iter().map(|l| l.ttl.as_secs_f64()).collect();
        let mut lane = self.lanes.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(LEASES_SQL.as_str()))
            .bind(&ids)
            .bind(&jobs)
            .bind(&tokens)
            .bind(&workers)
            .bind(&ttls)
            .fetch_all(lane.conn())
            .await?;
        lane.done();
        if rows.len() != leases.len() {
            return Err(StoreError::Invalid(format!(
                "{} answers to {} leases",
                rows.len(),
                leases.len()
            )));
        }
        // One row per request, in request order (`ORDER BY request`).
        Ok(rows
            .iter()
            .map(|row| {
                let taken: Option<i64> = row.try_get("taken_k")?;
                if taken.is_some() {
                    return acquired(row).map(GroupedLease::Answered);
                }
                let locked: bool = row.try_get("locked")?;
                let exists: bool = row.try_get("device_exists")?;
                Ok(match (locked, exists) {
                    (true, _) => GroupedLease::Answered(not_taken(Some((
                        row.try_get("held_job")?,
                        row.try_get("held_until")?,
                    )))),
                    (false, true) => GroupedLease::Busy,
                    (false, false) => GroupedLease::Answered(LeaseAttempt::NoDevice),
                })
            })
            .collect())
    }

    /// Extend the lease; `false` if it is no longer ours (stop and publish nothing).
    pub async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut lane = self.lanes.acquire().await?;
        let r = sqlx::query(RENEW_SQL)
            .bind(lease.device_id)
            .bind(lease.token)
            .bind(lease.ttl.as_secs_f64())
            .execute(lane.conn())
            .await?;
        lane.done();
        Ok(r.rows_affected() == 1)
    }

    /// Whether the lease is still ours and unexpired, read without writing: the fence of
    /// an execution whose lease has most of its TTL left (`worker::rules::fence`). Only
    /// the holder clears a lease, and nobody can take it before it expires, so a `true`
    /// holds until `lease_expires_at`.
    pub async fn confirm_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut lane = self.lanes.acquire().await?;
        let ours: bool = sqlx::query_scalar(CONFIRM_SQL)
            .bind(lease.device_id)
            .bind(lease.token)
            .fetch_one(lane.conn())
            .await?;
        lane.done();
        Ok(ours)
    }

    /// Give the lease back without an outcome (shutdown): the job runs again elsewhere.
    /// `lease_starts` is kept down so a graceful stop does not count as a crash.
    pub async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut lane = self.lanes.acquire().await?;
        let r = sqlx::query(RELEASE_SQL)
            .bind(lease.device_id)
            .bind(lease.token)
            .execute(lane.conn())
            .await?;
        lane.done();
        Ok(r.rows_affected() == 1)
    }

    /// Write an outcome under the lease (fenced): the run row, the new state, the claim
    /// and the lease released, old runs trimmed — in one statement (issue #20: one round
    /// trip instead of five; a statement is atomic, so none of it is written unless all
    /// of it is). Returns `false` (and writes nothing) if the lease is no longer ours.
    pub async fn record_outcome(
        &self,
        lease: &Lease,
        run: &RunRecord,
        state: &StateUpdate,
        keep_runs: i64,
    ) -> Result<bool, StoreError> {
        let success = run.status == RunStatus::Success;
        let q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(OUTCOME_SQL.as_str()))
            .bind(lease.device_id)
            .bind(lease.token)
            .bind(run.started_at)
            .bind(run.status.as_str())
            .bind(&run.error_kind)
            .bind(&run.error_message)
            .bind(success)
            .bind(run.finished_at)
            .bind(&run.sha256)
            .bind(run.bytes)
            .bind(state.consecutive_failures)
            .bind(state.backoff_until)
            .bind(&state.blocked_reason)
            .bind(state.next_due_at)
            .bind(&state.tofu_fingerprint)
            .bind(&state.routeros_version)
            .bind(&run.job_id);
        let mut lane = self.lanes.acquire().await?;
        let written = bind_run(q, run, keep_runs).fetch_one(lane.conn()).await?;
        lane.done();
        Ok(written == 1)
    }

    /// Write a run that held no lease (skipped, locked, blocked), old runs trimmed, in
    /// one statement. Device state is not touched.
    pub async fn record_run(&self, run: &RunRecord, keep_runs: i64) -> Result<(), StoreError> {
        let q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(RUN_SQL.as_str()));
        let mut lane = self.lanes.acquire().await?;
        bind_run(q, run, keep_runs).fetch_one(lane.conn()).await?;
        lane.done();
        Ok(())
    }

    /// A device skipped because it is offline: its claim is dropped and it is next due
    /// at `next_due_at`; the run is recorded; and `lease`, when the skip was decided under
    /// one, is released as [`Store::release_lease`] releases it (one statement: an
    /// offline device found under the lease costs no more statements than one found
    /// before it, issue #20).
    pub async fn record_skip(
        &self,
        run: &RunRecord,
        next_due_at: DateTime<Utc>,
        keep_runs: i64,
        lease: Option<&Lease>,
    ) -> Result<(), StoreError> {
        // The right-hand sides see the row as it was, so every `lease_token = $5` below
        // tests the lease before this statement released it.
        let q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(SKIP_SQL.as_str()))
            .bind(run.device_id)
            .bind(run.started_at)
            .bind(next_due_at)
            .bind(&run.job_id)
            .bind(lease.map(|l| l.token));
        let mut lane = self.lanes.acquire().await?;
        bind_run(q, run, keep_runs).fetch_one(lane.conn()).await?;
        lane.done();
        Ok(())
    }
}

/// A device's lease as read after a lone lease took nothing: its job, until when, and
/// whether it is free (no holder, or expired).
type HeldOrFree = (Option<String>, Option<DateTime<Utc>>, bool);

/// A lease's row, taken.
fn acquired(row: &sqlx::postgres::PgRow) -> Result<LeaseAttempt, StoreError> {
    use sqlx::Row;
    let device = <Device as sqlx::FromRow<'_, _>>::from_row(row)?;
    let credentials = <SealedCredentials as sqlx::FromRow<'_, _>>::from_row(row)?;
    let facts = <LeaseFacts as sqlx::FromRow<'_, _>>::from_row(row)?;
    let previous: Option<Uuid> = row.try_get("previous_token")?;
    Ok(LeaseAttempt::Acquired {
        takeover: previous.is_some(),
        previous,
        starts: device.lease_starts,
        device: Box::new(device),
        credentials: Box::new(credentials),
        facts: Box::new(facts),
    })
}

/// Why a lease was not taken, from the device's lease columns (`None`: no device).
fn not_taken(held: Option<(Option<String>, Option<DateTime<Utc>>)>) -> LeaseAttempt {
    match held {
        None => LeaseAttempt::NoDevice,
        Some((job, expires)) => LeaseAttempt::Held {
            job_id: job.unwrap_or_default(),
            expires_at: expires.unwrap_or_else(Utc::now),
        },
    }
}

/// The run row's columns, in the order [`bind_run`] binds them.
pub(super) const RUN_INSERT_COLUMNS: [&str; 17] = [
    "device_id",
    "tenant_id",
    "job_id",
    "trigger",
    "worker",
    "started_at",
    "finished_at",
    "status",
    "error_kind",
    "error_message",
    "bytes",
    "sha256",
    "duration_ms",
    "timeout_seconds",
    "timeout_source",
    "export_ms",
    "timed_out",
];

// ---- the statements ----------------------------------------------------------------

/// [`Store::acquire_lease`]: the lease and every fact the job decides on before its export.
static LEASE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| lease_sql(""));

/// [`Store::try_acquire_lease`]: [`LEASE_SQL`] that skips the device's row when another
/// transaction holds it.
static LEASE_SKIP_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| lease_sql(" SKIP LOCKED"));

/// The lone lease, its row locked `FOR UPDATE` with `wait` (`""` or `" SKIP LOCKED"`).
fn lease_sql(wait: &str) -> String {
    format!(
        "WITH old AS (SELECT id, lease_job, lease_token FROM devices WHERE id = $1 \
           FOR UPDATE{wait}), \
         recent AS ({}) \
         UPDATE devices d SET lease_job = $2, lease_token = $3, lease_worker = $4, \
           lease_expires_at = now() + ($5::float8 * interval '1 second'), \
           lease_starts = CASE WHEN d.lease_job = $2 THEN d.lease_starts + 1 ELSE 1 END \
         FROM old CROSS JOIN recent {} \
         WHERE d.id = old.id \
           AND (d.lease_token IS NULL OR d.lease_expires_at < now()) \
         RETURNING {}",
        recent_runs("$1"),
        LEASE_JOINS,
        lease_returning()
    )
}

/// [`Store::acquire_leases`]: [`LEASE_SQL`] for several devices, one request per element
/// of the arrays `$1` (device), `$2` (job), `$3` (token), `$4` (worker) and `$5` (TTL,
/// seconds). One row per request, in order (`request`, from 1): the lease's columns when
/// taken (`taken_k` set); else whether the group locked the row (`locked`: then
/// `held_job` and `held_until` say by whom, as the row is now) and whether the device
/// exists (`device_exists`: a device not locked was skipped because another transaction
/// holds its row). Rows are locked in the order of their ids and never waited for (`SKIP
/// LOCKED`), so a group neither waits in a circle nor stalls on one busy row.
static LEASES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH req AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], \
             $5::float8[]) WITH ORDINALITY AS q(id, job, token, worker, ttl, k)), \
         old AS (SELECT o.id, o.lease_job, o.lease_token, o.lease_expires_at FROM devices o \
           WHERE o.id = ANY($1::uuid[]) ORDER BY o.id FOR UPDATE SKIP LOCKED), \
         taken AS (UPDATE devices d SET lease_job = req.job, lease_token = req.token, \
           lease_worker = req.worker, \
           lease_expires_at = now() + (req.ttl * interval '1 second'), \
           lease_starts = CASE WHEN d.lease_job = req.job THEN d.lease_starts + 1 ELSE 1 END \
         FROM old JOIN req ON req.id = old.id CROSS JOIN LATERAL ({}) recent {} \
         WHERE d.id = old.id \
           AND (d.lease_token IS NULL OR d.lease_expires_at < now()) \
         RETURNING {}, req.k AS taken_k) \
         SELECT req.k AS request, t.*, o.id IS NOT NULL AS locked, \
           o.lease_job AS held_job, o.lease_expires_at AS held_until, \
           EXISTS (SELECT 1 FROM devices c WHERE c.id = req.id) AS device_exists \
         FROM req LEFT JOIN taken t ON t.taken_k = req.k LEFT JOIN old o ON o.id = req.id \
         ORDER BY req.k",
        recent_runs("old.id"),
        LEASE_JOINS,
        lease_returning()
    )
});

/// The device's last [`RECENT_RUNS`] runs that reached it, as [`LeaseFacts`]' three
/// arrays; `device` is the expression naming the device.
fn recent_runs(device: &str) -> String {
    format!(
        "SELECT \
           COALESCE(array_agg(r.status ORDER BY r.id DESC), '{{}}') AS recent_status, \
           COALESCE(array_agg(r.timed_out ORDER BY r.id DESC), '{{}}') AS recent_timed_out, \
           COALESCE(array_agg(COALESCE(r.export_ms, r.duration_ms) ORDER BY r.id DESC), '{{}}') \
             AS recent_export_ms \
         FROM (SELECT id, status, timed_out, export_ms, duration_ms FROM backup_runs \
               WHERE device_id = {device} AND status IN ('success', 'failed') \
               ORDER BY id DESC LIMIT {RECENT_RUNS}) r"
    )
}

/// The binary step's state and newest binary, joined to the locked row `old`.
const LEASE_JOINS: &str = "LEFT JOIN binary_state s ON s.device_id = old.id \
    LEFT JOIN LATERAL (SELECT b.collected_at, b.config_sha256 FROM binary_backups b \
                       WHERE b.device_id = old.id \
                       ORDER BY b.collected_at DESC, b.id DESC LIMIT 1) n ON true";

/// What a lease returns: the device row, its sealed credentials and [`LeaseFacts`].
fn lease_returning() -> String {
    let columns: Vec<String> = DEVICE_COLUMNS
        .split(',')
        .map(|c| match c.trim() {
            c if c.starts_with('(') => c.replacen('(', "(d.", 1),
            c => format!("d.{c}"),
        })
        .chain(std::iter::once(CREDENTIAL_COLUMNS.to_string()))
        .collect();
    format!(
        "{}, old.lease_token AS previous_token, \
           (SELECT p.export_timeout_seconds FROM credential_profiles p \
            WHERE p.id = d.credential_profile_id) AS profile_timeout_seconds, \
           recent.recent_status, recent.recent_timed_out, recent.recent_export_ms, \
           d.backup_binary AS binary_device_mode, \
           (SELECT t.mode FROM binary_tenant_mode t WHERE t.tenant_id = d.tenant_id) \
             AS binary_tenant_mode, \
           n.collected_at AS binary_newest_at, n.config_sha256 AS binary_newest_sha256, \
           s.retry_after AS binary_retry_after, s.consecutive_failures AS binary_failures, \
           (SELECT k.fingerprint FROM bastion_host_keys k \
            WHERE k.tenant_id = d.tenant_id AND k.host = d.jump_host AND k.port = d.jump_port) \
             AS device_jump_pin, \
           (SELECT k.fingerprint FROM credential_profiles p JOIN bastion_host_keys k \
              ON k.tenant_id = d.tenant_id AND k.host = p.jump_host AND k.port = p.jump_port \
            WHERE p.id = d.credential_profile_id) AS profile_jump_pin, \
           (SELECT k.fingerprint FROM tenant_jump_hosts t JOIN bastion_host_keys k \
              ON k.tenant_id = t.tenant_id AND k.host = t.host AND k.port = t.port \
            WHERE t.tenant_id = d.tenant_id) AS tenant_jump_pin",
        columns.join(", ")
    )
}

/// [`Store::record_outcome`]: the fenced outcome, run row and trim in one statement.
static OUTCOME_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH gate AS (UPDATE devices SET \
           last_attempt_at = $3, last_status = $4, last_error_kind = $5, last_error_message = $6, \
           last_success_at = CASE WHEN $7 THEN $8 ELSE last_success_at END, \
           last_sha256 = CASE WHEN $7 THEN $9 ELSE last_sha256 END, \
           last_bytes = CASE WHEN $7 THEN $10 ELSE last_bytes END, \
           consecutive_failures = $11, backoff_until = $12, \
           blocked_reason = $13, blocked_at = CASE WHEN $13::text IS NULL THEN NULL ELSE $8 END, \
           next_due_at = $14, \
           ssh_host_key_fingerprint = COALESCE(ssh_host_key_fingerprint, $15), \
           routeros_version = COALESCE($16, routeros_version), \
           outstanding_job = CASE WHEN outstanding_job = $17 THEN NULL ELSE outstanding_job END, \
           outstanding_since = CASE WHEN outstanding_job = $17 THEN NULL ELSE outstanding_since END, \
           lease_job = NULL, lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, \
           lease_starts = 0 \
         WHERE id = $1 AND lease_token = $2 RETURNING id), {} \
         SELECT count(*) FROM gate",
        run_ctes(18)
    )
});

/// [`Store::record_run`]: a run that held no lease.
static RUN_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH gate AS (SELECT 1), {} SELECT count(*) FROM gate",
        run_ctes(1)
    )
});

/// [`Store::record_skip`]: an offline device's run, its claim and lease released.
static SKIP_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH skipped AS (UPDATE devices SET last_attempt_at = $2, last_status = 'skipped', \
           next_due_at = $3, \
           outstanding_job = CASE WHEN outstanding_job = $4 THEN NULL ELSE outstanding_job END, \
           outstanding_since = CASE WHEN outstanding_job = $4 THEN NULL ELSE outstanding_since END, \
           lease_token = CASE WHEN lease_token = $5::uuid THEN NULL ELSE lease_token END, \
           lease_worker = CASE WHEN lease_token = $5::uuid THEN NULL ELSE lease_worker END, \
           lease_expires_at = CASE WHEN lease_token = $5::uuid THEN NULL ELSE lease_expires_at END, \
           lease_starts = CASE WHEN lease_token = $5::uuid THEN GREATEST(lease_starts - 1, 0) \
             ELSE lease_starts END \
         WHERE id = $1 RETURNING id), \
         gate AS (SELECT 1), {} SELECT count(*) FROM skipped",
        run_ctes(6)
    )
});

/// Why a lone lease took nothing: who holds the device's lease until when, and whether
/// the lease is free (`free`) — after [`LEASE_SKIP_SQL`], nothing but a lock another
/// transaction holds on the row then kept it from being taken. A plain read: it neither
/// locks nor waits.
const HELD_OR_FREE_SQL: &str = "SELECT lease_job, lease_expires_at, \
    (lease_token IS NULL OR lease_expires_at < now()) AS free FROM devices WHERE id = $1";

const RENEW_SQL: &str = "UPDATE devices SET lease_expires_at = now() + ($3::float8 * interval '1 second') \
    WHERE id = $1 AND lease_token = $2";

const CONFIRM_SQL: &str = "SELECT EXISTS (SELECT 1 FROM devices \
    WHERE id = $1 AND lease_token = $2 AND lease_expires_at > now())";

const RELEASE_SQL: &str = "UPDATE devices SET lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, \
    lease_starts = GREATEST(lease_starts - 1, 0) \
    WHERE id = $1 AND lease_token = $2";

/// Every statement a job runs on a lane, by name, for the test of their cached plans
/// (`tests/it/lanes.rs`). Not an interface.
#[doc(hidden)]
pub fn lane_statements() -> [(&'static str, &'static str); 11] {
    [
        ("lease", LEASE_SQL.as_str()),
        ("lease_skip", LEASE_SKIP_SQL.as_str()),
        ("held_or_free", HELD_OR_FREE_SQL),
        ("leases", LEASES_SQL.as_str()),
        ("confirm", CONFIRM_SQL),
        ("renew", RENEW_SQL),
        ("release", RELEASE_SQL),
        ("outcome", OUTCOME_SQL.as_str()),
        ("outcomes", super::outcomes::OUTCOMES_SQL.as_str()),
        ("run", RUN_SQL.as_str()),
        ("skip", SKIP_SQL.as_str()),
    ]
}

/// Two CTEs that insert a run row (parameters `$first` …, as [`bind_run`] binds them)
/// and trim the device's runs to the newest `keep_runs` (the parameter after them; 0:
/// no trim), both only when the CTE `gate` has a row (the fenced update). One
/// statement sees one snapshot: the trim does not see the row it inserts, so it keeps
/// `keep_runs - 1` older ones.
fn run_ctes(first: usize) -> String {
    let params: Vec<String> = (first..first + RUN_INSERT_COLUMNS.len())
        .map(|i| format!("${i}"))
        .collect();
    let (device, keep) = (first, first + RUN_INSERT_COLUMNS.len());
    format!(
        "ins AS (INSERT INTO backup_runs ({}) SELECT {} FROM gate RETURNING id), \
         trimmed AS (DELETE FROM backup_runs WHERE ${keep}::int8 > 0 AND EXISTS (SELECT 1 FROM gate) \
           AND device_id = ${device} AND id <= (SELECT o.id FROM backup_runs o WHERE o.device_id = ${device} \
             ORDER BY o.id DESC OFFSET GREATEST(${keep}::int8 - 1, 0) LIMIT 1) RETURNING id)",
        RUN_INSERT_COLUMNS.join(", "),
        params.join(", ")
    )
}

/// Bind a run row's values and `keep_runs` after a query's own parameters (see
/// [`run_ctes`]).
fn bind_run<'q, O>(
    q: sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    run: &'q RunRecord,
    keep_runs: i64,
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let duration_ms = super::outcomes::duration_ms(run);
    q.bind(run.device_id)
        .bind(run.tenant_id)
        .bind(&run.job_id)
        .bind(run.trigger.as_str())
        .bind(&run.worker)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(run.status.as_str())
        .bind(&run.error_kind)
        .bind(&run.error_message)
        .bind(run.bytes)
        .bind(&run.sha256)
        .bind(duration_ms)
        .bind(
            run.timeout
                .map(|t| i32::try_from(t.seconds).unwrap_or(i32::MAX)),
        )
        .bind(run.timeout.map(|t| t.source))
        .bind(run.timeout.and_then(|t| t.export_ms))
        .bind(run.timeout.is_some_and(|t| t.timed_out))
        .bind(keep_runs)
}
