//! The answers to RouterOS commands: parsing a command line, writing the device's output
//! and fault behaviour to a channel, and recording a completed export. Exec channels
//! (`server`) and the interactive shell (`shell`) both answer through here, so the same
//! command gets the same text and the same faults either way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use russh::ChannelWriteHalf;
use russh::server::Msg;

use super::config_gen::RenderOpts;
use super::faults::Fault;
use super::kill::Kill;
use super::render;
use super::state::*;

/// Parsed exec command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cmd {
    Export(RenderOpts),
    Text(String),
    Resource,
    /// `/system backup save` with its arguments.
    BackupSave(BackupArgs),
    /// `/file print` (any arguments: the whole store is listed).
    FilePrint,
    /// `/file remove NAME` (or `numbers=NAME`).
    FileRemove(String),
}

/// The arguments of `/system backup save`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BackupArgs {
    pub(crate) name: Option<String>,
    pub(crate) password: Option<String>,
    /// `aes-sha256` or `rc4`.
    pub(crate) encryption: Option<String>,
    pub(crate) dont_encrypt: bool,
}

/// A `key=value` argument's value without surrounding double quotes.
fn unquote(v: &str) -> String {
    v.trim_matches('"').to_string()
}

fn parse_backup(w: &[(usize, &str)], v6: bool) -> Cmd {
    let mut args = BackupArgs::default();
    for (offset, a) in w {
        let (k, v) = a.split_once('=').unwrap_or((a, ""));
        match k {
            "name" => args.name = Some(unquote(v)),
            "password" => args.password = Some(unquote(v)),
            "dont-encrypt" => match v {
                "yes" | "" => args.dont_encrypt = true,
                "no" => args.dont_encrypt = false,
                _ => return Cmd::Text(render::expected_end(*offset)),
            },
            "encryption" => match v {
                "aes-sha256" | "rc4" => args.encryption = Some(v.to_string()),
                _ => return Cmd::Text(render::expected_end(*offset)),
            },
            _ => return Cmd::Text(render::expected_end(*offset)),
        }
    }
    let _ = v6;
    Cmd::BackupSave(args)
}

/// Splits a command into words with byte offsets (separators: whitespace and `/`).
pub(crate) fn words(cmd: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in cmd.char_indices() {
        let sep = c.is_whitespace() || c == '/';
        match (sep, start) {
            (true, Some(s)) => {
                out.push((s, &cmd[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &cmd[s..]));
    }
    out
}

pub(crate) fn parse_cmd(cmd: &str, v6: bool) -> Cmd {
    let cmd = cmd.trim_end_matches(['\r', '\n']);
    let w = words(cmd);
    let names: Vec<&str> = w.iter().map(|(_, s)| *s).collect();
    match names.as_slice() {
        ["export", args @ ..] => {
            let mut opts = RenderOpts {
                terse: false,
                sensitive: v6,
            };
            for (k, a) in args.iter().enumerate() {
                let offset = w[k + 1].0;
                match *a {
                    "terse" => opts.terse = true,
                    "hide-sensitive" => opts.sensitive = false,
                    "show-sensitive" if !v6 => opts.sensitive = true,
                    "verbose" | "compact" => {}
                    a if a.starts_with("file=") => {}
                    _ => return Cmd::Text(render::expected_end(offset)),
                }
            }
            Cmd::Export(opts)
        }
        ["system", "resource", "print", ..] => Cmd::Resource,
        ["system", "backup", "save", ..] => parse_backup(&w[3..], v6),
        ["file", "print", ..] => Cmd::FilePrint,
        ["file", "remove", target] => {
            let t: &str = target;
            Cmd::FileRemove(unquote(t.strip_prefix("numbers=").unwrap_or(t)))
        }
        [] => Cmd::Text(String::new()),
        _ => Cmd::Text(render::bad_command(cmd)),
    }
}

/// Write command output, counting what the client let through.
pub(crate) async fn send(rt: &DeviceRt, tx: &ChannelWriteHalf<Msg>, data: Bytes) -> bool {
    let n = data.len() as u64;
    if tx.data_bytes(data).await.is_ok() {
        rt.bytes_sent.fetch_add(n, Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// End an exec channel: exit status, EOF, close. `true` when the exit status and the EOF
/// were handed to the session: that is all a client needs to know it has the whole
/// output, and rosbackup's worker hangs up right then (RFC 4254 lets it) — so the close
/// may find the session gone, and an export must not be counted as cut for that (it was,
/// about once in a thousand exports on a loaded machine: the soak then saw a success
/// without a session).
pub(crate) async fn finish(tx: &ChannelWriteHalf<Msg>) -> bool {
    let delivered = tx.exit_status(0).await.is_ok() && tx.eof().await.is_ok();
    let _ = tx.close().await;
    delivered
}

pub(crate) async fn run_exec(
    shared: &Arc<Shared>,
    idx: usize,
    kill: &Arc<Kill>,
    tx: ChannelWriteHalf<Msg>,
    cmd: &str,
) {
    match answer(shared, idx, kill, &tx, cmd).await {
        Answered::Done => {
            finish(&tx).await;
        }
        Answered::Export(bytes, started_at) => {
            if finish(&tx).await {
                completed(shared, idx, bytes, started_at);
            }
        }
        Answered::Gone => {}
    }
}

/// How [`answer`] left the channel.
pub(crate) enum Answered {
    /// The whole answer was written.
    Done,
    /// A complete healthy export was written (its bytes and when the command arrived, for
    /// the stats, the session log and `--export-dir` once the caller has finished the
    /// channel its way).
    Export(Bytes, chrono::DateTime<chrono::Utc>),
    /// The client went away or a fault cut the connection: write nothing more.
    Gone,
}

/// Writes the device's answer to one command — output and fault behaviour — to `tx`.
/// Shared by exec channels and the interactive shell (`shell`), which differ only
/// in what follows the answer (exit status and close vs. the next prompt).
pub(crate) async fn answer(
    shared: &Arc<Shared>,
    idx: usize,
    kill: &Arc<Kill>,
    tx: &ChannelWriteHalf<Msg>,
    cmd: &str,
) -> Answered {
    let d = &shared.devices[idx];
    let rt = &shared.rt[idx];
    let sent = |ok: bool| if ok { Answered::Done } else { Answered::Gone };
    if d.fault == Some(Fault::Garbage) {
        return sent(
            send(
                rt,
                tx,
                Bytes::from_static(render::garbage_text().as_bytes()),
            )
            .await,
        );
    }
    let v6 = render::is_v6(&d.routeros_version);
    match parse_cmd(cmd, v6) {
        Cmd::Text(t) => sent(t.is_empty() || send(rt, tx, Bytes::from(t)).await),
        Cmd::Resource => {
            let board = if rt.board.is_empty() {
                match &rt.source {
                    Source::Generated { target } => shared.model(idx, *target).model.clone(),
                    Source::File(f) => f.board.clone(),
                }
            } else {
                rt.board.clone()
            };
            let text = render::resource_print(&render::ResourceInfo {
                version: &d.routeros_version,
                board_name: &board,
                uptime_secs: 86_400 * (1 + (rt.index as u64 % 90)) + rt.started.elapsed().as_secs(),
                seed: shared.cfg.seed.wrapping_add(idx as u64),
            });
            sent(send(rt, tx, Bytes::from(text)).await)
        }
        Cmd::BackupSave(args) => {
            sent(send(rt, tx, Bytes::from(backup_save(shared, idx, &args))).await)
        }
        Cmd::FilePrint => sent(
            send(
                rt,
                tx,
                Bytes::from(super::files::file_print(shared, idx, v6)),
            )
            .await,
        ),
        Cmd::FileRemove(name) => {
            if shared.remove_file(idx, &name) {
                Answered::Done
            } else {
                sent(send(rt, tx, Bytes::from_static(b"no such item\r\n")).await)
            }
        }
        Cmd::Export(opts) => {
            let started_at = chrono::Utc::now();
            if !shared.cfg.export_delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(shared.cfg.export_delay) => {}
                    _ = kill.killed() => return Answered::Gone,
                }
            }
            if d.fault == Some(Fault::Huge) {
                return sent(stream_huge(shared, idx, tx).await);
            }
            if d.fault == Some(Fault::EndlessLine) {
                stream_endless(shared, idx, kill, tx).await;
                return Answered::Gone;
            }
            let bytes = shared.export(idx, opts);
            *rt.last_export.lock().expect("last_export poisoned") = Some(bytes.clone());
            let timing = &shared.cfg.timing;
            match d.fault {
                Some(Fault::Stall) => {
                    let cut = cut_at(&bytes, timing.stall_fraction);
                    send(rt, tx, bytes.slice(..cut)).await;
                    kill.killed().await;
                    Answered::Gone
                }
                Some(Fault::Drop) => {
                    let cut = cut_at(&bytes, timing.drop_fraction);
                    send(rt, tx, bytes.slice(..cut)).await;
                    tokio::time::sleep(timing.drop_delay).await;
                    kill.kill();
                    Answered::Gone
                }
                Some(Fault::Slow) => {
                    let mut pos = 0;
                    let lines = timing.slow_lines.max(1);
                    while pos < bytes.len() {
                        let mut end = pos;
                        for _ in 0..lines {
                            end = match bytes[end..].iter().position(|b| *b == b'\n') {
                                Some(k) => end + k + 1,
                                None => bytes.len(),
                            };
                            if end >= bytes.len() {
                                break;
                            }
                        }
                        if !send(rt, tx, bytes.slice(pos..end)).await {
                            return Answered::Gone;
                        }
                        pos = end;
                        if pos < bytes.len() {
                            tokio::select! {
                                _ = tokio::time::sleep(timing.slow_interval) => {}
                                _ = kill.killed() => return Answered::Gone,
                            }
                        }
                    }
                    Answered::Export(bytes, started_at)
                }
                _ => {
                    if send(rt, tx, bytes.clone()).await {
                        Answered::Export(bytes, started_at)
                    } else {
                        Answered::Gone
                    }
                }
            }
        }
    }
}

pub(crate) fn cut_at(bytes: &Bytes, fraction: f64) -> usize {
    ((bytes.len() as f64 * fraction.clamp(0.0, 1.0)) as usize).min(bytes.len())
}

pub(crate) fn completed(
    shared: &Arc<Shared>,
    idx: usize,
    bytes: Bytes,
    started_at: chrono::DateTime<chrono::Utc>,
) {
    shared.rt[idx].exports.fetch_add(1, Ordering::Relaxed);
    if let Some(log) = &shared.session_log {
        let record = super::SessionRecord::new(shared.devices[idx].id, started_at, &bytes);
        match serde_json::to_string(&record) {
            Ok(mut line) => {
                line.push('\n');
                let mut w = log.lock().expect("session log poisoned");
                if let Err(e) = std::io::Write::write_all(&mut *w, line.as_bytes()) {
                    tracing::warn!(error = %e, "cannot write the session log");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize a session record"),
        }
    }
    if let Some(dir) = &shared.cfg.export_dir {
        let path = dir.join(format!("{}.rsc", shared.devices[idx].id));
        tokio::spawn(async move {
            if let Err(e) = write_atomic(&path, &bytes).await {
                tracing::warn!(path = %path.display(), error = %e, "cannot write export copy");
            }
        });
    }
}

/// `huge`: a valid header, then address-list lines until `huge_bytes`, produced lazily.
/// False when the client went away.
pub(crate) async fn stream_huge(
    shared: &Arc<Shared>,
    idx: usize,
    tx: &ChannelWriteHalf<Msg>,
) -> bool {
    let d = &shared.devices[idx];
    let total = shared.cfg.huge_bytes;
    let mut head = render::export_header(&d.routeros_version, chrono::Utc::now());
    head.push_str("\r\n# software id = HUGE-0000\r\n#\r\n# model = CCR2216-1G-12XS-2XQ\r\n/ip firewall address-list\r\n");
    let mut sent: u64 = 0;
    let mut chunk = String::with_capacity(70_000);
    chunk.push_str(&head);
    let mut n: u64 = 0;
    loop {
        while chunk.len() < 64 * 1024 {
            chunk.push_str(&format!(
                "add address=10.{}.{}.{} list=huge-{}\r\n",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff,
                n % 7
            ));
            n += 1;
        }
        let remaining = total.saturating_sub(sent);
        if remaining == 0 {
            break;
        }
        let take = (chunk.len() as u64).min(remaining) as usize;
        let piece = Bytes::copy_from_slice(&chunk.as_bytes()[..take]);
        chunk.clear();
        if !send(&shared.rt[idx], tx, piece).await {
            return false;
        }
        sent += take as u64;
    }
    true
}

/// `endless-line`: a valid header and section, then one line that never ends, until the
/// client goes away or the simulator stops. Never an exit status.
pub(crate) async fn stream_endless(
    shared: &Arc<Shared>,
    idx: usize,
    kill: &Arc<Kill>,
    tx: &ChannelWriteHalf<Msg>,
) {
    let d = &shared.devices[idx];
    let rt = &shared.rt[idx];
    let timing = &shared.cfg.timing;
    let mut head = render::export_header(&d.routeros_version, chrono::Utc::now());
    head.push_str("\r\n/system script\r\nadd name=endless source=\"");
    if !send(rt, tx, Bytes::from(head)).await {
        return;
    }
    let chunk = Bytes::from(vec![b'A'; timing.endless_chunk.max(1)]);
    loop {
        tokio::select! {
            ok = send(rt, tx, chunk.clone()) => if !ok { return },
            _ = kill.killed() => return,
        }
        if !timing.endless_interval.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(timing.endless_interval) => {}
                _ = kill.killed() => return,
            }
        }
    }
}

/// `/system backup save`: writes the file (or fails as the device's fault says) and
/// answers with RouterOS' text.
fn backup_save(shared: &Arc<Shared>, idx: usize, args: &BackupArgs) -> String {
    use super::files::{Encryption, SavedBackup, StoredFile, backup_bytes, backup_file_name};
    let d = &shared.devices[idx];
    let rt = &shared.rt[idx];
    if d.fault == Some(Fault::BackupNoSpace) {
        return "Saving system configuration\r\nfailure: not enough space\r\n".into();
    }
    let encryption = if args.dont_encrypt {
        Encryption::None
    } else {
        match (args.encryption.as_deref(), args.password.as_deref()) {
            (Some("rc4"), Some(_)) => Encryption::Rc4,
            (Some(_), Some(_)) => Encryption::AesSha256,
            // RouterOS 6 before 6.43 knew only RC4; later versions default to AES.
            (None, Some(_))
                if render::is_v6(&d.routeros_version) && !v6_has_aes(&d.routeros_version) =>
            {
                Encryption::Rc4
            }
            (None, Some(_)) => Encryption::AesSha256,
            (_, None) => Encryption::None,
        }
    };
    let name = backup_file_name(args.name.as_deref().unwrap_or(&d.name));
    // The backup holds the configuration: derive its bytes from the current export.
    let config = shared.export(idx, RenderOpts::default());
    let body = 16 * 1024 + config.len() / 2;
    let data = backup_bytes(encryption, args.password.as_deref(), &config, body);
    *rt.last_backup.lock().expect("last_backup poisoned") = Some(SavedBackup {
        name: name.clone(),
        data: data.clone(),
        encryption,
        password: args.password.clone(),
    });
    if d.fault != Some(Fault::BackupMissing) {
        rt.files.lock().expect("files poisoned").files.insert(
            name,
            StoredFile {
                data: Bytes::from(data),
                created: chrono::Utc::now(),
            },
        );
    }
    "Saving system configuration\r\nConfiguration backup saved\r\n".into()
}

/// RouterOS 6.43 added AES-encrypted backups.
fn v6_has_aes(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .unwrap_or(0)
    });
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major > 6 || (major == 6 && minor >= 43)
}
