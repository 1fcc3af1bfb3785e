use super::*;
use crate::error::ErrorKind;

#[test]
fn jump_hosts_parse_like_openssh_minus_j() {
    assert_eq!(
        parse_jump_host("bastion").unwrap(),
        (None, "bastion".into(), 22)
    );
    assert_eq!(
        parse_jump_host("ops@bastion.example:2222").unwrap(),
        (Some("ops".into()), "bastion.example".into(), 2222)
    );
    assert_eq!(
        parse_jump_host("[2001:db8::1]:2200").unwrap(),
        (None, "2001:db8::1".into(), 2200)
    );
    assert_eq!(
        parse_jump_host("2001:db8::1").unwrap(),
        (None, "2001:db8::1".into(), 22)
    );
    for bad in ["", "@h", "h:0", "h:70000", "[::1", "[::1]x", "u@"] {
        assert!(parse_jump_host(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_presented_fingerprint_is_read_back_from_the_stored_message() {
    let e = ExportError::HostKeyMismatch {
        expected: "SHA256:old+key/AAA".into(),
        got: "SHA256:new+key/BBB".into(),
    };
    assert_eq!(
        presented_fingerprint(&e.to_string()),
        Some("SHA256:new+key/BBB")
    );
    assert_eq!(presented_fingerprint("authentication failed"), None);
    assert_eq!(presented_fingerprint("device presented nonsense"), None);
}

#[test]
fn command_by_version() {
    assert_eq!(export_command(7, true), "/export show-sensitive");
    assert_eq!(export_command(7, false), "/export");
    assert_eq!(export_command(6, true), "/export");
    assert_eq!(export_command(6, false), "/export hide-sensitive");
}

#[test]
fn kinds_come_from_variants() {
    let t = ExportError::Truncated {
        reason: Truncation::Dropped,
        bytes: 3,
    };
    assert_eq!(t.kind(), ErrorKind::TruncatedOutput);
    assert_eq!(ExportError::TooLarge { cap: 1 }.kind(), ErrorKind::TooLarge);
    assert_eq!(
        ExportError::BadOutput(output::NotAnExport::Empty).kind(),
        ErrorKind::BadOutput
    );
    assert_eq!(
        ExportError::AuthFailed {
            user: "u".into(),
            tried: Tried::Password
        }
        .kind(),
        ErrorKind::AuthFailed
    );
}

fn local(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
        username: "admin".into(),
        password: Secret::new("pw"),
        key: None,
        jump: None,
        known_fingerprint: None,
        routeros_version: Some("7".into()),
    }
}

#[tokio::test]
async fn refused_port_is_connection_refused() {
    // Bind then drop to get a port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let e = export(&local(port), &ExportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
}

#[tokio::test]
async fn silent_peer_times_out_in_handshake() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let keep = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        // Hold the socket open, never write.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let t = local(port);
    let opts = ExportOptions {
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let e = export(&t, &opts).await.unwrap_err();
    assert!(
        matches!(
            e,
            ExportError::Timeout {
                phase: Phase::Handshake,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(!e.export_timed_out(), "a login timeout is not the export's");
    keep.abort();
}

#[test]
fn only_the_command_timeout_is_the_exports() {
    let command = ExportError::Timeout {
        phase: Phase::Command,
        secs: 1.0,
    };
    let mid_stream = ExportError::Truncated {
        reason: Truncation::TimedOut,
        bytes: 10,
    };
    assert!(command.export_timed_out());
    assert!(mid_stream.export_timed_out());
    assert!(
        ExportError::Bastion {
            addr: "b:22".into(),
            source: Box::new(command),
        }
        .export_timed_out()
    );
    for other in [
        ExportError::Timeout {
            phase: Phase::Connect,
            secs: 1.0,
        },
        ExportError::Truncated {
            reason: Truncation::Dropped,
            bytes: 10,
        },
        ExportError::TooLarge { cap: 1 },
    ] {
        assert!(!other.export_timed_out(), "{other:?}");
    }
}
