//! The `rosbackup` binary as an operator uses it.

use crate::common::sshd;
use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
    c.env_remove("NORMALIZATION_VERSION")
        .env("LOG_FORMAT", "text");
    c
}

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn hash_and_normalize_match_the_reference_table() {
    let Some(dir) = crate::common::shared_exports() else {
        return;
    };
    let tsv = std::fs::read_to_string(dir.join("HASHES.tsv")).unwrap();
    let row = tsv
        .lines()
        .find(|l| l.starts_with("gh-rotko-bkk50-v7.22-seq1"))
        .unwrap();
    let f: Vec<&str> = row.split('\t').collect();
    let file = dir.join(f[0]);
    for (v, want) in [("1", f[1]), ("2", f[2])] {
        let out = bin()
            .args(["hash", "--normalization-version", v])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{want}\n"));
    }
    // stdin, default version 2; normalize output hashes to the same value.
    let raw = std::fs::read(&file).unwrap();
    let out = run_with_stdin(
        {
            let mut c = bin();
            c.arg("normalize");
            c
        },
        &raw,
    );
    assert!(out.status.success());
    assert_eq!(rosbackup::normalize::hash(&out.stdout), f[2]);
    // The environment selects the version when no flag is given.
    let out = run_with_stdin(
        {
            let mut c = bin();
            c.arg("hash").env("NORMALIZATION_VERSION", "1");
            c
        },
        &raw,
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), f[1]);
}

#[test]
fn bad_env_value_is_exit_2_naming_the_variable() {
    let out = run_with_stdin(
        {
            let mut c = bin();
            c.arg("hash").env("NORMALIZATION_VERSION", "9");
            c
        },
        b"/a\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("NORMALIZATION_VERSION"), "{err}");

    let out = bin()
        .args(["export", "--host", "127.0.0.1", "--user", "u", "--json"])
        .env("ROSBACKUP_PASSWORD", "x")
        .env("CONFIG_BACKUP_COMMAND_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONFIG_BACKUP_COMMAND_TIMEOUT"));
}

#[test]
fn export_json_against_sshd() {
    let Some((server, file)) = sshd::serving("gh-alexx-cap1-v7.10.rsc", false) else {
        return;
    };
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let out = bin()
        .args([
            "export",
            "--host",
            "127.0.0.1",
            "--user",
            sshd::USER,
            "--json",
        ])
        .args([
            "--port",
            &server.port.to_string(),
            "--routeros-version",
            "7",
        ])
        .args(["--password-env", "TEST_DEVICE_PW", "--output"])
        .arg(out_file.path())
        .env("TEST_DEVICE_PW", sshd::PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let raw = std::fs::read(&file).unwrap();
    assert_eq!(v["fingerprint"], server.fingerprint("ed25519"));
    assert_eq!(
        v["sha256_hash"],
        rosbackup::normalize::hash(&rosbackup::normalize::normalize(
            &raw,
            rosbackup::normalize::Version::V2
        ))
    );
    assert_eq!(v["bytes"], raw.len());
    assert_eq!(v["routeros_version"], "7.10");
    assert_eq!(v["normalization_version"], 2);
    assert!(v["duration_ms"].is_u64());
    assert_eq!(std::fs::read(out_file.path()).unwrap(), raw);
    // Nothing secret on any stream.
    assert!(!stdout.contains(sshd::PASSWORD));

    // A wrong pin: JSON error, non-zero exit.
    let out = bin()
        .args([
            "export",
            "--host",
            "127.0.0.1",
            "--user",
            sshd::USER,
            "--json",
        ])
        .args(["--port", &server.port.to_string()])
        .args([
            "--known-fingerprint",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ])
        .env("ROSBACKUP_PASSWORD", sshd::PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_kind"], "host_key_mismatch");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(server.fingerprint("ed25519"))
    );
}

#[tokio::test]
async fn export_publish_lands_in_jetstream() {
    let Some((server, _)) = sshd::serving("gh-kaihendry-praze-v7.12-crlf.rsc", false) else {
        return;
    };
    let prefix = format!(
        "{}.config.snapshot",
        crate::common::unique("cli").to_lowercase()
    );
    let stream = crate::common::unique("CLI_SNAP");
    let device = uuid::Uuid::new_v4();
    let out = bin()
        .args([
            "export",
            "--host",
            "127.0.0.1",
            "--user",
            sshd::USER,
            "--json",
            "--publish",
        ])
        .args([
            "--port",
            &server.port.to_string(),
            "--routeros-version",
            "7",
        ])
        .args(["--device-id", &device.to_string()])
        .env("ROSBACKUP_PASSWORD", sshd::PASSWORD)
        .env("NATS_URL", crate::common::nats_url())
        .env("ROSBACKUP_SUBJECT_PREFIX", &prefix)
        .env("ROSBACKUP_NATS_STREAM", &stream)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stream"], stream.as_str());

    let js = async_nats::jetstream::new(
        async_nats::connect(crate::common::nats_url())
            .await
            .unwrap(),
    );
    let s = js.get_stream(&stream).await.unwrap();
    let seq = v["sequence"].as_u64().unwrap();
    let msg = s.get_raw_message(seq).await.unwrap();
    assert_eq!(msg.subject.as_str(), format!("{prefix}.create.{device}"));
    let ev = rosbackup::snapshot::ConfigSnapshotEvent::decode(&msg.payload).unwrap();
    assert_eq!(ev.device_id, device.to_string());
    assert_eq!(ev.sha256_hash, v["sha256_hash"].as_str().unwrap());
    assert_eq!(ev.routeros_version.as_deref(), Some("7.12"));
    assert_eq!(
        rosbackup::normalize::hash(ev.config_text.as_bytes()),
        ev.sha256_hash
    );
    let _ = js.delete_stream(&stream).await;
}

#[test]
fn publish_with_nats_down_is_a_json_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bin()
        .args([
            "export",
            "--host",
            "127.0.0.1",
            "--user",
            "u",
            "--json",
            "--publish",
        ])
        .env("ROSBACKUP_PASSWORD", "pw")
        .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_kind"], "publish_failed");
    assert!(v["message"].as_str().unwrap().contains(&port.to_string()));
}

/// `rosbackup export`'s flags are checked before any connection: a malformed pin, host or
/// timeout and an output file in a missing folder are configuration errors (exit 2) naming
/// the flag — not a device error kind after a whole export (the port here is closed, so
/// reaching the device would end in `connection_refused`, exit 1).
#[test]
fn export_refuses_bad_flags_before_connecting() {
    // An address no test listens on (a port bound and dropped could be taken again by a
    // test running beside this one).
    let (host, port) = ("127.254.253.252", "1");
    let cases: [(&[&str], &str); 6] = [
        (
            &["--known-fingerprint", "SHA256:AAAA"],
            "--known-fingerprint",
        ),
        (&["--host", "bad host"], "--host"),
        (&["--timeout", "0"], "--timeout"),
        (&["--connect-timeout", "0"], "--connect-timeout"),
        (&["--port", "0"], "--port"),
        (
            &["--output", "/nonexistent-rosbackup-dir/x.rsc"],
            "--output",
        ),
    ];
    for (extra, flag) in cases {
        let mut args = vec!["export", "--user", "admin", "--json"];
        if !extra.contains(&"--host") {
            args.extend(["--host", host]);
        }
        if !extra.contains(&"--port") {
            args.extend(["--port", port]);
        }
        args.extend_from_slice(extra);
        let out = bin()
            .args(&args)
            .env("ROSBACKUP_PASSWORD", "x")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {stderr} {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains(flag), "{extra:?}: {stderr}");
    }
    // The same flags, well formed, reach the device: connection_refused, exit 1.
    let out = bin()
        .args([
            "export", "--user", "admin", "--json", "--host", host, "--port", port,
        ])
        .env("ROSBACKUP_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_kind"], "connection_refused");
}
