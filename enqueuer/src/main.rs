//! `rosbackup-enqueuer`: schedules due devices as jobs, answers manual backup requests,
//! serves the HTTP endpoints.
//!
//! Thin binary over `rosbackup::service`: configuration errors exit 2, a failure to
//! connect exits 1, SIGTERM/SIGINT stop it and exit 0. Safe to run several at once.

use rosbackup::config::Env;
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = Env::from_process();
    if let Err(e) = rosbackup::observability::init_tracing(&env) {
        eprintln!("configuration error: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        let process = match rosbackup::service::enqueuer_from_env(&env).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("rosbackup-enqueuer: {e}");
                return ExitCode::from(e.exit_code());
            }
        };
        match process.run(rosbackup::service::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rosbackup-enqueuer: {e}");
                ExitCode::from(1)
            }
        }
    })
}
