//! `rosbackup demo` as a new user runs it: one command, a fleet backed up, Ctrl-C (or
//! `--once`) leaves nothing running.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn demo(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
    c.arg("demo").args(args);
    for v in rosbackup::config::VARS {
        c.env_remove(v.name);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run rosbackup demo");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The port after `scheme://…host:` on the line starting with `label`.
fn port_on(out: &str, label: &str) -> Option<u16> {
    let line = out.lines().find(|l| l.trim_start().starts_with(label))?;
    let url = line.split_whitespace().nth(1)?;
    let hostport = url.split("://").nth(1)?.split('/').next()?;
    hostport.rsplit(':').next()?.parse().ok()
}

fn closed(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_err()
}

#[test]
fn the_demo_backs_up_every_healthy_device_on_private_services_and_cleans_up() {
    let (code, out, err) = demo(
        &[
            "--once",
            "--devices",
            "24",
            "--private",
            "--timeout",
            "180",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("Token       rbk_"), "{out}");
    assert!(out.contains("private instance"), "{out}");
    assert!(out.contains("every healthy device backed up once"), "{out}");
    assert!(out.contains("nothing left running"), "{out}");
    // Healthy = all but the default mix's failing devices for 24 (auth, refuse, silent, garbage).
    assert!(out.contains("backed up 20/20 healthy devices"), "{out}");
    // The fault mix in one line, with the host-key devices explained.
    assert!(
        out.contains("Fleet       24 devices: ")
            && out.contains(
                "1 present a new host key every time (backed up once, then Blocked: host key)"
            ),
        "{out}"
    );
    // The archiver ran: every healthy device has an archived version before --once ends.
    assert!(
        out.contains("every healthy device backed up once and archived"),
        "{out}"
    );
    let archived = out
        .lines()
        .filter_map(|l| {
            l.split(" versions archived")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(archived >= 20, "only {archived} versions archived:\n{out}");
    // The state counts are the dashboard's labels; before any host key rotated, the
    // healthy devices are all OK.
    let last = out
        .lines()
        .rfind(|l| l.contains(" versions archived · now: "))
        .unwrap_or_else(|| panic!("no progress line in:\n{out}"));
    assert!(last.contains("20 OK"), "{last}");
    // Not a terminal: one line per change, never the same line twice in a row.
    let progress: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("backed up "))
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] != w[1]),
        "a progress line repeated:\n{out}"
    );
    // The logs stay after exit, where the demo said.
    let logs = out
        .lines()
        .find_map(|l| l.strip_prefix("logs kept in "))
        .map(|l| std::path::PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("no logs folder in:\n{out}"));
    for f in ["enqueuer.log", "worker-1.log", "archiver.log"] {
        let text = std::fs::read_to_string(logs.join(f))
            .unwrap_or_else(|e| panic!("{f} not kept in {}: {e}", logs.display()));
        assert!(!text.is_empty(), "{f} is empty");
    }
    assert!(
        out.contains(&format!("Logs        {} (kept after exit)", logs.display())),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(logs.parent().expect("the demo's folder"));
    for label in ["Dashboard", "PostgreSQL", "Redis", "NATS"] {
        let port = port_on(&out, label).unwrap_or_else(|| panic!("no {label} port in:\n{out}"));
        assert!(
            closed(port),
            "{label} still listens on {port} after the demo"
        );
    }
}

#[test]
fn a_missing_server_binary_names_the_package_to_install() {
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap().to_string();
    let (code, out, err) = demo(
        &["--once", "--devices", "3", "--private", "--timeout", "30"],
        &[("PATH", &path)],
    );
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("sudo apt-get install redis-server"),
        "stderr:\n{err}"
    );
    // What it had started already (a private PostgreSQL, found by its absolute path,
    // before Redis was looked up on PATH) is stopped again: its log says it listened,
    // and neither its port nor any process in the demo's folder is left.
    let dir = out
        .lines()
        .find_map(|l| l.split("logs kept in ").nth(1))
        .map(|logs| std::path::PathBuf::from(logs.trim()).with_file_name(""))
        .unwrap_or_else(|| panic!("no logs folder in:\n{out}"));
    let log = std::fs::read_to_string(dir.join("postgres.log"))
        .unwrap_or_else(|e| panic!("the private PostgreSQL was not started ({e}):\n{out}"));
    let port: u16 = log
        .lines()
        .find_map(|l| l.split("\", port ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the private PostgreSQL never listened:\n{log}"));
    assert!(closed(port), "private PostgreSQL left running on {port}");
    let folder = dir.to_string_lossy().trim_end_matches('/').to_string();
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&folder))
        .collect();
    assert!(leftovers.is_empty(), "left running: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_database_url_that_refuses_us_is_an_error_not_a_silent_fallback() {
    let (code, out, err) = demo(
        &["--once", "--devices", "3", "--timeout", "30"],
        &[(
            "DATABASE_URL",
            "postgres://nobody:wrong@127.0.0.1:5432/nope",
        )],
    );
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("DATABASE_URL=postgres://***@127.0.0.1:5432/nope"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the password leaked: {err}");
}

/// Two demos at once on the same (shared) services: each has its own database, queue,
/// subjects and stream, both finish, and each removes what it created.
#[tokio::test]
async fn two_demos_on_shared_services_do_not_touch_each_other_and_clean_up() {
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .args([
                "demo",
                "--once",
                "--devices",
                "8",
                "--timeout",
                "120",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .env("DATABASE_URL", common_database_url())
            .output()
    };
    let (a, b) = tokio::join!(run(), run());
    let mut ids = Vec::new();
    for o in [a.unwrap(), b.unwrap()] {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("already running"), "{out}");
        let stream = out
            .lines()
            .find_map(|l| l.split("(stream ").nth(1))
            .map(|s| s.trim_end_matches(')').to_string())
            .expect("stream name printed");
        ids.push(stream.trim_start_matches("ROSBACKUP_DEMO_").to_string());
    }
    assert_ne!(ids[0], ids[1]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&common_database_url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for id in &ids {
        let db: Option<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname = $1")
                .bind(format!("rosbackup_demo_{id}"))
                .fetch_optional(&pool)
                .await
                .unwrap();
        assert_eq!(db, None, "demo {id} left its database");
        assert!(
            js.get_stream(format!("ROSBACKUP_DEMO_{id}")).await.is_err(),
            "demo {id} left its stream"
        );
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("rosbackup:demo:{id}*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(keys.is_empty(), "demo {id} left Redis keys: {keys:?}");
    }
}

fn common_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}
