//! `rosbackup-worker`: pulls backup jobs from Redis and runs them.
//!
//! Thin binary over `rosbackup::service`: configuration errors exit 2, a failure to
//! connect or a worker that breaks exits 1 (so a supervisor restarts it), SIGTERM/SIGINT
//! stop gracefully and exit 0.

use std::process::ExitCode;

fn main() -> ExitCode {
    rosbackup::service::main(rosbackup::service::Role::Worker)
}
