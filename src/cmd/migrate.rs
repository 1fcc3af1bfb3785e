//! `rosbackup migrate`: create or upgrade the device store's schema.
//!
//! A command of its own rather than a side effect of starting a service: the schema
//! changes once, deliberately, before the services of the new version start (compose runs
//! it as a one-shot `migrate` service the others wait for). It is idempotent, so a
//! deployment can run it on every start; the migrations are embedded in the binary.
//!
//! On a fresh PostgreSQL the database in `DATABASE_URL` usually does not exist yet; rather
//! than leave a first-time user with "database … does not exist", `migrate` creates it
//! (through the server's `postgres` database, with the same credentials) and says so. A
//! role that may not create databases gets PostgreSQL's refusal and the SQL to run instead.

use super::shared::{database_url, open_store, shown_url};
use crate::config::Env;
use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use std::process::ExitCode;
use std::str::FromStr;

/// Apply every pending migration (`DATABASE_URL`), creating the database if missing.
pub async fn run(env: &Env) -> anyhow::Result<ExitCode> {
    let url = database_url(env)?;
    if let Some(created) = create_if_missing(&url).await? {
        println!("created database {created}");
    }
    let store = open_store(env).await?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

/// Create the URL's database when the server says it does not exist; its name if created.
async fn create_if_missing(url: &str) -> anyhow::Result<Option<String>> {
    let Ok(opts) = PgConnectOptions::from_str(url) else {
        return Ok(None); // open_store reports a malformed URL
    };
    let opts = opts.disable_statement_logging();
    match opts.connect().await {
        Ok(c) => {
            let _ = sqlx::Connection::close(c).await;
            return Ok(None);
        }
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("3D000") => {}
        Err(_) => return Ok(None), // open_store reports it, in its words
    }
    let Some(name) = opts.get_database().map(str::to_string) else {
        return Ok(None);
    };
    let admin = opts.clone().database("postgres");
    let mut conn = admin.connect().await.with_context(|| {
        format!(
            "database {name:?} does not exist, and the server's postgres database to create it from is not reachable ({})",
            shown_url(url)
        )
    })?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "database {name:?} does not exist and could not be created ({}); as a PostgreSQL superuser run: {sql}; then `rosbackup migrate` again",
                match &e {
                    sqlx::Error::Database(d) => d.message().to_string(),
                    other => other.to_string(),
                }
            )
        })?;
    let _ = sqlx::Connection::close(conn).await;
    Ok(Some(name))
}
