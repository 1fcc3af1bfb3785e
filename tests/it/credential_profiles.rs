//! Credential profiles (#18): many devices log in with one profile's credentials unless
//! they have their own; fixing the profile fixes (and unblocks) all of them at once; a
//! profile in use cannot be removed; the API is admin-only and never returns a secret.

use crate::common::fleet::{Fleet, FleetOptions};
use crate::common::web::{Api, router, token};
use axum::http::StatusCode;
use rosbackup::Secret;
use rosbackup::access::Role;
use rosbackup::profiles::NewProfile;
use rosbackup::sim::SimConfig;
use rosbackup::store::{KeyChange, NewDevice, StoreError};
use rosbackup::web::AuthMode;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const USER: &str = "backup";
const SHARED_PW: &str = "Shared-Fleet-Pw-5150";

async fn shared_fleet(devices: usize) -> Fleet {
    Fleet::start(FleetOptions {
        sim: SimConfig {
            devices,
            shared_login: Some((USER.into(), SHARED_PW.into())),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await
}

/// Devices on a profile with a wrong password are blocked `auth_failed`, except the one
/// with a (right) password of its own: its own wins. Setting the profile's password
/// lifts all their blocks in one change and they are backed up. The profile cannot be
/// removed while devices use it; the credentials resolve in the worker's lease statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_profile_change_fixes_and_unblocks_all_its_devices_and_own_credentials_win() {
    let fleet = shared_fleet(4).await;
    let tenant = fleet.sim.devices()[0].tenant_id;
    // The simulator spreads devices over tenants; keep them in one.
    let profile = fleet
        .store()
        .create_profile(
            &fleet.key,
            &NewProfile {
                tenant_id: tenant,
                name: "fleet".into(),
                username: USER.into(),
                password: Some(Secret::new("not-the-password")),
                ssh_key: None,
            },
        )
        .await
        .unwrap();
    assert!(profile.has_password && !profile.has_ssh_key);
    let devices: Vec<NewDevice> = fleet
        .sim
        .devices()
        .iter()
        .enumerate()
        .map(|(i, d)| NewDevice {
            tenant_id: tenant,
            credential_profile: Some("fleet".into()),
            jump: None,
            // Device 3 keeps a (right) password of its own; the rest use the profile.
            username: if i == 3 { USER.into() } else { String::new() },
            password: if i == 3 {
                Secret::new(SHARED_PW)
            } else {
                Secret::default()
            },
            ..d.new_device()
        })
        .collect();
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, chrono::Utc::now)
        .await
        .unwrap();
    // A profile of another tenant is not found for these devices.
    let mut elsewhere = devices[0].clone();
    elsewhere.id = Uuid::new_v4();
    elsewhere.name = "elsewhere".into();
    elsewhere.tenant_id = Uuid::new_v4();
    let e = fleet
        .store()
        .upsert_devices(&fleet.key, &[elsewhere], chrono::Utc::now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no credential profile named"), "{e}");

    let c = fleet
        .store()
        .credentials(&fleet.key, devices[0].id)
        .await
        .unwrap();
    assert_eq!(c.profile, Some(profile.id));
    assert_eq!(c.username, USER);
    let c = fleet
        .store()
        .credentials(&fleet.key, devices[3].id)
        .await
        .unwrap();
    assert_eq!(c.profile, None, "its own password wins");

    let (stop_e, enq) = fleet.spawn_enqueuer();
    let (stop_w, w, _) = fleet.spawn_worker("profiles", 4);
    let row = |id: Uuid| {
        let store = fleet.store().clone();
        async move { store.device(id).await.unwrap().unwrap() }
    };
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device attempted",
            || async {
                let mut all = true;
                for d in &devices {
                    all &= row(d.id).await.last_attempt_at.is_some();
                }
                all
            },
        )
        .await;
    for d in &devices[..3] {
        assert_eq!(
            row(d.id).await.blocked_reason.as_deref(),
            Some("auth_failed")
        );
    }
    assert_eq!(
        row(devices[3].id).await.last_status.as_deref(),
        Some("success")
    );

    // Removing it is refused with the count.
    match fleet.store().remove_profile(profile.id).await {
        Err(StoreError::ProfileInUse { devices: n, .. }) => assert_eq!(n, 4),
        other => panic!("expected ProfileInUse, got {other:?}"),
    }
    // One change fixes all three.
    let u = fleet
        .store()
        .update_profile(
            &fleet.key,
            profile.id,
            None,
            Some(&Secret::new(SHARED_PW)),
            KeyChange::Keep,
        )
        .await
        .unwrap();
    assert_eq!(u.lifted, 3);
    assert_eq!(u.profile.devices, 4);
    fleet
        .wait_for(
            Duration::from_secs(30),
            "the profile's devices backed up",
            || async {
                let mut all = true;
                for d in &devices[..3] {
                    all &= row(d.id).await.last_status.as_deref() == Some("success");
                }
                all
            },
        )
        .await;
    let _ = stop_e.send(());
    let _ = stop_w.send(());
    enq.await.unwrap();
    w.await.unwrap().unwrap();

    // A profile left without password and key is refused; rotation re-seals profiles.
    let e = fleet
        .store()
        .update_profile(
            &fleet.key,
            profile.id,
            None,
            Some(&Secret::default()),
            KeyChange::Keep,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs a password or a key"), "{e}");
    let new = rosbackup::credentials::CredentialKey::from_base64(
        &rosbackup::credentials::CredentialKey::generate_base64(),
    )
    .unwrap();
    fleet.store().rotate_key(&fleet.key, &new).await.unwrap();
    let c = fleet
        .store()
        .credentials(&new, devices[0].id)
        .await
        .unwrap();
    assert_eq!(c.password.expose(), SHARED_PW);
    // Once no device uses it, it can go.
    for d in &devices {
        fleet.store().set_device_profile(d.id, None).await.unwrap();
    }
    fleet.store().remove_profile(profile.id).await.unwrap();
    fleet.cleanup().await;
}

/// `/api/v1/credential-profiles`: admin only, tenant-scoped, secrets write-only, a
/// removal of a profile in use is a 409 naming the count.
#[tokio::test]
async fn the_profile_api_is_admin_only_and_never_returns_secrets() {
    let fleet = shared_fleet(1).await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let admin = Api::new(&app, Some(&token(&fleet, "a", Role::Admin, None).await));
    let viewer = Api::new(&app, Some(&token(&fleet, "v", Role::Viewer, None).await));
    let tenant = Uuid::new_v4();
    let other_tenant_admin = Api::new(
        &app,
        Some(&token(&fleet, "t", Role::Admin, Some(Uuid::new_v4())).await),
    );

    let r = viewer.get("/api/v1/credential-profiles").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin
        .post(
            "/api/v1/credential-profiles",
            Some(json!({"tenant_id": tenant, "name": "fleet", "username": USER})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = admin
        .post(
            "/api/v1/credential-profiles",
            Some(
                json!({"tenant_id": tenant, "name": "fleet", "username": USER,
                        "password": SHARED_PW}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["has_password"], true);
    assert!(!r.text.contains(SHARED_PW));
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = admin
        .post(
            "/api/v1/credential-profiles",
            Some(
                json!({"tenant_id": tenant, "name": "fleet", "username": USER,
                        "password": "x"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // No tenant named: the default one, as the CLI.
    let r = admin
        .post(
            "/api/v1/credential-profiles",
            Some(json!({"name": "default-fleet", "username": USER, "password": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["tenant_id"], json!(Uuid::nil()));
    let r = other_tenant_admin
        .get(&format!("/api/v1/credential-profiles/{id}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // A device on the profile (the API's create), then the profile cannot go. A profile
    // the tenant does not have is the body's mistake: 422 naming the field, nothing made.
    let d = &fleet.sim.devices()[0];
    let r = admin
        .post(
            "/api/v1/devices",
            Some(
                json!({"tenant_id": tenant, "name": "on-nothing", "host": d.host.to_string(),
                        "port": d.port, "credential_profile": "nope"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "credential_profile", "{}", r.text);
    let r = admin
        .post(
            "/api/v1/devices",
            Some(
                json!({"tenant_id": tenant, "name": "on-profile", "host": d.host.to_string(),
                        "port": d.port, "credential_profile": "fleet"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["credential_profile_id"], id.as_str());
    let r = admin
        .send(
            axum::http::Method::DELETE,
            &format!("/api/v1/credential-profiles/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "in_use");
    assert!(r.text.contains("1 device"), "{}", r.text);

    let r = admin
        .put(
            &format!("/api/v1/credential-profiles/{id}"),
            json!({"password": "New-Shared-Pw-2"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["devices"], 1);
    let list = admin.get("/api/v1/credential-profiles").await;
    assert_eq!(list.status, StatusCode::OK);
    for text in [&r.text, &list.text] {
        assert!(!text.contains("New-Shared-Pw-2") && !text.contains(SHARED_PW));
    }
    let r = admin
        .put(
            &format!("/api/v1/credential-profiles/{id}"),
            json!({"password": ""}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Nothing to change is refused, as `credentials set` refuses it (it was a 200).
    let r = admin
        .put(&format!("/api/v1/credential-profiles/{id}"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("nothing to change"), "{}", r.text);
    fleet.cleanup().await;
}
