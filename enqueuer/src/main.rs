//! `rosbackup-enqueuer`: turns the device list into delayed backup jobs and serves the
//! dashboard and API.
//!
//! Scheduling, the bounded Redis queue and the HTTP server arrive with the fleet work
//! (issue #3) and the dashboard (issue #4). Until then this binary only validates its
//! configuration.

use rosbackup::config::{BackupSettings, ConfigError, Env};
use std::process::ExitCode;

fn check(env: &Env) -> Result<(), ConfigError> {
    BackupSettings::from_env(env).map(|_| ())
}

fn main() -> ExitCode {
    let env = Env::from_process();
    if let Err(e) = check(&env) {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    eprintln!("rosbackup-enqueuer: scheduling is part of the fleet release (issue #3)");
    ExitCode::from(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configuration_is_rejected_naming_the_variable() {
        let env = Env::from_pairs([("NORMALIZATION_VERSION", "7")]);
        assert_eq!(check(&env).unwrap_err().var, "NORMALIZATION_VERSION");
        assert!(check(&Env::from_pairs([])).is_ok());
    }
}
