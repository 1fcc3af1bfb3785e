//! `devices sync --from-tod URL`: the device store made to agree with a the-other-dude
//! backend's database, once (the enqueuer repeats it with `ROSBACKUP_TOD_DATABASE_URL`).
//!
//! The work is `rosbackup_core::tod::sync`; this is its face: one summary line, then
//! every device that was not synced with its reason, so the operator sees at once which
//! routers still need OpenBao or a fixed row, and notes (a write-back that failed,
//! removals held back). Never a credential, and the URL only without its password. A
//! key that opens nothing is a configuration error naming `CREDENTIAL_ENCRYPTION_KEY`.

use super::credential_key;
use crate::cmd::shared::{open_store, shown_url, store_error};
use crate::config::{ConfigError, Env, schedule_settings};
use crate::tod::{self, SyncError, SyncOptions};
use std::process::ExitCode;

/// The variable the enqueuer syncs from, and the URL `--from-tod` defaults to.
pub(super) const URL_VAR: &str = "ROSBACKUP_TOD_DATABASE_URL";

#[derive(clap::Args)]
pub struct SyncArgs {
    /// PostgreSQL URL of the the-other-dude backend's database (default:
    /// ROSBACKUP_TOD_DATABASE_URL, which keeps a password off the command line).
    #[arg(long = "from-tod", value_name = "URL")]
    from_tod: Option<String>,
    /// Also delete the config history of devices removed because they were deleted
    /// upstream (by default it is kept, readable by device id).
    #[arg(long)]
    drop_history: bool,
}

/// The upstream URL from the flag or the environment, checked.
fn upstream_url(env: &Env, flag: Option<String>) -> Result<String, ConfigError> {
    let (name, url) = match flag {
        Some(u) => ("--from-tod".to_string(), u),
        None if env.is_set(URL_VAR) => (URL_VAR.to_string(), env.raw(URL_VAR)),
        None => {
            return Err(ConfigError {
                var: "--from-tod".into(),
                value: None,
                reason: format!("give the backend's database URL, or set {URL_VAR}"),
            });
        }
    };
    if ["postgres://", "postgresql://"]
        .iter()
        .any(|s| url.starts_with(s) && url.len() > s.len())
    {
        Ok(url)
    } else {
        Err(ConfigError {
            var: name,
            value: Some(shown_url(&url)),
            reason: "expected a URL starting with postgres:// or postgresql://".into(),
        })
    }
}

pub(super) async fn run(env: &Env, args: SyncArgs) -> anyhow::Result<ExitCode> {
    let url = upstream_url(env, args.from_tod)?;
    let key = credential_key(env)?;
    let schedule = schedule_settings(env)?;
    let store = open_store(env).await?;
    let opts = SyncOptions {
        drop_history: args.drop_history,
    };
    let report = match tod::sync(&store, &url, &key, &schedule, opts).await {
        Ok(r) => r,
        Err(SyncError::WrongKey { failed }) => {
            return Err(ConfigError {
                var: "CREDENTIAL_ENCRYPTION_KEY".into(),
                value: None,
                reason: format!(
                    "opens none of the {failed} legacy credentials in the-other-dude's database: \
                     it is not the key the backend encrypts with (its CREDENTIAL_ENCRYPTION_KEY); \
                     nothing imported"
                ),
            }
            .into());
        }
        Err(SyncError::Store(e)) => return Err(store_error(e)),
        Err(e @ SyncError::Upstream(_)) => {
            anyhow::bail!(
                "cannot sync from {}: {e}; nothing imported",
                shown_url(&url)
            )
        }
    };
    println!("{}", report.summary());
    for s in &report.skipped {
        println!(
            "skipped {} ({}, tenant {}): {}",
            s.name, s.id, s.tenant_id, s.reason
        );
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}
