//! The queue's jobs as people see them: listing by state, and retrying or discarding a
//! dead job.

use super::*;

/// Validate job-list parameters.
pub fn jobs_params(p: &JobsParams) -> ApiResult<(JobListState, u64, u64)> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit must be 1 to 500",
            Some("limit".into()),
        ));
    }
    Ok((
        p.state.unwrap_or(JobListState::Dead),
        p.offset.unwrap_or(0),
        limit,
    ))
}

/// A page of the caller's jobs in one state.
pub async fn jobs(s: &WebState, c: &Caller, p: &JobsParams) -> ApiResult<JobList> {
    let (state, offset, limit) = jobs_params(p)?;
    let (items, total) = s.queue().jobs(state, c.tenant(), offset, limit).await?;
    Ok(JobList { total, items })
}

/// Retry a dead job the caller may see (admins): it leaves the dead set and the device
/// gets a fresh manual job (which takes the device's lease like any other, so it cannot
/// run beside a scheduled one).
pub async fn retry_dead(s: &WebState, c: &Caller, job_id: &str) -> ApiResult<RetriedJob> {
    require_admin(c)?;
    let job = dead_job(s, c, job_id).await?;
    let device_id = job.device_id.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the dead job's payload does not decode; discard it",
        )
    })?;
    let taken = s.queue().take_dead(job_id).await?;
    if taken.is_none() {
        return Err(not_dead(job_id));
    }
    let job = enqueue_manual(s, c, device_id).await?;
    Ok(RetriedJob {
        dead_job_id: job_id.to_string(),
        job_id: job.job_id,
    })
}

/// Discard a dead job the caller may see (admins).
pub async fn discard_dead(s: &WebState, c: &Caller, job_id: &str) -> ApiResult<()> {
    require_admin(c)?;
    dead_job(s, c, job_id).await?;
    match s.queue().take_dead(job_id).await? {
        Some(_) => Ok(()),
        None => Err(not_dead(job_id)),
    }
}

fn not_dead(job_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_dead",
        format!("job {job_id} is not dead; only dead jobs can be retried or discarded"),
    )
}

/// A dead job the caller may see (jobs of other tenants, and jobs without a tenant for
/// scoped callers, are a 404).
async fn dead_job(s: &WebState, c: &Caller, job_id: &str) -> ApiResult<JobInfo> {
    let tenant = c.tenant();
    let job = s
        .queue()
        .job(job_id)
        .await?
        .filter(|j| tenant.is_none() || (j.tenant_id.is_some() && j.tenant_id == tenant))
        .ok_or_else(|| ApiError::not_found(format!("no job {job_id}")))?;
    if job.state != JobListState::Dead {
        return Err(not_dead(job_id));
    }
    Ok(job)
}
