//! `devices add`: one device from flags, validated exactly like an inventory row.
//!
//! The flags are turned into the fields of an inventory row and go through the same
//! validation as `devices import`, so the two cannot disagree about what a device is; a
//! refused field is reported under the flag that carried it (exit 2, like any bad
//! configuration). Unlike `import` it never updates: an existing id or a name taken in
//! the tenant is an error, so a typo cannot overwrite a device. It prints the new id.

use super::{check_key, credential_key, password_from_env};
use crate::cmd::shared::{database_url, open_store, read_key_file, store_error};
use crate::config::{ConfigError, Env, schedule_settings};
use crate::inventory::{self, DeviceFields, FieldError};
use crate::store::StoreError;
use chrono::Utc;
use std::process::ExitCode;

/// `devices add`: validated exactly like an inventory row.
#[derive(clap::Args)]
pub struct AddArgs {
    #[arg(long)]
    name: String,
    /// IP address or DNS hostname.
    #[arg(long)]
    host: String,
    #[arg(long, default_value = "22")]
    port: String,
    /// SSH user (optional with --credential-profile: the profile's).
    #[arg(long, default_value = "")]
    username: String,
    /// Name of the environment variable holding the password (never pass it as a flag;
    /// default ROSBACKUP_PASSWORD). With --key-file or --credential-profile the password
    /// is optional and read only when this flag is given.
    #[arg(long)]
    password_env: Option<String>,
    /// Log in with this private key (OpenSSH or PEM; Ed25519 or RSA) before the password.
    /// Stored sealed like a password; the file is not needed afterwards.
    #[arg(long, value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
    /// Name of the environment variable holding the key file's passphrase (the key is
    /// stored decrypted, inside the seal).
    #[arg(long, value_name = "VAR", requires = "key_file")]
    key_passphrase_env: Option<String>,
    /// Use this credential profile of the tenant when the device has no password or key
    /// of its own.
    #[arg(long, value_name = "NAME")]
    credential_profile: Option<String>,
    /// Tenant: its name (see `rosbackup tenants`) or id (default: the tenant named
    /// `default`, id 00000000-0000-0000-0000-000000000000).
    #[arg(long)]
    tenant: Option<String>,
    /// Device id (default: derived from the tenant and the name, as an inventory row
    /// without an id gets it).
    #[arg(long)]
    id: Option<String>,
    /// RouterOS version, e.g. 7.16.2 (default: asked at the first backup).
    #[arg(long)]
    routeros_version: Option<String>,
    /// Back this device up every SECS seconds instead of the fleet's schedule.
    #[arg(long, value_name = "SECS")]
    interval: Option<String>,
    /// Back this device up on this cron schedule (wins over --interval).
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// Add it disabled (no scheduled backups until `devices enable`).
    #[arg(long)]
    disabled: bool,
    /// Its export timeout in seconds (1 to 3600) instead of its profile's or the adaptive
    /// one (see `devices set-timeout`).
    #[arg(long, value_name = "SECS")]
    export_timeout: Option<String>,
    #[command(flatten)]
    jump: crate::cmd::bastions::JumpArgs,
}

/// The flag `devices add` takes for an inventory column.
fn flag_for(column: &str, password_env: &str) -> String {
    match column {
        inventory::ID => "--id".into(),
        inventory::TENANT_ID => "--tenant".into(),
        inventory::NAME => "--name".into(),
        inventory::HOST => "--host".into(),
        inventory::PORT => "--port".into(),
        inventory::USERNAME => "--username".into(),
        inventory::PASSWORD => password_env.into(),
        inventory::ROUTEROS_VERSION => "--routeros-version".into(),
        inventory::BACKUP_INTERVAL_SECONDS => "--interval".into(),
        inventory::BACKUP_CRON => "--cron".into(),
        inventory::CREDENTIAL_PROFILE => "--credential-profile".into(),
        inventory::SSH_KEY_FILE => "--key-file".into(),
        inventory::EXPORT_TIMEOUT_SECONDS => "--export-timeout".into(),
        other => other.into(),
    }
}

/// Validate and insert one device; print its id.
pub(super) async fn run(env: &Env, a: AddArgs) -> anyhow::Result<ExitCode> {
    database_url(env)?;
    let key = credential_key(env)?;
    let schedule = schedule_settings(env)?;
    let ssh_key = match &a.key_file {
        Some(f) => Some(read_key_file(f, a.key_passphrase_env.as_deref())?),
        None => None,
    };
    let password_env = a
        .password_env
        .clone()
        .unwrap_or_else(|| "ROSBACKUP_PASSWORD".to_string());
    let password =
        if a.password_env.is_none() && (ssh_key.is_some() || a.credential_profile.is_some()) {
            crate::Secret::default()
        } else {
            password_from_env(&password_env)?
        };
    let jump = a.jump.setting(true)?;
    let key_file = a.key_file.as_ref().map(|f| f.display().to_string());
    let id = a.id.clone().unwrap_or_default();
    // A tenant name is looked up after the flags are checked (with the default tenant
    // standing in), so a bad flag is reported without a database.
    let named = a
        .tenant
        .as_deref()
        .filter(|t| uuid::Uuid::parse_str(t.trim()).is_err());
    let tenant = match (&a.tenant, named) {
        (Some(t), None) => t.clone(),
        _ => String::new(),
    };
    let mut fields = DeviceFields {
        id: &id,
        tenant_id: &tenant,
        name: &a.name,
        host: &a.host,
        port: &a.port,
        username: &a.username,
        password: password.expose(),
        routeros_version: a.routeros_version.as_deref().unwrap_or(""),
        enabled: Some(if a.disabled { "false" } else { "true" }),
        backup_interval_seconds: a.interval.as_deref(),
        backup_cron: a.cron.as_deref(),
        ssh_key_file: key_file.as_deref(),
        credential_profile: a.credential_profile.as_deref(),
        tenant: None,
        export_timeout_seconds: a.export_timeout.as_deref(),
        jump_host: None,
    };
    let flag_error = |FieldError { column, reason }| ConfigError {
        var: flag_for(column, &password_env),
        value: None,
        // Without a profile the user is the device's own: say it is needed, not "empty".
        reason: if column == inventory::USERNAME && a.username.trim().is_empty() {
            "required (or --credential-profile, whose user is used)".into()
        } else {
            reason
        },
    };
    let mut device = fields.validate().map_err(flag_error)?;
    let store = open_store(env).await?;
    check_key(&store, &key).await?;
    if let Some(name) = named {
        let tenant_id = match crate::tenant::resolve(&store, name).await {
            Ok(id) => id.to_string(),
            // An unknown name is a bad flag (exit 2), like a malformed id.
            Err(StoreError::Invalid(reason)) => {
                return Err(ConfigError {
                    var: "--tenant".into(),
                    value: None,
                    reason,
                }
                .into());
            }
            Err(e) => return Err(store_error(e)),
        };
        fields.tenant_id = &tenant_id;
        device = fields.validate().map_err(flag_error)?;
    }
    device.ssh_key = ssh_key;
    device.jump = jump;
    if let Some(existing) = store.device(device.id).await.map_err(store_error)? {
        if id.trim().is_empty() {
            anyhow::bail!(
                "tenant {} already has a device named {:?} ({}); change its credentials with \
                 `devices set-credentials`, anything else with `devices import` (or \
                 `devices remove` it first)",
                device.tenant_id,
                device.name,
                device.id
            );
        }
        anyhow::bail!(
            "device {} already exists (named {:?}); change its credentials with `devices \
             set-credentials`, anything else with `devices import` (or `devices remove` it \
             first)",
            device.id,
            existing.name
        );
    }
    let mut rng = rand::thread_rng();
    let result = store
        .upsert_devices(&key, std::slice::from_ref(&device), || {
            schedule.first_due(Utc::now(), &mut rng)
        })
        .await;
    match result {
        Ok(_) => {}
        Err(StoreError::Db(sqlx::Error::Database(d)))
            if d.constraint() == Some("devices_tenant_name") =>
        {
            anyhow::bail!(
                "tenant {} already has a device named {:?}",
                device.tenant_id,
                device.name
            );
        }
        Err(StoreError::Invalid(msg)) if msg.contains("no credential profile") => {
            return Err(ConfigError {
                var: "--credential-profile".into(),
                value: device.credential_profile.clone(),
                reason: format!(
                    "tenant {} has no credential profile of that name (see `rosbackup credentials list`)",
                    device.tenant_id
                ),
            }
            .into());
        }
        Err(e) => return Err(store_error(e)),
    }
    println!("{}", device.id);
    Ok(ExitCode::SUCCESS)
}
