//! the-other-dude's legacy credential format, read (never written) by the sync.
//!
//! The backend encrypts a device's (or a credential profile's) login as JSON with
//! AES-256-GCM under its `CREDENTIAL_ENCRYPTION_KEY` (standard base64 of 32 bytes) and
//! stores `nonce (12 bytes) || ciphertext || tag (16 bytes)` in the `bytea` column
//! `encrypted_credentials`, with no associated data. That is our own sealing
//! construction ([`CredentialKey::open_bytes`]) with empty associated data, so the same
//! key type opens it. The plaintext is `{"username": …, "password": …}`, optionally with
//! `"type": "routeros"`; other types (`snmp_*`, `ssh_key`) are not logins we can use.
//!
//! Why each failure is its own variant: the sync reports a device it cannot use with a
//! reason an operator can act on, and it tells a wrong key (nothing opens) from one
//! damaged row (only that row does not open) by counting [`Unreadable::Decrypt`].
//! Nothing here keeps or formats a plaintext: the password goes straight into a
//! [`Secret`], serde's error texts (which may quote the input) are dropped, and the
//! reasons name fields, never values — except the credential `type`, which is not secret.

use crate::credentials::CredentialKey;
use crate::secret::Secret;

/// Nonce plus tag: no ciphertext in this format is shorter.
pub const MIN_LEN: usize = 12 + 16;

/// A login from the-other-dude, ready to be sealed under our key.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: Secret,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// Why a legacy ciphertext gave no usable login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Shorter than nonce + tag: not a ciphertext of this format.
    TooShort(usize),
    /// The tag did not verify: another key, or altered bytes.
    Decrypt,
    /// It opened, but is not the JSON object the backend writes.
    NotJson,
    /// A credential of another kind (`snmp_v2c`, …); the type, cut to 32 characters.
    NotRouterOs(String),
    /// An SSH key credential (`ssh_key`): we log in with a password only.
    KeyAuth,
    /// No user name, or one that is blank or has control characters.
    NoUsername,
    /// No password, or an empty one.
    NoPassword,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::TooShort(n) => write!(
                f,
                "is {n} bytes, shorter than a nonce and a tag ({MIN_LEN}): not an AES-256-GCM ciphertext"
            ),
            Unreadable::Decrypt => f.write_str(
                "does not decrypt under CREDENTIAL_ENCRYPTION_KEY (the row was altered, or written under another key)",
            ),
            Unreadable::NotJson => f.write_str(
                "decrypts, but not to the JSON object {\"username\", \"password\"} the backend writes",
            ),
            Unreadable::NotRouterOs(t) => {
                write!(f, "holds a credential of type {t:?}, not a RouterOS login")
            }
            Unreadable::KeyAuth => f.write_str(
                "holds an SSH key (type \"ssh_key\"); rosbackup logs in with a password only",
            ),
            Unreadable::NoUsername => f.write_str("has an empty user name"),
            Unreadable::NoPassword => f.write_str("has an empty password"),
        }
    }
}

/// The JSON the backend encrypts. No `Debug`: it holds a password.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Open one legacy ciphertext and read the RouterOS login in it.
pub fn open(key: &CredentialKey, sealed: &[u8]) -> Result<Login, Unreadable> {
    if sealed.len() < MIN_LEN {
        return Err(Unreadable::TooShort(sealed.len()));
    }
    let plain = key
        .open_bytes(&[], sealed)
        .map_err(|_| Unreadable::Decrypt)?;
    parse(&plain)
}

/// Read the login from decrypted JSON (the backend's rules: a missing or empty `type`
/// is a RouterOS login, as in credentials written before types existed).
pub fn parse(plain: &[u8]) -> Result<Login, Unreadable> {
    // An object only: serde would also read a struct from a JSON array, by position.
    let value: serde_json::Value =
        serde_json::from_slice(plain).map_err(|_| Unreadable::NotJson)?;
    if !value.is_object() {
        return Err(Unreadable::NotJson);
    }
    let envelope: Envelope = serde_json::from_value(value).map_err(|_| Unreadable::NotJson)?;
    match envelope.kind.as_deref().map(str::trim) {
        None | Some("") | Some("routeros") => {}
        Some("ssh_key") => return Err(Unreadable::KeyAuth),
        Some(other) => {
            let shown: String = other.chars().filter(|c| !c.is_control()).take(32).collect();
            return Err(Unreadable::NotRouterOs(shown));
        }
    }
    let username = envelope
        .username
        .and_then(|u| crate::inventory::parse_username(&u).ok())
        .ok_or(Unreadable::NoUsername)?;
    let password = envelope
        .password
        .filter(|p| !p.is_empty())
        .map(Secret::new)
        .ok_or(Unreadable::NoPassword)?;
    Ok(Login { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CredentialKey {
        CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap()
    }

    #[test]
    fn opens_the_backends_format_with_or_without_a_type() {
        let k = key();
        for json in [
            r#"{"username":"admin","password":"s3cret"}"#,
            r#"{"type":"routeros","username":"admin","password":"s3cret"}"#,
            r#"{"type":"","username":"admin","password":"s3cret","extra":1}"#,
        ] {
            let sealed = k.seal_bytes(&[], json.as_bytes());
            let login = open(&k, &sealed).unwrap();
            assert_eq!(login.username, "admin");
            assert_eq!(login.password.expose(), "s3cret");
            assert!(!format!("{login:?}").contains("s3cret"));
        }
    }

    #[test]
    fn every_unusable_credential_has_its_reason_and_never_shows_a_secret() {
        let k = key();
        let case = |json: &str| open(&k, &k.seal_bytes(&[], json.as_bytes())).unwrap_err();
        assert_eq!(case("not json s3cret"), Unreadable::NotJson);
        assert_eq!(case(r#"["admin","s3cret"]"#), Unreadable::NotJson);
        assert_eq!(
            case(r#"{"username":5,"password":"s3cret"}"#),
            Unreadable::NotJson
        );
        assert_eq!(
            case(r#"{"type":"snmp_v2c","community":"s3cret"}"#),
            Unreadable::NotRouterOs("snmp_v2c".into())
        );
        assert_eq!(
            case(r#"{"type":"ssh_key","username":"a","private_key":"s3cret"}"#),
            Unreadable::KeyAuth
        );
        assert_eq!(case(r#"{"password":"s3cret"}"#), Unreadable::NoUsername);
        assert_eq!(
            case(r#"{"username":" ","password":"s3cret"}"#),
            Unreadable::NoUsername
        );
        assert_eq!(
            case(r#"{"username":"a","password":""}"#),
            Unreadable::NoPassword
        );
        assert_eq!(case(r#"{"username":"a"}"#), Unreadable::NoPassword);
        assert_eq!(open(&k, &[0u8; 27]), Err(Unreadable::TooShort(27)));
        let mut sealed = k.seal_bytes(&[], br#"{"username":"a","password":"s3cret"}"#);
        assert_eq!(open(&key(), &sealed), Err(Unreadable::Decrypt));
        sealed[15] ^= 1;
        assert_eq!(open(&k, &sealed), Err(Unreadable::Decrypt));
        // Sealed with associated data (our own device format) is not this format.
        let ours = k.seal_bytes(b"device", br#"{"username":"a","password":"b"}"#);
        assert_eq!(open(&k, &ours), Err(Unreadable::Decrypt));
        for e in [
            Unreadable::TooShort(3),
            Unreadable::Decrypt,
            Unreadable::NotJson,
            Unreadable::NotRouterOs("x\u{7}y".into()),
            Unreadable::KeyAuth,
            Unreadable::NoUsername,
            Unreadable::NoPassword,
        ] {
            assert!(!e.to_string().contains("s3cret"));
        }
        let long = format!(r#"{{"type":"{}\u0007","username":"a"}}"#, "t".repeat(100));
        match case(&long) {
            Unreadable::NotRouterOs(t) => assert_eq!(t, "t".repeat(32)),
            other => panic!("{other:?}"),
        }
    }
}
