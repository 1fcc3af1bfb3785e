//! The SSH handler of one device connection: which logins it accepts (the device's
//! password or authorized key, RouterOS 6's `ssh-rsa`-only signatures, the `auth`
//! fault) and where its channels go (exec requests to the console answers, `console`;
//! an interactive shell, `shell`). Apart from the listeners (`server`), which decide
//! which connections it gets and cut them for faults and shutdown.

use std::collections::HashMap;
use std::sync::Arc;

use russh::keys::Algorithm;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId};

use super::console::run_exec;
use super::faults::Fault;
use super::kill::Kill;
use super::render;
use super::shell;
use super::state::*;

pub(crate) struct Conn {
    shared: Arc<Shared>,
    idx: usize,
    kill: Arc<Kill>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// The authenticated login name (without RouterOS `+options`), for the shell prompt.
    user: String,
}

impl Conn {
    pub(crate) fn new(shared: Arc<Shared>, idx: usize, kill: Arc<Kill>) -> Conn {
        Conn {
            shared,
            idx,
            kill,
            channels: HashMap::new(),
            user: String::new(),
        }
    }

    /// Does the device let `user` in with `key`, signed with `algorithm`? Its authorized
    /// key, for its user; RouterOS 6 verifies only `ssh-rsa` (SHA-1) signatures.
    fn key_accepted(
        &self,
        user: &str,
        key: &russh::keys::PublicKey,
        algorithm: &Algorithm,
    ) -> bool {
        let d = &self.shared.devices[self.idx];
        let (name, _options) = shell::split_login(user);
        let Some(authorized) = &d.user_key else {
            return false;
        };
        let v6 = render::is_v6(&d.routeros_version);
        d.fault != Some(Fault::Auth)
            && name == d.username
            && authorized.public_key().key_data() == key.key_data()
            && (!v6 || *algorithm == Algorithm::Rsa { hash: None })
    }
}

impl Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(
            if self.key_accepted(user, offer.public_key, offer.algorithm) {
                Auth::Accept
            } else {
                Auth::reject()
            },
        )
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.key_accepted(user, key.public_key, key.algorithm) {
            let (name, _options) = shell::split_login(user);
            self.user = name.to_string();
            Ok(Auth::Accept)
        } else {
            tracing::debug!(device = self.idx, "key rejected");
            Ok(Auth::reject())
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let d = &self.shared.devices[self.idx];
        // RouterOS takes console options after the name (`admin+ct511w4098h`).
        let (name, _options) = shell::split_login(user);
        if !matches!(d.fault, Some(Fault::Auth | Fault::KeyOnly))
            && name == d.username
            && password == d.password
        {
            self.user = name.to_string();
            Ok(Auth::Accept)
        } else {
            tracing::debug!(device = self.idx, "password rejected");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        tokio::spawn(shell::run(
            self.shared.clone(),
            self.idx,
            self.kill.clone(),
            ch,
            self.user.clone(),
        ));
        Ok(())
    }

    /// SFTP (RouterOS serves its `/file` store over it): the device's files, read-only
    /// plus remove. Any other subsystem is refused.
    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name != "sftp" {
            return session.channel_failure(channel);
        }
        let Some(ch) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        let sftp = crate::files::SftpServer::new(self.shared.clone(), self.idx);
        russh_sftp::server::run(ch.into_stream(), sftp).await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        let cmd = String::from_utf8_lossy(data).into_owned();
        let (mut rx, tx) = ch.split();
        tokio::spawn(async move { while rx.wait().await.is_some() {} });
        let shared = self.shared.clone();
        let idx = self.idx;
        let kill = self.kill.clone();
        tokio::spawn(async move {
            run_exec(&shared, idx, &kill, tx, &cmd).await;
        });
        Ok(())
    }
}
