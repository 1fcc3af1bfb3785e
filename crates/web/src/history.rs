//! Config history in the dashboard and the API: a device's version timeline, the diff
//! between versions, the fleet's recent changes, and (admins only) a version's text.
//!
//! Diffs are config text, and configs hold secrets. Admins see diffs as they are; every
//! other caller sees the values of secret-looking properties (`password=`, `secret=`,
//! `passphrase=`, `private-key=`, …) masked. Whole versions are downloadable by admins
//! only. Everything is scoped to the caller's tenant like the rest of the web layer.
//!
//! A face of its own (JSON handlers and pages), below `api` and `pages`: `api` routes
//! and documents its JSON handlers, `pages` embeds its timeline and change feed. It
//! imports `ops`, `auth`, `extract`, `error`, `layout` and `state`, never `api` or
//! `pages`.

// Handlers fail with a ready page (`Response`), the axum idiom; its size is irrelevant.
#![allow(clippy::result_large_err)]

use crate::auth::{ApiCaller, Caller, PageCaller};
use crate::error::{ApiError, error_page};
use crate::extract::{ApiQuery, DeviceId, PageQuery};
use crate::layout::{self, Nav, ago};
use crate::ops;
use crate::state::WebState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use rosbackup_archive::{Change, VersionDiff, VersionInfo};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

fn archive_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "archive_unavailable",
        "this server has no ARCHIVE_ENCRYPTION_KEY, so it can list versions but not open them",
    )
}

/// Property names whose values are secrets in RouterOS exports.
const SECRET_KEYS: [&str; 9] = [
    "password",
    "secret",
    "passphrase",
    "private-key",
    "pre-shared-key",
    "authentication-key",
    "auth-key",
    "psk",
    "key",
];

/// Mask the values of secret-looking `name=value` pairs in one line.
pub fn mask_secrets(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq);
        let name_start = before
            .rfind(|c: char| c.is_whitespace() || c == '"')
            .map_or(0, |i| i + 1);
        let name = &before[name_start..];
        out.push_str(before);
        out.push('=');
        let value = &after[1..];
        let secret = SECRET_KEYS
            .iter()
            .any(|k| name == *k || name.ends_with(&format!("-{k}")));
        if secret && !value.is_empty() {
            let end = if let Some(quoted) = value.strip_prefix('"') {
                quoted.find('"').map_or(value.len(), |i| i + 2)
            } else {
                value.find(char::is_whitespace).unwrap_or(value.len())
            };
            out.push_str("••••••");
            rest = &value[end..];
        } else {
            rest = value;
        }
    }
    out.push_str(rest);
    out
}

// ---- API ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionsParams {
    /// 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

fn limit(l: Option<i64>) -> Result<i64, ApiError> {
    let l = l.unwrap_or(50);
    if (1..=1000).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit must be 1 to 1000",
        ))
    }
}

/// A version of this device the caller may see.
async fn device_version(
    s: &WebState,
    tenant: Option<Uuid>,
    device: Uuid,
    version: i64,
) -> Result<VersionInfo, ApiError> {
    s.history()
        .version(version, tenant)
        .await?
        .filter(|v| v.device_id == device)
        .ok_or_else(|| ApiError::not_found(format!("no version {version} of device {device}")))
}

/// The archived versions of a device, newest first.
#[utoipa::path(get, path = "/api/v1/devices/{id}/versions", tag = "history",
    params(("id" = Uuid, Path, description = "device id"), VersionsParams),
    responses((status = 200, body = Vec<VersionInfo>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn versions_api(
    State(s): State<WebState>,
    c: ApiCaller,
    DeviceId(id): DeviceId,
    ApiQuery(p): ApiQuery<VersionsParams>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    let limit = limit(p.limit)?;
    ops::device(&s, &c.0, id).await?;
    Ok(Json(s.history().versions(id, c.0.tenant(), limit).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    /// Compare with this version of the same device (default: the one before).
    pub against: Option<i64>,
}

/// Unified diff of a version against the previous one (or `against`).
#[utoipa::path(get, path = "/api/v1/devices/{id}/versions/{version}/diff", tag = "history",
    params(("id" = Uuid, Path, description = "device id"), ("version" = i64, Path, description = "version id"), DiffParams),
    responses((status = 200, body = VersionDiff), (status = 404, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub async fn diff_api(
    State(s): State<WebState>,
    c: ApiCaller,
    Path((id, version)): Path<(String, String)>,
    ApiQuery(p): ApiQuery<DiffParams>,
) -> Result<Json<VersionDiff>, ApiError> {
    let (id, version) = parse_ids(&id, &version)?;
    let d = diff_for(&s, &c.0, id, version, p.against).await?;
    Ok(Json(d))
}

fn parse_ids(id: &str, version: &str) -> Result<(Uuid, i64), ApiError> {
    let id = Uuid::try_parse(id).map_err(|_| ApiError {
        field: Some("id".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "device id must be a UUID",
        )
    })?;
    let version = version.parse::<i64>().map_err(|_| ApiError {
        field: Some("version".into()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "version must be an integer",
        )
    })?;
    Ok((id, version))
}

/// The diff a caller may see: scoped, secrets masked for non-admins.
async fn diff_for(
    s: &WebState,
    c: &Caller,
    device: Uuid,
    version: i64,
    against: Option<i64>,
) -> Result<VersionDiff, ApiError> {
    let tenant = c.tenant();
    let v = device_version(s, tenant, device, version).await?;
    let from = match against {
        Some(a) => Some(device_version(s, tenant, device, a).await?.id),
        None => v.previous_version_id,
    };
    if !s.can_read_archive() {
        return Err(archive_unavailable());
    }
    let mut d = match from {
        Some(from) => s
            .history()
            .diff(from, v.id, tenant)
            .await?
            .ok_or_else(|| ApiError::not_found("no such versions"))?,
        // The first version: everything is new.
        None => {
            let text = s
                .history()
                .text(v.id, tenant)
                .await?
                .ok_or_else(|| ApiError::not_found("no such version"))?;
            let unified: String = text.lines().map(|l| format!("+{l}\n")).collect();
            VersionDiff {
                from_id: 0,
                to_id: v.id,
                added: text.lines().count(),
                removed: 0,
                menus: v.changed_menus.clone(),
                unified,
            }
        }
    };
    if !c.principal.is_admin() {
        d.unified = d.unified.lines().map(|l| mask_secrets(l) + "\n").collect();
    }
    Ok(d)
}

/// A version's full text (admins only: it holds secrets).
#[utoipa::path(get, path = "/api/v1/devices/{id}/versions/{version}/text", tag = "history",
    params(("id" = Uuid, Path, description = "device id"), ("version" = i64, Path, description = "version id")),
    responses((status = 200, content_type = "text/plain", body = String),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub async fn text_api(
    State(s): State<WebState>,
    c: ApiCaller,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (id, version) = parse_ids(&id, &version)?;
    download(&s, &c.0, id, version).await
}

async fn download(
    s: &WebState,
    c: &Caller,
    device: Uuid,
    version: i64,
) -> Result<Response, ApiError> {
    ops::require_admin(c)?;
    let v = device_version(s, c.tenant(), device, version).await?;
    if !s.can_read_archive() {
        return Err(archive_unavailable());
    }
    let bytes = s
        .history()
        .text_bytes(v.id, c.tenant())
        .await?
        .ok_or_else(|| ApiError::not_found("no such version"))?;
    let name = s
        .report()
        .device(device, c.tenant())
        .await?
        .map(|d| d.device.name)
        .unwrap_or_else(|| device.to_string());
    let safe: String = name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    tracing::info!(device_id = %device, version = v.id, by = %c.principal.name, "config version downloaded");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}-v{}.rsc\"", v.id),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// New versions across the fleet, newest first.
#[utoipa::path(get, path = "/api/v1/changes", tag = "history", params(VersionsParams),
    responses((status = 200, body = Vec<Change>)))]
pub async fn changes_api(
    State(s): State<WebState>,
    c: ApiCaller,
    ApiQuery(p): ApiQuery<VersionsParams>,
) -> Result<Json<Vec<Change>>, ApiError> {
    let limit = limit(p.limit)?;
    Ok(Json(s.history().recent_changes(c.0.tenant(), limit).await?))
}

// ---- pages -------------------------------------------------------------------------

pub(super) fn page_routes() -> axum::Router<WebState> {
    axum::Router::new()
        .route("/devices/{id}/versions/{version}", get(diff_page))
        .route(
            "/devices/{id}/versions/{version}/download",
            get(download_page),
        )
}

fn menus(m: &[String]) -> Markup {
    html! {
        @for menu in m { code.menu { (menu) } " " }
    }
}

/// A device's version timeline (on its page).
pub fn timeline(device: Uuid, versions: &[VersionInfo]) -> Markup {
    html! {
        @if versions.is_empty() {
            p.muted { "No archived versions yet. The archiver (" code { "rosbackup archiver" } ") keeps every change; see the README's Config history." }
        } @else {
            ol.timeline id="versions" {
                @for v in versions {
                    li data-version=(v.id) {
                        div.when { (ago(v.first_seen_at)) }
                        div.what {
                            a href=(format!("/devices/{device}/versions/{}", v.id)) {
                                @if v.previous_version_id.is_none() { "First version" } @else { "Changed" }
                            }
                            " " span.diffstat { span.add { "+" (v.added_lines) } " " span.del { "−" (v.removed_lines) } }
                            " " (menus(&v.changed_menus))
                        }
                        div.meta.muted.small {
                            code { (rosbackup_archive::short(&v.sha256)) } " · " (v.size) " bytes · seen " (v.seen_count) "× · last " (ago(v.last_seen_at))
                            @if let Some(r) = &v.routeros_version { " · RouterOS " (r) }
                        }
                    }
                }
            }
        }
    }
}

/// The fleet's recent changes (on the overview).
pub fn changes_feed(changes: &[Change]) -> Markup {
    html! {
        @if changes.is_empty() {
            p.muted { "No configuration changes recorded yet." }
        } @else {
            table.compact id="changes" {
                thead { tr { th { "When" } th { "Device" } th { "Menus changed" } th {} } }
                tbody {
                    @for ch in changes {
                        tr {
                            td { (ago(ch.at)) }
                            td { a href=(format!("/devices/{}", ch.device_id)) { (ch.device_name) } }
                            td { @if ch.previous_version_id.is_none() { span.muted { "first version" } } @else { (menus(&ch.menus)) } }
                            td { a href=(format!("/devices/{}/versions/{}", ch.device_id, ch.version_id)) { "diff →" } }
                        }
                    }
                }
            }
        }
    }
}

fn diff_lines(unified: &str) -> Markup {
    html! {
        pre.diff id="diff" {
            @for line in unified.lines() {
                @let class = if line.starts_with("+++") || line.starts_with("---") { "file" }
                    else if line.starts_with("@@") { "hunk" }
                    else if line.starts_with('+') { "add" }
                    else if line.starts_with('-') { "del" }
                    else { "ctx" };
                span class=(class) { (line) "\n" }
            }
        }
    }
}

#[derive(Deserialize)]
struct DiffPageParams {
    against: Option<String>,
}

async fn diff_page(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path((id, version)): Path<(String, String)>,
    PageQuery(p): PageQuery<DiffPageParams>,
) -> Result<Response, Response> {
    let (id, version) = parse_ids(&id, &version)
        .map_err(|_| error_page(StatusCode::NOT_FOUND, "No such version."))?;
    let page_err = |e: ApiError| error_page(e.status, &e.message);
    let against = match p.against.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(
            a.parse::<i64>()
                .map_err(|_| error_page(StatusCode::BAD_REQUEST, "Bad version to compare with."))?,
        ),
    };
    let row = ops::device(&s, &c, id)
        .await
        .map_err(ApiError::device_page)?;
    let v = device_version(&s, c.tenant(), id, version)
        .await
        .map_err(page_err)?;
    let all = s
        .history()
        .versions(id, c.tenant(), 200)
        .await
        .map_err(|e| page_err(e.into()))?;
    let diff = if s.can_read_archive() {
        Some(
            diff_for(&s, &c, id, version, against)
                .await
                .map_err(page_err)?,
        )
    } else {
        None
    };
    let body = html! {
        div.page-head {
            div {
                a.muted href=(format!("/devices/{id}")) { "← " (row.device.name) }
                h1 { "Version " (v.id) " " span.muted.small { (v.first_seen_at.format("%Y-%m-%d %H:%M UTC")) } }
                p.muted {
                    code title=(v.sha256) { (rosbackup_archive::short(&v.sha256)) } " · " (v.size) " bytes · seen " (v.seen_count) "× (last " (ago(v.last_seen_at)) ")"
                }
            }
            div.actions {
                form method="get" action=(format!("/devices/{id}/versions/{}", v.id)) {
                    label for="against" .muted.small { "Compare with " }
                    select id="against" name="against" data-autosubmit {
                        option value="" selected[against.is_none()] { "the previous version" }
                        @for o in all.iter().filter(|o| o.id != v.id) {
                            option value=(o.id) selected[against == Some(o.id)] {
                                "v" (o.id) " — " (o.first_seen_at.format("%Y-%m-%d %H:%M"))
                            }
                        }
                    }
                    noscript { button type="submit" { "Compare" } }
                }
                @if c.principal.is_admin() && s.can_read_archive() {
                    a.button id="download" href=(format!("/devices/{id}/versions/{}/download", v.id)) { "Download (admins)" }
                }
            }
        }
        @match &diff {
            None => div.banner.info { "This server has no ARCHIVE_ENCRYPTION_KEY: it lists versions but cannot open them to show the diff." },
            Some(d) => {
                section.card {
                    h2 {
                        @if d.from_id == 0 { "First version" } @else { "Changes from version " (d.from_id) }
                        " " span.diffstat { span.add { "+" (d.added) } " " span.del { "−" (d.removed) } }
                    }
                    @if !d.menus.is_empty() { p { "Menus: " (menus(&d.menus)) } }
                    @if !c.principal.is_admin() { p.muted.small { "Secret values are masked; admins see them." } }
                    @if d.unified.is_empty() { p.muted { "No differences." } } @else { (diff_lines(&d.unified)) }
                }
            }
        }
        section.card {
            h2 { "All versions" }
            (timeline(id, &all))
        }
    };
    Ok(layout::page(
        &c.chrome(&s),
        &format!("{} v{}", row.device.name, v.id),
        Nav::Devices,
        body,
    )
    .into_response())
}

async fn download_page(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, Response> {
    let (id, version) = parse_ids(&id, &version)
        .map_err(|_| error_page(StatusCode::NOT_FOUND, "No such version."))?;
    download(&s, &c, id, version)
        .await
        .map_err(|e| error_page(e.status, &e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_secrets("add name=office passphrase=hunter2hunter2 mode=dynamic-keys"),
            "add name=office passphrase=•••••• mode=dynamic-keys"
        );
        assert_eq!(
            mask_secrets("set wpa2-pre-shared-key=\"a b c\" supplicant-identity=MikroTik"),
            "set wpa2-pre-shared-key=•••••• supplicant-identity=MikroTik"
        );
        assert_eq!(
            mask_secrets("+add name=admin password=s3cret group=full"),
            "+add name=admin password=•••••• group=full"
        );
        assert_eq!(
            mask_secrets("/interface wireguard add private-key=\"KEY=\" name=wg0"),
            "/interface wireguard add private-key=•••••• name=wg0"
        );
        assert_eq!(
            mask_secrets("set keepalive=10s name=x"),
            "set keepalive=10s name=x"
        );
        assert_eq!(mask_secrets("no pairs here"), "no pairs here");
    }
}
