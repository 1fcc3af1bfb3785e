//! `rosbackup devices`: the device store, by hand.
//!
//! The operator's side of the store the enqueuer schedules from and the workers report
//! into: bring devices in (`import` for a whole inventory in one transaction, `add` for
//! one, validated like an inventory row), look at them (`list`, `show`, with `--json` for
//! scripts), and get a device going again after the fleet stopped on it on purpose: a
//! block (`auth_failed`, `host_key_mismatch`) holds until the operator fixes its cause,
//! and the command that fixes it lifts it (`unblock` lifts any). Passwords never pass as
//! flags (an environment variable named by `--password-env`) and are stored sealed under
//! `CREDENTIAL_ENCRYPTION_KEY`.
//!
//! One submodule per kind of work: `import`, `add`, `list`, `show`, `credentials`
//! (`set-credentials`, `rotate-key`), `state` (one device's schedule and blocks, and
//! `remove`) and `sync` (a the-other-dude backend's database as the inventory).

mod add;
mod credentials;
mod import;
mod list;
mod show;
mod state;
mod sync;

use super::shared::store_error;
use crate::Secret;
use crate::config::{ConfigError, Env};
use crate::credentials::{CredentialError, CredentialKey};
use crate::inventory;
use crate::store::{Device, Store, StoreError};
use std::path::PathBuf;
use std::process::ExitCode;

pub use add::AddArgs;
pub use sync::SyncArgs;

#[derive(clap::Subcommand)]
pub enum DevicesCommand {
    /// Insert or update every device of an inventory CSV, in one transaction: all or none.
    Import {
        /// CSV with the header id,tenant_id,name,host,port,username,password,routeros_version
        /// (as `rosbackup sim --inventory` writes it), optionally enabled,
        /// backup_interval_seconds, backup_cron, ssh_key_file (relative to the CSV's
        /// directory), credential_profile, tenant (a tenant name), export_timeout_seconds
        /// (1 to 3600, auto removes, empty keeps). An empty id or
        /// tenant_id is derived (from the tenant and name; from the tenant name, else the
        /// default tenant).
        file: PathBuf,
        /// Name of the environment variable holding the passphrase of the key files.
        #[arg(long, value_name = "VAR")]
        key_passphrase_env: Option<String>,
    },
    /// Make the store agree with a the-other-dude backend's database: its RouterOS
    /// devices added or updated, those deleted there removed, host key pins shared.
    /// Prints a summary and every device it could not sync, with the reason.
    Sync(SyncArgs),
    /// List devices with their backup state.
    List {
        /// Only this tenant's devices (its name or id).
        #[arg(long)]
        tenant: Option<String>,
        /// A JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Add one device; prints its id.
    Add(AddArgs),
    /// Re-encrypt every stored password under a new key (CREDENTIAL_ENCRYPTION_KEY is the
    /// old one, NEW_CREDENTIAL_ENCRYPTION_KEY the new one); all devices or none. Then
    /// restart every process with the new key.
    RotateKey,
    /// Delete a device and its run history.
    Remove {
        /// Device id or name.
        device: String,
    },
    /// Set a device's password and/or key (and user); lifts an auth_failed block.
    SetCredentials {
        /// Device id or name.
        device: String,
        /// New SSH user (default: keep the current one).
        #[arg(long)]
        username: Option<String>,
        /// Name of the environment variable holding the new password (default
        /// ROSBACKUP_PASSWORD). With --key-file or --no-password the password is read
        /// only when this flag is given.
        #[arg(long)]
        password_env: Option<String>,
        /// A new private key (OpenSSH or PEM; Ed25519 or RSA), tried before the password.
        #[arg(long, value_name = "FILE", conflicts_with = "no_key")]
        key_file: Option<PathBuf>,
        /// Name of the environment variable holding the key file's passphrase.
        #[arg(long, value_name = "VAR", requires = "key_file")]
        key_passphrase_env: Option<String>,
        /// Remove the device's key (it logs in with its password, or its profile's
        /// credentials).
        #[arg(long)]
        no_key: bool,
        /// Remove the device's password (key only, or its profile's credentials).
        #[arg(long, conflicts_with = "password_env")]
        no_password: bool,
        /// Use this credential profile of the device's tenant when it has no password or
        /// key of its own (with --no-password --no-key: from now on).
        #[arg(long, value_name = "NAME", conflicts_with = "no_credential_profile")]
        credential_profile: Option<String>,
        /// Stop using a credential profile.
        #[arg(long)]
        no_credential_profile: bool,
        #[command(flatten)]
        jump: crate::cmd::bastions::JumpArgs,
    },
    /// Forget the pinned SSH host key (the next backup pins what it sees); lifts a
    /// host_key_mismatch block.
    ResetHostKey {
        /// Device id or name.
        device: String,
    },
    /// Lift any block and backoff; the device is due now.
    Unblock {
        /// Device id or name.
        device: String,
    },
    /// Schedule backups of a device again.
    Enable {
        /// Device id or name.
        device: String,
    },
    /// Stop scheduling backups of a device (it stays in the store).
    Disable {
        /// Device id or name.
        device: String,
    },
    /// Set a device's binary backup mode (off, on-change, always), or `fleet` to follow
    /// CONFIG_BACKUP_BINARY again.
    BinaryMode {
        /// Device id or name.
        device: String,
        /// off, on-change, always or fleet.
        mode: String,
    },
    /// Set a tenant's binary backup mode (off, on-change, always), or `fleet` to follow
    /// CONFIG_BACKUP_BINARY again; a device's own mode still wins.
    TenantBinaryMode {
        /// Tenant name or id.
        tenant: String,
        /// off, on-change, always or fleet.
        mode: String,
    },
    /// Set a device's export timeout (whole seconds, 1 to 3600), or `auto` for none: its
    /// credential profile's, else the adaptive timeout (CONFIG_BACKUP_COMMAND_TIMEOUT,
    /// longer for a device whose exports take long, up to ROSBACKUP_EXPORT_TIMEOUT_MAX).
    SetTimeout {
        /// Device id or name.
        device: String,
        /// Seconds, or auto.
        #[arg(allow_hyphen_values = true)]
        timeout: String,
    },
    /// A device's state and its last 20 runs.
    Show {
        /// Device id or name.
        device: String,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Run one `devices` subcommand (`DATABASE_URL`; `CREDENTIAL_ENCRYPTION_KEY` where a
/// password is sealed or opened).
pub async fn run(env: &Env, command: DevicesCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevicesCommand::Import {
            file,
            key_passphrase_env,
        } => import::run(env, &file, key_passphrase_env.as_deref()).await,
        DevicesCommand::RotateKey => credentials::rotate_key(env).await,
        DevicesCommand::Sync(a) => sync::run(env, a).await,
        DevicesCommand::List { tenant, json } => list::run(env, tenant.as_deref(), json).await,
        DevicesCommand::Add(a) => add::run(env, a).await,
        DevicesCommand::Remove { device } => state::remove(env, &device).await,
        DevicesCommand::SetCredentials {
            device,
            username,
            password_env,
            key_file,
            key_passphrase_env,
            no_key,
            no_password,
            credential_profile,
            no_credential_profile,
            jump,
        } => {
            let change = credentials::Change {
                username,
                password_env,
                key_file,
                key_passphrase_env,
                no_key,
                no_password,
                profile: match (credential_profile, no_credential_profile) {
                    (Some(p), _) => Some(Some(p)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                jump,
            };
            credentials::set(env, &device, change).await
        }
        DevicesCommand::ResetHostKey { device } => state::reset_host_key(env, &device).await,
        DevicesCommand::Unblock { device } => state::unblock(env, &device).await,
        DevicesCommand::Enable { device } => state::set_enabled(env, &device, true).await,
        DevicesCommand::Disable { device } => state::set_enabled(env, &device, false).await,
        DevicesCommand::Show { device, json } => show::run(env, &device, json).await,
        DevicesCommand::TenantBinaryMode { tenant, mode } => {
            state::tenant_binary_mode(env, tenant, &mode).await
        }
        DevicesCommand::SetTimeout { device, timeout } => {
            state::set_timeout(env, &device, &timeout).await
        }
        DevicesCommand::BinaryMode { device, mode } => {
            state::binary_mode(env, &device, &mode).await
        }
    }
}

/// The device named by id or name, or the store's error for the operator.
async fn find(store: &Store, id_or_name: &str) -> anyhow::Result<Device> {
    store.find_device(id_or_name).await.map_err(store_error)
}

/// How a device is named in a confirmation: its name and its id.
fn label(d: &Device) -> String {
    format!("{} ({})", d.name, d.id)
}

/// `host:port`, the host in brackets when it is an IPv6 address.
fn host_port(d: &Device) -> String {
    if d.host.contains(':') {
        format!("[{}]:{}", d.host, d.ssh_port)
    } else {
        format!("{}:{}", d.host, d.ssh_port)
    }
}

/// The key stored passwords are sealed under (`CREDENTIAL_ENCRYPTION_KEY`).
pub(crate) fn credential_key(env: &Env) -> Result<CredentialKey, CredentialError> {
    CredentialKey::from_base64(&env.raw("CREDENTIAL_ENCRYPTION_KEY"))
}

/// Before sealing or opening a password: is `key` the fleet's? A wrong key is a
/// configuration error (exit 2) naming the variable, so a password is never sealed under
/// a key no worker has.
pub(crate) async fn check_key(store: &Store, key: &CredentialKey) -> anyhow::Result<()> {
    match store.check_credential_key(key).await {
        Ok(_) => Ok(()),
        Err(StoreError::Credentials(e)) => Err(e.into()),
        Err(e) => Err(store_error(e)),
    }
}

/// A password from the environment variable named by `--password-env`.
pub(crate) fn password_from_env(var: &str) -> Result<Secret, ConfigError> {
    let value = std::env::var(var).map_err(|_| ConfigError {
        var: var.to_string(),
        value: None,
        reason: "the password variable is not set (see --password-env)".into(),
    })?;
    inventory::parse_password(&value).map_err(|_| ConfigError {
        var: var.to_string(),
        value: None,
        reason: "the password variable is empty".into(),
    })
}
