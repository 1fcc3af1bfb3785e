//! Config history (`rosbackup::archive`) on the real services: a PostgreSQL database per
//! test, NATS JetStream with a subject prefix, stream, bucket and durable consumer per test,
//! snapshots published with the real `snapshot::Publisher`, the real three-day export
//! sequence read in place from `../shared/routeros/exports`.

use crate::common::fleet::TestDb;
use async_nats::jetstream;
use rosbackup::archive::store::{Incoming, IngestOptions};
use rosbackup::archive::webhook::WebhookSettings;
use rosbackup::archive::{
    Archiver, ArchiverSettings, History, Ingested, Retention, git::GitOutput,
};
use rosbackup::credentials::CredentialKey;
use rosbackup::normalize::{self, Version};
use rosbackup::snapshot::{ConfigSnapshotEvent, Publisher, PublisherConfig};
use rosbackup::store::Store;
use sqlx::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Fx {
    db: TestDb,
    key: CredentialKey,
    key_b64: String,
    pcfg: PublisherConfig,
    publisher: Publisher,
    js: jetstream::Context,
    durable: String,
}

impl Fx {
    async fn new() -> Fx {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("rosbackup=info")
            .with_test_writer()
            .try_init();
        let db = TestDb::new().await;
        let token = Uuid::new_v4().simple().to_string();
        let pcfg = PublisherConfig {
            nats_url: crate::common::nats_url(),
            subject_prefix: format!("arch{token}.config.snapshot"),
            stream_name: format!("ARCH_{token}"),
            object_bucket: format!("ARCHTXT_{token}"),
            stream_max_bytes: 256 * 1024 * 1024,
            ..PublisherConfig::default()
        };
        let publisher = Publisher::connect(pcfg.clone())
            .await
            .expect("NATS is running");
        let js = publisher.jetstream().clone();
        let key_b64 = CredentialKey::generate_base64();
        Fx {
            db,
            key: CredentialKey::from_base64(&key_b64).unwrap(),
            key_b64,
            pcfg,
            publisher,
            js,
            durable: format!("arch-{token}"),
        }
    }

    fn settings(&self) -> ArchiverSettings {
        ArchiverSettings {
            durable: self.durable.clone(),
            ack_wait: Duration::from_secs(2),
            batch: 8,
            housekeeping: Duration::from_millis(300),
            ..ArchiverSettings::default()
        }
    }

    async fn archiver(&self, settings: ArchiverSettings) -> Archiver {
        Archiver::connect(
            self.db.store.clone(),
            self.key.clone(),
            self.pcfg.clone(),
            settings,
        )
        .await
        .expect("archiver connects")
    }

    /// Run an archiver in the background; send on the returned channel to stop it.
    async fn spawn(
        &self,
        settings: ArchiverSettings,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let a = self.archiver(settings).await;
        a.consumer().await.expect("durable consumer");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(async move {
            a.run(async {
                let _ = rx.await;
            })
            .await
            .expect("archiver runs");
        });
        (tx, h)
    }

    fn history(&self) -> History {
        History::new(self.db.store.clone(), self.key.clone())
    }

    async fn add_device(&self, id: Uuid, tenant: Uuid, name: &str) {
        crate::common::add_placeholder_device(&self.db.store, &self.key, id, tenant, name).await;
    }

    /// Publish `raw` (an export) for a device, normalized with `version`, collected at `at`.
    async fn publish(&self, device: Uuid, tenant: Uuid, raw: &[u8], version: Version, at: &str) {
        let (n, h) = normalize::normalize_and_hash(raw, version);
        let mut e = ConfigSnapshotEvent::new(
            device.to_string(),
            tenant.to_string(),
            Some("7.22".into()),
            &n,
            h,
            version,
        );
        e.collected_at = at.to_string();
        let r = self.publisher.publish(&e).await.unwrap();
        assert!(!r.duplicate, "each test snapshot is distinct");
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.db.store.pool())
            .await
            .unwrap()
    }

    async fn consumer_info(&self) -> jetstream::consumer::Info {
        self.js
            .get_stream(self.publisher.stream_name())
            .await
            .unwrap()
            .consumer_info(&self.durable)
            .await
            .unwrap()
    }

    /// Wait until the consumer has nothing pending or unacked.
    async fn drained(&self, timeout: Duration) {
        wait_for(timeout, "the consumer to drain", || async {
            let i = self.consumer_info().await;
            i.num_pending == 0 && i.num_ack_pending == 0
        })
        .await;
    }

    async fn cleanup(self) {
        let _ = self.js.delete_stream(&self.pcfg.stream_name).await;
        let _ = self.js.delete_object_store(&self.pcfg.object_bucket).await;
        self.db.drop().await;
    }
}

async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seq(dir: &Path, day: u8) -> Vec<u8> {
    let name = match day {
        1 => "gh-rotko-bkk50-v7.22-seq1-2026-05-19.rsc",
        2 => "gh-rotko-bkk50-v7.22-seq2-2026-05-20.rsc",
        _ => "gh-rotko-bkk50-v7.22-seq3-2026-05-21.rsc",
    };
    std::fs::read(dir.join(name)).unwrap()
}

fn v2(raw: &[u8]) -> Vec<u8> {
    normalize::normalize(raw, Version::V2)
}

/// A small synthetic export.
fn export(body: &str) -> Vec<u8> {
    format!("# 2026-05-19 02:22:25 by RouterOS 7.22\n# model = RB5009\n{body}").into_bytes()
}

#[tokio::test]
async fn three_day_sequence_makes_two_versions_and_history_answers() {
    let Some(dir) = crate::common::shared_exports() else {
        return;
    };
    let fx = Fx::new().await;
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    let device = Uuid::new_v4();
    fx.add_device(device, tenant, "bkk50").await;
    let git = tempfile::tempdir().unwrap();
    let settings = ArchiverSettings {
        git_dir: Some(git.path().join("history.git")),
        ..fx.settings()
    };
    let (stop, task) = fx.spawn(settings).await;
    // Day 2 published as v1 (the seed's normalization keeps the timestamp header): the
    // archiver compares as v2, so it is still the same config.
    fx.publish(
        device,
        tenant,
        &seq(&dir, 1),
        Version::V2,
        "2026-05-19T02:22:25Z",
    )
    .await;
    fx.publish(
        device,
        tenant,
        &seq(&dir, 2),
        Version::V1,
        "2026-05-20T02:22:25Z",
    )
    .await;
    fx.publish(
        device,
        tenant,
        &seq(&dir, 3),
        Version::V2,
        "2026-05-21T02:21:26Z",
    )
    .await;
    wait_for(Duration::from_secs(20), "3 sightings", || async {
        fx.count("SELECT count(*) FROM config_sightings").await == 3
    })
    .await;
    fx.drained(Duration::from_secs(10)).await;
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 2);

    let h = fx.history();
    let versions = h.versions(device, None, 10).await.unwrap();
    assert_eq!(versions.len(), 2);
    let (new, old) = (&versions[0], &versions[1]);
    assert_eq!(old.sha256, normalize::hash(&v2(&seq(&dir, 1))));
    assert_eq!(new.sha256, normalize::hash(&v2(&seq(&dir, 3))));
    assert_eq!(old.seen_count, 2);
    assert_eq!(new.seen_count, 1);
    assert_eq!(old.first_seen_at.to_rfc3339(), "2026-05-19T02:22:25+00:00");
    assert_eq!(old.last_seen_at.to_rfc3339(), "2026-05-20T02:22:25+00:00");
    assert_eq!(old.routeros_version.as_deref(), Some("7.22"));
    assert!(old.changed_menus.is_empty());
    assert_eq!(new.previous_version_id, Some(old.id));
    assert_eq!(new.changed_menus, ["/ip firewall nat"]);
    assert_eq!((new.added_lines, new.removed_lines), (5, 0));

    // Text, diff, recent changes, sightings.
    let text = h.text(old.id, None).await.unwrap().unwrap();
    assert_eq!(text.as_bytes(), v2(&seq(&dir, 1)));
    let d = h.diff(old.id, new.id, None).await.unwrap().unwrap();
    assert_eq!(d.menus, ["/ip firewall nat"]);
    assert_eq!((d.added, d.removed), (5, 0));
    assert!(d.unified.contains(
        "+/ip firewall nat add action=masquerade chain=srcnat comment=MANUAL-FIX-SNAT-haproxy443 "
    ));
    assert_eq!(d.unified.lines().filter(|l| l.starts_with('+')).count(), 6); // 5 + header
    let back = h.diff(new.id, old.id, None).await.unwrap().unwrap();
    assert_eq!((back.added, back.removed), (0, 5));
    assert_eq!(h.diff_to_previous(new.id, None).await.unwrap().unwrap(), d);
    let changes = h.recent_changes(Some(tenant), 10).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].device_name, "bkk50");
    assert_eq!(changes[0].version_id, new.id);
    assert_eq!(changes[0].previous_version_id, Some(old.id));
    assert_eq!(changes[0].menus, ["/ip firewall nat"]);
    let sightings = h.sightings(device, Some(tenant), 10).await.unwrap();
    assert_eq!(
        sightings.iter().map(|s| s.new_version).collect::<Vec<_>>(),
        [true, false, true]
    );

    // Another tenant sees nothing of it.
    assert!(
        h.versions(device, Some(other), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(h.version(new.id, Some(other)).await.unwrap().is_none());
    assert!(h.text(new.id, Some(other)).await.unwrap().is_none());
    assert!(h.diff(old.id, new.id, Some(other)).await.unwrap().is_none());
    assert!(h.recent_changes(Some(other), 10).await.unwrap().is_empty());
    assert!(
        h.sightings(device, Some(other), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.versions(device, Some(tenant), 10).await.unwrap().len(), 2);

    // At rest: neither the text nor a recognisable part of it is in the database.
    let enc: Vec<u8> = sqlx::query_scalar("SELECT text_enc FROM config_versions WHERE id = $1")
        .bind(new.id)
        .fetch_one(fx.db.store.pool())
        .await
        .unwrap();
    assert!(
        enc.len() < text.len() / 3,
        "compressed: {} bytes",
        enc.len()
    );
    assert!(!enc.windows(12).any(|w| w == b"MANUAL-FIX-S"));
    // Bound to device and hash: another key, or the row moved, does not open.
    let wrong = History::new(
        fx.db.store.clone(),
        CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap(),
    );
    assert!(wrong.text(new.id, None).await.is_err());

    // The git output followed: two commits, in order, the file is the normalized text.
    wait_for(Duration::from_secs(10), "2 git commits", || async {
        GitOutput::new(git.path().join("history.git"))
            .last_exported()
            .unwrap_or(0)
            == new.id
    })
    .await;
    let repo = git2::Repository::open(git.path().join("history.git")).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(head.parent_count(), 1);
    assert!(head.message().unwrap().starts_with("bkk50: "));
    assert!(
        head.message()
            .unwrap()
            .contains("Changed menus: /ip firewall nat")
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("archiver stops on request")
        .unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn flapping_device_makes_two_versions_not_n() {
    let fx = Fx::new().await;
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(device, tenant, "flappy").await;
    let a = export("/ip dns\nset servers=192.0.2.53\n/system identity\nset name=flappy\n");
    let b = export("/ip dns\nset servers=198.51.100.53\n/system identity\nset name=flappy\n");
    for (i, text) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        fx.publish(
            device,
            tenant,
            text,
            Version::V2,
            &format!("2026-05-19T00:00:0{i}Z"),
        )
        .await;
    }
    let (stop, task) = fx.spawn(fx.settings()).await;
    fx.drained(Duration::from_secs(20)).await;
    let versions = fx.history().versions(device, None, 10).await.unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let seen: Vec<i64> = versions.iter().map(|v| v.seen_count).collect();
    assert_eq!(seen, [2, 3]); // B (newest first), A
    assert_eq!(versions[0].changed_menus, ["/ip dns"]);
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 5);
    assert_eq!(
        fx.count("SELECT count(*) FROM config_sightings WHERE new_version")
            .await,
        2
    );
    // With a window of one version, the same flapping does make new versions.
    let store = fx.history().archive().clone();
    let d2 = Uuid::new_v4();
    fx.add_device(d2, tenant, "flappy-2").await;
    for (i, text) in [&a, &b, &a].into_iter().enumerate() {
        let t = v2(text);
        let snap = Incoming {
            msg_key: format!("t:{i}"),
            stream_sequence: None,
            device_id: d2,
            event_tenant: tenant.to_string(),
            collected_at: chrono::Utc::now() + chrono::Duration::seconds(i as i64),
            routeros_version: None,
            event_normalization: 2,
            sha256: normalize::hash(&t),
            text: t,
        };
        let opts = IngestOptions {
            recent_versions: 1,
            notify: false,
        };
        assert!(matches!(
            store.ingest(&snap, opts).await.unwrap(),
            Ingested::NewVersion { .. }
        ));
    }
    let _ = stop.send(());
    task.await.unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn unknown_device_is_kept_aside_then_rehomed() {
    let fx = Fx::new().await;
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    let (stop, task) = fx.spawn(fx.settings()).await;
    let a = export("/interface bridge\nadd name=br1\n");
    let b = export("/interface bridge\nadd name=br1\nadd name=br2\n");
    fx.publish(device, tenant, &a, Version::V2, "2026-05-19T00:00:00Z")
        .await;
    fx.publish(device, tenant, &b, Version::V2, "2026-05-19T06:00:00Z")
        .await;
    fx.drained(Duration::from_secs(20)).await;
    assert_eq!(fx.count("SELECT count(*) FROM archive_orphans").await, 2);
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 0);
    let orphans = fx.history().orphans(10).await.unwrap();
    assert_eq!(orphans.len(), 2);
    assert_eq!(orphans[0].device_id, device);
    assert_eq!(orphans[0].event_tenant, tenant.to_string());
    // The device appears: the running archiver moves its snapshots into the history.
    fx.add_device(device, tenant, "late").await;
    wait_for(Duration::from_secs(10), "re-homing", || async {
        fx.count("SELECT count(*) FROM archive_orphans").await == 0
    })
    .await;
    let versions = fx
        .history()
        .versions(device, Some(tenant), 10)
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].changed_menus, ["/interface bridge"]);
    assert_eq!(versions[0].previous_version_id, Some(versions[1].id));
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 2);
    let _ = stop.send(());
    task.await.unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn malformed_messages_are_acked_and_skipped() {
    let fx = Fx::new().await;
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(device, tenant, "good").await;
    let subject = fx.publisher.subject_for(&device.to_string());
    let text = v2(&export("/ip service\nset telnet disabled=yes\n"));
    let good = ConfigSnapshotEvent::new(
        device.to_string(),
        tenant.to_string(),
        None,
        &text,
        normalize::hash(&text),
        Version::V2,
    );
    let mut wrong_hash = good.clone();
    wrong_hash.sha256_hash = "0".repeat(64);
    let mut not_uuid = good.clone();
    not_uuid.device_id = "router-7".into();
    let mut bad_time = good.clone();
    bad_time.collected_at = "yesterday".into();
    let mut bad_b64 = good.clone();
    bad_b64.config_text_base64 = Some("%%%".into());
    let mut gone_ref = good.clone();
    gone_ref.config_text = String::new();
    gone_ref.config_ref = Some(rosbackup::snapshot::ConfigRef {
        bucket: fx.pcfg.object_bucket.clone(),
        object: format!("{device}/missing"),
        bytes: 10,
    });
    let payloads: Vec<(String, Vec<u8>)> = vec![
        (subject.clone(), b"not json".to_vec()),
        (subject.clone(), b"{\"device_id\": 1}".to_vec()),
        (subject.clone(), serde_json::to_vec(&wrong_hash).unwrap()),
        (
            fx.publisher.subject_for("router-7"),
            serde_json::to_vec(&not_uuid).unwrap(),
        ),
        (
            fx.publisher.subject_for(&Uuid::new_v4().to_string()),
            serde_json::to_vec(&good).unwrap(),
        ),
        (subject.clone(), serde_json::to_vec(&bad_time).unwrap()),
        (subject.clone(), serde_json::to_vec(&bad_b64).unwrap()),
        (subject.clone(), serde_json::to_vec(&gone_ref).unwrap()),
    ];
    for (s, p) in payloads {
        fx.js.publish(s, p.into()).await.unwrap().await.unwrap();
    }
    fx.publisher.publish(&good).await.unwrap();
    let (stop, task) = fx.spawn(fx.settings()).await;
    fx.drained(Duration::from_secs(20)).await;
    let info = fx.consumer_info().await;
    assert_eq!(
        info.num_redelivered, 0,
        "malformed messages are not retried"
    );
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 1);
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 1);
    assert_eq!(fx.count("SELECT count(*) FROM archive_orphans").await, 0);
    let _ = stop.send(());
    task.await.unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn storage_error_is_not_acked_and_is_redelivered() {
    let fx = Fx::new().await;
    let tenant = Uuid::new_v4();
    let (sick, healthy) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(sick, tenant, "sick").await;
    fx.add_device(healthy, tenant, "healthy").await;
    // A real failure inside the transaction, for one device only.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION fail_sick() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.device_id = '{sick}' THEN RAISE EXCEPTION 'simulated disk full'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER fail_sick BEFORE INSERT ON config_sightings \
           FOR EACH ROW EXECUTE FUNCTION fail_sick();"
    )))
    .execute(fx.db.store.pool())
    .await
    .unwrap();
    let text = export("/system clock\nset time-zone-name=Asia/Bangkok\n");
    fx.publish(sick, tenant, &text, Version::V2, "2026-05-19T00:00:00Z")
        .await;
    fx.publish(healthy, tenant, &text, Version::V2, "2026-05-19T00:00:00Z")
        .await;
    let (stop, task) = fx.spawn(fx.settings()).await;
    wait_for(
        Duration::from_secs(20),
        "redeliveries of the failing message",
        || async {
            fx.consumer_info().await.num_redelivered >= 1
                && fx.count("SELECT count(*) FROM config_sightings").await == 1
        },
    )
    .await;
    // Keep failing for a while: still unacked, nothing stored for it, the other device fine.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = fx.consumer_info().await;
    assert_eq!(
        info.num_ack_pending as u64 + info.num_pending,
        1,
        "the failing message is not acked"
    );
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 1);
    assert!(
        fx.history()
            .versions(sick, None, 5)
            .await
            .unwrap()
            .is_empty()
    );
    // The database recovers: the next redelivery is stored.
    sqlx::raw_sql("DROP TRIGGER fail_sick ON config_sightings")
        .execute(fx.db.store.pool())
        .await
        .unwrap();
    fx.drained(Duration::from_secs(30)).await;
    assert_eq!(fx.history().versions(sick, None, 5).await.unwrap().len(), 1);
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 2);
    let _ = stop.send(());
    task.await.unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn killed_mid_batch_loses_nothing_and_duplicates_nothing() {
    let fx = Fx::new().await;
    let tenant = Uuid::new_v4();
    let devices: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for (i, d) in devices.iter().enumerate() {
        fx.add_device(*d, tenant, &format!("kill-{i}")).await;
    }
    // Per device: A, B, A, C, C, D → 4 versions, 6 sightings. 24 messages.
    let bodies = [
        "set name=a",
        "set name=b",
        "set name=a",
        "set name=c",
        "set name=c",
        "set name=d",
    ];
    for (i, body) in bodies.iter().enumerate() {
        for d in &devices {
            let text = export(&format!("/system identity\n{body}\n"));
            fx.publish(
                *d,
                tenant,
                &text,
                Version::V2,
                &format!("2026-05-19T00:00:{i:02}Z"),
            )
            .await;
        }
    }
    // Process 1 fetches a batch and stores all of it, acks only 3, and dies (its NATS
    // connection dropped with it): stored but unacked.
    {
        let a = fx.archiver(fx.settings()).await;
        let consumer = a.consumer().await.unwrap();
        let mut batch = consumer
            .batch()
            .max_messages(8)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let mut n = 0;
        while let Some(Ok(msg)) = futures::StreamExt::next(&mut batch).await {
            let d = a.handle(&msg).await;
            assert!(matches!(
                d,
                rosbackup::archive::consumer::Disposition::Ack(_)
            ));
            if n < 3 {
                Archiver::settle(&msg, &d).await;
            }
            n += 1;
        }
        assert_eq!(n, 8);
        assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 8);
    }
    // Processes 2..4 die at chosen points inside their work. The test holds a PostgreSQL
    // advisory lock the archiver needs, waits until the archiver is seen blocked on it in
    // `pg_stat_activity` (so the crash point is reached, not hoped for), then kills the
    // process: its task is aborted and its own connection pool goes with it, so its open
    // transaction is rolled back, and its unacked messages are redelivered.
    //  2: mid-batch, at the per-device lock of the last device (others may have committed);
    //  3: inside a transaction, right before a new version's insert (the global order lock,
    //     `VERSION_ORDER_LOCK` in crates/archive/src/store.rs);
    //  4: at the last device's lock again (its last version is never reached by 2 or 3).
    let url = fx.db.url.as_str();
    let device_lock = |d: Uuid| async move {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1::text, 7))")
            .bind(d)
            .execute(&mut c)
            .await
            .unwrap();
        c
    };
    let order_lock = || async {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(0x726f_7362_6172_6368_i64)
            .execute(&mut c)
            .await
            .unwrap();
        c
    };
    let last = devices[3];
    for point in 0..3 {
        let before = fx.count("SELECT count(*) FROM config_sightings").await;
        let lock = match point {
            1 => order_lock().await,
            _ => device_lock(last).await,
        };
        let own = Store::connect(url, 4).await.unwrap();
        let a = Archiver::connect(own, fx.key.clone(), fx.pcfg.clone(), fx.settings())
            .await
            .expect("archiver connects");
        let task = tokio::spawn(async move {
            let _ = a.run(std::future::pending()).await;
        });
        wait_for(
            Duration::from_secs(30),
            &format!("archiver {} to block at its crash point", point + 2),
            || async {
                fx.count(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'",
                )
                .await
                    >= 1
            },
        )
        .await;
        task.abort();
        let _ = task.await;
        // The lock is released only after the kill: the blocked statement never commits.
        lock.close().await.unwrap();
        wait_for(
            Duration::from_secs(30),
            "the killed process's sessions to end",
            || async {
                fx.count(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state = 'idle in transaction'",
                )
                .await
                    == 0
            },
        )
        .await;
        let after = fx.count("SELECT count(*) FROM config_sightings").await;
        assert!(
            after < 24,
            "process {} died mid-work ({before} → {after})",
            point + 2
        );
    }
    // A last one finishes the job.
    let (stop, task) = fx.spawn(fx.settings()).await;
    fx.drained(Duration::from_secs(30)).await;
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 24);
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 16);
    assert_eq!(
        fx.count("SELECT sum(seen_count)::bigint FROM config_versions")
            .await,
        24
    );
    for d in &devices {
        let v = fx.history().versions(*d, None, 10).await.unwrap();
        let seen: Vec<i64> = v.iter().map(|v| v.seen_count).collect();
        assert_eq!(seen, [1, 2, 1, 2], "D, C, B, A");
    }
    let _ = stop.send(());
    task.await.unwrap();
    fx.cleanup().await;
}

async fn ingest(
    fx: &Fx,
    device: Uuid,
    tenant: Uuid,
    body: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Ingested {
    let t = v2(&export(body));
    let snap = Incoming {
        msg_key: format!("t:{}", Uuid::new_v4()),
        stream_sequence: None,
        device_id: device,
        event_tenant: tenant.to_string(),
        collected_at: at,
        routeros_version: None,
        event_normalization: 2,
        sha256: normalize::hash(&t),
        text: t,
    };
    fx.history()
        .archive()
        .ingest(&snap, IngestOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn retention_by_count_and_age_per_tenant() {
    let fx = Fx::new().await;
    let (ta, tb, tc) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let now = chrono::Utc::now();
    let days = |d: i64| now - chrono::Duration::days(d);
    let (a1, b1, b2, gone, c1) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    fx.add_device(a1, ta, "a1").await;
    fx.add_device(b1, tb, "b1").await;
    fx.add_device(b2, tb, "b2").await;
    fx.add_device(gone, tb, "gone").await;
    fx.add_device(c1, tc, "c1").await;
    for i in 0..4 {
        ingest(&fx, a1, ta, &format!("/x\nset v={i}\n"), days(4 - i)).await;
        ingest(&fx, c1, tc, &format!("/x\nset v={i}\n"), days(40 - i)).await;
    }
    ingest(&fx, b1, tb, "/x\nset v=1\n", days(5)).await;
    ingest(&fx, b1, tb, "/x\nset v=2\n", days(3)).await;
    ingest(&fx, b1, tb, "/x\nset v=3\n", now).await;
    ingest(&fx, b2, tb, "/x\nset v=1\n", days(9)).await;
    ingest(&fx, b2, tb, "/x\nset v=2\n", days(8)).await;
    ingest(&fx, gone, tb, "/x\nset v=1\n", days(9)).await;
    fx.db.store.remove_device(gone).await.unwrap();
    // Binary backups follow the same rules (tenant A: 4 → 2; tenant C: 4 at 37-40 days →
    // the live device's newest only). The bytes are not opened here: placeholders.
    for (d, t, base) in [(a1, ta, 4), (c1, tc, 40)] {
        for i in 0..4i64 {
            sqlx::query(
                "INSERT INTO binary_backups (device_id, tenant_id, job_id, collected_at, size, \
                 sha256, config_sha256, format, file_enc, password_enc) \
                 VALUES ($1, $2, $3, $4, 1, 'x', 'y', 'aes-sha256', '\\x00', '\\x00')",
            )
            .bind(d)
            .bind(t)
            .bind(format!("retention-{d}-{i}"))
            .bind(days(base - i))
            .execute(fx.db.store.pool())
            .await
            .unwrap();
        }
    }
    let archive = fx.history().archive().clone();
    archive.set_retention(ta, Some(2), None).await.unwrap();
    archive.set_retention(tb, None, Some(2)).await.unwrap();
    assert!(archive.set_retention(tb, Some(0), None).await.is_err());
    let report = archive
        .apply_retention(Retention {
            keep_versions: 1000,
            max_age_days: 30,
        })
        .await
        .unwrap();
    let h = fx.history();
    let count = |d| {
        let h = h.clone();
        async move { h.versions(d, None, 100).await.unwrap().len() }
    };
    assert_eq!(count(a1).await, 2, "tenant A keeps 2 versions");
    assert_eq!(count(b1).await, 1, "tenant B: older than 2 days goes");
    assert_eq!(
        count(b2).await,
        1,
        "a live device keeps its current version"
    );
    assert_eq!(count(gone).await, 0, "a removed device keeps nothing old");
    assert_eq!(count(c1).await, 1, "tenant C: the default age (30 days)");
    assert_eq!(report.versions, 2 + 2 + 1 + 1 + 3);
    assert_eq!(report.binaries, 2 + 3);
    let newest_binaries: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT device_id, count(*) FROM binary_backups GROUP BY device_id ORDER BY 2 DESC",
    )
    .fetch_all(fx.db.store.pool())
    .await
    .unwrap();
    assert_eq!(newest_binaries, [(a1, 2), (c1, 1)]);
    // The kept ones are the newest.
    let kept = h.versions(a1, None, 10).await.unwrap();
    assert_eq!(
        kept[0].first_seen_at.timestamp_micros(),
        days(1).timestamp_micros()
    );
    // Idempotent.
    let again = archive
        .apply_retention(Retention {
            keep_versions: 1000,
            max_age_days: 30,
        })
        .await
        .unwrap();
    assert_eq!(again.versions, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn git_history_one_commit_per_version_and_restart_safe() {
    let Some(dir) = crate::common::shared_exports() else {
        return;
    };
    let fx = Fx::new().await;
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(device, tenant, "bkk50").await;
    let t0 = chrono::Utc::now() - chrono::Duration::days(3);
    for day in 1..=3u8 {
        let t = v2(&seq(&dir, day));
        let snap = Incoming {
            msg_key: format!("day{day}"),
            stream_sequence: None,
            device_id: device,
            event_tenant: tenant.to_string(),
            collected_at: t0 + chrono::Duration::days(i64::from(day)),
            routeros_version: Some("7.22".into()),
            event_normalization: 2,
            sha256: normalize::hash(&t),
            text: t,
        };
        fx.history()
            .archive()
            .ingest(&snap, IngestOptions::default())
            .await
            .unwrap();
    }
    let repo_dir = tempfile::tempdir().unwrap();
    let path = repo_dir.path().join("configs.git");
    let archive = fx.history().archive().clone();
    assert_eq!(
        GitOutput::new(path.clone())
            .export_pending(&archive)
            .await
            .unwrap(),
        2
    );
    // A restart (new instance) and a second run commit nothing again.
    assert_eq!(
        GitOutput::new(path.clone())
            .export_pending(&archive)
            .await
            .unwrap(),
        0
    );

    let repo = git2::Repository::open(&path).unwrap();
    assert!(repo.is_bare());
    let file = format!("{tenant}/bkk50.rsc");
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    let first = head.parent(0).unwrap();
    assert_eq!(first.parent_count(), 0);
    let blob = |c: &git2::Commit<'_>| {
        let entry = c.tree().unwrap().get_path(Path::new(&file)).unwrap();
        repo.find_blob(entry.id()).unwrap().content().to_vec()
    };
    assert_eq!(blob(&first), v2(&seq(&dir, 1)));
    assert_eq!(blob(&head), v2(&seq(&dir, 3)));
    let msg = head.message().unwrap();
    let h1 = normalize::hash(&v2(&seq(&dir, 1)));
    let h3 = normalize::hash(&v2(&seq(&dir, 3)));
    assert!(
        msg.starts_with(&format!("bkk50: {} -> {}", &h1[..8], &h3[..8])),
        "{msg}"
    );
    assert!(msg.contains("Changed menus: /ip firewall nat"), "{msg}");
    assert!(msg.contains(&format!("SHA256: {h3}")), "{msg}");
    assert!(first.message().unwrap().contains("first version"));
    assert_eq!(
        first.time().seconds(),
        (t0 + chrono::Duration::days(1)).timestamp()
    );

    // The next change is one more commit.
    let day4 = ingest(
        &fx,
        device,
        tenant,
        "/ip dns\nset servers=192.0.2.1\n",
        chrono::Utc::now(),
    )
    .await;
    assert!(matches!(day4, Ingested::NewVersion { .. }));
    assert_eq!(
        GitOutput::new(path.clone())
            .export_pending(&archive)
            .await
            .unwrap(),
        1
    );
    let head2 = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(head2.parent(0).unwrap().id(), head.id());
    fx.cleanup().await;
}

#[tokio::test]
async fn webhook_is_retried_until_delivered() {
    use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
    #[derive(Default)]
    struct Hook {
        calls: std::sync::atomic::AtomicUsize,
        bodies: std::sync::Mutex<Vec<serde_json::Value>>,
    }
    async fn receive(
        State(h): State<Arc<Hook>>,
        Json(body): Json<serde_json::Value>,
    ) -> StatusCode {
        let n = h.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n < 3 {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        h.bodies.lock().unwrap().push(body);
        StatusCode::NO_CONTENT
    }
    let hook = Arc::new(Hook::default());
    let app = Router::new()
        .route("/hooks/{token}", post(receive))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let fx = Fx::new().await;
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(device, tenant, "edge-7").await;
    let mut webhook = WebhookSettings::new(
        format!("http://{addr}/hooks/s3cr3t-token"),
        Some("https://rosbackup.example/".into()),
    );
    webhook.base_backoff = Duration::from_millis(200);
    let settings = ArchiverSettings {
        webhook: Some(webhook),
        housekeeping: Duration::from_millis(200),
        ..fx.settings()
    };
    let (stop, task) = fx.spawn(settings).await;
    let a = export(
        "/ip firewall filter\nadd chain=input action=accept\n/snmp community\nset [ find default=yes ] name=public-SECRET\n",
    );
    let b = export(
        "/ip firewall filter\nadd chain=input action=drop\n/snmp community\nset [ find default=yes ] name=public-SECRET\n",
    );
    fx.publish(device, tenant, &a, Version::V2, "2026-05-19T00:00:00Z")
        .await;
    fx.publish(device, tenant, &b, Version::V2, "2026-05-19T06:00:00Z")
        .await;
    wait_for(Duration::from_secs(20), "the webhook delivery", || async {
        !hook.bodies.lock().unwrap().is_empty()
    })
    .await;
    // One change (the first version is not one), delivered on the 4th attempt.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    let versions = fx.history().versions(device, None, 5).await.unwrap();
    assert_eq!(body["event"], "config.changed");
    assert_eq!(body["device_id"], device.to_string());
    assert_eq!(body["device_name"], "edge-7");
    assert_eq!(body["tenant_id"], tenant.to_string());
    assert_eq!(body["old_sha256"], versions[1].sha256);
    assert_eq!(body["new_sha256"], versions[0].sha256);
    assert_eq!(body["version_id"], versions[0].id);
    assert_eq!(
        body["changed_menus"],
        serde_json::json!(["/ip firewall filter"])
    );
    assert_eq!(
        body["link"],
        format!(
            "https://rosbackup.example/devices/{device}/versions/{}",
            versions[0].id
        )
    );
    let raw = body.to_string();
    assert!(
        !raw.contains("SECRET") && !raw.contains("action=drop"),
        "{raw}"
    );
    let (attempts, delivered): (i32, bool) =
        sqlx::query_as("SELECT attempts, delivered_at IS NOT NULL FROM archive_notifications")
            .fetch_one(fx.db.store.pool())
            .await
            .unwrap();
    assert_eq!((attempts, delivered), (4, true));
    let _ = stop.send(());
    task.await.unwrap();
    server.abort();
    fx.cleanup().await;
}

impl Fx {
    /// The environment of a `rosbackup archiver` / `rosbackup history` process for this test.
    fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.db.url.clone()),
            ("NATS_URL", self.pcfg.nats_url.clone()),
            ("ROSBACKUP_SUBJECT_PREFIX", self.pcfg.subject_prefix.clone()),
            ("ROSBACKUP_NATS_STREAM", self.pcfg.stream_name.clone()),
            (
                "ROSBACKUP_NATS_OBJECT_BUCKET",
                self.pcfg.object_bucket.clone(),
            ),
            ("ARCHIVE_CONSUMER", self.durable.clone()),
            ("ARCHIVE_ACK_WAIT", "2".into()),
            ("ARCHIVE_ENCRYPTION_KEY", self.key_b64.clone()),
            ("LOG_FORMAT", "text".into()),
            ("LOG_LEVEL", "warn".into()),
        ]
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"));
        c.args(args).envs(self.process_env());
        c
    }
}

#[tokio::test]
async fn archiver_process_survives_kill_9_stops_on_sigterm_and_history_cli_reads_it() {
    let Some(dir) = crate::common::shared_exports() else {
        return;
    };
    let fx = Fx::new().await;
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(device, tenant, "bkk50").await;

    // Configuration errors exit 2 (naming the variable), unreachable services exit 1.
    let out = fx
        .command(&["archiver"])
        .env_remove("ARCHIVE_ENCRYPTION_KEY")
        .env("ARCHIVE_ENCRYPTION_KEY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ARCHIVE_ENCRYPTION_KEY"));
    let out = fx
        .command(&["archiver"])
        .env("ARCHIVE_RECENT_VERSIONS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = fx
        .command(&["archiver"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (day, at) in [
        (1, "2026-05-19T02:22:25Z"),
        (2, "2026-05-20T02:22:25Z"),
        (3, "2026-05-21T02:21:26Z"),
    ] {
        fx.publish(device, tenant, &seq(&dir, day), Version::V2, at)
            .await;
    }
    // kill -9 as soon as it stored something; a second process finishes.
    let mut first = fx
        .command(&["archiver"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "a first sighting", || async {
        fx.count("SELECT count(*) FROM config_sightings").await >= 1
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = fx
        .command(&["archiver"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first archiver may already have stored everything: wait until the second one is
    // really consuming (its start-up line), so the SIGTERM below tests its shutdown.
    let out = second.stdout.take().expect("stdout");
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("consuming") {
                let _ = started_tx.send(());
            }
            // Keep draining so the archiver never blocks on a full pipe.
        }
    });
    wait_for(Duration::from_secs(30), "3 sightings", || async {
        fx.count("SELECT count(*) FROM config_sightings").await == 3
    })
    .await;
    fx.drained(Duration::from_secs(20)).await;
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 2);
    started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the second archiver says it is consuming");
    // SIGTERM: a clean stop, exit 0.
    unsafe {
        libc::kill(second.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "archiver ignores SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.code(),
        Some(0),
        "archiver after SIGTERM: {status:?} (signal {:?})",
        std::os::unix::process::ExitStatusExt::signal(&status)
    );

    // `rosbackup history`.
    let out = fx.command(&["history", "bkk50"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.contains("/ip firewall nat") && table.contains("first version"),
        "{table}"
    );
    let versions = fx.history().versions(device, None, 5).await.unwrap();
    let (a, b) = (versions[1].id.to_string(), versions[0].id.to_string());
    let out = fx
        .command(&["history", &device.to_string(), "--diff", &a, &b])
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.starts_with("# menus: /ip firewall nat\n# lines: +5 -0\n---"),
        "{diff}"
    );
    let out = fx
        .command(&["history", "bkk50", "--text", &a])
        .output()
        .unwrap();
    assert_eq!(out.stdout, v2(&seq(&dir, 1)));
    let out = fx
        .command(&["history", "bkk50", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let out = fx.command(&["history", "no-such-router"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = fx
        .command(&["history", "bkk50", "--text", "999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    fx.cleanup().await;
}

#[tokio::test]
async fn object_store_references_and_non_utf8_texts_are_archived() {
    let fx = Fx::new().await;
    let (tenant, device) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(device, tenant, "big").await;
    let mut big = String::from("/ip firewall address-list\n");
    for i in 0..40_000u32 {
        big.push_str(&format!(
            "add address=10.{}.{}.1 list=block comment=entry-{i}\n",
            i / 256 % 256,
            i % 256
        ));
    }
    assert!(big.len() > 1_500_000, "larger than NATS' max_payload");
    fx.publish(
        device,
        tenant,
        big.as_bytes(),
        Version::V2,
        "2026-05-19T00:00:00Z",
    )
    .await;
    let latin1 = b"/system note\nset note=caf\xe9\n".to_vec();
    fx.publish(device, tenant, &latin1, Version::V2, "2026-05-19T06:00:00Z")
        .await;
    let (stop, task) = fx.spawn(fx.settings()).await;
    fx.drained(Duration::from_secs(30)).await;
    let h = fx.history();
    let versions = h.versions(device, None, 5).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        h.text_bytes(versions[1].id, None).await.unwrap().unwrap(),
        v2(big.as_bytes())
    );
    assert_eq!(
        h.text_bytes(versions[0].id, None).await.unwrap().unwrap(),
        v2(&latin1)
    );
    assert_eq!(
        versions[0].changed_menus,
        ["/ip firewall address-list", "/system note"]
    );
    let _ = stop.send(());
    task.await.unwrap();
    fx.cleanup().await;
}

/// An archiver, a dashboard or `rosbackup history` started with another archive key than
/// the one that sealed the history refuses to start (exit 2 naming the variable, no key
/// shown), so the history never ends up sealed under two keys. Only the archiver records
/// the key: a reader with a wrong key on an empty archive records nothing. Before a key is
/// recorded, the key that opens the oldest texts is the archive's (an archiver that once
/// ran with a wrong key sealed only newer rows).
#[tokio::test]
async fn a_wrong_archive_key_is_refused_before_anything_is_archived() {
    use rosbackup::archive::keycheck::Record;
    use rosbackup::archive::{ArchiveError, ArchiveKeyCheck, ArchiveStore, Codec};
    let fx = Fx::new().await;
    let (tenant, device, late) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(device, tenant, "r1").await;
    let other_b64 = CredentialKey::generate_base64();
    let other = CredentialKey::from_base64(&other_b64).unwrap();
    let store = |k: &CredentialKey| ArchiveStore::new(fx.db.store.clone(), k.clone());
    let recorded = || fx.count("SELECT count(*) FROM archive_key_check");

    // An empty archive: a reader's key passes and is not recorded; `history` likewise.
    assert_eq!(
        store(&other).check_key(Record::No).await.unwrap(),
        ArchiveKeyCheck::NotRecorded
    );
    let mut cmd = fx.command(&["history", "r1"]);
    cmd.env("ARCHIVE_ENCRYPTION_KEY", &other_b64);
    let out = crate::common::output_within(cmd, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(recorded().await, 0);

    // An archive from before the check value, damaged the old way: its first text under
    // the right key, a newer one under another (a new device's first version).
    ingest(
        &fx,
        device,
        tenant,
        "/system identity\nset name=r1\n",
        chrono::Utc::now(),
    )
    .await;
    let text = v2(&export("/system identity\nset name=late\n"));
    let sha = normalize::hash(&text);
    sqlx::query(
        "INSERT INTO config_versions (device_id, tenant_id, sha256, size, first_seen_at, \
         last_seen_at, normalization, text_enc) VALUES ($1, $2, $3, 1, now(), now(), 2, $4)",
    )
    .bind(late)
    .bind(tenant)
    .bind(&sha)
    .bind(Codec::new(other.clone()).seal(&late, &sha, &text))
    .execute(fx.db.store.pool())
    .await
    .unwrap();
    for record in [Record::No, Record::Yes] {
        assert!(matches!(
            store(&other).check_key(record).await,
            Err(ArchiveError::WrongKey)
        ));
    }
    assert_eq!(recorded().await, 0);
    assert_eq!(
        store(&fx.key).check_key(Record::No).await.unwrap(),
        ArchiveKeyCheck::NotRecorded
    );
    assert_eq!(recorded().await, 0);
    assert_eq!(
        store(&fx.key).check_key(Record::Yes).await.unwrap(),
        ArchiveKeyCheck::Recorded
    );
    assert_eq!(
        store(&fx.key).check_key(Record::No).await.unwrap(),
        ArchiveKeyCheck::Matches
    );
    // Now the check value decides, even with no archived text left to try.
    sqlx::query("TRUNCATE config_sightings, config_versions CASCADE")
        .execute(fx.db.store.pool())
        .await
        .unwrap();
    assert!(matches!(
        store(&other).check_key(Record::No).await,
        Err(ArchiveError::WrongKey)
    ));

    // The processes: exit 2 naming the variable, neither key shown, nothing archived.
    fx.publish(
        device,
        tenant,
        &export("/ip dns\nset servers=1.1.1.1\n"),
        Version::V2,
        "2026-05-19T02:22:25Z",
    )
    .await;
    for args in [&["archiver"][..], &["history", "r1"][..]] {
        let mut cmd = fx.command(args);
        cmd.env("ARCHIVE_ENCRYPTION_KEY", &other_b64);
        let out = crate::common::output_within(cmd, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("ARCHIVE_ENCRYPTION_KEY"), "{stderr}");
        assert!(stderr.contains("not the key of this archive"), "{stderr}");
        assert!(
            !stderr.contains(&other_b64) && !stderr.contains(&fx.key_b64),
            "{stderr}"
        );
    }
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM archive_orphans").await, 0);

    // The in-process wiring of the archiver and the enqueuer (its history pages) says
    // the same.
    let mut pairs: Vec<(&str, String)> = fx
        .process_env()
        .into_iter()
        .map(|(k, v)| {
            if k == "ARCHIVE_ENCRYPTION_KEY" {
                (k, other_b64.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    pairs.push(("REDIS_URL", crate::common::fleet::redis_url()));
    let env = rosbackup::config::Env::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    let e = rosbackup::service::archiver_from_env(&env)
        .await
        .expect_err("wrong archive key refused");
    assert_eq!(e.exit_code(), 2, "{e}");
    let e = rosbackup::service::enqueuer_from_env(&env, rosbackup::service::Flags::default())
        .await
        .expect_err("wrong archive key refused");
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("ARCHIVE_ENCRYPTION_KEY"), "{e}");

    // The right key still reads the history.
    let out = fx.command(&["history", "r1"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Before `rosbackup migrate` made the table: the oldest texts decide, nothing is
    // recorded.
    ingest(
        &fx,
        device,
        tenant,
        "/system identity\nset name=r1b\n",
        chrono::Utc::now(),
    )
    .await;
    sqlx::query("DROP TABLE archive_key_check")
        .execute(fx.db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        store(&fx.key).check_key(Record::Yes).await.unwrap(),
        ArchiveKeyCheck::NotRecorded
    );
    assert!(matches!(
        store(&other).check_key(Record::Yes).await,
        Err(ArchiveError::WrongKey)
    ));
    fx.cleanup().await;
}

/// Two first archivers with different keys at once on an empty archive: the table lock
/// lets exactly one record its key; the other is refused, whichever comes second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_first_archivers_with_different_keys_record_one_key() {
    use rosbackup::archive::keycheck::Record;
    use rosbackup::archive::{ArchiveError, ArchiveKeyCheck, ArchiveStore};
    let fx = Fx::new().await;
    let other = CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap();
    let a = ArchiveStore::new(fx.db.store.clone(), fx.key.clone());
    let b = ArchiveStore::new(fx.db.store.clone(), other.clone());
    let (ra, rb) = tokio::join!(a.check_key(Record::Yes), b.check_key(Record::Yes));
    let recorded = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Ok(ArchiveKeyCheck::Recorded)))
        .count();
    let refused = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Err(ArchiveError::WrongKey)))
        .count();
    assert_eq!((recorded, refused), (1, 1), "{ra:?} {rb:?}");
    assert_eq!(fx.count("SELECT count(*) FROM archive_key_check").await, 1);
    // The one recorded is the one that matches from now on.
    let winner = if ra.is_ok() { &a } else { &b };
    assert_eq!(
        winner.check_key(Record::No).await.unwrap(),
        ArchiveKeyCheck::Matches
    );
    fx.cleanup().await;
}
