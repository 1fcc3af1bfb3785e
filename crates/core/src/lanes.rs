//! PostgreSQL connections for a job's statements, handed back without a ping.
//!
//! Why (issue #20): sqlx's pool pings every connection it takes back (`Sync`, wait for
//! `ReadyForQuery`) — one more round trip for every statement, which PostgreSQL, the
//! worker and the kernel between them pay and no `pg_stat_statements` count shows. Its
//! reason is a statement dropped half-way (a timeout, a cancelled task), which can leave
//! a connection in an unknown state. A job's statements are single statements, each
//! either carried out to its end or dropped, so a [`Lane`] goes back to the idle list
//! only when its statement completed ([`Lane::done`]); one dropped before that closes
//! its connection. What the pool's checks gave otherwise stays:
//!
//! - a connection idle for [`PING_IF_IDLE`] or longer is pinged before use, so one that
//!   sat idle across a PostgreSQL restart is found dead and replaced, not handed out;
//! - handing out a connection, opening one included, is bounded by [`ACQUIRE_TIMEOUT`]
//!   (a [`sqlx::Error::PoolTimedOut`], which the worker asks again like a connection
//!   error);
//! - at most `max` connections at once; the most recently used idle one goes first (warm
//!   caches); a connection older than [`MAX_LIFETIME`] or idle for [`IDLE_TIMEOUT`] is
//!   closed instead of used, and those sitting under the busy ones (a burst's extra
//!   connections) are closed the next time a lane comes back, so a worker past its
//!   burst does not keep PostgreSQL sessions it no longer uses.
//!
//! A lane's session plans each statement once (`plan_cache_mode = force_generic_plan`,
//! set when it opens). A job's statements all pick rows by key (device id, lease token),
//! so a plan made without the parameters' values is the plan made with them, and
//! `tests/it/lanes.rs` holds every job statement's generic plan to its indexes. Under
//! PostgreSQL's default (`auto`) a session plans a statement with its values for its
//! first five executions before it settles on that same generic plan; forced, a new
//! session plans it once. A warm-up saving, not a steady-state one: it counts where
//! sessions are new (a worker's start, a scale-out, a connection retired at
//! [`MAX_LIFETIME`]; issue #20, measured in BENCHMARKS.md). It is a `SET` after
//! connecting rather than a startup option, which connection poolers such as PgBouncer
//! refuse, and a server that does not know the setting (before PostgreSQL 12) keeps its
//! default.
//!
//! Only the statements of a job use lanes ([`crate::store::Store`] says which); the rest
//! (transactions, listings, migrations) use sqlx's pool, with PostgreSQL's default plans.

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection idle this long is pinged before it is used again, by
/// [`crate::store::Store::connect`]'s pool and by the lanes.
pub const PING_IF_IDLE: Duration = Duration::from_secs(1);

/// How long [`crate::store::Store::connect`]'s pool and the lanes may take to hand out a
/// connection, its ping included. The worker bounds each statement of a job by it too
/// ([`crate::worker`]): a connection black-holed within [`PING_IF_IDLE`] of its last use
/// is handed out without a ping, and its statement would otherwise wait for TCP to give
/// up instead of failing here.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection this old is closed when it comes back (sqlx's pool default).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A connection idle this long is closed instead of used (sqlx's pool default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

struct Idle {
    conn: PgConnection,
    opened: Instant,
    since: Instant,
}

struct Inner {
    options: PgConnectOptions,
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
}

/// Up to `max` connections for job statements.
#[derive(Clone)]
pub struct Lanes {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold the password: not shown.
        f.debug_struct("Lanes")
            .field("available", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// What to do with an idle connection about to be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Used within [`PING_IF_IDLE`]: hand it out as it is.
    AsIs,
    /// Idle long enough that PostgreSQL may have gone away meanwhile: ping first.
    Ping,
    /// Too old or idle too long: close it.
    Retire,
}

fn reuse(age: Duration, idle_for: Duration) -> Reuse {
    if age >= MAX_LIFETIME || idle_for >= IDLE_TIMEOUT {
        Reuse::Retire
    } else if idle_for >= PING_IF_IDLE {
        Reuse::Ping
    } else {
        Reuse::AsIs
    }
}

impl Lanes {
    pub fn new(options: PgConnectOptions, max: u32) -> Lanes {
        Lanes {
            inner: Arc::new(Inner {
                options,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            }),
        }
    }

    /// A connection for one statement: an idle one, else a new one, within
    /// [`ACQUIRE_TIMEOUT`].
    pub async fn acquire(&self) -> Result<Lane, sqlx::Error> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, self.acquire_unbounded())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn acquire_unbounded(&self) -> Result<Lane, sqlx::Error> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let idle = self.inner.idle.lock().ok().and_then(|mut v| v.pop());
            let Some(mut idle) = idle else {
                let mut conn = PgConnection::connect_with(&self.inner.options).await?;
                plan_once(&mut conn).await?;
                return Ok(self.lane(conn, Instant::now(), permit));
            };
            match reuse(idle.opened.elapsed(), idle.since.elapsed()) {
                Reuse::AsIs => return Ok(self.lane(idle.conn, idle.opened, permit)),
                Reuse::Ping => {
                    if idle.conn.ping().await.is_ok() {
                        return Ok(self.lane(idle.conn, idle.opened, permit));
                    }
                    // Dead (PostgreSQL restarted meanwhile): dropped, try the next.
                }
                Reuse::Retire => close(idle.conn),
            }
        }
    }

    fn lane(&self, conn: PgConnection, opened: Instant, permit: OwnedSemaphorePermit) -> Lane {
        Lane {
            conn: Some(conn),
            opened,
            inner: self.inner.clone(),
            _permit: permit,
        }
    }

    /// Connections idle now (for tests and diagnostics).
    pub fn idle(&self) -> usize {
        self.inner.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

/// Plan each statement of this session once (the module's docs say why). A server that
/// does not know the setting keeps its own plans; any other failure is an error.
async fn plan_once(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    match sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(()),
        // 42704: unrecognized configuration parameter (before PostgreSQL 12). Anything
        // else — a session ended by a restart, say — is the connection's error.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42704") => {
            tracing::debug!("plan_cache_mode unknown to the server; its default plans");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Close a connection politely (a `Terminate` message) without waiting for it.
fn close(conn: PgConnection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = conn.close().await;
        });
    }
}

/// One connection, for one statement. Call [`Lane::done`] when the statement completed;
/// dropped without it, the connection is closed.
pub struct Lane {
    conn: Option<PgConnection>,
    opened: Instant,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Lane {
    pub fn conn(&mut self) -> &mut PgConnection {
        // Only `done` and `drop` take it, and both consume the lane.
        self.conn
            .as_mut()
            .expect("a lane holds its connection until it is done or dropped")
    }

    /// The statement completed: the connection is ready for the next one.
    pub fn done(mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.opened.elapsed() >= MAX_LIFETIME {
            close(conn);
            return;
        }
        let retired = match self.inner.idle.lock() {
            Ok(mut idle) => {
                let retired = sweep(&mut idle, |i| {
                    reuse(i.opened.elapsed(), i.since.elapsed()) == Reuse::Retire
                });
                idle.push(Idle {
                    conn,
                    opened: self.opened,
                    since: Instant::now(),
                });
                retired
            }
            Err(_) => Vec::new(),
        };
        for i in retired {
            close(i.conn);
        }
    }
}

/// Take the entries `retire` says are done with out of `idle`, keeping the rest in
/// their order (the most recently used last).
fn sweep<T>(idle: &mut Vec<T>, retire: impl Fn(&T) -> bool) -> Vec<T> {
    idle.extract_if(.., |i| retire(i)).collect()
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Dropped mid-statement (or after an error): its state is unknown. Dropping the
        // connection closes its socket; PostgreSQL ends the session.
        self.conn.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_reused_as_it_is_pinged_or_retired_by_age_and_idleness() {
        let s = Duration::from_secs;
        assert_eq!(reuse(s(5), Duration::from_millis(10)), Reuse::AsIs);
        assert_eq!(
            reuse(s(5), PING_IF_IDLE - Duration::from_millis(1)),
            Reuse::AsIs
        );
        assert_eq!(reuse(s(5), PING_IF_IDLE), Reuse::Ping);
        assert_eq!(reuse(s(5), s(60)), Reuse::Ping);
        assert_eq!(reuse(s(5), IDLE_TIMEOUT), Reuse::Retire);
        assert_eq!(reuse(MAX_LIFETIME, Duration::ZERO), Reuse::Retire);
    }

    #[test]
    fn a_lane_coming_back_retires_the_idle_ones_past_their_time_and_keeps_the_order() {
        let s = Duration::from_secs;
        // (name, age, idle for), the most recently used last.
        let mut idle = vec![
            ("burst-1", s(700), IDLE_TIMEOUT + s(60)),
            ("old", MAX_LIFETIME + s(1), s(2)),
            ("burst-2", s(650), IDLE_TIMEOUT),
            ("warm-1", s(30), s(3)),
            ("warm-2", s(20), Duration::ZERO),
        ];
        let retire = |i: &(&str, Duration, Duration)| reuse(i.1, i.2) == Reuse::Retire;
        let retired: Vec<&str> = sweep(&mut idle, retire).iter().map(|i| i.0).collect();
        assert_eq!(retired, ["burst-1", "old", "burst-2"]);
        let kept: Vec<&str> = idle.iter().map(|i| i.0).collect();
        assert_eq!(kept, ["warm-1", "warm-2"]);
        assert!(
            sweep(&mut idle, retire).is_empty(),
            "nothing more to retire"
        );
        assert_eq!(idle.len(), 2);
    }
}
