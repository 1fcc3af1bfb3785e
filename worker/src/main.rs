//! `rosbackup-worker`: pulls backup jobs from Redis and runs them.
//!
//! Thin binary over `rosbackup::service`: configuration errors exit 2, a failure to
//! connect or a worker that breaks exits 1 (so a supervisor restarts it), SIGTERM/SIGINT
//! stop gracefully and exit 0.

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
        let process = match rosbackup::service::worker_from_env(&env).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("rosbackup-worker: {e}");
                return ExitCode::from(e.exit_code());
            }
        };
        match process.run(rosbackup::service::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rosbackup-worker: {e}");
                ExitCode::from(1)
            }
        }
    })
}
