//! Process wiring for `rosbackup-worker`, `rosbackup-enqueuer` and `rosbackup-archiver`.
//!
//! The binaries are thin: they read the environment, call [`worker_from_env`] or
//! [`enqueuer_from_env`], and run the result until a signal. Tests call the same
//! functions in-process (several workers in one test) or run the binaries.

use crate::config::{self, BackupSettings, ConfigError, Env};
use crate::credentials::CredentialKey;
use crate::enqueuer::{Enqueuer, EnqueuerSettings};
use crate::http::{self, OpsState};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::secret::redact_url;
use crate::snapshot::Publisher;
use crate::store::{Store, StoreError};
use crate::worker::{self, JobEnv, Liveness, WorkerSettings};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Why a process could not start (config errors exit 2, the rest 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Connect(String),
    /// Auth is on and no API token exists: refuse to serve an open dashboard.
    #[error(
        "no API token exists, so nobody could sign in to the dashboard or API. Create one with \
         `rosbackup tokens create --name admin --role admin`, or start with --insecure-no-auth \
         to run without authentication (anyone who reaches the port is an admin)"
    )]
    NoTokens,
}

/// Command-line flags of the service binaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// Serve the dashboard and API without authentication (enqueuer only).
    pub insecure_no_auth: bool,
}

impl Flags {
    /// Parse the binaries' arguments (after the program name).
    pub fn parse(role: Role, args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
        let mut flags = Flags::default();
        for a in args {
            match a.as_str() {
                "--insecure-no-auth" if role == Role::Enqueuer => flags.insecure_no_auth = true,
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; configuration comes from the environment (see README){}",
                        if role == Role::Enqueuer {
                            "; the only flag is --insecure-no-auth"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        Ok(flags)
    }
}

impl StartError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) | StartError::NoTokens => 2,
            StartError::Connect(_) => 1,
        }
    }
}

fn credential_key(env: &Env) -> Result<CredentialKey, StartError> {
    Ok(config::key(env, "CREDENTIAL_ENCRYPTION_KEY")?)
}

/// Refuse to start with a credential key that is not the fleet's: a configuration error
/// (exit 2) naming `CREDENTIAL_ENCRYPTION_KEY`, instead of a worker that fails every
/// backup or an enqueuer that seals passwords nobody can open (issue #21).
pub async fn check_credential_key(store: &Store, key: &CredentialKey) -> Result<(), StartError> {
    match store.check_credential_key(key).await {
        Ok(how) => {
            info!("CREDENTIAL_ENCRYPTION_KEY {}", how.describe());
            Ok(())
        }
        Err(StoreError::Credentials(_)) => Err(StartError::Config(ConfigError {
            var: "CREDENTIAL_ENCRYPTION_KEY".into(),
            value: None,
            reason: crate::credentials::WRONG_KEY.into(),
        })),
        Err(e) => Err(StartError::Connect(format!(
            "PostgreSQL: checking CREDENTIAL_ENCRYPTION_KEY: {e}"
        ))),
    }
}

/// Refuse to start with an archive key that is not the archive's: a configuration error
/// (exit 2) naming `ARCHIVE_ENCRYPTION_KEY`, instead of an archiver that retries every
/// known device's snapshots forever and seals new devices' history under a second key.
/// Only the archiver records the key (`record`); the enqueuer's history pages check it.
pub async fn check_archive_key(
    store: &Store,
    key: &CredentialKey,
    record: crate::archive::keycheck::Record,
) -> Result<(), StartError> {
    let archive = crate::archive::ArchiveStore::new(store.clone(), key.clone());
    match archive.check_key(record).await {
        Ok(how) => {
            info!("ARCHIVE_ENCRYPTION_KEY {}", how.describe());
            Ok(())
        }
        Err(crate::archive::ArchiveError::WrongKey) => Err(StartError::Config(
            crate::archive::keycheck::wrong_key_error(),
        )),
        Err(e) => Err(StartError::Connect(format!(
            "PostgreSQL: checking ARCHIVE_ENCRYPTION_KEY: {e}"
        ))),
    }
}

/// A listen address that cannot be bound is the configuration's to fix (exit 2), named
/// by its variable: the port is taken (a second worker on the host keeps the default),
/// the address is not this host's, or the port needs privileges.
fn listen_error(var: &str, addr: &str, e: &std::io::Error) -> StartError {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process listens there: give each process on this host its own \
             address, or port 0 for any free one"
        }
        std::io::ErrorKind::AddrNotAvailable => "; the address is not one of this host's",
        std::io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
        _ => "",
    };
    StartError::Config(ConfigError {
        var: var.into(),
        value: Some(addr.into()),
        reason: format!("cannot listen there: {e}{hint}"),
    })
}

async fn store(env: &Env, pool: u32) -> Result<Store, StartError> {
    let url = env.url("DATABASE_URL", &["postgres", "postgresql"])?;
    Store::connect(&url, pool)
        .await
        .map_err(|e| StartError::Connect(format!("PostgreSQL at {}: {e}", redact_url(&url))))
}

async fn queue(env: &Env) -> Result<Queue, StartError> {
    let cfg = config::queue_config(env)?;
    let shown = redact_url(&cfg.redis_url);
    Queue::connect(cfg)
        .await
        .map_err(|e| StartError::Connect(format!("Redis at {shown}: {e}")))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

/// Raise the soft open-file limit to the hard limit and return the soft limit now in
/// force (`None` if it cannot be read). A worker holds one socket per export in flight,
/// and the usual soft limit of 1024 (systemd, most shells) is below what
/// `CONFIG_BACKUP_MAX_CONCURRENT=1000` needs: the connects beyond it fail with EMFILE,
/// which the worker would record against the *device* (`unreachable`, then backoff). The
/// hard limit is the operator's decision; the soft one is only a default (Go does the
/// same at startup).
pub fn raise_open_file_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur as u64);
            }
        }
        Some(lim.rlim_cur as u64)
    }
}

/// A worker ready to run.
pub struct WorkerProcess {
    pub env: Arc<JobEnv>,
    pub settings: WorkerSettings,
    pub liveness: Liveness,
    pub metrics_addr: String,
}

impl std::fmt::Debug for WorkerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProcess")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Validate the environment and connect a worker.
pub async fn worker_from_env(env: &Env) -> Result<WorkerProcess, StartError> {
    let backup = BackupSettings::from_env(env)?;
    let schedule = config::schedule_settings(env)?;
    let publisher_cfg = config::publisher_config(env)?;
    let concurrency = env.positive("CONFIG_BACKUP_MAX_CONCURRENT")? as usize;
    let lease_ttl = env.seconds("ROSBACKUP_LEASE_SECONDS", 3)?;
    let grace = env
        .parse::<u64>("ROSBACKUP_SHUTDOWN_GRACE")
        .map(Duration::from_secs)?;
    let keep_runs = env.positive("ROSBACKUP_RUN_HISTORY")? as i64;
    let metrics_addr = config::listen_addr(env, "ROSBACKUP_METRICS_ADDR")?;
    config::queue_config(env)?;
    let key = credential_key(env)?;
    let open_files = raise_open_file_limit();
    // One socket per export in flight, plus the pools and the HTTP listener.
    let need = concurrency as u64 + 128;
    if open_files.is_some_and(|n| n < need) {
        tracing::warn!(
            limit = open_files,
            concurrency,
            "the open-file limit (RLIMIT_NOFILE) is below CONFIG_BACKUP_MAX_CONCURRENT + 128; \
             exports beyond it fail to connect. Raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        );
    }
    let name = Some(env.raw("ROSBACKUP_WORKER_NAME"))
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(host_name);

    // Database work per job is a few short statements, so a few connections serve
    // hundreds of exports in flight; one per export slot would exhaust PostgreSQL's
    // max_connections (100 by default) with two busy workers. The jobs' statements run on
    // lanes ([`rosbackup_core::lanes`]: no ping when a connection comes back); the pool
    // serves the rest (start-up checks, the binary step's bookkeeping).
    let lanes = if env.is_set("ROSBACKUP_DB_POOL") {
        env.positive("ROSBACKUP_DB_POOL")?.min(1000) as u32
    } else {
        (concurrency as u32).saturating_add(4).min(16)
    };
    let store = store(env, lanes.min(4)).await?.with_lanes(lanes);
    check_credential_key(&store, &key).await?;
    // Devices blocked because workers still ran with the key from before a rotation
    // open under this one: due again.
    match store.lift_readable_blocks(&key).await {
        Ok(0) => {}
        Ok(n) => info!(
            devices = n,
            "lifted credentials_unreadable blocks: their passwords open with this key"
        ),
        Err(e) => tracing::warn!(error = %e, "could not look for credentials_unreadable blocks"),
    }
    let queue = queue(env).await?;
    let shown = redact_url(&publisher_cfg.nats_url);
    let publisher = Publisher::connect(publisher_cfg)
        .await
        .map_err(|e| StartError::Connect(format!("NATS at {shown}: {e}")))?;
    let mut env = JobEnv::new(store, queue, key, publisher, backup, Metrics::new());
    env.schedule = schedule;
    env.lease_ttl = lease_ttl;
    env.keep_runs = keep_runs;
    Ok(WorkerProcess {
        env: Arc::new(env),
        settings: WorkerSettings {
            name,
            concurrency,
            shutdown_grace: grace,
        },
        liveness: Liveness::default(),
        metrics_addr,
    })
}

impl WorkerProcess {
    /// Serve the ops endpoints, then run until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let stall = worker::stall_limit(self.env.queue.config().heartbeat);
        let ops = OpsState {
            metrics: self.env.metrics.clone(),
            store: self.env.store().clone(),
            queue: Some(self.env.queue.clone()),
            liveness: Some((self.liveness.clone(), stall)),
        };
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = http::serve(&self.metrics_addr, http::ops_router(ops), async {
            let _ = http_stopped.await;
        })
        .await
        .map_err(|e| listen_error("ROSBACKUP_METRICS_ADDR", &self.metrics_addr, &e))?;
        info!(%addr, name = %self.settings.name, concurrency = self.settings.concurrency, "worker listening");
        println!("rosbackup-worker: metrics on http://{addr}/metrics");
        let r = worker::run(self.env, self.settings, self.liveness, shutdown).await;
        let _ = stop_http.send(());
        let _ = server.await;
        r.map_err(|e| StartError::Connect(e.to_string()))
    }
}

/// An enqueuer ready to run.
#[derive(Debug)]
pub struct EnqueuerProcess {
    pub enqueuer: Enqueuer,
    pub http_addr: String,
    pub nats_url: String,
    /// CA and client certificate for the trigger's NATS connection.
    pub nats_tls: crate::tls::TlsFiles,
    /// `NATS_CREDS_FILE` / `NATS_NKEY_FILE` for the trigger's NATS connection.
    pub nats_auth: crate::nats_auth::NatsAuth,
    pub trigger_subject: String,
    pub manual_timeout: Duration,
    pub web: crate::web::WebState,
    /// Also serve `/healthz`, `/readyz`, `/metrics` here (when ROSBACKUP_METRICS_ADDR is
    /// set), so probes and Prometheus can use an address the dashboard is not on.
    pub ops_addr: Option<String>,
    /// Sync the devices from a the-other-dude database (ROSBACKUP_TOD_DATABASE_URL).
    pub tod: Option<TodSync>,
}

/// The enqueuer's sync from a the-other-dude database, every `DEVICE_REFRESH_SECONDS`.
/// `Debug` shows neither the URL (it may hold a password) nor the key.
pub struct TodSync {
    pub url: String,
    pub key: CredentialKey,
    pub schedule: crate::schedule::ScheduleSettings,
    pub options: crate::tod::SyncOptions,
    pub period: Duration,
}

impl std::fmt::Debug for TodSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TodSync")
            .field("url", &redact_url(&self.url))
            .field("options", &self.options)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// `ROSBACKUP_TOD_DATABASE_URL` (optional) with what a sync needs: the credential key
/// (required then), `ROSBACKUP_TOD_DROP_HISTORY`, the period.
fn tod_sync(
    env: &Env,
    schedule: &crate::schedule::ScheduleSettings,
    period: Duration,
) -> Result<Option<TodSync>, StartError> {
    const VAR: &str = "ROSBACKUP_TOD_DATABASE_URL";
    if !env.is_set(VAR) {
        return Ok(None);
    }
    let url = env.url(VAR, &["postgres", "postgresql"])?;
    if !env.is_set("CREDENTIAL_ENCRYPTION_KEY") {
        return Err(StartError::Config(ConfigError {
            var: "CREDENTIAL_ENCRYPTION_KEY".into(),
            value: None,
            reason: format!(
                "is required with {VAR}: it opens the backend's credentials and seals them here"
            ),
        }));
    }
    Ok(Some(TodSync {
        url,
        key: credential_key(env)?,
        schedule: schedule.clone(),
        options: crate::tod::SyncOptions {
            drop_history: env.boolean("ROSBACKUP_TOD_DROP_HISTORY")?,
        },
        period,
    }))
}

/// Validate the environment and connect an enqueuer.
pub async fn enqueuer_from_env(env: &Env, flags: Flags) -> Result<EnqueuerProcess, StartError> {
    let schedule = config::schedule_settings(env)?;
    let settings = EnqueuerSettings {
        refresh: env.seconds("DEVICE_REFRESH_SECONDS", 1)?,
        horizon: env.seconds("ROSBACKUP_QUEUE_HORIZON", 1)?,
        // Well above one tick's claim-to-push time, so a fresh claim is never mistaken
        // for an orphan.
        stale_after: env.seconds("ROSBACKUP_CLAIM_STALE_SECONDS", 5)?,
        cap: env.positive("ROSBACKUP_QUEUE_CAP")? as i64,
        job_retention: env.seconds("ROSBACKUP_JOB_RETENTION", 60)?,
        run_retention: Duration::from_secs(env.positive("ROSBACKUP_RUN_RETENTION_DAYS")? * 86_400),
        ..EnqueuerSettings::default()
    };
    if settings.cap >= 8000 {
        return Err(StartError::Config(ConfigError {
            var: "ROSBACKUP_QUEUE_CAP".into(),
            value: Some(settings.cap.to_string()),
            reason: "must stay below 8000 (apalis-redis 1.0 fails every fetch at 8,000 due jobs)"
                .into(),
        }));
    }
    let http_addr = config::listen_addr(env, "ROSBACKUP_HTTP_ADDR")?;
    let ops_addr = if env.is_set("ROSBACKUP_METRICS_ADDR") {
        Some(config::listen_addr(env, "ROSBACKUP_METRICS_ADDR")?)
    } else {
        None
    };
    let nats_url = env.url("NATS_URL", &["nats", "tls", "ws", "wss"])?;
    let nats_tls = config::tls_files(env)?;
    let nats_auth = config::nats_auth(env)?;
    let trigger_subject = env.raw("ROSBACKUP_TRIGGER_SUBJECT");
    let manual_timeout = env.seconds("ROSBACKUP_MANUAL_TIMEOUT", 1)?;
    config::queue_config(env)?;
    let key = if env.is_set("CREDENTIAL_ENCRYPTION_KEY") {
        Some(credential_key(env)?)
    } else {
        None
    };
    let web_settings = crate::web::WebSettings {
        auth: if flags.insecure_no_auth {
            crate::web::AuthMode::Disabled
        } else {
            crate::web::AuthMode::Required
        },
        session_ttl: env.seconds("ROSBACKUP_SESSION_TTL", 60)?,
        secure_cookies: env.boolean("ROSBACKUP_COOKIE_SECURE")?,
        manual_timeout,
        archive_key: if env.is_set("ARCHIVE_ENCRYPTION_KEY") {
            Some(config::archive_key(env)?)
        } else {
            None
        },
        export_timeouts: config::export_timeouts(env)?,
    };
    let tod = tod_sync(env, &schedule, settings.refresh)?;
    let store = store(env, 8).await?;
    if let Some(key) = &key {
        check_credential_key(&store, key).await?;
    }
    if let Some(key) = &web_settings.archive_key {
        check_archive_key(&store, key, crate::archive::keycheck::Record::No).await?;
    }
    let queue = queue(env).await?;
    if !flags.insecure_no_auth {
        let live = crate::access::Access::new(store.clone())
            .live_tokens()
            .await
            .map_err(|e| StartError::Connect(format!("PostgreSQL: {e}")))?;
        if live == 0 {
            return Err(StartError::NoTokens);
        }
    }
    let metrics = Metrics::new();
    let web = crate::web::WebState::new(
        store.clone(),
        queue.clone(),
        key,
        schedule,
        metrics.clone(),
        web_settings,
    );
    Ok(EnqueuerProcess {
        web,
        enqueuer: Enqueuer {
            store,
            queue,
            settings,
            metrics,
        },
        http_addr,
        nats_url,
        nats_tls,
        nats_auth,
        trigger_subject,
        manual_timeout,
        ops_addr,
        tod,
    })
}

impl EnqueuerProcess {
    /// Serve HTTP and the NATS trigger, schedule until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let e = self.enqueuer;
        let ops = OpsState {
            metrics: e.metrics.clone(),
            store: e.store.clone(),
            queue: Some(e.queue.clone()),
            liveness: None,
        };
        let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut stop_http = stop_tx.subscribe();
        let router = http::ops_router(ops.clone()).merge(crate::web::router(self.web.clone()));
        let (addr, server) = http::serve(&self.http_addr, router, async move {
            let _ = stop_http.recv().await;
        })
        .await
        .map_err(|e| listen_error("ROSBACKUP_HTTP_ADDR", &self.http_addr, &e))?;
        info!(%addr, "enqueuer listening");
        println!("rosbackup-enqueuer: http://{addr}/");
        let ops_server = match &self.ops_addr {
            None => None,
            Some(ops_addr) => {
                let mut stop_ops = stop_tx.subscribe();
                let (bound, handle) = http::serve(ops_addr, http::ops_router(ops), async move {
                    let _ = stop_ops.recv().await;
                })
                .await
                .map_err(|e| listen_error("ROSBACKUP_METRICS_ADDR", ops_addr, &e))?;
                info!(addr = %bound, "enqueuer probes and metrics listening");
                Some(handle)
            }
        };
        // The NATS trigger is optional at runtime: without NATS the enqueuer still
        // schedules; the trigger comes up when NATS does.
        let trigger = {
            let (store, queue, metrics) = (e.store.clone(), e.queue.clone(), e.metrics.clone());
            let (url, tls, auth, subject, timeout) = (
                self.nats_url.clone(),
                self.nats_tls.clone(),
                self.nats_auth.clone(),
                self.trigger_subject.clone(),
                self.manual_timeout,
            );
            tokio::spawn(async move {
                let opts = crate::nats_auth::options(&tls, &auth).retry_on_initial_connect();
                match opts.connect(url.as_str()).await {
                    Ok(client) => {
                        if let Err(err) = crate::manual::serve_trigger(
                            client, subject, store, queue, timeout, metrics,
                        )
                        .await
                        {
                            tracing::warn!(error = %err, "manual trigger subscription failed");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "NATS unavailable; manual trigger disabled")
                    }
                }
            })
        };
        // The sync from a the-other-dude database runs beside the scheduling and stops
        // with the enqueuer (after the sync in flight, if any).
        let tod = self.tod.map(|t| {
            let store = e.store.clone();
            let mut stop = stop_tx.subscribe();
            info!(
                every_s = t.period.as_secs(),
                "syncing devices from the-other-dude's database"
            );
            tokio::spawn(crate::tod::run_periodic(
                store,
                t.url,
                t.key,
                t.schedule,
                t.options,
                t.period,
                async move {
                    let _ = stop.recv().await;
                },
            ))
        });
        e.run(shutdown).await;
        trigger.abort();
        let _ = stop_tx.send(());
        if let Some(h) = tod {
            let _ = h.await;
        }
        let _ = server.await;
        if let Some(h) = ops_server {
            let _ = h.await;
        }
        Ok(())
    }
}

/// Which process to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Enqueuer,
    Archiver,
}

/// An archiver ready to run.
#[derive(Debug)]
pub struct ArchiverProcess {
    pub archiver: crate::archive::Archiver,
    /// `/healthz`, `/readyz`, `/metrics` here when ROSBACKUP_METRICS_ADDR is set (probes).
    pub ops_addr: Option<String>,
}

/// Validate the environment and connect an archiver (PostgreSQL and NATS; no Redis).
pub async fn archiver_from_env(env: &Env) -> Result<ArchiverProcess, StartError> {
    let settings = rosbackup_archive::settings::from_env(env)?;
    let key = config::archive_key(env)?;
    let ops_addr = if env.is_set("ROSBACKUP_METRICS_ADDR") {
        Some(config::listen_addr(env, "ROSBACKUP_METRICS_ADDR")?)
    } else {
        None
    };
    let publisher_cfg = crate::snapshot::PublisherConfig {
        retry_initial_connect: false,
        ..config::publisher_config(env)?
    };
    let store = store(env, 8).await?;
    check_archive_key(&store, &key, crate::archive::keycheck::Record::Yes).await?;
    let shown = redact_url(&publisher_cfg.nats_url);
    let archiver = crate::archive::Archiver::connect(store, key, publisher_cfg, settings)
        .await
        .map_err(|e| StartError::Connect(format!("NATS at {shown}: {e}")))?;
    archiver
        .consumer()
        .await
        .map_err(|e| StartError::Connect(format!("NATS at {shown}: {e}")))?;
    Ok(ArchiverProcess { archiver, ops_addr })
}

impl ArchiverProcess {
    /// Consume until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        info!(stream = %self.archiver.stream_name(), "archiver starting");
        println!(
            "rosbackup-archiver: consuming {}",
            self.archiver.stream_name()
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ops = match &self.ops_addr {
            None => None,
            Some(addr) => {
                let state = OpsState {
                    metrics: Metrics::new(),
                    store: self.archiver.archive().store().clone(),
                    queue: None,
                    liveness: None,
                };
                let (bound, handle) = http::serve(addr, http::ops_router(state), async move {
                    let _ = stop_rx.await;
                })
                .await
                .map_err(|e| listen_error("ROSBACKUP_METRICS_ADDR", addr, &e))?;
                println!("rosbackup-archiver: probes on http://{bound}/healthz");
                Some(handle)
            }
        };
        let result = self
            .archiver
            .run(shutdown)
            .await
            .map_err(|e| StartError::Connect(e.to_string()));
        let _ = stop_tx.send(());
        if let Some(h) = ops {
            let _ = h.await;
        }
        result
    }
}

/// Run a process from the environment until SIGTERM/SIGINT; the exit code says how it
/// ended (0 stopped, 1 broke or could not connect, 2 bad configuration).
pub async fn run_role(env: &Env, role: Role, flags: Flags) -> u8 {
    // Before connecting: a SIGTERM during start-up then stops the process cleanly.
    let shutdown = rosbackup_core::shutdown::signal();
    let result = match role {
        Role::Worker => match worker_from_env(env).await {
            Ok(p) => p.run(shutdown).await,
            Err(e) => Err(e),
        },
        Role::Enqueuer => match enqueuer_from_env(env, flags).await {
            Ok(p) => p.run(shutdown).await,
            Err(e) => Err(e),
        },
        Role::Archiver => match archiver_from_env(env).await {
            Ok(p) => p.run(shutdown).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

/// `main` of the `rosbackup-worker`, `rosbackup-enqueuer` and `rosbackup-archiver` binaries.
pub fn main(role: Role) -> std::process::ExitCode {
    let flags = match Flags::parse(role, std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let env = Env::from_process();
    if let Err(e) = crate::observability::init_tracing(&env) {
        eprintln!("configuration error: {e}");
        return std::process::ExitCode::from(2);
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => std::process::ExitCode::from(rt.block_on(run_role(&env, role, flags))),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
