//! Logging setup shared by the binaries: `tracing`, as text for a person at a terminal
//! and as JSON lines for everything else (containers, log shippers, files).
//!
//! Spans carry `device_id` and `job_id`; messages never carry passwords or config text
//! (passwords are [`crate::Secret`], config bytes are only ever counted or hashed).
//! PostgreSQL's NOTICE messages (sqlx logs them at info, e.g. "relation … already exists,
//! skipping" on a second `migrate`) are server chatter, not ours: they are shown only when
//! `LOG_LEVEL` asks for `sqlx` explicitly.

use crate::config::{ConfigError, Env};
use tracing_subscriber::EnvFilter;

/// The log format for a `LOG_FORMAT` value and whether stderr is a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// `json` and `text` as asked; `auto` (the default) picks text on a terminal.
pub fn log_format(value: &str, terminal: bool) -> Option<LogFormat> {
    match value {
        "json" => Some(LogFormat::Json),
        "text" => Some(LogFormat::Text),
        "auto" | "" => Some(if terminal {
            LogFormat::Text
        } else {
            LogFormat::Json
        }),
        _ => None,
    }
}

/// The filter for a `LOG_LEVEL` value: PostgreSQL notices muted unless asked for.
pub fn log_filter(level: &str) -> Result<EnvFilter, String> {
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    if level.contains("sqlx") {
        return Ok(filter);
    }
    Ok(filter.add_directive(
        "sqlx::postgres::notice=warn"
            .parse()
            .map_err(|e: tracing_subscriber::filter::ParseError| e.to_string())?,
    ))
}

/// Install the global subscriber from `LOG_LEVEL` / `LOG_FORMAT`. Logs go to stderr so
/// stdout stays machine-readable for the CLI.
pub fn init_tracing(env: &Env) -> Result<(), ConfigError> {
    let level = env.raw("LOG_LEVEL");
    let filter = log_filter(&level).map_err(|reason| ConfigError {
        var: "LOG_LEVEL".into(),
        value: Some(level.clone()),
        reason,
    })?;
    let value = env.raw("LOG_FORMAT");
    // Colours only on a terminal: log files and pipes get plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = log_format(&value, terminal).ok_or_else(|| ConfigError {
        var: "LOG_FORMAT".into(),
        value: Some(value.clone()),
        reason: "expected json, text or auto".into(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) is harmless.
    let _ = result;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_on_a_terminal_and_json_elsewhere() {
        assert_eq!(log_format("auto", true), Some(LogFormat::Text));
        assert_eq!(log_format("auto", false), Some(LogFormat::Json));
        assert_eq!(log_format("json", true), Some(LogFormat::Json));
        assert_eq!(log_format("text", false), Some(LogFormat::Text));
        assert_eq!(log_format("yaml", true), None);
    }

    #[test]
    fn postgres_notices_are_muted_unless_asked_for() {
        let f = log_filter("info").unwrap().to_string();
        assert!(f.contains("sqlx::postgres::notice=warn"), "{f}");
        let f = log_filter("info,sqlx=debug").unwrap().to_string();
        assert!(!f.contains("notice"), "{f}");
        assert!(log_filter("info,[").is_err());
    }
}
