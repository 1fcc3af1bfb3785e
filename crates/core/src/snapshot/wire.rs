//! The snapshot event's bytes on the wire: exactly what `serde_json` writes for
//! [`ConfigSnapshotEvent`], produced faster.
//!
//! Why (issue #20): escaping the config text was the largest piece of user-space work a
//! backup adds to its export after the SHA-256 (callgrind: ~195,000 instructions for a
//! 20 KB export, ~9 a byte). `serde_json` looks every byte up in a table and makes two
//! writes per escape, and a RouterOS export needs one (`\n`) every 30–60 bytes. Here the
//! text is scanned eight bytes at a time for the bytes JSON must escape (controls, `"`,
//! `\`) and copied in runs between them, with `serde_json`'s escapes (`\n`, `\t`, `\r`,
//! `\b`, `\f`, `\"`, `\\`, else `\u00xx` in lower-case hex).
//!
//! Every string field, and the encrypted envelope (whose ciphertext is the whole config,
//! sealed), is written the same way, in the order and with the omissions the derived
//! `Serialize` uses; only the numbers and the rare `config_ref` go through `serde_json`
//! itself. [`encode`] names every field of the event, so a new one does not compile until
//! it is written here, and the tests hold it to `serde_json::to_vec` byte for byte, over
//! every optional field and every byte class. The seed's
//! consumers parse the result, so the bytes are a contract only as JSON; keeping them
//! identical keeps every recorded event, digest and test valid.

use super::event::{ConfigEncryption, ConfigSnapshotEvent};

/// The event as `serde_json::to_vec` writes it.
pub fn encode(event: &ConfigSnapshotEvent) -> Result<Vec<u8>, serde_json::Error> {
    // Every field named, none skipped with `..`: a field added to the event is a compile
    // error here until it is written below.
    let ConfigSnapshotEvent {
        device_id,
        tenant_id,
        routeros_version,
        collected_at,
        sha256_hash,
        config_text,
        normalization_version,
        config_text_base64,
        config_ref,
        config_encryption,
    } = event;
    // The large strings: the text, its base64 form, or the sealed text (inline ciphertext).
    let big = config_text.len()
        + config_text_base64.as_ref().map_or(0, String::len)
        + config_encryption
            .as_ref()
            .and_then(|e| e.ciphertext.as_ref())
            .map_or(0, String::len);
    let mut out = Vec::with_capacity(big + big / 16 + 512);
    out.extend_from_slice(b"{\"device_id\":");
    push_str(&mut out, device_id);
    out.extend_from_slice(b",\"tenant_id\":");
    push_str(&mut out, tenant_id);
    if let Some(v) = routeros_version {
        out.extend_from_slice(b",\"routeros_version\":");
        push_str(&mut out, v);
    }
    out.extend_from_slice(b",\"collected_at\":");
    push_str(&mut out, collected_at);
    out.extend_from_slice(b",\"sha256_hash\":");
    push_str(&mut out, sha256_hash);
    out.extend_from_slice(b",\"config_text\":");
    push_str(&mut out, config_text);
    out.extend_from_slice(b",\"normalization_version\":");
    serde_json::to_writer(&mut out, normalization_version)?;
    if let Some(b) = config_text_base64 {
        out.extend_from_slice(b",\"config_text_base64\":");
        push_str(&mut out, b);
    }
    if let Some(r) = config_ref {
        // Small and rare (only oversized configs): serde_json itself.
        out.extend_from_slice(b",\"config_ref\":");
        serde_json::to_writer(&mut out, r)?;
    }
    if let Some(e) = config_encryption {
        out.extend_from_slice(b",\"config_encryption\":");
        push_encryption(&mut out, e)?;
    }
    out.push(b'}');
    Ok(out)
}

/// `config_encryption` by hand: its ciphertext is the whole config, sealed, in base64.
fn push_encryption(out: &mut Vec<u8>, e: &ConfigEncryption) -> Result<(), serde_json::Error> {
    let ConfigEncryption {
        v,
        alg,
        kid,
        hash,
        nonce,
        ciphertext,
    } = e;
    out.extend_from_slice(b"{\"v\":");
    serde_json::to_writer(&mut *out, v)?;
    out.extend_from_slice(b",\"alg\":");
    push_str(out, alg);
    out.extend_from_slice(b",\"kid\":");
    push_str(out, kid);
    out.extend_from_slice(b",\"hash\":");
    push_str(out, hash);
    out.extend_from_slice(b",\"nonce\":");
    push_str(out, nonce);
    if let Some(c) = ciphertext {
        out.extend_from_slice(b",\"ciphertext\":");
        push_str(out, c);
    }
    out.push(b'}');
    Ok(())
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of the lowest byte of `w` that JSON escapes is the lowest set bit of the
/// result; zero when it has none. (Bits above the first hit may be set spuriously by the
/// borrow; only the lowest one is read.)
#[inline]
fn escapes(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))
}

/// Append `s` as a JSON string literal, as `serde_json` writes it.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0; // start of the bytes not yet copied
    let mut i = 0;
    loop {
        // Skip clean words; stop at the first byte to escape or the tail.
        let hit = loop {
            let Some(chunk) = bytes.get(i..i + 8) else {
                break None;
            };
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let m = escapes(u64::from_le_bytes(word));
            if m != 0 {
                break Some(i + (m.trailing_zeros() / 8) as usize);
            }
            i += 8;
        };
        let at = match hit {
            Some(at) => at,
            None => match bytes[i..].iter().position(|&b| escape_of(b).is_some()) {
                Some(p) => i + p,
                None => break,
            },
        };
        out.extend_from_slice(&bytes[run..at]);
        push_escape(out, bytes[at]);
        i = at + 1;
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// How JSON escapes `b`, if it must: the letter after `\`, or `u` for `\u00xx`.
#[inline]
fn escape_of(b: u8) -> Option<u8> {
    match b {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        0x08 => Some(b'b'),
        0x09 => Some(b't'),
        0x0a => Some(b'n'),
        0x0c => Some(b'f'),
        0x0d => Some(b'r'),
        0..0x20 => Some(b'u'),
        _ => None,
    }
}

fn push_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match escape_of(b) {
        Some(b'u') => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
        Some(c) => out.extend_from_slice(&[b'\\', c]),
        // Only called on a byte the scan found; a clean byte is copied as it is.
        None => out.push(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::event::{ConfigEncryption, ConfigRef};
    use rand::{Rng, SeedableRng};

    fn serde(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).expect("a str always serializes")
    }

    fn ours(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        push_str(&mut v, s);
        v
    }

    #[test]
    fn every_byte_class_is_escaped_as_serde_json_does() {
        // Each ASCII byte alone, and at every position of a word and across words.
        for b in 0u8..0x80 {
            let c = char::from(b);
            for pad in 0..17 {
                let s = format!("{}{c}{}", "a".repeat(pad), "z".repeat(17 - pad));
                assert_eq!(ours(&s), serde(&s), "byte {b:#04x} after {pad} bytes");
            }
        }
        for s in [
            "",
            "\"",
            "\\\\\\",
            "é",
            "日本語\n/ip address\u{7f}\u{1f}\u{0}",
            "\u{10ffff}\"x\"",
            "abcdefgh",
            "abcdefg\n",
            "\nbcdefgh",
        ] {
            assert_eq!(ours(s), serde(s), "{s:?}");
        }
    }

    #[test]
    fn the_word_scan_finds_exactly_the_first_byte_to_escape() {
        // Every byte value in every lane, after clean bytes and after the bytes whose
        // subtraction borrows (0x00, 0x1f, 0x20 and 0x22 sit next to the classes' edges):
        // the lowest flagged lane is the first byte `escape_of` escapes, or none.
        for lane in 0..8 {
            for before in [b'a', 0x00, 0x1f, 0x20, 0x21, 0x22, 0x5c, 0x7f, 0x80, 0xff] {
                for after in [b'a', 0x00, 0xff] {
                    for b in 0..=u8::MAX {
                        let mut word = [after; 8];
                        word[..lane].fill(before);
                        word[lane] = b;
                        let m = escapes(u64::from_le_bytes(word));
                        let want = word.iter().position(|&x| escape_of(x).is_some());
                        let got = (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
                        assert_eq!(got, want, "word {word:02x?}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_text_matches_serde_json() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        // Mostly printable with newlines like an export, then raw noise.
        let alphabet: Vec<char> = "abc =/\\\"\n\r\t\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}é€😀"
            .chars()
            .collect();
        for len in (0..200).chain([4_096, 65_537]) {
            let s: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            assert_eq!(ours(&s), serde(&s), "len {len}");
            let noise: Vec<u8> = (0..len).map(|_| rng.r#gen::<u8>()).collect();
            let s = String::from_utf8_lossy(&noise);
            assert_eq!(ours(&s), serde(&s), "noise len {len}");
        }
    }

    #[test]
    fn real_exports_match_serde_json() {
        // The third-party exports are read where they are (never copied in).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/routeros/exports");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            // Not every checkout has ../shared; the synthetic cases above still run.
            eprintln!("skipped: no real exports at {}", dir.display());
            return;
        };
        let mut compared = 0;
        for e in entries.flatten() {
            if e.path().extension().is_none_or(|x| x != "rsc") {
                continue;
            }
            let raw = std::fs::read(e.path()).expect("a listed export reads");
            let s = String::from_utf8_lossy(&raw);
            assert_eq!(ours(&s), serde(&s), "{}", e.path().display());
            compared += 1;
        }
        assert!(compared > 0, "no .rsc export in {}", dir.display());
    }

    fn event(text: &str) -> ConfigSnapshotEvent {
        ConfigSnapshotEvent {
            device_id: "4f7c6f3e-0000-4000-8000-000000000001".into(),
            tenant_id: "t\"1".into(),
            routeros_version: None,
            collected_at: "2026-12-05T12:00:00Z".into(),
            sha256_hash: "ab".repeat(32),
            config_text: text.into(),
            normalization_version: 2,
            config_text_base64: None,
            config_ref: None,
            config_encryption: None,
        }
    }

    /// An encrypted event's envelope, its ciphertext inline or not.
    fn sealed(ciphertext: Option<String>) -> ConfigEncryption {
        ConfigEncryption {
            v: 1,
            alg: "AES-256-GCM".into(),
            kid: "0011223344556677".into(),
            hash: "HMAC-SHA256".into(),
            nonce: "AAAAAAAAAAAAAAAA".into(),
            ciphertext,
        }
    }

    #[test]
    fn the_event_is_byte_for_byte_what_serde_json_writes() {
        let text =
            "# dec/05/2026 12:00:00 by RouterOS 7.16\n/interface bridge\nadd name=\"br 1\"\n";
        for mask in 0u8..16 {
            let mut e = event(text);
            if mask & 1 != 0 {
                e.routeros_version = Some("7.16 (stable)".into());
            }
            if mask & 2 != 0 {
                e.config_text_base64 = Some("AAEC/w==".into());
            }
            if mask & 4 != 0 {
                e.config_ref = Some(ConfigRef {
                    bucket: "CONFIG_SNAPSHOT_TEXTS".into(),
                    object: "dev/ab".into(),
                    bytes: 400_000,
                });
            }
            if mask & 8 != 0 {
                e.config_encryption = Some(sealed((mask & 4 == 0).then(|| "c2VjcmV0".into())));
            }
            let want = serde_json::to_vec(&e).expect("the event serializes");
            assert_eq!(
                encode(&e).expect("the event encodes"),
                want,
                "optional fields {mask:04b}"
            );
            assert_eq!(ConfigSnapshotEvent::decode(&want).expect("decodes"), e);
        }
    }

    #[test]
    fn the_buffer_is_sized_once_for_a_sealed_config() {
        // An encrypted event carries the whole config as base64 ciphertext and an empty
        // config_text; the buffer must be sized for it up front, not grown by doubling.
        let mut e = event("");
        e.config_encryption = Some(sealed(Some("QUJD".repeat(25_000))));
        let out = encode(&e).expect("the event encodes");
        assert_eq!(out, serde_json::to_vec(&e).expect("the event serializes"));
        let slack = out.capacity() - out.len();
        assert!(
            slack <= out.len() / 16 + 512,
            "{slack} bytes unused of {}: the buffer grew",
            out.capacity()
        );
    }
}
