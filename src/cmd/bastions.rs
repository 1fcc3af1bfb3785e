//! `rosbackup bastions`: the jump hosts' pinned host keys, and the jump-host flags the
//! device, credential-profile and tenant commands share.
//!
//! A bastion's key is pinned once per bastion (tenant, host, port) the first time a worker
//! goes through it. When it presents another key, every device behind it fails
//! `bastion_host_key_mismatch` and is blocked; `list` shows the pinned and the presented
//! key side by side, and `reset-host-key` — after the operator has checked the new key on
//! the bastion — forgets the pin and lifts exactly those devices' blocks.

use super::devices::{check_key, credential_key, password_from_env};
use super::shared::{KeyFlags, open_store, print_table, read_key_file_as, store_error, time};
use crate::config::{ConfigError, Env};
use crate::jump::{self, JumpSetting, JumpSpec};
use std::path::PathBuf;
use std::process::ExitCode;

/// Jump-host flags (`devices add|set-credentials`, `credentials add|set`, `tenants
/// set-jump-host`). Secrets come from a key file and an environment variable, never flags.
#[derive(clap::Args, Default)]
pub struct JumpArgs {
    /// Reach the device(s) through this bastion: `[user@]host[:port]` (as `ssh -J`). Without
    /// a user the device's user logs in there; without --jump-key-file the device's key is
    /// tried there. For a device, `direct` ignores its profile's and tenant's jump host.
    #[arg(
        long,
        value_name = "[USER@]HOST[:PORT]",
        conflicts_with = "no_jump_host"
    )]
    pub jump_host: Option<String>,
    /// No jump host of its own (a device then inherits its profile's or tenant's).
    #[arg(long)]
    pub no_jump_host: bool,
    /// A private key for the bastion (OpenSSH or PEM; Ed25519 or RSA), stored sealed.
    #[arg(long, value_name = "FILE", requires = "jump_host")]
    pub jump_key_file: Option<PathBuf>,
    /// Name of the environment variable holding --jump-key-file's passphrase.
    #[arg(long, value_name = "VAR", requires = "jump_key_file")]
    pub jump_key_passphrase_env: Option<String>,
    /// Name of the environment variable holding the bastion's password, stored sealed.
    #[arg(long, value_name = "VAR", requires = "jump_host")]
    pub jump_password_env: Option<String>,
}

impl JumpArgs {
    /// The setting the flags ask for; `None`: no jump flag given (leave it as it is).
    pub(crate) fn setting(&self, direct_allowed: bool) -> anyhow::Result<Option<JumpSetting>> {
        if self.no_jump_host {
            return Ok(Some(JumpSetting::Inherit));
        }
        let Some(text) = self.jump_host.as_deref() else {
            return Ok(None);
        };
        let bad = |reason: String| ConfigError {
            var: "--jump-host".into(),
            value: Some(text.to_string()),
            reason,
        };
        if text.trim() == "direct" {
            if !direct_allowed {
                return Err(bad(
                    "`direct` is for a device (a profile or tenant: --no-jump-host)".into(),
                )
                .into());
            }
            if self.jump_key_file.is_some() || self.jump_password_env.is_some() {
                return Err(bad("a direct device has no jump credentials".into()).into());
            }
            return Ok(Some(JumpSetting::Direct));
        }
        let mut spec = JumpSpec::parse(text).map_err(bad)?;
        spec.key = match &self.jump_key_file {
            Some(f) => Some(read_key_file_as(
                f,
                self.jump_key_passphrase_env.as_deref(),
                KeyFlags::JUMP,
            )?),
            None => None,
        };
        spec.password = match &self.jump_password_env {
            Some(var) => Some(password_from_env(var)?),
            None => None,
        };
        Ok(Some(JumpSetting::Via(spec)))
    }
}

#[derive(clap::Subcommand)]
pub enum BastionsCommand {
    /// Pinned bastion keys, and the key a bastion presented instead when it changed.
    List {
        /// Tenant name or id.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Forget a bastion's pinned key (the next backup through it pins what it sees) and
    /// lift the bastion_host_key_mismatch blocks of the devices behind it.
    ResetHostKey {
        /// The bastion: `host[:port]` (port 22 by default).
        bastion: String,
        /// Tenant name or id (default: the default tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Run one `bastions` subcommand (`DATABASE_URL`).
pub async fn run(env: &Env, command: BastionsCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(env).await?;
    match command {
        BastionsCommand::List { tenant, json } => {
            let tenant = super::shared::optional_tenant(&store, tenant.as_deref()).await?;
            let list = crate::bastions::bastions(&store, tenant)
                .await
                .map_err(store_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|b| {
                    vec![
                        jump::display(None, &b.host, u16::try_from(b.port).unwrap_or(22)),
                        b.tenant_id.to_string(),
                        b.fingerprint.clone(),
                        time(Some(b.pinned_at)),
                        b.presented_fingerprint
                            .clone()
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "BASTION",
                    "TENANT",
                    "PINNED KEY",
                    "PINNED",
                    "PRESENTED INSTEAD",
                ],
                &rows,
            );
        }
        BastionsCommand::ResetHostKey { bastion, tenant } => {
            let spec = JumpSpec::parse(&bastion).map_err(|reason| ConfigError {
                var: "BASTION".into(),
                value: Some(bastion.clone()),
                reason,
            })?;
            let tenant = match tenant {
                Some(t) => crate::tenant::resolve(&store, &t)
                    .await
                    .map_err(store_error)?,
                None => crate::tenant::DEFAULT_TENANT,
            };
            let r = crate::bastions::reset_pin(&store, tenant, &spec.host, spec.port)
                .await
                .map_err(store_error)?;
            println!(
                "bastion {}: {}; {} device(s) unblocked, due now",
                jump::display(None, &spec.host, spec.port),
                if r.forgotten {
                    "pinned key forgotten (the next backup pins what it sees)"
                } else {
                    "no key was pinned"
                },
                r.unblocked
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenants set-jump-host`: a tenant's default jump host (`CREDENTIAL_ENCRYPTION_KEY`).
pub(crate) async fn set_tenant_default(
    env: &Env,
    tenant: &str,
    args: &JumpArgs,
) -> anyhow::Result<ExitCode> {
    let key = credential_key(env)?;
    let setting = args.setting(false)?.ok_or_else(|| ConfigError {
        var: "--jump-host".into(),
        value: None,
        reason: "give --jump-host [USER@]HOST[:PORT] or --no-jump-host".into(),
    })?;
    let store = open_store(env).await?;
    check_key(&store, &key).await?;
    let id = crate::tenant::resolve(&store, tenant)
        .await
        .map_err(store_error)?;
    let spec = match &setting {
        JumpSetting::Via(s) => Some(s),
        _ => None,
    };
    let change = crate::bastions::set_tenant_jump(&store, &key, id, spec)
        .await
        .map_err(store_error)?;
    let lifted = if change.unblocked > 0 {
        format!(
            "; {} bastion_host_key_mismatch block(s) lifted, due now",
            change.unblocked
        )
    } else {
        String::new()
    };
    match spec {
        Some(s) => println!("tenant {id}: default jump host {}{lifted}", s.display()),
        None => println!("tenant {id}: no default jump host{lifted}"),
    }
    Ok(ExitCode::SUCCESS)
}
