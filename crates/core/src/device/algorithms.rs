//! Which SSH algorithms we offer, and in what order.
//!
//! RouterOS offers no curve25519; RouterOS 6 often has only `diffie-hellman-group14-sha1`,
//! group exchange, NIST ECDH, `ssh-rsa` host keys and `hmac-sha1`. russh's defaults leave
//! all of those SHA-1/NIST algorithms out, so a default client cannot talk to most of a
//! real fleet. We list them explicitly: the client picks the first entry of *its* list
//! that the server also has, so strong algorithms come first and modern servers still
//! negotiate modern ones; the legacy ones are only reached when nothing better exists.
//!
//! The host-key list is kept in a fixed order on purpose: the fingerprint we pin (TOFU)
//! is that of the key the server presents for the first algorithm we both support, so
//! reordering it would make every pinned device look like a host-key change.

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{Preferred, cipher, kex, mac};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

const KEX: &[kex::Name] = &[
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::ECDH_SHA2_NISTP256,
    kex::ECDH_SHA2_NISTP384,
    kex::ECDH_SHA2_NISTP521,
    kex::DH_GEX_SHA256,
    kex::DH_G16_SHA512,
    kex::DH_G14_SHA256,
    // Legacy: RouterOS 6 and old 7.x without strong-crypto.
    kex::DH_G14_SHA1,
    kex::DH_GEX_SHA1,
    kex::DH_G1_SHA1,
    kex::EXTENSION_SUPPORT_AS_CLIENT,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
];

const HOST_KEYS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
    Algorithm::Rsa { hash: None },
];

const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
    cipher::AES_256_CBC,
    cipher::AES_192_CBC,
    cipher::AES_128_CBC,
];

const MACS: &[mac::Name] = &[
    mac::HMAC_SHA512_ETM,
    mac::HMAC_SHA256_ETM,
    mac::HMAC_SHA512,
    mac::HMAC_SHA256,
    mac::HMAC_SHA1_ETM,
    mac::HMAC_SHA1,
];

/// Our preference lists: strong first, everything RouterOS may need last.
pub fn preferred() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(KEX),
        key: Cow::Borrowed(HOST_KEYS),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        ..Preferred::DEFAULT
    }
}

/// Names of algorithms we consider legacy (SHA-1 based or tiny DH groups). Reported so
/// an operator can see which devices still need them.
pub fn is_legacy(name: &str) -> bool {
    matches!(
        name,
        "diffie-hellman-group14-sha1"
            | "diffie-hellman-group-exchange-sha1"
            | "diffie-hellman-group1-sha1"
            | "hmac-sha1"
            | "hmac-sha1-etm@openssh.com"
            | "ssh-rsa"
    )
}

/// The russh client configuration used for every device.
///
/// * window ≥ 2 MiB: RouterOS's SSH server truncates large exports with small client
///   windows (Oxidized #3867);
/// * group-exchange sizes 2048/2048/8192: legacy servers only have 2048-bit groups, and
///   russh's default (3072 minimum, 8192 preferred) is slow or fails against them;
/// * no keepalive: keepalive replies reset russh's inactivity timer, which would hide a
///   stalled device. Phases are bounded by our own timeouts instead; the inactivity
///   timeout is only a backstop that ends the session task.
pub fn client_config(backstop: Duration) -> Arc<russh::client::Config> {
    let gex = russh::client::GexParams::new(2048, 2048, 8192)
        .expect("2048/2048/8192 are valid group-exchange sizes");
    Arc::new(russh::client::Config {
        preferred: preferred(),
        gex,
        window_size: 8 * 1024 * 1024,
        inactivity_timeout: Some(backstop),
        keepalive_interval: None,
        nodelay: true,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routeros_6_algorithms_are_offered_after_modern_ones() {
        let p = preferred();
        let pos = |n: &str| p.kex.iter().position(|k| k.as_ref() == n).unwrap();
        assert!(pos("curve25519-sha256") < pos("diffie-hellman-group14-sha1"));
        assert!(pos("ecdh-sha2-nistp256") < pos("diffie-hellman-group-exchange-sha1"));
        assert!(p.mac.iter().any(|m| m.as_ref() == "hmac-sha1"));
        assert!(p.cipher.iter().any(|c| c.as_ref() == "aes128-ctr"));
        assert!(p.key.contains(&Algorithm::Rsa { hash: None }));
        assert!(client_config(Duration::from_secs(1)).window_size >= 2 * 1024 * 1024);
    }
}
