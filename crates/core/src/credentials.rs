//! Device passwords at rest: AES-256-GCM under `CREDENTIAL_ENCRYPTION_KEY`.
//!
//! Why this shape: a database dump or a replica must not hand out the passwords of every
//! router in the fleet. Each password is sealed with a fresh random 96-bit nonce (stored
//! in front of the ciphertext) and the device id as associated data, so a ciphertext
//! copied onto another device's row does not decrypt. Errors never carry key material,
//! plaintext or ciphertext.

use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

const NONCE_LEN: usize = 12;

/// Why a key or a ciphertext was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error(
        "CREDENTIAL_ENCRYPTION_KEY is not set (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)"
    )]
    MissingKey,
    #[error("CREDENTIAL_ENCRYPTION_KEY is not valid base64")]
    KeyNotBase64,
    #[error("CREDENTIAL_ENCRYPTION_KEY decodes to {0} bytes; AES-256 needs exactly 32")]
    KeyLength(usize),
    #[error(
        "stored credentials could not be decrypted (wrong CREDENTIAL_ENCRYPTION_KEY, or the row was altered)"
    )]
    Decrypt,
    #[error("stored credentials are not valid UTF-8")]
    NotUtf8,
}

/// The fleet's credential key. `Debug` never shows it.
#[derive(Clone)]
pub struct CredentialKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(..)")
    }
}

impl CredentialKey {
    /// Parse the base64 form used in `CREDENTIAL_ENCRYPTION_KEY`.
    pub fn from_base64(text: &str) -> Result<Self, CredentialError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CredentialError::MissingKey);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| CredentialError::KeyNotBase64)?;
        if bytes.len() != 32 {
            return Err(CredentialError::KeyLength(bytes.len()));
        }
        Ok(CredentialKey {
            cipher: Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| CredentialError::KeyLength(bytes.len()))?,
        })
    }

    /// A fresh random key, base64-encoded (for `rosbackup` helpers and tests).
    pub fn generate_base64() -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// Seal `password` for the device `device_id`.
    pub fn seal(&self, device_id: &uuid::Uuid, password: &Secret) -> Vec<u8> {
        self.seal_bytes(device_id.as_bytes(), password.expose().as_bytes())
    }

    /// Seal arbitrary bytes: `nonce || ciphertext || tag`, with `aad` as associated data
    /// (what the ciphertext is bound to; it must be given again to open it). The same
    /// construction as passwords, for other data at rest (the config archive uses its own
    /// key and binds device id + hash).
    pub fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            // AES-GCM encryption fails only for messages beyond 64 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open what [`seal_bytes`](Self::seal_bytes) produced with the same `aad`.
    pub fn open_bytes(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CredentialError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(CredentialError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| CredentialError::Decrypt)
    }

    /// Open what [`seal`](Self::seal) produced for the same device.
    pub fn open(&self, device_id: &uuid::Uuid, sealed: &[u8]) -> Result<Secret, CredentialError> {
        let plain = self.open_bytes(device_id.as_bytes(), sealed)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| CredentialError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bound_to_the_device_and_never_repeats_a_nonce() {
        let key = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let pw = Secret::new("s3cret-pw".to_string());
        let s1 = key.seal(&a, &pw);
        let s2 = key.seal(&a, &pw);
        assert_ne!(s1[..NONCE_LEN], s2[..NONCE_LEN]);
        assert!(!s1.windows(9).any(|w| w == b"s3cret-pw"));
        assert_eq!(key.open(&a, &s1).unwrap().expose(), "s3cret-pw");
        assert_eq!(key.open(&b, &s1).unwrap_err(), CredentialError::Decrypt);
        let mut tampered = s1.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            key.open(&a, &tampered).unwrap_err(),
            CredentialError::Decrypt
        );
        assert_eq!(
            key.open(&a, &s1[..10]).unwrap_err(),
            CredentialError::Decrypt
        );
        let other = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
        assert_eq!(other.open(&a, &s1).unwrap_err(), CredentialError::Decrypt);
    }

    #[test]
    fn bad_keys_are_named_without_echoing_them() {
        assert_eq!(
            CredentialKey::from_base64("").unwrap_err(),
            CredentialError::MissingKey
        );
        assert_eq!(
            CredentialKey::from_base64("not base64!").unwrap_err(),
            CredentialError::KeyNotBase64
        );
        let e = CredentialKey::from_base64("c2hvcnQ=").unwrap_err();
        assert_eq!(e, CredentialError::KeyLength(5));
        assert!(!e.to_string().contains("c2hvcnQ"));
    }
}
