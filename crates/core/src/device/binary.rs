//! A binary `/system backup` file from a RouterOS device, on an SSH session that already
//! exported its configuration (issue #19).
//!
//! An `/export` cannot restore a router completely (local users' passwords, private
//! keys); a `.backup` file can. Taking one is four steps, each of which real routers get
//! wrong in their own way, so each fails with a variant of its own:
//!
//! 1. `/system backup save name=… password=…` (RouterOS 7 also `encryption=aes-sha256`;
//!    RouterOS 6 before 6.43 knows no `encryption=`, later 6.x default to AES with a
//!    password). Always `dont-encrypt=no`: a plaintext backup holds every secret in clear.
//!    `not enough space` is [`BinaryError::NoSpace`].
//! 2. Wait until the file exists and its size stayed the same between two looks (SFTP
//!    `stat`), bounded by the step's deadline: RouterOS writes the file after answering,
//!    and a slow flash takes a while.
//! 3. Fetch it over SFTP (`russh-sftp` on a channel of our session: no `sftp`/`scp`
//!    processes, the same host-key check and algorithms as the export), never more than
//!    the cap.
//! 4. Remove it from the device — also when steps 2–3 failed — with `/file remove`, then
//!    SFTP `remove` if that did not work: a router's flash is small and every backup left
//!    behind holds the configuration.
//!
//! Files of ours an earlier job left behind (a worker killed or cut off mid-step: names
//! start with [`FILE_PREFIX`]) are removed too, so they cannot pile up on the flash;
//! nothing else on the device is touched.
//!
//! Then what arrived is checked: as many bytes as listed, the RouterOS backup magic of an
//! *encrypted* file, and the header's length field equal to the file's size.
//! Nothing here logs or formats the password or the file's bytes.

use super::{Client, ExportError};
use crate::secret::Secret;
use russh::ChannelMsg;
use russh::client::Handle;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::time::timeout_at;

/// `0xB1A1AC88` little-endian: an unencrypted backup.
pub const MAGIC_PLAINTEXT: [u8; 4] = [0x88, 0xAC, 0xA1, 0xB1];
/// `0x7291A8EF` little-endian: RC4-encrypted.
pub const MAGIC_RC4: [u8; 4] = [0xEF, 0xA8, 0x91, 0x72];
/// `0x7391A8EF` little-endian: AES-128-CTR with a SHA-256 signature (`aes-sha256`).
pub const MAGIC_AES: [u8; 4] = [0xEF, 0xA8, 0x91, 0x73];

/// The start of every backup file name we give; files with it are ours to clean up.
pub const FILE_PREFIX: &str = "rosbackup-";

/// Default cap on a backup file: real ones are tens of KiB to a few MiB.
pub const DEFAULT_MAX_BINARY: u64 = 64 * 1024 * 1024;

/// How one binary backup is taken.
#[derive(Debug, Clone)]
pub struct BinaryRequest {
    /// The file's name without `.backup`, unique to the job (letters, digits, `-`).
    pub name: String,
    /// The encryption password (letters and digits only: it goes on a command line).
    pub password: Secret,
    /// The RouterOS major version the export found.
    pub major: u8,
    /// Save, wait and fetch together end by then.
    pub timeout: Duration,
    /// Pause between two looks at the file's size.
    pub poll: Duration,
    pub max_size: u64,
}

/// Which encryption a backup file's header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupFormat {
    Rc4,
    AesSha256,
}

impl BackupFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupFormat::Rc4 => "rc4",
            BackupFormat::AesSha256 => "aes-sha256",
        }
    }
}

/// A fetched, checked backup file. `Debug` shows sizes only.
pub struct BinaryFile {
    /// The name on the device (`<name>.backup`).
    pub file_name: String,
    pub data: Vec<u8>,
    pub format: BackupFormat,
    /// False when the file could not be removed from the device (logged; the next
    /// backup has another name).
    pub removed: bool,
    pub duration: Duration,
}

impl std::fmt::Debug for BinaryFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryFile")
            .field("file_name", &self.file_name)
            .field("bytes", &self.data.len())
            .field("format", &self.format)
            .field("removed", &self.removed)
            .finish_non_exhaustive()
    }
}

/// What is wrong with a file that claims to be a backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("shorter than a backup header ({0} bytes)")]
    Short(usize),
    #[error("an unencrypted backup (dont-encrypt): refused, it holds every secret in clear")]
    NotEncrypted,
    #[error("no RouterOS backup magic")]
    NoMagic,
    #[error("the header gives {header} bytes, the file has {actual}")]
    LengthMismatch { header: u64, actual: u64 },
}

/// Check a backup file's header: an encrypted RouterOS backup whose length field is the
/// file's size.
pub fn check_header(data: &[u8]) -> Result<BackupFormat, HeaderError> {
    if data.len() < 8 {
        return Err(HeaderError::Short(data.len()));
    }
    let format = match [data[0], data[1], data[2], data[3]] {
        MAGIC_AES => BackupFormat::AesSha256,
        MAGIC_RC4 => BackupFormat::Rc4,
        MAGIC_PLAINTEXT => return Err(HeaderError::NotEncrypted),
        _ => return Err(HeaderError::NoMagic),
    };
    let header = u64::from(u32::from_le_bytes([data[4], data[5], data[6], data[7]]));
    if header != data.len() as u64 {
        return Err(HeaderError::LengthMismatch {
            header,
            actual: data.len() as u64,
        });
    }
    Ok(format)
}

/// Why a binary backup failed. `Display` never quotes device output or the password.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("the device has not enough space for the backup file")]
    NoSpace,
    #[error("the device refused `/system backup save` ({0})")]
    Rejected(&'static str),
    #[error("the backup file did not appear within {secs:.1}s")]
    NeverAppeared { secs: f64 },
    #[error("the backup file's size was still changing after {secs:.1}s")]
    SizeUnstable { secs: f64 },
    #[error("timed out after {secs:.1}s while {during}")]
    Timeout { during: &'static str, secs: f64 },
    #[error("the fetch ended after {got} of {listed} bytes")]
    Truncated { got: u64, listed: u64 },
    #[error("the backup file is larger than the {cap}-byte limit")]
    TooLarge { cap: u64 },
    #[error("not a usable RouterOS backup file: {0}")]
    BadFile(#[from] HeaderError),
    #[error("SFTP: {0}")]
    Sftp(String),
    #[error("SSH: {0}")]
    Ssh(String),
}

/// The error kinds of a binary step (run history, metrics, README's error table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryErrorKind {
    /// `not enough space` on the device.
    BinaryNoSpace,
    /// The file never appeared, or its size never settled, or the step's deadline.
    BinaryTimeout,
    /// Fewer bytes arrived than the file has.
    BinaryTruncated,
    /// What arrived is not an encrypted RouterOS backup of the listed size.
    BinaryBadFile,
    /// Anything else: the command refused, SFTP unavailable, the session gone.
    BinaryFailed,
}

impl BinaryErrorKind {
    pub const ALL: [BinaryErrorKind; 5] = [
        BinaryErrorKind::BinaryNoSpace,
        BinaryErrorKind::BinaryTimeout,
        BinaryErrorKind::BinaryTruncated,
        BinaryErrorKind::BinaryBadFile,
        BinaryErrorKind::BinaryFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BinaryErrorKind::BinaryNoSpace => "binary_no_space",
            BinaryErrorKind::BinaryTimeout => "binary_timeout",
            BinaryErrorKind::BinaryTruncated => "binary_truncated",
            BinaryErrorKind::BinaryBadFile => "binary_bad_file",
            BinaryErrorKind::BinaryFailed => "binary_failed",
        }
    }
}

impl BinaryError {
    pub fn kind(&self) -> BinaryErrorKind {
        match self {
            BinaryError::NoSpace => BinaryErrorKind::BinaryNoSpace,
            BinaryError::NeverAppeared { .. }
            | BinaryError::SizeUnstable { .. }
            | BinaryError::Timeout { .. } => BinaryErrorKind::BinaryTimeout,
            BinaryError::Truncated { .. } => BinaryErrorKind::BinaryTruncated,
            BinaryError::BadFile(_) | BinaryError::TooLarge { .. } => {
                BinaryErrorKind::BinaryBadFile
            }
            BinaryError::Rejected(_) | BinaryError::Sftp(_) | BinaryError::Ssh(_) => {
                BinaryErrorKind::BinaryFailed
            }
        }
    }
}

/// The save command for a major version. The password is letters and digits only.
pub fn save_command(major: u8, name: &str, password: &str) -> String {
    if major >= 7 {
        format!(
            "/system backup save name={name} password={password} encryption=aes-sha256 dont-encrypt=no"
        )
    } else {
        // No `encryption=` (unknown before 6.43); 6.43+ default to AES with a password.
        format!("/system backup save name={name} password={password} dont-encrypt=no")
    }
}

/// What the save command's answer says (the text is never kept or quoted).
fn classify_save_output(out: &[u8]) -> Result<(), BinaryError> {
    let text = String::from_utf8_lossy(out).to_ascii_lowercase();
    if text.contains("not enough space") || text.contains("not enough disk space") {
        return Err(BinaryError::NoSpace);
    }
    for (marker, why) in [
        ("expected end of command", "syntax not accepted"),
        ("bad command name", "unknown command"),
        ("syntax error", "syntax error"),
        ("failure:", "failure"),
        ("not permitted", "not permitted (user policy)"),
        ("error", "error"),
    ] {
        if text.contains(marker) {
            return Err(BinaryError::Rejected(why));
        }
    }
    Ok(())
}

/// Run a command and read its output (at most `cap` bytes kept), to EOF + exit status.
async fn exec(handle: &Handle<Client>, command: &str, cap: usize) -> Result<Vec<u8>, BinaryError> {
    let mut channel = handle
        .channel_open_session()
        .await
        .map_err(|e| BinaryError::Ssh(e.to_string()))?;
    channel
        .exec(true, command.as_bytes().to_vec())
        .await
        .map_err(|e| BinaryError::Ssh(e.to_string()))?;
    let mut out = Vec::new();
    let (mut eof, mut status) = (false, None);
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&data[..data.len().min(room)]);
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Eof => eof = true,
            ChannelMsg::Close => break,
            ChannelMsg::Failure => return Err(BinaryError::Rejected("exec refused")),
            _ => {}
        }
        if eof && status.is_some() {
            break;
        }
    }
    // Only streams close on drop (russh): close the command's channel here, or it stays
    // open on the router until the session ends.
    let _ = channel.close().await;
    if !eof {
        return Err(BinaryError::Ssh(
            "the command's channel ended without EOF".into(),
        ));
    }
    Ok(out)
}

fn sftp_error(e: russh_sftp::client::error::Error) -> BinaryError {
    use russh_sftp::client::error::Error as E;
    // The status text comes from the device: keep only the code.
    match e {
        E::Status(s) => BinaryError::Sftp(format!("status {:?}", s.status_code)),
        E::Timeout => BinaryError::Sftp("no answer in time".into()),
        E::IO(_) => BinaryError::Sftp("the transfer's channel failed".into()),
        E::Limited(_) => BinaryError::Sftp("server limit exceeded".into()),
        E::UnexpectedPacket | E::UnexpectedBehavior(_) => {
            BinaryError::Sftp("the server broke the protocol".into())
        }
    }
}

fn is_no_such_file(e: &russh_sftp::client::error::Error) -> bool {
    matches!(e, russh_sftp::client::error::Error::Status(s)
        if s.status_code == russh_sftp::protocol::StatusCode::NoSuchFile)
}

/// Open SFTP on a new channel of the session.
async fn open_sftp(
    handle: &Handle<Client>,
) -> Result<russh_sftp::client::SftpSession, BinaryError> {
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| BinaryError::Ssh(e.to_string()))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| BinaryError::Ssh(e.to_string()))?;
    russh_sftp::client::SftpSession::new(channel.into_stream())
        .await
        .map_err(sftp_error)
}

/// Save, wait, fetch, remove, verify. See the module docs.
pub(super) async fn take(
    handle: &Handle<Client>,
    req: &BinaryRequest,
) -> Result<BinaryFile, BinaryError> {
    let started = Instant::now();
    let file_name = format!("{}.backup", req.name);
    let deadline = tokio::time::Instant::now() + req.timeout;
    let secs = req.timeout.as_secs_f64();
    let mut sftp = None;
    let fetched = timeout_at(
        deadline,
        save_wait_fetch(handle, req, &file_name, &mut sftp),
    )
    .await;
    let fetched = match fetched {
        Ok(r) => r,
        Err(_) => Err(BinaryError::Timeout {
            during: "saving and fetching the backup",
            secs,
        }),
    };
    // Always remove, with a short bound of its own.
    let removed = tokio::time::timeout(
        Duration::from_secs(10),
        remove(handle, sftp.as_ref(), &file_name),
    )
    .await
    .unwrap_or(false);
    if let Some(s) = sftp.as_ref() {
        let _ = tokio::time::timeout(Duration::from_secs(10), sweep_stale(s, &file_name)).await;
    }
    if let Some(s) = sftp {
        let _ = s.close().await;
    }
    if !removed {
        tracing::warn!(file = %file_name, "could not remove the backup file from the device");
    }
    let (data, listed) = fetched?;
    if data.len() as u64 != listed {
        return Err(BinaryError::Truncated {
            got: data.len() as u64,
            listed,
        });
    }
    let format = check_header(&data)?;
    Ok(BinaryFile {
        file_name,
        data,
        format,
        removed,
        duration: started.elapsed(),
    })
}

async fn save_wait_fetch(
    handle: &Handle<Client>,
    req: &BinaryRequest,
    file_name: &str,
    sftp_slot: &mut Option<russh_sftp::client::SftpSession>,
) -> Result<(Vec<u8>, u64), BinaryError> {
    let command = save_command(req.major, &req.name, req.password.expose());
    let out = exec(handle, &command, 64 * 1024).await?;
    classify_save_output(&out)?;
    let sftp = open_sftp(handle).await?;
    sftp.set_timeout(req.timeout.as_secs().max(1));
    let sftp = sftp_slot.insert(sftp);
    // Wait for a size that stays the same between two looks.
    let waited = Instant::now();
    let mut last: Option<u64> = None;
    let listed = loop {
        match sftp.metadata(file_name).await {
            Ok(m) => {
                let size = m.size.unwrap_or(0);
                if size > 0 && last == Some(size) {
                    break size;
                }
                last = Some(size);
            }
            Err(e) if is_no_such_file(&e) => last = None,
            Err(e) => return Err(sftp_error(e)),
        }
        if waited.elapsed() + req.poll >= req.timeout {
            let secs = waited.elapsed().as_secs_f64();
            return Err(match last {
                None => BinaryError::NeverAppeared { secs },
                Some(_) => BinaryError::SizeUnstable { secs },
            });
        }
        tokio::time::sleep(req.poll).await;
    };
    if listed > req.max_size {
        return Err(BinaryError::TooLarge { cap: req.max_size });
    }
    let file = sftp.open(file_name).await.map_err(sftp_error)?;
    let mut data = Vec::with_capacity(usize::try_from(listed).unwrap_or(0));
    file.take(req.max_size + 1)
        .read_to_end(&mut data)
        .await
        .map_err(|_| BinaryError::Sftp("the transfer failed".into()))?;
    if data.len() as u64 > req.max_size {
        return Err(BinaryError::TooLarge { cap: req.max_size });
    }
    Ok((data, listed))
}

/// `/file remove`, then SFTP remove if the file is still there. True when it is seen
/// gone: without an SFTP session yet (the save failed, or the deadline came while the
/// router was still writing) one is opened to look — the command's own output says
/// nothing reliable, and a file the router finished writing late would stay on its flash.
async fn remove(
    handle: &Handle<Client>,
    sftp: Option<&russh_sftp::client::SftpSession>,
    file_name: &str,
) -> bool {
    let _ = exec(handle, &format!("/file remove \"{file_name}\""), 4096).await;
    match sftp {
        Some(s) => gone(s, file_name).await,
        None => match open_sftp(handle).await {
            Ok(s) => {
                let g = gone(&s, file_name).await;
                let _ = s.close().await;
                g
            }
            // Cannot look: not known to be gone.
            Err(_) => false,
        },
    }
}

/// Whether the file is gone after removing it over SFTP if it is still there.
async fn gone(sftp: &russh_sftp::client::SftpSession, file_name: &str) -> bool {
    match sftp.metadata(file_name).await {
        Err(e) if is_no_such_file(&e) => true,
        Err(_) => false,
        Ok(_) => sftp.remove_file(file_name).await.is_ok(),
    }
}

/// Remove backup files an earlier job of ours left behind (never `keep`, never a file
/// without our prefix).
async fn sweep_stale(sftp: &russh_sftp::client::SftpSession, keep: &str) {
    let Ok(dir) = sftp.read_dir(".").await else {
        return;
    };
    for entry in dir {
        let name = entry.file_name();
        if name.starts_with(FILE_PREFIX) && name.ends_with(".backup") && name != keep {
            match sftp.remove_file(name.as_str()).await {
                Ok(()) => {
                    tracing::info!(file = %name, "removed a backup file an earlier job left behind")
                }
                Err(_) => tracing::warn!(file = %name, "could not remove a stale backup file"),
            }
        }
    }
}

impl From<ExportError> for BinaryError {
    fn from(e: ExportError) -> Self {
        BinaryError::Ssh(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(magic: [u8; 4], len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        d[..4].copy_from_slice(&magic);
        d[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        d
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(
            check_header(&file(MAGIC_AES, 100)),
            Ok(BackupFormat::AesSha256)
        );
        assert_eq!(check_header(&file(MAGIC_RC4, 100)), Ok(BackupFormat::Rc4));
        assert_eq!(
            check_header(&file(MAGIC_PLAINTEXT, 100)),
            Err(HeaderError::NotEncrypted)
        );
        assert_eq!(check_header(b"# 2024"), Err(HeaderError::Short(6)));
        assert_eq!(check_header(b"/system identity"), Err(HeaderError::NoMagic));
        let mut cut = file(MAGIC_AES, 100);
        cut.truncate(60);
        assert_eq!(
            check_header(&cut),
            Err(HeaderError::LengthMismatch {
                header: 100,
                actual: 60
            })
        );
    }

    /// Every kind is in the README's table of binary error kinds.
    #[test]
    fn every_kind_is_documented() {
        let readme = include_str!("../../../../README.md");
        for k in BinaryErrorKind::ALL {
            assert!(
                readme.contains(&format!("| `{}` |", k.as_str())),
                "{} missing from README's error kinds",
                k.as_str()
            );
        }
    }

    #[test]
    fn save_commands_never_skip_encryption() {
        let v7 = save_command(7, "rb-1", "pw");
        assert!(v7.contains("encryption=aes-sha256") && v7.contains("dont-encrypt=no"));
        let v6 = save_command(6, "rb-1", "pw");
        assert!(!v6.contains("encryption=") && v6.contains("dont-encrypt=no"));
        assert!(v6.contains("name=rb-1 password=pw"));
    }

    #[test]
    fn save_answers_are_classified() {
        assert!(
            classify_save_output(b"Saving system configuration\r\nConfiguration backup saved\r\n")
                .is_ok()
        );
        assert!(matches!(
            classify_save_output(b"Saving system configuration\r\nfailure: not enough space\r\n"),
            Err(BinaryError::NoSpace)
        ));
        let e = classify_save_output(b"expected end of command (line 1 column 40)").unwrap_err();
        assert_eq!(e.kind(), BinaryErrorKind::BinaryFailed);
        assert!(!e.to_string().contains("column"), "{e}");
    }
}
