//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fleet;
pub mod sshd;

use std::path::PathBuf;

/// `../shared/routeros/exports`, the real exports (third-party data, read in place).
/// Outside CI a missing folder skips the calling test (returns `None` with a message);
/// under `CI=true` it fails the test.
pub fn shared_exports() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/routeros/exports");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{} is missing, and CI=true requires it", dir.display());
    }
    eprintln!("skipping: {} not found", dir.display());
    None
}

/// NATS for tests: `NATS_URL` or the local server.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A name unique to this test run, usable as a NATS token, stream or bucket name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
