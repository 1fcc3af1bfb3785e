//! `rosbackup`: the operator's command line. Thin: it parses the command line, sets up
//! logging and dispatches to the command's module in `rosbackup::cmd`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use rosbackup::cmd::{
    bastions, credentials, demo, devices, enqueue, export, history, migrate, normalize, probe,
    roles, tenants, tokens,
};
use rosbackup::config::{ConfigError, Env};
use rosbackup::credentials::CredentialError;
use rosbackup::sim;
use std::process::ExitCode;

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

#[derive(Subcommand)]
enum Command {
    /// Normalize an export (stdin when no file); normalized bytes on stdout.
    Normalize(normalize::NormalizeArgs),
    /// SHA-256 of the normalized export: 64 lowercase hex digits and a newline.
    Hash(normalize::NormalizeArgs),
    /// One export from one device, with exactly the worker's code path.
    Export(export::ExportArgs),
    /// Run a simulated fleet of RouterOS devices.
    Sim(sim::SimArgs),
    /// Apply the device store's database migrations (DATABASE_URL).
    Migrate,
    /// Manage the devices in the device store (DATABASE_URL).
    Devices {
        #[command(subcommand)]
        command: devices::DevicesCommand,
    },
    /// Manage credential profiles: credentials many devices share (DATABASE_URL,
    /// CREDENTIAL_ENCRYPTION_KEY).
    Credentials {
        #[command(subcommand)]
        command: credentials::CredentialsCommand,
    },
    /// Queue a manual backup of one device (DATABASE_URL, REDIS_URL).
    Enqueue(enqueue::EnqueueArgs),
    /// Run a worker (the same as `rosbackup-worker`).
    #[command(
        after_help = "Configured by the environment, not flags: DATABASE_URL, REDIS_URL, \
        NATS_URL, CREDENTIAL_ENCRYPTION_KEY, CONFIG_BACKUP_* (concurrency, timeouts, \
        schedule), ROSBACKUP_METRICS_ADDR (default 127.0.0.1:9091; port 0 for a second \
        worker on the host) and the other ROSBACKUP_* settings: README, Configuration."
    )]
    Worker,
    /// Run an enqueuer (the same as `rosbackup-enqueuer`): scheduling, the dashboard and
    /// the API on ROSBACKUP_HTTP_ADDR.
    #[command(
        after_help = "Configured by the environment besides this flag: DATABASE_URL, \
        REDIS_URL, NATS_URL, CREDENTIAL_ENCRYPTION_KEY, ARCHIVE_ENCRYPTION_KEY (history \
        pages), CONFIG_BACKUP_* (schedule), ROSBACKUP_HTTP_ADDR (default 127.0.0.1:8080) and \
        the other ROSBACKUP_* settings: README, Configuration."
    )]
    Enqueuer(roles::EnqueuerArgs),
    /// The whole product on a simulated fleet: services, simulator, enqueuer, workers,
    /// dashboard. Uses PostgreSQL/Redis/NATS at their URLs or starts private ones.
    Demo(demo::DemoArgs),
    /// A long run under abuse (worker kills, a Redis restart), then an audit of the
    /// simulator's sessions, the run history and the NATS messages. Exit 0 when every
    /// check held, 1 otherwise.
    Soak(demo::SoakArgs),
    /// Health-check an HTTP endpoint (for container health checks: no curl needed).
    /// Exits 0 on a 2xx answer, 1 otherwise.
    Probe(probe::ProbeArgs),
    /// Run an archiver (the same as `rosbackup-archiver`): keeps the config history of
    /// every device from the snapshots on NATS.
    #[command(
        after_help = "Configured by the environment, not flags: DATABASE_URL, NATS_URL, \
        ARCHIVE_ENCRYPTION_KEY, ARCHIVE_* (consumer, retention, git output, webhook) and \
        ROSBACKUP_SUBJECT_PREFIX / ROSBACKUP_NATS_STREAM: README, Configuration."
    )]
    Archiver,
    /// A device's config history: its versions, or the diff between two of them
    /// (DATABASE_URL, ARCHIVE_ENCRYPTION_KEY; --binaries needs neither key,
    /// --download-binary CREDENTIAL_ENCRYPTION_KEY).
    History(history::HistoryArgs),
    /// Name tenants, list them with their device counts (DATABASE_URL).
    Tenants {
        #[command(subcommand)]
        command: tenants::TenantsCommand,
    },
    /// Jump hosts' pinned keys: list them, reset one after its key changed (DATABASE_URL).
    Bastions {
        #[command(subcommand)]
        command: bastions::BastionsCommand,
    },
    /// Manage API tokens for the dashboard and the API (DATABASE_URL).
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Devices { .. }
            | Command::Credentials { .. }
            | Command::Tenants { .. }
            | Command::Bastions { .. }
            | Command::Tokens { .. }
            | Command::History(_)
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
    // Only the long-running roles log at `info` by default. Every other command talks to
    // a person (or a script reading its output): its own lines say what happened, and its
    // logs stay at warnings unless LOG_LEVEL asks for more.
    let format = if env.is_set("LOG_FORMAT") {
        env.raw("LOG_FORMAT")
    } else if matches!(cli.command, Command::Demo(_) | Command::Soak(_)) {
        "text".to_string()
    } else {
        "auto".to_string()
    };
    let quiet = Env::from_pairs([("LOG_LEVEL", "warn"), ("LOG_FORMAT", format.as_str())]);
    let long_running = matches!(
        cli.command,
        Command::Worker | Command::Enqueuer(_) | Command::Archiver | Command::Sim(_)
    );
    let log_env = if !long_running && !env.is_set("LOG_LEVEL") {
        &quiet
    } else {
        &env
    };
    if let Err(e) = rosbackup::observability::init_tracing(log_env) {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Normalize(a) => normalize::run(&env, a, false),
        Command::Hash(a) => normalize::run(&env, a, true),
        Command::Export(a) => block_on(export::run(env, a)),
        Command::Sim(a) => block_on(async move {
            sim::run_cli(a).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Migrate => block_on(migrate::run(&env)),
        Command::Devices { command } => block_on(devices::run(&env, command)),
        Command::Credentials { command } => block_on(credentials::run(&env, command)),
        Command::Enqueue(a) => block_on(enqueue::run(&env, a)),
        Command::Worker => block_on(roles::worker(&env)),
        Command::Enqueuer(a) => block_on(roles::enqueuer(&env, a)),
        Command::Tokens { command } => block_on(tokens::run(&env, command)),
        Command::Tenants { command } => block_on(tenants::run(&env, command)),
        Command::Bastions { command } => block_on(bastions::run(&env, command)),
        Command::Demo(a) => block_on(demo::demo(a)),
        Command::Soak(a) => block_on(demo::soak(a)),
        Command::Probe(a) => block_on(probe::run(a)),
        Command::Archiver => block_on(roles::archiver(&env)),
        Command::History(a) => block_on(history::run(&env, a)),
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

/// Run one command on a fresh multi-threaded runtime.
fn block_on(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(fut)
}
