//! Every environment variable rosbackup reads, declared once: name, default, whether the
//! seed (the Go poller) named it, whether it holds a secret, and what it means.
//!
//! Why a table of its own: it is the one list the README's table, the deploy files and
//! the demo are checked against (the test below and `tests/it/deploy.rs`), and
//! [`super::Env`] takes each variable's default and secrecy from it, so a variable read
//! without an entry here has neither.

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    /// Is this variable's name from the seed (the Go poller)?
    pub seed: bool,
    pub secret: bool,
    pub help: &'static str,
}

macro_rules! var {
    ($name:literal, $default:literal, $seed:literal, $secret:literal, $help:literal) => {
        Var {
            name: $name,
            default: $default,
            seed: $seed,
            secret: $secret,
            help: $help,
        }
    };
}

/// Every environment variable rosbackup reads.
pub const VARS: &[Var] = &[
    var!(
        "NATS_URL",
        "nats://127.0.0.1:4222",
        true,
        true,
        "NATS server URL (JetStream enabled)"
    ),
    var!(
        "NATS_CREDS_FILE",
        "",
        false,
        false,
        "NATS credentials file (user JWT + nkey seed, as nsc writes it) for operator/JWT mode; every process that connects to NATS uses it"
    ),
    var!(
        "NATS_NKEY_FILE",
        "",
        false,
        false,
        "file holding a NATS nkey user seed (SU…) to authenticate with instead of a password; not with NATS_CREDS_FILE"
    ),
    var!(
        "DATABASE_URL",
        "postgres://127.0.0.1:5432/rosbackup",
        true,
        true,
        "PostgreSQL URL (device store)"
    ),
    var!(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        true,
        true,
        "Redis URL (job queue); the database number is honoured"
    ),
    var!(
        "CREDENTIAL_ENCRYPTION_KEY",
        "",
        true,
        true,
        "base64 of 32 bytes: AES-256-GCM key for device passwords at rest"
    ),
    var!(
        "NEW_CREDENTIAL_ENCRYPTION_KEY",
        "",
        false,
        true,
        "only for `rosbackup devices rotate-key`: the key to re-encrypt the passwords under"
    ),
    var!(
        "CONFIG_BACKUP_INTERVAL",
        "21600",
        true,
        false,
        "seconds between scheduled backups of a device"
    ),
    var!(
        "CONFIG_BACKUP_MAX_CONCURRENT",
        "10",
        true,
        false,
        "concurrent backups per worker"
    ),
    var!(
        "CONFIG_BACKUP_COMMAND_TIMEOUT",
        "60",
        true,
        false,
        "seconds allowed for the export after login"
    ),
    var!(
        "ROSBACKUP_EXPORT_TIMEOUT_MAX",
        "600",
        false,
        false,
        "ceiling of the adaptive export timeout (seconds): a device whose recent exports took long, or that timed out, gets a longer timeout than CONFIG_BACKUP_COMMAND_TIMEOUT, never above this"
    ),
    var!(
        "CONFIG_BACKUP_CONNECT_TIMEOUT",
        "15",
        false,
        false,
        "seconds allowed for TCP connect, and again for SSH handshake + login"
    ),
    var!(
        "CONFIG_BACKUP_MAX_OUTPUT_BYTES",
        "33554432",
        false,
        false,
        "largest export accepted (too_large beyond)"
    ),
    var!(
        "CONFIG_BACKUP_EXPORT_SECRETS",
        "true",
        false,
        false,
        "export with secrets (show-sensitive on 7, plain /export on 6); false exports without"
    ),
    var!(
        "CONFIG_BACKUP_JITTER_MIN",
        "30",
        false,
        false,
        "first backup of a new device: minimum delay, seconds"
    ),
    var!(
        "CONFIG_BACKUP_JITTER_MAX",
        "300",
        false,
        false,
        "first backup of a new device: maximum delay, seconds"
    ),
    var!(
        "CONFIG_BACKUP_CRON",
        "",
        false,
        false,
        "cron expression for backups instead of the interval (optional)"
    ),
    var!(
        "CONFIG_BACKUP_BINARY",
        "off",
        false,
        false,
        "binary /system backup files beside the export: off, on-change (config changed since the newest binary, or it is older than the maximum age) or always"
    ),
    var!(
        "CONFIG_BACKUP_BINARY_MAX_AGE",
        "604800",
        false,
        false,
        "on-change: seconds after which an unchanged config gets a new binary"
    ),
    var!(
        "CONFIG_BACKUP_BINARY_TIMEOUT",
        "60",
        false,
        false,
        "seconds allowed to save a binary backup, wait for the file and fetch it"
    ),
    var!(
        "DEVICE_REFRESH_SECONDS",
        "60",
        true,
        false,
        "seconds between device-list reconciliations (and syncs from ROSBACKUP_TOD_DATABASE_URL)"
    ),
    var!(
        "ROSBACKUP_TOD_DATABASE_URL",
        "",
        false,
        true,
        "enqueuer: optional PostgreSQL URL of a the-other-dude backend; its RouterOS devices are synced into the device store every DEVICE_REFRESH_SECONDS (see \"Sync from a the-other-dude database\")"
    ),
    var!(
        "ROSBACKUP_TOD_DROP_HISTORY",
        "false",
        false,
        false,
        "enqueuer: when a synced device is deleted upstream, also delete its config history (default: kept)"
    ),
    var!(
        "NORMALIZATION_VERSION",
        "2",
        false,
        false,
        "1 = the seed's normalization (byte-compatible), 2 = real RouterOS headers and annotations"
    ),
    var!(
        "ROSBACKUP_SUBJECT_PREFIX",
        "config.snapshot",
        false,
        false,
        "snapshots go to <prefix>.create.<device_id>"
    ),
    var!(
        "ROSBACKUP_NATS_STREAM",
        "CONFIG_SNAPSHOTS",
        false,
        false,
        "stream created when none captures <prefix>.>"
    ),
    var!(
        "ROSBACKUP_NATS_STREAM_MAX_BYTES",
        "10737418240",
        false,
        false,
        "size limit of a stream we create"
    ),
    var!(
        "ROSBACKUP_NATS_STREAM_MAX_AGE",
        "604800",
        false,
        false,
        "age limit (seconds) of a stream we create"
    ),
    var!(
        "ROSBACKUP_NATS_OBJECT_BUCKET",
        "CONFIG_SNAPSHOT_TEXTS",
        false,
        false,
        "object store for configs too large to publish inline"
    ),
    var!(
        "ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY",
        "",
        false,
        true,
        "optional: base64 of 32 bytes; workers publish snapshots with the config AES-256-GCM-encrypted (and a keyed hash), archivers decrypt with it; unset = the seed's plaintext events"
    ),
    var!(
        "ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS",
        "",
        false,
        true,
        "archiver: older snapshot keys (base64, comma-separated) still accepted for decryption after a rotation"
    ),
    var!(
        "LOG_LEVEL",
        "info",
        true,
        false,
        "tracing filter (error, warn, info, debug, or a full filter)"
    ),
    var!(
        "LOG_FORMAT",
        "auto",
        false,
        false,
        "json, text, or auto: text when stderr is a terminal, JSON lines otherwise"
    ),
    var!(
        "ROSBACKUP_HTTP_ADDR",
        "127.0.0.1:8080",
        false,
        false,
        "enqueuer: dashboard, API, /healthz, /readyz, /metrics (port 0 = any free port)"
    ),
    var!(
        "ROSBACKUP_METRICS_ADDR",
        "127.0.0.1:9091",
        false,
        false,
        "worker: /healthz, /readyz, /metrics (port 0 = any free port); enqueuer and archiver: when set, serve them here (the enqueuer also on its dashboard port)"
    ),
    var!(
        "ROSBACKUP_QUEUE",
        "rosbackup:backups",
        false,
        false,
        "queue name in Redis (prefix of its keys); separate fleets can share one Redis"
    ),
    var!(
        "ROSBACKUP_QUEUE_CAP",
        "2000",
        false,
        false,
        "most scheduled jobs in Redis at once (apalis-redis 1.0 breaks at 8,000 due)"
    ),
    var!(
        "ROSBACKUP_DB_POOL",
        "",
        false,
        false,
        "worker: PostgreSQL connections per process for the jobs' statements (default CONFIG_BACKUP_MAX_CONCURRENT + 4, at most 16), and at most 4 more for everything else"
    ),
    var!(
        "ROSBACKUP_OUTCOME_BATCH",
        "32",
        false,
        false,
        "worker: most outcomes written in one PostgreSQL statement (group commit), 1 to 256; 1 writes each on its own"
    ),
    var!(
        "ROSBACKUP_OUTCOME_LINGER_MS",
        "5",
        false,
        false,
        "worker: longest an outcome waits for others to share its statement, 0 to 1000 ms; never while no other job of the worker is running"
    ),
    var!(
        "ROSBACKUP_LEASE_BATCH",
        "16",
        false,
        false,
        "worker: most leases taken in one PostgreSQL statement when jobs ask together, 1 to 64; 1 takes each on its own"
    ),
    var!(
        "ROSBACKUP_FETCH_BATCH",
        "",
        false,
        false,
        "worker: jobs taken from Redis per fetch, 1 to 64 (default CONFIG_BACKUP_MAX_CONCURRENT / 16, 1 to 16)"
    ),
    var!(
        "ROSBACKUP_CLAIM_STALE_SECONDS",
        "30",
        false,
        false,
        "enqueuer: a device's claim this old is checked against Redis and rescheduled if its job is gone (at least 5)"
    ),
    var!(
        "ROSBACKUP_QUEUE_HORIZON",
        "60",
        false,
        false,
        "seconds ahead of their due time that jobs are pushed"
    ),
    var!(
        "ROSBACKUP_QUEUE_HEARTBEAT",
        "5",
        false,
        false,
        "worker heartbeat, seconds; a dead worker's jobs rerun after 3 missed beats"
    ),
    var!(
        "ROSBACKUP_SEED_LOCK",
        "true",
        false,
        false,
        "worker: also hold the Go poller's Redis lock `backup:device:{id}` around each export (mixed fleets during a cutover)"
    ),
    var!(
        "ROSBACKUP_BASTION_CONNECTIONS",
        "2",
        false,
        false,
        "worker: most SSH connections kept to one jump host (per login) by one worker process; device sessions behind it are multiplexed over them as direct-tcpip channels"
    ),
    var!(
        "ROSBACKUP_LEASE_SECONDS",
        "30",
        false,
        false,
        "device lease lifetime, renewed every third of it while a backup runs"
    ),
    var!(
        "ROSBACKUP_SHUTDOWN_GRACE",
        "60",
        false,
        false,
        "seconds running backups get to finish on SIGTERM before they are handed back"
    ),
    var!(
        "ROSBACKUP_WORKER_NAME",
        "",
        false,
        false,
        "worker name in the queue and run history (default: the host name)"
    ),
    var!(
        "ROSBACKUP_RUN_HISTORY",
        "100",
        false,
        false,
        "runs kept per device"
    ),
    var!(
        "ROSBACKUP_RUN_RETENTION_DAYS",
        "90",
        false,
        false,
        "runs older than this are deleted"
    ),
    var!(
        "ROSBACKUP_JOB_RETENTION",
        "3600",
        false,
        false,
        "seconds finished jobs stay in Redis before they are trimmed"
    ),
    var!(
        "ROSBACKUP_MANUAL_TIMEOUT",
        "85",
        false,
        false,
        "seconds a manual backup request (API wait, NATS trigger) waits for its result; keep it below the backend's 90 s reply timeout so a slow device's reply is still seen"
    ),
    var!(
        "ROSBACKUP_MANUAL_MAX",
        "500",
        false,
        false,
        "most manual backup jobs queued or running at once, fleet-wide; past it requests are refused (API 429, NATS failed, CLI exit 1). With ROSBACKUP_QUEUE_CAP it must stay under 8,000 (apalis-redis' limit)"
    ),
    var!(
        "ROSBACKUP_MANUAL_JOIN_WINDOW",
        "10",
        false,
        false,
        "seconds after a device's manual backup finished during which a new manual request for it gets that backup's outcome instead of a new one (0: never)"
    ),
    var!(
        "ROSBACKUP_TRIGGER_SUBJECT",
        "config.backup.trigger",
        false,
        false,
        "NATS request/reply subject for manual backups (the seed's)"
    ),
    var!(
        "ROSBACKUP_SESSION_TTL",
        "43200",
        false,
        false,
        "seconds a dashboard login lasts"
    ),
    var!(
        "ARCHIVE_ENCRYPTION_KEY",
        "",
        false,
        true,
        "archiver and `rosbackup history`: base64 of 32 bytes, AES-256-GCM key for archived configs (not the credential key)"
    ),
    var!(
        "ARCHIVE_CONSUMER",
        "rosbackup-archiver",
        false,
        false,
        "durable JetStream consumer name shared by all archiver replicas"
    ),
    var!(
        "ARCHIVE_ACK_WAIT",
        "30",
        false,
        false,
        "seconds before an unacked snapshot is redelivered (a killed archiver's messages)"
    ),
    var!(
        "ARCHIVE_RECENT_VERSIONS",
        "10",
        false,
        false,
        "a config equal to one of the device's N most recently seen versions is not a new version"
    ),
    var!(
        "ARCHIVE_KEEP_VERSIONS",
        "1000",
        false,
        false,
        "versions kept per device (default; per-tenant overrides in archive_retention)"
    ),
    var!(
        "ARCHIVE_MAX_AGE_DAYS",
        "730",
        false,
        false,
        "versions last seen longer ago are deleted (default; per tenant overridable); a live device keeps its current one"
    ),
    var!(
        "ARCHIVE_GIT_DIR",
        "",
        false,
        false,
        "optional: a bare git repository receiving one commit per new version (plaintext configs!)"
    ),
    var!(
        "ARCHIVE_WEBHOOK_URL",
        "",
        false,
        true,
        "optional: http(s) URL that receives a JSON POST per new version, with retries"
    ),
    var!(
        "ARCHIVE_DASHBOARD_URL",
        "",
        false,
        false,
        "optional: dashboard base URL for the webhook's link"
    ),
    var!(
        "ROSBACKUP_TLS_CA_FILE",
        "",
        false,
        false,
        "PEM CA bundle trusted for rediss:// and tls:// NATS instead of the Web PKI roots (PostgreSQL: sslrootcert= in DATABASE_URL)"
    ),
    var!(
        "ROSBACKUP_TLS_CERT_FILE",
        "",
        false,
        false,
        "PEM client certificate for Redis and NATS mutual TLS (with ROSBACKUP_TLS_KEY_FILE; PostgreSQL: sslcert=)"
    ),
    var!(
        "ROSBACKUP_TLS_KEY_FILE",
        "",
        false,
        false,
        "PEM private key of ROSBACKUP_TLS_CERT_FILE (PostgreSQL: sslkey=)"
    ),
    var!(
        "ROSBACKUP_COOKIE_SECURE",
        "false",
        false,
        false,
        "mark the session cookie Secure (set when the dashboard is served over HTTPS)"
    ),
];

#[cfg(test)]
mod readme {
    /// Every variable in [`super::VARS`] is in the README's table, with its default.
    #[test]
    fn readme_documents_every_variable() {
        let readme = include_str!("../../../../README.md");
        for v in super::VARS {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", v.name)))
                .unwrap_or_else(|| panic!("{} is not in README.md's table", v.name));
            if !v.default.is_empty() {
                assert!(
                    row.contains(&format!("`{}`", v.default)),
                    "{}: default",
                    v.name
                );
            }
        }
    }
}
