//! Binary RouterOS backups beside the text export (issue #19): when to take one, how it
//! is named and protected, and (in [`store`]) where it is kept.
//!
//! Why a binary at all: an `/export` leaves out what only a `/system backup` file holds
//! (local users' passwords, private keys), so it cannot restore a router completely.
//! Why it is a step *after* the text backup and never a part of it: the text snapshot is
//! what every promise of rosbackup is about (publish, history, diff), so a binary that
//! fails — a full flash, a file that never settles, a cut transfer — has an outcome,
//! error kind, metric, run row and backoff of its own and never changes the text
//! backup's. The worker takes it on the export's SSH session after the snapshot was
//! published (`device::binary` does the device part).
//!
//! The decisions here are pure functions, tested without services:
//! [`decide`] (`CONFIG_BACKUP_BINARY` = `off` | `on-change` | `always`, the device's
//! override, the maximum age, the step's own backoff) and the file name and password.
//!
//! `on-change` compares the export's normalized hash with the config hash of the
//! device's *newest stored binary*, not with the previous export: a change whose binary
//! failed is retried (after the backoff) until one is stored, so every config version
//! gets its binary, and an unchanged config gets none until the newest binary is older
//! than `CONFIG_BACKUP_BINARY_MAX_AGE`.

pub mod store;

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use std::time::Duration;

/// When binary backups are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Off,
    /// When the config changed since the newest binary (none yet counts), or the newest
    /// binary is older than the maximum age.
    OnChange,
    /// After every successful export.
    Always,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::OnChange => "on-change",
            Mode::Always => "always",
        }
    }
}

/// A mode name that is not `off`, `on-change` or `always`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected off, on-change or always")]
pub struct BadMode;

impl FromStr for Mode {
    type Err = BadMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Mode::Off),
            "on-change" | "on_change" => Ok(Mode::OnChange),
            "always" => Ok(Mode::Always),
            _ => Err(BadMode),
        }
    }
}

/// The fleet's binary settings (`CONFIG_BACKUP_BINARY*`).
#[derive(Debug, Clone)]
pub struct BinarySettings {
    pub mode: Mode,
    /// `on-change` takes a binary of an unchanged config once the newest is this old.
    pub max_age: Duration,
    /// Save, wait for the file and fetch it, together.
    pub timeout: Duration,
    /// Pause between two looks at the file's size.
    pub poll: Duration,
    pub max_size: u64,
}

impl Default for BinarySettings {
    fn default() -> Self {
        BinarySettings {
            mode: Mode::Off,
            max_age: Duration::from_secs(7 * 86_400),
            timeout: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            max_size: crate::device::binary::DEFAULT_MAX_BINARY,
        }
    }
}

/// What is known about a device's binaries when its export succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryFacts {
    /// The device's own mode, if it has one.
    pub device_mode: Option<Mode>,
    /// Its tenant's mode, if the tenant has one.
    pub tenant_mode: Option<Mode>,
    /// The newest stored binary: when, and the config hash it was taken with.
    pub newest: Option<(DateTime<Utc>, String)>,
    /// The binary step's backoff after failures.
    pub retry_after: Option<DateTime<Utc>>,
}

impl BinaryFacts {
    /// The mode that applies: the device's, else its tenant's, else the fleet's.
    pub fn mode(&self, fleet: Mode) -> Mode {
        self.device_mode.or(self.tenant_mode).unwrap_or(fleet)
    }
}

/// Why a binary is (not) taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Take(Why),
    Skip(WhyNot),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Always,
    /// No binary stored yet.
    First,
    /// The config differs from the newest binary's.
    Changed,
    /// The newest binary is older than the maximum age.
    Aged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhyNot {
    Off,
    /// The binary step failed recently; its backoff has not ended.
    BackingOff,
    Unchanged,
}

/// Whether to take a binary after an export whose normalized hash is `config_sha256`.
pub fn decide(
    fleet: Mode,
    facts: &BinaryFacts,
    config_sha256: &str,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Decision {
    let mode = facts.mode(fleet);
    if mode == Mode::Off {
        return Decision::Skip(WhyNot::Off);
    }
    if facts.retry_after.is_some_and(|t| t > now) {
        return Decision::Skip(WhyNot::BackingOff);
    }
    if mode == Mode::Always {
        return Decision::Take(Why::Always);
    }
    let Some((at, sha)) = &facts.newest else {
        return Decision::Take(Why::First);
    };
    if sha != config_sha256 {
        return Decision::Take(Why::Changed);
    }
    let age = (now - *at).to_std().unwrap_or(Duration::ZERO);
    if age >= max_age {
        return Decision::Take(Why::Aged);
    }
    Decision::Skip(WhyNot::Unchanged)
}

/// The file's name on the device: unique to the job, letters, digits and `-` only (it
/// goes on a RouterOS command line unquoted).
pub fn file_name(job_id: &str) -> String {
    let h = Sha256::digest(job_id.as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}{hex}", crate::device::binary::FILE_PREFIX)
}

/// A device's backup password: 32 letters and digits (~190 bits), generated once per
/// device and kept sealed.
pub fn generate_password() -> crate::Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let p: String = (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    crate::Secret::new(p)
}

/// The step's backoff after `failures` consecutive failures: the schedule's steps.
pub fn retry_after(failures: i32, now: DateTime<Utc>) -> DateTime<Utc> {
    let d = crate::schedule::backoff(failures);
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::minutes(5))
}

/// SHA-256 (hex) of a file's bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn off_takes_nothing_and_a_device_overrides_the_fleet() {
        let none = BinaryFacts::default();
        assert_eq!(
            decide(Mode::Off, &none, "a", t(0), WEEK),
            Decision::Skip(WhyNot::Off)
        );
        let dev_on = BinaryFacts {
            device_mode: Some(Mode::Always),
            ..Default::default()
        };
        assert_eq!(
            decide(Mode::Off, &dev_on, "a", t(0), WEEK),
            Decision::Take(Why::Always)
        );
        let dev_off = BinaryFacts {
            device_mode: Some(Mode::Off),
            ..Default::default()
        };
        assert_eq!(
            decide(Mode::Always, &dev_off, "a", t(0), WEEK),
            Decision::Skip(WhyNot::Off)
        );
        // The tenant's mode lies between the fleet's and the device's.
        let tenant_on = BinaryFacts {
            tenant_mode: Some(Mode::Always),
            ..Default::default()
        };
        assert_eq!(
            decide(Mode::Off, &tenant_on, "a", t(0), WEEK),
            Decision::Take(Why::Always)
        );
        let tenant_on_device_off = BinaryFacts {
            tenant_mode: Some(Mode::Always),
            device_mode: Some(Mode::Off),
            ..Default::default()
        };
        assert_eq!(
            decide(Mode::Always, &tenant_on_device_off, "a", t(0), WEEK),
            Decision::Skip(WhyNot::Off)
        );
    }

    #[test]
    fn on_change_takes_the_first_a_changed_and_an_aged_one_only() {
        let first = BinaryFacts::default();
        assert_eq!(
            decide(Mode::OnChange, &first, "a", t(0), WEEK),
            Decision::Take(Why::First)
        );
        let have = BinaryFacts {
            newest: Some((t(0), "a".into())),
            ..Default::default()
        };
        assert_eq!(
            decide(Mode::OnChange, &have, "a", t(60), WEEK),
            Decision::Skip(WhyNot::Unchanged)
        );
        assert_eq!(
            decide(Mode::OnChange, &have, "b", t(60), WEEK),
            Decision::Take(Why::Changed)
        );
        let week = WEEK.as_secs() as i64;
        assert_eq!(
            decide(Mode::OnChange, &have, "a", t(week - 1), WEEK),
            Decision::Skip(WhyNot::Unchanged)
        );
        assert_eq!(
            decide(Mode::OnChange, &have, "a", t(week), WEEK),
            Decision::Take(Why::Aged)
        );
        assert_eq!(
            decide(Mode::Always, &have, "a", t(60), WEEK),
            Decision::Take(Why::Always)
        );
    }

    #[test]
    fn the_step_backs_off_on_its_own() {
        let failing = BinaryFacts {
            retry_after: Some(t(300)),
            ..Default::default()
        };
        assert_eq!(
            decide(Mode::Always, &failing, "a", t(299), WEEK),
            Decision::Skip(WhyNot::BackingOff)
        );
        assert_eq!(
            decide(Mode::OnChange, &failing, "a", t(300), WEEK),
            Decision::Take(Why::First)
        );
        assert_eq!(retry_after(1, t(0)), t(300));
        assert_eq!(retry_after(3, t(0)), t(3600));
    }

    #[test]
    fn names_and_passwords_are_command_line_safe() {
        let a = file_name("backup:dev:1");
        assert_ne!(a, file_name("backup:dev:2"));
        assert_eq!(a, file_name("backup:dev:1"));
        assert!(a.starts_with(crate::device::binary::FILE_PREFIX), "{a}");
        assert!(
            a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'),
            "{a}"
        );
        let p = generate_password();
        assert_eq!(p.expose().len(), 32);
        assert!(p.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(p.expose(), generate_password().expose());
        assert_eq!("On-Change".parse::<Mode>(), Ok(Mode::OnChange));
        assert!("sometimes".parse::<Mode>().is_err());
    }
}
