//! Fault modes of simulated devices and the `--faults` spec parser.
//!
//! A fault spec such as `auth=2,hostkey=1,slow=3` assigns faults to devices in index
//! order starting from device 0, in the order written; the remaining devices are
//! healthy. Keeping assignment positional (not random) makes a fleet reproducible and
//! lets an operator predict which `sim-NNNN-<fault>` device misbehaves how.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One way a simulated device misbehaves (or differs from a plain healthy RouterOS 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Rejects every password (and every key).
    Auth,
    /// Presents a new host key on every connection.
    HostKey,
    /// Nothing listens on the device's address (connection refused).
    Refuse,
    /// Accepts TCP and never writes a byte.
    Silent,
    /// Sends part of the export, then nothing more while keeping the connection open.
    Stall,
    /// Sends part of the export, then closes the TCP connection abruptly.
    Drop,
    /// Drips the export out very slowly.
    Slow,
    /// Streams `huge_bytes` of export-like lines.
    Huge,
    /// Answers every command with text that is not RouterOS output.
    Garbage,
    /// Behaves like RouterOS 6 (old header, `show-sensitive` unsupported).
    V6,
    /// Inserts random runtime annotation lines (`# Interface not active`, …) per export.
    Annotate,
    /// A real configuration line changes on every export.
    Change,
    /// A healthy export with NUL bytes: in a `note=` value, on a line of their own and
    /// after the header's version token.
    Nul,
    /// A healthy export with bytes that are not UTF-8: a Latin-1 `note=` value (what a
    /// comment typed on a Windows box looks like), a cut multi-byte sequence, and stray
    /// high bytes after the header's version token.
    Binary,
    /// Starts an export, then sends one line that never ends (no newline, no exit
    /// status) for as long as the client reads: `FaultTiming::endless_chunk` bytes every
    /// `FaultTiming::endless_interval`.
    EndlessLine,
    /// `/system backup save` fails with `not enough space` (a full flash).
    BackupNoSpace,
    /// `/system backup save` says it saved, but the file never appears in `/file`.
    BackupMissing,
    /// The saved backup file grows every time it is looked at (a save that never ends).
    BackupGrowing,
    /// An SFTP read of the backup file ends (EOF) after half of it.
    BackupCut,
    /// A healthy device whose user has an authorized SSH key (Ed25519 on even device
    /// indexes, RSA on odd ones; RSA only on RouterOS 6, which has no Ed25519) and that
    /// still takes the password (`/ip ssh set always-allow-password-login=yes`).
    Keys,
    /// As `keys`, but passwords are refused: what RouterOS does by default once a user
    /// has a key. Reached only with the key.
    KeyOnly,
}

impl Fault {
    /// Every fault, in the order of the enum.
    pub const ALL: [Fault; 21] = [
        Fault::Auth,
        Fault::HostKey,
        Fault::Refuse,
        Fault::Silent,
        Fault::Stall,
        Fault::Drop,
        Fault::Slow,
        Fault::Huge,
        Fault::Garbage,
        Fault::V6,
        Fault::Annotate,
        Fault::Change,
        Fault::Nul,
        Fault::Binary,
        Fault::EndlessLine,
        Fault::BackupNoSpace,
        Fault::BackupMissing,
        Fault::BackupGrowing,
        Fault::BackupCut,
        Fault::Keys,
        Fault::KeyOnly,
    ];

    /// The lower-case name used in specs, device names and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Auth => "auth",
            Fault::HostKey => "hostkey",
            Fault::Refuse => "refuse",
            Fault::Silent => "silent",
            Fault::Stall => "stall",
            Fault::Drop => "drop",
            Fault::Slow => "slow",
            Fault::Huge => "huge",
            Fault::Garbage => "garbage",
            Fault::V6 => "v6",
            Fault::Annotate => "annotate",
            Fault::Change => "change",
            Fault::Nul => "nul",
            Fault::Binary => "binary",
            Fault::EndlessLine => "endless-line",
            Fault::BackupNoSpace => "backup-no-space",
            Fault::BackupMissing => "backup-missing",
            Fault::BackupGrowing => "backup-growing",
            Fault::BackupCut => "backup-cut",
            Fault::Keys => "keys",
            Fault::KeyOnly => "key-only",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error from parsing a [`Fault`] or a [`FaultSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultParseError(pub String);

impl FromStr for Fault {
    type Err = FaultParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Fault::ALL
            .iter()
            .copied()
            .find(|f| f.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                let known: Vec<&str> = Fault::ALL.iter().map(|f| f.as_str()).collect();
                FaultParseError(format!(
                    "unknown fault mode {t:?} (known: {})",
                    known.join(", ")
                ))
            })
    }
}

/// Faults and how many devices get each, e.g. `auth=2,hostkey=1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSpec(pub Vec<(Fault, usize)>);

impl FaultSpec {
    /// Total number of faulty devices.
    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The fault of device `index` (0-based), if any.
    pub fn fault_for(&self, index: usize) -> Option<Fault> {
        let mut start = 0;
        for (fault, n) in &self.0 {
            if index < start + n {
                return Some(*fault);
            }
            start += n;
        }
        None
    }
}

impl FromStr for FaultSpec {
    type Err = FaultParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out: Vec<(Fault, usize)> = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (mode, count) = part.split_once('=').ok_or_else(|| {
                FaultParseError(format!(
                    "bad fault entry {part:?}: expected MODE=COUNT, e.g. auth=2"
                ))
            })?;
            let fault: Fault = mode.parse()?;
            let count: usize = count.trim().parse().map_err(|_| {
                FaultParseError(format!(
                    "bad count {:?} for fault {fault}: expected a non-negative integer",
                    count.trim()
                ))
            })?;
            if out.iter().any(|(f, _)| *f == fault) {
                return Err(FaultParseError(format!(
                    "fault {fault} given more than once"
                )));
            }
            out.push((fault, count));
        }
        Ok(FaultSpec(out))
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (fault, n)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{fault}={n}")?;
        }
        Ok(())
    }
}

/// Timing knobs for the misbehaving devices.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultTiming {
    /// Fraction of the export `stall` sends before going quiet.
    pub stall_fraction: f64,
    /// Fraction of the export `drop` sends before cutting the connection.
    pub drop_fraction: f64,
    /// Pause between sending the partial export and cutting the TCP connection (`drop`),
    /// so the partial data reaches the client first.
    pub drop_delay: Duration,
    /// Interval between two lines dripped by `slow`.
    pub slow_interval: Duration,
    /// Lines sent per `slow_interval`.
    pub slow_lines: usize,
    /// How long a rejected password attempt takes (russh's constant-time rejection).
    pub auth_rejection: Duration,
    /// Server-side inactivity timeout for SSH sessions (none = keep idle sessions forever).
    pub session_idle_timeout: Option<Duration>,
    /// Bytes of the never-ending line `endless-line` sends at a time.
    pub endless_chunk: usize,
    /// Pause between two chunks of `endless-line` (zero: as fast as the client reads).
    pub endless_interval: Duration,
}

impl Default for FaultTiming {
    fn default() -> Self {
        FaultTiming {
            stall_fraction: 1.0 / 3.0,
            drop_fraction: 1.0 / 3.0,
            drop_delay: Duration::from_millis(100),
            slow_interval: Duration::from_millis(500),
            slow_lines: 1,
            auth_rejection: Duration::from_millis(200),
            session_idle_timeout: Some(Duration::from_secs(3600)),
            endless_chunk: 64 * 1024,
            endless_interval: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let spec: FaultSpec = "auth=2,hostkey=1,slow=3".parse().expect("valid");
        assert_eq!(
            spec.0,
            vec![(Fault::Auth, 2), (Fault::HostKey, 1), (Fault::Slow, 3)]
        );
        assert_eq!(spec.to_string(), "auth=2,hostkey=1,slow=3");
        assert_eq!(spec.total(), 6);
        assert_eq!(spec.fault_for(0), Some(Fault::Auth));
        assert_eq!(spec.fault_for(1), Some(Fault::Auth));
        assert_eq!(spec.fault_for(2), Some(Fault::HostKey));
        assert_eq!(spec.fault_for(5), Some(Fault::Slow));
        assert_eq!(spec.fault_for(6), None);
        for f in Fault::ALL {
            assert_eq!(f.to_string().parse::<Fault>(), Ok(f));
        }
        assert_eq!("".parse::<FaultSpec>(), Ok(FaultSpec::default()));
    }

    #[test]
    fn parse_errors_are_clear() {
        let e = "auth=2,bogus=1".parse::<FaultSpec>().unwrap_err();
        assert!(e.0.contains("unknown fault mode \"bogus\""), "{e}");
        let e = "auth=x".parse::<FaultSpec>().unwrap_err();
        assert!(e.0.contains("bad count \"x\" for fault auth"), "{e}");
        let e = "auth=-1".parse::<FaultSpec>().unwrap_err();
        assert!(e.0.contains("bad count"), "{e}");
        let e = "auth=1,auth=2".parse::<FaultSpec>().unwrap_err();
        assert!(e.0.contains("more than once"), "{e}");
        let e = "auth".parse::<FaultSpec>().unwrap_err();
        assert!(e.0.contains("expected MODE=COUNT"), "{e}");
    }
}
