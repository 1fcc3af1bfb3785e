//! The worker against apalis-redis 1.0's measured defects and against crashes.

use crate::common::fleet::{Fleet, FleetOptions};
use crate::common::proxy::Proxy;
use rosbackup::queue::BackupJob;
use rosbackup::sim::SimConfig;
use rosbackup::store::RunStatus;
use std::time::Duration;

/// A Redis reply slower than redis-rs' default 500 ms timeout must not kill a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_redis_reply_does_not_kill_a_worker() {
    let fleet = Fleet::of(1).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let (stop, worker, _) = fleet.spawn_worker("slow-redis", 2);
    // Let the worker register and poll, then block Redis for 1.5 s with a busy script.
    fleet
        .wait_for(Duration::from_secs(10), "worker registered", || async {
            fleet.queue.depth().await.is_ok_and(|d| d.workers == 1)
        })
        .await;
    // Our own connection without a response timeout, so only the worker's is tested.
    let mut conn = redis::Client::open(crate::common::fleet::redis_url())
        .expect("url")
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .expect("connect");
    let busy = "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                while true do local n = redis.call('TIME') \
                if n[1] * 1000000 + n[2] - s > 1500000 then break end end return 1";
    let _: i64 = redis::cmd("EVAL")
        .arg(busy)
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("busy script");
    assert!(
        !worker.is_finished(),
        "the worker died on a slow Redis reply"
    );
    let d = &devices[0];
    let job = rosbackup::manual::request(
        fleet.store(),
        &fleet.queue,
        &rosbackup::metrics::Metrics::new(),
        d.id,
        None,
    )
    .await
    .expect("request");
    let run = rosbackup::manual::wait(fleet.store(), &job.job_id, Duration::from_secs(30))
        .await
        .expect("wait")
        .expect("the worker still runs jobs after the stall");
    assert_eq!(run.status, "success");
    // The same apalis worker ran it: it neither died nor was restarted (restarted
    // instances register as `…-r1`, `…-r2`).
    let names: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}:workers", fleet.queue.config().name))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("workers");
    assert!(
        !names.is_empty() && names.iter().all(|n| n.ends_with("-r0")),
        "{names:?}"
    );
    let _ = stop.send(());
    worker.await.expect("join").expect("clean stop");
    fleet.cleanup().await;
}

/// A job that took its device's lease several times without ever finishing (each
/// execution crashed its worker) is given up instead of crashing workers forever; the
/// device is backed off like any transient failure and no SSH session is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_crashing_its_worker_is_given_up() {
    let fleet = Fleet::of(1).await;
    let devices = fleet.import(None).await;
    let d = &devices[0];
    let claims = fleet
        .store()
        .claim_due(chrono::Utc::now() + chrono::Duration::seconds(5), 10)
        .await
        .expect("claim");
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    // Three earlier executions of this job took the lease and died holding it.
    sqlx::query(
        "UPDATE devices SET lease_job = $2, lease_token = gen_random_uuid(), lease_worker = 'crashed', \
         lease_expires_at = now() - interval '1 second', lease_starts = 3 WHERE id = $1",
    )
    .bind(d.id)
    .bind(&claim.job_id)
    .execute(fleet.store().pool())
    .await
    .expect("simulate crashes");
    let env = fleet.job_env();
    let job = BackupJob::scheduled(d.id, d.tenant_id, claim.job_id.clone(), claim.due_at);
    let report = rosbackup::worker::execute(&env, &job, "test")
        .await
        .expect("execute");
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report
            .message
            .as_deref()
            .is_some_and(|m| m.contains("interrupted 3 times")),
        "{report:?}"
    );
    assert_eq!(env.metrics.lease_takeovers.get(), 1);
    let row = fleet
        .store()
        .device(d.id)
        .await
        .expect("get")
        .expect("exists");
    assert!(
        row.lease_job.is_none() && row.outstanding_job.is_none(),
        "{row:?}"
    );
    assert_eq!(row.consecutive_failures, 1);
    assert!(row.next_due_at > chrono::Utc::now() + chrono::Duration::seconds(250));
    assert_eq!(
        fleet.sim.stats().get(&d.id).map_or(0, |s| s.sessions),
        0,
        "no SSH session"
    );

    // The same rule stops a live execution: while a lease is held and unexpired, a
    // second execution of another job reports `locked` and opens nothing.
    sqlx::query(
        "UPDATE devices SET lease_job = 'manual:other', lease_token = gen_random_uuid(), \
         lease_expires_at = now() + interval '1 minute', lease_starts = 1 WHERE id = $1",
    )
    .bind(d.id)
    .execute(fleet.store().pool())
    .await
    .expect("hold lease");
    let manual = BackupJob::manual(d.id, d.tenant_id);
    let report = rosbackup::worker::execute(&env, &manual, "test")
        .await
        .expect("execute");
    assert_eq!(report.status, RunStatus::Locked);
    assert_eq!(fleet.sim.stats().get(&d.id).map_or(0, |s| s.sessions), 0);
    // And an outcome written with a lease that was taken over is refused (fencing): a
    // first lease expires, a second execution takes it over, and only the second one's
    // renewal and outcome count.
    sqlx::query("UPDATE devices SET lease_token = NULL, lease_expires_at = NULL WHERE id = $1")
        .bind(d.id)
        .execute(fleet.store().pool())
        .await
        .expect("free the lease");
    let lease = |job: &str| rosbackup::store::Lease {
        device_id: d.id,
        job_id: job.into(),
        token: uuid::Uuid::new_v4(),
        worker: job.into(),
        ttl: Duration::from_secs(1),
    };
    let (first, second) = (lease("manual:first"), lease("manual:second"));
    assert!(matches!(
        fleet.store().acquire_lease(&first).await.expect("lease"),
        rosbackup::store::LeaseAttempt::Acquired {
            takeover: false,
            ..
        }
    ));
    fleet
        .wait_lease_expired(d.id, "the first lease expires")
        .await;
    match fleet.store().acquire_lease(&second).await.expect("lease") {
        rosbackup::store::LeaseAttempt::Acquired {
            takeover, previous, ..
        } => {
            assert!(takeover);
            assert_eq!(previous, Some(first.token));
        }
        other => panic!("not taken over: {other:?}"),
    }
    let runs_before = fleet.runs().await.len();
    let record = |l: &rosbackup::store::Lease| rosbackup::store::RunRecord {
        device_id: d.id,
        tenant_id: d.tenant_id,
        job_id: l.job_id.clone(),
        trigger: rosbackup::store::Trigger::Manual,
        worker: l.worker.clone(),
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        status: RunStatus::Success,
        error_kind: None,
        error_message: None,
        bytes: Some(1),
        sha256: Some("0".repeat(64)),
        timeout: None,
    };
    let state = rosbackup::store::StateUpdate {
        next_due_at: chrono::Utc::now() + chrono::Duration::hours(1),
        consecutive_failures: 0,
        backoff_until: None,
        blocked_reason: None,
        tofu_fingerprint: Some(format!("SHA256:{}", "B".repeat(43))),
        routeros_version: None,
    };
    assert!(!fleet.store().renew_lease(&first).await.expect("renew"));
    assert!(
        !fleet
            .store()
            .record_outcome(&first, &record(&first), &state, 100)
            .await
            .expect("outcome"),
        "the taken-over execution's outcome is refused"
    );
    assert_eq!(
        fleet.runs().await.len(),
        runs_before,
        "and nothing is written"
    );
    let row = fleet
        .store()
        .device(d.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        row.ssh_host_key_fingerprint, None,
        "no pin from the stale outcome"
    );
    assert!(fleet.store().renew_lease(&second).await.expect("renew"));
    assert!(
        fleet
            .store()
            .record_outcome(&second, &record(&second), &state, 100)
            .await
            .expect("outcome")
    );
    assert_eq!(fleet.runs().await.len(), runs_before + 1);
    fleet.cleanup().await;
}

/// Start `rosbackup worker` on the fleet with the given worker name.
fn worker_process(fleet: &Fleet, name: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
        .arg("worker")
        .envs(fleet.process_env())
        .env("ROSBACKUP_WORKER_NAME", name)
        .env("CONFIG_BACKUP_MAX_CONCURRENT", "4")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rosbackup worker")
}

/// `kill -9` a worker in the middle of exports; a new worker started under the same
/// name finishes every backup within about 30 s, and no device ever sees two sessions
/// at once. Then SIGTERM stops the worker cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_worker_jobs_finish_on_a_restarted_worker_without_overlap() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 3,
            export_delay: Duration::from_secs(4),
            ..FleetOptions::default().sim
        },
        command_timeout: Duration::from_secs(20),
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    let mut a = worker_process(&fleet, "w-same");
    let (stop_e, enq) = fleet.spawn_enqueuer();
    // Wait until worker A holds a lease, i.e. is inside an export.
    fleet
        .wait_for(
            Duration::from_secs(30),
            "worker A is mid-export",
            || async {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM devices WHERE lease_worker LIKE 'w-same-%'",
                )
                .fetch_one(fleet.store().pool())
                .await
                .unwrap_or(0);
                n > 0
            },
        )
        .await;
    a.kill().expect("kill -9");
    let _ = a.wait();
    let killed_at = std::time::Instant::now();
    assert_eq!(
        fleet.count_status("success").await,
        0,
        "killed before any export finished"
    );

    let mut b = worker_process(&fleet, "w-same");
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every backup completed on worker B",
            || async { fleet.count_status("success").await == devices.len() as i64 },
        )
        .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(45), "recovery took {took:?}");
    for d in &devices {
        let s = fleet.sim.stats().get(&d.id).copied().unwrap_or_default();
        assert!(s.max_concurrent <= 1, "{}: {s:?}", d.name);
        assert_eq!(s.exports, 1, "{}: exactly one complete export", d.name);
    }
    let js = async_nats::jetstream::new(fleet.nats.clone());
    let mut stream = js
        .get_stream(&fleet.publisher_cfg.stream_name)
        .await
        .expect("stream");
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        devices.len() as u64
    );

    // SIGTERM: a clean, prompt exit 0.
    let pid = b.id() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || b.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let _ = stop_e.send(());
    enq.await.expect("join");
    fleet.cleanup().await;
}

/// Bad configuration stops `rosbackup worker` / `enqueuer` with one line naming the
/// variable and exit code 2, before connecting to anything; the key never echoes.
#[test]
fn bad_fleet_configuration_exits_2_naming_the_variable() {
    let key = rosbackup::credentials::CredentialKey::generate_base64();
    for (cmd, var, value) in [
        ("worker", "CONFIG_BACKUP_MAX_CONCURRENT", "ten"),
        ("worker", "ROSBACKUP_METRICS_ADDR", "localhost"),
        ("worker", "CREDENTIAL_ENCRYPTION_KEY", "c2hvcnQ="),
        ("worker", "CONFIG_BACKUP_CRON", "every day"),
        ("worker", "ROSBACKUP_DB_POOL", "0"),
        ("enqueuer", "ROSBACKUP_QUEUE_CAP", "9000"),
        ("enqueuer", "ROSBACKUP_CLAIM_STALE_SECONDS", "2"),
        ("enqueuer", "ROSBACKUP_HTTP_ADDR", "8080"),
        ("enqueuer", "REDIS_URL", "http://127.0.0.1:6379"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .arg(cmd)
            .env("CREDENTIAL_ENCRYPTION_KEY", &key)
            .env("DATABASE_URL", "postgres://127.0.0.1:1/nothing")
            .env(var, value)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd} {var}={value}: {stderr}");
        assert!(stderr.contains(var), "{cmd} {var}: {stderr}");
        if var == "CREDENTIAL_ENCRYPTION_KEY" {
            assert!(!stderr.contains(value));
        }
    }
}

/// The fence of a fast export reads the lease instead of renewing it (issue #20), and
/// still stops the publish when the lease is no longer ours: here another holder's token
/// replaces ours (unexpired) while the export runs. Nothing is published, no outcome is
/// written over the other holder's lease, and the loss is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_during_a_fast_export_stops_its_publish() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 1,
            export_delay: Duration::from_millis(1500),
            ..FleetOptions::default().sim
        },
        // Long enough that the export ends well before the first renewal is due, so the
        // fence is the read (`worker::rules::fence`).
        lease_ttl: Duration::from_secs(60),
        ..FleetOptions::default()
    })
    .await;
    let d = fleet.import(None).await.remove(0);
    fleet.postpone_all().await;
    let env = fleet.job_env();
    let job = BackupJob::manual(d.id, d.tenant_id);
    let running = tokio::spawn({
        let env = env.clone();
        async move { rosbackup::worker::execute(&env, &job, "fenced").await }
    });
    // The export is under way: the device has our lease and a session open.
    fleet
        .wait_for(Duration::from_secs(20), "the export started", || async {
            fleet
                .sim
                .stats()
                .get(&d.id)
                .is_some_and(|s| s.sessions == 1)
        })
        .await;
    let other = uuid::Uuid::new_v4();
    let taken = sqlx::query(
        "UPDATE devices SET lease_token = $2, lease_worker = 'other', \
         lease_expires_at = now() + interval '1 minute' \
         WHERE id = $1 AND lease_worker = 'fenced'",
    )
    .bind(d.id)
    .bind(other)
    .execute(fleet.store().pool())
    .await
    .expect("take the lease");
    assert_eq!(taken.rows_affected(), 1, "the job held the lease");
    let report = running.await.expect("join").expect("execute");
    assert_eq!(report.status, RunStatus::Skipped, "{report:?}");
    assert_eq!(env.metrics.lease_lost.get(), 1);
    assert_eq!(
        fleet.sim.stats().get(&d.id).map_or(0, |s| s.exports),
        1,
        "the export itself ran to its end"
    );
    assert_eq!(fleet.audit_stream().await.messages, 0, "nothing published");
    let token: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT lease_token FROM devices WHERE id = $1")
            .bind(d.id)
            .fetch_one(fleet.store().pool())
            .await
            .expect("lease");
    assert_eq!(token, Some(other), "the other holder's lease is untouched");
    assert!(fleet.runs().await.is_empty(), "no outcome written");
    fleet.cleanup().await;
}

/// Right before a job takes its lease (its `Prechecked` mark), another execution pins a
/// host key or blocks the device: the job decides on the row read under the lease — it
/// never connects with no pinned key (sending the password to whatever key answers), and
/// never retries a blocked device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_use_the_device_row_read_under_the_lease() {
    use rosbackup::marks::{self, Mark};
    let fleet = Fleet::of(2).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let env = fleet.job_env();
    let pool = fleet.store().pool().clone();
    // What another execution does right after this job's precheck, before its lease.
    let meanwhile = |sql: &'static str, id: uuid::Uuid, value: String| {
        let pool = pool.clone();
        move |m: Mark| {
            if m == Mark::Prechecked {
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        sqlx::query(sql)
                            .bind(id)
                            .bind(&value)
                            .execute(&pool)
                            .await
                            .expect("concurrent change");
                    })
                });
            }
        }
    };
    let (pinned, blocked) = (&devices[0], &devices[1]);
    let other_key = format!("SHA256:{}", "A".repeat(43));
    let report = marks::with_marks(
        meanwhile(
            "UPDATE devices SET ssh_host_key_fingerprint = $2 WHERE id = $1",
            pinned.id,
            other_key,
        ),
        rosbackup::worker::execute(
            &env,
            &BackupJob::manual(pinned.id, pinned.tenant_id),
            "fresh",
        ),
    )
    .await
    .expect("execute");
    assert_eq!(
        report.error_kind.as_deref(),
        Some("host_key_mismatch"),
        "the key pinned meanwhile is checked: {report:?}"
    );

    let report = marks::with_marks(
        meanwhile(
            "UPDATE devices SET blocked_reason = $2, blocked_at = now() WHERE id = $1",
            blocked.id,
            "auth_failed".into(),
        ),
        rosbackup::worker::execute(
            &env,
            &BackupJob::manual(blocked.id, blocked.tenant_id),
            "fresh",
        ),
    )
    .await
    .expect("execute");
    assert_eq!(
        report.error_kind.as_deref(),
        Some("auth_failed"),
        "{report:?}"
    );
    assert!(
        report.message.as_deref().unwrap_or("").contains("blocked"),
        "{report:?}"
    );
    assert_eq!(
        fleet.sim.stats()[&blocked.id].sessions,
        0,
        "a device blocked meanwhile is not contacted"
    );
    let row = fleet
        .store()
        .device(blocked.id)
        .await
        .expect("row")
        .expect("device");
    assert!(row.lease_expires_at.is_none(), "the lease was given back");
    fleet.cleanup().await;
}

/// A worker cut off from PostgreSQL (a black-holed link: no error, no answer) but not
/// from its device stops talking to the device before its lease can expire, so the
/// worker that takes the lease over never overlaps it: the simulator never sees two
/// sessions for the device at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_from_postgres_disconnects_before_its_lease_expires() {
    use rosbackup::marks::{self, Mark};
    // The worker's log, shown when the test fails (a fault's timing is hard to replay).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("rosbackup=info")
        .with_test_writer()
        .try_init();
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 1,
            // The export drips: far longer than the lease.
            export_delay: Duration::from_secs(8),
            ..FleetOptions::default().sim
        },
        lease_ttl: Duration::from_secs(2),
        command_timeout: Duration::from_secs(30),
        ..FleetOptions::default()
    })
    .await;
    let d = fleet.import(None).await.remove(0);
    fleet.postpone_all().await;

    // Worker A reaches PostgreSQL through a proxy that will go dark.
    let (proxy, store) = store_through_proxy(&fleet, 2).await;
    let a = std::sync::Arc::new(fleet.job_env_on(store));
    let exporting = std::sync::Arc::new(tokio::sync::Notify::new());
    let hook = {
        let exporting = exporting.clone();
        move |m: Mark| {
            if m == Mark::ExportStart {
                exporting.notify_one();
            }
        }
    };
    let job_a = BackupJob::manual(d.id, d.tenant_id);
    let run_a = tokio::spawn(async move {
        marks::with_marks(hook, rosbackup::worker::execute(&a, &job_a, "cut-off")).await
    });
    exporting.notified().await;
    proxy.dark(true);

    // PostgreSQL sees A's lease expire; B takes it over and backs the device up.
    fleet.wait_lease_expired(d.id, "A's lease expires").await;
    // B's own lease is a long one: the 2 s TTL is A's, to be held to account. On a
    // loaded machine a renewal can take longer than the second a 2 s lease leaves it,
    // and B, the control, would lose its lease for that instead.
    let mut b = fleet.job_env_on(fleet.store().clone());
    b.lease_ttl = Duration::from_secs(30);
    let report_b = rosbackup::worker::execute(&b, &BackupJob::manual(d.id, d.tenant_id), "b")
        .await
        .expect("execute");
    assert_eq!(report_b.status, RunStatus::Success, "{report_b:?}");
    let report_a = run_a
        .await
        .expect("join")
        .expect("A ends without PostgreSQL");
    assert_eq!(
        (report_a.status, report_a.message.as_deref()),
        (RunStatus::Skipped, Some("lease lost")),
        "{report_a:?}"
    );
    let stats = &fleet.sim.stats()[&d.id];
    assert_eq!(stats.sessions, 2, "{stats:?}");
    assert_eq!(stats.max_concurrent, 1, "two sessions at once: {stats:?}");
    assert_eq!(fleet.runs().await.len(), 1, "only B's outcome is recorded");
    proxy.dark(false);
    fleet.cleanup().await;
}

/// A lease that waited on a busy device row (another transaction held it, as an import
/// or a key rotation does) for most of its TTL's first two thirds still gets its first
/// renewal in time: renewals are counted from when the lease was asked for, as the
/// execution's deadline is, not from when the export started. Before, a lease that
/// waited 3.6 s of a 6 s TTL had its first renewal due 0.2 s after the deadline, and the
/// backup was given up as "lease lost".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_that_waited_on_a_busy_row_is_renewed_in_time() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 1,
            // Longer than what the lease has left after the wait: it must be renewed.
            export_delay: Duration::from_secs(4),
            ..FleetOptions::default().sim
        },
        command_timeout: Duration::from_secs(30),
        ..FleetOptions::default()
    })
    .await;
    let ttl = fleet.opts_lease;
    let d = fleet.import(None).await.remove(0);
    fleet.postpone_all().await;
    let tx = crate::common::lock_row(&fleet.db, d.id).await;
    let env = fleet.job_env();
    let job = BackupJob::manual(d.id, d.tenant_id);
    let run = tokio::spawn(async move { rosbackup::worker::execute(&env, &job, "waited").await });
    // The lease statement is waiting on the row now.
    crate::common::waiting_for_locks(&fleet.db, 1).await;
    // The row stays held for 60 % of the TTL: past the first renewal's usual time, short
    // of the deadline (90 %).
    tokio::time::sleep(ttl * 6 / 10).await;
    tx.commit().await.expect("give the row back");
    let report = run.await.expect("join").expect("execute");
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(fleet.runs().await.len(), 1);
    fleet.cleanup().await;
}

/// A job's statements run on lanes that hand out a connection used within the last
/// second without pinging it (issue #20), so a link that went dark (no error, no answer)
/// since then meets the job's first statement instead of the ping: the job gives the
/// statement up as a connection error at the acquire timeout, as the ping did, instead of
/// waiting minutes for TCP to give up while holding a worker slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_postgres_link_fails_a_job_at_the_acquire_timeout() {
    let fleet = Fleet::of(1).await;
    let d = fleet.import(None).await.remove(0);
    fleet.postpone_all().await;
    let (proxy, store) = store_through_proxy(&fleet, 1).await;
    let env = fleet.job_env_on(store);
    // One lane, just used by a job statement and back (no ping): it is handed out again
    // as it is.
    let nobody = rosbackup::store::Lease {
        device_id: d.id,
        job_id: "manual:nobody".into(),
        token: uuid::Uuid::new_v4(),
        worker: "nobody".into(),
        ttl: Duration::from_secs(30),
    };
    assert!(
        !env.store()
            .confirm_lease(&nobody)
            .await
            .expect("through the proxy"),
        "not our lease"
    );
    assert_eq!(env.store().lanes().idle(), 1, "the lane came back");
    proxy.dark(true);
    let started = std::time::Instant::now();
    let job = BackupJob::manual(d.id, d.tenant_id);
    let result = tokio::time::timeout(
        rosbackup::store::ACQUIRE_TIMEOUT * 3,
        rosbackup::worker::execute(&env, &job, "dark"),
    )
    .await
    .expect("the job's statement is given up, not left waiting for TCP");
    let err = result.expect_err("no lease without PostgreSQL");
    assert!(err.to_string().contains("did not answer in time"), "{err}");
    assert!(
        started.elapsed() >= rosbackup::store::ACQUIRE_TIMEOUT,
        "given up after {:?}, before the acquire timeout",
        started.elapsed()
    );
    proxy.dark(false);
    fleet.cleanup().await;
}

/// A store of `pool` connections to the fleet's database through a loopback proxy the
/// test can black-hole (`proxy.dark(true)`: no error, no answer).
async fn store_through_proxy(fleet: &Fleet, pool: u32) -> (Proxy, rosbackup::store::Store) {
    let mut pg = url::Url::parse(&fleet.db.url).expect("database url");
    let target = format!(
        "{}:{}",
        pg.host_str().expect("host"),
        pg.port().unwrap_or(5432)
    );
    let target: std::net::SocketAddr = tokio::net::lookup_host(target)
        .await
        .expect("resolve")
        .next()
        .expect("address");
    let proxy = Proxy::start(target).await;
    pg.set_host(Some("127.0.0.1")).expect("host");
    pg.set_port(Some(proxy.port)).expect("port");
    let store = rosbackup::store::Store::connect(pg.as_str(), pool)
        .await
        .expect("store through the proxy");
    (proxy, store)
}
