//! Reading a snapshot's config back, for consumers: inline or from the object store,
//! decrypted when the event is encrypted, checked against its hash.

use super::crypto::{self, SnapshotKeys};
use super::event::{ConfigSnapshotEvent, SnapshotError};
use async_nats::jetstream;

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
        crypto::key_for(keys, event)?;
    }
    let Some(r) = &event.config_ref else {
        return if encrypted {
            Ok(crypto::open_inline(keys, event)?)
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
        return Ok(crypto::open_sealed(keys, event, &out)?);
    }
    if crate::normalize::hash(&out) != event.sha256_hash {
        return Err(err(format!(
            "object {} does not match the event's sha256_hash",
            r.object
        )));
    }
    Ok(out)
}
