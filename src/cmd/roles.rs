//! `rosbackup worker`, `enqueuer` and `archiver`: the services, from the CLI's binary.
//!
//! The same `service::run_role` as `rosbackup-worker`, `rosbackup-enqueuer` and
//! `rosbackup-archiver`, so that one container image with the one `rosbackup` entrypoint
//! runs every role (compose picks it with `command: ["worker"]`) next to the tools a
//! deployment needs around them (`migrate`, `tokens`, `probe`). The exit code is the
//! service's: 2 for bad configuration, 1 for a failure a supervisor should restart, 0
//! after a graceful stop.

use crate::config::Env;
use crate::service::{self, Flags, Role};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct EnqueuerArgs {
    /// Serve the dashboard and API without authentication: anyone who reaches the
    /// port is an admin. Without it, the enqueuer refuses to start until a token exists.
    #[arg(long)]
    insecure_no_auth: bool,
}

/// Run a worker until SIGTERM/SIGINT.
pub async fn worker(env: &Env) -> anyhow::Result<ExitCode> {
    run(env, Role::Worker, Flags::default()).await
}

/// Run an enqueuer (scheduling, the dashboard and the API) until SIGTERM/SIGINT.
pub async fn enqueuer(env: &Env, a: EnqueuerArgs) -> anyhow::Result<ExitCode> {
    let flags = Flags {
        insecure_no_auth: a.insecure_no_auth,
    };
    run(env, Role::Enqueuer, flags).await
}

/// Run an archiver until SIGTERM/SIGINT.
pub async fn archiver(env: &Env) -> anyhow::Result<ExitCode> {
    run(env, Role::Archiver, Flags::default()).await
}

async fn run(env: &Env, role: Role, flags: Flags) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(service::run_role(env, role, flags).await))
}
