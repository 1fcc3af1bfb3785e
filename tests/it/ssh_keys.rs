//! SSH public-key authentication (issue #18): the one connect path logs in with the key
//! first and the password after it, against the simulator's `keys`/`key-only` devices
//! and against real OpenSSH, including an sshd restricted to RouterOS 6's algorithms that
//! accepts only `ssh-rsa` signatures.

use crate::common::sshd;
use rosbackup::Secret;
use rosbackup::device::{self, ExportError, ExportOptions, Target, Tried};
use rosbackup::error::ErrorKind;
use rosbackup::sim::{Fault, SimConfig, SimDevice, Simulator};
use rosbackup::userkey::UserKey;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn opts() -> ExportOptions {
    ExportOptions {
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

fn sim_target(d: &SimDevice, password: &str, key: Option<UserKey>) -> Target {
    Target {
        host: d.host.to_string(),
        port: d.port,
        username: d.username.clone(),
        password: Secret::new(password),
        key,
        jump: None,
        known_fingerprint: None,
        routeros_version: None,
    }
}

async fn sim(spec: &str, healthy: usize) -> Simulator {
    let faults: rosbackup::sim::FaultSpec = spec.parse().unwrap();
    let n = faults.total() + healthy;
    Simulator::start(SimConfig {
        devices: n,
        listen_base: "127.0.0.1".parse().unwrap(),
        port: 0,
        one_address: true,
        faults,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn auth_failed(e: &ExportError) -> Tried {
    match e {
        ExportError::AuthFailed { tried, .. } => *tried,
        other => panic!("expected auth_failed, got {other:?}"),
    }
}

/// `keys` devices take their key or their password, `key-only` devices only the key;
/// Ed25519 (even indexes) and RSA (odd) keys both log in.
#[tokio::test]
async fn simulated_key_devices_take_their_key_and_key_only_refuses_passwords() {
    let sim = sim("keys=2,key-only=2", 1).await;
    let devices = sim.devices().to_vec();
    let stranger = devices[4].clone();
    assert!(stranger.user_key.is_none());
    let mut kinds = Vec::new();
    for d in &devices[..4] {
        let key = d.user_key.clone().expect("key device has a key");
        kinds.push(key.algorithm_name());
        // As real routers: an Ed25519 user key only on RouterOS 7.12 and later.
        if key.algorithm_name() == "ssh-ed25519" {
            assert!(
                rosbackup_sim::render::takes_ed25519_user_keys(&d.routeros_version),
                "{} runs {}",
                d.name,
                d.routeros_version
            );
        }
        // The key alone.
        let e = device::export(&sim_target(d, "", Some(key.clone())), &opts())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", d.name));
        assert!(!e.raw.is_empty());
        // A key the device does not know, then the right password: only `keys` devices.
        let wrong = devices[(devices.iter().position(|x| x.id == d.id).unwrap() + 1) % 4]
            .user_key
            .clone();
        let r = device::export(&sim_target(d, &d.password, wrong.clone()), &opts()).await;
        match d.fault {
            Some(Fault::Keys) => {
                r.unwrap_or_else(|e| panic!("{}: fallback to the password: {e}", d.name));
            }
            _ => assert_eq!(auth_failed(&r.unwrap_err()), Tried::KeyThenPassword),
        }
        // The password alone.
        let r = device::export(&sim_target(d, &d.password, None), &opts()).await;
        match d.fault {
            Some(Fault::Keys) => {
                r.unwrap();
            }
            _ => assert_eq!(auth_failed(&r.unwrap_err()), Tried::Password),
        }
        // A wrong key and no password: auth_failed, saying so.
        let e = device::export(&sim_target(d, "", wrong), &opts())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuthFailed);
        assert_eq!(auth_failed(&e), Tried::Key);
        assert!(e.to_string().contains("key refused"), "{e}");
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["ssh-ed25519", "ssh-ed25519", "ssh-rsa", "ssh-rsa"],
        "both key kinds are simulated"
    );
    // A device without a key refuses every key.
    let key = devices[0].user_key.clone();
    let e = device::export(&sim_target(&stranger, "", key), &opts())
        .await
        .unwrap_err();
    assert_eq!(auth_failed(&e), Tried::Key);
}

/// A simulated RouterOS 6 `keys` device (serving a real RouterOS 6 export) has an RSA
/// key, lists and verifies only `ssh-rsa` signatures, and offers RouterOS 6's legacy
/// algorithms: the key logs in.
#[tokio::test]
async fn simulated_routeros_6_key_device_logs_in_with_an_ssh_rsa_signature() {
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    // A directory with one RouterOS 6 export, read in place through a link.
    let configs = tempfile::tempdir().unwrap();
    let v6 = "gh-Defm-LivingRoomWAP-v6.49.6-terse-capsman.rsc";
    std::os::unix::fs::symlink(exports.join(v6), configs.path().join(v6)).unwrap();
    let sim = Simulator::start(SimConfig {
        devices: 1,
        listen_base: "127.0.0.1".parse().unwrap(),
        port: 0,
        one_address: true,
        faults: "keys=1".parse().unwrap(),
        routeros_algorithms: true,
        configs_dir: Some(configs.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    let d = sim.devices()[0].clone();
    assert!(
        d.routeros_version.starts_with("6."),
        "{}",
        d.routeros_version
    );
    let key = d.user_key.clone().unwrap();
    // RouterOS 6 has no Ed25519: even index 0 gets RSA.
    assert!(key.is_rsa());
    let e = device::export(&sim_target(&d, "", Some(key)), &opts())
        .await
        .unwrap();
    assert_eq!(e.routeros_major, 6);
    assert!(e.negotiated.uses_legacy(), "{:?}", e.negotiated);
}

// ---- real OpenSSH ---------------------------------------------------------------

const EXPORT: &str = "gh-Defm-anna-v7.8-terse-387k.rsc";

/// `ssh-keygen` a user key of `kind` into `dir` (PEM when `pem`, with a passphrase when
/// given); returns the private key file and its `authorized_keys` line.
fn user_key(
    dir: &Path,
    name: &str,
    kind: &str,
    pem: bool,
    pass: &str,
) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", pass, "-C", "rosbackup-test-key"]);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    if pem {
        cmd.args(["-m", "PEM"]);
    }
    let st = cmd.arg("-f").arg(&path).status().expect("ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

fn sshd_target(port: u16, password: &str, key: Option<UserKey>) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
        username: sshd::USER.into(),
        password: Secret::new(password),
        key,
        jump: None,
        known_fingerprint: None,
        routeros_version: Some("7".into()),
    }
}

fn import(path: &Path, pass: Option<&str>) -> UserKey {
    let text = std::fs::read_to_string(path).unwrap();
    UserKey::import(&text, pass.map(Secret::new).as_ref()).unwrap()
}

/// Real OpenSSH: Ed25519 (OpenSSH format) and RSA (PEM, passphrase-protected) user keys
/// log in without a password; a key sshd does not know falls back to the password, and
/// without a password is `auth_failed`.
#[tokio::test]
async fn openssh_takes_ed25519_and_rsa_keys_and_falls_back_to_the_password() {
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    if !sshd::available() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (ed_path, ed_pub) = user_key(keys.path(), "id_ed25519", "ed25519", false, "");
    let (rsa_path, rsa_pub) = user_key(keys.path(), "id_rsa", "rsa", true, "pem pass");
    let (stranger_path, _) = user_key(keys.path(), "id_other", "ed25519", false, "");
    let server = sshd::start_with(&exports.join(EXPORT), false, Some(&[ed_pub, rsa_pub]));
    let raw = std::fs::read(exports.join(EXPORT)).unwrap();

    let ed = import(&ed_path, None);
    let rsa = import(&rsa_path, Some("pem pass"));
    assert!(rsa.is_rsa());
    for key in [ed, rsa] {
        let e = device::export(&sshd_target(server.port, "", Some(key.clone())), &opts())
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(e.raw, raw);
    }
    let log = sshd::log(&server);
    assert!(
        log.contains("Accepted publickey for rosbackup-test"),
        "{log}"
    );
    assert!(log.contains("ED25519"), "{log}");
    // RSA signed with the strongest algorithm OpenSSH lists (rsa-sha2-512).
    assert!(log.contains("RSA SHA256:"), "{log}");
    assert!(!log.contains("Accepted password"), "{log}");

    // Unknown key, then the password.
    let stranger = import(&stranger_path, None);
    let e = device::export(
        &sshd_target(server.port, sshd::PASSWORD, Some(stranger.clone())),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(e.raw, raw);
    assert!(sshd::log(&server).contains("Accepted password"));
    // Unknown key, no password.
    let e = device::export(&sshd_target(server.port, "", Some(stranger)), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed);
    assert_eq!(auth_failed(&e), Tried::Key);
}

/// sshd restricted to RouterOS 6's algorithms, accepting only `ssh-rsa` signatures: an
/// RSA key logs in (the client signs with what the server accepts).
#[tokio::test]
async fn openssh_restricted_to_routeros_6_accepts_an_ssh_rsa_signature() {
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    if !sshd::available() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (rsa_path, rsa_pub) = user_key(keys.path(), "id_rsa", "rsa", false, "");
    let server = sshd::start_with(&exports.join(EXPORT), true, Some(&[rsa_pub]));
    let key = import(&rsa_path, None);
    let e = device::export(&sshd_target(server.port, "", Some(key)), &opts())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd::log(&server)));
    assert!(e.negotiated.uses_legacy(), "{:?}", e.negotiated);
    let log = sshd::log(&server);
    assert!(log.contains("Accepted publickey"), "{log}");
}

// ---- the fleet: store, worker, rotation ------------------------------------------

/// The worker reads a device's key with its lease and logs in with it: `keys` and
/// `key-only` devices are backed up; a `keys` device given a wrong key falls back to its
/// password; a `key-only` device given a wrong key and no password is `auth_failed` and
/// blocked, until its key is set right. `rotate-key` re-seals the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_logs_in_with_stored_keys_and_blocks_a_refused_key() {
    use crate::common::fleet::{Fleet, FleetOptions};
    use rosbackup::credentials::CredentialKey;
    use rosbackup::store::KeyChange;

    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 5,
            faults: "keys=2,key-only=2".parse().unwrap(),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let sims = fleet.sim.devices().to_vec();
    let devices = fleet.import(None).await;
    let (fallback, refused) = (devices[1].id, devices[3].id);
    let stranger = sims[0].user_key.clone().unwrap();
    // A wrong key with the right password, and a wrong key with no password.
    fleet
        .store()
        .update_credentials(&fleet.key, fallback, None, None, KeyChange::Set(&stranger))
        .await
        .unwrap();
    fleet
        .store()
        .update_credentials(
            &fleet.key,
            refused,
            None,
            Some(&Secret::default()),
            KeyChange::Set(&stranger),
        )
        .await
        .unwrap();
    let stored = fleet.store().device(refused).await.unwrap().unwrap();
    assert!(stored.has_ssh_key);
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_w, w, _) = fleet.spawn_worker("keys", 3);
    let status = |id: uuid::Uuid| {
        let store = fleet.store().clone();
        async move { store.device(id).await.ok().flatten().unwrap() }
    };
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device attempted",
            || async {
                let mut all = true;
                for d in &devices {
                    all &= status(d.id).await.last_attempt_at.is_some();
                }
                all
            },
        )
        .await;
    for (i, d) in devices.iter().enumerate() {
        let row = status(d.id).await;
        if d.id == refused {
            assert_eq!(row.blocked_reason.as_deref(), Some("auth_failed"));
            assert_eq!(row.last_error_kind.as_deref(), Some("auth_failed"));
            let msg = row.last_error_message.unwrap_or_default();
            assert!(msg.contains("key refused"), "{msg}");
        } else {
            assert_eq!(
                row.last_status.as_deref(),
                Some("success"),
                "device {i} ({:?}): {:?}",
                sims[i].fault,
                row.last_error_message
            );
        }
    }
    // The operator sets the right key: the block is lifted and the device backed up.
    let right = sims[3].user_key.clone().unwrap();
    fleet
        .store()
        .update_credentials(&fleet.key, refused, None, None, KeyChange::Set(&right))
        .await
        .unwrap();
    assert_eq!(status(refused).await.blocked_reason, None);
    fleet
        .wait_for(
            Duration::from_secs(30),
            "the fixed device backed up",
            || async { status(refused).await.last_status.as_deref() == Some("success") },
        )
        .await;
    let _ = stop_e.send(());
    let _ = stop_w.send(());
    enq.await.unwrap();
    w.await.unwrap().unwrap();

    // Rotation re-seals the keys: they open under the new key only, unchanged.
    let new_b64 = CredentialKey::generate_base64();
    let new = CredentialKey::from_base64(&new_b64).unwrap();
    fleet.store().rotate_key(&fleet.key, &new).await.unwrap();
    let c = fleet.store().credentials(&new, refused).await.unwrap();
    assert_eq!(c.key.as_ref(), Some(&right));
    assert!(c.password.is_empty());
    assert!(
        fleet
            .store()
            .credentials(&fleet.key, refused)
            .await
            .is_err()
    );
    let c = fleet.store().credentials(&new, fallback).await.unwrap();
    assert_eq!(c.key.as_ref(), Some(&stranger));
    assert_eq!(c.password.expose(), sims[1].password);
    fleet.cleanup().await;
}

/// The API takes keys write-only: a device created with a private key (protected, with
/// its passphrase) or given one through `PUT …/credentials` shows `has_ssh_key`, never the
/// key; a key that is not one, or a wrong passphrase, is a 422 on `ssh_key` that does not
/// quote it.
#[tokio::test]
async fn the_api_takes_keys_write_only() {
    use crate::common::fleet::Fleet;
    use crate::common::web::{Api, router, token};
    use axum::http::StatusCode;
    use rosbackup::access::Role;
    use rosbackup::web::AuthMode;
    use russh::keys::ssh_key::LineEnding;
    use serde_json::json;

    let fleet = Fleet::of(1).await;
    let (app, _state) = router(&fleet, AuthMode::Required);
    let admin = token(&fleet, "admin", Role::Admin, None).await;
    let api = Api::new(&app, Some(&admin));
    let keys = tempfile::tempdir().unwrap();
    let (path, _) = user_key(keys.path(), "id", "ed25519", false, "Api-Pass-3");
    let text = std::fs::read_to_string(&path).unwrap();
    let tenant = uuid::Uuid::new_v4();
    let body = |passphrase: &str| {
        json!({"name": "keyed", "host": "127.0.9.9", "username": "backup",
               "ssh_key": text, "ssh_key_passphrase": passphrase, "tenant_id": tenant})
    };
    let r = api.post("/api/v1/devices", Some(body("wrong"))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "ssh_key");
    assert!(!r.text.contains("OPENSSH"), "{}", r.text);
    let r = api.post("/api/v1/devices", Some(body("Api-Pass-3"))).await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(r.body["has_ssh_key"], true, "{}", r.text);
    let id: uuid::Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
    let stored = fleet
        .store()
        .credentials(&fleet.key, id)
        .await
        .unwrap()
        .key
        .unwrap();
    // Nothing of the key in what the API says about the device.
    let private = stored.to_sealable().expose().to_string();
    let lines: Vec<&str> = private
        .lines()
        .filter(|l| l.len() >= 20 && !l.starts_with("-----"))
        .collect();
    for reply in [
        api.get(&format!("/api/v1/devices/{id}")).await.text,
        api.get("/api/v1/devices").await.text,
    ] {
        for l in &lines {
            assert!(!reply.contains(l), "the key in {reply}");
        }
        assert!(!reply.contains("Api-Pass-3"));
    }
    // Replaced through PUT …/credentials, then removed with a password instead.
    let other = russh::keys::PrivateKey::from(
        russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[9u8; 32]),
    );
    let other_text = other.to_openssh(LineEnding::LF).unwrap().to_string();
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"ssh_key": "not a key"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "ssh_key");
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"ssh_key": other_text}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let c = fleet.store().credentials(&fleet.key, id).await.unwrap();
    assert_eq!(
        c.key.unwrap().fingerprint(),
        other
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string()
    );
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"password": "Pw-After-Key", "remove_ssh_key": true}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(r.body["has_ssh_key"], false, "{}", r.text);
    let c = fleet.store().credentials(&fleet.key, id).await.unwrap();
    assert!(c.key.is_none());
    assert_eq!(c.password.expose(), "Pw-After-Key");
    // A change that would leave no way to log in (no key, no password, no profile) is
    // refused, naming the field, and changes nothing — as the CLI refuses it.
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"password": ""}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "password", "{}", r.text);
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"ssh_key": other_text}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"password": "", "remove_ssh_key": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "remove_ssh_key", "{}", r.text);
    let c = fleet.store().credentials(&fleet.key, id).await.unwrap();
    assert!(c.key.is_some(), "the refused change removed the key");
    assert_eq!(c.password.expose(), "Pw-After-Key");
    // With the key kept, an empty password is fine (key only).
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"password": ""}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    // A key-only device's user is renamed alone: the key stays, nothing else is needed.
    let r = api
        .put(
            &format!("/api/v1/devices/{id}/credentials"),
            json!({"username": "backup-renamed"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(r.body["username"], "backup-renamed", "{}", r.text);
    let c = fleet.store().credentials(&fleet.key, id).await.unwrap();
    assert!(c.key.is_some(), "renaming the user removed the key");
    // Nothing at all to change is refused.
    let r = api
        .put(&format!("/api/v1/devices/{id}/credentials"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing to change"),
        "{}",
        r.text
    );
    fleet.cleanup().await;
}

// ---- jump hosts --------------------------------------------------------------------

/// A real sshd as the jump host in front of a simulated router: the export goes through
/// its `direct-tcpip` channel (the router's own host key is the one reported), logging in
/// to the bastion with its own password or — without — the device's user and key as
/// `ProxyJump` does; a bastion whose pinned key differs is `bastion_host_key_mismatch`
/// naming the bastion; a bastion that refuses forwarding is `bastion_forward_refused`
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_sshd_as_jump_host_forwards_to_the_router_and_errors_name_it() {
    use rosbackup::device::JumpHost;
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    if !sshd::available() {
        return;
    }
    let sim = sim("key-only=1", 0).await;
    let d = sim.devices()[0].clone();
    let key = d.user_key.clone().unwrap();
    let export_file = exports.join(EXPORT);
    let bastion = sshd::start_conf(&export_file, false, None, &["AllowTcpForwarding yes"]);
    let jump = JumpHost {
        host: "127.0.0.1".into(),
        port: bastion.port,
        username: sshd::USER.into(),
        password: Secret::new(sshd::PASSWORD),
        key: None,
        known_fingerprint: None,
    };
    let mut t = sim_target(&d, "", Some(key.clone()));
    t.jump = Some(jump.clone());
    let e = device::export(&t, &opts()).await.unwrap();
    assert_eq!(e.fingerprint, sim.host_key_fingerprint(d.id).unwrap());
    assert!(!e.raw.is_empty());
    let log = sshd::log(&bastion);
    assert!(
        log.contains("Accepted password for rosbackup-test"),
        "{log}"
    );

    // Pinned to the bastion's key: fine; pinned to another: the bastion is named.
    t.jump = Some(JumpHost {
        known_fingerprint: Some(bastion.fingerprint("ed25519").to_string()),
        ..jump.clone()
    });
    device::export(&t, &opts()).await.unwrap();
    t.jump = Some(JumpHost {
        known_fingerprint: Some(sim.host_key_fingerprint(d.id).unwrap()),
        ..jump.clone()
    });
    let err = device::export(&t, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BastionHostKeyMismatch);
    assert!(
        err.to_string().contains("via jump host 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(err.presented_fingerprint(), None, "not the router's key");
    assert_eq!(
        device::presented_fingerprint(&err.to_string()),
        None,
        "the stored message is not read back as the router's key: {err}"
    );

    // Wrong bastion password: auth_failed, via the bastion.
    t.jump = Some(JumpHost {
        password: Secret::new("wrong"),
        ..jump.clone()
    });
    let err = device::export(&t, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BastionAuthFailed);
    assert!(err.to_string().starts_with("via jump host"), "{err}");

    // A bastion that does not forward.
    let closed = sshd::start_conf(&export_file, false, None, &["AllowTcpForwarding no"]);
    t.jump = Some(JumpHost {
        port: closed.port,
        ..jump.clone()
    });
    let err = device::export(&t, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BastionForwardRefused, "{err}");
    assert!(
        err.to_string().starts_with("via jump host 127.0.0.1:")
            && err.to_string().contains("refused to forward"),
        "{err}"
    );
    sim.shutdown().await;
}

/// `rosbackup export --jump-host HOST:PORT` with no credentials for the bastion logs in
/// to it with the device's user and key (as `ssh -J`), then to the router behind it, and
/// shows the bastion's key (to pin it) beside the router's. A passphrase-protected
/// `--jump-key-file` is refused with a hint naming `--jump-key-passphrase-env`, the flag
/// that takes its passphrase, and works with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_through_a_jump_host_uses_the_device_key_for_the_bastion_like_proxyjump() {
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    if !sshd::available() {
        return;
    }
    let sim = Simulator::start(SimConfig {
        devices: 1,
        listen_base: "127.0.0.1".parse().unwrap(),
        port: 0,
        one_address: true,
        faults: "key-only=1".parse().unwrap(),
        shared_login: Some((sshd::USER.into(), "unused-Pw-1".into())),
        ..Default::default()
    })
    .await
    .unwrap();
    let d = sim.devices()[0].clone();
    let key = d.user_key.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A key for the bastion only, passphrase-protected.
    let (jump_key, jump_public) = user_key(dir.path(), "jump", "ed25519", false, "jump-Pass-1");
    let bastion = sshd::start_conf(
        &exports.join(EXPORT),
        false,
        Some(&[key.public_openssh(), jump_public]),
        &["AllowTcpForwarding yes"],
    );
    let key_file = dir.path().join("id");
    std::fs::write(&key_file, key.to_sealable().expose()).unwrap();
    let run = |jump: &str, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .env_remove("ROSBACKUP_PASSWORD")
            .env("JUMP_KEY_PASS", "jump-Pass-1")
            .args([
                "export",
                "--host",
                "127.0.0.1",
                "--port",
                &d.port.to_string(),
            ])
            .args(["--user", &d.username, "--key-file"])
            .arg(&key_file)
            .args(["--jump-host", jump])
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let via = format!("127.0.0.1:{}", bastion.port);
    let bastion_fp = bastion.fingerprint("ed25519").to_string();
    let (code, out, _) = run(&via, &["--json"]);
    assert_eq!(code, Some(0), "{out}\n{}", sshd::log(&bastion));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        j["fingerprint"].as_str(),
        sim.host_key_fingerprint(d.id).as_deref(),
        "the router's key, not the bastion's"
    );
    assert_eq!(
        j["bastion_fingerprint"].as_str(),
        Some(bastion_fp.as_str()),
        "the bastion's key, to pin it: {out}"
    );
    assert!(sshd::log(&bastion).contains("Accepted publickey"));
    // The text output shows it too, next to the router's.
    let (code, out, _) = run(&via, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("bastion ") && l.contains(&bastion_fp) && l.contains(&via)),
        "{out}"
    );
    // With --jump-known-fingerprint pinned to it: fine.
    let (code, out, _) = run(&via, &["--jump-known-fingerprint", &bastion_fp, "--json"]);
    assert_eq!(code, Some(0), "{out}");

    // A protected jump key without its passphrase: the hint names the jump flags.
    let jump_key = jump_key.to_string_lossy().into_owned();
    let (code, _, err) = run(&via, &["--jump-key-file", &jump_key]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--jump-key-file")
            && err.contains("passphrase-protected")
            && err.contains("--jump-key-passphrase-env"),
        "{err}"
    );
    assert!(
        !err.contains(" --key-passphrase-env") && !err.contains("jump-Pass-1"),
        "names the device's flag, or shows the passphrase: {err}"
    );
    // With it: the bastion takes the jump key.
    let (code, out, err) = run(
        &via,
        &[
            "--jump-key-file",
            &jump_key,
            "--jump-key-passphrase-env",
            "JUMP_KEY_PASS",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}\n{}", sshd::log(&bastion));

    // Another user on the bastion: refused there, and the error says so.
    let (code, out, _) = run(&format!("nobody@127.0.0.1:{}", bastion.port), &["--json"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("bastion_auth_failed") && out.contains("via jump host"),
        "{out}"
    );
    sim.shutdown().await;
}
