//! `rosbackup migrate`: create or upgrade the device store's schema.
//!
//! A command of its own rather than a side effect of starting a service: the schema
//! changes once, deliberately, before the services of the new version start (compose runs
//! it as a one-shot `migrate` service the others wait for). It is idempotent, so a
//! deployment can run it on every start; the migrations are embedded in the binary.

use super::shared::open_store;
use crate::config::Env;
use anyhow::Context;
use std::process::ExitCode;

/// Apply every pending migration (`DATABASE_URL`).
pub async fn run(env: &Env) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}
