//! `devices set-credentials` and `devices rotate-key`: the stored passwords.
//!
//! A wrong password blocks a device (`auth_failed`) rather than being tried again every
//! interval, so setting the right one is also what lifts that block. Rotating the key
//! re-seals every password in one transaction, all or none: a key that does not open
//! every stored password (not the current one) changes nothing, and the new key must
//! differ from the old. The key check value (see `Store::check_credential_key`) is
//! replaced in the same transaction, so processes started afterwards with the old key are
//! refused, and `credentials_unreadable` blocks are lifted. Afterwards every process
//! needs the new key, which the command says.

use super::{check_key, credential_key, find, label, password_from_env};
use crate::Secret;
use crate::cmd::shared::{describe, open_store, read_key_file, store_error};
use crate::config::{ConfigError, Env};
use crate::credentials::{CredentialError, CredentialKey, WRONG_KEY};
use crate::inventory;
use crate::store::{KeyChange, StoreError};
use std::path::PathBuf;
use std::process::ExitCode;

/// What `set-credentials` changes.
pub(super) struct Change {
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub key_file: Option<PathBuf>,
    pub key_passphrase_env: Option<String>,
    pub no_key: bool,
    pub no_password: bool,
    /// `Some(Some(name))`: use that profile; `Some(None)`: none; `None`: keep.
    pub profile: Option<Option<String>>,
    /// The jump-host flags (`None` inside: left as it is).
    pub jump: crate::cmd::bastions::JumpArgs,
}

impl Change {
    /// Only jump-host flags: the device's own credentials stay as they are.
    fn jump_only(&self) -> bool {
        self.username.is_none()
            && self.password_env.is_none()
            && self.key_file.is_none()
            && !self.no_key
            && !self.no_password
            && self.profile.is_none()
    }
}

/// Set only the device's jump host (`set-credentials --jump-host …` alone).
async fn set_jump(
    env: &Env,
    device: &str,
    setting: crate::jump::JumpSetting,
) -> anyhow::Result<ExitCode> {
    let key = credential_key(env)?;
    let store = open_store(env).await?;
    check_key(&store, &key).await?;
    let d = find(&store, device).await?;
    let change = crate::bastions::set_device_jump(&store, &key, d.id, &setting)
        .await
        .map_err(store_error)?;
    println!(
        "jump host of {}: {}{}",
        label(&d),
        shown(&setting),
        lifted(change)
    );
    Ok(ExitCode::SUCCESS)
}

/// What a jump change lifted, as printed after it.
fn lifted(change: Option<crate::bastions::JumpChange>) -> &'static str {
    match change {
        Some(c) if c.unblocked > 0 => "; bastion_host_key_mismatch block lifted, due now",
        _ => "",
    }
}

/// A jump setting as printed (never its secrets).
fn shown(setting: &crate::jump::JumpSetting) -> String {
    match setting {
        crate::jump::JumpSetting::Inherit => {
            "none of its own (its profile's or tenant's, if any)".into()
        }
        crate::jump::JumpSetting::Direct => "direct (ignores its profile's and tenant's)".into(),
        crate::jump::JumpSetting::Via(s) => s.display(),
    }
}

/// Set a device's password (from the variable `password_env`), key (from `key_file`)
/// and optionally its user. Without `--key-file`, `--no-key` or `--no-password` it is
/// the password alone, from ROSBACKUP_PASSWORD by default, as before keys — except for
/// `--username` alone with ROSBACKUP_PASSWORD unset, which changes only the user.
pub(super) async fn set(env: &Env, device: &str, c: Change) -> anyhow::Result<ExitCode> {
    let jump = c.jump.setting(true)?;
    if let Some(setting) = jump.clone()
        && c.jump_only()
    {
        return set_jump(env, device, setting).await;
    }
    let key = credential_key(env)?;
    let username = c
        .username
        .map(|u| inventory::parse_username(&u))
        .transpose()
        .map_err(|reason| ConfigError {
            var: "--username".into(),
            value: None,
            reason,
        })?;
    let ssh_key = match &c.key_file {
        Some(f) => Some(read_key_file(f, c.key_passphrase_env.as_deref())?),
        None => None,
    };
    // A new user alone (`--username` without a password variable given or set) keeps the
    // password and the key: renaming the user of a key-only device needs neither again.
    let username_only = username.is_some() && std::env::var_os("ROSBACKUP_PASSWORD").is_none();
    let password = if c.no_password {
        Some(Secret::default())
    } else if c.password_env.is_none()
        && (ssh_key.is_some() || c.no_key || c.profile.is_some() || username_only)
    {
        None
    } else {
        let var = c.password_env.as_deref().unwrap_or("ROSBACKUP_PASSWORD");
        Some(password_from_env(var)?)
    };
    let key_change = match (&ssh_key, c.no_key) {
        (Some(k), _) => KeyChange::Set(k),
        (None, true) => KeyChange::Clear,
        (None, false) => KeyChange::Keep,
    };
    let store = open_store(env).await?;
    check_key(&store, &key).await?;
    let d = find(&store, device).await?;
    let profile = match &c.profile {
        None => d.credential_profile_id,
        Some(None) => None,
        Some(Some(name)) => Some(match store.find_profile(Some(d.tenant_id), name).await {
            Ok(p) => p.id,
            // A profile the device's tenant does not have: the flag's value is wrong.
            Err(StoreError::Invalid(reason)) => {
                return Err(ConfigError {
                    var: "--credential-profile".into(),
                    value: None,
                    reason,
                }
                .into());
            }
            Err(e) => return Err(store_error(e)),
        }),
    };
    let keeps_key = d.has_ssh_key && matches!(key_change, KeyChange::Keep);
    let no_password = match &password {
        Some(p) => p.is_empty(),
        None => store
            .password(&key, d.id)
            .await
            .map_err(store_error)?
            .is_empty(),
    };
    if no_password && ssh_key.is_none() && !keeps_key && profile.is_none() {
        anyhow::bail!(
            "{} would have neither a password nor a key (and no credential profile); nothing changed",
            label(&d)
        );
    }
    if profile != d.credential_profile_id {
        store
            .set_device_profile(d.id, profile)
            .await
            .map_err(store_error)?;
    }
    store
        .update_credentials(
            &key,
            d.id,
            username.as_deref(),
            password.as_ref(),
            key_change,
        )
        .await
        .map_err(store_error)?;
    if let Some(setting) = &jump {
        let change = crate::bastions::set_device_jump(&store, &key, d.id, setting)
            .await
            .map_err(store_error)?;
        println!(
            "jump host of {}: {}{}",
            label(&d),
            shown(setting),
            lifted(change)
        );
    }
    let lifted = d
        .blocked_reason
        .as_deref()
        .filter(|r| matches!(*r, "auth_failed" | "credentials_unreadable"));
    println!(
        "credentials updated for {}{}{}",
        label(&d),
        ssh_key
            .map(|k| format!("; key {} {}", k.algorithm_name(), k.fingerprint()))
            .unwrap_or_default(),
        lifted
            .map(|r| format!("; {r} block lifted, due now"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// Re-encrypt every stored password from `CREDENTIAL_ENCRYPTION_KEY` to
/// `NEW_CREDENTIAL_ENCRYPTION_KEY`.
pub(super) async fn rotate_key(env: &Env) -> anyhow::Result<ExitCode> {
    let old = credential_key(env)?;
    let new_raw = env.raw("NEW_CREDENTIAL_ENCRYPTION_KEY");
    let new = CredentialKey::from_base64(&new_raw).map_err(|e| ConfigError {
        var: "NEW_CREDENTIAL_ENCRYPTION_KEY".into(),
        value: None,
        reason: e.reason(),
    })?;
    if new_raw.trim() == env.raw("CREDENTIAL_ENCRYPTION_KEY").trim() {
        return Err(ConfigError {
            var: "NEW_CREDENTIAL_ENCRYPTION_KEY".into(),
            value: None,
            reason: "is the same as CREDENTIAL_ENCRYPTION_KEY".into(),
        }
        .into());
    }
    let store = open_store(env).await?;
    let n = store.rotate_key(&old, &new).await.map_err(|e| match e {
        // The old key is not the fleet's: a configuration error (exit 2).
        StoreError::Credentials(CredentialError::WrongKey) => ConfigError {
            var: "CREDENTIAL_ENCRYPTION_KEY".into(),
            value: None,
            reason: format!("{WRONG_KEY}; nothing changed"),
        }
        .into(),
        StoreError::Credentials(_) => anyhow::anyhow!(
            "a stored password or key does not open with CREDENTIAL_ENCRYPTION_KEY (is it the current key, or was the row altered?); nothing changed"
        ),
        other => anyhow::anyhow!(describe(&other)),
    })?;
    println!(
        "re-encrypted {n} device passwords (with their SSH keys and every credential profile); now set CREDENTIAL_ENCRYPTION_KEY to the new key everywhere and restart"
    );
    Ok(ExitCode::SUCCESS)
}
