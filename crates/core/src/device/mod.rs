//! One export from one RouterOS device over SSH.
//!
//! This is the only place that talks to devices. It returns either the complete raw
//! export with the observed host-key fingerprint and timings, or an [`ExportError`] whose
//! [`ErrorKind`] decides what the scheduler does next. Three rules shape it:
//!
//! * **Every phase is bounded.** russh has no connect or handshake timeout and its
//!   inactivity timer is defeated by keepalives, so TCP connect + SSH handshake + auth run
//!   under the connect timeout and the commands under the command timeout, each with
//!   `tokio::time::timeout`. A peer that accepts TCP and never speaks cannot hang a worker.
//! * **Nothing partial is a success.** The exec channel must deliver an exit status and
//!   EOF, and the text must not end inside a ` \` continuation; otherwise the result is
//!   `truncated_output`. Output beyond the cap is `too_large`, and reading stops there so
//!   memory stays bounded. An error text is `bad_output`, never a config.
//! * **Bytes, not text.** The export is kept byte for byte: NUL and non-UTF-8 bytes are
//!   part of a config (a Latin-1 comment) and the hash covers them. What we *store about*
//!   the device is checked instead: a version token that is not printable ASCII is
//!   dropped ([`output::clean_version`]), and error messages never carry raw device bytes
//!   (the algorithm names a device offers are escaped and capped).
//! * **Trust on first use.** With no known fingerprint the key is accepted and reported
//!   for the caller to pin; with one, a different key ends the connection before the
//!   password is sent.
//!
//! The command depends on the RouterOS major version (NOTES §4): 7 needs
//! `/export show-sensitive` for secrets, 6 prints them with `/export` and rejects
//! `show-sensitive`. With no known version we ask the device (`/system resource print`)
//! on the same SSH session and report what we found so the caller can remember it.

mod algorithms;
pub mod bastion;
pub mod binary;
pub mod output;

mod connect;
mod error;
pub use algorithms::{is_legacy, preferred};
pub use bastion::BastionPool;
use connect::{Client, login, map_russh};
pub use error::{ExportError, Phase, Tried, Truncation, bastion_kind};

use crate::secret::Secret;
use crate::userkey::{UserKey, rsa_signature_hashes};
use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, MethodKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Default cap on export size: the largest real exports are ~400 KB; 32 MiB leaves room
/// for huge address lists while bounding a worker's memory per job.
pub const DEFAULT_MAX_OUTPUT: usize = 32 * 1024 * 1024;
/// How much stderr we keep (only its size is reported).
const MAX_STDERR: usize = 64 * 1024;

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// Empty when the device logs in with a key only.
    pub password: Secret,
    /// A user key, tried before the password (see [`authenticate`]).
    pub key: Option<UserKey>,
    /// A bastion to reach the device through, or `None` to connect directly.
    pub jump: Option<JumpHost>,
    /// Pinned host-key fingerprint (`SHA256:…`); `None` = trust on first use.
    pub known_fingerprint: Option<String>,
    /// What we know of the RouterOS version (free-form token or just `6`/`7`).
    pub routeros_version: Option<String>,
}

/// A jump host (bastion): the device is reached through a `direct-tcpip` channel of an
/// SSH session with it, as OpenSSH's `ProxyJump`. Its own host key is checked (trust on
/// first use, or `known_fingerprint`) before anything is sent; errors on the way are
/// [`ExportError::Bastion`], naming it.
#[derive(Debug, Clone)]
pub struct JumpHost {
    pub host: String,
    pub port: u16,
    /// Empty: the device's user.
    pub username: String,
    /// Empty: none.
    pub password: Secret,
    /// `None`: the device's key, if it has one.
    pub key: Option<UserKey>,
    pub known_fingerprint: Option<String>,
}

/// Parse a jump host as OpenSSH's `-J` takes it: `[user@]host[:port]`, an IPv6 address
/// in brackets when it has a port (`[2001:db8::1]:2222`). Returns (user, host, port); the
/// port defaults to 22.
pub fn parse_jump_host(s: &str) -> Result<(Option<String>, String, u16), String> {
    let s = s.trim();
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(format!("{s:?}: empty user before @")),
        None => (None, s),
    };
    let bad_port = |p: &str| format!("{s:?}: {p:?} is not a port (1-65535)");
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad_port(p))?,
            None if after.is_empty() => 22,
            None => return Err(format!("{s:?}: unexpected text after ]")),
        };
        (h.to_string(), port)
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').unwrap_or((rest, "22"));
        let port = p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad_port(p))?;
        (h.to_string(), port)
    } else {
        // No port, or a bare IPv6 address.
        (rest.to_string(), 22)
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?}: no host"));
    }
    Ok((user, host, port))
}

/// Knobs for one export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// TCP connect, and separately SSH handshake + authentication.
    pub connect_timeout: Duration,
    /// Everything after authentication: version probe and export.
    pub command_timeout: Duration,
    pub max_output: usize,
    /// Export secrets (`show-sensitive` on 7, plain `/export` on 6). Off: a secret-free
    /// export (`/export` on 7, `hide-sensitive` on 6).
    pub sensitive: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            connect_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(60),
            max_output: DEFAULT_MAX_OUTPUT,
            sensitive: true,
        }
    }
}

/// Algorithms the session negotiated.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    pub kex: String,
    pub host_key: String,
    pub cipher: String,
    pub mac: String,
}

impl Negotiated {
    /// True if any SHA-1 era algorithm had to be used.
    pub fn uses_legacy(&self) -> bool {
        [&self.kex, &self.host_key, &self.mac]
            .iter()
            .any(|n| algorithms::is_legacy(n))
    }
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub connect: Duration,
    /// SSH version exchange, key exchange and authentication.
    pub handshake: Duration,
    /// Version probe (if any), exec and transfer.
    pub command: Duration,
    pub total: Duration,
}

/// A complete export. `Debug` shows sizes, never the text (it holds secrets).
#[derive(Clone)]
pub struct Export {
    pub raw: Vec<u8>,
    pub fingerprint: String,
    pub negotiated: Negotiated,
    /// The version as found: the export header's token, else the probe's, else the
    /// caller's hint.
    pub routeros_version: Option<String>,
    /// The major version the command was chosen for.
    pub routeros_major: u8,
    /// True when the major version was found out on this connection (probe or fallback)
    /// rather than given by the caller: the caller should remember it.
    pub version_discovered: bool,
    /// `#error exporting` lines: RouterOS could not export some menus.
    pub error_exporting_lines: usize,
    pub command: &'static str,
    pub stderr_bytes: usize,
    pub timings: Timings,
    /// The jump host's host-key fingerprint, when the export went through one (for the
    /// caller to pin on first use, once per bastion).
    pub bastion_fingerprint: Option<String>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("raw_bytes", &self.raw.len())
            .field("fingerprint", &self.fingerprint)
            .field("negotiated", &self.negotiated)
            .field("routeros_version", &self.routeros_version)
            .field("routeros_major", &self.routeros_major)
            .field("command", &self.command)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

/// The export command for a major version.
pub fn export_command(major: u8, sensitive: bool) -> &'static str {
    match (major >= 7, sensitive) {
        (true, true) => "/export show-sensitive",
        (true, false) => "/export",
        (false, true) => "/export",
        (false, false) => "/export hide-sensitive",
    }
}

/// Run one export against one device. See the module docs for the guarantees.
pub async fn export(target: &Target, opts: &ExportOptions) -> Result<Export, ExportError> {
    export_with_marks(target, opts, &mut |_| {}).await
}

/// [`export`], calling `mark(phase)` the moment each phase ends (TCP connect; handshake
/// and authentication; commands and disconnect). A seam for the cost benchmark
/// (`rosbackup-bench cost`), which reads a CPU clock at each mark to split one export's
/// CPU time by phase; [`Export::timings`] only has wall time.
pub async fn export_with_marks(
    target: &Target,
    opts: &ExportOptions,
    mark: &mut (dyn FnMut(Phase) + Send),
) -> Result<Export, ExportError> {
    export_inner(target, opts, mark, false, None)
        .await
        .map(|(export, _)| export)
}

/// An authenticated SSH session kept open after a complete export, for more work on the
/// same connection (a binary backup, issue #19) under the same host-key check. Dropping
/// it closes the connection; [`Session::close`] does so politely.
pub struct Session {
    handle: Handle<Client>,
    /// The jump host's connection the session's channel runs over, if any.
    bastion: Via,
}

/// The bastion connection a device session runs over: none, one of its own (a one-off
/// export), or one lent by a [`BastionPool`] (shared with other sessions: never
/// disconnected by one of them).
enum Via {
    Direct,
    Own(Handle<Client>),
    /// Held, never read: while it lives the pool counts this session on the connection.
    Pooled(#[allow(dead_code)] bastion::Lent),
}

impl Via {
    async fn close(self) {
        if let Via::Own(b) = self {
            let _ = timeout(
                Duration::from_secs(1),
                b.disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await;
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Take a binary backup on this session ([`binary`] module docs).
    pub async fn binary_backup(
        &self,
        req: &binary::BinaryRequest,
    ) -> Result<binary::BinaryFile, binary::BinaryError> {
        binary::take(&self.handle, req).await
    }

    /// Disconnect (bounded: the device may already be gone, which is fine). A pooled
    /// bastion connection stays open for the next session.
    pub async fn close(self) {
        let _ = timeout(
            Duration::from_secs(1),
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "", "en"),
        )
        .await;
        self.bastion.close().await;
    }
}

/// A session kept open after its export: the device's connection and the jump host's.
type Kept = (Handle<Client>, Via);

/// [`export_with_marks`] that keeps the session open after a successful export (after a
/// failed one it is closed as always). The export's timings end before the disconnect.
pub async fn export_session(
    target: &Target,
    opts: &ExportOptions,
    mark: &mut (dyn FnMut(Phase) + Send),
) -> Result<(Export, Session), ExportError> {
    export_session_via(target, opts, mark, None).await
}

/// [`export_with_marks`] with a jump host's connection taken from `pool` (shared with
/// other sessions) instead of one of its own; without a jump host the pool is unused.
pub async fn export_via(
    target: &Target,
    opts: &ExportOptions,
    mark: &mut (dyn FnMut(Phase) + Send),
    pool: Option<&BastionPool>,
) -> Result<Export, ExportError> {
    export_inner(target, opts, mark, false, pool)
        .await
        .map(|(export, _)| export)
}

/// [`export_session`] with the jump host's connection from `pool` ([`export_via`]).
pub async fn export_session_via(
    target: &Target,
    opts: &ExportOptions,
    mark: &mut (dyn FnMut(Phase) + Send),
    pool: Option<&BastionPool>,
) -> Result<(Export, Session), ExportError> {
    let (export, kept) = export_inner(target, opts, mark, true, pool).await?;
    let (handle, bastion) =
        kept.ok_or_else(|| ExportError::InvalidTarget("session not kept".into()))?;
    Ok((export, Session { handle, bastion }))
}

/// Wrap an error on the jump host `jump` so that it names it (and its kind is the
/// bastion's, [`bastion_kind`]). A changed host key gets its own variant.
fn via(jump: &JumpHost) -> impl Fn(ExportError) -> ExportError + '_ {
    move |e| {
        let addr = format_addr(&jump.host, jump.port);
        match e {
            ExportError::HostKeyMismatch { expected, got } => ExportError::BastionHostKeyMismatch {
                addr,
                expected,
                got,
            },
            e @ (ExportError::ForwardRefused { .. }
            | ExportError::ForwardFailed { .. }
            | ExportError::Bastion { .. }
            | ExportError::BastionHostKeyMismatch { .. }) => e,
            e => ExportError::Bastion {
                addr,
                source: Box::new(e),
            },
        }
    }
}

/// Open a `direct-tcpip` channel to the device on an authenticated bastion connection,
/// under the connect timeout. `Err(None)`: the connection is gone (dropped under us).
async fn open_forward(
    bastion: &Handle<Client>,
    jump: &JumpHost,
    target: &Target,
    opts: &ExportOptions,
) -> Result<russh::Channel<client::Msg>, ForwardError> {
    let addr = format_addr(&target.host, target.port);
    let bastion_addr = format_addr(&jump.host, jump.port);
    match timeout(
        opts.connect_timeout,
        bastion.channel_open_direct_tcpip(
            target.host.clone(),
            u32::from(target.port),
            "127.0.0.1",
            0,
        ),
    )
    .await
    {
        Err(_) => Err(ForwardError::Failed(ExportError::Bastion {
            addr: bastion_addr,
            source: Box::new(ExportError::Timeout {
                phase: Phase::Connect,
                secs: opts.connect_timeout.as_secs_f64(),
            }),
        })),
        Ok(Err(russh::Error::ChannelOpenFailure(reason))) => Err(match reason {
            russh::ChannelOpenFailure::ConnectFailed => {
                ForwardError::Failed(ExportError::ForwardFailed {
                    bastion: bastion_addr,
                    addr,
                    reason: "connect failed".into(),
                })
            }
            russh::ChannelOpenFailure::ResourceShortage => ForwardError::NoRoom,
            other => ForwardError::Failed(ExportError::ForwardRefused {
                bastion: bastion_addr,
                addr,
                reason: forward_reason(&other).into(),
            }),
        }),
        Ok(Err(russh::Error::SendError | russh::Error::Disconnect | russh::Error::HUP)) => {
            Err(ForwardError::Dropped)
        }
        Ok(Err(e)) => Err(ForwardError::Failed(via(jump)(map_russh(e)))),
        Ok(Ok(c)) => Ok(c),
    }
}

fn forward_reason(r: &russh::ChannelOpenFailure) -> &'static str {
    match r {
        russh::ChannelOpenFailure::AdministrativelyProhibited => {
            "administratively prohibited: is AllowTcpForwarding off?"
        }
        russh::ChannelOpenFailure::ConnectFailed => "connect failed",
        russh::ChannelOpenFailure::UnknownChannelType => "direct-tcpip not supported",
        russh::ChannelOpenFailure::ResourceShortage => "resource shortage",
        _ => "refused",
    }
}

/// Why a forward did not open.
enum ForwardError {
    /// The bastion connection is gone: another may do.
    Dropped,
    /// The bastion has no room for another channel on this connection.
    NoRoom,
    Failed(ExportError),
}

async fn export_inner(
    target: &Target,
    opts: &ExportOptions,
    mark: &mut (dyn FnMut(Phase) + Send),
    keep: bool,
    pool: Option<&BastionPool>,
) -> Result<(Export, Option<Kept>), ExportError> {
    let started = Instant::now();
    let mut connected = started;
    if let Some(fp) = target.known_fingerprint.as_deref().map(str::trim)
        && !fp.is_empty()
        && !is_fingerprint(fp)
    {
        // A typo must not look like a changed key (which blocks the device).
        return Err(ExportError::InvalidTarget(
            "the pinned fingerprint is not in `SHA256:<43 base64 characters>` form".into(),
        ));
    }

    // Phase 1: TCP connect (through the bastion's `direct-tcpip` channel with a jump
    // host, which is logged in to first, under the same connect timeout).
    let mut bastion_fingerprint = None;
    let (handle, observed, bastion) = match (&target.jump, pool) {
        (None, _) => {
            let stream = tcp_connect(&target.host, target.port, opts).await?;
            connected_at(&mut connected, &mut *mark);
            let expected = expected_fingerprint(target.known_fingerprint.as_deref());
            let (handle, observed) = login(stream, &target.login(), expected, opts).await?;
            (handle, observed, Via::Direct)
        }
        (Some(jump), Some(pool)) => {
            let (channel, lent) = pool.forward(jump, target, opts).await?;
            bastion_fingerprint = Some(lent.fingerprint().to_string());
            connected_at(&mut connected, &mut *mark);
            let expected = expected_fingerprint(target.known_fingerprint.as_deref());
            let (handle, observed) =
                login(channel.into_stream(), &target.login(), expected, opts).await?;
            (handle, observed, Via::Pooled(lent))
        }
        (Some(jump), None) => {
            let (bastion, seen) = bastion::connect(jump, target, opts).await?;
            bastion_fingerprint = Some(seen);
            let channel = match open_forward(&bastion, jump, target, opts).await {
                Ok(c) => c,
                Err(ForwardError::Failed(e)) => return Err(e),
                Err(ForwardError::NoRoom) => {
                    return Err(ExportError::ForwardRefused {
                        bastion: format_addr(&jump.host, jump.port),
                        addr: format_addr(&target.host, target.port),
                        reason: forward_reason(&russh::ChannelOpenFailure::ResourceShortage).into(),
                    });
                }
                Err(ForwardError::Dropped) => {
                    return Err(via(jump)(ExportError::Ssh(russh::Error::Disconnect)));
                }
            };
            connected_at(&mut connected, &mut *mark);
            let expected = expected_fingerprint(target.known_fingerprint.as_deref());
            let (handle, observed) =
                login(channel.into_stream(), &target.login(), expected, opts).await?;
            (handle, observed, Via::Own(bastion))
        }
    };
    let authenticated = Instant::now();
    mark(Phase::Handshake);
    let (fingerprint, negotiated) = {
        let o = observed
            .lock()
            .map_err(|_| ExportError::InvalidTarget("internal state poisoned".into()))?;
        (o.fingerprint.clone(), o.negotiated.clone())
    };
    let Some(fingerprint) = fingerprint else {
        return Err(ExportError::Ssh(russh::Error::UnknownKey));
    };

    // Phase 3: commands, under one deadline.
    let deadline = tokio::time::Instant::now() + opts.command_timeout;
    let result = run_export(&handle, target, opts, deadline).await;
    let kept = if keep && result.is_ok() {
        Some((handle, bastion))
    } else {
        // Polite close; the device may already be gone, which is fine.
        let _ = timeout(
            Duration::from_secs(1),
            handle.disconnect(russh::Disconnect::ByApplication, "", "en"),
        )
        .await;
        bastion.close().await;
        None
    };
    let done = Instant::now();
    mark(Phase::Command);
    let mut export = result?;
    export.fingerprint = fingerprint;
    export.negotiated = negotiated;
    export.bastion_fingerprint = bastion_fingerprint;
    export.timings = Timings {
        connect: connected - started,
        handshake: authenticated - connected,
        command: done - authenticated,
        total: done - started,
    };
    Ok((export, kept))
}

/// Who logs in: a user with a password (empty: none) and/or a key.
struct Login<'a> {
    username: &'a str,
    password: &'a Secret,
    key: Option<&'a UserKey>,
}

impl Target {
    fn login(&self) -> Login<'_> {
        Login {
            username: &self.username,
            password: &self.password,
            key: self.key.as_ref(),
        }
    }
}

impl JumpHost {
    /// Who logs in to the bastion: its user (the device's when empty), its password if
    /// any, and its key — or, without one, the device's key, as OpenSSH's `ProxyJump`
    /// tries the bastion.
    fn login<'a>(&'a self, target: &'a Target) -> Login<'a> {
        Login {
            username: if self.username.is_empty() {
                &target.username
            } else {
                &self.username
            },
            password: &self.password,
            key: self.key.as_ref().or(target.key.as_ref()),
        }
    }
}

fn expected_fingerprint(pinned: Option<&str>) -> Option<String> {
    pinned
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn connected_at(connected: &mut Instant, mark: &mut (dyn FnMut(Phase) + Send)) {
    *connected = Instant::now();
    mark(Phase::Connect);
}

/// Phase 1 to one address: TCP connect under the connect timeout.
async fn tcp_connect(
    host: &str,
    port: u16,
    opts: &ExportOptions,
) -> Result<TcpStream, ExportError> {
    let addr = format_addr(host, port);
    let stream = match timeout(opts.connect_timeout, TcpStream::connect(&addr)).await {
        Err(_) => {
            return Err(ExportError::Timeout {
                phase: Phase::Connect,
                secs: opts.connect_timeout.as_secs_f64(),
            });
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ExportError::ConnectionRefused { addr, source: e });
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(ExportError::InvalidTarget(format!("{addr}: {e}")));
        }
        Ok(Err(e)) => return Err(ExportError::Unreachable { addr, source: e }),
        Ok(Ok(s)) => s,
    };
    // Best effort: a socket option failing does not stop the backup.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `SHA256:` and 43 characters of unpadded base64, as `ssh-keygen -lf` prints.
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    })
}

fn format_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Probe the version if needed, run the export, fall back once if a device we took for 7
/// turns out to be 6.
async fn run_export(
    handle: &Handle<Client>,
    target: &Target,
    opts: &ExportOptions,
    deadline: tokio::time::Instant,
) -> Result<Export, ExportError> {
    let hinted = target.routeros_version.as_deref().and_then(output::major);
    let mut probed_version = None;
    let mut discovered = false;
    let major = match hinted {
        Some(m) => m,
        None => {
            let out = run_command(handle, "/system resource print", opts, deadline).await?;
            discovered = true;
            match output::parse_resource_version(&out.stdout) {
                Some(v) => {
                    let m = output::major(&v).unwrap_or(7);
                    probed_version = Some(v);
                    m
                }
                // No version line: try the v7 form, the fallback below handles 6.
                None => 7,
            }
        }
    };
    let mut major = major;
    let mut command = export_command(major, opts.sensitive);
    let mut out = run_command(handle, command, opts, deadline).await?;
    if major >= 7 && opts.sensitive && output::is_v6_show_sensitive_error(&out.stdout) {
        // RouterOS 6 rejects `show-sensitive`; it prints secrets with plain `/export`.
        major = 6;
        discovered = true;
        command = export_command(6, true);
        out = run_command(handle, command, opts, deadline).await?;
    }
    // The export's own header says which RouterOS wrote it. A stale hint (a box upgraded
    // from 6 to 7, or the reverse) picked the wrong command: secrets missing, or secrets
    // exported when they must not be. Run the right one.
    let mut info = export_info(&out.stdout);
    if let Some(header_major) = info.routeros_version.as_deref().and_then(output::major)
        && (header_major >= 7) != (major >= 7)
    {
        major = header_major;
        discovered = true;
        command = export_command(major, opts.sensitive);
        out = run_command(handle, command, opts, deadline).await?;
        info = export_info(&out.stdout);
    }
    if output::ends_mid_continuation(&out.stdout) {
        return Err(ExportError::Truncated {
            reason: Truncation::MidContinuation,
            bytes: out.stdout.len(),
        });
    }
    output::check_export(&out.stdout)?;
    if out.exit_status != 0 {
        return Err(ExportError::ExitStatus {
            status: out.exit_status,
        });
    }
    Ok(Export {
        routeros_version: info
            .routeros_version
            .or(probed_version)
            .or_else(|| target.routeros_version.clone()),
        routeros_major: major,
        version_discovered: discovered,
        error_exporting_lines: info.error_exporting_lines,
        command,
        stderr_bytes: out.stderr_bytes,
        raw: out.stdout,
        fingerprint: String::new(),
        negotiated: Negotiated::default(),
        timings: Timings::default(),
        bastion_fingerprint: None,
    })
}

/// The export's header metadata, with a version token only if it is fit to store
/// ([`output::clean_version`]).
fn export_info(raw: &[u8]) -> crate::normalize::ExportInfo {
    let mut info = crate::normalize::export_info(raw);
    info.routeros_version = info
        .routeros_version
        .as_deref()
        .and_then(output::clean_version);
    info
}

struct CommandOutput {
    stdout: Vec<u8>,
    stderr_bytes: usize,
    exit_status: u32,
}

/// What a channel delivered so far; kept outside the timed future so a timeout can tell
/// "nothing came" (timeout) from "it stopped mid-stream" (truncated).
#[derive(Default)]
struct ChannelState {
    stdout: Vec<u8>,
    stderr: usize,
    exit_status: Option<u32>,
    eof: bool,
    /// The command was killed by a signal: whatever came is not the whole export.
    killed: bool,
}

async fn run_command(
    handle: &Handle<Client>,
    command: &'static str,
    opts: &ExportOptions,
    deadline: tokio::time::Instant,
) -> Result<CommandOutput, ExportError> {
    let mut state = ChannelState::default();
    let read = read_channel(handle, command, opts.max_output, &mut state);
    match tokio::time::timeout_at(deadline, read).await {
        Err(_) if state.stdout.is_empty() => Err(ExportError::Timeout {
            phase: Phase::Command,
            secs: opts.command_timeout.as_secs_f64(),
        }),
        Err(_) => Err(ExportError::Truncated {
            reason: Truncation::TimedOut,
            bytes: state.stdout.len(),
        }),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => {
            if state.killed || !state.eof {
                return Err(ExportError::Truncated {
                    reason: Truncation::Dropped,
                    bytes: state.stdout.len(),
                });
            }
            let Some(exit_status) = state.exit_status else {
                return Err(ExportError::Truncated {
                    reason: Truncation::NoExitStatus,
                    bytes: state.stdout.len(),
                });
            };
            Ok(CommandOutput {
                stdout: state.stdout,
                stderr_bytes: state.stderr,
                exit_status,
            })
        }
    }
}

async fn read_channel(
    handle: &Handle<Client>,
    command: &'static str,
    cap: usize,
    state: &mut ChannelState,
) -> Result<(), ExportError> {
    let mut channel = match handle.channel_open_session().await {
        Ok(c) => c,
        // The session is gone (the device hung up right after auth): the caller sees no
        // EOF and reports the output as truncated.
        Err(russh::Error::SendError | russh::Error::Disconnect | russh::Error::HUP) => {
            return Ok(());
        }
        Err(e) => return Err(map_russh(e)),
    };
    match channel.exec(true, command).await {
        Ok(()) => {}
        Err(russh::Error::SendError | russh::Error::Disconnect | russh::Error::HUP) => {
            return Ok(());
        }
        Err(e) => return Err(map_russh(e)),
    }
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                let needed = state.stdout.len() + data.len();
                if needed > cap {
                    return Err(ExportError::TooLarge { cap });
                }
                if needed > state.stdout.capacity() {
                    // Grow by doubling, but never past the cap.
                    let target = (state.stdout.capacity() * 2).max(needed).min(cap);
                    state.stdout.reserve_exact(target - state.stdout.len());
                }
                state.stdout.extend_from_slice(&data);
            }
            ChannelMsg::ExtendedData { data, .. } => {
                state.stderr = (state.stderr + data.len()).min(MAX_STDERR);
            }
            ChannelMsg::ExitStatus { exit_status } => state.exit_status = Some(exit_status),
            ChannelMsg::ExitSignal { .. } => state.killed = true,
            ChannelMsg::Eof => state.eof = true,
            ChannelMsg::Close => break,
            ChannelMsg::Failure => return Err(ExportError::ExecRejected { command }),
            _ => {}
        }
        // EOF means no more data; with the exit status we have everything, even if the
        // server waits for us to close the channel (RFC 4254 allows that).
        if state.eof && state.exit_status.is_some() {
            break;
        }
    }
    Ok(())
}

/// The fingerprint a device presented, read back from a stored host-key-mismatch
/// message (the text [`ExportError::HostKeyMismatch`] displays, which is what a run and
/// the device row keep): the dashboard shows it next to the pinned one so an operator
/// can compare both with the router before resetting.
pub fn presented_fingerprint(message: &str) -> Option<&str> {
    let rest = message.split("device presented ").nth(1)?;
    let fp = rest.split_whitespace().next()?;
    fp.starts_with("SHA256:").then_some(fp)
}

#[cfg(test)]
mod tests;
