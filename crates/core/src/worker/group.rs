//! Group commit of outcomes (issue #20): the outcomes a worker's jobs hand in close
//! together are written in one statement ([`crate::store::Store::record_outcomes`]).
//!
//! Why: PostgreSQL's work per outcome is mostly per statement and per commit (see
//! `store/outcomes.rs` for the measured figures), and it is the service every worker
//! shares. A job hands its outcome to [`Outcomes::record`] and waits for its own answer;
//! one task per worker process gathers what arrives and writes it.
//!
//! When a group goes ([`rules::group_ready`]): at once when no other job of this worker
//! is under a lease without having handed in its outcome (a lone job never waits; one
//! slow export elsewhere in the worker makes the others wait the linger), when it
//! reaches `ROSBACKUP_OUTCOME_BATCH`, or when its first outcome has waited
//! `ROSBACKUP_OUTCOME_LINGER_MS`. A job hands in its outcome before it stops counting
//! among those that may join, and the task reads that count before it takes what is in
//! the channel, so a group never leaves without an outcome whose job it no longer waits
//! for. Groups are written concurrently (on the job lanes, which bound them), so a slow
//! statement holds back only its own group.
//!
//! What it does not change: each outcome is still fenced by its own lease token, and a
//! job still learns whether its own outcome was written. An error of the connection
//! (`retry::transient`) is every member's answer, so each job asks again under its own
//! deadline as before. A group PostgreSQL refuses (a value it cannot store, a deadlock)
//! is written again one outcome per statement, so each job gets its own answer and its
//! own error, and a refusal for good is recorded without device text as before
//! (`execute::write_outcome`). An outcome whose job stopped waiting (its bound expired,
//! the job was cancelled) is left out of every statement not yet sent: the job asks
//! again if it still can.

use super::retry::{bounded, connection_error, transient};
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
    /// Outcomes written per statement that wrote them.
    sizes: Histogram,
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
            tokio::spawn(gather(
                rx,
                shared.clone(),
                settings,
                store.clone(),
                sizes.clone(),
            ));
            tx
        });
        Outcomes {
            store,
            tx,
            shared,
            sizes,
        }
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
    /// they come together. `enlisted` leaves the count on the first call, after the
    /// outcome is handed in.
    pub async fn record(
        &self,
        enlisted: &Enlisted,
        lease: &Lease,
        run: &RunRecord,
        state: &StateUpdate,
        keep_runs: i64,
    ) -> Result<bool, StoreError> {
        let Some(tx) = &self.tx else {
            enlisted.leave();
            return single(&self.store, lease, run, state, keep_runs, &self.sizes).await;
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            lease: lease.clone(),
            run: run.clone(),
            state: state.clone(),
            keep_runs,
            reply,
        };
        let sent = tx.send(pending).is_ok();
        enlisted.leave();
        if sent && let Ok(result) = answer.await {
            return result;
        }
        // The gathering task is gone (the runtime is shutting down): write it here. The
        // statement is fenced, so an outcome its group did write is not written twice.
        single(&self.store, lease, run, state, keep_runs, &self.sizes).await
    }
}

/// One outcome in a statement of its own, counted as one.
async fn single(
    store: &Store,
    lease: &Lease,
    run: &RunRecord,
    state: &StateUpdate,
    keep_runs: i64,
    sizes: &Histogram,
) -> Result<bool, StoreError> {
    let r = store.record_outcome(lease, run, state, keep_runs).await;
    if r.is_ok() {
        sizes.observe(1.0);
    }
    r
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
            // Read before taking what is in the channel: a job no longer counted has
            // handed its outcome in already, so it is taken below.
            let may_join = shared.may_join.load(Ordering::Acquire);
            while group.len() < max {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            group.retain(|p| !p.reply.is_closed());
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

async fn write_one(store: &Store, mut group: Vec<Pending>, keep_runs: i64, sizes: &Histogram) {
    group.retain(|p| !p.reply.is_closed());
    let refused = match group.len() {
        0 => return,
        1 => None,
        n => {
            let rows: Vec<OutcomeRow<'_>> = group
                .iter()
                .map(|p| OutcomeRow {
                    lease: &p.lease,
                    run: &p.run,
                    state: &p.state,
                })
                .collect();
            match bounded(store.record_outcomes(&rows, keep_runs)).await {
                Ok(written) => {
                    sizes.observe(n as f64);
                    for (p, w) in group.into_iter().zip(written) {
                        let _ = p.reply.send(Ok(w));
                    }
                    return;
                }
                Err(e) if transient(&e) => {
                    // The connection's error, not an answer about these outcomes: each
                    // job asks again under its own deadline, as after its own statement.
                    let message = e.to_string();
                    for p in group {
                        let _ = p.reply.send(Err(connection_error(&message)));
                    }
                    return;
                }
                Err(e) => Some(e),
            }
        }
    };
    if let Some(e) = refused {
        debug!(error = %e, outcomes = group.len(), "a group of outcomes was refused; writing them one by one");
    }
    futures::future::join_all(group.into_iter().filter(|p| !p.reply.is_closed()).map(
        |p| async move {
            let r = bounded(single(store, &p.lease, &p.run, &p.state, keep_runs, sizes)).await;
            let _ = p.reply.send(r);
        },
    ))
    .await;
}
