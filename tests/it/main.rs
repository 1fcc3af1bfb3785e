//! rosbackup's integration tests, in one binary: one module per surface, sharing
//! `common`. One binary links the product once instead of once per file (see
//! ARCHITECTURE.md, "Tests"); `cargo test --test it <module>::` runs one surface.

mod common;

mod api_schema;
mod archive;
mod bastion_fleet;
mod binary_backup;
mod cli;
mod credential_profiles;
mod demo;
mod deploy;
mod device_garbage;
mod devices_cli;
mod export_timeouts;
mod failfast;
mod fleet;
mod fleet_faults;
mod fleet_network;
mod fleet_resilience;
mod fuzz_corpus;
mod group_commit;
mod grouped_leases;
mod lanes;
mod layout;
mod manual_bound;
mod nats_auth;
mod nats_snapshot;
mod normalize_exports;
mod queue_jobs;
mod redis_loss;
mod secrets;
mod sim;
mod sim_cli;
mod sim_faults;
mod sim_shell;
mod snapshot_encryption;
mod soak;
mod ssh_keys;
mod sshd_binary;
mod sshd_export;
mod statement_counts;
mod tls;
mod tod_compat;
mod tod_sync;
mod web_api;
mod web_browser;
mod web_history;
