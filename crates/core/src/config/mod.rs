//! Configuration from environment variables, with the seed's names where it has them.
//!
//! Every variable is declared once in [`VARS`] (name, default, meaning): that table is what
//! the README documents and what a test compares it against. Reading is strict: a value
//! that does not parse is a startup error naming the variable (and its value, unless the
//! variable holds a secret), never a silent fallback to the default. Command-line flags
//! override the environment; binaries apply them after [`Settings::from_env`].

use crate::device::{DEFAULT_MAX_OUTPUT, ExportOptions};
use crate::normalize::Version;
use crate::schedule::{ScheduleSettings, parse_cron};
use crate::secret::redact_url;
use crate::snapshot::PublisherConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod vars;
pub use vars::{VARS, Var};

/// A bad configuration value. Exit code 2 in the binaries.
#[derive(Debug, thiserror::Error)]
#[error("{var}{shown}: {reason}", shown = match value { Some(v) => format!("={v:?}"), None => String::new() })]
pub struct ConfigError {
    pub var: String,
    /// The offending value; `None` for secrets.
    pub value: Option<String>,
    pub reason: String,
}

/// Where variables come from: the process environment, or a map in tests.
pub struct Env {
    map: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            map: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn spec(name: &str) -> Var {
        VARS.iter()
            .copied()
            .find(|v| v.name == name)
            .unwrap_or(Var {
                name: "",
                default: "",
                seed: false,
                secret: false,
                help: "",
            })
    }

    /// Raw value, or the documented default. Empty counts as unset.
    pub fn raw(&self, name: &str) -> String {
        match self.map.get(name) {
            Some(v) if !v.trim().is_empty() => v.clone(),
            _ => Env::spec(name).default.to_string(),
        }
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|v| !v.trim().is_empty())
    }

    /// An error naming the variable; the value is shown only when it is not a secret.
    pub fn error(&self, name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        let spec = Env::spec(name);
        ConfigError {
            var: name.to_string(),
            value: if spec.secret {
                None
            } else {
                Some(value.to_string())
            },
            reason: reason.into(),
        }
    }

    /// Parse a value with `FromStr`.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.raw(name);
        raw.trim()
            .parse()
            .map_err(|e: T::Err| self.error(name, &raw, e.to_string()))
    }

    /// A whole number of seconds, at least `min`.
    pub fn seconds(&self, name: &str, min: u64) -> Result<Duration, ConfigError> {
        let raw = self.raw(name);
        let n: u64 = raw
            .trim()
            .parse()
            .map_err(|_| self.error(name, &raw, "expected a whole number of seconds"))?;
        if n < min {
            return Err(self.error(name, &raw, format!("must be at least {min}")));
        }
        Ok(Duration::from_secs(n))
    }

    /// A positive integer.
    pub fn positive(&self, name: &str) -> Result<u64, ConfigError> {
        let raw = self.raw(name);
        match raw.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(self.error(name, &raw, "expected a positive whole number")),
        }
    }

    pub fn boolean(&self, name: &str) -> Result<bool, ConfigError> {
        let raw = self.raw(name);
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(self.error(name, &raw, "expected true or false")),
        }
    }

    /// A URL with one of the given schemes.
    pub fn url(&self, name: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let raw = self.raw(name);
        let ok = schemes
            .iter()
            .any(|s| raw.starts_with(&format!("{s}://")) && raw.len() > s.len() + 3);
        if ok {
            Ok(raw)
        } else {
            Err(ConfigError {
                var: name.to_string(),
                value: Some(redact_url(&raw)),
                reason: format!("expected a URL starting with {}://", schemes.join("://, ")),
            })
        }
    }
}

/// Settings for running a backup (shared by the CLI and the worker).
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub export: ExportOptions,
    pub normalization: Version,
    /// Take the Go poller's Redis lock around each export (`ROSBACKUP_SEED_LOCK`).
    pub seed_lock: bool,
    /// Binary `.backup` files (`CONFIG_BACKUP_BINARY*`, issue #19).
    pub binary: crate::binary::BinarySettings,
    /// The adaptive export timeout's ceiling (`ROSBACKUP_EXPORT_TIMEOUT_MAX`); the fleet
    /// timeout is `export.command_timeout`.
    pub export_timeout_max: Duration,
    /// Connections a worker keeps per jump host (`ROSBACKUP_BASTION_CONNECTIONS`).
    pub bastion_connections: usize,
    /// How a worker groups its jobs' outcomes into statements (`ROSBACKUP_OUTCOME_*`).
    pub group_commit: GroupCommit,
    /// Most leases a worker takes in one statement (`ROSBACKUP_LEASE_BATCH`; 1: each
    /// on its own).
    pub lease_batch: usize,
}

/// Group commit of outcomes (issue #20, `worker::group`): at most `max` outcomes per
/// statement, the first waiting at most `linger` for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    pub max: usize,
    pub linger: Duration,
}

impl GroupCommit {
    /// `ROSBACKUP_OUTCOME_BATCH` (1 to 256) and `ROSBACKUP_OUTCOME_LINGER_MS` (0 to 1000).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const BATCH: &str = "ROSBACKUP_OUTCOME_BATCH";
        const LINGER: &str = "ROSBACKUP_OUTCOME_LINGER_MS";
        let max = env.positive(BATCH)?;
        if max > 256 {
            return Err(env.error(BATCH, &env.raw(BATCH), "must be at most 256"));
        }
        let raw = env.raw(LINGER);
        let linger: u64 = raw
            .trim()
            .parse()
            .map_err(|_| env.error(LINGER, &raw, "expected a whole number of milliseconds"))?;
        if linger > 1000 {
            return Err(env.error(LINGER, &raw, "must be at most 1000"));
        }
        Ok(GroupCommit {
            max: usize::try_from(max).unwrap_or(1),
            linger: Duration::from_millis(linger),
        })
    }
}

impl BackupSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_output = env.positive("CONFIG_BACKUP_MAX_OUTPUT_BYTES")?;
        Ok(BackupSettings {
            export: ExportOptions {
                connect_timeout: env.seconds("CONFIG_BACKUP_CONNECT_TIMEOUT", 1)?,
                command_timeout: env.seconds("CONFIG_BACKUP_COMMAND_TIMEOUT", 1)?,
                max_output: usize::try_from(max_output).unwrap_or(DEFAULT_MAX_OUTPUT),
                sensitive: env.boolean("CONFIG_BACKUP_EXPORT_SECRETS")?,
            },
            normalization: env.parse("NORMALIZATION_VERSION")?,
            seed_lock: env.boolean("ROSBACKUP_SEED_LOCK")?,
            bastion_connections: usize::try_from(env.positive("ROSBACKUP_BASTION_CONNECTIONS")?)
                .unwrap_or(crate::device::bastion::DEFAULT_CONNECTIONS),
            binary: crate::binary::BinarySettings {
                mode: {
                    let raw = env.raw("CONFIG_BACKUP_BINARY");
                    raw.parse().map_err(|e: crate::binary::BadMode| {
                        env.error("CONFIG_BACKUP_BINARY", &raw, e.to_string())
                    })?
                },
                max_age: env.seconds("CONFIG_BACKUP_BINARY_MAX_AGE", 1)?,
                timeout: env.seconds("CONFIG_BACKUP_BINARY_TIMEOUT", 1)?,
                ..crate::binary::BinarySettings::default()
            },
            export_timeout_max: export_timeouts(env)?.max,
            group_commit: GroupCommit::from_env(env)?,
            lease_batch: lease_batch(env)?,
        })
    }

    /// The fleet timeout and the ceiling, as [`crate::export_timeout::effective`] takes them.
    pub fn timeouts(&self) -> crate::export_timeout::TimeoutSettings {
        crate::export_timeout::TimeoutSettings {
            fleet: self.export.command_timeout,
            max: self.export_timeout_max,
        }
    }
}

/// `CONFIG_BACKUP_COMMAND_TIMEOUT` and `ROSBACKUP_EXPORT_TIMEOUT_MAX` (at least 1 s, at
/// most a day): what the worker decides a device's export timeout from, and what
/// `devices show` and the dashboard show it with.
pub fn export_timeouts(env: &Env) -> Result<crate::export_timeout::TimeoutSettings, ConfigError> {
    const MAX: &str = "ROSBACKUP_EXPORT_TIMEOUT_MAX";
    let max = env.seconds(MAX, 1)?;
    if max > Duration::from_secs(86_400) {
        return Err(env.error(MAX, &env.raw(MAX), "must be at most 86400 (a day)"));
    }
    Ok(crate::export_timeout::TimeoutSettings {
        fleet: env.seconds("CONFIG_BACKUP_COMMAND_TIMEOUT", 1)?,
        max,
    })
}

/// The fleet's scheduling rules: `CONFIG_BACKUP_INTERVAL` (at least 1 s),
/// `CONFIG_BACKUP_CRON` (optional; replaces the interval), and the first-backup jitter
/// `CONFIG_BACKUP_JITTER_MIN` ≤ `CONFIG_BACKUP_JITTER_MAX` (seconds, 0 allowed).
pub fn schedule_settings(env: &Env) -> Result<ScheduleSettings, ConfigError> {
    let interval = env.seconds("CONFIG_BACKUP_INTERVAL", 1)?;
    let jitter_min = env.seconds("CONFIG_BACKUP_JITTER_MIN", 0)?;
    let jitter_max = env.seconds("CONFIG_BACKUP_JITTER_MAX", 0)?;
    if jitter_min > jitter_max {
        return Err(env.error(
            "CONFIG_BACKUP_JITTER_MAX",
            &jitter_max.as_secs().to_string(),
            format!(
                "must be at least CONFIG_BACKUP_JITTER_MIN ({})",
                jitter_min.as_secs()
            ),
        ));
    }
    let cron = if env.is_set("CONFIG_BACKUP_CRON") {
        let raw = env.raw("CONFIG_BACKUP_CRON");
        let parsed =
            parse_cron(&raw).map_err(|e| env.error("CONFIG_BACKUP_CRON", &raw, e.reason))?;
        Some(Box::new(parsed))
    } else {
        None
    };
    Ok(ScheduleSettings {
        interval,
        cron,
        jitter_min,
        jitter_max,
    })
}

/// NATS publisher settings.
pub fn publisher_config(env: &Env) -> Result<PublisherConfig, ConfigError> {
    let prefix = env.raw("ROSBACKUP_SUBJECT_PREFIX");
    if prefix.is_empty()
        || prefix
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
    {
        return Err(env.error(
            "ROSBACKUP_SUBJECT_PREFIX",
            &prefix,
            "expected dot-separated NATS tokens without wildcards",
        ));
    }
    let stream = env.raw("ROSBACKUP_NATS_STREAM");
    let bucket = env.raw("ROSBACKUP_NATS_OBJECT_BUCKET");
    for (name, v) in [
        ("ROSBACKUP_NATS_STREAM", &stream),
        ("ROSBACKUP_NATS_OBJECT_BUCKET", &bucket),
    ] {
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(env.error(name, v, "expected letters, digits, '_' or '-'"));
        }
    }
    Ok(PublisherConfig {
        nats_url: env.url("NATS_URL", &["nats", "tls", "ws", "wss"])?,
        subject_prefix: prefix,
        stream_name: stream,
        stream_max_bytes: i64::try_from(env.positive("ROSBACKUP_NATS_STREAM_MAX_BYTES")?)
            .unwrap_or(i64::MAX),
        stream_max_age: env.seconds("ROSBACKUP_NATS_STREAM_MAX_AGE", 60)?,
        object_bucket: bucket,
        tls: tls_files(env)?,
        auth: nats_auth(env)?,
        encryption: snapshot_key(env)?,
        ..PublisherConfig::default()
    })
}

/// `NATS_CREDS_FILE` / `NATS_NKEY_FILE`, read and checked now: a missing, unreadable or
/// garbage file is an error naming its variable (never the file's content).
pub fn nats_auth(env: &Env) -> Result<crate::nats_auth::NatsAuth, ConfigError> {
    let path = |name: &str| {
        env.is_set(name)
            .then(|| PathBuf::from(env.raw(name).trim()))
    };
    let (creds, nkey) = (
        path(crate::nats_auth::CREDS_VAR),
        path(crate::nats_auth::NKEY_VAR),
    );
    crate::nats_auth::NatsAuth::from_files(creds.as_deref(), nkey.as_deref()).map_err(|e| {
        ConfigError {
            var: e.var.to_string(),
            value: Some(e.path.display().to_string()),
            reason: e.reason,
        }
    })
}

/// `ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY`: `None` when unset (plaintext events, the seed's
/// schema). Errors name the variable, never its value.
pub fn snapshot_key(
    env: &Env,
) -> Result<Option<crate::snapshot::crypto::SnapshotKey>, ConfigError> {
    const VAR: &str = "ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY";
    if !env.is_set(VAR) {
        return Ok(None);
    }
    crate::snapshot::crypto::SnapshotKey::from_base64(&env.raw(VAR))
        .map(Some)
        .map_err(|e| ConfigError {
            var: VAR.into(),
            value: None,
            reason: match e {
                crate::snapshot::crypto::SnapshotCryptoError::Key(k) => k.to_string(),
                other => other.to_string(),
            },
        })
}

/// Every key a snapshot reader (the archiver) can decrypt with: the current
/// `ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY` and the older `ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS`.
/// Empty when neither is set (then an encrypted event is not acked: see the archiver).
pub fn snapshot_keys(env: &Env) -> Result<crate::snapshot::crypto::SnapshotKeys, ConfigError> {
    const VAR: &str = "ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS";
    let mut keys = if env.is_set(VAR) {
        crate::snapshot::crypto::SnapshotKeys::parse_list(&env.raw(VAR)).map_err(|(n, e)| {
            ConfigError {
                var: VAR.into(),
                value: None,
                reason: format!("key {n}: {e}"),
            }
        })?
    } else {
        crate::snapshot::crypto::SnapshotKeys::new()
    };
    if let Some(k) = snapshot_key(env)? {
        keys.push(k);
    }
    Ok(keys)
}

/// Due jobs at which apalis-redis 1.0's `fetch_next.lua` fails every fetch (`unpack`).
pub const APALIS_DUE_LIMIT: u64 = 8_000;

/// Queue settings (worker and enqueuer must agree on these).
pub fn queue_config(env: &Env) -> Result<crate::queue::QueueConfig, ConfigError> {
    let name = env.raw("ROSBACKUP_QUEUE");
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '*' || c == '{' || c == '}')
    {
        return Err(env.error(
            "ROSBACKUP_QUEUE",
            &name,
            "expected a non-empty name without spaces, '*' or braces",
        ));
    }
    let manual_max = env.positive("ROSBACKUP_MANUAL_MAX")?;
    let cap = env.positive("ROSBACKUP_QUEUE_CAP")?;
    if manual_max.saturating_add(cap) >= APALIS_DUE_LIMIT {
        return Err(env.error(
            "ROSBACKUP_MANUAL_MAX",
            &env.raw("ROSBACKUP_MANUAL_MAX"),
            format!(
                "with ROSBACKUP_QUEUE_CAP={cap} it reaches {}; the two together must stay under \
                 {APALIS_DUE_LIMIT} due jobs, where apalis-redis fails every fetch",
                manual_max.saturating_add(cap)
            ),
        ));
    }
    Ok(crate::queue::QueueConfig {
        redis_url: env.url("REDIS_URL", &["redis", "rediss", "redis+unix", "unix"])?,
        name,
        heartbeat: env.seconds("ROSBACKUP_QUEUE_HEARTBEAT", 1)?,
        fetch_batch: fetch_batch(env)?,
        tls: tls_files(env)?,
        manual_max,
        manual_window: env.seconds("ROSBACKUP_MANUAL_JOIN_WINDOW", 0)?,
        ..crate::queue::QueueConfig::default()
    })
}

/// Jobs a worker takes per Redis fetch. One job per fetch keeps a small worker from taking
/// work another idle worker could run, but apalis sizes its lock/ack event channel from it
/// (4 × batch), and that channel limits a busy worker to a few hundred jobs a second; a
/// worker with many slots takes a few at a time (at most a sixteenth of its slots wait).
pub fn fetch_batch(env: &Env) -> Result<usize, ConfigError> {
    const VAR: &str = "ROSBACKUP_FETCH_BATCH";
    if env.is_set(VAR) {
        let n = env.positive(VAR)?;
        if n > 64 {
            return Err(env.error(VAR, &env.raw(VAR), "expected 1 to 64"));
        }
        return Ok(n as usize);
    }
    let concurrency = env.positive("CONFIG_BACKUP_MAX_CONCURRENT")? as usize;
    Ok((concurrency / 16).clamp(1, 16))
}

/// `ROSBACKUP_LEASE_BATCH`: 1 to 64 leases per statement (`worker::leases`).
pub fn lease_batch(env: &Env) -> Result<usize, ConfigError> {
    const VAR: &str = "ROSBACKUP_LEASE_BATCH";
    let n = env.positive(VAR)?;
    if n > 64 {
        return Err(env.error(VAR, &env.raw(VAR), "must be at most 64"));
    }
    Ok(usize::try_from(n).unwrap_or(1))
}

/// TLS files for Redis and NATS (`ROSBACKUP_TLS_*`), checked now so a bad path is a
/// configuration error naming its variable.
pub fn tls_files(env: &Env) -> Result<crate::tls::TlsFiles, ConfigError> {
    let path = |name: &str| {
        env.is_set(name)
            .then(|| PathBuf::from(env.raw(name).trim()))
    };
    let files = crate::tls::TlsFiles {
        ca_file: path(crate::tls::CA_VAR),
        cert_file: path(crate::tls::CERT_VAR),
        key_file: path(crate::tls::KEY_VAR),
    };
    files.check().map_err(|e| ConfigError {
        var: e.var.to_string(),
        value: (!e.path.as_os_str().is_empty()).then(|| e.path.display().to_string()),
        reason: e.reason,
    })?;
    Ok(files)
}

/// The archive key (`ARCHIVE_ENCRYPTION_KEY`), required by the archiver and
/// `rosbackup history`. Errors name the variable, never its value.
pub fn archive_key(env: &Env) -> Result<crate::credentials::CredentialKey, ConfigError> {
    key(env, "ARCHIVE_ENCRYPTION_KEY")
}

/// A 32-byte AES key from the base64 variable `var` (`CREDENTIAL_ENCRYPTION_KEY`,
/// `NEW_CREDENTIAL_ENCRYPTION_KEY`, `ARCHIVE_ENCRYPTION_KEY`). Errors name the variable,
/// say how to make a key (or convert a hex one) and never show the value.
pub fn key(env: &Env, var: &str) -> Result<crate::credentials::CredentialKey, ConfigError> {
    crate::credentials::CredentialKey::from_base64(&env.raw(var)).map_err(|e| ConfigError {
        var: var.into(),
        value: None,
        reason: e.reason(),
    })
}

/// A listening address (`host:port`; port 0 picks a free one).
pub fn listen_addr(env: &Env, name: &str) -> Result<String, ConfigError> {
    let v = env.raw(name);
    v.parse::<std::net::SocketAddr>()
        .map(|_| v.clone())
        .map_err(|_| {
            env.error(
                name,
                &v,
                "expected host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:0",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let env = Env::from_pairs([]);
        let b = BackupSettings::from_env(&env).unwrap();
        assert_eq!(b.export.command_timeout, Duration::from_secs(60));
        assert_eq!(b.normalization, Version::V2);
        assert!(b.export.sensitive);
        assert_eq!(b.binary.mode, crate::binary::Mode::Off);
        assert_eq!(b.binary.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(
            b.timeouts(),
            crate::export_timeout::TimeoutSettings {
                fleet: Duration::from_secs(60),
                max: Duration::from_secs(600)
            }
        );
        let p = publisher_config(&env).unwrap();
        assert_eq!(p.subject_prefix, "config.snapshot");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, val) in [
            ("CONFIG_BACKUP_COMMAND_TIMEOUT", "sixty"),
            ("CONFIG_BACKUP_COMMAND_TIMEOUT", "0"),
            ("NORMALIZATION_VERSION", "3"),
            ("CONFIG_BACKUP_EXPORT_SECRETS", "maybe"),
            ("CONFIG_BACKUP_MAX_OUTPUT_BYTES", "-1"),
            ("CONFIG_BACKUP_BINARY", "sometimes"),
            ("CONFIG_BACKUP_BINARY_MAX_AGE", "0"),
            ("ROSBACKUP_EXPORT_TIMEOUT_MAX", "0"),
            ("ROSBACKUP_EXPORT_TIMEOUT_MAX", "86401"),
            ("ROSBACKUP_EXPORT_TIMEOUT_MAX", "ten minutes"),
        ] {
            let env = Env::from_pairs([(var, val)]);
            let e = BackupSettings::from_env(&env).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().starts_with(var), "{e}");
        }
        let env = Env::from_pairs([("NATS_URL", "http://u:secretpw@x")]);
        let e = publisher_config(&env).unwrap_err();
        assert_eq!(e.var, "NATS_URL");
        assert!(!e.to_string().contains("secretpw"), "{e}");
        let env = Env::from_pairs([("ROSBACKUP_SUBJECT_PREFIX", "a.>")]);
        assert_eq!(
            publisher_config(&env).unwrap_err().var,
            "ROSBACKUP_SUBJECT_PREFIX"
        );
    }

    #[test]
    fn fetch_batch_follows_the_slots_unless_set_and_rejects_bad_values() {
        let batch = |pairs: &[(&str, &str)]| fetch_batch(&Env::from_pairs(pairs.iter().copied()));
        // Default 10 slots: one job per fetch, as before.
        assert_eq!(batch(&[]).unwrap(), 1);
        assert_eq!(
            batch(&[("CONFIG_BACKUP_MAX_CONCURRENT", "100")]).unwrap(),
            6
        );
        assert_eq!(
            batch(&[("CONFIG_BACKUP_MAX_CONCURRENT", "5000")]).unwrap(),
            16
        );
        assert_eq!(
            batch(&[
                ("CONFIG_BACKUP_MAX_CONCURRENT", "100"),
                ("ROSBACKUP_FETCH_BATCH", "64")
            ])
            .unwrap(),
            64
        );
        for bad in ["0", "65", "many", "-1"] {
            let e = batch(&[("ROSBACKUP_FETCH_BATCH", bad)]).unwrap_err();
            assert_eq!(e.var, "ROSBACKUP_FETCH_BATCH", "{bad}");
        }
        let q = queue_config(&Env::from_pairs([("CONFIG_BACKUP_MAX_CONCURRENT", "1000")])).unwrap();
        assert_eq!(q.fetch_batch, 16);
        assert_eq!(q.apalis().batch_size, 16);
    }

    #[test]
    fn lease_batch_defaults_and_rejects_bad_values() {
        let b = |pairs: &[(&str, &str)]| lease_batch(&Env::from_pairs(pairs.iter().copied()));
        assert_eq!(b(&[]).unwrap(), 16);
        assert_eq!(b(&[("ROSBACKUP_LEASE_BATCH", "1")]).unwrap(), 1);
        assert_eq!(b(&[("ROSBACKUP_LEASE_BATCH", " 64 ")]).unwrap(), 64);
        // Empty is unset, as for every variable.
        assert_eq!(b(&[("ROSBACKUP_LEASE_BATCH", " ")]).unwrap(), 16);
        for bad in ["0", "65", "many", "-1"] {
            let e = b(&[("ROSBACKUP_LEASE_BATCH", bad)]).unwrap_err();
            assert_eq!(e.var, "ROSBACKUP_LEASE_BATCH", "{bad}");
        }
    }

    #[test]
    fn group_commit_defaults_and_rejects_bad_values() {
        let g =
            |pairs: &[(&str, &str)]| GroupCommit::from_env(&Env::from_pairs(pairs.iter().copied()));
        assert_eq!(
            g(&[]).unwrap(),
            GroupCommit {
                max: 32,
                linger: Duration::from_millis(5)
            }
        );
        let off = g(&[
            ("ROSBACKUP_OUTCOME_BATCH", "1"),
            ("ROSBACKUP_OUTCOME_LINGER_MS", "0"),
        ])
        .unwrap();
        assert_eq!((off.max, off.linger), (1, Duration::ZERO));
        for (var, bad) in [
            ("ROSBACKUP_OUTCOME_BATCH", "0"),
            ("ROSBACKUP_OUTCOME_BATCH", "257"),
            ("ROSBACKUP_OUTCOME_BATCH", "lots"),
            ("ROSBACKUP_OUTCOME_LINGER_MS", "-1"),
            ("ROSBACKUP_OUTCOME_LINGER_MS", "1001"),
            ("ROSBACKUP_OUTCOME_LINGER_MS", "5ms"),
        ] {
            let e = g(&[(var, bad)]).unwrap_err();
            assert_eq!(e.var, var, "{bad}");
            assert_eq!(e.value.as_deref(), Some(bad));
        }
    }

    #[test]
    fn manual_bounds_default_and_stay_under_apalis_limit() {
        let q = queue_config(&Env::from_pairs([])).unwrap();
        assert_eq!(q.manual_max, 500);
        assert_eq!(q.manual_window, Duration::from_secs(10));
        let q = queue_config(&Env::from_pairs([
            ("ROSBACKUP_MANUAL_MAX", "5999"),
            ("ROSBACKUP_MANUAL_JOIN_WINDOW", "0"),
        ]))
        .unwrap();
        assert_eq!((q.manual_max, q.manual_window), (5999, Duration::ZERO));
        let e = queue_config(&Env::from_pairs([("ROSBACKUP_MANUAL_MAX", "6000")])).unwrap_err();
        assert_eq!(e.var, "ROSBACKUP_MANUAL_MAX");
        assert!(
            e.reason.contains("ROSBACKUP_QUEUE_CAP=2000"),
            "{}",
            e.reason
        );
        for (var, bad) in [
            ("ROSBACKUP_MANUAL_MAX", "0"),
            ("ROSBACKUP_MANUAL_JOIN_WINDOW", "soon"),
        ] {
            let e = queue_config(&Env::from_pairs([(var, bad)])).unwrap_err();
            assert_eq!(e.var, var, "{bad}");
        }
    }

    #[test]
    fn schedule_settings_defaults_and_errors() {
        let s = schedule_settings(&Env::from_pairs([])).unwrap();
        assert_eq!(s.interval, Duration::from_secs(21_600));
        assert!(s.cron.is_none());
        assert_eq!(s.jitter_min, Duration::from_secs(30));
        assert_eq!(s.jitter_max, Duration::from_secs(300));

        let s = schedule_settings(&Env::from_pairs([
            ("CONFIG_BACKUP_INTERVAL", "3600"),
            ("CONFIG_BACKUP_CRON", "30 2 * * *"),
            ("CONFIG_BACKUP_JITTER_MIN", "0"),
            ("CONFIG_BACKUP_JITTER_MAX", "0"),
        ]))
        .unwrap();
        assert_eq!(s.interval, Duration::from_secs(3600));
        assert!(s.cron.is_some());
        assert_eq!(s.jitter_max, Duration::ZERO);

        for (pairs, var) in [
            (
                vec![
                    ("CONFIG_BACKUP_JITTER_MIN", "60"),
                    ("CONFIG_BACKUP_JITTER_MAX", "10"),
                ],
                "CONFIG_BACKUP_JITTER_MAX",
            ),
            (
                vec![("CONFIG_BACKUP_JITTER_MIN", "500")],
                "CONFIG_BACKUP_JITTER_MAX",
            ),
            (
                vec![("CONFIG_BACKUP_JITTER_MIN", "-1")],
                "CONFIG_BACKUP_JITTER_MIN",
            ),
            (
                vec![("CONFIG_BACKUP_INTERVAL", "0")],
                "CONFIG_BACKUP_INTERVAL",
            ),
            (
                vec![("CONFIG_BACKUP_INTERVAL", "6h")],
                "CONFIG_BACKUP_INTERVAL",
            ),
            (vec![("CONFIG_BACKUP_CRON", "* * *")], "CONFIG_BACKUP_CRON"),
            (
                vec![("CONFIG_BACKUP_CRON", "99 * * * *")],
                "CONFIG_BACKUP_CRON",
            ),
        ] {
            let e = schedule_settings(&Env::from_pairs(pairs.clone())).unwrap_err();
            assert_eq!(e.var, var, "{pairs:?}: {e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
        let e = schedule_settings(&Env::from_pairs([("CONFIG_BACKUP_CRON", "* * *")])).unwrap_err();
        assert!(e.to_string().contains("found 3"), "{e}");
    }

    #[test]
    fn snapshot_keys_are_optional_and_never_echoed() {
        use crate::snapshot::crypto::SnapshotKey;
        let env = Env::from_pairs([]);
        assert!(publisher_config(&env).unwrap().encryption.is_none());
        assert!(snapshot_keys(&env).unwrap().is_empty());
        let (cur, old) = (
            SnapshotKey::generate_base64(),
            SnapshotKey::generate_base64(),
        );
        let env = Env::from_pairs([
            ("ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY", cur.as_str()),
            ("ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS", old.as_str()),
        ]);
        let cur_id = SnapshotKey::from_base64(&cur).unwrap().id().to_string();
        let old_id = SnapshotKey::from_base64(&old).unwrap().id().to_string();
        let p = publisher_config(&env).unwrap();
        assert_eq!(p.encryption.unwrap().id(), cur_id);
        let keys = snapshot_keys(&env).unwrap();
        assert!(keys.get(&cur_id).is_some() && keys.get(&old_id).is_some());
        let e = publisher_config(&Env::from_pairs([(
            "ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY",
            "c2hvcnQ=",
        )]))
        .unwrap_err();
        assert_eq!(e.var, "ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY");
        assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
        let bad = format!("{old},c2hvcnQ=");
        let e = snapshot_keys(&Env::from_pairs([(
            "ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS",
            bad.as_str(),
        )]))
        .unwrap_err();
        assert_eq!(e.var, "ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS");
        assert!(e.to_string().contains("key 2"), "{e}");
        assert!(
            !e.to_string().contains(&old) && !e.to_string().contains("c2hvcnQ"),
            "{e}"
        );
    }

    #[test]
    fn every_var_is_documented_once() {
        let mut names: Vec<_> = VARS.iter().map(|v| v.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
