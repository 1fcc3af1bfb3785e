//! The JSON API and the dashboard's auth on the real services: every route's status
//! codes, roles, tenant isolation, validation errors, sessions and CSRF, and the
//! enqueuer's refusal to start open.

use crate::common::fleet::{Fleet, FleetOptions};
use crate::common::web::{Api, call, router, token};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use rosbackup::access::{Access, Role};
use rosbackup::sim::SimConfig;
use rosbackup::store::NewDevice;
use rosbackup::web::AuthMode;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// A fleet whose devices are split over two tenants: the first half in `a`, the rest in `b`.
async fn two_tenant_fleet(devices: usize, faults: &str) -> (Fleet, Uuid, Uuid, Vec<NewDevice>) {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices,
            faults: faults.parse().expect("fault spec"),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let devices: Vec<NewDevice> = fleet
        .sim
        .devices()
        .iter()
        .enumerate()
        .map(|(i, d)| NewDevice {
            tenant_id: if i < devices / 2 { a } else { b },
            ..d.new_device()
        })
        .collect();
    fleet
        .store()
        .upsert_devices(&fleet.key, &devices, || {
            chrono::Utc::now() + chrono::Duration::hours(1)
        })
        .await
        .expect("import");
    (fleet, a, b, devices)
}

/// Every API route with a method, a concrete path, a body, and whether it acts.
fn routes(device: Uuid) -> Vec<(Method, String, Option<Value>, bool)> {
    let d = device;
    vec![
        (Method::GET, "/api/v1/whoami".into(), None, false),
        (Method::GET, "/api/v1/openapi.json".into(), None, false),
        (Method::GET, "/api/v1/overview".into(), None, false),
        (Method::GET, "/api/v1/devices".into(), None, false),
        (Method::GET, format!("/api/v1/devices/{d}"), None, false),
        (
            Method::GET,
            format!("/api/v1/devices/{d}/runs"),
            None,
            false,
        ),
        (Method::GET, "/api/v1/runs".into(), None, false),
        (Method::GET, "/api/v1/queue".into(), None, false),
        (Method::GET, "/api/v1/jobs?state=due".into(), None, false),
        (Method::GET, "/api/v1/stats/activity".into(), None, false),
        (Method::GET, "/api/v1/stats/backup-ages".into(), None, false),
        (Method::GET, "/api/v1/tenants".into(), None, false),
        (
            Method::GET,
            format!("/api/v1/tenants/{}/jump-host", Uuid::nil()),
            None,
            false,
        ),
        (
            Method::POST,
            "/api/v1/devices".into(),
            Some(
                json!({"name": "new-one", "host": "127.0.9.9", "username": "admin",
                        "password": "pw-new", "tenant_id": Uuid::new_v4()}),
            ),
            true,
        ),
        (
            Method::PUT,
            format!("/api/v1/devices/{d}/credentials"),
            Some(json!({"password": "pw"})),
            true,
        ),
        (
            Method::PUT,
            format!("/api/v1/devices/{d}/jump-host"),
            Some(json!({"jump_host": "direct"})),
            true,
        ),
        (
            Method::PUT,
            format!("/api/v1/tenants/{}", Uuid::nil()),
            Some(json!({"name": "main"})),
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/devices/{d}/disable"),
            None,
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/devices/{d}/enable"),
            None,
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/devices/{d}/unblock"),
            None,
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/devices/{d}/reset-host-key"),
            None,
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/devices/{d}/backup"),
            None,
            true,
        ),
        (Method::POST, "/api/v1/jobs/nope/retry".into(), None, true),
        (Method::DELETE, "/api/v1/jobs/nope".into(), None, true),
        (Method::DELETE, format!("/api/v1/devices/{d}"), None, true),
    ]
}

#[tokio::test]
async fn every_route_needs_a_valid_token_and_acting_needs_admin() {
    let (fleet, _a, _b, devices) = two_tenant_fleet(4, "").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let admin = token(&fleet, "ops", Role::Admin, None).await;
    let viewer = token(&fleet, "noc", Role::Viewer, None).await;
    let revoked = token(&fleet, "old", Role::Admin, None).await;
    Access::new(fleet.store().clone())
        .revoke_token("old")
        .await
        .expect("revoke");
    let forged = {
        // A real token id with a different secret.
        let (id, _) = revoked.trim_start_matches("rbk_").split_once('_').unwrap();
        format!("rbk_{id}_{}", "A".repeat(43))
    };

    for (method, path, body, acts) in routes(devices[0].id) {
        for bad in [
            None,
            Some("garbage"),
            Some(revoked.as_str()),
            Some(forged.as_str()),
        ] {
            let r = Api::new(&app, bad)
                .send(method.clone(), &path, body.clone())
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {bad:?}"
            );
            assert_eq!(r.code(), "unauthenticated", "{method} {path}");
            assert!(
                r.headers.contains_key("www-authenticate"),
                "{method} {path} lacks WWW-Authenticate"
            );
        }
        let r = Api::new(&app, Some(&viewer))
            .send(method.clone(), &path, body.clone())
            .await;
        if acts {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "viewer {method} {path}");
            assert_eq!(r.code(), "forbidden");
        } else {
            assert_eq!(
                r.status,
                StatusCode::OK,
                "viewer {method} {path}: {}",
                r.text
            );
        }
    }
    // A route asked with a method it does not take: our JSON error with axum's Allow
    // header (it was an empty body), and only after authentication.
    let r = Api::new(&app, Some(&viewer))
        .send(axum::http::Method::PATCH, "/api/v1/devices", None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text);
    assert_eq!(r.code(), "method_not_allowed", "{}", r.text);
    assert!(r.headers.contains_key("allow"), "{:?}", r.headers);
    let r = Api::new(&app, None)
        .send(axum::http::Method::PATCH, "/api/v1/devices", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    // The admin may act: each acting route answers with its own success or a domain
    // error, never 401/403.
    let expect = [
        StatusCode::CREATED,    // create
        StatusCode::OK,         // credentials
        StatusCode::OK,         // jump host
        StatusCode::OK,         // name a tenant
        StatusCode::OK,         // disable
        StatusCode::OK,         // enable
        StatusCode::OK,         // unblock
        StatusCode::OK,         // reset host key
        StatusCode::ACCEPTED,   // backup (queued)
        StatusCode::NOT_FOUND,  // retry an unknown job
        StatusCode::NOT_FOUND,  // discard an unknown job
        StatusCode::NO_CONTENT, // delete
    ];
    let acting: Vec<_> = routes(devices[0].id).into_iter().filter(|r| r.3).collect();
    assert_eq!(acting.len(), expect.len());
    for ((method, path, body, _), want) in acting.into_iter().zip(expect) {
        let r = Api::new(&app, Some(&admin))
            .send(method.clone(), &path, body)
            .await;
        assert_eq!(r.status, want, "admin {method} {path}: {}", r.text);
    }
    // Deleted means gone.
    let r = Api::new(&app, Some(&admin))
        .get(&format!("/api/v1/devices/{}", devices[0].id))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");

    // Probes and metrics stay open; pages send browsers to the login page.
    for open in ["/healthz", "/readyz", "/metrics"] {
        let r = call(&app, Method::GET, open, &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "{open}");
    }
    for page in [
        "/",
        "/devices",
        "/jobs",
        &format!("/devices/{}", devices[1].id),
        &format!("/devices/{}/credentials", devices[1].id),
        &format!("/devices/{}/host-key", devices[1].id),
    ] {
        let r = call(&app, Method::GET, page, &[], None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{page}");
        assert!(
            r.location().unwrap_or("").starts_with("/login?next="),
            "{page} → {:?}",
            r.location()
        );
    }
    fleet.cleanup().await;
}

#[tokio::test]
async fn a_tenant_token_sees_and_touches_only_its_tenant() {
    let (fleet, a, b, devices) = two_tenant_fleet(6, "").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let scoped = Api::new(
        &app,
        Some(&token(&fleet, "tenant-a", Role::Admin, Some(a)).await),
    );
    let global = Api::new(&app, Some(&token(&fleet, "root", Role::Viewer, None).await));
    let (mine, theirs): (Vec<_>, Vec<_>) = devices.iter().partition(|d| d.tenant_id == a);
    assert_eq!((mine.len(), theirs.len()), (3, 3));

    // Tenants have names: the API lists them, a device carries its tenant's, and the
    // dashboard's tenant filter offers names instead of truncated ids.
    rosbackup::tenant::set_name(fleet.store(), a, "acme")
        .await
        .expect("name tenant a");
    let tenants = global.get("/api/v1/tenants").await;
    assert_eq!(tenants.status, StatusCode::OK, "{}", tenants.text);
    let listed: Vec<(String, Value)> = tenants
        .body
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| {
            (
                t["tenant_id"].as_str().unwrap_or("").to_string(),
                t["name"].clone(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(a.to_string(), json!("acme"))),
        "{listed:?}"
    );
    assert!(listed.contains(&(b.to_string(), Value::Null)), "{listed:?}");
    let one = global.get(&format!("/api/v1/devices/{}", mine[0].id)).await;
    assert_eq!(one.body["tenant_name"], "acme");
    // Naming over the API: a scoped admin names its own tenant, not another.
    let r = scoped
        .put(&format!("/api/v1/tenants/{b}"), json!({"name": "stolen"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = scoped
        .put(
            &format!("/api/v1/tenants/{a}"),
            json!({"name": "Acme Corp"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "Acme Corp");
    assert_eq!(r.body["devices"], 3);
    let root_admin = Api::new(&app, Some(&token(&fleet, "namer", Role::Admin, None).await));
    let r = root_admin
        .put(
            &format!("/api/v1/tenants/{b}"),
            json!({"name": "acme corp"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = root_admin
        .put(&format!("/api/v1/tenants/{b}"), json!({"name": " "}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "name");
    rosbackup::tenant::set_name(fleet.store(), a, "acme")
        .await
        .expect("name tenant a back");
    let bearer = format!(
        "Bearer {}",
        token(&fleet, "root-page", Role::Viewer, None).await
    );
    let page = call(
        &app,
        Method::GET,
        "/devices",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text
            .contains(&format!("<option value=\"{a}\">acme (3)</option>")),
        "the tenant filter names tenant a"
    );

    // Give tenant b a run so its history exists.
    let r = Api::new(
        &app,
        Some(&token(&fleet, "root-admin", Role::Admin, None).await),
    )
    .post(&format!("/api/v1/devices/{}/backup", theirs[0].id), None)
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let list = scoped.get("/api/v1/devices?limit=100").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["total"], 3);
    for item in list.body["items"].as_array().unwrap() {
        assert_eq!(item["tenant_id"], json!(a));
    }
    // Asking for the other tenant explicitly yields nothing, not its devices.
    let r = scoped.get(&format!("/api/v1/devices?tenant_id={b}")).await;
    assert_eq!(r.body["total"], 0);
    let all = global.get("/api/v1/devices").await;
    assert_eq!(all.body["total"], 6);

    for d in &theirs {
        for (m, p) in [
            (Method::GET, format!("/api/v1/devices/{}", d.id)),
            (Method::GET, format!("/api/v1/devices/{}/runs", d.id)),
            (Method::POST, format!("/api/v1/devices/{}/backup", d.id)),
            (Method::POST, format!("/api/v1/devices/{}/disable", d.id)),
            (Method::DELETE, format!("/api/v1/devices/{}", d.id)),
        ] {
            let r = scoped.send(m.clone(), &p, None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {p}: {}", r.text);
        }
    }
    let r = scoped
        .put(
            &format!("/api/v1/devices/{}/credentials", theirs[0].id),
            json!({"password": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nothing of b's changed.
    let still = fleet.store().device(theirs[1].id).await.unwrap().unwrap();
    assert!(still.enabled);

    // Counts and feeds are the tenant's own.
    let ov = scoped.get("/api/v1/overview").await;
    assert_eq!(ov.status, StatusCode::OK, "{}", ov.text);
    assert_eq!(ov.body["freshness"]["enabled"], 3);
    let total: i64 = ov.body["states"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(total, 3);
    assert!(
        ov.body["queue"]["depth"].is_null(),
        "whole-queue depth leaks to a tenant"
    );
    let tenants = scoped.get("/api/v1/tenants").await;
    assert_eq!(
        tenants.body,
        json!([{"tenant_id": a, "name": "acme", "devices": 3}])
    );
    let jobs = scoped.get("/api/v1/jobs?state=due").await;
    assert_eq!(
        jobs.body["total"], 0,
        "tenant a sees tenant b's job: {}",
        jobs.text
    );
    let jobs = global.get("/api/v1/jobs?state=due").await;
    assert_eq!(jobs.body["total"], 1, "{}", jobs.text);

    // Creating in the other tenant is refused; without a tenant it lands in its own.
    let body = |t: Option<Uuid>| {
        let mut v =
            json!({"name": "edge-9", "host": "127.0.9.9", "username": "u", "password": "p"});
        if let Some(t) = t {
            v["tenant_id"] = json!(t);
        }
        v
    };
    let r = scoped.post("/api/v1/devices", Some(body(Some(b)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = scoped.post("/api/v1/devices", Some(body(None))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["tenant_id"], json!(a));
    fleet.cleanup().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_that_name_the_field() {
    let (fleet, a, _b, devices) = two_tenant_fleet(2, "").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let api = Api::new(&app, Some(&token(&fleet, "ops", Role::Admin, None).await));
    let ok = json!({"tenant_id": a, "name": "r1", "host": "127.0.9.1", "port": 2201,
                    "username": "admin", "password": "s3cret-pw", "backup_interval_seconds": 600});
    let created = api.post("/api/v1/devices", Some(ok.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["port"], 2201);
    assert_eq!(created.body["state"], "never");
    assert!(
        !created.text.contains("s3cret-pw"),
        "the password came back in the response"
    );
    // No tenant named: the default one, as `devices add` and the inventory CSV.
    let mut untenanted = ok.clone();
    untenanted.as_object_mut().unwrap().remove("tenant_id");
    untenanted["name"] = json!("r-default");
    let r = api.post("/api/v1/devices", Some(untenanted)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["tenant_id"], json!(Uuid::nil()));

    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        // same name in the same tenant
        (ok.clone(), StatusCode::CONFLICT, "conflict", "name"),
        (
            {
                let mut v = ok.clone();
                v["name"] = json!("r2");
                v["host"] = json!("not a host!");
                v
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "host",
        ),
        (
            {
                let mut v = ok.clone();
                v["name"] = json!("r3");
                v.as_object_mut().unwrap().remove("password");
                v
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "password",
        ),
        (
            {
                let mut v = ok.clone();
                v["name"] = json!("r4");
                v["port"] = json!(70000);
                v
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "port",
        ),
        (
            {
                let mut v = ok.clone();
                v["name"] = json!("r5");
                v["colour"] = json!("red");
                v
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "colour",
        ),
        (
            {
                let mut v = ok.clone();
                v["name"] = json!("r6");
                v["backup_cron"] = json!("every day");
                v
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "backup_cron",
        ),
    ];
    for (body, status, code, field) in cases {
        let r = api.post("/api/v1/devices", Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.code(), code, "{body}: {}", r.text);
        assert_eq!(r.body["field"], field, "{body}: {}", r.text);
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        // A missing password or user says it is required and what stands in for it.
        if field == "password" {
            assert!(
                r.body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("required")),
                "{}",
                r.text
            );
        }
    }
    // Not JSON at all, wrong content type, too big.
    let auth = format!("Bearer {}", api.token.as_deref().unwrap());
    let r = call(
        &app,
        Method::POST,
        "/api/v1/devices",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(Body::from("{\"name\": ")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.code(), "bad_request");
    let r = call(
        &app,
        Method::POST,
        "/api/v1/devices",
        &[("authorization", &auth), ("content-type", "text/plain")],
        Some(Body::from(ok.to_string())),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text);
    let big = json!({"name": "x".repeat(200_000)});
    let r = call(
        &app,
        Method::POST,
        "/api/v1/devices",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(Body::from(big.to_string())),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.code(), "too_large");

    // Query and path parameters.
    for (path, field) in [
        ("/api/v1/devices?status=sideways", "status"),
        ("/api/v1/devices?sort=colour", "sort"),
        ("/api/v1/devices?order=up", "order"),
        ("/api/v1/devices?limit=0", "limit"),
        ("/api/v1/devices?limit=abc", "limit"),
        ("/api/v1/devices/not-a-uuid", "id"),
        ("/api/v1/jobs?state=sleeping", "state"),
        ("/api/v1/stats/activity?minutes=0", "minutes"),
        ("/api/v1/devices?search=a%00b", "search"),
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert_eq!(r.body["field"], field, "{path}: {}", r.text);
    }
    let r = api
        .get(&format!("/api/v1/devices/{}", Uuid::new_v4()))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.get("/api/v1/no/such/route").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "not_found");
    let r = api
        .put(
            &format!("/api/v1/devices/{}/credentials", devices[0].id),
            json!({"username": "", "password": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "username");
    fleet.cleanup().await;
}

#[tokio::test]
async fn device_listing_filters_sorts_and_pages_on_the_server() {
    let (fleet, _a, _b, devices) = two_tenant_fleet(8, "").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let api = Api::new(&app, Some(&token(&fleet, "ops", Role::Viewer, None).await));
    // Shape some states directly: one blocked on auth, one offline, one disabled, one ok.
    let pool = fleet.store().pool();
    let set = |sql: &'static str, id: Uuid| async move {
        sqlx::query(sql).bind(id).execute(pool).await.unwrap();
    };
    set("UPDATE devices SET blocked_reason = 'auth_failed', consecutive_failures = 1, last_error_kind = 'auth_failed', last_attempt_at = now() WHERE id = $1", devices[0].id).await;
    set("UPDATE devices SET consecutive_failures = 2, last_error_kind = 'timeout', backoff_until = now() + interval '5 minutes', last_attempt_at = now() WHERE id = $1", devices[1].id).await;
    set(
        "UPDATE devices SET enabled = false WHERE id = $1",
        devices[2].id,
    )
    .await;
    set("UPDATE devices SET last_success_at = now(), last_status = 'success', last_attempt_at = now(), routeros_version = '7.16.2' WHERE id = $1", devices[3].id).await;

    let ids = |r: &crate::common::web::Reply| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = api.get("/api/v1/devices?status=attention").await;
    assert_eq!(r.body["total"], 2, "{}", r.text);
    let mut got = ids(&r);
    got.sort();
    let mut want = vec![devices[0].id.to_string(), devices[1].id.to_string()];
    want.sort();
    assert_eq!(got, want);
    let r = api.get("/api/v1/devices?status=blocked_auth").await;
    assert_eq!(ids(&r), vec![devices[0].id.to_string()]);
    assert_eq!(r.body["items"][0]["hint"], "update the credentials");
    let r = api.get("/api/v1/devices?status=offline").await;
    assert_eq!(ids(&r), vec![devices[1].id.to_string()]);
    assert!(
        r.body["items"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
    let r = api.get("/api/v1/devices?error_kind=timeout").await;
    assert_eq!(ids(&r), vec![devices[1].id.to_string()]);
    // A kind that does not exist is the caller's typo, not an empty fleet.
    let r = api.get("/api/v1/devices?error_kind=timeuot").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["field"], "error_kind", "{}", r.text);
    let r = api.get("/api/v1/devices?status=disabled").await;
    assert_eq!(ids(&r), vec![devices[2].id.to_string()]);
    let r = api.get("/api/v1/devices?status=ok").await;
    assert_eq!(ids(&r), vec![devices[3].id.to_string()]);

    // Search by a name fragment, by host, by id; LIKE wildcards are literal.
    let name = &devices[5].name;
    let r = api.get(&format!("/api/v1/devices?search={name}")).await;
    assert!(ids(&r).contains(&devices[5].id.to_string()), "{}", r.text);
    let r = api
        .get(&format!("/api/v1/devices?search={}", devices[6].id))
        .await;
    assert_eq!(ids(&r), vec![devices[6].id.to_string()]);
    let r = api.get("/api/v1/devices?search=%25").await;
    assert_eq!(r.body["total"], 0, "% matched everything: {}", r.text);

    // Sorting and paging: names descending, two per page, pages disjoint and complete.
    let mut seen = Vec::new();
    for offset in [0, 2, 4, 6] {
        let r = api
            .get(&format!(
                "/api/v1/devices?sort=name&order=desc&limit=2&offset={offset}"
            ))
            .await;
        assert_eq!(r.body["total"], 8);
        assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
        for i in r.body["items"].as_array().unwrap() {
            seen.push(i["name"].as_str().unwrap().to_string());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(seen, sorted);
    sorted.dedup();
    assert_eq!(sorted.len(), 8);
    fleet.cleanup().await;
}

#[tokio::test]
async fn manual_backup_over_the_api_waits_for_the_real_outcome() {
    let (fleet, _a, _b, devices) = two_tenant_fleet(4, "auth=1").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let api = Api::new(&app, Some(&token(&fleet, "ops", Role::Admin, None).await));
    // Without a worker the wait ends pending at once (not after its timeout), saying
    // why, with the job queued in Redis.
    let asked = std::time::Instant::now();
    let r = api
        .post(
            &format!(
                "/api/v1/devices/{}/backup?wait=true&timeout=60",
                devices[1].id
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "pending");
    assert!(
        r.body["problem"]
            .as_str()
            .is_some_and(|p| p.contains("no worker is registered")),
        "{}",
        r.text
    );
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "waited for nothing"
    );
    let pending = r.body["job_id"].as_str().unwrap().to_string();
    let r = api.get("/api/v1/jobs?state=due").await;
    assert!(r.text.contains(&pending), "{}", r.text);
    let r = api
        .post(
            &format!(
                "/api/v1/devices/{}/backup?wait=true&timeout=0",
                devices[1].id
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["field"], "timeout");

    let (stop, worker, _) = fleet.spawn_worker("api-worker", 4);
    // The job queued above runs first; a second manual backup while it holds the
    // device's lease would (rightly) end `locked`.
    fleet
        .wait_for(Duration::from_secs(30), "the pending job's run", || async {
            !fleet
                .store()
                .runs_for_job(&pending)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
    // The auth fault is device 0 (faults go to the first devices).
    let r = api
        .post(
            &format!(
                "/api/v1/devices/{}/backup?wait=true&timeout=30",
                devices[1].id
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "success", "{}", r.text);
    let sha = r.body["run"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(r.body["run"]["trigger"], "manual");

    let r = api
        .post(
            &format!(
                "/api/v1/devices/{}/backup?wait=true&timeout=30",
                devices[0].id
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["run"]["error_kind"], "auth_failed");
    let d = api.get(&format!("/api/v1/devices/{}", devices[0].id)).await;
    assert_eq!(d.body["state"], "blocked_auth");
    assert_eq!(d.body["hint"], "update the credentials");

    // Run history and the fleet feed show both, newest first.
    let runs = api
        .get(&format!("/api/v1/devices/{}/runs", devices[1].id))
        .await;
    assert_eq!(runs.body[0]["sha256"], json!(sha));
    let feed = api.get("/api/v1/runs?failures=true").await;
    assert_eq!(feed.body.as_array().unwrap().len(), 1, "{}", feed.text);
    assert_eq!(feed.body[0]["device_id"], json!(devices[0].id));
    let act = api.get("/api/v1/stats/activity?minutes=5").await;
    let buckets = act.body.as_array().unwrap();
    assert_eq!(buckets.len(), 5);
    let ok: i64 = buckets.iter().map(|b| b["success"].as_i64().unwrap()).sum();
    let failed: i64 = buckets
        .iter()
        .map(|b| b["failed"]["auth_failed"].as_i64().unwrap_or(0))
        .sum();
    assert!(ok >= 1, "{}", act.text);
    assert_eq!(failed, 1, "{}", act.text);
    let ages = api.get("/api/v1/stats/backup-ages").await;
    let total: i64 = ages
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["devices"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 4);
    assert!(
        ages.body[0]["devices"].as_i64().unwrap() >= 1,
        "{}",
        ages.text
    );

    // The queue view lists the worker.
    let q = api.get("/api/v1/queue").await;
    let workers = q.body["workers"].as_array().unwrap();
    assert!(
        workers.iter().any(|w| w["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("api-worker"))
            && w["alive"] == true),
        "{}",
        q.text
    );
    let _ = stop.send(());
    let _ = worker.await;
    fleet.cleanup().await;
}

#[tokio::test]
async fn browser_sessions_need_csrf_and_end_at_logout() {
    let (fleet, _a, _b, devices) = two_tenant_fleet(2, "").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let admin = token(&fleet, "ops", Role::Admin, None).await;

    let form = call(&app, Method::GET, "/login", &[], None).await;
    assert_eq!(form.status, StatusCode::OK);
    let login_cookie = form
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("rb_login="))
        .expect("login CSRF cookie");
    let csrf = login_cookie
        .trim_start_matches("rb_login=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(form.text.contains(&csrf), "form carries the CSRF value");
    let cookie_hdr = format!("rb_login={csrf}");
    let post_login = |tok: String, csrf: String| {
        let app = app.clone();
        let cookie_hdr = cookie_hdr.clone();
        async move {
            let body = format!(
                "token={}&csrf={}&next=%2Fdevices",
                urlencode(&tok),
                urlencode(&csrf)
            );
            call(
                &app,
                Method::POST,
                "/login",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("cookie", &cookie_hdr),
                ],
                Some(Body::from(body)),
            )
            .await
        }
    };
    // A wrong token, then a forged form, then the real thing.
    let r = post_login("rbk_nope".into(), csrf.clone()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().unwrap().starts_with("/login?error=1"));
    assert!(r.cookies().iter().all(|c| !c.starts_with("rb_session=")));
    let r = post_login(admin.clone(), "forged".into()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post_login(admin.clone(), csrf.clone()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.location(), Some("/devices"));
    let session = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("rb_session="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    let value = session
        .trim_start_matches("rb_session=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let cookie = format!("rb_session={value}");

    // Pages open; the page embeds the session's CSRF token.
    let page = call(&app, Method::GET, "/devices", &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains(&devices[0].name));
    let meta = page
        .text
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf meta")
        .to_string();
    assert!(meta.len() >= 20);

    // State changes with the cookie need the CSRF token: API header, form field.
    let path = format!("/api/v1/devices/{}/disable", devices[0].id);
    let r = call(&app, Method::POST, &path, &[("cookie", &cookie)], None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "csrf");
    let r = call(
        &app,
        Method::POST,
        &path,
        &[("cookie", &cookie), ("x-csrf-token", "wrong")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        fleet
            .store()
            .device(devices[0].id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    let r = call(
        &app,
        Method::POST,
        &path,
        &[("cookie", &cookie), ("x-csrf-token", &meta)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        !fleet
            .store()
            .device(devices[0].id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    let form_path = format!("/devices/{}/action/enable", devices[0].id);
    let form_hdrs = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let r = call(
        &app,
        Method::POST,
        &form_path,
        &form_hdrs,
        Some(Body::from("csrf=nope")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        !fleet
            .store()
            .device(devices[0].id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    let r = call(
        &app,
        Method::POST,
        &form_path,
        &form_hdrs,
        Some(Body::from(format!("csrf={}", urlencode(&meta)))),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert!(
        fleet
            .store()
            .device(devices[0].id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );

    // The credentials form: CSRF-checked like every form; the password is write-only.
    let cred_path = format!("/devices/{}/credentials", devices[0].id);
    let sealed = || async {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT password_enc FROM devices WHERE id = $1")
            .bind(devices[0].id)
            .fetch_one(fleet.store().pool())
            .await
            .unwrap()
    };
    let before = sealed().await;
    let page = call(&app, Method::GET, &cred_path, &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.text.contains(devices[0].password.expose()),
        "the form shows the stored password"
    );
    let r = call(
        &app,
        Method::POST,
        &cred_path,
        &form_hdrs,
        Some(Body::from("csrf=nope&username=admin&password=forged-pw")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(sealed().await, before, "a forged form changed the password");
    let r = call(
        &app,
        Method::POST,
        &cred_path,
        &form_hdrs,
        Some(Body::from(format!(
            "csrf={}&username=admin&password=s3cret-new",
            urlencode(&meta)
        ))),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(
        fleet
            .key
            .open(&devices[0].id, &sealed().await)
            .unwrap()
            .expose(),
        "s3cret-new"
    );
    // A viewer's session may not open the form, nor the host-key reset.
    let viewer = token(&fleet, "noc", Role::Viewer, None).await;
    let r = post_login(viewer, csrf.clone()).await;
    let viewer_cookie = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("rb_session="))
        .expect("viewer session")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for path in [&cred_path, &format!("/devices/{}/host-key", devices[0].id)] {
        let r = call(&app, Method::GET, path, &[("cookie", &viewer_cookie)], None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "viewer GET {path}");
    }

    // Logout ends the session server-side: the old cookie no longer works.
    let r = call(
        &app,
        Method::POST,
        "/logout",
        &form_hdrs,
        Some(Body::from(format!("csrf={}", urlencode(&meta)))),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), Some("/login?signed_out=1"));
    assert!(
        r.cookies()
            .iter()
            .any(|c| c.starts_with("rb_session=;") && c.contains("Max-Age=0"))
    );
    let r = call(&app, Method::GET, "/devices", &[("cookie", &cookie)], None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = call(
        &app,
        Method::GET,
        "/api/v1/whoami",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Revoking a token ends its sessions too.
    let r = post_login(admin.clone(), csrf.clone()).await;
    let value = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("rb_session="))
        .unwrap();
    let cookie = value.split(';').next().unwrap().to_string();
    let r = call(
        &app,
        Method::GET,
        "/api/v1/whoami",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["role"], "admin");
    Access::new(fleet.store().clone())
        .revoke_token("ops")
        .await
        .unwrap();
    let r = call(
        &app,
        Method::GET,
        "/api/v1/whoami",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Redirects after login stay on this site.
    let r = call(&app, Method::GET, "/login?next=//evil.example/x", &[], None).await;
    assert!(r.text.contains("value=\"/\""), "next was not sanitised");
    fleet.cleanup().await;
}

#[tokio::test]
async fn the_enqueuer_refuses_to_run_open_unless_told_to() {
    let fleet = Fleet::of(1).await;
    let pairs = fleet.process_env();
    let env =
        rosbackup::config::Env::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    fleet.store().migrate().await.unwrap();
    let err = rosbackup::service::enqueuer_from_env(&env, Default::default())
        .await
        .expect_err("no token: must refuse");
    assert!(matches!(err, rosbackup::service::StartError::NoTokens));
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("rosbackup tokens create"));

    // Explicitly open: starts, and every caller is an admin (with a warning banner).
    let open = rosbackup::service::enqueuer_from_env(
        &env,
        rosbackup::service::Flags {
            insecure_no_auth: true,
        },
    )
    .await
    .expect("starts with --insecure-no-auth");
    let app = rosbackup::web::router(open.web.clone());
    let r = call(&app, Method::GET, "/api/v1/whoami", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["auth"], "disabled");
    let r = call(&app, Method::GET, "/", &[], None).await;
    assert!(r.text.contains("Authentication is disabled"));

    // With a token, it starts with auth on.
    token(&fleet, "ops", Role::Admin, None).await;
    let on = rosbackup::service::enqueuer_from_env(&env, Default::default())
        .await
        .expect("starts");
    let app = rosbackup::web::router(on.web.clone());
    let r = call(&app, Method::GET, "/api/v1/whoami", &[], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The flag parser: only the enqueuer has it, unknown flags are refused.
    use rosbackup::service::{Flags, Role as R};
    assert!(
        Flags::parse(R::Enqueuer, ["--insecure-no-auth".to_string()])
            .unwrap()
            .insecure_no_auth
    );
    assert!(Flags::parse(R::Worker, ["--insecure-no-auth".to_string()]).is_err());
    assert!(Flags::parse(R::Enqueuer, ["--bogus".to_string()]).is_err());
    let _ = Duration::ZERO;
    fleet.cleanup().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_the_router_serves() {
    let fleet = Fleet::of(1).await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let api = Api::new(&app, Some(&token(&fleet, "ops", Role::Viewer, None).await));
    let doc = api.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    let d = Uuid::new_v4();
    for (method, path, _, _) in routes(d) {
        let templ = path
            .split('?')
            .next()
            .unwrap()
            .replace(&d.to_string(), "{id}")
            .replace(&Uuid::nil().to_string(), "{id}")
            .replace("/jobs/nope", "/jobs/{id}");
        let op = paths
            .get(&templ)
            .and_then(|p| p.get(method.as_str().to_lowercase()))
            .unwrap_or_else(|| panic!("{method} {templ} missing from the OpenAPI document"));
        assert!(op["responses"].is_object());
    }
    // And nothing is documented that the router does not serve (each documented GET
    // without parameters answers something other than the router's 404 fallback).
    for (p, item) in paths {
        if item.get("get").is_some() && !p.contains('{') {
            let r = api.get(p).await;
            assert_ne!(
                r.status,
                StatusCode::NOT_FOUND,
                "{p} documented but not served"
            );
        }
    }
    fleet.cleanup().await;
}

fn urlencode(s: &str) -> String {
    rosbackup::web::auth::url_encode(s)
}

/// A handler that kills every job (as the worker does for a job that keeps failing).
async fn abort_every_job(
    job: rosbackup::queue::BackupJob,
) -> Result<(), apalis_core::error::BoxDynError> {
    Err(
        apalis_core::error::AbortError::new(std::io::Error::other(format!(
            "gave up on {}",
            job.device_id
        )))
        .into(),
    )
}

#[tokio::test]
async fn dead_jobs_can_be_listed_retried_and_discarded_by_their_tenant() {
    use apalis::prelude::WorkerBuilderExt;
    use apalis_core::worker::builder::WorkerBuilder;
    let (fleet, a, b, devices) = two_tenant_fleet(4, "").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let admin = Api::new(&app, Some(&token(&fleet, "ops", Role::Admin, None).await));
    let tenant_b = Api::new(&app, Some(&token(&fleet, "b", Role::Admin, Some(b)).await));
    let viewer = Api::new(&app, Some(&token(&fleet, "noc", Role::Viewer, None).await));
    let (da, db) = (devices[0].id, devices[3].id);
    assert_eq!((devices[0].tenant_id, devices[3].tenant_id), (a, b));
    let jobs = [
        rosbackup::queue::BackupJob::manual(da, a),
        rosbackup::queue::BackupJob::manual(db, b),
    ];
    fleet.queue.push(&jobs).await.unwrap();
    let queue = fleet.queue.clone();
    let monitor = apalis::prelude::Monitor::new().register(move |_| {
        WorkerBuilder::new("rbtest-killer")
            .backend(queue.backend())
            .concurrency(2)
            .build(abort_every_job)
    });
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        let _ = monitor
            .run_with_signal(async move {
                let _ = rx.await;
                Ok(())
            })
            .await;
    });
    fleet
        .wait_for(Duration::from_secs(30), "both jobs dead", || async {
            admin.get("/api/v1/jobs?state=dead").await.body["total"] == 2
        })
        .await;
    let _ = stop.send(());
    let _ = running.await;

    let dead = admin.get("/api/v1/jobs?state=dead").await;
    let item = dead.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == json!(jobs[0].job_id))
        .expect("tenant a's dead job listed")
        .clone();
    assert!(
        item["last_error"].as_str().unwrap().contains("gave up on"),
        "{item}"
    );
    assert_eq!(item["device_id"], json!(da));
    // Tenant b sees only its own dead job, and cannot touch a's.
    let mine = tenant_b.get("/api/v1/jobs?state=dead").await;
    assert_eq!(mine.body["total"], 1, "{}", mine.text);
    assert_eq!(mine.body["items"][0]["job_id"], json!(jobs[1].job_id));
    let r = tenant_b
        .post(&format!("/api/v1/jobs/{}/retry", jobs[0].job_id), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = tenant_b
        .delete(&format!("/api/v1/jobs/{}", jobs[0].job_id))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = viewer
        .post(&format!("/api/v1/jobs/{}/retry", jobs[0].job_id), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Retry: the dead job goes, a fresh manual job for the same device is queued.
    let r = admin
        .post(&format!("/api/v1/jobs/{}/retry", jobs[0].job_id), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let new_id = r.body["job_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, jobs[0].job_id);
    assert!(new_id.contains(&da.to_string()));
    let due = admin.get("/api/v1/jobs?state=due").await;
    assert!(due.text.contains(&new_id), "{}", due.text);
    // Retrying twice finds nothing (the dead job is gone), and makes no second job.
    let r = admin
        .post(&format!("/api/v1/jobs/{}/retry", jobs[0].job_id), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // A live job cannot be discarded.
    let r = admin.delete(&format!("/api/v1/jobs/{new_id}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "not_dead");
    // Discard: tenant b removes its own.
    let r = tenant_b
        .delete(&format!("/api/v1/jobs/{}", jobs[1].job_id))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let dead = admin.get("/api/v1/jobs?state=dead").await;
    assert_eq!(dead.body["total"], 0, "{}", dead.text);
    fleet.cleanup().await;
}

/// Jump hosts over the API (#18): only admins change them, a tenant-scoped token only in
/// its tenant (another tenant's device, tenant or bastion is a 404), secrets are
/// write-only (never in a reply: only `[user@]host:port`, the source and whether a
/// password or key is set), errors name the field. A device shows the jump host it goes
/// through (its own, its profile's or its tenant's) and the bastion's pinned key; moving
/// a device off a bastion whose changed key blocked it lifts the block; the bastions'
/// pins are listed and reset.
#[tokio::test]
async fn jump_hosts_over_the_api_are_admin_only_scoped_and_write_only() {
    let (fleet, a, b, devices) = two_tenant_fleet(4, "key-only=1").await;
    let (app, _) = router(&fleet, AuthMode::Required);
    let admin = Api::new(&app, Some(&token(&fleet, "ops", Role::Admin, None).await));
    let viewer = Api::new(&app, Some(&token(&fleet, "noc", Role::Viewer, None).await));
    let admin_a = Api::new(&app, Some(&token(&fleet, "ta", Role::Admin, Some(a)).await));
    let admin_b = Api::new(&app, Some(&token(&fleet, "tb", Role::Admin, Some(b)).await));
    let key_text = fleet
        .sim
        .devices()
        .iter()
        .find_map(|d| d.user_key.clone())
        .expect("a key-only router")
        .to_sealable()
        .expose()
        .to_string();
    const DEVICE_PW: &str = "Device-Jump-Secret-1";
    const TENANT_PW: &str = "Tenant-Jump-Secret-2";
    const PROFILE_PW: &str = "Profile-Jump-Secret-3";
    let mut replies: Vec<String> = Vec::new();
    let (d0, d1, d_b) = (devices[0].id, devices[1].id, devices[2].id);
    let jump = |d: Uuid| format!("/api/v1/devices/{d}/jump-host");

    // Viewers may read, not change; another tenant's device is not there.
    let r = viewer
        .put(&jump(d0), json!({"jump_host": "bastion:22"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin_a
        .put(&jump(d_b), json!({"jump_host": "bastion:22"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // Set a device's own, with a password and a key: shown without them.
    let r = admin_a
        .put(
            &jump(d0),
            json!({"jump_host": "ops@bastion.example:2222", "jump_password": DEVICE_PW,
                   "jump_key": key_text}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = &r.body["jump_host"];
    assert_eq!(j["display"], "ops@bastion.example:2222");
    assert_eq!(j["source"], "device");
    assert_eq!(
        (&j["has_password"], &j["has_key"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(j["pinned_fingerprint"], Value::Null);
    replies.push(r.text);
    // Errors name the field and quote no secret.
    for (body, field) in [
        (json!({"jump_host": "bastion:0"}), "jump_host"),
        (
            json!({"jump_host": "direct", "jump_password": DEVICE_PW}),
            "jump_password",
        ),
        (json!({"jump_password": DEVICE_PW}), "jump_password"),
        (
            json!({"jump_host": "b:22", "jump_key": "not-a-key-Secret"}),
            "jump_key",
        ),
        (
            json!({"jump_host": "b:22", "jump_pasword": "typo"}),
            "jump_pasword",
        ),
    ] {
        let r = admin.put(&jump(d0), body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.text);
        assert_eq!(r.body["field"], field, "{body}: {}", r.text);
        replies.push(r.text);
    }
    // The list shows the effective jump host too (no pin there).
    let r = viewer.get("/api/v1/devices?limit=100").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let item = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(d0))
        .cloned()
        .unwrap();
    assert_eq!(item["jump_host"]["display"], "ops@bastion.example:2222");
    assert_eq!(item["jump_host"]["source"], "device");
    replies.push(r.text);

    // A tenant's default: only its own tenant's admin, never `direct`.
    let tenant_jump = |t: Uuid| format!("/api/v1/tenants/{t}/jump-host");
    let r = admin_a
        .put(&tenant_jump(b), json!({"jump_host": "x:22"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = viewer
        .put(&tenant_jump(a), json!({"jump_host": "x:22"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin_a
        .put(&tenant_jump(a), json!({"jump_host": "direct"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "jump_host");
    let r = admin_a
        .put(
            &tenant_jump(a),
            json!({"jump_host": "tenant-bastion", "jump_password": TENANT_PW}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jump_host"]["display"], "tenant-bastion:22");
    assert_eq!(r.body["jump_host"]["has_password"], true);
    replies.push(r.text);
    let r = viewer.get(&tenant_jump(a)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jump_host"]["display"], "tenant-bastion:22");
    replies.push(r.text);
    let r = admin_b.get(&tenant_jump(a)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // The other device of the tenant inherits it.
    let r = viewer.get(&format!("/api/v1/devices/{d1}")).await;
    assert_eq!(r.body["jump_host"]["display"], "tenant-bastion:22");
    assert_eq!(r.body["jump_host"]["source"], "tenant");
    replies.push(r.text);

    // A credential profile's, set on a profile the tenant's admin may see.
    let r = admin_a
        .post(
            "/api/v1/credential-profiles",
            Some(json!({"name": "via-profile", "username": "admin", "password": "p-1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let profile = r.body["id"].as_str().unwrap().to_string();
    let profile_jump = format!("/api/v1/credential-profiles/{profile}/jump-host");
    let r = viewer
        .put(&profile_jump, json!({"jump_host": "p:22"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin_b
        .put(&profile_jump, json!({"jump_host": "p:22"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = admin_a
        .put(
            &profile_jump,
            json!({"jump_host": "jump@profile-bastion:2200", "jump_password": PROFILE_PW}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jump_host"]["display"], "jump@profile-bastion:2200");
    replies.push(r.text);
    let r = admin_a.get("/api/v1/credential-profiles").await;
    assert!(r.text.contains("profile-bastion"), "{}", r.text);
    replies.push(r.text);
    let r = admin_a.put(&profile_jump, json!({"jump_host": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jump_host"], Value::Null);

    // The tenant bastion's key changed: d1 is blocked behind it.
    rosbackup::bastions::record_pin(fleet.store(), a, "tenant-bastion", 22, "SHA256:old-key")
        .await
        .unwrap();
    rosbackup::bastions::record_mismatch(fleet.store(), a, "tenant-bastion", 22, "SHA256:new-key")
        .await
        .unwrap();
    let block = || async {
        sqlx::query(
            "UPDATE devices SET blocked_reason = 'bastion_host_key_mismatch', blocked_at = now() \
             WHERE id = $1",
        )
        .bind(d1)
        .execute(fleet.store().pool())
        .await
        .unwrap();
    };
    block().await;
    let r = viewer.get(&format!("/api/v1/devices/{d1}")).await;
    assert_eq!(r.body["jump_host"]["pinned_fingerprint"], "SHA256:old-key");
    assert_eq!(r.body["blocked_reason"], "bastion_host_key_mismatch");
    let r = viewer.get("/api/v1/bastions").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin_b.get("/api/v1/bastions").await;
    assert_eq!(r.body, json!([]), "another tenant's bastions: {}", r.text);
    let r = admin_a.get("/api/v1/bastions").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body[0]["host"], "tenant-bastion");
    assert_eq!(r.body[0]["fingerprint"], "SHA256:old-key");
    assert_eq!(r.body[0]["presented_fingerprint"], "SHA256:new-key");
    // New credentials for the same bastion lift nothing; going direct does.
    let r = admin_a
        .put(&jump(d1), json!({"jump_host": "tenant-bastion:22"}))
        .await;
    assert_eq!(
        r.body["blocked_reason"], "bastion_host_key_mismatch",
        "{}",
        r.text
    );
    let r = admin_a.put(&jump(d1), json!({"jump_host": "direct"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["jump_direct"], true);
    assert_eq!(r.body["jump_host"], Value::Null);
    assert_eq!(r.body["blocked_reason"], Value::Null, "{}", r.text);
    // Back behind it and blocked: the bastion reset lifts it (its tenant's admin only).
    let r = admin_a.put(&jump(d1), json!({"jump_host": null})).await;
    assert_eq!(r.body["jump_host"]["source"], "tenant", "{}", r.text);
    block().await;
    let reset = "/api/v1/bastions/reset-host-key";
    let r = viewer
        .post(reset, Some(json!({"bastion": "tenant-bastion"})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = admin_a
        .post(
            reset,
            Some(json!({"bastion": "tenant-bastion", "tenant_id": b})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = admin_a
        .post(reset, Some(json!({"bastion": "tenant-bastion:0"})))
        .await;
    assert_eq!(r.body["field"], "bastion", "{}", r.text);
    let r = admin_b
        .post(reset, Some(json!({"bastion": "tenant-bastion"})))
        .await;
    assert_eq!(
        r.body,
        json!({"forgotten": false, "unblocked": 0}),
        "{}",
        r.text
    );
    let r = admin_a
        .post(reset, Some(json!({"bastion": "tenant-bastion"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"forgotten": true, "unblocked": 1}));
    let r = viewer.get(&format!("/api/v1/devices/{d1}")).await;
    assert_eq!(r.body["blocked_reason"], Value::Null);
    assert_eq!(r.body["jump_host"]["pinned_fingerprint"], Value::Null);
    replies.push(r.text);

    // Clearing the tenant's: the device inherits nothing.
    let r = admin_a
        .put(&tenant_jump(a), json!({"jump_host": null}))
        .await;
    assert_eq!(r.body["jump_host"], Value::Null, "{}", r.text);
    let r = viewer.get(&format!("/api/v1/devices/{d1}")).await;
    assert_eq!(r.body["jump_host"], Value::Null);

    for text in &replies {
        for secret in [
            DEVICE_PW,
            TENANT_PW,
            PROFILE_PW,
            "not-a-key-Secret",
            "PRIVATE KEY",
        ] {
            assert!(!text.contains(secret), "{secret} in a reply: {text}");
        }
    }
    fleet.cleanup().await;
}
