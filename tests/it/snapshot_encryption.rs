//! Encrypted snapshot events (`ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY`) on the real services:
//! a simulated router exports with `show-sensitive` over SSH, the real `Publisher`
//! publishes to NATS JetStream (a subject prefix, stream and object bucket per test), and
//! the real archiver stores into a PostgreSQL database of its own. What is checked is what
//! a reader of the bus sees — the raw stored message and object, byte for byte — and what
//! the archiver does with good, altered and undecryptable messages. The default (no key)
//! must stay the seed's schema exactly.

use crate::common::fleet::TestDb;
use async_nats::jetstream;
use rosbackup::archive::consumer::{Disposition, Outcome};
use rosbackup::archive::{Archiver, ArchiverSettings, History};
use rosbackup::backup::{self, Collected};
use rosbackup::credentials::CredentialKey;
use rosbackup::device::{ExportOptions, Target};
use rosbackup::normalize::{self, Version};
use rosbackup::sim::{SimConfig, Simulator};
use rosbackup::snapshot::crypto::{SnapshotKey, SnapshotKeys};
use rosbackup::snapshot::{
    ConfigSnapshotEvent, Publisher, PublisherConfig, fetch_config_text, fetch_config_text_with_keys,
};
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Fx {
    db: TestDb,
    archive_key: CredentialKey,
    /// Plaintext publisher (the default).
    plain_cfg: PublisherConfig,
    js: jetstream::Context,
    durable: String,
}

impl Fx {
    async fn new() -> Fx {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("rosbackup=info")
            .with_test_writer()
            .try_init();
        let token = Uuid::new_v4().simple().to_string();
        let plain_cfg = PublisherConfig {
            nats_url: crate::common::nats_url(),
            subject_prefix: format!("enc{token}.config.snapshot"),
            stream_name: format!("ENC_{token}"),
            object_bucket: format!("ENCTXT_{token}"),
            stream_max_bytes: 256 * 1024 * 1024,
            ..PublisherConfig::default()
        };
        let client = async_nats::connect(&plain_cfg.nats_url)
            .await
            .expect("NATS is running");
        Fx {
            db: TestDb::new().await,
            archive_key: CredentialKey::from_base64(&CredentialKey::generate_base64()).unwrap(),
            plain_cfg,
            js: jetstream::new(client),
            durable: format!("enc-{token}"),
        }
    }

    async fn publisher(&self, key: Option<&SnapshotKey>) -> Publisher {
        Publisher::connect(PublisherConfig {
            encryption: key.cloned(),
            ..self.plain_cfg.clone()
        })
        .await
        .expect("publisher connects")
    }

    fn settings(&self, keys: &[&SnapshotKey]) -> ArchiverSettings {
        let mut snapshot_keys = SnapshotKeys::new();
        for k in keys {
            snapshot_keys.push((*k).clone());
        }
        ArchiverSettings {
            durable: self.durable.clone(),
            ack_wait: Duration::from_secs(2),
            batch: 8,
            housekeeping: Duration::from_millis(300),
            snapshot_keys,
            ..ArchiverSettings::default()
        }
    }

    async fn archiver(&self, keys: &[&SnapshotKey]) -> Archiver {
        let a = Archiver::connect(
            self.db.store.clone(),
            self.archive_key.clone(),
            self.plain_cfg.clone(),
            self.settings(keys),
        )
        .await
        .expect("archiver connects");
        a.consumer().await.expect("durable consumer");
        a
    }

    /// Run an archiver in the background; send on the returned channel to stop it.
    async fn spawn(
        &self,
        keys: &[&SnapshotKey],
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let a = self.archiver(keys).await;
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

    async fn stop(
        (tx, task): (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
    ) {
        let _ = tx.send(());
        task.await.unwrap();
    }

    fn history(&self) -> History {
        History::new(self.db.store.clone(), self.archive_key.clone())
    }

    async fn add_device(&self, id: Uuid, tenant: Uuid, name: &str) {
        crate::common::add_placeholder_device(&self.db.store, &self.archive_key, id, tenant, name)
            .await;
    }

    fn subject(&self, device: Uuid) -> String {
        format!("{}.create.{device}", self.plain_cfg.subject_prefix)
    }

    /// The stored message at `seq`, as any reader of the stream gets it.
    async fn raw(&self, seq: u64) -> jetstream::message::StreamMessage {
        self.js
            .get_stream(&self.plain_cfg.stream_name)
            .await
            .unwrap()
            .get_raw_message(seq)
            .await
            .expect("stored message")
    }

    async fn consumer_info(&self) -> jetstream::consumer::Info {
        self.js
            .get_stream(&self.plain_cfg.stream_name)
            .await
            .unwrap()
            .consumer_info(&self.durable)
            .await
            .unwrap()
    }

    async fn drained(&self, timeout: Duration) {
        wait_for(timeout, "the consumer to drain", || async {
            let i = self.consumer_info().await;
            i.num_pending == 0 && i.num_ack_pending == 0
        })
        .await;
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.db.store.pool())
            .await
            .unwrap()
    }

    /// The one archived version of `device`: (sha256, exact text).
    async fn archived(&self, device: Uuid) -> (String, Vec<u8>) {
        let h = self.history();
        let v = h.versions(device, None, 5).await.unwrap();
        assert_eq!(v.len(), 1, "one version of {device}");
        let text = h.text_bytes(v[0].id, None).await.unwrap().unwrap();
        (v[0].sha256.clone(), text)
    }

    async fn cleanup(self) {
        let _ = self.js.delete_stream(&self.plain_cfg.stream_name).await;
        let _ = self
            .js
            .delete_object_store(&self.plain_cfg.object_bucket)
            .await;
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

/// One export from a simulated RouterOS 7 device (generated config, `show-sensitive`).
async fn export_from_simulator(addr: &str, config_size: Option<usize>) -> Collected {
    let sim = Simulator::start(SimConfig {
        devices: 1,
        listen_base: addr.parse().unwrap(),
        port: 0,
        one_address: true,
        config_size,
        seed: 77,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let d = sim.devices()[0].clone();
    let target = Target {
        host: d.host.to_string(),
        port: d.port,
        username: d.username.clone(),
        password: rosbackup::Secret::new(d.password.clone()),
        key: None,
        jump: None,
        known_fingerprint: None,
        routeros_version: Some(d.routeros_version.clone()),
    };
    let opts = ExportOptions {
        sensitive: true,
        ..ExportOptions::default()
    };
    let collected = backup::collect(&target, &opts, Version::V2)
        .await
        .expect("export from the simulator");
    sim.shutdown().await;
    collected
}

/// Lines of the config long enough to be unambiguous (what "no plaintext" looks for
/// besides the secrets).
fn distinctive_lines(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.len() >= 24)
        .map(str::to_string)
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn header<'a>(m: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    m.headers.get(name).map(|v| v.as_str())
}

#[tokio::test]
async fn default_mode_publishes_the_seeds_schema_byte_for_byte() {
    let fx = Fx::new().await;
    let p = fx.publisher(None).await;
    let device = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
    let text = b"/system identity\nset name=\"core \\\"1\\\"\"\n";
    let (n, h) = normalize::normalize_and_hash(text, Version::V2);
    let mut e = ConfigSnapshotEvent::new(
        device,
        "0e1d2c3b-4a59-4867-8756-a4b3c2d1e0f9",
        Some("7.16".into()),
        &n,
        h.clone(),
        Version::V2,
    );
    e.collected_at = "2026-05-19T02:22:25Z".into();
    let r = p.publish(&e).await.unwrap();
    assert!(!r.by_reference);
    // The seed's Go struct, field for field and in its order (json.Marshal output).
    let expected = format!(
        concat!(
            r#"{{"device_id":"{}","tenant_id":"0e1d2c3b-4a59-4867-8756-a4b3c2d1e0f9","#,
            r#""routeros_version":"7.16","collected_at":"2026-05-19T02:22:25Z","#,
            r#""sha256_hash":"{}","config_text":"/system identity\nset name=\"core \\\"1\\\"\"\n","#,
            r#""normalization_version":2}}"#
        ),
        device, h
    );
    let m = fx.raw(r.sequence).await;
    assert_eq!(String::from_utf8_lossy(&m.payload), expected);
    // Headers: the seed's dedup id only, nothing that announces encryption.
    let names: Vec<String> = m.headers.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(names, ["Nats-Msg-Id"], "{names:?}");
    assert_eq!(
        header(&m, "Nats-Msg-Id"),
        Some(format!("{device}:2026-05-19T02:22:25Z:{h}").as_str())
    );
    // A plaintext reader needs no key; the keyed reader reads plaintext events too.
    let back = ConfigSnapshotEvent::decode(&m.payload).unwrap();
    assert_eq!(fetch_config_text(&fx.js, &back).await.unwrap(), n);
    let keys = SnapshotKeys::new();
    assert_eq!(
        fetch_config_text_with_keys(&fx.js, &back, &keys)
            .await
            .unwrap(),
        n
    );
    fx.cleanup().await;
}

#[tokio::test]
async fn encrypted_snapshot_of_a_simulated_router_hides_its_secrets_and_archives_like_plaintext() {
    let fx = Fx::new().await;
    let collected = export_from_simulator("127.65.0.1", None).await;
    let secrets = crate::common::secret_values(&collected.normalized);
    assert!(
        !secrets.is_empty(),
        "a show-sensitive export of the simulator carries secrets"
    );
    let lines = distinctive_lines(&collected.normalized);
    assert!(lines.len() >= 10);
    let key = SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap();
    let tenant = Uuid::new_v4();
    let (plain_dev, enc_dev) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(plain_dev, tenant, "plain").await;
    fx.add_device(enc_dev, tenant, "encrypted").await;

    // The same backup, once as the default publishes it and once encrypted, the way the
    // worker does (job-scoped Nats-Msg-Id).
    let plain = fx.publisher(None).await;
    let enc = fx.publisher(Some(&key)).await;
    let (_, pr) = backup::publish_for_job(
        &plain,
        &collected,
        &plain_dev.to_string(),
        &tenant.to_string(),
        "job-plain",
    )
    .await
    .unwrap();
    let (_, er) = backup::publish_for_job(
        &enc,
        &collected,
        &enc_dev.to_string(),
        &tenant.to_string(),
        "job-enc",
    )
    .await
    .unwrap();
    assert!(!er.by_reference);

    // The plaintext message does carry the secrets (so the search below is real)…
    let pm = fx.raw(pr.sequence).await;
    assert!(contains(&pm.payload, secrets[0].as_bytes()));
    // …the encrypted one carries none of them, no line of the config, not the plain
    // SHA-256 (in the body or the Nats-Msg-Id), and says how it is encrypted.
    let em = fx.raw(er.sequence).await;
    for s in &secrets {
        assert!(
            !contains(&em.payload, s.as_bytes()),
            "a secret is on the bus"
        );
    }
    for l in &lines {
        assert!(
            !contains(&em.payload, l.as_bytes()),
            "config text on the bus: {l}"
        );
    }
    let all_headers: String = em
        .headers
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}: {:?}\n",
                v.iter().map(|x| x.as_str()).collect::<Vec<_>>()
            )
        })
        .collect();
    assert!(!contains(&em.payload, collected.sha256.as_bytes()));
    assert!(!all_headers.contains(&collected.sha256), "{all_headers}");
    assert_eq!(header(&em, "Rosbackup-Encryption"), Some("AES-256-GCM"));
    assert_eq!(header(&em, "Rosbackup-Key-Id"), Some(key.id()));
    let ev = ConfigSnapshotEvent::decode(&em.payload).unwrap();
    assert_eq!(ev.config_text, "");
    assert_eq!(ev.sha256_hash, key.keyed_hash(&collected.normalized));
    assert_eq!(
        header(&em, "Nats-Msg-Id"),
        Some(format!("job-enc:{}", ev.sha256_hash).as_str())
    );
    assert_eq!(ev.device_id, enc_dev.to_string(), "metadata stays readable");
    // The consumer helper: decrypts with the key, refuses without it.
    let mut keys = SnapshotKeys::new();
    keys.push(key.clone());
    assert_eq!(
        fetch_config_text_with_keys(&fx.js, &ev, &keys)
            .await
            .unwrap(),
        collected.normalized
    );
    let e = fetch_config_text(&fx.js, &ev).await.unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");

    // The archiver stores both as the same text under the same (plain) SHA-256.
    let run = fx.spawn(&[&key]).await;
    fx.drained(Duration::from_secs(30)).await;
    Fx::stop(run).await;
    let (ph, ptext) = fx.archived(plain_dev).await;
    let (eh, etext) = fx.archived(enc_dev).await;
    assert_eq!(etext, ptext);
    assert_eq!(eh, ph);
    assert_eq!(eh, collected.sha256);
    assert_eq!(etext, collected.normalized);
    assert_eq!(fx.consumer_info().await.num_redelivered, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn tampered_or_swapped_ciphertexts_are_rejected() {
    let fx = Fx::new().await;
    let key = SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap();
    let tenant = Uuid::new_v4();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    fx.add_device(a, tenant, "a").await;
    fx.add_device(b, tenant, "b").await;
    let enc = fx.publisher(Some(&key)).await;
    let publish = |device: Uuid, body: &'static str, at: &'static str| {
        let enc = enc.clone();
        async move {
            let (n, h) = normalize::normalize_and_hash(body.as_bytes(), Version::V2);
            let mut e = ConfigSnapshotEvent::new(
                device.to_string(),
                tenant.to_string(),
                Some("7.16".into()),
                &n,
                h,
                Version::V2,
            );
            e.collected_at = at.into();
            enc.publish(&e).await.unwrap().sequence
        }
    };
    let seq_a = publish(
        a,
        "/ppp secret\nadd name=a password=AlphaSecret1\n",
        "2026-05-19T00:00:00Z",
    )
    .await;
    let seq_b = publish(
        b,
        "/ppp secret\nadd name=b password=BravoSecret2\n",
        "2026-05-19T00:00:00Z",
    )
    .await;
    let ev_a = ConfigSnapshotEvent::decode(&fx.raw(seq_a).await.payload).unwrap();
    let ev_b = ConfigSnapshotEvent::decode(&fx.raw(seq_b).await.payload).unwrap();

    // A's ciphertext with one bit flipped.
    let mut tampered = ev_a.clone();
    {
        let env = tampered.config_encryption.as_mut().unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ct = b64.decode(env.ciphertext.as_ref().unwrap()).unwrap();
        ct[3] ^= 0x10;
        env.ciphertext = Some(b64.encode(ct));
    }
    // A's envelope (and keyed hash) in B's event, on B's subject: the AAD names B.
    let mut swapped = ev_b.clone();
    swapped.config_encryption = ev_a.config_encryption.clone();
    swapped.sha256_hash = ev_a.sha256_hash.clone();
    // A's event with its collection time moved.
    let mut retimed = ev_a.clone();
    retimed.collected_at = "2026-05-20T00:00:00Z".into();
    let mut keys = SnapshotKeys::new();
    keys.push(key.clone());
    for (what, e) in [
        ("tampered", &tampered),
        ("swapped", &swapped),
        ("retimed", &retimed),
    ] {
        let err = fetch_config_text_with_keys(&fx.js, e, &keys)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not open"), "{what}: {err}");
    }
    for (subject, e, id) in [
        (fx.subject(a), &tampered, "t1"),
        (fx.subject(b), &swapped, "t2"),
        (fx.subject(a), &retimed, "t3"),
    ] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        fx.js
            .publish_with_headers(subject, h, serde_json::to_vec(e).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Each altered message is malformed for the archiver that holds the key…
    let archiver = fx.archiver(&[&key]).await;
    let consumer = archiver.consumer().await.unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    while let Some(Ok(msg)) = futures::StreamExt::next(&mut batch).await {
        let d = archiver.handle(&msg).await;
        Archiver::settle(&msg, &d).await;
        outcomes.push(d);
    }
    assert_eq!(outcomes.len(), 5);
    let malformed = outcomes
        .iter()
        .filter(|d| **d == Disposition::Ack(Outcome::Malformed))
        .count();
    assert_eq!(malformed, 3, "{outcomes:?}");
    // …and only the two genuine snapshots are stored, each with its own text.
    assert_eq!(fx.count("SELECT count(*) FROM config_versions").await, 2);
    assert!(contains(&fx.archived(a).await.1, b"AlphaSecret1"));
    assert!(contains(&fx.archived(b).await.1, b"BravoSecret2"));
    fx.drained(Duration::from_secs(10)).await;
    fx.cleanup().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_not_acked_and_the_snapshot_is_stored_once_the_key_is_there() {
    let fx = Fx::new().await;
    let (old, new) = (
        SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap(),
        SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap(),
    );
    let tenant = Uuid::new_v4();
    let device = Uuid::new_v4();
    fx.add_device(device, tenant, "rotated").await;
    let text = b"/ip ipsec identity\nadd peer=hq secret=CharlieSecret3\n";
    let (n, h) = normalize::normalize_and_hash(text, Version::V2);
    let e = ConfigSnapshotEvent::new(
        device.to_string(),
        tenant.to_string(),
        None,
        &n,
        h.clone(),
        Version::V2,
    );
    // Published under the old key (before a rotation).
    fx.publisher(Some(&old)).await.publish(&e).await.unwrap();

    // An archiver with no key at all, then one with only the new key: a configuration
    // error each time — retried, never acked, nothing stored.
    for keys in [vec![], vec![&new]] {
        let archiver = fx.archiver(&keys).await;
        let consumer = archiver.consumer().await.unwrap();
        let msg = wait_for_message(&consumer).await;
        let d = archiver.handle(&msg).await;
        assert!(matches!(d, Disposition::Retry(_)), "{d:?}");
        Archiver::settle(&msg, &d).await;
    }
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 0);
    // The running archiver keeps getting it back (two more deliveries).
    let before = fx.consumer_info().await.delivered.consumer_sequence;
    let run = fx.spawn(&[&new]).await;
    wait_for(Duration::from_secs(20), "two more deliveries", || async {
        fx.consumer_info().await.delivered.consumer_sequence >= before + 2
    })
    .await;
    let i = fx.consumer_info().await;
    assert_eq!(
        i.num_ack_pending as u64 + i.num_pending,
        1,
        "still not acked"
    );
    Fx::stop(run).await;
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 0);

    // The operator adds the old key (ROSBACKUP_SNAPSHOT_DECRYPTION_KEYS): stored.
    let run = fx.spawn(&[&new, &old]).await;
    fx.drained(Duration::from_secs(30)).await;
    Fx::stop(run).await;
    let (sha, stored) = fx.archived(device).await;
    assert_eq!((sha, stored), (h, n));
    assert_eq!(fx.count("SELECT count(*) FROM config_sightings").await, 1);
    fx.cleanup().await;
}

/// The next message of a pull consumer (redelivered ones included), within 20 s.
async fn wait_for_message(consumer: &jetstream::consumer::PullConsumer) -> jetstream::Message {
    let start = Instant::now();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        if let Some(Ok(m)) = futures::StreamExt::next(&mut batch).await {
            return m;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no message came");
    }
}

#[tokio::test]
async fn a_large_config_goes_to_the_object_store_encrypted() {
    let fx = Fx::new().await;
    // A stream that takes at most 32 KiB per message, so a ~120 KB export goes by
    // reference (the publisher uses an existing stream covering its subjects).
    fx.js
        .create_stream(jetstream::stream::Config {
            name: fx.plain_cfg.stream_name.clone(),
            subjects: vec![format!("{}.>", fx.plain_cfg.subject_prefix)],
            max_message_size: 32 * 1024,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    let collected = export_from_simulator("127.65.0.2", Some(120_000)).await;
    assert!(collected.normalized.len() > 64 * 1024);
    let secrets = crate::common::secret_values(&collected.normalized);
    assert!(!secrets.is_empty());
    let lines = distinctive_lines(&collected.normalized);
    let key = SnapshotKey::from_base64(&SnapshotKey::generate_base64()).unwrap();
    let tenant = Uuid::new_v4();
    let device = Uuid::new_v4();
    fx.add_device(device, tenant, "big").await;
    let enc = fx.publisher(Some(&key)).await;
    let (_, r) = backup::publish_for_job(
        &enc,
        &collected,
        &device.to_string(),
        &tenant.to_string(),
        "job-big",
    )
    .await
    .unwrap();
    assert!(r.by_reference);
    let m = fx.raw(r.sequence).await;
    let ev = ConfigSnapshotEvent::decode(&m.payload).unwrap();
    let reference = ev.config_ref.clone().expect("config_ref");
    let env = ev.config_encryption.clone().expect("config_encryption");
    assert!(env.ciphertext.is_none(), "the ciphertext is in the object");
    assert_eq!(header(&m, "Rosbackup-Config-Ref"), Some("object-store"));
    assert_eq!(header(&m, "Rosbackup-Key-Id"), Some(key.id()));
    assert!(!reference.object.contains(&collected.sha256));
    assert!(!contains(&m.payload, collected.sha256.as_bytes()));
    // The object as any reader of the bucket gets it: ciphertext, not the config.
    let store = fx.js.get_object_store(&reference.bucket).await.unwrap();
    let mut obj = store.get(&reference.object).await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut obj, &mut bytes)
        .await
        .unwrap();
    assert_eq!(
        bytes.len(),
        collected.normalized.len() + 16,
        "ciphertext ‖ tag"
    );
    for s in &secrets {
        assert!(
            !contains(&bytes, s.as_bytes()),
            "a secret in the object store"
        );
    }
    for l in &lines {
        assert!(
            !contains(&bytes, l.as_bytes()),
            "config text in the object store"
        );
    }
    // Nothing else in the bucket holds plaintext either.
    let mut names = Vec::new();
    let mut list = store.list().await.unwrap();
    while let Some(Ok(info)) = futures::StreamExt::next(&mut list).await {
        names.push(info.name);
    }
    assert_eq!(names, std::slice::from_ref(&reference.object));

    let mut keys = SnapshotKeys::new();
    keys.push(key.clone());
    assert_eq!(
        fetch_config_text_with_keys(&fx.js, &ev, &keys)
            .await
            .unwrap(),
        collected.normalized
    );
    let run = fx.spawn(&[&key]).await;
    fx.drained(Duration::from_secs(30)).await;
    Fx::stop(run).await;
    let (sha, text) = fx.archived(device).await;
    assert_eq!(sha, collected.sha256);
    assert_eq!(text, collected.normalized);
    fx.cleanup().await;
}

/// The environment wiring, as an operator uses it: `rosbackup export --publish` (the
/// worker's publisher settings, `config::publisher_config`) with
/// `ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY` publishes encrypted; a bad key is exit 2 naming the
/// variable without echoing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_encrypted_with_the_key_from_the_environment() {
    let fx = Fx::new().await;
    let sim = Simulator::start(SimConfig {
        devices: 1,
        listen_base: "127.65.0.3".parse().unwrap(),
        port: 0,
        one_address: true,
        seed: 78,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let d = sim.devices()[0].clone();
    let key_b64 = SnapshotKey::generate_base64();
    let key = SnapshotKey::from_base64(&key_b64).unwrap();
    let device = Uuid::new_v4();
    let run = |key_value: String| {
        let (host, port, user, pw) = (
            d.host.to_string(),
            d.port.to_string(),
            d.username.clone(),
            d.password.clone(),
        );
        let cfg = fx.plain_cfg.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_rosbackup"))
                .args(["export", "--host", &host, "--port", &port, "--user", &user])
                .args(["--json", "--publish", "--device-id", &device.to_string()])
                .env("ROSBACKUP_PASSWORD", pw)
                .env("NATS_URL", &cfg.nats_url)
                .env("ROSBACKUP_SUBJECT_PREFIX", &cfg.subject_prefix)
                .env("ROSBACKUP_NATS_STREAM", &cfg.stream_name)
                .env("ROSBACKUP_NATS_OBJECT_BUCKET", &cfg.object_bucket)
                .env("ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY", key_value)
                .output()
                .unwrap()
        })
    };
    let bad = run("c2hvcnQ=".into()).await.unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY"), "{err}");
    assert!(!err.contains("c2hvcnQ"), "{err}");

    let out = run(key_b64.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let export = sim
        .last_export(d.id)
        .expect("the simulator served an export");
    let secrets = crate::common::secret_values(&export);
    assert!(!secrets.is_empty());
    let m = fx.raw(v["sequence"].as_u64().unwrap()).await;
    assert_eq!(header(&m, "Rosbackup-Key-Id"), Some(key.id()));
    for s in &secrets {
        assert!(
            !contains(&m.payload, s.as_bytes()),
            "a secret is on the bus"
        );
    }
    // The CLI's own output (local, not the bus) shows the plain hash; the bus does not.
    let plain_hash = v["sha256_hash"].as_str().unwrap();
    assert!(!contains(&m.payload, plain_hash.as_bytes()));
    let ev = ConfigSnapshotEvent::decode(&m.payload).unwrap();
    let mut keys = SnapshotKeys::new();
    keys.push(key);
    let text = fetch_config_text_with_keys(&fx.js, &ev, &keys)
        .await
        .unwrap();
    assert_eq!(normalize::hash(&text), plain_hash);
    sim.shutdown().await;
    fx.cleanup().await;
}
