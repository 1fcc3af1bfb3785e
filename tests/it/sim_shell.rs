//! The simulator's interactive console, driven the way netmiko's `mikrotik_routeros`
//! driver drives it: login name with `+ct511w4098h` options, PTY, shell, wait for the
//! prompt, type a command with CRLF, read the echo, the output and the next prompt, `quit`.

use std::sync::Arc;
use std::time::Duration;

use rosbackup::sim::{Fault, FaultTiming, SimConfig, SimDevice, Simulator};
use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelMsg};

const T: Duration = Duration::from_secs(20);

struct Client;

impl client::Handler for Client {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _k: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn connect(d: &SimDevice) -> client::Handle<Client> {
    let cfg = Arc::new(client::Config::default());
    tokio::time::timeout(T, client::connect(cfg, (d.host, d.port), Client))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Logs in as `user+options`, opens a PTY shell.
async fn shell(d: &SimDevice) -> (client::Handle<Client>, Channel<client::Msg>) {
    let mut h = connect(d).await;
    let r = h
        .authenticate_password(format!("{}+ct511w4098h", d.username), &d.password)
        .await
        .expect("auth");
    assert!(r.success(), "login with console options refused");
    let ch = h.channel_open_session().await.expect("session");
    ch.request_pty(true, "vt100", 511, 4098, 0, 0, &[])
        .await
        .expect("pty");
    ch.request_shell(true).await.expect("shell");
    (h, ch)
}

/// What the channel delivered until `done(data)` held, or it closed, or `limit` passed.
#[derive(Debug, Default)]
struct Read {
    data: Vec<u8>,
    closed: bool,
    ended: bool,
}

async fn read_until(
    ch: &mut Channel<client::Msg>,
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Read {
    let mut r = Read::default();
    let _ = tokio::time::timeout(limit, async {
        loop {
            match ch.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    r.data.extend_from_slice(&data);
                    if done(&r.data) {
                        break;
                    }
                }
                Some(ChannelMsg::Close) => {
                    r.closed = true;
                    break;
                }
                Some(_) => {}
                None => {
                    r.ended = true;
                    break;
                }
            }
        }
    })
    .await;
    r
}

fn ends_with_prompt(prompt: &str) -> impl Fn(&[u8]) -> bool + '_ {
    move |b: &[u8]| b.ends_with(prompt.as_bytes())
}

fn cfg(devices: usize, faults: &str) -> SimConfig {
    SimConfig {
        devices,
        listen_base: "127.0.0.1".parse().expect("ip"),
        port: 0,
        one_address: true,
        faults: faults.parse().expect("faults"),
        config_size: Some(8_000),
        seed: 61,
        timing: FaultTiming {
            drop_delay: Duration::from_millis(50),
            ..FaultTiming::default()
        },
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_prompt_echo_export_and_quit() {
    let sim = Simulator::start(cfg(2, "v6=1")).await.expect("start");
    let devs = sim.devices().to_vec();
    for d in &devs {
        let v6 = d.fault == Some(Fault::V6);
        let prompt = format!("[{}@{}] > ", d.username, d.name);
        let (_h, mut ch) = shell(d).await;

        // Banner with the version, then the prompt — with the name without `+options`.
        let r = read_until(&mut ch, T, ends_with_prompt(&prompt)).await;
        let text = String::from_utf8_lossy(&r.data).into_owned();
        assert!(text.ends_with(&prompt), "no prompt {prompt:?} in {text:?}");
        assert!(
            text.contains(&format!("MikroTik RouterOS {}", d.routeros_version)),
            "{text:?}"
        );

        // An empty line (netmiko's find_prompt) gives a fresh prompt.
        ch.data(&b"\r\n"[..]).await.expect("send");
        let r = read_until(&mut ch, T, ends_with_prompt(&prompt)).await;
        assert_eq!(String::from_utf8_lossy(&r.data), format!("\r\n{prompt}"));

        // The command as netmiko types it: echo, CRLF, the export, the prompt.
        let cmd = if v6 {
            "/export"
        } else {
            "/export show-sensitive"
        };
        ch.data(format!("{cmd}\r\n").as_bytes())
            .await
            .expect("send");
        let r = read_until(&mut ch, T, ends_with_prompt(&prompt)).await;
        let echo = format!("{cmd}\r\n");
        assert!(r.data.starts_with(echo.as_bytes()), "no echo of {cmd:?}");
        assert!(
            r.data.ends_with(prompt.as_bytes()),
            "no prompt after export"
        );
        let export = &r.data[echo.len()..r.data.len() - prompt.len()];
        let served = sim.last_export(d.id).expect("export generated");
        assert_eq!(export, &served[..], "shell output differs from the export");
        let text = String::from_utf8_lossy(export);
        assert!(text.starts_with("# "), "header first: {:?}", &text[..40]);
        assert!(text.contains(&format!("by RouterOS {}", d.routeros_version)));
        assert!(text.contains("/system identity"), "no identity section");

        // The exec path's error text for what RouterOS rejects.
        ch.data(&b"/interface print\r\n"[..]).await.expect("send");
        let r = read_until(&mut ch, T, ends_with_prompt(&prompt)).await;
        assert_eq!(
            String::from_utf8_lossy(&r.data),
            format!("/interface print\r\nbad command name interface (line 1 column 2)\r\n{prompt}")
        );

        // Typing with a backspace: what the console runs is the edited line.
        ch.data(&b"/system resource printx\x7f\r\n"[..])
            .await
            .expect("send");
        let r = read_until(&mut ch, T, ends_with_prompt(&prompt)).await;
        let text = String::from_utf8_lossy(&r.data);
        assert!(
            text.starts_with("/system resource printx\x08 \x08\r\n"),
            "{text:?}"
        );
        assert!(
            text.contains(&format!("version: {}", d.routeros_version)),
            "{text:?}"
        );

        // quit closes the channel.
        ch.data(&b"quit\r\n"[..]).await.expect("send");
        let r = read_until(&mut ch, T, |_| false).await;
        assert!(r.closed || r.ended, "channel still open after quit");
        assert_eq!(String::from_utf8_lossy(&r.data), "quit\r\n");
    }
    let stats = sim.stats();
    for d in &devs {
        assert_eq!(stats[&d.id].exports, 1, "{}: exports counted", d.name);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_login_and_faults() {
    let sim = Simulator::start(cfg(3, "auth=1,drop=1"))
        .await
        .expect("start");
    let devs = sim.devices().to_vec();
    let by = |f: Option<Fault>| devs.iter().find(|d| d.fault == f).expect("device");

    // Options do not make a wrong login right: bad suffix, wrong password, `auth` device.
    let ok = by(None);
    for (user, pass) in [
        (format!("{}+80", ok.username), ok.password.clone()),
        (format!("{}+ct", ok.username), "wrong".to_string()),
    ] {
        let mut h = connect(ok).await;
        let r = h.authenticate_password(user, pass).await.expect("auth");
        assert!(!r.success(), "bad login accepted");
    }
    let bad = by(Some(Fault::Auth));
    let mut h = connect(bad).await;
    let r = h
        .authenticate_password(format!("{}+ct", bad.username), &bad.password)
        .await
        .expect("auth");
    assert!(!r.success(), "auth fault device accepted a login");

    // drop: the console cuts the connection mid-export, as the exec path does.
    let d = by(Some(Fault::Drop));
    let prompt = format!("[{}@{}] > ", d.username, d.name);
    let (_h, mut ch) = shell(d).await;
    read_until(&mut ch, T, ends_with_prompt(&prompt)).await;
    ch.data(&b"/export\r\n"[..]).await.expect("send");
    let r = read_until(&mut ch, T, ends_with_prompt(&prompt)).await;
    assert!(r.closed || r.ended, "connection not cut");
    let full = sim.last_export(d.id).expect("export generated");
    let got = r.data.strip_prefix(&b"/export\r\n"[..]).expect("echo");
    assert!(
        !got.is_empty() && got.len() < full.len(),
        "not a partial export"
    );
    assert!(full.starts_with(got));
    assert_eq!(sim.stats()[&d.id].exports, 0, "partial export counted");
    sim.shutdown().await;
}
