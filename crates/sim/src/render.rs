//! RouterOS text conventions: export headers, line wrapping, `/system resource print`,
//! CLI error messages.
//!
//! Kept apart from the generator so that file-backed devices (`--configs DIR`) share the
//! exact same header and command-answer logic as generated ones.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Export line width: longer lines wrap as ` \` + newline + 4 spaces in default exports.
pub const WRAP_WIDTH: usize = 79;

/// Marker placed in a logical line where RouterOS always breaks (after an escaped `\r`
/// inside a multi-line quoted value), in terse exports too.
pub const HARD_BREAK: char = '\u{1}';

/// `(major, minor)` of a free-form RouterOS version token (`7.10rc1` → `(7, 10)`).
pub fn version_major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.');
    let num = |s: Option<&str>| -> u32 {
        s.map(|p| {
            p.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
    };
    let major = num(parts.next());
    let minor = num(parts.next());
    (major, minor)
}

/// RouterOS 6 (and older) semantics for export flags.
pub fn is_v6(version: &str) -> bool {
    version_major_minor(version).0 < 7
}

/// Does this version accept Ed25519 user keys (RouterOS 7.12 and later; RSA before)?
pub fn takes_ed25519_user_keys(version: &str) -> bool {
    version_major_minor(version) >= (7, 12)
}

/// Line 1 of an export, in the format the version uses.
pub fn export_header(version: &str, now: DateTime<Utc>) -> String {
    let (major, minor) = version_major_minor(version);
    if major > 7 || (major == 7 && minor >= 10) {
        format!(
            "# {} by RouterOS {version}",
            now.format("%Y-%m-%d %H:%M:%S")
        )
    } else {
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let month = MONTHS[now.month0() as usize % 12];
        format!(
            "# {month}/{:02}/{:04} {:02}:{:02}:{:02} by RouterOS {version}",
            now.day(),
            now.year(),
            now.hour(),
            now.minute(),
            now.second()
        )
    }
}

/// Renders one logical line into physical lines (joined with CRLF, no trailing CRLF).
///
/// `wrap`: default exports wrap at [`WRAP_WIDTH`]; terse exports only break at
/// [`HARD_BREAK`] markers (multi-line values).
pub fn wrap_line(line: &str, wrap: bool, out: &mut String) {
    let mut first = true;
    for segment in line.split(HARD_BREAK) {
        let mut cur_len;
        if first {
            cur_len = 0;
            first = false;
        } else {
            out.push_str("\\\r\n    ");
            cur_len = 4;
        }
        let mut s = segment;
        if wrap {
            while cur_len + s.len() > WRAP_WIDTH {
                // Room for text plus the trailing backslash.
                let avail = (WRAP_WIDTH - 1).saturating_sub(cur_len);
                if avail < 8 {
                    break;
                }
                let mut cut = avail.min(s.len());
                while cut > 0 && !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                // Prefer a space in the second half of the line (the space becomes the
                // one in ` \`); otherwise break inside the word.
                let window = &s[..cut];
                match window.rfind(' ') {
                    Some(k) if k > avail / 2 => {
                        out.push_str(&s[..k]);
                        out.push_str(" \\\r\n    ");
                        s = &s[k + 1..];
                    }
                    _ => {
                        if cut == 0 {
                            break;
                        }
                        out.push_str(&s[..cut]);
                        out.push_str("\\\r\n    ");
                        s = &s[cut..];
                    }
                }
                cur_len = 4;
            }
        }
        out.push_str(s);
    }
}

/// Answer to an unknown command, RouterOS style.
pub fn bad_command(cmd: &str) -> String {
    let trimmed = cmd.trim_start();
    let lead = cmd.len() - trimmed.len();
    let skip = trimmed
        .chars()
        .take_while(|c| *c == '/' || *c == ':')
        .count();
    let word: String = trimmed[skip..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    format!(
        "bad command name {word} (line 1 column {})\r\n",
        lead + skip + 1
    )
}

/// `expected end of command (line 1 column N)` for an unexpected token at byte `offset`.
pub fn expected_end(offset: usize) -> String {
    format!("expected end of command (line 1 column {})\r\n", offset + 1)
}

/// Inputs for `/system resource print`.
pub struct ResourceInfo<'a> {
    pub version: &'a str,
    pub board_name: &'a str,
    pub uptime_secs: u64,
    pub seed: u64,
}

fn fmt_uptime(mut s: u64) -> String {
    let w = s / 604_800;
    s %= 604_800;
    let d = s / 86_400;
    s %= 86_400;
    let h = s / 3600;
    s %= 3600;
    let m = s / 60;
    s %= 60;
    let mut out = String::new();
    if w > 0 {
        out.push_str(&format!("{w}w"));
    }
    if d > 0 {
        out.push_str(&format!("{d}d"));
    }
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// `/system resource print` output: right-aligned `name: value` lines, CRLF, blank line
/// at the end.
pub fn resource_print(info: &ResourceInfo<'_>) -> String {
    let chr = info.board_name.starts_with("CHR");
    let arch = if chr {
        "x86_64"
    } else if info.seed.is_multiple_of(2) {
        "arm64"
    } else {
        "arm"
    };
    let cpu = if chr { "QEMU" } else { "ARM64" };
    let total_mem = [256u64, 512, 1024][(info.seed % 3) as usize];
    let free_mem = total_mem * (40 + info.seed % 40) / 100;
    let mut rows: Vec<(&str, String)> = vec![
        ("uptime", fmt_uptime(info.uptime_secs)),
        ("version", format!("{} (stable)", info.version)),
        ("build-time", "2024-08-27 11:03:12".to_string()),
        ("factory-software", "7.1".to_string()),
        ("free-memory", format!("{free_mem}.0MiB")),
        ("total-memory", format!("{total_mem}.0MiB")),
        ("cpu", cpu.to_string()),
        ("cpu-count", format!("{}", 1 + info.seed % 4)),
        ("cpu-frequency", "1400MHz".to_string()),
        ("cpu-load", format!("{}%", info.seed % 17)),
        ("free-hdd-space", "71.2MiB".to_string()),
        ("total-hdd-space", "128.0MiB".to_string()),
        (
            "write-sect-since-reboot",
            format!("{}", 500 + info.seed % 9000),
        ),
        (
            "write-sect-total",
            format!("{}", 90_000 + info.seed % 900_000),
        ),
    ];
    if !chr {
        rows.push(("bad-blocks", "0%".to_string()));
    }
    rows.push(("architecture-name", arch.to_string()));
    rows.push(("board-name", info.board_name.to_string()));
    rows.push(("platform", "MikroTik".to_string()));
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:>29}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out
}

/// Non-RouterOS text for the `garbage` fault: what a misconfigured jump host or a
/// captive portal might answer. Has no `/` section line.
pub fn garbage_text() -> &'static str {
    "<!DOCTYPE html>\r\n<html><head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
     <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
     </body></html>\r\nlorem ipsum dolor sit amet consectetur adipiscing elit\r\n"
}

/// What the `nul` fault appends to an export: a section whose value holds NUL bytes, and
/// a line of nothing but NULs.
pub const NUL_LINES: &[u8] = b"/system note\r\nset note=\"boot\0note\0\0end\"\r\n\0\0\0\0\r\n";

/// What the `binary` fault appends: a Latin-1 note (`Straße Müller`, as a comment typed
/// on a Windows-1252 box is stored), a multi-byte sequence cut short and stray high bytes.
pub const NON_UTF8_LINES: &[u8] =
    b"/system note\r\nset note=\"Stra\xdfe M\xfcller \xe2\x82 \x80\xff\xfe\"\r\n";

/// Runtime annotations RouterOS writes into export bodies (state, not configuration).
pub const ANNOTATIONS: &[&str] = &[
    "# Interface not active",
    "# Interface not running",
    "# inactive time",
    "# poe-out status: short_circuit",
    "# managed by CAPsMAN",
    "# DHCP server not ready",
    "# No IP address on interface",
    "# ether5 not ready",
    "# received packet from 10.0.0.1 bad format",
];

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ed25519_user_keys_from_7_12() {
        for v in ["7.12", "7.12.1", "7.16.2", "7.20.1", "8.0"] {
            assert!(takes_ed25519_user_keys(v), "{v}");
        }
        for v in ["7.11.2", "7.6", "7.8", "6.49.10"] {
            assert!(!takes_ed25519_user_keys(v), "{v}");
        }
    }

    #[test]
    fn headers_by_version() {
        let t = Utc
            .with_ymd_and_hms(2024, 1, 5, 9, 3, 7)
            .single()
            .expect("valid");
        assert_eq!(
            export_header("6.49.10", t),
            "# jan/05/2024 09:03:07 by RouterOS 6.49.10"
        );
        assert_eq!(
            export_header("7.9.2", t),
            "# jan/05/2024 09:03:07 by RouterOS 7.9.2"
        );
        assert_eq!(
            export_header("7.10rc1", t),
            "# 2024-01-05 09:03:07 by RouterOS 7.10rc1"
        );
        assert_eq!(
            export_header("7.15.3", t),
            "# 2024-01-05 09:03:07 by RouterOS 7.15.3"
        );
        assert!(is_v6("6.49.10") && !is_v6("7.1"));
    }

    #[test]
    fn wrapping() {
        let long = format!("add comment=\"{}\" name=x", "word ".repeat(40));
        let mut out = String::new();
        wrap_line(&long, true, &mut out);
        for l in out.split("\r\n") {
            assert!(l.len() <= WRAP_WIDTH, "{l:?}");
        }
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert!(lines.len() > 2);
        for l in &lines[..lines.len() - 1] {
            assert!(l.ends_with('\\'));
        }
        for l in &lines[1..] {
            assert!(l.starts_with("    "));
        }
        let mut t = String::new();
        wrap_line(&long, false, &mut t);
        assert_eq!(t, long);
        assert_eq!(
            bad_command("/foo bar"),
            "bad command name foo (line 1 column 2)\r\n"
        );
        assert_eq!(
            expected_end(8),
            "expected end of command (line 1 column 9)\r\n"
        );
        let r = resource_print(&ResourceInfo {
            version: "7.15.3",
            board_name: "RB5009UG+S+",
            uptime_secs: 90061,
            seed: 3,
        });
        assert!(
            r.contains("                      version: 7.15.3 (stable)\r\n"),
            "{r}"
        );
        assert!(r.contains("uptime: 1d1h1m1s\r\n"));
    }
}
