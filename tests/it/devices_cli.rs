//! `rosbackup migrate` and `rosbackup devices …` as an operator runs them, against the
//! real PostgreSQL at `DATABASE_URL`. Every test gets a database of its own.

use futures::FutureExt;
use rosbackup::credentials::CredentialKey;
use rosbackup::sim::{SimConfig, SimDevice, Simulator};
use sqlx::postgres::PgPool;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use uuid::Uuid;

/// Run `body` with a fresh database's URL; the database is dropped afterwards, also when
/// the body panics.
async fn with_db<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let (url, name) = crate::common::fresh_database().await;
    let result = AssertUnwindSafe(body(url)).catch_unwind().await;
    crate::common::drop_database(&name).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    fn fails(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).expect("JSON on stdout")
    }
}

/// The binary, pointed at one database with one credential key. Every run is checked
/// for the passwords it must never print.
struct Cli {
    url: String,
    key: String,
    secrets: Mutex<Vec<String>>,
}

impl Cli {
    fn new(url: &str) -> Cli {
        Cli {
            url: url.to_string(),
            key: CredentialKey::generate_base64(),
            secrets: Mutex::new(Vec::new()),
        }
    }

    fn never_print(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_string());
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
        for v in rosbackup::config::VARS {
            c.env_remove(v.name);
        }
        c.env_remove("ROSBACKUP_PASSWORD")
            .env("LOG_FORMAT", "text")
            .env("DATABASE_URL", &self.url)
            .env("CREDENTIAL_ENCRYPTION_KEY", &self.key);
        c
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.command();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        self.output(c)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[])
    }

    fn output(&self, mut c: Command) -> Out {
        let o = c.output().expect("run rosbackup");
        let out = Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        for s in self.secrets.lock().unwrap().iter() {
            assert!(
                !out.stdout.contains(s.as_str()) && !out.stderr.contains(s.as_str()),
                "a password was printed by {c:?}:\n{}\n{}",
                out.stdout,
                out.stderr
            );
        }
        out
    }

    fn credential_key(&self) -> CredentialKey {
        CredentialKey::from_base64(&self.key).unwrap()
    }
}

async fn pool(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect to the test database")
}

/// A device's stored password, opened with the CLI's key.
async fn stored_password(pool: &PgPool, cli: &Cli, id: Uuid) -> String {
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT password_enc FROM devices WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    cli.credential_key()
        .open(&id, &sealed)
        .unwrap()
        .expose()
        .to_string()
}

async fn device_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A simulated fleet's inventory CSV, written by the real simulator.
async fn sim_inventory(dir: &Path, devices: usize, faults: &str) -> (Vec<u8>, Vec<SimDevice>) {
    let path = dir.join("fleet.csv");
    let sim = Simulator::start(SimConfig {
        devices,
        listen_base: "127.0.0.1".parse().unwrap(),
        port: 0,
        one_address: true,
        faults: faults.parse().unwrap(),
        config_size: Some(4_000),
        seed: 7,
        inventory: Some(path.clone()),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let list = sim.devices().to_vec();
    sim.shutdown().await;
    (std::fs::read(&path).unwrap(), list)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[tokio::test]
async fn sim_inventory_imports_lists_and_reimports() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        assert_eq!(cli.run(&["migrate"]).ok().trim(), "migrations applied");
        // Idempotent.
        assert_eq!(cli.run(&["migrate"]).ok().trim(), "migrations applied");

        let dir = tempfile::tempdir().unwrap();
        let (csv, sim) = sim_inventory(dir.path(), 6, "v6=2,auth=1").await;
        for d in &sim {
            cli.never_print(&d.password);
        }
        let file = write(dir.path(), "fleet.csv", &csv);
        let jitter = [
            ("CONFIG_BACKUP_JITTER_MIN", "5"),
            ("CONFIG_BACKUP_JITTER_MAX", "20"),
        ];
        let before = chrono::Utc::now();
        let out = cli.run_with(&["devices", "import", &file], &jitter);
        let after = chrono::Utc::now();
        assert_eq!(out.ok().trim(), "imported 6 devices (6 new, 0 updated)");

        // The table lists every device.
        let out = cli.run(&["devices", "list"]);
        let table = out.ok();
        assert_eq!(table.lines().count(), 7, "{table}");
        assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
        for d in &sim {
            let line = table
                .lines()
                .find(|l| l.starts_with(&format!("{} ", d.name)))
                .unwrap_or_else(|| panic!("{} not listed:\n{table}", d.name));
            assert!(line.contains(&format!("{}:{}", d.host, d.port)), "{line}");
            assert!(line.contains("never"), "{line}");
            // The list spans tenants: each line names its device's (unnamed here: its id).
            assert_eq!(
                line.split_whitespace().nth(1),
                Some(d.tenant_id.to_string().as_str()),
                "{line}"
            );
        }
        assert_eq!(
            table.lines().next().unwrap().split_whitespace().nth(1),
            Some("TENANT"),
            "{table}"
        );

        // JSON: every field of the inventory, no password anywhere.
        let out = cli.run(&["devices", "list", "--json"]);
        assert!(!out.stdout.to_lowercase().contains("password"), "{}", out.stdout);
        let list = out.json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 6);
        for d in &sim {
            let j = list
                .iter()
                .find(|j| j["id"] == d.id.to_string())
                .unwrap_or_else(|| panic!("{} missing", d.id));
            assert_eq!(j["tenant_id"], d.tenant_id.to_string());
            assert_eq!(j["name"], d.name.as_str());
            assert_eq!(j["host"], d.host.to_string());
            assert_eq!(j["ssh_port"], d.port);
            assert_eq!(j["username"], d.username.as_str());
            assert_eq!(j["routeros_version"], d.routeros_version.as_str());
            assert_eq!(j["enabled"], true);
            assert_eq!(j["last_status"], serde_json::Value::Null);
            let due: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(j["next_due_at"].clone()).unwrap();
            assert!(
                due >= before + chrono::Duration::seconds(5)
                    && due <= after + chrono::Duration::seconds(20),
                "first due {due} outside the jitter window"
            );
        }
        assert!(
            list.iter()
                .any(|j| j["routeros_version"].as_str().unwrap().starts_with("6."))
        );

        // --tenant filters.
        let tenant = sim[0].tenant_id;
        let want = sim.iter().filter(|d| d.tenant_id == tenant).count();
        let only = cli
            .run(&["devices", "list", "--json", "--tenant", &tenant.to_string()])
            .json();
        let only = only.as_array().unwrap();
        assert_eq!(only.len(), want);
        assert!(only.iter().all(|j| j["tenant_id"] == tenant.to_string()));
        // One tenant's table has no tenant column; a named tenant is shown by its name.
        let one = cli.run(&["devices", "list", "--tenant", &tenant.to_string()]);
        assert!(!one.ok().lines().next().unwrap().contains("TENANT"), "{}", one.stdout);
        assert_eq!(
            cli.run(&["tenants", "rename", &tenant.to_string(), "acme-east"])
                .ok()
                .lines()
                .count(),
            1
        );
        let named = cli.run(&["devices", "list"]);
        let line = named
            .ok()
            .lines()
            .find(|l| l.starts_with(&format!("{} ", sim[0].name)))
            .unwrap()
            .to_string();
        assert_eq!(line.split_whitespace().nth(1), Some("acme-east"), "{line}");

        // At rest the passwords are sealed: no plaintext, and they open with the key.
        let db = pool(&url).await;
        let key = cli.credential_key();
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as("SELECT id, password_enc FROM devices")
            .fetch_all(&db)
            .await
            .unwrap();
        assert_eq!(rows.len(), 6);
        for (id, sealed) in &rows {
            let d = sim.iter().find(|d| d.id == *id).unwrap();
            let pw = d.password.as_bytes();
            assert!(!sealed.windows(pw.len()).any(|w| w == pw), "plaintext at rest");
            assert_eq!(key.open(id, sealed).unwrap().expose(), d.password);
        }
        let dues: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT id, next_due_at FROM devices ORDER BY id")
                .fetch_all(&db)
                .await
                .unwrap();

        // Importing again updates, never duplicates, and keeps the schedule.
        let out = cli.run(&["devices", "import", &file]);
        assert_eq!(out.ok().trim(), "imported 6 devices (0 new, 6 updated)");
        assert_eq!(device_count(&db).await, 6);
        let again: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT id, next_due_at FROM devices ORDER BY id")
                .fetch_all(&db)
                .await
                .unwrap();
        assert_eq!(dues, again);

        // A changed inventory: one host moves, one device is new, optional columns.
        let text = String::from_utf8(csv.clone()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[0].push_str(",enabled,backup_interval_seconds,backup_cron");
        for l in lines.iter_mut().skip(1) {
            l.push_str(",,,");
        }
        lines[1] = lines[1].replace(&sim[0].host.to_string(), "router-0.example.net");
        let new_id = Uuid::new_v4();
        lines.push(format!(
            "{new_id},{tenant},brand-new,10.9.8.7,22,admin,Fresh-Pass-99,7.16.2,false,3600,0 3 * * *"
        ));
        cli.never_print("Fresh-Pass-99");
        let file2 = write(dir.path(), "fleet2.csv", lines.join("\n").as_bytes());
        let out = cli.run(&["devices", "import", &file2]);
        assert_eq!(out.ok().trim(), "imported 7 devices (1 new, 6 updated)");
        assert_eq!(device_count(&db).await, 7);
        let moved = cli
            .run(&["devices", "show", &sim[0].id.to_string(), "--json"])
            .json();
        assert_eq!(moved["host"], "router-0.example.net");
        let new = cli.run(&["devices", "show", "brand-new", "--json"]).json();
        assert_eq!(new["id"], new_id.to_string());
        assert_eq!(new["enabled"], false);
        assert_eq!(new["backup_interval_seconds"], 3600);
        assert_eq!(new["backup_cron"], "0 3 * * *");
        db.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_row_imports_nothing() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let db = pool(&url).await;
        let dir = tempfile::tempdir().unwrap();
        let (csv, sim) = sim_inventory(dir.path(), 5, "").await;
        for d in &sim {
            cli.never_print(&d.password);
        }
        let text = String::from_utf8(csv).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        // Line 4 (the third device) has a bad port.
        let mut bad: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let mut fields: Vec<&str> = lines[3].split(',').collect();
        fields[4] = "70000";
        bad[3] = fields.join(",");
        let file = write(dir.path(), "bad-port.csv", bad.join("\n").as_bytes());
        let out = cli.run(&["devices", "import", &file]);
        let err = out.fails(1);
        assert!(
            err.contains("line 4, column port: \"70000\" is not a port (1-65535)"),
            "{err}"
        );
        assert!(err.contains("bad-port.csv"), "{err}");
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert_eq!(device_count(&db).await, 0);

        // Line 3 has no password: the error says so, and shows no other password.
        let mut bad: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let mut fields: Vec<&str> = lines[2].split(',').collect();
        fields[6] = "";
        bad[2] = fields.join(",");
        let file = write(dir.path(), "no-password.csv", bad.join("\n").as_bytes());
        let err = cli.run(&["devices", "import", &file]).fails(1).to_string();
        assert!(err.contains("line 3, column password: empty"), "{err}");
        assert_eq!(device_count(&db).await, 0);

        // A short row, a duplicate id.
        let mut bad: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        bad.insert(3, "x,y".into());
        let file = write(dir.path(), "short.csv", bad.join("\n").as_bytes());
        let err = cli.run(&["devices", "import", &file]).fails(1).to_string();
        assert!(err.contains("line 4: 2 fields, expected 8"), "{err}");
        let mut bad: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        bad.push(lines[1].replace(&sim[0].name, "renamed"));
        let file = write(dir.path(), "dup.csv", bad.join("\n").as_bytes());
        let err = cli.run(&["devices", "import", &file]).fails(1).to_string();
        assert!(
            err.contains(&format!(
                "line 7, column id: duplicate id {} (also on line 2)",
                sim[0].id
            )),
            "{err}"
        );

        // Header only; a missing file.
        let file = write(dir.path(), "empty.csv", lines[0].as_bytes());
        let err = cli.run(&["devices", "import", &file]).fails(1).to_string();
        assert!(err.contains("no devices"), "{err}");
        let missing = dir.path().join("nope.csv");
        let err = cli
            .run(&["devices", "import", &missing.to_string_lossy()])
            .fails(1)
            .to_string();
        assert!(err.contains("nope.csv"), "{err}");
        assert_eq!(device_count(&db).await, 0);

        // The database refuses a row (its name is taken in its tenant by another id):
        // the line is named and nothing of the file is kept.
        let full = write(dir.path(), "fleet.csv", text.as_bytes());
        cli.run(&["devices", "import", &full]).ok();
        let mut clash: Vec<String> = vec![lines[0].to_string()];
        clash.push(format!(
            "{},{},fresh,10.1.1.1,22,u,Pw-Clash-1,",
            Uuid::new_v4(),
            Uuid::new_v4()
        ));
        let mut fields: Vec<String> = lines[2].split(',').map(str::to_string).collect();
        fields[0] = Uuid::new_v4().to_string();
        clash.push(fields.join(","));
        cli.never_print("Pw-Clash-1");
        let file = write(dir.path(), "clash.csv", clash.join("\n").as_bytes());
        let err = cli.run(&["devices", "import", &file]).fails(1).to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("nothing imported"), "{err}");
        assert_eq!(device_count(&db).await, 5);
        let fresh: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE name = 'fresh'")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(fresh, 0);

        // An existing id under another tenant is refused, with its line.
        let mut fields: Vec<String> = lines[3].split(',').map(str::to_string).collect();
        fields[1] = Uuid::new_v4().to_string();
        let moved = [lines[0].to_string(), lines[1].to_string(), fields.join(",")];
        let file = write(dir.path(), "tenant.csv", moved.join("\n").as_bytes());
        let err = cli.run(&["devices", "import", &file]).fails(1).to_string();
        assert!(err.contains("line 3: "), "{err}");
        assert!(err.contains("already exists in another tenant"), "{err}");
        let tenant: Uuid = sqlx::query_scalar("SELECT tenant_id FROM devices WHERE id = $1")
            .bind(sim[2].id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(tenant, sim[2].tenant_id);
        db.close().await;
    })
    .await;
}

#[tokio::test]
async fn add_and_manage_one_device() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let db = pool(&url).await;
        let pw = "Add-Secret-42";
        let pw2 = "Rotated-Secret-43";
        cli.never_print(pw);
        cli.never_print(pw2);
        let with_pw = [("MY_PW", pw)];

        // Defaults: nil tenant, port 22, a new id, enabled.
        let out = cli.run_with(
            &[
                "devices",
                "add",
                "--name",
                "core-1",
                "--host",
                "10.20.30.40",
                "--username",
                "backup",
                "--password-env",
                "MY_PW",
            ],
            &with_pw,
        );
        let id: Uuid = out.ok().trim().parse().expect("the new id");
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        assert_eq!(d["id"], id.to_string());
        assert_eq!(d["tenant_id"], Uuid::nil().to_string());
        assert_eq!(d["host"], "10.20.30.40");
        assert_eq!(d["ssh_port"], 22);
        assert_eq!(d["username"], "backup");
        assert_eq!(d["enabled"], true);
        assert_eq!(d["routeros_version"], serde_json::Value::Null);
        assert_eq!(d["runs"], serde_json::json!([]));
        let sealed: Vec<u8> = sqlx::query_scalar("SELECT password_enc FROM devices WHERE id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert!(!sealed.windows(pw.len()).any(|w| w == pw.as_bytes()));
        assert_eq!(
            cli.credential_key().open(&id, &sealed).unwrap().expose(),
            pw
        );

        // Everything given; ROSBACKUP_PASSWORD is the default variable.
        let id2 = Uuid::new_v4();
        let tenant = Uuid::new_v4();
        let out = cli.run_with(
            &[
                "devices",
                "add",
                "--name",
                "edge-2",
                "--host",
                "edge-2.example.net",
                "--port",
                "8022",
                "--username",
                "admin",
                "--id",
                &id2.to_string(),
                "--tenant",
                &tenant.to_string(),
                "--routeros-version",
                "6.49.10",
                "--interval",
                "7200",
                "--cron",
                "30 2 * * *",
                "--disabled",
            ],
            &[("ROSBACKUP_PASSWORD", pw)],
        );
        assert_eq!(out.ok().trim(), id2.to_string());
        let d = cli
            .run(&["devices", "show", &id2.to_string(), "--json"])
            .json();
        assert_eq!(d["tenant_id"], tenant.to_string());
        assert_eq!(d["ssh_port"], 8022);
        assert_eq!(d["routeros_version"], "6.49.10");
        assert_eq!(d["backup_interval_seconds"], 7200);
        assert_eq!(d["backup_cron"], "30 2 * * *");
        assert_eq!(d["enabled"], false);
        assert_eq!(device_count(&db).await, 2);

        // Refused like an inventory row would be: exit 2 naming the flag, nothing added.
        let base = [
            "devices",
            "add",
            "--name",
            "bad",
            "--host",
            "10.0.0.1",
            "--username",
            "u",
            "--password-env",
            "MY_PW",
        ];
        for (extra, flag) in [
            (&["--host", "bad_host!"][..], "--host"),
            (&["--port", "70000"][..], "--port"),
            (&["--port", "0"][..], "--port"),
            (&["--interval", "0"][..], "--interval"),
            (&["--cron", "* *"][..], "--cron"),
            (&["--tenant", "acme"][..], "--tenant"),
            (&["--id", "42"][..], "--id"),
            (&["--routeros-version", "seven"][..], "--routeros-version"),
            (&["--name", " "][..], "--name"),
        ] {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            let err = cli.run_with(&args, &with_pw).fails(2).to_string();
            assert!(err.contains(flag), "{extra:?}: {err}");
        }
        let mut args = base.to_vec();
        args[9] = "UNSET_PW_VAR";
        let err = cli.run(&args).fails(2).to_string();
        assert!(err.contains("UNSET_PW_VAR"), "{err}");
        let err = cli.run_with(&base, &[("MY_PW", "")]).fails(2).to_string();
        assert!(err.contains("MY_PW"), "{err}");
        let mut args = base.to_vec();
        args[7] = "";
        let err = cli.run_with(&args, &with_pw).fails(2).to_string();
        assert!(
            err.contains("--username: required (or --credential-profile"),
            "{err}"
        );
        assert_eq!(device_count(&db).await, 2);

        // Duplicates: an id or a (tenant, name) already in the store.
        let id_string = id.to_string();
        let mut args = base.to_vec();
        args.extend_from_slice(&["--id", &id_string]);
        let err = cli.run_with(&args, &with_pw).fails(1).to_string();
        assert!(err.contains("already exists"), "{err}");
        let mut args = base.to_vec();
        args[3] = "core-1";
        let err = cli.run_with(&args, &with_pw).fails(1).to_string();
        assert!(err.contains("already has a device named \"core-1\""), "{err}");
        assert!(err.contains("devices set-credentials"), "{err}");
        assert_eq!(device_count(&db).await, 2);

        // set-credentials lifts an auth_failed block.
        sqlx::query(
            "UPDATE devices SET blocked_reason = 'auth_failed', blocked_at = now(), \
             consecutive_failures = 3, next_due_at = now() + interval '1 day' WHERE id = $1",
        )
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
        let listed = cli.run(&["devices", "list"]);
        let row = listed
            .ok()
            .lines()
            .find(|l| l.starts_with("core-1"))
            .unwrap()
            .to_string();
        assert!(row.ends_with("auth_failed"), "{row}");
        // No next due time while blocked: it waits for a person, not for the clock.
        assert!(row.contains("- (blocked)"), "{row}");
        let out = cli.run_with(
            &[
                "devices",
                "set-credentials",
                "core-1",
                "--username",
                "backup2",
                "--password-env",
                "NEW_PW",
            ],
            &[("NEW_PW", pw2)],
        );
        assert!(out.ok().contains("auth_failed block lifted"), "{}", out.stdout);
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        assert_eq!(d["username"], "backup2");
        assert_eq!(d["blocked_reason"], serde_json::Value::Null);
        assert_eq!(d["consecutive_failures"], 0);
        assert_eq!(stored_password(&db, &cli, id).await, pw2);
        let err = cli
            .run(&["devices", "set-credentials", "core-1"])
            .fails(2)
            .to_string();
        assert!(err.contains("ROSBACKUP_PASSWORD"), "{err}");
        // The user alone: the password stays (no password variable needed).
        cli.run(&["devices", "set-credentials", "core-1", "--username", "backup3"])
            .ok();
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        assert_eq!(d["username"], "backup3");
        assert_eq!(stored_password(&db, &cli, id).await, pw2);

        // reset-host-key forgets the pin and lifts a host_key_mismatch block.
        sqlx::query(
            "UPDATE devices SET ssh_host_key_fingerprint = 'SHA256:pinned', \
             blocked_reason = 'host_key_mismatch', blocked_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        assert_eq!(d["ssh_host_key_fingerprint"], "SHA256:pinned");
        cli.run(&["devices", "reset-host-key", &id.to_string()])
            .ok();
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        assert_eq!(d["ssh_host_key_fingerprint"], serde_json::Value::Null);
        assert_eq!(d["blocked_reason"], serde_json::Value::Null);

        // unblock lifts any block and the backoff, and makes the device due.
        sqlx::query(
            "UPDATE devices SET blocked_reason = 'auth_failed', blocked_at = now(), \
             consecutive_failures = 4, backoff_until = now() + interval '1 hour', \
             next_due_at = now() + interval '1 day' WHERE id = $1",
        )
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
        cli.run(&["devices", "unblock", "core-1"]).ok();
        let (blocked, failures, backoff, due_now): (Option<String>, i32, Option<chrono::DateTime<chrono::Utc>>, bool) =
            sqlx::query_as(
                "SELECT blocked_reason, consecutive_failures, backoff_until, next_due_at <= now() \
                 FROM devices WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!((blocked, failures, backoff, due_now), (None, 0, None, true));

        // disable / enable.
        assert!(cli.run(&["devices", "disable", "core-1"]).ok().starts_with("disabled"));
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        assert_eq!(d["enabled"], false);
        cli.run(&["devices", "enable", &id.to_string()]).ok();
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        assert_eq!(d["enabled"], true);

        // show lists runs, newest first.
        for (status, kind) in [("failed", Some("timeout")), ("success", None)] {
            sqlx::query(
                "INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, \
                 finished_at, status, error_kind, duration_ms) \
                 VALUES ($1, $2, 'job-1', 'manual', 'w1', now(), now(), $3, $4, 12)",
            )
            .bind(id)
            .bind(Uuid::nil())
            .bind(status)
            .bind(kind)
            .execute(&db)
            .await
            .unwrap();
        }
        let d = cli.run(&["devices", "show", "core-1", "--json"]).json();
        let runs = d["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0]["status"], "success");
        assert_eq!(runs[1]["error_kind"], "timeout");
        let out = cli.run(&["devices", "show", "core-1"]);
        let text = out.ok();
        assert!(text.contains("core-1") && text.contains("10.20.30.40:22"), "{text}");
        assert!(text.contains("last 2 runs"), "{text}");
        assert!(text.contains("timeout"), "{text}");

        // remove; then the device is unknown (exit 1, clear message).
        let out = cli.run(&["devices", "remove", "core-1"]);
        assert!(out.ok().contains(&id.to_string()), "{}", out.stdout);
        assert_eq!(device_count(&db).await, 1);
        let runs_left: i64 = sqlx::query_scalar("SELECT count(*) FROM backup_runs")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(runs_left, 0);
        let err = cli.run(&["devices", "show", "core-1"]).fails(1).to_string();
        assert!(err.contains("no device named \"core-1\""), "{err}");
        let err = cli
            .run(&["devices", "remove", &id.to_string()])
            .fails(1)
            .to_string();
        assert!(err.contains(&format!("device {id} not found")), "{err}");
        for cmd in ["unblock", "enable", "disable", "reset-host-key"] {
            let err = cli.run(&["devices", cmd, "ghost"]).fails(1).to_string();
            assert!(err.contains("no device named \"ghost\""), "{cmd}: {err}");
        }
        let err = cli
            .run_with(&["devices", "set-credentials", "ghost"], &[("ROSBACKUP_PASSWORD", pw)])
            .fails(1)
            .to_string();
        assert!(err.contains("ghost"), "{err}");
        db.close().await;
    })
    .await;
}

#[tokio::test]
async fn configuration_and_connection_errors() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        let dir = tempfile::tempdir().unwrap();
        let (csv, sim) = sim_inventory(dir.path(), 2, "").await;
        for d in &sim {
            cli.never_print(&d.password);
        }
        let file = write(dir.path(), "fleet.csv", &csv);

        // Not migrated yet: the error says what to do.
        let err = cli.run(&["devices", "list"]).fails(1).to_string();
        assert!(err.contains("rosbackup migrate"), "{err}");
        cli.run(&["migrate"]).ok();

        // The credential key: missing or malformed is a configuration error (exit 2).
        let mut c = cli.command();
        c.env_remove("CREDENTIAL_ENCRYPTION_KEY")
            .args(["devices", "import", &file]);
        let err = cli.output(c).fails(2).to_string();
        assert!(
            err.contains("CREDENTIAL_ENCRYPTION_KEY is not set"),
            "{err}"
        );
        let err = cli
            .run_with(
                &["devices", "import", &file],
                &[("CREDENTIAL_ENCRYPTION_KEY", "c2hvcnQ=")],
            )
            .fails(2)
            .to_string();
        assert!(err.contains("32"), "{err}");
        assert!(!err.contains("c2hvcnQ"), "{err}");
        assert!(err.contains("openssl rand -base64 32"), "{err}");
        // A key given as hex: said so, with the conversion, never echoed.
        let hex = "8f3a".repeat(16);
        let err = cli
            .run_with(
                &["devices", "import", &file],
                &[("CREDENTIAL_ENCRYPTION_KEY", &hex)],
            )
            .fails(2)
            .to_string();
        assert!(err.contains("looks like hex"), "{err}");
        assert!(err.contains("xxd -r -p | base64"), "{err}");
        assert!(!err.contains(&hex), "{err}");

        // Scheduling settings are checked.
        let err = cli
            .run_with(
                &["devices", "import", &file],
                &[
                    ("CONFIG_BACKUP_JITTER_MIN", "60"),
                    ("CONFIG_BACKUP_JITTER_MAX", "10"),
                ],
            )
            .fails(2)
            .to_string();
        assert!(err.contains("CONFIG_BACKUP_JITTER_MAX"), "{err}");
        let err = cli
            .run_with(
                &["devices", "import", &file],
                &[("CONFIG_BACKUP_CRON", "not cron")],
            )
            .fails(2)
            .to_string();
        assert!(err.contains("CONFIG_BACKUP_CRON"), "{err}");
        let pool = pool(&url).await;
        assert_eq!(device_count(&pool).await, 0);
        pool.close().await;

        // DATABASE_URL: wrong scheme is exit 2; unreachable is one line, exit 1, and the
        // URL's password is never shown.
        let err = cli
            .run_with(
                &["devices", "list"],
                &[("DATABASE_URL", "mysql://u:Db-Pass-7@h/db")],
            )
            .fails(2)
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("Db-Pass-7"), "{err}");
        let missing_db = crate::common::with_database(&url, "rb_no_such_database").replacen(
            "://postgres@",
            "://postgres:Db-Pass-7@",
            1,
        );
        let refused = {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("postgres://postgres:Db-Pass-7@127.0.0.1:{port}/x?password=Db-Pass-7")
        };
        for (bad, says) in [
            (missing_db.as_str(), "rb_no_such_database"),
            (refused.as_str(), "refused"),
        ] {
            for args in [
                &["migrate"][..],
                &["devices", "list"][..],
                &["devices", "import", &file][..],
            ] {
                // `migrate` creates a missing database (its own test above); the other
                // commands say it is missing.
                if bad == missing_db && args == ["migrate"] {
                    continue;
                }
                let err = cli
                    .run_with(args, &[("DATABASE_URL", bad)])
                    .fails(1)
                    .to_string();
                assert_eq!(err.trim_end().lines().count(), 1, "{err}");
                assert!(err.contains("cannot connect to the database"), "{err}");
                assert!(err.to_lowercase().contains(says), "{err}");
                assert!(!err.contains("Db-Pass-7"), "{err}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_and_only_their_hash_is_stored() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let tenant = Uuid::new_v4().to_string();
        let out = cli.run(&["tokens", "create", "--name", "alice", "--role", "admin"]);
        let admin = out
            .ok()
            .lines()
            .find(|l| l.starts_with("rbk_"))
            .expect("the token is printed")
            .to_string();
        let viewer = cli
            .run(&[
                "tokens", "create", "--name", "acme", "--role", "viewer", "--tenant", &tenant,
                "--quiet",
            ])
            .ok()
            .trim()
            .to_string();
        assert!(viewer.starts_with("rbk_") && !viewer.contains(' '));
        // The secret half is nowhere in the database, and list never shows it.
        let pool = pool(&url).await;
        let stored: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT name, secret_sha256 FROM api_tokens ORDER BY name")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(stored.len(), 2);
        for (_, hash) in &stored {
            assert_eq!(hash.len(), 32);
        }
        let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, '|') FROM api_tokens t")
            .fetch_one(&pool)
            .await
            .unwrap();
        for t in [&admin, &viewer] {
            let secret = t.splitn(3, '_').nth(2).unwrap();
            assert!(!dump.contains(secret), "a token secret is stored in clear");
        }
        cli.never_print(admin.splitn(3, '_').nth(2).unwrap());
        cli.never_print(viewer.splitn(3, '_').nth(2).unwrap());
        let list = cli.run(&["tokens", "list", "--json"]).json();
        let rows = list.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        let acme = rows.iter().find(|r| r["name"] == "acme").unwrap();
        assert_eq!(acme["role"], "viewer");
        assert_eq!(acme["tenant_id"], serde_json::json!(tenant));
        let table = cli.run(&["tokens", "list"]);
        assert!(table.ok().contains("alice") && table.ok().contains("live"));

        // Both authenticate; a revoked one does not.
        let access =
            rosbackup::access::Access::new(rosbackup::store::Store::from_pool(pool.clone()));
        let who = access
            .authenticate(&viewer)
            .await
            .unwrap()
            .expect("viewer token works");
        assert_eq!(who.role, rosbackup::access::Role::Viewer);
        assert_eq!(who.tenant_id.map(|t| t.to_string()), Some(tenant.clone()));
        cli.run(&["tokens", "revoke", "alice"]).ok();
        assert!(access.authenticate(&admin).await.unwrap().is_none());
        assert!(cli.run(&["tokens", "list"]).ok().contains("revoked"));
        // Revoking again, or something unknown, is a clear error.
        let err = cli.run(&["tokens", "revoke", "alice"]).fails(1).to_string();
        assert!(err.contains("no live token"), "{err}");
        // Bad input: role and tenant are checked before anything is stored.
        let err = cli
            .run(&["tokens", "create", "--name", "x", "--role", "root"])
            .fails(2)
            .to_string();
        assert!(err.contains("root"), "{err}");
        let err = cli
            .run(&[
                "tokens", "create", "--name", "x", "--role", "admin", "--tenant", "acme",
            ])
            .fails(1)
            .to_string();
        assert!(err.contains("--tenant"), "{err}");
        assert_eq!(
            cli.run(&["tokens", "list", "--json"])
                .json()
                .as_array()
                .unwrap()
                .len(),
            2
        );
    })
    .await;
}

#[tokio::test]
async fn rotate_key_re_encrypts_every_password_or_none() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let dir = tempfile::tempdir().unwrap();
        let (csv, sim) = sim_inventory(dir.path(), 4, "").await;
        for d in &sim {
            cli.never_print(&d.password);
        }
        let file = write(dir.path(), "fleet.csv", &csv);
        cli.run(&["devices", "import", &file]).ok();
        let old = cli.credential_key();
        let new_b64 = CredentialKey::generate_base64();
        let new = CredentialKey::from_base64(&new_b64).unwrap();
        let store = rosbackup::store::Store::from_pool(pool(&url).await);

        // A wrong "old" key changes nothing: a configuration error naming the variable
        // (the import recorded the fleet's key check value).
        let wrong = CredentialKey::generate_base64();
        let mut c = cli.command();
        c.args(["devices", "rotate-key"])
            .env("CREDENTIAL_ENCRYPTION_KEY", &wrong)
            .env("NEW_CREDENTIAL_ENCRYPTION_KEY", &new_b64);
        let err = cli.output(c).fails(2).to_string();
        assert!(err.contains("nothing changed"), "{err}");
        assert!(err.contains("CREDENTIAL_ENCRYPTION_KEY"), "{err}");
        assert!(!err.contains(&wrong), "{err}");
        for d in &sim {
            assert_eq!(
                store.password(&old, d.id).await.unwrap().expose(),
                d.password
            );
        }
        // Same key twice, or no new key: a configuration error.
        let same = cli.run_with(
            &["devices", "rotate-key"],
            &[("NEW_CREDENTIAL_ENCRYPTION_KEY", &cli.key)],
        );
        assert!(same.fails(2).contains("NEW_CREDENTIAL_ENCRYPTION_KEY"));
        assert!(
            cli.run(&["devices", "rotate-key"])
                .fails(2)
                .contains("NEW_CREDENTIAL_ENCRYPTION_KEY")
        );

        let out = cli.run_with(
            &["devices", "rotate-key"],
            &[("NEW_CREDENTIAL_ENCRYPTION_KEY", &new_b64)],
        );
        assert!(
            out.ok().contains("re-encrypted 4 device passwords"),
            "{}",
            out.stdout
        );
        for d in &sim {
            assert_eq!(
                store.password(&new, d.id).await.unwrap().expose(),
                d.password
            );
            assert!(
                store.password(&old, d.id).await.is_err(),
                "old key still opens {}",
                d.name
            );
        }
    })
    .await;
}

/// SSH user keys through the CLI (#18): `devices import` reads the simulator's key files
/// (the `ssh_key_file` column), `devices add --key-file` decrypts a protected key with
/// the passphrase from `--key-passphrase-env` (refusing it without, or with a wrong one),
/// `set-credentials` refuses to leave a device with nothing to log in with, and `export
/// --key-file` logs in with the key alone. Neither a passphrase nor a private key line
/// is ever printed.
#[tokio::test]
async fn keys_are_imported_added_and_used_by_export_without_ever_being_printed() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let dir = tempfile::tempdir().unwrap();
        let (csv, sim) = sim_inventory(dir.path(), 3, "keys=1,key-only=1").await;
        let never_print_key = |k: &rosbackup::userkey::UserKey| {
            for l in k.to_sealable().expose().lines() {
                if l.len() >= 20 && !l.starts_with("-----") {
                    cli.never_print(l);
                }
            }
        };
        for d in &sim {
            cli.never_print(&d.password);
            if let Some(k) = &d.user_key {
                never_print_key(k);
            }
        }
        let text = String::from_utf8(csv).unwrap();
        assert!(
            text.lines().next().unwrap().ends_with(",ssh_key_file"),
            "{text}"
        );
        let file = dir.path().join("fleet.csv");
        let out = cli.run(&["devices", "import", file.to_str().unwrap()]);
        assert_eq!(out.ok().trim(), "imported 3 devices (3 new, 0 updated)");
        let store = rosbackup::store::Store::from_pool(pool(&url).await);
        let key = cli.credential_key();
        for d in &sim {
            let c = store.credentials(&key, d.id).await.unwrap();
            assert_eq!(c.key, d.user_key, "{}", d.name);
            assert_eq!(c.password.expose(), d.password);
        }
        let list = cli.run(&["devices", "list", "--json"]).json();
        let with_key = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["has_ssh_key"] == true)
            .count();
        assert_eq!(with_key, 2);

        // A passphrase-protected key for `devices add`.
        let key_path = dir.path().join("id_protected");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "Pass-Phrase-991", "-f"])
            .arg(&key_path)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
        cli.never_print("Pass-Phrase-991");
        let add = |env: &[(&str, &str)], extra: &[&str]| {
            let mut args = vec![
                "devices",
                "add",
                "--name",
                "keyed",
                "--host",
                "10.0.0.9",
                "--username",
                "backup",
                "--key-file",
                key_path.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            cli.run_with(&args, env)
        };
        let e = add(&[], &[]).fails(2).to_string();
        assert!(e.contains("passphrase-protected"), "{e}");
        assert!(e.contains("--key-passphrase-env"), "{e}");
        let e = add(
            &[("KEYPASS", "wrong")],
            &["--key-passphrase-env", "KEYPASS"],
        )
        .fails(2)
        .to_string();
        assert!(e.contains("does not decrypt"), "{e}");
        let e = add(&[], &["--key-passphrase-env", "KEYPASS"])
            .fails(2)
            .to_string();
        assert!(e.contains("KEYPASS"), "{e}");
        let id = add(
            &[("KEYPASS", "Pass-Phrase-991")],
            &["--key-passphrase-env", "KEYPASS"],
        )
        .ok()
        .trim()
        .to_string();
        let id: Uuid = id.parse().unwrap();
        let c = store.credentials(&key, id).await.unwrap();
        let stored = c.key.expect("the key is stored");
        never_print_key(&stored);
        assert!(c.password.is_empty(), "no password was given");
        // Stored decrypted (inside the seal): it opens without a passphrase.
        assert!(!stored.to_sealable().expose().contains("aes256-ctr"));

        // Removing the key would leave it with nothing: refused, nothing changed.
        let e = cli
            .run(&["devices", "set-credentials", "keyed", "--no-key"])
            .fails(1)
            .to_string();
        assert!(e.contains("neither a password nor a key"), "{e}");
        assert!(store.credentials(&key, id).await.unwrap().key.is_some());
        // A password, then the key removed: fine.
        cli.run_with(
            &[
                "devices",
                "set-credentials",
                "keyed",
                "--password-env",
                "PW",
                "--no-key",
            ],
            &[("PW", "Another-Pw-77")],
        )
        .ok();
        cli.never_print("Another-Pw-77");
        let c = store.credentials(&key, id).await.unwrap();
        assert!(c.key.is_none());
        assert_eq!(c.password.expose(), "Another-Pw-77");
    })
    .await;
}

/// `rosbackup export --key-file` logs in to a key-only router with the key alone; a key
/// it does not know is `auth_failed`. (Multi-threaded: the simulator serves while the
/// test waits for the process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_logs_in_with_a_key_file() {
    let sim = Simulator::start(SimConfig {
        devices: 2,
        listen_base: "127.0.0.1".parse().unwrap(),
        port: 0,
        one_address: true,
        faults: "key-only=2".parse().unwrap(),
        config_size: Some(4_000),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    let d = sim.devices()[0].clone();
    let other = sim.devices()[1].clone();
    let key_file = write(
        dir.path(),
        "id",
        d.user_key
            .as_ref()
            .unwrap()
            .to_sealable()
            .expose()
            .as_bytes(),
    );
    let other_file = write(
        dir.path(),
        "other",
        other
            .user_key
            .as_ref()
            .unwrap()
            .to_sealable()
            .expose()
            .as_bytes(),
    );
    let run = |file: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rosbackup"));
        c.env_remove("ROSBACKUP_PASSWORD").args([
            "export",
            "--host",
            "127.0.0.1",
            "--port",
            &d.port.to_string(),
            "--user",
            &d.username,
            "--key-file",
            file,
            "--json",
        ]);
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = run(&key_file);
    assert_eq!(code, Some(0), "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(j["sha256_hash"].is_string(), "{out}");
    let (code, out) = run(&other_file);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("\"error_kind\":\"auth_failed\""), "{out}");
    assert!(out.contains("key refused"), "{out}");
    sim.shutdown().await;
}

/// `rosbackup credentials add|list|set|remove` and devices on a profile: `devices add
/// --credential-profile` needs no password of its own, `set` reports the devices that use
/// the profile, `remove` is refused with the count while one does, and a device moved off
/// the profile lets it go. No password is printed.
#[tokio::test]
async fn credential_profiles_through_the_cli() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        cli.never_print("Profile-Pw-1");
        cli.never_print("Profile-Pw-2");
        cli.never_print("Own-Pw-3");
        let e = cli
            .run(&["credentials", "add", "fleet", "--username", "backup"])
            .fails(2)
            .to_string();
        assert!(e.contains("needs a password"), "{e}");
        let id = cli
            .run_with(
                &[
                    "credentials",
                    "add",
                    "fleet",
                    "--username",
                    "backup",
                    "--password-env",
                    "PPW",
                ],
                &[("PPW", "Profile-Pw-1")],
            )
            .ok()
            .trim()
            .to_string();
        assert!(id.parse::<Uuid>().is_ok(), "{id}");
        let dev = cli
            .run(&[
                "devices",
                "add",
                "--name",
                "r1",
                "--host",
                "10.0.0.1",
                "--credential-profile",
                "fleet",
            ])
            .ok()
            .trim()
            .to_string();
        let e = cli
            .run(&[
                "devices",
                "add",
                "--name",
                "r2",
                "--host",
                "10.0.0.2",
                "--credential-profile",
                "nope",
            ])
            .fails(2)
            .to_string();
        assert!(e.contains("--credential-profile"), "{e}");
        let list = cli.run(&["credentials", "list", "--json"]).json();
        assert_eq!(list[0]["name"], "fleet");
        assert_eq!(list[0]["devices"], 1);
        assert_eq!(list[0]["has_password"], true);
        let table = cli.run(&["credentials", "list"]).ok().to_string();
        assert!(
            table.contains("fleet") && table.contains("password"),
            "{table}"
        );
        // Tenants by name, as `devices list` shows them.
        assert!(table.contains("default"), "{table}");
        // How the device logs in, in words and without a secret.
        let shown = cli.run(&["devices", "show", "r1"]).ok().to_string();
        assert!(
            shown.contains("credential profile fleet") && shown.contains("default ("),
            "{shown}"
        );
        let out = cli
            .run_with(
                &["credentials", "set", "fleet", "--password-env", "PPW"],
                &[("PPW", "Profile-Pw-2")],
            )
            .ok()
            .to_string();
        assert!(out.contains("1 device(s) use it"), "{out}");
        assert!(
            out.contains("updated: password (it has: password)"),
            "{out}"
        );
        // No change flag: refused, not reported as an update (the password stays).
        let e = cli
            .run_with(
                &["credentials", "set", "fleet"],
                &[("ROSBACKUP_PASSWORD", "Own-Pw-3")],
            )
            .fails(2)
            .to_string();
        assert!(e.contains("nothing to change"), "{e}");
        // --tenant takes the tenant's name as well as its id.
        let list = cli
            .run(&["credentials", "list", "--tenant", "default", "--json"])
            .json();
        assert_eq!(list[0]["name"], "fleet");
        let e = cli
            .run(&["credentials", "list", "--tenant", "initech"])
            .fails(1)
            .to_string();
        assert!(e.contains("tenants add"), "{e}");
        // A device of another tenant cannot use the profile: the flag is wrong (exit 2),
        // and the message names the tenant that was searched.
        cli.run(&["tenants", "add", "acme"]).ok();
        cli.run_with(
            &[
                "devices",
                "add",
                "--name",
                "a1",
                "--host",
                "10.0.1.1",
                "--username",
                "u",
                "--tenant",
                "acme",
            ],
            &[("ROSBACKUP_PASSWORD", "Own-Pw-3")],
        )
        .ok();
        let e = cli
            .run(&[
                "devices",
                "set-credentials",
                "a1",
                "--credential-profile",
                "fleet",
            ])
            .fails(2)
            .to_string();
        assert!(
            e.contains("--credential-profile") && e.contains("in tenant acme"),
            "{e}"
        );
        let store = rosbackup::store::Store::from_pool(pool(&url).await);
        let c = store
            .credentials(&cli.credential_key(), dev.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(c.password.expose(), "Profile-Pw-2");
        let e = cli
            .run(&["credentials", "remove", "fleet"])
            .fails(1)
            .to_string();
        assert!(e.contains("used by 1 device"), "{e}");
        // Off the profile, with a password of its own: the profile can go.
        cli.run_with(
            &[
                "devices",
                "set-credentials",
                "r1",
                "--username",
                "backup",
                "--password-env",
                "OWN",
                "--no-credential-profile",
            ],
            &[("OWN", "Own-Pw-3")],
        )
        .ok();
        let out = cli
            .run(&["credentials", "remove", "fleet"])
            .ok()
            .to_string();
        assert!(out.contains("removed"), "{out}");
        assert_eq!(
            cli.run(&["credentials", "list", "--json"]).json(),
            json_empty()
        );
    })
    .await;
}

fn json_empty() -> serde_json::Value {
    serde_json::json!([])
}

/// Tenants by name: `tenants add|list|rename`, `--tenant NAME` on `devices add|list` and
/// `tokens create`, and an inventory without UUIDs (empty id and tenant_id, a `tenant`
/// column) that imports the same devices again on a second run.
#[tokio::test]
async fn tenants_have_names_and_an_inventory_needs_no_uuids() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let dir = tempfile::tempdir().unwrap();

        // The default tenant is there from the start.
        let list = cli.run(&["tenants", "list", "--json"]).json();
        assert_eq!(list[0]["name"], "default");
        assert_eq!(list[0]["id"], Uuid::nil().to_string());

        let acme: Uuid = cli
            .run(&["tenants", "add", "acme"])
            .ok()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(acme, rosbackup::tenant::id_for_name("acme"));
        // A name is unique (case-insensitive) and never a UUID.
        let err = cli.run(&[
            "tenants",
            "add",
            "ACME",
            "--id",
            &Uuid::new_v4().to_string(),
        ]);
        assert!(err.fails(1).contains("belongs to tenant"), "{}", err.stderr);
        let err = cli.run(&["tenants", "add", &Uuid::new_v4().to_string()]);
        assert!(
            err.fails(1).contains("must not look like one"),
            "{}",
            err.stderr
        );

        // An inventory without UUIDs: the default tenant, a named one, a new named one.
        let csv = "id,tenant_id,name,host,port,username,password,routeros_version,tenant\n\
                   ,,edge-1,10.0.0.1,22,backup,Pw-One-1,,\n\
                   ,,edge-2,10.0.0.2,22,backup,Pw-Two-2,,acme\n\
                   ,,edge-3,10.0.0.3,22,backup,Pw-Three-3,,globex\n";
        cli.never_print("Pw-One-1");
        let file = write(dir.path(), "fleet.csv", csv.as_bytes());
        let out = cli.run(&["devices", "import", &file]);
        assert!(out.ok().contains("3 new"), "{}", out.stdout);
        let again = cli.run(&["devices", "import", &file]);
        assert!(again.ok().contains("0 new, 3 updated"), "{}", again.stdout);
        let acme_devices = cli
            .run(&["devices", "list", "--tenant", "acme", "--json"])
            .json();
        assert_eq!(acme_devices.as_array().unwrap().len(), 1);
        assert_eq!(acme_devices[0]["name"], "edge-2");
        assert_eq!(acme_devices[0]["tenant_id"], acme.to_string());
        let d = cli.run(&["devices", "show", "edge-1", "--json"]).json();
        assert_eq!(d["tenant_id"], Uuid::nil().to_string());

        // A device added by hand (random-looking id given) is updated by an id-less row.
        let manual = Uuid::new_v4();
        cli.run_with(
            &[
                "devices",
                "add",
                "--name",
                "core-9",
                "--host",
                "10.0.0.9",
                "--username",
                "backup",
                "--tenant",
                "globex",
                "--id",
                &manual.to_string(),
            ],
            &[("ROSBACKUP_PASSWORD", "Pw-Nine-9")],
        )
        .ok();
        let csv2 = "id,tenant_id,name,host,port,username,password,routeros_version,tenant\n\
                    ,,core-9,10.0.0.99,22,backup,Pw-Nine-9,,globex\n";
        let file2 = write(dir.path(), "more.csv", csv2.as_bytes());
        let out = cli.run(&["devices", "import", &file2]);
        assert!(out.ok().contains("0 new, 1 updated"), "{}", out.stdout);
        let globex = rosbackup::tenant::id_for_name("globex");
        let d = cli
            .run(&["devices", "show", &manual.to_string(), "--json"])
            .json();
        assert_eq!(d["host"], "10.0.0.99");
        assert_eq!(d["tenant_id"], globex.to_string());

        // An unknown tenant name is an error that says how to make one.
        let err = cli.run(&["devices", "list", "--tenant", "initech"]);
        assert!(err.fails(1).contains("tenants add"), "{}", err.stderr);

        // Tokens take the name too; rename keeps the id.
        let out = cli.run(&[
            "tokens", "create", "--name", "acme-ci", "--role", "viewer", "--tenant", "acme",
        ]);
        assert!(out.ok().contains(&acme.to_string()), "{}", out.stdout);
        let renamed: Uuid = cli
            .run(&["tenants", "rename", "acme", "Acme Corp"])
            .ok()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(renamed, acme);
        let list = cli.run(&["tenants", "list"]);
        let line = list
            .ok()
            .lines()
            .find(|l| l.starts_with("Acme Corp"))
            .unwrap_or_else(|| panic!("{}", list.stdout));
        assert!(
            line.contains(&acme.to_string()) && line.trim_end().ends_with('1'),
            "{line}"
        );
    })
    .await;
}

/// A first `migrate` against a server without the database creates it and says so; a
/// second one prints one line and no PostgreSQL notice (the Cli runs with LOG_FORMAT=text
/// and the default LOG_LEVEL=info, where sqlx would log "relation … already exists").
#[tokio::test]
async fn migrate_creates_a_missing_database_and_a_second_run_is_quiet() {
    let name = crate::common::unique("rbnew").to_lowercase();
    let url = crate::common::with_database(&crate::common::database_url(), &name);
    let result = AssertUnwindSafe(async {
        let cli = Cli::new(&url);
        let first = cli.run(&["migrate"]);
        assert_eq!(
            first.ok(),
            format!("created database {name}\nmigrations applied\n")
        );
        let second = cli.run(&["migrate"]);
        assert_eq!(second.ok(), "migrations applied\n");
        assert!(
            !second.stderr.contains("sqlx") && !second.stderr.contains("already exists"),
            "a second migrate logged: {}",
            second.stderr
        );
        // The new database works: devices can be listed.
        cli.run(&["devices", "list", "--json"]).json();
    })
    .catch_unwind()
    .await;
    crate::common::drop_database(&name).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// `devices set-timeout` and `credentials set-timeout`: whole seconds from 1 to 3600 or
/// `auto`, anything else refused (exit 2, nothing changed); `devices show` (text and
/// JSON) gives the timeout the next run will have and its source, the runs their
/// applied timeouts; the inventory's `export_timeout_seconds` column sets, keeps (empty)
/// and removes (`auto`) a device's override, and a bad value names its line and column.
#[tokio::test]
async fn export_timeouts_through_the_cli() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let db = pool(&url).await;
        let fleet = [
            ("CONFIG_BACKUP_COMMAND_TIMEOUT", "10"),
            ("ROSBACKUP_EXPORT_TIMEOUT_MAX", "15"),
        ];
        cli.run_with(
            &[
                "credentials",
                "add",
                "fleet",
                "--username",
                "backup",
                "--password-env",
                "PPW",
            ],
            &[("PPW", "Profile-Pw-9")],
        )
        .ok();
        cli.run_with(
            &["devices", "add", "--name", "r1", "--host", "10.0.0.1", "--username", "backup"],
            &[("ROSBACKUP_PASSWORD", "Own-Pw-9")],
        )
        .ok();
        cli.run(&[
            "devices",
            "add",
            "--name",
            "r2",
            "--host",
            "10.0.0.2",
            "--credential-profile",
            "fleet",
        ])
        .ok();
        let show = |name: &str| cli.run_with(&["devices", "show", name, "--json"], &fleet).json();
        assert_eq!(
            show("r1")["export_timeout"],
            serde_json::json!({"seconds": 10, "source": "fleet"})
        );

        for (bad, says) in [
            ("0", "at least 1"),
            ("-3", "at least 1"),
            ("3601", "at most 3600"),
            ("ten", "whole number"),
        ] {
            let e = cli.run(&["devices", "set-timeout", "r1", bad]).fails(2).to_string();
            assert!(e.contains(says), "{bad}: {e}");
            let e = cli
                .run(&["credentials", "set-timeout", "fleet", bad])
                .fails(2)
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(show("r1")["export_timeout_seconds"], serde_json::Value::Null);

        // A timed-out run doubles the next timeout, up to the ceiling.
        let id: Uuid = show("r1")["id"].as_str().unwrap().parse().unwrap();
        sqlx::query(
            "INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, \
             finished_at, status, error_kind, duration_ms, timeout_seconds, timeout_source, timed_out) \
             VALUES ($1, $2, 'job-1', 'scheduled', 'w1', now(), now(), 'failed', 'timeout', 10000, 10, 'fleet', true)",
        )
        .bind(id)
        .bind(Uuid::nil())
        .execute(&db)
        .await
        .unwrap();
        assert_eq!(
            show("r1")["export_timeout"],
            serde_json::json!({"seconds": 15, "source": "adaptive"}),
            "2 x 10 s, bounded by the ceiling"
        );
        let text = cli.run_with(&["devices", "show", "r1"], &fleet).ok().to_string();
        assert!(text.contains("15 s (adaptive)"), "{text}");
        assert!(text.contains("10 s fleet"), "the run's applied timeout: {text}");

        let out = cli.run_with(&["devices", "set-timeout", "r1", "300"], &fleet);
        assert!(out.ok().contains("300 s (device)"), "{}", out.stdout);
        let d = show("r1");
        assert_eq!(d["export_timeout_seconds"], 300);
        assert_eq!(d["export_timeout"], serde_json::json!({"seconds": 300, "source": "device"}));

        let out = cli.run(&["credentials", "set-timeout", "fleet", "120"]);
        assert!(out.ok().contains("120 s"), "{}", out.stdout);
        assert_eq!(
            show("r2")["export_timeout"],
            serde_json::json!({"seconds": 120, "source": "profile"})
        );
        assert!(cli.run(&["credentials", "list"]).ok().contains("120 s"));
        cli.run(&["credentials", "set-timeout", "fleet", "auto"]).ok();
        assert_eq!(show("r2")["export_timeout"]["source"], "fleet");
        let out = cli.run_with(&["devices", "set-timeout", "r1", "auto"], &fleet);
        assert!(out.ok().contains("15 s (adaptive)"), "{}", out.stdout);

        // The inventory column.
        let dir = tempfile::tempdir().unwrap();
        let head = "id,tenant_id,name,host,port,username,password,routeros_version,export_timeout_seconds\n";
        let csv = format!(
            "{head},,c1,10.1.0.1,22,backup,Csv-Pw-1,,45\n,,c2,10.1.0.2,22,backup,Csv-Pw-2,,\n"
        );
        cli.never_print("Csv-Pw-1");
        cli.never_print("Csv-Pw-2");
        cli.run(&["devices", "import", &write(dir.path(), "a.csv", csv.as_bytes())])
            .ok();
        assert_eq!(show("c1")["export_timeout_seconds"], 45);
        assert_eq!(show("c2")["export_timeout_seconds"], serde_json::Value::Null);
        cli.run(&["devices", "set-timeout", "c2", "90"]).ok();
        let csv = format!(
            "{head},,c1,10.1.0.1,22,backup,Csv-Pw-1,,auto\n,,c2,10.1.0.2,22,backup,Csv-Pw-2,,\n"
        );
        cli.run(&["devices", "import", &write(dir.path(), "b.csv", csv.as_bytes())])
            .ok();
        assert_eq!(show("c1")["export_timeout_seconds"], serde_json::Value::Null, "auto removes");
        assert_eq!(show("c2")["export_timeout_seconds"], 90, "empty keeps");
        let csv = format!("{head},,c3,10.1.0.3,22,backup,Csv-Pw-1,,0\n");
        let e = cli
            .run(&["devices", "import", &write(dir.path(), "c.csv", csv.as_bytes())])
            .fails(1)
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("export_timeout_seconds") && e.contains("at least 1"),
            "{e}"
        );
        assert_eq!(device_count(&db).await, 4, "nothing imported");
    })
    .await;
}

/// A re-import from a CSV without the `ssh_key_file` and `credential_profile` columns
/// (a spreadsheet kept from before keys and profiles, or one written by another tool)
/// keeps the key and profile a device got another way; the columns present but empty
/// remove them.
#[tokio::test]
async fn a_reimport_without_key_or_profile_columns_keeps_them() {
    with_db(|url| async move {
        let cli = Cli::new(&url);
        cli.run(&["migrate"]).ok();
        let dir = tempfile::tempdir().unwrap();
        cli.run_with(
            &[
                "credentials",
                "add",
                "fleet",
                "--username",
                "backup",
                "--password-env",
                "PPW",
            ],
            &[("PPW", "Profile-Pw-9")],
        )
        .ok();
        let key_path = dir.path().join("id_r1");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key_path)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
        let header = "id,tenant_id,name,host,port,username,password,routeros_version";
        let plain = write(
            dir.path(),
            "plain.csv",
            format!("{header}\n,,r1,10.0.0.1,22,admin,Own-Pw-1,7.16\n").as_bytes(),
        );
        cli.run(&["devices", "import", &plain]).ok();
        // The key and the profile come from the CLI.
        cli.run_with(
            &[
                "devices",
                "set-credentials",
                "r1",
                "--username",
                "admin",
                "--password-env",
                "OWN",
                "--key-file",
                key_path.to_str().unwrap(),
                "--credential-profile",
                "fleet",
            ],
            &[("OWN", "Own-Pw-1")],
        )
        .ok();
        let store = rosbackup::store::Store::from_pool(pool(&url).await);
        let key = cli.credential_key();
        let id = store.find_device("r1").await.unwrap().id;
        let profile_of = |store: rosbackup::store::Store| async move {
            sqlx::query_scalar::<_, Option<Uuid>>(
                "SELECT credential_profile_id FROM devices WHERE id = $1",
            )
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap()
        };
        let with_key = store.credentials(&key, id).await.unwrap().key;
        assert!(with_key.is_some());
        assert!(profile_of(store.clone()).await.is_some());

        // Re-import the same file (host changed): key and profile stay.
        let again = write(
            dir.path(),
            "again.csv",
            format!("{header}\n,,r1,10.0.0.9,22,admin,Own-Pw-1,7.16\n").as_bytes(),
        );
        let out = cli.run(&["devices", "import", &again]).ok().to_string();
        assert!(out.contains("1 updated"), "{out}");
        let d = store.find_device("r1").await.unwrap();
        assert_eq!(d.host, "10.0.0.9");
        assert_eq!(store.credentials(&key, id).await.unwrap().key, with_key);
        assert!(profile_of(store.clone()).await.is_some());

        // The columns there but empty: the device has neither any more.
        let cleared = write(
            dir.path(),
            "cleared.csv",
            format!(
                "{header},ssh_key_file,credential_profile\n,,r1,10.0.0.9,22,admin,Own-Pw-1,7.16,,\n"
            )
            .as_bytes(),
        );
        cli.run(&["devices", "import", &cleared]).ok();
        assert_eq!(store.credentials(&key, id).await.unwrap().key, None);
        assert_eq!(profile_of(store.clone()).await, None);
    })
    .await;
}
