//! The API against its own OpenAPI document, fuzzed by schemathesis (PyPI): no 500s, no
//! undocumented status codes, no response that violates its schema, auth never ignored,
//! deleted things stay deleted. `.ci/run` installs schemathesis into its build directory
//! and sets `SCHEMATHESIS` to it; without the variable, `target/schemathesis-venv`.
//!
//! Two checks are left out on purpose: `positive_data_acceptance` and
//! `negative_data_rejection` compare the schema's constraints with our validation, and
//! the schema cannot say "an IP address or a DNS hostname" exactly; validation itself is
//! tested field by field in `tests/web_api.rs`.

use crate::common::fleet::Fleet;
use crate::common::web::{router_with, token};
use rosbackup::access::Role;
use rosbackup::web::AuthMode;
use std::path::PathBuf;
use std::time::Duration;

fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SCHEMATHESIS") {
        return Some(PathBuf::from(p));
    }
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis-venv/bin/schemathesis");
    p.is_file().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let Some(st) = schemathesis() else {
        if crate::common::in_ci() {
            panic!(
                "schemathesis is not installed: .ci/run installs it (SCHEMATHESIS), or target/schemathesis-venv"
            );
        }
        eprintln!("skipped: schemathesis not installed (run .ci/run, or set SCHEMATHESIS)");
        return;
    };
    let fleet = Fleet::of(6).await;
    fleet.import(None).await;
    fleet.postpone_all().await;
    // A short cap, so generated `?wait=true&timeout=…` calls do not stall the run.
    let (app, _) = router_with(&fleet, AuthMode::Required, Duration::from_secs(1));
    let admin = token(&fleet, "schemathesis", Role::Admin, None).await;
    let (addr, server) = rosbackup::http::serve("127.0.0.1:0", app, std::future::pending())
        .await
        .unwrap();
    // schemathesis keeps a cache in its working directory: not in the repository.
    let scratch = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&st)
        .current_dir(scratch.path())
        .args([
            "run",
            &format!("http://{addr}/api/v1/openapi.json"),
            "-H",
            &format!("Authorization: Bearer {admin}"),
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            "20261127",
            "--no-color",
        ])
        .output()
        .await
        .expect("run schemathesis");
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // It really exercised the API (not an empty schema or a refused connection).
    assert!(stdout.contains("generated"), "{stdout}");
    assert!(!stdout.contains(" 0 generated"), "{stdout}");
    fleet.cleanup().await;
}
