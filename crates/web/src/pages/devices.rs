//! The device list: "which ones, and what do I do?" — filters, sort, paging on the server.

use super::*;

pub(super) fn devices_link(p: &DeviceListParams, overrides: &[(&str, Option<String>)]) -> String {
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

pub(super) async fn devices(
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

pub(super) fn device_row(row: &DeviceRow) -> Markup {
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
