//! `rosbackup credentials`: credential profiles, the credentials many devices share.
//!
//! A profile is a user with a password and/or an SSH key, named per tenant. Devices name
//! it (`devices add --credential-profile`, the inventory's `credential_profile` column,
//! `devices set-credentials --credential-profile`) and log in with it when they have no
//! password or key of their own. `set` changes it for all of them at once and lifts
//! their `auth_failed` blocks; `remove` refuses a profile still in use, saying how many
//! devices use it. Secrets come from environment variables and key files, as for
//! devices, and are never printed.

use super::devices::{check_key, credential_key, password_from_env};
use super::shared::{
    database_url, open_store, optional_tenant, print_table, read_key_file, store_error, time,
};
use crate::Secret;
use crate::config::{ConfigError, Env};
use crate::inventory;
use crate::profiles::{CredentialProfile, NewProfile};
use crate::store::{KeyChange, StoreError};
use std::path::PathBuf;
use std::process::ExitCode;

/// The secrets a profile is given (both optional; at least one for `add`).
#[derive(clap::Args)]
pub struct SecretArgs {
    /// Name of the environment variable holding the password.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// A private key (OpenSSH or PEM; Ed25519 or RSA), tried before the password.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Name of the environment variable holding the key file's passphrase.
    #[arg(long, value_name = "VAR", requires = "key_file")]
    key_passphrase_env: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum CredentialsCommand {
    /// Create a profile: a user with a password (--password-env) and/or a key (--key-file).
    Add {
        name: String,
        #[arg(long)]
        username: String,
        /// Tenant name or id (default: the default tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        secrets: SecretArgs,
        #[command(flatten)]
        jump: super::bastions::JumpArgs,
    },
    /// List profiles (never their secrets) with how many devices use each.
    List {
        /// Tenant name or id.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change a profile's user, password or key; applies to all its devices at once and
    /// lifts their auth_failed blocks.
    Set {
        /// Profile id or name.
        profile: String,
        /// Tenant name or id.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        username: Option<String>,
        #[command(flatten)]
        secrets: SecretArgs,
        /// Remove the password (the key only).
        #[arg(long, conflicts_with = "password_env")]
        no_password: bool,
        /// Remove the key (the password only).
        #[arg(long, conflicts_with = "key_file")]
        no_key: bool,
        #[command(flatten)]
        jump: super::bastions::JumpArgs,
    },
    /// Set the export timeout of the devices using a profile (whole seconds, 1 to 3600),
    /// or `auto` for none: the adaptive timeout. A device's own timeout still wins.
    SetTimeout {
        /// Profile id or name.
        profile: String,
        /// Seconds, or auto.
        #[arg(allow_hyphen_values = true)]
        timeout: String,
        /// Tenant name or id.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a profile no device uses (refused with the count otherwise).
    Remove {
        /// Profile id or name.
        profile: String,
        /// Tenant name or id.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Run one `credentials` subcommand (`DATABASE_URL`, `CREDENTIAL_ENCRYPTION_KEY`).
pub async fn run(env: &Env, command: CredentialsCommand) -> anyhow::Result<ExitCode> {
    database_url(env)?;
    match command {
        CredentialsCommand::Add {
            name,
            username,
            tenant,
            secrets,
            jump,
        } => add(env, name, username, tenant, secrets, &jump).await,
        CredentialsCommand::List { tenant, json } => list(env, tenant, json).await,
        CredentialsCommand::Set {
            profile,
            tenant,
            username,
            secrets,
            no_password,
            no_key,
            jump,
        } => {
            let only_jump = username.is_none()
                && secrets.password_env.is_none()
                && secrets.key_file.is_none()
                && !no_password
                && !no_key;
            set(
                env,
                &profile,
                tenant,
                (username, secrets, no_password, no_key),
                &jump,
                only_jump,
            )
            .await
        }
        CredentialsCommand::SetTimeout {
            profile,
            timeout,
            tenant,
        } => set_timeout(env, &profile, &timeout, tenant).await,
        CredentialsCommand::Remove { profile, tenant } => remove(env, &profile, tenant).await,
    }
}

/// A profile's jump host from the flags: `Some(None)` clears it, `None` leaves it.
fn jump_spec(
    args: &super::bastions::JumpArgs,
) -> anyhow::Result<Option<Option<crate::jump::JumpSpec>>> {
    Ok(match args.setting(false)? {
        None => None,
        Some(crate::jump::JumpSetting::Via(s)) => Some(Some(s)),
        Some(_) => Some(None),
    })
}

fn field(flag: &str, r: Result<String, String>) -> Result<String, ConfigError> {
    r.map_err(|reason| ConfigError {
        var: flag.into(),
        value: None,
        reason,
    })
}

fn summary(p: &CredentialProfile) -> String {
    let mut with = Vec::new();
    if p.has_password {
        with.push("password");
    }
    if p.has_ssh_key {
        with.push("key");
    }
    with.join("+")
}

async fn add(
    env: &Env,
    name: String,
    username: String,
    tenant: Option<String>,
    s: SecretArgs,
    jump: &super::bastions::JumpArgs,
) -> anyhow::Result<ExitCode> {
    let key = credential_key(env)?;
    let jump = jump_spec(jump)?;
    let name = field("NAME", inventory::parse_name(&name))?;
    let username = field("--username", inventory::parse_username(&username))?;
    let ssh_key = match &s.key_file {
        Some(f) => Some(read_key_file(f, s.key_passphrase_env.as_deref())?),
        None => None,
    };
    let password = match &s.password_env {
        Some(var) => Some(password_from_env(var)?),
        None => None,
    };
    if password.is_none() && ssh_key.is_none() {
        return Err(ConfigError {
            var: "--password-env".into(),
            value: None,
            reason: "a profile needs a password (--password-env VAR) or a key (--key-file FILE)"
                .into(),
        }
        .into());
    }
    let store = open_store(env).await?;
    check_key(&store, &key).await?;
    let tenant = optional_tenant(&store, tenant.as_deref()).await?;
    let p = store
        .create_profile(
            &key,
            &NewProfile {
                tenant_id: tenant.unwrap_or_default(),
                name,
                username,
                password,
                ssh_key,
            },
        )
        .await
        .map_err(store_error)?;
    if let Some(spec) = &jump {
        crate::bastions::set_profile_jump(&store, &key, p.id, spec.as_ref())
            .await
            .map_err(store_error)?;
    }
    println!("{}", p.id);
    Ok(ExitCode::SUCCESS)
}

async fn list(env: &Env, tenant: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let tenant = optional_tenant(&store, tenant.as_deref()).await?;
    let profiles = store.list_profiles(tenant).await.map_err(store_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&profiles)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Tenants by name where they have one, as `devices list` shows them.
    let names = crate::tenant::names(&store).await.map_err(store_error)?;
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                names
                    .get(&p.tenant_id)
                    .cloned()
                    .unwrap_or_else(|| p.tenant_id.to_string()),
                p.username.clone(),
                summary(p),
                p.devices.to_string(),
                p.export_timeout_seconds
                    .map_or_else(|| "auto".into(), |s| format!("{s} s")),
                time(Some(p.updated_at)),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME", "TENANT", "USER", "WITH", "DEVICES", "TIMEOUT", "UPDATED",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

async fn set(
    env: &Env,
    profile: &str,
    tenant: Option<String>,
    (username, s, no_password, no_key): (Option<String>, SecretArgs, bool, bool),
    jump: &super::bastions::JumpArgs,
    only_jump: bool,
) -> anyhow::Result<ExitCode> {
    let jump = jump_spec(jump)?;
    if only_jump && jump.is_none() {
        return Err(ConfigError {
            var: "credentials set".into(),
            value: None,
            reason: "nothing to change: give --username, --password-env VAR, --key-file FILE, \
                     --no-password, --no-key, --jump-host or --no-jump-host"
                .into(),
        }
        .into());
    }
    let key = credential_key(env)?;
    if let (Some(spec), true) = (&jump, only_jump) {
        let store = open_store(env).await?;
        check_key(&store, &key).await?;
        let p = store
            .find_profile(optional_tenant(&store, tenant.as_deref()).await?, profile)
            .await
            .map_err(store_error)?;
        let change = crate::bastions::set_profile_jump(&store, &key, p.id, spec.as_ref())
            .await
            .map_err(store_error)?
            .unwrap_or_default();
        println!(
            "credential profile {}: jump host {}{}",
            p.name,
            spec.as_ref()
                .map(|s| s.display())
                .unwrap_or_else(|| "none".into()),
            unblocked(change)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let username = username
        .map(|u| field("--username", inventory::parse_username(&u)))
        .transpose()?;
    let ssh_key = match &s.key_file {
        Some(f) => Some(read_key_file(f, s.key_passphrase_env.as_deref())?),
        None => None,
    };
    let password = if no_password {
        Some(Secret::default())
    } else {
        match &s.password_env {
            Some(var) => Some(password_from_env(var)?),
            None => None,
        }
    };
    let change = match (&ssh_key, no_key) {
        (Some(k), _) => KeyChange::Set(k),
        (None, true) => KeyChange::Clear,
        (None, false) => KeyChange::Keep,
    };
    let store = open_store(env).await?;
    check_key(&store, &key).await?;
    let p = store
        .find_profile(optional_tenant(&store, tenant.as_deref()).await?, profile)
        .await
        .map_err(store_error)?;
    let u = store
        .update_profile(&key, p.id, username.as_deref(), password.as_ref(), change)
        .await
        .map_err(store_error)?;
    let jump_change = match &jump {
        Some(spec) => crate::bastions::set_profile_jump(&store, &key, p.id, spec.as_ref())
            .await
            .map_err(store_error)?
            .unwrap_or_default(),
        None => Default::default(),
    };
    let mut changed = Vec::new();
    if username.is_some() {
        changed.push("user");
    }
    match (&password, no_password) {
        (_, true) => changed.push("password removed"),
        (Some(_), false) => changed.push("password"),
        (None, false) => {}
    }
    match change {
        KeyChange::Set(_) => changed.push("key"),
        KeyChange::Clear => changed.push("key removed"),
        KeyChange::Keep => {}
    }
    if jump.is_some() {
        changed.push("jump host");
    }
    println!(
        "credential profile {} updated: {} (it has: {}); {} device(s) use it{}{}",
        u.profile.name,
        changed.join(", "),
        summary(&u.profile),
        u.profile.devices,
        if u.lifted > 0 {
            format!("; {} auth_failed block(s) lifted, due now", u.lifted)
        } else {
            String::new()
        },
        unblocked(jump_change)
    );
    Ok(ExitCode::SUCCESS)
}

/// The `bastion_host_key_mismatch` blocks a jump change lifted, as printed after it.
fn unblocked(change: crate::bastions::JumpChange) -> String {
    if change.unblocked > 0 {
        format!(
            "; {} bastion_host_key_mismatch block(s) lifted, due now",
            change.unblocked
        )
    } else {
        String::new()
    }
}

async fn set_timeout(
    env: &Env,
    profile: &str,
    timeout: &str,
    tenant: Option<String>,
) -> anyhow::Result<ExitCode> {
    let seconds = crate::export_timeout::parse_override(timeout).map_err(|e| ConfigError {
        var: "TIMEOUT".into(),
        value: Some(timeout.to_string()),
        reason: e.to_string(),
    })?;
    let store = open_store(env).await?;
    let p = store
        .find_profile(optional_tenant(&store, tenant.as_deref()).await?, profile)
        .await
        .map_err(store_error)?;
    if !store
        .set_profile_export_timeout(p.id, seconds)
        .await
        .map_err(store_error)?
    {
        anyhow::bail!("credential profile {} not found", p.id);
    }
    println!(
        "export timeout of credential profile {} ({} device(s)): {}",
        p.name,
        p.devices,
        seconds.map_or_else(
            || "auto (adaptive, from CONFIG_BACKUP_COMMAND_TIMEOUT)".into(),
            |s| format!("{s} s")
        )
    );
    Ok(ExitCode::SUCCESS)
}

async fn remove(env: &Env, profile: &str, tenant: Option<String>) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    let p = store
        .find_profile(optional_tenant(&store, tenant.as_deref()).await?, profile)
        .await
        .map_err(store_error)?;
    match store.remove_profile(p.id).await {
        Ok(()) => {
            println!("credential profile {} removed", p.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ StoreError::ProfileInUse { .. }) => Err(anyhow::anyhow!("{e}; nothing removed")),
        Err(e) => Err(store_error(e)),
    }
}
