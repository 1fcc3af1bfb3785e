//! The jobs page: "what is the queue doing?" — device, trigger and due time first; retry
//! or discard dead jobs.

use super::*;

#[derive(Deserialize)]
pub(super) struct JobsPageParams {
    state: Option<String>,
    offset: Option<u64>,
    done: Option<String>,
}

pub(super) async fn jobs(
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
pub(super) fn retry_policy() -> String {
    let step = |n: i32| span(rosbackup_core::schedule::backoff(n).as_secs() as i64);
    format!("{}, {}, then every {}", step(1), step(2), step(3))
}

pub(super) fn job_state_str(s: JobListState) -> &'static str {
    match s {
        JobListState::Scheduled => "scheduled",
        JobListState::Due => "due",
        JobListState::Running => "running",
        JobListState::Dead => "dead",
        JobListState::Done => "done",
    }
}

pub(super) async fn device_names(
    s: &WebState,
    jobs: &[JobInfo],
) -> Result<Vec<(Uuid, String)>, Response> {
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
pub(super) struct JobForm {
    csrf: String,
    job_id: String,
}

pub(super) async fn retry_job(
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

pub(super) async fn discard_job(
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
