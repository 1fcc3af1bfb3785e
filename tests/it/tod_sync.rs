//! A the-other-dude backend's database as the inventory (`rosbackup devices sync
//! --from-tod`, `rosbackup::tod::sync`), against the real PostgreSQL: each test makes a
//! database of its own with the backend's tables (the columns the Go poller reads, with
//! their upstream types), its credentials encrypted by an independent implementation —
//! Python's `cryptography` AESGCM, as the backend does (`tod_encrypt.py`, run from a
//! virtualenv under the target directory that the test makes and fills from PyPI) — and
//! the simulator as the routers.
//!
//! Without python3 (or PyPI) the tests are skipped with a message; under `CI=true` that
//! is a failure.

use crate::common::fleet::{Fleet, FleetOptions, TestDb};
use crate::common::{drop_database, fresh_database};
use base64::Engine;
use rosbackup::credentials::CredentialKey;
use rosbackup::queue::BackupJob;
use rosbackup::schedule::ScheduleSettings;
use rosbackup::sim::{SimConfig, SimDevice};
use rosbackup::store::{RunStatus, Store};
use rosbackup::tod::{self, SkipReason, SyncOptions, SyncReport};
use sqlx::postgres::PgPool;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use uuid::Uuid;

// ---- the independent encryption ----------------------------------------------------

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A Python with `cryptography`: a virtualenv under the target directory, made (and
/// filled from PyPI) once per machine. `Err` says why there is none. Tests run as
/// processes of their own (nextest), so the check-and-make holds an exclusive lock on a
/// file beside the venv: the first process makes it, the others wait and then find it.
fn make_python() -> Result<PathBuf, String> {
    let dir = target_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.join("tod-crypto-venv.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    let venv = dir.join("tod-crypto-venv");
    let python = venv.join("bin/python");
    let has_crypto = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import cryptography.hazmat.primitives.ciphers.aead"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has_crypto(&python) {
        return Ok(python);
    }
    let system = Command::new("python3").arg("--version").output();
    if !system.is_ok_and(|o| o.status.success()) {
        return Err("python3 is not installed".into());
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .output()
        .map_err(|e| format!("python3 -m venv: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv {}: {} (python3-venv missing?)",
            venv.display(),
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "-q",
            "--disable-pip-version-check",
            "cryptography",
        ])
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !pip.status.success() || !has_crypto(&python) {
        return Err(format!(
            "pip install cryptography (from PyPI) failed: {}",
            String::from_utf8_lossy(&pip.stderr)
        ));
    }
    Ok(python)
}

/// The Python to encrypt with, or `None` (the test is skipped; under CI it fails).
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(make_python) {
        Ok(p) => Some(p.clone()),
        Err(why) if in_ci() => panic!("no Python with cryptography, and CI=true needs it: {why}"),
        Err(why) => {
            eprintln!("skipped: no Python with cryptography ({why})");
            None
        }
    }
}

/// Encrypt each plaintext under `key_b64` with `tod_encrypt.py`.
fn encrypt(python: &PathBuf, key_b64: &str, plaintexts: &[String]) -> Vec<Vec<u8>> {
    use std::io::Write;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/tod_encrypt.py");
    let mut child = Command::new(python)
        .arg(script)
        .env("TOD_KEY", key_b64)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tod_encrypt.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(plaintexts).unwrap().as_bytes())
        .expect("write plaintexts");
    let out = child.wait_with_output().expect("tod_encrypt.py");
    assert!(
        out.status.success(),
        "tod_encrypt.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sealed: Vec<String> = serde_json::from_slice(&out.stdout).expect("JSON out");
    sealed
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
        .collect()
}

fn login(user: &str, password: &str) -> String {
    serde_json::json!({"username": user, "password": password}).to_string()
}

fn typed_login(user: &str, password: &str) -> String {
    serde_json::json!({"type": "routeros", "username": user, "password": password}).to_string()
}

// ---- the backend's database ---------------------------------------------------------

/// The backend's tables as far as the Go poller reads them, with their types (alembic
/// migrations 001, 002, 028, 037, 039).
const SCHEMA: &[&str] = &[
    "CREATE TABLE tenants (id uuid PRIMARY KEY, name varchar(255) NOT NULL)",
    "CREATE TABLE certificate_authorities (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
       tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, cert_pem text NOT NULL)",
    "CREATE TABLE credential_profiles (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
       tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, name text NOT NULL, \
       description text, credential_type text NOT NULL, encrypted_credentials bytea, \
       encrypted_credentials_transit text, created_at timestamptz NOT NULL DEFAULT now(), \
       updated_at timestamptz NOT NULL DEFAULT now(), UNIQUE (tenant_id, name))",
    "CREATE TABLE devices (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
       tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE, \
       hostname varchar(255) NOT NULL, ip_address varchar(45) NOT NULL, \
       api_port integer NOT NULL DEFAULT 8728, api_ssl_port integer NOT NULL DEFAULT 8729, \
       routeros_version varchar(100), routeros_major_version integer, \
       encrypted_credentials bytea, encrypted_credentials_transit text, \
       status varchar(20) NOT NULL DEFAULT 'unknown', tls_mode varchar(20) NOT NULL DEFAULT 'auto', \
       ssh_port integer DEFAULT 22, ssh_host_key_fingerprint text, \
       ssh_host_key_first_seen timestamptz, ssh_host_key_last_verified timestamptz, \
       device_type text NOT NULL DEFAULT 'routeros', snmp_port integer DEFAULT 161, \
       snmp_version text, snmp_profile_id uuid, \
       credential_profile_id uuid REFERENCES credential_profiles (id) ON DELETE SET NULL, \
       created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), \
       CONSTRAINT uq_devices_tenant_hostname UNIQUE (tenant_id, hostname))",
];

/// The backend's database. The sync connects as `role`, which has exactly the Go
/// poller's grants (read `devices` and `credential_profiles`, update the host key
/// columns); the test itself writes through `pool` as the owner.
struct Backend {
    /// The poller role's URL: what the sync is given.
    url: String,
    name: String,
    role: String,
    pool: PgPool,
}

/// `url` with `user` as its user (no password: the test server trusts local users).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

impl Backend {
    async fn new() -> Backend {
        let (owner_url, name) = fresh_database().await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&owner_url)
            .await
            .expect("connect to the backend's test database");
        for stmt in SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(*stmt))
                .execute(&pool)
                .await
                .expect("backend schema");
        }
        let role = format!("tod_poller_{}", Uuid::new_v4().simple());
        for stmt in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("GRANT CONNECT ON DATABASE \"{name}\" TO {role}"),
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!(
                "GRANT SELECT ON devices, credential_profiles, certificate_authorities TO {role}"
            ),
            format!(
                "GRANT UPDATE (ssh_host_key_fingerprint, ssh_host_key_first_seen, \
                 ssh_host_key_last_verified) ON devices TO {role}"
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(stmt))
                .execute(&pool)
                .await
                .expect("the poller role");
        }
        Backend {
            url: as_user(&owner_url, &role),
            name,
            role,
            pool,
        }
    }

    async fn tenant(&self, id: Uuid) {
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(format!("tenant-{id}"))
            .execute(&self.pool)
            .await
            .expect("tenant");
    }

    /// A device row for a simulated router, with the given credential columns.
    async fn device(&self, d: &SimDevice, creds: Option<&[u8]>, transit: Option<&str>) {
        self.tenant(d.tenant_id).await;
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, hostname, ip_address, ssh_port, routeros_version, \
             encrypted_credentials, encrypted_credentials_transit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(d.id)
        .bind(d.tenant_id)
        .bind(&d.name)
        .bind(d.host.to_string())
        .bind(i32::from(d.port))
        .bind(format!("{} (stable)", d.routeros_version))
        .bind(creds)
        .bind(transit)
        .execute(&self.pool)
        .await
        .expect("device row");
    }

    /// A credential profile with legacy credentials, attached to the device.
    async fn profile(&self, d: &SimDevice, creds: &[u8]) {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO credential_profiles (tenant_id, name, credential_type, encrypted_credentials) \
             VALUES ($1, $2, 'routeros', $3) RETURNING id",
        )
        .bind(d.tenant_id)
        .bind(format!("profile-{}", d.name))
        .bind(creds)
        .fetch_one(&self.pool)
        .await
        .expect("profile");
        sqlx::query("UPDATE devices SET credential_profile_id = $2 WHERE id = $1")
            .bind(d.id)
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("attach profile");
    }

    async fn set(&self, id: Uuid, column: &str, value: Option<&[u8]>) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE devices SET {column} = $2 WHERE id = $1"
        )))
        .bind(id)
        .bind(value)
        .execute(&self.pool)
        .await
        .expect("update backend row");
    }

    async fn pin(&self, id: Uuid) -> Option<String> {
        sqlx::query_scalar("SELECT ssh_host_key_fingerprint FROM devices WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .expect("pin")
    }

    async fn set_pin(&self, id: Uuid, pin: Option<&str>) {
        sqlx::query("UPDATE devices SET ssh_host_key_fingerprint = $2 WHERE id = $1")
            .bind(id)
            .bind(pin)
            .execute(&self.pool)
            .await
            .expect("set pin");
    }

    /// Everything upstream but the one column the sync may write.
    async fn snapshot(&self) -> Vec<serde_json::Value> {
        let mut rows: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT to_jsonb(d) - 'ssh_host_key_fingerprint' FROM devices d ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("snapshot");
        let profiles: Vec<serde_json::Value> =
            sqlx::query_scalar("SELECT to_jsonb(p) FROM credential_profiles p ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .expect("snapshot");
        rows.extend(profiles);
        rows
    }

    async fn drop(self) {
        self.pool.close().await;
        drop_database(&self.name).await;
        // Its grants went with the database; the role is the server's.
        let admin = PgPool::connect(&crate::common::database_url())
            .await
            .expect("connect to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS {}",
            self.role
        )))
        .execute(&admin)
        .await
        .expect("drop the poller role");
        admin.close().await;
    }
}

fn schedule() -> ScheduleSettings {
    ScheduleSettings {
        interval: Duration::from_secs(3600),
        ..ScheduleSettings::default()
    }
}

async fn sync(store: &Store, backend: &Backend, key: &CredentialKey) -> SyncReport {
    tod::sync(
        store,
        &backend.url,
        key,
        &schedule(),
        SyncOptions::default(),
    )
    .await
    .expect("sync")
}

/// `rosbackup devices sync --from-tod URL` on `db` with `key`.
fn cli_sync(
    db_url: &str,
    key_b64: &str,
    upstream: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
    for v in rosbackup::config::VARS {
        c.env_remove(v.name);
    }
    let out = c
        .env("LOG_FORMAT", "text")
        .env("DATABASE_URL", db_url)
        .env("CREDENTIAL_ENCRYPTION_KEY", key_b64)
        .args(["devices", "sync", "--from-tod", upstream])
        .args(extra)
        .output()
        .expect("run rosbackup");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn backup(fleet: &Fleet, id: Uuid, tenant: Uuid) -> rosbackup::worker::JobReport {
    let env = fleet.job_env();
    rosbackup::worker::execute(&env, &BackupJob::manual(id, tenant), "tod-sync")
        .await
        .expect("execute")
}

async fn count(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(store.pool())
        .await
        .expect("count")
}

// ---- the tests ----------------------------------------------------------------------

/// The whole life of a synced fleet: the first sync as an operator runs it (new devices,
/// a transit device skipped with its reason, the SNMP device ignored, an upstream pin
/// imported), a backup of every synced device, our first-use pins written back upstream
/// (and nothing else written there), an operator's pin reset upstream followed here, a
/// credential change (wrong, then right: the auth block lifted), and removals with the
/// config history kept, then dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_database_is_synced_backed_up_and_kept_in_agreement() {
    let Some(py) = python() else { return };
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 5,
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let backend = Backend::new().await;
    let sim = fleet.sim.devices().to_vec();
    let (d0, d1, d2, transit, snmp) = (&sim[0], &sim[1], &sim[2], &sim[3], &sim[4]);
    let sealed = encrypt(
        &py,
        &fleet.key_b64,
        &[
            login(&d0.username, &d0.password),
            typed_login(&d1.username, &d1.password),
            login(&d2.username, &d2.password),
            login(&snmp.username, &snmp.password),
            login(&d0.username, "wrong-password-123"),
            login(&d0.username, &d0.password),
        ],
    );
    backend.device(d0, Some(sealed[0].as_slice()), None).await;
    // d1's login lives on its credential profile; its host key is pinned upstream.
    backend.device(d1, None, None).await;
    backend.profile(d1, &sealed[1]).await;
    let d1_pin = fleet.sim.host_key_fingerprint(d1.id).expect("fingerprint");
    backend.set_pin(d1.id, Some(d1_pin.as_str())).await;
    backend.device(d2, Some(sealed[2].as_slice()), None).await;
    backend
        .device(transit, None, Some("vault:v1:c2VjcmV0LWNpcGhlcnRleHQ="))
        .await;
    backend.device(snmp, Some(sealed[3].as_slice()), None).await;
    sqlx::query("UPDATE devices SET device_type = 'snmp' WHERE id = $1")
        .bind(snmp.id)
        .execute(&backend.pool)
        .await
        .unwrap();
    let before = backend.snapshot().await;
    // The sync runs as a role with only the Go poller's grants: it could not write more.
    let poller = PgPool::connect(&backend.url)
        .await
        .expect("the poller role");
    let denied = sqlx::query("UPDATE devices SET hostname = 'x'")
        .execute(&poller)
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    poller.close().await;

    // The first sync, as an operator runs it.
    let (code, stdout, stderr) = cli_sync(&fleet.db.url, &fleet.key_b64, &backend.url, &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("synced 3 devices: 3 new, 0 updated, 0 removed, 1 skipped (transit credentials)"),
        "{stdout}"
    );
    let skipped = lines.next().expect("the skipped device");
    assert!(
        skipped.starts_with(&format!(
            "skipped {} ({}, tenant {}): ",
            transit.name, transit.id, transit.tenant_id
        )) && skipped.contains("OpenBao Transit"),
        "{skipped}"
    );
    for secret in [&d0.password, &d1.password, &d2.password] {
        assert!(!stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()));
    }
    assert!(!stdout.contains("c2VjcmV0"), "no ciphertext printed");

    let store = fleet.store();
    assert_eq!(count(store).await, 3);
    for d in [d0, d1, d2] {
        let row = store.device(d.id).await.unwrap().expect("synced");
        assert_eq!(row.tenant_id, d.tenant_id);
        assert_eq!(
            (row.name.as_str(), row.host.as_str()),
            (d.name.as_str(), "127.0.0.1")
        );
        assert_eq!(row.ssh_port, i32::from(d.port));
        assert_eq!(row.username, d.username);
        assert_eq!(
            row.routeros_version.as_deref(),
            Some(d.routeros_version.as_str())
        );
        assert!(row.enabled);
        assert_eq!(
            store.password(&fleet.key, d.id).await.unwrap().expose(),
            d.password
        );
    }
    let row1 = store.device(d1.id).await.unwrap().unwrap();
    assert_eq!(
        row1.ssh_host_key_fingerprint.as_deref(),
        Some(d1_pin.as_str())
    );
    assert!(store.device(transit.id).await.unwrap().is_none());
    assert!(store.device(snmp.id).await.unwrap().is_none());

    // A full backup run of the synced fleet.
    for d in [d0, d1, d2] {
        let r = backup(&fleet, d.id, d.tenant_id).await;
        assert_eq!(r.status, RunStatus::Success, "{}: {r:?}", d.name);
    }
    assert_eq!(fleet.sim.stats()[&transit.id].sessions, 0);
    let d0_pin = fleet.sim.host_key_fingerprint(d0.id).unwrap();
    let d2_pin = fleet.sim.host_key_fingerprint(d2.id).unwrap();
    let row0 = store.device(d0.id).await.unwrap().unwrap();
    assert_eq!(
        row0.ssh_host_key_fingerprint.as_deref(),
        Some(d0_pin.as_str())
    );

    // The next sync writes our first-use pins back where upstream has none, and nothing
    // else anywhere upstream; d1's upstream pin stays as it was.
    let r = sync(store, &backend, &fleet.key).await;
    assert_eq!(
        (r.inserted, r.updated, r.unchanged, r.removed),
        (0, 0, 3, 0),
        "{r:?}"
    );
    assert_eq!(r.written_back, 2, "{r:?}");
    assert_eq!(backend.pin(d0.id).await.as_deref(), Some(d0_pin.as_str()));
    assert_eq!(backend.pin(d2.id).await.as_deref(), Some(d2_pin.as_str()));
    assert_eq!(backend.pin(d1.id).await.as_deref(), Some(d1_pin.as_str()));
    assert_eq!(backend.pin(transit.id).await, None);
    assert_eq!(
        backend.snapshot().await,
        before,
        "only ssh_host_key_fingerprint is written"
    );
    let r = sync(store, &backend, &fleet.key).await;
    assert_eq!(
        r.summary(),
        "synced 3 devices: 0 new, 0 updated, 0 removed, 1 skipped (transit credentials)"
    );

    // An operator resets d0's pin upstream: ours is forgotten too, the next backup pins
    // on first use again and the sync after it writes that back.
    backend.set_pin(d0.id, None).await;
    let r = sync(store, &backend, &fleet.key).await;
    assert_eq!(r.updated, 1, "{r:?}");
    let row0 = store.device(d0.id).await.unwrap().unwrap();
    assert_eq!(row0.ssh_host_key_fingerprint, None);
    assert_eq!(
        backup(&fleet, d0.id, d0.tenant_id).await.status,
        RunStatus::Success
    );
    let r = sync(store, &backend, &fleet.key).await;
    assert_eq!(r.written_back, 1, "{r:?}");
    assert_eq!(backend.pin(d0.id).await.as_deref(), Some(d0_pin.as_str()));

    // A credential change upstream: a wrong password blocks the device here (auth_failed);
    // the right one, synced, lifts the block and the backup works again.
    backend
        .set(d0.id, "encrypted_credentials", Some(sealed[4].as_slice()))
        .await;
    let r = sync(store, &backend, &fleet.key).await;
    assert_eq!((r.updated, r.unchanged), (1, 2), "{r:?}");
    assert_eq!(
        store.password(&fleet.key, d0.id).await.unwrap().expose(),
        "wrong-password-123"
    );
    let r0 = backup(&fleet, d0.id, d0.tenant_id).await;
    assert_eq!(r0.error_kind.as_deref(), Some("auth_failed"), "{r0:?}");
    let row0 = store.device(d0.id).await.unwrap().unwrap();
    assert_eq!(row0.blocked_reason.as_deref(), Some("auth_failed"));
    backend
        .set(d0.id, "encrypted_credentials", Some(sealed[5].as_slice()))
        .await;
    let r = sync(store, &backend, &fleet.key).await;
    assert_eq!(r.updated, 1, "{r:?}");
    let row0 = store.device(d0.id).await.unwrap().unwrap();
    assert_eq!(
        row0.blocked_reason, None,
        "new credentials lift the auth block"
    );
    assert_eq!(row0.consecutive_failures, 0);
    assert!(row0.next_due_at <= chrono::Utc::now(), "due now");
    assert_eq!(
        backup(&fleet, d0.id, d0.tenant_id).await.status,
        RunStatus::Success
    );

    // Deleted upstream: removed here, its config history kept by default...
    for d in [d1, d2] {
        sqlx::query(
            "INSERT INTO config_versions (device_id, tenant_id, sha256, size, first_seen_at, \
             last_seen_at, normalization, text_enc) VALUES ($1, $2, 'x', 1, now(), now(), 2, '\\x00')",
        )
        .bind(d.id)
        .bind(d.tenant_id)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let versions = |id: Uuid| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM config_versions WHERE device_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(d2.id)
        .execute(&backend.pool)
        .await
        .unwrap();
    let r = sync(store, &backend, &fleet.key).await;
    assert_eq!((r.removed, r.unchanged), (1, 2), "{r:?}");
    assert!(store.device(d2.id).await.unwrap().is_none());
    assert_eq!(
        store.runs(d2.id, 10).await.unwrap().len(),
        0,
        "runs go with the device"
    );
    assert_eq!(versions(d2.id).await, 1, "config history kept");
    // ... and dropped with --drop-history.
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(d1.id)
        .execute(&backend.pool)
        .await
        .unwrap();
    let (code, stdout, stderr) = cli_sync(
        &fleet.db.url,
        &fleet.key_b64,
        &backend.url,
        &["--drop-history"],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("synced 1 devices: 0 new, 0 updated, 1 removed, 1 skipped"),
        "{stdout}"
    );
    assert!(store.device(d1.id).await.unwrap().is_none());
    assert_eq!(versions(d1.id).await, 0, "config history dropped");
    assert_eq!(versions(d2.id).await, 1);

    backend.drop().await;
    fleet.cleanup().await;
}

/// A key that opens none of the backend's credentials: an error naming
/// CREDENTIAL_ENCRYPTION_KEY (exit 2), and nothing imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_named_and_imports_nothing() {
    let Some(py) = python() else { return };
    let db = TestDb::new().await;
    let backend = Backend::new().await;
    let sim = fake_devices(3);
    let backend_key = CredentialKey::generate_base64();
    let sealed = encrypt(
        &py,
        &backend_key,
        &sim.iter()
            .map(|d| login(&d.username, &d.password))
            .collect::<Vec<_>>(),
    );
    for (d, s) in sim.iter().zip(&sealed) {
        backend.device(d, Some(s.as_slice()), None).await;
    }
    let ours = CredentialKey::generate_base64();
    let (code, stdout, stderr) = cli_sync(&db.url, &ours, &backend.url, &[]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("CREDENTIAL_ENCRYPTION_KEY") && stderr.contains("nothing imported"),
        "{stderr}"
    );
    assert!(!stderr.contains(&ours) && !stderr.contains(&backend_key));
    let key = CredentialKey::from_base64(&ours).unwrap();
    let e = tod::sync(
        &db.store,
        &backend.url,
        &key,
        &schedule(),
        SyncOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, tod::SyncError::WrongKey { failed: 3 }), "{e}");
    assert_eq!(count(&db.store).await, 0, "nothing imported");
    // The right key imports them all.
    let key = CredentialKey::from_base64(&backend_key).unwrap();
    let r = tod::sync(
        &db.store,
        &backend.url,
        &key,
        &schedule(),
        SyncOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.inserted, 3);
    backend.drop().await;
    db.drop().await;
}

/// One device's credentials cannot be used (cut short, altered, not the backend's JSON,
/// an SSH key, a Transit ciphertext): that device is skipped with its reason, the rest
/// sync, nothing panics, no secret is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_ciphertext_skips_that_device_and_the_rest_sync() {
    let Some(py) = python() else { return };
    let db = TestDb::new().await;
    let backend = Backend::new().await;
    let sim = fake_devices(7);
    let key_b64 = CredentialKey::generate_base64();
    let sealed = encrypt(
        &py,
        &key_b64,
        &[
            login(&sim[0].username, &sim[0].password),
            login(&sim[1].username, &sim[1].password),
            login(&sim[2].username, &sim[2].password),
            "not json at all: hunter2-secret".to_string(),
            serde_json::json!({"type": "ssh_key", "username": "a", "private_key": "KEY-hunter2"})
                .to_string(),
        ],
    );
    backend
        .device(&sim[0], Some(sealed[0].as_slice()), None)
        .await;
    backend.device(&sim[1], Some(&sealed[1][..20]), None).await; // cut short
    let mut altered = sealed[2].clone();
    altered[14] ^= 0x40;
    backend
        .device(&sim[2], Some(altered.as_slice()), None)
        .await;
    backend
        .device(&sim[3], Some(sealed[3].as_slice()), None)
        .await;
    backend
        .device(&sim[4], Some(sealed[4].as_slice()), None)
        .await;
    backend
        .device(&sim[5], None, Some("vault:v1:aGVsbG8gdHJhbnNpdA=="))
        .await;
    backend
        .device(&sim[6], Some(&[0xff_u8; 64][..]), None)
        .await; // garbage of a valid length
    let (code, stdout, stderr) = cli_sync(&db.url, &key_b64, &backend.url, &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("synced 1 devices: 1 new, 0 updated, 0 removed, 6 skipped"),
        "{stdout}"
    );
    for (d, why) in [
        (&sim[1], "shorter than a nonce and a tag"),
        (&sim[2], "does not decrypt under CREDENTIAL_ENCRYPTION_KEY"),
        (&sim[3], "not to the JSON object"),
        (&sim[4], "SSH key"),
        (&sim[5], "OpenBao Transit"),
        (&sim[6], "does not decrypt"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&d.id.to_string()))
            .unwrap_or_else(|| panic!("{} not listed:\n{stdout}", d.name));
        assert!(line.contains(why), "{line}");
    }
    for secret in ["hunter2", "aGVsbG8", &sim[0].password] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}\n{stderr}"
        );
    }
    let key = CredentialKey::from_base64(&key_b64).unwrap();
    assert_eq!(count(&db.store).await, 1);
    assert_eq!(
        db.store.password(&key, sim[0].id).await.unwrap().expose(),
        sim[0].password
    );
    // Again, in process: the same verdicts, still one device.
    let r = tod::sync(
        &db.store,
        &backend.url,
        &key,
        &schedule(),
        SyncOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!((r.synced(), r.skipped.len()), (1, 6), "{r:?}");
    assert!(
        r.skipped
            .iter()
            .any(|s| s.id == sim[5].id && matches!(s.reason, SkipReason::Transit(_)))
    );
    backend.drop().await;
    db.drop().await;
}

/// Devices that are only rows (no simulator needed): TEST-NET addresses, one tenant.
fn fake_devices(n: usize) -> Vec<SimDevice> {
    let tenant = Uuid::new_v4();
    (0..n)
        .map(|i| SimDevice {
            id: Uuid::new_v4(),
            tenant_id: tenant,
            name: format!("router-{i}"),
            host: std::net::IpAddr::from([192, 0, 2, (i + 1) as u8]),
            port: 22,
            username: "backup".into(),
            password: format!("pw-{}", Uuid::new_v4().simple()),
            routeros_version: "7.16.2".into(),
            fault: None,
            user_key: None,
        })
        .collect()
}

/// The enqueuer with `ROSBACKUP_TOD_DATABASE_URL` syncs at start and again every
/// `DEVICE_REFRESH_SECONDS`: a device added upstream appears here, one deleted there goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enqueuer_repeats_the_sync() {
    let Some(py) = python() else { return };
    let fleet = Fleet::of(1).await;
    let backend = Backend::new().await;
    let sim = fake_devices(3);
    let sealed = encrypt(
        &py,
        &fleet.key_b64,
        &sim.iter()
            .map(|d| login(&d.username, &d.password))
            .collect::<Vec<_>>(),
    );
    for (d, s) in sim.iter().zip(&sealed).take(2) {
        backend.device(d, Some(s.as_slice()), None).await;
    }
    let mut vars = fleet.process_env();
    vars.push(("ROSBACKUP_TOD_DATABASE_URL".into(), backend.url.clone()));
    vars.push(("DEVICE_REFRESH_SECONDS".into(), "1".into()));
    let env =
        rosbackup::config::Env::from_pairs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let process = rosbackup::service::enqueuer_from_env(
        &env,
        rosbackup::service::Flags {
            insecure_no_auth: true,
        },
    )
    .await
    .expect("enqueuer starts");
    assert!(process.tod.is_some());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(process.run(async move {
        let _ = stopped.await;
    }));
    let store = fleet.store().clone();
    let has = |n: i64| {
        let store = store.clone();
        async move { count(&store).await == n }
    };
    fleet
        .wait_for(Duration::from_secs(20), "the first sync", || has(2))
        .await;
    backend
        .device(&sim[2], Some(sealed[2].as_slice()), None)
        .await;
    sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(sim[0].id)
        .execute(&backend.pool)
        .await
        .unwrap();
    fleet
        .wait_for(Duration::from_secs(20), "the next sync", || async {
            store.device(sim[2].id).await.unwrap().is_some()
                && store.device(sim[0].id).await.unwrap().is_none()
        })
        .await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the enqueuer stops")
        .expect("join")
        .expect("clean stop");
    backend.drop().await;
    fleet.cleanup().await;
}

/// Configuration mistakes are named before anything connects: the enqueuer's URL without
/// a credential key or with another scheme, and `devices sync` without a URL (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfiguration_is_named() {
    use rosbackup::config::Env;
    use rosbackup::service::{Flags, StartError, enqueuer_from_env};
    let start = |pairs: Vec<(&'static str, &'static str)>| async move {
        enqueuer_from_env(&Env::from_pairs(pairs), Flags::default())
            .await
            .unwrap_err()
    };
    let e = start(vec![(
        "ROSBACKUP_TOD_DATABASE_URL",
        "postgres://poller:hunter2@tod-db/mikrotik",
    )])
    .await;
    assert!(
        matches!(&e, StartError::Config(c) if c.var == "CREDENTIAL_ENCRYPTION_KEY"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
    let e = start(vec![
        (
            "ROSBACKUP_TOD_DATABASE_URL",
            "mysql://poller:hunter2@tod-db/x",
        ),
        (
            "CREDENTIAL_ENCRYPTION_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    ])
    .await;
    assert!(
        matches!(&e, StartError::Config(c) if c.var == "ROSBACKUP_TOD_DATABASE_URL"),
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let key = CredentialKey::generate_base64();
    let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
    for v in rosbackup::config::VARS {
        c.env_remove(v.name);
    }
    let out = c
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env("CREDENTIAL_ENCRYPTION_KEY", &key)
        .args(["devices", "sync"])
        .output()
        .expect("run rosbackup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--from-tod") && stderr.contains("ROSBACKUP_TOD_DATABASE_URL"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rosbackup"))
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env("CREDENTIAL_ENCRYPTION_KEY", &key)
        .args([
            "devices",
            "sync",
            "--from-tod",
            "http://poller:hunter2@tod-db/x",
        ])
        .output()
        .expect("run rosbackup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--from-tod") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}
