//! `rosbackup-enqueuer`: turns the device list into delayed backup jobs and serves the
//! dashboard and API.
//!
//! Scheduling, the bounded Redis queue and the HTTP server arrive with the fleet work
//! (issue #3) and the dashboard (issue #4). Until then this binary only validates its
//! configuration.

use rosbackup::config::{BackupSettings, Env};
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = Env::from_process();
    if let Err(e) = BackupSettings::from_env(&env) {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    eprintln!("rosbackup-enqueuer: scheduling is part of the fleet release (issue #3)");
    ExitCode::from(64)
}
