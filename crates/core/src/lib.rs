//! rosbackup's core: everything one backup needs, and the roles that schedule and run
//! backups (worker, enqueuer, manual requests), without any face.
//!
//! Dependencies run one way: this crate depends on none of the others; the simulator
//! (`rosbackup-sim`), the archive (`rosbackup-archive`), the web face (`rosbackup-web`),
//! the harness and the `rosbackup` CLI build on it. See `ARCHITECTURE.md` for the map.

pub mod access;
pub mod backup;
pub mod bastions;
pub mod binary;
pub mod config;
pub mod credentials;
pub mod device;
pub mod enqueuer;
pub mod error;
pub mod export_timeout;
pub mod http;
pub mod inventory;
pub mod jump;
pub mod lanes;
pub mod manual;
pub mod marks;
pub mod metrics;
pub mod nats_auth;
pub mod normalize;
pub mod observability;
pub mod profiles;
pub mod queue;
pub mod report;
pub mod schedule;
pub mod secret;
pub mod seed_lock;
pub mod shutdown;
pub mod snapshot;
pub mod store;
pub mod tenant;
pub mod tls;
pub mod tod;
pub mod userkey;
pub mod worker;

pub use error::ErrorKind;
pub use secret::Secret;
