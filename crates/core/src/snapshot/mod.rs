//! The snapshot event and its publication to NATS JetStream.
//!
//! The event is the seed's `ConfigSnapshotEvent`, field for field, published to
//! `config.snapshot.create.<device_id>` so that the seed's consumers work unchanged.
//! Publication waits for the JetStream ack: a backup counts as done only once the stream
//! has stored it.
//!
//! * **Which stream.** A deployment of the seed already has a stream (e.g.
//!   `DEVICE_EVENTS`) whose subjects cover ours; we use it as it is and never rewrite
//!   another stream's subject list. Only when no stream captures our subjects do we create
//!   `CONFIG_SNAPSHOTS` (name configurable) with size and age limits.
//! * **Retries are idempotent.** Each event carries a `Nats-Msg-Id` derived from device,
//!   collection time and hash. A timed-out ack does not mean the message was lost (the
//!   server may have stored it), so a retry reuses the id and JetStream's duplicate window
//!   stores it once.
//! * **Large configs are not lost.** NATS refuses messages over the server's
//!   `max_payload` (1 MiB by default) and streams may cap message size lower; real
//!   exports reach 400 KB before JSON escaping. When the event would not fit, the config
//!   text goes into a JetStream object store (`CONFIG_SNAPSHOT_TEXTS` by default) under
//!   `<device_id>/<sha256>`, and the event is published with an empty `config_text` plus
//!   a `config_ref` naming the object. Ordinary sizes keep the seed's schema exactly;
//!   [`fetch_config_text`] resolves either form.
//! * **Optionally encrypted.** With a snapshot key (`ROSBACKUP_SNAPSHOT_ENCRYPTION_KEY`,
//!   [`PublisherConfig::encryption`]) the config is published as AES-256-GCM ciphertext
//!   in `config_encryption` (and large ones are stored encrypted in the object store);
//!   see [`crate::snapshot::crypto`] for the format and why. Without one, nothing changes.
//! * **Bytes survive.** Config text is bytes; JSON strings are UTF-8. Valid UTF-8 (the
//!   usual case) goes into `config_text` as is. Otherwise `config_text` holds a lossy
//!   rendering (what the seed's Go `json.Marshal` would have sent) and
//!   `config_text_base64` the exact bytes the hash was computed over.

pub mod crypto;
mod event;
mod fetch;
mod publish;
mod wire;

pub use event::*;
pub use fetch::{fetch_config_text, fetch_config_text_with_keys};
pub use publish::{Publisher, PublisherConfig, Receipt};
