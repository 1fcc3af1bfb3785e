//! NATS authentication beyond a password (#17): `NATS_NKEY_FILE` (an nkey user) and
//! `NATS_CREDS_FILE` (operator/JWT mode), against private `nats-server`s that require
//! them; a connection without them is refused; and the permissions the README documents
//! let only the backend publish the trigger subject and only the enqueuer subscribe to it.

use crate::common::fleet::{Fleet, FleetOptions};
use base64::Engine;
use futures::StreamExt;
use rosbackup::config::Env;
use rosbackup::manual::TriggerReply;
use rosbackup::nats_auth::{NatsAuth, options};
use rosbackup::sim::SimConfig;
use rosbackup::tls::TlsFiles;
use rosbackup_harness::services;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// A private nats-server (JetStream on) with `config` on a free loopback port.
async fn server(dir: &Path, config: &str) -> (services::Service, String) {
    let conf = write(dir, "nats.conf", config);
    let port = services::free_port().expect("port");
    let svc = services::nats_at_with(
        "nats://127.0.0.1:1",
        port,
        dir,
        &["-c".into(), conf.display().to_string()],
    )
    .await
    .expect("private nats-server starts");
    (svc, format!("nats://127.0.0.1:{port}"))
}

/// An nkey user's seed in a file, as `NATS_NKEY_FILE` reads it; (public key, path).
fn nkey_user(dir: &Path, name: &str) -> (String, PathBuf) {
    let kp = nkeys::KeyPair::new_user();
    let p = write(dir, name, &format!("{}\n", kp.seed().expect("seed")));
    (kp.public_key(), p)
}

fn auth_from(var: &str, path: &Path) -> NatsAuth {
    rosbackup::config::nats_auth(&Env::from_pairs([(var, path.to_str().expect("utf-8"))]))
        .expect("the file loads")
}

async fn connect(
    url: &str,
    auth: &NatsAuth,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    options(&TlsFiles::default(), auth)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

/// The seed user connects with `NATS_NKEY_FILE` (and the snapshot publisher, configured
/// from the environment, sets up its JetStream stream through it); without the seed, or
/// with another user's seed, the server refuses the connection.
#[tokio::test]
async fn an_nkey_user_connects_and_nobody_else_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (user, seed_file) = nkey_user(dir.path(), "user.nk");
    let (mut svc, url) = server(
        dir.path(),
        &format!("authorization {{ users = [ {{ nkey: \"{user}\" }} ] }}\n"),
    )
    .await;

    let env = Env::from_pairs([
        ("NATS_URL", url.as_str()),
        ("NATS_NKEY_FILE", seed_file.to_str().expect("utf-8")),
        // A private server on this machine's disk: a stream sized for a test, not the
        // default 10 GiB JetStream would have to reserve.
        ("ROSBACKUP_NATS_STREAM_MAX_BYTES", "67108864"),
    ]);
    let cfg = rosbackup::config::publisher_config(&env).expect("config");
    rosbackup::snapshot::Publisher::connect(cfg)
        .await
        .expect("the publisher connects with the nkey and sets up its stream");
    let client = connect(&url, &auth_from("NATS_NKEY_FILE", &seed_file))
        .await
        .expect("nkey user connects");
    client.flush().await.expect("flush");

    // Without the seed: refused.
    let cfg = rosbackup::config::publisher_config(&Env::from_pairs([("NATS_URL", url.as_str())]))
        .expect("config");
    let e = rosbackup::snapshot::Publisher::connect(cfg)
        .await
        .expect_err("no nkey, no connection");
    assert!(e.to_string().contains("cannot connect to NATS"), "{e}");
    let e = connect(&url, &NatsAuth::none()).await.expect_err("refused");
    assert_eq!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{e}"
    );
    // Another user's seed: refused.
    let (_, stranger) = nkey_user(dir.path(), "stranger.nk");
    let e = connect(&url, &auth_from("NATS_NKEY_FILE", &stranger))
        .await
        .expect_err("unknown nkey refused");
    assert_eq!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );
    svc.stop(Duration::from_secs(5)).await;
}

/// The README's permissions: the backend may publish the trigger subject (and receive
/// replies), the enqueuer may subscribe to it (and publish replies), a worker may
/// publish snapshots but not trigger backups. The enqueuer's trigger answers the
/// backend over nkey-authenticated connections; the worker's trigger publish is refused
/// by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_backend_publishes_the_trigger_and_only_the_enqueuer_subscribes() {
    let fleet = Fleet::of(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, backend_seed) = nkey_user(dir.path(), "backend.nk");
    let (enqueuer, enqueuer_seed) = nkey_user(dir.path(), "enqueuer.nk");
    let (worker, worker_seed) = nkey_user(dir.path(), "worker.nk");
    let trig = "config.backup.trigger";
    let (mut svc, url) = server(
        dir.path(),
        &format!(
            "authorization {{ users = [\n\
             {{ nkey: \"{backend}\", permissions: {{ publish: {{ allow: [\"{trig}\"] }}, subscribe: {{ allow: [\"_INBOX.>\"] }} }} }},\n\
             {{ nkey: \"{enqueuer}\", permissions: {{ subscribe: {{ allow: [\"{trig}\"] }}, publish: {{ allow: [\"_INBOX.>\"] }} }} }},\n\
             {{ nkey: \"{worker}\", permissions: {{ publish: {{ allow: [\"config.snapshot.>\", \"$JS.API.>\"], deny: [\"{trig}\"] }}, subscribe: {{ allow: [\"_INBOX.>\"] }} }} }}\n\
             ] }}\n"
        ),
    )
    .await;
    let enq = connect(&url, &auth_from("NATS_NKEY_FILE", &enqueuer_seed))
        .await
        .expect("enqueuer connects");
    let trigger = tokio::spawn(rosbackup::manual::serve_trigger(
        enq,
        trig.to_string(),
        fleet.store().clone(),
        fleet.queue.clone(),
        Duration::from_secs(10),
        rosbackup::metrics::Metrics::new(),
    ));
    let back = connect(&url, &auth_from("NATS_NKEY_FILE", &backend_seed))
        .await
        .expect("backend connects");
    // The backend's request is answered (an unknown device: `not_found`).
    fleet
        .wait_for(
            Duration::from_secs(10),
            "the trigger answers the backend",
            || async {
                let body = format!(r#"{{"device_id":"{}"}}"#, Uuid::new_v4());
                match tokio::time::timeout(Duration::from_secs(2), back.request(trig, body.into()))
                    .await
                {
                    Ok(Ok(m)) => serde_json::from_slice::<TriggerReply>(&m.payload)
                        .is_ok_and(|r| r.error_kind == "not_found"),
                    _ => false,
                }
            },
        )
        .await;

    // The worker's publish on the trigger subject is refused by the server, and so is a
    // backend subscription to it.
    for (seed, what) in [(&worker_seed, "publish"), (&backend_seed, "subscription")] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let client = options(&TlsFiles::default(), &auth_from("NATS_NKEY_FILE", seed))
            .event_callback(move |e| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(e);
                }
            })
            .connect(&url)
            .await
            .expect("connects");
        let _sub;
        if what == "publish" {
            client
                .publish(trig, r#"{"device_id":"x"}"#.into())
                .await
                .expect("sent");
        } else {
            _sub = client.subscribe(trig).await.expect("sent");
        }
        client.flush().await.expect("flush");
        let violation = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = rx.recv().await {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(m)) = &e
                    && m.to_ascii_lowercase().contains("permissions violation")
                {
                    return m.clone();
                }
            }
            String::new()
        })
        .await
        .unwrap_or_else(|_| panic!("no permissions violation for the {what}"));
        assert!(violation.contains(trig), "{what}: {violation}");
    }
    trigger.abort();
    svc.stop(Duration::from_secs(5)).await;
    fleet.cleanup().await;
}

/// A JWT signed by `issuer`: header.claims.signature, each base64url without padding,
/// the signature ed25519 over "header.claims" (what nats-server's jwt library checks).
fn jwt(issuer: &nkeys::KeyPair, claims: serde_json::Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let sig = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64(&sig))
}

fn claims(name: &str, iss: &str, sub: &str, nats: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "jti": Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": iss,
        "name": name,
        "sub": sub,
        "nats": nats,
    })
}

fn creds_file(dir: &Path, name: &str, user_jwt: &str, user: &nkeys::KeyPair) -> PathBuf {
    write(
        dir,
        name,
        &format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        ),
    )
}

/// Operator/JWT mode with a memory resolver: the operator signs the account, the account
/// signs the user; `NATS_CREDS_FILE` (user JWT + seed) connects and exchanges messages.
/// Without credentials, or with a user signed by an account the server does not know,
/// the connection is refused.
#[tokio::test]
async fn a_creds_file_connects_in_operator_mode_and_nothing_else_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let (op, acc, sys, usr) = (
        operator.public_key(),
        account.public_key(),
        system.public_key(),
        user.public_key(),
    );
    let operator_jwt = jwt(
        &operator,
        claims(
            "op",
            &op,
            &op,
            serde_json::json!({"type": "operator", "version": 2, "system_account": sys}),
        ),
    );
    let account_claims = serde_json::json!({
        "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                   "wildcards": true, "conn": -1, "leaf": -1},
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account", "version": 2,
    });
    let account_jwt = jwt(&operator, claims("acc", &op, &acc, account_claims.clone()));
    let system_jwt = jwt(&operator, claims("SYS", &op, &sys, account_claims));
    let user_claims = serde_json::json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2,
    });
    let user_jwt = jwt(&account, claims("u", &acc, &usr, user_claims.clone()));
    let (mut svc, url) = server(
        dir.path(),
        &format!(
            "operator: \"{operator_jwt}\"\n\
             system_account: \"{sys}\"\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  \"{acc}\": \"{account_jwt}\"\n  \"{sys}\": \"{system_jwt}\"\n}}\n"
        ),
    )
    .await;

    let creds = creds_file(dir.path(), "user.creds", &user_jwt, &user);
    let client = connect(&url, &auth_from("NATS_CREDS_FILE", &creds))
        .await
        .expect("the creds file's user connects");
    let mut sub = client.subscribe("rbtest.jwt").await.expect("subscribe");
    client
        .publish("rbtest.jwt", "hello".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let msg = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut sub))
        .await
        .expect("message in time")
        .expect("message");
    assert_eq!(&msg.payload[..], b"hello");

    // Without credentials: refused.
    let e = connect(&url, &NatsAuth::none()).await.expect_err("refused");
    assert_eq!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{e}"
    );
    // A user signed by an account the operator never signed: refused.
    let rogue_account = nkeys::KeyPair::new_account();
    let rogue = nkeys::KeyPair::new_user();
    let rogue_jwt = jwt(
        &rogue_account,
        claims(
            "rogue",
            &rogue_account.public_key(),
            &rogue.public_key(),
            user_claims,
        ),
    );
    let rogue_creds = creds_file(dir.path(), "rogue.creds", &rogue_jwt, &rogue);
    let e = connect(&url, &auth_from("NATS_CREDS_FILE", &rogue_creds))
        .await
        .expect_err("rogue user refused");
    assert_eq!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{e}"
    );
    svc.stop(Duration::from_secs(5)).await;
}

/// A bad `NATS_CREDS_FILE` / `NATS_NKEY_FILE` stops every NATS-connecting process at
/// startup with exit 2 and one line naming the variable, never the file's content.
#[test]
fn a_bad_auth_file_is_a_configuration_error_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "SUASECRETLOOKINGGARBAGESECRETLOOKINGGARBAGESECRETLOOKING";
    let garbage = write(dir.path(), "garbage", secret);
    let missing = dir.path().join("missing.creds");
    for (var, path) in [("NATS_NKEY_FILE", &garbage), ("NATS_CREDS_FILE", &missing)] {
        for role in ["worker", "enqueuer", "archiver"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
                .arg(role)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("NATS_URL", "nats://127.0.0.1:1")
                .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
                .env("REDIS_URL", "redis://127.0.0.1:1/0")
                .env(
                    "CREDENTIAL_ENCRYPTION_KEY",
                    rosbackup::credentials::CredentialKey::generate_base64(),
                )
                .env(
                    "ARCHIVE_ENCRYPTION_KEY",
                    rosbackup::credentials::CredentialKey::generate_base64(),
                )
                .env(var, path)
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{role} {var}: {stderr}");
            assert!(stderr.contains(var), "{role} {var}: {stderr}");
            assert!(!stderr.contains(secret), "{role} {var}: {stderr}");
        }
    }
}

/// The README's `authorization` block (the one an operator copies), with each role's
/// `U…name` placeholder replaced by that role's public nkey.
fn readme_authorization(keys: &[(&str, &str)]) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("authorization { users = [")
        .expect("README documents the NATS permissions");
    let end = start
        + readme[start..]
            .find("\n] }")
            .expect("the authorization block ends")
        + "\n] }".len();
    let mut block = readme[start..end].to_string();
    for (role, key) in keys {
        let placeholder = format!("\"U…{role}\"");
        assert!(
            block.contains(&placeholder),
            "README has no user {placeholder}"
        );
        block = block.replace(&placeholder, &format!("\"{key}\""));
    }
    assert!(!block.contains("U…"), "a role without a key: {block}");
    block
}

/// The permission lists the README documents are enough for each role to do its work, and
/// the roles run as real processes: the enqueuer (its NATS user may only answer the
/// trigger) queues the fleet and answers the backend's trigger request, the worker
/// publishes every snapshot — through the object store too, the server's `max_payload`
/// being smaller than the configs — the archiver stores every version, and the backend
/// sees the snapshots and gets its reply. No process hits a permissions violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_permissions_let_every_role_do_its_work() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 3,
            config_size: Some(24 * 1024),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let roles = ["backend", "enqueuer", "worker", "archiver"];
    let users: Vec<(String, PathBuf)> = roles
        .iter()
        .map(|r| nkey_user(dir.path(), &format!("{r}.nk")))
        .collect();
    let keys: Vec<(&str, &str)> = roles
        .iter()
        .zip(&users)
        .map(|(r, (key, _))| (*r, key.as_str()))
        .collect();
    let seed = |role: &str| {
        let i = roles.iter().position(|r| *r == role).expect("a role");
        users[i].1.display().to_string()
    };
    let (mut svc, url) = server(
        dir.path(),
        &format!("max_payload: 8192\n{}\n", readme_authorization(&keys)),
    )
    .await;

    let backend = connect(
        &url,
        &auth_from("NATS_NKEY_FILE", Path::new(&seed("backend"))),
    )
    .await
    .expect("backend connects");
    let mut snapshots = backend
        .subscribe("config.snapshot.>")
        .await
        .expect("the backend reads snapshots");
    backend.flush().await.expect("flush");

    // The roles as processes with the default subjects, stream and bucket (the README's
    // lists name those; the server is this test's own).
    let spawn = |args: &[&str], role: &str| {
        let log = std::fs::File::create(dir.path().join(format!("{role}.log"))).expect("log");
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .args(args)
            .envs(fleet.process_env())
            .env_remove("ROSBACKUP_SUBJECT_PREFIX")
            .env_remove("ROSBACKUP_NATS_STREAM")
            .env_remove("ROSBACKUP_NATS_OBJECT_BUCKET")
            .env("NATS_URL", &url)
            .env("NATS_NKEY_FILE", seed(role))
            .env("ROSBACKUP_NATS_STREAM_MAX_BYTES", (64 << 20).to_string())
            .env("DEVICE_REFRESH_SECONDS", "1")
            .env("ARCHIVE_ENCRYPTION_KEY", &fleet.key_b64)
            .env("ARCHIVE_ACK_WAIT", "2")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {role}: {e}"))
    };
    let mut enqueuer = spawn(&["enqueuer", "--insecure-no-auth"], "enqueuer");
    let mut worker = spawn(&["worker"], "worker");
    let mut archiver = spawn(&["archiver"], "archiver");

    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device backed up",
            || async { fleet.successes().await == devices.len() as i64 },
        )
        .await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < devices.len() {
        let msg = tokio::time::timeout(Duration::from_secs(30), snapshots.next())
            .await
            .expect("the backend sees every snapshot")
            .expect("subscription open");
        let event: serde_json::Value = serde_json::from_slice(&msg.payload).expect("an event");
        seen.insert(event["device_id"].as_str().expect("device_id").to_string());
    }
    let pool = fleet.store().pool().clone();
    fleet
        .wait_for(
            Duration::from_secs(60),
            "the archiver stored every device's version",
            || async {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(DISTINCT device_id) FROM config_versions",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                    == devices.len() as i64
            },
        )
        .await;

    // The backend's trigger request is answered by the enqueuer, after the worker's run.
    let body = format!(r#"{{"device_id":"{}"}}"#, devices[0].id);
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        backend.request("config.backup.trigger", body.into()),
    )
    .await
    .expect("a reply in time")
    .expect("the enqueuer answers");
    let reply: TriggerReply = serde_json::from_slice(&reply.payload).expect("the seed's reply");
    assert_eq!(reply.status, "success", "{reply:?}");

    for p in [&mut enqueuer, &mut worker, &mut archiver] {
        let _ = p.start_kill();
        let _ = p.wait().await;
    }
    for role in ["enqueuer", "worker", "archiver"] {
        let log =
            std::fs::read_to_string(dir.path().join(format!("{role}.log"))).unwrap_or_default();
        assert!(
            !log.to_ascii_lowercase().contains("permissions violation"),
            "{role}: {log}"
        );
    }
    svc.stop(Duration::from_secs(5)).await;
    fleet.cleanup().await;
}
