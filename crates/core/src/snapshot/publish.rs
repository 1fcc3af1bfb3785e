//! Publishing a snapshot event to JetStream and waiting for its ack: which stream,
//! idempotent retries, the object-store fallback for large configs, optional encryption
//! (the module docs of [`crate::snapshot`] say why each).

use super::crypto::{self, SnapshotKey};
use super::event::{ConfigRef, ConfigSnapshotEvent, SnapshotError};
use crate::secret::redact_url;
use async_nats::jetstream::{self, stream};
use base64::Engine;
use std::time::Duration;

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
    /// `NATS_CREDS_FILE` / `NATS_NKEY_FILE` (see [`crate::nats_auth`]).
    pub auth: crate::nats_auth::NatsAuth,
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
            auth: crate::nats_auth::NatsAuth::none(),
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
        let mut options = crate::nats_auth::options(&cfg.tls, &cfg.auth)
            .name("rosbackup")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)));
        if cfg.retry_initial_connect {
            options = options.retry_on_initial_connect();
        }
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
        let (sealed, ciphertext) = crypto::seal_event(key, event)?;
        let msg_id = format!("{scope}:{}", sealed.sha256_hash);
        let headers = [
            (crypto::HEADER_ENCRYPTION, crypto::ALG),
            (crypto::HEADER_KEY_ID, key.id()),
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
        let meta = jetstream::object_store::ObjectMetadata {
            name: object.clone(),
            chunk_size: Some(object_chunk_size(self.inline_limit())),
            ..Default::default()
        };
        store
            .put(meta, &mut reader)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(ConfigRef {
            bucket: bucket.clone(),
            object,
            bytes: bytes.len() as u64,
        })
    }
}

/// The object store's chunk size: its default (128 KiB), or less when the server's
/// `max_payload` (or the stream's message limit) is smaller — every chunk is one message,
/// and a server configured with `max_payload: 64KB` would refuse 128 KiB chunks (the very
/// case where configs go by reference most). `inline_limit` already leaves room for the
/// headers; never below 1 KiB.
pub fn object_chunk_size(inline_limit: usize) -> usize {
    const DEFAULT: usize = 128 * 1024;
    inline_limit.clamp(1024, DEFAULT)
}

fn encode(event: &ConfigSnapshotEvent) -> Result<Vec<u8>, SnapshotError> {
    // serde_json's bytes, escaped a word at a time and sized up front (issue #20).
    super::wire::encode(event)
        .map_err(|e| SnapshotError::Decode(format!("cannot encode event: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_chunks_fit_the_servers_payload_limit() {
        // A default server (1 MiB max_payload): the object store's own 128 KiB.
        assert_eq!(object_chunk_size((1 << 20) - HEADROOM), 128 * 1024);
        // max_payload 64 KiB: chunks under it.
        assert_eq!(object_chunk_size(64 * 1024 - HEADROOM), 60 * 1024);
        // Absurdly small limits still make progress.
        assert_eq!(object_chunk_size(0), 1024);
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
