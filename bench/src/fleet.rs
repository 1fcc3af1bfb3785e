//! `rosbackup-bench fleet`: the real fleet on a backlog — throughput, latency, memory and
//! CPU of every process, exports in flight.
//!
//! **Setup (per case and run, nothing shared between them).** A PostgreSQL database of
//! its own, a Redis queue name of its own, NATS subjects, stream and object bucket of
//! their own. The simulator runs as its own process (`rosbackup sim`, the built binary),
//! one address per device from `--listen-base` (or `--one-address`: one address, ports
//! from `--port`), every export `--export-delay-ms` late (2000 = a real router's pause),
//! `--size` bytes each. `W` worker processes (`rosbackup-worker`, or `rosbackup worker`
//! when the thin binary is not built) run with `CONFIG_BACKUP_MAX_CONCURRENT=C`. Then the
//! inventory is imported with the real CLI (`rosbackup devices import`) under
//! `CONFIG_BACKUP_JITTER_MIN=0` and `CONFIG_BACKUP_JITTER_MAX=0`: a new device is first
//! due at import time plus a jitter between those two, so every device is due at once — a
//! backlog. The due times are read back from `devices.next_due_at`, and only then the
//! real enqueuer process is started (`rosbackup-enqueuer --insecure-no-auth`, its default
//! 1 s tick and queue cap). The clock starts when the enqueuer is spawned.
//!
//! **End and latency.** The case's stream's message count is polled every 250 ms; once
//! it reaches the number of devices, the CPU samples that end the case are taken and
//! only then a headers-only ordered consumer reads every snapshot (its subject names the
//! device, JetStream stamps the time the server stored it), so reading them is not
//! charged to the case. The case ends when every device has at least one snapshot (a
//! repeated publish can make the count run ahead: then it goes on). A job's latency is the
//! stream timestamp of its device's first snapshot minus the device's due time from
//! PostgreSQL: it covers the enqueuer's claim and push, waiting in Redis, the export, and
//! the publish up to JetStream's store (not the outcome write that follows the ack). Both
//! clocks are this machine's. Throughput is devices / (last first-snapshot time − enqueuer
//! start).
//!
//! **Processes.** CPU (user + system) and resident memory of the enqueuer, each worker and
//! the simulator are sampled from `/proc` every 250 ms; CPU is reported over the measured
//! window (enqueuer start to last snapshot), peak RSS is the kernel's high-water mark
//! (`VmHWM`) at the end. Exports in flight are each worker's `mikrotik_config_backup_active`
//! gauge (raised around export + publish), scraped from its `/metrics` at the same rate.
//!
//! **Limits.** The bench raises its own `RLIMIT_NOFILE` soft limit to the hard limit;
//! every child inherits it (10,000 devices = 10,000 listening sockets in the simulator,
//! and one socket per export in flight in a worker).
//!
//! **Bastion.** With `--bastion` every device is reached through one jump host: a real
//! OpenSSH `sshd` (`/usr/sbin/sshd`, run as root) on 127.0.0.1 that forwards
//! `direct-tcpip` channels, set as the jump host of the devices' tenant with the real CLI
//! (`rosbackup tenants set-jump-host … --jump-key-file`) after the import. Its pinned key is
//! taken on first use like in a fleet. Each worker's `rosbackup_bastion_connections_opened_total`
//! is read at the end (`bastion_connections_opened`, all workers; the target is one per
//! worker and bastion, up to `ROSBACKUP_BASTION_CONNECTIONS`, not one per backup). The
//! simulator has no forwarding of its own, hence the real sshd; its per-connection
//! processes' CPU shows in the machine's CPU only.
//!
//! **Records.** Params `{devices, workers, concurrency, delay_ms, size_bytes, queue_cap,
//! bastion, profile}`; case names like `fleet, 1000 devices, slow 2000ms, 1 worker, c=500`.
//! Metrics: `backups_per_s`, `makespan_s`, `p50_latency_ms`, `p99_latency_ms`,
//! `max_latency_ms`, `failed_runs`, `inflight_max` (all workers together),
//! `inflight_max_per_worker`, `worker_cpu_ms_per_backup` (all workers' CPU / devices),
//! `{enqueuer,worker1..,sim}_cpu_s`, `{enqueuer,worker1..,sim}_peak_rss_mib`,
//! `worker_peak_rss_mib` (the largest worker), `machine_cpu_ms_per_backup` and, over the
//! same window, `{postgres,redis,nats,bench}_cpu_ms_per_backup` (each service's
//! processes with their reaped children; `bench` is this process: its sampling and
//! polling). `--sweep 50,100,…` runs one case per
//! concurrency. `--latency-out FILE` appends one JSON line per case and run:
//! `{"suite","case","run","params","latency_ms":[…]}` (one number per device).

use crate::cost::{BenchDb, ServiceUrls, delete_nats, median, profile, publisher_config, unique};
use crate::procstat;
use crate::record::{Record, Sink};
use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use rosbackup::credentials::CredentialKey;
use rosbackup::queue::{Queue, QueueConfig};
use rosbackup::snapshot::Publisher;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Flags of `rosbackup-bench fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Delay before every export's output starts (2000 = a slow, real router).
    #[arg(long, default_value_t = 0)]
    pub export_delay_ms: u64,
    /// CONFIG_BACKUP_MAX_CONCURRENT of each worker.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Run one case per concurrency in this list instead of --concurrency (e.g.
    /// 50,100,200,500,1000) for a throughput-vs-concurrency plot.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<usize>,
    /// With --sweep: each point's fleet is concurrency × this many devices instead of
    /// --devices, so every point runs the same number of rounds (a fixed fleet makes the
    /// low points take minutes with slow devices).
    #[arg(long)]
    pub sweep_rounds: Option<usize>,
    /// Append each case's per-device latencies (ms) here, one JSON line per case and run.
    #[arg(long)]
    pub latency_out: Option<PathBuf>,
    /// Export size, bytes.
    #[arg(long, default_value_t = 20_000)]
    pub size: usize,
    /// First simulator address (device i listens on this + i).
    #[arg(long, default_value = "127.62.1.1")]
    pub listen_base: Ipv4Addr,
    /// All devices on --listen-base, consecutive ports from --port.
    #[arg(long)]
    pub one_address: bool,
    /// Simulator SSH port (the first one with --one-address).
    #[arg(long, default_value_t = 2222)]
    pub port: u16,
    /// ROSBACKUP_QUEUE_CAP for the enqueuer (default: its own default).
    #[arg(long)]
    pub queue_cap: Option<u32>,
    /// ROSBACKUP_FETCH_BATCH for the workers (default: theirs, concurrency / 16).
    #[arg(long)]
    pub fetch_batch: Option<u32>,
    /// ROSBACKUP_SEED_LOCK for the workers (default: theirs, on): `false` measures a
    /// fleet after the Go poller's cutover, without its Redis lock around each export.
    #[arg(long)]
    pub seed_lock: Option<bool>,
    /// ROSBACKUP_OUTCOME_BATCH for the workers (default: theirs, 32): `1` writes each
    /// outcome in its own statement, as before group commit.
    #[arg(long)]
    pub outcome_batch: Option<u32>,
    /// ROSBACKUP_OUTCOME_LINGER_MS for the workers (default: theirs, 5).
    #[arg(long)]
    pub outcome_linger_ms: Option<u32>,
    /// ROSBACKUP_LEASE_BATCH for the workers (default: theirs, 16): `1` takes each lease
    /// in its own statement, as before leases were grouped.
    #[arg(long)]
    pub lease_batch: Option<u32>,
    /// Where rosbackup, rosbackup-worker and rosbackup-enqueuer are (default: beside this
    /// binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Give up on a case after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Start the workers with this soft open-file limit (the hard limit is kept), e.g.
    /// 1024 as under systemd, to check how a worker copes.
    #[arg(long)]
    pub worker_nofile: Option<u64>,
    /// LOG_LEVEL of the workers (e.g. `info,apalis_core=debug` to see queue fetches).
    #[arg(long, default_value = "info")]
    pub worker_log_level: String,
    /// Keep the processes' logs here (default: a temporary directory, removed after a
    /// successful case).
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Reach every device through one bastion (a real sshd; module docs).
    #[arg(long)]
    pub bastion: bool,
    /// ROSBACKUP_BASTION_CONNECTIONS of each worker (default: theirs).
    #[arg(long)]
    pub bastion_connections: Option<u32>,
}

/// The programs to run.
struct Bins {
    rosbackup: PathBuf,
    worker: (PathBuf, Vec<&'static str>),
    enqueuer: (PathBuf, Vec<&'static str>),
}

impl Bins {
    fn find(dir: Option<&Path>) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .ok_or_else(|| anyhow!("no directory for this binary"))?
                .to_path_buf(),
        };
        let rosbackup = dir.join("rosbackup");
        if !rosbackup.is_file() {
            bail!(
                "{} not found: build it (cargo build --release --workspace) or pass --bin-dir",
                rosbackup.display()
            );
        }
        let thin = |name: &str, sub: &'static str| {
            let p = dir.join(name);
            if p.is_file() {
                (p, vec![])
            } else {
                (rosbackup.clone(), vec![sub])
            }
        };
        Ok(Bins {
            worker: thin("rosbackup-worker", "worker"),
            enqueuer: thin("rosbackup-enqueuer", "enqueuer"),
            rosbackup,
        })
    }
}

/// A child process, stopped (SIGTERM, then SIGKILL after 15 s) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        Proc::spawn_limited(name, program, args, env, log, None)
    }

    /// [`Proc::spawn`] with a soft `RLIMIT_NOFILE` for the child.
    fn spawn_limited(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
        nofile: Option<u64>,
    ) -> anyhow::Result<Proc> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        crate::procstat::die_with_parent(&mut cmd);
        if let Some(soft) = nofile {
            // SAFETY: getrlimit/setrlimit are async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim: libc::rlimit = std::mem::zeroed();
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    lim.rlim_cur = (soft as libc::rlim_t).min(lim.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(args)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` if it has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(st) => bail!("{} exited early: {st}", self.name),
        }
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET path` over plain HTTP/1.0; the body on 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(body.to_string())
}

/// `mikrotik_config_backup_active` from a worker's `/metrics`.
fn inflight(addr: &str) -> Option<f64> {
    metric(addr, "mikrotik_config_backup_active")
}

/// One unlabelled metric from a worker's `/metrics`.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let body = http_get(addr, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A real OpenSSH sshd on 127.0.0.1 forwarding `direct-tcpip` for `root` with a key of
/// its own (the bench runs as root, as the sshd tests do).
struct Bastion {
    sshd: Proc,
    port: u16,
    key_file: PathBuf,
}

impl Bastion {
    fn start(dir: &Path) -> anyhow::Result<Bastion> {
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all("/run/sshd")?;
        let keygen = |name: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("pub"));
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "rosbackup-bench"])
                .arg("-f")
                .arg(&path)
                .status()
                .context("ssh-keygen")?;
            if !st.success() {
                bail!("ssh-keygen failed: {st}");
            }
            Ok(path)
        };
        let host_key = keygen("host_key")?;
        let user_key = keygen("user_key")?;
        let authorized = dir.join("authorized_keys");
        std::fs::copy(user_key.with_extension("pub"), &authorized)?;
        let port = free_port()?;
        let conf = [
            format!("Port {port}"),
            "ListenAddress 127.0.0.1".into(),
            format!("PidFile {}", dir.join("sshd.pid").display()),
            format!("HostKey {}", host_key.display()),
            format!("AuthorizedKeysFile {}", authorized.display()),
            "UsePAM no".into(),
            "PasswordAuthentication no".into(),
            "KbdInteractiveAuthentication no".into(),
            "PubkeyAuthentication yes".into(),
            "PermitRootLogin prohibit-password".into(),
            "AllowUsers root".into(),
            "StrictModes no".into(),
            "AllowTcpForwarding yes".into(),
            "MaxStartups 1000".into(),
        ];
        let conf_path = dir.join("sshd_config");
        std::fs::write(&conf_path, conf.join("\n") + "\n")?;
        let conf_arg = conf_path.display().to_string();
        let proc = Proc::spawn(
            "bastion",
            Path::new("/usr/sbin/sshd"),
            &["-D", "-e", "-f", &conf_arg],
            &[],
            &dir.join("sshd.log"),
        )?;
        let mut b = Bastion {
            sshd: proc,
            port,
            key_file: user_key,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            b.sshd.check()?;
            if Instant::now() > deadline {
                bail!("sshd did not listen within 10 s (log in {})", dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(b)
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Per-process measurements over the window.
#[derive(Debug, Clone, Copy, Default)]
struct ProcNumbers {
    cpu_start: Duration,
    cpu_end: Duration,
    peak_rss: u64,
}

struct CaseResult {
    makespan_s: f64,
    latencies_ms: Vec<f64>,
    failed_runs: i64,
    inflight_max: f64,
    inflight_max_per_worker: f64,
    procs: Vec<(String, ProcNumbers)>,
    /// Busy CPU of the whole machine over the case (every process: simulator,
    /// PostgreSQL, Redis, NATS, enqueuer, workers).
    machine_cpu: Option<Duration>,
    /// PostgreSQL's, Redis', NATS' and the bench's own CPU over the case
    /// ([`procstat::Services`]).
    services: Vec<(&'static str, Duration)>,
    /// With `--bastion`: the workers' `rosbackup_bastion_connections_opened_total`, summed.
    bastion_connections: Option<f64>,
    /// The workers' `rosbackup_outcome_batch_size` (count, sum), summed: outcomes per
    /// statement. `None` from workers that predate group commit.
    outcome_batches: Option<(f64, f64)>,
    /// The same for `rosbackup_lease_batch_size`: leases per statement.
    lease_batches: Option<(f64, f64)>,
}

struct Case {
    devices: usize,
    workers: usize,
    concurrency: usize,
    delay_ms: u64,
    bastion: bool,
}

impl Case {
    fn name(&self) -> String {
        let speed = if self.delay_ms == 0 {
            "fast".to_string()
        } else {
            format!("slow {}ms", self.delay_ms)
        };
        format!(
            "fleet, {} devices, {speed}, {} worker{}, c={}{}",
            self.devices,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            self.concurrency,
            if self.bastion { ", via bastion" } else { "" }
        )
    }
}

async fn run_case(
    args: &FleetArgs,
    case: &Case,
    bins: &Bins,
    urls: &ServiceUrls,
    logs: &Path,
) -> anyhow::Result<CaseResult> {
    std::fs::create_dir_all(logs)?;
    let token = unique("fleet");
    let db = BenchDb::create(&urls.database_url, 4).await?;
    let pcfg = publisher_config(&urls.nats_url, &token);
    let queue_name = format!("rbbench:{token}");
    let queue = Queue::connect(QueueConfig {
        redis_url: urls.redis_url.clone(),
        name: queue_name.clone(),
        ..QueueConfig::default()
    })
    .await
    .context("Redis (REDIS_URL)");
    let result = match queue {
        Ok(queue) => {
            let r = measure(args, case, bins, urls, logs, &db, &pcfg, &queue_name).await;
            queue.purge().await.ok();
            r
        }
        Err(e) => Err(e),
    };
    delete_nats(&pcfg).await;
    db.drop().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &FleetArgs,
    case: &Case,
    bins: &Bins,
    urls: &ServiceUrls,
    logs: &Path,
    db: &BenchDb,
    pcfg: &rosbackup::snapshot::PublisherConfig,
    queue_name: &str,
) -> anyhow::Result<CaseResult> {
    // The stream: its message count is polled while the case runs; each device's first
    // snapshot is read from it only once the count says every device may have one (a
    // consumer reading along would charge its work and NATS' to the case).
    let publisher = Publisher::connect(pcfg.clone())
        .await
        .context("NATS (NATS_URL)")?;
    let stream = publisher
        .jetstream()
        .get_stream(publisher.stream_name())
        .await?;
    measure_with(args, case, bins, urls, logs, db, pcfg, queue_name, &stream).await
}

/// Each device's first snapshot in the stream (its subject names the device; the time is
/// when JetStream stored it), read with a headers-only ordered consumer up to the
/// stream's last message now.
async fn first_snapshots(
    stream: &async_nats::jetstream::stream::Stream,
) -> anyhow::Result<HashMap<Uuid, i128>> {
    let mut firsts = HashMap::new();
    let last = stream.clone().info().await?.state.last_sequence;
    if last == 0 {
        return Ok(firsts);
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            headers_only: true,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow!("reading the stream: {e}"))?;
        let info = m.info().map_err(|e| anyhow!("message info: {e}"))?;
        let (sequence, t) = (info.stream_sequence, info.published.unix_timestamp_nanos());
        let device = m
            .subject
            .as_str()
            .split_once(".create.")
            .and_then(|(_, rest)| rest.rsplit('.').next())
            .and_then(|s| s.parse::<Uuid>().ok());
        if let Some(id) = device {
            firsts.entry(id).or_insert(t);
        }
        if sequence >= last {
            break;
        }
    }
    Ok(firsts)
}

#[allow(clippy::too_many_arguments)]
async fn measure_with(
    args: &FleetArgs,
    case: &Case,
    bins: &Bins,
    urls: &ServiceUrls,
    logs: &Path,
    db: &BenchDb,
    pcfg: &rosbackup::snapshot::PublisherConfig,
    queue_name: &str,
    stream: &async_nats::jetstream::stream::Stream,
) -> anyhow::Result<CaseResult> {
    let n = case.devices;
    let inventory = logs.join("inventory.csv");
    let _ = std::fs::remove_file(&inventory);

    // 1. The simulator, as its own process.
    let mut sim_args: Vec<String> = vec![
        "sim".into(),
        "--devices".into(),
        n.to_string(),
        "--listen-base".into(),
        args.listen_base.to_string(),
        "--port".into(),
        args.port.to_string(),
        "--export-delay".into(),
        format!("{}", case.delay_ms as f64 / 1000.0),
        "--config-size".into(),
        args.size.to_string(),
        "--seed".into(),
        (Uuid::new_v4().as_u128() % 1_000_000).to_string(),
        "--inventory".into(),
        inventory.display().to_string(),
    ];
    if args.one_address {
        sim_args.push("--one-address".into());
    }
    let sim_args: Vec<&str> = sim_args.iter().map(String::as_str).collect();
    let mut sim = Proc::spawn(
        "simulator",
        &bins.rosbackup,
        &sim_args,
        &[("LOG_LEVEL".into(), "warn".into())],
        &logs.join("sim.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(&inventory)
            && text.ends_with('\n')
            && text.lines().count() > n
        {
            break;
        }
        sim.check()?;
        if Instant::now() > deadline {
            bail!("the simulator wrote no inventory within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. Workers, idle on an empty queue.
    let key_b64 = CredentialKey::generate_base64();
    let mut base_env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", urls.redis_url.clone()),
        ("NATS_URL", urls.nats_url.clone()),
        ("CREDENTIAL_ENCRYPTION_KEY", key_b64.clone()),
        ("ROSBACKUP_QUEUE", queue_name.to_string()),
        ("ROSBACKUP_SUBJECT_PREFIX", pcfg.subject_prefix.clone()),
        ("ROSBACKUP_NATS_STREAM", pcfg.stream_name.clone()),
        ("ROSBACKUP_NATS_OBJECT_BUCKET", pcfg.object_bucket.clone()),
        (
            "ROSBACKUP_NATS_STREAM_MAX_BYTES",
            pcfg.stream_max_bytes.to_string(),
        ),
        (
            "ROSBACKUP_TRIGGER_SUBJECT",
            format!("{}.trigger", pcfg.subject_prefix),
        ),
        ("CONFIG_BACKUP_JITTER_MIN", "0".into()),
        ("CONFIG_BACKUP_JITTER_MAX", "0".into()),
        ("CONFIG_BACKUP_INTERVAL", "21600".into()),
        ("LOG_FORMAT", "json".into()),
        ("LOG_LEVEL", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(cap) = args.queue_cap {
        base_env.push(("ROSBACKUP_QUEUE_CAP".into(), cap.to_string()));
    }
    let mut workers = Vec::new();
    let mut metrics_addrs = Vec::new();
    for i in 1..=case.workers {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut env = base_env.clone();
        env.extend([
            ("ROSBACKUP_WORKER_NAME".into(), format!("bench-w{i}")),
            ("ROSBACKUP_METRICS_ADDR".into(), addr.clone()),
            ("LOG_LEVEL".into(), args.worker_log_level.clone()),
            (
                "CONFIG_BACKUP_MAX_CONCURRENT".into(),
                case.concurrency.to_string(),
            ),
        ]);
        if let Some(b) = args.fetch_batch {
            env.push(("ROSBACKUP_FETCH_BATCH".into(), b.to_string()));
        }
        if let Some(b) = args.bastion_connections {
            env.push(("ROSBACKUP_BASTION_CONNECTIONS".into(), b.to_string()));
        }
        if let Some(lock) = args.seed_lock {
            env.push(("ROSBACKUP_SEED_LOCK".into(), lock.to_string()));
        }
        if let Some(b) = args.outcome_batch {
            env.push(("ROSBACKUP_OUTCOME_BATCH".into(), b.to_string()));
        }
        if let Some(ms) = args.outcome_linger_ms {
            env.push(("ROSBACKUP_OUTCOME_LINGER_MS".into(), ms.to_string()));
        }
        if let Some(b) = args.lease_batch {
            env.push(("ROSBACKUP_LEASE_BATCH".into(), b.to_string()));
        }
        let (prog, a) = &bins.worker;
        workers.push(Proc::spawn_limited(
            &format!("worker{i}"),
            prog,
            a,
            &env,
            &logs.join(format!("worker{i}.log")),
            args.worker_nofile,
        )?);
        metrics_addrs.push(addr);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (w, addr) in workers.iter_mut().zip(&metrics_addrs) {
        while http_get(addr, "/readyz").is_none() {
            w.check()?;
            if Instant::now() > deadline {
                bail!("{} not ready within 60 s", w.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 3. The inventory, imported by the real CLI: every device due now.
    let mut import = Command::new(&bins.rosbackup)
        .args(["devices", "import"])
        .arg(&inventory)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .envs(base_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("rosbackup devices import")?;
    let mut import_err = String::new();
    if let Some(mut e) = import.stderr.take() {
        e.read_to_string(&mut import_err).ok();
    }
    let st = import.wait()?;
    if !st.success() {
        bail!("rosbackup devices import failed ({st}): {import_err}");
    }
    // 3b. With --bastion: one jump host for every device (its tenant's default).
    let _bastion = if case.bastion {
        let b = Bastion::start(&logs.join("bastion"))?;
        let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM devices")
            .fetch_all(db.store.pool())
            .await?;
        for tenant in tenants {
            let out = Command::new(&bins.rosbackup)
                .args(["tenants", "set-jump-host"])
                .arg(tenant.to_string())
                .arg("--jump-host")
                .arg(format!("root@127.0.0.1:{}", b.port))
                .arg("--jump-key-file")
                .arg(&b.key_file)
                .env_clear()
                .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
                .envs(base_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .context("rosbackup tenants set-jump-host")?;
            if !out.status.success() {
                bail!(
                    "rosbackup tenants set-jump-host failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Some(b)
    } else {
        None
    };
    let due: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, next_due_at FROM devices")
            .fetch_all(db.store.pool())
            .await?;
    if due.len() != n {
        bail!("imported {} devices, expected {n}", due.len());
    }
    let due: HashMap<Uuid, i128> = due
        .into_iter()
        .map(|(id, t)| (id, t.timestamp_nanos_opt().unwrap_or(0) as i128))
        .collect();

    // 4. The enqueuer: the clock starts.
    let mut env = base_env.clone();
    env.push(("ROSBACKUP_HTTP_ADDR".into(), "127.0.0.1:0".into()));
    let (prog, a) = &bins.enqueuer;
    let mut a: Vec<&str> = a.clone();
    a.push("--insecure-no-auth");
    let t_start = now_ns();
    let mut enqueuer = Proc::spawn("enqueuer", prog, &a, &env, &logs.join("enqueuer.log"))?;

    // 5. Sample until every device has a snapshot.
    let mut numbers: Vec<(String, u32, ProcNumbers)> = Vec::new();
    numbers.push(("enqueuer".into(), enqueuer.pid(), ProcNumbers::default()));
    for w in &workers {
        numbers.push((w.name.clone(), w.pid(), ProcNumbers::default()));
    }
    numbers.push(("sim".into(), sim.pid(), ProcNumbers::default()));
    for (_, pid, p) in numbers.iter_mut() {
        if let Some(s) = procstat::sample(*pid) {
            p.cpu_start = s.cpu;
            p.cpu_end = s.cpu;
            p.peak_rss = s.peak_rss;
        }
    }
    let machine_start = procstat::machine_cpu();
    let services_start = procstat::Services::now();
    let mut inflight_max = 0f64;
    let mut inflight_max_per_worker = 0f64;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last_print = Instant::now();
    let (machine_cpu, services, firsts) = loop {
        // The end's samples are taken before the snapshots are read, so reading them is
        // not charged to the case; a count that included a device twice (a repeated
        // publish) leaves some device without one, and the case goes on.
        let published = stream
            .clone()
            .info()
            .await
            .map(|i| i.state.messages)
            .unwrap_or(0);
        let end = (published >= n as u64).then(|| {
            (
                procstat::machine_cpu()
                    .zip(machine_start)
                    .map(|(end, start)| end.saturating_sub(start)),
                procstat::Services::now().since(&services_start),
            )
        });
        let firsts = match end {
            Some(_) => first_snapshots(stream).await?,
            None => HashMap::new(),
        };
        let done = firsts.len();
        for (_, pid, p) in numbers.iter_mut() {
            if let Some(s) = procstat::sample(*pid) {
                p.cpu_end = s.cpu;
                p.peak_rss = p.peak_rss.max(s.peak_rss);
            }
        }
        let mut sum = 0f64;
        for addr in &metrics_addrs {
            if let Some(v) = inflight(addr) {
                sum += v;
                inflight_max_per_worker = inflight_max_per_worker.max(v);
            }
        }
        inflight_max = inflight_max.max(sum);
        if let Some((machine, services)) = end.filter(|_| done >= n) {
            break (machine, services, firsts);
        }
        enqueuer.check()?;
        sim.check()?;
        for w in workers.iter_mut() {
            w.check()?;
        }
        if Instant::now() > deadline {
            bail!(
                "only {published} snapshots for {n} devices after {} s",
                args.timeout
            );
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("  … {published}/{n} snapshots published, {sum} in flight");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let failed_runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backup_runs WHERE status = 'failed'")
            .fetch_one(db.store.pool())
            .await?;

    let bastion_connections = case.bastion.then(|| {
        metrics_addrs
            .iter()
            .filter_map(|a| metric(a, "rosbackup_bastion_connections_opened_total"))
            .sum::<f64>()
    });

    let batches = |name: &str| {
        metrics_addrs
            .iter()
            .map(|a| {
                Some((
                    metric(a, &format!("{name}_count"))?,
                    metric(a, &format!("{name}_sum"))?,
                ))
            })
            .try_fold((0.0, 0.0), |(c, s), m| m.map(|(mc, ms)| (c + mc, s + ms)))
    };
    let outcome_batches = batches("rosbackup_outcome_batch_size");
    let lease_batches = batches("rosbackup_lease_batch_size");

    // 6. Stop everything (the Drop of each Proc does it too, on errors).
    enqueuer.stop();
    for w in workers.iter_mut() {
        w.stop();
    }
    sim.stop();

    let last = firsts.values().copied().max().unwrap_or(t_start);
    let mut latencies: Vec<f64> = firsts
        .iter()
        .filter_map(|(id, t)| due.get(id).map(|d| (t - d) as f64 / 1e6))
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(CaseResult {
        makespan_s: (last - t_start) as f64 / 1e9,
        latencies_ms: latencies,
        failed_runs,
        inflight_max,
        inflight_max_per_worker,
        procs: numbers.into_iter().map(|(n, _, p)| (n, p)).collect(),
        machine_cpu,
        services,
        bastion_connections,
        outcome_batches,
        lease_batches,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `rosbackup-bench fleet`.
pub fn run(args: &FleetArgs, runs: u32, sink: &Sink) -> anyhow::Result<()> {
    let nofile = crate::cost::raise_nofile_limit();
    let widest = args.concurrency.max(*args.sweep.iter().max().unwrap_or(&0));
    let most_devices = match args.sweep_rounds {
        Some(r) if !args.sweep.is_empty() => widest.saturating_mul(r).max(args.devices),
        _ => args.devices,
    };
    let need = most_devices as u64 + 2 * widest as u64 + 256;
    if nofile < need {
        eprintln!(
            "warning: open-file limit {nofile} (hard) may be too low for {most_devices} devices; \
             raise it (ulimit -Hn) to at least {need}"
        );
    }
    let bins = Bins::find(args.bin_dir.as_deref())?;
    if bins
        .rosbackup
        .components()
        .any(|c| c.as_os_str() == "debug")
        || cfg!(debug_assertions)
    {
        eprintln!("warning: debug binaries; build with --release for numbers worth reporting");
    }
    let urls = ServiceUrls::from_env();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let concurrencies = if args.sweep.is_empty() {
        vec![args.concurrency]
    } else {
        args.sweep.clone()
    };
    let logs_root = match &args.logs {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(unique("rbbench_fleet")),
    };
    let sweeping = !args.sweep.is_empty();
    for c in concurrencies {
        let devices = match args.sweep_rounds {
            Some(r) if sweeping => c.saturating_mul(r).max(1),
            _ => args.devices,
        };
        let case = Case {
            devices,
            workers: args.workers,
            concurrency: c,
            delay_ms: args.export_delay_ms,
            bastion: args.bastion,
        };
        let name = case.name();
        let params = serde_json::json!({
            "devices": case.devices,
            "workers": case.workers,
            "concurrency": c,
            "delay_ms": case.delay_ms,
            "size_bytes": args.size,
            "queue_cap": args.queue_cap,
            "fetch_batch": args.fetch_batch,
            "seed_lock": args.seed_lock,
            "outcome_batch": args.outcome_batch,
            "outcome_linger_ms": args.outcome_linger_ms,
            "lease_batch": args.lease_batch,
            "bastion": args.bastion,
            "bastion_connections": args.bastion_connections,
            "series": sweeping.then(|| match args.sweep_rounds {
                Some(r) => format!("sweep, {r} rounds"),
                None => format!("sweep, {} devices", args.devices),
            }),
            "profile": profile(),
        });
        for r in 1..=runs {
            eprintln!("# {name}, run {r}");
            let logs = logs_root.join(format!("c{c}-r{r}"));
            let res = match rt.block_on(run_case(args, &case, &bins, &urls, &logs)) {
                Ok(res) => res,
                Err(e) => {
                    eprintln!("{name}, run {r} failed: {e:#} (logs in {})", logs.display());
                    return Err(e);
                }
            };
            if args.logs.is_none() {
                let _ = std::fs::remove_dir_all(&logs);
            }
            let put = |metric: &str, unit: &str, value: f64| {
                sink.put(&Record {
                    suite: "fleet".into(),
                    case: name.clone(),
                    metric: metric.into(),
                    unit: unit.into(),
                    value,
                    run: r,
                    params: params.clone(),
                })
            };
            let l = &res.latencies_ms;
            put("backups_per_s", "1/s", case.devices as f64 / res.makespan_s)?;
            put("makespan_s", "s", res.makespan_s)?;
            put("p50_latency_ms", "ms", percentile(l, 50.0))?;
            put("p99_latency_ms", "ms", percentile(l, 99.0))?;
            put("max_latency_ms", "ms", percentile(l, 100.0))?;
            put("median_latency_ms", "ms", median(l))?;
            put("failed_runs", "runs", res.failed_runs as f64)?;
            put("inflight_max", "exports", res.inflight_max)?;
            put(
                "inflight_max_per_worker",
                "exports",
                res.inflight_max_per_worker,
            )?;
            let mut workers_cpu = 0f64;
            let mut worker_rss = 0u64;
            for (proc_name, p) in &res.procs {
                let cpu = p.cpu_end.saturating_sub(p.cpu_start).as_secs_f64();
                if proc_name.starts_with("worker") {
                    workers_cpu += cpu;
                    worker_rss = worker_rss.max(p.peak_rss);
                }
                put(&format!("{proc_name}_cpu_s"), "s", cpu)?;
                put(
                    &format!("{proc_name}_peak_rss_mib"),
                    "MiB",
                    p.peak_rss as f64 / 1048576.0,
                )?;
            }
            put(
                "worker_cpu_ms_per_backup",
                "ms",
                workers_cpu * 1e3 / case.devices as f64,
            )?;
            put("worker_peak_rss_mib", "MiB", worker_rss as f64 / 1048576.0)?;
            if let Some((count, sum)) = res.outcome_batches.filter(|(c, _)| *c > 0.0) {
                put("outcomes_per_statement", "outcomes", sum / count)?;
            }
            if let Some((count, sum)) = res.lease_batches.filter(|(c, _)| *c > 0.0) {
                put("leases_per_statement", "leases", sum / count)?;
            }
            if let Some(opened) = res.bastion_connections {
                put("bastion_connections_opened", "connections", opened)?;
            }
            if let Some(m) = res.machine_cpu {
                put(
                    "machine_cpu_ms_per_backup",
                    "ms",
                    m.as_secs_f64() * 1e3 / case.devices as f64,
                )?;
            }
            for (service, cpu) in &res.services {
                put(
                    &format!("{service}_cpu_ms_per_backup"),
                    "ms",
                    cpu.as_secs_f64() * 1e3 / case.devices as f64,
                )?;
            }
            if let Some(path) = &args.latency_out {
                let line = serde_json::json!({
                    "suite": "fleet",
                    "case": name,
                    "run": r,
                    "params": params,
                    "latency_ms": res.latencies_ms,
                });
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                serde_json::to_writer(&mut f, &line)?;
                f.write_all(b"\n")?;
            }
        }
    }
    if args.logs.is_none() {
        let _ = std::fs::remove_dir_all(&logs_root);
    }
    Ok(())
}
