//! Group commit of outcomes (issue #20) against a real PostgreSQL: a group writes each
//! outcome exactly as its own statement would (fenced by its own lease, claim released,
//! runs trimmed), a group PostgreSQL refuses is written one outcome at a time so each job
//! gets its own answer, and a worker's outcomes wait for each other only while another
//! of its jobs could still join them.

use crate::common::fleet::TestDb;
use chrono::{DateTime, TimeZone, Utc};
use rosbackup::config::GroupCommit;
use rosbackup::store::{
    AppliedTimeout, Lease, LeaseAttempt, OutcomeRow, RunRecord, RunStatus, StateUpdate, Trigger,
};
use rosbackup::worker::Outcomes;
use std::time::Duration;
use uuid::Uuid;

const TENANT: &str = "00000000-0000-4000-8000-000000000001";

/// `n` devices named `{prefix}{i}`, each with three earlier runs; returns their ids.
async fn devices(db: &TestDb, prefix: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, name, host, username, password_enc, next_due_at, \
               routeros_version, outstanding_job, outstanding_since) \
             VALUES ($1, $2::uuid, $3, '127.0.0.1', 'admin', '\\x00', $5, '6.49', $4, $5)",
        )
        .bind(id)
        .bind(TENANT)
        .bind(format!("{prefix}{i}"))
        // Half of them have the job's claim outstanding, half another job's.
        .bind(if i % 2 == 0 {
            job(i)
        } else {
            "scheduled:other".into()
        })
        .bind(at(-1000))
        .execute(db.store.pool())
        .await
        .expect("device");
        sqlx::query(
            "INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, \
               finished_at, status, duration_ms) \
             SELECT $1, $2::uuid, 'old' || k, 'scheduled', 'w', $3, $3, 'success', 1 \
             FROM generate_series(1, 3) k",
        )
        .bind(id)
        .bind(TENANT)
        .bind(at(-500))
        .execute(db.store.pool())
        .await
        .expect("runs");
        ids.push(id);
    }
    ids
}

fn job(i: usize) -> String {
    format!("scheduled:job-{i}")
}

fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0)
        .single()
        .expect("a time")
}

/// Take the device's lease for job `i`.
async fn lease(db: &TestDb, device_id: Uuid, i: usize) -> Lease {
    let lease = Lease {
        device_id,
        job_id: job(i),
        token: Uuid::new_v4(),
        worker: "w1".into(),
        ttl: Duration::from_secs(60),
    };
    assert!(matches!(
        db.store.acquire_lease(&lease).await.expect("lease"),
        LeaseAttempt::Acquired { .. }
    ));
    lease
}

/// Outcome `i` of a varied set: successes with and without a first pin, failures with
/// and without a block, with and without a timeout.
fn outcome(device_id: Uuid, i: usize) -> (RunRecord, StateUpdate) {
    let success = i % 3 != 1;
    let run = RunRecord {
        device_id,
        tenant_id: TENANT.parse().expect("uuid"),
        job_id: job(i),
        trigger: if i.is_multiple_of(2) {
            Trigger::Scheduled
        } else {
            Trigger::Manual
        },
        worker: "w1".into(),
        started_at: at(i as i64),
        finished_at: at(i as i64 + 7),
        status: if success {
            RunStatus::Success
        } else {
            RunStatus::Failed
        },
        error_kind: (!success).then(|| "auth_failed".to_string()),
        error_message: (!success).then(|| format!("login refused ({i})")),
        bytes: success.then_some(1000 + i as i64),
        sha256: success.then(|| format!("{i:064}")),
        timeout: (i % 4 != 3).then_some(AppliedTimeout {
            seconds: 60 + i as u32,
            source: "adaptive",
            export_ms: success.then_some(500 + i as i64),
            timed_out: !success && i == 1,
        }),
    };
    let state = StateUpdate {
        next_due_at: at(3600 + i as i64),
        consecutive_failures: if success { 0 } else { 2 },
        backoff_until: (!success).then(|| at(600)),
        blocked_reason: (i % 3 == 1 && i.is_multiple_of(2)).then(|| "auth_failed".to_string()),
        tofu_fingerprint: (i.is_multiple_of(2)).then(|| format!("SHA256:{}", "A".repeat(43))),
        routeros_version: success.then(|| "7.16".to_string()),
    };
    (run, state)
}

/// A device's row and its runs, without what differs between twins by construction (id,
/// name, the lease's token and expiry).
async fn written(db: &TestDb, id: Uuid) -> (String, Vec<String>) {
    let device: String = sqlx::query_scalar(
        "SELECT (to_jsonb(d) - ARRAY['id', 'name', 'lease_token', 'lease_expires_at', \
           'created_at', 'updated_at'])::text FROM devices d WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db.store.pool())
    .await
    .expect("device");
    let runs: Vec<String> = sqlx::query_scalar(
        "SELECT (to_jsonb(r) - ARRAY['id', 'device_id'])::text FROM backup_runs r \
         WHERE device_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(db.store.pool())
    .await
    .expect("runs");
    (device, runs)
}

/// Six outcomes written one statement each and their twins written as one group (one
/// of them under a lease that is no longer its own) leave the same rows behind: the
/// device state, the claim released only for its own job, the lease cleared, the run
/// row, the runs trimmed to `keep_runs`; the stale one writes nothing either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_writes_each_outcome_as_its_own_statement_would() {
    let db = TestDb::new().await;
    const N: usize = 6;
    const STALE: usize = 5;
    let singles = devices(&db, "single", N).await;
    let grouped = devices(&db, "grouped", N).await;
    let mut answers = (Vec::new(), Vec::new());
    let mut group = Vec::new();
    for i in 0..N {
        let (a, b) = (
            lease(&db, singles[i], i).await,
            lease(&db, grouped[i], i).await,
        );
        let (a, b) = if i == STALE {
            // Taken over: the outcome comes with a token the device no longer holds.
            let stale = |l: Lease| Lease {
                token: Uuid::new_v4(),
                ..l
            };
            (stale(a), stale(b))
        } else {
            (a, b)
        };
        let (run, state) = outcome(singles[i], i);
        answers.0.push(
            db.store
                .record_outcome(&a, &run, &state, 3)
                .await
                .expect("one outcome"),
        );
        let (run, state) = outcome(grouped[i], i);
        group.push((b, run, state));
    }
    let rows: Vec<OutcomeRow<'_>> = group
        .iter()
        .map(|(lease, run, state)| OutcomeRow { lease, run, state })
        .collect();
    answers.1 = db.store.record_outcomes(&rows, 3).await.expect("a group");
    let expected: Vec<bool> = (0..N).map(|i| i != STALE).collect();
    assert_eq!(answers.0, expected, "one statement each");
    assert_eq!(answers.1, expected, "the group");
    for i in 0..N {
        let (single, group) = (
            written(&db, singles[i]).await,
            written(&db, grouped[i]).await,
        );
        assert_eq!(single.0, group.0, "device {i}'s row");
        assert_eq!(single.1, group.1, "device {i}'s runs");
        // Trimmed to keep_runs (the statement does not see the row it adds, so it keeps
        // two older ones and the new one), or untouched when the lease was not its own.
        assert_eq!(group.1.len(), 3, "{i}");
        let newest_is_this_job = group.1[2].contains(&format!("\"job_id\": \"{}\"", job(i)));
        assert_eq!(newest_is_this_job, i != STALE, "{i}: {:?}", group.1);
        // The claim is released only when it is this job's.
        let claimed = group.0.contains("\"outstanding_job\": null");
        assert_eq!(claimed, i % 2 == 0 && i != STALE, "{i}: {}", group.0);
    }
    // The set covers a block and a timed-out export among the rows compared.
    let (blocked, runs) = written(&db, grouped[4]).await;
    assert!(
        blocked.contains("\"blocked_reason\": \"auth_failed\""),
        "{blocked}"
    );
    assert!(runs[2].contains("\"timed_out\": false"), "{runs:?}");
    let (_, runs) = written(&db, grouped[1]).await;
    assert!(runs[2].contains("\"timed_out\": true"), "{runs:?}");
    let (stale_row, stale_runs) = written(&db, grouped[STALE]).await;
    assert!(
        stale_row.contains("\"lease_job\": \"scheduled:job-5\""),
        "{stale_row}"
    );
    assert!(stale_runs.iter().all(|r| r.contains("\"job_id\": \"old")));
    db.drop().await;
}

/// The worker's outcome writer over `store`, groups of up to `max`, a linger of an hour
/// (so a group held back wrongly fails its test's 30 s bound), counting into `sizes`.
fn grouped(
    store: rosbackup::store::Store,
    max: usize,
    sizes: &rosbackup::metrics::Metrics,
) -> Outcomes {
    Outcomes::new(
        store,
        GroupCommit {
            max,
            linger: Duration::from_secs(3600),
        },
        sizes.outcome_batch.clone(),
    )
}

/// Statements that wrote outcomes, and how many outcomes they wrote.
fn statements(sizes: &rosbackup::metrics::Metrics) -> (u64, f64) {
    (
        sizes.outcome_batch.get_sample_count(),
        sizes.outcome_batch.get_sample_sum(),
    )
}

/// Wait (bounded, so a broken grouping fails instead of hanging) for a job's answer.
async fn answer<T>(h: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), h)
        .await
        .expect("answered within 30 s")
        .expect("the job's task")
}

/// A group with one outcome PostgreSQL cannot store (a NUL in text) is refused as a
/// whole — nothing of it written — and the worker then writes its outcomes one by one:
/// the others are written, and only the bad one's job gets the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_is_written_one_by_one_so_each_job_gets_its_own_answer() {
    let db = TestDb::new().await;
    let ids = devices(&db, "d", 3).await;
    let mut jobs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (mut run, state) = outcome(*id, i);
        if i == 1 {
            run.error_message = Some("bad\0text".into());
        }
        jobs.push((lease(&db, *id, i).await, run, state));
    }
    // The statement alone: atomic.
    let rows: Vec<OutcomeRow<'_>> = jobs
        .iter()
        .map(|(lease, run, state)| OutcomeRow { lease, run, state })
        .collect();
    assert!(db.store.record_outcomes(&rows, 100).await.is_err());
    for id in &ids {
        assert_eq!(written(&db, *id).await.1.len(), 3, "nothing written");
    }
    // Through the worker's group: three jobs, a group of three.
    let sizes = rosbackup::metrics::Metrics::new();
    let outcomes = grouped(db.store.clone(), 3, &sizes);
    let enlisted: Vec<_> = jobs.iter().map(|_| outcomes.enlist()).collect();
    let mut handles = Vec::new();
    for (job, enlisted) in jobs.into_iter().zip(enlisted) {
        let outcomes = outcomes.clone();
        handles.push(tokio::spawn(async move {
            let (lease, run, state) = job;
            outcomes.record(&enlisted, &lease, &run, &state, 100).await
        }));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(answer(h).await);
    }
    assert!(matches!(results[0], Ok(true)), "{:?}", results[0]);
    assert!(matches!(results[2], Ok(true)), "{:?}", results[2]);
    match &results[1] {
        Err(rosbackup::store::StoreError::Db(sqlx::Error::Database(e))) => {
            assert_eq!(e.code().as_deref(), Some("22021"), "{e}")
        }
        other => panic!("the bad outcome's own error, not {other:?}"),
    }
    assert_eq!(written(&db, ids[0]).await.1.len(), 4);
    assert_eq!(written(&db, ids[1]).await.1.len(), 3);
    assert_eq!(written(&db, ids[2]).await.1.len(), 4);
    // The three went as one group (full at three, and no job could join before all
    // three were in), which wrote nothing; then the two good ones one statement each.
    assert_eq!(
        statements(&sizes),
        (2, 2.0),
        "statements that wrote, and what they wrote"
    );
    db.drop().await;
}

/// Outcomes wait for each other only while another job of the worker could still join
/// them (it holds a lease and has not handed in its outcome), and never longer than the
/// group's size allows: a lone job's outcome goes at once, two wait for a third until it
/// ends without an outcome, and a full group goes without waiting for anyone. The linger
/// here is an hour, so an outcome held back wrongly fails the 30 s bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_wait_for_each_other_only_while_another_job_could_join() {
    let db = TestDb::new().await;
    let ids = devices(&db, "d", 6).await;
    let sizes = rosbackup::metrics::Metrics::new();
    let outcomes = grouped(db.store.clone(), 2, &sizes);
    let submit =
        |outcomes: &Outcomes, i: usize, enlisted: rosbackup::worker::Enlisted, lease: Lease| {
            let outcomes = outcomes.clone();
            let (run, state) = outcome(lease.device_id, i);
            tokio::spawn(async move { outcomes.record(&enlisted, &lease, &run, &state, 100).await })
        };
    // A lone job.
    let lone = submit(&outcomes, 0, outcomes.enlist(), lease(&db, ids[0], 0).await);
    assert!(matches!(answer(lone).await, Ok(true)));
    assert_eq!(statements(&sizes), (1, 1.0));

    // Two of three, then the third ends without an outcome (its lease lost, say): with
    // a size of 2 the two fill a group, so use a size of 3 here.
    let outcomes3 = grouped(db.store.clone(), 3, &sizes);
    let (e1, e2, e3) = (outcomes3.enlist(), outcomes3.enlist(), outcomes3.enlist());
    let mut waiting = Vec::new();
    for (i, e) in [(1, e1), (2, e2)] {
        waiting.push(submit(&outcomes3, i, e, lease(&db, ids[i], i).await));
    }
    // While the third could still join, neither is written: give them a moment to go
    // wrong (this can only pass a broken grouping, never fail a right one).
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting[0]).await;
    assert!(early.is_err(), "written while another job could still join");
    assert_eq!(written(&db, ids[1]).await.1.len(), 3);
    drop(e3);
    for h in waiting {
        assert!(matches!(answer(h).await, Ok(true)));
    }
    assert_eq!(statements(&sizes), (2, 3.0), "the two in one group");

    // A full group goes at once, whoever else could join.
    let _others = (outcomes.enlist(), outcomes.enlist());
    let (a, b) = (outcomes.enlist(), outcomes.enlist());
    let a = submit(&outcomes, 3, a, lease(&db, ids[3], 3).await);
    let b = submit(&outcomes, 4, b, lease(&db, ids[4], 4).await);
    assert!(matches!(answer(a).await, Ok(true)));
    assert!(matches!(answer(b).await, Ok(true)));
    assert_eq!(statements(&sizes), (3, 5.0), "a full group of two");
    db.drop().await;
}

/// A group whose statement fails on the connection (here: a "PostgreSQL" that accepts
/// and hangs up) answers every member with that connection error, for each job to ask
/// again under its own deadline, instead of sending one statement per outcome after it
/// into the same failure: one connection attempt for the group, none per member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_error_of_a_group_is_each_jobs_to_retry_not_one_statement_each() {
    let (store, accepted) = crate::common::hanging_up_store().await;
    let sizes = rosbackup::metrics::Metrics::new();
    let outcomes = grouped(store, 3, &sizes);
    let enlisted: Vec<_> = (0..3).map(|_| outcomes.enlist()).collect();
    let mut handles = Vec::new();
    for (i, enlisted) in enlisted.into_iter().enumerate() {
        let outcomes = outcomes.clone();
        let lease = Lease {
            device_id: Uuid::new_v4(),
            job_id: job(i),
            token: Uuid::new_v4(),
            worker: "w1".into(),
            ttl: Duration::from_secs(60),
        };
        let (run, state) = outcome(lease.device_id, i);
        handles.push(tokio::spawn(async move {
            outcomes.record(&enlisted, &lease, &run, &state, 100).await
        }));
    }
    for h in handles {
        match answer(h).await {
            Err(rosbackup::store::StoreError::Db(sqlx::Error::Io(_))) => {}
            other => panic!("the connection's error, not {other:?}"),
        }
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection attempt, for the group's statement"
    );
    assert_eq!(statements(&sizes), (0, 0.0));
}
