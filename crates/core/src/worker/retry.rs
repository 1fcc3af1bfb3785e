//! How a job's statements meet PostgreSQL's failures: which errors are the connection's
//! (ask again while the lease holds) and which are PostgreSQL's answer (refused for good:
//! record without the offending text), and the bound on each statement.
//!
//! Why apart from [`super::execute`]: these are decisions about errors, not steps of a
//! job; the pipeline calls them at its fence, outcome and skip statements (see
//! ARCHITECTURE.md, the invariant on restarts).

use crate::store::StoreError;
use std::time::{Duration, Instant};
use tracing::warn;

/// The SQLSTATE of an error PostgreSQL answered with, if it is one.
pub(super) fn sqlstate(err: &StoreError) -> Option<String> {
    match err {
        StoreError::Db(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The error is the connection's, not the statement's: PostgreSQL restarting or failing
/// over cut the session (SQLSTATE class 08, 57P01–57P03), the pool could not hand out a
/// connection in time, or the socket failed. The same statement may well succeed a moment
/// later; any other error is PostgreSQL's answer.
pub(super) fn transient(err: &StoreError) -> bool {
    match err {
        StoreError::Db(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => true,
        StoreError::Db(sqlx::Error::Database(_)) => {
            sqlstate(err).is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
        }
        _ => false,
    }
}

/// A connection error to hand each member of a group whose statement met it (`message`:
/// the error's text), so each job handles it as after its own statement ([`transient`]).
pub(super) fn connection_error(message: &str) -> StoreError {
    StoreError::Db(sqlx::Error::Io(std::io::Error::other(message.to_string())))
}

/// A job's statement, given up as an I/O error (so [`transient`]: the fence and the
/// outcome ask again) when PostgreSQL has not answered within
/// [`crate::store::ACQUIRE_TIMEOUT`]. The pool no longer pings a connection used within
/// the last second before handing it out (issue #20), so a link black-holed since then
/// would leave the statement waiting for TCP to give up (minutes) where the ping used to
/// fail at the acquire timeout; this restores that bound. A statement cut off this way
/// may still have been carried out: each is fenced by the lease or a no-op when
/// repeated, and a lease taken meanwhile by this job is waited out like any other.
pub(super) async fn bounded<T>(
    statement: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(crate::store::ACQUIRE_TIMEOUT, statement).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Db(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "PostgreSQL did not answer in time",
        )))),
    }
}

/// Run `op` again while it fails with a [`transient`] error, pausing 100 ms, doubling up
/// to 1 s, until `until`; the last result is returned as it is.
///
/// Why: a PostgreSQL restart takes well under a second, but every statement in flight
/// (a fence's lease renewal, an outcome) fails. Failing the job for it costs the device
/// its interval (the claim waits for the enqueuer's reconcile) and leaves a published
/// snapshot without its run; asking again while the lease holds costs nothing, because
/// the lease fences every one of these statements in SQL.
pub(super) async fn retry_transient<T, F, Fut>(until: Instant, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if transient(&e) && Instant::now() + pause < until => {
                warn!(error = %e, "PostgreSQL connection error; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// PostgreSQL refused a value for good: class 22 (data exception: invalid byte sequence,
/// value too long, out of range) or 54 (program limit exceeded). Connection failures and
/// everything else are retried as before.
pub(super) fn refused_for_good(err: &StoreError) -> bool {
    sqlstate(err).is_some_and(|c| c.starts_with("22") || c.starts_with("54"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_transient_answers_are_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(transient(&StoreError::Db(sqlx::Error::Io(io))));
        assert!(transient(&StoreError::Db(sqlx::Error::PoolTimedOut)));
        assert!(!transient(&StoreError::Db(sqlx::Error::RowNotFound)));
        assert!(!transient(&StoreError::Db(sqlx::Error::PoolClosed)));
        assert!(!transient(&StoreError::Invalid("no".into())));
    }

    #[tokio::test]
    async fn a_transient_error_is_asked_again_until_the_deadline_and_no_further() {
        let calls = std::cell::Cell::new(0u32);
        // Fails twice, then answers.
        let r = retry_transient(Instant::now() + Duration::from_secs(10), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(StoreError::Db(sqlx::Error::PoolTimedOut))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
        // An answer is never asked again.
        calls.set(0);
        let r: Result<u32, _> = retry_transient(Instant::now() + Duration::from_secs(10), || {
            calls.set(calls.get() + 1);
            async { Err(StoreError::Db(sqlx::Error::RowNotFound)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 1);
        // Past the deadline the error is returned.
        calls.set(0);
        let r: Result<u32, _> = retry_transient(Instant::now(), || {
            calls.set(calls.get() + 1);
            async { Err(StoreError::Db(sqlx::Error::PoolTimedOut)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 1);
    }
}
