//! The worker against apalis-redis 1.0's measured defects and against crashes.

use crate::common::fleet::{Fleet, FleetOptions};
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
    // And an outcome written with a lost lease is refused (fencing).
    let stale = rosbackup::store::Lease {
        device_id: d.id,
        job_id: "manual:stale".into(),
        token: uuid::Uuid::new_v4(),
        worker: "gone".into(),
        ttl: Duration::from_secs(5),
    };
    assert!(!fleet.store().renew_lease(&stale).await.expect("renew"));
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
