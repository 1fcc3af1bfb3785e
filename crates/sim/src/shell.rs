//! The interactive RouterOS console (SSH `shell` channels).
//!
//! Why it exists: our worker uses exec channels, but the scripts operators write by hand
//! use netmiko, whose `mikrotik_routeros` driver only knows the interactive console: it
//! logs in as `user+ct511w4098h` (RouterOS console options: no colours, no terminal
//! detection, 511 columns, 4098 rows), asks for a PTY and a shell, waits for the prompt
//! `[user@identity] > `, types each command followed by `\r\n`, waits for the command's
//! echo and then for the prompt again, and leaves with `quit`. The benchmarks run such a
//! script against the simulator, so the simulator plays this console — small, but enough
//! for netmiko's driver unmodified.
//!
//! What it does: a short banner, the prompt (identity = the device name, which is what the
//! generated configs set as `/system identity`), echo of typed characters (backspace
//! erases, Ctrl-C drops the line, escape sequences such as arrow keys are ignored), CR,
//! LF or CRLF end a line, and the line is answered by the same code as an exec channel
//! ([`super::console::answer`]) — same text, same faults — followed by a fresh prompt.
//! `quit` or `/quit` closes the channel. What it leaves out: RouterOS's per-keystroke
//! prompt redraws, colours, tab completion, history, line wrapping at the terminal width.

use std::sync::Arc;

use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use tokio::sync::mpsc;

use super::console::{Answered, answer, completed};
use super::kill::Kill;
use super::state::Shared;

/// Longest line the console keeps; further typed characters are dropped (not echoed).
const MAX_LINE: usize = 4096;

/// Splits a login name into the user name and its RouterOS console options
/// (`admin+ct511w4098h` → `("admin", Some("ct511w4098h"))`). Options are letters, each
/// optionally preceded by a number (`511w`); anything else after the last `+` is taken as
/// part of the name, so a user literally called `a+b!` still logs in as such.
pub(super) fn split_login(login: &str) -> (&str, Option<&str>) {
    let Some((name, opts)) = login.rsplit_once('+') else {
        return (login, None);
    };
    let valid = !name.is_empty()
        && !opts.is_empty()
        && opts
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        && opts.bytes().last().is_some_and(|b| b.is_ascii_lowercase());
    if valid {
        (name, Some(opts))
    } else {
        (login, None)
    }
}

fn prompt(user: &str, identity: &str) -> Bytes {
    Bytes::from(format!("[{user}@{identity}] > "))
}

fn banner(version: &str) -> Bytes {
    Bytes::from(format!(
        "\r\n\r\n  MikroTik RouterOS {version} (c) 1999-2024       https://www.mikrotik.com/\r\n\r\nPress F1 for help\r\n\r\n"
    ))
}

/// What typing a byte did to the line being edited.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    /// Echo these bytes (maybe none).
    Echo(&'static [u8]),
    /// Echo the typed byte itself.
    EchoSelf,
    /// Enter: the line is complete.
    Enter,
    /// Ctrl-C: drop the line, new prompt.
    Cancel,
}

/// Line editor state: the line so far and where an escape sequence or CRLF stands.
#[derive(Default)]
struct Editor {
    line: Vec<u8>,
    after_cr: bool,
    /// 0 = none, 1 = after ESC, 2 = inside `ESC [` … (until a final byte).
    escape: u8,
}

impl Editor {
    fn key(&mut self, b: u8) -> Key {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match self.escape {
            1 => {
                self.escape = if b == b'[' || b == b'O' { 2 } else { 0 };
                return Key::Echo(b"");
            }
            2 => {
                if (0x40..=0x7e).contains(&b) {
                    self.escape = 0;
                }
                return Key::Echo(b"");
            }
            _ => {}
        }
        match b {
            b'\r' => {
                self.after_cr = true;
                Key::Enter
            }
            b'\n' if after_cr => Key::Echo(b""),
            b'\n' => Key::Enter,
            0x03 => {
                self.line.clear();
                Key::Cancel
            }
            0x08 | 0x7f => {
                if self.line.pop().is_some() {
                    Key::Echo(b"\x08 \x08")
                } else {
                    Key::Echo(b"")
                }
            }
            0x1b => {
                self.escape = 1;
                Key::Echo(b"")
            }
            b if b < 0x20 => Key::Echo(b""),
            b => {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                    Key::EchoSelf
                } else {
                    Key::Echo(b"")
                }
            }
        }
    }
}

fn is_quit(line: &str) -> bool {
    matches!(line.trim(), "quit" | "/quit")
}

/// Runs the console on `ch` until `quit`, the client closes, or the connection dies.
pub(super) async fn run(
    shared: Arc<Shared>,
    idx: usize,
    kill: Arc<Kill>,
    ch: Channel<Msg>,
    user: String,
) {
    let (mut rx, tx) = ch.split();
    // Keep reading the channel while a command's answer is being written: russh delivers
    // input through a bounded queue, and a full one would stall the whole session,
    // output included.
    let (in_tx, mut input) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut in_tx = Some(in_tx);
        while let Some(msg) = rx.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    if let Some(t) = &in_tx
                        && t.send(data).is_err()
                    {
                        in_tx = None;
                    }
                }
                ChannelMsg::Eof => in_tx = None,
                _ => {}
            }
        }
    });
    let d = &shared.devices[idx];
    let prompt = prompt(&user, &d.name);
    if tx.data_bytes(banner(&d.routeros_version)).await.is_err()
        || tx.data_bytes(prompt.clone()).await.is_err()
    {
        return;
    }
    let mut ed = Editor::default();
    loop {
        let data = tokio::select! {
            d = input.recv() => d,
            _ = kill.killed() => None,
        };
        let Some(data) = data else { break };
        let mut echo: Vec<u8> = Vec::with_capacity(data.len());
        for &b in data.iter() {
            match ed.key(b) {
                Key::Echo(e) => echo.extend_from_slice(e),
                Key::EchoSelf => echo.push(b),
                Key::Cancel => {
                    echo.extend_from_slice(b"\r\n");
                    echo.extend_from_slice(&prompt);
                }
                Key::Enter => {
                    echo.extend_from_slice(b"\r\n");
                    if tx
                        .data_bytes(Bytes::from(std::mem::take(&mut echo)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let line = String::from_utf8_lossy(&std::mem::take(&mut ed.line)).into_owned();
                    if is_quit(&line) {
                        let _ = tx.exit_status(0).await;
                        let _ = tx.eof().await;
                        let _ = tx.close().await;
                        return;
                    }
                    if !line.trim().is_empty() && !command(&shared, idx, &kill, &tx, &line).await {
                        return;
                    }
                    echo.extend_from_slice(&prompt);
                }
            }
        }
        if !echo.is_empty() && tx.data_bytes(Bytes::from(echo)).await.is_err() {
            return;
        }
    }
}

/// Answers one command line like an exec channel would. False when the session is gone.
async fn command(
    shared: &Arc<Shared>,
    idx: usize,
    kill: &Arc<Kill>,
    tx: &ChannelWriteHalf<Msg>,
    line: &str,
) -> bool {
    match answer(shared, idx, kill, tx, line).await {
        Answered::Done => true,
        Answered::Export(bytes, started_at) => {
            completed(shared, idx, bytes, started_at);
            true
        }
        Answered::Gone => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_options() {
        assert_eq!(
            split_login("admin+ct511w4098h"),
            ("admin", Some("ct511w4098h"))
        );
        assert_eq!(split_login("admin+c80w"), ("admin", Some("c80w")));
        assert_eq!(split_login("admin+t"), ("admin", Some("t")));
        assert_eq!(split_login("admin"), ("admin", None));
        // Not options: the whole string is the name.
        assert_eq!(split_login("admin+"), ("admin+", None));
        assert_eq!(split_login("admin+80"), ("admin+80", None));
        assert_eq!(split_login("admin+C"), ("admin+C", None));
        assert_eq!(split_login("+ct"), ("+ct", None));
        assert_eq!(split_login("a+b+ct"), ("a+b", Some("ct")));
    }

    fn typed(ed: &mut Editor, s: &[u8]) -> Vec<Key> {
        s.iter().map(|b| ed.key(*b)).collect()
    }

    #[test]
    fn line_editing() {
        let mut ed = Editor::default();
        let keys = typed(&mut ed, b"/expx\x7fort\r\n");
        assert_eq!(ed.line, b"/export");
        assert_eq!(keys[5], Key::Echo(b"\x08 \x08"));
        assert_eq!(keys[keys.len() - 2], Key::Enter);
        assert_eq!(
            keys[keys.len() - 1],
            Key::Echo(b""),
            "LF after CR is one Enter"
        );

        let mut ed = Editor::default();
        assert_eq!(
            typed(&mut ed, b"\n"),
            vec![Key::Enter],
            "a lone LF is Enter"
        );
        // An arrow key (ESC [ A) types nothing.
        typed(&mut ed, b"a\x1b[Ab");
        assert_eq!(ed.line, b"ab");
        assert_eq!(ed.key(0x03), Key::Cancel);
        assert!(ed.line.is_empty());
        // Backspace on an empty line erases nothing.
        assert_eq!(ed.key(0x7f), Key::Echo(b""));
    }

    #[test]
    fn quit_commands() {
        assert!(is_quit("quit"));
        assert!(is_quit(" /quit "));
        assert!(!is_quit("/quit now"));
        assert!(!is_quit("/export"));
    }
}
