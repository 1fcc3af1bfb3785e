//! Test harness for the dashboard and API: a [`Fleet`] plus the web router over it, and
//! a small HTTP client that calls the router in-process (the same handlers, middleware
//! and body limits the enqueuer serves).

#![allow(dead_code)]

use super::fleet::Fleet;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use rosbackup::access::{Access, Role};
use rosbackup::http::{OpsState, ops_router};
use rosbackup::metrics::Metrics;
use rosbackup::schedule::ScheduleSettings;
use rosbackup::web::{AuthMode, WebSettings, WebState};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;
use uuid::Uuid;

/// The enqueuer's full router (ops + dashboard + API) over a fleet.
pub fn router(fleet: &Fleet, auth: AuthMode) -> (Router, WebState) {
    router_with(fleet, auth, Duration::from_secs(30))
}

/// [`router`] with a given cap on manual-backup waits.
pub fn router_with(fleet: &Fleet, auth: AuthMode, manual_timeout: Duration) -> (Router, WebState) {
    let metrics = Metrics::new();
    let state = WebState::new(
        fleet.store().clone(),
        fleet.queue.clone(),
        Some(fleet.key.clone()),
        ScheduleSettings {
            interval: Duration::from_secs(3600),
            jitter_min: Duration::ZERO,
            jitter_max: Duration::from_secs(1),
            ..ScheduleSettings::default()
        },
        metrics.clone(),
        WebSettings {
            auth,
            manual_timeout,
            ..WebSettings::default()
        },
    );
    let ops = OpsState {
        metrics,
        store: fleet.store().clone(),
        queue: Some(fleet.queue.clone()),
        liveness: None,
    };
    (
        ops_router(ops).merge(rosbackup::web::router(state.clone())),
        state,
    )
}

/// Create a token on the fleet's database.
pub async fn token(fleet: &Fleet, name: &str, role: Role, tenant: Option<Uuid>) -> String {
    Access::new(fleet.store().clone())
        .create_token(name, role, tenant)
        .await
        .expect("create token")
        .1
}

/// One response, body parsed as JSON when it is JSON (else `Value::String`).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }
}

/// Call the router.
pub async fn call(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Body>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.unwrap_or_else(Body::empty)).expect("request");
    let res = router.clone().oneshot(req).await.expect("router answers");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// A bearer-token API client over the router.
#[derive(Clone)]
pub struct Api {
    pub router: Router,
    pub token: Option<String>,
}

impl Api {
    pub fn new(router: &Router, token: Option<&str>) -> Api {
        Api {
            router: router.clone(),
            token: token.map(str::to_string),
        }
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub async fn send(&self, method: Method, path: &str, json: Option<Value>) -> Reply {
        let auth = self.auth();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        let body = json.map(|j| {
            headers.push(("content-type", "application/json"));
            Body::from(j.to_string())
        });
        call(&self.router, method, path, &headers, body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, json: Option<Value>) -> Reply {
        self.send(Method::POST, path, json).await
    }
    pub async fn put(&self, path: &str, json: Value) -> Reply {
        self.send(Method::PUT, path, Some(json)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }
}
