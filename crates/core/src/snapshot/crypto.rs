//! Encrypted snapshot events (opt-in): the config travels over NATS as AES-256-GCM
//! ciphertext, for deployments where the message bus must not see router secrets.
//!
//! Why this shape:
//!
//! * **Opt-in, seed schema otherwise.** Without `ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY` the
//!   event is the seed's `ConfigSnapshotEvent`, byte for byte. With it, the same event is
//!   published with `config_text` empty and a `config_encryption` object carrying the
//!   ciphertext, so routing (subject per device), `device_id`, `tenant_id`,
//!   `collected_at`, `routeros_version` and `normalization_version` stay readable.
//! * **The hash is keyed.** A plain SHA-256 of the config would let anyone who reads the
//!   bus confirm a guess offline: take a known or templated config (an older plaintext
//!   backup, the fleet's standard config), try candidate Wi-Fi passphrases or PPP secrets,
//!   and compare hashes. So in encrypted mode `sha256_hash` (and everything derived from
//!   it on the bus: `Nats-Msg-Id`, the object name of large configs) is
//!   `HMAC-SHA256(hash_key, text)`, hex — the same shape, equal for equal configs under
//!   one key (change detection and deduplication work as before), useless for guessing
//!   without the key. The cost: after a key rotation every device shows one "changed"
//!   hash to consumers that only compare hashes. The archiver decrypts and stores the
//!   real SHA-256, so its history does not notice a rotation.
//! * **The key id is derived from the key** (`HMAC-SHA256(key, "rosbackup-snapshot/v1
//!   key-id")`, first 8 bytes, hex). Consumers holding several keys (rotation) pick the
//!   right one without a separately configured label that could disagree with the key,
//!   and a consumer that *has* the key named by `kid` knows that a failing decryption
//!   means an altered message (dropped as malformed), while a consumer without it knows
//!   it is misconfigured (the message is kept for redelivery). The id reveals nothing
//!   about the key.
//! * **Bound to its metadata.** The associated data is every plaintext field the
//!   ciphertext belongs to (device, tenant, collection time, keyed hash, normalization,
//!   RouterOS version, key id), so a ciphertext copied into another device's event, or
//!   an event whose metadata was edited, does not open. Every message gets a fresh random
//!   96-bit nonce (a retried publish too; JetStream's duplicate window still drops the
//!   retry by its `Nats-Msg-Id`).
//! * **No compression, no framing tricks**: the ciphertext is exactly
//!   `AES-256-GCM(key, nonce, normalized config bytes, aad)` (ciphertext ‖ 16-byte tag),
//!   so a consumer in any language needs only AES-GCM, HMAC-SHA256 and base64. The
//!   format is documented in README.md ("Consume the snapshots").

pub use super::event::{ConfigEncryption, SnapshotCryptoError};
use super::event::{ConfigSnapshotEvent, SnapshotError, printable};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

use sha2::{Digest, Sha256};

/// `config_encryption.alg`.
pub const ALG: &str = "AES-256-GCM";
/// `config_encryption.hash`: how `sha256_hash` was computed in encrypted mode.
pub const HASH_ALG: &str = "HMAC-SHA256";
/// `config_encryption.v`.
pub const ENVELOPE_VERSION: u8 = 1;
/// Header naming the algorithm of an encrypted event (absent on plaintext events).
pub const HEADER_ENCRYPTION: &str = "Rosbackup-Encryption";
/// Header naming the key id of an encrypted event.
pub const HEADER_KEY_ID: &str = "Rosbackup-Key-Id";

/// First field of the associated data.
pub const AAD_LABEL: &str = "rosbackup-snapshot/v1";
/// HMAC message that derives the key id.
pub const KEY_ID_LABEL: &str = "rosbackup-snapshot/v1 key-id";
/// HMAC message that derives the hash key.
pub const HASH_KEY_LABEL: &str = "rosbackup-snapshot/v1 hash-key";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// One snapshot key. `Debug` shows its id only.
#[derive(Clone)]
pub struct SnapshotKey {
    cipher: Aes256Gcm,
    id: String,
    hash_key: [u8; 32],
}

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotKey({})", self.id)
    }
}

impl SnapshotKey {
    /// Parse the base64 form (`openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<Self, SnapshotCryptoError> {
        let bytes = crate::credentials::decode_key(text).map_err(SnapshotCryptoError::Key)?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotCryptoError> {
        if bytes.len() != 32 {
            return Err(SnapshotCryptoError::KeyLength(bytes.len()));
        }
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .map_err(|_| SnapshotCryptoError::KeyLength(bytes.len()))?;
        let id = crate::normalize::hex(&hmac_sha256(bytes, &[KEY_ID_LABEL.as_bytes()])[..8]);
        Ok(SnapshotKey {
            cipher,
            id,
            hash_key: hmac_sha256(bytes, &[HASH_KEY_LABEL.as_bytes()]),
        })
    }

    /// A fresh random key, base64-encoded.
    pub fn generate_base64() -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// The key id (`kid`): 16 hex digits derived from the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `HMAC-SHA256(hash_key, text)` in lowercase hex: what encrypted events carry as
    /// `sha256_hash`.
    pub fn keyed_hash(&self, text: &[u8]) -> String {
        crate::normalize::hex(&hmac_sha256(&self.hash_key, &[text]))
    }
}

/// The keys a reader can open events with (the current one and older ones), by key id.
/// `Debug` shows the ids only.
#[derive(Clone, Default)]
pub struct SnapshotKeys {
    keys: Vec<SnapshotKey>,
}

impl std::fmt::Debug for SnapshotKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

impl SnapshotKeys {
    pub fn new() -> Self {
        SnapshotKeys::default()
    }

    /// Add a key (a key already present is not added twice).
    pub fn push(&mut self, key: SnapshotKey) {
        if self.get(key.id()).is_none() {
            self.keys.push(key);
        }
    }

    /// Parse a list of base64 keys separated by commas and/or whitespace. An error names
    /// the entry by position (1-based), never by value.
    pub fn parse_list(text: &str) -> Result<Self, (usize, SnapshotCryptoError)> {
        let mut keys = SnapshotKeys::new();
        for (i, part) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            keys.push(SnapshotKey::from_base64(part).map_err(|e| (i + 1, e))?);
        }
        Ok(keys)
    }

    pub fn get(&self, kid: &str) -> Option<&SnapshotKey> {
        self.keys.iter().find(|k| k.id == kid)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }
}

/// The associated data of an encrypted event: each field as a 4-byte big-endian length
/// followed by its UTF-8 bytes, in this order: [`AAD_LABEL`], `kid`, `device_id`,
/// `tenant_id`, `collected_at`, `sha256_hash` (the keyed hash), `normalization_version`
/// (decimal), `routeros_version` (empty when absent).
pub fn aad(event: &ConfigSnapshotEvent, kid: &str) -> Vec<u8> {
    let normalization = event.normalization_version.to_string();
    let fields: [&str; 8] = [
        AAD_LABEL,
        kid,
        &event.device_id,
        &event.tenant_id,
        &event.collected_at,
        &event.sha256_hash,
        &normalization,
        event.routeros_version.as_deref().unwrap_or(""),
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
    for f in fields {
        // Field lengths are bounded by the message size; a field over 4 GiB cannot occur.
        out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(f.as_bytes());
    }
    out
}

/// Encrypt a plaintext event (as [`ConfigSnapshotEvent::new`] builds it): the result has
/// the keyed `sha256_hash`, an empty `config_text`, no `config_text_base64` and a
/// `config_encryption` carrying the inline ciphertext. Also returns the raw ciphertext ‖
/// tag, for the object store when the event is too large to publish inline.
pub fn seal_event(
    key: &SnapshotKey,
    plain: &ConfigSnapshotEvent,
) -> Result<(ConfigSnapshotEvent, Vec<u8>), SnapshotError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    seal_with_nonce(key, plain, nonce)
}

fn seal_with_nonce(
    key: &SnapshotKey,
    plain: &ConfigSnapshotEvent,
    nonce: [u8; NONCE_LEN],
) -> Result<(ConfigSnapshotEvent, Vec<u8>), SnapshotError> {
    let text = plain.inline_bytes()?;
    let mut event = plain.clone();
    event.sha256_hash = key.keyed_hash(&text);
    event.config_text = String::new();
    event.config_text_base64 = None;
    event.config_ref = None;
    let aad = aad(&event, key.id());
    let sealed = key
        .cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &text,
                aad: &aad,
            },
        )
        // AES-GCM refuses only messages beyond 64 GiB; exports are capped far below.
        .map_err(|_| SnapshotError::Decode("config too large to encrypt".into()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    event.config_encryption = Some(ConfigEncryption {
        v: ENVELOPE_VERSION,
        alg: ALG.into(),
        kid: key.id().into(),
        hash: HASH_ALG.into(),
        nonce: b64.encode(nonce),
        ciphertext: Some(b64.encode(&sealed)),
    });
    Ok((event, sealed))
}

/// The key an encrypted event needs, checked before any work: the envelope's version and
/// algorithms, then the key id. `Ok(None)` for a plaintext event.
pub fn key_for<'k>(
    keys: &'k SnapshotKeys,
    event: &ConfigSnapshotEvent,
) -> Result<Option<&'k SnapshotKey>, SnapshotCryptoError> {
    let Some(env) = &event.config_encryption else {
        return Ok(None);
    };
    if env.v != ENVELOPE_VERSION {
        return Err(SnapshotCryptoError::Unsupported(format!(
            "envelope version {}",
            env.v
        )));
    }
    if env.alg != ALG {
        return Err(SnapshotCryptoError::Unsupported("algorithm".into()));
    }
    if env.hash != HASH_ALG {
        return Err(SnapshotCryptoError::Unsupported("hash".into()));
    }
    match keys.get(&env.kid) {
        Some(k) => Ok(Some(k)),
        None => Err(SnapshotCryptoError::UnknownKey {
            kid: printable(&env.kid),
        }),
    }
}

/// Decrypt an encrypted event's config. `sealed` is the ciphertext ‖ tag: the decoded
/// inline `ciphertext`, or the bytes of the `config_ref` object. Checks the envelope, the
/// key id, the tag (which covers the event's metadata, see [`aad`]) and the keyed hash.
pub fn open_sealed(
    keys: &SnapshotKeys,
    event: &ConfigSnapshotEvent,
    sealed: &[u8],
) -> Result<Vec<u8>, SnapshotCryptoError> {
    let Some(key) = key_for(keys, event)? else {
        return Err(SnapshotCryptoError::Malformed("config_encryption (absent)"));
    };
    let env = event
        .config_encryption
        .as_ref()
        .ok_or(SnapshotCryptoError::Malformed("config_encryption"))?;
    let nonce = base64::engine::general_purpose::STANDARD
        .decode(&env.nonce)
        .ok()
        .filter(|n| n.len() == NONCE_LEN)
        .ok_or(SnapshotCryptoError::Malformed("config_encryption.nonce"))?;
    if sealed.len() < TAG_LEN {
        return Err(SnapshotCryptoError::Malformed("ciphertext (too short)"));
    }
    let text = key
        .cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: sealed,
                aad: &aad(event, key.id()),
            },
        )
        .map_err(|_| SnapshotCryptoError::Decrypt {
            kid: key.id().into(),
        })?;
    let expected = key.keyed_hash(&text);
    let got = event.sha256_hash.to_ascii_lowercase();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        got.as_bytes(),
    )) {
        return Err(SnapshotCryptoError::HashMismatch);
    }
    Ok(text)
}

/// [`open_sealed`] for an event that carries its ciphertext inline.
pub fn open_inline(
    keys: &SnapshotKeys,
    event: &ConfigSnapshotEvent,
) -> Result<Vec<u8>, SnapshotCryptoError> {
    key_for(keys, event)?;
    let sealed = event
        .config_encryption
        .as_ref()
        .and_then(|e| e.ciphertext.as_deref())
        .ok_or(SnapshotCryptoError::Malformed(
            "config_encryption.ciphertext (absent)",
        ))
        .and_then(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .map_err(|_| SnapshotCryptoError::Malformed("config_encryption.ciphertext"))
        })?;
    open_sealed(keys, event, &sealed)
}

/// HMAC-SHA256 (RFC 2104) over the concatenation of `parts`. Written out over `sha2`
/// (already a dependency) because the `hmac` crate in this lock file is built on a newer
/// `digest` than our `sha2`; checked against RFC 4231's test vectors below.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Version;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let cases: [(Vec<u8>, &[u8], &str); 3] = [
            (
                vec![0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hmac_sha256(&key, &[data]).to_vec(), unhex(want));
            // Split input hashes the same as whole input.
            let (a, b) = data.split_at(3);
            assert_eq!(hmac_sha256(&key, &[a, b]).to_vec(), unhex(want));
        }
    }

    fn plain_event(text: &[u8]) -> ConfigSnapshotEvent {
        let (n, h) = crate::normalize::normalize_and_hash(text, Version::V2);
        ConfigSnapshotEvent::new(
            "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
            "0e1d2c3b-4a59-4867-8756-a4b3c2d1e0f9",
            Some("7.16".into()),
            &n,
            h,
            Version::V2,
        )
    }

    #[test]
    fn seal_and_open_round_trip_hide_the_text_and_the_plain_hash() {
        let key = SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap();
        let mut keys = SnapshotKeys::new();
        keys.push(key.clone());
        let plain =
            plain_event(b"/interface wireless security-profiles\nset passphrase=Hunter2Hunter2\n");
        let (sealed, ct) = seal_event(&key, &plain).unwrap();
        let json = String::from_utf8(serde_json::to_vec(&sealed).unwrap()).unwrap();
        assert!(!json.contains("Hunter2Hunter2"), "{json}");
        assert!(
            !json.contains(&plain.sha256_hash),
            "the plain SHA-256 leaks"
        );
        assert_eq!(sealed.config_text, "");
        assert_eq!(sealed.sha256_hash.len(), 64);
        let back = ConfigSnapshotEvent::decode(json.as_bytes()).unwrap();
        assert_eq!(
            open_inline(&keys, &back).unwrap(),
            plain.inline_bytes().unwrap()
        );
        assert_eq!(
            open_sealed(&keys, &back, &ct).unwrap(),
            plain.inline_bytes().unwrap()
        );
        // A fresh nonce per message, even for the same event.
        let (again, _) = seal_event(&key, &plain).unwrap();
        assert_ne!(
            again.config_encryption.as_ref().unwrap().nonce,
            sealed.config_encryption.as_ref().unwrap().nonce
        );
        assert_eq!(
            again.sha256_hash, sealed.sha256_hash,
            "keyed hash is stable"
        );
        // The plaintext reader refuses instead of returning an empty text.
        let e = back.inline_bytes().unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
    }

    #[test]
    fn altered_metadata_ciphertext_or_key_do_not_open() {
        let key = SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap();
        let mut keys = SnapshotKeys::new();
        keys.push(key.clone());
        let (sealed, ct) =
            seal_event(&key, &plain_event(b"/system identity\nset name=r1\n")).unwrap();
        let kid = key.id().to_string();
        let decrypt = SnapshotCryptoError::Decrypt { kid: kid.clone() };
        type Edit = Box<dyn Fn(&mut ConfigSnapshotEvent)>;
        let edits: Vec<Edit> = vec![
            Box::new(|e| e.device_id = "00000000-0000-0000-0000-000000000001".into()),
            Box::new(|e| e.tenant_id = "x".into()),
            Box::new(|e| e.collected_at = "2020-01-01T00:00:00Z".into()),
            Box::new(|e| e.routeros_version = None),
            Box::new(|e| e.normalization_version = 1),
            Box::new(|e| e.sha256_hash = "0".repeat(64)),
        ];
        for edit in edits {
            let mut e = sealed.clone();
            edit(&mut e);
            assert_eq!(open_inline(&keys, &e).unwrap_err(), decrypt);
        }
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert_eq!(open_sealed(&keys, &sealed, &flipped).unwrap_err(), decrypt);
        assert_eq!(
            open_sealed(&keys, &sealed, &ct[..ct.len() - 1]).unwrap_err(),
            decrypt
        );
        // Another key: its id differs, so this is a missing key, not tampering.
        let mut other = SnapshotKeys::new();
        other.push(SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap());
        let e = open_inline(&other, &sealed).unwrap_err();
        assert!(e.is_reader_side(), "{e:?}");
        assert!(
            open_inline(&SnapshotKeys::new(), &sealed)
                .unwrap_err()
                .is_reader_side()
        );
        // A forged kid naming no key is also "missing", and is printed safely.
        let mut forged = sealed.clone();
        forged.config_encryption.as_mut().unwrap().kid = "k\n\u{1b}[31mx".into();
        assert_eq!(
            open_inline(&keys, &forged).unwrap_err(),
            SnapshotCryptoError::UnknownKey {
                kid: "k31mx".into()
            }
        );
        let mut alg = sealed.clone();
        alg.config_encryption.as_mut().unwrap().alg = "ChaCha20".into();
        let e = open_inline(&keys, &alg).unwrap_err();
        assert!(matches!(e, SnapshotCryptoError::Unsupported(_)), "{e:?}");
        assert!(
            e.is_reader_side(),
            "a newer envelope is kept for a newer reader"
        );
        assert!(!decrypt.is_reader_side() && !SnapshotCryptoError::HashMismatch.is_reader_side());
    }

    use crate::credentials::KeyFormatError;

    #[test]
    fn keys_parse_and_never_echo() {
        let a = SnapshotKey::generate_base64();
        let b = SnapshotKey::generate_base64();
        let keys = SnapshotKeys::parse_list(&format!(" {a},\n{b} ,{a}")).unwrap();
        assert_eq!(keys.ids().len(), 2);
        let ka = SnapshotKey::from_base64(&a).unwrap();
        assert_eq!(ka.id().len(), 16);
        assert!(keys.get(ka.id()).is_some());
        assert!(!format!("{keys:?} {ka:?}").contains(&a));
        let (pos, e) = SnapshotKeys::parse_list(&format!("{a},c2hvcnQ=")).unwrap_err();
        assert_eq!(
            (pos, e),
            (2, SnapshotCryptoError::Key(KeyFormatError::Length(5)))
        );
        assert_eq!(
            SnapshotKey::from_base64("not base64!").unwrap_err(),
            SnapshotCryptoError::Key(KeyFormatError::NotBase64)
        );
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let e = SnapshotKey::from_base64(hex).unwrap_err();
        assert_eq!(e, SnapshotCryptoError::Key(KeyFormatError::Hex));
        assert!(e.to_string().contains("xxd -r -p | base64"), "{e}");
    }

    /// A vector computed independently from README's recipe with Python's
    /// `cryptography` (AESGCM) and `hmac`: a consumer in another language can check its
    /// implementation against the same numbers (README, "Consume the snapshots").
    #[test]
    fn matches_the_independent_test_vector() {
        let key = SnapshotKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap();
        assert_eq!(key.id(), "625711fbea171027");
        let text = b"/interface wireless security-profiles\nset [ find default=yes ] passphrase=Hunter2Hunter2\n";
        let mut plain = ConfigSnapshotEvent::new(
            "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
            "0e1d2c3b-4a59-4867-8756-a4b3c2d1e0f9",
            Some("7.16".into()),
            text,
            crate::normalize::hash(text),
            Version::V2,
        );
        plain.collected_at = "2026-05-19T02:22:25Z".into();
        let (sealed, _) = seal_with_nonce(&key, &plain, [1; NONCE_LEN]).unwrap();
        assert_eq!(
            sealed.sha256_hash,
            "26cacc0e623c6c8a2992e0c161c5144a0c442b8db15ed2167edcbac968763d9b"
        );
        let env = sealed.config_encryption.as_ref().unwrap();
        assert_eq!(env.nonce, "AQEBAQEBAQEBAQEB");
        assert_eq!(
            env.ciphertext.as_deref(),
            Some(
                "WKqLQQ33Dge3MUdvcRU3tK4d/Pvi5nWpgbJzlbB5jF7Kvw4qlZwpViwCrP9UzOAUq4Etay+K7W3AD0FN53+rr2scM8jtV6gegAAII0afQMTO6fX+E6ovF+ch5kySkPMKXrX9qOe2D46P"
            )
        );
        let mut keys = SnapshotKeys::new();
        keys.push(key);
        assert_eq!(open_inline(&keys, &sealed).unwrap(), text);
    }

    #[test]
    fn key_id_and_keyed_hash_follow_the_documented_derivation() {
        // The README's recipe, step by step, for a fixed key.
        let raw = [7u8; 32];
        let key = SnapshotKey::from_bytes(&raw).unwrap();
        let kid = crate::normalize::hex(&hmac_sha256(&raw, &[KEY_ID_LABEL.as_bytes()])[..8]);
        assert_eq!(key.id(), kid);
        let hash_key = hmac_sha256(&raw, &[HASH_KEY_LABEL.as_bytes()]);
        assert_eq!(
            key.keyed_hash(b"/a\n"),
            crate::normalize::hex(&hmac_sha256(&hash_key, &[b"/a\n"]))
        );
        assert_ne!(key.keyed_hash(b"/a\n"), crate::normalize::hash(b"/a\n"));
    }
}
