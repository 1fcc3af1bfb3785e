//! The job statements' connections (`rosbackup::lanes`) against a real PostgreSQL: a
//! connection comes back without a ping and is used again, one dropped mid-way is
//! closed, one that died while idle is replaced, and at most `max` are out at once.

use crate::common::fleet::TestDb;
use rosbackup::lanes::Lanes;
use std::time::Duration;

async fn backend_pid(lanes: &Lanes) -> (rosbackup::lanes::Lane, i32) {
    let mut lane = lanes.acquire().await.expect("a lane");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(lane.conn())
        .await
        .expect("pid");
    (lane, pid)
}

async fn alive(db: &TestDb, pid: i32) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(pid)
        .fetch_one(db.store.pool())
        .await
        .expect("pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_done_is_used_again_and_one_dropped_is_closed() {
    let db = TestDb::new().await;
    let lanes = Lanes::new((*db.store.pool().connect_options()).clone(), 2);
    let (lane, first) = backend_pid(&lanes).await;
    lane.done();
    assert_eq!(lanes.idle(), 1, "back at once, without a ping");
    let (lane, again) = backend_pid(&lanes).await;
    assert_eq!(again, first, "the same session serves the next statement");
    // Dropped without `done` (a statement cut off half-way): never handed out again.
    drop(lane);
    assert_eq!(lanes.idle(), 0);
    let (lane, next) = backend_pid(&lanes).await;
    assert_ne!(next, first, "a new session");
    lane.done();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(&db, first).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped lane's session still exists"
        );
        tokio::task::yield_now().await;
    }
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_session_died_while_idle_is_replaced_before_use() {
    let db = TestDb::new().await;
    let lanes = Lanes::new((*db.store.pool().connect_options()).clone(), 2);
    let (lane, first) = backend_pid(&lanes).await;
    lane.done();
    // PostgreSQL ends the session (a restart does that to every one).
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(db.store.pool())
        .await
        .expect("terminate");
    assert!(ended);
    // Idle past the ping threshold: the next hand-out pings it, finds it dead and opens
    // another, so the statement succeeds.
    tokio::time::sleep(rosbackup::store::PING_IF_IDLE + Duration::from_millis(100)).await;
    let (lane, next) = backend_pid(&lanes).await;
    assert_ne!(next, first);
    lane.done();
    assert_eq!(lanes.idle(), 1, "only the live session is kept");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_lanes_are_out_at_once() {
    let db = TestDb::new().await;
    let lanes = Lanes::new((*db.store.pool().connect_options()).clone(), 1);
    let (lane, first) = backend_pid(&lanes).await;
    let waiting = tokio::spawn({
        let lanes = lanes.clone();
        async move { backend_pid(&lanes).await }
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            while !waiting.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .is_err(),
        "a second lane was handed out while the only one was out"
    );
    lane.done();
    let (lane, second) = waiting.await.expect("join");
    assert_eq!(second, first, "it got the one that came back");
    lane.done();
    db.drop().await;
}
