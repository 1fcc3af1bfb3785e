//! RouterOS fleet simulator: a russh SSH server playing many MikroTik devices.
//!
//! Why it exists: the backup pipeline must be exercised against thousands of routers
//! that behave like real RouterOS — CRLF output over exec channels, version-specific
//! export headers and flags (`show-sensitive` is an error on 6.x), legacy-only SSH
//! algorithms, runtime annotations that come and go — and against the ways real fleets
//! fail (wrong passwords, rotated host keys, refused/silent/stalled/dropped connections,
//! slow or huge exports, garbage answers, NUL and non-UTF-8 bytes, a line that never
//! ends). Real devices cannot be had by the thousand, so the simulator plays them, one
//! listener per device, deterministically from a seed so a restart reproduces the same
//! fleet, credentials and host keys.
//!
//! Layout: [`faults`] (fault modes and the spec parser), [`config_gen`] (our own config
//! generator), [`render`] (RouterOS text conventions), [`keys`] (deterministic host
//! keys), `server` (listeners, SSH handler, command answers), `shell` (the interactive
//! console that netmiko-style clients drive), `cli` (`rosbackup sim`).
//!
//! Configs and passwords are never logged.

pub mod config_gen;
pub mod faults;
pub mod keys;
pub mod render;

mod cli;
mod console;
pub mod files;
mod handler;
mod kill;
mod server;
mod shell;
mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use cli::{SimArgs, run_cli};
pub use faults::{Fault, FaultParseError, FaultSpec, FaultTiming};

/// Simulator configuration. See the CLI flags in [`SimArgs`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub devices: usize,
    /// Device `i` listens on `listen_base + i` (unless `one_address`).
    pub listen_base: Ipv4Addr,
    /// 0 = ephemeral ports.
    pub port: u16,
    /// All devices on `listen_base`, consecutive ports from `port`.
    pub one_address: bool,
    pub faults: FaultSpec,
    /// Serve real export files (`*.rsc`, cycled over devices) instead of generated configs.
    pub configs_dir: Option<PathBuf>,
    /// Force the generated config size (bytes of plain `/export`, ±5%).
    pub config_size: Option<usize>,
    /// Offer only RouterOS's SSH algorithms (and an RSA host key).
    pub routeros_algorithms: bool,
    /// Delay before every export's output starts.
    pub export_delay: Duration,
    /// Bytes streamed by the `huge` fault.
    pub huge_bytes: u64,
    pub timing: FaultTiming,
    pub seed: u64,
    pub inventory: Option<PathBuf>,
    /// Host name written to the inventory instead of each device's listen address (a
    /// simulator in a container, reached by its service name).
    pub inventory_host: Option<String>,
    /// `backup_interval_seconds` written for every device in the inventory.
    pub inventory_interval: Option<u32>,
    pub export_dir: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    /// Append one JSON line per completed export here ([`SessionRecord`]).
    pub session_log: Option<PathBuf>,
    /// One login (user, password) for every device instead of one each: a fleet that
    /// shares a backup account (credential profiles).
    pub shared_login: Option<(String, String)>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            devices: 1,
            listen_base: Ipv4Addr::new(127, 0, 1, 1),
            port: 2222,
            one_address: false,
            faults: FaultSpec::default(),
            configs_dir: None,
            config_size: None,
            routeros_algorithms: false,
            export_delay: Duration::ZERO,
            huge_bytes: 40 * 1024 * 1024,
            timing: FaultTiming::default(),
            seed: 1,
            inventory: None,
            inventory_host: None,
            inventory_interval: None,
            export_dir: None,
            stats: None,
            session_log: None,
            shared_login: None,
        }
    }
}

/// One simulated device as listed in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    pub id: uuid::Uuid,
    pub tenant_id: uuid::Uuid,
    pub name: String,
    pub host: IpAddr,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub routeros_version: String,
    pub fault: Option<Fault>,
    /// The user key the device authorizes (`keys` and `key-only` faults).
    pub user_key: Option<rosbackup_core::userkey::UserKey>,
}

impl SimDevice {
    /// The device as the device store takes it (its inventory row, enabled, the fleet's
    /// schedule; the version left for the worker to learn).
    pub fn new_device(&self) -> rosbackup_core::store::NewDevice {
        rosbackup_core::store::NewDevice {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name.clone(),
            host: self.host.to_string(),
            ssh_port: self.port,
            username: self.username.clone(),
            password: rosbackup_core::Secret::new(self.password.clone()),
            ssh_key: self.user_key.clone(),
            credential_profile: None,
            keep_ssh_key: false,
            keep_credential_profile: false,
            jump: None,
            routeros_version: None,
            enabled: true,
            backup_interval_seconds: None,
            backup_cron: None,
            export_timeout_seconds: None,
        }
    }
}

/// Per-device counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceStats {
    /// TCP connections accepted (each one an SSH session attempt).
    pub sessions: u64,
    /// Complete healthy exports written to a client.
    pub exports: u64,
    /// Highest number of simultaneously open sessions.
    pub max_concurrent: u64,
    /// Bytes of command output handed to clients (the channel waits for the client's
    /// window, so this is what a client let through, not what a fault could produce).
    #[serde(default)]
    pub bytes_sent: u64,
}

/// One completed export as the simulator served it (`--session-log`, a JSON line each).
///
/// Why: the stats file only counts exports; an audit that wants to match every snapshot
/// on NATS and every run in the history to what a device actually sent needs each
/// session — when, how many bytes, and the hash the backup should carry. The raw hash
/// differs every time (the export header has a timestamp); `normalized_sha256` is what
/// rosbackup's default normalization (v2) of these bytes hashes to, i.e. the
/// `sha256_hash` a correct backup of this session publishes. No config text is logged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub device_id: uuid::Uuid,
    /// When the export command arrived.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When the last byte, exit status and EOF were written.
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub bytes: u64,
    /// SHA-256 of exactly the bytes sent.
    pub sha256: String,
    /// SHA-256 of the bytes normalized with [`rosbackup_core::normalize::Version::V2`].
    pub normalized_sha256: String,
}

impl SessionRecord {
    pub fn new(
        device_id: uuid::Uuid,
        started_at: chrono::DateTime<chrono::Utc>,
        bytes: &[u8],
    ) -> SessionRecord {
        use sha2::Digest;
        let (_, normalized_sha256) = rosbackup_core::normalize::normalize_and_hash(
            bytes,
            rosbackup_core::normalize::Version::V2,
        );
        SessionRecord {
            device_id,
            started_at,
            finished_at: chrono::Utc::now(),
            bytes: bytes.len() as u64,
            sha256: format!("{:x}", sha2::Sha256::digest(bytes)),
            normalized_sha256,
        }
    }
}

/// Read a session log. A torn last line (the simulator was killed mid-write) is skipped;
/// any other bad line is an error naming its line number.
pub fn read_session_log(path: &std::path::Path) -> Result<Vec<SessionRecord>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
        context: format!("reading the session log {}", path.display()),
        source,
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(SimError::Config(format!(
                    "session log {} line {}: {e}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok(out)
}

/// Simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Faults(#[from] FaultParseError),
    #[error("host key generation failed: {0}")]
    Key(String),
}

/// A running simulated fleet.
pub struct Simulator {
    shared: Arc<state::Shared>,
    runtime: state::Runtime,
}

impl Simulator {
    /// Binds every device, writes the inventory, then returns.
    pub async fn start(cfg: SimConfig) -> Result<Simulator, SimError> {
        let (shared, runtime) = server::start(cfg).await?;
        Ok(Simulator { shared, runtime })
    }

    pub fn devices(&self) -> &[SimDevice] {
        &self.shared.devices
    }

    pub fn stats(&self) -> BTreeMap<uuid::Uuid, DeviceStats> {
        self.shared.stats()
    }

    /// Exact bytes of the last full export generated for the device (for `stall`,
    /// `drop` and `slow` devices: the full output they were about to send).
    pub fn last_export(&self, id: uuid::Uuid) -> Option<Vec<u8>> {
        self.shared.last_export(id)
    }

    /// `SHA256:…` fingerprint of the host key the device presents (for `hostkey`: the
    /// most recently presented one).
    pub fn host_key_fingerprint(&self, id: uuid::Uuid) -> Option<String> {
        self.shared.fingerprint(id)
    }

    /// The names and sizes of the files in the device's `/file` store right now.
    pub fn files(&self, id: uuid::Uuid) -> Vec<(String, u64)> {
        let Some(&i) = self.shared.by_id.get(&id) else {
            return Vec::new();
        };
        let store = self.shared.rt[i].files.lock().expect("files poisoned");
        store
            .files
            .iter()
            .map(|(n, f)| (n.clone(), f.data.len() as u64))
            .collect()
    }

    /// What the device's last `/system backup save` wrote (name, bytes, encryption and
    /// the password it was given), for tests comparing what a client fetched.
    pub fn last_backup(&self, id: uuid::Uuid) -> Option<files::SavedBackup> {
        let i = *self.shared.by_id.get(&id)?;
        self.shared.rt[i]
            .last_backup
            .lock()
            .expect("last_backup poisoned")
            .clone()
    }

    /// Stops listeners and sessions and writes the stats file one last time.
    pub async fn shutdown(self) {
        server::shutdown(self.shared, self.runtime).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_log_reads_back_and_a_torn_last_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("rb-sessionlog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("sessions.jsonl");
        let id = uuid::Uuid::from_u128(7);
        let text = b"# 2025-01-01 00:00:00 by RouterOS 7.16\r\n/system identity\r\nset name=r1\r\n";
        let r = SessionRecord::new(id, chrono::Utc::now(), text);
        assert_eq!(r.bytes, text.len() as u64);
        assert_eq!(
            r.normalized_sha256,
            rosbackup_core::normalize::normalize_and_hash(
                text,
                rosbackup_core::normalize::Version::V2
            )
            .1
        );
        assert_ne!(r.sha256, r.normalized_sha256);
        let line = serde_json::to_string(&r).expect("json");
        std::fs::write(&path, format!("{line}\n{line}\n{{\"device_id\":")).expect("write");
        assert_eq!(
            read_session_log(&path).expect("read"),
            vec![r.clone(), r.clone()]
        );
        // A bad line in the middle is an error with its line number.
        std::fs::write(&path, format!("{line}\nnot json\n{line}\n")).expect("write");
        let e = read_session_log(&path).expect_err("bad line").to_string();
        assert!(e.contains("line 2"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
