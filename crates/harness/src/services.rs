//! The three services the demo needs: the ones already running at their URLs, or private
//! instances started from installed binaries in a scratch directory.
//!
//! A person trying rosbackup should not have to configure PostgreSQL first. If the URL
//! answers, we use it; if not, we start our own server on a free loopback port (trust
//! auth, no persistence worth keeping) and stop it when the demo ends. When a binary is
//! missing we say which Debian package provides it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Why a service could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "{service} is not usable at {url} and `{binary}` is not installed: install it with `sudo apt-get install {package}`, or point {var} at a running server"
    )]
    Missing {
        service: &'static str,
        url: String,
        binary: &'static str,
        package: &'static str,
        var: &'static str,
    },
    #[error("could not start a private {service}: {reason} (its log: {log})")]
    Start {
        service: &'static str,
        reason: String,
        log: String,
    },
}

/// A service in use: where it is, and the child process if we started it.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub url: String,
    /// `None`: someone else's server, left alone.
    pub child: Option<Child>,
}

impl Service {
    pub fn private(&self) -> bool {
        self.child.is_some()
    }

    /// Stop a private server (SIGTERM, then SIGKILL after `grace`).
    pub async fn stop(&mut self, grace: Duration) {
        self.stop_with(libc::SIGTERM, grace).await;
    }

    /// Stop a private server with `signal` (PostgreSQL: SIGINT is its fast shutdown,
    /// SIGTERM waits for every client to leave), then SIGKILL after `grace`.
    pub async fn stop_with(&mut self, signal: libc::c_int, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            signal_child(child, signal, grace).await;
        }
    }
}

/// SIGTERM a child, wait up to `grace`, then SIGKILL.
pub async fn stop_child(child: &mut Child, grace: Duration) {
    signal_child(child, libc::SIGTERM, grace).await;
}

/// Send `signal` to a child, wait up to `grace`, then SIGKILL.
async fn signal_child(child: &mut Child, signal: libc::c_int, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and still own.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Host and port of a URL like `scheme://user@host:port/path`.
pub fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default_port), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((hostport.to_string(), default_port)),
    }
}

/// Whether something accepts TCP at the URL's host and port.
pub fn reachable(url: &str, default_port: u16) -> bool {
    let Some((host, port)) = host_port(url, default_port) else {
        return false;
    };
    let host = if host.is_empty() {
        "127.0.0.1".into()
    } else {
        host
    };
    use std::net::ToSocketAddrs;
    let Ok(addrs) = (host.as_str(), port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// A free loopback port (bound and released; good enough for a demo).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Find an executable: on PATH, or under the given glob-like directories.
pub fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// PostgreSQL's version directories (`/usr/lib/postgresql/<n>/bin`), newest first.
fn postgres_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

async fn wait_listening(
    addr: SocketAddr,
    child: &mut Child,
    deadline: Duration,
) -> Result<(), String> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        if tokio::time::Instant::now() > until {
            return Err(format!("nothing listened on {addr} within {deadline:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The uid/gid to run PostgreSQL as when we are root (it refuses to run as root).
pub fn postgres_user() -> Option<(libc::uid_t, libc::gid_t)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a static passwd record.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// Configure a child: own process group (Ctrl-C reaches only us), killed with the demo.
fn child_command(program: &Path, as_user: Option<(libc::uid_t, libc::gid_t)>) -> Command {
    let mut c = Command::new(program);
    c.stdin(Stdio::null()).kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if let Some((uid, gid)) = as_user
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn log_file(dir: &Path, name: &str) -> std::io::Result<(std::fs::File, String)> {
    let path = dir.join(format!("{name}.log"));
    // Append: a private server restarted on the same port keeps its earlier log.
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    Ok((f, path.display().to_string()))
}

/// Whether we can log in to PostgreSQL at `url` (not just reach its port: a stock
/// Debian server on 5432 answers, but wants a password we do not have).
pub async fn postgres_usable(url: &str) -> Result<(), String> {
    use sqlx::Connection;
    match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::postgres::PgConnection::connect(url),
    )
    .await
    {
        Ok(Ok(c)) => {
            let _ = c.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(match e {
            sqlx::Error::Database(d) => d.message().to_string(),
            other => other.to_string(),
        }),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// PostgreSQL at `url` if we can log in there, or a private one under `dir`. With
/// `strict` (the operator set DATABASE_URL), a server that refuses us is an error.
pub async fn postgres(
    url: &str,
    strict: bool,
    private: bool,
    dir: &Path,
) -> Result<Service, ServiceError> {
    match if private {
        Err(String::new())
    } else {
        postgres_usable(url).await
    } {
        Ok(()) => {
            return Ok(Service {
                name: "PostgreSQL",
                url: url.to_string(),
                child: None,
            });
        }
        Err(why) if strict && !private => {
            return Err(ServiceError::Start {
                service: "PostgreSQL",
                reason: format!(
                    "DATABASE_URL={} does not let us in: {why}",
                    rosbackup_core::secret::redact_url(url)
                ),
                log: "-".into(),
            });
        }
        Err(_) => {}
    }
    let port = free_port().map_err(|e| ServiceError::Start {
        service: "PostgreSQL",
        reason: e.to_string(),
        log: "-".into(),
    })?;
    postgres_at(url, port, dir).await
}

/// A private PostgreSQL on `port` with its data under `dir` (created with initdb unless
/// `dir` already holds one). Starting it again on the same `dir` and port after
/// [`Service::stop`] is a restart that keeps the data (the fault tests use it). `url`
/// only names the server in a "missing binary" error.
pub async fn postgres_at(url: &str, port: u16, dir: &Path) -> Result<Service, ServiceError> {
    postgres_at_with(url, port, dir, &[]).await
}

/// As [`postgres_at`], with extra server arguments (e.g. `-c ssl=on …` for TLS tests).
pub async fn postgres_at_with(
    url: &str,
    port: u16,
    dir: &Path,
    extra: &[String],
) -> Result<Service, ServiceError> {
    let dirs = postgres_dirs();
    let missing = |binary| ServiceError::Missing {
        service: "PostgreSQL",
        url: rosbackup_core::secret::redact_url(url),
        binary,
        package: "postgresql",
        var: "DATABASE_URL",
    };
    let initdb = find_binary("initdb", &dirs).ok_or_else(|| missing("initdb"))?;
    let server = find_binary("postgres", &dirs).ok_or_else(|| missing("postgres"))?;
    let data = dir.join("postgres");
    let start_err = |reason: String, log: &str| ServiceError::Start {
        service: "PostgreSQL",
        reason,
        log: log.to_string(),
    };
    let (log, log_path) = log_file(dir, "postgres").map_err(|e| start_err(e.to_string(), "-"))?;
    std::fs::create_dir_all(&data).map_err(|e| start_err(e.to_string(), &log_path))?;
    let user = postgres_user();
    if let Some((uid, gid)) = user {
        for p in [dir, data.as_path(), Path::new(&log_path)] {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|e| start_err(e.to_string(), &log_path))?;
            // SAFETY: chown with a valid path string.
            unsafe {
                libc::chown(c.as_ptr(), uid, gid);
            }
        }
    }
    if !data.join("PG_VERSION").is_file() {
        initdb_at(&initdb, user, &data, &log, &log_path).await?;
    }
    let mut cmd = child_command(&server, user);
    cmd.arg("-D")
        .arg(&data)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ])
        .args(extra)
        .arg("-k")
        .arg(&data);
    drop(log);
    let child = start_server(
        "PostgreSQL",
        cmd,
        dir,
        "postgres",
        port,
        Duration::from_secs(30),
    )
    .await?;
    Ok(Service {
        name: "PostgreSQL",
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        child: Some(child),
    })
}

async fn initdb_at(
    initdb: &Path,
    user: Option<(libc::uid_t, libc::gid_t)>,
    data: &Path,
    log: &std::fs::File,
    log_path: &str,
) -> Result<(), ServiceError> {
    let start_err = |reason: String, log: &str| ServiceError::Start {
        service: "PostgreSQL",
        reason,
        log: log.to_string(),
    };
    let status = child_command(initdb, user)
        .args(["-D"])
        .arg(data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdout(
            log.try_clone()
                .map_err(|e| start_err(e.to_string(), log_path))?,
        )
        .stderr(
            log.try_clone()
                .map_err(|e| start_err(e.to_string(), log_path))?,
        )
        .status()
        .await
        .map_err(|e| start_err(format!("initdb: {e}"), log_path))?;
    if !status.success() {
        return Err(start_err(format!("initdb failed ({status})"), log_path));
    }
    Ok(())
}

/// Start a server command with its output to `dir/<log>.log` and wait until it listens
/// on `port` (or fails, saying where its log is).
async fn start_server(
    service: &'static str,
    mut cmd: Command,
    dir: &Path,
    log: &str,
    port: u16,
    deadline: Duration,
) -> Result<Child, ServiceError> {
    let (file, log_path) = log_file(dir, log).map_err(|e| ServiceError::Start {
        service,
        reason: e.to_string(),
        log: "-".into(),
    })?;
    let start_err = |reason: String| ServiceError::Start {
        service,
        reason,
        log: log_path.clone(),
    };
    let out = file.try_clone().map_err(|e| start_err(e.to_string()))?;
    let mut child = cmd
        .stdout(out)
        .stderr(file)
        .spawn()
        .map_err(|e| start_err(e.to_string()))?;
    wait_listening(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &mut child,
        deadline,
    )
    .await
    .map_err(start_err)?;
    Ok(child)
}

/// Redis at `url`, or a private one.
pub async fn redis(url: &str, private: bool, dir: &Path) -> Result<Service, ServiceError> {
    if !private && reachable(url, 6379) {
        return Ok(Service {
            name: "Redis",
            url: url.to_string(),
            child: None,
        });
    }
    let port = free_port().map_err(|e| ServiceError::Start {
        service: "Redis",
        reason: e.to_string(),
        log: "-".into(),
    })?;
    redis_at(url, port, dir).await
}

/// A private, empty Redis on `port` (nothing is kept on disk: starting it again on the
/// same port after [`Service::stop`] is a restart that lost every key).
pub async fn redis_at(url: &str, port: u16, dir: &Path) -> Result<Service, ServiceError> {
    redis_at_with(url, port, dir, &[]).await
}

/// As [`redis_at`], with extra server arguments (later ones override earlier ones, so
/// `--port 0 --tls-port <port>` makes a TLS-only server).
pub async fn redis_at_with(
    url: &str,
    port: u16,
    dir: &Path,
    extra: &[String],
) -> Result<Service, ServiceError> {
    let bin = find_binary("redis-server", &[]).ok_or_else(|| ServiceError::Missing {
        service: "Redis",
        url: rosbackup_core::secret::redact_url(url),
        binary: "redis-server",
        package: "redis-server",
        var: "REDIS_URL",
    })?;
    let mut cmd = child_command(&bin, None);
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(dir)
    .args(extra);
    let child = start_server("Redis", cmd, dir, "redis", port, Duration::from_secs(15)).await?;
    Ok(Service {
        name: "Redis",
        url: format!("redis://127.0.0.1:{port}/0"),
        child: Some(child),
    })
}

/// NATS with JetStream at `url`, or a private one.
pub async fn nats(url: &str, private: bool, dir: &Path) -> Result<Service, ServiceError> {
    if !private && reachable(url, 4222) {
        return Ok(Service {
            name: "NATS",
            url: url.to_string(),
            child: None,
        });
    }
    let port = free_port().map_err(|e| ServiceError::Start {
        service: "NATS",
        reason: e.to_string(),
        log: "-".into(),
    })?;
    nats_at(url, port, dir).await
}

/// A private NATS with JetStream on `port`, storing under `dir/nats` (starting it again
/// on the same `dir` and port after [`Service::stop`] is a restart that keeps streams).
pub async fn nats_at(url: &str, port: u16, dir: &Path) -> Result<Service, ServiceError> {
    nats_at_with(url, port, dir, &[]).await
}

/// As [`nats_at`], with extra server arguments (e.g. `--tls …`).
pub async fn nats_at_with(
    url: &str,
    port: u16,
    dir: &Path,
    extra: &[String],
) -> Result<Service, ServiceError> {
    let bin = find_binary("nats-server", &[PathBuf::from("/usr/sbin")]).ok_or_else(|| {
        ServiceError::Missing {
            service: "NATS",
            url: rosbackup_core::secret::redact_url(url),
            binary: "nats-server",
            package: "nats-server",
            var: "NATS_URL",
        }
    })?;
    let mut cmd = child_command(&bin, None);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("nats"))
        .args(extra);
    let child = start_server("NATS", cmd, dir, "nats", port, Duration::from_secs(15)).await?;
    Ok(Service {
        name: "NATS",
        url: format!("nats://127.0.0.1:{port}"),
        child: Some(child),
    })
}

/// Spawn a process of this binary (`rosbackup worker`, `rosbackup enqueuer`) with `env`,
/// output to `log`.
pub fn spawn_self(args: &[&str], env: &[(String, String)], log: &Path) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let f = std::fs::File::create(log)?;
    let mut c = child_command(&exe, None);
    c.args(args);
    for v in rosbackup_core::config::VARS {
        c.env_remove(v.name);
    }
    c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(f.try_clone()?)
        .stderr(f);
    c.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_their_host_and_port() {
        assert_eq!(
            host_port("postgres://u:p@db.example:6543/x?sslmode=disable", 5432),
            Some(("db.example".into(), 6543))
        );
        assert_eq!(
            host_port("redis://127.0.0.1/0", 6379),
            Some(("127.0.0.1".into(), 6379))
        );
        assert_eq!(
            host_port("nats://[::1]:4333", 4222),
            Some(("::1".into(), 4333))
        );
        assert_eq!(host_port("no scheme", 1), None);
    }
}
