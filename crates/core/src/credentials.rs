//! Device passwords at rest: AES-256-GCM under `CREDENTIAL_ENCRYPTION_KEY`.
//!
//! Why this shape: a database dump or a replica must not hand out the passwords of every
//! router in the fleet. Each password is sealed with a fresh random 96-bit nonce (stored
//! in front of the ciphertext) and the device id as associated data, so a ciphertext
//! copied onto another device's row does not decrypt. Errors never carry key material,
//! plaintext or ciphertext.
//!
//! A key that is not the fleet's must be refused when a process starts, not discovered
//! one failed backup at a time: [`KEY_CHECK_PLAIN`] sealed under the key (associated data
//! [`KEY_CHECK_AAD`]) is stored once in `credential_key_check` (see
//! `Store::check_credential_key`), and a key that does not open it is the wrong key.
//!
//! Every 32-byte key of the product (this one, `NEW_CREDENTIAL_ENCRYPTION_KEY`,
//! `ARCHIVE_ENCRYPTION_KEY`, `ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY`) is read by
//! [`decode_key`], so a key given as hex or as a password gets the same advice
//! everywhere: what it looks like and how to make or convert one, never its value.

use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

const NONCE_LEN: usize = 12;

/// The known plaintext sealed under the fleet's credential key as its check value.
pub const KEY_CHECK_PLAIN: &[u8] = b"rosbackup: this key seals the device passwords";
/// The associated data of the check value (no device id is 33 bytes of this text, so a
/// check value can never pass for a password and the other way round).
pub const KEY_CHECK_AAD: &[u8] = b"rosbackup credential key check v1";

/// What `CREDENTIAL_ENCRYPTION_KEY` is, when it is not the key that sealed the stored
/// passwords (after the variable's name).
pub const WRONG_KEY: &str = "is not the key that sealed the stored device passwords \
     (it does not open the key check value in the database); start with the key that \
     sealed them — after `rosbackup devices rotate-key`, the one given as \
     NEW_CREDENTIAL_ENCRYPTION_KEY";

/// How to make a key, for every message about a malformed one.
const MAKE_ONE: &str =
    "a key is base64 of 32 random bytes: make one with `openssl rand -base64 32`";

/// Why the text of a 32-byte key was refused. The words follow the variable's name
/// ("CREDENTIAL_ENCRYPTION_KEY is not set …") and never quote the value.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum KeyFormatError {
    #[error("is not set ({MAKE_ONE})")]
    Missing,
    /// 64 hex digits: the 32 bytes written as hex (which base64-decodes to 48 bytes).
    #[error(
        "looks like hex (64 hex digits), but the key is read as base64: convert it with \
         `printf %s \"$KEY\" | xxd -r -p | base64`, or make a new one with `openssl rand -base64 32`"
    )]
    Hex,
    #[error("is not valid base64; {MAKE_ONE}")]
    NotBase64,
    #[error(
        "decodes to {0} bytes; AES-256 needs exactly 32 (a password or passphrase is not a key): \
         make one with `openssl rand -base64 32`"
    )]
    Length(usize),
}

/// Decode the base64 text of a 32-byte key, with advice for the usual mistakes.
pub fn decode_key(text: &str) -> Result<[u8; 32], KeyFormatError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyFormatError::Missing);
    }
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyFormatError::Hex);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| KeyFormatError::NotBase64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyFormatError::Length(bytes.len()))
}

/// Why a key or a ciphertext was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// `CREDENTIAL_ENCRYPTION_KEY` is missing or malformed.
    #[error("CREDENTIAL_ENCRYPTION_KEY {0}")]
    Key(KeyFormatError),
    /// The key is well-formed but not the fleet's (the key check value does not open,
    /// or, before one was stored, no stored password opens).
    #[error("CREDENTIAL_ENCRYPTION_KEY {WRONG_KEY}")]
    WrongKey,
    #[error(
        "stored credentials could not be decrypted (wrong CREDENTIAL_ENCRYPTION_KEY, or the row was altered)"
    )]
    Decrypt,
    #[error("stored credentials are not valid UTF-8")]
    NotUtf8,
    #[error("the stored SSH key opens but is not a usable key (was the row altered?)")]
    BadKey,
}

impl CredentialError {
    /// The words after a variable's name, for a configuration error about
    /// another variable that holds a key of this kind (`NEW_CREDENTIAL_ENCRYPTION_KEY`,
    /// `ARCHIVE_ENCRYPTION_KEY`).
    pub fn reason(&self) -> String {
        match self {
            CredentialError::Key(k) => k.to_string(),
            CredentialError::WrongKey => WRONG_KEY.to_string(),
            other => other.to_string(),
        }
    }
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
        let bytes = decode_key(text).map_err(CredentialError::Key)?;
        Ok(CredentialKey {
            cipher: Aes256Gcm::new(&bytes.into()),
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

    /// The key check value: [`KEY_CHECK_PLAIN`] sealed under this key.
    pub fn check_value(&self) -> Vec<u8> {
        self.seal_bytes(KEY_CHECK_AAD, KEY_CHECK_PLAIN)
    }

    /// Does this key open `check` (a [`check_value`](Self::check_value)) to the known
    /// plaintext?
    pub fn opens_check_value(&self, check: &[u8]) -> bool {
        self.open_bytes(KEY_CHECK_AAD, check)
            .is_ok_and(|p| p == KEY_CHECK_PLAIN)
    }

    /// Seal a user key for its owner (a device or a credential profile): the unencrypted
    /// OpenSSH text, with the owner's id and `/ssh-key` as associated data, so a sealed
    /// key is never taken for a password and is bound to its row like one.
    pub fn seal_key(&self, owner: &uuid::Uuid, key: &crate::userkey::UserKey) -> Vec<u8> {
        self.seal_bytes(&key_aad(owner), key.to_sealable().expose().as_bytes())
    }

    /// Open what [`seal_key`](Self::seal_key) produced for the same owner.
    pub fn open_key(
        &self,
        owner: &uuid::Uuid,
        sealed: &[u8],
    ) -> Result<crate::userkey::UserKey, CredentialError> {
        let plain = self.open_bytes(&key_aad(owner), sealed)?;
        let text = String::from_utf8(plain).map_err(|_| CredentialError::NotUtf8)?;
        crate::userkey::UserKey::from_sealed(&Secret::new(text))
            .map_err(|_| CredentialError::BadKey)
    }

    /// Open what [`seal`](Self::seal) produced for the same device.
    pub fn open(&self, device_id: &uuid::Uuid, sealed: &[u8]) -> Result<Secret, CredentialError> {
        let plain = self.open_bytes(device_id.as_bytes(), sealed)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| CredentialError::NotUtf8)
    }
}

impl CredentialKey {
    /// Seal a jump host's password for its owner (a device, a credential profile or a
    /// tenant): the owner's id and `/jump-password` as associated data, so it never
    /// passes for the owner's own password.
    pub fn seal_jump_password(&self, owner: &uuid::Uuid, password: &Secret) -> Vec<u8> {
        self.seal_bytes(
            &owned_aad(owner, b"/jump-password"),
            password.expose().as_bytes(),
        )
    }

    /// Open what [`seal_jump_password`](Self::seal_jump_password) produced.
    pub fn open_jump_password(
        &self,
        owner: &uuid::Uuid,
        sealed: &[u8],
    ) -> Result<Secret, CredentialError> {
        let plain = self.open_bytes(&owned_aad(owner, b"/jump-password"), sealed)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| CredentialError::NotUtf8)
    }

    /// Seal a jump host's user key for its owner (`/jump-key`).
    pub fn seal_jump_key(&self, owner: &uuid::Uuid, key: &crate::userkey::UserKey) -> Vec<u8> {
        self.seal_bytes(
            &owned_aad(owner, b"/jump-key"),
            key.to_sealable().expose().as_bytes(),
        )
    }

    /// Open what [`seal_jump_key`](Self::seal_jump_key) produced.
    pub fn open_jump_key(
        &self,
        owner: &uuid::Uuid,
        sealed: &[u8],
    ) -> Result<crate::userkey::UserKey, CredentialError> {
        let plain = self.open_bytes(&owned_aad(owner, b"/jump-key"), sealed)?;
        let text = String::from_utf8(plain).map_err(|_| CredentialError::NotUtf8)?;
        crate::userkey::UserKey::from_sealed(&Secret::new(text))
            .map_err(|_| CredentialError::BadKey)
    }
}

fn owned_aad(owner: &uuid::Uuid, what: &[u8]) -> Vec<u8> {
    let mut aad = owner.as_bytes().to_vec();
    aad.extend_from_slice(what);
    aad
}

/// Associated data of a stored binary backup file (`binary::store`): device, the file's
/// SHA-256 and the config hash it was taken with. Here, below both the binary store and
/// the key rotation (`Store::rotate_key`), so that both seal the same way.
pub fn binary_file_aad(device: &uuid::Uuid, sha256: &str, config_sha256: &str) -> Vec<u8> {
    format!("rosbackup-binary-file:{device}:{sha256}:{config_sha256}").into_bytes()
}

/// Associated data of a stored binary backup's password.
pub fn binary_password_aad(device: &uuid::Uuid, sha256: &str) -> Vec<u8> {
    format!("rosbackup-binary-password:{device}:{sha256}").into_bytes()
}

/// Associated data of a device's current backup password (`binary_state`).
pub fn binary_device_password_aad(device: &uuid::Uuid) -> Vec<u8> {
    format!("rosbackup-binary-device-password:{device}").into_bytes()
}

fn key_aad(owner: &uuid::Uuid) -> Vec<u8> {
    let mut aad = owner.as_bytes().to_vec();
    aad.extend_from_slice(b"/ssh-key");
    aad
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
            CredentialError::Key(KeyFormatError::Missing)
        );
        assert_eq!(
            CredentialKey::from_base64("not base64!").unwrap_err(),
            CredentialError::Key(KeyFormatError::NotBase64)
        );
        let e = CredentialKey::from_base64("c2hvcnQ=").unwrap_err();
        assert_eq!(e, CredentialError::Key(KeyFormatError::Length(5)));
        assert!(!e.to_string().contains("c2hvcnQ"));
        assert!(
            e.to_string()
                .starts_with("CREDENTIAL_ENCRYPTION_KEY decodes to 5 bytes")
        );
    }

    #[test]
    fn hex_and_passwords_get_advice_on_making_a_key() {
        // 32 bytes as hex: 64 hex digits, which base64 would decode to 48 bytes.
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        assert_eq!(decode_key(hex).unwrap_err(), KeyFormatError::Hex);
        let msg = CredentialKey::from_base64(hex).unwrap_err().to_string();
        assert!(msg.contains("looks like hex"), "{msg}");
        assert!(msg.contains("xxd -r -p | base64"), "{msg}");
        assert!(!msg.contains("00112233"), "{msg}");
        // A password that happens to be valid base64 (16 characters: 12 bytes).
        let e = decode_key("CorrectHorse1234").unwrap_err();
        assert_eq!(e, KeyFormatError::Length(12));
        let msg = e.to_string();
        assert!(msg.contains("openssl rand -base64 32"), "{msg}");
        assert!(!msg.contains("CorrectHorse"), "{msg}");
        for e in [KeyFormatError::Missing, KeyFormatError::NotBase64] {
            assert!(e.to_string().contains("openssl rand -base64 32"), "{e}");
        }
        // Hex of another length is not taken for a hex key; a real key decodes.
        assert_eq!(
            decode_key(&hex[..62]).unwrap_err(),
            KeyFormatError::NotBase64
        );
        assert!(decode_key(&CredentialKey::generate_base64()).is_ok());
        // The reason alone, for another variable's name.
        assert_eq!(
            CredentialError::Key(KeyFormatError::Hex).reason(),
            KeyFormatError::Hex.to_string()
        );
    }

    #[test]
    fn the_check_value_opens_only_under_its_key() {
        let key = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
        let other = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
        let check = key.seal_bytes(KEY_CHECK_AAD, KEY_CHECK_PLAIN);
        assert_eq!(
            key.open_bytes(KEY_CHECK_AAD, &check).unwrap(),
            KEY_CHECK_PLAIN
        );
        assert!(other.open_bytes(KEY_CHECK_AAD, &check).is_err());
        assert!(key.opens_check_value(&check));
        assert!(!other.opens_check_value(&check));
    }
}
