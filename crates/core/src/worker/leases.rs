//! Leases taken together (issue #20): the leases a worker's jobs ask for while its
//! earlier lease statements are still out go to PostgreSQL in one statement
//! ([`crate::store::Store::acquire_leases`]).
//!
//! Why: the lease is the largest statement a backup sends (the device row, its
//! credentials and every fact decided on before the export), and most of what PostgreSQL
//! spends on it is per statement: planning the call, the commit and its WAL flush, the
//! round trip (`bench/pgbench-leases`: ~0.31 ms of server CPU per lease alone, ~0.22 ms
//! in twos, ~0.14 ms in fours, ~0.11 ms in eights). A worker's jobs arrive in bursts (a
//! fetch hands over up to `ROSBACKUP_FETCH_BATCH` at once), so their leases meet.
//!
//! When a group goes: as soon as fewer than [`IN_FLIGHT`] lease statements of this worker
//! are out. Nothing waits for company: a lone job's lease goes at once, as its own
//! statement; only leases that would have queued behind statements already out are
//! gathered, up to `ROSBACKUP_LEASE_BATCH`. A group never waits on a device row another
//! transaction holds (an import, a key rotation, another group with the same device): it
//! skips it, and that lease is asked for on its own outside the [`IN_FLIGHT`] slots, so
//! one busy row holds back only its own device's jobs, as without grouping.
//!
//! What it does not change: each lease is still one device's, with its own token, job and
//! answer (taken, held by whom until when, no device), exactly as a statement of its own
//! would give it. A group never holds one device twice (a second request for a device
//! waits for the next group). An error of the connection is every member's, as it would
//! be for its own statement; a group PostgreSQL refuses is asked again one lease per
//! statement, so each job gets its own answer. A lease taken for a job that stopped
//! waiting (its bound expired, it was cancelled) is given back at once, fenced by its
//! token, instead of holding the device until it expires.

use super::retry::{bounded, connection_error, transient};
use crate::store::{GroupedLease, Lease, LeaseAttempt, Store, StoreError};
use prometheus::Histogram;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::debug;
use uuid::Uuid;

/// Lease statements a worker has out at once before new leases wait and gather.
pub const IN_FLIGHT: usize = 2;

/// A worker's lease taker. Cloning shares it.
#[derive(Clone)]
pub struct Leases {
    store: Store,
    /// `None`: grouping off (`ROSBACKUP_LEASE_BATCH=1`), one statement per lease.
    tx: Option<mpsc::UnboundedSender<Pending>>,
    /// Leases asked for per statement.
    sizes: Histogram,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("grouped", &self.tx.is_some())
            .finish()
    }
}

/// One lease waiting for its statement.
struct Pending {
    lease: Lease,
    reply: oneshot::Sender<Result<LeaseAttempt, StoreError>>,
}

impl Leases {
    /// A lease taker over `store`, at most `max` leases per statement; with `max` > 1 its
    /// gathering task starts now (on the current Tokio runtime) and ends when the last
    /// clone is dropped. `sizes` observes how many leases each statement took.
    pub fn new(store: Store, max: usize, sizes: Histogram) -> Self {
        let tx = (max > 1).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(gather(rx, max, store.clone(), sizes.clone()));
            tx
        });
        Leases { store, tx, sizes }
    }

    /// Ask for `lease` as [`Store::acquire_lease`] does, in one statement with others
    /// when they come together.
    pub async fn acquire(&self, lease: &Lease) -> Result<LeaseAttempt, StoreError> {
        if let Some(tx) = &self.tx {
            let (reply, answer) = oneshot::channel();
            let pending = Pending {
                lease: lease.clone(),
                reply,
            };
            if tx.send(pending).is_ok()
                && let Ok(result) = answer.await
            {
                return result;
            }
            // The gathering task is gone (the runtime is shutting down): ask here. A
            // lease its group took under this token reads as held by this job, which the
            // job waits out like any other.
        }
        single(&self.store, lease, &self.sizes).await
    }
}

/// One lease in a statement of its own, counted as one.
async fn single(
    store: &Store,
    lease: &Lease,
    sizes: &Histogram,
) -> Result<LeaseAttempt, StoreError> {
    let r = store.acquire_lease(lease).await;
    if r.is_ok() {
        sizes.observe(1.0);
    }
    r
}

/// The gathering task: take the first lease, wait until a statement may go out, take
/// every lease that arrived meanwhile (one per device, up to `max`), hand the group to a
/// writer task, repeat.
async fn gather(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    max: usize,
    store: Store,
    sizes: Histogram,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Requests for a device already in the group just formed, first in the next one.
    let mut carried: VecDeque<Pending> = VecDeque::new();
    loop {
        let first = match carried.pop_front() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut waiting = std::mem::take(&mut carried);
        waiting.push_front(first);
        while waiting.len() < max {
            match rx.try_recv() {
                Ok(p) => waiting.push_back(p),
                Err(_) => break,
            }
        }
        // A request whose job stopped waiting takes no place in a group.
        waiting.retain(|p| !p.reply.is_closed());
        let (group, rest) = one_per_device(waiting, max, |p| p.lease.device_id);
        carried = rest;
        if !group.is_empty() {
            tokio::spawn(write(store.clone(), group, sizes.clone(), slot));
        }
    }
}

/// The group to send from `waiting` (oldest first): at most `max`, no device twice. The
/// rest, in order, waits for the next group.
fn one_per_device<T>(
    waiting: VecDeque<T>,
    max: usize,
    device: impl Fn(&T) -> Uuid,
) -> (Vec<T>, VecDeque<T>) {
    let mut seen = HashSet::new();
    let mut group = Vec::new();
    let mut rest = VecDeque::new();
    for p in waiting {
        if group.len() < max && seen.insert(device(&p)) {
            group.push(p);
        } else {
            rest.push_back(p);
        }
    }
    (group, rest)
}

/// Take a group's leases; `slot` is given back when the group's statement is done.
async fn write(store: Store, group: Vec<Pending>, sizes: Histogram, slot: OwnedSemaphorePermit) {
    let n = group.len();
    let alone = match <[Pending; 1]>::try_from(group) {
        // A lone lease: the statement it has always been, but skipping a busy row.
        Ok([p]) => match bounded(store.try_acquire_lease(&p.lease)).await {
            Ok(GroupedLease::Answered(a)) => {
                sizes.observe(1.0);
                deliver(&store, p, Ok(a)).await;
                return;
            }
            Ok(GroupedLease::Busy) => {
                sizes.observe(1.0);
                vec![p]
            }
            Err(e) => {
                deliver(&store, p, Err(e)).await;
                return;
            }
        },
        Err(group) => {
            let leases: Vec<Lease> = group.iter().map(|p| p.lease.clone()).collect();
            match bounded(store.acquire_leases(&leases)).await {
                Ok(answers) => {
                    sizes.observe(n as f64);
                    let mut busy = Vec::new();
                    for (p, a) in group.into_iter().zip(answers) {
                        match a {
                            Ok(GroupedLease::Answered(a)) => deliver(&store, p, Ok(a)).await,
                            Ok(GroupedLease::Busy) => busy.push(p),
                            Err(e) => deliver(&store, p, Err(e)).await,
                        }
                    }
                    busy
                }
                Err(e) if transient(&e) => {
                    // The connection's error, not an answer about these leases: each job
                    // handles it as after its own statement.
                    let message = e.to_string();
                    for p in group {
                        let _ = p.reply.send(Err(connection_error(&message)));
                    }
                    return;
                }
                Err(e) => {
                    debug!(error = %e, leases = n, "a group of leases was refused; asking one by one");
                    group
                }
            }
        }
    };
    // What is left is asked one lease per statement, waiting on a busy row if it must:
    // outside the slots, so it holds back only its own device's jobs.
    drop(slot);
    futures::future::join_all(alone.into_iter().filter(|p| !p.reply.is_closed()).map(|p| {
        let (store, sizes) = (&store, &sizes);
        async move {
            let r = bounded(single(store, &p.lease, sizes)).await;
            deliver(store, p, r).await;
        }
    }))
    .await;
}

/// Hand a job its answer. A lease taken for a job that no longer waits is given back
/// (fenced by its token: it releases only this lease), so the device is free now rather
/// than when the lease expires, and its start is not counted.
async fn deliver(store: &Store, p: Pending, answer: Result<LeaseAttempt, StoreError>) {
    if let Err(Ok(LeaseAttempt::Acquired { .. })) = p.reply.send(answer) {
        match bounded(store.release_lease(&p.lease)).await {
            Ok(_) => {
                debug!(device_id = %p.lease.device_id, "a lease taken for a job that stopped waiting was given back")
            }
            Err(e) => {
                debug!(device_id = %p.lease.device_id, error = %e, "could not give back a lease nobody waits for; it expires")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_holds_each_device_once_and_keeps_the_rest_in_order() {
        let d = |n: u128| Uuid::from_u128(n);
        let waiting: VecDeque<(u32, Uuid)> = [
            (1, d(1)),
            (2, d(2)),
            (3, d(1)),
            (4, d(3)),
            (5, d(2)),
            (6, d(4)),
        ]
        .into();
        let (group, rest) = one_per_device(waiting.clone(), 16, |p| p.1);
        assert_eq!(group.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 4, 6]);
        assert_eq!(rest.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 5]);
        // At most `max`; what does not fit waits, oldest first.
        let (group, rest) = one_per_device(waiting, 2, |p| p.1);
        assert_eq!(group.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(rest.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 4, 5, 6]);
        let (group, rest) = one_per_device(VecDeque::<(u32, Uuid)>::new(), 4, |p| p.1);
        assert!(group.is_empty() && rest.is_empty());
    }
}
