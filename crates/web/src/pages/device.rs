//! One device: "what happened to this one?" — its cards, runs, versions, and the actions
//! on it (back up now, enable/disable/unblock, the export timeout).

use super::*;

#[derive(Deserialize)]
pub(super) struct DeviceQueryParams {
    job: Option<String>,
    done: Option<String>,
    /// A refused form value, shown in a banner (the export timeout form).
    error: Option<String>,
}

pub(super) async fn visible_device(
    s: &WebState,
    c: &Caller,
    id: &str,
) -> Result<DeviceRow, Response> {
    let id =
        Uuid::try_parse(id).map_err(|_| error_page(StatusCode::NOT_FOUND, "No such device."))?;
    ops::device(s, c, id).await.map_err(ApiError::device_page)
}

pub(super) async fn device(
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
pub(super) async fn via_bastion(s: &WebState, row: &DeviceRow) -> Option<ops::JumpHostView> {
    ops::device_jump(s, row.device.tenant_id, row.device.id)
        .await
        .ok()
        .flatten()
}

/// Where a device's jump host comes from, as the API names it.
pub(super) fn jump_source_name(source: rosbackup_core::jump::JumpSource) -> &'static str {
    use rosbackup_core::jump::JumpSource::*;
    match source {
        Device => "device",
        Profile => "profile",
        Tenant => "tenant",
    }
}

/// Where a device's jump host comes from, in words.
pub(super) fn jump_source_words(source: Option<rosbackup_core::jump::JumpSource>) -> &'static str {
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
pub(super) async fn effective_timeout(
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
pub(super) fn device_cards(
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

pub(super) async fn device_cards_fragment(
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
pub(super) fn timeout_source_words(
    source: rosbackup_core::export_timeout::TimeoutSource,
) -> &'static str {
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
pub(super) struct TimeoutForm {
    csrf: String,
    #[serde(default)]
    seconds: String,
}

/// Set or remove (empty, or `auto`) a device's export timeout; a refused value comes
/// back to the device page in a banner, nothing changed.
pub(super) async fn save_export_timeout(
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

pub(super) fn runs_table(runs: &[Run]) -> Markup {
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

pub(super) async fn device_runs_fragment(
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

pub(super) async fn job_status_fragment(
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

pub(super) async fn backup_now(
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

pub(super) async fn device_action(
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
