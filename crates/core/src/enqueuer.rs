//! Turning due devices into queued jobs, and keeping PostgreSQL and Redis in agreement.
//!
//! Devices stay "due" in PostgreSQL. Each [`Enqueuer::tick`] claims devices that are due
//! within a short horizon — oldest first, never more than the queue cap minus what is
//! already outstanding — and pushes one job per claim with a deterministic id
//! (`backup:{device}:{due slot}`). A claim is a conditional update, so any number of
//! enqueuers can run: each device gets at most one outstanding scheduled job. The cap
//! keeps Redis far below the 8,000 due jobs at which apalis-redis 1.0 fails every fetch,
//! so a backlog of 100,000 overdue devices drains in waves instead of breaking the fleet.
//!
//! [`Enqueuer::reconcile`] (every `DEVICE_REFRESH_SECONDS`) repairs what can drift: a
//! claim whose job Redis no longer has (Redis restarted empty, a push lost with its
//! enqueuer) or whose job ended without an outcome is dropped, so the device is claimed
//! again; it also trims what apalis never trims and the run history.

use crate::metrics::Metrics;
use crate::queue::{BackupJob, JobState, Queue, QueueError};
use crate::store::{Store, StoreError};
use chrono::Utc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Enqueuer settings.
#[derive(Debug, Clone)]
pub struct EnqueuerSettings {
    /// How often due devices are claimed and pushed.
    pub tick: Duration,
    /// How often claims are checked against Redis and retention runs.
    pub refresh: Duration,
    /// Jobs are pushed this long before they are due.
    pub horizon: Duration,
    /// Most scheduled jobs outstanding at once (keep well under 8,000).
    pub cap: i64,
    /// Most claims per tick, or 1 % of the cap if that is more (see [`Self::tick_batch`]).
    pub batch: i64,
    /// A claim is checked against Redis once it is this old.
    pub stale_after: Duration,
    /// Finished jobs stay in Redis this long.
    pub job_retention: Duration,
    /// Run history older than this is deleted.
    pub run_retention: Duration,
}

impl EnqueuerSettings {
    /// Claims per tick: `batch`, or 1 % of the cap when that is larger. A tick's fixed
    /// costs (counting the outstanding claims, each statement's walk over the due index)
    /// grow with the claims outstanding, so a large cap filled 1,000 at a time slows
    /// down as it fills; at most 100 ticks fill any cap. Under the production cap
    /// (< 8,000) this is `batch`.
    pub fn tick_batch(&self) -> i64 {
        self.batch.max(self.cap / 100)
    }
}

impl Default for EnqueuerSettings {
    fn default() -> Self {
        EnqueuerSettings {
            tick: Duration::from_secs(1),
            refresh: Duration::from_secs(60),
            horizon: Duration::from_secs(60),
            cap: 2000,
            batch: 1000,
            stale_after: Duration::from_secs(30),
            job_retention: Duration::from_secs(3600),
            run_retention: Duration::from_secs(90 * 86_400),
        }
    }
}

/// Why an enqueuer pass failed (it is retried on the next tick).
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub pushed: usize,
    /// Outstanding jobs before the tick.
    pub outstanding: i64,
}

/// What one reconciliation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Claims whose job was missing from Redis.
    pub lost: usize,
    /// Claims whose job had ended without releasing them.
    pub ended: usize,
    /// Claims whose job was in Redis but in no queue set (forgotten and claimed again).
    pub orphaned: usize,
    pub trimmed_jobs: u64,
    pub trimmed_runs: u64,
}

#[derive(Debug, Clone)]
pub struct Enqueuer {
    pub store: Store,
    pub queue: Queue,
    pub settings: EnqueuerSettings,
    pub metrics: Metrics,
}

impl Enqueuer {
    /// Claim what is due within the horizon (up to the cap) and push it.
    pub async fn tick(&self) -> Result<TickReport, EnqueueError> {
        let horizon = Utc::now()
            + chrono::Duration::from_std(self.settings.horizon)
                .unwrap_or(chrono::Duration::minutes(1));
        // Count and claim in one step under one lock: the cap holds with any number of
        // enqueuers (two counting the same room would each fill it).
        let (outstanding, claims) = self
            .store
            .claim_due_capped(horizon, self.settings.cap, self.settings.tick_batch())
            .await?;
        let mut report = TickReport {
            pushed: 0,
            outstanding,
        };
        if claims.is_empty() {
            return Ok(report);
        }
        let jobs: Vec<BackupJob> = claims
            .iter()
            .map(|c| BackupJob::scheduled(c.device_id, c.tenant_id, c.job_id.clone(), c.due_at))
            .collect();
        if let Err(e) = self.queue.push(&jobs).await {
            // Give the claims back so the next tick (or another enqueuer) retries them.
            for c in &claims {
                let _ = self.store.release_claim(c.device_id, &c.job_id).await;
            }
            return Err(e.into());
        }
        self.metrics
            .jobs_enqueued
            .with_label_values(&["scheduled"])
            .inc_by(jobs.len() as u64);
        report.pushed = jobs.len();
        debug!(pushed = jobs.len(), outstanding, "scheduled jobs pushed");
        Ok(report)
    }

    /// Check old claims against Redis, trim finished jobs and old runs, update gauges.
    pub async fn reconcile(&self) -> Result<ReconcileReport, EnqueueError> {
        let mut report = ReconcileReport::default();
        let older_than = Utc::now()
            - chrono::Duration::from_std(self.settings.stale_after)
                .unwrap_or(chrono::Duration::seconds(30));
        let claims = self.store.stale_claims(older_than, 10_000).await?;
        for chunk in claims.chunks(1000) {
            let ids: Vec<String> = chunk.iter().map(|(_, j)| j.clone()).collect();
            let states = self.queue.job_states(&ids).await?;
            for ((device_id, job_id), state) in chunk.iter().zip(states) {
                match state {
                    JobState::Missing => {
                        if self.store.release_claim(*device_id, job_id).await? {
                            report.lost += 1;
                            self.metrics
                                .claims_released
                                .with_label_values(&["lost"])
                                .inc();
                        }
                    }
                    JobState::Orphaned => {
                        // Its payload survived but it sits in no queue set (partial
                        // loss of Redis' data): nothing would ever run it. Forget it and
                        // move the slot on, so the device is claimed again at once.
                        self.queue.forget(std::slice::from_ref(job_id)).await?;
                        let next = Utc::now() + chrono::Duration::seconds(1);
                        if self
                            .store
                            .release_claim_until(*device_id, job_id, next)
                            .await?
                        {
                            report.orphaned += 1;
                            self.metrics
                                .claims_released
                                .with_label_values(&["orphaned"])
                                .inc();
                        }
                    }
                    JobState::Done | JobState::Killed => {
                        // The job ran and ended without releasing its claim (aborted
                        // after PostgreSQL errors, or a crash between ack and write).
                        // Move the slot on so the next job gets a fresh id.
                        let next = Utc::now() + chrono::Duration::seconds(1);
                        if self
                            .store
                            .release_claim_until(*device_id, job_id, next)
                            .await?
                        {
                            report.ended += 1;
                            self.metrics
                                .claims_released
                                .with_label_values(&["ended"])
                                .inc();
                        }
                    }
                    JobState::Pending | JobState::Running | JobState::Failed => {}
                }
            }
        }
        if report.lost + report.ended + report.orphaned > 0 {
            warn!(
                lost = report.lost,
                ended = report.ended,
                orphaned = report.orphaned,
                "dropped claims whose jobs were gone; rescheduling"
            );
        }
        report.trimmed_jobs = self.queue.trim(self.settings.job_retention, 5000).await?;
        let before = Utc::now()
            - chrono::Duration::from_std(self.settings.run_retention)
                .unwrap_or(chrono::Duration::days(90));
        report.trimmed_runs = self.store.trim_runs(before, 10_000).await?;
        self.update_gauges().await?;
        Ok(report)
    }

    /// Queue depth and oldest-due gauges.
    pub async fn update_gauges(&self) -> Result<(), EnqueueError> {
        let depth = self.queue.depth().await?;
        for (state, v) in [
            ("scheduled", depth.scheduled),
            ("due", depth.due),
            ("running", depth.running),
            ("done", depth.done),
            ("dead", depth.dead),
        ] {
            self.metrics
                .queue_jobs
                .with_label_values(&[state])
                .set(v as i64);
        }
        self.metrics
            .oldest_due_seconds
            .set(self.store.oldest_due_age().await? as i64);
        Ok(())
    }

    /// Run until `shutdown` resolves. Errors are logged and retried (PostgreSQL or Redis
    /// being away for a while must not end the enqueuer).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_reconcile = tokio::time::Instant::now();
        let mut failing = false;
        info!(
            cap = self.settings.cap,
            horizon_s = self.settings.horizon.as_secs(),
            "enqueuer running"
        );
        loop {
            let mut busy = false;
            match self.tick().await {
                Ok(r) => {
                    if failing {
                        info!("enqueuer recovered");
                        failing = false;
                    }
                    busy = r.pushed as i64 >= self.settings.tick_batch();
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "enqueuer tick failed; retrying");
                    }
                    failing = true;
                }
            }
            if last_reconcile.elapsed() >= self.settings.refresh {
                last_reconcile = tokio::time::Instant::now();
                match self.reconcile().await {
                    Ok(r) => debug!(?r, "reconciled"),
                    Err(e) => warn!(error = %e, "reconciliation failed; retrying next period"),
                }
            }
            let pause = if busy {
                Duration::ZERO
            } else {
                self.settings.tick
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        info!("enqueuer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::EnqueuerSettings;

    #[test]
    fn tick_batch_is_the_batch_under_production_caps_and_a_hundredth_of_large_ones() {
        let with_cap = |cap| EnqueuerSettings {
            cap,
            ..EnqueuerSettings::default()
        };
        assert_eq!(with_cap(2_000).tick_batch(), 1_000);
        assert_eq!(with_cap(7_999).tick_batch(), 1_000);
        assert_eq!(with_cap(1_000_000).tick_batch(), 10_000);
        let small = EnqueuerSettings {
            cap: 50,
            batch: 20,
            ..EnqueuerSettings::default()
        };
        assert_eq!(small.tick_batch(), 20);
    }
}
