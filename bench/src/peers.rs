//! `rosbackup-bench peers`: the Python scripts an operator would write instead of
//! rosbackup, run against the same simulated fleet and measured the same way.
//!
//! Why this shape: the issue's claim is "faster and lighter than what you would write by
//! hand". The peers (bench/peers/: an asyncssh script with a semaphore, a netmiko script
//! with a 30-thread pool) do the same job as our worker — export, normalize, SHA-256,
//! publish to JetStream — so the numbers compare pipelines, not features. Each peer runs
//! as a child process from a virtualenv (bench/peers/setup.sh installs the pinned
//! versions from PyPI); we measure it from outside: CPU from `wait4` (the child and
//! everything it reaped, exact), peak RSS by sampling `/proc/<pid>/status` (`VmHWM`),
//! throughput and latencies from the script's own summary line. The simulator runs
//! in-process (its CPU is not charged to the peer); every run gets its own JetStream
//! stream, whose message count must equal the script's `ok` count — a peer that claims
//! backups it did not publish is an error, not a number. Beside the peer's own CPU and
//! the machine's, each of PostgreSQL, Redis, NATS and this process (the simulator, here)
//! is charged its CPU over the run (`{postgres,redis,nats,bench}_cpu_ms_per_backup`), so
//! the machine's figure can be compared with ours service by service.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rosbackup::sim::{SimConfig, Simulator};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::procstat;
use crate::record::{Record, Sink};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    Asyncssh,
    Netmiko,
    Both,
}

/// Flags of `rosbackup-bench peers`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which peer script(s) to run.
    #[arg(long, value_enum, default_value = "both")]
    pub tool: Tool,
    /// Simulated devices.
    #[arg(long, default_value_t = 50)]
    pub devices: usize,
    /// Exports in flight for the asyncssh script (its semaphore).
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Threads of the netmiko script's pool (30: Oxidized's default thread count).
    #[arg(long, default_value_t = 30)]
    pub netmiko_workers: usize,
    /// Delay before every export's output starts (real routers take ~2000 ms).
    #[arg(long, default_value_t = 0)]
    pub export_delay_ms: u64,
    /// Generated config size in bytes (default: realistic per-device sizes).
    #[arg(long)]
    pub config_size: Option<usize>,
    /// First simulated device address; device i listens on this + i (ephemeral ports).
    #[arg(long, default_value = "127.0.1.1")]
    pub listen_base: std::net::Ipv4Addr,
    /// JetStream server the peers publish to.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Virtualenv of the peers (created/updated by bench/peers/setup.sh).
    #[arg(long)]
    pub venv: Option<PathBuf>,
    /// Use the venv as it is: do not run bench/peers/setup.sh.
    #[arg(long)]
    pub no_setup: bool,
    /// Give up on one peer run after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub run_timeout_s: u64,
    /// Name of a series of cases (recorded in params; the report plots each series as one
    /// line, e.g. a concurrency sweep whose fleet size grows with the concurrency).
    #[arg(long)]
    pub series: Option<String>,
}

/// The summary line a peer script prints (bench/peers/peercommon.py `Tally.summary`).
#[derive(Debug, Deserialize)]
struct Summary {
    tool: String,
    ok: u64,
    failed: u64,
    wall_s: f64,
    p50_latency_ms: Option<f64>,
    p99_latency_ms: Option<f64>,
    #[serde(default)]
    failures: std::collections::BTreeMap<String, u64>,
}

/// What we measured of one peer run.
#[derive(Debug)]
struct Measured {
    summary: Summary,
    cpu: Duration,
    /// Busy CPU of the whole machine while the peer ran (it, the simulator, NATS, …).
    machine_cpu: Option<Duration>,
    /// PostgreSQL's, Redis', NATS' and the bench's own CPU while the peer ran; the bench
    /// process runs the simulator here ([`procstat::Services`]).
    services: Vec<(&'static str, Duration)>,
    peak_rss: u64,
    /// Messages in the run's stream.
    published: u64,
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Runs the suite (its own tokio runtime: `main` stays synchronous).
pub fn run(args: Args, sink: &Sink, runs: u32) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(args, sink, runs))
}

async fn run_async(args: Args, sink: &Sink, runs: u32) -> anyhow::Result<()> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let python = python(&args).await?;
    let inventory =
        std::env::temp_dir().join(format!("rosbackup-bench-peers-{}.csv", std::process::id()));
    let sim = Simulator::start(SimConfig {
        devices: args.devices,
        listen_base: args.listen_base,
        port: 0,
        config_size: args.config_size,
        export_delay: Duration::from_millis(args.export_delay_ms),
        inventory: Some(inventory.clone()),
        seed: 6,
        ..SimConfig::default()
    })
    .await
    .context("starting the simulator")?;
    let nats = async_nats::connect(args.nats_url.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))?;
    let js = async_nats::jetstream::new(nats);

    let tools: &[Tool] = match args.tool {
        Tool::Both => &[Tool::Asyncssh, Tool::Netmiko],
        Tool::Asyncssh => &[Tool::Asyncssh],
        Tool::Netmiko => &[Tool::Netmiko],
    };
    let mut errors = Vec::new();
    'outer: for &tool in tools {
        for run in 1..=runs.max(1) {
            match measure(&args, &js, &python, &inventory, tool).await {
                Ok(m) => {
                    if let Err(e) = put(sink, &args, tool, run, &m) {
                        errors.push(format!("{e:#}"));
                        break 'outer;
                    }
                    if m.published != m.summary.ok {
                        errors.push(format!(
                            "{} run {run}: the script reported {} backups but its stream holds {} messages",
                            m.summary.tool, m.summary.ok, m.published
                        ));
                    }
                }
                Err(e) => errors.push(format!("{} run {run}: {e:#}", name(tool))),
            }
        }
    }
    sim.shutdown().await;
    let _ = std::fs::remove_file(&inventory);
    if errors.is_empty() {
        Ok(())
    } else {
        for e in &errors {
            eprintln!("peers: {e}");
        }
        bail!("{} peer run(s) failed", errors.len())
    }
}

fn name(tool: Tool) -> &'static str {
    match tool {
        Tool::Asyncssh => "asyncssh",
        Tool::Netmiko => "netmiko",
        Tool::Both => "both",
    }
}

fn concurrency(args: &Args, tool: Tool) -> usize {
    match tool {
        Tool::Netmiko => args.netmiko_workers,
        _ => args.concurrency,
    }
}

/// The venv's python, after bench/peers/setup.sh made sure the pinned packages are in it.
async fn python(args: &Args) -> anyhow::Result<PathBuf> {
    let venv = args.venv.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("bench-venv")
    });
    let python = venv.join("bin").join("python");
    if args.no_setup {
        if !python.exists() {
            bail!(
                "{} does not exist (run bench/peers/setup.sh {})",
                python.display(),
                venv.display()
            );
        }
        return Ok(python);
    }
    let status = tokio::process::Command::new("bash")
        .arg(peers_dir().join("setup.sh"))
        .arg(&venv)
        .stdout(Stdio::null())
        .status()
        .await
        .context("running bench/peers/setup.sh")?;
    if !status.success() {
        bail!("bench/peers/setup.sh {} failed ({status})", venv.display());
    }
    Ok(python)
}

/// One run of one peer: its own stream, the script as a child, the stream checked and
/// deleted whatever happened.
async fn measure(
    args: &Args,
    js: &async_nats::jetstream::Context,
    python: &Path,
    inventory: &Path,
    tool: Tool,
) -> anyhow::Result<Measured> {
    // Unique across runs and concurrent bench processes on one NATS server.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let stream_name = format!("RBBENCH_PEERS_{token}");
    let prefix = format!("rbbench.peers.{token}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {stream_name}"))?;
    let result = run_child(args, python, inventory, tool, &stream_name, &prefix).await;
    let published = async {
        let mut s = js.get_stream(&stream_name).await?;
        anyhow::Ok(s.info().await?.state.messages)
    }
    .await;
    if let Err(e) = js.delete_stream(&stream_name).await {
        eprintln!("peers: could not delete stream {stream_name}: {e}");
    }
    let mut m = result?;
    m.published = published.with_context(|| format!("reading stream {stream_name}"))?;
    Ok(m)
}

async fn run_child(
    args: &Args,
    python: &Path,
    inventory: &Path,
    tool: Tool,
    stream: &str,
    prefix: &str,
) -> anyhow::Result<Measured> {
    let script = peers_dir().join(match tool {
        Tool::Netmiko => "netmiko_backup.py",
        _ => "asyncssh_backup.py",
    });
    let cpu_before = procstat::children_cpu();
    let machine_before = procstat::machine_cpu();
    let services_before = procstat::Services::now();
    let mut cmd = tokio::process::Command::new(python);
    crate::procstat::die_with_parent(&mut cmd);
    let mut child = cmd
        .arg("-u")
        .arg(&script)
        .arg("--inventory")
        .arg(inventory)
        .arg("--concurrency")
        .arg(concurrency(args, tool).to_string())
        .arg("--nats-url")
        .arg(&args.nats_url)
        .arg("--stream")
        .arg(stream)
        .arg("--subject-prefix")
        .arg(prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
    let pid = child.id().context("child has no pid")?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let out_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });

    // Sample peak RSS while it runs (VmHWM only grows, so the last sample is the peak up
    // to then; 50 ms keeps the gap at the end small).
    let mut peak_rss = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.run_timeout_s);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let status = loop {
        tokio::select! {
            st = child.wait() => break st.context("waiting for the peer")?,
            _ = tick.tick() => {
                if let Some(s) = procstat::sample(pid) {
                    peak_rss = peak_rss.max(s.peak_rss);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!("{} did not finish within {} s", name(tool), args.run_timeout_s);
            }
        }
    };
    // Reaped: the child and everything it reaped are in RUSAGE_CHILDREN now.
    let cpu = procstat::children_cpu().saturating_sub(cpu_before);
    let machine = procstat::machine_cpu()
        .zip(machine_before)
        .map(|(end, start)| end.saturating_sub(start));
    let services = procstat::Services::now().since(&services_before);
    let out = out_task.await.unwrap_or_default();
    let err = err_task.await.unwrap_or_default();
    if !status.success() {
        bail!(
            "{} exited with {status}; stderr tail:\n{}",
            script.display(),
            tail(&err, 2000)
        );
    }
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{} printed no summary line", script.display()))?;
    let summary: Summary = serde_json::from_str(line)
        .with_context(|| format!("{} printed an unreadable summary", script.display()))?;
    Ok(Measured {
        summary,
        cpu,
        machine_cpu: machine,
        services,
        peak_rss,
        published: 0,
    })
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn put(sink: &Sink, args: &Args, tool: Tool, run: u32, m: &Measured) -> anyhow::Result<()> {
    let c = concurrency(args, tool);
    let case = format!(
        "{}, {} devices, c={c}, delay {}ms",
        name(tool),
        args.devices,
        args.export_delay_ms
    );
    let params = serde_json::json!({
        "tool": name(tool),
        "devices": args.devices,
        "concurrency": c,
        "delay_ms": args.export_delay_ms,
        "series": args.series,
    });
    let s = &m.summary;
    let per_backup = |d: Duration| {
        if s.ok == 0 {
            f64::NAN
        } else {
            d.as_secs_f64() * 1000.0 / s.ok as f64
        }
    };
    let mut metrics: Vec<(&str, &str, f64)> = vec![
        (
            "backups_per_s",
            "1/s",
            if s.wall_s > 0.0 {
                s.ok as f64 / s.wall_s
            } else {
                f64::NAN
            },
        ),
        ("cpu_ms_per_backup", "ms", per_backup(m.cpu)),
        (
            "machine_cpu_ms_per_backup",
            "ms",
            m.machine_cpu.map_or(f64::NAN, per_backup),
        ),
        ("peak_rss_mib", "MiB", m.peak_rss as f64 / (1024.0 * 1024.0)),
        ("p50_latency_ms", "ms", s.p50_latency_ms.unwrap_or(f64::NAN)),
        ("p99_latency_ms", "ms", s.p99_latency_ms.unwrap_or(f64::NAN)),
        ("wall_s", "s", s.wall_s),
        ("ok", "count", s.ok as f64),
        ("failed", "count", s.failed as f64),
        ("published", "count", m.published as f64),
    ];
    let services: Vec<(String, f64)> = m
        .services
        .iter()
        .map(|(n, d)| (format!("{n}_cpu_ms_per_backup"), per_backup(*d)))
        .collect();
    metrics.extend(services.iter().map(|(n, v)| (n.as_str(), "ms", *v)));
    // NaN is not JSON: leave out what could not be measured (no successful backup).
    metrics.retain(|(_, _, v)| v.is_finite());
    for (metric, unit, value) in metrics {
        sink.put(&Record {
            suite: "peers".into(),
            case: case.clone(),
            metric: metric.into(),
            unit: unit.into(),
            value,
            run,
            params: params.clone(),
        })?;
    }
    if !s.failures.is_empty() {
        eprintln!("peers: {case} run {run}: failures by kind {:?}", s.failures);
    }
    Ok(())
}
