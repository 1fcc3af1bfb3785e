//! A whole fleet on the real services, isolated per test: its own PostgreSQL database,
//! its own Redis queue name (key prefix), its own NATS subjects and stream, its own
//! simulated routers on loopback.

use rosbackup::config::BackupSettings;
use rosbackup::credentials::CredentialKey;
use rosbackup::enqueuer::{Enqueuer, EnqueuerSettings};
use rosbackup::metrics::Metrics;
use rosbackup::queue::{Queue, QueueConfig};
use rosbackup::schedule::ScheduleSettings;
use rosbackup::sim::{SimConfig, Simulator};
use rosbackup::snapshot::{Publisher, PublisherConfig};
use rosbackup::store::{NewDevice, Store};
use rosbackup::worker::{JobEnv, Liveness, WorkerSettings};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Replace the database name of a PostgreSQL URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let cut = base
        .rfind('/')
        .filter(|i| *i > "postgres://".len())
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..cut]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database of its own, migrated. Dropped by [`TestDb::drop`].
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: Store,
    /// The server's URL the database was created through (and is dropped through).
    pub admin_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        TestDb::new_on(&database_url()).await
    }

    /// A database of its own on the server at `admin_url`.
    pub async fn new_on(admin_url: &str) -> TestDb {
        let name = format!("rbtest_{}", Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(admin_url)
            .await
            .expect("PostgreSQL is running");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(admin_url, &name);
        let store = Store::connect(&url, 40)
            .await
            .expect("connect test database");
        store.migrate().await.expect("migrations apply");
        TestDb {
            name,
            url,
            store,
            admin_url: admin_url.to_string(),
        }
    }

    pub async fn drop(self) {
        self.store.pool().close().await;
        if let Ok(admin) = sqlx::PgPool::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await;
        }
    }
}

/// Fleet knobs for one test.
pub struct FleetOptions {
    pub sim: SimConfig,
    pub lease_ttl: Duration,
    pub heartbeat: Duration,
    pub command_timeout: Duration,
    /// How long a snapshot publish waits for JetStream's ack (per attempt).
    pub ack_timeout: Duration,
    /// The bound on manual jobs and the join window (`ROSBACKUP_MANUAL_MAX`,
    /// `ROSBACKUP_MANUAL_JOIN_WINDOW`); the product's defaults unless a test sets them.
    pub manual_max: u64,
    pub manual_window: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            sim: SimConfig {
                devices: 10,
                listen_base: std::net::Ipv4Addr::new(127, 0, 0, 1),
                port: 0,
                one_address: true,
                // Device ids (and keys) derive from the seed; a seed of its own per fleet
                // keeps device-keyed Redis state apart between tests running at once (the
                // Go poller's lock `backup:device:{id}`, the status key `device:{id}:status`).
                seed: rand::random::<u32>().into(),
                ..SimConfig::default()
            },
            lease_ttl: Duration::from_secs(6),
            heartbeat: Duration::from_secs(1),
            command_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            manual_max: QueueConfig::default().manual_max,
            manual_window: QueueConfig::default().manual_window,
        }
    }
}

/// Where a fleet's services are: the shared ones by default, or private instances a
/// test started (and may stop and restart) with `rosbackup_harness::services`.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    /// A PostgreSQL server URL; the fleet creates its own database there.
    pub database_url: String,
    pub redis_url: String,
    pub nats_url: String,
    /// CA and client certificate for `rediss://` and `tls://` (TLS tests).
    pub tls: rosbackup::tls::TlsFiles,
}

impl Default for ServiceUrls {
    fn default() -> Self {
        ServiceUrls {
            database_url: database_url(),
            redis_url: redis_url(),
            nats_url: super::nats_url(),
            tls: rosbackup::tls::TlsFiles::default(),
        }
    }
}

pub struct Fleet {
    pub urls: ServiceUrls,
    pub db: TestDb,
    pub queue: Queue,
    pub key: CredentialKey,
    pub key_b64: String,
    pub publisher: Publisher,
    pub publisher_cfg: PublisherConfig,
    pub sim: Simulator,
    pub opts_lease: Duration,
    pub backup: BackupSettings,
    pub nats: async_nats::Client,
}

impl Fleet {
    pub async fn start(opts: FleetOptions) -> Fleet {
        Fleet::start_on(ServiceUrls::default(), opts).await
    }

    /// A fleet on the services at `urls`.
    pub async fn start_on(urls: ServiceUrls, opts: FleetOptions) -> Fleet {
        let db = TestDb::new_on(&urls.database_url).await;
        let queue = Queue::connect(QueueConfig {
            redis_url: urls.redis_url.clone(),
            name: format!("rbtest:{}", Uuid::new_v4().simple()),
            heartbeat: opts.heartbeat,
            missed_heartbeats: 3,
            tls: urls.tls.clone(),
            manual_max: opts.manual_max,
            manual_window: opts.manual_window,
            ..QueueConfig::default()
        })
        .await
        .expect("Redis is running");
        let token = Uuid::new_v4().simple().to_string();
        let publisher_cfg = PublisherConfig {
            nats_url: urls.nats_url.clone(),
            subject_prefix: format!("rbtest{token}.config.snapshot"),
            stream_name: format!("RBTEST_{token}"),
            object_bucket: format!("RBTEXT_{token}"),
            stream_max_bytes: 512 * 1024 * 1024,
            ack_timeout: opts.ack_timeout,
            tls: urls.tls.clone(),
            ..PublisherConfig::default()
        };
        let publisher = Publisher::connect(publisher_cfg.clone())
            .await
            .expect("NATS is running");
        let nats = urls
            .tls
            .nats_options(async_nats::ConnectOptions::new())
            .connect(urls.nats_url.clone())
            .await
            .expect("NATS is running");
        let sim = Simulator::start(opts.sim).await.expect("simulator starts");
        let mut backup =
            BackupSettings::from_env(&rosbackup::config::Env::from_pairs([])).expect("defaults");
        backup.export.command_timeout = opts.command_timeout;
        backup.export.connect_timeout = Duration::from_secs(3);
        let key_b64 = CredentialKey::generate_base64();
        Fleet {
            urls,
            db,
            queue,
            key: CredentialKey::from_base64(&key_b64).expect("key"),
            key_b64,
            publisher,
            publisher_cfg,
            sim,
            opts_lease: opts.lease_ttl,
            backup,
            nats,
        }
    }

    /// A fleet of `devices` healthy simulated routers with default options.
    pub async fn of(devices: usize) -> Fleet {
        Fleet::start(FleetOptions {
            sim: SimConfig {
                devices,
                ..FleetOptions::default().sim
            },
            ..FleetOptions::default()
        })
        .await
    }

    /// Make every device due only in an hour (tests that run manual jobs only).
    pub async fn postpone_all(&self) {
        sqlx::query("UPDATE devices SET next_due_at = now() + interval '1 hour'")
            .execute(self.store().pool())
            .await
            .expect("postpone");
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }

    /// Import the simulator's devices, all due now (or with the given interval).
    pub async fn import(&self, interval_seconds: Option<i32>) -> Vec<NewDevice> {
        let devices: Vec<NewDevice> = self
            .sim
            .devices()
            .iter()
            .map(|d| NewDevice {
                backup_interval_seconds: interval_seconds,
                ..d.new_device()
            })
            .collect();
        self.store()
            .upsert_devices(&self.key, &devices, chrono::Utc::now)
            .await
            .expect("import");
        devices
    }

    pub fn job_env(&self) -> Arc<JobEnv> {
        Arc::new(self.job_env_on(self.store().clone()))
    }

    /// A job environment whose every statement goes to `store` (its lease taker and
    /// outcome writer included), e.g. one reached through a proxy the test controls.
    pub fn job_env_on(&self, store: Store) -> JobEnv {
        let mut env = JobEnv::new(
            store,
            self.queue.clone(),
            self.key.clone(),
            self.publisher.clone(),
            self.backup.clone(),
            Metrics::new(),
        );
        env.schedule = ScheduleSettings {
            interval: Duration::from_secs(3600),
            ..ScheduleSettings::default()
        };
        env.lease_ttl = self.opts_lease;
        env
    }

    /// Run an in-process worker until the returned sender is dropped or fired.
    pub fn spawn_worker(
        &self,
        name: &str,
        concurrency: usize,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), rosbackup::worker::WorkerExit>>,
        Arc<JobEnv>,
    ) {
        let env = self.job_env();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let settings = WorkerSettings {
            name: name.to_string(),
            concurrency,
            shutdown_grace: Duration::from_secs(10),
        };
        let handle = tokio::spawn(rosbackup::worker::run(
            env.clone(),
            settings,
            Liveness::default(),
            async move {
                let _ = rx.await;
            },
        ));
        (tx, handle, env)
    }

    pub fn enqueuer(&self) -> Enqueuer {
        Enqueuer {
            store: self.store().clone(),
            queue: self.queue.clone(),
            settings: EnqueuerSettings {
                tick: Duration::from_millis(200),
                refresh: Duration::from_secs(2),
                stale_after: Duration::from_secs(5),
                ..EnqueuerSettings::default()
            },
            metrics: Metrics::new(),
        }
    }

    /// Run an enqueuer loop in the background.
    pub fn spawn_enqueuer(
        &self,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let e = self.enqueuer();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            e.run(async move {
                let _ = rx.await;
            })
            .await
        });
        (tx, h)
    }

    /// Poll `cond` every 100 ms until it holds or `timeout` passes (then panic with `what`).
    pub async fn wait_for<F, Fut>(&self, timeout: Duration, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond().await {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Count of devices with a given last_status.
    /// Wait until PostgreSQL sees the device's lease as expired (by the database clock,
    /// which is what a takeover goes by).
    pub async fn wait_lease_expired(&self, device: Uuid, what: &str) {
        self.wait_for(Duration::from_secs(20), what, || async {
            self.store()
                .device(device)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.lease_expires_at)
                .is_some_and(|t| t < chrono::Utc::now())
        })
        .await;
    }

    pub async fn count_status(&self, status: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM devices WHERE last_status = $1")
            .bind(status)
            .fetch_one(self.store().pool())
            .await
            .unwrap_or(0)
    }

    /// Environment for a `rosbackup worker` / `rosbackup enqueuer` process on this fleet.
    pub fn process_env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.db.url.clone()),
            ("REDIS_URL", self.urls.redis_url.clone()),
            ("NATS_URL", self.urls.nats_url.clone()),
            ("ROSBACKUP_QUEUE", self.queue.config().name.clone()),
            (
                "ROSBACKUP_QUEUE_HEARTBEAT",
                self.queue.config().heartbeat.as_secs().to_string(),
            ),
            (
                "ROSBACKUP_LEASE_SECONDS",
                self.opts_lease.as_secs().to_string(),
            ),
            (
                "ROSBACKUP_MANUAL_MAX",
                self.queue.config().manual_max.to_string(),
            ),
            (
                "ROSBACKUP_MANUAL_JOIN_WINDOW",
                self.queue.config().manual_window.as_secs().to_string(),
            ),
            (
                "ROSBACKUP_SUBJECT_PREFIX",
                self.publisher_cfg.subject_prefix.clone(),
            ),
            (
                "ROSBACKUP_NATS_STREAM",
                self.publisher_cfg.stream_name.clone(),
            ),
            (
                "ROSBACKUP_NATS_OBJECT_BUCKET",
                self.publisher_cfg.object_bucket.clone(),
            ),
            ("CREDENTIAL_ENCRYPTION_KEY", self.key_b64.clone()),
            ("ROSBACKUP_METRICS_ADDR", "127.0.0.1:0".into()),
            ("ROSBACKUP_HTTP_ADDR", "127.0.0.1:0".into()),
            (
                "CONFIG_BACKUP_COMMAND_TIMEOUT",
                self.backup.export.command_timeout.as_secs().to_string(),
            ),
            ("CONFIG_BACKUP_INTERVAL", "3600".into()),
            ("LOG_FORMAT", "text".into()),
            ("LOG_LEVEL", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(
            [
                (rosbackup::tls::CA_VAR, &self.urls.tls.ca_file),
                (rosbackup::tls::CERT_VAR, &self.urls.tls.cert_file),
                (rosbackup::tls::KEY_VAR, &self.urls.tls.key_file),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|p| (k.to_string(), p.display().to_string()))),
        )
        .collect()
    }

    pub async fn cleanup(self) {
        let js = async_nats::jetstream::new(self.nats.clone());
        let _ = js.delete_stream(&self.publisher_cfg.stream_name).await;
        let _ = js
            .delete_object_store(&self.publisher_cfg.object_bucket)
            .await;
        let _ = self.queue.purge().await;
        self.sim.shutdown().await;
        self.db.drop().await;
    }
}

/// Every snapshot in a fleet's stream, checked: each event's `sha256_hash` is the hash of
/// exactly its text (inline or in the object store), its subject names its device, and
/// no `Nats-Msg-Id` is stored twice.
#[derive(Debug, Default)]
pub struct StreamAudit {
    /// Events per device id, in stream order.
    pub by_device: std::collections::HashMap<Uuid, Vec<rosbackup::snapshot::ConfigSnapshotEvent>>,
    pub messages: u64,
}

impl StreamAudit {
    pub fn count(&self, device: Uuid) -> usize {
        self.by_device.get(&device).map_or(0, Vec::len)
    }

    pub fn hashes(&self, device: Uuid) -> Vec<String> {
        self.by_device
            .get(&device)
            .map(|v| v.iter().map(|e| e.sha256_hash.clone()).collect())
            .unwrap_or_default()
    }
}

/// One row of `backup_runs`, the columns the fault tests look at.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub device_id: Uuid,
    pub job_id: String,
    pub trigger: String,
    pub worker: String,
    pub status: String,
    pub error_kind: Option<String>,
    pub sha256: Option<String>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
}

impl Fleet {
    /// Read back and check every message of this fleet's stream (see [`StreamAudit`]).
    pub async fn audit_stream(&self) -> StreamAudit {
        let js = async_nats::jetstream::new(self.nats.clone());
        let mut audit = StreamAudit::default();
        let mut stream = match js.get_stream(&self.publisher_cfg.stream_name).await {
            Ok(s) => s,
            Err(_) => return audit, // nothing was ever published
        };
        let state = stream.info().await.expect("stream info").state.clone();
        audit.messages = state.messages;
        let mut ids = std::collections::HashSet::new();
        if state.messages == 0 {
            return audit;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let msg = match stream.get_raw_message(seq).await {
                Ok(m) => m,
                Err(e) => panic!("stream message {seq}: {e}"),
            };
            let event =
                rosbackup::snapshot::ConfigSnapshotEvent::decode(&msg.payload).expect("event");
            let text = rosbackup::snapshot::fetch_config_text(&js, &event)
                .await
                .expect("config text");
            assert_eq!(
                rosbackup::normalize::hash(&text),
                event.sha256_hash,
                "message {seq}: hash does not match its text"
            );
            assert!(!text.is_empty(), "message {seq}: empty config");
            let device: Uuid = event.device_id.parse().expect("device id");
            assert_eq!(
                msg.subject.as_str(),
                format!("{}.create.{device}", self.publisher_cfg.subject_prefix),
                "message {seq}: subject"
            );
            let msg_id = msg
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_string())
                .expect("Nats-Msg-Id");
            assert!(ids.insert(msg_id.clone()), "{msg_id} stored twice");
            audit.by_device.entry(device).or_default().push(event);
        }
        audit
    }

    /// Every run row, oldest first.
    pub async fn runs(&self) -> Vec<RunRow> {
        sqlx::query_as(
            "SELECT device_id, job_id, trigger, worker, status, error_kind, sha256, finished_at \
             FROM backup_runs ORDER BY id",
        )
        .fetch_all(self.store().pool())
        .await
        .expect("runs")
    }

    /// Devices whose last backup succeeded.
    pub async fn successes(&self) -> i64 {
        self.count_status("success").await
    }
}

/// The checks every fault test makes on the records: per scheduled job at most one
/// outcome (success or failure) — a second one would come from an execution that had lost
/// its lease; every success run's hash is in the stream under its device; every device
/// has at most as many snapshots as runs that reached the publish step (success or
/// `publish_failed`), so nothing is published twice beyond what `Nats-Msg-Id` dedup
/// absorbs; and no device ever had two sessions at once.
pub fn check_records(
    runs: &[RunRow],
    audit: &StreamAudit,
    sim_stats: &std::collections::BTreeMap<Uuid, rosbackup::sim::DeviceStats>,
) {
    let mut outcomes: std::collections::HashMap<&str, usize> = Default::default();
    for r in runs {
        if r.trigger == "scheduled" && (r.status == "success" || r.status == "failed") {
            *outcomes.entry(r.job_id.as_str()).or_default() += 1;
        }
    }
    for (job, n) in &outcomes {
        assert_eq!(*n, 1, "job {job} has {n} outcomes");
    }
    let mut reached_publish: std::collections::HashMap<Uuid, usize> = Default::default();
    for r in runs {
        if r.status == "success" {
            let sha = r.sha256.as_deref().expect("a success has a hash");
            assert!(
                audit.hashes(r.device_id).iter().any(|h| h == sha),
                "{}: success run {} ({sha}) has no snapshot in the stream",
                r.device_id,
                r.job_id
            );
        }
        if r.status == "success" || r.error_kind.as_deref() == Some("publish_failed") {
            *reached_publish.entry(r.device_id).or_default() += 1;
        }
    }
    for (device, events) in &audit.by_device {
        let allowed = reached_publish.get(device).copied().unwrap_or(0);
        assert!(
            events.len() <= allowed,
            "{device}: {} snapshots for {allowed} runs that published",
            events.len()
        );
    }
    for (id, s) in sim_stats {
        assert!(s.max_concurrent <= 1, "{id}: two sessions at once: {s:?}");
    }
}
