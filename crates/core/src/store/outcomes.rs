//! Group commit: the outcomes of several jobs in one statement (issue #20).
//!
//! Why: an outcome is the heaviest statement a backup sends PostgreSQL (the device row's
//! new version in every index of `devices`, the run row in five of `backup_runs`, the
//! trim), and most of what PostgreSQL spends on it is per statement and per commit, not
//! per row — parsing the protocol messages, starting and committing the transaction,
//! the socket's send and receive. Measured with the outcome's shape on this machine's
//! PostgreSQL: ~0.30 ms of server CPU per outcome one at a time, ~0.19 ms four at a
//! time, ~0.11 ms eight at a time (BENCHMARKS.md, "Issue #20, part 4").
//!
//! What it keeps: [`Store::record_outcomes`] writes each outcome exactly as
//! [`Store::record_outcome`] would, fenced by its own lease token, in one statement (so
//! atomic as a whole: a statement PostgreSQL refuses writes none of them, and the caller
//! falls back to one statement each, so one job's bad row never costs another its
//! outcome). Which jobs' outcomes travel together is the worker's business
//! (`worker::group`); the store only writes them.

use super::lease::{Lease, RunRecord, StateUpdate};
use super::{RunStatus, Store, StoreError};

/// One job's outcome, as [`Store::record_outcome`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeRow<'a> {
    pub lease: &'a Lease,
    pub run: &'a RunRecord,
    pub state: &'a StateUpdate,
}

/// The columns of the statement's input, one array parameter each, in binding order
/// (`$1` …), with their PostgreSQL types. Device-state columns first, then the run row's
/// own.
const INPUT: [(&str, &str); 25] = [
    ("device_id", "uuid"),
    ("token", "uuid"),
    ("started_at", "timestamptz"),
    ("status", "text"),
    ("error_kind", "text"),
    ("error_message", "text"),
    ("success", "bool"),
    ("finished_at", "timestamptz"),
    ("sha256", "text"),
    ("bytes", "int8"),
    ("consecutive_failures", "int4"),
    ("backoff_until", "timestamptz"),
    ("blocked_reason", "text"),
    ("next_due_at", "timestamptz"),
    ("tofu_fingerprint", "text"),
    ("routeros_version", "text"),
    ("job_id", "text"),
    ("tenant_id", "uuid"),
    ("trigger", "text"),
    ("worker", "text"),
    ("duration_ms", "int8"),
    ("timeout_seconds", "int4"),
    ("timeout_source", "text"),
    ("export_ms", "int8"),
    ("timed_out", "bool"),
];

/// [`Store::record_outcomes`]: each input row's fenced device update, its run row and
/// its device's trim, as [`super::lease`]'s outcome statement does for one; returns the
/// ordinals (1-based) of the rows whose lease held.
pub(super) static OUTCOMES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let arrays: Vec<String> = INPUT
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{ty}[]", i + 1))
        .collect();
    let names: Vec<&str> = INPUT.iter().map(|(name, _)| *name).collect();
    let keep = INPUT.len() + 1;
    let run_columns = super::lease::RUN_INSERT_COLUMNS.join(", ");
    let run_values: Vec<String> = super::lease::RUN_INSERT_COLUMNS
        .iter()
        .map(|c| format!("o.{c}"))
        .collect();
    format!(
        "WITH o AS (SELECT * FROM unnest({}) WITH ORDINALITY AS o({}, n)), \
         gate AS (UPDATE devices d SET \
           last_attempt_at = o.started_at, last_status = o.status, \
           last_error_kind = o.error_kind, last_error_message = o.error_message, \
           last_success_at = CASE WHEN o.success THEN o.finished_at ELSE d.last_success_at END, \
           last_sha256 = CASE WHEN o.success THEN o.sha256 ELSE d.last_sha256 END, \
           last_bytes = CASE WHEN o.success THEN o.bytes ELSE d.last_bytes END, \
           consecutive_failures = o.consecutive_failures, backoff_until = o.backoff_until, \
           blocked_reason = o.blocked_reason, \
           blocked_at = CASE WHEN o.blocked_reason IS NULL THEN NULL ELSE o.finished_at END, \
           next_due_at = o.next_due_at, \
           ssh_host_key_fingerprint = COALESCE(d.ssh_host_key_fingerprint, o.tofu_fingerprint), \
           routeros_version = COALESCE(o.routeros_version, d.routeros_version), \
           outstanding_job = CASE WHEN d.outstanding_job = o.job_id THEN NULL ELSE d.outstanding_job END, \
           outstanding_since = CASE WHEN d.outstanding_job = o.job_id THEN NULL ELSE d.outstanding_since END, \
           lease_job = NULL, lease_token = NULL, lease_worker = NULL, lease_expires_at = NULL, \
           lease_starts = 0 \
         FROM o WHERE d.id = o.device_id AND d.lease_token = o.token RETURNING o.n), \
         ins AS (INSERT INTO backup_runs ({run_columns}) \
           SELECT {} FROM o JOIN gate ON gate.n = o.n ORDER BY o.n RETURNING id), \
         trimmed AS (DELETE FROM backup_runs b USING \
           (SELECT o.device_id, (SELECT r.id FROM backup_runs r WHERE r.device_id = o.device_id \
              ORDER BY r.id DESC OFFSET GREATEST(${keep}::int8 - 1, 0) LIMIT 1) AS cut \
            FROM o JOIN gate ON gate.n = o.n) c \
           WHERE ${keep}::int8 > 0 AND b.device_id = c.device_id AND b.id <= c.cut RETURNING b.id) \
         SELECT n FROM gate",
        arrays.join(", "),
        names.join(", "),
        run_values.join(", "),
    )
});

impl Store {
    /// Write several outcomes in one statement, each fenced by its own lease as
    /// [`Store::record_outcome`] fences one: `result[i]` is whether `rows[i]`'s lease
    /// held (its outcome written). The statement is atomic: on `Err` nothing was
    /// written. Rows must be of different devices (one lease per device at a time
    /// guarantees it for live jobs). Callers sort them by device so that concurrent
    /// groups tend to lock rows in one order; the plan decides the order, and a deadlock
    /// PostgreSQL breaks is an error like any other refusal (the worker then writes the
    /// rows one by one).
    pub async fn record_outcomes(
        &self,
        rows: &[OutcomeRow<'_>],
        keep_runs: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        fn col<'a, T>(rows: &[OutcomeRow<'a>], f: impl Fn(&OutcomeRow<'a>) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        let q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(OUTCOMES_SQL.as_str()))
            .bind(col(rows, |r| r.lease.device_id))
            .bind(col(rows, |r| r.lease.token))
            .bind(col(rows, |r| r.run.started_at))
            .bind(col(rows, |r| r.run.status.as_str()))
            .bind(col(rows, |r| r.run.error_kind.as_deref()))
            .bind(col(rows, |r| r.run.error_message.as_deref()))
            .bind(col(rows, |r| r.run.status == RunStatus::Success))
            .bind(col(rows, |r| r.run.finished_at))
            .bind(col(rows, |r| r.run.sha256.as_deref()))
            .bind(col(rows, |r| r.run.bytes))
            .bind(col(rows, |r| r.state.consecutive_failures))
            .bind(col(rows, |r| r.state.backoff_until))
            .bind(col(rows, |r| r.state.blocked_reason.as_deref()))
            .bind(col(rows, |r| r.state.next_due_at))
            .bind(col(rows, |r| r.state.tofu_fingerprint.as_deref()))
            .bind(col(rows, |r| r.state.routeros_version.as_deref()))
            .bind(col(rows, |r| r.run.job_id.as_str()))
            .bind(col(rows, |r| r.run.tenant_id))
            .bind(col(rows, |r| r.run.trigger.as_str()))
            .bind(col(rows, |r| r.run.worker.as_str()))
            .bind(col(rows, |r| duration_ms(r.run)))
            .bind(col(rows, |r| {
                r.run
                    .timeout
                    .map(|t| i32::try_from(t.seconds).unwrap_or(i32::MAX))
            }))
            .bind(col(rows, |r| r.run.timeout.map(|t| t.source)))
            .bind(col(rows, |r| r.run.timeout.and_then(|t| t.export_ms)))
            .bind(col(rows, |r| r.run.timeout.is_some_and(|t| t.timed_out)))
            .bind(keep_runs);
        let mut lane = self.lanes.acquire().await?;
        let written: Vec<i64> = q.fetch_all(lane.conn()).await?;
        lane.done();
        Ok(applied(rows.len(), &written))
    }
}

/// The run's duration as the run row stores it (never negative).
pub(super) fn duration_ms(run: &RunRecord) -> i64 {
    (run.finished_at - run.started_at).num_milliseconds().max(0)
}

/// Which of `count` input rows were written, from the 1-based ordinals the statement
/// returned (anything out of range is ignored).
fn applied(count: usize, written: &[i64]) -> Vec<bool> {
    let mut out = vec![false; count];
    for n in written {
        if let Some(slot) = usize::try_from(*n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| out.get_mut(i))
        {
            *slot = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordinals_returned_mark_the_rows_written_and_nothing_else() {
        assert_eq!(applied(3, &[1, 3]), vec![true, false, true]);
        assert_eq!(applied(2, &[]), vec![false, false]);
        // Out of range (0, negative, past the end) marks nothing.
        assert_eq!(applied(2, &[0, -1, 3]), vec![false, false]);
    }

    #[test]
    fn every_run_column_is_an_input_column_and_the_inputs_are_bound_in_order() {
        let names: Vec<&str> = INPUT.iter().map(|(n, _)| *n).collect();
        for c in super::super::lease::RUN_INSERT_COLUMNS {
            assert!(names.contains(&c), "run column {c} is not an input column");
        }
        // $1 … $25 for the arrays, $26 for keep_runs, nothing else.
        let sql = OUTCOMES_SQL.as_str();
        assert!(sql.contains("$25::bool[]") && sql.contains("$26::int8"));
        assert!(!sql.contains("$27"));
    }
}
