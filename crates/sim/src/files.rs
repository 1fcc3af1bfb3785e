//! A device's file store (`/file`), what `/system backup save` writes into it, and the
//! SFTP subsystem that serves it (issue #19).
//!
//! Why: binary backups are fetched as files, so the simulator needs what a router has —
//! a file that appears after `/system backup save`, is listed by `/file print` with its
//! size, can be read over SFTP and removed again — and the ways that goes wrong on real
//! boxes: a full flash (`not enough space`), a file that never appears, a file whose
//! size keeps changing, a transfer that ends early. The bytes are not a real RouterOS
//! backup (that format is MikroTik's), but their header is: the magic and length fields
//! of an encrypted (AES or RC4) or plaintext `.backup` file, a salt, a signature and a
//! magic check, then bytes derived from the device's configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode,
};
use sha2::{Digest, Sha256};

use super::faults::Fault;
use super::state::Shared;
pub use super::state::{Encryption, FileStore, SavedBackup, StoredFile};

/// `0xB1A1AC88` little-endian: a backup saved with `dont-encrypt=yes`.
pub const MAGIC_PLAINTEXT: [u8; 4] = [0x88, 0xAC, 0xA1, 0xB1];
/// `0x7291A8EF` little-endian: RC4-encrypted (RouterOS before 6.43, or `encryption=rc4`).
pub const MAGIC_RC4: [u8; 4] = [0xEF, 0xA8, 0x91, 0x72];
/// `0x7391A8EF` little-endian: AES-128-CTR + SHA-256 (`encryption=aes-sha256`).
pub const MAGIC_AES: [u8; 4] = [0xEF, 0xA8, 0x91, 0x73];

/// The bytes of a `.backup` file: the header RouterOS writes, then `body_len` bytes
/// derived from `seed_material` (the configuration) and the salt.
pub fn backup_bytes(
    encryption: Encryption,
    password: Option<&str>,
    seed_material: &[u8],
    body_len: usize,
) -> Vec<u8> {
    let salt: [u8; 32] = rand::random();
    let mut head = Vec::with_capacity(80);
    match encryption {
        Encryption::None => head.extend_from_slice(&MAGIC_PLAINTEXT),
        Encryption::Rc4 => head.extend_from_slice(&MAGIC_RC4),
        Encryption::AesSha256 => head.extend_from_slice(&MAGIC_AES),
    }
    head.extend_from_slice(&[0; 4]); // length, patched below
    if encryption != Encryption::None {
        head.extend_from_slice(&salt);
        let key = Sha256::new()
            .chain_update(salt)
            .chain_update(password.unwrap_or("").as_bytes())
            .finalize();
        if encryption == Encryption::AesSha256 {
            // The signature field: a keyed digest over the salt.
            head.extend_from_slice(
                &Sha256::new()
                    .chain_update(key)
                    .chain_update(salt)
                    .finalize(),
            );
        }
        // The magic check: the plaintext magic, "encrypted".
        for (i, b) in MAGIC_PLAINTEXT.iter().enumerate() {
            head.push(b ^ key[i]);
        }
    }
    let total = head.len() + body_len;
    let mut out = head;
    let mut block = Sha256::new()
        .chain_update(salt)
        .chain_update(seed_material)
        .finalize();
    while out.len() < total {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(total);
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out
}

/// RouterOS appends `.backup` to a name without it.
pub(crate) fn backup_file_name(name: &str) -> String {
    if name.ends_with(".backup") {
        name.to_string()
    } else {
        format!("{name}.backup")
    }
}

/// SFTP paths as clients send them (`/x.backup`, `./x.backup`, `x.backup`) → our names.
fn store_name(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

impl Shared {
    /// A file as it is now; a `backup-growing` device's backup grows on every look.
    pub(crate) fn file_for_look(&self, idx: usize, name: &str) -> Option<StoredFile> {
        let mut store = self.rt[idx].files.lock().expect("files poisoned");
        let f = store.files.get_mut(name)?;
        if self.devices[idx].fault == Some(Fault::BackupGrowing) && name.ends_with(".backup") {
            let mut grown = f.data.to_vec();
            grown.extend_from_slice(&[0x5a; 4096]);
            f.data = Bytes::from(grown);
        }
        Some(f.clone())
    }

    pub(crate) fn remove_file(&self, idx: usize, name: &str) -> bool {
        let mut store = self.rt[idx].files.lock().expect("files poisoned");
        store.files.remove(name).is_some()
    }

    pub(crate) fn list_files(&self, idx: usize) -> Vec<(String, StoredFile)> {
        let names: Vec<String> = {
            let store = self.rt[idx].files.lock().expect("files poisoned");
            store.files.keys().cloned().collect()
        };
        names
            .into_iter()
            .filter_map(|n| self.file_for_look(idx, &n).map(|f| (n, f)))
            .collect()
    }
}

fn attrs_of(f: &StoredFile) -> FileAttributes {
    let mut a = FileAttributes::empty();
    a.size = Some(f.data.len() as u64);
    a.permissions = Some(0o100644);
    let t = u32::try_from(f.created.timestamp()).unwrap_or(0);
    a.mtime = Some(t);
    a.atime = Some(t);
    a
}

/// The SFTP subsystem of one session: read-only access to the device's files, plus remove.
pub(crate) struct SftpServer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) idx: usize,
    handles: HashMap<String, Handled>,
    next: u64,
}

enum Handled {
    /// A file opened for reading, as it was when opened.
    File { data: Bytes, cut: bool },
    /// A directory listing, served once.
    Dir { served: bool },
}

impl SftpServer {
    pub(crate) fn new(shared: Arc<Shared>, idx: usize) -> Self {
        SftpServer {
            shared,
            idx,
            handles: HashMap::new(),
            next: 0,
        }
    }

    fn status(id: u32) -> Status {
        Status {
            id,
            status_code: StatusCode::Ok,
            error_message: "Ok".to_string(),
            language_tag: "en-US".to_string(),
        }
    }
}

impl russh_sftp::server::Handler for SftpServer {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        if pflags.intersects(OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE) {
            return Err(StatusCode::PermissionDenied);
        }
        let name = store_name(&filename);
        let f = self
            .shared
            .file_for_look(self.idx, &name)
            .ok_or(StatusCode::NoSuchFile)?;
        self.next += 1;
        let handle = format!("h{}", self.next);
        let cut = self.shared.devices[self.idx].fault == Some(Fault::BackupCut);
        self.handles
            .insert(handle.clone(), Handled::File { data: f.data, cut });
        Ok(Handle { id, handle })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let Some(Handled::File { data, cut }) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        // `backup-cut`: the transfer ends (EOF) after half the file.
        let end = if *cut { data.len() / 2 } else { data.len() };
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        if offset >= end {
            return Err(StatusCode::Eof);
        }
        let stop = end.min(offset.saturating_add(len as usize));
        let chunk = data.slice(offset..stop);
        self.shared.rt[self.idx]
            .bytes_sent
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(Data {
            id,
            data: chunk.to_vec(),
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        self.handles.remove(&handle);
        Ok(Self::status(id))
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        match self.handles.get(&handle) {
            Some(Handled::File { data, .. }) => {
                let mut attrs = FileAttributes::empty();
                attrs.size = Some(data.len() as u64);
                attrs.permissions = Some(0o100644);
                Ok(Attrs { id, attrs })
            }
            _ => Err(StatusCode::Failure),
        }
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let name = store_name(&path);
        if name.is_empty() || name == "." {
            let mut attrs = FileAttributes::empty();
            attrs.permissions = Some(0o040755);
            return Ok(Attrs { id, attrs });
        }
        let f = self
            .shared
            .file_for_look(self.idx, &name)
            .ok_or(StatusCode::NoSuchFile)?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&f),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        if self.shared.remove_file(self.idx, &store_name(&filename)) {
            Ok(Self::status(id))
        } else {
            Err(StatusCode::NoSuchFile)
        }
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let name = store_name(&path);
        let full = if name.is_empty() || name == "." {
            "/".to_string()
        } else {
            format!("/{name}")
        };
        Ok(Name {
            id,
            files: vec![File::dummy(full)],
        })
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let name = store_name(&path);
        if !(name.is_empty() || name == ".") {
            return Err(StatusCode::NoSuchFile);
        }
        self.next += 1;
        let handle = format!("d{}", self.next);
        self.handles
            .insert(handle.clone(), Handled::Dir { served: false });
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Handled::Dir { served }) if !*served => {
                *served = true;
                let files = self
                    .shared
                    .list_files(self.idx)
                    .into_iter()
                    .map(|(n, f)| File::new(n, attrs_of(&f)))
                    .collect();
                Ok(Name { id, files })
            }
            Some(Handled::Dir { .. }) => Err(StatusCode::Eof),
            _ => Err(StatusCode::Failure),
        }
    }
}

/// `/file print` as RouterOS prints it (sizes in bytes on 6, with units on 7).
pub(crate) fn file_print(shared: &Shared, idx: usize, v6: bool) -> String {
    let mut out = String::from("Columns: NAME, TYPE, SIZE, CREATION-TIME\r\n # NAME");
    if v6 {
        out = String::from(" # NAME");
    }
    out.push_str("                      TYPE    SIZE  CREATION-TIME\r\n");
    for (i, (name, f)) in shared.list_files(idx).into_iter().enumerate() {
        let kind = if name.ends_with(".backup") {
            "backup"
        } else {
            "file"
        };
        let size = f.data.len();
        let size = if v6 {
            size.to_string()
        } else if size >= 1024 {
            format!("{:.1}KiB", size as f64 / 1024.0)
        } else {
            format!("{size}B")
        };
        let created = f.created.format("%Y-%m-%d %H:%M:%S");
        out.push_str(&format!(
            "{i:>2} {name:<26} {kind:<7} {size:>6}  {created}\r\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{BackupArgs, Cmd, parse_cmd};
    use rosbackup_core::device::binary::{BackupFormat, HeaderError, check_header};

    #[test]
    fn backup_files_have_routeros_headers() {
        let aes = backup_bytes(Encryption::AesSha256, Some("pw"), b"/system identity", 1000);
        assert_eq!(check_header(&aes), Ok(BackupFormat::AesSha256));
        let rc4 = backup_bytes(Encryption::Rc4, Some("pw"), b"/system identity", 1000);
        assert_eq!(check_header(&rc4), Ok(BackupFormat::Rc4));
        let plain = backup_bytes(Encryption::None, None, b"/system identity", 1000);
        assert_eq!(check_header(&plain), Err(HeaderError::NotEncrypted));
        assert_eq!(plain.len(), 1008);
        assert_ne!(
            aes,
            backup_bytes(Encryption::AesSha256, Some("pw"), b"/system identity", 1000)
        );
    }

    #[test]
    fn backup_and_file_commands_parse() {
        assert_eq!(
            parse_cmd(
                "/system backup save name=rb-1 password=Pw1 encryption=aes-sha256 dont-encrypt=no",
                false
            ),
            Cmd::BackupSave(BackupArgs {
                name: Some("rb-1".into()),
                password: Some("Pw1".into()),
                encryption: Some("aes-sha256".into()),
                dont_encrypt: false,
            })
        );
        assert!(matches!(
            parse_cmd("/system backup save name=x dont-encrypt=maybe", true),
            Cmd::Text(t) if t.contains("expected end of command")
        ));
        assert!(matches!(
            parse_cmd("/system backup save nmae=x", true),
            Cmd::Text(t) if t.contains("expected end of command")
        ));
        assert_eq!(parse_cmd("/file print detail", false), Cmd::FilePrint);
        assert_eq!(
            parse_cmd("/file remove \"rb-1.backup\"", false),
            Cmd::FileRemove("rb-1.backup".into())
        );
        assert_eq!(backup_file_name("x"), "x.backup");
        assert_eq!(backup_file_name("x.backup"), "x.backup");
    }
}
