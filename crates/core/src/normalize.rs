//! Turning a raw RouterOS export into the bytes we hash.
//!
//! Two exports of an unchanged router differ in their first line (a timestamp) and in
//! runtime annotations RouterOS writes into the body (`# Interface not active`, …). The
//! hash must not change for those, or every poll looks like a config change.
//!
//! Two versions exist because the seed's Go normalizer (version 1) only knows a header
//! format no device prints (`# 2024/01/15 …`). Deployments that stored v1 hashes keep
//! them byte for byte; version 2 (the default) handles what devices really print — see
//! `../shared/routeros/NOTES.md` §1–3. Both work on bytes, never on `str`: exports can
//! carry stray non-UTF-8 bytes and the Go original hashed bytes too.
//!
//! Everything here is one pass over the input with `memchr` line splitting: a
//! 400 KB export normalizes in well under a millisecond.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Which normalization rules produced a hash. Carried in every snapshot event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// The seed's `NormalizeConfig`, byte-compatible.
    V1,
    /// Real header formats, runtime annotations removed (the default).
    #[default]
    V2,
}

impl Version {
    pub fn as_u8(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u8())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown normalization version {0:?} (expected 1 or 2)")]
pub struct UnknownVersion(pub String);

impl FromStr for Version {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "1" => Ok(Version::V1),
            "2" => Ok(Version::V2),
            other => Err(UnknownVersion(other.to_string())),
        }
    }
}

impl TryFrom<u8> for Version {
    type Error = UnknownVersion;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(Version::V1),
            2 => Ok(Version::V2),
            other => Err(UnknownVersion(other.to_string())),
        }
    }
}

/// Normalize `raw` with the given version's rules.
pub fn normalize(raw: &[u8], version: Version) -> Vec<u8> {
    match version {
        Version::V1 => normalize_v1(raw),
        Version::V2 => normalize_v2(raw),
    }
}

/// Lowercase hex SHA-256 of already normalized bytes.
pub fn hash(normalized: &[u8]) -> String {
    hex(&Sha256::digest(normalized))
}

/// Normalize and hash in one call.
pub fn normalize_and_hash(raw: &[u8], version: Version) -> (Vec<u8>, String) {
    let n = normalize(raw, version);
    let h = hash(&n);
    (n, h)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Iterate over the lines of `raw` after `\r\n` → `\n`: each item is the line content
/// without its terminator. A trailing `\n` does not produce a final empty line, matching
/// how the output is rebuilt (we always end with exactly one `\n`).
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let mut line = &rest[..i];
                rest = &rest[i + 1..];
                // `\r\n` → `\n`: only the one `\r` directly before the `\n` goes.
                if let [head @ .., b'\r'] = line {
                    line = head;
                }
                Some(line)
            }
            None => {
                let line = rest;
                rest = &[];
                Some(line)
            }
        }
    })
}

/// Collects trimmed lines, collapsing runs of empty lines to one and finishing with
/// exactly one `\n` (an all-empty result stays empty). Shared by both versions.
struct Output {
    buf: Vec<u8>,
    prev_empty: bool,
    started: bool,
}

impl Output {
    fn with_capacity(n: usize) -> Self {
        Output {
            buf: Vec::with_capacity(n + 1),
            prev_empty: false,
            started: false,
        }
    }

    #[inline]
    fn push(&mut self, line: &[u8]) {
        if line.is_empty() {
            if self.prev_empty {
                return;
            }
            self.prev_empty = true;
        } else {
            self.prev_empty = false;
        }
        if self.started {
            self.buf.push(b'\n');
        }
        self.started = true;
        self.buf.extend_from_slice(line);
    }

    fn finish(mut self) -> Vec<u8> {
        while self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
        self.buf
    }
}

#[inline]
fn trim_end<'a>(line: &'a [u8], set: &[u8]) -> &'a [u8] {
    let mut end = line.len();
    while end > 0 && set.contains(&line[end - 1]) {
        end -= 1;
    }
    &line[..end]
}

/// The seed's rules, byte for byte (NOTES §3, version 1).
fn normalize_v1(raw: &[u8]) -> Vec<u8> {
    let mut out = Output::with_capacity(raw.len());
    let mut header_removed = false;
    let mut drop_next_if_empty = false;
    for line in lines(raw) {
        if drop_next_if_empty {
            drop_next_if_empty = false;
            // The regex consumed the header's `\n`; "if the next character is `\n`"
            // means this line is exactly empty (and actually ends in `\n`).
            if line.is_empty() {
                continue;
            }
        }
        if !header_removed && is_v1_header(line) {
            header_removed = true;
            drop_next_if_empty = true;
            continue;
        }
        out.push(trim_end(line, b" \t"));
    }
    out.finish()
}

/// `# \d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} by RouterOS` at the start of a line.
fn is_v1_header(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"# ") else {
        return false;
    };
    let Some(rest) = date_slash_ymd(rest) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b" ") else {
        return false;
    };
    let Some(rest) = time_hms(rest) else {
        return false;
    };
    rest.starts_with(b" by RouterOS")
}

/// The rules real devices need (NOTES §3, version 2).
fn normalize_v2(raw: &[u8]) -> Vec<u8> {
    let mut out = Output::with_capacity(raw.len());
    let mut in_body = false;
    let mut drop_next_if_empty = false;
    for line in lines(raw) {
        if drop_next_if_empty {
            drop_next_if_empty = false;
            if line.is_empty() {
                continue;
            }
        }
        if !in_body && line.first() == Some(&b'/') {
            in_body = true;
        }
        if in_body {
            if line.first() == Some(&b'#') && !line.starts_with(b"#error exporting") {
                continue;
            }
        } else if header_version(line).is_some() {
            // Every header-format line before the body, not only the first: a text with
            // two (no device prints that, but fuzzing found it) would otherwise change
            // again on a second pass, and the archive relies on v2 being idempotent.
            drop_next_if_empty = true;
            continue;
        }
        out.push(trim_end(line, b" \t\r"));
    }
    out.finish()
}

/// If `line` is a RouterOS export header (any of the three date formats), the version
/// token after `by RouterOS` (possibly empty when the line ends there).
pub fn header_version(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"# ")?;
    let rest = date_slash_ymd(rest)
        .or_else(|| date_dash_ymd(rest))
        .or_else(|| date_mdy(rest))?;
    let rest = rest.strip_prefix(b" ")?;
    let rest = time_hms(rest)?;
    let rest = rest.strip_prefix(b" by RouterOS")?;
    match rest.first() {
        None => Some(&rest[..0]),
        Some(b' ' | b'\t' | b'\r') => {
            let rest = &rest[rest
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\r'))
                .unwrap_or(rest.len())..];
            let end = rest
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            Some(&rest[..end])
        }
        Some(_) => None,
    }
}

/// Metadata read from an export's header block (the lines before the first `/` line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportInfo {
    /// The free-form version token after `by RouterOS` (`7.10rc1`, `7.20_ab294`, …).
    pub routeros_version: Option<String>,
    /// Count of `#error exporting …` lines: the export is incomplete for those menus.
    pub error_exporting_lines: usize,
}

/// Parse the header for metadata. Never used to decide what the hash covers.
pub fn export_info(raw: &[u8]) -> ExportInfo {
    let mut info = ExportInfo::default();
    let mut in_body = false;
    for line in lines(raw) {
        if !in_body {
            if line.first() == Some(&b'/') {
                in_body = true;
            } else if info.routeros_version.is_none()
                && let Some(v) = header_version(line)
                && !v.is_empty()
            {
                info.routeros_version = Some(String::from_utf8_lossy(v).into_owned());
            }
        }
        if line.starts_with(b"#error exporting") {
            info.error_exporting_lines += 1;
        }
    }
    info
}

fn digits(s: &[u8], n: usize) -> Option<&[u8]> {
    if s.len() >= n && s[..n].iter().all(u8::is_ascii_digit) {
        Some(&s[n..])
    } else {
        None
    }
}

/// `yyyy/mm/dd`
fn date_slash_ymd(s: &[u8]) -> Option<&[u8]> {
    let s = digits(s, 4)?.strip_prefix(b"/")?;
    let s = digits(s, 2)?.strip_prefix(b"/")?;
    digits(s, 2)
}

/// `yyyy-mm-dd`
fn date_dash_ymd(s: &[u8]) -> Option<&[u8]> {
    let s = digits(s, 4)?.strip_prefix(b"-")?;
    let s = digits(s, 2)?.strip_prefix(b"-")?;
    digits(s, 2)
}

/// `mmm/dd/yyyy` with a three-letter month in any case.
fn date_mdy(s: &[u8]) -> Option<&[u8]> {
    if s.len() < 3 || !s[..3].iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let s = s[3..].strip_prefix(b"/")?;
    let s = digits(s, 2)?.strip_prefix(b"/")?;
    digits(s, 4)
}

/// `HH:MM:SS`
fn time_hms(s: &[u8]) -> Option<&[u8]> {
    let s = digits(s, 2)?.strip_prefix(b":")?;
    let s = digits(s, 2)?.strip_prefix(b":")?;
    digits(s, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(s: &str) -> String {
        String::from_utf8(normalize(s.as_bytes(), Version::V1)).unwrap()
    }
    fn v2(s: &str) -> String {
        String::from_utf8(normalize(s.as_bytes(), Version::V2)).unwrap()
    }

    #[test]
    fn v1_strips_only_the_seed_header_format() {
        assert_eq!(
            v1("# 2024/01/15 10:30:00 by RouterOS 7.14\n\n/ip address\nadd address=1.1.1.1\n"),
            "/ip address\nadd address=1.1.1.1\n"
        );
        // The formats real devices print survive v1: that is the seed's bug, kept.
        assert_eq!(
            v1("# jan/15/2024 10:30:00 by RouterOS 6.49\n/x\n"),
            "# jan/15/2024 10:30:00 by RouterOS 6.49\n/x\n"
        );
        // First match anywhere, not only on line 1; only the first.
        assert_eq!(
            v1("/a\n# 2024/01/15 10:30:00 by RouterOS 1\n# 2024/01/15 10:30:00 by RouterOS 2\n"),
            "/a\n# 2024/01/15 10:30:00 by RouterOS 2\n"
        );
    }

    #[test]
    fn v2_strips_real_header_formats_and_annotations() {
        for header in [
            "# jan/15/2024 10:30:00 by RouterOS 6.49.10",
            "# JAN/02/1970 00:00:01 by RouterOS 6.43.8",
            "# 2024-01-15 10:30:00 by RouterOS 7.14",
            "# 2024/01/15 10:30:00 by RouterOS 7.14",
            "# 2024-01-15 10:30:00 by RouterOS",
        ] {
            let raw = format!(
                "{header}\r\n# software id = ABCD-EFGH\r\n#\r\n/interface bridge\r\nadd name=b1\r\n# Interface not active\r\n#error exporting /ip firewall calea\r\n"
            );
            assert_eq!(
                v2(&raw),
                "# software id = ABCD-EFGH\n#\n/interface bridge\nadd name=b1\n#error exporting /ip firewall calea\n",
                "{header}"
            );
        }
    }

    #[test]
    fn v2_header_needs_whitespace_or_end_after_routeros() {
        assert_eq!(
            v2("# 2024-01-15 10:30:00 by RouterOSx\n/a\n"),
            "# 2024-01-15 10:30:00 by RouterOSx\n/a\n"
        );
        // A header-looking line in the body is an annotation, removed as such.
        assert_eq!(v2("/a\n# 2024-01-15 10:30:00 by RouterOS 7\n"), "/a\n");
    }

    #[test]
    fn v2_removes_following_line_only_if_exactly_empty() {
        assert_eq!(v2("# 2024-01-15 10:30:00 by RouterOS 7\n\n/a\n"), "/a\n");
        assert_eq!(
            v2("# 2024-01-15 10:30:00 by RouterOS 7\n\n\n/a\n"),
            "\n/a\n"
        );
        assert_eq!(v2("# 2024-01-15 10:30:00 by RouterOS 7\n \n/a\n"), "\n/a\n");
    }

    #[test]
    fn trims_collapses_and_ends_with_one_newline() {
        assert_eq!(v1("a  \t\n\n\n\nb\n\n\n"), "a\n\nb\n");
        assert_eq!(v2("a \r\n\r\n\r\n\r\nb\r"), "a\n\nb\n");
        assert_eq!(v1(""), "");
        assert_eq!(v2("\n\n  \n"), "");
        // v1 keeps a stray `\r` at end of file; v2 trims it.
        assert_eq!(v1("/a\r"), "/a\r\n");
        assert_eq!(v2("/a\r"), "/a\n");
    }

    #[test]
    fn crlf_is_lf_and_idempotent() {
        let lf = "# 2024-01-15 10:30:00 by RouterOS 7.14\n\n/ip address\nadd a=1  \n\n\n# x\n";
        let crlf = lf.replace('\n', "\r\n");
        for v in [Version::V1, Version::V2] {
            let a = normalize(lf.as_bytes(), v);
            assert_eq!(a, normalize(crlf.as_bytes(), v));
            assert_eq!(a, normalize(&a, v));
        }
    }

    #[test]
    fn non_utf8_bytes_pass_through() {
        let raw = b"/a\nadd comment=\xff\xfe\n";
        assert_eq!(normalize(raw, Version::V2), raw.to_vec());
    }

    #[test]
    fn header_version_tokens() {
        let cases: [(&str, Option<&str>); 5] = [
            ("# 2024-01-15 10:30:00 by RouterOS 7.10rc1", Some("7.10rc1")),
            ("# oct/08/2022 21:00:02 by RouterOS 6.49.6", Some("6.49.6")),
            (
                "# 2024-01-15 10:30:00 by RouterOS 7.20_ab294\r",
                Some("7.20_ab294"),
            ),
            ("# 2024-01-15 10:30:00 by RouterOS", Some("")),
            ("# software id = X", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                header_version(line.as_bytes()).map(|v| std::str::from_utf8(v).unwrap()),
                want,
                "{line}"
            );
        }
        let info =
            export_info(b"# jan/02/1970 00:00:00 by RouterOS 6.48.1\n/a\n#error exporting /x\n");
        assert_eq!(info.routeros_version.as_deref(), Some("6.48.1"));
        assert_eq!(info.error_exporting_lines, 1);
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
