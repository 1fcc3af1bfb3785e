//! Leases taken together (issue #20) against a real PostgreSQL: a group gives each lease
//! the answer its own statement would (taken, taken over, held by whom, no device, in the
//! order asked), the worker's lease taker sends leases that meet as one statement and
//! never holds a device twice in one, and a group PostgreSQL refuses is asked again one
//! lease at a time so each job gets its own answer.

use crate::common::fleet::TestDb;
use crate::common::{lock_row, waiting_for_locks};
use rosbackup::store::{GroupedLease, Lease, LeaseAttempt};
use rosbackup::worker::Leases;
use std::time::Duration;
use uuid::Uuid;

const TENANT: &str = "00000000-0000-4000-8000-000000000001";

/// A device with `runs` earlier successful runs; returns its id.
async fn device(db: &TestDb, name: &str, runs: i32) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO devices (id, tenant_id, name, host, username, password_enc, next_due_at) \
         VALUES ($1, $2::uuid, $3, '127.0.0.1', 'admin', '\\x00', now())",
    )
    .bind(id)
    .bind(TENANT)
    .bind(name)
    .execute(db.store.pool())
    .await
    .expect("device");
    sqlx::query(
        "INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, \
           finished_at, status, duration_ms, export_ms) \
         SELECT $1, $2::uuid, 'old' || k, 'scheduled', 'w', now(), now(), \
           CASE WHEN k % 2 = 0 THEN 'success' ELSE 'failed' END, 10 * k, k \
         FROM generate_series(1, $3) k",
    )
    .bind(id)
    .bind(TENANT)
    .bind(runs)
    .execute(db.store.pool())
    .await
    .expect("runs");
    id
}

/// The worker's lease taker over `store`, groups of up to `max`, and the metrics it
/// counts into.
fn taker(store: &rosbackup::store::Store, max: usize) -> (Leases, rosbackup::metrics::Metrics) {
    let metrics = rosbackup::metrics::Metrics::new();
    let leases = Leases::new(store.clone(), max, metrics.lease_batch.clone());
    (leases, metrics)
}

fn lease(device_id: Uuid, job: &str) -> Lease {
    Lease {
        device_id,
        job_id: job.into(),
        token: Uuid::new_v4(),
        worker: "w1".into(),
        ttl: Duration::from_secs(60),
    }
}

/// Hold `device` under `job` with a lease that expires in `ttl_seconds` (past if < 0).
async fn hold(db: &TestDb, device: Uuid, job: &str, ttl_seconds: f64) -> Uuid {
    let token = Uuid::new_v4();
    sqlx::query(
        "UPDATE devices SET lease_job = $2, lease_token = $3, lease_worker = 'other', \
           lease_expires_at = now() + ($4::float8 * interval '1 second'), lease_starts = 1 \
         WHERE id = $1",
    )
    .bind(device)
    .bind(job)
    .bind(token)
    .bind(ttl_seconds)
    .execute(db.store.pool())
    .await
    .expect("hold");
    token
}

/// The lease columns of a device: job, token, worker.
async fn lease_row(db: &TestDb, device: Uuid) -> (Option<String>, Option<Uuid>, Option<String>) {
    sqlx::query_as("SELECT lease_job, lease_token, lease_worker FROM devices WHERE id = $1")
        .bind(device)
        .fetch_one(db.store.pool())
        .await
        .expect("lease row")
}

/// The parts of an answer that do not name the device: whether taken, over whose lease,
/// how often, the facts; or held by which job; or no device.
fn shape(a: &LeaseAttempt) -> String {
    match a {
        LeaseAttempt::Acquired {
            takeover,
            previous,
            starts,
            device,
            facts,
            ..
        } => format!(
            "acquired takeover={takeover} previous={} starts={starts} lease_job={:?} facts={facts:?}",
            previous.is_some(),
            device.lease_job
        ),
        LeaseAttempt::Held { job_id, .. } => format!("held by {job_id}"),
        LeaseAttempt::NoDevice => "no device".into(),
    }
}

/// Five kinds of device, twice over: the first set asked one statement each, the second
/// in one group. Returns the leases of each set, in the same order.
async fn twins(db: &TestDb) -> [Vec<Lease>; 2] {
    let mut sets = [Vec::new(), Vec::new()];
    for (s, set) in sets.iter_mut().enumerate() {
        let free = device(db, &format!("free{s}"), 3).await;
        let expired = device(db, &format!("expired{s}"), 25).await;
        hold(db, expired, "scheduled:crashed", -5.0).await;
        let held = device(db, &format!("held{s}"), 0).await;
        hold(db, held, "scheduled:running", 60.0).await;
        let mine = device(db, &format!("mine{s}"), 1).await;
        hold(db, mine, "scheduled:job", 60.0).await;
        // This very job's lease, expired (its execution crashed): taken over, a second
        // start.
        let again = device(db, &format!("again{s}"), 2).await;
        hold(db, again, "scheduled:job", -5.0).await;
        *set = vec![
            lease(free, "scheduled:job"),
            lease(expired, "scheduled:job"),
            lease(held, "scheduled:job"),
            lease(Uuid::new_v4(), "scheduled:job"),
            lease(mine, "scheduled:job"),
            lease(again, "scheduled:job"),
        ];
        // Each its own TTL, so a misplaced one shows.
        for (i, l) in set.iter_mut().enumerate() {
            l.ttl = Duration::from_secs(60 + 10 * i as u64);
        }
    }
    sets
}

#[tokio::test]
async fn a_group_gives_each_lease_what_its_own_statement_would() {
    let db = TestDb::new().await;
    let [alone, grouped] = twins(&db).await;
    let mut want = Vec::new();
    for l in &alone {
        want.push(shape(&db.store.acquire_lease(l).await.expect("lease")));
    }
    let answers: Vec<LeaseAttempt> = db
        .store
        .acquire_leases(&grouped)
        .await
        .expect("leases")
        .into_iter()
        .map(|a| match a {
            Ok(GroupedLease::Answered(a)) => a,
            other => panic!("{other:?}"),
        })
        .collect();
    let got: Vec<String> = answers.iter().map(shape).collect();
    assert_eq!(got, want);
    // The kinds came out as they should, in the order asked.
    assert!(
        got[0].starts_with("acquired takeover=false previous=false starts=1"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("acquired takeover=true previous=true starts=1"),
        "{got:?}"
    );
    assert_eq!(got[2], "held by scheduled:running");
    assert_eq!(got[3], "no device");
    assert_eq!(got[4], "held by scheduled:job");
    assert!(
        got[5].starts_with("acquired takeover=true previous=true starts=2"),
        "{got:?}"
    );
    // Each lease runs for its own TTL.
    for i in [0, 1, 5] {
        let secs: f64 = sqlx::query_scalar(
            "SELECT extract(epoch FROM lease_expires_at - now())::float8 FROM devices WHERE id = $1",
        )
        .bind(grouped[i].device_id)
        .fetch_one(db.store.pool())
        .await
        .expect("expiry");
        let want = grouped[i].ttl.as_secs_f64();
        assert!(
            (want - 5.0..=want).contains(&secs),
            "lease {i}: {secs} s left, TTL {want}"
        );
    }
    // A device twice in one statement is refused before anything is taken.
    let twice = [
        lease(grouped[0].device_id, "a"),
        lease(grouped[0].device_id, "b"),
    ];
    assert!(db.store.acquire_leases(&twice).await.is_err());
    // Each taken lease is the one asked for: its device, token, worker; and the facts are
    // the device's own (3 and 25 runs, at most 20 read).
    for (i, runs) in [(0, 3), (1, 20)] {
        let LeaseAttempt::Acquired { device, facts, .. } = &answers[i] else {
            panic!("{i} not taken");
        };
        assert_eq!(device.id, grouped[i].device_id);
        assert_eq!(facts.recent_status.len(), runs);
        assert_eq!(
            lease_row(&db, grouped[i].device_id).await,
            (
                Some("scheduled:job".into()),
                Some(grouped[i].token),
                Some("w1".into())
            )
        );
    }
    // The held ones were not touched.
    assert_eq!(
        lease_row(&db, grouped[2].device_id).await.0.as_deref(),
        Some("scheduled:running")
    );
    assert_ne!(
        lease_row(&db, grouped[4].device_id).await.1,
        Some(grouped[4].token)
    );
    db.drop().await;
}

#[tokio::test]
async fn the_lease_taker_sends_leases_that_meet_as_one_statement() {
    let db = TestDb::new().await;
    let (leases, metrics) = taker(&db.store, 16);
    let mut asked = Vec::new();
    for i in 0..12 {
        asked.push(lease(
            device(&db, &format!("d{i}"), 2).await,
            &format!("scheduled:j{i}"),
        ));
    }
    // A second job for the first device, asked in the same burst: never in the same
    // statement as the first.
    asked.push(lease(asked[0].device_id, "manual:other"));
    // All asked in one poll of this (single-threaded) runtime, so they meet.
    let answers = futures::future::join_all(asked.iter().map(|l| leases.acquire(l))).await;
    for (l, a) in asked.iter().zip(&answers).take(12).skip(1) {
        match a {
            Ok(LeaseAttempt::Acquired { device, .. }) => assert_eq!(device.id, l.device_id),
            other => panic!("{}: {other:?}", l.job_id),
        }
        assert_eq!(lease_row(&db, l.device_id).await.1, Some(l.token));
    }
    // The two jobs for the first device: the statements may run side by side, so either
    // may win; the other finds the device held by the winner.
    let (winner, loser) = match (&answers[0], &answers[12]) {
        (Ok(LeaseAttempt::Acquired { .. }), Ok(LeaseAttempt::Held { job_id, .. })) => {
            (&asked[0], job_id)
        }
        (Ok(LeaseAttempt::Held { job_id, .. }), Ok(LeaseAttempt::Acquired { .. })) => {
            (&asked[12], job_id)
        }
        other => panic!("the two jobs for one device: {other:?}"),
    };
    assert_eq!(loser, &winner.job_id);
    assert_eq!(lease_row(&db, winner.device_id).await.1, Some(winner.token));
    // Twelve in one statement; the thirteenth in one of its own (two, when it found the
    // row still locked by the group and asked again to wait for it).
    let statements = metrics.lease_batch.get_sample_count();
    assert!((2..=3).contains(&statements), "{statements} statements");
    assert_eq!(
        metrics.lease_batch.get_sample_sum(),
        12.0 + (statements - 1) as f64
    );
    let m = prometheus::core::Metric::metric(&metrics.lease_batch);
    let up_to_8 = m
        .get_histogram()
        .get_bucket()
        .iter()
        .find(|b| b.upper_bound() == 8.0)
        .map(|b| b.cumulative_count())
        .expect("the bucket of 8");
    assert_eq!(
        statements - up_to_8,
        1,
        "one statement asked for the twelve"
    );

    // With grouping off, each lease is its own statement.
    let (single, off) = taker(&db.store, 1);
    let more: Vec<Lease> = [device(&db, "e0", 0).await, device(&db, "e1", 0).await]
        .into_iter()
        .map(|d| lease(d, "scheduled:e"))
        .collect();
    let answers = futures::future::join_all(more.iter().map(|l| single.acquire(l))).await;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok(LeaseAttempt::Acquired { .. })))
    );
    assert_eq!(off.lease_batch.get_sample_count(), 2);
    db.drop().await;
}

#[tokio::test]
async fn a_refused_group_is_asked_again_one_lease_at_a_time() {
    let db = TestDb::new().await;
    let (leases, metrics) = taker(&db.store, 16);
    let mut asked = Vec::new();
    for i in 0..3 {
        asked.push(lease(device(&db, &format!("r{i}"), 0).await, "scheduled:r"));
    }
    // PostgreSQL cannot store a NUL in text: the whole group is refused, and so is this
    // lease alone, but not the others.
    asked[1].worker = "bad\0worker".into();
    let answers = futures::future::join_all(asked.iter().map(|l| leases.acquire(l))).await;
    assert!(
        matches!(answers[0], Ok(LeaseAttempt::Acquired { .. })),
        "{:?}",
        answers[0]
    );
    assert!(answers[1].is_err(), "{:?}", answers[1]);
    assert!(
        matches!(answers[2], Ok(LeaseAttempt::Acquired { .. })),
        "{:?}",
        answers[2]
    );
    assert_eq!(lease_row(&db, asked[1].device_id).await, (None, None, None));
    // The two taken one at a time; the refused group is not counted.
    assert_eq!(metrics.lease_batch.get_sample_count(), 2);
    assert_eq!(metrics.lease_batch.get_sample_sum(), 2.0);
    db.drop().await;
}

#[tokio::test]
async fn a_lone_lease_that_skips_a_busy_row_says_so_and_answers_the_rest_as_alone() {
    let db = TestDb::new().await;
    let held = device(&db, "held", 0).await;
    hold(&db, held, "scheduled:running", 60.0).await;
    let busy = device(&db, "busy", 0).await;
    let tx = lock_row(&db, busy).await;
    let try_take = |l: Lease| {
        let store = db.store.clone();
        async move { store.try_acquire_lease(&l).await.expect("try") }
    };
    match try_take(lease(held, "scheduled:job")).await {
        GroupedLease::Answered(LeaseAttempt::Held { job_id, .. }) => {
            assert_eq!(job_id, "scheduled:running")
        }
        other => panic!("held: {other:?}"),
    }
    assert_eq!(
        try_take(lease(Uuid::new_v4(), "scheduled:job")).await,
        GroupedLease::Answered(LeaseAttempt::NoDevice)
    );
    // Free but locked by another transaction: skipped, not waited for, not taken.
    let asked = lease(busy, "scheduled:job");
    assert_eq!(try_take(asked.clone()).await, GroupedLease::Busy);
    assert_eq!(lease_row(&db, busy).await, (None, None, None));
    tx.commit().await.expect("commit");
    assert!(matches!(
        try_take(asked).await,
        GroupedLease::Answered(LeaseAttempt::Acquired { .. })
    ));
    db.drop().await;
}

#[tokio::test]
async fn a_busy_row_holds_back_only_its_own_devices_lease() {
    let db = TestDb::new().await;
    let (leases, _metrics) = taker(&db.store, 16);
    let leases = std::sync::Arc::new(leases);
    let mut busy = Vec::new();
    for i in 0..2 {
        busy.push(lease(
            device(&db, &format!("busy{i}"), 0).await,
            "scheduled:b",
        ));
    }
    let mut free = Vec::new();
    for i in 0..4 {
        free.push(lease(
            device(&db, &format!("free{i}"), 0).await,
            "scheduled:f",
        ));
    }
    let locks = [
        lock_row(&db, busy[0].device_id).await,
        lock_row(&db, busy[1].device_id).await,
    ];
    let ask = |l: Lease| {
        let leases = leases.clone();
        tokio::spawn(async move { leases.acquire(&l).await })
    };
    // Two lone leases for busy rows first, one after the other (each would fill one of
    // the two slots if it waited in it), then a group of free ones.
    let mut waiting = Vec::new();
    for (i, l) in busy.iter().enumerate() {
        waiting.push(ask(l.clone()));
        waiting_for_locks(&db, i as i64 + 1).await;
    }
    let answered: Vec<_> = free.iter().cloned().map(ask).collect();
    for (l, h) in free.iter().zip(answered) {
        let a = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("a free device's lease does not wait for a busy row")
            .expect("task");
        match a {
            Ok(LeaseAttempt::Acquired { device, .. }) => assert_eq!(device.id, l.device_id),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        waiting.iter().all(|h| !h.is_finished()),
        "a busy row's lease was answered"
    );
    for tx in locks {
        tx.commit().await.expect("commit");
    }
    for (l, h) in busy.iter().zip(waiting) {
        match h.await.expect("task") {
            Ok(LeaseAttempt::Acquired { device, .. }) => assert_eq!(device.id, l.device_id),
            other => panic!("{other:?}"),
        }
    }
    db.drop().await;
}

#[tokio::test]
async fn a_lease_taken_for_a_job_that_stopped_waiting_is_given_back() {
    let db = TestDb::new().await;
    let (leases, _metrics) = taker(&db.store, 16);
    let leases = std::sync::Arc::new(leases);
    let d = device(&db, "gone", 0).await;
    let tx = lock_row(&db, d).await;
    let asked = lease(d, "scheduled:gone");
    let job = {
        let (leases, asked) = (leases.clone(), asked.clone());
        tokio::spawn(async move { leases.acquire(&asked).await })
    };
    waiting_for_locks(&db, 1).await;
    // The job gives up (its bound, a shutdown) while its statement waits.
    job.abort();
    assert!(job.await.expect_err("aborted").is_cancelled());
    tx.commit().await.expect("commit");
    // The statement then takes the lease for nobody; it must be given back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match lease_row(&db, d).await {
            // Taken (the job is set) and given back (no token): done.
            (Some(job_id), None, _) => {
                assert_eq!(job_id, "scheduled:gone");
                break;
            }
            // Not taken yet, or taken and still held.
            (None, None, _) => {}
            (_, token, _) => assert_eq!(token, Some(asked.token)),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease of a job that stopped waiting still holds the device"
        );
        tokio::task::yield_now().await;
    }
    db.drop().await;
}

/// A group whose statement fails on the connection (a "PostgreSQL" that accepts and hangs
/// up) answers every member with that connection error, as its own statement would,
/// instead of asking lease by lease into the same failure: one connection attempt.
#[tokio::test]
async fn a_connection_error_of_a_group_is_every_members() {
    let (store, accepted) = crate::common::hanging_up_store().await;
    let (leases, metrics) = taker(&store, 16);
    let asked: Vec<Lease> = (0..3)
        .map(|i| lease(Uuid::new_v4(), &format!("scheduled:c{i}")))
        .collect();
    // Asked in one poll of this single-threaded runtime: one group.
    let answers = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join_all(asked.iter().map(|l| leases.acquire(l))),
    )
    .await
    .expect("answered within 30 s");
    for a in answers {
        match a {
            Err(rosbackup::store::StoreError::Db(sqlx::Error::Io(_))) => {}
            other => panic!("the connection's error, not {other:?}"),
        }
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection attempt, for the group's statement"
    );
    assert_eq!(metrics.lease_batch.get_sample_count(), 0);
}
