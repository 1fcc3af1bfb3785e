//! The dashboard: server-rendered pages (maud escapes every value), refreshed in place by
//! `assets/app.js` polling `data-refresh` fragments.
//!
//! Pages answer one question each: the overview "is every router backed up, and if not,
//! why?", the device list "which ones, and what do I do?", a device page "what happened
//! to this one?", the jobs page "what is the queue doing?". Every action is a form post
//! carrying the session's CSRF token, answered with a redirect (post/redirect/get).
//!
//! A face: it reads through `ops` (and the store's report queries) and acts only through
//! `ops`, rendering in `layout`'s chrome; it embeds `history`'s fragments. Nothing in the
//! crate imports `pages` but the router in `lib`.

// Handlers fail with a ready page (`Response`), the axum idiom; its size is irrelevant.
#![allow(clippy::result_large_err)]

use crate::auth::{
    self, Caller, LOGIN_COOKIE, PageCaller, SESSION_COOKIE, safe_next, set_cookie, url_encode,
};
use crate::charts;
use crate::error::{ApiError, error_page};
use crate::extract::PageQuery;
use crate::layout::{self, FAVICON, Nav, ago, span, until};
use crate::ops::{self, DeviceAction, DeviceListParams, JobsParams, Overview, hint_for};
use crate::state::WebState;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use rosbackup_core::queue::{JobInfo, JobListState};
use rosbackup_core::report::{DeviceRow, DeviceSort, DeviceState, StatusFilter};
use rosbackup_core::store::Run;
use serde::Deserialize;
use uuid::Uuid;

mod credentials;
mod device;
mod devices;
mod jobs;
mod jump;
mod login;
mod overview;
use credentials::*;
use device::*;
use devices::*;
use jobs::*;
use jump::*;
use login::*;
use overview::*;

const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");

pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/", get(overview))
        .route("/fragments/overview", get(overview_fragment))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/devices", get(devices))
        .route("/devices/{id}", get(device))
        .route("/devices/{id}/runs", get(device_runs_fragment))
        .route("/devices/{id}/cards", get(device_cards_fragment))
        .route("/devices/{id}/jobs/{job}", get(job_status_fragment))
        .route("/devices/{id}/backup", post(backup_now))
        .route("/devices/{id}/action/{action}", post(device_action))
        .route(
            "/devices/{id}/credentials",
            get(credentials_form).post(save_credentials),
        )
        .route("/devices/{id}/export-timeout", post(save_export_timeout))
        .route("/devices/{id}/host-key", get(host_key_page))
        .route("/devices/{id}/jump-host", post(save_jump_host))
        .route("/jump-hosts", get(jump_hosts))
        .route("/jump-hosts/tenant/{id}", post(save_tenant_jump))
        .route("/jump-hosts/profile/{id}", post(save_profile_jump))
        .route("/jump-hosts/reset", post(reset_bastion_pin))
        .route(
            "/devices/{id}/bastion-key",
            get(bastion_key_page).post(reset_bastion_key),
        )
        .route("/jobs", get(jobs))
        .route("/jobs/retry", post(retry_job))
        .route("/jobs/discard", post(discard_job))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        JS,
    )
        .into_response()
}

// ---- formatting --------------------------------------------------------------------

fn bytes(n: i64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1_048_576 => format!("{:.1} KB", n as f64 / 1024.0),
        _ => format!("{:.1} MB", n as f64 / 1_048_576.0),
    }
}

fn when(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        None => html! { span.muted { "—" } },
        Some(t) => {
            html! { time datetime=(t.to_rfc3339()) title=(t.format("%Y-%m-%d %H:%M:%S UTC")) { (ago(t)) } }
        }
    }
}

fn state_badge(state: DeviceState) -> Markup {
    html! { span class=(format!("badge s-{}", state.as_str())) title=(state.explain()) { (state.label()) } }
}

fn run_badge(status: &str) -> Markup {
    html! { span class=(format!("badge r-{status}")) { (status) } }
}

fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

// ---- frame -------------------------------------------------------------------------

/// A page in the dashboard's chrome.
fn frame(s: &WebState, c: &Caller, title: &str, nav: Nav, body: Markup) -> Html<String> {
    layout::page(&c.chrome(s), title, nav, body)
}

type PageResult = Result<Response, Response>;

fn e(err: ApiError) -> Response {
    err.page()
}

fn check_csrf(caller: &Caller, presented: &str) -> Result<(), Response> {
    if caller.csrf_ok(Some(presented)) {
        Ok(())
    } else {
        Err(error_page(
            StatusCode::FORBIDDEN,
            "This form expired or did not come from this dashboard. Reload the page and try again.",
        ))
    }
}

fn require_admin(caller: &Caller) -> Result<(), Response> {
    ops::require_admin(caller).map_err(|_| {
        error_page(
            StatusCode::FORBIDDEN,
            "Your token is a viewer token: it can look, not act. Ask for an admin token.",
        )
    })
}

/// A form that carries only the session's CSRF token (logout, the device actions).
#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// An action's opening: the form carries this session's CSRF token and the caller is an
/// admin (every form post but logout acts).
fn admin_post(caller: &Caller, csrf: &str) -> Result<(), Response> {
    check_csrf(caller, csrf)?;
    require_admin(caller)
}

/// An action on one device: [`admin_post`], and the device is one the caller may see.
async fn admin_device_post(
    s: &WebState,
    caller: &Caller,
    csrf: &str,
    id: &str,
) -> Result<DeviceRow, Response> {
    admin_post(caller, csrf)?;
    visible_device(s, caller, id).await
}

/// Back to a device's page with a banner (`key` names it: `saved`, `error`, …).
fn device_banner(id: Uuid, key: &str, text: &str) -> Response {
    Redirect::to(&format!("/devices/{id}?{key}={}", url_encode(text))).into_response()
}
