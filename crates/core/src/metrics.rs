//! Prometheus metrics, with the Go poller's names where it has them.
//!
//! the-other-dude's Go poller exports `mikrotik_config_backup_total{status}`,
//! `mikrotik_config_backup_duration_seconds` (buckets 1, 5, 10, 30, 60, 120, 300) and
//! `mikrotik_config_backup_active`; we export the same names, status values and buckets,
//! so its dashboards and alerts keep working when rosbackup workers replace it (and a
//! `sum by (le)` across both kinds of worker during a cutover stays meaningful). Our own
//! metrics are under `rosbackup_`. Each
//! process owns one [`Metrics`] (its own registry, so tests running several workers in
//! one process do not share counters). Labels are bounded enums — never a device id, a
//! host or an error message (those could carry secrets or explode cardinality).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The Go poller's buckets for `mikrotik_config_backup_duration_seconds`, exactly.
pub const DURATION_BUCKETS: [f64; 7] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Every metric of a worker or an enqueuer.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Backups by outcome, the Go poller's `status` values: success, error,
    /// skipped_offline, skipped_auth_blocked, skipped_hostkey_blocked, skipped (the device
    /// is locked by another backup); plus our skipped_disabled.
    pub backup_total: IntCounterVec,
    /// Failed backups by error kind.
    pub backup_errors: IntCounterVec,
    /// Duration of backups that talked to a device (the Go poller's name and buckets).
    pub backup_duration: Histogram,
    /// Backups in flight (the Go poller's name).
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
    /// Claims dropped by reconciliation, by reason: lost, ended, orphaned (enqueuer).
    pub claims_released: IntCounterVec,
    /// Manual backup requests by outcome: `queued` (a new job), `joined` (coalesced with
    /// the device's queued, running or just finished manual backup), `refused` (the
    /// global bound on manual jobs was reached).
    pub manual_requests: IntCounterVec,
    /// Binary backup steps by outcome: success, error, skipped (not due, backing off).
    pub binary_total: IntCounterVec,
    /// Failed binary backup steps by error kind (`binary_*`).
    pub binary_errors: IntCounterVec,
    /// Exports by where their timeout came from (device, profile, adaptive, fleet): how
    /// much of the fleet runs on longer timeouts, without a label per device.
    pub export_timeouts: IntCounterVec,
    /// Connections a worker opened to jump hosts (its [`crate::device::BastionPool`]):
    /// against the backups through them, whether connections are shared as they should
    /// be. No label: a bastion's host is not a label (bounded labels only).
    pub bastion_connections_opened: IntCounter,
    /// Outcomes written per statement that wrote them (group commit, `worker::group`):
    /// how much of the fleet's outcome writing the grouping saves.
    pub outcome_batch: Histogram,
    /// Leases asked for per statement, taken or not (`worker::leases`): how often a
    /// worker's leases meet.
    pub lease_batch: Histogram,
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
            Opts::new(
                "mikrotik_config_backup_total",
                "Total config backup operations.",
            ),
            &["status"],
        )
        .expect("valid metric");
        let backup_errors = IntCounterVec::new(
            Opts::new(
                "rosbackup_config_backup_errors_total",
                "Failed config backups by error kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let backup_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mikrotik_config_backup_duration_seconds",
                "Duration of a single config backup operation in seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let backup_active = IntGauge::new(
            "mikrotik_config_backup_active",
            "Number of concurrent config backup jobs running.",
        )
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
        let manual_requests = IntCounterVec::new(
            Opts::new(
                "rosbackup_manual_requests_total",
                "Manual backup requests by outcome (queued, joined, refused)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in ["queued", "joined", "refused"] {
            manual_requests.with_label_values(&[outcome]);
        }
        let binary_total = IntCounterVec::new(
            Opts::new(
                "rosbackup_binary_backup_total",
                "Binary backup steps by outcome",
            ),
            &["status"],
        )
        .expect("valid metric");
        let binary_errors = IntCounterVec::new(
            Opts::new(
                "rosbackup_binary_backup_errors_total",
                "Failed binary backup steps by error kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let export_timeouts = IntCounterVec::new(
            Opts::new(
                "rosbackup_export_timeout_source_total",
                "Exports by the source of their timeout (device, profile, adaptive, fleet)",
            ),
            &["source"],
        )
        .expect("valid metric");
        for source in ["device", "profile", "adaptive", "fleet"] {
            export_timeouts.with_label_values(&[source]);
        }
        let bastion_connections_opened = IntCounter::new(
            "rosbackup_bastion_connections_opened_total",
            "Connections opened to jump hosts (bastions), shared by the backups through them",
        )
        .expect("valid metric");
        let outcome_batch = Histogram::with_opts(
            HistogramOpts::new(
                "rosbackup_outcome_batch_size",
                "Outcomes written per PostgreSQL statement (group commit)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric");
        let lease_batch = Histogram::with_opts(
            HistogramOpts::new(
                "rosbackup_lease_batch_size",
                "Leases asked for per PostgreSQL statement, taken or not (leases asked for together)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )
        .expect("valid metric");
        for m in [
            Box::new(backup_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(outcome_batch.clone()),
            Box::new(lease_batch.clone()),
            Box::new(bastion_connections_opened.clone()),
            Box::new(export_timeouts.clone()),
            Box::new(binary_total.clone()),
            Box::new(binary_errors.clone()),
            Box::new(backup_errors.clone()),
            Box::new(backup_duration.clone()),
            Box::new(backup_active.clone()),
            Box::new(lease_takeovers.clone()),
            Box::new(lease_lost.clone()),
            Box::new(queue_jobs.clone()),
            Box::new(oldest_due_seconds.clone()),
            Box::new(jobs_enqueued.clone()),
            Box::new(claims_released.clone()),
            Box::new(manual_requests.clone()),
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
            manual_requests,
            binary_total,
            binary_errors,
            export_timeouts,
            bastion_connections_opened,
            outcome_batch,
            lease_batch,
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
    /// The names, label values and buckets the-other-dude's Go poller exports
    /// (poller/internal/observability/metrics.go), as its dashboards query them.
    #[test]
    fn the_go_pollers_names_labels_and_buckets_are_exported() {
        let m = super::Metrics::new();
        for status in [
            "success",
            "error",
            "skipped_offline",
            "skipped_auth_blocked",
            "skipped_hostkey_blocked",
            "skipped",
        ] {
            m.backup_total.with_label_values(&[status]).inc();
        }
        m.backup_duration.observe(1.5);
        m.backup_active.set(2);
        m.backup_errors.with_label_values(&["timeout"]).inc();
        let text = m.render();
        for line in [
            "mikrotik_config_backup_total{status=\"success\"} 1",
            "mikrotik_config_backup_total{status=\"skipped\"} 1",
            "mikrotik_config_backup_duration_seconds_count 1",
            "mikrotik_config_backup_active 2",
            "rosbackup_config_backup_errors_total{kind=\"timeout\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let buckets: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("mikrotik_config_backup_duration_seconds_bucket{le=\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(buckets, ["1", "5", "10", "30", "60", "120", "300", "+Inf"]);
        // Nothing of ours outside the Go poller's names and our own prefix.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                l.starts_with("mikrotik_config_backup_") || l.starts_with("rosbackup_"),
                "{l}"
            );
        }
    }
}
