//! The `rosbackup` CLI's commands, one module per command group (in the manner of
//! mini-redis's `cmd/`).
//!
//! Each module holds a command's clap arguments next to the code that runs it, and
//! returns the exit code it wants, or an error for `main` to tell: a bad configuration
//! value exits 2, anything else 1. The binary (`src/bin/rosbackup.rs`) only parses the
//! command line, sets up logging and dispatches here, so the commands can be read (and
//! reached from tests) one at a time. The commands call the library: none of them holds
//! logic a service needs too. `shared` has what several of them use (opening the store
//! with errors an operator can act on, tables, times).

pub mod bastions;
pub mod credentials;
pub mod demo;
pub mod devices;
pub mod enqueue;
pub mod export;
pub mod history;
pub mod migrate;
pub mod normalize;
pub mod probe;
pub mod roles;
pub mod tenants;
pub mod tokens;

mod shared;
