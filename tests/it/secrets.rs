//! No secret leaves through a side door: a fleet with known device passwords and configs
//! full of secrets (`show-sensitive` exports) is backed up by real `rosbackup enqueuer`
//! and `rosbackup worker` processes at debug log level, and everything they say — logs,
//! `/metrics`, every API response and dashboard page — is searched for the passwords and
//! the secret values of the configs. The snapshots themselves must carry the secrets
//! (that is the product), which proves the search looks for something real.

use crate::common::fleet::{Fleet, FleetOptions};
use rosbackup::access::{Access, Role};
use rosbackup::sim::SimConfig;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// GET over plain HTTP/1.1 with an optional bearer token; the whole response as text.
fn http_get(addr: &str, path: &str, token: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    fn spawn(fleet: &Fleet, role: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Proc {
        let log = dir.join(format!("{role}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
        c.arg(role)
            .envs(fleet.process_env())
            .env("LOG_LEVEL", "debug")
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        for (k, v) in extra {
            c.env(k, v);
        }
        Proc {
            child: c.spawn().expect("spawn"),
            log,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address after `prefix` in the process's output.
    fn addr_after(&self, prefix: &str) -> Option<String> {
        let t = self.text();
        let rest = &t[t.find(prefix)? + prefix.len()..];
        Some(rest.split(['/', '\n']).next()?.to_string())
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A failing assertion must not leave processes behind.
impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// Multi-threaded: the simulator runs in this runtime while the test blocks on HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn passwords_and_config_secrets_never_appear_in_logs_metrics_or_responses() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 10,
            faults: "auth=2,garbage=1,keys=2,key-only=1".parse().unwrap(),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    let token = Access::new(fleet.store().clone())
        .create_token("audit", Role::Admin, None)
        .await
        .unwrap()
        .1;
    let dir = tempfile::tempdir().unwrap();
    let mut enqueuer = Proc::spawn(&fleet, "enqueuer", dir.path(), &[]);
    let mut worker = Proc::spawn(&fleet, "worker", dir.path(), &[]);
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device attempted",
            || async {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM devices WHERE last_attempt_at IS NOT NULL",
                )
                .fetch_one(fleet.store().pool())
                .await
                .unwrap();
                n == devices.len() as i64
            },
        )
        .await;
    let http = enqueuer
        .addr_after("rosbackup-enqueuer: http://")
        .expect("enqueuer address");
    let metrics = worker
        .addr_after("metrics on http://")
        .expect("worker metrics address");

    // A manual backup through the API, waited for, so its answer is searched too.
    let healthy = &devices[5];
    let mut answers = Vec::new();
    {
        let mut s = std::net::TcpStream::connect(&http).unwrap();
        write!(
            s,
            "POST /api/v1/devices/{}/backup?wait=true&timeout=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            healthy.id
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        assert!(buf.contains("\"status\":\"success\""), "{buf}");
        answers.push(buf);
    }
    for path in [
        "/api/v1/devices?limit=1000",
        "/api/v1/runs?limit=1000",
        "/api/v1/overview",
        "/api/v1/queue",
        "/api/v1/jobs?state=dead",
        "/api/v1/stats/activity",
        "/",
        "/devices",
        "/jobs",
        "/metrics",
    ] {
        answers.push(http_get(&http, path, Some(&token)));
    }
    for d in &devices {
        answers.push(http_get(
            &http,
            &format!("/api/v1/devices/{}", d.id),
            Some(&token),
        ));
        answers.push(http_get(
            &http,
            &format!("/api/v1/devices/{}/runs", d.id),
            Some(&token),
        ));
        answers.push(http_get(&http, &format!("/devices/{}", d.id), Some(&token)));
    }
    answers.push(http_get(&metrics, "/metrics", None));
    enqueuer.stop();
    worker.stop();
    let logs = [enqueuer.text(), worker.text()];
    assert!(
        logs[1].contains("DEBUG") || logs[1].contains("\"level\":\"DEBUG\""),
        "debug logging was on"
    );

    // The secrets that were really exported.
    let mut secrets: Vec<String> = Vec::new();
    for d in fleet.sim.devices() {
        if let Some(export) = fleet.sim.last_export(d.id) {
            secrets.extend(crate::common::secret_values(&export));
        }
    }
    assert!(
        secrets.len() >= 5,
        "the simulated exports should carry secrets (show-sensitive): {}",
        secrets.len()
    );
    // …and they did reach the snapshots (so the search below looks for real data).
    let js = async_nats::jetstream::new(fleet.nats.clone());
    let mut stream = js
        .get_stream(&fleet.publisher_cfg.stream_name)
        .await
        .expect("stream");
    let last = stream.info().await.unwrap().state.last_sequence;
    assert!(last > 0);
    let raw = stream.get_raw_message(last).await.expect("last snapshot");
    let payload = String::from_utf8_lossy(&raw.payload).into_owned();
    assert!(
        secrets.iter().any(|s| payload.contains(s.as_str())),
        "the last snapshot carries no exported secret"
    );

    let passwords: Vec<&str> = fleet
        .sim
        .devices()
        .iter()
        .map(|d| d.password.as_str())
        .collect();
    // The user keys of the `keys`/`key-only` devices: every line of their private text
    // (the key-only device was reached with its key alone, so the key was really used).
    let key_only = fleet
        .sim
        .devices()
        .iter()
        .find(|d| d.fault == Some(rosbackup::sim::Fault::KeyOnly))
        .expect("a key-only device");
    let row = fleet.store().device(key_only.id).await.unwrap().unwrap();
    assert_eq!(row.last_status.as_deref(), Some("success"), "{row:?}");
    let key_lines: Vec<String> = fleet
        .sim
        .devices()
        .iter()
        .filter_map(|d| d.user_key.as_ref())
        .flat_map(|k| {
            k.to_sealable()
                .expose()
                .lines()
                .filter(|l| l.len() >= 20 && !l.starts_with("-----"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(key_lines.len() >= 3, "the keys have private text");
    let haystacks: Vec<(&str, &String)> = logs
        .iter()
        .map(|l| ("a process log", l))
        .chain(answers.iter().map(|a| ("an HTTP response", a)))
        .collect();
    for (what, text) in haystacks {
        for p in &passwords {
            assert!(!text.contains(p), "a device password appears in {what}");
        }
        for l in &key_lines {
            assert!(
                !text.contains(l.as_str()),
                "a private key appears in {what}"
            );
        }
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "a config secret appears in {what}"
            );
        }
        assert!(
            !text.contains(&fleet.key_b64),
            "the credential key appears in {what}"
        );
    }
    // `rbk_<id>_<secret>`: the secret is base64url and may itself contain `_`, so it is
    // everything after the second `_` (the last `_`-piece alone can be a few characters
    // that turn up in any log by chance).
    let token_secret = token.splitn(3, '_').nth(2).unwrap();
    assert!(token_secret.len() >= 40, "{}", token_secret.len());
    for l in &logs {
        assert!(!l.contains(token_secret), "the API token appears in a log");
    }
    fleet.cleanup().await;
}
