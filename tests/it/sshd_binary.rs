//! The binary backup's SFTP client against real OpenSSH: Debian's `sftp-server` serves
//! the files, and a forced command plays the RouterOS commands (`/export`, `/system
//! backup save`, `/file remove`) on the same session. Fetch and verify, refuse an
//! unencrypted file, time out on a file that never appears — and the file is removed
//! from the "device" every time.

use crate::common::sshd;
use rosbackup::Secret;
use rosbackup::device::binary::{BackupFormat, BinaryErrorKind, BinaryRequest, HeaderError};
use rosbackup::device::{ExportOptions, Target};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// The forced command: RouterOS commands on a directory of files, `sftp-server` for the
/// SFTP subsystem. `/system backup save` writes a 4096-byte AES backup (a plaintext one
/// for names ending in `-plain`, none for names ending in `-missing`).
fn script(files: &Path, export: &Path) -> String {
    format!(
        r#"#!/bin/sh
cd '{files}' || exit 1
case "$SSH_ORIGINAL_COMMAND" in
  *sftp-server*) exec /usr/lib/openssh/sftp-server ;;
  "/system resource print") printf '   version: 7.15.3 (stable)\r\n' ;;
  /export*) cat '{export}' ;;
  "/system backup save "*)
    name=$(printf '%s' "$SSH_ORIGINAL_COMMAND" | sed -n 's/.*name=\([A-Za-z0-9-]*\).*/\1/p')
    case "$name" in
      *-missing) ;;
      *-plain) {{ printf '\210\254\241\261\000\020\000\000'; head -c 4088 /dev/urandom; }} > "$name.backup" ;;
      *) {{ printf '\357\250\221\163\000\020\000\000'; head -c 4088 /dev/urandom; }} > "$name.backup" ;;
    esac
    printf 'Saving system configuration\r\nConfiguration backup saved\r\n' ;;
  "/file remove "*)
    f=$(printf '%s' "$SSH_ORIGINAL_COMMAND" | sed 's/^\/file remove "\(.*\)"$/\1/')
    rm -f -- "$f" ;;
  *) printf 'bad command name\r\n' ;;
esac
"#,
        files = files.display(),
        export = export.display()
    )
}

fn request(name: &str) -> BinaryRequest {
    BinaryRequest {
        name: name.into(),
        password: Secret::new("Pw123"),
        major: 7,
        timeout: Duration::from_secs(3),
        poll: Duration::from_millis(100),
        max_size: 1024 * 1024,
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_fetch_from_openssh_verifies_and_removes_the_file() {
    let Some(exports) = crate::common::shared_exports() else {
        return;
    };
    if !sshd::available() {
        return;
    }
    let export = exports.join("gh-alexx-cap1-v7.10.rsc");
    // A directory the test user may write: the device's file store.
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let files = root.path().join("files");
    std::fs::create_dir(&files).expect("mkdir");
    std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let cmd = root.path().join("routeros.sh");
    std::fs::write(&cmd, script(&files, &export)).expect("script");
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = sshd::start_forced(&cmd.display().to_string(), false);

    let target = Target {
        host: "127.0.0.1".into(),
        port: server.port,
        username: sshd::USER.into(),
        password: Secret::new(sshd::PASSWORD),
        key: None,
        jump: None,
        known_fingerprint: None,
        routeros_version: Some("7".into()),
    };
    let opts = ExportOptions::default();
    let (export_out, session) = rosbackup::device::export_session(&target, &opts, &mut |_| {})
        .await
        .expect("export over the kept session");
    assert_eq!(export_out.raw, std::fs::read(&export).expect("export"));

    // A good file: fetched whole over Debian's sftp-server, checked, removed — and a
    // file an earlier (killed) job of ours left behind is removed too; other files stay.
    std::fs::write(files.join("rosbackup-0123456789abcdef.backup"), b"stale").expect("stale");
    std::fs::write(files.join("operator.backup"), b"theirs").expect("theirs");
    let file = session
        .binary_backup(&request("rb-good"))
        .await
        .expect("binary backup");
    assert_eq!(file.data.len(), 4096);
    assert_eq!(file.format, BackupFormat::AesSha256);
    assert!(file.removed);
    assert_eq!(entries(&files), vec!["operator.backup".to_string()]);
    std::fs::remove_file(files.join("operator.backup")).expect("rm");

    // An unencrypted file is refused — and still removed.
    let e = session
        .binary_backup(&request("rb-plain"))
        .await
        .expect_err("plaintext refused");
    assert_eq!(e.kind(), BinaryErrorKind::BinaryBadFile, "{e}");
    assert!(
        matches!(
            e,
            rosbackup::device::binary::BinaryError::BadFile(HeaderError::NotEncrypted)
        ),
        "{e:?}"
    );
    assert!(entries(&files).is_empty(), "{:?}", entries(&files));

    // A file that never appears times out within the step's bound.
    let started = std::time::Instant::now();
    let e = session
        .binary_backup(&request("rb-missing"))
        .await
        .expect_err("never appears");
    assert_eq!(e.kind(), BinaryErrorKind::BinaryTimeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(15));
    session.close().await;
}
