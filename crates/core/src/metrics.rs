//! Prometheus metrics, with the seed's names where it has them.
//!
//! The seed exported `config_backup_total{status}`, `config_backup_duration_seconds` and
//! `config_backup_active`; dashboards and alerts built on those keep working. Each
//! process owns one [`Metrics`] (its own registry, so tests running several workers in
//! one process do not share counters). Labels are bounded enums — never a device id, a
//! host or an error message (those could carry secrets or explode cardinality).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric of a worker or an enqueuer.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Backups by outcome: success, error, skipped_offline, skipped_auth_blocked,
    /// skipped_hostkey_blocked, skipped_disabled, locked (seed name).
    pub backup_total: IntCounterVec,
    /// Failed backups by error kind.
    pub backup_errors: IntCounterVec,
    /// Duration of backups that talked to a device (seed name).
    pub backup_duration: Histogram,
    /// Backups in flight (seed name).
    pub backup_active: IntGauge,
    /// Leases taken over from an execution whose lease had expired.
    pub lease_takeovers: IntCounter,
    /// Executions that lost their lease before writing an outcome (nothing published).
    pub lease_lost: IntCounter,
    /// Queue depth by state (enqueuer).
    pub queue_jobs: IntGaugeVec,
    /// Age of the oldest due device, seconds (enqueuer).
    pub oldest_due_seconds: IntGauge,
    /// Jobs pushed to Redis (enqueuer).
    pub jobs_enqueued: IntCounterVec,
    /// Claims dropped by reconciliation, by reason (enqueuer).
    pub claims_released: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let backup_total = IntCounterVec::new(
            Opts::new("config_backup_total", "Config backups by status"),
            &["status"],
        )
        .expect("valid metric");
        let backup_errors = IntCounterVec::new(
            Opts::new(
                "config_backup_errors_total",
                "Failed config backups by error kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let backup_duration = Histogram::with_opts(
            HistogramOpts::new(
                "config_backup_duration_seconds",
                "Duration of config backups that reached a device",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
        )
        .expect("valid metric");
        let backup_active = IntGauge::new("config_backup_active", "Config backups in flight")
            .expect("valid metric");
        let lease_takeovers = IntCounter::new(
            "rosbackup_lease_takeovers_total",
            "Device leases taken over after the previous holder's lease expired",
        )
        .expect("valid metric");
        let lease_lost = IntCounter::new(
            "rosbackup_lease_lost_total",
            "Backups abandoned because their device lease was lost",
        )
        .expect("valid metric");
        let queue_jobs = IntGaugeVec::new(
            Opts::new("rosbackup_queue_jobs", "Jobs in the Redis queue by state"),
            &["state"],
        )
        .expect("valid metric");
        let oldest_due_seconds = IntGauge::new(
            "rosbackup_oldest_due_seconds",
            "Age of the oldest device that is due for a backup",
        )
        .expect("valid metric");
        let jobs_enqueued = IntCounterVec::new(
            Opts::new("rosbackup_jobs_enqueued_total", "Jobs pushed to the queue"),
            &["trigger"],
        )
        .expect("valid metric");
        let claims_released = IntCounterVec::new(
            Opts::new(
                "rosbackup_claims_released_total",
                "Scheduled-job claims dropped by reconciliation",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for m in [
            Box::new(backup_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(backup_errors.clone()),
            Box::new(backup_duration.clone()),
            Box::new(backup_active.clone()),
            Box::new(lease_takeovers.clone()),
            Box::new(lease_lost.clone()),
            Box::new(queue_jobs.clone()),
            Box::new(oldest_due_seconds.clone()),
            Box::new(jobs_enqueued.clone()),
            Box::new(claims_released.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        Metrics {
            registry,
            backup_total,
            backup_errors,
            backup_duration,
            backup_active,
            lease_takeovers,
            lease_lost,
            queue_jobs,
            oldest_due_seconds,
            jobs_enqueued,
            claims_released,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seed_names_are_exported() {
        let m = super::Metrics::new();
        m.backup_total.with_label_values(&["success"]).inc();
        m.backup_duration.observe(1.5);
        m.backup_active.set(2);
        let text = m.render();
        assert!(
            text.contains("config_backup_total{status=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("config_backup_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("config_backup_active 2"), "{text}");
    }
}
