//! `rosbackup-worker`: pulls backup jobs from Redis and runs them.
//!
//! The job queue (apalis-redis), per-job device leases and outcome recording arrive with
//! the fleet work (issue #3). Until then this binary validates its configuration and
//! points operators at `rosbackup export`, which already runs the exact per-job pipeline.

use rosbackup::config::{BackupSettings, ConfigError, Env, publisher_config};
use std::process::ExitCode;

/// Everything the worker will need from the environment, validated up front.
fn check(env: &Env) -> Result<(), ConfigError> {
    BackupSettings::from_env(env)?;
    publisher_config(env)?;
    Ok(())
}

fn main() -> ExitCode {
    let env = Env::from_process();
    if let Err(e) = check(&env) {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    eprintln!(
        "rosbackup-worker: the job-queue worker is part of the fleet release (issue #3); \
         use `rosbackup export` for one-off backups"
    );
    ExitCode::from(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configuration_is_rejected_naming_the_variable() {
        let env = Env::from_pairs([("CONFIG_BACKUP_COMMAND_TIMEOUT", "x")]);
        assert_eq!(
            check(&env).unwrap_err().var,
            "CONFIG_BACKUP_COMMAND_TIMEOUT"
        );
        let env = Env::from_pairs([("NATS_URL", "localhost")]);
        assert_eq!(check(&env).unwrap_err().var, "NATS_URL");
        assert!(check(&Env::from_pairs([])).is_ok());
    }
}
