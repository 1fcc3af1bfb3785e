//! Config history in the dashboard and API: the timeline, diffs (secrets masked for
//! viewers), admin-only downloads, the fleet's recent changes, tenant scoping, and a
//! server without the archive key.

use crate::common::fleet::Fleet;
use crate::common::web::{Api, call, token};
use axum::http::{Method, StatusCode};
use rosbackup::access::Role;
use rosbackup::archive::store::{ArchiveStore, Incoming, IngestOptions};
use rosbackup::credentials::CredentialKey;
use rosbackup::metrics::Metrics;
use rosbackup::web::{AuthMode, WebSettings, WebState};
use std::time::Duration;
use uuid::Uuid;

fn app(fleet: &Fleet, key: Option<CredentialKey>) -> axum::Router {
    rosbackup::web::router(WebState::new(
        fleet.store().clone(),
        fleet.queue.clone(),
        Some(fleet.key.clone()),
        Default::default(),
        Metrics::new(),
        WebSettings {
            auth: AuthMode::Required,
            archive_key: key,
            manual_timeout: Duration::from_secs(5),
            ..WebSettings::default()
        },
    ))
}

fn config(psk: &str, extra: &str) -> String {
    format!(
        "/interface wireless security-profiles\nadd authentication-types=wpa2-psk mode=dynamic-keys name=office wpa2-pre-shared-key={psk}\n/ip address\nadd address=192.0.2.1/24 interface=ether1\n{extra}"
    )
}

async fn ingest(archive: &ArchiveStore, device: Uuid, tenant: Uuid, text: &str, n: u32) {
    use sha2::Digest;
    let snap = Incoming {
        msg_key: format!("test-{device}-{n}"),
        stream_sequence: Some(u64::from(n)),
        device_id: device,
        event_tenant: tenant.to_string(),
        collected_at: chrono::Utc::now() + chrono::Duration::seconds(i64::from(n)),
        routeros_version: Some("7.16.2".into()),
        event_normalization: 2,
        text: text.as_bytes().to_vec(),
        sha256: hex(&sha2::Sha256::digest(text.as_bytes())),
    };
    archive
        .ingest(&snap, IngestOptions::default())
        .await
        .expect("ingest");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn versions_diffs_downloads_and_changes_respect_roles_and_tenants() {
    let fleet = Fleet::of(2).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let (d, other) = (&devices[0], &devices[1]);
    // Put the second device in another tenant.
    let tenant_b = Uuid::new_v4();
    sqlx::query("UPDATE devices SET tenant_id = $2 WHERE id = $1")
        .bind(other.id)
        .bind(tenant_b)
        .execute(fleet.store().pool())
        .await
        .unwrap();
    let key_b64 = CredentialKey::generate_base64();
    let key = CredentialKey::from_base64(&key_b64).unwrap();
    let archive = ArchiveStore::new(fleet.store().clone(), key.clone());
    let psk1 = "correct-horse-battery-1";
    let psk2 = "correct-horse-battery-2";
    ingest(&archive, d.id, d.tenant_id, &config(psk1, ""), 1).await;
    ingest(
        &archive,
        d.id,
        d.tenant_id,
        &config(psk2, "/ip dns\nset servers=192.0.2.53\n"),
        2,
    )
    .await;
    ingest(
        &archive,
        other.id,
        tenant_b,
        &config("other-tenant-secret", ""),
        3,
    )
    .await;

    let app = app(&fleet, Some(key.clone()));
    let admin = Api::new(&app, Some(&token(&fleet, "ops", Role::Admin, None).await));
    let viewer = Api::new(&app, Some(&token(&fleet, "noc", Role::Viewer, None).await));
    let scoped = Api::new(
        &app,
        Some(&token(&fleet, "b", Role::Admin, Some(tenant_b)).await),
    );

    let list = viewer
        .get(&format!("/api/v1/devices/{}/versions", d.id))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let versions = list.body.as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let (newest, first) = (
        versions[0]["id"].as_i64().unwrap(),
        versions[1]["id"].as_i64().unwrap(),
    );
    assert_eq!(versions[0]["previous_version_id"], first);
    let menus: Vec<&str> = versions[0]["changed_menus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        menus.contains(&"/interface wireless security-profiles"),
        "{menus:?}"
    );
    assert!(menus.contains(&"/ip dns"), "{menus:?}");

    // Diffs: admins see the secret, viewers see it masked; both see the change.
    let path = format!("/api/v1/devices/{}/versions/{newest}/diff", d.id);
    let a = admin.get(&path).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let unified = a.body["unified"].as_str().unwrap();
    assert!(unified.contains(&format!("-add authentication-types=wpa2-psk mode=dynamic-keys name=office wpa2-pre-shared-key={psk1}")));
    assert!(unified.contains("+set servers=192.0.2.53"));
    let v = viewer.get(&path).await;
    let unified = v.body["unified"].as_str().unwrap();
    assert!(unified.contains("+set servers=192.0.2.53"), "{unified}");
    assert!(
        !unified.contains(psk1) && !unified.contains(psk2),
        "a viewer sees a secret: {unified}"
    );
    assert!(unified.contains("wpa2-pre-shared-key=••••••"));
    // Against an explicit version, and the page renders the same.
    let r = admin
        .get(&format!(
            "/api/v1/devices/{}/versions/{first}/diff?against={newest}",
            d.id
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["unified"]
            .as_str()
            .unwrap()
            .contains("-set servers=192.0.2.53")
    );
    let page = viewer
        .get(&format!("/devices/{}/versions/{newest}", d.id))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("class=\"add\""), "coloured diff");
    assert!(
        !page.text.contains(psk2),
        "the diff page shows a secret to a viewer"
    );
    assert!(
        !page.text.contains("id=\"download\""),
        "viewers get no download button"
    );

    // Downloads: admins only, exact text.
    let text_path = format!("/api/v1/devices/{}/versions/{newest}/text", d.id);
    let r = viewer.get(&text_path).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = admin.get(&text_path).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains(psk2));
    assert!(
        r.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;"),
        "a download, not a page"
    );
    let r = viewer
        .get(&format!("/devices/{}/versions/{newest}/download", d.id))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Tenants: b sees its own device's history only.
    let r = scoped
        .get(&format!("/api/v1/devices/{}/versions", d.id))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = scoped
        .get(&format!("/api/v1/devices/{}/versions/{newest}/diff", d.id))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = scoped.get(&text_path).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let changes = scoped.get("/api/v1/changes").await;
    let list = changes.body.as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", changes.text);
    assert_eq!(list[0]["device_id"], serde_json::json!(other.id));
    // A version id of another device is not reachable through this device's path.
    let theirs = admin
        .get(&format!("/api/v1/devices/{}/versions", other.id))
        .await;
    let theirs_id = theirs.body[0]["id"].as_i64().unwrap();
    let r = admin
        .get(&format!(
            "/api/v1/devices/{}/versions/{theirs_id}/diff",
            d.id
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let all = admin.get("/api/v1/changes").await;
    assert_eq!(all.body.as_array().unwrap().len(), 3);

    // The device page shows the timeline; the overview the fleet's changes.
    let page = viewer.get(&format!("/devices/{}", d.id)).await;
    assert!(
        page.text.contains("id=\"versions\""),
        "timeline on the device page"
    );
    assert!(
        page.text
            .contains(&format!("/devices/{}/versions/{newest}", d.id))
    );
    let ov = viewer.get("/").await;
    assert!(ov.text.contains("id=\"changes\""));

    // Without the archive key: versions list, diffs and downloads refuse clearly.
    let keyless = app_without_key(&fleet);
    let api = Api::new(&keyless, admin.token.as_deref());
    assert_eq!(
        api.get(&format!("/api/v1/devices/{}/versions", d.id))
            .await
            .status,
        StatusCode::OK
    );
    let r = api.get(&path).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "archive_unavailable");
    let r = call(
        &keyless,
        Method::GET,
        &format!("/devices/{}/versions/{newest}", d.id),
        &[(
            "authorization",
            &format!("Bearer {}", admin.token.as_deref().unwrap()),
        )],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("no ARCHIVE_ENCRYPTION_KEY"));
    fleet.cleanup().await;
}

fn app_without_key(fleet: &Fleet) -> axum::Router {
    app(fleet, None)
}

#[test]
fn masking_keeps_the_structure_of_a_line() {
    let m = rosbackup::web::history::mask_secrets("add name=u password=\"p w\" group=full");
    assert_eq!(m, "add name=u password=•••••• group=full");
}
