//! The fuzz targets' invariants (fuzz/src/checks.rs) under plain `cargo test`: a few
//! thousand seeded pseudo-random inputs per target, built from the tokens that matter
//! (export headers, CRLF, blanks, `#` annotations, CSV rows, event JSON), plus every
//! input a fuzzer found. No nightly, no cargo-fuzz, no new dependency; deterministic (a
//! failure prints the input, and the seed is fixed). `FUZZ_CORPUS_ITERS=N` runs longer.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use rosbackup::normalize::{self, Version};

/// xorshift64*: small, seeded, good enough to pick tokens.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn iterations() -> usize {
    std::env::var("FUZZ_CORPUS_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

/// Mutate a buffer a little: flip, insert, delete or duplicate bytes.
fn mutate(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.below(4) {
        match rng.below(4) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, *rng.pick(b"\r\n \t#/,\"\xff0a:"));
            }
            2 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.remove(i);
            }
            _ if !b.is_empty() => {
                let i = rng.below(b.len());
                let j = (i + rng.below(16)).min(b.len());
                let chunk = b[i..j].to_vec();
                b.splice(i..i, chunk);
            }
            _ => {}
        }
    }
    b
}

// ---- export texts ------------------------------------------------------------------

const HEADERS: &[&str] = &[
    "# 2024/01/15 10:30:00 by RouterOS 7.14",
    "# 2024-01-15 10:30:00 by RouterOS 7.10rc1",
    "# jan/15/2024 10:30:00 by RouterOS 6.49.10",
    "# JAN/02/1970 00:00:01 by RouterOS",
    "# 2024-01-15 10:30:00 by RouterOS\t7.20_ab294 ",
    "# 2024-01-15 10:30:00 by RouterOSx",
    "# 2024/01/15 10:30:00 by RouterOS",
    "# 2024/1/15 10:30:00 by RouterOS 7",
];

const LINES: &[&str] = &[
    "",
    " ",
    "\t",
    "#",
    "# software id = ABCD-EFGH",
    "# model = RB5009",
    "/interface bridge",
    "/ip address",
    "add address=192.0.2.1/24 interface=ether1",
    "add comment=\"a \\",
    "    b\"",
    "# Interface not active",
    "#error exporting /ip firewall calea",
    "set [ find default-name=ether1 ] comment=\u{e9}",
    "expected end of command (line 1 column 9)",
    "version: 7.15.3 (stable)",
];

fn export_text(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(12) {
        let line: Vec<u8> = match rng.below(10) {
            0..=2 => rng.pick(HEADERS).as_bytes().to_vec(),
            3..=8 => rng.pick(LINES).as_bytes().to_vec(),
            _ => rng.bytes(6),
        };
        out.extend_from_slice(&line);
        if rng.chance(30) {
            const BLANKS: [&[u8]; 5] = [b" ", b"\t", b"\r", b" \r", b"\r \t"];
            out.extend_from_slice(rng.pick::<&[u8]>(&BLANKS));
        }
        const ENDS: [&[u8]; 6] = [b"\n", b"\n", b"\r\n", b"\r\n", b"\r\r\n", b"\n\n"];
        out.extend_from_slice(rng.pick::<&[u8]>(&ENDS));
    }
    if rng.chance(20) {
        out.pop();
    }
    if rng.chance(30) {
        out = mutate(rng, out);
    }
    out
}

#[test]
fn normalize_invariants() {
    let mut rng = Rng::new(0x5eed_0001);
    for _ in 0..iterations() {
        checks::normalize(&export_text(&mut rng));
    }
    for _ in 0..iterations() / 4 {
        checks::normalize(&rng.bytes(64));
    }
}

#[test]
fn header_version_invariants() {
    let mut rng = Rng::new(0x5eed_0002);
    for _ in 0..iterations() {
        let mut line = rng.pick(HEADERS).as_bytes().to_vec();
        if rng.chance(50) {
            line = mutate(&mut rng, line);
        }
        if rng.chance(20) {
            const TAILS: [&[u8]; 4] = [b"\r", b" ", b"\t\r", b"\x0b"];
            line.extend_from_slice(rng.pick::<&[u8]>(&TAILS));
        }
        checks::header_version(&line);
        checks::header_version(&export_text(&mut rng));
    }
}

// ---- inventories ---------------------------------------------------------------------

const COLUMNS: &[&str] = &[
    "id",
    "tenant_id",
    "name",
    "host",
    "port",
    "username",
    "password",
    "routeros_version",
];
const OPTIONAL: &[&str] = &["enabled", "backup_interval_seconds", "backup_cron"];

fn value(rng: &mut Rng, column: &str, n: usize) -> String {
    let good = rng.chance(85);
    let v = match (column, good) {
        ("id", true) => format!("00000000-0000-4000-8000-{:012}", rng.below(6)),
        ("tenant_id", true) => format!("{{11111111-1111-1111-1111-11111111111{}}}", rng.below(2)),
        ("name", true) => format!("router-{}", rng.below(6)),
        ("host", true) => rng
            .pick(&["10.0.0.1", "::1", "edge-1.example.net", "a", "fe80::1"])
            .to_string(),
        ("port", true) => rng.pick(&["22", "1", "65535", "2222"]).to_string(),
        ("username", true) => "backup".into(),
        ("password", true) => format!("pw-secret-{n}-{}", rng.below(1000)),
        ("routeros_version", true) => rng.pick(&["", "7.16.2", "6.49.10", "7.17rc1"]).to_string(),
        ("enabled", true) => rng.pick(&["", "true", "FALSE"]).to_string(),
        ("backup_interval_seconds", true) => rng.pick(&["", "60", "2147483647"]).to_string(),
        ("backup_cron", true) => rng.pick(&["", "0 3 * * *", " 0 0 3 * * * "]).to_string(),
        _ => rng
            .pick(&[
                "",
                " ",
                "0",
                "65536",
                "10.0.0.256",
                "-a.example",
                "7..1",
                "x\u{7}y",
                "2147483648",
                "* * *",
                "maybe",
                "\"quoted, with comma\"",
                "\u{feff}",
            ])
            .to_string(),
    };
    if v.contains(',') && !v.starts_with('"') {
        format!("\"{v}\"")
    } else {
        v
    }
}

fn inventory_file(rng: &mut Rng) -> Vec<u8> {
    let mut cols: Vec<&str> = COLUMNS.to_vec();
    for o in OPTIONAL {
        if rng.chance(40) {
            cols.push(o);
        }
    }
    if rng.chance(5) {
        cols.remove(rng.below(cols.len()));
    }
    if rng.chance(5) {
        cols.push(*rng.pick(&["id", "extra"]));
    }
    for i in (1..cols.len()).rev() {
        cols.swap(i, rng.below(i + 1));
    }
    let eol = *rng.pick(&["\n", "\r\n"]);
    let mut s = String::new();
    if rng.chance(10) {
        s.push('\u{feff}');
    }
    s.push_str(&cols.join(","));
    s.push_str(eol);
    for n in 0..rng.below(5) {
        let mut row: Vec<String> = cols.iter().map(|c| value(rng, c, n)).collect();
        if rng.chance(3) {
            row.pop();
        }
        s.push_str(&row.join(","));
        s.push_str(eol);
        if rng.chance(10) {
            s.push_str(eol);
        }
    }
    let mut b = s.into_bytes();
    if rng.chance(15) {
        b = mutate(rng, b);
    }
    b
}

#[test]
fn inventory_invariants() {
    let mut rng = Rng::new(0x5eed_0003);
    let mut accepted = 0;
    for _ in 0..iterations() {
        let f = inventory_file(&mut rng);
        if rosbackup::inventory::parse_inventory(&f).is_ok() {
            accepted += 1;
        }
        checks::inventory(&f);
    }
    for _ in 0..iterations() / 4 {
        checks::inventory(&rng.bytes(48));
    }
    // The generator must reach the Ok path often enough to check the validators.
    assert!(accepted > iterations() / 20, "only {accepted} accepted");
}

// ---- snapshot events ---------------------------------------------------------------

fn event_json(rng: &mut Rng) -> Vec<u8> {
    let text = export_text(rng);
    let version = *rng.pick(&[1u8, 2, 2, 0, 3]);
    let normalized = match Version::try_from(version) {
        Ok(v) if rng.chance(80) => normalize::normalize(&text, v),
        _ => text,
    };
    let mut hash = normalize::hash(&normalized);
    if rng.chance(10) {
        hash = hash.to_ascii_uppercase();
    }
    if rng.chance(5) {
        hash.replace_range(0..1, "f");
    }
    let mut obj = serde_json::json!({
        "device_id": *rng.pick(&["6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f", "6F1C2D3E4A5B4C6D8E9F0A1B2C3D4E5F", "router-1", ""]),
        "tenant_id": "t",
        "collected_at": *rng.pick(&["2024-01-15T10:30:00Z", "2024-01-15T10:30:00+02:00", "yesterday"]),
        "sha256_hash": hash,
        "config_text": String::from_utf8_lossy(&normalized),
        "normalization_version": version,
    });
    if std::str::from_utf8(&normalized).is_err() || rng.chance(5) {
        use base64::Engine;
        let mut b64 = base64::engine::general_purpose::STANDARD.encode(&normalized);
        if rng.chance(10) {
            b64.push('!');
        }
        obj["config_text_base64"] = b64.into();
    }
    if rng.chance(5) {
        obj["routeros_version"] = "7.16".into();
    }
    if rng.chance(3) {
        obj["config_ref"] = serde_json::json!({"bucket": "b", "object": "o", "bytes": 1});
    }
    if rng.chance(3) {
        obj["normalization_version"] = 300.into();
    }
    let mut b = serde_json::to_vec(&obj).unwrap();
    if rng.chance(10) {
        b = mutate(rng, b);
    }
    b
}

#[test]
fn snapshot_event_invariants() {
    let mut rng = Rng::new(0x5eed_0004);
    let mut accepted = 0;
    for _ in 0..iterations() {
        let e = event_json(&mut rng);
        if checks::archiver_validate(&e).is_ok() {
            accepted += 1;
        }
        checks::snapshot_event(&e);
        let mut published = vec![0xFF];
        published.extend(export_text(&mut rng));
        checks::snapshot_event(&published);
    }
    for _ in 0..iterations() / 4 {
        checks::snapshot_event(&rng.bytes(48));
    }
    assert!(accepted > iterations() / 20, "only {accepted} accepted");
}

// ---- regressions: inputs found by fuzzing, and the documented exceptions --------------

/// Inputs a fuzzer once reported (see README, "Fuzzing"); each runs through every check.
const FOUND: &[&[u8]] = &[
    // v2, two header lines before the body (was not idempotent; fixed, see below).
    b"# 2024-01-15 10:30:00 by RouterOS 7\n# 2024-01-15 10:30:00 by RouterOS 7\n/a\n",
    // v1, a trailing `\r` followed by blanks.
    b"a\r \n",
    // An inventory whose bad version is echoed, quoted, beside a password that overlaps
    // it and its closing quote (a false alarm of the leak check, found with 200,000
    // iterations; the check now blanks out echoed fields first).
    b"name,host,username,password,routeros_version\nr1,10.0.0.1,admin,\"quoted, with comma\"\"\",\"quoted, with comma\"\n",
    // A header ended by a lone `\r` (old Mac line endings): its row was reported as line 1.
    b"name,host,username,password\rr1,10.0.0.1,admin,pw-secret-0-798\r\n",
];

#[test]
fn regression_inputs() {
    for input in FOUND {
        checks::normalize(input);
        checks::header_version(input);
        checks::inventory(input);
        checks::snapshot_event(input);
    }
}

/// Two header lines before the body: v2 once removed only the first, so a second pass
/// removed the second (found by fuzzing; `archive` relies on v2 being idempotent). Now
/// every header-format line before the body goes, in one pass.
#[test]
fn v2_is_idempotent_with_two_headers() {
    let raw = FOUND[0];
    let once = normalize::normalize(raw, Version::V2);
    let twice = normalize::normalize(&once, Version::V2);
    assert_eq!(once, b"/a\n");
    assert_eq!(twice, once);
    // A blank line after each header goes with it; a second blank line stays.
    let spaced =
        b"# 2024-01-15 10:30:00 by RouterOS 7\n\n# jan/15/2024 10:30:00 by RouterOS 6.49\n\n\n/a\n";
    let once = normalize::normalize(spaced, Version::V2);
    assert_eq!(once, b"\n/a\n");
    assert_eq!(normalize::normalize(&once, Version::V2), once);
}

/// v1 is the seed's rules byte for byte, and those are not idempotent: the first seed
/// header anywhere is removed (a second one survives one pass), and only spaces and tabs
/// are trimmed (a `\r` left at the end of a line reads as CRLF next time). Kept on purpose.
#[test]
fn v1_is_not_idempotent_by_design() {
    let two = b"# 2024/01/15 10:30:00 by RouterOS 1\n# 2024/01/15 10:30:00 by RouterOS 2\n";
    let once = normalize::normalize(two, Version::V1);
    assert_eq!(once, b"# 2024/01/15 10:30:00 by RouterOS 2\n");
    assert_eq!(normalize::normalize(&once, Version::V1), b"");

    let once = normalize::normalize(FOUND[1], Version::V1);
    assert_eq!(once, b"a\r\n");
    assert_eq!(normalize::normalize(&once, Version::V1), b"a\n");
    assert_eq!(checks::seed_v1_reference(FOUND[1]), b"a\r\n");
}
