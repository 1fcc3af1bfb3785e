//! The soak's third record: the NATS stream, read back while the fleet runs (so the audit
//! needs no retention of the texts), each message checked against the hash its event
//! carries and the subject it belongs on.

use super::*;

/// Read every message of the stream as it arrives (so the audit needs no retention of
/// the texts), checking each one's hash against its text. Returns the records and how
/// many messages were gone before they could be read. After `stop`, it reads up to the
/// stream's last sequence, then returns.
pub(super) async fn read_stream(
    js: async_nats::jetstream::Context,
    stream_name: String,
    subject_prefix: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<MessageRecord>, u64) {
    let mut out = Vec::new();
    let mut lost = 0u64;
    let mut next = 1u64;
    let mut stopping = false;
    loop {
        let mut caught_up = false;
        if let Ok(mut stream) = js.get_stream(&stream_name).await
            && let Ok(info) = stream.info().await
        {
            let state = info.state.clone();
            if state.first_sequence > next && state.messages > 0 {
                lost += state.first_sequence - next;
                next = state.first_sequence;
            }
            caught_up = true;
            while next <= state.last_sequence {
                match stream.get_raw_message(next).await {
                    Ok(msg) => {
                        out.push(check_message(&js, &subject_prefix, next, &msg).await);
                        next += 1;
                    }
                    Err(_) => {
                        caught_up = false;
                        break;
                    }
                }
            }
        }
        if stopping && caught_up {
            return (out, lost);
        }
        tokio::select! {
            _ = stop.changed(), if !stopping => { stopping = true; }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn check_message(
    js: &async_nats::jetstream::Context,
    subject_prefix: &str,
    seq: u64,
    msg: &async_nats::jetstream::message::StreamMessage,
) -> MessageRecord {
    let msg_id = msg
        .headers
        .get("Nats-Msg-Id")
        .map(|v| v.as_str().to_string());
    let Ok(event) = ConfigSnapshotEvent::decode(&msg.payload) else {
        return MessageRecord {
            seq,
            msg_id,
            device_id: None,
            sha256: String::new(),
            subject_ok: false,
            hash_ok: false,
        };
    };
    let device_id: Option<Uuid> = event.device_id.parse().ok();
    let subject_ok =
        device_id.is_some_and(|d| msg.subject.as_str() == format!("{subject_prefix}.create.{d}"));
    let hash_ok = match rosbackup_core::snapshot::fetch_config_text(js, &event).await {
        Ok(text) => !text.is_empty() && rosbackup_core::normalize::hash(&text) == event.sha256_hash,
        Err(_) => false,
    };
    MessageRecord {
        seq,
        msg_id,
        device_id,
        sha256: event.sha256_hash,
        subject_ok,
        hash_ok,
    }
}
