//! Jump-host (bastion) connections shared by many device sessions.
//!
//! Hundreds of routers often sit behind one bastion. Logging in to the bastion for every
//! backup would cost a TCP connect, a key exchange and an authentication per device, and
//! hundreds of connections at once look like an attack to the bastion (OpenSSH's
//! `MaxStartups`). So a worker keeps, per bastion and login, at most a small bounded
//! number of authenticated connections ([`BastionPool`], `ROSBACKUP_BASTION_CONNECTIONS`)
//! and opens every device session as a `direct-tcpip` channel over one of them, as
//! OpenSSH's `ControlMaster` does.
//!
//! * **Bounded.** [`choose`] reuses a connection while it carries fewer than
//!   [`SPREAD`] sessions, opens another while below the bound, and otherwise reuses the
//!   least loaded one. New connections to one bastion are opened one at a time, so
//!   concurrent jobs never race past the bound.
//! * **Refusals are learned.** A bastion that answers a channel open with "resource
//!   shortage" (a per-connection channel limit) has that connection's limit remembered as
//!   the number of channels it carried; the next session goes to another connection, or
//!   a new one up to the bound; with none left the session fails `bastion_forward_refused`.
//! * **Drops heal.** A dropped connection fails only the sessions running on it (their
//!   channels end); it is forgotten at the next checkout and the next job reconnects.
//!   Idle connections close on the SSH inactivity backstop of the client config.
//! * **Pinned keys.** A connection is reused for a session only if its host key is the
//!   one pinned for the bastion (or none is pinned yet): after a reset the pool does not
//!   keep vouching for a key an operator has not seen.

use super::{
    Client, ExportError, ExportOptions, ForwardError, JumpHost, Target, expected_fingerprint,
    format_addr, forward_reason, login, open_forward, tcp_connect, via,
};
use russh::client::Handle;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Default bound on connections per bastion and worker process.
pub const DEFAULT_CONNECTIONS: usize = 2;
/// Sessions one connection carries before another is opened (below the bound). Below
/// OpenSSH's default `MaxSessions 10`, which some bastions apply to forwardings too.
pub const SPREAD: usize = 8;

/// What [`choose`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Open the session on connection `i`.
    Reuse(usize),
    /// Open a new connection.
    Open,
    /// Every connection is at its learned limit and there are `bound` of them.
    Full,
}

/// One pooled connection as [`choose`] sees it: sessions on it now, and the number of
/// channels at which the bastion refused another one, if it ever did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub in_use: usize,
    pub limit: Option<usize>,
}

/// Where the next session goes (module docs): the least loaded connection with room
/// while it has fewer than `spread` sessions; else a new connection if fewer than
/// `bound` exist; else the least loaded with room; else [`Choice::Full`].
pub fn choose(conns: &[Load], bound: usize, spread: usize) -> Choice {
    let least = conns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.limit.is_none_or(|l| c.in_use < l))
        .min_by_key(|(_, c)| c.in_use);
    match least {
        Some((i, c)) if c.in_use < spread => Choice::Reuse(i),
        _ if conns.len() < bound.max(1) => Choice::Open,
        Some((i, _)) => Choice::Reuse(i),
        None => Choice::Full,
    }
}

/// An authenticated connection to a bastion.
struct Conn {
    handle: Handle<Client>,
    fingerprint: String,
    /// Channels at which the bastion refused another (0: never).
    limit: AtomicUsize,
}

/// A pooled connection lent to one device session: while it lives, the connection counts
/// the session (it is the `Arc`'s strong count) and stays open.
pub(super) struct Lent(Arc<Conn>);

impl Lent {
    /// The bastion's host-key fingerprint as seen when the connection was made.
    pub(super) fn fingerprint(&self) -> &str {
        &self.0.fingerprint
    }
}

fn load(c: &Arc<Conn>) -> Load {
    Load {
        // The pool's own reference is not a session.
        in_use: Arc::strong_count(c).saturating_sub(1),
        limit: match c.limit.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        },
    }
}

/// Connections to one bastion as one login; opening is serialized by the async lock.
type Slot = Arc<tokio::sync::Mutex<Vec<Arc<Conn>>>>;

/// A worker's bastion connections (module docs). One per worker process, shared by all
/// its jobs.
pub struct BastionPool {
    bound: usize,
    slots: Mutex<HashMap<[u8; 32], Slot>>,
    opened: AtomicU64,
    /// The worker's `rosbackup_bastion_connections_opened_total`, when it has one.
    counter: Option<prometheus::IntCounter>,
}

impl std::fmt::Debug for BastionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BastionPool")
            .field("bound", &self.bound)
            .field("opened", &self.opened())
            .finish_non_exhaustive()
    }
}

impl BastionPool {
    /// A pool keeping at most `bound` connections (at least 1) per bastion and login.
    pub fn new(bound: usize) -> Self {
        BastionPool {
            bound: bound.max(1),
            slots: Mutex::default(),
            opened: AtomicU64::new(0),
            counter: None,
        }
    }

    /// Count every connection opened in `counter` too (the worker's metric
    /// `rosbackup_bastion_connections_opened_total`): one per worker and bastion in a
    /// healthy fleet, not one per backup.
    pub fn counting(mut self, counter: prometheus::IntCounter) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Connections opened so far (for metrics and the benchmark).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The pool of one bastion and login: host, port, user and a digest of the
    /// credentials (two devices with other jump credentials never share a connection).
    fn slot(&self, jump: &JumpHost, target: &Target) -> Slot {
        let who = jump.login(target);
        let mut h = Sha256::new();
        for part in [
            jump.host.as_bytes(),
            &jump.port.to_be_bytes(),
            who.username.as_bytes(),
            who.password.expose().as_bytes(),
            who.key
                .map(|k| k.fingerprint())
                .unwrap_or_default()
                .as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let key: [u8; 32] = h.finalize().into();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key).or_default().clone()
    }

    /// A `direct-tcpip` channel to `target` through `jump`, on a pooled connection.
    pub(super) async fn forward(
        &self,
        jump: &JumpHost,
        target: &Target,
        opts: &ExportOptions,
    ) -> Result<(russh::Channel<russh::client::Msg>, Lent), ExportError> {
        let slot = self.slot(jump, target);
        let pinned = expected_fingerprint(jump.known_fingerprint.as_deref());
        // Each pass either succeeds, fails for good, or retires a connection (dropped)
        // or learns its limit; bounded so a flapping bastion cannot loop.
        for _ in 0..(2 * self.bound + 2) {
            let conn = {
                let mut conns = slot.lock().await;
                conns.retain(|c| {
                    !c.handle.is_closed() && pinned.as_ref().is_none_or(|p| *p == c.fingerprint)
                });
                let loads: Vec<Load> = conns.iter().map(load).collect();
                match choose(&loads, self.bound, SPREAD) {
                    Choice::Reuse(i) => conns[i].clone(),
                    Choice::Open => {
                        let (handle, fingerprint) = connect(jump, target, opts).await?;
                        self.opened.fetch_add(1, Ordering::Relaxed);
                        if let Some(c) = &self.counter {
                            c.inc();
                        }
                        let c = Arc::new(Conn {
                            handle,
                            fingerprint,
                            limit: AtomicUsize::new(0),
                        });
                        conns.push(c.clone());
                        c
                    }
                    Choice::Full => {
                        return Err(ExportError::ForwardRefused {
                            bastion: format_addr(&jump.host, jump.port),
                            addr: format_addr(&target.host, target.port),
                            reason: format!(
                                "no room for another channel on {} connection(s), the bound",
                                conns.len()
                            ),
                        });
                    }
                }
            };
            let in_use = Arc::strong_count(&conn).saturating_sub(2);
            match open_forward(&conn.handle, jump, target, opts).await {
                Ok(channel) => return Ok((channel, Lent(conn))),
                Err(ForwardError::Failed(e)) => return Err(e),
                Err(ForwardError::NoRoom) => {
                    // It carried `in_use` channels besides the refused one.
                    conn.limit.store(in_use.max(1), Ordering::Relaxed);
                }
                Err(ForwardError::Dropped) => {
                    let mut conns = slot.lock().await;
                    conns.retain(|c| !Arc::ptr_eq(c, &conn));
                }
            }
        }
        Err(ExportError::ForwardRefused {
            bastion: format_addr(&jump.host, jump.port),
            addr: format_addr(&target.host, target.port),
            reason: forward_reason(&russh::ChannelOpenFailure::ResourceShortage).into(),
        })
    }
}

/// Connect and log in to the bastion (its host key checked against its pin); errors name
/// it. Returns the connection and the key's fingerprint.
pub(super) async fn connect(
    jump: &JumpHost,
    target: &Target,
    opts: &ExportOptions,
) -> Result<(Handle<Client>, String), ExportError> {
    let stream = tcp_connect(&jump.host, jump.port, opts)
        .await
        .map_err(via(jump))?;
    let expected = expected_fingerprint(jump.known_fingerprint.as_deref());
    let (handle, observed) = login(stream, &jump.login(target), expected, opts)
        .await
        .map_err(via(jump))?;
    let fingerprint = observed
        .lock()
        .ok()
        .and_then(|o| o.fingerprint.clone())
        .unwrap_or_default();
    Ok((handle, fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(in_use: usize) -> Load {
        Load {
            in_use,
            limit: None,
        }
    }

    #[test]
    fn the_first_session_opens_and_the_next_ones_share_it() {
        assert_eq!(choose(&[], 2, SPREAD), Choice::Open);
        assert_eq!(choose(&[l(0)], 2, SPREAD), Choice::Reuse(0));
        assert_eq!(choose(&[l(SPREAD - 1)], 2, SPREAD), Choice::Reuse(0));
    }

    #[test]
    fn a_busy_connection_gets_a_sibling_up_to_the_bound_then_sessions_pile_up() {
        assert_eq!(choose(&[l(SPREAD)], 2, SPREAD), Choice::Open);
        assert_eq!(choose(&[l(SPREAD), l(3)], 2, SPREAD), Choice::Reuse(1));
        assert_eq!(
            choose(&[l(SPREAD + 4), l(SPREAD + 1)], 2, SPREAD),
            Choice::Reuse(1)
        );
        // A bound of 0 still allows one connection.
        assert_eq!(choose(&[], 0, SPREAD), Choice::Open);
        assert_eq!(choose(&[l(50)], 0, SPREAD), Choice::Reuse(0));
    }

    #[test]
    fn a_learned_limit_sends_sessions_elsewhere_and_is_full_at_the_bound() {
        let capped = Load {
            in_use: 2,
            limit: Some(2),
        };
        assert_eq!(choose(&[capped], 2, SPREAD), Choice::Open);
        assert_eq!(choose(&[capped, l(1)], 2, SPREAD), Choice::Reuse(1));
        let capped2 = Load {
            in_use: 5,
            limit: Some(5),
        };
        assert_eq!(choose(&[capped, capped2], 2, SPREAD), Choice::Full);
        // A session ended on it: room again.
        let freed = Load {
            in_use: 1,
            limit: Some(2),
        };
        assert_eq!(choose(&[freed, capped2], 2, SPREAD), Choice::Reuse(0));
    }
}
