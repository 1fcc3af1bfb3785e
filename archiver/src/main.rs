//! `rosbackup-archiver`: keeps the history of every device's configuration.
//!
//! A durable JetStream consumer of `config.snapshot.>` that stores a new version in
//! PostgreSQL only when a config really changed (see `rosbackup::archive`). Thin binary
//! over `rosbackup::service`: configuration errors exit 2, a failure to connect exits 1,
//! SIGTERM/SIGINT stop it after the message in hand is acked or handed back, exit 0.
//! Safe to run several at once (they share the durable consumer).

use std::process::ExitCode;

fn main() -> ExitCode {
    rosbackup::service::main(rosbackup::service::Role::Archiver)
}
