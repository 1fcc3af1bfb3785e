//! The job statements' connections (`rosbackup::lanes`) against a real PostgreSQL: a
//! connection comes back without a ping and is used again, one dropped mid-way is
//! closed, one that died while idle is replaced, at most `max` are out at once, and the
//! plans a lane keeps for the job's statements use their indexes.

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

/// The largest `$n` in a statement: how many parameters it takes.
fn parameters(sql: &str) -> usize {
    let b = sql.as_bytes();
    (0..b.len())
        .filter(|&i| b[i] == b'$')
        .filter_map(|i| {
            let digits: String = sql[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// A lane plans each job statement once (`plan_cache_mode = force_generic_plan`, issue
/// #20), so the plan it keeps is made without the parameters' values: on a fleet large
/// enough that the planner weighs its choices (5,000 devices, 20 runs, 3 binary backups
/// and a binary state each, analyzed), every job statement's generic plan must still
/// reach the rows of those tables through an index, never by reading the whole table.
/// (The small per-tenant tables, empty here, may be read whole.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_plans_each_job_statement_once_and_through_its_indexes() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "INSERT INTO devices (id, tenant_id, name, host, username, password_enc, next_due_at) \
           SELECT gen_random_uuid(), '00000000-0000-4000-8000-000000000001', 'd' || i, \
             '127.0.0.1', 'admin', '\\x00', now() FROM generate_series(1, 5000) i; \
         INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, \
             finished_at, status, duration_ms) \
           SELECT d.id, d.tenant_id, 'j' || n, 'scheduled', 'w', now(), now(), \
             CASE WHEN n % 4 = 0 THEN 'skipped' ELSE 'success' END, 1 \
           FROM devices d CROSS JOIN generate_series(1, 20) n; \
         INSERT INTO binary_backups (device_id, tenant_id, job_id, collected_at, size, sha256, \
             config_sha256, format, file_enc, password_enc) \
           SELECT d.id, d.tenant_id, d.id || '-' || n, now() - n * interval '1 hour', 1, 'x', 'c', 'rc4', \
             '\\x00', '\\x00' FROM devices d CROSS JOIN generate_series(1, 3) n; \
         INSERT INTO binary_state (device_id, password_enc, consecutive_failures) \
           SELECT id, '\\x00', 0 FROM devices; \
         ANALYZE",
    )
    .execute(db.store.pool())
    .await
    .expect("a fleet's rows");
    let lanes = db.store.lanes();
    let mut lane = lanes.acquire().await.expect("a lane");
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(lane.conn())
        .await
        .expect("SHOW");
    assert_eq!(mode, "force_generic_plan");
    let statements = rosbackup::store::lane_statements();
    for (name, sql) in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE probe_{name} AS {sql}"
        )))
        .execute(lane.conn())
        .await
        .unwrap_or_else(|e| panic!("PREPARE {name}: {e}"));
        let nulls = vec!["NULL"; parameters(sql)].join(", ");
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN EXECUTE probe_{name}({nulls})"
        )))
        .fetch_all(lane.conn())
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {name}: {e}"));
        let plan = plan.join("\n");
        for table in ["devices", "backup_runs", "binary_backups", "binary_state"] {
            assert!(
                !plan.contains(&format!("Seq Scan on {table}")),
                "{name} reads all of {table}:\n{plan}"
            );
        }
        assert!(plan.contains("Index"), "{name} uses no index:\n{plan}");
    }
    // Planned without the values: PostgreSQL counts how it planned each one.
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE name LIKE 'probe_%' ORDER BY name",
    )
    .fetch_all(lane.conn())
    .await
    .expect("pg_prepared_statements");
    assert_eq!(counts.len(), statements.len());
    for (name, generic, custom) in counts {
        assert_eq!(custom, 0, "{name} was planned with its parameters' values");
        assert!(generic >= 1, "{name}: no generic plan");
    }
    sqlx::raw_sql("DEALLOCATE ALL")
        .execute(lane.conn())
        .await
        .expect("DEALLOCATE");
    lane.done();
    db.drop().await;
}
