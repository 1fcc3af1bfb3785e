//! Timing marks on the job path, so a benchmark can split one real backup into its phases
//! (bookkeeping, handshake, transfer, normalize + hash, publish) without a replica of the
//! pipeline that could drift from it.
//!
//! The marks are a task-local hook: [`with_marks`] runs a future with a callback, and the
//! pipeline calls [`mark`] at each boundary. Outside `with_marks` (every worker in
//! production) a mark is one failed task-local lookup and nothing else; no argument,
//! setting or field carries the hook through the job path.

use crate::device::Phase;
use std::future::Future;
use std::sync::Arc;

/// A boundary on the job path, in the order a successful backup passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The online check passed (with the Go poller's lock on, it is left to the lock's
    /// script under the lease); the lease, whose statement reads the device row the skip
    /// rules decide on, is next.
    Prechecked,
    /// Online check, lease (device row, credentials, timeout and binary facts), skip rules
    /// and password are done; the export starts.
    ExportStart,
    /// The end of an export phase (TCP connect, SSH handshake + authentication, commands).
    Export(Phase),
    /// The export's bytes are complete and checked.
    Exported,
    /// Normalized and hashed.
    Collected,
    /// The lease was confirmed right before publishing.
    Fenced,
    /// JetStream acknowledged the snapshot.
    Published,
    /// The outcome was written under the lease.
    Recorded,
}

type Hook = Arc<dyn Fn(Mark) + Send + Sync>;

tokio::task_local! {
    static HOOK: Hook;
}

/// Run `fut` with `hook` called at every mark it passes (on the task polling `fut`).
pub async fn with_marks<F: Future>(
    hook: impl Fn(Mark) + Send + Sync + 'static,
    fut: F,
) -> F::Output {
    HOOK.scope(Arc::new(hook), fut).await
}

/// Report a boundary to the hook of the current task, if any.
pub fn mark(m: Mark) {
    let _ = HOOK.try_with(|hook| hook(m));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn marks_reach_the_hook_only_inside_with_marks() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        mark(Mark::ExportStart);
        with_marks(move |m| s.lock().expect("lock").push(m), async {
            mark(Mark::Exported);
            tokio::task::yield_now().await;
            mark(Mark::Published);
        })
        .await;
        mark(Mark::Recorded);
        assert_eq!(
            *seen.lock().expect("lock"),
            [Mark::Exported, Mark::Published]
        );
    }
}
