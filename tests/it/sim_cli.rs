//! `rosbackup sim` as a process: inventory, export-dir, stats file, signal shutdown; and
//! `rosbackup export` against the devices it lists.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
    c.env("LOG_FORMAT", "text")
        .env_remove("NORMALIZATION_VERSION");
    c
}

/// Wait (bounded) until the inventory lists `n` devices.
fn read_inventory(path: &Path, n: usize) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let rows: Vec<Vec<String>> = text
                .lines()
                .map(|l| l.split(',').map(str::to_string).collect())
                .collect();
            if rows.len() == n + 1 {
                return rows;
            }
        }
        assert!(Instant::now() < deadline, "inventory never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The simulator process, killed if the test fails before it stops it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn sim_process_serves_its_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("fleet.csv");
    let stats = dir.path().join("stats.json");
    let exports = dir.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let mut sim = KillOnDrop(
        bin()
            .args([
                "sim",
                "--devices",
                "3",
                "--listen-base",
                "127.0.2.1",
                "--port",
                "0",
            ])
            .args(["--faults", "auth=1", "--export-delay", "0.3", "--seed", "7"])
            .arg("--inventory")
            .arg(&inv)
            .arg("--stats")
            .arg(&stats)
            .arg("--export-dir")
            .arg(&exports)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let rows = read_inventory(&inv, 3);
    assert_eq!(
        rows[0].join(","),
        "id,tenant_id,name,host,port,username,password,routeros_version"
    );
    // It holds the passwords: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&inv).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "inventory mode {mode:o}");
    let export = |row: &Vec<String>| {
        bin()
            .args([
                "export", "--json", "--host", &row[3], "--port", &row[4], "--user", &row[5],
            ])
            .env("ROSBACKUP_PASSWORD", &row[6])
            .output()
            .unwrap()
    };
    let auth = rows
        .iter()
        .skip(1)
        .find(|r| r[2].ends_with("-auth"))
        .unwrap();
    let healthy = rows
        .iter()
        .skip(1)
        .find(|r| !r[2].ends_with("-auth"))
        .unwrap();
    assert!(healthy[3].starts_with("127.0.2."), "{healthy:?}");

    let out = export(healthy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The simulator writes the copy after the session ends: wait for it (deadline).
    let copy = exports.join(format!("{}.rsc", healthy[0]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let served = loop {
        match std::fs::read(&copy) {
            Ok(b) => break b,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("the simulator did not write {}: {e}", copy.display())
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert_eq!(v["bytes"], served.len());
    assert_eq!(
        v["sha256_hash"],
        rosbackup::normalize::hash(&rosbackup::normalize::normalize(
            &served,
            rosbackup::normalize::Version::V2
        ))
    );
    assert_eq!(v["routeros_version"], healthy[7].as_str());
    assert!(
        v["duration_ms"].as_u64().unwrap() >= 300,
        "export delay not applied: {v}"
    );

    let out = export(auth);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_kind"], "auth_failed");

    // SIGTERM: the simulator stops and writes its stats one last time.
    let st = Command::new("kill")
        .arg(sim.0.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let status = sim.0.wait().unwrap();
    assert!(status.success(), "sim exited with {status}");
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(stats[&healthy[0]]["exports"], 1);
    assert_eq!(stats[&healthy[0]]["max_concurrent"], 1);
    assert_eq!(stats[&auth[0]]["exports"], 0);
    assert!(stats[&auth[0]]["sessions"].as_u64().unwrap() >= 1);
}
