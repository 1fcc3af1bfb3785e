//! TLS to all three services, live: private PostgreSQL, Redis and NATS started with TLS
//! only and client-certificate verification, under a CA this test makes with `openssl`.
//! A fleet backs up over them end to end (worker and enqueuer as processes, configured
//! only through the documented variables), and the ways TLS must fail do fail: plaintext
//! against a TLS-only server, an unknown CA, no client certificate, a bad file.

use crate::common::fleet::{Fleet, FleetOptions, ServiceUrls, TestDb};
use rosbackup::tls::TlsFiles;
use rosbackup_harness::services::{self, Service};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The test's CA, a server certificate for 127.0.0.1/localhost and a client certificate
/// (CN=postgres: PostgreSQL's `cert` authentication maps it to that user).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn client(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca()),
            cert_file: Some(self.file("client.pem")),
            key_file: Some(self.file("client.key")),
        }
    }

    fn make(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl is installed (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=rosbackup test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "postgres",
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let subj = format!("/CN={cn}");
            let mut req = vec!["req", "-new", "-nodes"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&req);
            let ext_file = format!("{name}.ext");
            let pem = format!("{name}.pem");
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &ext_file,
            ]);
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }
}

struct TlsServices {
    pg: Service,
    redis: Service,
    nats: Service,
    /// Admin URL of the TLS PostgreSQL, with the client certificate.
    pg_url: String,
    redis_url: String,
    nats_url: String,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl TlsServices {
    async fn start() -> TlsServices {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::make(&dir.path().join("pki"));
        let s = |p: PathBuf| p.display().to_string();

        // PostgreSQL: TLS only (`hostssl`, no `host` line), client certificate required.
        let pg_dir = dir.path().join("pg");
        std::fs::create_dir_all(&pg_dir).expect("pg dir");
        let hba = pg_dir.join("hba.conf");
        std::fs::write(&hba, "hostssl all all 127.0.0.1/32 cert\n").expect("hba");
        if let Some((uid, gid)) = services::postgres_user() {
            for f in [
                pki.file("server.pem"),
                pki.file("server.key"),
                pki.ca(),
                hba.clone(),
            ] {
                std::os::unix::fs::chown(&f, Some(uid), Some(gid)).expect("chown for postgres");
            }
            for d in [dir.path(), pki.dir.as_path()] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown dir");
            }
        }
        std::fs::set_permissions(
            pki.file("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("key mode");
        let pg_port = services::free_port().expect("port");
        let pg = services::postgres_at_with(
            "postgres://127.0.0.1:1/x",
            pg_port,
            &pg_dir,
            &[
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", s(pki.file("server.pem"))),
                "-c".into(),
                format!("ssl_key_file={}", s(pki.file("server.key"))),
                "-c".into(),
                format!("ssl_ca_file={}", s(pki.ca())),
                "-c".into(),
                format!("hba_file={}", s(hba)),
            ],
        )
        .await
        .expect("private PostgreSQL with TLS starts");
        let pg_url = format!(
            "postgres://postgres@127.0.0.1:{pg_port}/postgres?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            s(pki.ca()),
            s(pki.file("client.pem")),
            s(pki.file("client.key")),
        );

        // Redis: no plaintext port, TLS port verifying client certificates (its default).
        let redis_port = services::free_port().expect("port");
        let redis = services::redis_at_with(
            "rediss://127.0.0.1:1/0",
            redis_port,
            dir.path(),
            &[
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                redis_port.to_string(),
                "--tls-cert-file".into(),
                s(pki.file("server.pem")),
                "--tls-key-file".into(),
                s(pki.file("server.key")),
                "--tls-ca-cert-file".into(),
                s(pki.ca()),
                "--tls-auth-clients".into(),
                "yes".into(),
            ],
        )
        .await
        .expect("private Redis with TLS starts (Debian's redis-server is built with TLS)");

        // NATS: TLS required for every client, client certificates verified.
        let nats_port = services::free_port().expect("port");
        let nats = services::nats_at_with(
            "tls://127.0.0.1:1",
            nats_port,
            dir.path(),
            &[
                "--tls".into(),
                "--tlscert".into(),
                s(pki.file("server.pem")),
                "--tlskey".into(),
                s(pki.file("server.key")),
                "--tlscacert".into(),
                s(pki.ca()),
                "--tlsverify".into(),
            ],
        )
        .await
        .expect("private NATS with TLS starts");
        TlsServices {
            pg,
            redis,
            nats,
            pg_url,
            redis_url: format!("rediss://127.0.0.1:{redis_port}/0"),
            nats_url: format!("tls://127.0.0.1:{nats_port}"),
            pki,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        for s in [&mut self.pg, &mut self.redis, &mut self.nats] {
            s.stop(Duration::from_secs(5)).await;
        }
    }
}

/// The whole pipeline over TLS: inventory in PostgreSQL, jobs in Redis, snapshots in
/// NATS, with the worker and enqueuer processes configured only by `DATABASE_URL`'s
/// libpq parameters and `ROSBACKUP_TLS_*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_backs_up_over_tls_to_postgres_redis_and_nats() {
    let svc = TlsServices::start().await;
    let fleet = Fleet::start_on(
        ServiceUrls {
            database_url: svc.pg_url.clone(),
            redis_url: svc.redis_url.clone(),
            nats_url: svc.nats_url.clone(),
            tls: svc.pki.client(),
        },
        FleetOptions {
            sim: rosbackup::sim::SimConfig {
                devices: 5,
                ..FleetOptions::default().sim
            },
            ..FleetOptions::default()
        },
    )
    .await;
    // The connection the fleet uses is encrypted (not merely allowed to be).
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(fleet.store().pool())
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the PostgreSQL connection is TLS");

    // The worker and enqueuer are processes, configured like an operator would.
    let devices = fleet.import(None).await;
    assert!(!devices.is_empty());
    let spawn = |cmd: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .arg(cmd)
            .arg("--insecure-no-auth")
            .envs(fleet.process_env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start rosbackup")
    };
    let mut enqueuer = spawn("enqueuer");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
        .arg("worker")
        .envs(fleet.process_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rosbackup worker");
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device backed up over TLS",
            || async { fleet.count_status("success").await == devices.len() as i64 },
        )
        .await;
    for p in [&mut enqueuer, &mut worker] {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
    }
    for (name, p) in [("enqueuer", enqueuer), ("worker", worker)] {
        let out = tokio::task::spawn_blocking(move || p.wait_with_output())
            .await
            .expect("join")
            .expect("wait");
        assert!(
            out.status.success(),
            "{name} exits cleanly: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every snapshot arrived through the TLS NATS, whole and once.
    let audit = fleet.audit_stream().await;
    assert_eq!(audit.messages, devices.len() as u64);
    for d in &devices {
        assert_eq!(audit.count(d.id), 1, "{}", d.name);
    }
    fleet.cleanup().await;
    svc.stop().await;
}

/// What must not work does not: plaintext to TLS-only servers, a server certificate
/// from an unknown CA (the Web PKI roots), no client certificate, a bad TLS file at
/// startup (exit 2 naming the variable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_plaintext_unknown_ca_and_missing_client_certificates() {
    let svc = TlsServices::start().await;
    let client = svc.pki.client();
    let connect_redis = |url: String, tls: TlsFiles| async move {
        tokio::time::timeout(
            Duration::from_secs(20),
            rosbackup::queue::connect(&url, &tls, Duration::from_secs(2)),
        )
        .await
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    };
    // Redis.
    connect_redis(svc.redis_url.clone(), client.clone())
        .await
        .expect("the right CA and client certificate connect");
    let plain = svc.redis_url.replacen("rediss://", "redis://", 1);
    assert!(connect_redis(plain, TlsFiles::default()).await.is_err());
    assert!(
        connect_redis(svc.redis_url.clone(), TlsFiles::default())
            .await
            .is_err(),
        "Web PKI roots do not trust the test CA"
    );
    let no_client_cert = TlsFiles {
        ca_file: client.ca_file.clone(),
        ..TlsFiles::default()
    };
    assert!(
        connect_redis(svc.redis_url.clone(), no_client_cert.clone())
            .await
            .is_err(),
        "Redis requires a client certificate"
    );

    // NATS.
    let connect_nats = |tls: TlsFiles, url: String| async move {
        tls.nats_options(
            async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)),
        )
        .connect(url)
        .await
        .map(|_| ())
    };
    connect_nats(client.clone(), svc.nats_url.clone())
        .await
        .expect("NATS over TLS with the client certificate");
    assert!(
        connect_nats(TlsFiles::default(), svc.nats_url.clone())
            .await
            .is_err(),
        "unknown CA"
    );
    assert!(
        connect_nats(no_client_cert, svc.nats_url.clone())
            .await
            .is_err(),
        "NATS requires a client certificate"
    );
    let plain_nats = svc.nats_url.replacen("tls://", "nats://", 1);
    assert!(
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(plain_nats)
            .await
            .is_err(),
        "NATS refuses a plaintext client"
    );

    // PostgreSQL: TLS with the CA and client certificate works; without TLS, without the
    // CA or without a client certificate it does not.
    let db = TestDb::new_on(&svc.pg_url).await;
    db.drop().await;
    let base = svc.pg_url.split_once('?').expect("query").0.to_string();
    let ca = svc.pki.ca().display().to_string();
    for (what, url) in [
        ("plaintext", format!("{base}?sslmode=disable")),
        ("unknown CA", format!("{base}?sslmode=verify-full")),
        (
            "no client certificate",
            format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        ),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(20), sqlx::PgPool::connect(&url)).await;
        assert!(!matches!(r, Ok(Ok(_))), "PostgreSQL must refuse: {what}");
    }

    // A bad TLS file stops the worker at startup: exit 2, one line naming the variable.
    for (var, value) in [
        (rosbackup::tls::CA_VAR, "/nonexistent/ca.pem".to_string()),
        (
            rosbackup::tls::CA_VAR,
            svc.pki.file("client.key").display().to_string(),
        ),
        (
            rosbackup::tls::CERT_VAR,
            svc.pki.file("client.pem").display().to_string(),
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
            .arg("worker")
            .env(
                "CREDENTIAL_ENCRYPTION_KEY",
                rosbackup::credentials::CredentialKey::generate_base64(),
            )
            .env(var, &value)
            .output()
            .expect("run worker");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains("ROSBACKUP_TLS_"), "{stderr}");
        assert!(
            !stderr.contains("BEGIN"),
            "no key text in the error: {stderr}"
        );
    }
    svc.stop().await;
}
