//! Snapshot publication against the real NATS JetStream: each test uses its own subject
//! prefix, stream and object bucket, and deletes them afterwards.

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use rosbackup::normalize::{self, Version};
use rosbackup::snapshot::{ConfigSnapshotEvent, Publisher, PublisherConfig, fetch_config_text};
use std::time::Duration;

struct Fixture {
    cfg: PublisherConfig,
    js: jetstream::Context,
}

impl Fixture {
    async fn new() -> Self {
        let prefix = crate::common::unique("t").to_lowercase();
        let cfg = PublisherConfig {
            nats_url: crate::common::nats_url(),
            subject_prefix: format!("{prefix}.config.snapshot"),
            stream_name: crate::common::unique("SNAP"),
            object_bucket: crate::common::unique("TEXTS"),
            stream_max_bytes: 256 * 1024 * 1024,
            ..Default::default()
        };
        let client = async_nats::connect(&cfg.nats_url)
            .await
            .expect("NATS is running");
        Fixture {
            cfg,
            js: jetstream::new(client),
        }
    }

    async fn cleanup(&self, streams: &[&str]) {
        for s in streams {
            let _ = self.js.delete_stream(s).await;
        }
        let _ = self.js.delete_object_store(&self.cfg.object_bucket).await;
    }

    /// Read back every message on the stream.
    async fn consume(&self, stream_name: &str, n: usize) -> Vec<async_nats::jetstream::Message> {
        let s = self.js.get_stream(stream_name).await.unwrap();
        let c = s
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{}.>", self.cfg.subject_prefix),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = c
            .fetch()
            .max_messages(n + 5)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(m) = msgs.next().await {
            out.push(m.unwrap());
        }
        out
    }
}

fn event(device: &str, text: &[u8]) -> ConfigSnapshotEvent {
    let (n, h) = normalize::normalize_and_hash(text, Version::V2);
    ConfigSnapshotEvent::new(device, "tenant-1", Some("7.16".into()), &n, h, Version::V2)
}

#[tokio::test]
async fn publish_creates_stream_and_consumer_reads_it_back() {
    let f = Fixture::new().await;
    let p = Publisher::connect(f.cfg.clone()).await.unwrap();
    assert_eq!(p.stream_name(), f.cfg.stream_name);
    let ev = event(
        "dev-1",
        b"# 2026-01-01 00:00:00 by RouterOS 7.16\r\n/ip address\r\nadd address=10.0.0.1/24\r\n",
    );
    let r = p.publish(&ev).await.unwrap();
    assert!(!r.duplicate && !r.by_reference);
    let msgs = f.consume(&f.cfg.stream_name, 1).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].subject.as_str(),
        format!("{}.create.dev-1", f.cfg.subject_prefix)
    );
    let back = ConfigSnapshotEvent::decode(&msgs[0].payload).unwrap();
    assert_eq!(back, ev);
    assert_eq!(
        normalize::hash(back.config_text.as_bytes()),
        back.sha256_hash
    );
    // The stream we created has limits.
    let info =
        f.js.get_stream(&f.cfg.stream_name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
    assert_eq!(info.config.max_bytes, f.cfg.stream_max_bytes);
    assert!(info.config.max_age > Duration::ZERO);
    f.cleanup(&[&f.cfg.stream_name]).await;
}

#[tokio::test]
async fn retried_publish_is_stored_once() {
    let f = Fixture::new().await;
    let p = Publisher::connect(f.cfg.clone()).await.unwrap();
    let ev = event("dev-2", b"/system identity\nset name=r1\n");
    let a = p.publish(&ev).await.unwrap();
    let b = p.publish(&ev).await.unwrap();
    assert!(!a.duplicate);
    assert!(b.duplicate, "same Nats-Msg-Id must be deduplicated");
    assert_eq!(a.sequence, b.sequence);
    // A later backup (new collected_at) is a new message even with the same hash.
    let mut later = ev.clone();
    later.collected_at = "2099-01-01T00:00:00Z".into();
    let c = p.publish(&later).await.unwrap();
    assert!(!c.duplicate);
    assert_eq!(f.consume(&f.cfg.stream_name, 3).await.len(), 2);
    f.cleanup(&[&f.cfg.stream_name]).await;
}

#[tokio::test]
async fn existing_stream_covering_the_subjects_is_used_untouched() {
    let f = Fixture::new().await;
    // A seed deployment's stream with many subjects, ours among them.
    let existing = crate::common::unique("DEVICE_EVENTS");
    let root = f.cfg.subject_prefix.trim_end_matches(".config.snapshot");
    let subjects = vec![
        format!("{root}.device.status.>"),
        format!("{root}.device.metrics.>"),
        format!("{}.>", f.cfg.subject_prefix),
    ];
    f.js.create_stream(stream::Config {
        name: existing.clone(),
        subjects: subjects.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let p = Publisher::connect(f.cfg.clone()).await.unwrap();
    assert_eq!(p.stream_name(), existing);
    p.publish(&event("dev-3", b"/a\n")).await.unwrap();
    let info =
        f.js.get_stream(&existing)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
    assert_eq!(
        info.config.subjects, subjects,
        "another stream's subjects were rewritten"
    );
    assert!(
        f.js.get_stream(&f.cfg.stream_name).await.is_err(),
        "no second stream"
    );
    f.cleanup(&[&existing]).await;
}

#[tokio::test]
async fn oversize_config_goes_through_the_object_store() {
    let f = Fixture::new().await;
    let p = Publisher::connect(f.cfg.clone()).await.unwrap();
    // 3 MiB of config with quotes and backslashes (JSON escaping inflates it further).
    let mut raw =
        b"# 2026-01-01 00:00:00 by RouterOS 7.16\r\n/ip firewall address-list\r\n".to_vec();
    let mut i = 0u32;
    while raw.len() < 3 << 20 {
        raw.extend_from_slice(
            format!(
                "add address=10.{}.{}.{} comment=\"q\\\"{i}\" list=big\r\n",
                i >> 16 & 255,
                i >> 8 & 255,
                i & 255
            )
            .as_bytes(),
        );
        i += 1;
    }
    let ev = event("dev-big", &raw);
    let r = p.publish(&ev).await.unwrap();
    assert!(r.by_reference);
    let msgs = f.consume(&f.cfg.stream_name, 1).await;
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].payload.len() < p.inline_limit());
    let back = ConfigSnapshotEvent::decode(&msgs[0].payload).unwrap();
    assert!(back.config_text.is_empty());
    assert_eq!(back.sha256_hash, ev.sha256_hash);
    let text = fetch_config_text(&f.js, &back).await.unwrap();
    assert_eq!(
        normalize::hash(&text),
        ev.sha256_hash,
        "object store text differs"
    );
    // Ordinary sizes stay inline (the seed's schema).
    let small = event("dev-small", b"/a\nadd x=1\n");
    assert!(!p.publish(&small).await.unwrap().by_reference);
    f.cleanup(&[&f.cfg.stream_name]).await;
}

#[tokio::test]
async fn unreachable_nats_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = PublisherConfig {
        nats_url: format!("nats://127.0.0.1:{port}"),
        ..Default::default()
    };
    let e = Publisher::connect(cfg)
        .await
        .expect_err("connected to nothing");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot connect to NATS") && msg.contains(&port.to_string()),
        "{msg}"
    );
}
