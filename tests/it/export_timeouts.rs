//! Per-device, per-profile and adaptive export timeouts (issue #18, "Big configs on slow
//! routers"), against the simulator's slow exports: every device waits 2.5 s before its
//! export starts, the fleet timeout is 1 s. Jobs are driven one at a time through the
//! worker's real `execute` (PostgreSQL, Redis, NATS, SSH), so each run sees the history
//! the previous one wrote.

use crate::common::fleet::{Fleet, FleetOptions, redis_url};
use rosbackup::Secret;
use rosbackup::export_timeout::{self, TimeoutSource};
use rosbackup::profiles::NewProfile;
use rosbackup::queue::BackupJob;
use rosbackup::sim::SimConfig;
use rosbackup::store::{NewDevice, Run, RunStatus};
use rosbackup::worker::JobEnv;
use std::time::Duration;

const USER: &str = "backup";
const SHARED_PW: &str = "Shared-Slow-Pw-4711";

/// Slow routers: 2.5 s before any output, a 1 s fleet timeout, an 8 s ceiling.
async fn slow_fleet() -> (Fleet, JobEnv) {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 3,
            export_delay: Duration::from_millis(2500),
            shared_login: Some((USER.into(), SHARED_PW.into())),
            ..FleetOptions::default().sim
        },
        command_timeout: Duration::from_secs(1),
        ..FleetOptions::default()
    })
    .await;
    let mut env = (*fleet.job_env()).clone();
    env.backup.export_timeout_max = Duration::from_secs(8);
    (fleet, env)
}

async fn run(env: &JobEnv, d: &NewDevice) -> rosbackup::worker::JobReport {
    rosbackup::worker::execute(env, &BackupJob::manual(d.id, d.tenant_id), "timeouts")
        .await
        .expect("execute")
}

/// The device's runs, oldest first, as (status, error kind, timeout, source, timed out).
async fn history(fleet: &Fleet, d: &NewDevice) -> Vec<(String, Option<String>, i32, String, bool)> {
    let mut runs: Vec<Run> = fleet.store().runs(d.id, 20).await.expect("runs");
    runs.reverse();
    runs.into_iter()
        .map(|r| {
            (
                r.status,
                r.error_kind,
                r.timeout_seconds
                    .expect("a run that reached the device records its timeout"),
                r.timeout_source.expect("and its source"),
                r.timed_out,
            )
        })
        .collect()
}

fn row(
    status: &str,
    kind: Option<&str>,
    secs: i32,
    source: &str,
    timed_out: bool,
) -> (String, Option<String>, i32, String, bool) {
    (
        status.into(),
        kind.map(str::to_string),
        secs,
        source.into(),
        timed_out,
    )
}

/// A device override lets a slow router succeed where the fleet timeout fails it, and the
/// Go poller's lock is held for the device's timeout + 30 s; a credential profile's
/// override does the same for its devices; without an override the first run times out,
/// the next timeouts double, and the run that fits succeeds — after which the device's
/// timeout follows its export's duration. The run history records each timeout and its
/// source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overrides_and_the_adaptive_timeout_get_a_slow_router_backed_up() {
    let (fleet, env) = slow_fleet().await;
    let tenant = fleet.sim.devices()[0].tenant_id;
    let profile = fleet
        .store()
        .create_profile(
            &fleet.key,
            &NewProfile {
                tenant_id: tenant,
                name: "slow-routers".into(),
                username: USER.into(),
                password: Some(Secret::new(SHARED_PW)),
                ssh_key: None,
            },
        )
        .await
        .expect("profile");
    let devices: Vec<NewDevice> = fleet
        .sim
        .devices()
        .iter()
        .enumerate()
        .map(|(i, d)| NewDevice {
            tenant_id: tenant,
            username: USER.into(),
            // Device 1 logs in with the profile's credentials (and takes its timeout).
            password: if i == 1 {
                Secret::default()
            } else {
                Secret::new(SHARED_PW)
            },
            credential_profile: (i == 1).then(|| "slow-routers".to_string()),
            ..d.new_device()
        })
        .collect();
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, chrono::Utc::now)
        .await
        .expect("import");
    fleet.postpone_all().await;
    let (own, on_profile, adaptive) = (&devices[0], &devices[1], &devices[2]);

    // The device's own override: 20 s. The Go poller's lock follows it (50 s, where the
    // fleet timeout would give 31 s).
    fleet
        .store()
        .set_export_timeout(own.id, Some(20))
        .await
        .expect("override");
    let mut conn = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("backup:device:{}", own.id);
    let running = tokio::spawn({
        let (env, d) = (env.clone(), own.clone());
        async move { run(&env, &d).await }
    });
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-2));
    fleet
        .wait_for(
            Duration::from_secs(20),
            "our lock during the export",
            || {
                let (key, mut conn, seen) = (key.clone(), conn.clone(), seen.clone());
                async move {
                    let pttl: i64 = redis::cmd("PTTL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("PTTL");
                    seen.store(pttl, std::sync::atomic::Ordering::SeqCst);
                    pttl > 0
                }
            },
        )
        .await;
    let pttl = seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        pttl > 40_000 && pttl <= 50_000,
        "the lock's TTL is the device's timeout + 30 s: PTTL {pttl} ms"
    );
    let report = running.await.expect("join");
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0, "released after the run");

    // The profile's override: 10 s for every device using it.
    assert!(
        fleet
            .store()
            .set_profile_export_timeout(profile.id, Some(10))
            .await
            .expect("profile override")
    );
    let report = run(&env, on_profile).await;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    // The device's own override still wins over its profile's.
    fleet
        .store()
        .set_export_timeout(on_profile.id, Some(9))
        .await
        .expect("override");
    let report = run(&env, on_profile).await;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");

    // No override: 1 s (fleet) times out, 2 s (adaptive, doubled) times out, 4 s fits.
    let mut reports = vec![];
    for _ in 0..3 {
        reports.push(run(&env, adaptive).await.status);
    }
    assert_eq!(
        reports,
        [RunStatus::Failed, RunStatus::Failed, RunStatus::Success]
    );

    assert_eq!(
        history(&fleet, own).await,
        [row("success", None, 20, "device", false)]
    );
    assert_eq!(
        history(&fleet, on_profile).await,
        [
            row("success", None, 10, "profile", false),
            row("success", None, 9, "device", false),
        ]
    );
    assert_eq!(
        history(&fleet, adaptive).await,
        [
            row("failed", Some("timeout"), 1, "fleet", true),
            row("failed", Some("timeout"), 2, "adaptive", true),
            row("success", None, 4, "adaptive", false),
        ]
    );
    let last = &fleet.store().runs(adaptive.id, 1).await.expect("runs")[0];
    let took = last
        .export_ms
        .expect("a success records its export's duration");
    assert!(
        (2_500..4_000).contains(&took),
        "the export waited 2.5 s and fit in 4 s: {took} ms"
    );

    // From now on its timeout follows that duration: 2 × the export, rounded up, which
    // is what `devices show` and the API report too.
    let next = export_timeout::effective(
        &env.backup.timeouts(),
        &fleet
            .store()
            .timeout_inputs(adaptive.id)
            .await
            .expect("inputs"),
    );
    assert_eq!(next.source, TimeoutSource::Adaptive);
    assert_eq!(
        i64::from(next.seconds),
        (2 * took + 999) / 1000,
        "2 × {took} ms"
    );
    let report = run(&env, adaptive).await;
    assert_eq!(report.status, RunStatus::Success, "{report:?}");

    // Removing the device's override brings its profile's back.
    fleet
        .store()
        .set_export_timeout(on_profile.id, None)
        .await
        .expect("clear");
    let inputs = fleet
        .store()
        .timeout_inputs(on_profile.id)
        .await
        .expect("inputs");
    assert_eq!(
        export_timeout::effective(&env.backup.timeouts(), &inputs).source,
        TimeoutSource::Profile
    );

    let by_source = |s: &str| env.metrics.export_timeouts.with_label_values(&[s]).get();
    assert_eq!(
        (
            by_source("device"),
            by_source("profile"),
            by_source("adaptive"),
            by_source("fleet")
        ),
        (2, 1, 3, 1)
    );
    fleet.cleanup().await;
}

/// The ceiling holds: a router slower than `ROSBACKUP_EXPORT_TIMEOUT_MAX` keeps timing out
/// at the ceiling instead of holding a worker ever longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_timeout_stops_at_its_ceiling() {
    let (fleet, mut env) = slow_fleet().await;
    env.backup.export_timeout_max = Duration::from_secs(2);
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    // The export really ran under each timeout: its error says which one expired.
    for applied in ["1.0s", "2.0s", "2.0s"] {
        let report = run(&env, d).await;
        assert_eq!(report.error_kind.as_deref(), Some("timeout"), "{report:?}");
        let message = report.message.unwrap_or_default();
        assert!(
            message.contains(&format!("timed out after {applied}")),
            "{applied}: {message}"
        );
    }
    assert_eq!(
        history(&fleet, d).await,
        [
            row("failed", Some("timeout"), 1, "fleet", true),
            row("failed", Some("timeout"), 2, "adaptive", true),
            row("failed", Some("timeout"), 2, "adaptive", true),
        ]
    );
    fleet.cleanup().await;
}

/// The API: a device's and a profile's override are set and removed by admins only,
/// 0, negative, absurd and non-integer values are a 422 naming the field (nothing
/// changed), and a device shows the timeout its next run will have with its source.
#[tokio::test]
async fn the_api_sets_validates_and_shows_export_timeouts() {
    use crate::common::web::{Api, router, token};
    use axum::http::StatusCode;
    use rosbackup::access::Role;
    use rosbackup::web::AuthMode;
    use serde_json::json;

    let fleet = Fleet::of(1).await;
    let devices = fleet.import(None).await;
    let d = &devices[0];
    let (app, _) = router(&fleet, AuthMode::Required);
    let admin = Api::new(&app, Some(&token(&fleet, "a", Role::Admin, None).await));
    let viewer = Api::new(&app, Some(&token(&fleet, "v", Role::Viewer, None).await));
    let path = format!("/api/v1/devices/{}/export-timeout", d.id);

    // The router's fleet timeout is the product's default (60 s), ceiling 600 s.
    let r = admin.get(&format!("/api/v1/devices/{}", d.id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["export_timeout"],
        json!({"seconds": 60, "source": "fleet"})
    );
    assert_eq!(r.body["export_timeout_seconds"], json!(null));

    let r = viewer.put(&path, json!({"seconds": 300})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    for bad in [json!(0), json!(-5), json!(3601), json!(86_400_000_000i64)] {
        let r = admin.put(&path, json!({ "seconds": bad })).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert_eq!(r.body["field"], "seconds", "{}", r.text);
        assert!(
            r.body["message"].as_str().unwrap_or("").contains("second"),
            "{}",
            r.text
        );
        // JSON's word for no override is null; `auto` is the CLI's.
        assert!(!r.text.contains("auto"), "{}", r.text);
    }
    for bad in [json!(1.5), json!("300"), json!(true)] {
        let r = admin.put(&path, json!({ "seconds": bad })).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    let r = admin.put(&path, json!({"secs": 300})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let row = fleet.store().device(d.id).await.unwrap().unwrap();
    assert_eq!(row.export_timeout_seconds, None, "nothing changed");

    let r = admin.put(&path, json!({"seconds": 300})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["export_timeout_seconds"], 300);
    assert_eq!(
        r.body["export_timeout"],
        json!({"seconds": 300, "source": "device"})
    );

    // A profile's override applies to its devices unless they have their own.
    let profile = fleet
        .store()
        .create_profile(
            &fleet.key,
            &NewProfile {
                tenant_id: d.tenant_id,
                name: "big-configs".into(),
                username: USER.into(),
                password: Some(Secret::new("unused-profile-pw")),
                ssh_key: None,
            },
        )
        .await
        .expect("profile");
    sqlx::query("UPDATE devices SET credential_profile_id = $2 WHERE id = $1")
        .bind(d.id)
        .bind(profile.id)
        .execute(fleet.store().pool())
        .await
        .expect("use the profile");
    let ppath = format!("/api/v1/credential-profiles/{}/export-timeout", profile.id);
    let r = admin.put(&ppath, json!({"seconds": 0})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "seconds");
    let r = viewer.put(&ppath, json!({"seconds": 120})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin.put(&ppath, json!({"seconds": 120})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["export_timeout_seconds"], 120);
    let r = admin.put(&path, json!({"seconds": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["export_timeout_seconds"], json!(null));
    assert_eq!(
        r.body["export_timeout"],
        json!({"seconds": 120, "source": "profile"})
    );
    let r = admin.put(&ppath, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = admin.get(&format!("/api/v1/devices/{}", d.id)).await;
    assert_eq!(
        r.body["export_timeout"],
        json!({"seconds": 60, "source": "fleet"})
    );

    // A device with a timed-out run gets the doubled timeout, and its run shows it.
    sqlx::query(
        "INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, \
         finished_at, status, error_kind, duration_ms, timeout_seconds, timeout_source, timed_out) \
         VALUES ($1, $2, 'job-1', 'manual', 'w1', now(), now(), 'failed', 'timeout', 60000, 60, 'fleet', true)",
    )
    .bind(d.id)
    .bind(d.tenant_id)
    .execute(fleet.store().pool())
    .await
    .expect("run");
    let r = admin.get(&format!("/api/v1/devices/{}", d.id)).await;
    assert_eq!(
        r.body["export_timeout"],
        json!({"seconds": 120, "source": "adaptive"})
    );
    let r = admin.get(&format!("/api/v1/devices/{}/runs", d.id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body[0]["timeout_seconds"], 60, "{}", r.text);
    assert_eq!(r.body[0]["timeout_source"], "fleet");
    assert_eq!(r.body[0]["timed_out"], true);

    // A device created through the API may bring its override; a bad one is refused
    // and nothing is created.
    let create = |seconds: serde_json::Value| {
        json!({"tenant_id": d.tenant_id, "name": "big-bgp", "host": "192.0.2.9",
               "username": "backup", "password": "Api-Pw-77", "export_timeout_seconds": seconds})
    };
    let r = admin.post("/api/v1/devices", Some(create(json!(0)))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "export_timeout_seconds", "{}", r.text);
    let r = admin.post("/api/v1/devices", Some(create(json!(90)))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["export_timeout_seconds"], 90);
    assert_eq!(
        r.body["export_timeout"],
        json!({"seconds": 90, "source": "device"})
    );
    fleet.cleanup().await;
}

/// The device page shows the timeout the next run will have and its source, each run's
/// applied timeout, and its form sets and removes the device's override; a refused
/// value comes back in a banner with nothing changed.
#[tokio::test]
async fn the_device_page_shows_and_sets_the_export_timeout() {
    use crate::common::web::{call, router};
    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use rosbackup::web::AuthMode;

    let fleet = Fleet::of(1).await;
    let devices = fleet.import(None).await;
    let d = &devices[0];
    let (app, _) = router(&fleet, AuthMode::Disabled);
    let page_path = format!("/devices/{}", d.id);
    let page = call(&app, Method::GET, &page_path, &[], None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text
            .contains(r#"id="effective-timeout" data-source="fleet""#),
        "{}",
        page.text
    );
    assert!(page.text.contains("60 s"), "the fleet's 60 s");
    let csrf = page
        .text
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf meta")
        .to_string();
    let post = |seconds: &str| {
        let (app, body) = (app.clone(), format!("csrf={csrf}&seconds={seconds}"));
        let path = format!("/devices/{}/export-timeout", d.id);
        async move {
            call(
                &app,
                Method::POST,
                &path,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(Body::from(body)),
            )
            .await
        }
    };
    let r = post("0").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let back = r.location().expect("back to the page").to_string();
    assert!(back.contains("error="), "{back}");
    let page = call(&app, Method::GET, &back, &[], None).await;
    assert!(
        page.text.contains(r#"id="form-error""#) && page.text.contains("at least 1"),
        "{}",
        page.text
    );
    let row = fleet.store().device(d.id).await.unwrap().unwrap();
    assert_eq!(row.export_timeout_seconds, None, "nothing changed");

    let r = post("240").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert!(
        r.location().unwrap_or("").contains("done="),
        "{:?}",
        r.location()
    );
    let page = call(&app, Method::GET, &page_path, &[], None).await;
    assert!(
        page.text
            .contains(r#"id="effective-timeout" data-source="device""#),
        "{}",
        page.text
    );
    assert!(page.text.contains("240 s"));
    assert!(
        page.text.contains(r#"value="240""#),
        "the form shows the override"
    );

    // Empty removes it; a run's applied timeout is in the run history.
    let r = post("").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(
        fleet
            .store()
            .device(d.id)
            .await
            .unwrap()
            .unwrap()
            .export_timeout_seconds,
        None
    );
    sqlx::query(
        "INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, \
         finished_at, status, error_kind, duration_ms, timeout_seconds, timeout_source, timed_out) \
         VALUES ($1, $2, 'job-1', 'manual', 'w1', now(), now(), 'failed', 'timeout', 60000, 60, 'fleet', true)",
    )
    .bind(d.id)
    .bind(d.tenant_id)
    .execute(fleet.store().pool())
    .await
    .expect("run");
    let page = call(&app, Method::GET, &page_path, &[], None).await;
    assert!(
        page.text
            .contains(r#"id="effective-timeout" data-source="adaptive""#)
            && page.text.contains("120 s"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains(r#"class="timeout" data-source="fleet""#),
        "the run's timeout: {}",
        page.text
    );
    fleet.cleanup().await;
}

/// A router that drips its export (the simulator's `slow` fault): the timeout expires
/// mid-stream (`truncated_output`, never a partial config published), which counts as an
/// export timeout like one before any output, so the adaptive timeout grows until the
/// whole export fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_export_cut_mid_stream_grows_the_timeout_too() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 1,
            faults: "slow=1".parse().expect("fault spec"),
            config_size: Some(4_000),
            timing: rosbackup::sim::FaultTiming {
                slow_interval: Duration::from_millis(25),
                slow_lines: 1,
                ..rosbackup::sim::FaultTiming::default()
            },
            ..FleetOptions::default().sim
        },
        command_timeout: Duration::from_secs(1),
        ..FleetOptions::default()
    })
    .await;
    let mut env = (*fleet.job_env()).clone();
    env.backup.export_timeout_max = Duration::from_secs(16);
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    let first = run(&env, d).await;
    assert_eq!(
        first.error_kind.as_deref(),
        Some("truncated_output"),
        "cut mid-stream at 1 s: {first:?}"
    );
    let mut tries = 1;
    while run(&env, d).await.status != RunStatus::Success {
        tries += 1;
        assert!(tries < 5, "the timeout grows to 16 s at most");
    }
    let runs = history(&fleet, d).await;
    let (success, failures) = runs.split_last().expect("runs");
    assert!(
        failures
            .iter()
            .all(|(status, kind, _, _, timed_out)| status == "failed"
                && kind.as_deref() == Some("truncated_output")
                && *timed_out),
        "{runs:?}"
    );
    assert_eq!(success.0, "success");
    assert_eq!(success.3, "adaptive", "{runs:?}");
    let applied: Vec<i32> = runs.iter().map(|r| r.2).collect();
    let doubling: Vec<i32> = (0..runs.len()).map(|i| 1 << i).collect();
    assert_eq!(applied, doubling, "1 s, then doubled after each cut");
    assert_eq!(
        fleet.audit_stream().await.count(d.id),
        1,
        "only the whole export was published"
    );
    fleet.cleanup().await;
}
