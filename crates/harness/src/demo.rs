//! `rosbackup demo`: the whole product on a simulated fleet, in one command.
//!
//! It exists so that a network engineer can see rosbackup work within minutes, with the
//! real moving parts: PostgreSQL, Redis and NATS (found at their URLs, or private
//! instances started from installed binaries), the RouterOS simulator (in this process),
//! and an enqueuer, workers and an archiver as separate `rosbackup` processes — exactly
//! what a deployment runs. The archiver is there because history is what the product is
//! for: the `change` devices alter their config on every backup, and the demo's short
//! interval makes versions and diffs appear in the dashboard within the first minutes.
//! It prints the dashboard URL and a login token, shows progress until every healthy
//! device has been backed up once and archived — with the device states counted exactly
//! as the dashboard counts them — and on Ctrl-C stops everything it started, keeping
//! the processes' logs. `--once` turns it into a smoke test with an exit code.

use crate::services::{Service, ServiceError, spawn_self, stop_child};
use rand::Rng;
use rosbackup_core::access::{Access, Role};
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::queue::{Queue, QueueConfig};
use rosbackup_core::report::{DeviceState, Report};
use rosbackup_core::secret::redact_url;
use rosbackup_core::store::{NewDevice, Store};
use rosbackup_sim::{Fault, FaultSpec, SimConfig, Simulator};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Child;
use uuid::Uuid;

/// The demo's knobs (the CLI's flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub devices: usize,
    pub faults: FaultSpec,
    pub workers: usize,
    /// Dashboard address; a busy port falls back to a free one.
    pub http_addr: String,
    /// Exit right after every healthy device was backed up once.
    pub once: bool,
    /// How long `--once` waits.
    pub timeout: Duration,
    pub database_url: String,
    /// DATABASE_URL was set: use it or fail, never a private server instead.
    pub database_url_strict: bool,
    pub redis_url: String,
    pub nats_url: String,
    /// Scratch space (private services, logs).
    pub dir: PathBuf,
    /// Always start private service instances.
    pub private: bool,
}

impl DemoOptions {
    /// The default fault mix for `devices` devices: a few of each failure an operator
    /// meets, and some devices that differ but back up fine (v6, annotations, changes).
    pub fn default_faults(devices: usize) -> FaultSpec {
        let mix = [
            (Fault::Auth, 3),
            (Fault::Refuse, 2),
            (Fault::Silent, 2),
            (Fault::Garbage, 1),
            (Fault::HostKey, 2),
            (Fault::V6, 10),
            (Fault::Annotate, 5),
            (Fault::Change, 5),
        ];
        let mut left = devices;
        let mut out = Vec::new();
        for (f, n) in mix {
            // Small fleets get a proportionally smaller mix, never more faults than devices.
            let n = (n * devices).div_ceil(200).min(left);
            if n > 0 {
                out.push((f, n));
                left -= n;
            }
        }
        FaultSpec(out)
    }
}

/// Faults a device can be backed up with (at least once).
pub fn backs_up(fault: Option<Fault>) -> bool {
    matches!(
        fault,
        None | Some(
            Fault::V6
                | Fault::Annotate
                | Fault::Change
                | Fault::HostKey
                | Fault::Keys
                | Fault::KeyOnly
                | Fault::BackupNoSpace
                | Fault::BackupMissing
                | Fault::BackupGrowing
                | Fault::BackupCut
        )
    )
}

/// The demo's backup interval: short, so that the `change` devices give a new version
/// (and a diff) every minute, and a `hostkey` device's second visit comes soon.
pub const DEMO_INTERVAL_SECONDS: u64 = 60;

/// What `count` devices with `fault` do, in a few words (plural).
fn fault_words(fault: Fault) -> &'static str {
    match fault {
        Fault::Auth => "reject the password",
        Fault::HostKey => "present a new host key on every connection",
        Fault::Refuse => "refuse connections",
        Fault::Silent => "never answer",
        Fault::Stall => "stall mid-export",
        Fault::Drop => "drop the connection mid-export",
        Fault::Slow => "export very slowly",
        Fault::Huge => "send a huge export",
        Fault::Garbage => "answer with garbage",
        Fault::V6 => "run RouterOS 6",
        Fault::Annotate => "add runtime annotations",
        Fault::Change => "change their config on every backup (versions, diffs)",
        Fault::Nul => "send NUL bytes",
        Fault::Binary => "send bytes that are not UTF-8",
        Fault::EndlessLine => "send an endless line",
        Fault::Keys => "take an SSH key or the password",
        Fault::KeyOnly => "take only an SSH key",
        Fault::BackupNoSpace => "have no room for a binary backup",
        Fault::BackupMissing => "never write their binary backup file",
        Fault::BackupGrowing => "write a binary backup that never ends",
        Fault::BackupCut => "cut the binary backup's transfer",
    }
}

/// The fleet's fault mix in one line: what backs up, what gets blocked after its first
/// backup (`hostkey`: the dashboard shows it "Blocked: host key" from its second visit
/// on, as a replaced router would be), and what never backs up.
pub fn fault_mix(devices: usize, faults: &FaultSpec) -> String {
    let part = |pick: &dyn Fn(Fault) -> bool| -> (usize, Vec<String>) {
        let items: Vec<(Fault, usize)> = faults
            .0
            .iter()
            .copied()
            .filter(|(f, n)| *n > 0 && pick(*f))
            .collect();
        (
            items.iter().map(|(_, n)| n).sum(),
            items
                .iter()
                .map(|(f, n)| format!("{n} {}", fault_words(*f)))
                .collect(),
        )
    };
    let plain = devices.saturating_sub(faults.total());
    let (_, fine) = part(&|f| backs_up(Some(f)) && f != Fault::HostKey);
    let (hostkey, _) = part(&|f| f == Fault::HostKey);
    let (broken, failing) = part(&|f| !backs_up(Some(f)));
    let mut out = format!("{devices} devices: {plain} plain");
    for f in fine {
        out.push_str(&format!(", {f}"));
    }
    if hostkey > 0 {
        out.push_str(&format!(
            "; {hostkey} present a new host key every time (backed up once, then Blocked: host key)"
        ));
    }
    if broken > 0 {
        out.push_str(&format!(
            "; {broken} never back up ({})",
            failing.join(", ")
        ));
    }
    out
}

/// The device states as the dashboard counts them, in its order and words
/// (`18 OK, 2 Blocked: host key`); states without devices are left out.
pub fn states_line(states: &BTreeMap<&'static str, i64>) -> String {
    DeviceState::ALL
        .iter()
        .filter_map(|s| {
            let n = states.get(s.as_str()).copied().unwrap_or(0);
            (n > 0).then(|| format!("{n} {}", s.label()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decides when a progress line is printed: on a terminal the line is redrawn in place
/// every tick; elsewhere (a log file, CI) a line is written only when it changed.
#[derive(Debug, Default)]
pub struct ProgressLog {
    last: Option<String>,
}

impl ProgressLog {
    /// Whether `line` should be written to a non-terminal log.
    pub fn changed(&mut self, line: &str) -> bool {
        if self.last.as_deref() == Some(line) {
            return false;
        }
        self.last = Some(line.to_string());
        true
    }
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Timeout(String),
}

fn setup(what: &str) -> impl Fn(String) -> DemoError + '_ {
    move |e| DemoError::Setup(format!("{what}: {e}"))
}

/// Names of this run's database, queue, subjects and stream: per process, so two demos
/// (or a demo beside a real fleet) on the same services never touch each other.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) database: String,
    pub(crate) queue: String,
    pub(crate) subject_prefix: String,
    pub(crate) trigger_subject: String,
    pub(crate) stream: String,
    pub(crate) bucket: String,
}

impl Names {
    /// `kind` (`demo`, `soak`) and `id` make every name.
    pub(crate) fn for_run(kind: &str, id: u32) -> Names {
        let upper = kind.to_ascii_uppercase();
        Names {
            database: format!("rosbackup_{kind}_{id}"),
            queue: format!("rosbackup:{kind}:{id}"),
            subject_prefix: format!("{kind}{id}.config.snapshot"),
            trigger_subject: format!("{kind}{id}.config.backup.trigger"),
            stream: format!("ROSBACKUP_{upper}_{id}"),
            bucket: format!("ROSBACKUP_{upper}_{id}_TEXTS"),
        }
    }
}

/// What the demo created in services it did not start (removed at exit).
#[derive(Debug, Clone)]
struct Created {
    admin_url: String,
    redis_url: String,
    nats_url: String,
    names: Names,
}

/// Everything the demo started, stopped in reverse order.
struct Running {
    children: Vec<(String, Child)>,
    sim: Option<Simulator>,
    services: Vec<Service>,
    created: Option<Created>,
}

impl Running {
    async fn stop(mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            stop_child(child, Duration::from_secs(15)).await;
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        if let Some(c) = self.created.take() {
            remove_created(&c).await;
        }
        for s in self.services.iter_mut().rev() {
            s.stop(Duration::from_secs(15)).await;
        }
    }
}

/// Drop this run's database, queue keys, stream and bucket from shared services (best
/// effort: what cannot be removed is named, so the operator can do it).
async fn remove_created(c: &Created) {
    let n = &c.names;
    let mut left = Vec::new();
    match Store::connect(&c.admin_url, 1).await {
        Ok(admin) => {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", n.database);
            if sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(admin.pool())
                .await
                .is_err()
            {
                left.push(format!("PostgreSQL database {}", n.database));
            }
            admin.pool().close().await;
        }
        Err(_) => left.push(format!("PostgreSQL database {}", n.database)),
    }
    let queue = Queue::connect(QueueConfig {
        redis_url: c.redis_url.clone(),
        name: n.queue.clone(),
        ..QueueConfig::default()
    })
    .await;
    let purged = match queue {
        Ok(q) => q.purge().await.is_ok(),
        Err(_) => false,
    };
    if !purged {
        left.push(format!("Redis keys {}:*", n.queue));
    }
    match async_nats::connect(c.nats_url.as_str()).await {
        Ok(client) => {
            let js = async_nats::jetstream::new(client);
            let _ = js.delete_stream(&n.stream).await;
            let _ = js.delete_object_store(&n.bucket).await;
        }
        Err(_) => left.push(format!("NATS stream {} and bucket {}", n.stream, n.bucket)),
    }
    if !left.is_empty() {
        println!("could not remove: {}", left.join(", "));
    }
}

/// The database URL with another database name.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Drop and create `database` on the server at `pg_url` and migrate it: its URL and a
/// small store. The error says which step failed.
pub(crate) async fn fresh_database(
    pg_url: &str,
    database: &str,
) -> Result<(String, Store), String> {
    let admin = Store::connect(pg_url, 2)
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("CREATE DATABASE {database}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(admin.pool())
            .await
            .map_err(|e| format!("creating database {database}: {e}"))?;
    }
    admin.pool().close().await;
    let db_url = with_database(pg_url, database);
    let store = Store::connect(&db_url, 4)
        .await
        .map_err(|e| format!("database {database}: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migrations: {e}"))?;
    Ok((db_url, store))
}

/// Run the demo until Ctrl-C (or, with `once`, until every healthy device was backed up).
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| setup("scratch directory")(e.to_string()))?;
    let logs = opts.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| setup("log directory")(e.to_string()))?;
    let mut running = Running {
        children: Vec::new(),
        sim: None,
        services: Vec::new(),
        created: None,
    };
    let outcome = run_inner(&opts, &logs, &mut running).await;
    println!();
    println!("stopping: workers, enqueuer, simulator{} …", {
        let private: Vec<&str> = running
            .services
            .iter()
            .filter(|s| s.private())
            .map(|s| s.name)
            .collect();
        if private.is_empty() {
            String::new()
        } else {
            format!(", private {}", private.join(", "))
        }
    });
    running.stop().await;
    // Private service data goes; the processes' logs stay for a look afterwards.
    for sub in ["postgres", "nats"] {
        let _ = std::fs::remove_dir_all(opts.dir.join(sub));
    }
    if outcome.is_ok() {
        println!("stopped; nothing left running.");
    }
    println!("logs kept in {}", logs.display());
    outcome
}

async fn run_inner(
    opts: &DemoOptions,
    logs: &std::path::Path,
    running: &mut Running,
) -> Result<(), DemoError> {
    let t0 = Instant::now();
    println!(
        "rosbackup demo: {} simulated RouterOS devices",
        opts.devices
    );

    // 1. Services.
    let pg = crate::services::postgres(
        &opts.database_url,
        opts.database_url_strict,
        opts.private,
        &opts.dir,
    )
    .await?;
    let redis = crate::services::redis(&opts.redis_url, opts.private, &opts.dir).await?;
    let nats = crate::services::nats(&opts.nats_url, opts.private, &opts.dir).await?;
    for s in [&pg, &redis, &nats] {
        println!(
            "  {:<11} {} ({})",
            s.name,
            redact_url(&s.url),
            if s.private() {
                "private instance, stopped at exit"
            } else {
                "already running"
            }
        );
    }
    let (pg_url, redis_url, nats_url) = (pg.url.clone(), redis.url.clone(), nats.url.clone());
    let names = Names::for_run("demo", std::process::id());
    if !(pg.private() && redis.private() && nats.private()) {
        running.created = Some(Created {
            admin_url: pg_url.clone(),
            redis_url: redis_url.clone(),
            nats_url: nats_url.clone(),
            names: names.clone(),
        });
    }
    running.services.extend([pg, redis, nats]);

    // 2. A fresh database of its own, migrated.
    let (db_url, store) = fresh_database(&pg_url, &names.database)
        .await
        .map_err(DemoError::Setup)?;

    // 3. An empty queue of its own.
    let queue_name = names.queue.clone();
    let queue = Queue::connect(QueueConfig {
        redis_url: redis_url.clone(),
        name: queue_name.clone(),
        ..QueueConfig::default()
    })
    .await
    .map_err(|e| setup("Redis")(e.to_string()))?;
    queue
        .purge()
        .await
        .map_err(|e| setup("Redis")(e.to_string()))?;

    // 4. The simulated fleet, on 127.0.x.y addresses with ephemeral ports.
    let sim = Simulator::start(SimConfig {
        devices: opts.devices,
        faults: opts.faults.clone(),
        listen_base: Ipv4Addr::new(127, 0, 10, 1),
        port: 0,
        seed: 7,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| setup("simulator")(e.to_string()))?;
    let healthy: HashSet<Uuid> = sim
        .devices()
        .iter()
        .filter(|d| backs_up(d.fault))
        .map(|d| d.id)
        .collect();
    let key_b64 = CredentialKey::generate_base64();
    let archive_key_b64 = CredentialKey::generate_base64();
    let key = CredentialKey::from_base64(&key_b64).map_err(|e| setup("key")(e.to_string()))?;
    let devices: Vec<NewDevice> = sim.devices().iter().map(|d| d.new_device()).collect();
    running.sim = Some(sim);
    let mut rng = rand::thread_rng();
    let now = chrono::Utc::now();
    store
        .upsert_devices(&key, &devices, || {
            now + chrono::Duration::milliseconds(rng.gen_range(1_000..15_000))
        })
        .await
        .map_err(|e| setup("import")(e.to_string()))?;
    let (_, token) = Access::new(store.clone())
        .create_token("demo", Role::Admin, None)
        .await
        .map_err(|e| setup("token")(e.to_string()))?;

    // 5. Enqueuer and workers, as processes of this binary.
    let http_addr = match std::net::TcpListener::bind(&opts.http_addr) {
        Ok(l) => l
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| opts.http_addr.clone()),
        Err(_) => format!(
            "127.0.0.1:{}",
            crate::services::free_port().map_err(|e| setup("port")(e.to_string()))?
        ),
    };
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("NATS_URL", nats_url.as_str()),
        ("CREDENTIAL_ENCRYPTION_KEY", key_b64.as_str()),
        ("ARCHIVE_ENCRYPTION_KEY", archive_key_b64.as_str()),
        ("ROSBACKUP_QUEUE", queue_name.as_str()),
        ("ROSBACKUP_SUBJECT_PREFIX", names.subject_prefix.as_str()),
        ("ROSBACKUP_TRIGGER_SUBJECT", names.trigger_subject.as_str()),
        ("ROSBACKUP_NATS_STREAM", names.stream.as_str()),
        ("ROSBACKUP_NATS_OBJECT_BUCKET", names.bucket.as_str()),
        ("ROSBACKUP_NATS_STREAM_MAX_BYTES", "268435456"),
        ("CONFIG_BACKUP_INTERVAL", &DEMO_INTERVAL_SECONDS.to_string()),
        ("CONFIG_BACKUP_COMMAND_TIMEOUT", "15"),
        ("CONFIG_BACKUP_CONNECT_TIMEOUT", "5"),
        ("CONFIG_BACKUP_MAX_CONCURRENT", "50"),
        ("LOG_FORMAT", "text"),
        ("LOG_LEVEL", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
    .collect();
    let with = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut e = env.clone();
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        e
    };
    let enqueuer = spawn_self(
        &["enqueuer"],
        &with(&[("ROSBACKUP_HTTP_ADDR", http_addr.clone())]),
        &logs.join("enqueuer.log"),
    )
    .map_err(|e| setup("enqueuer")(e.to_string()))?;
    running.children.push(("enqueuer".into(), enqueuer));
    for i in 1..=opts.workers {
        let w = spawn_self(
            &["worker"],
            &with(&[
                ("ROSBACKUP_WORKER_NAME", format!("demo-worker-{i}")),
                ("ROSBACKUP_METRICS_ADDR", "127.0.0.1:0".into()),
            ]),
            &logs.join(format!("worker-{i}.log")),
        )
        .map_err(|e| setup("worker")(e.to_string()))?;
        running.children.push((format!("worker-{i}"), w));
    }
    let archiver = spawn_self(
        &["archiver"],
        &with(&[("ROSBACKUP_METRICS_ADDR", "127.0.0.1:0".into())]),
        &logs.join("archiver.log"),
    )
    .map_err(|e| setup("archiver")(e.to_string()))?;
    running.children.push(("archiver".into(), archiver));
    let dashboard = format!("http://{http_addr}/");
    wait_http(&http_addr, running).await?;
    println!();
    println!("  Dashboard   {dashboard}");
    println!("  Token       {token}");
    println!("  Fleet       {}", fault_mix(opts.devices, &opts.faults));
    println!(
        "  Processes   1 enqueuer, {} workers, 1 archiver; every device backed up every {} s",
        opts.workers, DEMO_INTERVAL_SECONDS
    );
    println!("  Logs        {} (kept after exit)", logs.display());
    if opts
        .faults
        .0
        .iter()
        .any(|(f, n)| *f == Fault::Change && *n > 0)
    {
        println!(
            "  History     the sim-…-change devices get a new version every {} s: open one for its diffs",
            DEMO_INTERVAL_SECONDS
        );
    }
    println!(
        "  Snapshots   NATS subjects {}.create.<device_id> (stream {})",
        names.subject_prefix, names.stream
    );
    println!(
        "  {}",
        if opts.once {
            "Stops once every healthy device is backed up."
        } else {
            "Press Ctrl-C to stop everything."
        }
    );
    println!();

    // 6. Progress until every healthy device has a backup.
    let healthy_ids: Vec<Uuid> = healthy.iter().copied().collect();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut log = ProgressLog::default();
    let mut done_at: Option<Duration> = None;
    let report = Report::new(store.clone());
    let deadline = Instant::now() + opts.timeout;
    let mut interrupted = std::pin::pin!(rosbackup_core::shutdown::signal());
    loop {
        check_children(running)?;
        let p = progress(&store, &healthy_ids).await?;
        let states = report
            .states(None)
            .await
            .map_err(|e| setup("progress")(e.to_string()))?;
        // The states are the dashboard's own numbers (the same SQL), so the two agree.
        let line = format!(
            "backed up {}/{} healthy devices · {} versions archived · now: {}",
            p.backed_up,
            healthy_ids.len(),
            p.versions,
            states_line(&states)
        );
        if tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else if log.changed(&line) {
            println!("{line}");
        }
        let all = healthy_ids.len() as i64;
        if p.backed_up >= all && p.archived_devices >= all && done_at.is_none() {
            let took = t0.elapsed();
            done_at = Some(took);
            println!(
                "{}every healthy device backed up once and archived, {:.0} s after start.{}",
                if tty { "\n" } else { "" },
                took.as_secs_f64(),
                if opts.once {
                    ""
                } else {
                    " The fleet keeps running: watch the dashboard; Ctrl-C stops."
                }
            );
            if opts.once {
                return Ok(());
            }
        }
        if opts.once && Instant::now() > deadline {
            return Err(DemoError::Timeout(format!(
                "only {} of {} healthy devices were backed up (and {} archived) within {:?}",
                p.backed_up,
                healthy_ids.len(),
                p.archived_devices,
                opts.timeout
            )));
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Wait until the enqueuer answers HTTP (it refuses to start on bad config: say why).
async fn wait_http(addr: &str, running: &mut Running) -> Result<(), DemoError> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if crate::services::reachable(&format!("http://{addr}"), 80) {
            return Ok(());
        }
        check_children(running)?;
        if Instant::now() > until {
            return Err(DemoError::Setup(format!(
                "the enqueuer did not listen on {addr} within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check_children(running: &mut Running) -> Result<(), DemoError> {
    for (name, child) in running.children.iter_mut() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DemoError::Setup(format!(
                "the {name} exited ({status}); see its log"
            )));
        }
    }
    Ok(())
}

/// How far the demo got: healthy devices backed up at least once, healthy devices with an
/// archived version, and versions archived in all.
struct Progress {
    backed_up: i64,
    archived_devices: i64,
    versions: i64,
}

async fn progress(store: &Store, healthy: &[Uuid]) -> Result<Progress, DemoError> {
    let (backed_up, archived_devices, versions): (i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM devices WHERE id = ANY($1) AND last_success_at IS NOT NULL), \
           (SELECT count(DISTINCT device_id) FROM config_versions WHERE device_id = ANY($1)), \
           (SELECT count(*) FROM config_versions)",
    )
    .bind(healthy)
    .fetch_one(store.pool())
    .await
    .map_err(|e| setup("progress")(e.to_string()))?;
    Ok(Progress {
        backed_up,
        archived_devices,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_scales_and_leaves_most_devices_healthy() {
        let f = DemoOptions::default_faults(200);
        assert_eq!(f.total(), 30);
        let broken: usize =
            f.0.iter()
                .filter(|(k, _)| !backs_up(Some(*k)))
                .map(|(_, n)| n)
                .sum();
        assert_eq!(broken, 8);
        let small = DemoOptions::default_faults(5);
        assert!(small.total() <= 5);
        assert!(DemoOptions::default_faults(0).0.is_empty());
    }

    #[test]
    fn the_fault_mix_is_one_line_that_adds_up() {
        let mix = fault_mix(200, &DemoOptions::default_faults(200));
        assert_eq!(
            mix,
            "200 devices: 170 plain, 10 run RouterOS 6, 5 add runtime annotations, \
             5 change their config on every backup (versions, diffs); 2 present a new host \
             key every time (backed up once, then Blocked: host key); 8 never back up \
             (3 reject the password, 2 refuse connections, 2 never answer, 1 answer with garbage)"
        );
        assert!(!mix.contains('\n'));
        assert_eq!(fault_mix(3, &FaultSpec::default()), "3 devices: 3 plain");
    }

    #[test]
    fn the_states_line_uses_the_dashboard_labels_and_skips_empty_states() {
        let mut states: BTreeMap<&'static str, i64> =
            DeviceState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        states.insert("ok", 190);
        states.insert("blocked_host_key", 2);
        states.insert("offline", 4);
        assert_eq!(
            states_line(&states),
            "190 OK, 4 Offline, 2 Blocked: host key"
        );
    }

    #[test]
    fn a_log_gets_a_progress_line_only_when_it_changed() {
        let mut log = ProgressLog::default();
        assert!(log.changed("backed up 1/3"));
        assert!(!log.changed("backed up 1/3"));
        assert!(!log.changed("backed up 1/3"));
        assert!(log.changed("backed up 2/3"));
        assert!(log.changed("backed up 1/3"));
    }

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "rosbackup_demo"),
            "postgres://u@h:5432/rosbackup_demo?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "d"), "postgres://u@h/d");
    }
}
