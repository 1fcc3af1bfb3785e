//! The failure vocabulary shared by the worker, the run history, metrics and the API.
//!
//! The first six kinds are the seed's `SSHErrorKind` strings, kept exactly so that
//! dashboards and alerts written for the Go poller keep working. The rest are ours:
//! `bad_output` (the device answered, but not with an export), `too_large` (over the
//! output cap), `publish_failed` (the snapshot could not be stored in JetStream) and
//! `credentials_unreadable` (the stored password does not open with the worker's
//! `CREDENTIAL_ENCRYPTION_KEY`: a configuration problem on our side, found before the
//! device is contacted, so it must never read as an SSH failure or `unknown`).
//! The `bastion_*` kinds (issue #18) are failures on the jump host in front of a device,
//! never the device's own: an operator must tell "the bastion refused our key" from "the
//! router refused our key" in the run history, the dashboard and the metrics, and the
//! remedies differ (one bastion fix heals every device behind it). Only
//! `bastion_host_key_mismatch` blocks: a changed bastion key must be verified by a human;
//! a refused login on a shared bastion is usually fixed on the bastion, so devices back off
//! and recover on their own instead of waiting for a per-device unblock.
//! What an operator should do differs per kind, so scheduling decisions (block, back
//! off, retry) are made on the kind, never on message text.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    AuthFailed,
    HostKeyMismatch,
    Timeout,
    TruncatedOutput,
    ConnectionRefused,
    Unknown,
    BadOutput,
    TooLarge,
    PublishFailed,
    CredentialsUnreadable,
    BastionUnreachable,
    BastionAuthFailed,
    BastionHostKeyMismatch,
    BastionForwardRefused,
    BastionFailed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::AuthFailed,
        ErrorKind::HostKeyMismatch,
        ErrorKind::Timeout,
        ErrorKind::TruncatedOutput,
        ErrorKind::ConnectionRefused,
        ErrorKind::Unknown,
        ErrorKind::BadOutput,
        ErrorKind::TooLarge,
        ErrorKind::PublishFailed,
        ErrorKind::CredentialsUnreadable,
        ErrorKind::BastionUnreachable,
        ErrorKind::BastionAuthFailed,
        ErrorKind::BastionHostKeyMismatch,
        ErrorKind::BastionForwardRefused,
        ErrorKind::BastionFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::HostKeyMismatch => "host_key_mismatch",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TruncatedOutput => "truncated_output",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::Unknown => "unknown",
            ErrorKind::BadOutput => "bad_output",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::PublishFailed => "publish_failed",
            ErrorKind::CredentialsUnreadable => "credentials_unreadable",
            ErrorKind::BastionUnreachable => "bastion_unreachable",
            ErrorKind::BastionAuthFailed => "bastion_auth_failed",
            ErrorKind::BastionHostKeyMismatch => "bastion_host_key_mismatch",
            ErrorKind::BastionForwardRefused => "bastion_forward_refused",
            ErrorKind::BastionFailed => "bastion_failed",
        }
    }

    /// Kinds that a retry cannot fix: the device stays blocked until an operator acts.
    /// `credentials_unreadable` is one of them: retrying with the same key opens nothing.
    /// It is lifted by setting the password again, by `devices rotate-key`, or by a
    /// worker that starts with a key that opens it (after a rotation).
    pub fn blocks(self) -> bool {
        matches!(
            self,
            ErrorKind::AuthFailed
                | ErrorKind::HostKeyMismatch
                | ErrorKind::CredentialsUnreadable
                | ErrorKind::BastionHostKeyMismatch
        )
    }

    /// What an operator should do about it, for the dashboard and the CLI.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorKind::AuthFailed => "update the credentials",
            ErrorKind::HostKeyMismatch => "the host key changed: verify, then reset it",
            ErrorKind::Timeout => {
                "the device did not answer in time: check reachability or raise the timeout"
            }
            ErrorKind::TruncatedOutput => {
                "the export stopped early: check the link and the device load"
            }
            ErrorKind::ConnectionRefused => {
                "nothing accepts SSH there: check the address, port and /ip service"
            }
            ErrorKind::Unknown => "see the message; SSH negotiation or protocol failure",
            ErrorKind::BadOutput => {
                "the device answered with an error, not an export: check the user's policies and RouterOS version"
            }
            ErrorKind::TooLarge => {
                "the export exceeds the output cap: raise CONFIG_BACKUP_MAX_OUTPUT_BYTES"
            }
            ErrorKind::PublishFailed => "NATS JetStream did not store the snapshot: check NATS",
            ErrorKind::CredentialsUnreadable => {
                "the stored password does not open with this worker's CREDENTIAL_ENCRYPTION_KEY: \
                 start workers with the key that sealed it, or set the password again \
                 (rosbackup devices set-credentials)"
            }
            ErrorKind::BastionUnreachable => {
                "the jump host did not accept SSH in time: check the bastion's address and port"
            }
            ErrorKind::BastionAuthFailed => {
                "the jump host refused our login: fix the jump credentials or the bastion's \
                 authorized keys (the router was not contacted)"
            }
            ErrorKind::BastionHostKeyMismatch => {
                "the jump host's key changed: verify it, then rosbackup bastions reset-host-key"
            }
            ErrorKind::BastionForwardRefused => {
                "the jump host refused to forward (AllowTcpForwarding, or no room for another channel)"
            }
            ErrorKind::BastionFailed => "see the message; SSH failure on the jump host",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown error kind {0:?}")]
pub struct UnknownErrorKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownErrorKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownErrorKind(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_seed_strings() {
        for k in ErrorKind::ALL {
            assert_eq!(k.as_str().parse::<ErrorKind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert_eq!(ErrorKind::AuthFailed.as_str(), "auth_failed");
        assert!("nope".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn unreadable_credentials_are_a_blocking_configuration_kind() {
        let k = ErrorKind::CredentialsUnreadable;
        assert_eq!(k.as_str(), "credentials_unreadable");
        assert!(k.blocks());
        assert!(
            k.hint().contains("CREDENTIAL_ENCRYPTION_KEY"),
            "{}",
            k.hint()
        );
        assert!(!k.hint().contains("SSH"), "{}", k.hint());
        assert!(!ErrorKind::Timeout.blocks());
    }
}
