//! Binary `.backup` files beside the text export (issue #19), against the simulator with
//! real PostgreSQL, Redis and NATS: `on-change` takes one on the first backup and on a
//! change only; every fault has its own kind while the text snapshot still publishes;
//! the device's file store is empty afterwards, also after a cut fetch; what is stored
//! decrypts to exactly what the device wrote.

use crate::common::fleet::{Fleet, FleetOptions};
use rosbackup::binary::{self, Mode};
use rosbackup::queue::BackupJob;
use rosbackup::sim::{Fault, FaultSpec, SimConfig, SimDevice};
use rosbackup::store::RunStatus;
use std::time::Duration;

async fn fleet(faults: &str, devices: usize, mode: Mode) -> Fleet {
    let mut fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices,
            faults: faults.parse::<FaultSpec>().expect("spec"),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    fleet.backup.binary.mode = mode;
    fleet.backup.binary.timeout = Duration::from_secs(3);
    fleet.backup.binary.poll = Duration::from_millis(100);
    fleet.import(None).await;
    fleet.postpone_all().await;
    fleet
}

fn device(fleet: &Fleet, fault: Option<Fault>) -> SimDevice {
    fleet
        .sim
        .devices()
        .iter()
        .find(|d| d.fault == fault)
        .expect("device with that fault")
        .clone()
}

/// One manual backup through the worker's job path; the text backup must succeed.
async fn backup(fleet: &Fleet, d: &SimDevice) {
    let env = fleet.job_env();
    let report = rosbackup::worker::execute(&env, &BackupJob::manual(d.id, d.tenant_id), "t")
        .await
        .expect("execute");
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
}

async fn binaries(fleet: &Fleet, d: &SimDevice) -> Vec<binary::store::BinaryInfo> {
    binary::store::list(fleet.store(), d.id, None, 100)
        .await
        .expect("list")
}

/// The newest stored binary opens to exactly the device's last saved file, with the
/// password the device was given, and the device keeps no file.
async fn assert_stored_is_what_the_device_wrote(fleet: &Fleet, d: &SimDevice) {
    let list = binaries(fleet, d).await;
    let newest = list.first().expect("a stored binary");
    let opened = binary::store::open(
        fleet.store(),
        &fleet.key,
        newest.id,
        d.id,
        None,
        "test",
        binary::store::Access::FileAndPassword,
    )
    .await
    .expect("open")
    .expect("found");
    let saved = fleet
        .sim
        .last_backup(d.id)
        .expect("the device saved a backup");
    assert_eq!(
        opened.data, saved.data,
        "stored bytes are the device's file"
    );
    assert_eq!(newest.size as usize, saved.data.len());
    assert_eq!(newest.sha256, binary::sha256_hex(&saved.data));
    assert_eq!(
        opened.password.as_ref().map(|p| p.expose().to_string()),
        saved.password,
        "the sealed password is the one the file was encrypted with"
    );
    assert_ne!(
        saved.encryption,
        rosbackup::sim::files::Encryption::None,
        "never a dont-encrypt file"
    );
    assert!(
        rosbackup::device::binary::check_header(&opened.data).is_ok(),
        "RouterOS backup header"
    );
    assert!(
        fleet.sim.files(d.id).is_empty(),
        "{:?}",
        fleet.sim.files(d.id)
    );
    // The download was audited.
    let audits: i64 = sqlx::query_scalar("SELECT count(*) FROM binary_audit WHERE binary_id = $1")
        .bind(newest.id)
        .fetch_one(fleet.store().pool())
        .await
        .expect("audit");
    assert_eq!(audits, 2, "download and password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_change_takes_one_binary_per_changed_config_on_v6_and_v7() {
    let fleet = fleet("v6=1,change=1", 3, Mode::OnChange).await;
    let v6 = device(&fleet, Some(Fault::V6));
    let changing = device(&fleet, Some(Fault::Change));
    let steady = device(&fleet, None);

    // First backup: every device gets one (the first counts as a change).
    for d in [&v6, &changing, &steady] {
        backup(&fleet, d).await;
        assert_eq!(binaries(&fleet, d).await.len(), 1, "{}", d.name);
        assert_stored_is_what_the_device_wrote(&fleet, d).await;
    }
    // The v6 box got the v6 syntax (no `encryption=`; 6.43+ default to AES).
    let v6_saved = fleet.sim.last_backup(v6.id).expect("saved");
    assert_eq!(
        v6_saved.encryption,
        rosbackup::sim::files::Encryption::AesSha256
    );

    // Second backup: only the changed config gets another binary.
    let before_v6 = fleet.sim.last_backup(v6.id).expect("saved").data;
    for d in [&v6, &changing, &steady] {
        backup(&fleet, d).await;
    }
    assert_eq!(binaries(&fleet, &v6).await.len(), 1);
    assert_eq!(binaries(&fleet, &steady).await.len(), 1);
    assert_eq!(binaries(&fleet, &changing).await.len(), 2);
    assert_stored_is_what_the_device_wrote(&fleet, &changing).await;
    assert_eq!(
        fleet.sim.last_backup(v6.id).expect("saved").data,
        before_v6,
        "an unchanged device was not asked for a backup"
    );
    // Each binary is linked to the config hash of its own export.
    let c = binaries(&fleet, &changing).await;
    assert_ne!(c[0].config_sha256, c[1].config_sha256);

    // The newest binary of an unchanged config ages past the maximum: one more.
    sqlx::query(
        "UPDATE binary_backups SET collected_at = now() - interval '8 days' WHERE device_id = $1",
    )
    .bind(steady.id)
    .execute(fleet.store().pool())
    .await
    .expect("age");
    backup(&fleet, &steady).await;
    assert_eq!(binaries(&fleet, &steady).await.len(), 2);
    backup(&fleet, &steady).await;
    assert_eq!(binaries(&fleet, &steady).await.len(), 2, "fresh again");

    // The text snapshots are unchanged in count: one per backup, binaries or not.
    let audit = fleet.audit_stream().await;
    assert_eq!(audit.count(v6.id), 2);
    assert_eq!(audit.count(changing.id), 2);
    assert_eq!(audit.count(steady.id), 4);
    // No binary byte ever reaches NATS: every event is a text snapshot.
    for events in audit.by_device.values() {
        for e in events {
            assert!(
                !e.config_text.contains("rosbackup-"),
                "a backup file name in a snapshot"
            );
        }
    }
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_fault_has_its_own_kind_and_the_text_snapshot_still_publishes() {
    let fleet = fleet(
        "backup-no-space=1,backup-missing=1,backup-growing=1,backup-cut=1",
        4,
        Mode::Always,
    )
    .await;
    for (fault, kind) in [
        (Fault::BackupNoSpace, "binary_no_space"),
        (Fault::BackupMissing, "binary_timeout"),
        (Fault::BackupGrowing, "binary_timeout"),
        (Fault::BackupCut, "binary_truncated"),
    ] {
        let d = device(&fleet, Some(fault));
        backup(&fleet, &d).await;
        let runs = binary::store::runs(fleet.store(), d.id)
            .await
            .expect("runs");
        assert_eq!(runs.len(), 1, "{fault}: {runs:?}");
        assert_eq!(runs[0].0, "failed", "{fault}");
        assert_eq!(runs[0].1.as_deref(), Some(kind), "{fault}");
        assert!(
            binaries(&fleet, &d).await.is_empty(),
            "{fault}: nothing partial stored"
        );
        // The file is gone from the device, also after a failed or cut fetch.
        assert!(
            fleet.sim.files(d.id).is_empty(),
            "{fault}: {:?}",
            fleet.sim.files(d.id)
        );
        if matches!(fault, Fault::BackupGrowing | Fault::BackupCut) {
            assert!(
                fleet.sim.last_backup(d.id).is_some(),
                "{fault}: it was saved"
            );
        }
        // The text backup is a success with its snapshot published.
        let row = fleet
            .store()
            .device(d.id)
            .await
            .expect("row")
            .expect("device");
        assert_eq!(row.last_status.as_deref(), Some("success"), "{fault}");
        assert_eq!(row.consecutive_failures, 0, "{fault}");
        // The failure is visible where an operator looks, not only in logs and metrics.
        let out = cli(&fleet, &["devices", "show", &d.name, "--json"]);
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(shown["binary_runs"][0]["status"], "failed", "{fault}");
        assert_eq!(shown["binary_runs"][0]["error_kind"], kind, "{fault}");
        let out = cli(&fleet, &["devices", "show", &d.name]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!(": {kind}")), "{fault}: {text}");
        let out = cli(&fleet, &["history", &d.name, "--binaries"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("failed binary runs") && text.contains(kind),
            "{fault}: {text}"
        );

        // The binary step backs off on its own: the next backup takes no binary, and
        // the text backup is not affected.
        backup(&fleet, &d).await;
        let runs = binary::store::runs(fleet.store(), d.id)
            .await
            .expect("runs");
        assert_eq!(runs.len(), 1, "{fault}: backing off");
        let audit = fleet.audit_stream().await;
        assert_eq!(
            audit.count(d.id),
            2,
            "{fault}: every text snapshot published"
        );
    }
    fleet.cleanup().await;
}

fn cli(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "operator1")
        .envs(fleet.process_env())
        .output()
        .expect("run rosbackup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_lists_downloads_with_an_audit_row_and_a_device_overrides_the_mode() {
    let fleet = fleet("", 1, Mode::Always).await;
    let d = device(&fleet, None);
    backup(&fleet, &d).await;
    let saved = fleet.sim.last_backup(d.id).expect("saved");

    let out = cli(
        &fleet,
        &["history", &d.id.to_string(), "--binaries", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1, "{list:?}");
    let b = &list[0];
    assert_eq!(b["size"].as_u64(), Some(saved.data.len() as u64));
    assert_eq!(
        b["sha256"].as_str(),
        Some(binary::sha256_hex(&saved.data).as_str())
    );
    assert!(
        b["collected_at"].is_string() && b["config_sha256"].is_string(),
        "{b}"
    );
    assert!(
        b.get("password").is_none() && b.get("file_enc").is_none(),
        "{b}"
    );
    let id = b["id"].as_i64().expect("id");

    // The download writes the device's file and, on request, prints its password.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("r.backup");
    let out = cli(
        &fleet,
        &[
            "history",
            &d.name,
            "--download-binary",
            &id.to_string(),
            "--out",
            file.to_str().expect("utf-8"),
            "--show-password",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).expect("written"), saved.data);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the file is its owner's only: {mode:o}"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        saved.password.as_deref().expect("password")
    );
    let actors: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM binary_audit WHERE binary_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(fleet.store().pool())
            .await
            .expect("audit");
    assert_eq!(
        actors,
        vec![
            ("cli:operator1".to_string(), "download".to_string()),
            ("cli:operator1".to_string(), "password".to_string())
        ]
    );
    // Never overwrites; a binary of another device is not found.
    let again = cli(
        &fleet,
        &[
            "history",
            &d.name,
            "--download-binary",
            &id.to_string(),
            "--out",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(!again.status.success());
    let other = uuid::Uuid::new_v4().to_string();
    let wrong = cli(
        &fleet,
        &[
            "history",
            &other,
            "--download-binary",
            &id.to_string(),
            "--out",
            dir.path().join("x").to_str().expect("utf-8"),
        ],
    );
    assert!(!wrong.status.success());
    assert!(!dir.path().join("x").exists(), "no file left behind");

    // `devices rotate-key` re-seals the binaries too: they open under the new key only.
    let new_key = rosbackup::credentials::CredentialKey::from_base64(
        &rosbackup::credentials::CredentialKey::generate_base64(),
    )
    .expect("key");
    fleet
        .store()
        .rotate_key(&fleet.key, &new_key)
        .await
        .expect("rotate");
    let opened = binary::store::open(
        fleet.store(),
        &new_key,
        id,
        d.id,
        None,
        "test",
        binary::store::Access::File,
    )
    .await
    .expect("opens under the new key")
    .expect("found");
    assert_eq!(opened.data, saved.data);
    assert!(
        binary::store::open(
            fleet.store(),
            &fleet.key,
            id,
            d.id,
            None,
            "test",
            binary::store::Access::File
        )
        .await
        .is_err()
    );
    // A worker still running with the old key seals nothing: neither a binary nor a new
    // device's backup password (the next rotation could not open them).
    let stale = binary::store::record_success(
        fleet.store(),
        &fleet.key,
        &binary::store::NewBinary {
            device_id: d.id,
            tenant_id: d.tenant_id,
            job_id: "stale-worker-job",
            collected_at: chrono::Utc::now(),
            data: &saved.data,
            config_sha256: "c0ffee",
            routeros_version: None,
            format: "aes-sha256",
            password: &rosbackup::Secret::new("x".to_string()),
            removed: true,
            started_at: chrono::Utc::now(),
        },
    )
    .await;
    assert!(
        matches!(stale, Err(rosbackup::store::StoreError::Credentials(_))),
        "{stale:?}"
    );
    let fresh_device = uuid::Uuid::new_v4();
    let stale = binary::store::device_password(fleet.store(), &fleet.key, fresh_device).await;
    assert!(
        matches!(stale, Err(rosbackup::store::StoreError::Credentials(_))),
        "{stale:?}"
    );
    let sealed: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM binary_backups WHERE job_id = 'stale-worker-job') \
         + (SELECT count(*) FROM binary_state WHERE device_id = $1)",
    )
    .bind(fresh_device)
    .fetch_one(fleet.store().pool())
    .await
    .expect("count");
    assert_eq!(sealed, 0, "something was sealed under the old key");
    fleet
        .store()
        .rotate_key(&new_key, &fleet.key)
        .await
        .expect("rotate back");

    // A tenant set to `off` takes no binary although the fleet says `always`; its
    // device's own mode wins over it. The tenant is named by its name here (its id below).
    let tenant = d.tenant_id.to_string();
    let out = cli(&fleet, &["tenants", "add", "binops", "--id", &tenant]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&fleet, &["devices", "tenant-binary-mode", "binops", "off"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    backup(&fleet, &d).await;
    assert_eq!(binaries(&fleet, &d).await.len(), 1);
    let out = cli(&fleet, &["devices", "binary-mode", &d.name, "always"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    backup(&fleet, &d).await;
    assert_eq!(binaries(&fleet, &d).await.len(), 2);
    let out = cli(
        &fleet,
        &[
            "devices",
            "tenant-binary-mode",
            &d.tenant_id.to_string(),
            "fleet",
        ],
    );
    assert!(out.status.success());

    // A device set to `off` takes no binary although the fleet says `always`.
    let out = cli(&fleet, &["devices", "binary-mode", &d.name, "off"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    backup(&fleet, &d).await;
    assert_eq!(binaries(&fleet, &d).await.len(), 2);
    // A bad mode is a configuration error (exit 2) naming the value, as other flags are.
    let out = cli(&fleet, &["devices", "binary-mode", &d.name, "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MODE=\"sometimes\""));
    let out = cli(&fleet, &["devices", "binary-mode", &d.name, "fleet"]);
    assert!(out.status.success());
    backup(&fleet, &d).await;
    assert_eq!(binaries(&fleet, &d).await.len(), 3);
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_lists_for_viewers_and_downloads_for_admins_only_with_audit() {
    use crate::common::web::{Api, router, token};
    use rosbackup::access::Role;
    use rosbackup::web::AuthMode;
    let fleet = fleet("", 1, Mode::Always).await;
    let d = device(&fleet, None);
    backup(&fleet, &d).await;
    let saved = fleet.sim.last_backup(d.id).expect("saved");
    let (app, _) = router(&fleet, AuthMode::Required);
    let viewer = token(&fleet, "viewer", Role::Viewer, None).await;
    let admin = token(&fleet, "admin", Role::Admin, None).await;
    let other_tenant = token(&fleet, "other", Role::Admin, Some(uuid::Uuid::new_v4())).await;
    let (viewer, admin, other) = (
        Api::new(&app, Some(&viewer)),
        Api::new(&app, Some(&admin)),
        Api::new(&app, Some(&other_tenant)),
    );

    let list = viewer
        .get(&format!("/api/v1/devices/{}/binaries", d.id))
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    let id = list.body[0]["id"].as_i64().expect("id");
    assert_eq!(list.body[0]["size"].as_u64(), Some(saved.data.len() as u64));
    assert!(!list.text.contains(saved.password.as_deref().expect("pw")));
    // Another tenant does not see the device at all.
    let hidden = other
        .get(&format!("/api/v1/devices/{}/binaries", d.id))
        .await;
    assert_eq!(hidden.status, 404);
    // The device's own view carries the binary step's last runs (the stored one here).
    let one = viewer.get(&format!("/api/v1/devices/{}", d.id)).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(
        one.body["binary_runs"][0]["status"], "success",
        "{}",
        one.text
    );
    assert_eq!(one.body["binary_runs"][0]["binary_id"], id, "{}", one.text);

    // Viewers may not download or see the password; nothing is audited for them.
    for path in [
        format!("/api/v1/devices/{}/binaries/{id}", d.id),
        format!("/api/v1/devices/{}/binaries/{id}/password", d.id),
    ] {
        let r = viewer.get(&path).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    let audits = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT actor, action FROM binary_audit WHERE binary_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(fleet.store().pool())
        .await
        .expect("audit")
    };
    assert!(audits().await.is_empty());

    let file = admin
        .get(&format!("/api/v1/devices/{}/binaries/{id}", d.id))
        .await;
    assert_eq!(file.status, 200);
    assert_eq!(
        file.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/octet-stream")
    );
    let expected_len = saved.data.len().to_string();
    assert_eq!(
        file.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(expected_len.as_str())
    );
    let pw = admin
        .get(&format!("/api/v1/devices/{}/binaries/{id}/password", d.id))
        .await;
    assert_eq!(pw.status, 200, "{}", pw.text);
    assert_eq!(pw.body["password"].as_str(), saved.password.as_deref());
    assert_eq!(
        audits().await,
        vec![
            ("api:admin".to_string(), "download".to_string()),
            ("api:admin".to_string(), "password".to_string())
        ]
    );
    let missing = admin
        .get(&format!("/api/v1/devices/{}/binaries/{}", d.id, id + 1000))
        .await;
    assert_eq!(missing.status, 404);

    // The dashboard: the device page lists the binary; only admins get the download link,
    // which downloads (audited) and is refused to viewers.
    let link = format!("/devices/{}/binaries/{id}/download", d.id);
    let page = admin.get(&format!("/devices/{}", d.id)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Binary backups") && page.text.contains(&link));
    let page = viewer.get(&format!("/devices/{}", d.id)).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Binary backups") && !page.text.contains(&link));
    assert!(!page.text.contains(saved.password.as_deref().expect("pw")));
    assert_ne!(viewer.get(&link).await.status, 200);
    let file = admin.get(&link).await;
    assert_eq!(file.status, 200);
    assert_eq!(
        file.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(expected_len.as_str())
    );
    assert_eq!(audits().await.len(), 3, "the page download is audited too");

    // The device is removed (its binaries kept by retention) and its id re-created in
    // another tenant by that tenant's admin: the old tenant's files stay out of reach.
    fleet
        .store()
        .remove_device(d.id)
        .await
        .expect("remove the device");
    let other_scope: uuid::Uuid =
        sqlx::query_scalar("SELECT tenant_id FROM api_tokens WHERE name = 'other'")
            .fetch_one(fleet.store().pool())
            .await
            .expect("the other token's tenant");
    let recreated = other
        .post(
            "/api/v1/devices",
            Some(
                serde_json::json!({"id": d.id, "name": "taken-over", "host": "127.0.0.1",
                                    "username": "admin", "password": "pw"}),
            ),
        )
        .await;
    assert_eq!(recreated.status, 201, "{}", recreated.text);
    assert_eq!(recreated.body["tenant_id"], serde_json::json!(other_scope));
    let listed = other
        .get(&format!("/api/v1/devices/{}/binaries", d.id))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        listed.body,
        serde_json::json!([]),
        "another tenant's binaries listed"
    );
    for path in [
        format!("/api/v1/devices/{}/binaries/{id}", d.id),
        format!("/api/v1/devices/{}/binaries/{id}/password", d.id),
        format!("/devices/{}/binaries/{id}/download", d.id),
    ] {
        let r = other.get(&path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
    }
    let page = other.get(&format!("/devices/{}", d.id)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        !page.text.contains(&link),
        "another tenant's binary on the page"
    );
    assert_eq!(
        audits().await.len(),
        3,
        "nothing opened for the other tenant"
    );
    fleet.cleanup().await;
}

/// A fleet run (enqueuer + worker, devices due every 2 s) with `on-change`: exactly one
/// binary per changed config, one for each steady device, nothing on any device's flash,
/// and exactly one text snapshot per successful run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_run_with_on_change_takes_one_binary_per_changed_config() {
    let mut fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 4,
            faults: "change=1,v6=1".parse::<FaultSpec>().expect("spec"),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    fleet.backup.binary.mode = Mode::OnChange;
    fleet.backup.binary.timeout = Duration::from_secs(3);
    fleet.backup.binary.poll = Duration::from_millis(100);
    fleet.import(Some(2)).await;
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_w, worker, _) = fleet.spawn_worker("bin", 4);
    fleet
        .wait_for(
            Duration::from_secs(90),
            "three backups of every device",
            || async {
                let runs = fleet.runs().await;
                fleet.sim.devices().iter().all(|d| {
                    runs.iter()
                        .filter(|r| r.device_id == d.id && r.status == "success")
                        .count()
                        >= 3
                })
            },
        )
        .await;
    let _ = stop_e.send(());
    let _ = stop_w.send(());
    let _ = enq.await;
    let _ = worker.await;

    let runs = fleet.runs().await;
    let audit = fleet.audit_stream().await;
    for d in fleet.sim.devices() {
        let successes = runs
            .iter()
            .filter(|r| r.device_id == d.id && r.status == "success")
            .count();
        assert_eq!(
            audit.count(d.id),
            successes,
            "{}: one snapshot per run",
            d.name
        );
        let stored = binaries(&fleet, d).await;
        let distinct: std::collections::BTreeSet<String> = audit.hashes(d.id).into_iter().collect();
        if d.fault == Some(Fault::Change) {
            assert_eq!(
                stored.len(),
                successes,
                "{}: one per changed config",
                d.name
            );
        } else {
            assert_eq!(distinct.len(), 1, "{}: a steady config", d.name);
            assert_eq!(stored.len(), 1, "{}: only the first backup's", d.name);
        }
        // Every binary belongs to a config that was published.
        for b in &stored {
            assert!(distinct.contains(&b.config_sha256), "{}", d.name);
        }
        assert!(
            fleet.sim.files(d.id).is_empty(),
            "{}: {:?}",
            d.name,
            fleet.sim.files(d.id)
        );
        let failed = binary::store::runs(fleet.store(), d.id)
            .await
            .expect("runs")
            .into_iter()
            .filter(|r| r.0 != "success")
            .count();
        assert_eq!(failed, 0, "{}", d.name);
    }
    fleet.cleanup().await;
}
