//! What an export can end in besides a config: [`ExportError`], the phase that ran out
//! of time, how output was cut short, which logins were tried, and the error kind each
//! maps to — the kind decides what the scheduler does next (back off, block, retry).
//!
//! Why apart from the client: the kinds and their messages are the contract with the run
//! history, the metrics and the seed's event and reply fields; the SSH code produces them.

use super::output;
use crate::error::ErrorKind;

/// Which phase ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Handshake,
    Command,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connect => "TCP connect",
            Phase::Handshake => "SSH handshake and authentication",
            Phase::Command => "waiting for the export",
        })
    }
}

/// Why output stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// The command timeout fired after output had started.
    TimedOut,
    /// The connection or channel ended without EOF.
    Dropped,
    /// EOF but no exit status.
    NoExitStatus,
    /// The text ends inside a ` \` continuation.
    MidContinuation,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Truncation::TimedOut => "the command timeout fired mid-stream",
            Truncation::Dropped => "the connection ended without EOF",
            Truncation::NoExitStatus => "the channel closed without an exit status",
            Truncation::MidContinuation => "the text ends inside a wrapped line",
        })
    }
}

/// What authentication tried before it gave up (named in `auth_failed` messages, so an
/// operator can tell a refused key from a refused password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tried {
    Password,
    Key,
    KeyThenPassword,
}

impl std::fmt::Display for Tried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tried::Password => "password refused",
            Tried::Key => "key refused, no password to fall back on",
            Tried::KeyThenPassword => "key refused, then password refused",
        })
    }
}

/// A failed export. `Display` never contains the password or device output.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("connection to {addr} refused")]
    ConnectionRefused {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {secs:.1}s: {phase}")]
    Timeout { phase: Phase, secs: f64 },
    #[error("authentication failed for user {user:?} ({tried})")]
    AuthFailed { user: String, tried: Tried },
    #[error("host key mismatch: pinned {expected}, device presented {got}")]
    HostKeyMismatch { expected: String, got: String },
    #[error("output truncated after {bytes} bytes: {reason}")]
    Truncated { reason: Truncation, bytes: usize },
    #[error("export larger than the {cap}-byte limit")]
    TooLarge { cap: usize },
    #[error("{0}")]
    BadOutput(#[from] output::NotAnExport),
    #[error("the device refused to run {command:?}")]
    ExecRejected { command: &'static str },
    #[error("command exited with status {status}")]
    ExitStatus { status: u32 },
    #[error("SSH protocol error: {0}")]
    Ssh(#[source] russh::Error),
    /// The peer broke the SSH protocol before we were logged in: no banner, garbage
    /// instead of packets, a malformed key exchange. Not a RouterOS SSH server, or a
    /// broken one; retrying soon rarely helps, but it is not a reason to block.
    #[error("SSH handshake failed (is it an SSH server?): {0}")]
    Handshake(#[source] russh::Error),
    #[error("no SSH algorithm in common ({what:?}); the device offers {theirs:?}")]
    NoCommonAlgorithm { what: String, theirs: Vec<String> },
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    /// The bastion would not open a channel to the device: forwarding disabled there
    /// (`AllowTcpForwarding no`: administratively prohibited), or no room for another
    /// channel on any of the connections we may open. The bastion's policy, not the
    /// device: `bastion_forward_refused`.
    #[error("via jump host {bastion}: the jump host refused to forward to {addr} ({reason})")]
    ForwardRefused {
        bastion: String,
        addr: String,
        reason: String,
    },
    /// The bastion tried and could not connect to the device (RFC 4254 "connect
    /// failed"): the device is down or unreachable from the bastion, `connection_refused`
    /// as for a direct connection, and the message says where the attempt came from.
    #[error("via jump host {bastion}: the jump host could not connect to {addr} ({reason})")]
    ForwardFailed {
        bastion: String,
        addr: String,
        reason: String,
    },
    /// The bastion presented another key than the one pinned for it. Not a
    /// [`ExportError::HostKeyMismatch`]: that one is the device's (its message says
    /// "device presented", which the dashboard reads back as the device's key).
    #[error(
        "via jump host {addr}: the jump host's host key changed: pinned {expected}, the jump host presented {got}"
    )]
    BastionHostKeyMismatch {
        addr: String,
        expected: String,
        got: String,
    },
    /// Something went wrong with the jump host itself (its connection, host key, login):
    /// the kind is the inner error's, the message names the bastion.
    #[error("via jump host {addr}: {source}")]
    Bastion {
        addr: String,
        #[source]
        source: Box<ExportError>,
    },
}

impl ExportError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExportError::ConnectionRefused { .. }
            | ExportError::Unreachable { .. }
            | ExportError::ForwardFailed { .. } => ErrorKind::ConnectionRefused,
            ExportError::ForwardRefused { .. } => ErrorKind::BastionForwardRefused,
            ExportError::BastionHostKeyMismatch { .. } => ErrorKind::BastionHostKeyMismatch,
            ExportError::Bastion { source, .. } => bastion_kind(source.kind()),
            ExportError::Timeout { .. } => ErrorKind::Timeout,
            ExportError::AuthFailed { .. } => ErrorKind::AuthFailed,
            ExportError::HostKeyMismatch { .. } => ErrorKind::HostKeyMismatch,
            ExportError::Truncated { .. } => ErrorKind::TruncatedOutput,
            ExportError::TooLarge { .. } => ErrorKind::TooLarge,
            ExportError::BadOutput(_)
            | ExportError::ExecRejected { .. }
            | ExportError::ExitStatus { .. } => ErrorKind::BadOutput,
            ExportError::Ssh(_)
            | ExportError::Handshake(_)
            | ExportError::NoCommonAlgorithm { .. }
            | ExportError::InvalidTarget(_) => ErrorKind::Unknown,
        }
    }

    /// Did the export (command) timeout expire, before output started (`timeout`) or in
    /// the middle of it (`truncated_output`)? What the adaptive export timeout grows on
    /// ([`crate::export_timeout`]); a connect or login timeout is not the export's.
    pub fn export_timed_out(&self) -> bool {
        match self {
            ExportError::Timeout {
                phase: Phase::Command,
                ..
            }
            | ExportError::Truncated {
                reason: Truncation::TimedOut,
                ..
            } => true,
            ExportError::Bastion { source, .. } => source.export_timed_out(),
            _ => false,
        }
    }

    /// The fingerprint the device presented, when the error is about it.
    pub fn presented_fingerprint(&self) -> Option<&str> {
        match self {
            ExportError::HostKeyMismatch { got, .. } => Some(got),
            _ => None,
        }
    }

    /// The jump host (`host:port`) the error happened on, when it happened there rather
    /// than on the device.
    pub fn bastion(&self) -> Option<&str> {
        match self {
            ExportError::Bastion { addr, .. }
            | ExportError::BastionHostKeyMismatch { addr, .. } => Some(addr),
            ExportError::ForwardRefused { bastion, .. } => Some(bastion),
            _ => None,
        }
    }
}

/// The kind of an error on the jump host, from the kind the same error would have on a
/// device: the device-side names stay the seed's, the bastion's get their own so the run
/// history, the dashboard and the metrics tell where it happened.
pub fn bastion_kind(inner: ErrorKind) -> ErrorKind {
    match inner {
        ErrorKind::AuthFailed => ErrorKind::BastionAuthFailed,
        ErrorKind::HostKeyMismatch => ErrorKind::BastionHostKeyMismatch,
        ErrorKind::ConnectionRefused | ErrorKind::Timeout => ErrorKind::BastionUnreachable,
        ErrorKind::BastionForwardRefused => ErrorKind::BastionForwardRefused,
        _ => ErrorKind::BastionFailed,
    }
}
