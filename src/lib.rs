//! rosbackup: back up the configuration of MikroTik RouterOS fleets over SSH.
//!
//! This crate is the product's top: the wiring of the roles from the environment
//! (`service`, used by `rosbackup-worker`, `rosbackup-enqueuer`, `rosbackup-archiver` and
//! the CLI) and the `rosbackup` CLI's commands (`cmd`). The parts it wires live in
//! `crates/` and are re-exported here under their module names, so `rosbackup::store`
//! is `rosbackup_core::store`; see `ARCHITECTURE.md` for the map and the dependency rules.

pub use rosbackup_archive as archive;
pub use rosbackup_core::*;
pub use rosbackup_sim as sim;
pub use rosbackup_web as web;

/// The `rosbackup` CLI's commands, one module per command group (the binary dispatches).
pub mod cmd;
pub mod service;
