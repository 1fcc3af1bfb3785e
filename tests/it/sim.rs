//! End-to-end tests of the RouterOS simulator with a small russh client.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rosbackup::sim::{Fault, FaultSpec, FaultTiming, SimConfig, SimDevice, Simulator};
use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, Preferred};

const T: Duration = Duration::from_secs(20);

struct Client {
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;
    async fn check_server_key(&mut self, k: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = k {
            let fp = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
            *self.seen.lock().expect("lock") = Some(fp);
        }
        Ok(true)
    }
}

/// Wait until `cond` holds (polling; the simulator finishes its bookkeeping after the
/// client saw the end of the output), failing after 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn legacy_preferred() -> Preferred {
    use russh::{cipher, kex, mac};
    Preferred {
        kex: Cow::Owned(vec![kex::DH_G14_SHA1]),
        key: Cow::Owned(vec![russh::keys::Algorithm::Rsa { hash: None }]),
        cipher: Cow::Owned(vec![cipher::AES_128_CTR]),
        mac: Cow::Owned(vec![mac::HMAC_SHA1]),
        ..Preferred::default()
    }
}

async fn connect_with(
    d: &SimDevice,
    preferred: Preferred,
) -> Result<(client::Handle<Client>, String), russh::Error> {
    let cfg = Arc::new(client::Config {
        preferred,
        ..Default::default()
    });
    let seen = Arc::new(Mutex::new(None));
    let h = tokio::time::timeout(
        T,
        client::connect(cfg, (d.host, d.port), Client { seen: seen.clone() }),
    )
    .await
    .map_err(russh::Error::Elapsed)
    .and_then(|r| r)?;
    let fp = seen.lock().expect("lock").clone().unwrap_or_default();
    Ok((h, fp))
}

async fn login(d: &SimDevice) -> client::Handle<Client> {
    let (mut h, _) = connect_with(d, Preferred::default())
        .await
        .expect("connect");
    let r = h
        .authenticate_password(&d.username, &d.password)
        .await
        .expect("auth");
    assert!(r.success(), "auth failed for {}", d.name);
    h
}

#[derive(Debug, Default)]
struct Out {
    data: Vec<u8>,
    exit: Option<u32>,
    eof: bool,
    closed: bool,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Runs `cmd`; stops at Close, when the session ends, or after `limit`.
async fn exec_for(h: &client::Handle<Client>, cmd: &str, limit: Duration) -> Out {
    let mut ch = h.channel_open_session().await.expect("open session");
    ch.exec(true, cmd).await.expect("exec");
    let mut out = Out::default();
    let _ = tokio::time::timeout(limit, async {
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.data.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.exit = Some(exit_status),
                ChannelMsg::Eof => out.eof = true,
                ChannelMsg::Close => {
                    out.closed = true;
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    out
}

async fn exec(h: &client::Handle<Client>, cmd: &str) -> Out {
    let out = exec_for(h, cmd, T).await;
    assert!(out.closed, "{cmd}: channel not closed");
    assert!(out.eof, "{cmd}: no EOF");
    assert_eq!(out.exit, Some(0), "{cmd}: exit status");
    out
}

fn base_cfg(devices: usize, faults: &str) -> SimConfig {
    SimConfig {
        devices,
        listen_base: "127.0.0.1".parse().expect("ip"),
        port: 0,
        one_address: true,
        faults: faults.parse().expect("faults"),
        config_size: Some(8_000),
        seed: 42,
        ..SimConfig::default()
    }
}

fn assert_crlf(b: &[u8]) {
    for (i, c) in b.iter().enumerate() {
        if *c == b'\n' {
            assert!(i > 0 && b[i - 1] == b'\r', "bare LF at byte {i}");
        }
    }
    assert!(b.ends_with(b"\r\n"), "does not end with CRLF");
}

fn new_header(line: &str, version: &str) -> bool {
    // "# 2024-01-15 10:30:00 by RouterOS 7.15.3"
    let b = line.as_bytes();
    line.len() > 22
        && line.starts_with("# ")
        && b[6] == b'-'
        && b[9] == b'-'
        && b[12] == b' '
        && b[15] == b':'
        && line.ends_with(&format!(" by RouterOS {version}"))
}

fn old_header(line: &str, version: &str) -> bool {
    // "# jan/15/2024 10:30:00 by RouterOS 6.49.10"
    let b = line.as_bytes();
    line.len() > 22
        && line.starts_with("# ")
        && b[2..5].iter().all(|c| c.is_ascii_lowercase())
        && b[5] == b'/'
        && b[8] == b'/'
        && line.ends_with(&format!(" by RouterOS {version}"))
}

fn header_ok(line: &str, version: &str) -> bool {
    let (major, minor) = rosbackup::sim::render::version_major_minor(version);
    if major > 7 || (major == 7 && minor >= 10) {
        new_header(line, version)
    } else {
        old_header(line, version)
    }
}

/// Body without header and without `#` lines (what normalization keeps).
fn body_without_comments(text: &str) -> String {
    text.split("\r\n")
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn healthy_and_v6_devices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = dir.path().join("inv.csv");
    let stats = dir.path().join("stats.json");
    let exports = dir.path().join("exports");
    std::fs::create_dir(&exports).expect("mkdir");
    let mut cfg = base_cfg(3, "v6=1");
    cfg.inventory = Some(inv.clone());
    cfg.stats = Some(stats.clone());
    cfg.export_dir = Some(exports.clone());
    let sim = Simulator::start(cfg).await.expect("start");
    let devs = sim.devices().to_vec();
    assert_eq!(devs[0].fault, Some(Fault::V6));
    assert!(devs[0].name.ends_with("-v6"), "{}", devs[0].name);
    assert!(devs[0].routeros_version.starts_with("6."));
    assert!(devs[1].routeros_version.starts_with("7."));
    assert_eq!(devs[1].fault, None);

    // Inventory CSV.
    let csv = std::fs::read_to_string(&inv).expect("inventory");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,tenant_id,name,host,port,username,password,routeros_version"
    );
    assert_eq!(lines.len(), 4);
    for (l, d) in lines[1..].iter().zip(&devs) {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f[0], d.id.to_string());
        assert_eq!(f[1], d.tenant_id.to_string());
        assert_eq!(f[2], d.name);
        assert_eq!(f[3], "127.0.0.1");
        assert_eq!(f[4], d.port.to_string());
        assert_ne!(d.port, 0);
        assert_eq!(f[5], d.username);
        assert_eq!(f[6], d.password);
        assert_eq!(f[7], d.routeros_version);
    }

    // Healthy RouterOS 7 device.
    let d = &devs[1];
    let h = login(d).await;
    let out = exec(&h, "/export").await;
    let text = out.text();
    assert_crlf(&out.data);
    let first = text.lines().next().expect("header");
    assert!(header_ok(first, &d.routeros_version), "{first}");
    assert!(text.contains("\r\n# software id = "));
    assert!(text.contains("\r\n/interface bridge\r\n"));
    assert!(text.contains(&format!("set name={}\r\n", d.name)));
    assert!(!text.contains("passphrase=") && !text.contains("wpa2-pre-shared-key="));
    assert!(!text.contains("private-key="));
    for l in text.split("\r\n") {
        assert!(l.len() <= 79, "line too long: {l}");
    }
    assert_eq!(sim.last_export(d.id).as_deref(), Some(&out.data[..]));
    let len = out.data.len() as f64;
    assert!((len - 8_000.0).abs() / 8_000.0 < 0.05, "size {len}");

    let sens = exec(&h, "/export show-sensitive").await.text();
    assert!(sens.contains("private-key=") && sens.contains("secret="));
    assert!(sens.contains("passphrase=") || sens.contains("wpa2-pre-shared-key="));
    let terse = exec(&h, "/export terse show-sensitive").await.text();
    let terse2 = exec(&h, "/export show-sensitive terse").await.text();
    assert_eq!(
        body_without_comments(&terse),
        body_without_comments(&terse2)
    );
    assert!(terse.contains("private-key="));
    for l in terse.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
        assert!(
            l.starts_with('/') || l.starts_with('#') || l.starts_with("    "),
            "{l}"
        );
    }
    let hide = exec(&h, "/export hide-sensitive").await.text();
    assert_eq!(body_without_comments(&hide), body_without_comments(&text));
    // Unchanged device: byte-identical except the header.
    let again = exec(&h, "/export").await.text();
    assert_eq!(
        again.split_once("\r\n").map(|x| x.1),
        text.split_once("\r\n").map(|x| x.1)
    );

    let res = exec(&h, "/system resource print").await.text();
    assert!(
        res.contains(&format!("version: {} (stable)\r\n", d.routeros_version)),
        "{res}"
    );
    assert!(res.contains("board-name: "));
    let bad = exec(&h, "/frobnicate now").await.text();
    assert_eq!(bad, "bad command name frobnicate (line 1 column 2)\r\n");

    // Two exec channels concurrently in one session.
    let (a, b) = tokio::join!(exec(&h, "/export"), exec(&h, "/system resource print"));
    assert!(a.text().contains("/ip address"));
    assert!(b.text().contains("version: "));
    drop(h);

    // RouterOS 6 device.
    let d6 = &devs[0];
    let h6 = login(d6).await;
    let out6 = exec(&h6, "/export").await;
    let t6 = out6.text();
    assert!(
        old_header(t6.lines().next().expect("h"), &d6.routeros_version),
        "{t6}"
    );
    assert!(t6.contains("wpa2-pre-shared-key=") && t6.contains("secret="));
    let hidden6 = exec(&h6, "/export hide-sensitive").await.text();
    assert!(!hidden6.contains("wpa2-pre-shared-key=") && !hidden6.contains("secret="));
    let err6 = exec(&h6, "/export show-sensitive").await;
    assert_eq!(err6.text(), "expected end of command (line 1 column 9)\r\n");
    let res6 = exec(&h6, "/system resource print").await.text();
    assert!(res6.contains(&format!("version: {} (stable)", d6.routeros_version)));
    drop(h6);

    // Export copies and stats, once the simulator has written them.
    let copy_path = exports.join(format!("{}.rsc", d6.id));
    eventually("the export copy and the stats", || {
        std::fs::read(&copy_path).ok() == sim.last_export(d6.id)
            && sim.stats()[&d6.id].exports == 2
            && sim.stats()[&d.id].exports == 7
    })
    .await;
    let copy = std::fs::read(&copy_path).expect("export copy");
    assert_eq!(Some(copy), sim.last_export(d6.id));
    let st = sim.stats();
    assert_eq!(st[&d.id].sessions, 1);
    assert_eq!(st[&d.id].exports, 7);
    assert!(st[&d.id].max_concurrent >= 1);
    assert_eq!(st[&d6.id].exports, 2);
    assert_eq!(st[&devs[2].id].sessions, 0);
    let ids: Vec<_> = devs.iter().map(|d| d.id).collect();
    sim.shutdown().await;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats).expect("stats file")).expect("json");
    assert_eq!(json[ids[1].to_string()]["exports"], 7);
    assert_eq!(json[ids[1].to_string()]["sessions"], 1);
    assert_eq!(json[ids[2].to_string()]["sessions"], 0);
}

#[tokio::test]
async fn auth_and_hostkey_faults() {
    let sim = Simulator::start(base_cfg(3, "auth=1,hostkey=1"))
        .await
        .expect("start");
    let devs = sim.devices().to_vec();
    let (mut h, _) = connect_with(&devs[0], Preferred::default())
        .await
        .expect("connect");
    let r = h
        .authenticate_password(&devs[0].username, &devs[0].password)
        .await
        .expect("auth call");
    assert!(!r.success(), "auth fault accepted the password");

    // Healthy device: stable key equal to the reported fingerprint.
    let (_, fp_a) = connect_with(&devs[2], Preferred::default())
        .await
        .expect("c");
    let (_, fp_b) = connect_with(&devs[2], Preferred::default())
        .await
        .expect("c");
    assert_eq!(fp_a, fp_b);
    assert_eq!(sim.host_key_fingerprint(devs[2].id), Some(fp_a.clone()));
    assert!(fp_a.starts_with("SHA256:"));

    let (_, k1) = connect_with(&devs[1], Preferred::default())
        .await
        .expect("c");
    assert_eq!(sim.host_key_fingerprint(devs[1].id), Some(k1.clone()));
    let (h2, k2) = connect_with(&devs[1], Preferred::default())
        .await
        .expect("c");
    assert_ne!(k1, k2, "hostkey fault reused its key");
    assert_eq!(sim.host_key_fingerprint(devs[1].id), Some(k2));
    drop(h2);
    // Wrong password on a healthy device.
    let (mut h3, _) = connect_with(&devs[2], Preferred::default())
        .await
        .expect("c");
    let r = h3
        .authenticate_password(&devs[2].username, "wrong")
        .await
        .expect("auth call");
    assert!(!r.success());
    sim.shutdown().await;
}

#[tokio::test]
async fn annotate_and_change_faults() {
    let sim = Simulator::start(base_cfg(2, "annotate=1,change=1"))
        .await
        .expect("start");
    let devs = sim.devices().to_vec();
    let ha = login(&devs[0]).await;
    let a1 = exec(&ha, "/export").await.text();
    let mut differs = false;
    for _ in 0..5 {
        let a2 = exec(&ha, "/export").await.text();
        assert_eq!(body_without_comments(&a1), body_without_comments(&a2));
        differs |= a1.split_once("\r\n").map(|x| x.1) != a2.split_once("\r\n").map(|x| x.1);
    }
    assert!(differs, "annotations never changed the raw body");
    let first_section = a1.find("\r\n/").expect("section");
    let annotated = a1[first_section..]
        .split("\r\n")
        .filter(|l| l.starts_with("# "))
        .count();
    assert!(annotated >= 1, "no annotation in body");

    let hc = login(&devs[1]).await;
    let c1 = exec(&hc, "/export").await.text();
    let c2 = exec(&hc, "/export").await.text();
    assert_ne!(body_without_comments(&c1), body_without_comments(&c2));
    assert!(c2.contains("/system note"));
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_faults() {
    let mut cfg = base_cfg(
        8,
        "refuse=1,silent=1,stall=1,drop=1,garbage=1,huge=1,slow=1",
    );
    cfg.huge_bytes = 1_000_000;
    cfg.timing = FaultTiming {
        slow_interval: Duration::from_millis(100),
        drop_delay: Duration::from_millis(50),
        ..FaultTiming::default()
    };
    let sim = Simulator::start(cfg).await.expect("start");
    let devs = sim.devices().to_vec();
    let by = |f: Fault| {
        devs.iter()
            .find(|d| d.fault == Some(f))
            .expect("device")
            .clone()
    };

    // refuse: connection refused.
    let r = connect_with(&by(Fault::Refuse), Preferred::default()).await;
    match r {
        Err(russh::Error::IO(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected refused, got {:?}", other.map(|_| ())),
    }
    assert_eq!(sim.host_key_fingerprint(by(Fault::Refuse).id), None);

    // silent: TCP accepted, no SSH banner ever.
    let silent = by(Fault::Silent);
    let cfg = Arc::new(client::Config::default());
    let seen = Arc::new(Mutex::new(None));
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        client::connect(cfg, (silent.host, silent.port), Client { seen }),
    )
    .await;
    assert!(r.is_err(), "silent device answered");

    // stall: partial export, then nothing (no EOF/close) while the connection stays open.
    let hs = login(&by(Fault::Stall)).await;
    let out = exec_for(&hs, "/export", Duration::from_millis(700)).await;
    let full = sim.last_export(by(Fault::Stall).id).expect("full export");
    assert!(!out.data.is_empty() && out.data.len() < full.len());
    assert!(full.starts_with(&out.data));
    assert!(!out.closed && !out.eof && out.exit.is_none());
    assert!(!hs.is_closed());

    // drop: partial export, then the TCP connection dies without exit status.
    let hd = login(&by(Fault::Drop)).await;
    let out = exec_for(&hd, "/export", Duration::from_secs(5)).await;
    let full = sim.last_export(by(Fault::Drop).id).expect("full export");
    assert!(!out.data.is_empty() && out.data.len() < full.len());
    assert!(out.exit.is_none() && !out.closed);
    eventually("the dropped connection to close", || hd.is_closed()).await;

    // garbage: no RouterOS section lines.
    let hg = login(&by(Fault::Garbage)).await;
    let g = exec(&hg, "/export").await.text();
    assert!(!g.is_empty());
    assert!(!g.split("\r\n").any(|l| l.starts_with('/')), "{g}");

    // huge: exactly huge_bytes of export-like text.
    let hh = login(&by(Fault::Huge)).await;
    let h = exec(&hh, "/export").await;
    assert_eq!(h.data.len(), 1_000_000);
    assert!(h.text().starts_with("# "));
    assert!(
        h.text()
            .contains("\r\n/ip firewall address-list\r\nadd address=")
    );

    // slow: only a few lines within the window.
    let hsl = login(&by(Fault::Slow)).await;
    let out = exec_for(&hsl, "/export", Duration::from_millis(450)).await;
    let lines = out.data.iter().filter(|b| **b == b'\n').count();
    assert!((2..=8).contains(&lines), "{lines} lines");
    assert!(!out.closed);

    let st = sim.stats();
    for f in [
        Fault::Stall,
        Fault::Drop,
        Fault::Huge,
        Fault::Garbage,
        Fault::Slow,
    ] {
        assert_eq!(st[&by(f).id].exports, 0, "{f}");
        assert_eq!(st[&by(f).id].sessions, 1, "{f}");
    }
    assert_eq!(st[&silent.id].sessions, 1);
    // Shutdown must not hang on stalled/silent/slow sessions.
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown())
        .await
        .expect("shutdown hung");
}

#[tokio::test]
async fn routeros_algorithms() {
    let mut cfg = base_cfg(2, "v6=1");
    cfg.routeros_algorithms = true;
    let sim = Simulator::start(cfg).await.expect("start");
    let devs = sim.devices().to_vec();
    for d in &devs {
        // A modern-only client (curve25519) fails.
        let modern = Preferred {
            kex: Cow::Owned(vec![russh::kex::CURVE25519]),
            ..Preferred::default()
        };
        let r = connect_with(d, modern).await;
        assert!(r.is_err(), "{}: curve25519-only client connected", d.name);

        // The RouterOS-6 legacy set works.
        let (mut h, fp) = connect_with(d, legacy_preferred())
            .await
            .expect("legacy connect");
        assert_eq!(Some(fp), sim.host_key_fingerprint(d.id));
        assert!(
            h.authenticate_password(&d.username, &d.password)
                .await
                .expect("auth")
                .success()
        );
        let out = exec(&h, "/export").await;
        assert!(out.text().contains("/ip address"));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn addressing_and_determinism() {
    let cfg = SimConfig {
        devices: 2,
        port: 0,
        config_size: Some(3_000),
        seed: 9,
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg.clone())
        .await
        .expect("start (needs 127.0.1.x)");
    let a = sim.devices().to_vec();
    assert_eq!(a[0].host.to_string(), "127.0.1.1");
    assert_eq!(a[1].host.to_string(), "127.0.1.2");
    let fps: Vec<_> = a.iter().map(|d| sim.host_key_fingerprint(d.id)).collect();
    let h = login(&a[1]).await;
    let e1 = exec(&h, "/export").await.text();
    drop(h);
    sim.shutdown().await;

    let sim = Simulator::start(cfg).await.expect("restart");
    let b = sim.devices().to_vec();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (x.id, &x.name, &x.username, &x.password),
            (y.id, &y.name, &y.username, &y.password)
        );
        assert_eq!(x.tenant_id, y.tenant_id);
        assert_eq!(x.routeros_version, y.routeros_version);
    }
    let fps2: Vec<_> = b.iter().map(|d| sim.host_key_fingerprint(d.id)).collect();
    assert_eq!(fps, fps2);
    let h = login(&b[1]).await;
    let e2 = exec(&h, "/export").await.text();
    assert_eq!(
        e1.split_once("\r\n").map(|x| x.1),
        e2.split_once("\r\n").map(|x| x.1)
    );
    sim.shutdown().await;

    // Too many faults for the fleet, and bad specs.
    let bad = SimConfig {
        faults: "auth=3".parse().expect("spec"),
        ..base_cfg(2, "")
    };
    assert!(Simulator::start(bad).await.is_err());
    assert!("auth=1,nope=2".parse::<FaultSpec>().is_err());
}

#[tokio::test]
async fn serves_real_export_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/routeros/exports");
    if !dir.is_dir() {
        if crate::common::in_ci() {
            panic!("{} missing", dir.display());
        }
        eprintln!("skipping: {} not found", dir.display());
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rsc"))
        .collect();
    files.sort();
    let mut cfg = base_cfg(files.len() + 1, "");
    cfg.configs_dir = Some(dir.clone());
    let sim = Simulator::start(cfg).await.expect("start");
    let devs = sim.devices().to_vec();
    // Check a few: the first, one v6 file, and the wrap-around device.
    let v6_idx = devs
        .iter()
        .position(|d| d.routeros_version.starts_with("6."))
        .expect("a v6 export in the corpus");
    for i in [0, v6_idx, files.len()] {
        let d = &devs[i];
        let raw = std::fs::read(&files[i % files.len()]).expect("file");
        let raw = String::from_utf8_lossy(&raw).replace("\r\n", "\n");
        let h = login(d).await;
        let out = exec(&h, "/export").await;
        assert_crlf(&out.data);
        let text = out.text().replace("\r\n", "\n");
        let first = text.lines().next().expect("header");
        assert!(header_ok(first, &d.routeros_version), "{first}");
        let raw_first = raw.lines().next().unwrap_or("");
        let want_body = if raw_first.contains(" by RouterOS ") {
            raw.split_once('\n').map(|x| x.1).unwrap_or("")
        } else {
            &raw[..]
        };
        let got_body = text.split_once('\n').map(|x| x.1).unwrap_or("");
        assert_eq!(
            got_body.trim_end(),
            want_body.trim_end(),
            "{}",
            files[i].display()
        );
        if d.routeros_version.starts_with("6.") {
            let e = exec(&h, "/export show-sensitive").await.text();
            assert_eq!(e, "expected end of command (line 1 column 9)\r\n");
        }
    }
    sim.shutdown().await;
}

/// Scale check (manual: `cargo test --test sim -- --ignored`): 10,000 devices on
/// 127.0.1.1.., 1,000 concurrent exports.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn scale_10k_devices() {
    let t = std::time::Instant::now();
    let sim = Simulator::start(SimConfig {
        devices: 10_000,
        port: 0,
        ..SimConfig::default()
    })
    .await
    .expect("start");
    eprintln!("started 10k devices in {:?}", t.elapsed());
    let devs: Vec<SimDevice> = sim
        .devices()
        .iter()
        .step_by(10)
        .take(1000)
        .cloned()
        .collect();
    let t = std::time::Instant::now();
    let mut js = tokio::task::JoinSet::new();
    for d in devs {
        js.spawn(async move {
            let h = login(&d).await;
            exec(&h, "/export").await.data.len()
        });
    }
    let mut total = 0;
    while let Some(r) = js.join_next().await {
        total += r.expect("join");
    }
    eprintln!("1000 exports, {total} bytes in {:?}", t.elapsed());
    let st = sim.stats();
    assert_eq!(st.values().map(|s| s.exports).sum::<u64>(), 1000);
    sim.shutdown().await;
}
