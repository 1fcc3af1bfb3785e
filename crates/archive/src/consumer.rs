//! The archiver: a durable JetStream consumer of `<prefix>.>` that archives snapshots.
//!
//! * **A good citizen.** It finds the stream the way the publisher does (any stream that
//!   covers our subjects, e.g. a seed deployment's `DEVICE_EVENTS`, used as is) and reads
//!   it through its own durable pull consumer (`ARCHIVE_CONSUMER`) with explicit acks.
//!   Other consumers of `config.snapshot.>` keep their own position; on a limits-retention
//!   stream our acks delete nothing.
//! * **Several replicas** share the durable consumer: JetStream hands each message to one
//!   of them, and the per-device lock in [`ArchiveStore::ingest`] keeps two replicas from
//!   both deciding "new version" for the same device.
//! * **Commit, then ack.** A message is acked only after its transaction committed. A
//!   process killed between the two leaves the message unacked: JetStream redelivers it
//!   after `ack_wait`, and its key (`Nats-Msg-Id`, else stream:sequence) is already in
//!   `config_sightings`, so the redelivery is a no-op. Nothing is lost, nothing doubles.
//! * **What is acked without being stored.** A malformed message (not JSON, not our event,
//!   a device id that is not a UUID, a subject that names another device, a bad
//!   `collected_at`, an unknown normalization, a hash that does not match the text, an
//!   object-store reference whose object is gone) is logged and acked: redelivering it
//!   cannot make it valid. Everything else that fails (PostgreSQL, the object store
//!   answering slowly) is NAKed with a growing delay (1 s, 2 s, … 60 s) and retried
//!   without limit (`max_deliver` -1): a storage outage must not drop snapshots.
//! * **Encrypted snapshots** (`config_encryption`, see [`rosbackup_core::snapshot::crypto`]) are
//!   decrypted with `ArchiverSettings::snapshot_keys`. A snapshot under a key id the
//!   archiver does not hold (no key configured, or a rotated-out key not listed in
//!   `ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS`) is *not* malformed: the message is fine and the
//!   archiver is misconfigured, so it is NAKed like a storage error, logged at error level
//!   with the key id, and stored once the key is there (likewise an envelope version or
//!   algorithm newer than this archiver). A snapshot that does not open
//!   although the archiver holds the key it names (the key id is derived from the key) was
//!   altered or belongs to another device or message: malformed, logged and acked.
//! * **SIGTERM** stops fetching; the message being stored finishes and is acked, messages
//!   already fetched but not started are NAKed at once so another replica takes them.
//!
//! Besides the consumer loop, a housekeeping task re-homes orphans whose device appeared
//! (every `housekeeping`), applies retention (every `retention_every`), and an output task
//! exports new versions to git and delivers webhooks (right after a new version, and every
//! `housekeeping` for retries).

use super::git::GitOutput;
use super::store::{Incoming, IngestOptions};
use super::webhook::Webhook;
use super::{ArchiveError, ArchiveStore, Ingested, Retention, short};
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use rosbackup_core::credentials::CredentialKey;
use rosbackup_core::normalize::{self, Version};
use rosbackup_core::snapshot::crypto::{self, SnapshotCryptoError, SnapshotKeys};
use rosbackup_core::snapshot::{ConfigSnapshotEvent, Publisher, PublisherConfig};
use rosbackup_core::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

/// How the archiver runs (from the environment: `settings::from_env`).
#[derive(Debug, Clone)]
pub struct ArchiverSettings {
    /// Durable consumer name, shared by all replicas.
    pub durable: String,
    pub ack_wait: Duration,
    /// Messages fetched per pull request.
    pub batch: usize,
    pub recent_versions: i64,
    pub retention: Retention,
    /// Re-homing of orphans, webhook retries.
    pub housekeeping: Duration,
    pub retention_every: Duration,
    pub git_dir: Option<PathBuf>,
    pub webhook: Option<super::webhook::WebhookSettings>,
    /// Keys for encrypted snapshots (empty: only plaintext snapshots can be archived).
    pub snapshot_keys: SnapshotKeys,
}

impl Default for ArchiverSettings {
    fn default() -> Self {
        ArchiverSettings {
            durable: "rosbackup-archiver".into(),
            ack_wait: Duration::from_secs(30),
            batch: 32,
            recent_versions: 10,
            retention: Retention::default(),
            housekeeping: Duration::from_secs(30),
            retention_every: Duration::from_secs(600),
            git_dir: None,
            webhook: None,
            snapshot_keys: SnapshotKeys::new(),
        }
    }
}

/// Why a message was not archived.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Cannot ever be archived: log and ack.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// Might work later: NAK for redelivery.
    #[error("{0}")]
    Transient(String),
    /// Encrypted under a key this archiver does not hold (or in an envelope version it
    /// does not know): a configuration error, NAK for redelivery (after it is fixed).
    #[error("{0}")]
    MissingKey(String),
}

/// What was done with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Stored (or already stored) or skipped as malformed: ack.
    Ack(Outcome),
    /// Not stored: NAK, redeliver after the delay.
    Retry(Duration),
}

/// The result of a handled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Archived(Ingested),
    Malformed,
}

/// A connected archiver.
pub struct Archiver {
    archive: ArchiveStore,
    js: jetstream::Context,
    stream: String,
    subject_prefix: String,
    settings: ArchiverSettings,
    webhook: Option<Webhook>,
    new_version: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("stream", &self.stream)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Archiver {
    /// Connect to NATS (finding or creating the snapshot stream like the publisher does)
    /// and prepare the archive. The consumer is created by [`Archiver::consumer`].
    pub async fn connect(
        store: Store,
        key: CredentialKey,
        nats: PublisherConfig,
        settings: ArchiverSettings,
    ) -> Result<Self, ArchiveError> {
        let publisher = Publisher::connect(nats.clone())
            .await
            .map_err(|e| ArchiveError::Nats(e.to_string()))?;
        let webhook = match &settings.webhook {
            Some(w) => Some(Webhook::new(w.clone())?),
            None => None,
        };
        Ok(Archiver {
            archive: ArchiveStore::new(store, key),
            js: publisher.jetstream().clone(),
            stream: publisher.stream_name().to_string(),
            subject_prefix: nats.subject_prefix,
            settings,
            webhook,
            new_version: Arc::default(),
        })
    }

    pub fn archive(&self) -> &ArchiveStore {
        &self.archive
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    fn ingest_options(&self) -> IngestOptions {
        IngestOptions {
            recent_versions: self.settings.recent_versions,
            notify: self.webhook.is_some(),
        }
    }

    /// The durable pull consumer (created on first use; an existing one is used as is).
    pub async fn consumer(&self) -> Result<consumer::PullConsumer, ArchiveError> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| ArchiveError::Nats(e.to_string()))?;
        stream
            .get_or_create_consumer(
                &self.settings.durable,
                consumer::pull::Config {
                    durable_name: Some(self.settings.durable.clone()),
                    description: Some("rosbackup-archiver: config history".into()),
                    filter_subject: format!("{}.>", self.subject_prefix),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.settings.ack_wait,
                    max_deliver: -1,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ArchiveError::Nats(e.to_string()))
    }

    /// Decode, verify and normalize one message (fetching an object-store text).
    pub async fn decode(&self, msg: &jetstream::Message) -> Result<Incoming, Rejection> {
        let malformed = |s: String| Rejection::Malformed(s);
        let event = ConfigSnapshotEvent::decode(&msg.payload)
            .map_err(|_| malformed("not a ConfigSnapshotEvent".into()))?;
        let device_id = Uuid::parse_str(&event.device_id)
            .map_err(|_| malformed("device_id is not a UUID".into()))?;
        let subject_device = msg
            .subject
            .as_str()
            .strip_prefix(&format!("{}.create.", self.subject_prefix));
        if subject_device != Some(event.device_id.as_str()) {
            return Err(malformed("subject does not name the event's device".into()));
        }
        let collected_at = chrono::DateTime::parse_from_rfc3339(&event.collected_at)
            .map_err(|_| malformed("collected_at is not RFC 3339".into()))?
            .with_timezone(&chrono::Utc);
        let version = Version::try_from(event.normalization_version)
            .map_err(|_| malformed("unknown normalization_version".into()))?;
        let raw = if event.config_encryption.is_some() {
            self.decrypt(&event).await?
        } else {
            let raw = match &event.config_ref {
                None => event
                    .inline_bytes()
                    .map_err(|_| malformed("config_text_base64 is not base64".into()))?,
                Some(r) => fetch_object(&self.js, r).await?,
            };
            if normalize::hash(&raw) != event.sha256_hash.to_ascii_lowercase() {
                return Err(malformed(
                    "sha256_hash does not match the config text".into(),
                ));
            }
            raw
        };
        if raw.is_empty() {
            return Err(malformed("empty config text".into()));
        }
        // Compare as v2 (module docs of `archive`): a no-op for v2 text.
        let text = match version {
            Version::V2 => raw,
            Version::V1 => normalize::normalize(&raw, Version::V2),
        };
        let sha256 = normalize::hash(&text);
        let info = msg.info().ok();
        let stream_sequence = info.as_ref().map(|i| i.stream_sequence);
        let msg_key = match msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .filter(|v| !v.is_empty())
        {
            Some(id) => format!("id:{id}"),
            None => match &info {
                Some(i) => format!("seq:{}:{}", i.stream, i.stream_sequence),
                None => {
                    return Err(malformed(
                        "message has neither Nats-Msg-Id nor stream info".into(),
                    ));
                }
            },
        };
        Ok(Incoming {
            msg_key,
            stream_sequence,
            device_id,
            event_tenant: event.tenant_id,
            collected_at,
            routeros_version: event.routeros_version.filter(|v| !v.is_empty()),
            event_normalization: version.as_u8(),
            text,
            sha256,
        })
    }

    /// The config of an encrypted event (inline or from the object store), decrypted and
    /// checked against its keyed hash. The key is looked up first, so a missing key is
    /// reported as such before anything is fetched.
    async fn decrypt(&self, event: &ConfigSnapshotEvent) -> Result<Vec<u8>, Rejection> {
        let keys = &self.settings.snapshot_keys;
        let reject = |e: SnapshotCryptoError| {
            if e.is_reader_side() {
                Rejection::MissingKey(e.to_string())
            } else {
                Rejection::Malformed(e.to_string())
            }
        };
        crypto::key_for(keys, event).map_err(reject)?;
        match &event.config_ref {
            None => crypto::open_inline(keys, event).map_err(reject),
            Some(r) => {
                let sealed = fetch_object(&self.js, r).await?;
                crypto::open_sealed(keys, event, &sealed).map_err(reject)
            }
        }
    }

    /// Store one message; does not ack (the caller does, after this returns).
    pub async fn handle(&self, msg: &jetstream::Message) -> Disposition {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let retry = || {
            let exp = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(6);
            Disposition::Retry(Duration::from_secs(1u64 << exp).min(Duration::from_secs(60)))
        };
        let snap = match self.decode(msg).await {
            Ok(s) => s,
            Err(Rejection::Malformed(why)) => {
                warn!(subject = %msg.subject, reason = %why, "malformed snapshot skipped (acked)");
                return Disposition::Ack(Outcome::Malformed);
            }
            Err(Rejection::Transient(why)) => {
                warn!(subject = %msg.subject, reason = %why, delivered, "snapshot text unavailable; will retry");
                return retry();
            }
            Err(Rejection::MissingKey(why)) => {
                error!(subject = %msg.subject, reason = %why, delivered, "encrypted snapshot cannot be decrypted: not acked, will retry");
                return retry();
            }
        };
        let span = info_span!("archive", device_id = %snap.device_id, sha256 = short(&snap.sha256));
        async {
            match self.archive.ingest(&snap, self.ingest_options()).await {
                Ok(outcome) => {
                    match &outcome {
                        Ingested::NewVersion {
                            version_id, menus, ..
                        } => {
                            info!(version_id, ?menus, "new config version");
                            self.new_version.notify_one();
                        }
                        Ingested::Seen { version_id } => debug!(version_id, "config seen before"),
                        Ingested::Duplicate => debug!("redelivered snapshot already archived"),
                        Ingested::Orphaned => {
                            info!("snapshot of an unknown device kept aside")
                        }
                    }
                    Disposition::Ack(Outcome::Archived(outcome))
                }
                Err(e) => {
                    warn!(error = %e, delivered, "archiving failed; will retry");
                    retry()
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Ack or NAK a handled message. The ack waits for the server's confirmation.
    pub async fn settle(msg: &jetstream::Message, d: &Disposition) {
        let r = match d {
            Disposition::Ack(_) => msg.double_ack().await,
            Disposition::Retry(delay) => msg.ack_with(AckKind::Nak(Some(*delay))).await,
        };
        if let Err(e) = r {
            // Not fatal: an unacked message is redelivered and is then a duplicate.
            warn!(error = %e, "ack failed; the message will be redelivered");
        }
    }

    /// One round of background work: re-home orphans, export to git, deliver webhooks.
    pub async fn housekeeping(&self, with_retention: bool) -> Result<(), ArchiveError> {
        let moved = self.archive.rehome(self.ingest_options()).await?;
        if moved > 0 {
            self.new_version.notify_one();
        }
        if with_retention {
            let r = self
                .archive
                .apply_retention(self.settings.retention)
                .await?;
            if r != Default::default() {
                info!(
                    versions = r.versions,
                    sightings = r.sightings,
                    orphans = r.orphans,
                    binaries = r.binaries,
                    "retention applied"
                );
            }
        }
        self.outputs().await
    }

    /// Export new versions to git and deliver due webhooks.
    pub async fn outputs(&self) -> Result<(), ArchiveError> {
        if let Some(dir) = &self.settings.git_dir {
            GitOutput::new(dir.clone())
                .export_pending(&self.archive)
                .await?;
        }
        if let Some(w) = &self.webhook {
            w.deliver_due(&self.archive).await?;
        }
        Ok(())
    }

    /// Consume until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ArchiveError> {
        let me = Arc::new(self);
        let consumer = me.consumer().await?;
        info!(stream = %me.stream, durable = %me.settings.durable, "archiver consuming");
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let _background = {
            let me = me.clone();
            let mut stop = stop.clone();
            let handle = tokio::spawn(async move {
                let mut tick = tokio::time::interval(me.settings.housekeeping);
                let mut last_retention: Option<tokio::time::Instant> = None;
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tick.tick() => {
                            let due = last_retention
                                .is_none_or(|t| t.elapsed() >= me.settings.retention_every);
                            if due {
                                last_retention = Some(tokio::time::Instant::now());
                            }
                            if let Err(e) = me.housekeeping(due).await {
                                warn!(error = %e, "archive housekeeping failed");
                            }
                        }
                        _ = me.new_version.notified() => {
                            if let Err(e) = me.outputs().await {
                                warn!(error = %e, "archive outputs failed");
                            }
                        }
                    }
                }
            });
            // Aborted with this future, even when the caller drops it mid-run.
            AbortOnDrop(handle)
        };
        'outer: while !*stop.borrow() {
            let batch = consumer
                .batch()
                .max_messages(me.settings.batch.max(1))
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "fetching snapshots failed; retrying");
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.changed() => break 'outer,
                    m = batch.next() => m,
                };
                let msg = match next {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        debug!(error = %e, "pull request ended");
                        break;
                    }
                };
                let d = me.handle(&msg).await;
                Self::settle(&msg, &d).await;
                if *stop.borrow() {
                    // Hand back what this batch still holds (fetched, not started).
                    while let Ok(Some(Ok(m))) =
                        tokio::time::timeout(Duration::from_millis(50), batch.next()).await
                    {
                        let _ = m.ack_with(AckKind::Nak(None)).await;
                    }
                    break 'outer;
                }
            }
        }
        info!("archiver stopped");
        Ok(())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetch an object-store text: a missing object (expired, deleted) is malformed for
/// good; anything else may be temporary.
async fn fetch_object(
    js: &jetstream::Context,
    r: &rosbackup_core::snapshot::ConfigRef,
) -> Result<Vec<u8>, Rejection> {
    use async_nats::jetstream::object_store::GetErrorKind;
    let store = js.get_object_store(&r.bucket).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("not found") || text.contains("invalid") {
            Rejection::Malformed(format!("config_ref bucket {}: {text}", r.bucket))
        } else {
            Rejection::Transient(format!("config_ref bucket {}: {text}", r.bucket))
        }
    })?;
    let mut obj = store.get(&r.object).await.map_err(|e| match e.kind() {
        GetErrorKind::NotFound | GetErrorKind::InvalidName => {
            Rejection::Malformed(format!("config_ref object {} is gone", r.object))
        }
        _ => Rejection::Transient(format!("config_ref object {}: {e}", r.object)),
    })?;
    let mut out = Vec::with_capacity((r.bytes as usize).min(64 << 20));
    tokio::io::AsyncReadExt::read_to_end(&mut obj, &mut out)
        .await
        .map_err(|e| Rejection::Transient(format!("reading config_ref object: {e}")))?;
    Ok(out)
}
