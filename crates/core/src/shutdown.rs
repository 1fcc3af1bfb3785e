//! Graceful stop on SIGTERM and SIGINT, shared by every long-running role (worker,
//! enqueuer, archiver) and by the demo harness, so they all stop the same way.

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives while the process is still
/// connecting is not lost (nor does it kill the process with the default action): the
/// process stops cleanly as soon as it runs.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            (Ok(mut t), Err(_)) => {
                let _ = t.recv().await;
            }
            (Err(_), Ok(mut i)) => {
                let _ = i.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending::<()>().await,
        }
    }
}
