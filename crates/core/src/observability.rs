//! Logging setup shared by the binaries: `tracing` with JSON lines by default.
//!
//! Spans carry `device_id` and `job_id`; messages never carry passwords or config text
//! (passwords are [`crate::Secret`], config bytes are only ever counted or hashed).

use crate::config::{ConfigError, Env};
use tracing_subscriber::EnvFilter;

/// Install the global subscriber from `LOG_LEVEL` / `LOG_FORMAT`. Logs go to stderr so
/// stdout stays machine-readable for the CLI.
pub fn init_tracing(env: &Env) -> Result<(), ConfigError> {
    let level = env.raw("LOG_LEVEL");
    let filter = EnvFilter::try_new(&level).map_err(|e| ConfigError {
        var: "LOG_LEVEL".into(),
        value: Some(level.clone()),
        reason: e.to_string(),
    })?;
    let format = env.raw("LOG_FORMAT");
    // Colours only on a terminal: log files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format.as_str() {
        "json" => builder.json().with_current_span(true).try_init(),
        "text" => builder.try_init(),
        _ => {
            return Err(ConfigError {
                var: "LOG_FORMAT".into(),
                value: Some(format),
                reason: "expected json or text".into(),
            });
        }
    };
    // A second init (tests) is harmless.
    let _ = result;
    Ok(())
}
