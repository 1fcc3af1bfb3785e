//! The archive's SQL (tables from `migrations/0003_history.sql`), on [`Store::pool`].
//!
//! [`ArchiveStore::ingest`] is the one write path, used for snapshots from NATS and for
//! re-homed orphans alike. It runs in one transaction:
//!
//! 1. a per-device advisory lock (`pg_advisory_xact_lock`): two replicas that receive two
//!    snapshots of one device decide "new or seen" one after the other, never both "new";
//! 2. the message key: already in `config_sightings` (or `archive_orphans`) → `Duplicate`,
//!    nothing changes (a redelivery after a crash between commit and ack);
//! 3. the device: unknown → the snapshot goes to `archive_orphans`;
//! 4. the hash among the device's `recent` most recently seen versions → a sighting of
//!    that version; otherwise a new version (diffed against the device's current one for
//!    the menu summary), its sighting, and a webhook outbox row.
//!
//! New versions also take one global advisory lock right before their insert, so version
//! ids are allocated in commit order: the git output can follow "every id above the last
//! one exported" without ever skipping a version that committed late.

use super::{ArchiveError, Change, Codec, OrphanInfo, Sighting, VersionInfo, diff, short};
use chrono::{DateTime, Utc};
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::store::Store;
use sqlx::{Postgres, Row, Transaction};
use tracing::{info, warn};
use uuid::Uuid;

/// The retention rule for a per-device history table (`config_versions`,
/// `binary_backups`), as one static statement: per device, rows beyond the tenant's
/// `keep_versions` (else `$1`) or older than its `max_age_days` (else `$2`) by the time
/// column go — except a live device's newest row, which is always kept.
macro_rules! keep_newest_sql {
    ($table:literal, $time:literal) => {
        concat!(
            "WITH ranked AS ( \
               SELECT h.id, h.",
            $time,
            " AS at, \
                 row_number() OVER (PARTITION BY h.device_id ORDER BY h.",
            $time,
            " DESC, h.id DESC) AS rank, \
                 coalesce(r.keep_versions, $1) AS keep, \
                 coalesce(r.max_age_days, $2) AS max_age, \
                 EXISTS (SELECT 1 FROM devices d WHERE d.id = h.device_id) AS live \
               FROM ",
            $table,
            " h LEFT JOIN archive_retention r ON r.tenant_id = h.tenant_id) \
             DELETE FROM ",
            $table,
            " WHERE id IN ( \
               SELECT id FROM ranked \
               WHERE (rank > keep OR at < now() - make_interval(days => max_age)) \
                 AND NOT (rank = 1 AND live))"
        )
    };
}

/// The global lock taken before inserting a version ("rosb" "arch").
const VERSION_ORDER_LOCK: i64 = 0x726f_7362_6172_6368;

/// A snapshot ready to archive: verified, normalized with v2.
#[derive(Clone)]
pub struct Incoming {
    /// `Nats-Msg-Id`, else `<stream>:<sequence>`: the idempotence key.
    pub msg_key: String,
    pub stream_sequence: Option<u64>,
    pub device_id: Uuid,
    /// The tenant the event claims (the device row decides).
    pub event_tenant: String,
    pub collected_at: DateTime<Utc>,
    pub routeros_version: Option<String>,
    pub event_normalization: u8,
    /// Normalized (v2) text and its SHA-256.
    pub text: Vec<u8>,
    pub sha256: String,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("msg_key", &self.msg_key)
            .field("device_id", &self.device_id)
            .field("collected_at", &self.collected_at)
            .field("sha256", &self.sha256)
            .field("bytes", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// What [`ArchiveStore::ingest`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// This message was archived before (redelivery): nothing changed.
    Duplicate,
    /// The device is unknown: kept in `archive_orphans`.
    Orphaned,
    /// The config is one of the device's recent versions.
    Seen { version_id: i64 },
    /// A new version.
    NewVersion {
        version_id: i64,
        previous_id: Option<i64>,
        menus: Vec<String>,
    },
}

/// Options of the write path.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// How many of the device's most recently seen versions count as "seen before".
    pub recent_versions: i64,
    /// Queue a webhook notification for a new version (not for a device's first).
    pub notify: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            recent_versions: 10,
            notify: false,
        }
    }
}

/// Retention defaults (per-tenant rows in `archive_retention` override them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_versions: i32,
    pub max_age_days: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_versions: 1000,
            max_age_days: 730,
        }
    }
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub versions: u64,
    pub sightings: u64,
    pub orphans: u64,
    /// Binary backups (issue #19): the same rules as versions — beyond a device's newest
    /// `keep_versions` or older than `max_age_days`, the newest of a live device kept.
    pub binaries: u64,
}

/// The archive tables.
#[derive(Clone, Debug)]
pub struct ArchiveStore {
    store: Store,
    codec: Codec,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    id: i64,
    device_id: Uuid,
    tenant_id: Uuid,
    sha256: String,
    size: i64,
    first_seen_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    seen_count: i64,
    routeros_version: Option<String>,
    previous_id: Option<i64>,
    changed_menus: Vec<String>,
    added_lines: i32,
    removed_lines: i32,
}

impl From<VersionRow> for VersionInfo {
    fn from(r: VersionRow) -> Self {
        VersionInfo {
            id: r.id,
            device_id: r.device_id,
            tenant_id: r.tenant_id,
            sha256: r.sha256,
            size: r.size,
            first_seen_at: r.first_seen_at,
            last_seen_at: r.last_seen_at,
            seen_count: r.seen_count,
            routeros_version: r.routeros_version,
            previous_version_id: r.previous_id,
            changed_menus: r.changed_menus,
            added_lines: r.added_lines,
            removed_lines: r.removed_lines,
        }
    }
}

const VERSION_COLUMNS: &str = "id, device_id, tenant_id, sha256, size, first_seen_at, \
    last_seen_at, seen_count, routeros_version, previous_id, changed_menus, added_lines, \
    removed_lines";

/// A version to export (git) with its text sealed.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub info: VersionInfo,
    pub device_name: Option<String>,
    pub previous_sha256: Option<String>,
    pub text_enc: Vec<u8>,
}

impl ArchiveStore {
    pub fn new(store: Store, key: CredentialKey) -> Self {
        ArchiveStore {
            store,
            codec: Codec::new(key),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Archive one snapshot (see the module docs for the steps). Idempotent by
    /// `msg_key`.
    pub async fn ingest(
        &self,
        snap: &Incoming,
        opts: IngestOptions,
    ) -> Result<Ingested, ArchiveError> {
        let mut tx = self.store.pool().begin().await?;
        let result = self.ingest_tx(&mut tx, snap, opts, None).await?;
        tx.commit().await?;
        Ok(result)
    }

    async fn ingest_tx(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        snap: &Incoming,
        opts: IngestOptions,
        rehoming: Option<i64>,
    ) -> Result<Ingested, ArchiveError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))")
            .bind(snap.device_id)
            .execute(&mut **tx)
            .await?;
        if let Some(orphan_id) = rehoming {
            sqlx::query("DELETE FROM archive_orphans WHERE id = $1")
                .bind(orphan_id)
                .execute(&mut **tx)
                .await?;
        }
        let seen: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM config_sightings WHERE msg_key = $1) \
                 OR EXISTS (SELECT 1 FROM archive_orphans WHERE msg_key = $1)",
        )
        .bind(&snap.msg_key)
        .fetch_one(&mut **tx)
        .await?;
        if seen {
            return Ok(Ingested::Duplicate);
        }
        let device: Option<(Uuid,)> = sqlx::query_as("SELECT tenant_id FROM devices WHERE id = $1")
            .bind(snap.device_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some((tenant_id,)) = device else {
            let sealed = self.codec.seal(&snap.device_id, &snap.sha256, &snap.text);
            sqlx::query(
                "INSERT INTO archive_orphans (msg_key, stream_sequence, device_id, event_tenant, \
                 sha256, size, collected_at, routeros_version, event_normalization, text_enc) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (msg_key) DO NOTHING",
            )
            .bind(&snap.msg_key)
            .bind(snap.stream_sequence.map(|s| s as i64))
            .bind(snap.device_id)
            .bind(&snap.event_tenant)
            .bind(&snap.sha256)
            .bind(snap.text.len() as i64)
            .bind(snap.collected_at)
            .bind(&snap.routeros_version)
            .bind(i16::from(snap.event_normalization))
            .bind(&sealed)
            .execute(&mut **tx)
            .await?;
            return Ok(Ingested::Orphaned);
        };
        if snap.event_tenant != tenant_id.to_string() {
            warn!(device_id = %snap.device_id, "snapshot names another tenant than the device's; the device's is used");
        }
        let recent: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, sha256 FROM config_versions WHERE device_id = $1 \
             ORDER BY last_seen_at DESC, id DESC LIMIT $2",
        )
        .bind(snap.device_id)
        .bind(opts.recent_versions.max(1))
        .fetch_all(&mut **tx)
        .await?;
        if let Some((version_id, _)) = recent.iter().find(|(_, h)| *h == snap.sha256) {
            sqlx::query(
                "UPDATE config_versions SET seen_count = seen_count + 1, \
                   last_seen_at = greatest(last_seen_at, $2), \
                   first_seen_at = least(first_seen_at, $2), \
                   routeros_version = CASE WHEN $2 >= last_seen_at \
                       THEN coalesce($3, routeros_version) ELSE routeros_version END \
                 WHERE id = $1",
            )
            .bind(version_id)
            .bind(snap.collected_at)
            .bind(&snap.routeros_version)
            .execute(&mut **tx)
            .await?;
            self.insert_sighting(tx, snap, tenant_id, *version_id, false)
                .await?;
            return Ok(Ingested::Seen {
                version_id: *version_id,
            });
        }
        // A new version: compare with the current one for the menu summary.
        let previous = match recent.first() {
            Some((id, sha)) => {
                let enc: Vec<u8> =
                    sqlx::query_scalar("SELECT text_enc FROM config_versions WHERE id = $1")
                        .bind(id)
                        .fetch_one(&mut **tx)
                        .await?;
                let old = self.codec.open(&snap.device_id, sha, &enc)?;
                Some((*id, old))
            }
            None => None,
        };
        let summary = match &previous {
            Some((_, old)) => diff::summarize(
                &String::from_utf8_lossy(old),
                &String::from_utf8_lossy(&snap.text),
            ),
            None => diff::DiffSummary::default(),
        };
        let sealed = self.codec.seal(&snap.device_id, &snap.sha256, &snap.text);
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(VERSION_ORDER_LOCK)
            .execute(&mut **tx)
            .await?;
        let previous_id = previous.as_ref().map(|(id, _)| *id);
        let version_id: i64 = sqlx::query_scalar(
            "INSERT INTO config_versions (device_id, tenant_id, sha256, size, first_seen_at, \
               last_seen_at, seen_count, routeros_version, normalization, text_enc, previous_id, \
               changed_menus, added_lines, removed_lines) \
             VALUES ($1, $2, $3, $4, $5, $5, 1, $6, 2, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(snap.device_id)
        .bind(tenant_id)
        .bind(&snap.sha256)
        .bind(snap.text.len() as i64)
        .bind(snap.collected_at)
        .bind(&snap.routeros_version)
        .bind(&sealed)
        .bind(previous_id)
        .bind(&summary.menus)
        .bind(i32::try_from(summary.added).unwrap_or(i32::MAX))
        .bind(i32::try_from(summary.removed).unwrap_or(i32::MAX))
        .fetch_one(&mut **tx)
        .await?;
        self.insert_sighting(tx, snap, tenant_id, version_id, true)
            .await?;
        // A device's first version is not a change (an imported fleet would otherwise
        // notify once per device).
        if opts.notify && previous_id.is_some() {
            sqlx::query("INSERT INTO archive_notifications (version_id) VALUES ($1)")
                .bind(version_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(Ingested::NewVersion {
            version_id,
            previous_id,
            menus: summary.menus,
        })
    }

    async fn insert_sighting(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        snap: &Incoming,
        tenant_id: Uuid,
        version_id: i64,
        new_version: bool,
    ) -> Result<(), ArchiveError> {
        sqlx::query(
            "INSERT INTO config_sightings (msg_key, stream_sequence, device_id, tenant_id, \
               version_id, sha256, collected_at, event_normalization, new_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&snap.msg_key)
        .bind(snap.stream_sequence.map(|s| s as i64))
        .bind(snap.device_id)
        .bind(tenant_id)
        .bind(version_id)
        .bind(&snap.sha256)
        .bind(snap.collected_at)
        .bind(i16::from(snap.event_normalization))
        .bind(new_version)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Move the orphans of every device that now exists into the history, oldest
    /// collection first, each in its own transaction (with its ingest). Returns how many
    /// snapshots were re-homed.
    pub async fn rehome(&self, opts: IngestOptions) -> Result<u64, ArchiveError> {
        let mut moved = 0;
        loop {
            let rows = sqlx::query(
                "SELECT o.id, o.msg_key, o.stream_sequence, o.device_id, o.event_tenant, \
                   o.sha256, o.collected_at, o.routeros_version, o.event_normalization, o.text_enc \
                 FROM archive_orphans o JOIN devices d ON d.id = o.device_id \
                 ORDER BY o.device_id, o.collected_at, o.id LIMIT 100",
            )
            .fetch_all(self.store.pool())
            .await?;
            if rows.is_empty() {
                return Ok(moved);
            }
            for row in rows {
                let id: i64 = row.try_get("id")?;
                let device_id: Uuid = row.try_get("device_id")?;
                let sha256: String = row.try_get("sha256")?;
                let enc: Vec<u8> = row.try_get("text_enc")?;
                let text = self.codec.open(&device_id, &sha256, &enc)?;
                let snap = Incoming {
                    msg_key: row.try_get("msg_key")?,
                    stream_sequence: row
                        .try_get::<Option<i64>, _>("stream_sequence")?
                        .map(|s| s as u64),
                    device_id,
                    event_tenant: row.try_get("event_tenant")?,
                    collected_at: row.try_get("collected_at")?,
                    routeros_version: row.try_get("routeros_version")?,
                    event_normalization: u8::try_from(
                        row.try_get::<i16, _>("event_normalization")?,
                    )
                    .unwrap_or(2),
                    text,
                    sha256,
                };
                let mut tx = self.store.pool().begin().await?;
                let outcome = self.ingest_tx(&mut tx, &snap, opts, Some(id)).await?;
                tx.commit().await?;
                info!(device_id = %device_id, sha256 = short(&snap.sha256), ?outcome, "re-homed an orphan snapshot");
                moved += 1;
            }
        }
    }

    /// Snapshots kept aside for unknown devices, oldest first.
    pub async fn orphans(&self, limit: i64) -> Result<Vec<OrphanInfo>, ArchiveError> {
        Ok(sqlx::query_as(
            "SELECT id, device_id, event_tenant, sha256, size, collected_at, received_at \
             FROM archive_orphans ORDER BY collected_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?)
    }

    /// Set (or clear, with both `None`) a tenant's retention override.
    pub async fn set_retention(
        &self,
        tenant_id: Uuid,
        keep_versions: Option<i32>,
        max_age_days: Option<i32>,
    ) -> Result<(), ArchiveError> {
        if keep_versions.is_some_and(|k| k < 1) || max_age_days.is_some_and(|d| d < 1) {
            return Err(ArchiveError::Invalid(
                "retention values must be positive".into(),
            ));
        }
        if keep_versions.is_none() && max_age_days.is_none() {
            sqlx::query("DELETE FROM archive_retention WHERE tenant_id = $1")
                .bind(tenant_id)
                .execute(self.store.pool())
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO archive_retention (tenant_id, keep_versions, max_age_days) \
             VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE \
             SET keep_versions = $2, max_age_days = $3, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(keep_versions)
        .bind(max_age_days)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Delete what the retention rules no longer keep (module docs of `archive`).
    pub async fn apply_retention(
        &self,
        defaults: Retention,
    ) -> Result<RetentionReport, ArchiveError> {
        let versions = sqlx::query(keep_newest_sql!("config_versions", "last_seen_at"))
            .bind(defaults.keep_versions)
            .bind(defaults.max_age_days)
            .execute(self.store.pool())
            .await?
            .rows_affected();
        let sightings = sqlx::query(
            "DELETE FROM config_sightings s USING ( \
               SELECT s2.id FROM config_sightings s2 \
               LEFT JOIN archive_retention r ON r.tenant_id = s2.tenant_id \
               WHERE s2.collected_at < now() - make_interval(days => coalesce(r.max_age_days, $1)) \
             ) old WHERE s.id = old.id",
        )
        .bind(defaults.max_age_days)
        .execute(self.store.pool())
        .await?
        .rows_affected();
        let orphans = sqlx::query(
            "DELETE FROM archive_orphans WHERE collected_at < now() - make_interval(days => $1)",
        )
        .bind(defaults.max_age_days)
        .execute(self.store.pool())
        .await?
        .rows_affected();
        let binaries = sqlx::query(keep_newest_sql!("binary_backups", "collected_at"))
            .bind(defaults.keep_versions)
            .bind(defaults.max_age_days)
            .execute(self.store.pool())
            .await?
            .rows_affected();
        Ok(RetentionReport {
            versions,
            sightings,
            orphans,
            binaries,
        })
    }

    pub async fn versions(
        &self,
        device_id: Uuid,
        tenant: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<VersionInfo>, ArchiveError> {
        let rows: Vec<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions \
             WHERE device_id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) \
             ORDER BY first_seen_at DESC, id DESC LIMIT $3"
        )))
        .bind(device_id)
        .bind(tenant)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub async fn version(
        &self,
        version_id: i64,
        tenant: Option<Uuid>,
    ) -> Result<Option<VersionInfo>, ArchiveError> {
        let row: Option<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions \
             WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
        )))
        .bind(version_id)
        .bind(tenant)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.map(Into::into))
    }

    pub async fn text(
        &self,
        version_id: i64,
        tenant: Option<Uuid>,
    ) -> Result<Option<Vec<u8>>, ArchiveError> {
        let row: Option<(Uuid, String, Vec<u8>)> = sqlx::query_as(
            "SELECT device_id, sha256, text_enc FROM config_versions \
             WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)",
        )
        .bind(version_id)
        .bind(tenant)
        .fetch_optional(self.store.pool())
        .await?;
        match row {
            None => Ok(None),
            Some((device_id, sha256, enc)) => self.codec.open(&device_id, &sha256, &enc).map(Some),
        }
    }

    pub async fn recent_changes(
        &self,
        tenant: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Change>, ArchiveError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            device_id: Uuid,
            name: Option<String>,
            tenant_id: Uuid,
            id: i64,
            previous_id: Option<i64>,
            first_seen_at: DateTime<Utc>,
            changed_menus: Vec<String>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT v.device_id, d.name, v.tenant_id, v.id, v.previous_id, v.first_seen_at, \
               v.changed_menus \
             FROM config_versions v LEFT JOIN devices d ON d.id = v.device_id \
             WHERE ($1::uuid IS NULL OR v.tenant_id = $1) \
             ORDER BY v.first_seen_at DESC, v.id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Change {
                device_id: r.device_id,
                device_name: r.name.unwrap_or_else(|| r.device_id.to_string()),
                tenant_id: r.tenant_id,
                version_id: r.id,
                previous_version_id: r.previous_id,
                at: r.first_seen_at,
                menus: r.changed_menus,
            })
            .collect())
    }

    pub async fn sightings(
        &self,
        device_id: Uuid,
        tenant: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Sighting>, ArchiveError> {
        let rows: Vec<(DateTime<Utc>, String, Option<i64>, bool)> = sqlx::query_as(
            "SELECT collected_at, sha256, version_id, new_version FROM config_sightings \
             WHERE device_id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) \
             ORDER BY collected_at DESC, id DESC LIMIT $3",
        )
        .bind(device_id)
        .bind(tenant)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(collected_at, sha256, version_id, new_version)| Sighting {
                collected_at,
                sha256,
                version_id,
                new_version,
            })
            .collect())
    }

    /// Versions with an id above `after`, in id (= commit) order, for the git output.
    pub async fn versions_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ExportRow>, ArchiveError> {
        let rows = sqlx::query(
            "SELECT v.id, v.device_id, v.tenant_id, v.sha256, v.size, v.first_seen_at, \
               v.last_seen_at, v.seen_count, v.routeros_version, v.previous_id, v.changed_menus, \
               v.added_lines, v.removed_lines, v.text_enc, d.name AS device_name, \
               p.sha256 AS previous_sha256 \
             FROM config_versions v LEFT JOIN devices d ON d.id = v.device_id \
             LEFT JOIN config_versions p ON p.id = v.previous_id \
             WHERE v.id > $1 ORDER BY v.id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(ExportRow {
                info: VersionInfo {
                    id: r.try_get("id")?,
                    device_id: r.try_get("device_id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    sha256: r.try_get("sha256")?,
                    size: r.try_get("size")?,
                    first_seen_at: r.try_get("first_seen_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                    seen_count: r.try_get("seen_count")?,
                    routeros_version: r.try_get("routeros_version")?,
                    previous_version_id: r.try_get("previous_id")?,
                    changed_menus: r.try_get("changed_menus")?,
                    added_lines: r.try_get("added_lines")?,
                    removed_lines: r.try_get("removed_lines")?,
                },
                device_name: r.try_get("device_name")?,
                previous_sha256: r.try_get("previous_sha256")?,
                text_enc: r.try_get("text_enc")?,
            });
        }
        Ok(out)
    }
}
