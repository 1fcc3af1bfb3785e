//! Stored jump hosts (#18) with a real worker: a real Debian OpenSSH `sshd` as the bastion
//! (`AllowTcpForwarding yes`) in front of simulated routers. A loopback TCP proxy in front
//! of the bastion counts the connections the worker makes and can cut them all, so the
//! test sees connection sharing and a dropped bastion connection from the outside.

use crate::common::fleet::{Fleet, FleetOptions};
use crate::common::sshd;
use rosbackup::Secret;
use rosbackup::jump::{self, JumpSetting, JumpSpec};
use rosbackup::sim::SimConfig;
use rosbackup::store::NewDevice;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const EXPORT: &str = "gh-Defm-anna-v7.8-terse-387k.rsc";

/// A loopback TCP proxy to `127.0.0.1:target`: counts accepted connections; `cut` closes
/// every connection it carries.
struct Proxy {
    port: u16,
    connects: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let connects = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (connects, conns) = (connects.clone(), conns.clone());
            async move {
                while let Ok((mut inbound, _)) = l.accept().await {
                    connects.fetch_add(1, Ordering::SeqCst);
                    let h = tokio::spawn(async move {
                        if let Ok(mut out) = TcpStream::connect(("127.0.0.1", target)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                    conns.lock().unwrap().push(h);
                }
            }
        });
        Proxy {
            port,
            connects,
            conns,
            accept,
        }
    }

    fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    /// Close every connection (both sockets are dropped with their task).
    fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Back up `devices` by manual requests, all queued at once; the runs' (kind, message).
async fn back_up(
    fleet: &Fleet,
    devices: &[Uuid],
    phase: &str,
) -> Vec<(String, Option<String>, String)> {
    let metrics = rosbackup::metrics::Metrics::new();
    let mut jobs = Vec::new();
    for id in devices {
        jobs.push(
            rosbackup::manual::request(fleet.store(), &fleet.queue, &metrics, *id, None)
                .await
                .expect("queued"),
        );
    }
    let mut runs = Vec::new();
    for job in jobs {
        let run = rosbackup::manual::wait(fleet.store(), &job.job_id, Duration::from_secs(60))
            .await
            .expect("store");
        let run = run.unwrap_or_else(|| panic!("{phase}: no run within 60 s"));
        runs.push((
            run.status.to_string(),
            run.error_kind.clone(),
            run.error_message.clone().unwrap_or_default(),
        ));
    }
    runs
}

/// Six routers behind one bastion are backed up by a worker over at most
/// `ROSBACKUP_BASTION_CONNECTIONS` (2) bastion connections, not one per backup; the
/// bastion's key is pinned once for all of them. When every bastion connection is cut,
/// the next jobs reconnect and succeed. A bastion whose key differs from its pin blocks
/// every device behind it (`bastion_host_key_mismatch`, the message naming the
/// bastion); resetting the bastion's pin unblocks exactly them. A device behind a bastion
/// with `AllowTcpForwarding no` fails `bastion_forward_refused`, "via jump host".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routers_behind_a_real_sshd_bastion_share_its_connections_and_its_pinned_key() {
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    if !sshd::available() {
        return;
    }
    // No join window: every request below is a backup of its own.
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 7,
            ..FleetOptions::default().sim
        },
        manual_window: Duration::ZERO,
        ..FleetOptions::default()
    })
    .await;
    fleet.postpone_all().await;
    let tenant = fleet.sim.devices()[0].tenant_id;
    let bastion = sshd::start_conf(
        &exports.join(EXPORT),
        false,
        None,
        &["AllowTcpForwarding yes"],
    );
    let closed = sshd::start_conf(
        &exports.join(EXPORT),
        false,
        None,
        &["AllowTcpForwarding no"],
    );
    let proxy = Proxy::start(bastion.port).await;
    let via = |port: u16| {
        Some(JumpSetting::Via(JumpSpec {
            host: "127.0.0.1".into(),
            port,
            username: Some(sshd::USER.into()),
            password: Some(Secret::new(sshd::PASSWORD)),
            key: None,
        }))
    };
    let devices: Vec<NewDevice> = fleet
        .sim
        .devices()
        .iter()
        .enumerate()
        .map(|(i, d)| NewDevice {
            tenant_id: tenant,
            jump: if i < 6 {
                via(proxy.port)
            } else {
                via(closed.port)
            },
            ..d.new_device()
        })
        .collect();
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, || {
            chrono::Utc::now() + chrono::Duration::hours(1)
        })
        .await
        .unwrap();
    let behind: Vec<Uuid> = devices[..6].iter().map(|d| d.id).collect();
    let (shown, source) = rosbackup::bastions::device_jump(fleet.store(), behind[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown, format!("127.0.0.1:{}", proxy.port));
    assert_eq!(source, jump::JumpSource::Device);

    let (stop, worker, env) = fleet.spawn_worker("bastion", 4);
    let all: Vec<Uuid> = devices.iter().map(|d| d.id).collect();
    let runs = back_up(&fleet, &all, "first").await;
    for (status, kind, message) in &runs[..6] {
        assert_eq!(status, "success", "{kind:?} {message}");
    }
    let (status, kind, message) = &runs[6];
    assert_eq!(status, "failed");
    assert_eq!(
        kind.as_deref(),
        Some("bastion_forward_refused"),
        "{message}"
    );
    assert!(
        message.starts_with(&format!("via jump host 127.0.0.1:{}", closed.port)),
        "{message}"
    );
    // The routers' keys were pinned, each its own; the bastion's once.
    for d in &devices[..6] {
        let row = fleet.store().device(d.id).await.unwrap().unwrap();
        assert_eq!(
            row.ssh_host_key_fingerprint,
            fleet.sim.host_key_fingerprint(d.id)
        );
    }
    let pinned = rosbackup::bastions::pin(fleet.store(), tenant, "127.0.0.1", proxy.port)
        .await
        .unwrap()
        .expect("the bastion's key is pinned");
    assert!(
        bastion.fingerprints.iter().any(|(_, f)| *f == pinned),
        "{pinned} is the bastion's"
    );
    let first = proxy.connects();
    assert!(
        (1..=2).contains(&first),
        "{first} bastion connections for 6 backups (bound 2)"
    );
    assert!(env.bastions.opened() <= 2 + 1, "{:?}", env.bastions);
    assert_eq!(
        opened_metric(&env),
        env.bastions.opened(),
        "the worker's metric counts the pool's connections"
    );

    // Again: the pooled connection carries the next backups too.
    let runs = back_up(&fleet, &behind, "second").await;
    assert!(runs.iter().all(|r| r.0 == "success"), "{runs:?}");
    assert!(proxy.connects() <= 2, "{} connections", proxy.connects());

    // Every bastion connection cut: the next jobs reconnect and succeed.
    proxy.cut();
    let runs = back_up(&fleet, &behind, "after the cut").await;
    assert!(runs.iter().all(|r| r.0 == "success"), "{runs:?}");
    let after = proxy.connects();
    assert!(
        after > first && after <= first + 2,
        "{first} then {after} connections"
    );

    // The bastion's key "changed": its pin is another key now.
    let other = format!("SHA256:{}", "A".repeat(43));
    sqlx::query("UPDATE bastion_host_keys SET fingerprint = $1 WHERE port = $2")
        .bind(&other)
        .bind(i32::from(proxy.port))
        .execute(fleet.store().pool())
        .await
        .unwrap();
    let runs = back_up(&fleet, &behind, "key changed").await;
    for (status, kind, message) in &runs {
        assert_eq!(status, "failed");
        assert_eq!(
            kind.as_deref(),
            Some("bastion_host_key_mismatch"),
            "{message}"
        );
        assert!(
            message.starts_with(&format!("via jump host 127.0.0.1:{}", proxy.port))
                && message.contains(&other),
            "{message}"
        );
        assert!(
            rosbackup::device::presented_fingerprint(message).is_none(),
            "not read as the router's key: {message}"
        );
    }
    for id in &behind {
        let row = fleet.store().device(*id).await.unwrap().unwrap();
        assert_eq!(
            row.blocked_reason.as_deref(),
            Some("bastion_host_key_mismatch")
        );
        assert!(
            row.ssh_host_key_fingerprint.is_some(),
            "the router's own pin is kept"
        );
    }
    let listed = rosbackup::bastions::bastions(fleet.store(), Some(tenant))
        .await
        .unwrap();
    let b = listed
        .iter()
        .find(|b| b.port == i32::from(proxy.port))
        .unwrap();
    assert_eq!(b.presented_fingerprint.as_deref(), Some(pinned.as_str()));

    // What an operator sees: the device's bastion (host only), and the list of bastions.
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .envs(fleet.process_env())
            .args(args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}: {out}\n{err}");
        assert!(!out.contains(sshd::PASSWORD) && !err.contains(sshd::PASSWORD));
        out
    };
    let shown = cli(&["devices", "show", &behind[0].to_string()]);
    assert!(
        shown.contains(&format!("bastion 127.0.0.1:{} (device)", proxy.port)),
        "{shown}"
    );
    let listed = cli(&["bastions", "list", "--tenant", &tenant.to_string()]);
    assert!(
        listed.contains(&other) && listed.contains(&pinned),
        "{listed}"
    );

    // Reset: exactly the devices behind it are unblocked, and back up again.
    let out = cli(&[
        "bastions",
        "reset-host-key",
        &format!("127.0.0.1:{}", proxy.port),
        "--tenant",
        &tenant.to_string(),
    ]);
    assert!(
        out.contains("pinned key forgotten") && out.contains("6 device(s) unblocked"),
        "{out}"
    );
    let runs = back_up(&fleet, &behind, "after the reset").await;
    assert!(runs.iter().all(|r| r.0 == "success"), "{runs:?}");
    assert_eq!(
        rosbackup::bastions::pin(fleet.store(), tenant, "127.0.0.1", proxy.port)
            .await
            .unwrap(),
        Some(pinned)
    );

    let _ = stop.send(());
    let _ = worker.await;
    fleet.cleanup().await;
}

/// Which way a device of the mixed fleet logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Password,
    Key,
    Jump,
}

/// 200 routers: a third password-only, a third key-only, a third behind a real sshd
/// bastion, with faults in every group (routers that refuse logins, refuse connections,
/// never speak, drop mid-export or answer garbage; stored keys the router refuses; a
/// wrong bastion password), backed up by an enqueuer and two workers. Every healthy
/// device is backed up; every fault ends in its kind — the router's kinds behind the
/// bastion too, `bastion_auth_failed` only for the bastion's refusal; the bastion sees at
/// most the bound of connections per worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_fleet_of_200_with_a_third_behind_a_bastion_classifies_every_fault() {
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    if !sshd::available() {
        return;
    }
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 200,
            faults: "key-only=67,auth=8,refuse=8,silent=4,drop=8,garbage=8"
                .parse()
                .unwrap(),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let bastion = sshd::start_conf(
        &exports.join(EXPORT),
        false,
        None,
        &["AllowTcpForwarding yes", "MaxStartups 100"],
    );
    let proxy = Proxy::start(bastion.port).await;
    let wrong = Proxy::start(bastion.port).await;
    let jump = |port: u16, password: &str| {
        Some(JumpSetting::Via(JumpSpec {
            host: "127.0.0.1".into(),
            port,
            username: Some(sshd::USER.into()),
            password: Some(Secret::new(password)),
            key: None,
        }))
    };
    let sim_devices = fleet.sim.devices();
    let a_key = sim_devices
        .iter()
        .find_map(|d| d.user_key.clone())
        .expect("a key-only router");
    let other_key = sim_devices
        .iter()
        .filter_map(|d| d.user_key.clone())
        .find(|k| *k != a_key)
        .expect("two key-only routers");
    let mut groups = HashMap::new();
    let mut expected: HashMap<Uuid, Option<&str>> = HashMap::new();
    let (mut alternate, mut wrong_keys, mut wrong_bastion) = (0, 0, 0);
    let devices: Vec<NewDevice> = sim_devices
        .iter()
        .map(|d| {
            let mut nd = d.new_device();
            let router_kind = match d.fault.map(|f| f.to_string()).as_deref() {
                Some("auth") => Some("auth_failed"),
                Some("refuse") => Some("connection_refused"),
                Some("silent") => Some("timeout"),
                Some("drop") => Some("truncated_output"),
                Some("garbage") => Some("bad_output"),
                _ => None,
            };
            let group = if d.user_key.is_some() {
                Group::Key
            } else {
                alternate += 1;
                if alternate % 2 == 0 {
                    Group::Jump
                } else {
                    Group::Password
                }
            };
            let mut kind = router_kind;
            match group {
                Group::Key => {
                    nd.password = Secret::default();
                    // Three routers get a key they do not know.
                    if wrong_keys < 3 && d.user_key.as_ref() != Some(&other_key) {
                        wrong_keys += 1;
                        nd.ssh_key = Some(other_key.clone());
                        kind = Some("auth_failed");
                    }
                }
                Group::Password => {}
                Group::Jump => {
                    // Three healthy ones go through with a wrong bastion password.
                    if router_kind.is_none() && wrong_bastion < 3 {
                        wrong_bastion += 1;
                        nd.jump = jump(wrong.port, "not-the-bastion-password");
                        kind = Some("bastion_auth_failed");
                    } else {
                        nd.jump = jump(proxy.port, sshd::PASSWORD);
                    }
                }
            }
            groups.insert(d.id, group);
            expected.insert(d.id, kind);
            nd
        })
        .collect();
    for g in [Group::Password, Group::Key, Group::Jump] {
        let n = groups.values().filter(|x| **x == g).count();
        assert!((60..=70).contains(&n), "{g:?}: {n}");
        let faulty = devices
            .iter()
            .filter(|d| groups[&d.id] == g && expected[&d.id].is_some())
            .count();
        assert!(faulty >= 3, "{g:?} has {faulty} faults");
    }
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, chrono::Utc::now)
        .await
        .unwrap();
    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_a, wa, env_a) = fleet.spawn_worker("wa", 10);
    let (stop_b, wb, env_b) = fleet.spawn_worker("wb", 10);
    fleet
        .wait_for(
            Duration::from_secs(240),
            "every device attempted once",
            || async { fleet.store().counts(None).await.expect("counts").never == 0 },
        )
        .await;
    let rows: HashMap<Uuid, rosbackup::store::Device> = fleet
        .store()
        .list_devices(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    for d in &devices {
        let row = &rows[&d.id];
        let what = format!(
            "{} ({:?}): {:?} {:?}",
            d.name, groups[&d.id], row.last_error_kind, row.last_error_message
        );
        match expected[&d.id] {
            None => assert_eq!(row.last_status.as_deref(), Some("success"), "{what}"),
            Some(kind) => {
                assert_eq!(row.last_status.as_deref(), Some("failed"), "{what}");
                assert_eq!(row.last_error_kind.as_deref(), Some(kind), "{what}");
                let message = row.last_error_message.clone().unwrap_or_default();
                // On the bastion or through it, the message names it.
                if groups[&d.id] == Group::Jump
                    && matches!(kind, "bastion_auth_failed" | "connection_refused")
                {
                    assert!(message.starts_with("via jump host 127.0.0.1:"), "{what}");
                }
            }
        }
    }
    // Two workers, at most two connections each, to the bastion they could log in to.
    assert!(
        (1..=4).contains(&proxy.connects()),
        "{} bastion connections",
        proxy.connects()
    );
    // Each worker's rosbackup_bastion_connections_opened_total: at most its bound
    // (ROSBACKUP_BASTION_CONNECTIONS, 2) for ~60 backups through the bastion, and together
    // the connections the bastion accepted a login on (the wrong password's are refused
    // before they count).
    let (a, b) = (opened_metric(&env_a), opened_metric(&env_b));
    assert!(a <= 2 && b <= 2, "opened {a} and {b}");
    assert!(a + b >= 1, "no bastion connection counted");
    assert_eq!(
        (a, b),
        (env_a.bastions.opened(), env_b.bastions.opened()),
        "the metrics are the pools' counts"
    );
    let _ = (stop_e.send(()), stop_a.send(()), stop_b.send(()));
    let _ = (enq.await, wa.await, wb.await);
    fleet.cleanup().await;
}

/// Resolution as stored: the device's own jump host wins, else its credential profile's,
/// else its tenant's default; `direct` ignores the inherited ones. Jump secrets are sealed
/// for their owner and re-sealed by a key rotation (they open under the new key only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_hosts_resolve_device_then_profile_then_tenant_and_rotate_with_the_key() {
    let fleet = Fleet::of(4).await;
    let tenant = fleet.sim.devices()[0].tenant_id;
    let profile = fleet
        .store()
        .create_profile(
            &fleet.key,
            &rosbackup::profiles::NewProfile {
                tenant_id: tenant,
                name: "via-profile".into(),
                username: "backup".into(),
                password: Some(Secret::new("Profile-Pw-1")),
                ssh_key: None,
            },
        )
        .await
        .unwrap();
    let spec = |host: &str| JumpSpec {
        host: host.into(),
        port: 2222,
        username: None,
        password: Some(Secret::new(format!("Jump-Pw-{host}"))),
        key: None,
    };
    let devices: Vec<NewDevice> = fleet
        .sim
        .devices()
        .iter()
        .enumerate()
        .map(|(i, d)| NewDevice {
            tenant_id: tenant,
            credential_profile: (i > 0).then(|| "via-profile".into()),
            jump: match i {
                0 => Some(JumpSetting::Via(spec("own.example"))),
                3 => Some(JumpSetting::Direct),
                _ => None,
            },
            ..d.new_device()
        })
        .collect();
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, chrono::Utc::now)
        .await
        .unwrap();
    rosbackup::bastions::set_profile(
        fleet.store(),
        &fleet.key,
        profile.id,
        Some(&spec("profile.example")),
    )
    .await
    .unwrap();
    rosbackup::bastions::set_tenant(
        fleet.store(),
        &fleet.key,
        tenant,
        Some(&spec("tenant.example")),
    )
    .await
    .unwrap();
    let via = |i: usize| {
        let id = devices[i].id;
        let store = fleet.store().clone();
        async move { rosbackup::bastions::device_jump(&store, id).await.unwrap() }
    };
    assert_eq!(
        via(0).await,
        Some(("own.example:2222".into(), jump::JumpSource::Device))
    );
    assert_eq!(
        via(1).await,
        Some(("profile.example:2222".into(), jump::JumpSource::Profile))
    );
    rosbackup::bastions::set_profile(fleet.store(), &fleet.key, profile.id, None)
        .await
        .unwrap();
    assert_eq!(
        via(1).await,
        Some(("tenant.example:2222".into(), jump::JumpSource::Tenant))
    );
    assert_eq!(via(3).await, None, "direct overrides the tenant's");

    // Changing a jump host through the CLI lifts the bastion_host_key_mismatch block of a
    // device that no longer goes through that bastion, and only that.
    let block = |ids: Vec<Uuid>| {
        let store = fleet.store().clone();
        async move {
            sqlx::query(
                "UPDATE devices SET blocked_reason = 'bastion_host_key_mismatch', \
                 blocked_at = now() WHERE id = ANY($1)",
            )
            .bind(ids)
            .execute(store.pool())
            .await
            .unwrap();
        }
    };
    let blocked = |i: usize| {
        let id = devices[i].id;
        let store = fleet.store().clone();
        async move { store.device(id).await.unwrap().unwrap().blocked_reason }
    };
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .envs(fleet.process_env())
            .env("TENANT_JUMP_PW", "Jump-Pw-tenant.example")
            .args(args)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{args:?}: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    block(vec![devices[1].id, devices[2].id]).await;
    let t = tenant.to_string();
    let out = cli(&[
        "credentials",
        "set",
        "via-profile",
        "--tenant",
        &t,
        "--jump-host",
        "profile2.example:2222",
    ]);
    assert!(
        out.contains("2 bastion_host_key_mismatch block(s) lifted"),
        "{out}"
    );
    assert_eq!((blocked(1).await, blocked(2).await), (None, None));
    block(vec![devices[1].id]).await;
    let d1 = devices[1].id.to_string();
    // The same bastion with other settings: still blocked.
    let out = cli(&[
        "devices",
        "set-credentials",
        &d1,
        "--jump-host",
        "ops@profile2.example:2222",
    ]);
    assert!(!out.contains("lifted"), "{out}");
    assert_eq!(
        blocked(1).await.as_deref(),
        Some("bastion_host_key_mismatch")
    );
    let out = cli(&["devices", "set-credentials", &d1, "--jump-host", "direct"]);
    assert!(out.contains("block lifted"), "{out}");
    assert_eq!(blocked(1).await, None);
    block(vec![devices[2].id]).await;
    let out = cli(&[
        "tenants",
        "set-jump-host",
        &t,
        "--jump-host",
        "tenant.example:2222",
        "--jump-password-env",
        "TENANT_JUMP_PW",
    ]);
    assert!(
        !out.contains("lifted"),
        "the profile's still applies: {out}"
    );
    assert_eq!(
        blocked(2).await.as_deref(),
        Some("bastion_host_key_mismatch")
    );

    // A rotation re-seals the jump secrets of devices and tenants with the rest.
    let new = rosbackup::credentials::CredentialKey::from_base64(
        &rosbackup::credentials::CredentialKey::generate_base64(),
    )
    .unwrap();
    fleet.store().rotate_key(&fleet.key, &new).await.unwrap();
    let (sealed,): (Vec<u8>,) =
        sqlx::query_as("SELECT jump_password_enc FROM devices WHERE id = $1")
            .bind(devices[0].id)
            .fetch_one(fleet.store().pool())
            .await
            .unwrap();
    assert_eq!(
        new.open_jump_password(&devices[0].id, &sealed)
            .unwrap()
            .expose(),
        "Jump-Pw-own.example"
    );
    assert!(
        fleet
            .key
            .open_jump_password(&devices[0].id, &sealed)
            .is_err()
    );
    assert!(
        new.open(&devices[0].id, &sealed).is_err(),
        "a jump password never passes for the device's own"
    );
    let (sealed,): (Vec<u8>,) =
        sqlx::query_as("SELECT password_enc FROM tenant_jump_hosts WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(fleet.store().pool())
            .await
            .unwrap();
    assert_eq!(
        new.open_jump_password(&tenant, &sealed).unwrap().expose(),
        "Jump-Pw-tenant.example"
    );
    fleet.cleanup().await;
}

/// A worker's `rosbackup_bastion_connections_opened_total`, as Prometheus reads it.
fn opened_metric(env: &rosbackup::worker::JobEnv) -> u64 {
    let text = env.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix("rosbackup_bastion_connections_opened_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bastion metric in:\n{text}"))
}
