//! One backup: export → normalize → hash → publish.
//!
//! The CLI's `rosbackup export` and the worker's jobs both call [`collect`] and
//! [`publish`], so a one-off export behaves exactly like a scheduled one. Normalization
//! happens only on a complete export; nothing partial ever reaches a snapshot.
//!
//! A binary `.backup` file (issue #19) is a step after the publish, on the export's SSH
//! session ([`collect_session`] keeps it open, [`binary`] takes the file): the text
//! snapshot is already published when it starts, so it can neither fail nor delay it.

use crate::device::{self, Export, ExportError, ExportOptions, Target};
use crate::error::ErrorKind;
use crate::marks::{self, Mark};
use crate::normalize::{self, Version};
use crate::snapshot::{ConfigSnapshotEvent, Publisher, Receipt, SnapshotError};

/// A complete, normalized export. `Debug` shows sizes only (the text holds secrets).
#[derive(Clone)]
pub struct Collected {
    pub export: Export,
    /// When the export completed (RFC 3339 UTC, our clock). Stamped once, so every
    /// publish attempt of this backup carries the same `Nats-Msg-Id`.
    pub collected_at: String,
    pub normalized: Vec<u8>,
    pub sha256: String,
    pub normalization_version: Version,
}

impl std::fmt::Debug for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collected")
            .field("export", &self.export)
            .field("collected_at", &self.collected_at)
            .field("normalized_bytes", &self.normalized.len())
            .field("sha256", &self.sha256)
            .field("normalization_version", &self.normalization_version)
            .finish_non_exhaustive()
    }
}

impl Collected {
    /// The snapshot event for this backup. The same `Collected` always gives the same
    /// event, so retrying a publish is idempotent.
    pub fn event(&self, device_id: &str, tenant_id: &str) -> ConfigSnapshotEvent {
        let mut event = ConfigSnapshotEvent::new(
            device_id,
            tenant_id,
            self.export.routeros_version.clone(),
            &self.normalized,
            self.sha256.clone(),
            self.normalization_version,
        );
        event.collected_at = self.collected_at.clone();
        event
    }
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Publish(#[from] SnapshotError),
    /// The device's stored password does not open with the key in hand; the device was
    /// not contacted.
    #[error("{0}; the device was not contacted")]
    Credentials(crate::credentials::CredentialError),
}

impl BackupError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackupError::Export(e) => e.kind(),
            BackupError::Publish(_) => ErrorKind::PublishFailed,
            BackupError::Credentials(_) => ErrorKind::CredentialsUnreadable,
        }
    }

    /// Did the export timeout expire ([`ExportError::export_timed_out`])?
    pub fn export_timed_out(&self) -> bool {
        matches!(self, BackupError::Export(e) if e.export_timed_out())
    }
}

/// Export from the device and normalize.
pub async fn collect(
    target: &Target,
    opts: &ExportOptions,
    version: Version,
) -> Result<Collected, ExportError> {
    collect_via(target, opts, version, None).await
}

/// [`collect`] with a jump host's connection from `pool` ([`device::export_via`]).
pub async fn collect_via(
    target: &Target,
    opts: &ExportOptions,
    version: Version,
    pool: Option<&device::BastionPool>,
) -> Result<Collected, ExportError> {
    let export =
        device::export_via(target, opts, &mut |p| marks::mark(Mark::Export(p)), pool).await?;
    Ok(finish_collect(export, version))
}

/// [`collect`], keeping the SSH session open for a binary backup ([`binary`]). The
/// caller closes it ([`device::Session::close`]); dropping it disconnects too.
pub async fn collect_session(
    target: &Target,
    opts: &ExportOptions,
    version: Version,
) -> Result<(Collected, device::Session), ExportError> {
    collect_session_via(target, opts, version, None).await
}

/// [`collect_session`] with a jump host's connection from `pool`.
pub async fn collect_session_via(
    target: &Target,
    opts: &ExportOptions,
    version: Version,
    pool: Option<&device::BastionPool>,
) -> Result<(Collected, device::Session), ExportError> {
    let (export, session) =
        device::export_session_via(target, opts, &mut |p| marks::mark(Mark::Export(p)), pool)
            .await?;
    Ok((finish_collect(export, version), session))
}

/// Take a binary `/system backup` file on the session of a collected export.
pub async fn binary(
    session: &device::Session,
    collected: &Collected,
    name: String,
    password: crate::Secret,
    settings: &crate::binary::BinarySettings,
) -> Result<device::binary::BinaryFile, device::binary::BinaryError> {
    let req = device::binary::BinaryRequest {
        name,
        password,
        major: collected.export.routeros_major,
        timeout: settings.timeout,
        poll: settings.poll,
        max_size: settings.max_size,
    };
    session.binary_backup(&req).await
}

fn finish_collect(export: Export, version: Version) -> Collected {
    marks::mark(Mark::Exported);
    let (normalized, sha256) = normalize::normalize_and_hash(&export.raw, version);
    marks::mark(Mark::Collected);
    Collected {
        export,
        collected_at: crate::snapshot::now_rfc3339(),
        normalized,
        sha256,
        normalization_version: version,
    }
}

/// Publish a collected backup's snapshot and wait for JetStream's ack.
pub async fn publish(
    publisher: &Publisher,
    collected: &Collected,
    device_id: &str,
    tenant_id: &str,
) -> Result<(ConfigSnapshotEvent, Receipt), SnapshotError> {
    let event = collected.event(device_id, tenant_id);
    let receipt = publisher.publish(&event).await?;
    Ok((event, receipt))
}

/// [`publish`] for a queued job: the `Nats-Msg-Id` is the job id and the hash (the keyed
/// one when snapshots are encrypted), so the same job publishing the same config twice (a
/// retry after an unrecorded success) is stored once.
pub async fn publish_for_job(
    publisher: &Publisher,
    collected: &Collected,
    device_id: &str,
    tenant_id: &str,
    job_id: &str,
) -> Result<(ConfigSnapshotEvent, Receipt), SnapshotError> {
    let event = collected.event(device_id, tenant_id);
    let receipt = publisher.publish_scoped(&event, job_id).await?;
    Ok((event, receipt))
}
