//! The SSH session up to a logged-in handle: the russh client handler with its host-key
//! verdict (trust on first use, or the pinned key, checked before any credential is
//! sent), the handshake and authentication under the connect timeout, and how russh's
//! errors become [`ExportError`]s without carrying raw device bytes.
//!
//! Why apart from the export: a jump host is logged in to by exactly this code
//! (`bastion.rs`), before the router's handshake runs over its forwarded channel.

use super::*;

/// Errors from inside the russh handler: either russh's own or our host-key verdict.
#[derive(Debug, thiserror::Error)]
pub(super) enum HandlerError {
    #[error(transparent)]
    Russh(#[from] russh::Error),
    #[error("host key mismatch")]
    HostKeyMismatch { expected: String, got: String },
}

#[derive(Default)]
pub(super) struct Observed {
    pub(super) fingerprint: Option<String>,
    pub(super) negotiated: Negotiated,
}

pub(super) struct Client {
    expected: Option<String>,
    observed: Arc<Mutex<Observed>>,
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Host certificates are not part of RouterOS; we never advertise them.
            return Ok(false);
        };
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        if let Ok(mut o) = self.observed.lock() {
            o.fingerprint = Some(fp.clone());
        }
        match &self.expected {
            None => Ok(true),
            Some(e) if *e == fp => Ok(true),
            Some(e) => Err(HandlerError::HostKeyMismatch {
                expected: e.clone(),
                got: fp,
            }),
        }
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        if let Ok(mut o) = self.observed.lock() {
            o.negotiated = Negotiated {
                kex: names.kex.as_ref().to_string(),
                host_key: names.key.to_string(),
                cipher: names.cipher.as_ref().to_string(),
                mac: names.client_mac.as_ref().to_string(),
            };
        }
        Ok(())
    }
}

/// Errors of the version exchange and key exchange (`connect_stream`).
fn map_handshake_error(e: HandlerError) -> ExportError {
    match e {
        HandlerError::HostKeyMismatch { expected, got } => {
            ExportError::HostKeyMismatch { expected, got }
        }
        HandlerError::Russh(e) => match map_russh(e) {
            ExportError::Ssh(e) => ExportError::Handshake(e),
            other => other,
        },
    }
}

/// How many of the device's algorithm names an error keeps, and how long each may be:
/// the list comes from the device (up to a 256 KiB packet of it) and ends up in the
/// run history and the logs.
const MAX_THEIR_ALGORITHMS: usize = 16;
const MAX_ALGORITHM_NAME: usize = 64;

pub(super) fn map_russh(e: russh::Error) -> ExportError {
    match e {
        russh::Error::NoCommonAlgo { kind, theirs, .. } => ExportError::NoCommonAlgorithm {
            what: format!("{kind:?}"),
            theirs: theirs
                .into_iter()
                .take(MAX_THEIR_ALGORITHMS)
                .map(|mut n| {
                    if n.len() > MAX_ALGORITHM_NAME {
                        let mut end = MAX_ALGORITHM_NAME;
                        while !n.is_char_boundary(end) {
                            end -= 1;
                        }
                        n.truncate(end);
                        n.push('…');
                    }
                    n
                })
                .collect(),
        },
        other => ExportError::Ssh(other),
    }
}

/// Phase 2 on any stream (a TCP socket, or a bastion's channel): SSH handshake with the
/// host-key check, then authentication, under the connect timeout.
pub(super) async fn login<R>(
    stream: R,
    who: &Login<'_>,
    expected: Option<String>,
    opts: &ExportOptions,
) -> Result<(Handle<Client>, Arc<Mutex<Observed>>), ExportError>
where
    R: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let observed = Arc::new(Mutex::new(Observed::default()));
    let handler = Client {
        expected,
        observed: observed.clone(),
    };
    let config = algorithms::client_config(opts.connect_timeout + opts.command_timeout);
    let handshake = async {
        let mut handle = client::connect_stream(config, stream, handler)
            .await
            .map_err(map_handshake_error)?;
        authenticate(&mut handle, who).await?;
        Ok::<_, ExportError>(handle)
    };
    match timeout(opts.connect_timeout, handshake).await {
        Err(_) => Err(ExportError::Timeout {
            phase: Phase::Handshake,
            secs: opts.connect_timeout.as_secs_f64(),
        }),
        Ok(r) => Ok((r?, observed)),
    }
}

/// Log in: the key first, when there is one, then the password, when there is one (a
/// fleet mid-migration has routers that know only one of them; RouterOS goes on with the
/// authentication after a refused key, so the fallback is reachable). Every attempt is
/// inside the caller's handshake timeout.
async fn authenticate(handle: &mut Handle<Client>, target: &Login<'_>) -> Result<(), ExportError> {
    let mut tried = Tried::Password;
    if let Some(key) = target.key {
        // RSA: the signature algorithms the server says it verifies, strongest first,
        // down to `ssh-rsa` (`rsa_signature_hashes` says why). russh waits up to 1 s
        // for the extension from a server that never sends it (RouterOS 6); that is
        // within the handshake timeout and only for RSA keys.
        let hashes = if key.is_rsa() {
            rsa_signature_hashes(handle.best_supported_rsa_hash().await.map_err(map_russh)?)
        } else {
            vec![None]
        };
        for hash in hashes {
            let signing = PrivateKeyWithHashAlg::new(key.private(), hash);
            if let AuthResult::Success = handle
                .authenticate_publickey(target.username.to_string(), signing)
                .await
                .map_err(map_russh)?
            {
                return Ok(());
            }
        }
        if target.password.is_empty() {
            return Err(ExportError::AuthFailed {
                user: target.username.to_string(),
                tried: Tried::Key,
            });
        }
        tried = Tried::KeyThenPassword;
    }
    let failed = || ExportError::AuthFailed {
        user: target.username.to_string(),
        tried,
    };
    match handle
        .authenticate_password(target.username.to_string(), target.password.expose())
        .await
        .map_err(map_russh)?
    {
        AuthResult::Success => Ok(()),
        AuthResult::Failure {
            remaining_methods, ..
        } if remaining_methods.contains(&MethodKind::KeyboardInteractive)
            && !remaining_methods.contains(&MethodKind::Password) =>
        {
            // Servers configured for keyboard-interactive only: answer every prompt with
            // the password (what `ssh` does for a single password prompt).
            let mut resp = handle
                .authenticate_keyboard_interactive_start(target.username.to_string(), None)
                .await
                .map_err(map_russh)?;
            for _ in 0..3 {
                match resp {
                    KeyboardInteractiveAuthResponse::Success => return Ok(()),
                    KeyboardInteractiveAuthResponse::Failure { .. } => return Err(failed()),
                    KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                        // Only hidden prompts get the password; anything else (an OTP
                        // or a question shown in clear) is not ours to answer.
                        if prompts.iter().any(|p| p.echo) {
                            return Err(failed());
                        }
                        let answers = prompts
                            .iter()
                            .map(|_| target.password.expose().to_string())
                            .collect();
                        resp = handle
                            .authenticate_keyboard_interactive_respond(answers)
                            .await
                            .map_err(map_russh)?;
                    }
                }
            }
            match resp {
                KeyboardInteractiveAuthResponse::Success => Ok(()),
                _ => Err(failed()),
            }
        }
        AuthResult::Failure { .. } => Err(failed()),
    }
}
