//! The SSH export against Debian's real OpenSSH sshd: default algorithms, and restricted
//! to what RouterOS 6 offers. Fingerprints are checked against `ssh-keygen -lf`.

use crate::common::sshd;
use rosbackup::Secret;
use rosbackup::backup;
use rosbackup::device::{self, ExportOptions, Target};
use rosbackup::error::ErrorKind;
use rosbackup::normalize::{self, Version};
use std::time::Duration;

fn target(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
        username: sshd::USER.into(),
        password: Secret::new(sshd::PASSWORD),
        key: None,
        jump: None,
        known_fingerprint: None,
        routeros_version: Some("7".into()),
    }
}

fn opts() -> ExportOptions {
    ExportOptions {
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

const EXPORT: &str = "gh-Defm-anna-v7.8-terse-387k.rsc";

#[tokio::test]
async fn default_openssh_exports_real_config_with_tofu_fingerprint() {
    let Some((server, file)) = sshd::serving(EXPORT, false) else {
        return;
    };
    let raw = std::fs::read(&file).unwrap();

    let c = backup::collect(&target(server.port), &opts(), Version::V2)
        .await
        .unwrap();
    assert_eq!(c.export.raw, raw, "export bytes differ from the file");
    assert_eq!(
        c.sha256,
        normalize::hash(&normalize::normalize(&raw, Version::V2))
    );
    assert_eq!(c.export.fingerprint, server.fingerprint("ed25519"));
    assert_eq!(c.export.routeros_version.as_deref(), Some("7.8"));
    assert!(
        !c.export.negotiated.uses_legacy(),
        "{:?}",
        c.export.negotiated
    );

    // Pinned: the same key passes, a different pin is host_key_mismatch.
    let mut pinned = target(server.port);
    pinned.known_fingerprint = Some(c.export.fingerprint.clone());
    device::export(&pinned, &opts()).await.unwrap();
    pinned.known_fingerprint = Some(server.fingerprint("rsa").to_string());
    let e = device::export(&pinned, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HostKeyMismatch, "{e}");
    assert_eq!(
        e.presented_fingerprint(),
        Some(server.fingerprint("ed25519"))
    );
}

#[tokio::test]
async fn routeros6_algorithm_set_works_and_is_reported_legacy() {
    let Some((server, file)) = sshd::serving("gh-kaihendry-praze-v6.47.8-crlf.rsc", true) else {
        return;
    };
    let raw = std::fs::read(&file).unwrap();
    let mut t = target(server.port);
    t.routeros_version = Some("6".into());
    let x = device::export(&t, &opts()).await.unwrap();
    assert_eq!(x.raw, raw);
    assert_eq!(x.command, "/export");
    assert_eq!(x.fingerprint, server.fingerprint("rsa"));
    assert_eq!(x.negotiated.kex, "diffie-hellman-group14-sha1");
    assert_eq!(x.negotiated.mac, "hmac-sha1");
    assert_eq!(x.negotiated.cipher, "aes128-ctr");
    assert!(x.negotiated.uses_legacy());
}

#[tokio::test]
async fn wrong_password_is_auth_failed() {
    let Some((server, _)) = sshd::serving("gh-alexx-cap1-v7.10.rsc", false) else {
        return;
    };
    let mut t = target(server.port);
    t.password = Secret::new("wrong-password");
    let e = device::export(&t, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthFailed, "{e}");
    assert!(!e.to_string().contains("wrong-password"));
}

#[tokio::test]
async fn unknown_version_probes_then_exports() {
    // The forced command answers every command with the export, so the probe finds no
    // version line and the v7 command is used; the version then comes from the header.
    let Some((server, _)) = sshd::serving("gh-alexx-cap1-v7.10.rsc", false) else {
        return;
    };
    let mut t = target(server.port);
    t.routeros_version = None;
    let x = device::export(&t, &opts()).await.unwrap();
    assert!(x.version_discovered);
    assert_eq!(x.command, "/export show-sensitive");
    assert_eq!(x.routeros_version.as_deref(), Some("7.10"));
}

#[tokio::test]
async fn output_cap_is_too_large() {
    let Some((server, _)) = sshd::serving(EXPORT, false) else {
        return;
    };
    let o = ExportOptions {
        max_output: 100_000,
        ..opts()
    };
    let e = device::export(&target(server.port), &o).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
}
