//! rosbackup: back up the configuration of MikroTik RouterOS fleets over SSH.
//!
//! The library holds every piece of the pipeline; `rosbackup` (CLI), `rosbackup-worker`,
//! `rosbackup-enqueuer` and `rosbackup-archiver` are thin binaries over it. See
//! `ARCHITECTURE.md` for the map.

pub mod access;
pub mod archive;
pub mod backup;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod device;
pub mod enqueuer;
pub mod error;
pub mod http;
pub mod inventory;
pub mod manual;
pub mod metrics;
pub mod normalize;
pub mod observability;
pub mod queue;
pub mod report;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod sim;
pub mod snapshot;
pub mod snapshot_crypto;
pub mod store;
pub mod tls;
pub mod web;
pub mod worker;

pub use error::ErrorKind;
pub use secret::Secret;
