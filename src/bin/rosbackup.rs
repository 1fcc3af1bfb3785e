//! `rosbackup`: the operator's command line. Thin: every subcommand calls the library.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use rosbackup::Secret;
use rosbackup::backup;
use rosbackup::config::{BackupSettings, ConfigError, Env, publisher_config, schedule_settings};
use rosbackup::credentials::{CredentialError, CredentialKey};
use rosbackup::device::Target;
use rosbackup::inventory::{self, DeviceFields, FieldError, InventoryRow};
use rosbackup::normalize::{self, Version};
use rosbackup::secret::redact_url;
use rosbackup::sim;
use rosbackup::snapshot::Publisher;
use rosbackup::store::{Device, DeviceFilter, NewDevice, Run, Store, StoreError};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::Instrument;

#[derive(Parser)]
#[command(
    name = "rosbackup",
    version,
    about = "Back up MikroTik RouterOS configurations over SSH"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct SoakArgs {
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
    /// Restart the private Redis with its data gone this long after the start ("half",
    /// a duration, or "off").
    #[arg(long, default_value = "half")]
    redis_restart_at: String,
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

#[derive(Subcommand)]
enum Command {
    /// Normalize an export (stdin when no file); normalized bytes on stdout.
    Normalize(NormalizeArgs),
    /// SHA-256 of the normalized export: 64 lowercase hex digits and a newline.
    Hash(NormalizeArgs),
    /// One export from one device, with exactly the worker's code path.
    Export(ExportArgs),
    /// Run a simulated fleet of RouterOS devices.
    Sim(sim::SimArgs),
    /// Apply the device store's database migrations (DATABASE_URL).
    Migrate,
    /// Manage the devices in the device store (DATABASE_URL).
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Queue a manual backup of one device (DATABASE_URL, REDIS_URL).
    Enqueue {
        /// Device id or name.
        device: String,
        /// Wait for the result and print it (exit 1 unless it succeeded).
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a worker (the same as `rosbackup-worker`).
    Worker,
    /// Run an enqueuer (the same as `rosbackup-enqueuer`): scheduling, the dashboard and
    /// the API on ROSBACKUP_HTTP_ADDR.
    Enqueuer {
        /// Serve the dashboard and API without authentication: anyone who reaches the
        /// port is an admin. Without it, the enqueuer refuses to start until a token exists.
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// The whole product on a simulated fleet: services, simulator, enqueuer, workers,
    /// dashboard. Uses PostgreSQL/Redis/NATS at their URLs or starts private ones.
    Demo(DemoArgs),
    /// A long run under abuse (worker kills, a Redis restart), then an audit of the
    /// simulator's sessions, the run history and the NATS messages. Exit 0 when every
    /// check held, 1 otherwise.
    Soak(SoakArgs),
    /// Health-check an HTTP endpoint (for container health checks: no curl needed).
    /// Exits 0 on a 2xx answer, 1 otherwise.
    Probe {
        /// e.g. http://127.0.0.1:8080/healthz
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Run an archiver (the same as `rosbackup-archiver`): keeps the config history of
    /// every device from the snapshots on NATS.
    Archiver,
    /// A device's config history: its versions, or the diff between two of them
    /// (DATABASE_URL, ARCHIVE_ENCRYPTION_KEY).
    History {
        /// Device id or name (a removed device: its id).
        device: String,
        /// Print the unified diff from version A to version B (ids from the list).
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        diff: Option<Vec<i64>>,
        /// Print one version's normalized text (it holds secrets: admin use).
        #[arg(long, value_name = "VERSION")]
        text: Option<i64>,
        /// Most versions listed.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage API tokens for the dashboard and the API (DATABASE_URL).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
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

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// A name to recognise it by (who or what uses it).
        #[arg(long)]
        name: String,
        /// viewer (read) or admin (read and act).
        #[arg(long, value_parser = ["viewer", "admin"])]
        role: String,
        /// Limit the token to one tenant's devices, runs and counts.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the token alone (for scripts), without the description.
        #[arg(long)]
        quiet: bool,
        /// Only if no live token exists (first-start bootstrap in compose/Kubernetes);
        /// otherwise print that one exists and exit 0.
        #[arg(long)]
        if_none: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name; its browser sessions end at once.
    Revoke { token: String },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// Insert or update every device of an inventory CSV, in one transaction: all or none.
    Import {
        /// CSV with the header id,tenant_id,name,host,port,username,password,routeros_version
        /// (as `rosbackup sim --inventory` writes it), optionally enabled,
        /// backup_interval_seconds, backup_cron.
        file: PathBuf,
    },
    /// List devices with their backup state.
    List {
        /// Only this tenant's devices.
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
        /// A JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Add one device; prints its id.
    Add(AddArgs),
    /// Re-encrypt every stored password under a new key (CREDENTIAL_ENCRYPTION_KEY is the
    /// old one, NEW_CREDENTIAL_ENCRYPTION_KEY the new one); all devices or none. Then
    /// restart every process with the new key.
    RotateKey,
    /// Delete a device and its run history.
    Remove {
        /// Device id or name.
        device: String,
    },
    /// Set a device's password (and user); lifts an auth_failed block.
    SetCredentials {
        /// Device id or name.
        device: String,
        /// New SSH user (default: keep the current one).
        #[arg(long)]
        username: Option<String>,
        /// Name of the environment variable holding the new password.
        #[arg(long, default_value = "ROSBACKUP_PASSWORD")]
        password_env: String,
    },
    /// Forget the pinned SSH host key (the next backup pins what it sees); lifts a
    /// host_key_mismatch block.
    ResetHostKey {
        /// Device id or name.
        device: String,
    },
    /// Lift any block and backoff; the device is due now.
    Unblock {
        /// Device id or name.
        device: String,
    },
    /// Schedule backups of a device again.
    Enable {
        /// Device id or name.
        device: String,
    },
    /// Stop scheduling backups of a device (it stays in the store).
    Disable {
        /// Device id or name.
        device: String,
    },
    /// A device's state and its last 20 runs.
    Show {
        /// Device id or name.
        device: String,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `devices add`: validated exactly like an inventory row.
#[derive(clap::Args)]
struct AddArgs {
    #[arg(long)]
    name: String,
    /// IP address or DNS hostname.
    #[arg(long)]
    host: String,
    #[arg(long, default_value = "22")]
    port: String,
    #[arg(long)]
    username: String,
    /// Name of the environment variable holding the password (never pass it as a flag).
    #[arg(long, default_value = "ROSBACKUP_PASSWORD")]
    password_env: String,
    /// Tenant id (default: the nil UUID).
    #[arg(long)]
    tenant: Option<String>,
    /// Device id (default: a new random UUID).
    #[arg(long)]
    id: Option<String>,
    /// RouterOS version, e.g. 7.16.2 (default: asked at the first backup).
    #[arg(long)]
    routeros_version: Option<String>,
    /// Back this device up every SECS seconds instead of the fleet's schedule.
    #[arg(long, value_name = "SECS")]
    interval: Option<String>,
    /// Back this device up on this cron schedule (wins over --interval).
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// Add it disabled (no scheduled backups until `devices enable`).
    #[arg(long)]
    disabled: bool,
}

#[derive(clap::Args)]
struct NormalizeArgs {
    /// 1 = the seed's rules (byte-compatible), 2 = real RouterOS headers (default: NORMALIZATION_VERSION or 2).
    #[arg(long, value_parser = parse_version)]
    normalization_version: Option<Version>,
    file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    #[arg(long)]
    host: String,
    #[arg(long, default_value_t = 22)]
    port: u16,
    #[arg(long)]
    user: String,
    /// Name of the environment variable holding the password (never pass it as a flag).
    #[arg(long, default_value = "ROSBACKUP_PASSWORD")]
    password_env: String,
    /// Pinned host-key fingerprint (`SHA256:…`); without it the key is trusted and printed.
    #[arg(long)]
    known_fingerprint: Option<String>,
    /// RouterOS major version; without it the device is asked.
    #[arg(long, value_parser = ["6", "7"])]
    routeros_version: Option<String>,
    /// Command timeout in seconds (default: CONFIG_BACKUP_COMMAND_TIMEOUT or 60).
    #[arg(long)]
    timeout: Option<u64>,
    /// Connect/handshake timeout in seconds (default: CONFIG_BACKUP_CONNECT_TIMEOUT or 15).
    #[arg(long)]
    connect_timeout: Option<u64>,
    /// Write the raw export here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print a JSON result on stdout.
    #[arg(long)]
    json: bool,
    /// Also publish the snapshot to NATS_URL.
    #[arg(long)]
    publish: bool,
    /// Device id for the snapshot event (default: derived from host and port).
    #[arg(long)]
    device_id: Option<uuid::Uuid>,
    /// Tenant id for the snapshot event (default: the nil UUID).
    #[arg(long)]
    tenant_id: Option<uuid::Uuid>,
    #[arg(long, value_parser = parse_version)]
    normalization_version: Option<Version>,
    /// Export without secrets (`/export` on 7, `hide-sensitive` on 6).
    #[arg(long)]
    no_secrets: bool,
    /// Largest export accepted, in bytes.
    #[arg(long)]
    max_output: Option<usize>,
}

fn parse_version(s: &str) -> Result<Version, String> {
    s.parse()
        .map_err(|e: normalize::UnknownVersion| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Devices { .. }
            | Command::Tokens { .. }
            | Command::History { .. }
            | Command::Normalize(_)
            | Command::Hash(_)
    ) {
        // Short-lived printing commands behave like Unix tools when piped into `head`:
        // they end quietly on a closed pipe instead of panicking in `println!`. (Not
        // the long-running ones: there SIGPIPE must stay ignored.)
        // SAFETY: called in main before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let env = Env::from_process();
    // The demo and the soak talk to a person: their own logs stay quiet unless asked for.
    let quiet = Env::from_pairs([("LOG_LEVEL", "warn"), ("LOG_FORMAT", "text")]);
    let log_env =
        if matches!(cli.command, Command::Demo(_) | Command::Soak(_)) && !env.is_set("LOG_LEVEL") {
            &quiet
        } else {
            &env
        };
    if let Err(e) = rosbackup::observability::init_tracing(log_env) {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Normalize(a) => normalize_cmd(&env, a, false),
        Command::Hash(a) => normalize_cmd(&env, a, true),
        Command::Export(a) => block_on(export_cmd(env, a)),
        Command::Sim(a) => block_on(async move {
            sim::run_cli(a).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Migrate => block_on(migrate_cmd(&env)),
        Command::Devices { command } => block_on(devices_cmd(&env, command)),
        Command::Enqueue {
            device,
            wait,
            timeout,
            json,
        } => block_on(enqueue_cmd(&env, device, wait, timeout, json)),
        Command::Worker => block_on(async {
            let code = rosbackup::service::run_role(
                &env,
                rosbackup::service::Role::Worker,
                rosbackup::service::Flags::default(),
            )
            .await;
            Ok(ExitCode::from(code))
        }),
        Command::Enqueuer { insecure_no_auth } => block_on(async move {
            let flags = rosbackup::service::Flags { insecure_no_auth };
            let code =
                rosbackup::service::run_role(&env, rosbackup::service::Role::Enqueuer, flags).await;
            Ok(ExitCode::from(code))
        }),
        Command::Tokens { command } => block_on(tokens_cmd(&env, command)),
        Command::Demo(a) => block_on(demo_cmd(a)),
        Command::Soak(a) => block_on(soak_cmd(a)),
        Command::Probe { url, timeout } => block_on(probe_cmd(url, timeout)),
        Command::Archiver => block_on(async {
            let code = rosbackup::service::run_role(
                &env,
                rosbackup::service::Role::Archiver,
                rosbackup::service::Flags::default(),
            )
            .await;
            Ok(ExitCode::from(code))
        }),
        Command::History {
            device,
            diff,
            text,
            limit,
            json,
        } => block_on(history_cmd(&env, device, diff, text, limit, json)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("configuration error: {c}");
                return ExitCode::from(2);
            }
            // Only CREDENTIAL_ENCRYPTION_KEY parsing reaches here as a bare
            // CredentialError (store errors wrap theirs in StoreError).
            if let Some(c) = e.downcast_ref::<CredentialError>() {
                eprintln!("configuration error: {c}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rosbackup enqueue`: a manual backup through the queue, like the API and the NATS
/// trigger.
async fn enqueue_cmd(
    env: &Env,
    device: String,
    wait: bool,
    timeout: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let cfg = rosbackup::config::queue_config(env)?;
    let shown = rosbackup::secret::redact_url(&cfg.redis_url);
    let queue = rosbackup::queue::Queue::connect(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {shown}: {e}"))?;
    let d = store.find_device(&device).await.map_err(store_error)?;
    // A one-shot process exports no metrics; `request` counts into this throwaway
    // registry, as it counts into the enqueuer's for the API and the NATS trigger.
    let metrics = rosbackup::metrics::Metrics::new();
    let job = rosbackup::manual::request(&store, &queue, &metrics, d.id, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !wait {
        if json {
            println!(
                "{}",
                serde_json::json!({ "job_id": job.job_id, "device_id": d.id })
            );
        } else {
            println!("queued {} for {} ({})", job.job_id, d.name, d.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let run = rosbackup::manual::wait(&store, &job.job_id, Duration::from_secs(timeout))
        .await
        .map_err(store_error)?;
    let Some(run) = run else {
        eprintln!(
            "no result within {timeout} s; {} is still queued (are workers running?)",
            job.job_id
        );
        return Ok(ExitCode::FAILURE);
    };
    let ok = run.status == "success";
    if json {
        println!("{}", serde_json::to_string(&run)?);
    } else if ok {
        println!(
            "{}: success, sha256 {}, {} bytes, {} ms",
            d.name,
            run.sha256.as_deref().unwrap_or(""),
            run.bytes.unwrap_or(0),
            run.duration_ms
        );
    } else {
        let kind = run.error_kind.as_deref().unwrap_or(run.status.as_str());
        let message = run.error_message.as_deref().unwrap_or("");
        let hint = kind
            .parse::<rosbackup::ErrorKind>()
            .ok()
            .filter(|k| !message.contains(k.hint()))
            .map(|k| format!(" ({})", k.hint()))
            .unwrap_or_default();
        println!(
            "{}: {}{}: {}{hint}",
            d.name,
            run.status,
            run.error_kind
                .as_deref()
                .map(|k| format!(" [{k}]"))
                .unwrap_or_default(),
            run.error_message.as_deref().unwrap_or("")
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn block_on(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(fut)
}

fn normalize_cmd(env: &Env, a: NormalizeArgs, hash_only: bool) -> anyhow::Result<ExitCode> {
    let version = match a.normalization_version {
        Some(v) => v,
        None => env.parse("NORMALIZATION_VERSION")?,
    };
    let raw = match &a.file {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            buf
        }
    };
    let normalized = normalize::normalize(&raw, version);
    let mut out = std::io::stdout().lock();
    if hash_only {
        writeln!(out, "{}", normalize::hash(&normalized))?;
    } else {
        out.write_all(&normalized)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn export_cmd(env: Env, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut settings = BackupSettings::from_env(&env)?;
    if let Some(t) = a.timeout {
        settings.export.command_timeout = Duration::from_secs(t.max(1));
    }
    if let Some(t) = a.connect_timeout {
        settings.export.connect_timeout = Duration::from_secs(t.max(1));
    }
    if let Some(m) = a.max_output {
        settings.export.max_output = m;
    }
    if a.no_secrets {
        settings.export.sensitive = false;
    }
    if let Some(v) = a.normalization_version {
        settings.normalization = v;
    }
    let password = std::env::var(&a.password_env).map_err(|_| ConfigError {
        var: a.password_env.clone(),
        value: None,
        reason: "the password variable is not set (see --password-env)".into(),
    })?;
    let publisher = if a.publish {
        let cfg = publisher_config(&env)?;
        match Publisher::connect(cfg).await {
            Ok(p) => Some(p),
            Err(e) => return Ok(fail(a.json, "publish_failed", &e.to_string())),
        }
    } else {
        None
    };
    let target = Target {
        host: a.host.clone(),
        port: a.port,
        username: a.user.clone(),
        password: Secret::new(password),
        known_fingerprint: a.known_fingerprint.clone(),
        routeros_version: a.routeros_version.clone(),
    };
    let device_id = a.device_id.unwrap_or_else(|| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("ssh://{}:{}", a.host, a.port).as_bytes(),
        )
    });
    let tenant_id = a.tenant_id.unwrap_or_default();
    let span = tracing::info_span!("export", device_id = %device_id, job_id = "cli");
    let collected = match backup::collect(&target, &settings.export, settings.normalization)
        .instrument(span.clone())
        .await
    {
        Ok(c) => c,
        Err(e) => return Ok(fail(a.json, e.kind().as_str(), &e.to_string())),
    };
    if let Some(path) = &a.output {
        write_private(path, &collected.export.raw)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut published = None;
    if let Some(p) = &publisher {
        match backup::publish(
            p,
            &collected,
            &device_id.to_string(),
            &tenant_id.to_string(),
        )
        .instrument(span)
        .await
        {
            Ok((_, receipt)) => published = Some(receipt),
            Err(e) => return Ok(fail(a.json, "publish_failed", &e.to_string())),
        }
    }
    let x = &collected.export;
    if a.json {
        let mut v = serde_json::json!({
            "fingerprint": x.fingerprint,
            "sha256_hash": collected.sha256,
            "bytes": x.raw.len(),
            "routeros_version": x.routeros_version,
            "normalization_version": collected.normalization_version.as_u8(),
            "duration_ms": x.timings.total.as_millis() as u64,
        });
        if let Some(r) = &published {
            v["stream"] = r.stream.clone().into();
            v["sequence"] = r.sequence.into();
            v["duplicate"] = r.duplicate.into();
        }
        println!("{v}");
    } else {
        println!("sha256      {}", collected.sha256);
        println!("fingerprint {}", x.fingerprint);
        println!("bytes       {}", x.raw.len());
        println!(
            "version     {} (command {:?})",
            x.routeros_version.as_deref().unwrap_or("unknown"),
            x.command
        );
        println!(
            "algorithms  {} / {} / {} / {}{}",
            x.negotiated.kex,
            x.negotiated.host_key,
            x.negotiated.cipher,
            x.negotiated.mac,
            if x.negotiated.uses_legacy() {
                " (legacy)"
            } else {
                ""
            }
        );
        println!("duration    {} ms", x.timings.total.as_millis());
        if let Some(r) = &published {
            println!(
                "published   {} seq {}{}",
                r.stream,
                r.sequence,
                if r.duplicate { " (duplicate)" } else { "" }
            );
        }
        if collected.export.error_exporting_lines > 0 {
            eprintln!(
                "warning: {} '#error exporting' line(s): RouterOS could not export some menus",
                collected.export.error_exporting_lines
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The export holds secrets: the file is readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

fn fail(json: bool, kind: &str, message: &str) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"error_kind": kind, "message": message})
        );
    } else {
        eprintln!("error ({kind}): {message}");
    }
    ExitCode::FAILURE
}

// ---- the device store ----------------------------------------------------------------

/// `DATABASE_URL`, checked (exit 2 when it is not a PostgreSQL URL).
fn database_url(env: &Env) -> Result<String, ConfigError> {
    env.url("DATABASE_URL", &["postgres", "postgresql"])
}

/// The URL as it may be shown: no password, neither in the user part nor as a
/// `password=` parameter.
fn shown_url(url: &str) -> String {
    let redacted = redact_url(url);
    match redacted.split_once('?') {
        None => redacted,
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

/// The password in a database URL, if any (to make sure no message repeats it).
fn url_password(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
            && !pw.is_empty()
        {
            found.push(pw.to_string());
        }
        if let Some((_, query)) = rest.split_once('?') {
            for p in query.split('&') {
                if let Some((k, v)) = p.split_once('=')
                    && k.eq_ignore_ascii_case("password")
                    && !v.is_empty()
                {
                    found.push(v.to_string());
                }
            }
        }
    }
    found
}

/// One line, without the URL's password.
fn one_line(msg: &str, url: &str) -> String {
    let mut msg = msg.replace(['\n', '\r'], " ");
    for pw in url_password(url) {
        msg = msg.replace(&pw, "***");
    }
    msg
}

/// Connect to the store. A probe connection first, so that the operator reads why the
/// database cannot be reached (refused, unknown database, authentication) rather than a
/// pool timeout; never the URL's password.
async fn open_store(env: &Env) -> anyhow::Result<Store> {
    use sqlx::Connection;
    let url = database_url(env)?;
    let fail = |why: String| {
        anyhow::anyhow!(
            "cannot connect to the database at {}: {}",
            shown_url(&url),
            one_line(&why, &url)
        )
    };
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::postgres::PgConnection::connect(&url),
    )
    .await
    .map_err(|_| fail("no answer within 10 s".into()))?
    .map_err(|e| fail(describe(&StoreError::Db(e))))?;
    let _ = probe.close().await;
    Store::connect(&url, 2)
        .await
        .map_err(|e| fail(describe(&e)))
}

/// A store error in one line. PostgreSQL's own message, without sqlx's "at line N" (a
/// line of the server's source, easily mistaken for a line of the inventory); for a
/// unique violation with the key that collided.
fn describe(e: &StoreError) -> String {
    if let StoreError::Db(sqlx::Error::Database(d)) = e {
        let mut msg = format!("database: {}", d.message());
        if d.code().as_deref() == Some("23505")
            && let Some(detail) = d
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|p| p.detail())
        {
            msg.push_str(&format!(" ({detail})"));
        }
        return msg;
    }
    e.to_string()
}

/// A store error for the operator, with a hint where there is one.
fn store_error(e: StoreError) -> anyhow::Error {
    let mut msg = describe(&e);
    if let StoreError::Db(sqlx::Error::Database(d)) = &e
        && d.code().as_deref() == Some("42P01")
    {
        msg.push_str(" (has `rosbackup migrate` been run on this database?)");
    }
    anyhow::anyhow!(msg)
}

fn credential_key(env: &Env) -> Result<CredentialKey, CredentialError> {
    CredentialKey::from_base64(&env.raw("CREDENTIAL_ENCRYPTION_KEY"))
}

/// A password from the environment variable named by `--password-env`.
fn password_from_env(var: &str) -> Result<Secret, ConfigError> {
    let value = std::env::var(var).map_err(|_| ConfigError {
        var: var.to_string(),
        value: None,
        reason: "the password variable is not set (see --password-env)".into(),
    })?;
    inventory::parse_password(&value).map_err(|_| ConfigError {
        var: var.to_string(),
        value: None,
        reason: "the password variable is empty".into(),
    })
}

async fn migrate_cmd(env: &Env) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

/// GET an http:// URL; 2xx → exit 0.
async fn probe_cmd(url: String, timeout: u64) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("probe: only http:// URLs, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match tokio::time::timeout(Duration::from_secs(timeout), fetch).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("probe {url}: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(_) => {
            eprintln!("probe {url}: no answer within {timeout} s");
            return Ok(ExitCode::from(1));
        }
    };
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or("").to_string();
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    println!("{status}");
    Ok(if (200..300).contains(&code) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn demo_cmd(a: DemoArgs) -> anyhow::Result<ExitCode> {
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

async fn soak_cmd(a: SoakArgs) -> anyhow::Result<ExitCode> {
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
    let redis_restart_at = match a.redis_restart_at.as_str() {
        "off" | "none" => None,
        "half" => Some(duration / 2),
        s => {
            let d = flag("redis-restart-at", parse_duration(s))?;
            if d.is_zero() || d >= duration {
                anyhow::bail!("--redis-restart-at must fall inside --duration");
            }
            Some(d)
        }
    };
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

async fn tokens_cmd(env: &Env, command: TokensCommand) -> anyhow::Result<ExitCode> {
    use rosbackup::access::{Access, Role};
    let access = Access::new(open_store(env).await?);
    match command {
        TokensCommand::Create {
            name,
            role,
            tenant,
            quiet,
            if_none,
        } => {
            if if_none {
                let live = access
                    .live_tokens()
                    .await
                    .map_err(|e| anyhow::anyhow!(describe(&e)))?;
                if live > 0 {
                    println!("{live} live token(s) exist; none created");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("role must be viewer or admin"))?;
            let tenant = tenant
                .map(|t| inventory::parse_uuid(&t))
                .transpose()
                .map_err(|reason| anyhow::anyhow!("--tenant: {reason}"))?;
            let (info, token) = access
                .create_token(&name, role, tenant)
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?;
            if quiet {
                println!("{token}");
            } else {
                println!(
                    "created {} token {:?} ({}){}",
                    info.role,
                    info.name,
                    info.id,
                    info.tenant_id
                        .map(|t| format!(" for tenant {t}"))
                        .unwrap_or_default()
                );
                println!("{token}");
                println!("Keep it now: it is not stored and cannot be shown again.");
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List { json } => {
            let tokens = access
                .list_tokens()
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36}  {:<20}  {:<6}  {:<36}  {:<20}  STATUS",
                "ID", "NAME", "ROLE", "TENANT", "LAST USED"
            );
            for t in tokens {
                println!(
                    "{:<36}  {:<20}  {:<6}  {:<36}  {:<20}  {}",
                    t.id,
                    t.name,
                    t.role,
                    t.tenant_id
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "(all)".into()),
                    t.last_used_at
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "never".into()),
                    if t.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "live"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke { token } => {
            let info = access.revoke_token(&token).await.map_err(|e| match e {
                StoreError::Invalid(m) => anyhow::anyhow!(m),
                other => anyhow::anyhow!(describe(&other)),
            })?;
            println!("revoked token {:?} ({})", info.name, info.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn devices_cmd(env: &Env, command: DevicesCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevicesCommand::Import { file } => devices_import(env, &file).await,
        DevicesCommand::RotateKey => {
            let old = credential_key(env)?;
            let new_raw = env.raw("NEW_CREDENTIAL_ENCRYPTION_KEY");
            let new = CredentialKey::from_base64(&new_raw).map_err(|e| ConfigError {
                var: "NEW_CREDENTIAL_ENCRYPTION_KEY".into(),
                value: None,
                reason: e.to_string(),
            })?;
            if new_raw.trim() == env.raw("CREDENTIAL_ENCRYPTION_KEY").trim() {
                return Err(ConfigError {
                    var: "NEW_CREDENTIAL_ENCRYPTION_KEY".into(),
                    value: None,
                    reason: "is the same as CREDENTIAL_ENCRYPTION_KEY".into(),
                }
                .into());
            }
            let store = open_store(env).await?;
            let n = store.rotate_key(&old, &new).await.map_err(|e| match e {
                StoreError::Credentials(_) => anyhow::anyhow!(
                    "a stored password does not open with CREDENTIAL_ENCRYPTION_KEY (is it the current key?); nothing changed"
                ),
                other => anyhow::anyhow!(describe(&other)),
            })?;
            println!(
                "re-encrypted {n} device passwords; now set CREDENTIAL_ENCRYPTION_KEY to the new key everywhere and restart"
            );
            Ok(ExitCode::SUCCESS)
        }
        DevicesCommand::List { tenant, json } => devices_list(env, tenant, json).await,
        DevicesCommand::Add(a) => devices_add(env, a).await,
        DevicesCommand::Remove { device } => {
            let store = open_store(env).await?;
            let d = find(&store, &device).await?;
            if !store.remove_device(d.id).await.map_err(store_error)? {
                anyhow::bail!("device {} not found", d.id);
            }
            println!("removed {}", label(&d));
            Ok(ExitCode::SUCCESS)
        }
        DevicesCommand::SetCredentials {
            device,
            username,
            password_env,
        } => {
            let key = credential_key(env)?;
            let username = username
                .map(|u| inventory::parse_username(&u))
                .transpose()
                .map_err(|reason| ConfigError {
                    var: "--username".into(),
                    value: None,
                    reason,
                })?;
            let password = password_from_env(&password_env)?;
            let store = open_store(env).await?;
            let d = find(&store, &device).await?;
            store
                .set_credentials(&key, d.id, username.as_deref(), &password)
                .await
                .map_err(store_error)?;
            let lifted = d.blocked_reason.as_deref() == Some("auth_failed");
            println!(
                "credentials updated for {}{}",
                label(&d),
                if lifted {
                    "; auth_failed block lifted, due now"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        DevicesCommand::ResetHostKey { device } => {
            let store = open_store(env).await?;
            let d = find(&store, &device).await?;
            store.reset_host_key(d.id).await.map_err(store_error)?;
            let lifted = d.blocked_reason.as_deref() == Some("host_key_mismatch");
            println!(
                "host key reset for {}{}",
                label(&d),
                if lifted {
                    "; host_key_mismatch block lifted, due now"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        DevicesCommand::Unblock { device } => {
            let store = open_store(env).await?;
            let d = find(&store, &device).await?;
            store.unblock(d.id).await.map_err(store_error)?;
            println!("unblocked {}; due now", label(&d));
            Ok(ExitCode::SUCCESS)
        }
        DevicesCommand::Enable { device } => set_enabled(env, &device, true).await,
        DevicesCommand::Disable { device } => set_enabled(env, &device, false).await,
        DevicesCommand::Show { device, json } => devices_show(env, &device, json).await,
    }
}

async fn find(store: &Store, id_or_name: &str) -> anyhow::Result<Device> {
    store.find_device(id_or_name).await.map_err(store_error)
}

fn label(d: &Device) -> String {
    format!("{} ({})", d.name, d.id)
}

async fn set_enabled(env: &Env, device: &str, enabled: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    store
        .set_enabled(d.id, enabled)
        .await
        .map_err(store_error)?;
    println!(
        "{} {}",
        if enabled { "enabled" } else { "disabled" },
        label(&d)
    );
    Ok(ExitCode::SUCCESS)
}

async fn devices_import(env: &Env, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    database_url(env)?;
    let key = credential_key(env)?;
    let schedule = schedule_settings(env)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let rows = inventory::parse_inventory_rows(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing imported", file.display()))?;
    let store = open_store(env).await?;
    let devices: Vec<NewDevice> = rows.iter().map(|r| r.device.clone()).collect();
    let mut rng = rand::thread_rng();
    let result = store
        .upsert_devices(&key, &devices, || schedule.first_due(Utc::now(), &mut rng))
        .await;
    let count = match result {
        Ok(c) => c,
        Err(e) => {
            let at = match conflict_line(&store, &rows, &e).await {
                Some(line) => format!("line {line}: "),
                None => String::new(),
            };
            anyhow::bail!(
                "{}: {at}{:#}; nothing imported",
                file.display(),
                store_error(e)
            );
        }
    };
    println!(
        "imported {} devices ({} new, {} updated)",
        count.inserted + count.updated,
        count.inserted,
        count.updated
    );
    Ok(ExitCode::SUCCESS)
}

/// The database refused the import: find the row it was about, if it can be told.
async fn conflict_line(store: &Store, rows: &[InventoryRow], e: &StoreError) -> Option<u64> {
    match e {
        // "device <id> already exists in another tenant"
        StoreError::Invalid(msg) => rows
            .iter()
            .find(|r| msg.contains(&r.device.id.to_string()))
            .map(|r| r.line),
        // (tenant_id, name) is taken by another device already in the store.
        StoreError::Db(sqlx::Error::Database(d))
            if d.constraint() == Some("devices_tenant_name") =>
        {
            let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.device.id).collect();
            let tenants: Vec<uuid::Uuid> = rows.iter().map(|r| r.device.tenant_id).collect();
            let names: Vec<String> = rows.iter().map(|r| r.device.name.clone()).collect();
            let ord: Option<i64> = sqlx::query_scalar(
                "SELECT n.ord FROM unnest($1::uuid[], $2::uuid[], $3::text[]) \
                 WITH ORDINALITY AS n(id, tenant_id, name, ord) \
                 JOIN devices d ON d.tenant_id = n.tenant_id AND d.name = n.name AND d.id <> n.id \
                 ORDER BY n.ord LIMIT 1",
            )
            .bind(&ids)
            .bind(&tenants)
            .bind(&names)
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten();
            let index = usize::try_from(ord?).ok()?.checked_sub(1)?;
            rows.get(index).map(|r| r.line)
        }
        _ => None,
    }
}

/// The flag `devices add` takes for an inventory column.
fn flag_for(column: &str, password_env: &str) -> String {
    match column {
        inventory::ID => "--id".into(),
        inventory::TENANT_ID => "--tenant".into(),
        inventory::NAME => "--name".into(),
        inventory::HOST => "--host".into(),
        inventory::PORT => "--port".into(),
        inventory::USERNAME => "--username".into(),
        inventory::PASSWORD => password_env.into(),
        inventory::ROUTEROS_VERSION => "--routeros-version".into(),
        inventory::BACKUP_INTERVAL_SECONDS => "--interval".into(),
        inventory::BACKUP_CRON => "--cron".into(),
        other => other.into(),
    }
}

async fn devices_add(env: &Env, a: AddArgs) -> anyhow::Result<ExitCode> {
    database_url(env)?;
    let key = credential_key(env)?;
    let schedule = schedule_settings(env)?;
    let password = password_from_env(&a.password_env)?;
    let id = a.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let tenant = a.tenant.unwrap_or_else(|| uuid::Uuid::nil().to_string());
    let fields = DeviceFields {
        id: &id,
        tenant_id: &tenant,
        name: &a.name,
        host: &a.host,
        port: &a.port,
        username: &a.username,
        password: password.expose(),
        routeros_version: a.routeros_version.as_deref().unwrap_or(""),
        enabled: Some(if a.disabled { "false" } else { "true" }),
        backup_interval_seconds: a.interval.as_deref(),
        backup_cron: a.cron.as_deref(),
    };
    let device = fields
        .validate()
        .map_err(|FieldError { column, reason }| ConfigError {
            var: flag_for(column, &a.password_env),
            value: None,
            reason,
        })?;
    let store = open_store(env).await?;
    if let Some(existing) = store.device(device.id).await.map_err(store_error)? {
        anyhow::bail!(
            "device {} already exists (named {:?}); use `devices import` to update it",
            device.id,
            existing.name
        );
    }
    let mut rng = rand::thread_rng();
    let result = store
        .upsert_devices(&key, std::slice::from_ref(&device), || {
            schedule.first_due(Utc::now(), &mut rng)
        })
        .await;
    match result {
        Ok(_) => {}
        Err(StoreError::Db(sqlx::Error::Database(d)))
            if d.constraint() == Some("devices_tenant_name") =>
        {
            anyhow::bail!(
                "tenant {} already has a device named {:?}",
                device.tenant_id,
                device.name
            );
        }
        Err(e) => return Err(store_error(e)),
    }
    println!("{}", device.id);
    Ok(ExitCode::SUCCESS)
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// A device as JSON: every column of the store except the sealed password (which is not
/// even read) and the lease token.
fn device_json(d: &Device) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "tenant_id": d.tenant_id,
        "name": d.name,
        "host": d.host,
        "ssh_port": d.ssh_port,
        "username": d.username,
        "ssh_host_key_fingerprint": d.ssh_host_key_fingerprint,
        "routeros_version": d.routeros_version,
        "enabled": d.enabled,
        "backup_interval_seconds": d.backup_interval_seconds,
        "backup_cron": d.backup_cron,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "next_due_at": d.next_due_at,
        "last_attempt_at": d.last_attempt_at,
        "last_success_at": d.last_success_at,
        "last_status": d.last_status,
        "last_error_kind": d.last_error_kind,
        "last_error_message": d.last_error_message,
        "consecutive_failures": d.consecutive_failures,
        "backoff_until": d.backoff_until,
        "blocked_reason": d.blocked_reason,
        "blocked_at": d.blocked_at,
        "last_sha256": d.last_sha256,
        "last_bytes": d.last_bytes,
        "outstanding_job": d.outstanding_job,
        "outstanding_since": d.outstanding_since,
        "lease_job": d.lease_job,
        "lease_worker": d.lease_worker,
        "lease_expires_at": d.lease_expires_at,
        "lease_starts": d.lease_starts,
    })
}

/// Rows of text as aligned columns (the last column is not padded).
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

async fn devices_list(
    env: &Env,
    tenant: Option<uuid::Uuid>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let devices = store
        .list_devices(&DeviceFilter {
            tenant_id: tenant,
            ..DeviceFilter::default()
        })
        .await
        .map_err(store_error)?;
    if json {
        let all: Vec<serde_json::Value> = devices.iter().map(device_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                host_port(d),
                if d.enabled { "yes" } else { "no" }.into(),
                d.last_status.clone().unwrap_or_else(|| "never".into()),
                time(d.last_success_at),
                time(Some(d.next_due_at)),
                d.last_error_kind.clone().unwrap_or_else(|| "-".into()),
                d.blocked_reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "HOST:PORT",
            "ENABLED",
            "STATUS",
            "LAST SUCCESS",
            "NEXT DUE",
            "LAST ERROR",
            "BLOCKED",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn host_port(d: &Device) -> String {
    if d.host.contains(':') {
        format!("[{}]:{}", d.host, d.ssh_port)
    } else {
        format!("{}:{}", d.host, d.ssh_port)
    }
}

async fn devices_show(env: &Env, device: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let d = find(&store, device).await?;
    let runs = store.runs(d.id, 20).await.map_err(store_error)?;
    if json {
        let mut v = device_json(&d);
        v["runs"] = serde_json::to_value(&runs)?;
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let schedule = match (&d.backup_cron, d.backup_interval_seconds) {
        (Some(c), _) => format!("cron {c:?}"),
        (None, Some(s)) => format!("every {s} s"),
        (None, None) => "fleet schedule".into(),
    };
    let fields: Vec<(&str, String)> = vec![
        ("id", d.id.to_string()),
        ("tenant", d.tenant_id.to_string()),
        ("name", d.name.clone()),
        ("host", host_port(&d)),
        ("username", d.username.clone()),
        ("enabled", if d.enabled { "yes" } else { "no" }.into()),
        ("routeros", opt(&d.routeros_version)),
        ("schedule", schedule),
        (
            "host key",
            d.ssh_host_key_fingerprint
                .clone()
                .unwrap_or_else(|| "not pinned (trusted on first use)".into()),
        ),
        (
            "status",
            d.last_status.clone().unwrap_or_else(|| "never".into()),
        ),
        ("last attempt", time(d.last_attempt_at)),
        ("last success", time(d.last_success_at)),
        (
            "last error",
            match (&d.last_error_kind, &d.last_error_message) {
                (Some(k), Some(m)) => format!("{k}: {m}"),
                (Some(k), None) => k.clone(),
                _ => "-".into(),
            },
        ),
        ("failures", d.consecutive_failures.to_string()),
        ("backoff until", time(d.backoff_until)),
        (
            "blocked",
            match &d.blocked_reason {
                Some(r) => format!("{r} since {}", time(d.blocked_at)),
                None => "no".into(),
            },
        ),
        ("next due", time(Some(d.next_due_at))),
        (
            "last backup",
            match (&d.last_sha256, d.last_bytes) {
                (Some(h), Some(b)) => format!("{h} ({b} bytes)"),
                (Some(h), None) => h.clone(),
                _ => "-".into(),
            },
        ),
        (
            "outstanding",
            match &d.outstanding_job {
                Some(j) => format!("{j} since {}", time(d.outstanding_since)),
                None => "-".into(),
            },
        ),
        (
            "lease",
            match &d.lease_job {
                Some(j) => format!(
                    "{j} by {} until {}",
                    opt(&d.lease_worker),
                    time(d.lease_expires_at)
                ),
                None => "-".into(),
            },
        ),
        ("created", time(Some(d.created_at))),
        ("updated", time(Some(d.updated_at))),
    ];
    for (k, v) in fields {
        println!("{k:<14}{v}");
    }
    println!();
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!("last {} runs, newest first:", runs.len());
    let rows: Vec<Vec<String>> = runs.iter().map(run_row).collect();
    print_table(
        &[
            "STARTED", "STATUS", "TRIGGER", "MS", "BYTES", "ERROR", "WORKER",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn run_row(r: &Run) -> Vec<String> {
    vec![
        time(Some(r.started_at)),
        r.status.clone(),
        r.trigger.clone(),
        r.duration_ms.to_string(),
        r.bytes.map_or_else(|| "-".into(), |b| b.to_string()),
        r.error_kind.clone().unwrap_or_else(|| "-".into()),
        r.worker.clone(),
    ]
}

/// `rosbackup history`: a device's versions, a diff, or one version's text.
async fn history_cmd(
    env: &Env,
    device: String,
    diff: Option<Vec<i64>>,
    text: Option<i64>,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use rosbackup::archive::History;
    let key = rosbackup::config::archive_key(env)?;
    let store = open_store(env).await?;
    // A removed device keeps its history: accept its id even when it is not in `devices`.
    let device_id = match store.find_device(&device).await {
        Ok(d) => d.id,
        Err(StoreError::NotFound(id)) => id,
        Err(e) => return Err(store_error(e)),
    };
    let history = History::new(store, key);
    let not_found = |id: i64| anyhow::anyhow!("version {id} of device {device_id} not found");
    let mine = |v: &Option<rosbackup::archive::VersionInfo>| {
        v.as_ref().is_some_and(|v| v.device_id == device_id)
    };
    if let Some(ids) = diff {
        let (a, b) = (ids[0], ids[1]);
        for id in [a, b] {
            if !mine(&history.version(id, None).await?) {
                return Err(not_found(id));
            }
        }
        let d = history
            .diff(a, b, None)
            .await?
            .ok_or_else(|| not_found(a))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            println!("# menus: {}", d.menus.join(", "));
            println!("# lines: +{} -{}", d.added, d.removed);
            print!("{}", d.unified);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = text {
        if !mine(&history.version(id, None).await?) {
            return Err(not_found(id));
        }
        let bytes = history
            .text_bytes(id, None)
            .await?
            .ok_or_else(|| not_found(id))?;
        std::io::stdout().write_all(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let versions = history.versions(device_id, None, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        println!("no archived versions for {device_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.id.to_string(),
                time(Some(v.first_seen_at)),
                time(Some(v.last_seen_at)),
                v.seen_count.to_string(),
                v.sha256.get(..12).unwrap_or(&v.sha256).to_string(),
                v.size.to_string(),
                v.routeros_version.clone().unwrap_or_default(),
                v.previous_version_id
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                if v.previous_version_id.is_some() {
                    format!(
                        "+{} -{} {}",
                        v.added_lines,
                        v.removed_lines,
                        v.changed_menus.join(", ")
                    )
                } else {
                    "first version".to_string()
                },
            ]
        })
        .collect();
    print_table(
        &[
            "VERSION",
            "FIRST SEEN",
            "LAST SEEN",
            "SEEN",
            "SHA256",
            "BYTES",
            "ROUTEROS",
            "PREV",
            "CHANGES",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
