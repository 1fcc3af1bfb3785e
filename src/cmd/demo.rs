//! `rosbackup demo` and `rosbackup soak`: the whole product on a simulated fleet.
//!
//! Both drive `rosbackup_harness`, which starts real processes (the simulator, an
//! enqueuer, workers; the soak also kills them) against PostgreSQL, Redis and NATS at
//! their URLs or private instances (the soak's Redis is always private: it restarts it
//! with its data gone). The demo is the quick start, a first look for a person; the soak
//! is the long run under abuse that ends in an audit, exit 0 only when every check held.
//! This module only turns flags into the harness's options and its outcome into an exit
//! code: a bad flag is an error before anything starts, and the harness's own failure is
//! one `demo:`/`soak:` line and exit 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Faulty devices, e.g. "auth=3,refuse=2" (default: a realistic mix scaled to the fleet).
    #[arg(long)]
    faults: Option<String>,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Dashboard address (a busy port falls back to a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// Exit 0 as soon as every healthy device was backed up once (non-zero on timeout).
    #[arg(long)]
    once: bool,
    /// Seconds --once waits.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Start private PostgreSQL, Redis and NATS instances even when servers answer at
    /// their URLs (nothing of yours is touched).
    #[arg(long)]
    private: bool,
}

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Backup interval (e.g. 60s, 1m).
    #[arg(long, default_value = "60s")]
    interval: String,
    /// How long the abuse lasts (a quiescent interval follows).
    #[arg(long, default_value = "30m")]
    duration: String,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Backups each worker runs at once (CONFIG_BACKUP_MAX_CONCURRENT).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// kill -9 a random worker after a random pause in MIN-MAX seconds, then start a
    /// replacement ("off": none).
    #[arg(long, default_value = "60-180")]
    kill_every: String,
    /// Restart the private Redis with its data gone this long after the start ("third",
    /// "half", "two-thirds", a duration, or "off").
    #[arg(long, default_value = "half")]
    redis_restart_at: String,
    /// Restart NATS (streams kept) this long after the start (as --redis-restart-at);
    /// unless "off", NATS is a private server of the soak.
    #[arg(long, default_value = "third")]
    nats_restart_at: String,
    /// Restart PostgreSQL (fast shutdown: sessions cut; data kept) this long after the
    /// start (as --redis-restart-at); unless "off", PostgreSQL is a private server of the
    /// soak.
    #[arg(long, default_value = "two-thirds")]
    postgres_restart_at: String,
    /// Faulty devices, e.g. "auth=3,v6=20" (default: none; faulty devices are excluded
    /// from the every-interval check).
    #[arg(long, default_value = "")]
    faults: String,
    /// First simulated device address (device i listens on this + i).
    #[arg(long, default_value = "127.0.20.1")]
    listen_base: std::net::Ipv4Addr,
    /// Seconds between samples of RSS, open fds and the Redis key count.
    #[arg(long, default_value_t = 10)]
    sample_every: u64,
    /// Write the report (figures, series, checks) as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Private PostgreSQL and NATS instances too (Redis is always private).
    #[arg(long)]
    private: bool,
    /// Scratch directory (logs, session log); default: a new one under the temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Run the demo until Ctrl-C, or with `--once` until every healthy device was backed up.
pub async fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    use rosbackup_harness::demo::DemoOptions;
    let faults = match &a.faults {
        Some(f) => f.parse().map_err(|e| anyhow::anyhow!("--faults: {e}"))?,
        None => DemoOptions::default_faults(a.devices),
    };
    if a.devices == 0 {
        anyhow::bail!("--devices must be at least 1");
    }
    if a.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let opts = DemoOptions {
        devices: a.devices,
        faults,
        workers: a.workers,
        http_addr: a.http_addr,
        once: a.once,
        timeout: Duration::from_secs(a.timeout),
        database_url_strict: var("DATABASE_URL").is_some(),
        database_url: var("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
        nats_url: var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
        dir: std::env::temp_dir().join(format!("rosbackup-demo-{}", std::process::id())),
        private: a.private,
    };
    match rosbackup_harness::demo::run(opts).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("demo: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Run the soak, print its report, and exit by its checks.
pub async fn soak(a: SoakArgs) -> anyhow::Result<ExitCode> {
    use rosbackup_harness::soak::{SoakOptions, parse_duration, parse_range};
    let flag = |name: &str, r: Result<Duration, String>| -> anyhow::Result<Duration> {
        r.map_err(|e| anyhow::anyhow!("--{name}: {e}"))
    };
    let interval = flag("interval", parse_duration(&a.interval))?;
    let duration = flag("duration", parse_duration(&a.duration))?;
    if interval.is_zero() || duration < interval * 3 {
        anyhow::bail!("--duration must be at least three --interval (and --interval above 0)");
    }
    let kill_every = match a.kill_every.as_str() {
        "off" | "none" => None,
        s => Some(parse_range(s).map_err(|e| anyhow::anyhow!("--kill-every: {e}"))?),
    };
    let at = |name: &str, value: &str| -> anyhow::Result<Option<Duration>> {
        match value {
            "off" | "none" => Ok(None),
            "third" => Ok(Some(duration / 3)),
            "half" => Ok(Some(duration / 2)),
            "two-thirds" => Ok(Some(duration * 2 / 3)),
            s => {
                let d = flag(name, parse_duration(s))?;
                if d.is_zero() || d >= duration {
                    anyhow::bail!("--{name} must fall inside --duration");
                }
                Ok(Some(d))
            }
        }
    };
    let redis_restart_at = at("redis-restart-at", &a.redis_restart_at)?;
    let nats_restart_at = at("nats-restart-at", &a.nats_restart_at)?;
    let postgres_restart_at = at("postgres-restart-at", &a.postgres_restart_at)?;
    let faults = a
        .faults
        .parse()
        .map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
    if a.devices == 0 || a.workers == 0 || a.concurrency == 0 {
        anyhow::bail!("--devices, --workers and --concurrency must be at least 1");
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let dir = a.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("rosbackup-soak-{}", std::process::id()))
    });
    let opts = SoakOptions {
        devices: a.devices,
        interval,
        duration,
        workers: a.workers,
        concurrency: a.concurrency,
        kill_every,
        redis_restart_at,
        nats_restart_at,
        postgres_restart_at,
        faults,
        listen_base: a.listen_base,
        sample_every: Duration::from_secs(a.sample_every.max(1)),
        report: a.report,
        database_url_strict: var("DATABASE_URL").is_some(),
        database_url: var("DATABASE_URL")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        nats_url: var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
        private: a.private,
        dir,
    };
    match rosbackup_harness::soak::run(opts).await {
        Ok(report) => {
            print!("{}", report.table());
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            eprintln!("soak: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
