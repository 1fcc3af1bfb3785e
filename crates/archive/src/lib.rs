//! Config history: what changed on a router, and when.
//!
//! Snapshots on NATS vanish after the stream's retention. The archiver
//! (`rosbackup-archiver`, or `rosbackup archiver`) is a durable JetStream consumer of
//! `<prefix>.>` (default `config.snapshot.>`) that keeps every *distinct* configuration of
//! every device in PostgreSQL, and answers "what changed on this router, and when?" through
//! [`History`] (the dashboard, `rosbackup history`).
//!
//! Decisions, and why:
//!
//! * **A version is a distinct normalized text**, compared by its SHA-256. A snapshot whose
//!   hash equals one of the device's `ARCHIVE_RECENT_VERSIONS` most recently seen versions
//!   (not only the latest) is recorded as a *sighting* of that version (`seen_count`,
//!   `last_seen_at`), so a value flapping between two states makes two versions, not one
//!   per poll. Flapping back is visible in the sightings, but it is neither a new version
//!   nor a notification.
//! * **Everything is compared as normalization v2.** The event's `sha256_hash` is checked
//!   against the text it carries (in the event's own normalization; a mismatch is a
//!   malformed message), then the text is normalized with v2 — a no-op for v2 text (v2 is
//!   idempotent), and for v1 text (the seed's, which keeps the timestamp header) it removes
//!   the header and runtime annotations, so a v1 publisher does not create a version per
//!   poll. Stored hashes are v2 hashes (`normalization = 2`).
//! * **At rest** a version is `AES-256-GCM(zstd(text))` under its own key
//!   (`ARCHIVE_ENCRYPTION_KEY`, not the credential key: whoever may read passwords need not
//!   read configs and vice versa), with associated data binding the device id and the hash,
//!   so a ciphertext moved to another row does not open. Configs hold secrets: the text is
//!   never logged, never in an error, never in a webhook.
//! * **Idempotent by message identity; commit, then ack** (see [`consumer`]): a sighting is
//!   keyed on the message's `Nats-Msg-Id` (else stream + sequence), so a message redelivered
//!   after a crash between commit and ack changes nothing.
//! * **Unknown device → kept aside** in `archive_orphans` (encrypted the same way) and
//!   re-homed into the history, in collection order, once the device exists.
//! * **Retention** per tenant (`archive_retention`, defaults `ARCHIVE_KEEP_VERSIONS` and
//!   `ARCHIVE_MAX_AGE_DAYS`): a device keeps its newest N versions (by last sighting) and
//!   none last seen longer ago than the age limit — except the current version of a device
//!   that still exists, which is never deleted.
//! * **Outputs after the commit, from PostgreSQL**: the git repository ([`git`]) and the
//!   webhook ([`webhook`]) read what was committed, so a crash never loses an output and
//!   a restart never repeats one (git: the last exported version id is in the head commit;
//!   webhook: an outbox row per new version).

pub mod consumer;
pub mod diff;
pub mod git;
pub mod keycheck;
pub mod settings;
pub mod store;
pub mod webhook;

use chrono::{DateTime, Utc};
use rosbackup_core::credentials::{CredentialError, CredentialKey};
use rosbackup_core::store::Store;
use uuid::Uuid;

pub use consumer::{Archiver, ArchiverSettings};
pub use keycheck::ArchiveKeyCheck;
pub use store::{ArchiveStore, Ingested, Retention};

/// Why an archive operation failed. Messages never carry config text or key material.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(
        "archived config {0} could not be decrypted (wrong ARCHIVE_ENCRYPTION_KEY, or the row was altered)"
    )]
    Decrypt(String),
    /// The archive key does not open the archive's key check value (or, before one is
    /// stored, any of the newest archived texts): see [`keycheck`].
    #[error("ARCHIVE_ENCRYPTION_KEY {}", keycheck::WRONG_ARCHIVE_KEY)]
    WrongKey,
    #[error("archived config {0} could not be decompressed")]
    Decompress(String),
    #[error("git output: {0}")]
    Git(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("webhook: {0}")]
    Webhook(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<git2::Error> for ArchiveError {
    fn from(e: git2::Error) -> Self {
        ArchiveError::Git(e.message().to_string())
    }
}

/// Seals and opens archived texts: zstd, then AES-256-GCM bound to device and hash.
#[derive(Clone, Debug)]
pub struct Codec {
    key: CredentialKey,
}

/// zstd level: ~10× on exports, fast enough to be invisible next to the database round trip.
const ZSTD_LEVEL: i32 = 3;
/// Largest text we agree to decompress (a config over this is not a RouterOS export).
const MAX_TEXT: usize = 256 << 20;

impl Codec {
    pub fn new(key: CredentialKey) -> Self {
        Codec { key }
    }

    fn aad(device_id: &Uuid, sha256: &str) -> Vec<u8> {
        let mut aad = b"rosbackup-archive/v1\0".to_vec();
        aad.extend_from_slice(device_id.as_bytes());
        aad.extend_from_slice(sha256.as_bytes());
        aad
    }

    /// `AES-256-GCM(zstd(text))` bound to `device_id` and `sha256`.
    pub fn seal(&self, device_id: &Uuid, sha256: &str, text: &[u8]) -> Vec<u8> {
        // zstd only fails on allocation failure or invalid parameters; store uncompressed
        // would make the format ambiguous, so a failure here is an (unreachable) empty frame.
        let compressed = zstd::bulk::compress(text, ZSTD_LEVEL).unwrap_or_default();
        self.key
            .seal_bytes(&Self::aad(device_id, sha256), &compressed)
    }

    /// Does the key open `sealed` as sealed for this device and hash (the cipher's check
    /// only: no decompression)?
    pub fn opens(&self, device_id: &Uuid, sha256: &str, sealed: &[u8]) -> bool {
        self.key
            .open_bytes(&Self::aad(device_id, sha256), sealed)
            .is_ok()
    }

    /// The text sealed by [`Codec::seal`] for the same device and hash.
    pub fn open(
        &self,
        device_id: &Uuid,
        sha256: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, ArchiveError> {
        let what = || format!("{device_id}/{}", short(sha256));
        let compressed = self
            .key
            .open_bytes(&Self::aad(device_id, sha256), sealed)
            .map_err(|_: CredentialError| ArchiveError::Decrypt(what()))?;
        let text = zstd::stream::decode_all(std::io::Read::take(
            std::io::Cursor::new(compressed),
            MAX_TEXT as u64,
        ))
        .map_err(|_| ArchiveError::Decompress(what()))?;
        if rosbackup_core::normalize::hash(&text) != sha256 {
            return Err(ArchiveError::Decrypt(what()));
        }
        Ok(text)
    }
}

/// First 8 hex digits of a hash, for messages.
pub fn short(sha256: &str) -> &str {
    sha256.get(..8).unwrap_or(sha256)
}

/// One stored version of a device's config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub id: i64,
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub sha256: String,
    pub size: i64,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub seen_count: i64,
    pub routeros_version: Option<String>,
    /// The device's version before this one appeared (None: the first, or it was deleted).
    pub previous_version_id: Option<i64>,
    /// Menus that differ from the previous version (empty for the first).
    pub changed_menus: Vec<String>,
    pub added_lines: i32,
    pub removed_lines: i32,
}

/// A diff between two versions, computed on the normalized texts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct VersionDiff {
    pub from_id: i64,
    pub to_id: i64,
    pub unified: String,
    pub menus: Vec<String>,
    pub added: usize,
    pub removed: usize,
}

/// A new version of some device (what the dashboard lists as "recent changes").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Change {
    pub device_id: Uuid,
    /// The device's current name; its id when the device was removed.
    pub device_name: String,
    pub tenant_id: Uuid,
    pub version_id: i64,
    /// None for a device's first version.
    pub previous_version_id: Option<i64>,
    /// When the new config was first collected.
    pub at: DateTime<Utc>,
    pub menus: Vec<String>,
}

/// One snapshot received for a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sighting {
    pub collected_at: DateTime<Utc>,
    pub sha256: String,
    pub version_id: Option<i64>,
    pub new_version: bool,
}

/// A snapshot of a device that is not in the device store (yet).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct OrphanInfo {
    pub id: i64,
    pub device_id: Uuid,
    pub event_tenant: String,
    pub sha256: String,
    pub size: i64,
    pub collected_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// Read access to the history, for the dashboard, the API and `rosbackup history`.
///
/// Every method takes the caller's tenant: `Some(t)` restricts to tenant `t` in SQL (another
/// tenant's version is `None`/absent, exactly like a missing one); `None` is an unscoped
/// (admin) caller.
#[derive(Clone, Debug)]
pub struct History {
    archive: ArchiveStore,
}

impl History {
    pub fn new(store: Store, key: CredentialKey) -> Self {
        History {
            archive: ArchiveStore::new(store, key),
        }
    }

    pub fn archive(&self) -> &ArchiveStore {
        &self.archive
    }

    /// A device's versions, newest first (by first sighting).
    pub async fn versions(
        &self,
        device_id: Uuid,
        tenant: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<VersionInfo>, ArchiveError> {
        self.archive.versions(device_id, tenant, limit).await
    }

    /// One version's metadata.
    pub async fn version(
        &self,
        version_id: i64,
        tenant: Option<Uuid>,
    ) -> Result<Option<VersionInfo>, ArchiveError> {
        self.archive.version(version_id, tenant).await
    }

    /// The exact normalized bytes of a version (admin download).
    pub async fn text_bytes(
        &self,
        version_id: i64,
        tenant: Option<Uuid>,
    ) -> Result<Option<Vec<u8>>, ArchiveError> {
        self.archive.text(version_id, tenant).await
    }

    /// A version's normalized text (invalid UTF-8 replaced; see [`History::text_bytes`]).
    pub async fn text(
        &self,
        version_id: i64,
        tenant: Option<Uuid>,
    ) -> Result<Option<String>, ArchiveError> {
        Ok(self
            .text_bytes(version_id, tenant)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The diff from one version to another (any two the caller may see; usually of the
    /// same device). `None` when either is missing or not the caller's.
    pub async fn diff(
        &self,
        from_id: i64,
        to_id: i64,
        tenant: Option<Uuid>,
    ) -> Result<Option<VersionDiff>, ArchiveError> {
        let (Some(from), Some(to)) = (
            self.version(from_id, tenant).await?,
            self.version(to_id, tenant).await?,
        ) else {
            return Ok(None);
        };
        let (Some(a), Some(b)) = (
            self.text(from_id, tenant).await?,
            self.text(to_id, tenant).await?,
        ) else {
            return Ok(None);
        };
        let summary = diff::summarize(&a, &b);
        Ok(Some(VersionDiff {
            from_id,
            to_id,
            unified: diff::unified(
                &a,
                &b,
                &format!("{}@{} ({})", from.device_id, from.id, short(&from.sha256)),
                &format!("{}@{} ({})", to.device_id, to.id, short(&to.sha256)),
            ),
            menus: summary.menus,
            added: summary.added,
            removed: summary.removed,
        }))
    }

    /// The diff between a version and the one before it; `None` for a first version.
    pub async fn diff_to_previous(
        &self,
        version_id: i64,
        tenant: Option<Uuid>,
    ) -> Result<Option<VersionDiff>, ArchiveError> {
        match self.version(version_id, tenant).await? {
            Some(VersionInfo {
                previous_version_id: Some(prev),
                ..
            }) => self.diff(prev, version_id, tenant).await,
            _ => Ok(None),
        }
    }

    /// New versions across the fleet (or the tenant), newest first.
    pub async fn recent_changes(
        &self,
        tenant: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Change>, ArchiveError> {
        self.archive.recent_changes(tenant, limit).await
    }

    /// A device's received snapshots, newest first.
    pub async fn sightings(
        &self,
        device_id: Uuid,
        tenant: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Sighting>, ArchiveError> {
        self.archive.sightings(device_id, tenant, limit).await
    }

    /// Snapshots kept aside for unknown devices (unscoped callers only: an orphan's tenant
    /// is only what its event claimed).
    pub async fn orphans(&self, limit: i64) -> Result<Vec<OrphanInfo>, ArchiveError> {
        self.archive.orphans(limit).await
    }
}
