//! `rosbackup-enqueuer`: schedules due devices as jobs, answers manual backup requests,
//! serves the HTTP endpoints.
//!
//! Thin binary over `rosbackup::service`: configuration errors exit 2, a failure to
//! connect exits 1, SIGTERM/SIGINT stop it and exit 0. Safe to run several at once.

use std::process::ExitCode;

fn main() -> ExitCode {
    rosbackup::service::main(rosbackup::service::Role::Enqueuer)
}
