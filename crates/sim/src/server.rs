//! Listeners: starting and stopping the fleet, one accept task per device, and a russh
//! session per connection, served by the handler in `handler` (authentication, exec and
//! shell channels).
//!
//! Each device is one TCP listener with its own accept task; each accepted connection
//! runs as a russh session via `run_stream` over a [`KillStream`] so faults and shutdown
//! can cut it abruptly. Output is written through the channel's write half, which waits
//! for the client's window, so a 40 MiB `huge` export is produced lazily and exit status
//! always follows the last data byte.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::{MethodKind, MethodSet, Preferred, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};

use super::config_gen::{self, alnum, rng_for};
use super::faults::Fault;
use super::handler::Conn;
use super::keys;
use super::kill::{Kill, KillStream};
use super::render;
use super::state::*;
use super::{DeviceStats, SimConfig, SimDevice, SimError};

fn nofile_raise() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                tracing::warn!("could not raise RLIMIT_NOFILE");
            }
        }
    }
}

fn read_config_files(dir: &Path) -> Result<Vec<Arc<ConfigFile>>, SimError> {
    let io = |source| SimError::Io {
        context: format!("cannot read configs dir {}", dir.display()),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rsc") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(SimError::Config(format!(
            "no *.rsc files in {}",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    for p in paths {
        let raw = std::fs::read(&p).map_err(|source| SimError::Io {
            context: format!("cannot read {}", p.display()),
            source,
        })?;
        let text = String::from_utf8_lossy(&raw);
        let mut lines: Vec<String> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let version = lines.first().and_then(|l| {
            let rest = l.strip_prefix("# ")?;
            let (_, v) = rest.split_once(" by RouterOS ")?;
            v.split_whitespace().next().map(str::to_string)
        });
        let version = match version {
            Some(v) => {
                lines.remove(0);
                v
            }
            None => "7.15.3".to_string(),
        };
        let board = lines
            .iter()
            .take_while(|l| !l.starts_with('/'))
            .find_map(|l| l.strip_prefix("# model = ").map(|m| m.trim().to_string()))
            .unwrap_or_else(|| "CHR".to_string());
        out.push(Arc::new(ConfigFile {
            version,
            lines,
            board,
        }));
    }
    Ok(out)
}

fn preferred(routeros: bool, v6: bool) -> Preferred {
    use russh::{cipher, compression, kex, mac};
    if !routeros {
        return Preferred::default();
    }
    if v6 {
        Preferred {
            kex: Cow::Owned(vec![kex::DH_G14_SHA1, kex::DH_GEX_SHA1]),
            key: Cow::Owned(vec![Algorithm::Rsa { hash: None }]),
            cipher: Cow::Owned(vec![cipher::AES_128_CTR]),
            mac: Cow::Owned(vec![mac::HMAC_SHA1]),
            compression: Cow::Owned(vec![compression::NONE]),
            ..Preferred::default()
        }
    } else {
        Preferred {
            kex: Cow::Owned(vec![
                kex::ECDH_SHA2_NISTP256,
                kex::ECDH_SHA2_NISTP384,
                kex::ECDH_SHA2_NISTP521,
                kex::DH_GEX_SHA256,
                kex::DH_GEX_SHA1,
                kex::DH_G14_SHA1,
            ]),
            key: Cow::Owned(vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa { hash: None },
            ]),
            cipher: Cow::Owned(vec![
                cipher::AES_128_CTR,
                cipher::AES_192_CTR,
                cipher::AES_256_CTR,
            ]),
            mac: Cow::Owned(vec![mac::HMAC_SHA256, mac::HMAC_SHA1]),
            compression: Cow::Owned(vec![compression::NONE]),
            ..Preferred::default()
        }
    }
}

fn ssh_config(cfg: &SimConfig, key: PrivateKey, v6: bool) -> Arc<russh::server::Config> {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::Password);
    Arc::new(russh::server::Config {
        server_id: SshId::Standard(Cow::Borrowed("SSH-2.0-ROSSSH")),
        methods,
        auth_rejection_time: cfg.timing.auth_rejection,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        preferred: preferred(cfg.routeros_algorithms, v6),
        inactivity_timeout: cfg.timing.session_idle_timeout,
        nodelay: true,
        ..Default::default()
    })
}

fn device_addr(cfg: &SimConfig, i: usize) -> Result<(Ipv4Addr, u16), SimError> {
    if cfg.one_address {
        let port = if cfg.port == 0 {
            0
        } else {
            u16::try_from(cfg.port as usize + i).map_err(|_| {
                SimError::Config(format!("port {} + {i} devices exceeds 65535", cfg.port))
            })?
        };
        Ok((cfg.listen_base, port))
    } else {
        let base = u32::from(cfg.listen_base);
        let ip = u32::try_from(i)
            .ok()
            .and_then(|i| base.checked_add(i))
            .ok_or_else(|| {
                SimError::Config(format!("address {} + {i} overflows", cfg.listen_base))
            })?;
        Ok((Ipv4Addr::from(ip), cfg.port))
    }
}

fn uuid_for(seed: u64, what: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("rosbackup-sim:{seed}:{what}").as_bytes(),
    )
}

pub(crate) async fn start(cfg: SimConfig) -> Result<(Arc<Shared>, Runtime), SimError> {
    nofile_raise();
    if cfg.devices == 0 {
        return Err(SimError::Config("--devices must be at least 1".into()));
    }
    if cfg.faults.total() > cfg.devices {
        return Err(SimError::Config(format!(
            "fault spec {} needs {} devices but only {} are simulated",
            cfg.faults,
            cfg.faults.total(),
            cfg.devices
        )));
    }
    let files = match &cfg.configs_dir {
        Some(dir) => Some(read_config_files(dir)?),
        None => None,
    };
    let width = cfg.devices.saturating_sub(1).to_string().len().max(4);
    let tenants: Vec<uuid::Uuid> = (0..TENANTS.min(cfg.devices))
        .map(|t| uuid_for(cfg.seed, &format!("tenant:{t}")))
        .collect();

    // Devices (ports resolved after binding).
    let mut devices = Vec::with_capacity(cfg.devices);
    let mut sources = Vec::with_capacity(cfg.devices);
    for i in 0..cfg.devices {
        let fault = cfg.faults.fault_for(i);
        let mut rng = rng_for(cfg.seed, i, 3);
        let (version, source, board) = match &files {
            Some(files) => {
                let f = files[i % files.len()].clone();
                (f.version.clone(), Source::File(f.clone()), f.board.clone())
            }
            None => {
                // A device given an Ed25519 user key (the even `keys`/`key-only` ones)
                // runs a version that takes one: RouterOS 7.12 and later.
                let v7: Vec<&str> =
                    if matches!(fault, Some(Fault::Keys | Fault::KeyOnly)) && i % 2 == 0 {
                        V7_VERSIONS
                            .iter()
                            .copied()
                            .filter(|v| render::takes_ed25519_user_keys(v))
                            .collect()
                    } else {
                        V7_VERSIONS.to_vec()
                    };
                let version = if fault == Some(Fault::V6) {
                    V6_VERSIONS[rng.gen_range(0..V6_VERSIONS.len())]
                } else {
                    v7[rng.gen_range(0..v7.len())]
                };
                let target = cfg
                    .config_size
                    .unwrap_or_else(|| config_gen::default_size(cfg.seed, i));
                (
                    version.to_string(),
                    Source::Generated { target },
                    String::new(),
                )
            }
        };
        let name = match fault {
            Some(f) => format!("sim-{i:0width$}-{f}"),
            None => format!("sim-{i:0width$}"),
        };
        let (ip, port) = device_addr(&cfg, i)?;
        devices.push(SimDevice {
            id: uuid_for(cfg.seed, &format!("device:{i}")),
            tenant_id: tenants[i % tenants.len()],
            name,
            host: IpAddr::V4(ip),
            port,
            username: match &cfg.shared_login {
                Some((user, _)) => user.clone(),
                None => format!("backup-{}", alnum(&mut rng, 4).to_lowercase()),
            },
            password: match &cfg.shared_login {
                Some((_, password)) => password.clone(),
                None => alnum(&mut rng, 16),
            },
            routeros_version: version,
            fault,
            user_key: None,
        });
        sources.push((source, board));
    }

    // User keys of the `keys` and `key-only` devices (RSA keygen is slow: off the
    // runtime, cached per process like RSA host keys).
    let wanted: Vec<(usize, bool)> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.fault, Some(Fault::Keys | Fault::KeyOnly)))
        .map(|(i, d)| (i, i % 2 == 1 || render::is_v6(&d.routeros_version)))
        .collect();
    if !wanted.is_empty() {
        let seed = cfg.seed;
        let made = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .map(|(i, rsa)| keys::user_key(seed, i, rsa).map(|k| (i, k)))
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| SimError::Key(e.to_string()))?
        .map_err(SimError::Key)?;
        for (i, k) in made {
            let text = k
                .to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .map_err(|e| SimError::Key(e.to_string()))?;
            let key = rosbackup_core::userkey::UserKey::import(&text, None)
                .map_err(|e| SimError::Key(e.to_string()))?;
            devices[i].user_key = Some(key);
        }
    }

    // Host keys.
    let mut keyset: Vec<Option<PrivateKey>> = vec![None; cfg.devices];
    let mut rotations: Vec<Vec<PrivateKey>> = vec![Vec::new(); cfg.devices];
    if cfg.routeros_algorithms {
        let sem = Arc::new(Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4),
        ));
        let mut jobs = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            if d.fault == Some(Fault::Refuse) {
                continue;
            }
            let gens: Vec<u64> = if d.fault == Some(Fault::HostKey) {
                (0..RSA_ROTATION).collect()
            } else {
                vec![0]
            };
            for g in gens {
                let sem = sem.clone();
                let seed = cfg.seed;
                jobs.push((
                    i,
                    tokio::spawn(async move {
                        let _permit = sem.acquire_owned().await;
                        tokio::task::spawn_blocking(move || keys::rsa_key(seed, i, g)).await
                    }),
                ));
            }
        }
        for (i, job) in jobs {
            let key = job
                .await
                .map_err(|e| SimError::Key(e.to_string()))?
                .map_err(|e| SimError::Key(e.to_string()))?
                .map_err(SimError::Key)?;
            if devices[i].fault == Some(Fault::HostKey) {
                rotations[i].push(key);
            } else {
                keyset[i] = Some(key);
            }
        }
    } else {
        for (i, d) in devices.iter().enumerate() {
            if d.fault != Some(Fault::Refuse) {
                keyset[i] = Some(keys::ed25519_key(cfg.seed, i, 0));
            }
        }
    }

    // Bind.
    let mut listeners: Vec<Option<TcpListener>> = Vec::with_capacity(cfg.devices);
    // Refusing devices get a socket that is bound but never listens: a connection to it
    // is refused, and while the simulator holds it no other program (a concurrent test's
    // simulator or sshd asking for an ephemeral port) can take the port and answer.
    let mut reserved: Vec<tokio::net::TcpSocket> = Vec::new();
    for d in devices.iter_mut() {
        let addr = SocketAddr::new(d.host, d.port);
        if d.fault == Some(Fault::Refuse) {
            let bind = || -> std::io::Result<tokio::net::TcpSocket> {
                let sock = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                sock.bind(addr)?;
                Ok(sock)
            };
            match bind() {
                Ok(sock) => {
                    d.port = sock
                        .local_addr()
                        .map_err(|source| SimError::Bind { addr, source })?
                        .port();
                    reserved.push(sock);
                }
                // A fixed address already in use by another program: nothing of ours
                // listens there, as before. With port 0 a failure is an error.
                Err(source) if d.port == 0 => return Err(SimError::Bind { addr, source }),
                Err(_) => {}
            }
            listeners.push(None);
            continue;
        }
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        d.port = l
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?
            .port();
        listeners.push(Some(l));
    }

    let mut rt = Vec::with_capacity(cfg.devices);
    for (i, ((source, board), d)) in sources.into_iter().zip(&devices).enumerate() {
        let v6 = render::is_v6(&d.routeros_version);
        let (ssh, fp) = match keyset[i].take() {
            Some(k) => {
                let fp = keys::fingerprint(&k);
                (Some(ssh_config(&cfg, k, v6)), fp)
            }
            None => (None, String::new()),
        };
        let rsa_rotation: Vec<(Arc<russh::server::Config>, String)> = rotations[i]
            .drain(..)
            .map(|k| {
                let fp = keys::fingerprint(&k);
                (ssh_config(&cfg, k, v6), fp)
            })
            .collect();
        let fp = if d.fault == Some(Fault::HostKey) {
            match rsa_rotation.first() {
                Some((_, fp)) => fp.clone(),
                None => keys::fingerprint(&keys::ed25519_key(cfg.seed, i, 0)),
            }
        } else {
            fp
        };
        // Empty for generated devices: their board comes from the (lazily generated)
        // model when `/system resource print` asks.
        rt.push(DeviceRt {
            index: i,
            source,
            board,
            sessions: AtomicU64::new(0),
            exports: AtomicU64::new(0),
            current: AtomicU64::new(0),
            max_concurrent: AtomicU64::new(0),
            change_counter: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            last_export: Mutex::new(None),
            files: Mutex::new(crate::files::FileStore::default()),
            last_backup: Mutex::new(None),
            fingerprint: Mutex::new(fp),
            ssh,
            rsa_rotation,
            started: Instant::now(),
        });
    }

    let by_id = devices.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
    let session_log = match &cfg.session_log {
        Some(path) => Some(Mutex::new(std::io::LineWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SimError::Io {
                    context: format!("opening the session log {}", path.display()),
                    source,
                })?,
        ))),
        None => None,
    };
    let shared = Arc::new(Shared {
        devices,
        rt,
        by_id,
        cfg,
        models: Mutex::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        live: AtomicUsize::new(0),
        live_notify: Notify::new(),
        shutting_down: AtomicBool::new(false),
        session_log,
    });

    if let Some(path) = &shared.cfg.inventory {
        let key_dir = write_key_files(path, &shared.devices)
            .await
            .map_err(|source| SimError::Io {
                context: format!("cannot write the key files of inventory {}", path.display()),
                source,
            })?;
        write_atomic(
            path,
            inventory_csv(
                &shared.devices,
                shared.cfg.inventory_host.as_deref(),
                key_dir.as_deref(),
                shared.cfg.inventory_interval,
            )
            .as_bytes(),
        )
        .await
        .map_err(|source| SimError::Io {
            context: format!("cannot write inventory {}", path.display()),
            source,
        })?;
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        if let Some(l) = l {
            tasks.push(tokio::spawn(accept_loop(
                shared.clone(),
                i,
                l,
                shutdown_rx.clone(),
            )));
        }
    }
    if !reserved.is_empty() {
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _held = reserved;
            let _ = rx.changed().await;
        }));
    }
    if let Some(path) = shared.cfg.stats.clone() {
        let shared = shared.clone();
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => write_stats(&shared, &path).await,
                    _ = rx.changed() => break,
                }
            }
        }));
    }
    tracing::info!(
        devices = shared.devices.len(),
        faults = %shared.cfg.faults,
        "simulator started"
    );
    Ok((shared, Runtime { shutdown_tx, tasks }))
}

pub(crate) async fn shutdown(shared: Arc<Shared>, runtime: Runtime) {
    shared.shutting_down.store(true, Ordering::SeqCst);
    let _ = runtime.shutdown_tx.send(true);
    for t in runtime.tasks {
        let _ = t.await;
    }
    let kills: Vec<Arc<Kill>> = shared
        .conns
        .lock()
        .expect("conns poisoned")
        .values()
        .cloned()
        .collect();
    for k in kills {
        k.kill();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let notified = shared.live_notify.notified();
        if shared.live.load(Ordering::SeqCst) == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            tracing::warn!(
                live = shared.live.load(Ordering::SeqCst),
                "sessions still open at shutdown"
            );
            break;
        }
    }
    if let Some(path) = &shared.cfg.stats {
        write_stats(&shared, path).await;
    }
    tracing::info!("simulator stopped");
}

async fn write_stats(shared: &Shared, path: &Path) {
    let map: BTreeMap<String, DeviceStats> = shared
        .stats()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    match serde_json::to_vec_pretty(&map) {
        Ok(json) => {
            if let Err(e) = write_atomic(path, &json).await {
                tracing::warn!(path = %path.display(), error = %e, "cannot write stats");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot serialize stats"),
    }
}

fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// The directory (next to the inventory, named after it) the user keys of the `keys`
/// and `key-only` devices are written to, one `<device name>.key` each, readable by the
/// owner only; `None` when no device has a key.
async fn write_key_files(
    inventory: &Path,
    devices: &[SimDevice],
) -> std::io::Result<Option<String>> {
    if devices.iter().all(|d| d.user_key.is_none()) {
        return Ok(None);
    }
    let stem = inventory
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "inventory".into());
    let dir_name = format!("{stem}.keys");
    let dir = inventory.parent().unwrap_or(Path::new(".")).join(&dir_name);
    tokio::fs::create_dir_all(&dir).await?;
    for d in devices {
        if let Some(k) = &d.user_key {
            let path = dir.join(format!("{}.key", d.name));
            let mut opts = tokio::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts.open(&path).await?;
            tokio::io::AsyncWriteExt::write_all(&mut f, k.to_sealable().expose().as_bytes())
                .await?;
        }
    }
    Ok(Some(dir_name))
}

/// The inventory CSV; with `key_dir`, an `ssh_key_file` column naming each key device's
/// file in it (relative to the inventory, as `devices import` reads it).
pub(crate) fn inventory_csv(
    devices: &[SimDevice],
    host: Option<&str>,
    key_dir: Option<&str>,
    interval: Option<u32>,
) -> String {
    let mut out = String::from("id,tenant_id,name,host,port,username,password,routeros_version");
    if key_dir.is_some() {
        out.push_str(",ssh_key_file");
    }
    if interval.is_some() {
        out.push_str(",backup_interval_seconds");
    }
    out.push('\n');
    for d in devices {
        let key_file = match (key_dir, &d.user_key) {
            (Some(dir), Some(_)) => Some(format!("{dir}/{}.key", d.name)),
            _ => None,
        };
        let mut fields = vec![
            d.id.to_string(),
            d.tenant_id.to_string(),
            d.name.clone(),
            host.map_or_else(|| d.host.to_string(), str::to_string),
            d.port.to_string(),
            d.username.clone(),
            d.password.clone(),
            d.routeros_version.clone(),
        ];
        if key_dir.is_some() {
            fields.push(key_file.unwrap_or_default());
        }
        if let Some(i) = interval {
            fields.push(i.to_string());
        }
        let line: Vec<Cow<'_, str>> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

async fn accept_loop(
    shared: Arc<Shared>,
    idx: usize,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, _peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(device = idx, error = %e, "accept failed");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // russh applies `Config::nodelay` only to sockets it accepts itself, not to
        // `run_stream`'s: without this each reply waited out Nagle + delayed ACK (~40 ms
        // per round trip on loopback), which every client of the simulator paid.
        let _ = stream.set_nodelay(true);
        let kill = Arc::new(Kill::default());
        let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        shared
            .conns
            .lock()
            .expect("conns poisoned")
            .insert(conn_id, kill.clone());
        shared.live.fetch_add(1, Ordering::SeqCst);
        let rt = &shared.rt[idx];
        rt.sessions.fetch_add(1, Ordering::Relaxed);
        let now = rt.current.fetch_add(1, Ordering::SeqCst) + 1;
        rt.max_concurrent.fetch_max(now, Ordering::SeqCst);
        let shared2 = shared.clone();
        tokio::spawn(async move {
            serve_connection(&shared2, idx, stream, kill).await;
            shared2.rt[idx].current.fetch_sub(1, Ordering::SeqCst);
            shared2
                .conns
                .lock()
                .expect("conns poisoned")
                .remove(&conn_id);
            shared2.live.fetch_sub(1, Ordering::SeqCst);
            shared2.live_notify.notify_waiters();
        });
    }
}

async fn serve_connection(shared: &Arc<Shared>, idx: usize, stream: TcpStream, kill: Arc<Kill>) {
    let d = &shared.devices[idx];
    let rt = &shared.rt[idx];
    if d.fault == Some(Fault::Silent) {
        // Hold the socket open, never write.
        kill.killed().await;
        drop(stream);
        return;
    }
    let config = if d.fault == Some(Fault::HostKey) {
        let n = rt.connections.fetch_add(1, Ordering::SeqCst);
        let (config, fp) = if rt.rsa_rotation.is_empty() {
            let key = keys::ed25519_key(shared.cfg.seed, idx, n);
            let fp = keys::fingerprint(&key);
            (
                ssh_config(&shared.cfg, key, render::is_v6(&d.routeros_version)),
                fp,
            )
        } else {
            let (c, fp) = &rt.rsa_rotation[(n % RSA_ROTATION) as usize % rt.rsa_rotation.len()];
            (c.clone(), fp.clone())
        };
        *rt.fingerprint.lock().expect("fingerprint poisoned") = fp;
        config
    } else {
        match &rt.ssh {
            Some(c) => c.clone(),
            None => return,
        }
    };
    let handler = Conn::new(shared.clone(), idx, kill.clone());
    let stream = KillStream::new(stream, kill);
    match russh::server::run_stream(config, stream, handler).await {
        Ok(session) => {
            if let Err(e) = session.await {
                tracing::debug!(device = idx, error = %e, "session ended with error");
            }
        }
        Err(e) => tracing::debug!(device = idx, error = %e, "session setup failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_gen::RenderOpts;
    use crate::console::{Cmd, parse_cmd};

    #[test]
    fn command_parsing() {
        let plain = RenderOpts::default();
        assert_eq!(parse_cmd("/export", false), Cmd::Export(plain));
        assert_eq!(
            parse_cmd("/export show-sensitive terse\n", false),
            Cmd::Export(RenderOpts {
                terse: true,
                sensitive: true
            })
        );
        assert_eq!(
            parse_cmd("/export terse hide-sensitive", false),
            Cmd::Export(RenderOpts {
                terse: true,
                sensitive: false
            })
        );
        assert_eq!(
            parse_cmd("/export", true),
            Cmd::Export(RenderOpts {
                terse: false,
                sensitive: true
            })
        );
        assert_eq!(
            parse_cmd("/export show-sensitive", true),
            Cmd::Text("expected end of command (line 1 column 9)\r\n".into())
        );
        assert_eq!(parse_cmd("/system resource print", true), Cmd::Resource);
        assert_eq!(parse_cmd("/system/resource/print", false), Cmd::Resource);
        assert_eq!(
            parse_cmd("/interface print", false),
            Cmd::Text("bad command name interface (line 1 column 2)\r\n".into())
        );
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("ab"), "ab");
    }
}
