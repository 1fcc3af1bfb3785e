//! The invariants the fuzz targets check, in one place.
//!
//! Used twice: by the libFuzzer targets in `fuzz/fuzz_targets/` (through `fuzz/src/lib.rs`,
//! `cargo fuzz run <target>`), and by the main crate's `tests/fuzz_corpus.rs`, which
//! includes this file with `#[path]` and feeds it a few thousand seeded pseudo-random
//! inputs plus every regression input, so plain `cargo test` keeps checking the same
//! invariants without nightly or cargo-fuzz. It may only use what the main crate's
//! integration tests can use: `rosbackup` and its normal dependencies (`serde_json`,
//! `uuid`, `chrono`, `csv`).
//!
//! Every check panics (with the failing input in the message) when an invariant breaks.

#![allow(dead_code)]

use rosbackup_core::device::output;
use rosbackup_core::inventory;
use rosbackup_core::normalize::{self, Version};
use rosbackup_core::snapshot::ConfigSnapshotEvent;

// ---- normalize ------------------------------------------------------------------------

/// Known, documented exceptions to "normalizing twice equals normalizing once" (see the
/// fuzzing section of README.md). They are skipped by [`normalize`] so that the fuzzer
/// keeps looking for new problems; `tests/fuzz_corpus.rs` pins each of them.
///
/// * v1 (the seed's rules, byte for byte) removes only the *first* header anywhere, so a
///   second header survives one pass and is removed by the next; and it trims only spaces
///   and tabs, so a line ending in `\r` + blanks keeps its `\r`, which the next pass reads
///   as a CRLF. Both are the seed's behaviour, kept on purpose (NOTES §3 v1).
///
/// v2 has no exception: it removes every header-format line before the body, so a second
/// pass finds nothing more to do.
///
/// Does `normalize(out, v) == out` fail only for a documented reason?
pub fn idempotence_exception(out: &[u8], v: Version) -> bool {
    let lines: Vec<&[u8]> = split_lines(out);
    match v {
        Version::V1 => lines
            .iter()
            .any(|l| is_v1_header(l) || l.last() == Some(&b'\r')),
        Version::V2 => false,
    }
}

/// The lines of a normalized output (which is empty or ends in exactly one `\n`).
fn split_lines(out: &[u8]) -> Vec<&[u8]> {
    if out.is_empty() {
        return Vec::new();
    }
    let body = out.strip_suffix(b"\n").unwrap_or(out);
    body.split(|&b| b == b'\n').collect()
}

/// `normalize`: never panics; both versions end with exactly one `\n` (or are empty), have
/// no trailing blanks and no runs of empty lines; v1 is exactly the seed's rules (NOTES §3,
/// compared with a literal re-implementation); v2 has no `#` line in the body except
/// `#error exporting`; both are idempotent (but for the documented exceptions) and do not
/// care about CRLF vs LF.
pub fn normalize(data: &[u8]) {
    for v in [Version::V1, Version::V2] {
        let out = normalize::normalize(data, v);
        let ctx = || format!("{v:?} input {:?} output {:?}", esc(data), esc(&out));

        // Ends with exactly one newline, or is empty.
        assert!(
            out.is_empty() || (out.ends_with(b"\n") && !out.ends_with(b"\n\n")),
            "bad ending: {}",
            ctx()
        );
        let lines = split_lines(&out);
        let blanks: &[u8] = match v {
            Version::V1 => b" \t",
            Version::V2 => b" \t\r",
        };
        for w in lines.windows(2) {
            assert!(
                !(w[0].is_empty() && w[1].is_empty()),
                "two empty lines in a row: {}",
                ctx()
            );
        }
        for l in &lines {
            assert!(
                !l.last().is_some_and(|b| blanks.contains(b)),
                "trailing blank: {}",
                ctx()
            );
        }

        match v {
            Version::V1 => assert_eq!(
                esc(&out),
                esc(&seed_v1_reference(data)),
                "v1 differs from the seed's rules for input {:?}",
                esc(data)
            ),
            Version::V2 => {
                for l in lines.iter().skip_while(|l| l.first() != Some(&b'/')) {
                    assert!(
                        l.first() != Some(&b'#') || l.starts_with(b"#error exporting"),
                        "annotation left in the body: {}",
                        ctx()
                    );
                }
            }
        }

        // Idempotent.
        let twice = normalize::normalize(&out, v);
        if twice != out {
            assert!(
                idempotence_exception(&out, v),
                "not idempotent: {} second pass {:?}",
                ctx(),
                esc(&twice)
            );
        }

        // CRLF and LF hash the same (only meaningful when the input has no `\r` of its own).
        if !data.contains(&b'\r') {
            let crlf: Vec<u8> = data
                .iter()
                .flat_map(|&b| {
                    if b == b'\n' {
                        vec![b'\r', b'\n']
                    } else {
                        vec![b]
                    }
                })
                .collect();
            assert_eq!(
                esc(&normalize::normalize(&crlf, v)),
                esc(&out),
                "CRLF differs from LF: {}",
                ctx()
            );
        }

        let (n, h) = normalize::normalize_and_hash(data, v);
        assert_eq!(n, out);
        assert_eq!(h, normalize::hash(&out));
        assert_eq!(h.len(), 64);
    }
}

/// NOTES §3, version 1, step by step on bytes, as literally as the text reads (the seed's
/// Go `NormalizeConfig`): an oracle for `normalize(_, Version::V1)`.
pub fn seed_v1_reference(raw: &[u8]) -> Vec<u8> {
    // 1. `\r\n` → `\n` (Go's strings.ReplaceAll: left to right, non-overlapping).
    let mut s = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            s.push(b'\n');
            i += 2;
        } else {
            s.push(raw[i]);
            i += 1;
        }
    }
    // 2. Remove the first match anywhere of
    //    `(?m)^# \d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} by RouterOS.*\n?`, and the next
    //    character too if it is `\n`.
    let starts = std::iter::once(0).chain(
        s.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1),
    );
    for start in starts {
        if start > s.len() {
            break;
        }
        let line_end = s[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(s.len(), |p| start + p);
        if is_v1_header(&s[start..line_end]) {
            let mut end = if line_end < s.len() {
                line_end + 1
            } else {
                line_end
            };
            if s.get(end) == Some(&b'\n') {
                end += 1;
            }
            s.drain(start..end);
            break;
        }
    }
    // 3. Trim trailing spaces and tabs from every line.
    let lines: Vec<&[u8]> = s
        .split(|&b| b == b'\n')
        .map(|l| {
            let end = l
                .iter()
                .rposition(|b| *b != b' ' && *b != b'\t')
                .map_or(0, |p| p + 1);
            &l[..end]
        })
        .collect();
    // 4. Collapse runs of empty lines to one.
    let mut kept: Vec<&[u8]> = Vec::new();
    for l in lines {
        if l.is_empty() && kept.last().is_some_and(|p| p.is_empty()) {
            continue;
        }
        kept.push(l);
    }
    let mut out = kept.join(&b'\n');
    // 5. Strip trailing `\n`s, then add exactly one (empty stays empty).
    while out.last() == Some(&b'\n') {
        out.pop();
    }
    if !out.is_empty() {
        out.push(b'\n');
    }
    out
}

/// `^# \d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} by RouterOS` at the start of `line`.
pub fn is_v1_header(line: &[u8]) -> bool {
    const PATTERN: &[u8] = b"# dddd/dd/dd dd:dd:dd by RouterOS";
    line.len() >= PATTERN.len()
        && PATTERN.iter().zip(line).all(|(p, b)| match p {
            b'd' => b.is_ascii_digit(),
            _ => p == b,
        })
}

// ---- header_version and the other export-header parsers --------------------------------

/// The export header parser (`normalize::header_version`, `normalize::export_info`) and
/// the device-output helpers (`device::output`): never panic; a version token is a
/// sub-slice of the line without whitespace; a line recognised as a header is removed by
/// v2 and its token is what `export_info` reports; the seed's header format is recognised
/// whenever it is followed by whitespace or the end of the line.
pub fn header_version(data: &[u8]) {
    let hv = normalize::header_version(data);
    if let Some(v) = hv {
        assert!(data.starts_with(b"# "), "{:?}", esc(data));
        assert!(!v.iter().any(u8::is_ascii_whitespace), "{:?}", esc(data));
        let range = data.as_ptr_range();
        assert!(
            v.is_empty() || range.contains(&v.as_ptr()),
            "token is not part of the line"
        );
        if !v.is_empty() {
            let i = v.as_ptr() as usize - data.as_ptr() as usize;
            assert!(
                i > 0 && matches!(data[i - 1], b' ' | b'\t' | b'\r'),
                "token not after a blank: {:?}",
                esc(data)
            );
        }
    }

    // The seed's format is one of v2's (when "by RouterOS" is followed by a blank or EOL).
    if is_v1_header(data) {
        let after = &data[b"# dddd/dd/dd dd:dd:dd by RouterOS".len()..];
        if matches!(after.first(), None | Some(b' ' | b'\t' | b'\r')) {
            assert!(hv.is_some(), "v1 header not seen by v2: {:?}", esc(data));
        }
    }

    // As the first line of an export: v2 removes it, export_info reports its token.
    if !data.contains(&b'\n') {
        let mut export = data.to_vec();
        export.extend_from_slice(b"\n/ip address\nadd address=192.0.2.1/24\n");
        // `lines()` drops the `\r` of a CRLF; the header parser sees the line without it.
        let line = data.strip_suffix(b"\r").unwrap_or(data);
        let as_line = normalize::header_version(line);
        assert_eq!(
            hv.is_some(),
            as_line.is_some(),
            "a trailing \\r changes header detection: {:?}",
            esc(data)
        );
        let n = normalize::normalize(&export, Version::V2);
        if as_line.is_some() {
            assert_eq!(
                esc(&n),
                esc(b"/ip address\nadd address=192.0.2.1/24\n"),
                "header not removed: {:?}",
                esc(data)
            );
        }
        let info = normalize::export_info(&export);
        match as_line {
            Some(v) if !v.is_empty() => assert_eq!(
                info.routeros_version.as_deref(),
                Some(String::from_utf8_lossy(v).as_ref()),
                "{:?}",
                esc(data)
            ),
            _ => assert_eq!(info.routeros_version, None, "{:?}", esc(data)),
        }
        let _ = output::check_export(&export);
    }

    // The other parsers of device output: never panic, sane results.
    let info = normalize::export_info(data);
    if let Some(v) = &info.routeros_version {
        assert!(
            !v.is_empty() && !v.bytes().any(|b| b.is_ascii_whitespace()),
            "export_info version {v:?} from {:?}",
            esc(data)
        );
    }
    if let Some(v) = output::parse_resource_version(data) {
        assert!(!v.is_empty() && !v.bytes().any(|b| b.is_ascii_whitespace()));
        if let Some(m) = output::major(&v) {
            assert!(v.starts_with(|c: char| c.is_ascii_digit()), "{v:?} -> {m}");
        }
    }
    let text = String::from_utf8_lossy(data);
    if output::major(&text).is_some() {
        assert!(text.trim().starts_with(|c: char| c.is_ascii_digit()));
    }
    let _ = output::check_export(data);
    let _ = output::is_v6_show_sensitive_error(data);
    let _ = output::ends_mid_continuation(data);
}

// ---- inventory --------------------------------------------------------------------------

/// `inventory::parse_inventory` on arbitrary bytes: never panics; an `Ok` has at least one
/// device, unique ids and tenant+names, and every device passes the field validators again;
/// an error names a line that exists and never shows a password from the file.
pub fn inventory(data: &[u8]) {
    match inventory::parse_inventory_rows(data) {
        Ok(rows) => {
            assert!(!rows.is_empty());
            let total_lines = physical_lines(data);
            let mut ids = std::collections::HashSet::new();
            let mut names = std::collections::HashSet::new();
            let mut last_line = 1;
            for r in &rows {
                assert!(
                    r.line > last_line && r.line <= total_lines,
                    "line {} of {total_lines} in {:?}",
                    r.line,
                    esc(data)
                );
                last_line = r.line;
                let d = &r.device;
                assert!(ids.insert(d.id), "duplicate id accepted");
                assert!(
                    names.insert((d.tenant_id, d.name.clone())),
                    "duplicate name accepted"
                );
                assert_eq!(inventory::parse_uuid(&d.id.to_string()).ok(), Some(d.id));
                assert_eq!(
                    inventory::parse_name(&d.name).as_deref(),
                    Ok(d.name.as_str())
                );
                assert_eq!(
                    inventory::parse_host(&d.host).as_deref(),
                    Ok(d.host.as_str())
                );
                assert_eq!(
                    inventory::parse_port(&d.ssh_port.to_string()),
                    Ok(d.ssh_port)
                );
                // A profile makes the user and the password optional, a key file the
                // password.
                if d.credential_profile.is_none() || !d.username.is_empty() {
                    assert_eq!(
                        inventory::parse_username(&d.username).as_deref(),
                        Ok(d.username.as_str())
                    );
                }
                if d.credential_profile.is_none() && r.ssh_key_file.is_none() {
                    assert!(!d.password.is_empty());
                }
                if let Some(v) = &d.routeros_version {
                    assert_eq!(inventory::parse_routeros_version(v), Ok(Some(v.clone())));
                }
                if let Some(i) = d.backup_interval_seconds {
                    assert!(i > 0);
                    assert_eq!(inventory::parse_interval(&i.to_string()), Ok(Some(i)));
                }
                if let Some(c) = &d.backup_cron {
                    assert_eq!(inventory::parse_cron_field(c), Ok(Some(c.clone())));
                }
                let interval = d.backup_interval_seconds.map(|i| i.to_string());
                let timeout = d
                    .export_timeout_seconds
                    .map(|t| t.map_or_else(|| "auto".to_string(), |s| s.to_string()));
                let jump = d.jump.as_ref().map(|j| match j {
                    rosbackup_core::jump::JumpSetting::Inherit => String::new(),
                    rosbackup_core::jump::JumpSetting::Direct => "direct".into(),
                    rosbackup_core::jump::JumpSetting::Via(s) => s.display(),
                });
                let fields = inventory::DeviceFields {
                    id: &d.id.to_string(),
                    tenant_id: &d.tenant_id.to_string(),
                    name: &d.name,
                    host: &d.host,
                    port: &d.ssh_port.to_string(),
                    username: &d.username,
                    password: d.password.expose(),
                    routeros_version: d.routeros_version.as_deref().unwrap_or(""),
                    enabled: Some(if d.enabled { "true" } else { "false" }),
                    backup_interval_seconds: interval.as_deref(),
                    backup_cron: d.backup_cron.as_deref(),
                    ssh_key_file: r.ssh_key_file.as_deref(),
                    credential_profile: d.credential_profile.as_deref(),
                    tenant: None,
                    export_timeout_seconds: timeout.as_deref(),
                    jump_host: jump.as_deref(),
                };
                let again = fields
                    .validate()
                    .expect("an accepted device validates again");
                assert_eq!(again.id, d.id);
                assert_eq!(again.enabled, d.enabled);
                assert_eq!(again.jump, d.jump);
            }
            assert_eq!(
                inventory::parse_inventory(data).map(|d| d.len()).ok(),
                Some(rows.len())
            );
        }
        Err(e) => {
            let total_lines = physical_lines(data);
            assert!(
                e.line >= 1 && e.line <= total_lines,
                "{e} (file has {total_lines} lines)"
            );
            // Other fields may be echoed (quoted); a password that overlaps one of them
            // and its quotes is not a leak, so echoed values are blanked out first.
            let (passwords, others) = passwords_in(data);
            let mut shown = e.to_string();
            for o in others.iter().filter(|o| o.len() >= 4) {
                shown = shown.replace(&format!("{o:?}"), "\u{1}");
            }
            for pw in passwords {
                assert!(!shown.contains(&pw), "password {pw:?} shown in {shown:?}");
            }
        }
    }
}

/// Lines in a file, ended by `\n`, `\r\n` or a lone `\r` (what the csv crate splits on).
fn physical_lines(data: &[u8]) -> u64 {
    let breaks = data
        .iter()
        .enumerate()
        .filter(|&(i, b)| *b == b'\n' || (*b == b'\r' && data.get(i + 1) != Some(&b'\n')))
        .count();
    breaks as u64 + 1
}

/// The password-column values of a CSV (after a header naming `password`) that are long
/// and distinctive enough that finding one in a message cannot be chance: at least 12
/// bytes, and not part of any other field of the file. Also the other fields (UTF-8 ones),
/// which an error may quote.
fn passwords_in(data: &[u8]) -> (Vec<String>, Vec<String>) {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut records = reader.byte_records().map_while(Result::ok);
    let Some(header) = records.next() else {
        return (Vec::new(), Vec::new());
    };
    let Some(col) = header.iter().position(|h| h == b"password") else {
        return (Vec::new(), Vec::new());
    };
    let rows: Vec<csv::ByteRecord> = records.collect();
    let mut others: Vec<&[u8]> = header.iter().collect();
    let mut candidates = Vec::new();
    for r in &rows {
        for (i, f) in r.iter().enumerate() {
            if i == col {
                candidates.push(f);
            } else {
                others.push(f);
            }
        }
    }
    let passwords = candidates
        .into_iter()
        .filter(|p| p.len() >= 12)
        .filter(|p| !others.iter().any(|o| contains(o, p)))
        .filter(|p| !contains(MESSAGE_TEXT.as_bytes(), p))
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(str::to_string)
        .collect();
    let others = others
        .into_iter()
        .filter_map(|o| std::str::from_utf8(o).ok())
        .map(str::to_string)
        .collect();
    (passwords, others)
}

/// Fixed text of inventory errors (so a "password" that is a column name is not a leak).
const MESSAGE_TEXT: &str = "no header row: the first line names none of the columns \
    unknown columns (known: id, tenant_id, name, host, port, username, password, \
    routeros_version, enabled, backup_interval_seconds, backup_cron) missing columns \
    appears twice in the header; fields, expected (as in the header) malformed CSV \
    no devices (only a header) duplicate id (also on line ) duplicate name in tenant \
    not UTF-8 header is not UTF-8 is not a UUID is not an IP address or a DNS hostname \
    is not a port (1-65535) is not a RouterOS version (like 7.16.2 or 6.49.10) \
    is not true or false is not a positive whole number of seconds (at most 2147483647) \
    contains a control character";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

// ---- snapshot_event ---------------------------------------------------------------------

/// What the archiver would store for this event, or why it is malformed: the pure part
/// of `archive::consumer::Archiver::decode` (everything but the subject check, the
/// object-store fetch for `config_ref` events and the message key), step for step.
pub fn archiver_validate(payload: &[u8]) -> Result<(Version, Vec<u8>, String), &'static str> {
    let event = ConfigSnapshotEvent::decode(payload).map_err(|_| "not a ConfigSnapshotEvent")?;
    uuid::Uuid::parse_str(&event.device_id).map_err(|_| "device_id is not a UUID")?;
    chrono::DateTime::parse_from_rfc3339(&event.collected_at)
        .map_err(|_| "collected_at is not RFC 3339")?;
    let version = Version::try_from(event.normalization_version)
        .map_err(|_| "unknown normalization_version")?;
    if event.config_ref.is_some() {
        return Err("config_ref (object store; not fuzzed)");
    }
    if event.config_encryption.is_some() {
        return Err("config_encryption (needs a snapshot key; not fuzzed)");
    }
    let raw = event
        .inline_bytes()
        .map_err(|_| "config_text_base64 is not base64")?;
    if normalize::hash(&raw) != event.sha256_hash.to_ascii_lowercase() {
        return Err("sha256_hash does not match the config text");
    }
    if raw.is_empty() {
        return Err("empty config text");
    }
    let text = match version {
        Version::V2 => raw,
        Version::V1 => normalize::normalize(&raw, Version::V2),
    };
    let sha = normalize::hash(&text);
    Ok((version, text, sha))
}

/// `ConfigSnapshotEvent` from arbitrary bytes, and what the archiver does with it: never
/// panics; a decoded event survives a JSON round trip; `Debug` never shows the text.
///
/// Inputs starting with `0xFF` are used differently: the rest is a config text that is
/// normalized and published the way a worker does it (`ConfigSnapshotEvent::new`), and
/// the archiver must accept that event, with the exact bytes (non-UTF-8 included) and the
/// same hash as v2 normalization of the same raw text.
pub fn snapshot_event(data: &[u8]) {
    if let [0xFF, rest @ ..] = data {
        published_event(rest);
        return;
    }
    if let Ok(event) = ConfigSnapshotEvent::decode(data) {
        let json = serde_json::to_vec(&event).expect("an event always serializes");
        let back = ConfigSnapshotEvent::decode(&json).expect("our own JSON decodes");
        assert_eq!(back, event, "JSON round trip changed the event");
        let _ = event.msg_id();
        let _ = event.inline_bytes();
        if event.config_text.len() >= 8 {
            let dbg = format!("{event:?}");
            assert!(
                !dbg.contains(&event.config_text),
                "Debug shows the config text"
            );
        }
    }
    let _ = archiver_validate(data);
}

fn published_event(raw: &[u8]) {
    const DEVICE: &str = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
    for v in [Version::V1, Version::V2] {
        let (normalized, hash) = normalize::normalize_and_hash(raw, v);
        let event = ConfigSnapshotEvent::new(DEVICE, "t", None, &normalized, hash.clone(), v);
        assert_eq!(event.inline_bytes().ok().as_deref(), Some(&normalized[..]));
        let json = serde_json::to_vec(&event).unwrap();
        match archiver_validate(&json) {
            Ok((version, text, sha)) => {
                assert_eq!(version, v);
                assert_eq!(sha, normalize::hash(&text));
                if v == Version::V2 {
                    assert_eq!(text, normalized, "archiver changed v2 text");
                }
                // The archiver's v2 view of a v1 event is v2 of (v1 of raw). Equal to v2 of
                // raw whenever v1's rules did not keep something v2 would reinterpret.
            }
            Err(why) => {
                assert!(
                    normalized.is_empty() && why == "empty config text",
                    "{why}: {:?}",
                    esc(raw)
                );
            }
        }
    }
}

/// Printable form of bytes for assertion messages.
pub fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}
