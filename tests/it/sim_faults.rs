//! Every simulator fault mode through the real export path ends in the right error kind;
//! healthy devices give the right hash.

use rosbackup::Secret;
use rosbackup::backup;
use rosbackup::device::{self, ExportOptions, Target};
use rosbackup::error::ErrorKind;
use rosbackup::normalize::{self, Version};
use rosbackup::sim::{Fault, SimConfig, SimDevice, Simulator};
use std::time::Duration;

fn target(d: &SimDevice) -> Target {
    Target {
        host: d.host.to_string(),
        port: d.port,
        username: d.username.clone(),
        password: Secret::new(d.password.clone()),
        key: None,
        jump: None,
        known_fingerprint: None,
        routeros_version: None,
    }
}

fn opts() -> ExportOptions {
    ExportOptions {
        connect_timeout: Duration::from_secs(3),
        command_timeout: Duration::from_secs(3),
        max_output: 1 << 20,
        sensitive: true,
    }
}

async fn fleet(spec: &str, healthy: usize, algorithms: bool) -> Simulator {
    let faults: rosbackup::sim::FaultSpec = spec.parse().unwrap();
    let n: usize = faults.0.iter().map(|(_, c)| c).sum::<usize>() + healthy;
    Simulator::start(SimConfig {
        devices: n,
        listen_base: "127.0.0.1".parse().unwrap(),
        port: 0,
        one_address: true,
        faults,
        routeros_algorithms: algorithms,
        huge_bytes: 4 << 20,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn by_fault(sim: &Simulator, f: Option<Fault>) -> SimDevice {
    sim.devices()
        .iter()
        .find(|d| d.fault == f)
        .cloned()
        .unwrap_or_else(|| panic!("no device with fault {f:?}"))
}

#[tokio::test]
async fn each_fault_mode_ends_in_its_error_kind() {
    let sim = fleet(
        "auth=1,refuse=1,silent=1,stall=1,drop=1,slow=1,huge=1,garbage=1",
        1,
        false,
    )
    .await;
    let cases = [
        (Fault::Auth, ErrorKind::AuthFailed),
        (Fault::Refuse, ErrorKind::ConnectionRefused),
        (Fault::Silent, ErrorKind::Timeout),
        (Fault::Stall, ErrorKind::TruncatedOutput),
        (Fault::Drop, ErrorKind::TruncatedOutput),
        (Fault::Slow, ErrorKind::TruncatedOutput),
        (Fault::Huge, ErrorKind::TooLarge),
        (Fault::Garbage, ErrorKind::BadOutput),
    ];
    let runs = cases.iter().map(|(fault, _)| {
        let mut t = target(&by_fault(&sim, Some(*fault)));
        // Known version: the fault shows on the export itself, not on the probe.
        t.routeros_version = Some("7".into());
        async move { device::export(&t, &opts()).await }
    });
    let results = futures::future::join_all(runs).await;
    for ((fault, want), got) in cases.iter().zip(results) {
        match got {
            Ok(_) => panic!("{fault:?}: succeeded"),
            Err(e) => assert_eq!(e.kind(), *want, "{fault:?}: {e}"),
        }
    }
    // No device ever had two sessions at once.
    for (id, s) in sim.stats() {
        assert!(s.max_concurrent <= 1, "{id}: {s:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn healthy_device_hash_matches_what_it_served() {
    let sim = fleet("", 2, false).await;
    for d in sim.devices() {
        let c = backup::collect(&target(d), &opts(), Version::V2)
            .await
            .unwrap();
        let served = sim.last_export(d.id).expect("served export");
        assert_eq!(c.export.raw, served);
        assert_eq!(
            c.sha256,
            normalize::hash(&normalize::normalize(&served, Version::V2))
        );
        assert_eq!(
            Some(c.export.fingerprint.as_str()),
            sim.host_key_fingerprint(d.id).as_deref()
        );
        assert_eq!(
            c.export.routeros_version.as_deref(),
            Some(d.routeros_version.as_str())
        );
        assert!(c.export.version_discovered);
        assert_eq!(c.export.command, "/export show-sensitive");
    }
    let stats = sim.stats();
    for d in sim.devices() {
        assert_eq!(stats[&d.id].exports, 1, "{}", d.name);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn hostkey_fault_is_a_mismatch_on_the_second_contact() {
    let sim = fleet("hostkey=1", 0, false).await;
    let d = by_fault(&sim, Some(Fault::HostKey));
    let first = device::export(&target(&d), &opts()).await.unwrap();
    let mut pinned = target(&d);
    pinned.known_fingerprint = Some(first.fingerprint.clone());
    let e = device::export(&pinned, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HostKeyMismatch, "{e}");
    assert_ne!(e.presented_fingerprint(), Some(first.fingerprint.as_str()));
    sim.shutdown().await;
}

#[tokio::test]
async fn routeros6_is_probed_or_falls_back_and_never_stores_the_error_text() {
    let sim = fleet("v6=1", 0, false).await;
    let d = by_fault(&sim, Some(Fault::V6));
    // Unknown version: probe says 6, so `/export`.
    let x = device::export(&target(&d), &opts()).await.unwrap();
    assert_eq!(x.routeros_major, 6);
    assert_eq!(x.command, "/export");
    assert!(x.routeros_version.as_deref().unwrap().starts_with("6."));
    // Wrongly believed to be 7: show-sensitive answers the error, we fall back.
    let mut t = target(&d);
    t.routeros_version = Some("7".into());
    let x = device::export(&t, &opts()).await.unwrap();
    assert_eq!(x.routeros_major, 6);
    assert!(x.version_discovered);
    assert!(!String::from_utf8_lossy(&x.raw).contains("expected end of command"));
    // Without secrets: hide-sensitive.
    let o = ExportOptions {
        sensitive: false,
        ..opts()
    };
    let mut t = target(&d);
    t.routeros_version = Some("6".into());
    assert_eq!(
        device::export(&t, &o).await.unwrap().command,
        "/export hide-sensitive"
    );
    // A stale hint of 7 without secrets would run `/export`, which prints secrets on 6:
    // the header gives the real version and the right command runs instead.
    let mut t = target(&d);
    t.routeros_version = Some("7".into());
    let x = device::export(&t, &o).await.unwrap();
    assert_eq!(x.command, "/export hide-sensitive");
    assert!(x.version_discovered);
    sim.shutdown().await;
}

#[tokio::test]
async fn stale_version_6_hint_on_a_routeros7_device_still_exports_secrets() {
    let sim = fleet("", 1, false).await;
    let d = &sim.devices()[0];
    let mut t = target(d);
    t.routeros_version = Some("6.49".into());
    let x = device::export(&t, &opts()).await.unwrap();
    assert_eq!(x.command, "/export show-sensitive");
    assert_eq!(x.routeros_major, 7);
    assert!(x.version_discovered);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_pin_is_not_a_host_key_change() {
    let sim = fleet("", 1, false).await;
    let mut t = target(&sim.devices()[0]);
    t.known_fingerprint = Some("SHA256:not-a-fingerprint".into());
    let e = device::export(&t, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unknown, "{e}");
    assert!(e.to_string().contains("pinned fingerprint"), "{e}");
    assert_eq!(
        sim.stats()[&sim.devices()[0].id].sessions,
        0,
        "must not even connect"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn annotations_keep_the_hash_and_changes_change_it() {
    let sim = fleet("annotate=1,change=1", 0, false).await;
    let ann = target(&by_fault(&sim, Some(Fault::Annotate)));
    let chg = target(&by_fault(&sim, Some(Fault::Change)));
    let a1 = backup::collect(&ann, &opts(), Version::V2).await.unwrap();
    let a2 = backup::collect(&ann, &opts(), Version::V2).await.unwrap();
    assert_ne!(
        a1.export.raw, a2.export.raw,
        "annotations should differ per export"
    );
    assert_eq!(a1.sha256, a2.sha256);
    let c1 = backup::collect(&chg, &opts(), Version::V2).await.unwrap();
    let c2 = backup::collect(&chg, &opts(), Version::V2).await.unwrap();
    assert_ne!(c1.sha256, c2.sha256);
    sim.shutdown().await;
}

#[tokio::test]
async fn routeros_algorithm_set_negotiates_without_curve25519() {
    let sim = fleet("v6=1", 1, true).await;
    for d in sim.devices() {
        let x = device::export(&target(d), &opts()).await.unwrap();
        assert!(
            !x.negotiated.kex.contains("curve25519"),
            "{:?}",
            x.negotiated
        );
        assert!(x.negotiated.host_key.contains("rsa"), "{:?}", x.negotiated);
        if d.fault == Some(Fault::V6) {
            assert!(x.negotiated.uses_legacy());
        }
    }
    sim.shutdown().await;
}
