//! Manual backups are bounded (#17): a burst of requests for one device through every
//! door (API `wait`, NATS trigger, `rosbackup enqueue --wait`) is one SSH session whose
//! outcome every requester gets; a request just after it finished joins it too; past the
//! fleet's bound on manual jobs the API answers 429 with `Retry-After`, the NATS reply is
//! `failed` with an error, and the CLI exits 1.

use crate::common::fleet::{Fleet, FleetOptions};
use crate::common::web::{call, router, token};
use axum::http::{Method, StatusCode};
use rosbackup::access::Role;
use rosbackup::manual::{Joined, TriggerReply};
use rosbackup::sim::SimConfig;
use rosbackup::web::AuthMode;
use std::time::Duration;
use uuid::Uuid;

/// Serve the trigger subject for `fleet` and wait until it answers.
async fn serve_trigger(
    fleet: &Fleet,
    metrics: &rosbackup::metrics::Metrics,
) -> (
    String,
    tokio::task::JoinHandle<Result<(), async_nats::SubscribeError>>,
) {
    let subject = format!("rbtest{}.config.backup.trigger", Uuid::new_v4().simple());
    let handle = tokio::spawn(rosbackup::manual::serve_trigger(
        fleet.nats.clone(),
        subject.clone(),
        fleet.store().clone(),
        fleet.queue.clone(),
        Duration::from_secs(60),
        metrics.clone(),
    ));
    // Live once a request for an unknown device is answered.
    fleet
        .wait_for(Duration::from_secs(10), "trigger subscription", || async {
            let body = format!(r#"{{"device_id":"{}"}}"#, Uuid::new_v4());
            match tokio::time::timeout(
                Duration::from_secs(1),
                fleet.nats.request(subject.clone(), body.into()),
            )
            .await
            {
                Ok(Ok(m)) => serde_json::from_slice::<TriggerReply>(&m.payload)
                    .is_ok_and(|r| r.error_kind == "not_found"),
                _ => false,
            }
        })
        .await;
    (subject, handle)
}

/// One trigger request: the reply and its JSON keys (the wire schema).
async fn ask(
    nats: async_nats::Client,
    subject: String,
    body: String,
) -> (TriggerReply, Vec<String>) {
    let msg = tokio::time::timeout(Duration::from_secs(70), nats.request(subject, body.into()))
        .await
        .expect("reply in time")
        .expect("request");
    let raw: serde_json::Value = serde_json::from_slice(&msg.payload).expect("reply is JSON");
    let keys = raw.as_object().expect("object").keys().cloned().collect();
    (
        serde_json::from_value(raw).expect("the seed's reply schema"),
        keys,
    )
}

/// `rosbackup enqueue …` on the fleet; (exit code, stdout, stderr).
async fn enqueue_cli(fleet: &Fleet, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .arg("enqueue")
            .args(args)
            .envs(fleet.process_env())
            .env("CONFIG_BACKUP_MAX_CONCURRENT", "2")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("rosbackup enqueue ends")
    .expect("rosbackup enqueue starts");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn counted(m: &rosbackup::metrics::Metrics, outcome: &str) -> u64 {
    m.manual_requests.with_label_values(&[outcome]).get()
}

/// Many requests at once for one device, through the API (wait), the NATS trigger and the
/// CLI (`--wait`): the simulator sees one SSH session, and every requester gets the same
/// job, status and sha256. (Before: each request pushed its own job, so the device saw
/// several sessions and most requesters got `locked`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_requests_for_one_device_is_one_backup_with_one_outcome() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 2,
            export_delay: Duration::from_secs(2),
            ..FleetOptions::default().sim
        },
        // Long enough that requests arriving after the backup finished still join it.
        manual_window: Duration::from_secs(60),
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    let (stop_w, w, _) = fleet.spawn_worker("burst", 8);
    let nats_metrics = rosbackup::metrics::Metrics::new();
    let (subject, trigger) = serve_trigger(&fleet, &nats_metrics).await;
    let (app, state) = router(&fleet, AuthMode::Required);
    let bearer = format!("Bearer {}", token(&fleet, "ops", Role::Admin, None).await);

    const API: usize = 15;
    const NATS: usize = 15;
    const CLI: usize = 3;
    let path = format!("/api/v1/devices/{}/backup?wait=true&timeout=60", d.id);
    let api: Vec<_> = (0..API)
        .map(|_| {
            let (app, path, bearer) = (app.clone(), path.clone(), bearer.clone());
            tokio::spawn(async move {
                call(
                    &app,
                    Method::POST,
                    &path,
                    &[("authorization", bearer.as_str())],
                    None,
                )
                .await
            })
        })
        .collect();
    let body = format!(
        r#"{{"device_id":"{}","tenant_id":"{}"}}"#,
        d.id, d.tenant_id
    );
    let nats: Vec<_> = (0..NATS)
        .map(|_| tokio::spawn(ask(fleet.nats.clone(), subject.clone(), body.clone())))
        .collect();
    let id = d.id.to_string();
    let args = ["--wait", "--json", "--timeout", "60", id.as_str()];
    let cli: Vec<_> = (0..CLI).map(|_| enqueue_cli(&fleet, &args)).collect();
    let cli = futures::future::join_all(cli).await;

    let mut outcomes = Vec::new();
    for r in api {
        let r = r.await.expect("api task");
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        outcomes.push((
            "api",
            r.body["job_id"].as_str().unwrap_or("").to_string(),
            r.body["status"].as_str().unwrap_or("").to_string(),
            r.body["run"]["sha256"].as_str().unwrap_or("").to_string(),
        ));
    }
    for r in nats {
        let (reply, _) = r.await.expect("nats task");
        outcomes.push(("nats", String::new(), reply.status, reply.sha256_hash));
    }
    for (code, stdout, stderr) in cli {
        assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
        let run: serde_json::Value = serde_json::from_str(stdout.trim()).expect("run JSON");
        outcomes.push((
            "cli",
            run["job_id"].as_str().unwrap_or("").to_string(),
            run["status"].as_str().unwrap_or("").to_string(),
            run["sha256"].as_str().unwrap_or("").to_string(),
        ));
    }
    let (_, job, status, sha) = outcomes[0].clone();
    assert!(job.starts_with("manual:"), "{outcomes:?}");
    assert_eq!(status, "success", "{outcomes:?}");
    assert_eq!(sha.len(), 64, "{outcomes:?}");
    for (door, j, st, sh) in &outcomes {
        assert_eq!((st, sh), (&status, &sha), "{door}: {outcomes:?}");
        if !j.is_empty() {
            assert_eq!(j, &job, "{door}: {outcomes:?}");
        }
    }
    assert_eq!(outcomes.len(), API + NATS + CLI);
    // One SSH session, one run.
    let stats = fleet.sim.stats();
    assert_eq!(stats[&d.id].sessions, 1, "{:?}", stats[&d.id]);
    let runs = fleet.store().runs(d.id, 100).await.expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    // Counted: one queued among the in-process doors or the CLI; every other joined.
    let queued = counted(state.metrics(), "queued") + counted(&nats_metrics, "queued");
    let joined = counted(state.metrics(), "joined") + counted(&nats_metrics, "joined");
    assert!(queued <= 1, "queued {queued}");
    assert!(joined as usize >= API + NATS - 1, "joined {joined}");
    trigger.abort();
    let _ = stop_w.send(());
    w.await.expect("join").expect("worker");
    fleet.cleanup().await;
}

/// A request within the join window after the device's manual backup finished gets that
/// backup's outcome without a new session; once the window has passed, a request queues
/// a new backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_within_the_window_after_completion_joins() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 1,
            ..FleetOptions::default().sim
        },
        manual_window: Duration::from_secs(3),
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    let (stop_w, w, _) = fleet.spawn_worker("window", 2);
    let metrics = rosbackup::metrics::Metrics::new();
    let request = || rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, d.id, None);
    let first = request().await.expect("request");
    assert_eq!(first.joined, None);
    let run = rosbackup::manual::wait(fleet.store(), &first.job_id, Duration::from_secs(30))
        .await
        .expect("store")
        .expect("a run");
    assert_eq!(run.status, "success", "{run:?}");
    // apalis marks the job done just after the run is recorded.
    fleet
        .wait_for(
            Duration::from_secs(10),
            "the job is done in Redis",
            || async {
                fleet
                    .queue
                    .job_states(std::slice::from_ref(&first.job_id))
                    .await
                    .ok()
                    == Some(vec![rosbackup::queue::JobState::Done])
            },
        )
        .await;
    // Finished, it stops counting against the bound once pruned; the slot still joins.
    assert_eq!(fleet.queue.manual_pending().await.expect("pending"), 1);
    let now = chrono::Utc::now().timestamp();
    let pruned = fleet
        .queue
        .prune_manual(now, rosbackup::manual::PUSH_GRACE_S, None)
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert_eq!(fleet.queue.manual_pending().await.expect("pending"), 0);
    let again = request().await.expect("request");
    assert_eq!(again.job_id, first.job_id);
    assert_eq!(again.joined, Some(Joined::Recent));
    let same = rosbackup::manual::wait(fleet.store(), &again.job_id, Duration::from_secs(1))
        .await
        .expect("store")
        .expect("the finished run");
    assert_eq!((same.id, &same.sha256), (run.id, &run.sha256));
    assert_eq!(fleet.sim.stats()[&d.id].sessions, 1);
    assert_eq!(counted(&metrics, "joined"), 1);

    // After the window, a new backup (each request meanwhile joins the finished one).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let fresh = loop {
        let r = request().await.expect("request");
        if r.joined.is_none() {
            break r;
        }
        assert_eq!(r.job_id, first.job_id);
        assert!(
            tokio::time::Instant::now() < deadline,
            "still joining the finished backup 15 s later"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(fresh.job_id, first.job_id);
    let second = rosbackup::manual::wait(fleet.store(), &fresh.job_id, Duration::from_secs(30))
        .await
        .expect("store")
        .expect("a second run");
    assert_eq!(second.status, "success");
    assert_eq!(fleet.sim.stats()[&d.id].sessions, 2);
    let _ = stop_w.send(());
    w.await.expect("join").expect("worker");
    fleet.cleanup().await;
}

/// With `ROSBACKUP_MANUAL_MAX` manual jobs pending (no worker runs them), a request for
/// another device is refused at every door: API 429 with `Retry-After`, NATS `failed` with
/// a human error in the seed's reply schema, CLI exit 1. A request for a device already
/// pending still joins. Nothing was pushed for the refused requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_every_door_refuses() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 3,
            ..FleetOptions::default().sim
        },
        manual_max: 2,
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let metrics = rosbackup::metrics::Metrics::new();
    for d in &devices[..2] {
        let r = rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, d.id, None)
            .await
            .expect("within the bound");
        assert_eq!(r.joined, None);
    }
    assert_eq!(fleet.queue.manual_pending().await.expect("pending"), 2);
    let full = &devices[2];

    // A device already pending joins; no new job.
    let again =
        rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, devices[0].id, None)
            .await
            .expect("joins");
    assert_eq!(again.joined, Some(Joined::Queued));

    // The API.
    let (app, state) = router(&fleet, AuthMode::Required);
    let bearer = format!("Bearer {}", token(&fleet, "ops", Role::Admin, None).await);
    let r = call(
        &app,
        Method::POST,
        &format!("/api/v1/devices/{}/backup", full.id),
        &[("authorization", bearer.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.code(), "too_many_requests", "{}", r.text);
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("30")
    );
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many manual backups")),
        "{}",
        r.text
    );
    assert_eq!(counted(state.metrics(), "refused"), 1);

    // NATS.
    let nats_metrics = rosbackup::metrics::Metrics::new();
    let (subject, trigger) = serve_trigger(&fleet, &nats_metrics).await;
    let (reply, keys) = ask(
        fleet.nats.clone(),
        subject,
        format!(r#"{{"device_id":"{}"}}"#, full.id),
    )
    .await;
    assert_eq!(reply.status, "failed", "{reply:?}");
    assert_eq!(reply.error_kind, "too_many_requests", "{reply:?}");
    assert!(reply.error.contains("too many manual backups"), "{reply:?}");
    assert!(reply.error.contains("try again in 30 s"), "{reply:?}");
    assert_eq!(keys, ["error", "error_kind", "status"]);
    assert_eq!(counted(&nats_metrics, "refused"), 1);
    trigger.abort();

    // The CLI.
    let (code, stdout, stderr) = enqueue_cli(&fleet, &[&full.id.to_string()]).await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("refused: too many manual backups"),
        "{stderr}"
    );

    // Nothing was pushed for the refused device.
    assert_eq!(fleet.queue.manual_pending().await.expect("pending"), 2);
    assert_eq!(fleet.queue.depth().await.expect("depth").due, 2);
    fleet.cleanup().await;
}

/// "Fix the password, click Back up now" backs up: a manual backup that failed on the old
/// credentials is not joined by a request after the device changed, even within the join
/// window — the request queues a new backup with the new credentials. The same through a
/// credential profile's change, which changes every device that uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_a_credentials_change_does_not_join_the_failed_backup() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 1,
            ..FleetOptions::default().sim
        },
        manual_window: Duration::from_secs(600),
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    let real = rosbackup::Secret::new(fleet.sim.devices()[0].password.clone());
    let wrong = rosbackup::Secret::new("not-the-password".to_string());
    fleet
        .store()
        .set_credentials(&fleet.key, d.id, None, &wrong)
        .await
        .expect("set a wrong password");
    let (stop_w, w, _) = fleet.spawn_worker("fixed", 2);
    let metrics = rosbackup::metrics::Metrics::new();
    let request = || rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, d.id, None);
    let run_of = |job: String| {
        let fleet = &fleet;
        async move {
            rosbackup::manual::wait(fleet.store(), &job, Duration::from_secs(30))
                .await
                .expect("store")
                .expect("a run")
        }
    };
    let done = |job: String| {
        let fleet = &fleet;
        async move {
            fleet
                .wait_for(
                    Duration::from_secs(10),
                    "the job is done in Redis",
                    || async {
                        fleet
                            .queue
                            .job_states(std::slice::from_ref(&job))
                            .await
                            .ok()
                            == Some(vec![rosbackup::queue::JobState::Done])
                    },
                )
                .await
        }
    };

    let first = request().await.expect("request");
    let failed = run_of(first.job_id.clone()).await;
    assert_eq!(
        (failed.status.as_str(), failed.error_kind.as_deref()),
        ("failed", Some("auth_failed"))
    );
    done(first.job_id.clone()).await;
    // Unchanged: a retry joins the failure (a burst of retries is one backup).
    let retry = request().await.expect("request");
    assert_eq!(
        (retry.job_id.as_str(), retry.joined),
        (first.job_id.as_str(), Some(Joined::Recent))
    );

    // The operator fixes the password: the next request is a new backup, and succeeds.
    fleet
        .store()
        .set_credentials(&fleet.key, d.id, None, &real)
        .await
        .expect("set credentials");
    let fixed = request().await.expect("request");
    assert_eq!(fixed.joined, None, "joined the failure the change fixed");
    assert_ne!(fixed.job_id, first.job_id);
    let ok = run_of(fixed.job_id.clone()).await;
    assert_eq!(ok.status, "success", "{ok:?}");
    done(fixed.job_id.clone()).await;

    // Through a profile: the device moves to one with a wrong password (its own cleared),
    // fails, the profile is fixed, and the next request is a new, successful backup.
    let profile = fleet
        .store()
        .create_profile(
            &fleet.key,
            &rosbackup::profiles::NewProfile {
                tenant_id: d.tenant_id,
                name: "shared".into(),
                username: d.username.clone(),
                password: Some(wrong.clone()),
                ssh_key: None,
            },
        )
        .await
        .expect("profile")
        .id;
    fleet
        .store()
        .set_device_profile(d.id, Some(profile))
        .await
        .expect("assign the profile");
    fleet
        .store()
        .set_credentials(
            &fleet.key,
            d.id,
            None,
            &rosbackup::Secret::new(String::new()),
        )
        .await
        .expect("clear the device's own password");
    let via_profile = request().await.expect("request");
    assert_eq!(
        via_profile.joined, None,
        "the device changed since {}",
        fixed.job_id
    );
    let failed = run_of(via_profile.job_id.clone()).await;
    assert_eq!(
        failed.error_kind.as_deref(),
        Some("auth_failed"),
        "{failed:?}"
    );
    done(via_profile.job_id.clone()).await;
    assert_eq!(
        request().await.expect("request").joined,
        Some(Joined::Recent)
    );
    fleet
        .store()
        .update_profile(
            &fleet.key,
            profile,
            None,
            Some(&real),
            rosbackup::store::KeyChange::Keep,
        )
        .await
        .expect("fix the profile");
    let after_profile = request().await.expect("request");
    assert_eq!(
        after_profile.joined, None,
        "joined the failure the profile change fixed"
    );
    let ok = run_of(after_profile.job_id.clone()).await;
    assert_eq!(ok.status, "success", "{ok:?}");
    done(after_profile.job_id.clone()).await;
    // A change of the profile changes a device that is not blocked, too.
    assert_eq!(
        request().await.expect("request").joined,
        Some(Joined::Recent)
    );
    fleet
        .store()
        .update_profile(
            &fleet.key,
            profile,
            Some("backup"),
            None,
            rosbackup::store::KeyChange::Keep,
        )
        .await
        .expect("rename the profile's user");
    let renamed = request().await.expect("request");
    assert_eq!(
        renamed.joined, None,
        "joined a backup made with the old user"
    );
    let failed = run_of(renamed.job_id.clone()).await;
    assert_eq!(
        failed.error_kind.as_deref(),
        Some("auth_failed"),
        "{failed:?}"
    );
    assert_eq!(fleet.sim.stats()[&d.id].sessions, 5);
    let _ = stop_w.send(());
    w.await.expect("join").expect("worker");
    fleet.cleanup().await;
}
