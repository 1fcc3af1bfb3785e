//! Deciding whether what a device sent is a complete export.
//!
//! RouterOS answers a bad command with an error text on stdout and a normal exit, and an
//! export cut short by a flaky link looks like a shorter export. Both must fail loudly:
//! storing either as "the config" is how backup tools end up with empty or partial
//! backups nobody notices (Oxidized #2427). Messages built here never quote device
//! output, because an export holds secrets.

/// Error texts RouterOS prints at column 0 instead of an export.
///
/// NOTES §4 says to reject output that *contains* them; we match them only at the start
/// of a line. RouterOS prints its errors at column 0, while an export can legitimately
/// contain the same words inside a script source or a comment (indented continuation
/// lines or quoted values), and rejecting such a router forever would be worse. The
/// "no `/` section line" rule catches every error answer we know of on its own.
const ERROR_MARKERS: &[&[u8]] = &[
    b"expected end of command",
    b"bad command name",
    b"syntax error",
    b"failure:",
    b"no such item",
    b"input does not match any value",
];

/// Why an answer is not an export (without quoting it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAnExport {
    Empty,
    ErrorText(&'static str),
    NoSection { bytes: usize },
}

impl std::fmt::Display for NotAnExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAnExport::Empty => f.write_str("the device sent no output"),
            NotAnExport::ErrorText(m) => {
                write!(f, "the device answered with a RouterOS error ({m:?})")
            }
            NotAnExport::NoSection { bytes } => write!(
                f,
                "the answer ({bytes} bytes) has no `/` section line, so it is not a RouterOS export"
            ),
        }
    }
}

impl std::error::Error for NotAnExport {}

/// Is `raw` an export: not empty, no RouterOS error text at the start of a line, and at
/// least one line starting with `/`?
pub fn check_export(raw: &[u8]) -> Result<(), NotAnExport> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(NotAnExport::Empty);
    }
    let mut has_section = false;
    for line in raw.split(|&b| b == b'\n') {
        if line.first() == Some(&b'/') {
            has_section = true;
            continue;
        }
        if let Some(m) = ERROR_MARKERS.iter().find(|m| line.starts_with(m)) {
            return Err(NotAnExport::ErrorText(
                std::str::from_utf8(m).unwrap_or("error"),
            ));
        }
    }
    if has_section {
        Ok(())
    } else {
        Err(NotAnExport::NoSection { bytes: raw.len() })
    }
}

/// RouterOS 6's answer to `/export show-sensitive`.
pub fn is_v6_show_sensitive_error(raw: &[u8]) -> bool {
    let t = raw.trim_ascii();
    t.starts_with(b"expected end of command") && t.len() < 200
}

/// Does the text end inside a wrapped line (` \` continuation with nothing after it)?
pub fn ends_mid_continuation(raw: &[u8]) -> bool {
    raw.trim_ascii_end().ends_with(b"\\")
}

/// Longest version token we keep (real ones: `7.10rc1`, `7.20_ab294`, `6.49.10`).
const MAX_VERSION_LEN: usize = 64;

/// A version token the device sent, if it is fit to store and publish: 1 to 64 printable
/// ASCII characters. The token is stored in PostgreSQL (whose `text` refuses NUL bytes)
/// and published in every event, so a header such as `by RouterOS 7.6\0\0` or one with
/// high bytes must not pass through: we then fall back to another source (the probe,
/// the known version) instead.
pub fn clean_version(token: &str) -> Option<String> {
    (!token.is_empty()
        && token.len() <= MAX_VERSION_LEN
        && token.bytes().all(|b| b.is_ascii_graphic()))
    .then(|| token.to_string())
}

/// The version token from `/system resource print` (`version: 7.15.3 (stable)` → `7.15.3`),
/// if [`clean_version`] accepts it.
pub fn parse_resource_version(out: &[u8]) -> Option<String> {
    for line in out.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if let Some(rest) = line.strip_prefix(b"version:") {
            let rest = rest.trim_ascii();
            let end = rest
                .iter()
                .position(u8::is_ascii_whitespace)
                .unwrap_or(rest.len());
            if end > 0 {
                return clean_version(&String::from_utf8_lossy(&rest[..end]));
            }
        }
    }
    None
}

/// Major version from a free-form token: `7.10rc1` → 7, `6.49.10` → 6.
pub fn major(version: &str) -> Option<u8> {
    let digits: String = version
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_not_exports() {
        assert_eq!(
            check_export(b"expected end of command (line 1 column 9)\r\n"),
            Err(NotAnExport::ErrorText("expected end of command"))
        );
        assert!(matches!(
            check_export(b"bad command name exprt (line 1 column 2)"),
            Err(NotAnExport::ErrorText(_))
        ));
        assert_eq!(check_export(b"  \r\n"), Err(NotAnExport::Empty));
        assert!(matches!(
            check_export(b"<html>502 Bad Gateway</html>"),
            Err(NotAnExport::NoSection { .. })
        ));
        assert!(check_export(b"# 2024-01-01 00:00:00 by RouterOS 7.1\r\n/ip address\r\nadd address=1.1.1.1/24\r\n").is_ok());
        // A script body mentioning an error text is indented, so it is still an export.
        assert!(
            check_export(b"/system script\nadd source=\"\\\n    :put \\\"syntax error\\\"\"\n")
                .is_ok()
        );
        let msg = check_export(b"secret-password-here")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn continuation_and_versions() {
        assert!(ends_mid_continuation(
            b"/ip address\r\nadd comment=\"abc \\\r\n"
        ));
        assert!(!ends_mid_continuation(
            b"/ip address\r\nadd comment=abc\r\n"
        ));
        assert_eq!(
            parse_resource_version(
                b"                   uptime: 1d\r\n                  version: 7.16 (stable)\r\n"
            ),
            Some("7.16".into())
        );
        assert_eq!(parse_resource_version(b"nothing here"), None);
        assert_eq!(parse_resource_version(b"version: 7.16\0\0 (stable)"), None);
        assert_eq!(parse_resource_version(b"version: 7.16\xff (stable)"), None);
        assert_eq!(clean_version("7.20_ab294").as_deref(), Some("7.20_ab294"));
        assert_eq!(clean_version("7.6\u{fffd}"), None);
        assert_eq!(clean_version(""), None);
        assert_eq!(clean_version(&"7".repeat(65)), None);
        assert_eq!(major("7.10rc1"), Some(7));
        assert_eq!(major("6.49.10"), Some(6));
        assert_eq!(major("x"), None);
        assert!(is_v6_show_sensitive_error(
            b"expected end of command (line 1 column 9)\r\n"
        ));
    }
}
