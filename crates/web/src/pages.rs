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

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

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

// ---- login -------------------------------------------------------------------------

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
    signed_out: Option<String>,
}

async fn login_form(
    State(s): State<WebState>,
    caller: Option<PageCaller>,
    PageQuery(q): PageQuery<LoginQuery>,
) -> Response {
    if caller.is_some() && q.error.is_none() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    let csrf = {
        use base64::Engine;
        use rand::RngCore;
        let mut b = [0u8; 18];
        rand::rngs::OsRng.fill_bytes(&mut b);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · rosbackup" }
                link rel="icon" href=(FAVICON);
                link rel="stylesheet" href="/assets/app.css";
            }
            body.center {
                form.card.narrow.login method="post" action="/login" {
                    div.brand.big { span.logo { "◆" } " rosbackup" }
                    p.muted { "Configuration backups for MikroTik RouterOS fleets." }
                    @if q.error.is_some() {
                        div.banner.danger id="login-error" { "That token is not valid, or it was revoked." }
                    } @else if q.signed_out.is_some() {
                        div.banner.good id="signed-out" { "You have been signed out." }
                    }
                    label for="token" { "API token" }
                    input id="token" name="token" type="password" autocomplete="off" required
                        placeholder="rbk_…" autofocus;
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(safe_next(q.next.as_deref()));
                    button.primary type="submit" id="login" { "Sign in" }
                    p.muted.small { "No token yet? On the server: " code { "rosbackup tokens create --name you --role admin" } }
                }
            }
        }
    };
    let cookie = set_cookie(LOGIN_COOKIE, &csrf, 600, s.settings().secure_cookies);
    ([(header::SET_COOKIE, cookie)], Html(page.into_string())).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

async fn login(
    State(s): State<WebState>,
    headers: axum::http::HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty()
        || !rosbackup_core::access::digest_eq(expected.as_bytes(), f.csrf.as_bytes())
    {
        return error_page(
            StatusCode::FORBIDDEN,
            "The sign-in form expired. Go back, reload it and sign in again.",
        );
    }
    let next = safe_next(f.next.as_deref());
    let principal = match s.access().authenticate(&f.token).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::info!("dashboard login refused");
            return Redirect::to(&format!("/login?error=1&next={}", url_encode(&next)))
                .into_response();
        }
        Err(err) => return ApiError::from(err).page(),
    };
    let Some(token_id) = principal.token_id else {
        return Redirect::to("/").into_response();
    };
    let ttl = s.settings().session_ttl;
    let session = match s
        .access()
        .open_session(token_id, chrono::Duration::seconds(ttl.as_secs() as i64))
        .await
    {
        Ok(sess) => sess,
        Err(err) => return ApiError::from(err).page(),
    };
    tracing::info!(token = %principal.name, "dashboard login");
    let secure = s.settings().secure_cookies;
    let mut res = Redirect::to(&next).into_response();
    let h = res.headers_mut();
    for c in [
        set_cookie(
            SESSION_COOKIE,
            &session.cookie,
            ttl.as_secs() as i64,
            secure,
        ),
        set_cookie(LOGIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    res
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(s): State<WebState>,
    PageCaller(caller): PageCaller,
    headers: axum::http::HeaderMap,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&caller, &f.csrf)?;
    if let Some(c) = auth::cookie(&headers, SESSION_COOKIE) {
        s.access()
            .close_session(c)
            .await
            .map_err(|err| ApiError::from(err).page())?;
    }
    let mut res = Redirect::to("/login?signed_out=1").into_response();
    if let Ok(v) = set_cookie(SESSION_COOKIE, "", 0, s.settings().secure_cookies).parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

// ---- overview ----------------------------------------------------------------------

#[derive(Deserialize)]
struct OverviewParams {
    window: Option<String>,
}

/// Chart windows: name, minutes of history, minutes per bar, title.
const WINDOWS: [(&str, i64, i64, &str); 3] = [
    ("1h", 60, 1, "Backups per minute (last hour, UTC)"),
    ("6h", 360, 5, "Backups per 5 minutes (last 6 hours, UTC)"),
    (
        "24h",
        1440,
        15,
        "Backups per 15 minutes (last 24 hours, UTC)",
    ),
];

fn window_of(p: &OverviewParams) -> (&'static str, i64, i64, &'static str) {
    WINDOWS
        .iter()
        .copied()
        .find(|w| Some(w.0) == p.window.as_deref())
        .unwrap_or(WINDOWS[0])
}

async fn overview(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    PageQuery(p): PageQuery<OverviewParams>,
) -> PageResult {
    let window = window_of(&p);
    let body = overview_body(&s, &c, window).await?;
    Ok(frame(
        &s,
        &c,
        "Overview",
        Nav::Overview,
        html! { div data-refresh=(format!("/fragments/overview?window={}", window.0)) data-every="5000" { (body) } },
    )
    .into_response())
}

async fn overview_fragment(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    PageQuery(p): PageQuery<OverviewParams>,
) -> PageResult {
    Ok(Html(overview_body(&s, &c, window_of(&p)).await?.into_string()).into_response())
}

async fn overview_body(
    s: &WebState,
    c: &Caller,
    window: (&'static str, i64, i64, &'static str),
) -> Result<Markup, Response> {
    let tenant = c.tenant();
    let (ov, activity, ages, changes) = tokio::join!(
        ops::overview(s, c),
        s.report().activity(tenant, window.1, window.2),
        s.report().backup_ages(tenant),
        s.history().recent_changes(tenant, 10),
    );
    let changes = changes.map_err(|err| e(err.into()))?;
    let ov: Overview = ov.map_err(e)?;
    let activity = activity.map_err(|err| e(err.into()))?;
    let ages = ages.map_err(|err| e(err.into()))?;
    let f = &ov.freshness;
    let pct = f.share * 100.0;
    let tone = if pct >= 99.0 {
        "good"
    } else if pct >= 90.0 {
        "warn"
    } else {
        "bad"
    };
    let attention: i64 = DeviceState::ALL
        .iter()
        .filter(|st| st.needs_attention())
        .map(|st| ov.states.get(st.as_str()).copied().unwrap_or(0))
        .sum();
    Ok(html! {
        section.grid.top-row {
            div.card.freshness {
                h2 { "Fleet freshness" }
                div class=(format!("big {tone}")) id="freshness" { (format!("{pct:.1}")) " %" }
                div.meter { span class=(format!("fill {tone}")) style=(format!("width:{pct:.1}%")) {} }
                p.muted {
                    (f.fresh) " of " (f.enabled) " enabled devices backed up within one interval."
                    br;
                    "Oldest successful backup: " (when(f.oldest_success))
                }
                @if attention > 0 {
                    a.button.warn href="/devices?status=attention" { (attention) " need attention →" }
                } @else {
                    p.good { "Nothing needs attention." }
                }
            }
            div.card.states {
                h2 { "Devices by state" }
                div.tiles {
                    @for st in DeviceState::ALL {
                        @let n = ov.states.get(st.as_str()).copied().unwrap_or(0);
                        a class=(format!("tile s-{}{}", st.as_str(), if n == 0 { " zero" } else { "" }))
                            href=(format!("/devices?status={}", st.as_str())) id=(format!("state-{}", st.as_str()))
                            title=(st.explain()) {
                            span.n { (n) }
                            span.l { (st.label()) }
                        }
                    }
                }
            }
        }
        section.grid.two {
            div.card {
                h2 { "Queue" }
                div.tiles.queue {
                    @if let Some(d) = &ov.queue.depth {
                        a.tile href="/jobs?state=scheduled" { span.n { (d.scheduled) } span.l { "scheduled" } }
                        a.tile href="/jobs?state=due" { span.n { (d.due) } span.l { "due" } }
                        a.tile href="/jobs?state=running" { span.n { (d.running) } span.l { "running" } }
                        div.tile { span.n { (d.done) } span.l { "done (retained)" } }
                    } @else if let Some(t) = &ov.queue.tenant {
                        a.tile href="/jobs?state=scheduled" { span.n { (t.scheduled) } span.l { "scheduled" } }
                        a.tile href="/jobs?state=due" { span.n { (t.due) } span.l { "due" } }
                        a.tile href="/jobs?state=running" { span.n { (t.running) } span.l { "running" } }
                    }
                    a class=(if ov.queue.dead > 0 { "tile dead" } else { "tile zero" }) href="/jobs?state=dead" {
                        span.n { (ov.queue.dead) } span.l { "dead" }
                    }
                }
                h3 { "Workers" }
                @if ov.queue.workers.is_empty() {
                    p.banner.danger { "No worker has registered with the queue. Start one: " code { "rosbackup worker" } }
                } @else {
                    table.compact {
                        thead { tr { th { "Worker" } th { "Heartbeat" } th { "Current jobs" } } }
                        tbody {
                            @for w in &ov.queue.workers {
                                tr {
                                    td { span class=(if w.alive { "dot good" } else { "dot bad" }) {} (w.name) }
                                    td { (DateTime::from_timestamp(w.last_heartbeat, 0).map(ago).unwrap_or_default()) }
                                    td {
                                        (w.inflight.len())
                                        @for id in w.inflight.iter().take(3) { " " code.small { (id) } }
                                        @if w.inflight.len() > 3 { " …" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div.card {
                h2 { "Backup age" }
                p.muted { "Enabled devices by the age of their last successful backup." }
                (charts::ages(&ages))
            }
        }
        section.card {
            div.chart-head {
                h2 { (window.3) }
                nav.windows {
                    @for w in WINDOWS {
                        a class=[(w.0 == window.0).then_some("active")] href=(format!("/?window={}", w.0)) { (w.0) }
                    }
                }
            }
            (charts::activity(&activity))
        }
        section.card {
            h2 { "Recent config changes" }
            (crate::history::changes_feed(&changes))
        }
        section.card {
            h2 { "Recent failures" }
            @if ov.recent_failures.is_empty() {
                p.muted { "No failed backups recorded." }
            } @else {
                table {
                    thead { tr { th { "When" } th { "Device" } th { "Kind" } th { "What to do" } th { "Worker" } } }
                    tbody {
                        @for r in &ov.recent_failures {
                            @let kind = r.error_kind.clone().unwrap_or_default();
                            tr {
                                td { (when(Some(r.finished_at))) }
                                td { a href=(format!("/devices/{}", r.device_id)) { (r.device_name) } }
                                td { span.kind style=(format!("border-color:{}", charts::kind_colour(&kind))) { (kind) } }
                                td.hint { (kind.parse::<rosbackup_core::ErrorKind>().map(|k| k.hint()).unwrap_or("")) }
                                td.muted { (r.worker) }
                            }
                        }
                    }
                }
            }
        }
    })
}

// ---- devices -----------------------------------------------------------------------

fn devices_link(p: &DeviceListParams, overrides: &[(&str, Option<String>)]) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let get = |k: &str| {
        overrides
            .iter()
            .find(|(o, _)| *o == k)
            .map(|(_, v)| v.clone())
    };
    let cur = [
        ("search", p.search.clone()),
        ("status", p.status.clone()),
        ("tenant_id", p.tenant_id.map(|t| t.to_string())),
        ("error_kind", p.error_kind.clone()),
        ("sort", p.sort.clone()),
        ("order", p.order.clone()),
        ("limit", p.limit.map(|l| l.to_string())),
        ("offset", p.offset.map(|o| o.to_string())),
    ];
    for (k, v) in cur {
        let v = get(k).unwrap_or(v);
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            pairs.push((k, v));
        }
    }
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect();
    if q.is_empty() {
        "/devices".into()
    } else {
        format!("/devices?{}", q.join("&"))
    }
}

async fn devices(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    PageQuery(p): PageQuery<DeviceListParams>,
) -> PageResult {
    let q = p.to_query(c.tenant()).map_err(e)?;
    let (page, tenants, kinds) = tokio::join!(
        s.report().devices(&q),
        s.report().tenants(c.tenant()),
        s.report().error_kinds(c.tenant()),
    );
    let page = page.map_err(|err| e(err.into()))?;
    let tenants = tenants.map_err(|err| e(err.into()))?;
    let kinds = kinds.map_err(|err| e(err.into()))?;
    let status = q.status.map(StatusFilter::as_str).unwrap_or("");
    let sort_link = |col: DeviceSort| {
        let desc = q.sort == col && !q.descending;
        devices_link(
            &p,
            &[
                ("sort", Some(col.as_str().to_string())),
                ("order", Some(if desc { "desc" } else { "asc" }.to_string())),
                ("offset", None),
            ],
        )
    };
    let arrow = |col: DeviceSort| {
        if q.sort == col {
            if q.descending { " ▼" } else { " ▲" }
        } else {
            ""
        }
    };
    let first = if page.total == 0 { 0 } else { q.offset + 1 };
    let last = (q.offset + page.rows.len() as i64).min(page.total);
    let body = html! {
        div.page-head {
            h1 { "Devices" }
            span.muted id="device-count" { (page.total) " matching" }
        }
        form.filters method="get" action="/devices" id="filters" {
            input type="search" name="search" placeholder="Name, host or id" value=[p.search.as_deref()];
            select name="status" id="status" data-autosubmit {
                option value="" selected[status.is_empty()] { "Any state" }
                option value="attention" selected[status == "attention"] { "Needs attention" }
                @for st in DeviceState::ALL {
                    option value=(st.as_str()) selected[status == st.as_str()] { (st.label()) }
                }
            }
            @if c.tenant().is_none() && tenants.len() > 1 {
                select name="tenant_id" data-autosubmit {
                    option value="" { "All tenants" }
                    @for t in &tenants {
                        option value=(t.tenant_id) selected[q.tenant_id == Some(t.tenant_id)] {
                            (t.label()) " (" (t.devices) ")"
                        }
                    }
                }
            }
            select name="error_kind" data-autosubmit {
                option value="" { "Any error" }
                @for k in &kinds {
                    option value=(k) selected[q.error_kind.as_deref() == Some(k.as_str())] { (k) }
                }
            }
            @if let Some(sort) = &p.sort { input type="hidden" name="sort" value=(sort); }
            @if let Some(order) = &p.order { input type="hidden" name="order" value=(order); }
            button type="submit" { "Filter" }
            @if p.search.is_some() || !status.is_empty() || q.error_kind.is_some() || p.tenant_id.is_some() {
                a.button.ghost href="/devices" { "Clear" }
            }
        }
        div.card.flush {
            table.devices id="devices" {
                thead { tr {
                    th { a href=(sort_link(DeviceSort::State)) { "State" (arrow(DeviceSort::State)) } }
                    th { a href=(sort_link(DeviceSort::Name)) { "Name" (arrow(DeviceSort::Name)) } }
                    th { a href=(sort_link(DeviceSort::Host)) { "Host" (arrow(DeviceSort::Host)) } }
                    th { a href=(sort_link(DeviceSort::Version)) { "RouterOS" (arrow(DeviceSort::Version)) } }
                    th { a href=(sort_link(DeviceSort::LastSuccess)) { "Last success" (arrow(DeviceSort::LastSuccess)) } }
                    th { a href=(sort_link(DeviceSort::NextDue)) { "Next due" (arrow(DeviceSort::NextDue)) } }
                    th { a href=(sort_link(DeviceSort::Failures)) { "Last error" (arrow(DeviceSort::Failures)) } }
                } }
                tbody {
                    @for row in &page.rows {
                        (device_row(row))
                    }
                    @if page.rows.is_empty() {
                        tr { td colspan="7" .empty { "No device matches these filters." } }
                    }
                }
            }
        }
        div.pager {
            span.muted { (first) "–" (last) " of " (page.total) }
            @if q.offset > 0 {
                a.button.ghost rel="prev" href=(devices_link(&p, &[("offset", Some((q.offset - q.limit).max(0).to_string()))])) { "← Previous" }
            }
            @if last < page.total {
                a.button.ghost rel="next" href=(devices_link(&p, &[("offset", Some((q.offset + q.limit).to_string()))])) { "Next →" }
            }
        }
    };
    Ok(frame(&s, &c, "Devices", Nav::Devices, body).into_response())
}

fn device_row(row: &DeviceRow) -> Markup {
    let d = &row.device;
    let st = row.state();
    let hint = hint_for(row);
    html! {
        tr data-device=(d.id) data-state=(st.as_str()) {
            td { (state_badge(st)) }
            td { a href=(format!("/devices/{}", d.id)) { (d.name) } }
            td.mono { (d.host) @if d.ssh_port != 22 { ":" (d.ssh_port) } }
            td { (d.routeros_version.as_deref().unwrap_or("—")) }
            td { (when(d.last_success_at)) }
            td { @if d.enabled && d.blocked_reason.is_none() { (until(d.next_due_at)) } @else { span.muted { "—" } } }
            td {
                @if d.consecutive_failures > 0 || d.blocked_reason.is_some() {
                    @if let Some(k) = &d.last_error_kind {
                        span.kind style=(format!("border-color:{}", charts::kind_colour(k))) { (k) }
                    }
                    @if let Some(h) = &hint { div.hint { (h) } }
                }
            }
        }
    }
}

// ---- one device --------------------------------------------------------------------

#[derive(Deserialize)]
struct DeviceQueryParams {
    job: Option<String>,
    done: Option<String>,
    /// A refused form value, shown in a banner (the export timeout form).
    error: Option<String>,
}

async fn visible_device(s: &WebState, c: &Caller, id: &str) -> Result<DeviceRow, Response> {
    let id =
        Uuid::try_parse(id).map_err(|_| error_page(StatusCode::NOT_FOUND, "No such device."))?;
    ops::device(s, c, id).await.map_err(ApiError::device_page)
}

async fn device(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    PageQuery(q): PageQuery<DeviceQueryParams>,
) -> PageResult {
    let row = visible_device(&s, &c, &id).await?;
    let runs = s
        .store()
        .runs(row.device.id, 25)
        .await
        .map_err(|err| e(err.into()))?;
    let versions = s
        .history()
        .versions(row.device.id, c.tenant(), 20)
        .await
        .map_err(|err| e(err.into()))?;
    // Binaries are listed only where the device is shown; a store hiccup hides them.
    let binaries = rosbackup_core::binary::store::list(s.store(), row.device.id, c.tenant(), 20)
        .await
        .unwrap_or_default();
    let timeout = effective_timeout(&s, row.device.id).await;
    let via = via_bastion(&s, &row).await;
    let d = &row.device;
    let st = row.state();
    let bastion_blocked = d.blocked_reason.as_deref() == Some("bastion_host_key_mismatch");
    // The jump host field shows the device's own setting (never a secret).
    let own_jump = match &via {
        Some(j) if j.source == Some(rosbackup_core::jump::JumpSource::Device) => j.display.clone(),
        _ if d.jump_direct => "direct".to_string(),
        _ => String::new(),
    };
    let admin = c.principal.is_admin();
    let action = |name: &str, label: &str, class: &str, confirm: Option<&str>| {
        html! {
            form.inline method="post" action=(format!("/devices/{}/action/{name}", d.id)) data-confirm=[confirm] {
                input type="hidden" name="csrf" value=(c.csrf);
                button type="submit" class=(class) id=(format!("action-{name}")) { (label) }
            }
        }
    };
    let body = html! {
        div.page-head {
            div {
                a.muted href="/devices" { "← Devices" }
                h1 { (d.name) " " (state_badge(st)) }
                @if let Some(h) = hint_for(&row) {
                    p.hint.big-hint {
                        (h)
                        @if admin && st == DeviceState::BlockedAuth {
                            " — " a id="fix-credentials" href=(format!("/devices/{}/credentials", d.id)) { "update them here" }
                        }
                        @if admin && st == DeviceState::BlockedHostKey && !bastion_blocked {
                            " — " a id="fix-host-key" href=(format!("/devices/{}/host-key", d.id)) { "compare the keys and reset" }
                        }
                        @if admin && bastion_blocked {
                            " — the jump host's key changed: " a id="fix-bastion-key" href=(format!("/devices/{}/bastion-key", d.id)) { "compare the bastion's keys and reset" }
                        }
                    }
                }
            }
            @if admin {
                div.actions {
                    form.inline method="post" action=(format!("/devices/{}/backup", d.id)) {
                        input type="hidden" name="csrf" value=(c.csrf);
                        @if d.blocked_reason.is_some() {
                            button.primary type="submit" id="backup-now" disabled
                                title="Blocked devices are not contacted: update the credentials or reset the host key (or Unblock) first" { "Back up now" }
                        } @else {
                            button.primary type="submit" id="backup-now" { "Back up now" }
                        }
                    }
                    @if d.blocked_reason.is_some() || d.consecutive_failures > 0 {
                        (action("unblock", "Unblock", "", None))
                    }
                    a.button id="edit-credentials" href=(format!("/devices/{}/credentials", d.id)) { "Credentials" }
                    @if d.ssh_host_key_fingerprint.is_some() {
                        a.button id="host-key" href=(format!("/devices/{}/host-key", d.id)) { "Host key" }
                    }
                    @if via.is_some() {
                        a.button id="bastion-key" href=(format!("/devices/{}/bastion-key", d.id)) { "Bastion key" }
                    }
                    @if d.enabled {
                        (action("disable", "Disable", "ghost", Some("Stop backing up this device?")))
                    } @else {
                        (action("enable", "Enable", "", None))
                    }
                }
            }
        }
        @if let Some(done) = &q.done { div.banner.good id="flash" { (done) } }
        @if let Some(err) = &q.error { div.banner.danger id="form-error" { (err) } }
        @if let Some(job) = &q.job {
            div id="job-status" data-refresh=(format!("/devices/{}/jobs/{}", d.id, url_encode(job))) data-every="1000" {
                div.banner.info { "Backup requested (" code { (job) } "): waiting for a worker…" }
            }
        }
        div id="cards" data-refresh=(format!("/devices/{}/cards", d.id)) data-every="10000" {
            (device_cards(&s, &row, timeout, via.as_ref()))
        }
        @if admin {
            section.card {
                h2 { "Jump host" }
                p.muted.small {
                    "[user@]host[:port] of a bastion to reach this device through (as ssh -J), "
                    code { "direct" } " to ignore its credential profile's and tenant's, or empty for none of its own. "
                    "A password or key for the bastion is stored encrypted and never shown again; without them the device's user and key log in there."
                }
                form.jump method="post" id="jump-host-form" action=(format!("/devices/{}/jump-host", d.id)) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    (jump_fields("jump", &own_jump, true))
                    button type="submit" id="save-jump-host" { "Save jump host" }
                }
            }
            section.card {
                h2 { "Export timeout" }
                p.muted.small {
                    "Whole seconds (1 to 3600) for this device, or empty for none: its credential profile's, else the fleet's, lengthened for a device whose exports take long or time out."
                }
                form.inline method="post" action=(format!("/devices/{}/export-timeout", d.id)) {
                    input type="hidden" name="csrf" value=(c.csrf);
                    input type="text" name="seconds" id="export-timeout" inputmode="numeric" placeholder="auto"
                        value=[d.export_timeout_seconds.map(|v| v.to_string())];
                    " "
                    button type="submit" id="save-export-timeout" { "Save" }
                }
            }
        }
        section.card {
            h2 { "Run history" }
            div id="runs" data-refresh=(format!("/devices/{}/runs", d.id)) data-every="5000" {
                (runs_table(&runs))
            }
        }
        section.card {
            h2 { "Config history" }
            (crate::history::timeline(d.id, &versions))
        }
        section.card {
            h2 { "Binary backups" }
            (crate::binaries::section(d.id, &binaries, admin))
        }
    };
    Ok(frame(&s, &c, &row.device.name, Nav::Devices, body).into_response())
}

/// The bastion a device is reached through (`[user@]host:port`, its source and the
/// bastion's pinned key, never its credentials); `None`: direct, or unknown for a moment
/// (a store hiccup only hides the line).
async fn via_bastion(s: &WebState, row: &DeviceRow) -> Option<ops::JumpHostView> {
    ops::device_jump(s, row.device.tenant_id, row.device.id)
        .await
        .ok()
        .flatten()
}

/// Where a device's jump host comes from, as the API names it.
fn jump_source_name(source: rosbackup_core::jump::JumpSource) -> &'static str {
    use rosbackup_core::jump::JumpSource::*;
    match source {
        Device => "device",
        Profile => "profile",
        Tenant => "tenant",
    }
}

/// Where a device's jump host comes from, in words.
fn jump_source_words(source: Option<rosbackup_core::jump::JumpSource>) -> &'static str {
    use rosbackup_core::jump::JumpSource::*;
    match source {
        Some(Device) => "its own",
        Some(Profile) => "its credential profile's",
        Some(Tenant) => "its tenant's default",
        None => "",
    }
}

/// The export timeout a device's next run will have, as the workers decide it (`None`
/// when the store does not answer: the card leaves the line out).
async fn effective_timeout(
    s: &WebState,
    id: Uuid,
) -> Option<rosbackup_core::export_timeout::Effective> {
    let inputs = s.store().timeout_inputs(id).await.ok()?;
    Some(rosbackup_core::export_timeout::effective(
        &s.settings().export_timeouts,
        &inputs,
    ))
}

/// The device and backup-state cards (refreshed in place).
fn device_cards(
    s: &WebState,
    row: &DeviceRow,
    timeout: Option<rosbackup_core::export_timeout::Effective>,
    via: Option<&ops::JumpHostView>,
) -> Markup {
    let d = &row.device;
    let schedule = match (&d.backup_cron, d.backup_interval_seconds) {
        (Some(cron), _) => format!("cron {cron}"),
        (None, Some(i)) => format!("every {}", span(i64::from(i))),
        (None, None) => format!(
            "every {} (default)",
            span(s.schedule().interval.as_secs() as i64)
        ),
    };
    html! {
        section.grid.two {
            div.card {
                h2 { "Device" }
                dl.kv {
                    dt { "Host" } dd.mono { (d.host) ":" (d.ssh_port) }
                    @if let Some(b) = via {
                        dt { "Via" } dd id="via-bastion" data-source=[b.source.map(jump_source_name)] {
                            span.mono { "via bastion " (b.display) } " " span.muted { "(" (jump_source_words(b.source)) ")" }
                        }
                        dt { "Bastion key" } dd.mono.small id="bastion-fingerprint" {
                            @if let Some(fp) = &b.pinned_fingerprint { (fp) } @else { span.muted { "not pinned yet (trust on first use)" } }
                        }
                    } @else if d.jump_direct {
                        dt { "Via" } dd id="via-bastion" { "direct " span.muted { "(ignores its profile's and tenant's jump host)" } }
                    }
                    dt { "User" } dd.mono { (d.username) }
                    dt { "RouterOS" } dd { (d.routeros_version.as_deref().unwrap_or("unknown yet")) }
                    dt { "Host key" } dd.mono.small {
                        @if let Some(fp) = &d.ssh_host_key_fingerprint { (fp) } @else { span.muted { "not pinned yet (trust on first use)" } }
                    }
                    dt { "Schedule" } dd { (schedule) }
                    @if let Some(t) = timeout {
                        dt { "Export timeout" } dd id="effective-timeout" data-source=(t.source.as_str()) {
                            (t.seconds) " s " span.muted { "(" (timeout_source_words(t.source)) ")" }
                        }
                    }
                    dt { "Tenant" } dd {
                        @if let Some(n) = &row.tenant_name { span id="tenant-name" { (n) } " " }
                        span.mono.small.muted { (d.tenant_id) }
                    }
                    dt { "Id" } dd.mono.small { (d.id) }
                }
            }
            div.card {
                h2 { "Backup state" }
                dl.kv {
                    dt { "Last success" } dd { (when(d.last_success_at)) }
                    dt { "Last attempt" } dd { (when(d.last_attempt_at)) @if let Some(st) = &d.last_status { " " (run_badge(st)) } }
                    dt { "Next due" } dd { @if d.enabled && d.blocked_reason.is_none() { (until(d.next_due_at)) } @else { "not scheduled" } }
                    dt { "Failures in a row" } dd { (d.consecutive_failures) }
                    @if let Some(b) = d.backoff_until { dt { "Backing off until" } dd { (until(b)) } }
                    @if let Some(r) = &d.blocked_reason { dt { "Blocked" } dd { (r) " " (when(d.blocked_at)) } }
                    @if let Some(k) = &d.last_error_kind { dt { "Last error" } dd { span.kind style=(format!("border-color:{}", charts::kind_colour(k))) { (k) } " " (d.last_error_message.as_deref().unwrap_or("")) } }
                    dt { "Last SHA-256" } dd.mono.small { (d.last_sha256.as_deref().unwrap_or("—")) }
                    dt { "Last size" } dd { (d.last_bytes.map(bytes).unwrap_or_else(|| "—".into())) }
                    @if let (Some(w), Some(t)) = (&d.lease_worker, d.lease_expires_at) {
                        @if t > Utc::now() { dt { "Running on" } dd { (w) } }
                    }
                }
            }
        }
    }
}

async fn device_cards_fragment(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    let row = visible_device(&s, &c, &id).await?;
    let timeout = effective_timeout(&s, row.device.id).await;
    let via = via_bastion(&s, &row).await;
    Ok(Html(device_cards(&s, &row, timeout, via.as_ref()).into_string()).into_response())
}

/// Where an export timeout came from, in words.
fn timeout_source_words(source: rosbackup_core::export_timeout::TimeoutSource) -> &'static str {
    use rosbackup_core::export_timeout::TimeoutSource::*;
    match source {
        Device => "this device's",
        Profile => "its credential profile's",
        Adaptive => "adaptive: its exports took long or timed out",
        Fleet => "the fleet's",
    }
}

/// The export timeout form's fields.
#[derive(Debug, Deserialize)]
struct TimeoutForm {
    csrf: String,
    #[serde(default)]
    seconds: String,
}

/// Set or remove (empty, or `auto`) a device's export timeout; a refused value comes
/// back to the device page in a banner, nothing changed.
async fn save_export_timeout(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<TimeoutForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    let back = |key: &str, text: &str| device_banner(row.device.id, key, text);
    let seconds = match rosbackup_core::export_timeout::parse_override(&f.seconds) {
        Ok(v) => v,
        Err(err) => {
            return Ok(back(
                "error",
                &format!("Export timeout {:?}: {err}", f.seconds.trim()),
            ));
        }
    };
    let body = ops::ExportTimeout {
        seconds: seconds.map(i64::from),
    };
    match ops::set_export_timeout(&s, &c, row.device.id, body).await {
        Ok(view) => {
            let t = view.export_timeout;
            Ok(back(
                "done",
                &format!(
                    "{}: export timeout {}",
                    row.device.name,
                    t.map_or_else(String::new, |t| format!(
                        "{} s ({})",
                        t.seconds,
                        timeout_source_words(t.source)
                    ))
                ),
            ))
        }
        Err(err) if err.status == StatusCode::UNPROCESSABLE_ENTITY => {
            Ok(back("error", &format!("Export timeout: {}", err.message)))
        }
        Err(err) => Err(e(err)),
    }
}

fn runs_table(runs: &[Run]) -> Markup {
    html! {
        @if runs.is_empty() {
            p.muted { "No runs yet." }
        } @else {
            table.runs {
                thead { tr { th { "Finished" } th { "Trigger" } th { "Status" } th { "Error" } th { "Duration" } th { "Timeout" } th { "Size" } th { "SHA-256" } th { "Worker" } } }
                tbody {
                    @for r in runs {
                        tr data-status=(r.status) data-trigger=(r.trigger) data-job=(r.job_id) {
                            td { (when(Some(r.finished_at))) }
                            td { (r.trigger) }
                            td { (run_badge(&r.status)) }
                            td { @if let Some(k) = &r.error_kind { span.kind style=(format!("border-color:{}", charts::kind_colour(k))) { (k) } " " span.small { (r.error_message.as_deref().unwrap_or("")) } } }
                            td { (format!("{:.1} s", r.duration_ms as f64 / 1000.0)) }
                            td.timeout data-source=[r.timeout_source.as_deref()] {
                                @if let (Some(t), Some(src)) = (r.timeout_seconds, &r.timeout_source) {
                                    (t) " s " span.muted.small { (src) }
                                    @if r.timed_out { " " span.kind { "expired" } }
                                }
                            }
                            td { (r.bytes.map(bytes).unwrap_or_default()) }
                            td.mono.small title=[r.sha256.as_deref()] { (r.sha256.as_deref().map(short_hash).unwrap_or("")) }
                            td.muted { (r.worker) }
                        }
                    }
                }
            }
        }
    }
}

async fn device_runs_fragment(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    let row = visible_device(&s, &c, &id).await?;
    let runs = s
        .store()
        .runs(row.device.id, 25)
        .await
        .map_err(|err| e(err.into()))?;
    Ok(Html(runs_table(&runs).into_string()).into_response())
}

async fn job_status_fragment(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path((id, job)): Path<(String, String)>,
) -> PageResult {
    let row = visible_device(&s, &c, &id).await?;
    let runs = s
        .store()
        .runs_for_job(&job)
        .await
        .map_err(|err| e(err.into()))?;
    let run = runs.into_iter().find(|r| r.device_id == row.device.id);
    let markup = match run {
        Some(r) => {
            let (class, text) = match r.status.as_str() {
                "success" => ("good", "Backup succeeded".to_string()),
                "locked" => (
                    "info",
                    "Another backup of this device was running; this one was skipped".to_string(),
                ),
                _ => (
                    "danger",
                    format!(
                        "Backup failed: {}",
                        r.error_kind.as_deref().unwrap_or(&r.status)
                    ),
                ),
            };
            html! {
                div class=(format!("banner {class}")) data-final="1" id="job-result" data-status=(r.status) {
                    strong { (text) }
                    @if let Some(h) = &r.sha256 { " — SHA-256 " code title=(h) { (short_hash(h)) "…" } }
                    " (" @if let Some(b) = r.bytes { (bytes(b)) ", " } (format!("{:.1} s", r.duration_ms as f64 / 1000.0)) ")"
                    @if let Some(m) = &r.error_message { div.small { (m) } }
                    @if let Some(k) = r.error_kind.as_deref().and_then(|k| k.parse::<rosbackup_core::ErrorKind>().ok()) { div.hint { (k.hint()) } }
                }
            }
        }
        None => {
            let state = s
                .queue()
                .job(&job)
                .await
                .map_err(|err| e(err.into()))?
                .map(|j| j.state);
            let text = match state {
                Some(JobListState::Running) => "running on a worker…",
                Some(JobListState::Dead) => "the job died in the queue; see Jobs",
                Some(_) => "queued, waiting for a worker…",
                None => "waiting for the outcome…",
            };
            html! { div.banner.info { span.spinner {} "Backup requested (" code { (job) } "): " (text) } }
        }
    };
    Ok(Html(markup.into_string()).into_response())
}

async fn backup_now(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    let job = ops::request_backup(&s, &c, row.device.id)
        .await
        .map_err(e)?;
    Ok(device_banner(row.device.id, "job", &job.job_id))
}

async fn device_action(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let action = DeviceAction::parse(&action)
        .ok_or_else(|| error_page(StatusCode::NOT_FOUND, "No such action."))?;
    let row = visible_device(&s, &c, &id).await?;
    ops::apply_action(&s, &c, row.device.id, action)
        .await
        .map_err(e)?;
    Ok(device_banner(
        row.device.id,
        "done",
        &format!("{}: {}", row.device.name, action.done()),
    ))
}

// ---- credentials and host key -------------------------------------------------------

/// The credentials form's fields. The password is write-only: never rendered back, and
/// its `Debug` does not print it.
#[derive(Deserialize)]
struct CredentialsForm {
    csrf: String,
    #[serde(default)]
    username: String,
    password: String,
}

impl std::fmt::Debug for CredentialsForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsForm")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

fn credentials_page(
    c: &Caller,
    row: &DeviceRow,
    username: &str,
    error: Option<&ApiError>,
) -> Markup {
    let d = &row.device;
    html! {
        div.page-head {
            div {
                a.muted href=(format!("/devices/{}", d.id)) { "← " (d.name) }
                h1 { "Credentials of " (d.name) }
            }
        }
        form.card.narrow.login id="credentials" method="post" action=(format!("/devices/{}/credentials", d.id)) {
            @if let Some(err) = error {
                div.banner.danger id="credentials-error" data-field=[err.field.as_deref()] {
                    @if let Some(f) = &err.field { (f) ": " } (err.message)
                }
            }
            @if row.state() == DeviceState::BlockedAuth {
                div.banner.info { "The device refused the last login. New credentials lift the block; the next backup is due at once." }
            }
            p.muted { "The password is stored encrypted (CREDENTIAL_ENCRYPTION_KEY) and never shown again, here or anywhere else. Both fields are required; the username is the login the device knows." }
            input type="hidden" name="csrf" value=(c.csrf);
            label for="username" { "Username" }
            input id="username" name="username" type="text" autocomplete="off" required value=(username);
            label for="password" { "New password" }
            input id="password" name="password" type="password" autocomplete="new-password" required;
            button.primary type="submit" id="save-credentials" { "Save credentials" }
        }
    }
}

async fn credentials_form(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    require_admin(&c)?;
    let row = visible_device(&s, &c, &id).await?;
    let body = credentials_page(&c, &row, &row.device.username, None);
    Ok(frame(
        &s,
        &c,
        &format!("Credentials · {}", row.device.name),
        Nav::Devices,
        body,
    )
    .into_response())
}

async fn save_credentials(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<CredentialsForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    // The form sets the user and a new password; a key stays as it is (the API sets
    // keys). An empty password is refused here: for the API it removes the password.
    let result = if f.password.is_empty() {
        Err(ApiError::invalid(
            "password",
            "empty: type the new password",
        ))
    } else {
        let body = ops::Credentials {
            username: Some(f.username.trim().to_string()),
            password: Some(f.password),
            ssh_key: None,
            ssh_key_passphrase: None,
            remove_ssh_key: false,
        };
        ops::set_credentials(&s, &c, row.device.id, body).await
    };
    match result {
        Ok(_) => Ok(device_banner(
            row.device.id,
            "done",
            &format!(
                "{}: credentials saved; any login block is lifted",
                row.device.name
            ),
        )),
        // A refused value: the form again (200, like any page) with the reason; the
        // password field is empty again.
        Err(err)
            if err.status == StatusCode::UNPROCESSABLE_ENTITY
                || err.status == StatusCode::BAD_REQUEST =>
        {
            let page = credentials_page(&c, &row, f.username.trim(), Some(&err));
            Ok((
                StatusCode::OK,
                frame(
                    &s,
                    &c,
                    &format!("Credentials · {}", row.device.name),
                    Nav::Devices,
                    page,
                ),
            )
                .into_response())
        }
        Err(err) => Err(e(err)),
    }
}

async fn host_key_page(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    require_admin(&c)?;
    let row = visible_device(&s, &c, &id).await?;
    let d = &row.device;
    let blocked = row.state() == DeviceState::BlockedHostKey;
    let presented = d
        .last_error_message
        .as_deref()
        .filter(|_| d.last_error_kind.as_deref() == Some("host_key_mismatch"))
        .and_then(rosbackup_core::device::presented_fingerprint);
    let body = html! {
        div.page-head {
            div {
                a.muted href=(format!("/devices/{}", d.id)) { "← " (d.name) }
                h1 { "Host key of " (d.name) }
            }
        }
        section.card {
            @if blocked {
                div.banner.danger { "The device presented a different host key than the one pinned at its first backup. That is expected after a router was replaced, reset or its SSH key regenerated — and it is what a man in the middle looks like. It is not contacted until you decide." }
            }
            dl.kv {
                dt { "Pinned (old)" } dd.mono id="old-fingerprint" { (d.ssh_host_key_fingerprint.as_deref().unwrap_or("none (the next backup pins what it sees)")) }
                @if blocked {
                    dt { "Presented (new)" } dd.mono id="new-fingerprint" { (presented.unwrap_or("not recorded")) }
                }
            }
            p.muted {
                "Verify the new key out of band — e.g. the fingerprint your SSH client shows when you log in to the router over a path you trust — then reset: the pinned key is forgotten, the block lifted, and the next backup (due at once) pins the key the device presents then."
            }
            form.inline method="post" action=(format!("/devices/{}/action/reset-host-key", d.id))
                data-confirm="Forget the pinned host key? The next backup trusts whatever key the device presents." {
                input type="hidden" name="csrf" value=(c.csrf);
                button.primary type="submit" id="action-reset-host-key" { "Reset host key" }
            }
        }
    };
    Ok(frame(
        &s,
        &c,
        &format!("Host key · {}", d.name),
        Nav::Devices,
        body,
    )
    .into_response())
}

// ---- jump host and bastion key -----------------------------------------------------

/// The jump host form's fields. The secrets are write-only: never rendered back, and its
/// `Debug` does not print them.
#[derive(Deserialize)]
struct JumpForm {
    csrf: String,
    #[serde(default)]
    jump_host: String,
    #[serde(default)]
    jump_password: String,
    #[serde(default)]
    jump_key: String,
    #[serde(default)]
    jump_key_passphrase: String,
}

impl std::fmt::Debug for JumpForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JumpForm")
            .field("jump_host", &self.jump_host)
            .finish_non_exhaustive()
    }
}

impl JumpForm {
    /// The operation's body: empty fields are absent.
    fn into_body(self) -> ops::SetJumpHost {
        let some = |v: String| Some(v).filter(|v| !v.trim().is_empty());
        ops::SetJumpHost {
            jump_host: some(self.jump_host),
            jump_password: some(self.jump_password),
            jump_key: some(self.jump_key),
            jump_key_passphrase: some(self.jump_key_passphrase),
        }
    }
}

/// The jump host fields (write-only secrets), for a device, a profile or a tenant.
fn jump_fields(id: &str, current: &str, direct: bool) -> Markup {
    html! {
        label for=(format!("{id}-host")) { "Jump host" }
        input type="text" name="jump_host" id=(format!("{id}-host")) autocomplete="off"
            placeholder=(if direct { "none of its own" } else { "none" }) value=(current);
        label for=(format!("{id}-password")) { "Bastion password (optional)" }
        input type="password" name="jump_password" id=(format!("{id}-password")) autocomplete="new-password";
        label for=(format!("{id}-key")) { "Bastion private key (optional)" }
        textarea name="jump_key" id=(format!("{id}-key")) rows="3" autocomplete="off" spellcheck="false" {}
        label for=(format!("{id}-key-passphrase")) { "Key passphrase (if protected)" }
        input type="password" name="jump_key_passphrase" id=(format!("{id}-key-passphrase")) autocomplete="off";
    }
}

/// A jump host as shown on the jump hosts page: `[user@]host:port`, the secrets it has
/// (by name only) and the bastion's pin.
fn jump_summary(j: Option<&ops::JumpHostView>) -> Markup {
    html! {
        @if let Some(j) = j {
            span.mono { (j.display) }
            @if j.has_password || j.has_key {
                " " span.muted { "(" @if j.has_password { "password" } @if j.has_password && j.has_key { ", " } @if j.has_key { "key" } " stored)" }
            }
            br;
            span.mono.small.muted { "key " (j.pinned_fingerprint.as_deref().unwrap_or("not pinned yet")) }
        } @else {
            span.muted { "none" }
        }
    }
}

#[derive(Deserialize)]
struct JumpHostsParams {
    done: Option<String>,
    error: Option<String>,
}

/// Jump hosts beyond a device's own (admins): the tenants' defaults, the credential
/// profiles', and the bastions' pinned keys with a reset — what `rosbackup tenants
/// set-jump-host`, `credentials set --jump-host` and `bastions` do, through `ops`.
async fn jump_hosts(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    PageQuery(q): PageQuery<JumpHostsParams>,
) -> PageResult {
    require_admin(&c)?;
    let mut tenants = ops::tenants(&s, &c).await.map_err(e)?;
    // A scoped admin's tenant, even before it has a device.
    if let Some(t) = c.tenant()
        && !tenants.iter().any(|x| x.tenant_id == t)
    {
        tenants.push(rosbackup_core::report::TenantCount {
            tenant_id: t,
            name: None,
            devices: 0,
        });
    }
    let mut defaults = Vec::new();
    for t in &tenants {
        defaults.push(ops::tenant_jump(&s, &c, t.tenant_id).await.map_err(e)?);
    }
    let profiles = ops::list_profiles(&s, &c).await.map_err(e)?;
    let pins = ops::bastions(&s, &c).await.map_err(e)?;
    let body = html! {
        div.page-head { div { h1 { "Jump hosts" } } }
        @if let Some(done) = &q.done { div.banner.good id="flash" { (done) } }
        @if let Some(err) = &q.error { div.banner.danger id="form-error" { (err) } }
        p.muted {
            "A device goes through its own jump host (set on its page), else its credential profile's, else its tenant's default. "
            "Passwords and keys for bastions are stored encrypted and never shown again; without them the device's user and key log in there. "
            "Changing a jump host unblocks the devices that no longer go through a bastion whose changed key blocked them."
        }
        section.card id="tenant-jump-hosts" {
            h2 { "Tenant defaults" }
            @for (t, d) in tenants.iter().zip(&defaults) {
                div.jump-owner data-tenant=(t.tenant_id) {
                    h3 { (t.label()) " " span.mono.small.muted { (t.tenant_id) } }
                    p { (jump_summary(d.jump_host.as_ref())) }
                    form.jump method="post" action=(format!("/jump-hosts/tenant/{}", t.tenant_id)) {
                        input type="hidden" name="csrf" value=(c.csrf);
                        (jump_fields(&format!("tenant-{}", t.tenant_id), d.jump_host.as_ref().map_or("", |j| j.display.as_str()), false))
                        button type="submit" id=(format!("save-tenant-{}", t.tenant_id)) { "Save tenant default" }
                    }
                }
            }
        }
        section.card id="profile-jump-hosts" {
            h2 { "Credential profiles" }
            @if profiles.is_empty() { p.muted { "No credential profiles (" code { "rosbackup credentials add" } ")." } }
            @for p in &profiles {
                div.jump-owner data-profile=(p.id) {
                    h3 { (p.name) " " span.muted.small { (p.devices) " device(s)" } }
                    p { (jump_summary(p.jump_host.as_ref())) }
                    form.jump method="post" action=(format!("/jump-hosts/profile/{}", p.id)) {
                        input type="hidden" name="csrf" value=(c.csrf);
                        (jump_fields(&format!("profile-{}", p.id), p.jump_host.as_ref().map_or("", |j| j.display.as_str()), false))
                        button type="submit" id=(format!("save-profile-{}", p.id)) { "Save profile's jump host" }
                    }
                }
            }
        }
        section.card id="bastion-pins" {
            h2 { "Pinned bastion keys" }
            @if pins.is_empty() { p.muted { "None yet: a bastion's key is pinned the first time a backup goes through it." } }
            @else {
                table {
                    thead { tr { th { "Bastion" } th { "Tenant" } th { "Pinned (old)" } th { "Presented instead (new)" } th {} } }
                    tbody {
                        @for b in &pins {
                            @let shown = rosbackup_core::jump::display(None, &b.host, u16::try_from(b.port).unwrap_or(22));
                            tr data-bastion=(shown) {
                                td.mono { (shown) }
                                td.mono.small { (b.tenant_id) }
                                td.mono.small { (b.fingerprint) }
                                td.mono.small { (b.presented_fingerprint.as_deref().unwrap_or("—")) }
                                td {
                                    form.inline method="post" action="/jump-hosts/reset"
                                        data-confirm="Forget the bastion's pinned key? The next backup through it trusts whatever key it presents." {
                                        input type="hidden" name="csrf" value=(c.csrf);
                                        input type="hidden" name="bastion" value=(shown);
                                        input type="hidden" name="tenant_id" value=(b.tenant_id);
                                        button type="submit" { "Reset" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(frame(&s, &c, "Jump hosts", Nav::JumpHosts, body).into_response())
}

/// Back to the jump hosts page with a banner.
fn to_jump_hosts(key: &str, text: &str) -> Response {
    Redirect::to(&format!("/jump-hosts?{key}={}", url_encode(text))).into_response()
}

/// A refused value (422) as a banner, other errors as an error page.
fn jump_outcome<T>(r: Result<T, ApiError>, done: impl FnOnce(T) -> String) -> PageResult {
    match r {
        Ok(v) => Ok(to_jump_hosts("done", &done(v))),
        Err(err) if err.status == StatusCode::UNPROCESSABLE_ENTITY => Ok(to_jump_hosts(
            "error",
            &format!(
                "Jump host: {}{}",
                err.field.map(|f| format!("{f}: ")).unwrap_or_default(),
                err.message
            ),
        )),
        Err(err) => Err(e(err)),
    }
}

fn shown_or_none(j: Option<&ops::JumpHostView>) -> String {
    j.map_or_else(|| "none".into(), |j| j.display.clone())
}

async fn save_tenant_jump(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<JumpForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let id =
        Uuid::try_parse(&id).map_err(|_| error_page(StatusCode::NOT_FOUND, "No such tenant."))?;
    let r = ops::set_tenant_jump(&s, &c, id, f.into_body()).await;
    jump_outcome(r, |t| {
        format!(
            "tenant {}: default jump host {}",
            t.tenant_id,
            shown_or_none(t.jump_host.as_ref())
        )
    })
}

async fn save_profile_jump(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<JumpForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let id = Uuid::try_parse(&id)
        .map_err(|_| error_page(StatusCode::NOT_FOUND, "No such credential profile."))?;
    let r = ops::set_profile_jump(&s, &c, id, f.into_body()).await;
    jump_outcome(r, |p| {
        format!(
            "credential profile {}: jump host {}",
            p.name,
            shown_or_none(p.jump_host.as_ref())
        )
    })
}

#[derive(Debug, Deserialize)]
struct ResetPinForm {
    csrf: String,
    bastion: String,
    tenant_id: Option<Uuid>,
}

async fn reset_bastion_pin(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Form(f): Form<ResetPinForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let bastion = f.bastion.clone();
    let r = ops::reset_bastion(
        &s,
        &c,
        ops::ResetBastion {
            bastion: f.bastion,
            tenant_id: f.tenant_id,
        },
    )
    .await;
    jump_outcome(r, |r| {
        format!(
            "bastion {bastion}: {}; {} device(s) unblocked, due now",
            if r.forgotten {
                "pinned key forgotten"
            } else {
                "no key was pinned"
            },
            r.unblocked
        )
    })
}

/// Set, clear (empty) or make `direct` a device's own jump host through the same
/// operation as the API; a refused value comes back in a banner (the secrets are not
/// sent back), nothing changed.
async fn save_jump_host(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<JumpForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    let back = |key: &str, text: &str| device_banner(row.device.id, key, text);
    match ops::set_device_jump(&s, &c, row.device.id, f.into_body()).await {
        Ok(view) => {
            let shown = match &view.jump_host {
                Some(j) => format!(
                    "via bastion {} ({})",
                    j.display,
                    jump_source_words(j.source)
                ),
                None if view.jump_direct => "direct".into(),
                None => "none".into(),
            };
            Ok(back(
                "done",
                &format!("{}: jump host {shown}", row.device.name),
            ))
        }
        Err(err) if err.status == StatusCode::UNPROCESSABLE_ENTITY => Ok(back(
            "error",
            &format!(
                "Jump host: {}{}",
                err.field.map(|f| format!("{f}: ")).unwrap_or_default(),
                err.message
            ),
        )),
        Err(err) => Err(e(err)),
    }
}

/// The bastion in front of a device: its pinned key and, when it changed, the key it
/// presented instead, with a reset (like a device's host key page).
async fn bastion_key_page(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
) -> PageResult {
    require_admin(&c)?;
    let row = visible_device(&s, &c, &id).await?;
    let d = &row.device;
    let Some(via) = ops::device_jump(&s, d.tenant_id, d.id).await.map_err(e)? else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            "This device is reached directly, through no bastion.",
        ));
    };
    let pinned = ops::bastions(&s, &c)
        .await
        .map_err(e)?
        .into_iter()
        .find(|b| {
            b.tenant_id == d.tenant_id && b.host == via.host && b.port == i32::from(via.port)
        });
    let presented = pinned
        .as_ref()
        .and_then(|b| b.presented_fingerprint.clone());
    let blocked = d.blocked_reason.as_deref() == Some("bastion_host_key_mismatch");
    let bastion = rosbackup_core::jump::display(None, &via.host, via.port);
    let body = html! {
        div.page-head {
            div {
                a.muted href=(format!("/devices/{}", d.id)) { "← " (d.name) }
                h1 { "Bastion key of " (bastion) }
            }
        }
        section.card {
            @if presented.is_some() {
                div.banner.danger { "The bastion presented a different host key than the one pinned when a backup first went through it. Every device of the tenant behind it is blocked until you decide: it is expected after the bastion was rebuilt or its SSH key regenerated — and it is what a man in the middle looks like." }
            }
            dl.kv {
                dt { "Bastion" } dd.mono { (bastion) " " span.muted { "(" (jump_source_words(via.source)) ")" } }
                dt { "Pinned (old)" } dd.mono id="old-bastion-fingerprint" {
                    (pinned.as_ref().map(|b| b.fingerprint.as_str()).unwrap_or("none (the next backup pins what it sees)"))
                }
                @if presented.is_some() || blocked {
                    dt { "Presented (new)" } dd.mono id="new-bastion-fingerprint" { (presented.as_deref().unwrap_or("not recorded")) }
                }
            }
            p.muted {
                "Verify the new key out of band — e.g. the fingerprint ssh shows when you log in to the bastion over a path you trust — then reset: the pin is forgotten, the devices behind the bastion are unblocked and due at once, and the next backup through it pins the key it presents then."
            }
            form.inline method="post" action=(format!("/devices/{}/bastion-key", d.id))
                data-confirm="Forget the bastion's pinned key? The next backup through it trusts whatever key it presents." {
                input type="hidden" name="csrf" value=(c.csrf);
                button.primary type="submit" id="reset-bastion-key" { "Reset bastion key" }
            }
        }
    };
    Ok(frame(
        &s,
        &c,
        &format!("Bastion key · {}", d.name),
        Nav::Devices,
        body,
    )
    .into_response())
}

/// Forget the pinned key of the bastion in front of a device (the API's reset).
async fn reset_bastion_key(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    let row = admin_device_post(&s, &c, &f.csrf, &id).await?;
    let d = &row.device;
    let Some(via) = ops::device_jump(&s, d.tenant_id, d.id).await.map_err(e)? else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            "This device is reached directly, through no bastion.",
        ));
    };
    let bastion = rosbackup_core::jump::display(None, &via.host, via.port);
    let r = ops::reset_bastion(
        &s,
        &c,
        ops::ResetBastion {
            bastion: bastion.clone(),
            tenant_id: Some(d.tenant_id),
        },
    )
    .await
    .map_err(e)?;
    Ok(device_banner(
        d.id,
        "done",
        &format!(
            "bastion {bastion}: {}; {} device(s) unblocked, due now",
            if r.forgotten {
                "pinned key forgotten"
            } else {
                "no key was pinned"
            },
            r.unblocked
        ),
    ))
}

// ---- jobs --------------------------------------------------------------------------

#[derive(Deserialize)]
struct JobsPageParams {
    state: Option<String>,
    offset: Option<u64>,
    done: Option<String>,
}

async fn jobs(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    PageQuery(p): PageQuery<JobsPageParams>,
) -> PageResult {
    let stats = ops::queue_stats(&s, &c).await.map_err(e)?;
    let default_state = if stats.dead > 0 {
        "dead"
    } else if stats
        .depth
        .map(|d| d.running > 0)
        .or(stats.tenant.map(|t| t.running > 0))
        .unwrap_or(false)
    {
        "running"
    } else if stats
        .depth
        .map(|d| d.due == 0 && d.scheduled > 0)
        .or(stats.tenant.map(|t| t.due == 0 && t.scheduled > 0))
        .unwrap_or(false)
    {
        "scheduled"
    } else {
        "due"
    };
    let state = match p.state.as_deref().unwrap_or(default_state) {
        "scheduled" => JobListState::Scheduled,
        "due" => JobListState::Due,
        "running" => JobListState::Running,
        "dead" => JobListState::Dead,
        _ => return Err(error_page(StatusCode::BAD_REQUEST, "Unknown job state.")),
    };
    let (state, offset, limit) = ops::jobs_params(&JobsParams {
        state: Some(state),
        offset: p.offset,
        limit: Some(50),
    })
    .map_err(e)?;
    let (items, total) = s
        .queue()
        .jobs(state, c.tenant(), offset, limit)
        .await
        .map_err(|err| e(err.into()))?;
    let names = device_names(&s, &items).await?;
    let count = |st: JobListState| -> Option<u64> {
        match (st, &stats.depth, &stats.tenant) {
            (JobListState::Dead, _, _) => Some(stats.dead),
            (JobListState::Scheduled, Some(d), _) => Some(d.scheduled),
            (JobListState::Due, Some(d), _) => Some(d.due),
            (JobListState::Running, Some(d), _) => Some(d.running),
            (JobListState::Scheduled, None, Some(t)) => u64::try_from(t.scheduled).ok(),
            (JobListState::Due, None, Some(t)) => u64::try_from(t.due).ok(),
            (JobListState::Running, None, Some(t)) => u64::try_from(t.running).ok(),
            _ => None,
        }
    };
    let tab = |st: JobListState, label: &str| {
        html! {
            a class=(if st == state { "tab active" } else { "tab" }) id=(format!("tab-{}", job_state_str(st)))
                href=(format!("/jobs?state={}", job_state_str(st))) {
                (label) @if let Some(n) = count(st) { " " span.count { (n) } }
            }
        }
    };

    let admin = c.principal.is_admin();
    let body = html! {
        div.page-head { h1 { "Jobs" } span.muted { (total) " " (job_state_str(state)) } }
        @if let Some(done) = &p.done { div.banner.good id="flash" { (done) } }
        nav.tabs {
            (tab(JobListState::Scheduled, "Scheduled"))
            (tab(JobListState::Due, "Due"))
            (tab(JobListState::Running, "Running"))
            (tab(JobListState::Dead, "Dead"))
        }
        p.muted.small {
            "Jobs enter the queue shortly before they are due (ROSBACKUP_QUEUE_HORIZON); the full schedule lives with the devices — "
            a href="/devices?sort=next_due" { "devices by next due" } "."
        }
        p.muted.small id="retry-policy" {
            "A failed backup is not retried by the queue: the device's next job is scheduled after "
            (retry_policy())
            " (its state shows Backing off); a wrong password or a changed host key blocks the device instead. A job runs again only when its worker died during it (and is given up when that keeps happening)."
        }
        div.card.flush {
            table id="jobs" {
                thead { tr {
                    th { "Device" } th { "Trigger" } th { "Due" }
                    @if state == JobListState::Running { th { "Worker" } }
                    @if state == JobListState::Dead { th { "Last error" } }
                    th { "Job id" }
                    @if state == JobListState::Dead { th {} }
                } }
                tbody {
                    @for j in &items {
                        tr data-job=(j.job_id) {
                            td.device {
                                @if let Some(d) = j.device_id {
                                    a href=(format!("/devices/{d}")) { (names.iter().find(|(id, _)| *id == d).map(|(_, n)| n.as_str()).unwrap_or("(deleted)")) }
                                } @else { span.muted { "undecodable payload" } }
                            }
                            td.trigger { (j.trigger.map(|t| t.as_str()).unwrap_or("—")) }
                            td.due { (j.due_at.and_then(|t| DateTime::from_timestamp(t, 0)).map(|t| html!{ (until(t)) }).unwrap_or_else(|| html!{ "—" })) }
                            @if state == JobListState::Running { td { (j.worker.as_deref().unwrap_or("—")) } }
                            @if state == JobListState::Dead { td.small { (j.last_error.as_deref().unwrap_or("")) } }
                            td.mono.small.muted.job-id { (j.job_id) }
                            @if state == JobListState::Dead {
                                td.nowrap {
                                    @if admin {
                                        @if j.device_id.is_some() {
                                            form.inline method="post" action="/jobs/retry" {
                                                input type="hidden" name="csrf" value=(c.csrf);
                                                input type="hidden" name="job_id" value=(j.job_id);
                                                button type="submit" { "Retry" }
                                            }
                                        }
                                        form.inline method="post" action="/jobs/discard" data-confirm="Discard this dead job?" {
                                            input type="hidden" name="csrf" value=(c.csrf);
                                            input type="hidden" name="job_id" value=(j.job_id);
                                            button.ghost type="submit" { "Discard" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if items.is_empty() {
                        tr { td colspan="7" .empty { "No " (job_state_str(state)) " jobs." } }
                    }
                }
            }
        }
        div.pager {
            @if offset > 0 {
                a.button.ghost href=(format!("/jobs?state={}&offset={}", job_state_str(state), offset.saturating_sub(limit))) { "← Previous" }
            }
            @if offset + (items.len() as u64) < total {
                a.button.ghost href=(format!("/jobs?state={}&offset={}", job_state_str(state), offset + limit)) { "Next →" }
            }
        }
    };
    Ok(frame(&s, &c, "Jobs", Nav::Jobs, body).into_response())
}

/// The device-level retry policy in words, from the schedule's own backoff steps.
fn retry_policy() -> String {
    let step = |n: i32| span(rosbackup_core::schedule::backoff(n).as_secs() as i64);
    format!("{}, {}, then every {}", step(1), step(2), step(3))
}

fn job_state_str(s: JobListState) -> &'static str {
    match s {
        JobListState::Scheduled => "scheduled",
        JobListState::Due => "due",
        JobListState::Running => "running",
        JobListState::Dead => "dead",
        JobListState::Done => "done",
    }
}

async fn device_names(s: &WebState, jobs: &[JobInfo]) -> Result<Vec<(Uuid, String)>, Response> {
    let ids: Vec<Uuid> = jobs.iter().filter_map(|j| j.device_id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as("SELECT id, name FROM devices WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(s.store().pool())
        .await
        .map_err(|err| e(rosbackup_core::store::StoreError::from(err).into()))
}

#[derive(Deserialize)]
struct JobForm {
    csrf: String,
    job_id: String,
}

async fn retry_job(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Form(f): Form<JobForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    let r = ops::retry_dead(&s, &c, &f.job_id).await.map_err(e)?;
    Ok(Redirect::to(&format!(
        "/jobs?state=dead&done={}",
        url_encode(&format!("Retrying: new job {}", r.job_id))
    ))
    .into_response())
}

async fn discard_job(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Form(f): Form<JobForm>,
) -> PageResult {
    admin_post(&c, &f.csrf)?;
    ops::discard_dead(&s, &c, &f.job_id).await.map_err(e)?;
    Ok(Redirect::to(&format!(
        "/jobs?state=dead&done={}",
        url_encode(&format!("Discarded {}", f.job_id))
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jobs_page_states_the_schedule_s_retry_policy() {
        assert_eq!(retry_policy(), "5 min, 15 min, then every 1 h");
    }

    #[test]
    fn sizes_read_like_people_speak() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(20_480), "20.0 KB");
    }

    #[test]
    fn device_links_keep_filters_and_drop_empty_ones() {
        let p = DeviceListParams {
            search: Some("core router".into()),
            status: Some("failing".into()),
            tenant_id: None,
            error_kind: Some(String::new()),
            sort: None,
            order: None,
            limit: None,
            offset: Some(50),
        };
        assert_eq!(
            devices_link(&p, &[("offset", None)]),
            "/devices?search=core%20router&status=failing"
        );
    }
}
