//! The fleet end to end on the real services: PostgreSQL, Redis (apalis-redis), NATS
//! JetStream, and the RouterOS simulator. Each test has its own database, queue name,
//! NATS stream and simulated routers.

use crate::common::fleet::{Fleet, FleetOptions};
use crate::common::web::{call, router, token};
use axum::http::{Method, StatusCode};
use rosbackup::access::Role;
use rosbackup::sim::{Fault, FaultSpec, SimConfig};
use rosbackup::store::NewDevice;
use rosbackup::web::AuthMode;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

async fn device_rows(fleet: &Fleet) -> HashMap<Uuid, rosbackup::store::Device> {
    fleet
        .store()
        .list_devices(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .map(|d| (d.id, d))
        .collect()
}

/// 200 devices, some with each fault mode that ends a backup differently, backed up by
/// an enqueuer and two workers; then a second round of manual backups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_backs_up_every_device_and_classifies_every_fault() {
    let faults = FaultSpec(vec![
        (Fault::Auth, 4),
        (Fault::HostKey, 4),
        (Fault::Refuse, 4),
        (Fault::Silent, 3),
        (Fault::Drop, 4),
        (Fault::Garbage, 4),
        (Fault::Huge, 2),
        (Fault::V6, 4),
        (Fault::Annotate, 4),
        (Fault::Change, 4),
    ]);
    let mut fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 200,
            faults,
            huge_bytes: 8 * 1024 * 1024,
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    // A cap the huge devices pass well within the command timeout even on a loaded
    // machine (at the default 32 MiB a slow run hit the timeout first: truncated_output).
    fleet.backup.export.max_output = 4 * 1024 * 1024;
    fleet.import(None).await;
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_a, wa, env_a) = fleet.spawn_worker("wa", 10);
    let (stop_b, wb, env_b) = fleet.spawn_worker("wb", 10);

    fleet
        .wait_for(
            Duration::from_secs(240),
            "every device attempted once",
            || async {
                let c = fleet.store().counts(None).await.expect("counts");
                c.never == 0
            },
        )
        .await;

    let rows = device_rows(&fleet).await;
    let mut successes = 0;
    for d in fleet.sim.devices() {
        let row = &rows[&d.id];
        let expect_kind = match d.fault {
            Some(Fault::Auth) => Some("auth_failed"),
            Some(Fault::Refuse) => Some("connection_refused"),
            Some(Fault::Silent) => Some("timeout"),
            Some(Fault::Drop) => Some("truncated_output"),
            Some(Fault::Garbage) => Some("bad_output"),
            Some(Fault::Huge) => Some("too_large"),
            _ => None,
        };
        match expect_kind {
            None => {
                assert_eq!(
                    row.last_status.as_deref(),
                    Some("success"),
                    "{}: {:?}",
                    d.name,
                    row.last_error_message
                );
                assert!(
                    row.last_sha256.as_deref().is_some_and(|h| h.len() == 64),
                    "{}",
                    d.name
                );
                assert_eq!(
                    row.ssh_host_key_fingerprint,
                    fleet.sim.host_key_fingerprint(d.id),
                    "{}: TOFU pins the presented key",
                    d.name
                );
                assert!(row.next_due_at > chrono::Utc::now() + chrono::Duration::minutes(50));
                assert!(
                    row.outstanding_job.is_none() && row.lease_job.is_none(),
                    "{}",
                    d.name
                );
                successes += 1;
            }
            Some(kind) => {
                assert_eq!(row.last_status.as_deref(), Some("failed"), "{}", d.name);
                assert_eq!(
                    row.last_error_kind.as_deref(),
                    Some(kind),
                    "{}: {:?}",
                    d.name,
                    row.last_error_message
                );
                assert_eq!(row.consecutive_failures, 1, "{}", d.name);
                if kind == "auth_failed" {
                    assert_eq!(row.blocked_reason.as_deref(), Some("auth_failed"));
                    assert!(row.backoff_until.is_none());
                } else {
                    assert!(row.blocked_reason.is_none(), "{}", d.name);
                    // Transient: backed off five minutes.
                    let backoff = row.next_due_at - row.last_attempt_at.expect("attempted");
                    assert!(
                        (chrono::Duration::seconds(290)..=chrono::Duration::seconds(310))
                            .contains(&backoff),
                        "{}: {backoff}",
                        d.name
                    );
                }
                let msg = row.last_error_message.clone().unwrap_or_default();
                assert!(
                    !msg.contains(&d.password),
                    "{}: password in error message",
                    d.name
                );
            }
        }
        // Never two sessions to one device at once.
        let stats = fleet.sim.stats();
        assert!(
            stats.get(&d.id).is_none_or(|s| s.max_concurrent <= 1),
            "{}: {:?}",
            d.name,
            stats.get(&d.id)
        );
    }
    // One snapshot per success in this test's stream, none partial.
    let js = async_nats::jetstream::new(fleet.nats.clone());
    let mut stream = js
        .get_stream(&fleet.publisher_cfg.stream_name)
        .await
        .expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(info.state.messages, successes as u64);
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backup_runs WHERE trigger = 'scheduled'")
            .fetch_one(fleet.store().pool())
            .await
            .expect("runs");
    assert_eq!(runs, 200, "one scheduled run per device");
    let metric_successes: u64 = [&env_a, &env_b]
        .iter()
        .map(|e| e.metrics.backup_total.with_label_values(&["success"]).get())
        .sum();
    assert_eq!(metric_successes, successes as u64);

    // Round two, by hand: unchanged configs keep their hash, `change` devices get a new
    // one, a host key that changed blocks the device, a blocked device reports the block.
    let first: HashMap<Uuid, Option<String>> = rows
        .iter()
        .map(|(id, d)| (*id, d.last_sha256.clone()))
        .collect();
    let mut checked = 0;
    for d in fleet.sim.devices() {
        let check = match d.fault {
            None if checked < 6 => true,
            Some(Fault::Change | Fault::HostKey | Fault::V6 | Fault::Annotate | Fault::Auth) => {
                true
            }
            _ => false,
        };
        if !check {
            continue;
        }
        if d.fault.is_none() {
            checked += 1;
        }
        let job = rosbackup::manual::request(
            fleet.store(),
            &fleet.queue,
            &rosbackup::metrics::Metrics::new(),
            d.id,
            Some(d.tenant_id),
        )
        .await
        .expect("manual request");
        let run = rosbackup::manual::wait(fleet.store(), &job.job_id, Duration::from_secs(60))
            .await
            .expect("wait")
            .unwrap_or_else(|| panic!("{}: no result", d.name));
        assert_eq!(run.trigger, "manual");
        match d.fault {
            Some(Fault::Change) => {
                assert_eq!(run.status, "success", "{}", d.name);
                assert_ne!(
                    run.sha256, first[&d.id],
                    "{}: a changed config gets a new hash",
                    d.name
                );
            }
            Some(Fault::HostKey) => {
                assert_eq!(run.status, "failed");
                assert_eq!(run.error_kind.as_deref(), Some("host_key_mismatch"));
                let row = fleet
                    .store()
                    .device(d.id)
                    .await
                    .expect("get")
                    .expect("exists");
                assert_eq!(row.blocked_reason.as_deref(), Some("host_key_mismatch"));
            }
            Some(Fault::Auth) => {
                assert_eq!(run.status, "failed");
                assert_eq!(run.error_kind.as_deref(), Some("auth_failed"));
                assert!(
                    run.error_message
                        .as_deref()
                        .is_some_and(|m| m.contains("blocked"))
                );
            }
            _ => {
                assert_eq!(run.status, "success", "{}", d.name);
                assert_eq!(
                    run.sha256, first[&d.id],
                    "{}: an unchanged config keeps its hash",
                    d.name
                );
            }
        }
    }

    let _ = (stop_a.send(()), stop_b.send(()), stop_e.send(()));
    wa.await.expect("join").expect("worker a stops cleanly");
    wb.await.expect("join").expect("worker b stops cleanly");
    enq.await.expect("join");
    fleet.cleanup().await;
}

fn synthetic(n: usize) -> Vec<NewDevice> {
    let tenant = Uuid::new_v4();
    (0..n)
        .map(|i| NewDevice {
            id: Uuid::new_v4(),
            tenant_id: tenant,
            name: format!("synthetic-{i:06}"),
            host: "127.0.0.1".into(),
            ssh_port: 9,
            username: "admin".into(),
            password: rosbackup::Secret::new("pw".to_string()),
            routeros_version: None,
            enabled: true,
            backup_interval_seconds: None,
            backup_cron: None,
            export_timeout_seconds: None,
            ssh_key: None,
            credential_profile: None,
            keep_ssh_key: false,
            keep_credential_profile: false,
            jump: None,
        })
        .collect()
}

/// The cap holds however many enqueuers tick at once: counting the outstanding claims and
/// claiming are one step, so eight enqueuers never fill the same room eight times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_cap_holds_with_many_enqueuers_ticking_at_once() {
    let fleet = Fleet::of(1).await;
    let devices = synthetic(1000);
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, || {
            chrono::Utc::now() - chrono::Duration::seconds(5)
        })
        .await
        .expect("insert");
    let mut base = fleet.enqueuer();
    base.settings.cap = 100;
    base.settings.batch = 100;
    for _ in 0..3 {
        let ticks = (0..8).map(|_| {
            let e = base.clone();
            async move { e.tick().await.expect("tick").pushed }
        });
        let pushed: usize = futures::future::join_all(ticks).await.into_iter().sum();
        let outstanding = fleet.store().count_outstanding().await.expect("count");
        assert!(
            outstanding <= 100,
            "{outstanding} claims outstanding under a cap of 100 ({pushed} pushed)"
        );
    }
    assert_eq!(fleet.store().count_outstanding().await.expect("count"), 100);
    fleet.cleanup().await;
}

/// Two enqueuers racing over the same due devices push exactly one job per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_enqueuers_never_double_schedule() {
    let fleet = Fleet::of(1).await;
    let devices = synthetic(3000);
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, || {
            chrono::Utc::now() - chrono::Duration::seconds(5)
        })
        .await
        .expect("insert");
    let mut a = fleet.enqueuer();
    a.settings.cap = 5000;
    a.settings.batch = 200;
    let mut b = a.clone();
    b.metrics = rosbackup::metrics::Metrics::new();
    let (mut pushed_a, mut pushed_b) = (0, 0);
    loop {
        let (ra, rb) = tokio::join!(a.tick(), b.tick());
        let (ra, rb) = (ra.expect("tick a"), rb.expect("tick b"));
        pushed_a += ra.pushed;
        pushed_b += rb.pushed;
        if ra.pushed == 0 && rb.pushed == 0 {
            break;
        }
    }
    assert_eq!(pushed_a + pushed_b, 3000);
    assert!(
        pushed_a > 0 && pushed_b > 0,
        "both enqueuers took part: {pushed_a}/{pushed_b}"
    );
    let mut conn = fleet.queue.connection();
    let data_key = format!("{}:data", fleet.queue.config().name);
    let ids: Vec<String> = redis::cmd("HKEYS")
        .arg(&data_key)
        .query_async(&mut conn)
        .await
        .expect("hkeys");
    assert_eq!(ids.len(), 3000, "one job per device in Redis");
    let devices_with_jobs: HashSet<&str> =
        ids.iter().filter_map(|id| id.split(':').nth(1)).collect();
    assert_eq!(devices_with_jobs.len(), 3000);
    let rows = device_rows(&fleet).await;
    for d in rows.values() {
        let job = d.outstanding_job.as_deref().expect("claimed");
        assert_eq!(
            job,
            rosbackup::store::scheduled_job_id(&d.id, d.next_due_at)
        );
        assert!(ids.iter().any(|i| i == job));
    }
    // A third pass finds nothing to do: one outstanding job per device.
    assert_eq!(a.tick().await.expect("tick").pushed, 0);
    fleet.cleanup().await;
}

/// 20,000 overdue devices drain through a queue that never holds more than the cap,
/// oldest first. The devices report offline (the seed's Redis status key), so each job
/// exercises claim → push → fetch → execute → record without SSH.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_of_20000_overdue_devices_drains_oldest_first_under_the_cap() {
    const N: usize = 20_000;
    let fleet = Fleet::of(1).await;
    let devices = synthetic(N);
    let now = chrono::Utc::now();
    let mut i = 0i64;
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, || {
            i += 1;
            // Overdue by up to ~5.5 hours, device i more overdue than device i+1.
            now - chrono::Duration::seconds(20_001 - i)
        })
        .await
        .expect("insert");
    let mut conn = fleet.queue.connection();
    let mut pipe = redis::pipe();
    for d in &devices {
        pipe.set_ex(format!("device:{}:status", d.id), "offline", 900)
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.expect("status keys");

    let mut enq = fleet.enqueuer();
    enq.settings.cap = 2000;
    let cap = enq.settings.cap as u64;
    let (stop_e, rx) = tokio::sync::oneshot::channel::<()>();
    let enq_task = tokio::spawn(async move {
        enq.run(async move {
            let _ = rx.await;
        })
        .await
    });
    let (stop_a, wa, _) = fleet.spawn_worker("drain-a", 50);
    let (stop_b, wb, _) = fleet.spawn_worker("drain-b", 50);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peak_claims = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    fleet
        .wait_for(Duration::from_secs(600), "the backlog drained", || {
            let peak = peak.clone();
            let peak_claims = peak_claims.clone();
            let fleet = &fleet;
            async move {
                let claims = fleet.store().count_outstanding().await.expect("claims");
                peak_claims.fetch_max(claims, std::sync::atomic::Ordering::Relaxed);
                let depth = fleet.queue.depth().await.expect("depth");
                if depth.scheduled + depth.due + depth.running > 2000 {
                    eprintln!("{depth:?}");
                }
                peak.fetch_max(
                    depth.scheduled + depth.due + depth.running,
                    std::sync::atomic::Ordering::Relaxed,
                );
                fleet.count_status("skipped").await == N as i64
            }
        })
        .await;
    let peak_claims = peak_claims.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak_claims <= cap as i64,
        "{peak_claims} outstanding claims, cap {cap}"
    );
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // The cap bounds claims (PostgreSQL). A finished job's claim is released when its
    // outcome is written, a moment before apalis acks it and drops it from the worker's
    // in-flight set; meanwhile the enqueuer may already push the next job. So Redis can
    // hold at most the cap plus the jobs finishing at that moment (the workers'
    // concurrency), never more.
    let finishing = 2 * 50;
    assert!(
        peak <= cap + finishing,
        "queue held {peak} jobs, cap {cap} (+{finishing} finishing)"
    );
    assert!(
        peak >= cap / 2,
        "the backlog never filled the queue: peak {peak}"
    );
    // Oldest first: the first 2,000 devices handled were among the 6,000 most overdue.
    let first: Vec<String> = sqlx::query_scalar(
        "SELECT d.name FROM backup_runs r JOIN devices d ON d.id = r.device_id ORDER BY r.id LIMIT 2000",
    )
    .fetch_all(fleet.store().pool())
    .await
    .expect("runs");
    let late = first
        .iter()
        .filter(|n| {
            n.trim_start_matches("synthetic-")
                .parse::<usize>()
                .unwrap_or(N)
                >= 6000
        })
        .count();
    assert_eq!(
        late, 0,
        "{late} of the first 2000 were not among the oldest"
    );
    let _ = (stop_a.send(()), stop_b.send(()), stop_e.send(()));
    wa.await.expect("join").expect("worker a");
    wb.await.expect("join").expect("worker b");
    enq_task.await.expect("join");
    let mut pipe = redis::pipe();
    for d in &devices {
        pipe.del(format!("device:{}:status", d.id)).ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.expect("cleanup");
    fleet.cleanup().await;
}

/// A manual backup while another execution (a scheduled one) holds the device's lease
/// answers `locked`, through the seed's NATS request/reply subject; an idle device
/// answers `success`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_backup_over_nats_answers_success_and_locked() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 2,
            export_delay: Duration::from_secs(3),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    // Not due for an hour: only manual jobs run.
    fleet.postpone_all().await;
    let (stop_w, w, _) = fleet.spawn_worker("manual", 4);
    let subject = format!("rbtest{}.config.backup.trigger", Uuid::new_v4().simple());
    let metrics = rosbackup::metrics::Metrics::new();
    let trigger = tokio::spawn(rosbackup::manual::serve_trigger(
        fleet.nats.clone(),
        subject.clone(),
        fleet.store().clone(),
        fleet.queue.clone(),
        Duration::from_secs(30),
        metrics.clone(),
    ));
    let ask = |payload: String| {
        let (nats, subject) = (fleet.nats.clone(), subject.clone());
        async move {
            let msg = tokio::time::timeout(
                Duration::from_secs(40),
                nats.request(subject, payload.into()),
            )
            .await
            .expect("reply in time")
            .expect("request");
            let raw: serde_json::Value =
                serde_json::from_slice(&msg.payload).expect("reply is JSON");
            let keys: Vec<String> = raw.as_object().expect("object").keys().cloned().collect();
            let reply: rosbackup::manual::TriggerReply =
                serde_json::from_value(raw).expect("the seed's reply schema");
            (reply, keys)
        }
    };
    // Wait until the subscription is live (a request to an unknown device answers).
    fleet
        .wait_for(Duration::from_secs(10), "trigger subscription", || async {
            let body = format!(r#"{{"device_id":"{}"}}"#, Uuid::new_v4());
            match tokio::time::timeout(
                Duration::from_secs(1),
                fleet.nats.request(subject.clone(), body.into()),
            )
            .await
            {
                Ok(Ok(m)) => serde_json::from_slice::<rosbackup::manual::TriggerReply>(&m.payload)
                    .is_ok_and(|r| r.error_kind == "not_found"),
                _ => false,
            }
        })
        .await;
    let d = &devices[0];
    let body = format!(
        r#"{{"device_id":"{}","tenant_id":"{}"}}"#,
        d.id, d.tenant_id
    );
    // Another execution (a scheduled backup: manual requests for one device join each
    // other instead) holds the device's lease.
    let held = rosbackup::store::Lease {
        device_id: d.id,
        job_id: format!("backup:{}:0", d.id),
        token: Uuid::new_v4(),
        worker: "elsewhere".into(),
        ttl: Duration::from_secs(60),
    };
    assert!(matches!(
        fleet.store().acquire_lease(&held).await.expect("lease"),
        rosbackup::store::LeaseAttempt::Acquired { .. }
    ));
    let (second, second_keys) = ask(body.clone()).await;
    assert_eq!(second.status, "locked", "{second:?}");
    // The Go poller's reply on the wire: empty fields left out, its locked message.
    assert_eq!(second_keys, ["message", "status"]);
    // An idle device answers success, with the snapshot's hash.
    let idle = &devices[1];
    let (ok, ok_keys) = ask(format!(
        r#"{{"device_id":"{}","tenant_id":"{}"}}"#,
        idle.id, idle.tenant_id
    ))
    .await;
    assert_eq!(second.message, "backup already in progress");
    let (first, first_keys) = (ok, ok_keys);
    assert_eq!(first.status, "success", "{first:?}");
    assert_eq!(first.sha256_hash.len(), 64);
    assert_eq!(first_keys, ["message", "sha256_hash", "status"]);
    let row = fleet
        .store()
        .device(idle.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(row.last_sha256.as_deref(), Some(first.sha256_hash.as_str()));
    // Malformed requests get a clear failure, not silence.
    let (bad, bad_keys) = ask("not json".into()).await;
    assert_eq!(
        (bad.status.as_str(), bad.error_kind.as_str()),
        ("failed", "bad_request")
    );
    assert!(bad.error.starts_with("malformed request"), "{bad:?}");
    assert_eq!(bad_keys, ["error", "error_kind", "status"]);
    let (wrong_tenant, _) = ask(format!(
        r#"{{"device_id":"{}","tenant_id":"{}"}}"#,
        d.id,
        Uuid::new_v4()
    ))
    .await;
    assert_eq!(wrong_tenant.error_kind, "not_found");
    assert_eq!(wrong_tenant.error, "device not found");
    // Two jobs were pushed (the `success` and the `locked` one); the probes, the
    // malformed request and the wrong tenant pushed nothing and count nothing.
    assert_eq!(
        metrics.jobs_enqueued.with_label_values(&["manual"]).get(),
        2,
        "{}",
        metrics.render()
    );
    assert!(fleet.sim.stats().values().all(|s| s.max_concurrent <= 1));
    trigger.abort();
    let _ = stop_w.send(());
    w.await.expect("join").expect("worker");
    fleet.cleanup().await;
}

/// `rosbackup_jobs_enqueued_total{trigger="manual"}` counts each manual job once, whatever
/// the door: `manual::request` (what `rosbackup enqueue` calls) counts it, and the API's
/// `POST /devices/{id}/backup`, which goes through the same function, counts it once too
/// (it used to copy the function and count beside it, while the CLI's path counted nothing).
#[tokio::test]
async fn manual_requests_count_jobs_enqueued_once_per_door() {
    let fleet = Fleet::of(2).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    let manual =
        |m: &rosbackup::metrics::Metrics| m.jobs_enqueued.with_label_values(&["manual"]).get();

    // The CLI's door.
    let metrics = rosbackup::metrics::Metrics::new();
    let job = rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, d.id, None)
        .await
        .expect("manual request");
    assert!(job.job_id.starts_with("manual:"), "{}", job.job_id);
    assert_eq!(manual(&metrics), 1);
    assert!(
        metrics
            .render()
            .contains("rosbackup_jobs_enqueued_total{trigger=\"manual\"} 1"),
        "{}",
        metrics.render()
    );
    // Nothing pushed, nothing counted: an unknown device, another tenant's device.
    for (id, tenant) in [(Uuid::new_v4(), None), (d.id, Some(Uuid::new_v4()))] {
        rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, id, tenant)
            .await
            .expect_err("no such device");
    }
    assert_eq!(manual(&metrics), 1);

    // The API's door: once, not twice.
    let (app, state) = router(&fleet, AuthMode::Required);
    let admin = token(&fleet, "ops", Role::Admin, None).await;
    let bearer = format!("Bearer {admin}");
    let r = call(
        &app,
        Method::POST,
        // Another device: a request for `d` would join the CLI's job and push nothing.
        &format!("/api/v1/devices/{}/backup", devices[1].id),
        &[("authorization", bearer.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(manual(state.metrics()), 1, "{}", state.metrics().render());
    fleet.cleanup().await;
}
