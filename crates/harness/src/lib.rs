//! The harness that runs rosbackup on a simulated fleet: for people (`rosbackup demo`),
//! for the long run (`rosbackup soak`), and for the integration tests and benchmarks.
//!
//! It lives outside the product crates on purpose: starting private PostgreSQL, Redis and
//! NATS servers and killing workers is what a test or a demo does, never what a deployment
//! does. Only the `rosbackup` CLI (for its `demo` and `soak` commands), the tests and the
//! bench depend on it; nothing in `rosbackup-core`, `-web` or `-archive` may.

pub mod demo;
pub mod services;
pub mod soak;
