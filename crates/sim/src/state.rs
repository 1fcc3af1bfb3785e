//! The simulator's shared state: every device's runtime (config source, counters, the
//! last export, SSH configs) and what the whole fleet shares. The bottom of the simulator:
//! the console answers, the interactive shell and the listeners all read it; it reads none
//! of them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::config_gen::{self, Model, RenderOpts};
use super::faults::Fault;
use super::kill::Kill;
use super::render;
use super::{DeviceStats, SimConfig, SimDevice};

pub(crate) const V7_VERSIONS: &[&str] = &[
    "7.15.3", "7.16.2", "7.12.1", "7.18.2", "7.8", "7.14.3", "7.19.4", "7.11.2", "7.20.1", "7.6",
];
pub(crate) const V6_VERSIONS: &[&str] = &["6.49.10", "6.49.7", "6.48.6"];
pub(crate) const TENANTS: usize = 3;
pub(crate) const MODEL_CACHE_MAX: usize = 2048;
/// Rotating RSA keys for `hostkey` devices in `routeros_algorithms` mode (RSA keygen is
/// too slow to make a fresh one per connection).
pub(crate) const RSA_ROTATION: u64 = 3;

/// A real export file served by `--configs DIR` devices.
pub(crate) struct ConfigFile {
    pub(crate) version: String,
    /// Lines after the original header (or all lines if there was none), no line ends.
    pub(crate) lines: Vec<String>,
    pub(crate) board: String,
}

pub(crate) enum Source {
    Generated { target: usize },
    File(Arc<ConfigFile>),
}

// The device's `/file` store and what `/system backup save` wrote: data only here; the
// behaviour (SFTP, `/file` commands, backup bytes) is in `files`.
/// How a backup file is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    None,
    Rc4,
    AesSha256,
}

/// One file in a device's store.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub data: Bytes,
    pub created: chrono::DateTime<chrono::Utc>,
}

/// A device's files, by name (RouterOS has no directories for backups at the root).
#[derive(Debug, Default)]
pub struct FileStore {
    pub(crate) files: BTreeMap<String, StoredFile>,
}

/// What the last `/system backup save` wrote (for tests that compare what was fetched).
#[derive(Debug, Clone)]
pub struct SavedBackup {
    pub name: String,
    pub data: Vec<u8>,
    pub encryption: Encryption,
    pub password: Option<String>,
}

pub(crate) struct DeviceRt {
    pub(crate) index: usize,
    pub(crate) source: Source,
    pub(crate) board: String,
    pub(crate) sessions: AtomicU64,
    pub(crate) exports: AtomicU64,
    pub(crate) current: AtomicU64,
    pub(crate) max_concurrent: AtomicU64,
    pub(crate) change_counter: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) last_export: Mutex<Option<Bytes>>,
    /// The device's `/file` store (backups saved by `/system backup save`).
    pub(crate) files: Mutex<FileStore>,
    /// What the last `/system backup save` wrote.
    pub(crate) last_backup: Mutex<Option<SavedBackup>>,
    pub(crate) fingerprint: Mutex<String>,
    /// SSH config for devices whose host key never changes.
    pub(crate) ssh: Option<Arc<russh::server::Config>>,
    /// Pre-generated rotating RSA configs for `hostkey` + `routeros_algorithms`.
    pub(crate) rsa_rotation: Vec<(Arc<russh::server::Config>, String)>,
    pub(crate) started: Instant,
}

pub(crate) struct Shared {
    pub(crate) devices: Vec<SimDevice>,
    pub(crate) rt: Vec<DeviceRt>,
    pub(crate) by_id: HashMap<uuid::Uuid, usize>,
    pub(crate) cfg: SimConfig,
    pub(crate) models: Mutex<HashMap<usize, Arc<Model>>>,
    pub(crate) conns: Mutex<HashMap<u64, Arc<Kill>>>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) live: AtomicUsize,
    pub(crate) live_notify: Notify,
    pub(crate) shutting_down: AtomicBool,
    /// `--session-log`: one JSON line per completed export (see [`super::SessionRecord`]).
    pub(crate) session_log: Option<Mutex<std::io::LineWriter<std::fs::File>>>,
}

pub(crate) struct Runtime {
    pub(crate) shutdown_tx: watch::Sender<bool>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Shared {
    pub(crate) fn stats(&self) -> BTreeMap<uuid::Uuid, DeviceStats> {
        self.devices
            .iter()
            .zip(&self.rt)
            .map(|(d, rt)| {
                (
                    d.id,
                    DeviceStats {
                        sessions: rt.sessions.load(Ordering::Relaxed),
                        exports: rt.exports.load(Ordering::Relaxed),
                        max_concurrent: rt.max_concurrent.load(Ordering::Relaxed),
                        bytes_sent: rt.bytes_sent.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    pub(crate) fn last_export(&self, id: uuid::Uuid) -> Option<Vec<u8>> {
        let i = *self.by_id.get(&id)?;
        let g = self.rt[i].last_export.lock().expect("last_export poisoned");
        g.as_ref().map(|b| b.to_vec())
    }

    pub(crate) fn fingerprint(&self, id: uuid::Uuid) -> Option<String> {
        let i = *self.by_id.get(&id)?;
        if self.devices[i].fault == Some(Fault::Refuse) {
            return None;
        }
        Some(
            self.rt[i]
                .fingerprint
                .lock()
                .expect("fingerprint poisoned")
                .clone(),
        )
    }

    pub(crate) fn model(&self, idx: usize, target: usize) -> Arc<Model> {
        if let Some(m) = self.models.lock().expect("models poisoned").get(&idx) {
            return m.clone();
        }
        let d = &self.devices[idx];
        let m = Arc::new(config_gen::generate(
            self.cfg.seed,
            idx,
            &d.routeros_version,
            &d.name,
            target,
        ));
        let mut cache = self.models.lock().expect("models poisoned");
        if cache.len() >= MODEL_CACHE_MAX
            && let Some(k) = cache.keys().next().copied()
        {
            cache.remove(&k);
        }
        cache.insert(idx, m.clone());
        m
    }

    /// Builds a full export (fresh header) for device `idx`.
    pub(crate) fn export(&self, idx: usize, opts: RenderOpts) -> Bytes {
        let d = &self.devices[idx];
        let rt = &self.rt[idx];
        let header = render::export_header(&d.routeros_version, chrono::Utc::now());
        let change = (d.fault == Some(Fault::Change))
            .then(|| rt.change_counter.fetch_add(1, Ordering::Relaxed) + 1);
        let (meta, mut body): (Vec<String>, Vec<String>) = match &rt.source {
            Source::Generated { target } => {
                let m = self.model(idx, *target);
                (
                    config_gen::model_meta(&m),
                    config_gen::render_body(&m, opts, change),
                )
            }
            Source::File(f) => {
                let mut body = f.lines.clone();
                if let Some(n) = change {
                    body.push(format!(
                        "/system note set note=\"Managed by NOC. Change counter {n}.\""
                    ));
                }
                (Vec::new(), body)
            }
        };
        if d.fault == Some(Fault::Annotate) {
            let mut rng = rand::thread_rng();
            let first_section = body.iter().position(|l| l.starts_with('/'));
            if let Some(first) = first_section {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(first + 1..=body.len());
                    let a = render::ANNOTATIONS[rng.gen_range(0..render::ANNOTATIONS.len())];
                    body.insert(at, a.to_string());
                }
            }
        }
        let mut out = Vec::with_capacity(body.iter().map(|b| b.len() + 2).sum::<usize>() + 256);
        out.extend_from_slice(header.as_bytes());
        // `nul` and `binary` put bytes a parser may choke on after the version token:
        // what the device says about itself must not reach the store unchecked.
        match d.fault {
            Some(Fault::Nul) => out.extend_from_slice(b"\0\0"),
            Some(Fault::Binary) => out.extend_from_slice(b"\xff\xfe"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        for l in meta.iter().chain(body.iter()) {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match d.fault {
            Some(Fault::Nul) => out.extend_from_slice(render::NUL_LINES),
            Some(Fault::Binary) => out.extend_from_slice(render::NON_UTF8_LINES),
            _ => {}
        }
        Bytes::from(out)
    }
}

/// Writes `path` via a temporary file in the same directory and a rename, readable by its
/// owner only: what the simulator writes holds the devices' passwords (the inventory) or
/// their configurations (export copies).
pub(crate) async fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // A name of its own per write: two writes of one path (two exports of a device)
    // never share a temporary file, and `create_new` never follows one placed there.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.tmp{}.{n}", std::process::id()));
    let written = async {
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .await?;
        f.write_all(data).await?;
        f.flush().await?;
        drop(f);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}
