//! A real Debian OpenSSH `sshd` on 127.0.0.1 playing a RouterOS device: password login,
//! a forced command that prints a real export. Optionally restricted to the algorithms a
//! RouterOS 6 box offers.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "rosbackup-test";
pub const PASSWORD: &str = "Sshd-Test-Pw-4821";

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// `ssh-keygen -lf` of each host key, by key type (`ed25519`, `rsa`).
    pub fingerprints: Vec<(String, String)>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    pub fn fingerprint(&self, kind: &str) -> &str {
        &self
            .fingerprints
            .iter()
            .find(|(k, _)| k == kind)
            .expect("host key kind")
            .1
    }
}

/// Is the machine able to run the sshd tests? Outside CI a missing sshd or a non-root
/// user skips them (with a message); under CI=true that is a failure.
pub fn available() -> bool {
    let ok = Path::new("/usr/sbin/sshd").exists() && is_root();
    if !ok {
        if crate::common::in_ci() {
            panic!(
                "sshd tests need /usr/sbin/sshd (openssh-server) and root; CI=true requires them"
            );
        }
        eprintln!("skipping: /usr/sbin/sshd missing or not root");
    }
    ok
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ensure_user() {
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !exists {
        // Several test binaries may race to create it; a second useradd failing is fine.
        let _ = Command::new("useradd")
            .args(["-M", "-d", "/nonexistent", "-s", "/bin/sh", USER])
            .status();
    }
    let mut p = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write;
    p.stdin
        .take()
        .unwrap()
        .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(p.wait().unwrap().success(), "chpasswd failed");
}

fn keygen(dir: &Path, kind: &str) -> (PathBuf, String) {
    let path = dir.join(format!("hk_{kind}"));
    let mut args = vec!["-q", "-N", "", "-t", kind];
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    let st = Command::new("ssh-keygen")
        .args(&args)
        .arg("-f")
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path.with_extension("pub"))
        .output()
        .expect("ssh-keygen -lf");
    let line = String::from_utf8(out.stdout).unwrap();
    let fp = line
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    (path, fp)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start sshd whose forced command prints `export` (a file read in place).
/// `legacy`: only `diffie-hellman-group14-sha1`, `ssh-rsa`, `aes128-ctr`, `hmac-sha1`.
pub fn start(export: &Path, legacy: bool) -> Sshd {
    start_with(export, legacy, None)
}

/// As [`start`], with public-key login for the keys of `authorized` (`authorized_keys`
/// lines) besides the password. With `legacy`, only `ssh-rsa` (SHA-1) signatures are
/// accepted (`PubkeyAcceptedAlgorithms ssh-rsa`), as on RouterOS 6.
pub fn start_with(export: &Path, legacy: bool, authorized: Option<&[String]>) -> Sshd {
    start_conf(export, legacy, authorized, &[])
}

/// As [`start_with`], with more `sshd_config` lines (`AllowTcpForwarding no`, …).
pub fn start_conf(
    export: &Path,
    legacy: bool,
    authorized: Option<&[String]>,
    extra: &[&str],
) -> Sshd {
    let export = export.canonicalize().expect("export file");
    start_forced_conf(
        &format!("/bin/cat {}", export.display()),
        legacy,
        authorized,
        extra,
    )
}

/// Start sshd whose forced command is `command` (run as the test user, with
/// `SSH_ORIGINAL_COMMAND` set; for the `sftp` subsystem that is the path of Debian's
/// `sftp-server`).
pub fn start_forced(command: &str, legacy: bool) -> Sshd {
    start_forced_conf(command, legacy, None, &[])
}

/// As [`start_forced`], with authorized keys and more `sshd_config` lines.
pub fn start_forced_conf(
    command: &str,
    legacy: bool,
    authorized: Option<&[String]>,
    extra: &[&str],
) -> Sshd {
    ensure_user();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut fingerprints = Vec::new();
    let mut host_keys = Vec::new();
    let kinds: &[&str] = if legacy {
        &["rsa"]
    } else {
        &["ed25519", "rsa"]
    };
    for kind in kinds {
        let (path, fp) = keygen(dir.path(), kind);
        host_keys.push(format!("HostKey {}", path.display()));
        fingerprints.push((kind.to_string(), fp));
    }
    let port = free_port();
    let mut conf = vec![
        format!("Port {port}"),
        "ListenAddress 127.0.0.1".into(),
        format!("PidFile {}/sshd.pid", dir.path().display()),
        "UsePAM no".into(),
        "PasswordAuthentication yes".into(),
        "KbdInteractiveAuthentication no".into(),
        format!(
            "PubkeyAuthentication {}",
            if authorized.is_some() { "yes" } else { "no" }
        ),
        format!("AllowUsers {USER}"),
        "StrictModes no".into(),
        format!("ForceCommand {command}"),
        "Subsystem sftp /usr/lib/openssh/sftp-server".into(),
    ];
    conf.extend(host_keys);
    conf.extend(extra.iter().map(|l| l.to_string()));
    if let Some(lines) = authorized {
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        conf.push(format!("AuthorizedKeysFile {}", path.display()));
        if legacy {
            conf.push("PubkeyAcceptedAlgorithms ssh-rsa".into());
        }
    }
    if legacy {
        conf.extend([
            "KexAlgorithms diffie-hellman-group14-sha1".to_string(),
            "HostKeyAlgorithms ssh-rsa".into(),
            "Ciphers aes128-ctr".into(),
            "MACs hmac-sha1".into(),
        ]);
    }
    let conf_path = dir.path().join("sshd_config");
    std::fs::write(&conf_path, conf.join("\n") + "\n").unwrap();
    let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&conf_path)
        .stderr(log)
        .spawn()
        .expect("spawn sshd");
    let sshd = Sshd {
        child,
        port,
        dir,
        fingerprints,
    };
    // Wait until it accepts connections (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sshd did not start: {}",
            std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sshd
}

/// The sshd log so far (what sshd said about each login).
pub fn log(sshd: &Sshd) -> String {
    std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
}

/// The sshd fixture for a real export file, or `None` (test skipped) when the exports
/// or sshd are not available outside CI.
pub fn serving(export_name: &str, legacy: bool) -> Option<(Sshd, PathBuf)> {
    let dir = super::shared_exports()?;
    if !available() {
        return None;
    }
    let file = dir.join(export_name);
    Some((start(&file, legacy), file))
}
