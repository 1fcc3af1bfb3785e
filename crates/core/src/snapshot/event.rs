//! The snapshot event: the seed's `ConfigSnapshotEvent` field for field, with our optional
//! fields (`config_text_base64`, `config_ref`, the `config_encryption` envelope), and the
//! errors of everything that builds, publishes or reads one. The schema is the bottom of
//! this module: `crypto`, `publish` and `fetch` build on it, never the other way round.

use base64::Engine;
use serde::{Deserialize, Serialize};

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
    /// `sha256_hash` is keyed. See [`crate::snapshot::crypto`].
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
    /// use [`crate::snapshot::crypto::open_inline`] or [`super::fetch_config_text_with_keys`].
    pub fn inline_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        if let Some(e) = &self.config_encryption {
            return Err(SnapshotCryptoError::Encrypted {
                kid: printable(&e.kid),
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

/// Why a key was refused or an encrypted event did not open. Never carries key material,
/// plaintext or ciphertext.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotCryptoError {
    /// The key's text: missing, hex, not base64 or not 32 bytes (advice in the message).
    #[error("the snapshot key {0}")]
    Key(crate::credentials::KeyFormatError),
    #[error("the snapshot key decodes to {0} bytes; AES-256 needs exactly 32")]
    KeyLength(usize),
    /// Configuration error: the reader holds no key with this id.
    #[error(
        "the snapshot is encrypted under key id {kid} and no configured key has that id \
         (set ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY, or add the old key to ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS)"
    )]
    UnknownKey { kid: String },
    /// The event is encrypted and the caller asked for its text without a key.
    #[error("the snapshot is encrypted (key id {kid}); it needs a snapshot key to be read")]
    Encrypted { kid: String },
    #[error("unsupported encrypted snapshot: {0}")]
    Unsupported(String),
    #[error("encrypted snapshot: {0} is malformed")]
    Malformed(&'static str),
    /// The key is right (its id matches) but the ciphertext or its metadata was altered,
    /// or the ciphertext belongs to another event.
    #[error(
        "the encrypted snapshot does not open with key {kid}: the ciphertext or the event's \
         metadata was altered, or it belongs to another device or message"
    )]
    Decrypt { kid: String },
    #[error("the decrypted config does not match the event's keyed sha256_hash")]
    HashMismatch,
}

impl SnapshotCryptoError {
    /// A problem on the reader's side — no key for this message, or an envelope version
    /// or algorithm newer than this reader: the message itself may be fine, so it must be
    /// kept for redelivery (after the reader is fixed), not dropped.
    pub fn is_reader_side(&self) -> bool {
        matches!(
            self,
            SnapshotCryptoError::UnknownKey { .. }
                | SnapshotCryptoError::Encrypted { .. }
                | SnapshotCryptoError::Unsupported(_)
        )
    }
}

/// The `config_encryption` object of an encrypted event. All binary fields are standard
/// base64 with padding.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEncryption {
    /// Envelope version, 1.
    pub v: u8,
    /// `AES-256-GCM`.
    pub alg: String,
    /// Key id: 16 hex digits derived from the key.
    pub kid: String,
    /// `HMAC-SHA256`: how the event's `sha256_hash` was computed.
    pub hash: String,
    /// The 12-byte nonce.
    pub nonce: String,
    /// Ciphertext ‖ tag, when inline. Absent when the event carries `config_ref`: then
    /// the object holds the raw ciphertext ‖ tag bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
}

impl std::fmt::Debug for ConfigEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigEncryption")
            .field("v", &self.v)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("hash", &self.hash)
            .field(
                "ciphertext_b64_len",
                &self.ciphertext.as_ref().map(String::len),
            )
            .finish_non_exhaustive()
    }
}

/// A key id from a message, safe to print (it is not secret, but it is untrusted input).
pub(crate) fn printable(kid: &str) -> String {
    kid.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect()
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
}
