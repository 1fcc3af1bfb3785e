//! `rosbackup-worker`: pulls backup jobs from Redis and runs them.
//!
//! The job queue (apalis-redis), per-job device leases and outcome recording arrive with
//! the fleet work (issue #3). Until then this binary validates its configuration and
//! points operators at `rosbackup export`, which already runs the exact per-job pipeline.

use rosbackup::config::{BackupSettings, Env, publisher_config};
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = Env::from_process();
    if let Err(e) = BackupSettings::from_env(&env).and_then(|_| publisher_config(&env).map(|_| ()))
    {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    eprintln!(
        "rosbackup-worker: the job-queue worker is part of the fleet release (issue #3); \
         use `rosbackup export` for one-off backups"
    );
    ExitCode::from(64)
}
