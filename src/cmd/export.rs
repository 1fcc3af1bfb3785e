//! `rosbackup export`: one export from one device, by exactly the worker's code path.
//!
//! It is the tool for "why does this router fail?" and for trying a router before it is
//! added: no database and no queue, only the SSH collection, the checks and the
//! normalization a scheduled backup runs (and, with `--publish`, the same NATS event), so
//! what works here works in the fleet. The password comes from an environment variable,
//! never a flag (a `--key-file` is tried first when given, as in the fleet), and `--output` is written readable by its owner only: an export holds
//! secrets. Failures of the device print the worker's error kind (`--json` for scripts).

use crate::Secret;
use crate::backup;
use crate::config::{BackupSettings, ConfigError, Env, publisher_config};
use crate::device::Target;
use crate::normalize::Version;
use crate::snapshot::Publisher;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::Instrument;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The router's IP address or DNS name.
    #[arg(long, value_parser = host_arg)]
    host: String,
    /// Its SSH port.
    #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The user to log in as.
    #[arg(long)]
    user: String,
    /// Name of the environment variable holding the password (never pass it as a flag).
    /// With --key-file the password is optional: tried after the key when the variable
    /// is set.
    #[arg(long, default_value = "ROSBACKUP_PASSWORD")]
    password_env: String,
    /// Log in with this private key (OpenSSH or PEM; Ed25519 or RSA) before the password.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Name of the environment variable holding the key file's passphrase.
    #[arg(long, value_name = "VAR", requires = "key_file")]
    key_passphrase_env: Option<String>,
    /// Reach the device through this jump host (bastion), as `ssh -J`:
    /// `[user@]host[:port]`. Without --jump-password-env or --jump-key-file the bastion
    /// is tried with the device's user and key, as OpenSSH's ProxyJump does.
    #[arg(long, value_name = "[USER@]HOST[:PORT]")]
    jump_host: Option<String>,
    /// Name of the environment variable holding the jump host's password.
    #[arg(long, value_name = "VAR", requires = "jump_host")]
    jump_password_env: Option<String>,
    /// A private key for the jump host.
    #[arg(long, value_name = "FILE", requires = "jump_host")]
    jump_key_file: Option<PathBuf>,
    /// Name of the environment variable holding --jump-key-file's passphrase.
    #[arg(long, value_name = "VAR", requires = "jump_key_file")]
    jump_key_passphrase_env: Option<String>,
    /// Pinned host-key fingerprint of the jump host (`SHA256:…`); without it the key is
    /// trusted and printed (`bastion` line, `bastion_fingerprint` with --json).
    #[arg(long, requires = "jump_host", value_parser = fingerprint_arg)]
    jump_known_fingerprint: Option<String>,
    /// Pinned host-key fingerprint (`SHA256:…`); without it the key is trusted and printed.
    #[arg(long, value_parser = fingerprint_arg)]
    known_fingerprint: Option<String>,
    /// RouterOS major version; without it the device is asked.
    #[arg(long, value_parser = ["6", "7"])]
    routeros_version: Option<String>,
    /// Command timeout in seconds, 1 to 86400 (default: CONFIG_BACKUP_COMMAND_TIMEOUT or 60).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: Option<u64>,
    /// Connect/handshake timeout in seconds, 1 to 86400 (default:
    /// CONFIG_BACKUP_CONNECT_TIMEOUT or 15).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    connect_timeout: Option<u64>,
    /// Write the raw export here (owner-only; its folder must exist). A failed export
    /// leaves an existing file as it was.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print a JSON result on stdout.
    #[arg(long)]
    json: bool,
    /// Also publish the snapshot to NATS_URL.
    #[arg(long)]
    publish: bool,
    /// Device id for the snapshot event (default: derived from host and port).
    #[arg(long)]
    device_id: Option<uuid::Uuid>,
    /// Tenant id for the snapshot event (default: the nil UUID).
    #[arg(long)]
    tenant_id: Option<uuid::Uuid>,
    /// Normalization for the hash and a published snapshot: 1 (the seed's) or 2.
    #[arg(long, value_parser = super::normalize::parse_version)]
    normalization_version: Option<Version>,
    /// Export without secrets (`/export` on 7, `hide-sensitive` on 6).
    #[arg(long)]
    no_secrets: bool,
    /// Largest export accepted, in bytes.
    #[arg(long)]
    max_output: Option<usize>,
}

/// Collect (and with `--publish` publish) one export; exit 1 with the error kind when the
/// device or NATS fails.
pub async fn run(env: Env, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut settings = BackupSettings::from_env(&env)?;
    if let Some(t) = a.timeout {
        settings.export.command_timeout = Duration::from_secs(t);
    }
    if let Some(t) = a.connect_timeout {
        settings.export.connect_timeout = Duration::from_secs(t);
    }
    if let Some(path) = &a.output {
        output_folder_exists(path)?;
    }
    if let Some(m) = a.max_output {
        settings.export.max_output = m;
    }
    if a.no_secrets {
        settings.export.sensitive = false;
    }
    if let Some(v) = a.normalization_version {
        settings.normalization = v;
    }
    let key = match &a.key_file {
        Some(f) => Some(super::shared::read_key_file(
            f,
            a.key_passphrase_env.as_deref(),
        )?),
        None => None,
    };
    let password = match std::env::var(&a.password_env) {
        Ok(p) => p,
        // With a key, no password is fine: the key alone is tried.
        Err(_) if key.is_some() => String::new(),
        Err(_) => {
            return Err(ConfigError {
                var: a.password_env.clone(),
                value: None,
                reason: "the password variable is not set (see --password-env, or --key-file)"
                    .into(),
            }
            .into());
        }
    };
    let publisher = if a.publish {
        let cfg = publisher_config(&env)?;
        match Publisher::connect(cfg).await {
            Ok(p) => Some(p),
            Err(e) => return Ok(fail(a.json, "publish_failed", &e.to_string())),
        }
    } else {
        None
    };
    let jump = match &a.jump_host {
        None => None,
        Some(spec) => {
            let (user, host, port) =
                crate::device::parse_jump_host(spec).map_err(|reason| ConfigError {
                    var: "--jump-host".into(),
                    value: None,
                    reason,
                })?;
            let password = match &a.jump_password_env {
                Some(var) => Secret::new(std::env::var(var).map_err(|_| {
                    ConfigError {
                        var: var.clone(),
                        value: None,
                        reason:
                            "the jump host password variable is not set (see --jump-password-env)"
                                .into(),
                    }
                })?),
                None => Secret::default(),
            };
            let jump_key = match &a.jump_key_file {
                Some(f) => Some(super::shared::read_key_file_as(
                    f,
                    a.jump_key_passphrase_env.as_deref(),
                    super::shared::KeyFlags::JUMP,
                )?),
                None => None,
            };
            // Without credentials of its own the bastion gets the device's user and key
            // (ProxyJump).
            Some(crate::device::JumpHost {
                host,
                port,
                username: user.unwrap_or_default(),
                password,
                key: jump_key,
                known_fingerprint: a.jump_known_fingerprint.clone(),
            })
        }
    };
    let target = Target {
        host: a.host.clone(),
        port: a.port,
        username: a.user.clone(),
        password: Secret::new(password),
        key,
        jump,
        known_fingerprint: a.known_fingerprint.clone(),
        routeros_version: a.routeros_version.clone(),
    };
    let device_id = a.device_id.unwrap_or_else(|| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("ssh://{}:{}", a.host, a.port).as_bytes(),
        )
    });
    let tenant_id = a.tenant_id.unwrap_or_default();
    let span = tracing::info_span!("export", device_id = %device_id, job_id = "cli");
    let collected = match backup::collect(&target, &settings.export, settings.normalization)
        .instrument(span.clone())
        .await
    {
        Ok(c) => c,
        Err(e) => return Ok(fail(a.json, e.kind().as_str(), &e.to_string())),
    };
    if let Some(path) = &a.output {
        write_private(path, &collected.export.raw)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut published = None;
    if let Some(p) = &publisher {
        match backup::publish(
            p,
            &collected,
            &device_id.to_string(),
            &tenant_id.to_string(),
        )
        .instrument(span)
        .await
        {
            Ok((_, receipt)) => published = Some(receipt),
            Err(e) => return Ok(fail(a.json, "publish_failed", &e.to_string())),
        }
    }
    let x = &collected.export;
    if a.json {
        let mut v = serde_json::json!({
            "fingerprint": x.fingerprint,
            "sha256_hash": collected.sha256,
            "bytes": x.raw.len(),
            "routeros_version": x.routeros_version,
            "normalization_version": collected.normalization_version.as_u8(),
            "duration_ms": x.timings.total.as_millis() as u64,
        });
        if let Some(fp) = &x.bastion_fingerprint {
            v["bastion_fingerprint"] = fp.clone().into();
        }
        if let Some(r) = &published {
            v["stream"] = r.stream.clone().into();
            v["sequence"] = r.sequence.into();
            v["duplicate"] = r.duplicate.into();
        }
        println!("{v}");
    } else {
        println!("sha256      {}", collected.sha256);
        println!("fingerprint {}", x.fingerprint);
        if let (Some(fp), Some(j)) = (&x.bastion_fingerprint, &target.jump) {
            println!(
                "bastion     {fp} ({})",
                crate::jump::display(None, &j.host, j.port)
            );
        }
        println!("bytes       {}", x.raw.len());
        println!(
            "version     {} (command {:?})",
            x.routeros_version.as_deref().unwrap_or("unknown"),
            x.command
        );
        println!(
            "algorithms  {} / {} / {} / {}{}",
            x.negotiated.kex,
            x.negotiated.host_key,
            x.negotiated.cipher,
            x.negotiated.mac,
            if x.negotiated.uses_legacy() {
                " (legacy)"
            } else {
                ""
            }
        );
        println!("duration    {} ms", x.timings.total.as_millis());
        if let Some(r) = &published {
            println!(
                "published   {} seq {}{}",
                r.stream,
                r.sequence,
                if r.duplicate { " (duplicate)" } else { "" }
            );
        }
        if collected.export.error_exporting_lines > 0 {
            eprintln!(
                "warning: {} '#error exporting' line(s): RouterOS could not export some menus",
                collected.export.error_exporting_lines
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--host`: an IP address or a DNS name, as `devices add` takes it.
fn host_arg(s: &str) -> Result<String, String> {
    crate::inventory::parse_host(s)
}

/// `--known-fingerprint`: `SHA256:` and 43 base64 characters, as `ssh-keygen -lf` prints.
/// A typo is refused here, before any connection, rather than reported by the device.
fn fingerprint_arg(s: &str) -> Result<String, String> {
    let s = s.trim();
    if crate::device::is_fingerprint(s) {
        Ok(s.to_string())
    } else {
        Err("not in `SHA256:<43 base64 characters>` form (as `ssh-keygen -lf` prints)".into())
    }
}

/// `--output` must name a file in an existing folder: checked before the export, so a
/// typo does not cost a whole export first.
fn output_folder_exists(path: &std::path::Path) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError {
        var: "--output".into(),
        value: Some(path.display().to_string()),
        reason: reason.into(),
    };
    if path.is_dir() {
        return Err(bad("is a folder; name a file"));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !folder.is_dir() {
        return Err(bad("its folder does not exist"));
    }
    Ok(())
}

/// The export holds secrets: the file is readable by its owner only. A regular file (or
/// a new one) is written beside the target under a name of its own (`create_new`: never
/// through a file or link someone placed there) and renamed over it, so a write that
/// fails leaves no half file and an existing file as it was. Anything else — a link, a
/// pipe, `/dev/stdout` — is written through, as it is.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let regular_or_new = match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type().is_file(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    if !regular_or_new {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        return f.write_all(bytes);
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let tmp = path.with_file_name(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A failure of the device or of NATS: the error kind and message, as JSON on stdout with
/// `--json`, else on stderr; exit 1.
fn fail(json: bool, kind: &str, message: &str) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"error_kind": kind, "message": message})
        );
    } else {
        eprintln!("error ({kind}): {message}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::write_private;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_is_replaced_owner_only_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.rsc");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(dir.path()), ["r.rsc"]);
    }

    #[test]
    fn a_link_is_written_through_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.rsc");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.rsc");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_private(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["link.rsc", "target.rsc"]);
    }
}
