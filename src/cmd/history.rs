//! `rosbackup history`: a device's config history as the archiver keeps it.
//!
//! The operator's view of "what changed on this router, and when": the list of distinct
//! versions (an unchanged config is one version seen many times), the diff between two
//! of them with the menus it touched, or one version's normalized text. It reads the
//! archive directly (`DATABASE_URL` and `ARCHIVE_ENCRYPTION_KEY`), not through the API,
//! and accepts the id of a removed device because its history outlives it. Versions are
//! checked to belong to the device named, so a mistyped id cannot print another
//! device's config.
//!
//! `--binaries` lists the device's binary `.backup` files (issue #19) instead; with
//! `--download-binary ID --out FILE` it writes one (decrypted from our storage; the file
//! itself stays encrypted with the device's backup password, which `--show-password`
//! prints). Both need `CREDENTIAL_ENCRYPTION_KEY`, are admin operations by construction
//! (database access and the fleet's key), and write an audit row (`binary_audit`).

use super::shared::{open_store, print_table, store_error, time};
use crate::config::Env;
use crate::store::StoreError;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Device id or name (a removed device: its id).
    device: String,
    /// Print the unified diff from version A to version B (ids from the list).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    diff: Option<Vec<i64>>,
    /// Print one version's normalized text (it holds secrets: admin use).
    #[arg(long, value_name = "VERSION")]
    text: Option<i64>,
    /// Most versions listed.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List the device's stored binary backups (`/system backup` files).
    #[arg(long, conflicts_with_all = ["diff", "text"])]
    binaries: bool,
    /// Write binary backup ID to --out (admin: audited).
    #[arg(long, value_name = "ID", requires = "out", conflicts_with_all = ["diff", "text"])]
    download_binary: Option<i64>,
    /// Where --download-binary writes the file (refuses to overwrite).
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// With --download-binary: also print the file's encryption password (audited).
    #[arg(long, requires = "download_binary")]
    show_password: bool,
}

/// The versions of a device, the diff between two, or one version's text.
pub async fn run(env: &Env, a: HistoryArgs) -> anyhow::Result<ExitCode> {
    let HistoryArgs {
        device,
        diff,
        text,
        limit,
        json,
        binaries,
        download_binary,
        out,
        show_password,
    } = a;
    if binaries || download_binary.is_some() {
        let store = open_store(env).await?;
        let device_id = match store.find_device(&device).await {
            Ok(d) => d.id,
            Err(StoreError::NotFound(id)) => id,
            Err(e) => return Err(store_error(e)),
        };
        return match (download_binary, out) {
            (Some(id), Some(out)) => {
                download(env, &store, device_id, id, &out, show_password).await
            }
            _ => list_binaries(&store, device_id, limit, json).await,
        };
    }
    use crate::archive::History;
    let key = crate::config::archive_key(env)?;
    let store = open_store(env).await?;
    // A reader checks the key and never records it (the archiver does).
    let check = crate::archive::ArchiveStore::new(store.clone(), key.clone())
        .check_key(crate::archive::keycheck::Record::No)
        .await;
    match check {
        Ok(_) => {}
        Err(crate::archive::ArchiveError::WrongKey) => {
            return Err(crate::archive::keycheck::wrong_key_error().into());
        }
        Err(e) => return Err(e.into()),
    }
    // A removed device keeps its history: accept its id even when it is not in `devices`.
    let device_id = match store.find_device(&device).await {
        Ok(d) => d.id,
        Err(StoreError::NotFound(id)) => id,
        Err(e) => return Err(store_error(e)),
    };
    let history = History::new(store, key);
    let not_found = |id: i64| anyhow::anyhow!("version {id} of device {device_id} not found");
    let mine = |v: &Option<crate::archive::VersionInfo>| {
        v.as_ref().is_some_and(|v| v.device_id == device_id)
    };
    if let Some(ids) = diff {
        // clap takes exactly two values (`num_args = 2`); say so rather than panic.
        let [a, b] = ids[..] else {
            anyhow::bail!("--diff takes two version ids");
        };
        for id in [a, b] {
            if !mine(&history.version(id, None).await?) {
                return Err(not_found(id));
            }
        }
        let d = history
            .diff(a, b, None)
            .await?
            .ok_or_else(|| not_found(a))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            println!("# menus: {}", d.menus.join(", "));
            println!("# lines: +{} -{}", d.added, d.removed);
            print!("{}", d.unified);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = text {
        if !mine(&history.version(id, None).await?) {
            return Err(not_found(id));
        }
        let bytes = history
            .text_bytes(id, None)
            .await?
            .ok_or_else(|| not_found(id))?;
        std::io::stdout().write_all(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let versions = history.versions(device_id, None, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        println!("no archived versions for {device_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.id.to_string(),
                time(Some(v.first_seen_at)),
                time(Some(v.last_seen_at)),
                v.seen_count.to_string(),
                v.sha256.get(..12).unwrap_or(&v.sha256).to_string(),
                v.size.to_string(),
                v.routeros_version.clone().unwrap_or_default(),
                v.previous_version_id
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                if v.previous_version_id.is_some() {
                    format!(
                        "+{} -{} {}",
                        v.added_lines,
                        v.removed_lines,
                        v.changed_menus.join(", ")
                    )
                } else {
                    "first version".to_string()
                },
            ]
        })
        .collect();
    print_table(
        &[
            "VERSION",
            "FIRST SEEN",
            "LAST SEEN",
            "SEEN",
            "SHA256",
            "BYTES",
            "ROUTEROS",
            "PREV",
            "CHANGES",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

async fn list_binaries(
    store: &crate::store::Store,
    device_id: uuid::Uuid,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // The CLI is the operator's, with the database's rights: every tenant.
    let list = crate::binary::store::list(store, device_id, None, limit)
        .await
        .map_err(store_error)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    // The step's failures keep no file: show its last runs too, or they are invisible.
    let runs = crate::binary::store::recent_runs(store, device_id, 5)
        .await
        .map_err(store_error)?;
    let failed: Vec<Vec<String>> = runs
        .iter()
        .filter(|r| r.status != "success")
        .map(|r| {
            vec![
                time(Some(r.finished_at)),
                r.error_kind.clone().unwrap_or_else(|| "-".into()),
                r.error_message.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if !failed.is_empty() {
        println!("failed binary runs among the last {}:", runs.len());
        print_table(&["FINISHED", "KIND", "MESSAGE"], &failed);
        println!();
    }
    if list.is_empty() {
        println!("no binary backups for {device_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                time(Some(b.collected_at)),
                b.size.to_string(),
                b.sha256.clone(),
                b.config_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                b.format.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "COLLECTED",
            "BYTES",
            "SHA256",
            "CONFIG VERSION",
            "FORMAT",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

async fn download(
    env: &Env,
    store: &crate::store::Store,
    device_id: uuid::Uuid,
    id: i64,
    out: &std::path::Path,
    show_password: bool,
) -> anyhow::Result<ExitCode> {
    let key =
        crate::credentials::CredentialKey::from_base64(&env.raw("CREDENTIAL_ENCRYPTION_KEY"))?;
    match store.check_credential_key(&key).await {
        Ok(_) => {}
        Err(StoreError::Credentials(e)) => return Err(e.into()),
        Err(e) => return Err(store_error(e)),
    }
    // Open the file first: a refused path must not leave an audit row without a file.
    // Owner-only: the file holds the router's users, certificates and keys (the backup
    // password opens it).
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let actor = format!(
        "cli:{}",
        // Containers and services often have no USER: the uid still says who it was.
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid-{}", real_uid()))
    );
    let access = if show_password {
        crate::binary::store::Access::FileAndPassword
    } else {
        crate::binary::store::Access::File
    };
    let opened =
        match crate::binary::store::open(store, &key, id, device_id, None, &actor, access).await {
            Ok(Some(o)) => o,
            other => {
                drop(file);
                let _ = std::fs::remove_file(out);
                return Err(match other {
                    Err(e) => store_error(e),
                    _ => anyhow::anyhow!("binary backup {id} of device {device_id} not found"),
                });
            }
        };
    if let Err(e) = file.write_all(&opened.data).and_then(|()| file.sync_all()) {
        // Nothing half-written left behind (the audit row stays: the file was opened).
        drop(file);
        let _ = std::fs::remove_file(out);
        anyhow::bail!("cannot write {}: {e}", out.display());
    }
    eprintln!(
        "wrote binary backup {id} ({} bytes, sha256 {}) to {}",
        opened.data.len(),
        opened.info.sha256,
        out.display()
    );
    if let Some(p) = opened.password {
        // Stdout, on request only: the password opens the file on a router
        // (`/system backup load name=… password=…`).
        println!("{}", p.expose());
    }
    Ok(ExitCode::SUCCESS)
}

/// The process's real uid (for the audit row when no user name is in the environment).
fn real_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
