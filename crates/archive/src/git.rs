//! The optional git output (`ARCHIVE_GIT_DIR`): what Oxidized users rely on.
//!
//! A **bare** repository (created if missing) with one file per device,
//! `<tenant_id>/<device name>.rsc` (the id when the name is not a safe file name or the
//! device was removed), and one commit per new version, in version order, authored at the
//! time the config was first collected. Clone it to read it (`git clone $ARCHIVE_GIT_DIR`,
//! `git log -p <tenant>/<device>.rsc`). The files are plaintext configs, secrets included:
//! the directory is created `0700`; protect it like the database key.
//!
//! Why it follows PostgreSQL instead of the consumer: the output reads committed versions
//! with an id above the last one it exported, and the head commit carries that id
//! (`Rosbackup-Version: N` trailer). A crash between a database commit and a git commit
//! loses nothing (the next round exports it) and a restart recommits nothing. Version ids
//! are allocated in commit order (a global lock on insert, see `archive::store`), so
//! "every id above N" never skips one. Each replica may have its own directory (each is a
//! complete history); two processes must not share one (the ref update of the loser fails
//! and it retries, but that is wasted work).
//!
//! Written with `git2` (libgit2, no network transports), never by running `git`.
//! A renamed device continues in a new file; the old file keeps its history.

use super::store::ExportRow;
use super::{ArchiveError, ArchiveStore, short};
use git2::{Oid, Repository, Signature, build::TreeUpdateBuilder};
use std::path::PathBuf;

const TRAILER: &str = "Rosbackup-Version: ";
const BATCH: i64 = 50;

/// A git repository that receives every new version.
#[derive(Debug, Clone)]
pub struct GitOutput {
    dir: PathBuf,
}

/// One version to commit, decrypted.
struct Pending {
    row: ExportRow,
    text: Vec<u8>,
}

impl GitOutput {
    pub fn new(dir: PathBuf) -> Self {
        GitOutput { dir }
    }

    /// Open the repository, creating a bare one (mode 0700) when the directory has none.
    pub fn open(&self) -> Result<Repository, ArchiveError> {
        match Repository::open(&self.dir) {
            Ok(r) => Ok(r),
            Err(_) => {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| ArchiveError::Git(format!("{}: {e}", self.dir.display())))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ =
                        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
                }
                Ok(Repository::init_bare(&self.dir)?)
            }
        }
    }

    /// The id of the last version committed (0 for an empty repository).
    pub fn last_exported(&self) -> Result<i64, ArchiveError> {
        let repo = self.open()?;
        last_exported(&repo)
    }

    /// Commit every version above the last exported one. Returns how many were committed.
    pub async fn export_pending(&self, archive: &ArchiveStore) -> Result<usize, ArchiveError> {
        let mut total = 0;
        loop {
            let me = self.clone();
            let cursor = tokio::task::spawn_blocking(move || me.last_exported())
                .await
                .map_err(|e| ArchiveError::Git(e.to_string()))??;
            let rows = archive.versions_after(cursor, BATCH).await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut pending = Vec::with_capacity(rows.len());
            for row in rows {
                let text =
                    archive
                        .codec()
                        .open(&row.info.device_id, &row.info.sha256, &row.text_enc)?;
                pending.push(Pending { row, text });
            }
            let me = self.clone();
            total += tokio::task::spawn_blocking(move || me.commit_all(&pending))
                .await
                .map_err(|e| ArchiveError::Git(e.to_string()))??;
        }
    }

    fn commit_all(&self, pending: &[Pending]) -> Result<usize, ArchiveError> {
        let repo = self.open()?;
        let mut n = 0;
        for p in pending {
            // Another process may have moved on meanwhile: never commit a version twice.
            if p.row.info.id <= last_exported(&repo)? {
                continue;
            }
            commit_version(&repo, p)?;
            n += 1;
        }
        Ok(n)
    }
}

fn last_exported(repo: &Repository) -> Result<i64, ArchiveError> {
    let head = match repo.head() {
        Ok(h) => h,
        Err(e)
            if e.code() == git2::ErrorCode::UnbornBranch
                || e.code() == git2::ErrorCode::NotFound =>
        {
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let commit = head.peel_to_commit()?;
    let msg = commit.message().unwrap_or_default();
    Ok(msg
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(TRAILER))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// `<tenant>/<name>.rsc`, with the id standing in for a name that is not a plain file name.
pub fn device_path(row: &ExportRow) -> String {
    let safe = row.device_name.as_deref().filter(|n| {
        !n.is_empty()
            && !n.starts_with('.')
            && n.len() <= 200
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'))
    });
    let name = match safe {
        Some(n) => n.to_string(),
        None => row.info.device_id.to_string(),
    };
    format!("{}/{name}.rsc", row.info.tenant_id)
}

fn commit_version(repo: &Repository, p: &Pending) -> Result<Oid, ArchiveError> {
    let v = &p.row.info;
    let path = device_path(&p.row);
    let blob = repo.blob(&p.text)?;
    let parent = match repo.head() {
        Ok(h) => Some(h.peel_to_commit()?),
        Err(_) => None,
    };
    let tree_oid = match &parent {
        Some(c) => {
            let base = c.tree()?;
            let mut b = TreeUpdateBuilder::new();
            b.upsert(path.as_str(), blob, git2::FileMode::Blob);
            b.create_updated(repo, &base)?
        }
        None => {
            let empty = repo.treebuilder(None)?.write()?;
            let base = repo.find_tree(empty)?;
            let mut b = TreeUpdateBuilder::new();
            b.upsert(path.as_str(), blob, git2::FileMode::Blob);
            b.create_updated(repo, &base)?
        }
    };
    let tree = repo.find_tree(tree_oid)?;
    let name = p
        .row
        .device_name
        .clone()
        .unwrap_or_else(|| v.device_id.to_string());
    let subject = match &p.row.previous_sha256 {
        Some(prev) => format!("{name}: {} -> {}", short(prev), short(&v.sha256)),
        None => format!("{name}: first version {}", short(&v.sha256)),
    };
    let menus = if v.changed_menus.is_empty() {
        "-".to_string()
    } else {
        v.changed_menus.join(", ")
    };
    let message = format!(
        "{subject}\n\nChanged menus: {menus}\nLines: +{} -{}\n\nDevice: {}\nTenant: {}\nSHA256: {}\nPrevious-SHA256: {}\n{TRAILER}{}\n",
        v.added_lines,
        v.removed_lines,
        v.device_id,
        v.tenant_id,
        v.sha256,
        p.row.previous_sha256.as_deref().unwrap_or("-"),
        v.id,
    );
    let when = git2::Time::new(v.first_seen_at.timestamp(), 0);
    let sig = Signature::new("rosbackup", "rosbackup@localhost", &when)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    Ok(repo.commit(Some("HEAD"), &sig, &sig, &message, &tree, &parents)?)
}
