//! `rosbackup tokens`: the API tokens of the dashboard and the API.
//!
//! Tokens are made on the command line, by whoever holds the database, because the first
//! one cannot come from the dashboard it unlocks. A token is printed once and only its
//! hash is stored; `--if-none` lets a compose or Kubernetes bootstrap create the first
//! admin token on every start without piling up new ones, and `--quiet` prints it alone
//! for scripts. Revoking ends the token's browser sessions at once.

use super::shared::{describe, open_store};
use crate::config::Env;
use crate::store::StoreError;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// A name to recognise it by (who or what uses it).
        #[arg(long)]
        name: String,
        /// viewer (read) or admin (read and act).
        #[arg(long, value_parser = ["viewer", "admin"])]
        role: String,
        /// Limit the token to one tenant's devices, runs and counts (its name or id).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the token alone (for scripts), without the description.
        #[arg(long)]
        quiet: bool,
        /// Only if no live token exists (first-start bootstrap in compose/Kubernetes);
        /// otherwise print that one exists and exit 0.
        #[arg(long)]
        if_none: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name; its browser sessions end at once.
    Revoke { token: String },
}

/// Create, list or revoke tokens (`DATABASE_URL`).
pub async fn run(env: &Env, command: TokensCommand) -> anyhow::Result<ExitCode> {
    use crate::access::{Access, Role};
    let store = open_store(env).await?;
    let access = Access::new(store.clone());
    match command {
        TokensCommand::Create {
            name,
            role,
            tenant,
            quiet,
            if_none,
        } => {
            if if_none {
                let live = access
                    .live_tokens()
                    .await
                    .map_err(|e| anyhow::anyhow!(describe(&e)))?;
                if live > 0 {
                    println!("{live} live token(s) exist; none created");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("role must be viewer or admin"))?;
            let tenant = match tenant {
                None => None,
                Some(t) => Some(
                    crate::tenant::resolve(&store, &t)
                        .await
                        .map_err(|e| anyhow::anyhow!("--tenant: {}", describe(&e)))?,
                ),
            };
            let (info, token) = access
                .create_token(&name, role, tenant)
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?;
            if quiet {
                println!("{token}");
            } else {
                println!(
                    "created {} token {:?} ({}){}",
                    info.role,
                    info.name,
                    info.id,
                    info.tenant_id
                        .map(|t| format!(" for tenant {t}"))
                        .unwrap_or_default()
                );
                println!("{token}");
                println!("Keep it now: it is not stored and cannot be shown again.");
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List { json } => {
            let tokens = access
                .list_tokens()
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(ExitCode::SUCCESS);
            }
            // Tenants by name where they have one, as `devices list` shows them.
            let names = crate::tenant::names(&store)
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?;
            println!(
                "{:<36}  {:<20}  {:<6}  {:<36}  {:<20}  STATUS",
                "ID", "NAME", "ROLE", "TENANT", "LAST USED"
            );
            for t in tokens {
                println!(
                    "{:<36}  {:<20}  {:<6}  {:<36}  {:<20}  {}",
                    t.id,
                    t.name,
                    t.role,
                    t.tenant_id
                        .map(|t| names.get(&t).cloned().unwrap_or_else(|| t.to_string()))
                        .unwrap_or_else(|| "(all)".into()),
                    t.last_used_at
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "never".into()),
                    if t.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "live"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke { token } => {
            let info = access.revoke_token(&token).await.map_err(|e| match e {
                StoreError::Invalid(m) => anyhow::anyhow!(m),
                other => anyhow::anyhow!(describe(&other)),
            })?;
            println!("revoked token {:?} ({})", info.name, info.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}
