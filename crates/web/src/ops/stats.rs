//! What the dashboard's numbers are made of: runs, the queue, the overview, activity,
//! backup ages, and the tenants with their device counts (and naming one).

use super::*;

/// A device's runs, newest first.
pub async fn device_runs(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    p: &LimitParams,
) -> ApiResult<Vec<Run>> {
    let limit = limit_of(p.limit)?;
    device(s, c, id).await?;
    Ok(s.store().runs(id, limit).await?)
}

/// Recent runs across the caller's devices.
pub async fn recent_runs(s: &WebState, c: &Caller, p: &RunsParams) -> ApiResult<Vec<RecentRun>> {
    let limit = limit_of(p.limit)?;
    Ok(s.report()
        .recent_runs(c.tenant(), p.failures.unwrap_or(false), limit)
        .await?)
}

/// Queue stats for a caller: whole-queue for unscoped callers; a tenant's own share,
/// and only its own in-flight job ids, for scoped ones.
pub async fn queue_stats(s: &WebState, c: &Caller) -> ApiResult<QueueStats> {
    let tenant = c.tenant();
    let mut workers = s.queue().workers().await?;
    let (_, dead) = s.queue().jobs(JobListState::Dead, tenant, 0, 1).await?;
    match tenant {
        None => Ok(QueueStats {
            depth: Some(s.queue().depth().await?),
            tenant: None,
            dead,
            workers,
        }),
        Some(t) => {
            for w in &mut workers {
                let mut own = Vec::new();
                for id in &w.inflight {
                    if let Some(job) = s.queue().job(id).await?
                        && job.tenant_id == Some(t)
                    {
                        own.push(id.clone());
                    }
                }
                w.inflight = own;
            }
            Ok(QueueStats {
                depth: None,
                tenant: Some(s.report().tenant_queue(t).await?),
                dead,
                workers,
            })
        }
    }
}

/// The overview numbers for a caller's scope.
pub async fn overview(s: &WebState, c: &Caller) -> ApiResult<Overview> {
    let tenant = c.tenant();
    let default_interval = s.schedule().interval;
    let (freshness, states, queue, recent_failures) = tokio::join!(
        s.report().freshness(tenant, default_interval),
        s.report().states(tenant),
        queue_stats(s, c),
        s.report().recent_runs(tenant, true, 10),
    );
    Ok(Overview {
        freshness: freshness?,
        states: states?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        queue: queue?,
        recent_failures: recent_failures?,
    })
}

/// Backups per time bucket.
pub async fn activity(
    s: &WebState,
    c: &Caller,
    p: &ActivityParams,
) -> ApiResult<Vec<ActivityBucket>> {
    let minutes = p.minutes.unwrap_or(180);
    if !(1..=10080).contains(&minutes) {
        return Err(ApiError::bad_request(
            "minutes must be 1 to 10080",
            Some("minutes".into()),
        ));
    }
    let bucket = p.bucket.unwrap_or(1);
    if !(1..=1440).contains(&bucket) {
        return Err(ApiError::bad_request(
            "bucket must be 1 to 1440 minutes",
            Some("bucket".into()),
        ));
    }
    Ok(s.report().activity(c.tenant(), minutes, bucket).await?)
}

/// Enabled devices by the age of their last successful backup.
pub async fn backup_ages(s: &WebState, c: &Caller) -> ApiResult<Vec<AgeBucket>> {
    Ok(s.report().backup_ages(c.tenant()).await?)
}

/// Devices per tenant.
pub async fn tenants(s: &WebState, c: &Caller) -> ApiResult<Vec<TenantCount>> {
    Ok(s.report().tenants(c.tenant()).await?)
}

/// Name a tenant (admins; a tenant-scoped admin only its own, another is a 404).
pub async fn name_tenant(
    s: &WebState,
    c: &Caller,
    id: Uuid,
    body: TenantName,
) -> ApiResult<TenantCount> {
    require_admin(c)?;
    if c.tenant().is_some_and(|t| t != id) {
        return Err(ApiError::not_found(format!("no tenant {id}")));
    }
    let name = rosbackup_core::tenant::parse_tenant_name(&body.name)
        .map_err(|r| ApiError::invalid("name", r))?;
    rosbackup_core::tenant::set_name(s.store(), id, &name).await?;
    let devices = s
        .report()
        .tenants(Some(id))
        .await?
        .first()
        .map_or(0, |t| t.devices);
    Ok(TenantCount {
        tenant_id: id,
        name: Some(name),
        devices,
    })
}
