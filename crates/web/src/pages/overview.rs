//! The overview: "is every router backed up, and if not, why?" — state counts, charts,
//! recent changes (refreshed in place).

use super::*;

#[derive(Deserialize)]
pub(super) struct OverviewParams {
    window: Option<String>,
}

/// Chart windows: name, minutes of history, minutes per bar, title.
pub(super) const WINDOWS: [(&str, i64, i64, &str); 3] = [
    ("1h", 60, 1, "Backups per minute (last hour, UTC)"),
    ("6h", 360, 5, "Backups per 5 minutes (last 6 hours, UTC)"),
    (
        "24h",
        1440,
        15,
        "Backups per 15 minutes (last 24 hours, UTC)",
    ),
];

pub(super) fn window_of(p: &OverviewParams) -> (&'static str, i64, i64, &'static str) {
    WINDOWS
        .iter()
        .copied()
        .find(|w| Some(w.0) == p.window.as_deref())
        .unwrap_or(WINDOWS[0])
}

pub(super) async fn overview(
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

pub(super) async fn overview_fragment(
    State(s): State<WebState>,
    PageCaller(c): PageCaller,
    PageQuery(p): PageQuery<OverviewParams>,
) -> PageResult {
    Ok(Html(overview_body(&s, &c, window_of(&p)).await?.into_string()).into_response())
}

pub(super) async fn overview_body(
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
