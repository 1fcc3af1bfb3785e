//! Group commit of outcomes (issue #20): the outcomes a worker's jobs hand in close
//! together are written in one statement ([`crate::store::Store::record_outcomes`]).
//!
//! Why: PostgreSQL's work per outcome is mostly per statement and per commit (see
//! `store/outcomes.rs` for the measured figures), and it is the service every worker
//! shares. A job hands its outcome to [`Outcomes::record`] and waits for its own answer;
//! one task per worker process gathers what arrives and writes it.
//!
//! When a group goes ([`rules::group_ready`]): at once when no other job of this worker
//! is under a lease without having handed in its outcome (a lone job, a quiet worker: no
//! added wait), when it reaches `ROSBACKUP_OUTCOME_BATCH`, or when its first outcome has
//! waited `ROSBACKUP_OUTCOME_LINGER_MS`. Groups are written concurrently (on the job
//! lanes, which bound them), so a slow statement holds back only its own group.
//!
//! What it does not change: each outcome is still fenced by its own lease token, and a
//! job still learns whether its own outcome was written. A group PostgreSQL refuses
//! (one job's value it cannot store, a deadlock, a connection lost mid-statement) is
//! written again one outcome per statement, so each job gets its own answer and its own
//! error, and the job's retries ([`super::retry`]) work as before. An outcome whose job
//! stopped waiting (its statement bound expired, the job was cancelled) is dropped from
//! its group before it is written: the job asks again if it still can.

use super::retry::bounded;
use super::rules;
use crate::config::GroupCommit;
use crate::store::{Lease, OutcomeRow, RunRecord, StateUpdate, Store, StoreError};
use prometheus::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

/// A worker's outcome writer. Cloning shares it.
#[derive(Clone)]
pub struct Outcomes {
    store: Store,
    /// `None`: group commit off (`ROSBACKUP_OUTCOME_BATCH=1`), one statement per outcome.
    tx: Option<mpsc::UnboundedSender<Pending>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes")
            .field("grouped", &self.tx.is_some())
            .field("may_join", &self.shared.may_join.load(Ordering::Relaxed))
            .finish()
    }
}

/// What the jobs and the gathering task share.
#[derive(Default)]
struct Shared {
    /// Jobs under a lease that have not handed in their outcome.
    may_join: AtomicUsize,
    /// Told when `may_join` drops to zero.
    changed: Notify,
}

/// One outcome waiting for its group.
struct Pending {
    lease: Lease,
    run: RunRecord,
    state: StateUpdate,
    keep_runs: i64,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// A job's place among those that may still hand in an outcome, from its lease until it
/// hands one in or ends without one (dropped).
pub struct Enlisted {
    shared: Arc<Shared>,
    left: AtomicBool,
}

impl Enlisted {
    fn leave(&self) {
        if !self.left.swap(true, Ordering::AcqRel)
            && self.shared.may_join.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.shared.changed.notify_one();
        }
    }
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Outcomes {
    /// A writer over `store`; with grouping on, its gathering task starts now (on the
    /// current Tokio runtime) and ends when the last clone is dropped. `sizes` observes
    /// how many outcomes each statement wrote.
    pub fn new(store: Store, settings: GroupCommit, sizes: Histogram) -> Self {
        let shared = Arc::new(Shared::default());
        let tx = (settings.max > 1).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(gather(rx, shared.clone(), settings, store.clone(), sizes));
            tx
        });
        Outcomes { store, tx, shared }
    }

    /// Count a job that took its lease among those that may still hand in an outcome.
    pub fn enlist(&self) -> Enlisted {
        self.shared.may_join.fetch_add(1, Ordering::AcqRel);
        Enlisted {
            shared: self.shared.clone(),
            left: AtomicBool::new(false),
        }
    }

    /// Write an outcome as [`Store::record_outcome`] does, in a group with others when
    /// they come together. `enlisted` leaves the count on the first call.
    pub async fn record(
        &self,
        enlisted: &Enlisted,
        lease: &Lease,
        run: &RunRecord,
        state: &StateUpdate,
        keep_runs: i64,
    ) -> Result<bool, StoreError> {
        enlisted.leave();
        let Some(tx) = &self.tx else {
            return self
                .store
                .record_outcome(lease, run, state, keep_runs)
                .await;
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            lease: lease.clone(),
            run: run.clone(),
            state: state.clone(),
            keep_runs,
            reply,
        };
        if tx.send(pending).is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        // The gathering task is gone (the runtime is shutting down): write it here. The
        // statement is fenced, so an outcome its group did write is not written twice.
        self.store
            .record_outcome(lease, run, state, keep_runs)
            .await
    }
}

/// The gathering task: take the first outcome, wait for more until the group is ready or
/// its linger is over, hand the group to a writer task, repeat.
async fn gather(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    shared: Arc<Shared>,
    settings: GroupCommit,
    store: Store,
    sizes: Histogram,
) {
    let max = settings.max.max(1);
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let deadline = Instant::now() + settings.linger;
        loop {
            while group.len() < max {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            group.retain(|p| !p.reply.is_closed());
            let may_join = shared.may_join.load(Ordering::Acquire);
            if group.is_empty() || rules::group_ready(group.len(), may_join, max) {
                break;
            }
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => group.push(p),
                    None => break,
                },
                () = shared.changed.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        if !group.is_empty() {
            tokio::spawn(write(store.clone(), group, sizes.clone()));
        }
    }
}

/// Write a group: sorted by device, so concurrent groups lock device rows in one order;
/// split by `keep_runs` (one per worker in practice), one statement each.
async fn write(store: Store, mut group: Vec<Pending>, sizes: Histogram) {
    group.sort_by_key(|p| (p.keep_runs, p.lease.device_id));
    while !group.is_empty() {
        let keep = group[0].keep_runs;
        let split = group
            .iter()
            .position(|p| p.keep_runs != keep)
            .unwrap_or(group.len());
        let rest = group.split_off(split);
        write_one(&store, group, keep, &sizes).await;
        group = rest;
    }
}

async fn write_one(store: &Store, group: Vec<Pending>, keep_runs: i64, sizes: &Histogram) {
    sizes.observe(group.len() as f64);
    let written = if group.len() == 1 {
        None
    } else {
        let rows: Vec<OutcomeRow<'_>> = group
            .iter()
            .map(|p| OutcomeRow {
                lease: &p.lease,
                run: &p.run,
                state: &p.state,
            })
            .collect();
        match bounded(store.record_outcomes(&rows, keep_runs)).await {
            Ok(written) => Some(written),
            Err(e) => {
                debug!(error = %e, outcomes = rows.len(), "a group of outcomes was refused; writing them one by one");
                None
            }
        }
    };
    match written {
        Some(written) => {
            for (p, w) in group.into_iter().zip(written) {
                let _ = p.reply.send(Ok(w));
            }
        }
        None => {
            futures::future::join_all(group.into_iter().map(|p| async move {
                let r = bounded(store.record_outcome(&p.lease, &p.run, &p.state, keep_runs)).await;
                let _ = p.reply.send(r);
            }))
            .await;
        }
    }
}
