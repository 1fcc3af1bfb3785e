//! `rosbackup tenants`: names for tenant ids.
//!
//! A tenant is the `tenant_id` its devices carry; this command gives ids names so that
//! people can say `--tenant acme` (here, in `devices add|list`, `tokens create`) and see
//! "acme" in the dashboard's filter instead of a truncated UUID. `add` without `--id`
//! derives the id from the name (`tenant::id_for_name`), the same id an inventory row with
//! `tenant=acme` and an empty `tenant_id` gets.

use super::shared::{open_store, print_table, store_error};
use crate::config::Env;
use crate::tenant;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum TenantsCommand {
    /// Name a tenant (a new one, or an id that devices already carry); prints its id.
    Add {
        /// The name (unique, case-insensitive; not a UUID).
        name: String,
        /// The tenant's id (default: derived from the name).
        #[arg(long)]
        id: Option<uuid::Uuid>,
    },
    /// Rename a tenant (by its name or id).
    Rename { tenant: String, new_name: String },
    /// Set (--jump-host) or clear (--no-jump-host) a tenant's default jump host: its
    /// devices go through it unless they or their credential profile name another, or say
    /// `direct` (CREDENTIAL_ENCRYPTION_KEY).
    SetJumpHost {
        /// The tenant's name or id.
        tenant: String,
        #[command(flatten)]
        jump: super::bastions::JumpArgs,
    },
    /// Tenants with their names and device counts.
    List {
        /// A JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Run one `tenants` subcommand (`DATABASE_URL`).
pub async fn run(env: &Env, command: TenantsCommand) -> anyhow::Result<ExitCode> {
    if let TenantsCommand::SetJumpHost { tenant, jump } = &command {
        return super::bastions::set_tenant_default(env, tenant, jump).await;
    }
    let store = open_store(env).await?;
    match command {
        TenantsCommand::SetJumpHost { .. } => {}
        TenantsCommand::Add { name, id } => {
            let name = tenant::parse_tenant_name(&name)
                .map_err(|r| anyhow::anyhow!("tenant name: {r}"))?;
            let id = id.unwrap_or_else(|| tenant::id_for_name(&name));
            tenant::set_name(&store, id, &name)
                .await
                .map_err(store_error)?;
            println!("{id}");
        }
        TenantsCommand::Rename {
            tenant: t,
            new_name,
        } => {
            let id = tenant::resolve(&store, &t).await.map_err(store_error)?;
            tenant::set_name(&store, id, &new_name)
                .await
                .map_err(store_error)?;
            println!("{id}");
        }
        TenantsCommand::List { json } => {
            let list = tenant::list(&store).await.map_err(store_error)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone().unwrap_or_else(|| "-".into()),
                            t.id.to_string(),
                            t.devices.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "ID", "DEVICES"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
