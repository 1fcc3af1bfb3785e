//! Fail fast and name the real cause (issue #21): a process started with a credential key
//! that is not the fleet's stops at once with exit 2 naming `CREDENTIAL_ENCRYPTION_KEY`;
//! a password that does not open is `credentials_unreadable` (a block, never `unknown`);
//! `rosbackup enqueue --wait` with no worker says so at once instead of waiting silently.

use crate::common::fleet::Fleet;
use rosbackup::config::Env;
use rosbackup::credentials::{CredentialError, CredentialKey};
use rosbackup::store::{KeyCheck, StoreError};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Run the CLI with the fleet's environment (and `extra` on top) to its end, at most
/// `limit`; a process still running then is killed and the test fails.
fn run_cli(fleet: &Fleet, args: &[&str], extra: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
    cmd.args(args)
        .envs(fleet.process_env())
        .envs(extra.iter().copied())
        .env("CONFIG_BACKUP_MAX_CONCURRENT", "2");
    crate::common::output_within(cmd, limit)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rosbackup worker` with another key than the one that sealed the passwords exits 2 at
/// start, naming the variable and never showing either key; with the right key it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_wrong_key_exits_2_naming_the_variable() {
    let fleet = Fleet::of(2).await;
    fleet.import(None).await;
    let wrong = CredentialKey::generate_base64();
    let out = run_cli(
        &fleet,
        &["worker"],
        &[("CREDENTIAL_ENCRYPTION_KEY", &wrong)],
        Duration::from_secs(30),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("CREDENTIAL_ENCRYPTION_KEY"), "{stderr}");
    assert!(stderr.contains("not the key"), "{stderr}");
    assert!(
        !stderr.contains(&wrong) && !stderr.contains(&fleet.key_b64),
        "{stderr}"
    );

    // The in-process wiring says the same (the enqueuer with a key too).
    let env_with = |key: &str| {
        let mut pairs = fleet.process_env();
        pairs.retain(|(k, _)| k != "CREDENTIAL_ENCRYPTION_KEY");
        pairs.push(("CREDENTIAL_ENCRYPTION_KEY".into(), key.to_string()));
        pairs
    };
    let pairs = env_with(&wrong);
    let env = Env::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let e = rosbackup::service::worker_from_env(&env)
        .await
        .expect_err("wrong key refused");
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("CREDENTIAL_ENCRYPTION_KEY"), "{e}");
    let e = rosbackup::service::enqueuer_from_env(&env, rosbackup::service::Flags::default())
        .await
        .expect_err("wrong key refused");
    assert_eq!(e.exit_code(), 2, "{e}");

    // The right key starts (the check value was stored by the first check with it).
    let pairs = env_with(&fleet.key_b64);
    let env = Env::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    rosbackup::service::worker_from_env(&env)
        .await
        .expect("the fleet's key starts a worker");
    fleet.cleanup().await;
}

/// The first key used on an empty fleet is recorded; another key is refused afterwards,
/// also by the CLI commands that seal passwords. `rotate-key` keeps the check value in
/// step: afterwards the new key passes and the old one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_check_value_is_recorded_once_and_follows_a_rotation() {
    let fleet = Fleet::of(1).await;
    let store = fleet.store();
    assert_eq!(
        store.check_credential_key(&fleet.key).await.unwrap(),
        KeyCheck::Recorded
    );
    assert_eq!(
        store.check_credential_key(&fleet.key).await.unwrap(),
        KeyCheck::Matches
    );
    let other = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
    assert!(matches!(
        store.check_credential_key(&other).await,
        Err(StoreError::Credentials(CredentialError::WrongKey))
    ));

    // `devices add` with another key: exit 2, nothing sealed under it.
    let wrong = CredentialKey::generate_base64();
    let out = run_cli(
        &fleet,
        &[
            "devices",
            "add",
            "--name",
            "r1",
            "--host",
            "127.0.0.1",
            "--username",
            "admin",
        ],
        &[
            ("CREDENTIAL_ENCRYPTION_KEY", &wrong),
            ("ROSBACKUP_PASSWORD", "pw-never-shown"),
        ],
        Duration::from_secs(30),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("CREDENTIAL_ENCRYPTION_KEY"), "{stderr}");
    assert!(
        store
            .list_devices(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Rotation with the CLI: the old key is refused afterwards, the new one passes.
    fleet.import(None).await;
    let new_b64 = CredentialKey::generate_base64();
    let out = run_cli(
        &fleet,
        &["devices", "rotate-key"],
        &[("NEW_CREDENTIAL_ENCRYPTION_KEY", &new_b64)],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let new = CredentialKey::from_base64(&new_b64).unwrap();
    assert_eq!(
        store.check_credential_key(&new).await.unwrap(),
        KeyCheck::Matches
    );
    assert!(store.check_credential_key(&fleet.key).await.is_err());
    // A rotation from a key that is no longer the fleet's: exit 2, nothing changed.
    let out = run_cli(
        &fleet,
        &["devices", "rotate-key"],
        &[("NEW_CREDENTIAL_ENCRYPTION_KEY", &wrong)],
        Duration::from_secs(30),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    assert_eq!(
        store.check_credential_key(&new).await.unwrap(),
        KeyCheck::Matches
    );
    fleet.cleanup().await;
}

/// A job whose stored password does not open with the worker's key ends as
/// `credentials_unreadable` with its hint, blocks the device (no retry against a key that
/// cannot change by itself), and never contacts the device. A worker with a key that
/// opens it lifts the block; so does setting the password again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_password_is_credentials_unreadable_not_unknown() {
    let fleet = Fleet::of(1).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    // A worker still running with another key (as after a rotation, before its restart).
    let stale = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
    let mut env = (*fleet.job_env()).clone();
    env.key = stale.clone();
    let (stop, handle) = spawn_worker_with(env, "stale-key");
    let metrics = rosbackup::metrics::Metrics::new();
    let job = rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, d.id, None)
        .await
        .expect("queued");
    let run = rosbackup::manual::wait(fleet.store(), &job.job_id, Duration::from_secs(30))
        .await
        .expect("store")
        .expect("a run within 30 s");
    assert_eq!(run.status, "failed");
    assert_eq!(
        run.error_kind.as_deref(),
        Some("credentials_unreadable"),
        "{run:?}"
    );
    let message = run.error_message.clone().unwrap_or_default();
    assert!(message.contains("CREDENTIAL_ENCRYPTION_KEY"), "{message}");
    assert!(!message.contains(d.password.expose()), "{message}");
    let row = fleet.store().device(d.id).await.unwrap().unwrap();
    assert_eq!(
        row.blocked_reason.as_deref(),
        Some("credentials_unreadable")
    );
    assert_eq!(
        row.last_error_kind.as_deref(),
        Some("credentials_unreadable")
    );
    let _ = stop.send(());
    let _ = handle.await;

    // The fleet's key opens it: a worker starting with it lifts the block.
    assert_eq!(
        fleet.store().lift_readable_blocks(&stale).await.unwrap(),
        0,
        "the stale key lifts nothing"
    );
    assert_eq!(
        fleet
            .store()
            .lift_readable_blocks(&fleet.key)
            .await
            .unwrap(),
        1
    );
    let row = fleet.store().device(d.id).await.unwrap().unwrap();
    assert_eq!(row.blocked_reason, None);

    // A row sealed under another key (altered): set-credentials lifts its block.
    sqlx::query(
        "UPDATE devices SET password_enc = $2, blocked_reason = 'credentials_unreadable' WHERE id = $1",
    )
    .bind(d.id)
    .bind(stale.seal(&d.id, &d.password))
    .execute(fleet.store().pool())
    .await
    .unwrap();
    fleet
        .store()
        .set_credentials(&fleet.key, d.id, None, &d.password)
        .await
        .unwrap();
    let row = fleet.store().device(d.id).await.unwrap().unwrap();
    assert_eq!(row.blocked_reason, None);
    fleet.cleanup().await;
}

/// An in-process worker over `env`, stopped by the returned sender.
fn spawn_worker_with(
    env: rosbackup::worker::JobEnv,
    name: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), rosbackup::worker::WorkerExit>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let settings = rosbackup::worker::WorkerSettings {
        name: name.to_string(),
        concurrency: 2,
        shutdown_grace: Duration::from_secs(5),
    };
    let handle = tokio::spawn(rosbackup::worker::run(
        std::sync::Arc::new(env),
        settings,
        rosbackup::worker::Liveness::default(),
        async move {
            let _ = rx.await;
        },
    ));
    (tx, handle)
}

/// `rosbackup enqueue --wait` with no worker on the queue says so within seconds, still
/// queues the job and exits 3 with its id; with a live worker it waits for the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueue_wait_without_a_worker_says_so_promptly() {
    let fleet = Fleet::of(1).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    let id = d.id.to_string();
    let started = Instant::now();
    let out = run_cli(
        &fleet,
        &["enqueue", &id, "--wait"],
        &[],
        Duration::from_secs(20),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(15), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("no worker is registered on queue"),
        "{stderr}"
    );
    assert!(stdout.contains("queued manual:"), "{stdout}");
    let job_id = stdout
        .split_whitespace()
        .nth(1)
        .expect("the job id")
        .to_string();
    assert!(stderr.contains(&job_id), "{stderr}");
    // Queued all the same: a worker that starts now runs it.
    let (stop, handle, _env) = fleet.spawn_worker("late", 2);
    let run = rosbackup::manual::wait(fleet.store(), &job_id, Duration::from_secs(30))
        .await
        .expect("store")
        .expect("the queued job ran once a worker started");
    assert_eq!(run.status, "success", "{run:?}");

    // With a live worker: the wait ends with the result (exit 0).
    fleet
        .wait_for(
            Duration::from_secs(10),
            "the worker's heartbeat",
            || async {
                fleet
                    .queue
                    .workers()
                    .await
                    .is_ok_and(|w| w.iter().any(|w| w.alive))
            },
        )
        .await;
    // LOG_LEVEL unset (the fleet's environment sets it for its services).
    let out = run_cli(
        &fleet,
        &["enqueue", &id, "--wait"],
        &[("LOG_LEVEL", "")],
        Duration::from_secs(60),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("success"), "{stdout}");
    assert!(!stderr.contains("no worker"), "{stderr}");
    // A one-shot command's stderr carries no log lines at the default level: its own
    // lines say what happened ("manual backup queued" was logged on every call).
    assert!(
        !stderr.contains("INFO") && !stderr.contains("\"level\""),
        "{stderr}"
    );
    let _ = stop.send(());
    let _ = handle.await;
    // Stopped cleanly, the worker deregistered: the answer says none is registered now
    // (it said "ever" before, which was false).
    let out = run_cli(
        &fleet,
        &["enqueue", &id, "--wait"],
        &[],
        Duration::from_secs(20),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no worker is registered on queue") && stderr.contains("stopped"),
        "{stderr}"
    );
    fleet.cleanup().await;
}

/// A listen address that is taken (a second worker on a host with the default metrics
/// port) stops the process with exit 2 naming the variable and what to do, not exit 1 with
/// a bare OS error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_address_exits_2_naming_the_variable() {
    let fleet = Fleet::of(1).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("bound").to_string();
    for (role, var) in [
        ("worker", "ROSBACKUP_METRICS_ADDR"),
        ("enqueuer", "ROSBACKUP_HTTP_ADDR"),
    ] {
        let out = run_cli(
            &fleet,
            &[role, "--insecure-no-auth"][..if role == "enqueuer" { 2 } else { 1 }],
            &[(var, &addr)],
            Duration::from_secs(30),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{role}: {stderr}");
        assert!(stderr.contains(&format!("{var}=\"{addr}\"")), "{stderr}");
        assert!(stderr.contains("another process listens there"), "{stderr}");
    }
    drop(taken);
    fleet.cleanup().await;
}

/// The NATS trigger with no worker on the queue answers at once that none is there (the
/// backup stays queued), instead of after its whole timeout as a `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_trigger_without_a_worker_says_so_at_once() {
    let fleet = Fleet::of(1).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let d = &devices[0];
    let payload = format!(
        r#"{{"device_id":"{}","tenant_id":"{}"}}"#,
        d.id, d.tenant_id
    );
    let asked = Instant::now();
    let reply = rosbackup::manual::answer(
        fleet.store(),
        &fleet.queue,
        &rosbackup::metrics::Metrics::new(),
        payload.as_bytes(),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "waited for nothing"
    );
    assert_eq!(reply.status, "failed", "{reply:?}");
    assert_eq!(reply.error_kind, "unavailable", "{reply:?}");
    assert!(
        reply.error.contains("no worker is registered") && reply.error.contains("stays queued"),
        "{reply:?}"
    );
    fleet.cleanup().await;
}
