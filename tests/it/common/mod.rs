//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fleet;
pub mod proxy;
pub mod sshd;
pub mod web;

use std::path::PathBuf;

/// Are we under CI? `CI` set to anything but empty, `0` or `false` (CI systems set
/// `true`, `1`, `yes` or their own name). Under CI a missing prerequisite (sshd, network
/// namespaces, the real exports, schemathesis) fails its test instead of skipping it.
pub fn in_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(v: Option<&str>) -> bool {
    v.map(str::trim)
        .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("false") && v != "0")
}

#[test]
fn any_ci_value_but_empty_zero_or_false_means_ci() {
    for v in ["true", "1", "yes", "gitlab", "TRUE"] {
        assert!(ci_value(Some(v)), "{v}");
    }
    for v in [None, Some(""), Some("0"), Some("false"), Some("False")] {
        assert!(!ci_value(v), "{v:?}");
    }
}

/// `../shared/routeros/exports`, the real exports (third-party data, read in place).
/// Outside CI a missing folder skips the calling test (returns `None` with a message);
/// under `CI=true` it fails the test.
pub fn shared_exports() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/routeros/exports");
    if dir.is_dir() {
        return Some(dir);
    }
    if in_ci() {
        panic!("{} is missing, and CI=true requires it", dir.display());
    }
    eprintln!("skipping: {} not found", dir.display());
    None
}

/// NATS for tests: `NATS_URL` or the local server.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A name unique to this test run, usable as a NATS token, stream or bucket name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// PostgreSQL for tests: `DATABASE_URL`, or the local server's `test` database (trust auth).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[host_start..].find('/') {
        Some(slash) => &base[..host_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// A new, empty database `rb_<random>` on the test server: its URL and its name. Drop it
/// with [`drop_database`] when the test ends.
pub async fn fresh_database() -> (String, String) {
    use sqlx::Connection;
    let base = database_url();
    let name = unique("rb").to_lowercase();
    let mut conn = sqlx::postgres::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database server: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = conn.close().await;
    (with_database(&base, &name), name)
}

/// Drop a database made by [`fresh_database`], closing whatever is still connected.
pub async fn drop_database(name: &str) {
    use sqlx::Connection;
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "not a test database name: {name}"
    );
    let mut conn = sqlx::postgres::PgConnection::connect(&database_url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database server: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
    let _ = conn.close().await;
}

/// Values of secret properties in an export (`passphrase=…`, `private-key=…`, …), 8 or
/// more characters: what must never appear in logs, ciphertext or error messages.
pub fn secret_values(export: &[u8]) -> Vec<String> {
    let export = String::from_utf8_lossy(export);
    let keys = [
        "passphrase=",
        "private-key=",
        "wpa2-pre-shared-key=",
        "password=",
        "secret=",
        "authentication-key=",
    ];
    let mut out = Vec::new();
    for line in export.lines() {
        for k in keys {
            let mut rest = line;
            while let Some(i) = rest.find(k) {
                let v = rest[i + k.len()..].trim_start_matches('"');
                let end = v.find(['"', ' ']).unwrap_or(v.len());
                if end >= 8 {
                    out.push(v[..end].to_string());
                }
                rest = &v[end..];
            }
        }
    }
    out
}

/// Insert an enabled device that points nowhere (192.0.2.1, TEST-NET-1): for tests that
/// only need the row, e.g. to archive snapshots published for it.
pub async fn add_placeholder_device(
    store: &rosbackup::store::Store,
    key: &rosbackup::credentials::CredentialKey,
    id: uuid::Uuid,
    tenant: uuid::Uuid,
    name: &str,
) {
    let d = rosbackup::store::NewDevice {
        id,
        tenant_id: tenant,
        name: name.into(),
        host: "192.0.2.1".into(),
        ssh_port: 22,
        username: "backup".into(),
        password: rosbackup::Secret::new("pw"),
        routeros_version: None,
        enabled: true,
        backup_interval_seconds: None,
        backup_cron: None,
        export_timeout_seconds: None,
        ssh_key: None,
        credential_profile: None,
        keep_ssh_key: false,
        keep_credential_profile: false,
        jump: None,
    };
    store
        .upsert_devices(key, &[d], chrono::Utc::now)
        .await
        .expect("insert a placeholder device");
}

/// A store whose "PostgreSQL" is a loopback listener that accepts and hangs up: every
/// statement fails on the connection. The count is of connections accepted.
pub async fn hanging_up_store() -> (
    rosbackup::store::Store,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("addr").port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&format!("postgres://u@127.0.0.1:{port}/db?sslmode=disable"))
        .expect("a lazy pool");
    (
        rosbackup::store::Store::from_pool(pool).with_lanes(4),
        accepted,
    )
}

/// Hold `device`'s row locked in a transaction of its own, as an import or a key rotation
/// does, until the returned transaction ends.
pub async fn lock_row(
    db: &fleet::TestDb,
    device: uuid::Uuid,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = db.store.pool().begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE")
        .bind(device)
        .execute(&mut *tx)
        .await
        .expect("lock");
    tx
}

/// Wait (bounded) until `n` statements of this database wait for a row lock.
pub async fn waiting_for_locks(db: &fleet::TestDb, n: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.store.pool())
        .await
        .expect("pg_stat_activity");
        if waiting >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no statement waits for the lock"
        );
        tokio::task::yield_now().await;
    }
}

/// Run a command to its end, at most `limit`, its output captured: one still running then
/// (a process that started when it should have refused) is killed and the test fails.
pub fn output_within(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rosbackup");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            // The arguments only: the environment holds the test's keys.
            let args: Vec<_> = cmd.get_args().collect();
            panic!(
                "{args:?} still running after {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}
