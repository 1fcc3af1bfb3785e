//! The fleet's promises under infrastructure faults (issue #7): Redis restarted with its
//! data gone, NATS stopped and started, PostgreSQL restarted, enqueuers killed and
//! racing, a host key that changes, credentials fixed after an auth block.
//!
//! Tests that stop a service run on PRIVATE instances (`rosbackup_harness::services`, on
//! free loopback ports, in a temporary directory); the machine's shared servers are never
//! touched. Every test ends with the same audit of the records (`check_records`): one
//! outcome per scheduled job, every success's snapshot in the stream with a hash that
//! matches its text, no device with more snapshots than runs that published, never two
//! sessions to one device at once.

use crate::common::fleet::{Fleet, FleetOptions, ServiceUrls, check_records};
use rosbackup::sim::{Fault, FaultSpec, SimConfig};
use rosbackup_harness::services::{self, Service};
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The port a private service listens on.
fn port_of(svc: &Service, default: u16) -> u16 {
    services::host_port(&svc.url, default).expect("url").1
}

/// Stop a private service with `signal` and wait for it to exit.
async fn stop_with(svc: &mut Service, signal: libc::c_int) {
    let child = svc.child.as_mut().expect("a private service");
    if let Some(pid) = child.id() {
        // SAFETY: signalling a child process we started and still own.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            let _ = child.kill().await;
        }
    }
}

async fn private_redis(dir: &Path) -> Service {
    services::redis("redis://127.0.0.1:1/0", true, dir)
        .await
        .expect("a private redis-server starts")
}

async fn private_nats(dir: &Path) -> Service {
    services::nats("nats://127.0.0.1:1", true, dir)
        .await
        .expect("a private nats-server starts")
}

async fn private_postgres(dir: &Path) -> Service {
    services::postgres("postgres://127.0.0.1:1/x", false, true, dir)
        .await
        .expect("a private PostgreSQL starts")
}

/// Runs per device with the given status (and error kind).
async fn count_runs(fleet: &Fleet, status: &str, kind: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM backup_runs WHERE status = $1 AND ($2::text IS NULL OR error_kind = $2)",
    )
    .bind(status)
    .bind(kind)
    .fetch_one(fleet.store().pool())
    .await
    .unwrap_or(-1)
}

/// No device left claimed, leased or blocked.
async fn assert_nothing_stuck(fleet: &Fleet) {
    let stuck: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT name, outstanding_job, lease_job FROM devices \
         WHERE lease_job IS NOT NULL OR blocked_reason IS NOT NULL \
            OR (outstanding_job IS NOT NULL AND next_due_at < now() - interval '30 seconds')",
    )
    .fetch_all(fleet.store().pool())
    .await
    .expect("devices");
    assert!(stuck.is_empty(), "stuck devices: {stuck:?}");
}

/// Wait until every one of `n` devices' last run is a success; on `timeout`, fail with
/// where each device not backed up stands: its last status and error kind, its claim and
/// that job's state in Redis, its lease. A fault test that times out here then says which
/// step of the recovery did not happen, not only that one did not.
async fn wait_all_backed_up(fleet: &Fleet, n: usize, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while fleet.successes().await != n as i64 {
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for: {what}\n{}",
                devices_not_backed_up(fleet).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line per device whose last run is not a success (see [`wait_all_backed_up`]).
async fn devices_not_backed_up(fleet: &Fleet) -> String {
    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        i32,
        Option<f64>,
        f64,
    );
    let rows: Vec<Row> = match sqlx::query_as(
        "SELECT name, last_status, last_error_kind, outstanding_job, lease_job, lease_starts, \
                extract(epoch FROM lease_expires_at - now())::float8, \
                extract(epoch FROM next_due_at - now())::float8 \
         FROM devices WHERE last_status IS DISTINCT FROM 'success' ORDER BY name",
    )
    .fetch_all(fleet.store().pool())
    .await
    {
        Ok(rows) => rows,
        Err(e) => return format!("(devices unreadable: {e})"),
    };
    let jobs: Vec<String> = rows.iter().filter_map(|r| r.3.clone()).collect();
    let states = fleet
        .queue
        .job_states(&jobs)
        .await
        .map_err(|e| e.to_string());
    let mut out = format!("{} devices not backed up:", rows.len());
    for (name, status, kind, job, lease_job, starts, lease_left, due_in) in rows {
        let state = job.as_ref().and_then(|j| {
            let i = jobs.iter().position(|x| x == j)?;
            Some(match &states {
                Ok(s) => format!("{:?}", s.get(i)?),
                Err(e) => e.clone(),
            })
        });
        let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        let left = lease_left.map_or("-".into(), |s| format!("{s:.1} s"));
        out.push_str(&format!(
            "\n  {name}: last {} ({}), due in {due_in:.1} s, claim {} (in Redis: {}), \
             lease {} (starts {starts}, left {left})",
            or_none(status),
            or_none(kind),
            or_none(job),
            or_none(state),
            or_none(lease_job),
        ));
    }
    out
}

fn slow_fleet(devices: usize, delay_ms: u64) -> FleetOptions {
    FleetOptions {
        sim: SimConfig {
            devices,
            export_delay: Duration::from_millis(delay_ms),
            ..FleetOptions::default().sim
        },
        command_timeout: Duration::from_secs(15),
        ..FleetOptions::default()
    }
}

/// Redis dies mid-run and comes back EMPTY on the same port (this Redis keeps nothing on
/// disk): every job it held is gone. The enqueuer notices claims whose job no longer
/// exists and reschedules them from PostgreSQL; the workers reconnect by themselves; every
/// device is backed up exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_empty_mid_run_loses_no_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = private_redis(dir.path()).await;
    let port = port_of(&redis, 6379);
    let fleet = Fleet::start_on(
        ServiceUrls {
            redis_url: redis.url.clone(),
            ..ServiceUrls::default()
        },
        slow_fleet(16, 1500),
    )
    .await;
    let devices = fleet.import(None).await;
    let enq = fleet.enqueuer();
    let enq_metrics = enq.metrics.clone();
    let (stop_e, rx) = tokio::sync::oneshot::channel::<()>();
    let enq_task = tokio::spawn(async move {
        enq.run(async move {
            let _ = rx.await;
        })
        .await
    });
    let (stop_a, wa, _) = fleet.spawn_worker("redis-a", 2);
    let (stop_b, wb, _) = fleet.spawn_worker("redis-b", 2);
    fleet
        .wait_for(Duration::from_secs(60), "a few backups done", || async {
            fleet.successes().await >= 3
        })
        .await;
    let before = fleet.successes().await;
    assert!(before < 16, "the restart must come mid-run ({before} done)");

    stop_with(&mut redis, libc::SIGKILL).await;
    redis = services::redis_at(&redis.url, port, dir.path())
        .await
        .expect("redis restarts on the same port");
    let mut conn = redis::Client::open(redis.url.clone())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: i64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("dbsize");
    // Workers may already have re-registered; no job survived.
    let jobs: i64 = redis::cmd("HLEN")
        .arg(format!("{}:data", fleet.queue.config().name))
        .query_async(&mut conn)
        .await
        .expect("hlen");
    assert_eq!(jobs, 0, "the restarted Redis is empty ({keys} keys)");

    wait_all_backed_up(
        &fleet,
        devices.len(),
        Duration::from_secs(90),
        "every device backed up after the Redis restart",
    )
    .await;
    assert!(
        enq_metrics
            .claims_released
            .with_label_values(&["lost"])
            .get()
            > 0,
        "the enqueuer rescheduled claims whose jobs Redis lost"
    );
    assert!(
        !wa.is_finished() && !wb.is_finished(),
        "the workers survived the Redis restart"
    );
    assert_eq!(
        count_runs(&fleet, "success", None).await,
        devices.len() as i64,
        "exactly one successful backup per device"
    );
    let _ = (stop_a.send(()), stop_b.send(()), stop_e.send(()));
    wa.await.expect("join").expect("worker a stops cleanly");
    wb.await.expect("join").expect("worker b stops cleanly");
    enq_task.await.expect("join");
    let audit = fleet.audit_stream().await;
    check_records(&fleet.runs().await, &audit, &fleet.sim.stats());
    for d in &devices {
        assert_eq!(audit.count(d.id), 1, "{}: one snapshot", d.name);
    }
    assert_nothing_stuck(&fleet).await;
    fleet.cleanup().await;
    redis.stop(Duration::from_secs(5)).await;
}

/// NATS stops mid-run and starts again (same port, same JetStream store): publishes fail,
/// those jobs end as `publish_failed` (transient, retried on the device's schedule);
/// after recovery every device's snapshot arrives, none twice beyond the runs that
/// published, none partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_stopped_then_started_every_snapshot_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nats = private_nats(dir.path()).await;
    let port = port_of(&nats, 4222);
    let fleet = Fleet::start_on(
        ServiceUrls {
            nats_url: nats.url.clone(),
            ..ServiceUrls::default()
        },
        FleetOptions {
            ack_timeout: Duration::from_secs(1),
            ..slow_fleet(12, 800)
        },
    )
    .await;
    // A 5 s interval: a failed device is due again 5 s later (the backoff never
    // stretches a short interval), and healthy ones keep being backed up.
    let devices = fleet.import(Some(5)).await;
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_a, wa, _) = fleet.spawn_worker("nats-a", 3);
    let (stop_b, wb, _) = fleet.spawn_worker("nats-b", 3);
    fleet
        .wait_for(Duration::from_secs(60), "a few backups done", || async {
            fleet.successes().await >= 3
        })
        .await;
    stop_with(&mut nats, libc::SIGKILL).await;
    fleet
        .wait_for(
            Duration::from_secs(60),
            "publishes fail while NATS is down",
            || async { count_runs(&fleet, "failed", Some("publish_failed")).await >= 3 },
        )
        .await;
    let other_failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backup_runs WHERE status = 'failed' AND error_kind <> 'publish_failed'",
    )
    .fetch_one(fleet.store().pool())
    .await
    .expect("count");
    assert_eq!(other_failures, 0, "only publishes failed");
    let blocked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM devices WHERE blocked_reason IS NOT NULL")
            .fetch_one(fleet.store().pool())
            .await
            .expect("count");
    assert_eq!(blocked, 0, "a publish failure is transient, never a block");
    nats = services::nats_at(&nats.url, port, dir.path())
        .await
        .expect("NATS restarts on the same port");
    let recovered_at = chrono::Utc::now();
    fleet
        .wait_for(
            Duration::from_secs(90),
            "every device has a snapshot published after NATS came back",
            || async {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(DISTINCT device_id) FROM backup_runs \
                     WHERE status = 'success' AND started_at > $1",
                )
                .bind(recovered_at)
                .fetch_one(fleet.store().pool())
                .await
                .unwrap_or(0);
                n == devices.len() as i64
            },
        )
        .await;
    assert!(!wa.is_finished() && !wb.is_finished(), "workers survived");
    let _ = (stop_a.send(()), stop_b.send(()), stop_e.send(()));
    wa.await.expect("join").expect("worker a stops cleanly");
    wb.await.expect("join").expect("worker b stops cleanly");
    enq.await.expect("join");
    let audit = fleet.audit_stream().await;
    let runs = fleet.runs().await;
    check_records(&runs, &audit, &fleet.sim.stats());
    for d in &devices {
        assert!(audit.count(d.id) >= 1, "{}: no snapshot", d.name);
    }
    fleet.cleanup().await;
    nats.stop(Duration::from_secs(5)).await;
}

/// Sessions the simulator accepted and exports it completed, over the whole fleet.
fn session_totals(fleet: &Fleet) -> (u64, u64) {
    fleet
        .sim
        .stats()
        .values()
        .fold((0u64, 0u64), |(s, e), d| (s + d.sessions, e + d.exports))
}

/// Wait for `successes` backups and an export in progress; the exports completed then.
/// With only healthy devices, a session the simulator accepted and has not yet answered
/// with a complete export is an export in progress: its execution is past every
/// PostgreSQL read it makes before connecting, and only the fence is left.
async fn wait_for_export_in_progress(fleet: &Fleet, successes: i64) -> u64 {
    fleet
        .wait_for(
            Duration::from_secs(60),
            "backups done and an export in progress",
            || async {
                let (sessions, exports) = session_totals(fleet);
                fleet.successes().await >= successes && sessions > exports
            },
        )
        .await;
    session_totals(fleet).1
}

/// PostgreSQL goes down mid-run while exports are in flight and stays down until an
/// execution that finished its export could not confirm its lease, then restarts with its
/// data: workers and the enqueuer reconnect, every device is backed up exactly once (the
/// execution without a lease published nothing and wrote nothing), no job has two
/// outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_run_loses_no_outcome() {
    // The worker's log, shown when the test fails (a fault's timing is hard to replay).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("rosbackup=info")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pg = private_postgres(dir.path()).await;
    let port = port_of(&pg, 5432);
    let fleet = Fleet::start_on(
        ServiceUrls {
            database_url: pg.url.clone(),
            ..ServiceUrls::default()
        },
        slow_fleet(16, 1500),
    )
    .await;
    let devices = fleet.import(None).await;
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_a, wa, env_a) = fleet.spawn_worker("pg-a", 2);
    let (stop_b, wb, env_b) = fleet.spawn_worker("pg-b", 2);
    let exports_before = wait_for_export_in_progress(&fleet, 3).await;
    let totals = || session_totals(&fleet);
    // Fast shutdown (SIGINT): sessions are cut, the server stops at once.
    stop_with(&mut pg, libc::SIGINT).await;
    // Keep it down until the export in progress finished and an execution gave up
    // because it could not confirm its lease (the pool waits 10 s for a connection):
    // that execution must publish nothing and write nothing. (An execution still in its
    // reads before connecting may give up first, at its lease deadline, without an
    // export: so wait for both.)
    let deadline = Instant::now() + Duration::from_secs(40);
    let lease_lost = || env_a.metrics.lease_lost.get() + env_b.metrics.lease_lost.get();
    while lease_lost() == 0 || totals().1 <= exports_before {
        assert!(
            Instant::now() < deadline,
            "no export finished and lost its lease while PostgreSQL was down \
             (lease lost: {}, exports: {} before, {} now)",
            lease_lost(),
            exports_before,
            totals().1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg = services::postgres_at(&pg.url, port, dir.path())
        .await
        .expect("PostgreSQL restarts on the same port with its data");
    wait_all_backed_up(
        &fleet,
        devices.len(),
        Duration::from_secs(120),
        "every device backed up after the PostgreSQL restart",
    )
    .await;
    assert!(!wa.is_finished() && !wb.is_finished(), "workers survived");
    let _ = (stop_a.send(()), stop_b.send(()), stop_e.send(()));
    wa.await.expect("join").expect("worker a stops cleanly");
    wb.await.expect("join").expect("worker b stops cleanly");
    enq.await.expect("join");
    eprintln!(
        "executions that could not confirm their lease: {}",
        lease_lost()
    );
    let audit = fleet.audit_stream().await;
    check_records(&fleet.runs().await, &audit, &fleet.sim.stats());
    for d in &devices {
        assert_eq!(
            audit.count(d.id),
            1,
            "{}: exactly one snapshot (one success each)",
            d.name
        );
    }
    assert_eq!(
        count_runs(&fleet, "success", None).await,
        devices.len() as i64
    );
    assert_nothing_stuck(&fleet).await;
    fleet.cleanup().await;
    pg.stop(Duration::from_secs(5)).await;
}

/// PostgreSQL restarted (fast shutdown, back within seconds) while exports are running,
/// and one export finishing while it is down: the fence and the outcome ask again on the
/// connection error while the lease still holds, so no execution loses its lease, the
/// export finished in the gap is published and recorded once, and no device waits for
/// the enqueuer's reconcile. (Before, the fence took the connection error for a lost
/// lease: that export was thrown away and its device missed its interval.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quick_postgres_restart_costs_no_running_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pg = private_postgres(dir.path()).await;
    let port = port_of(&pg, 5432);
    let fleet = Fleet::start_on(
        ServiceUrls {
            database_url: pg.url.clone(),
            ..ServiceUrls::default()
        },
        FleetOptions {
            // Long enough that the lease outlives the restart with room to spare on a
            // loaded machine.
            lease_ttl: Duration::from_secs(30),
            ..slow_fleet(12, 1500)
        },
    )
    .await;
    let devices = fleet.import(None).await;
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_a, wa, env_a) = fleet.spawn_worker("qr-a", 3);
    let (stop_b, wb, env_b) = fleet.spawn_worker("qr-b", 3);
    let exports_before = wait_for_export_in_progress(&fleet, 1).await;
    let totals = || session_totals(&fleet);
    stop_with(&mut pg, libc::SIGINT).await;
    // An export finishes while PostgreSQL is down: its fence meets the connection error.
    let deadline = Instant::now() + Duration::from_secs(20);
    while totals().1 <= exports_before {
        assert!(
            Instant::now() < deadline,
            "no export finished while PostgreSQL was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg = services::postgres_at(&pg.url, port, dir.path())
        .await
        .expect("PostgreSQL restarts on the same port with its data");
    wait_all_backed_up(
        &fleet,
        devices.len(),
        Duration::from_secs(120),
        "every device backed up after the quick restart",
    )
    .await;
    let lost = env_a.metrics.lease_lost.get() + env_b.metrics.lease_lost.get();
    let _ = (stop_a.send(()), stop_b.send(()), stop_e.send(()));
    wa.await.expect("join").expect("worker a stops cleanly");
    wb.await.expect("join").expect("worker b stops cleanly");
    enq.await.expect("join");
    assert_eq!(lost, 0, "an execution lost its lease to a quick restart");
    let audit = fleet.audit_stream().await;
    check_records(&fleet.runs().await, &audit, &fleet.sim.stats());
    for d in &devices {
        assert_eq!(audit.count(d.id), 1, "{}: exactly one snapshot", d.name);
    }
    // Nothing was left for the reconcile: every session is a success, one to one.
    let (sessions, exports) = totals();
    assert_eq!(sessions, exports);
    assert_eq!(exports, devices.len() as u64);
    assert_eq!(
        count_runs(&fleet, "success", None).await,
        devices.len() as i64
    );
    assert_nothing_stuck(&fleet).await;
    fleet.cleanup().await;
    pg.stop(Duration::from_secs(5)).await;
}

/// Start `rosbackup enqueuer` (no dashboard auth: it listens on a free loopback port).
fn enqueuer_process(fleet: &Fleet) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
        .args(["enqueuer", "--insecure-no-auth"])
        .envs(fleet.process_env())
        .env("DEVICE_REFRESH_SECONDS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rosbackup enqueuer")
}

/// Two enqueuer processes and three workers race over a fleet backed up every 3 s; one
/// enqueuer is killed with SIGKILL mid-run and started again. Every device keeps being
/// backed up, no scheduled job has two outcomes, no device sees two sessions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueuers_racing_and_one_killed_keep_every_device_on_schedule() {
    let fleet = Fleet::start(slow_fleet(20, 200)).await;
    let devices = fleet.import(Some(3)).await;
    let mut a = enqueuer_process(&fleet);
    let mut b = enqueuer_process(&fleet);
    let (stop_w1, w1, _) = fleet.spawn_worker("race-1", 3);
    let (stop_w2, w2, _) = fleet.spawn_worker("race-2", 3);
    let (stop_w3, w3, _) = fleet.spawn_worker("race-3", 3);
    fleet
        .wait_for(Duration::from_secs(60), "first round done", || async {
            fleet.successes().await == devices.len() as i64
        })
        .await;
    a.kill().expect("kill -9 enqueuer A");
    let _ = a.wait();
    let killed_at = chrono::Utc::now();
    // B alone keeps the fleet going …
    let per_device_since = |since: chrono::DateTime<chrono::Utc>, n: i64| {
        let pool = fleet.store().pool().clone();
        async move {
            let k: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT device_id FROM backup_runs \
                 WHERE status = 'success' AND started_at > $1 GROUP BY device_id \
                 HAVING count(*) >= $2) s",
            )
            .bind(since)
            .bind(n)
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            k
        }
    };
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device backed up again with one enqueuer",
            || async { per_device_since(killed_at, 1).await == devices.len() as i64 },
        )
        .await;
    // … and a restarted A joins the race again.
    let mut a2 = enqueuer_process(&fleet);
    let restarted_at = chrono::Utc::now();
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device backed up twice more with two enqueuers",
            || async { per_device_since(restarted_at, 2).await == devices.len() as i64 },
        )
        .await;
    for p in [&mut b, &mut a2] {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
        let status = p.wait().expect("wait");
        assert!(status.success(), "enqueuer exit: {status:?}");
    }
    let _ = (stop_w1.send(()), stop_w2.send(()), stop_w3.send(()));
    for w in [w1, w2, w3] {
        w.await.expect("join").expect("worker stops cleanly");
    }
    let runs = fleet.runs().await;
    assert!(
        runs.iter().all(|r| r.status != "failed"),
        "no failures: {:?}",
        runs.iter().find(|r| r.status == "failed")
    );
    check_records(&runs, &fleet.audit_stream().await, &fleet.sim.stats());
    fleet.cleanup().await;
}

/// An enqueuer that died between claiming devices in PostgreSQL and pushing their jobs
/// to Redis: another enqueuer notices the claims have no job and reschedules them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_of_an_enqueuer_that_died_before_pushing_are_rescheduled() {
    let fleet = Fleet::of(3).await;
    let devices = fleet.import(None).await;
    let claims = fleet
        .store()
        .claim_due(chrono::Utc::now() + chrono::Duration::seconds(60), 100)
        .await
        .expect("claim");
    assert_eq!(claims.len(), devices.len());
    // … and the process died here, before `queue.push`.
    let enq = fleet.enqueuer();
    // The claims are fresh: a tick alone does not touch them.
    assert_eq!(enq.tick().await.expect("tick").pushed, 0);
    let metrics = enq.metrics.clone();
    let (stop_e, rx) = tokio::sync::oneshot::channel::<()>();
    let enq_task = tokio::spawn(async move {
        enq.run(async move {
            let _ = rx.await;
        })
        .await
    });
    let (stop_w, w, _) = fleet.spawn_worker("orphan-claims", 3);
    wait_all_backed_up(
        &fleet,
        devices.len(),
        Duration::from_secs(30),
        "every device backed up",
    )
    .await;
    assert_eq!(
        metrics.claims_released.with_label_values(&["lost"]).get(),
        devices.len() as u64
    );
    let _ = (stop_w.send(()), stop_e.send(()));
    w.await.expect("join").expect("worker");
    enq_task.await.expect("join");
    check_records(
        &fleet.runs().await,
        &fleet.audit_stream().await,
        &fleet.sim.stats(),
    );
    fleet.cleanup().await;
}

/// The same orphaned claims, seen by an enqueuer *process* configured with
/// `ROSBACKUP_CLAIM_STALE_SECONDS=5`: rescheduled within seconds, well before the default
/// 30 s age would allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphaned_claims_age_is_configurable_for_the_enqueuer_process() {
    let fleet = Fleet::of(3).await;
    let devices = fleet.import(None).await;
    let claimed_at = std::time::Instant::now();
    let claims = fleet
        .store()
        .claim_due(chrono::Utc::now() + chrono::Duration::seconds(60), 100)
        .await
        .expect("claim");
    assert_eq!(claims.len(), devices.len());
    let mut enq = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
        .args(["enqueuer", "--insecure-no-auth"])
        .envs(fleet.process_env())
        .env("DEVICE_REFRESH_SECONDS", "1")
        .env("ROSBACKUP_CLAIM_STALE_SECONDS", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rosbackup enqueuer");
    let (stop_w, w, _) = fleet.spawn_worker("orphan-claims-env", 3);
    wait_all_backed_up(
        &fleet,
        devices.len(),
        Duration::from_secs(60),
        "every orphaned device backed up",
    )
    .await;
    let took = claimed_at.elapsed();
    // With the default (30 s) nothing could be rescheduled before 30 s had passed.
    assert!(took < Duration::from_secs(25), "rescheduled after {took:?}");
    let _ = enq.kill();
    let _ = enq.wait();
    let _ = stop_w.send(());
    w.await.expect("join").expect("worker");
    fleet.cleanup().await;
}

/// A device whose host key changes is blocked (nothing published, never contacted again
/// while blocked) until the key is reset; a device with wrong credentials is blocked
/// until they are fixed. Both resume on their own, without restarting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_key_change_and_fixed_credentials_resume_without_restarts() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 3,
            faults: FaultSpec(vec![(Fault::HostKey, 1)]),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let mut devices = fleet.import(Some(2)).await;
    let (rekeyed, wrong_pw, control) = (devices[0].id, devices[1].id, devices[2].id);
    assert_eq!(fleet.sim.devices()[0].fault, Some(Fault::HostKey));
    // Device 1 was imported with a wrong password.
    devices[1].password = rosbackup::Secret::new("not-the-password".to_string());
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices[1..2], chrono::Utc::now)
        .await
        .expect("wrong password");
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_w, w, _) = fleet.spawn_worker("blocks", 2);
    let blocked = |id: Uuid, reason: &'static str| {
        let store = fleet.store().clone();
        async move {
            store
                .device(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d.blocked_reason.as_deref() == Some(reason))
        }
    };
    fleet
        .wait_for(Duration::from_secs(30), "both devices blocked", || async {
            blocked(rekeyed, "host_key_mismatch").await && blocked(wrong_pw, "auth_failed").await
        })
        .await;
    let pinned = fleet
        .store()
        .device(rekeyed)
        .await
        .expect("get")
        .expect("exists")
        .ssh_host_key_fingerprint
        .expect("the first key was pinned");
    let snapshots_rekeyed = fleet.audit_stream().await.count(rekeyed);
    assert_eq!(
        snapshots_rekeyed, 1,
        "only the first (trusted) key's backup"
    );
    let sessions = |id: Uuid| fleet.sim.stats().get(&id).map_or(0, |s| s.sessions);
    let (s_rekeyed, s_wrong) = (sessions(rekeyed), sessions(wrong_pw));
    // While blocked, they are not contacted: the control device is backed up twice more
    // (two intervals) and the blocked ones see no new session.
    let control_runs = |n: usize| {
        let fleet = &fleet;
        async move {
            fleet
                .runs()
                .await
                .iter()
                .filter(|r| r.device_id == control && r.status == "success")
                .count()
                >= n
        }
    };
    let now_control = fleet
        .runs()
        .await
        .iter()
        .filter(|r| r.device_id == control && r.status == "success")
        .count();
    fleet
        .wait_for(
            Duration::from_secs(30),
            "control device backed up twice more",
            || control_runs(now_control + 2),
        )
        .await;
    assert_eq!(
        sessions(rekeyed),
        s_rekeyed,
        "a host-key-blocked device was contacted"
    );
    assert_eq!(
        sessions(wrong_pw),
        s_wrong,
        "an auth-blocked device was contacted"
    );

    // The operator fixes the credentials, and (after verifying it) resets the host key.
    let real_pw = fleet.sim.devices()[1].password.clone();
    fleet
        .store()
        .set_credentials(&fleet.key, wrong_pw, None, &rosbackup::Secret::new(real_pw))
        .await
        .expect("set credentials");
    fleet.store().reset_host_key(rekeyed).await.expect("reset");
    let success_after_block = |id: Uuid| {
        let fleet = &fleet;
        async move {
            let runs = fleet.runs().await;
            let last_fail = runs
                .iter()
                .rposition(|r| r.device_id == id && r.status == "failed");
            runs.iter()
                .enumerate()
                .any(|(i, r)| r.device_id == id && r.status == "success" && Some(i) > last_fail)
        }
    };
    fleet
        .wait_for(
            Duration::from_secs(30),
            "both devices backed up again",
            || async { success_after_block(wrong_pw).await && success_after_block(rekeyed).await },
        )
        .await;
    let now_pinned = fleet
        .store()
        .device(rekeyed)
        .await
        .expect("get")
        .expect("exists")
        .ssh_host_key_fingerprint;
    assert!(
        now_pinned.is_some_and(|p| p != pinned),
        "the new key is pinned after the reset"
    );
    let _ = (stop_w.send(()), stop_e.send(()));
    w.await.expect("join").expect("worker");
    enq.await.expect("join");
    let audit = fleet.audit_stream().await;
    check_records(&fleet.runs().await, &audit, &fleet.sim.stats());
    assert!(audit.count(wrong_pw) >= 1);
    fleet.cleanup().await;
}

/// PostgreSQL refuses an outcome for good (here a trigger raises SQLSTATE 22021, what a
/// NUL byte in device text once caused): the worker records the outcome again without
/// device-supplied text instead of failing the job, so the device gets exactly one run
/// and one snapshot instead of being exported and published again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outcome_postgres_refuses_is_recorded_without_device_text_not_looped() {
    let fleet = Fleet::of(2).await;
    let devices = fleet.import(None).await;
    let before: Vec<(uuid::Uuid, Option<String>)> =
        sqlx::query_as("SELECT id, routeros_version FROM devices")
            .fetch_all(fleet.store().pool())
            .await
            .expect("versions");
    sqlx::raw_sql(
        "CREATE FUNCTION rbtest_refuse_version() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'refused for the test' USING ERRCODE = '22021'; END $$; \
         CREATE TRIGGER rbtest_refuse_version BEFORE UPDATE ON devices FOR EACH ROW \
         WHEN (NEW.routeros_version IS DISTINCT FROM OLD.routeros_version \
               AND NEW.routeros_version IS NOT NULL) \
         EXECUTE FUNCTION rbtest_refuse_version();",
    )
    .execute(fleet.store().pool())
    .await
    .expect("install the refusing trigger");
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_w, w, _) = fleet.spawn_worker("refused-outcome", 2);
    wait_all_backed_up(
        &fleet,
        devices.len(),
        Duration::from_secs(60),
        "every device has a recorded run",
    )
    .await;
    let _ = (stop_w.send(()), stop_e.send(()));
    w.await.expect("join").expect("worker");
    enq.await.expect("join");
    let runs = fleet.runs().await;
    assert_eq!(runs.len(), devices.len(), "one run per device: {runs:?}");
    let audit = fleet.audit_stream().await;
    for d in &devices {
        assert_eq!(audit.count(d.id), 1, "{}: published once", d.name);
        let (version, message): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT routeros_version, last_error_message FROM devices WHERE id = $1",
        )
        .bind(d.id)
        .fetch_one(fleet.store().pool())
        .await
        .expect("device row");
        let was = before
            .iter()
            .find(|(id, _)| *id == d.id)
            .and_then(|(_, v)| v.clone());
        assert_eq!(version, was, "the refused value was dropped");
        let message = message.unwrap_or_default();
        assert!(message.contains("SQLSTATE 22021"), "{message}");
    }
    check_records(&runs, &audit, &fleet.sim.stats());
    fleet.cleanup().await;
}
