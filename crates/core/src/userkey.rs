//! SSH user keys: what a device (or a credential profile) logs in with instead of, or
//! before, a password.
//!
//! Why this shape: RouterOS accepts RSA user keys from 6.33 and Ed25519 from 7.12, and
//! nothing else, so those are the only kinds accepted at import — an ECDSA key would be
//! stored and then fail on every router. A passphrase-protected key is decrypted once, at
//! import, with a passphrase the operator hands over in an environment variable; what is
//! stored is the *unencrypted* key in OpenSSH form, sealed under the fleet's credential
//! key like a password (see [`crate::credentials`]). So a worker never needs a
//! passphrase, and the key material exists in clear only in memory.
//!
//! A [`UserKey`] never shows its private half: `Debug` prints the algorithm and the
//! public fingerprint (public data, the same as `ssh-keygen -lf` on the `.pub` file) and
//! import errors never quote the file.

use crate::secret::Secret;
use russh::keys::ssh_key::{self, LineEnding};
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use std::sync::Arc;

/// Why a key file was refused. Never carries key material or the passphrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyImportError {
    /// Each face names where the passphrase goes (a flag, an API field).
    #[error("the key is passphrase-protected")]
    NeedsPassphrase,
    #[error("the passphrase does not decrypt the key")]
    WrongPassphrase,
    #[error("not a private key in OpenSSH or PEM form (the .pub file, or another format?)")]
    NotAKey,
    #[error(
        "{0} keys are not accepted: RouterOS takes only Ed25519 (7.12 and later) and RSA user keys"
    )]
    Unsupported(String),
    #[error("the key is damaged: its private and public halves do not match")]
    Inconsistent,
}

/// A decrypted user key, ready to sign. Cheap to clone.
#[derive(Clone)]
pub struct UserKey {
    key: Arc<PrivateKey>,
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UserKey({} {})",
            self.algorithm_name(),
            self.fingerprint()
        )
    }
}

impl PartialEq for UserKey {
    /// Two keys are the same key when their public halves are (the private half follows).
    fn eq(&self, other: &Self) -> bool {
        self.key.public_key().key_data() == other.key.public_key().key_data()
    }
}

impl Eq for UserKey {}

fn looks_encrypted(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l == "-----BEGIN ENCRYPTED PRIVATE KEY-----" || l.starts_with("Proc-Type: 4,ENCRYPTED")
    })
}

impl UserKey {
    /// Read a private key file's text (OpenSSH `-----BEGIN OPENSSH PRIVATE KEY-----`, or
    /// PEM: PKCS#1 RSA, PKCS#8, either possibly encrypted), decrypting it with
    /// `passphrase` when it is protected.
    pub fn import(text: &str, passphrase: Option<&Secret>) -> Result<UserKey, KeyImportError> {
        let openssh_encrypted = text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
            && ssh_key::PrivateKey::from_openssh(text).is_ok_and(|k| k.is_encrypted());
        let encrypted = openssh_encrypted || looks_encrypted(text);
        if encrypted && passphrase.is_none_or(Secret::is_empty) {
            return Err(KeyImportError::NeedsPassphrase);
        }
        let pass = if encrypted {
            passphrase.map(Secret::expose)
        } else {
            None
        };
        let key = match russh::keys::decode_secret_key(text, pass) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => return Err(KeyImportError::NeedsPassphrase),
            Err(_) if encrypted => return Err(KeyImportError::WrongPassphrase),
            Err(russh::keys::Error::UnsupportedKeyType {
                key_type_string, ..
            }) => {
                return Err(KeyImportError::Unsupported(
                    key_type_string.chars().take(40).collect(),
                ));
            }
            Err(_) => return Err(KeyImportError::NotAKey),
        };
        Self::from_private(key)
    }

    fn from_private(key: PrivateKey) -> Result<UserKey, KeyImportError> {
        match key.algorithm() {
            Algorithm::Ed25519 | Algorithm::Rsa { .. } => {}
            other => return Err(KeyImportError::Unsupported(other.to_string())),
        }
        if key.is_encrypted() {
            return Err(KeyImportError::NeedsPassphrase);
        }
        // The comment may name a person or a host; it is not needed to sign.
        let mut key = key;
        key.set_comment("");
        Ok(UserKey { key: Arc::new(key) })
    }

    /// The unencrypted OpenSSH text, for sealing (and only for that: it is the secret).
    pub fn to_sealable(&self) -> Secret {
        match self.key.to_openssh(LineEnding::LF) {
            Ok(text) => Secret::new(text.as_str()),
            // Encoding an in-memory Ed25519/RSA key does not fail.
            Err(_) => Secret::default(),
        }
    }

    /// Read back what [`to_sealable`](Self::to_sealable) produced (after opening the
    /// seal).
    pub fn from_sealed(text: &Secret) -> Result<UserKey, KeyImportError> {
        let key = PrivateKey::from_openssh(text.expose()).map_err(|_| KeyImportError::NotAKey)?;
        Self::from_private(key)
    }

    pub fn is_rsa(&self) -> bool {
        matches!(self.key.algorithm(), Algorithm::Rsa { .. })
    }

    /// `ssh-ed25519` or `ssh-rsa` (the key's type, not the signature algorithm).
    pub fn algorithm_name(&self) -> &'static str {
        if self.is_rsa() {
            "ssh-rsa"
        } else {
            "ssh-ed25519"
        }
    }

    /// The public key's `SHA256:…` fingerprint, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The public key in `authorized_keys` form (`ssh-ed25519 AAAA…`), for the router.
    pub fn public_openssh(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// The public half.
    pub fn public_key(&self) -> russh::keys::PublicKey {
        self.key.public_key().clone()
    }

    pub(crate) fn private(&self) -> Arc<PrivateKey> {
        self.key.clone()
    }
}

/// Which signature algorithms to sign an RSA user key's authentication with, in order,
/// from the server's `server-sig-algs` extension (RFC 8308), as a careful client does:
/// the strongest it lists first (`rsa-sha2-512`, then `rsa-sha2-256`), each weaker one
/// after it down to `ssh-rsa` (SHA-1). Without the extension, or when it lists neither
/// SHA-2 form, only `ssh-rsa`: RouterOS 6 sends none and verifies only `ssh-rsa` (and
/// OpenSSH's client makes the same choice).
///
/// Why the weaker ones at all: a server's list is what it *can* verify, not what it
/// *accepts* — OpenSSH lists every algorithm it knows even when `PubkeyAcceptedAlgorithms`
/// allows only `ssh-rsa` (as a RouterOS-6-like sshd does), so a refusal of the strongest
/// is tried again with the next. At most three attempts of the one key.
///
/// `offered` is what russh reports: `None` without the extension, `Some(best)` with it.
pub fn rsa_signature_hashes(offered: Option<Option<HashAlg>>) -> Vec<Option<HashAlg>> {
    match offered.flatten() {
        Some(HashAlg::Sha512) => vec![Some(HashAlg::Sha512), Some(HashAlg::Sha256), None],
        Some(HashAlg::Sha256) => vec![Some(HashAlg::Sha256), None],
        _ => vec![None],
    }
}

/// The name of the signature algorithm a hash choice stands for (for logs and tests).
pub fn rsa_signature_name(hash: Option<HashAlg>) -> &'static str {
    match hash {
        Some(HashAlg::Sha512) => "rsa-sha2-512",
        Some(HashAlg::Sha256) => "rsa-sha2-256",
        _ => "ssh-rsa",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    fn ed25519() -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[7u8; 32]))
    }

    #[test]
    fn an_openssh_key_round_trips_through_the_sealable_form() {
        let text = ed25519().to_openssh(LineEnding::LF).unwrap();
        let k = UserKey::import(&text, None).unwrap();
        assert_eq!(k.algorithm_name(), "ssh-ed25519");
        let back = UserKey::from_sealed(&k.to_sealable()).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.fingerprint(), k.fingerprint());
        // Debug shows the public fingerprint only.
        let dbg = format!("{k:?}");
        assert!(dbg.contains("SHA256:"), "{dbg}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
        assert!(!format!("{:?}", k.to_sealable()).contains("PRIVATE"));
    }

    #[test]
    fn a_protected_key_needs_its_passphrase_and_is_stored_decrypted() {
        let mut rng = rand_core_rng();
        let enc = ed25519().encrypt(&mut rng, "correct horse").unwrap();
        let text = enc.to_openssh(LineEnding::LF).unwrap();
        assert_eq!(
            UserKey::import(&text, None).unwrap_err(),
            KeyImportError::NeedsPassphrase
        );
        assert_eq!(
            UserKey::import(&text, Some(&Secret::new("wrong"))).unwrap_err(),
            KeyImportError::WrongPassphrase
        );
        let k = UserKey::import(&text, Some(&Secret::new("correct horse"))).unwrap();
        let sealable = k.to_sealable();
        assert!(
            !PrivateKey::from_openssh(sealable.expose())
                .unwrap()
                .is_encrypted()
        );
        for e in [
            KeyImportError::NeedsPassphrase,
            KeyImportError::WrongPassphrase,
        ] {
            assert!(!e.to_string().contains("correct horse"));
        }
    }

    #[test]
    fn garbage_public_keys_and_other_algorithms_are_refused_by_name() {
        assert_eq!(
            UserKey::import("hello", None).unwrap_err(),
            KeyImportError::NotAKey
        );
        let k = UserKey::import(&ed25519().to_openssh(LineEnding::LF).unwrap(), None).unwrap();
        assert_eq!(
            UserKey::import(&k.public_openssh(), None).unwrap_err(),
            KeyImportError::NotAKey
        );
        let ecdsa = PrivateKey::random(
            &mut rand_core_rng(),
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256,
            },
        )
        .unwrap();
        let e = UserKey::import(&ecdsa.to_openssh(LineEnding::LF).unwrap(), None).unwrap_err();
        assert!(matches!(e, KeyImportError::Unsupported(_)), "{e:?}");
        assert!(e.to_string().contains("ecdsa"), "{e}");
    }

    #[test]
    fn rsa_signatures_follow_server_sig_algs_and_end_with_ssh_rsa() {
        let names = |offered| {
            rsa_signature_hashes(offered)
                .into_iter()
                .map(rsa_signature_name)
                .collect::<Vec<_>>()
        };
        // No extension (RouterOS 6): ssh-rsa only.
        assert_eq!(names(None), ["ssh-rsa"]);
        // The extension without rsa-sha2-*: ssh-rsa only.
        assert_eq!(names(Some(None)), ["ssh-rsa"]);
        assert_eq!(
            names(Some(Some(HashAlg::Sha512))),
            ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        );
        assert_eq!(
            names(Some(Some(HashAlg::Sha256))),
            ["rsa-sha2-256", "ssh-rsa"]
        );
    }

    /// A CSPRNG in the `rand_core` version `ssh-key` takes.
    fn rand_core_rng() -> impl russh::keys::ssh_key::rand_core::CryptoRng {
        OsRngAdapter
    }

    struct OsRngAdapter;
    impl russh::keys::ssh_key::rand_core::TryRng for OsRngAdapter {
        type Error = std::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(rand::random())
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(rand::random())
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            use rand::RngCore;
            rand::rngs::OsRng.fill_bytes(dst);
            Ok(())
        }
    }
    impl russh::keys::ssh_key::rand_core::TryCryptoRng for OsRngAdapter {}
}
