//! The snapshot event and its publication to NATS JetStream.
//!
//! The event is the seed's `ConfigSnapshotEvent`, field for field, published to
//! `config.snapshot.create.<device_id>` so that the seed's consumers work unchanged.
//! Publication waits for the JetStream ack: a backup counts as done only once the stream
//! has stored it.
//!
//! * **Which stream.** A deployment of the seed already has a stream (e.g.
//!   `DEVICE_EVENTS`) whose subjects cover ours; we use it as it is and never rewrite
//!   another stream's subject list. Only when no stream captures our subjects do we create
//!   `CONFIG_SNAPSHOTS` (name configurable) with size and age limits.
//! * **Retries are idempotent.** Each event carries a `Nats-Msg-Id` derived from device,
//!   collection time and hash. A timed-out ack does not mean the message was lost (the
//!   server may have stored it), so a retry reuses the id and JetStream's duplicate window
//!   stores it once.
//! * **Large configs are not lost.** NATS refuses messages over the server's
//!   `max_payload` (1 MiB by default) and streams may cap message size lower; real
//!   exports reach 400 KB before JSON escaping. When the event would not fit, the config
//!   text goes into a JetStream object store (`CONFIG_SNAPSHOT_TEXTS` by default) under
//!   `<device_id>/<sha256>`, and the event is published with an empty `config_text` plus
//!   a `config_ref` naming the object. Ordinary sizes keep the seed's schema exactly;
//!   [`fetch_config_text`] resolves either form.
//! * **Optionally encrypted.** With a snapshot key (`ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY`,
//!   [`PublisherConfig::encryption`]) the config is published as AES-256-GCM ciphertext
//!   in `config_encryption` (and large ones are stored encrypted in the object store);
//!   see [`crate::snapshot_crypto`] for the format and why. Without one, nothing changes.
//! * **Bytes survive.** Config text is bytes; JSON strings are UTF-8. Valid UTF-8 (the
//!   usual case) goes into `config_text` as is. Otherwise `config_text` holds a lossy
//!   rendering (what the seed's Go `json.Marshal` would have sent) and
//!   `config_text_base64` the exact bytes the hash was computed over.

use crate::snapshot_crypto::{
    self, ConfigEncryption, SnapshotCryptoError, SnapshotKey, SnapshotKeys,
};
use async_nats::jetstream::{self, stream};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The seed's event. Field names are part of the contract. `Debug` omits the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSnapshotEvent {
    pub device_id: String,
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routeros_version: Option<String>,
    /// RFC 3339 UTC, from our clock (device clocks are often wrong).
    pub collected_at: String,
    pub sha256_hash: String,
    pub config_text: String,
    pub normalization_version: u8,
    /// Exact bytes when the normalized config is not valid UTF-8 (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_text_base64: Option<String>,
    /// Where the text is when it was too large to publish inline (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ConfigRef>,
    /// Present only on encrypted events (ours, opt-in): `config_text` is then empty and
    /// `sha256_hash` is keyed. See [`crate::snapshot_crypto`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_encryption: Option<ConfigEncryption>,
}

impl std::fmt::Debug for ConfigSnapshotEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSnapshotEvent")
            .field("device_id", &self.device_id)
            .field("tenant_id", &self.tenant_id)
            .field("routeros_version", &self.routeros_version)
            .field("collected_at", &self.collected_at)
            .field("sha256_hash", &self.sha256_hash)
            .field("config_text_bytes", &self.config_text.len())
            .field("normalization_version", &self.normalization_version)
            .field("config_ref", &self.config_ref)
            .field("config_encryption", &self.config_encryption)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRef {
    pub bucket: String,
    pub object: String,
    pub bytes: u64,
}

impl ConfigSnapshotEvent {
    /// Build an event from normalized bytes, stamped with the current UTC time.
    pub fn new(
        device_id: impl Into<String>,
        tenant_id: impl Into<String>,
        routeros_version: Option<String>,
        normalized: &[u8],
        sha256_hash: String,
        normalization_version: crate::normalize::Version,
    ) -> Self {
        let (config_text, config_text_base64) = text_fields(normalized);
        ConfigSnapshotEvent {
            device_id: device_id.into(),
            tenant_id: tenant_id.into(),
            routeros_version: routeros_version.filter(|v| !v.is_empty()),
            collected_at: now_rfc3339(),
            sha256_hash,
            config_text,
            normalization_version: normalization_version.as_u8(),
            config_text_base64,
            config_ref: None,
            config_encryption: None,
        }
    }

    /// The id JetStream deduplicates retries on.
    pub fn msg_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.device_id, self.collected_at, self.sha256_hash
        )
    }

    /// The exact normalized bytes carried inline (not resolving `config_ref`). An
    /// encrypted event is an error here (its `config_text` is empty), never an empty text:
    /// use [`crate::snapshot_crypto::open_inline`] or [`fetch_config_text_with_keys`].
    pub fn inline_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        if let Some(e) = &self.config_encryption {
            return Err(SnapshotCryptoError::Encrypted {
                kid: snapshot_crypto::printable(&e.kid),
            }
            .into());
        }
        match &self.config_text_base64 {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| SnapshotError::Decode(format!("config_text_base64: {e}"))),
            None => Ok(self.config_text.as_bytes().to_vec()),
        }
    }

    /// Parse an event received from NATS.
    pub fn decode(payload: &[u8]) -> Result<Self, SnapshotError> {
        serde_json::from_slice(payload).map_err(|e| SnapshotError::Decode(e.to_string()))
    }
}

fn text_fields(normalized: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(normalized) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(normalized).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(normalized)),
        ),
    }
}

/// Current time as the seed formats it (`time.RFC3339`, UTC, whole seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("JetStream stream setup failed: {0}")]
    Stream(String),
    #[error("publishing to {subject} failed after {attempts} attempt(s): {reason}")]
    Publish {
        subject: String,
        attempts: u32,
        reason: String,
    },
    #[error("object store {bucket}: {reason}")]
    ObjectStore { bucket: String, reason: String },
    #[error("malformed snapshot event: {0}")]
    Decode(String),
    #[error(transparent)]
    Crypto(#[from] SnapshotCryptoError),
}

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub nats_url: String,
    /// Events go to `<subject_prefix>.create.<device_id>`. The seed's is `config.snapshot`;
    /// tests use their own prefix for isolation.
    pub subject_prefix: String,
    /// The stream created when none captures our subjects.
    pub stream_name: String,
    pub stream_max_bytes: i64,
    pub stream_max_age: Duration,
    pub duplicate_window: Duration,
    /// Object store bucket for configs too large to publish inline.
    pub object_bucket: String,
    pub ack_timeout: Duration,
    /// Publish attempts (same `Nats-Msg-Id` each time).
    pub attempts: u32,
    /// Keep trying to connect when NATS is down at startup (long-running processes);
    /// off, a down server is an immediate error (the CLI).
    pub retry_initial_connect: bool,
    /// CA and client certificate for `tls://` (see [`crate::tls`]).
    pub tls: crate::tls::TlsFiles,
    /// Publish encrypted events under this key (`ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY`);
    /// `None` (the default) publishes the seed's plaintext schema.
    pub encryption: Option<SnapshotKey>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "config.snapshot".into(),
            stream_name: "CONFIG_SNAPSHOTS".into(),
            stream_max_bytes: 10 * 1024 * 1024 * 1024,
            stream_max_age: Duration::from_secs(7 * 86400),
            duplicate_window: Duration::from_secs(600),
            object_bucket: "CONFIG_SNAPSHOT_TEXTS".into(),
            ack_timeout: Duration::from_secs(5),
            attempts: 3,
            retry_initial_connect: false,
            tls: crate::tls::TlsFiles::default(),
            encryption: None,
        }
    }
}

/// What a successful publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub stream: String,
    pub sequence: u64,
    /// JetStream had already stored this `Nats-Msg-Id`.
    pub duplicate: bool,
    /// The text went to the object store and the event carries a `config_ref`.
    pub by_reference: bool,
}

/// A connected publisher. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    cfg: PublisherConfig,
    stream: String,
    /// The stream's per-message limit (0 or negative: none).
    stream_limit: i32,
    /// The stream's age limit, applied to the object store too.
    stream_max_age: Duration,
}

/// Headroom under the size limit for headers and protocol framing.
const HEADROOM: usize = 4096;

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("stream", &self.stream)
            .field("subject_prefix", &self.cfg.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connect and make sure a stream captures our subjects.
    pub async fn connect(cfg: PublisherConfig) -> Result<Self, SnapshotError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("rosbackup")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)));
        if cfg.retry_initial_connect {
            options = options.retry_on_initial_connect();
        }
        options = cfg.tls.nats_options(options);
        let client =
            options
                .connect(&cfg.nats_url)
                .await
                .map_err(|source| SnapshotError::Connect {
                    url: redact_url(&cfg.nats_url),
                    source,
                })?;
        Self::with_client(client, cfg).await
    }

    /// As [`Publisher::connect`], over an existing connection.
    pub async fn with_client(
        client: async_nats::Client,
        cfg: PublisherConfig,
    ) -> Result<Self, SnapshotError> {
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.ack_timeout)
            .build(client.clone());
        let found = ensure_stream(&js, &cfg).await?;
        Ok(Publisher {
            client,
            js,
            cfg,
            stream: found.name,
            stream_limit: found.max_message_size,
            stream_max_age: found.max_age,
        })
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn subject_for(&self, device_id: &str) -> String {
        format!("{}.create.{device_id}", self.cfg.subject_prefix)
    }

    /// Largest serialized event published inline: the server's current `max_payload`
    /// (it can change on reconnect) or the stream's message limit, less headroom.
    pub fn inline_limit(&self) -> usize {
        let mut limit = self.client.server_info().max_payload;
        if self.stream_limit > 0 {
            limit = limit.min(self.stream_limit as usize);
        }
        limit.saturating_sub(HEADROOM)
    }

    /// Publish and wait for the ack, retrying with the same `Nats-Msg-Id`
    /// (`<device_id>:<collected_at>:<sha256_hash>`, the hash as published).
    pub async fn publish(&self, event: &ConfigSnapshotEvent) -> Result<Receipt, SnapshotError> {
        let scope = format!("{}:{}", event.device_id, event.collected_at);
        self.publish_scoped(event, &scope).await
    }

    /// Publish `event` (a plaintext event as [`ConfigSnapshotEvent::new`] builds it) under
    /// the `Nats-Msg-Id` `<scope>:<sha256_hash>`. The worker passes the job id as scope,
    /// so that a job run again after its first run was published but not recorded (e.g.
    /// PostgreSQL went away in between) publishes the same config once: JetStream drops
    /// the repeat within the stream's duplicate window.
    ///
    /// With [`PublisherConfig::encryption`] the event is encrypted first, and the hash in
    /// the id is the keyed one (the plain SHA-256 never reaches the bus).
    pub async fn publish_scoped(
        &self,
        event: &ConfigSnapshotEvent,
        scope: &str,
    ) -> Result<Receipt, SnapshotError> {
        let subject = self.subject_for(&event.device_id);
        let Some(key) = &self.cfg.encryption else {
            let msg_id = format!("{scope}:{}", event.sha256_hash);
            return self.publish_plain(&subject, event, &msg_id).await;
        };
        let (sealed, ciphertext) = snapshot_crypto::seal_event(key, event)?;
        let msg_id = format!("{scope}:{}", sealed.sha256_hash);
        let headers = [
            (snapshot_crypto::HEADER_ENCRYPTION, snapshot_crypto::ALG),
            (snapshot_crypto::HEADER_KEY_ID, key.id()),
        ];
        let payload = encode(&sealed)?;
        if payload.len() <= self.inline_limit() {
            match self
                .send(&subject, &msg_id, payload.into(), false, &headers)
                .await
            {
                Err(Failure::TooBig) => {}
                other => return other.map_err(|f| f.into_error(&subject, self.cfg.attempts)),
            }
        }
        // By reference: the object holds the ciphertext, under a name unique to this
        // message (its nonce), so that a later message with the same config (another
        // nonce, another collection time) cannot overwrite what this event points to.
        let nonce = sealed
            .config_encryption
            .as_ref()
            .map(|e| e.nonce.as_str())
            .unwrap_or_default();
        let nonce_hex = crate::normalize::hex(
            &base64::engine::general_purpose::STANDARD
                .decode(nonce)
                .unwrap_or_default(),
        );
        let object = format!("{}/{}/{nonce_hex}", sealed.device_id, sealed.sha256_hash);
        let reference = self.store_object(object, &ciphertext).await?;
        let mut small = sealed;
        if let Some(e) = small.config_encryption.as_mut() {
            e.ciphertext = None;
        }
        small.config_ref = Some(reference);
        self.send(&subject, &msg_id, encode(&small)?.into(), true, &headers)
            .await
            .map_err(|f| f.into_error(&subject, self.cfg.attempts))
    }

    /// The seed's plaintext event, inline or (too large) by reference.
    async fn publish_plain(
        &self,
        subject: &str,
        event: &ConfigSnapshotEvent,
        msg_id: &str,
    ) -> Result<Receipt, SnapshotError> {
        let payload = encode(event)?;
        if payload.len() <= self.inline_limit() {
            match self.send(subject, msg_id, payload.into(), false, &[]).await {
                // The limit shrank under us (reconnect to another server): go by reference.
                Err(Failure::TooBig) => {}
                other => return other.map_err(|f| f.into_error(subject, self.cfg.attempts)),
            }
        }
        let bytes = event.inline_bytes()?;
        let object = format!("{}/{}", event.device_id, event.sha256_hash);
        let reference = self.store_object(object, &bytes).await?;
        let mut small = event.clone();
        small.config_text = String::new();
        small.config_text_base64 = None;
        small.config_ref = Some(reference);
        self.send(subject, msg_id, encode(&small)?.into(), true, &[])
            .await
            .map_err(|f| f.into_error(subject, self.cfg.attempts))
    }

    /// Publish one payload, retrying retryable failures with the same `Nats-Msg-Id`.
    async fn send(
        &self,
        subject: &str,
        msg_id: &str,
        payload: bytes::Bytes,
        by_reference: bool,
        extra_headers: &[(&str, &str)],
    ) -> Result<Receipt, Failure> {
        use async_nats::jetstream::context::PublishErrorKind as K;
        let mut last_err = String::new();
        for attempt in 1..=self.cfg.attempts.max(1) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id);
            if by_reference {
                headers.insert("Rosbackup-Config-Ref", "object-store");
            }
            for (name, value) in extra_headers {
                headers.insert(*name, *value);
            }
            let result = match self
                .js
                .publish_with_headers(subject.to_string(), headers, payload.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => {
                    return Ok(Receipt {
                        stream: ack.stream,
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                        by_reference,
                    });
                }
                Err(e) if e.kind() == K::MaxPayloadExceeded && !by_reference => {
                    return Err(Failure::TooBig);
                }
                // The server's stream message limit (error 10054) is also "too big".
                Err(e) if !by_reference && e.to_string().contains("10054") => {
                    return Err(Failure::TooBig);
                }
                Err(e) => {
                    tracing::warn!(attempt, subject = %subject, error = %e, "snapshot publish failed");
                    last_err = e.to_string();
                    if matches!(e.kind(), K::StreamNotFound | K::MaxPayloadExceeded) {
                        return Err(Failure::Final(last_err, attempt));
                    }
                    if attempt < self.cfg.attempts {
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                }
            }
        }
        Err(Failure::Final(last_err, self.cfg.attempts.max(1)))
    }

    /// Put `bytes` (a plaintext config, or an encrypted event's ciphertext) into the
    /// object store under `object`.
    async fn store_object(&self, object: String, bytes: &[u8]) -> Result<ConfigRef, SnapshotError> {
        let bucket = &self.cfg.object_bucket;
        let err = |reason: String| SnapshotError::ObjectStore {
            bucket: bucket.clone(),
            reason,
        };
        let store = match self.js.get_object_store(bucket).await {
            Ok(s) => s,
            Err(_) => self
                .js
                .create_object_store(jetstream::object_store::Config {
                    bucket: bucket.clone(),
                    description: Some("rosbackup: config texts too large to publish inline".into()),
                    // Objects must live as long as the events that reference them.
                    max_age: self.stream_max_age,
                    max_bytes: self.cfg.stream_max_bytes,
                    ..Default::default()
                })
                .await
                .map_err(|e| err(e.to_string()))?,
        };
        let mut reader = bytes;
        store
            .put(object.as_str(), &mut reader)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(ConfigRef {
            bucket: bucket.clone(),
            object,
            bytes: bytes.len() as u64,
        })
    }
}

fn encode(event: &ConfigSnapshotEvent) -> Result<Vec<u8>, SnapshotError> {
    serde_json::to_vec(event)
        .map_err(|e| SnapshotError::Decode(format!("cannot encode event: {e}")))
}

/// The exact normalized bytes of a plaintext event, fetching them from the object store
/// when the event carries a `config_ref`. An encrypted event is an error
/// ([`SnapshotCryptoError::Encrypted`]): use [`fetch_config_text_with_keys`].
pub async fn fetch_config_text(
    js: &jetstream::Context,
    event: &ConfigSnapshotEvent,
) -> Result<Vec<u8>, SnapshotError> {
    fetch_config_text_with_keys(js, event, &SnapshotKeys::new()).await
}

/// The exact normalized bytes of any event: plaintext (inline or by reference) as
/// [`fetch_config_text`], encrypted ones decrypted with `keys` (the ciphertext inline or
/// in the object store). The decryption helper for consumers of the snapshots.
pub async fn fetch_config_text_with_keys(
    js: &jetstream::Context,
    event: &ConfigSnapshotEvent,
    keys: &SnapshotKeys,
) -> Result<Vec<u8>, SnapshotError> {
    let encrypted = event.config_encryption.is_some();
    if encrypted {
        // Fail on a missing key before fetching anything.
        snapshot_crypto::key_for(keys, event)?;
    }
    let Some(r) = &event.config_ref else {
        return if encrypted {
            Ok(snapshot_crypto::open_inline(keys, event)?)
        } else {
            event.inline_bytes()
        };
    };
    let err = |reason: String| SnapshotError::ObjectStore {
        bucket: r.bucket.clone(),
        reason,
    };
    let store = js
        .get_object_store(&r.bucket)
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut obj = store.get(&r.object).await.map_err(|e| err(e.to_string()))?;
    // The size comes from a message: do not trust it for a large allocation.
    let mut out = Vec::with_capacity((r.bytes as usize).min(64 << 20));
    tokio::io::AsyncReadExt::read_to_end(&mut obj, &mut out)
        .await
        .map_err(|e| err(e.to_string()))?;
    if encrypted {
        return Ok(snapshot_crypto::open_sealed(keys, event, &out)?);
    }
    if crate::normalize::hash(&out) != event.sha256_hash {
        return Err(err(format!(
            "object {} does not match the event's sha256_hash",
            r.object
        )));
    }
    Ok(out)
}

/// How a send failed: too big for inline (go by reference), or for good.
enum Failure {
    TooBig,
    Final(String, u32),
}

impl Failure {
    fn into_error(self, subject: &str, attempts: u32) -> SnapshotError {
        let (reason, attempts) = match self {
            Failure::TooBig => ("message too large".to_string(), attempts),
            Failure::Final(reason, attempts) => (reason, attempts),
        };
        SnapshotError::Publish {
            subject: subject.to_string(),
            attempts,
            reason,
        }
    }
}

/// The stream we publish into.
struct FoundStream {
    name: String,
    /// Per-message size limit (-1 or 0 when unlimited).
    max_message_size: i32,
    max_age: Duration,
}

impl From<stream::Config> for FoundStream {
    fn from(c: stream::Config) -> Self {
        FoundStream {
            name: c.name,
            max_message_size: c.max_message_size,
            max_age: c.max_age,
        }
    }
}

/// Find a stream whose subjects cover ours, or create our own.
async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &PublisherConfig,
) -> Result<FoundStream, SnapshotError> {
    let probe = format!("{}.create.probe", cfg.subject_prefix);
    let wanted = format!("{}.>", cfg.subject_prefix);
    // Every stream's subjects are checked: a seed deployment's `DEVICE_EVENTS` may cover
    // ours among many others, and that is the stream to use.
    let mut streams = js.streams();
    while let Some(info) = futures::StreamExt::next(&mut streams).await {
        let info = info.map_err(|e| SnapshotError::Stream(e.to_string()))?;
        if info
            .config
            .subjects
            .iter()
            .any(|f| subject_matches(f, &probe))
        {
            return Ok(info.config.into());
        }
    }
    let config = stream::Config {
        name: cfg.stream_name.clone(),
        subjects: vec![wanted],
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_bytes: cfg.stream_max_bytes,
        max_age: cfg.stream_max_age,
        duplicate_window: cfg.duplicate_window,
        ..Default::default()
    };
    let info = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| SnapshotError::Stream(format!("creating {}: {e}", cfg.stream_name)))?
        .cached_info()
        .clone();
    if !info
        .config
        .subjects
        .iter()
        .any(|f| subject_matches(f, &probe))
    {
        return Err(SnapshotError::Stream(format!(
            "stream {} exists but does not capture {probe}; it is not ours to change",
            cfg.stream_name
        )));
    }
    Ok(info.config.into())
}

/// NATS subject matching: `*` one token, `>` the rest.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Drop credentials from a URL before it goes into an error message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Version;

    #[test]
    fn event_json_has_the_seed_field_names() {
        let e = ConfigSnapshotEvent::new("d", "t", None, b"/a\n", "h".into(), Version::V2);
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "collected_at",
                "config_text",
                "device_id",
                "normalization_version",
                "sha256_hash",
                "tenant_id"
            ]
        );
        assert!(e.collected_at.ends_with('Z'));
        chrono::DateTime::parse_from_rfc3339(&e.collected_at).unwrap();
        let with_version =
            ConfigSnapshotEvent::new("d", "t", Some("7.16".into()), b"x", "h".into(), Version::V1);
        let v = serde_json::to_value(&with_version).unwrap();
        assert_eq!(v["routeros_version"], "7.16");
        assert_eq!(v["normalization_version"], 1);
    }

    #[test]
    fn non_utf8_bytes_round_trip() {
        let raw = b"/a\nadd comment=\xe9t\xe9\n";
        let e = ConfigSnapshotEvent::new("d", "t", None, raw, "h".into(), Version::V2);
        assert!(e.config_text_base64.is_some());
        let back = ConfigSnapshotEvent::decode(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back.inline_bytes().unwrap(), raw);
    }

    #[test]
    fn subjects_and_redaction() {
        assert!(subject_matches(
            "config.snapshot.>",
            "config.snapshot.create.x"
        ));
        assert!(subject_matches(
            "config.snapshot.create.*",
            "config.snapshot.create.x"
        ));
        assert!(!subject_matches(
            "config.snapshot.create.*",
            "config.snapshot.create.x.y"
        ));
        assert!(!subject_matches("device.>", "config.snapshot.create.x"));
        assert_eq!(redact_url("nats://u:p@host:4222"), "nats://***@host:4222");
        assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
        assert!(ConfigSnapshotEvent::decode(b"{\"device_id\":1}").is_err());
    }
}
