//! Deterministic host keys.
//!
//! Host keys derive from `(seed, device index, generation)` so a restarted simulator
//! presents the same keys (clients' known-hosts stay valid). RSA-2048 generation is
//! slow (pure-Rust bigint), so RSA keys are cached process-wide: tests that start many
//! simulators with the same seed pay once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use rand::RngCore;
use rand::rngs::StdRng;
use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::{Ed25519Keypair, RsaKeypair};
use russh::keys::ssh_key::rand_core::{TryCryptoRng, TryRng};

use super::config_gen::rng_for;

/// Adapter from our seeded `rand 0.8` generator to the `rand_core 0.10` traits
/// `ssh-key` wants. Deterministic by design: these are test keys, never real secrets.
struct DetRng(StdRng);

impl TryRng for DetRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl TryCryptoRng for DetRng {}

const PURPOSE_HOSTKEY: u64 = 0x4b45_5953;
/// Generation numbers of user keys (far from the host keys' 0, 1, 2, …).
const USER_KEY_GENERATION: u64 = 0x5553_4552;

fn purpose(generation: u64) -> u64 {
    PURPOSE_HOSTKEY.wrapping_add(generation.wrapping_mul(0x1_0000_0001))
}

/// Ed25519 host key of device `index`, `generation` 0 normally, 1, 2, … for the
/// `hostkey` fault's rotating keys.
pub fn ed25519_key(seed: u64, index: usize, generation: u64) -> PrivateKey {
    let mut rng = rng_for(seed, index, purpose(generation));
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    PrivateKey::from(Ed25519Keypair::from_seed(&s))
}

type RsaCache = Mutex<HashMap<(u64, usize, u64), PrivateKey>>;

fn rsa_cache() -> &'static RsaCache {
    static CACHE: OnceLock<RsaCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// RSA-2048 host key (blocking; call from `spawn_blocking`). Cached per process.
pub fn rsa_key(seed: u64, index: usize, generation: u64) -> Result<PrivateKey, String> {
    let k = (seed, index, generation);
    if let Some(key) = rsa_cache()
        .lock()
        .expect("rsa cache poisoned")
        .get(&k)
        .cloned()
    {
        return Ok(key);
    }
    let mut rng = DetRng(rng_for(seed, index, purpose(generation)));
    let pair = RsaKeypair::random(&mut rng, 2048).map_err(|e| e.to_string())?;
    let key = PrivateKey::from(pair);
    rsa_cache()
        .lock()
        .expect("rsa cache poisoned")
        .insert(k, key.clone());
    Ok(key)
}

/// The user key authorized on device `index` for the `keys` and `key-only` faults:
/// Ed25519, or RSA-2048 when `rsa` (blocking then; cached like host keys).
pub fn user_key(seed: u64, index: usize, rsa: bool) -> Result<PrivateKey, String> {
    if rsa {
        rsa_key(seed, index, USER_KEY_GENERATION)
    } else {
        Ok(ed25519_key(seed, index, USER_KEY_GENERATION))
    }
}

/// `SHA256:<base64>` as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key()
        .fingerprint(russh::keys::HashAlg::Sha256)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_deterministic() {
        let a = fingerprint(&ed25519_key(1, 2, 0));
        assert_eq!(a, fingerprint(&ed25519_key(1, 2, 0)));
        assert_ne!(a, fingerprint(&ed25519_key(1, 3, 0)));
        assert_ne!(a, fingerprint(&ed25519_key(1, 2, 1)));
        assert_ne!(a, fingerprint(&ed25519_key(2, 2, 0)));
        assert!(a.starts_with("SHA256:"));
    }
}
