//! What one backup costs the shared services, counted (issue #20): PostgreSQL statements
//! (`pg_stat_statements`) and Redis commands (`INFO commandstats`) per backup, by phase.
//!
//! Why counts and not times: the services are what every worker of a fleet shares, so
//! their work per backup bounds the fleet, and a count does not move with the machine's
//! load the way CPU time does. The test runs on a PRIVATE PostgreSQL (started with
//! `pg_stat_statements` preloaded) and a private Redis, so nothing else's statements or
//! commands are counted. It prints the table BENCHMARKS.md quotes and holds the worker's
//! execution to the number of statements per backup we claim, so a change that adds a
//! round trip to every job fails here.

use crate::common::fleet::{Fleet, FleetOptions, ServiceUrls};
use rosbackup::sim::SimConfig;
use rosbackup::store::RunStatus;
use rosbackup_harness::services::{self, Service};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::time::Duration;

/// Statements `worker::execute` sends PostgreSQL for one successful backup of a
/// password device with no jump host: the lease (device row, credentials, export
/// timeout inputs and binary state in its `RETURNING`), the fence before publishing, and
/// the outcome (device state, run row, claim and lease released, old runs trimmed).
const STATEMENTS_PER_BACKUP: i64 = 3;

/// Of those, the ones that write (and commit WAL): the lease and the outcome. The fence of
/// an export that ends before its lease's first renewal is due only reads the lease
/// (`worker::rules::fence`; issue #20: it renewed it, a third write).
const WRITES_PER_BACKUP: i64 = 2;

/// Whether a statement's text modifies rows (data-modifying CTEs and `FOR UPDATE`
/// included: a row lock is a write too).
fn writes(statement: &str) -> bool {
    statement
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|w| ["UPDATE", "INSERT", "DELETE"].contains(&w.to_ascii_uppercase().as_str()))
}

#[test]
fn a_statement_writes_when_its_text_modifies_rows() {
    assert!(writes("UPDATE devices SET x = 1"));
    assert!(writes(
        "WITH gate AS (UPDATE devices SET …) SELECT count(*) FROM gate"
    ));
    assert!(writes(
        "WITH old AS (SELECT id FROM devices WHERE id = $1 FOR UPDATE), r AS"
    ));
    assert!(writes("insert into backup_runs values ($1)"));
    assert!(!writes(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1 AND lease_token = $2)"
    ));
    assert!(!writes("SELECT updated_at, deleted FROM devices"));
}

/// Statements for a job whose device is offline (the seed's status key, read by the Go
/// poller's lock script under the lease): the lease (whose row the skip rules decide
/// on), then the skipped run, the claim and the lease released and the next due time in
/// one statement.
const STATEMENTS_PER_OFFLINE_SKIP: i64 = 2;

/// Redis round trips `worker::execute` makes for one backup: the Go poller's lock taken
/// (its script reads the device's online status first) and released
/// (`ROSBACKUP_SEED_LOCK`, on by default); apalis' fetch and ack not included. Issue
/// #20: 3 before the status read moved into the lock's script.
const REDIS_ROUND_TRIPS_PER_EXECUTE: i64 = 2;

/// Redis round trips for an offline device's skip: the lock's script, which finds the
/// status and takes no lock (so there is nothing to release).
const REDIS_ROUND_TRIPS_PER_OFFLINE_SKIP: i64 = 1;

struct Counters {
    /// An admin connection to the private server's `postgres` database (its own
    /// statements are not counted: they run in another database).
    pg: sqlx::PgConnection,
    datname: String,
    redis: redis::aio::MultiplexedConnection,
}

impl Counters {
    async fn reset(&mut self) {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut self.pg)
            .await
            .expect("reset pg_stat_statements");
        // Every command the clients send (not those scripts run) into the slow log.
        for (k, v) in [
            ("slowlog-log-slower-than", "0"),
            ("slowlog-max-len", "1000000"),
        ] {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(k)
                .arg(v)
                .query_async(&mut self.redis)
                .await
                .expect("CONFIG SET");
        }
        let _: () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(&mut self.redis)
            .await
            .expect("SLOWLOG RESET");
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.redis)
            .await
            .expect("CONFIG RESETSTAT");
    }

    /// Round trips: the commands clients sent, from the slow log (every command is
    /// "slow" at a threshold of 0; those scripts run are left out). A script is named by
    /// its first keys, the queue's name, worker and device ids left out.
    async fn round_trips(&mut self, queue: &str) -> BTreeMap<String, i64> {
        let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(-1)
            .query_async(&mut self.redis)
            .await
            .expect("SLOWLOG GET");
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).to_string(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::Int(i) => i.to_string(),
            _ => String::new(),
        };
        let mut out = BTreeMap::new();
        for entry in &log {
            let redis::Value::Array(fields) = entry else {
                continue;
            };
            let Some(redis::Value::Array(args)) = fields.get(3) else {
                continue;
            };
            // A command a script ran is logged too, from the client "?:0".
            if fields.get(4).map(text).as_deref() == Some("?:0") {
                continue;
            }
            let args: Vec<String> = args.iter().map(text).collect();
            let cmd = args
                .first()
                .map(|a| a.to_ascii_lowercase())
                .unwrap_or_default();
            if matches!(
                cmd.as_str(),
                "config" | "slowlog" | "info" | "memory" | "hkeys"
            ) {
                continue;
            }
            let name = if cmd == "evalsha" || cmd == "eval" {
                let keys: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
                let named: Vec<String> = args
                    .iter()
                    .skip(3)
                    .take(keys.min(3))
                    .map(|k| match k.strip_prefix(queue) {
                        Some(rest) => {
                            format!("{{q}}{}", rest.split(":counting").next().unwrap_or(rest))
                        }
                        None if k.starts_with("backup:device:") => "backup:device:{id}".into(),
                        None if k.starts_with("device:") && k.ends_with(":status") => {
                            "device:{id}:status".into()
                        }
                        None => k.clone(),
                    })
                    .collect();
                format!("{cmd} [{}]", named.join(" "))
            } else {
                cmd
            };
            *out.entry(name).or_insert(0) += 1;
        }
        out
    }

    /// Each statement's text and calls in the fleet's database.
    async fn statement_calls(&mut self) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT s.query, s.calls FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
        )
        .bind(&self.datname)
        .fetch_all(&mut self.pg)
        .await
        .expect("pg_stat_statements")
    }

    /// Calls per statement text in the fleet's database.
    async fn statements(&mut self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for (q, calls) in self.statement_calls().await {
            let short: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = short.chars().take(90).collect();
            *out.entry(short).or_insert(0) += calls;
        }
        out
    }

    /// Calls of the statements that write ([`writes`], on the whole text).
    async fn write_calls(&mut self) -> i64 {
        let rows = self.statement_calls().await;
        rows.iter().filter(|(q, _)| writes(q)).map(|(_, c)| c).sum()
    }

    /// Calls per Redis command (commands run by scripts included, as Redis counts them).
    async fn commands(&mut self) -> BTreeMap<String, i64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.redis)
            .await
            .expect("INFO commandstats");
        let mut out = BTreeMap::new();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            if name.starts_with("config") || name.starts_with("info") || name.starts_with("slowlog")
            {
                continue;
            }
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            out.insert(name.to_string(), calls);
        }
        out
    }
}

/// What one phase cost.
struct Phase {
    statements: BTreeMap<String, i64>,
    /// Calls per command, those run by scripts included (`INFO commandstats`).
    commands: BTreeMap<String, i64>,
    /// Commands clients sent (the slow log).
    round_trips: BTreeMap<String, i64>,
}

impl Counters {
    async fn phase(&mut self, queue: &str) -> Phase {
        Phase {
            statements: self.statements().await,
            commands: self.commands().await,
            round_trips: self.round_trips(queue).await,
        }
    }
}

fn report(phase: &str, n: i64, p: &Phase) {
    let total: i64 = p.statements.values().sum();
    let trips: i64 = p.round_trips.values().sum();
    let redis_total: i64 = p.commands.values().sum();
    let per = |c: i64| c as f64 / n as f64;
    println!(
        "== {phase}: {n} backups, per backup: PostgreSQL {:.2} statements, Redis {:.2} round trips ({:.2} commands with those scripts run)",
        per(total),
        per(trips),
        per(redis_total)
    );
    for (q, c) in &p.statements {
        println!("   pg {:>6.2}  {q}", per(*c));
    }
    for (q, c) in &p.round_trips {
        println!("   redis {:>6.2}  {q}", per(*c));
    }
    let inner: Vec<String> = p
        .commands
        .iter()
        .map(|(k, c)| format!("{k} {:.2}", per(*c)))
        .collect();
    println!(
        "   redis commands (scripts' included): {}",
        inner.join(", ")
    );
}

/// The bytes the queue's keys hold per scheduled job (`MEMORY USAGE`, exact).
async fn redis_bytes_per_job(fleet: &Fleet, n: usize) -> f64 {
    let c = fleet.queue.config().apalis();
    let conn = fleet.queue.connection();
    let usage = |key: String| {
        let mut conn = conn.clone();
        async move {
            let v: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await
                .expect("MEMORY USAGE");
            v.unwrap_or(0)
        }
    };
    let (data, zset) = (
        usage(c.job_data_hash()).await,
        usage(c.scheduled_jobs_set()).await,
    );
    let payloads: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(c.job_data_hash())
        .query_async(&mut conn.clone())
        .await
        .expect("HGETALL");
    assert_eq!(payloads.len(), n, "one payload per job");
    let mut meta = 0;
    for (id, _) in &payloads {
        meta += usage(format!("{}:{id}", c.job_meta_hash())).await;
    }
    if let Some((id, payload)) = payloads.first() {
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(format!("{}:{id}", c.job_meta_hash()))
            .query_async(&mut conn.clone())
            .await
            .expect("HGETALL meta");
        println!(
            "== a queued job: id {id} ({} B), payload {} B: {payload}\n   meta hash: {fields:?}",
            id.len(),
            payload.len()
        );
    }
    let per = |b: u64| b as f64 / n as f64;
    println!(
        "== Redis bytes per queued job: payload hash {:.0} B, scheduled set {:.0} B, meta hash {:.0} B",
        per(data),
        per(zset),
        per(meta)
    );
    per(data + zset + meta)
}

async fn private_services(dir: &std::path::Path) -> (Service, Service) {
    let port = services::free_port().expect("a free port");
    let pg = services::postgres_at_with(
        "postgres://127.0.0.1:1/x",
        port,
        dir,
        &[
            "-c".into(),
            "shared_preload_libraries=pg_stat_statements".into(),
            "-c".into(),
            "pg_stat_statements.track=top".into(),
        ],
    )
    .await
    .expect("a private PostgreSQL with pg_stat_statements starts");
    let redis = services::redis("redis://127.0.0.1:1/0", true, dir)
        .await
        .expect("a private redis-server starts");
    (pg, redis)
}

/// Per phase — the enqueuer's tick, the worker's whole job (apalis fetch and ack around
/// `execute`), and `execute` alone — the statements and commands per backup; the worker's
/// execution is held to [`STATEMENTS_PER_BACKUP`] and [`REDIS_ROUND_TRIPS_PER_EXECUTE`].
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_and_commands_per_backup() {
    const N: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut pg, mut redis_svc) = private_services(dir.path()).await;
    let fleet = Fleet::start_on(
        ServiceUrls {
            database_url: pg.url.clone(),
            redis_url: redis_svc.url.clone(),
            ..ServiceUrls::default()
        },
        FleetOptions {
            sim: SimConfig {
                devices: N,
                ..FleetOptions::default().sim
            },
            ..FleetOptions::default()
        },
    )
    .await;
    let mut admin = sqlx::PgConnection::connect(&pg.url)
        .await
        .expect("admin connection");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut admin)
        .await
        .expect("CREATE EXTENSION pg_stat_statements");
    let datname: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(fleet.store().pool())
        .await
        .expect("database name");
    let redis_client = redis::Client::open(redis_svc.url.as_str()).expect("redis url");
    let mut counters = Counters {
        pg: admin,
        datname,
        redis: redis_client
            .get_multiplexed_async_connection()
            .await
            .expect("redis"),
    };
    fleet.import(None).await;
    let n = N as i64;
    let queue = fleet.queue.config().name.clone();

    // ---- the enqueuer: every device due, one tick claims and pushes them all ----
    let enq = fleet.enqueuer();
    counters.reset().await;
    let tick = enq.tick().await.expect("tick");
    assert_eq!(tick.pushed, N, "one tick schedules every device");
    let p = counters.phase(&queue).await;
    report("enqueue (one tick)", n, &p);
    let bytes = redis_bytes_per_job(&fleet, N).await;
    println!("== Redis bytes per queued job (MEMORY USAGE of the queue's keys): {bytes:.0} B");

    // ---- the worker: apalis fetch, execute, ack ----
    counters.reset().await;
    let (stop, handle, env) = fleet.spawn_worker("counting", 4);
    let done = || {
        env.metrics
            .backup_total
            .with_label_values(&["success"])
            .get()
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done() < N as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every device backed up within 60 s ({} done)",
            done()
        );
        tick.tick().await;
    }
    let _ = stop.send(());
    handle.await.expect("worker task").expect("worker exits");
    let p = counters.phase(&queue).await;
    report(
        "worker (fetch, execute, ack; idle polls and heartbeats included)",
        n,
        &p,
    );

    // ---- execute alone, on jobs claimed beforehand ----
    sqlx::query("UPDATE devices SET next_due_at = now() - interval '1 second'")
        .execute(fleet.store().pool())
        .await
        .expect("due again");
    let claims = fleet
        .store()
        .claim_due(chrono::Utc::now(), N as i64)
        .await
        .expect("claim");
    assert_eq!(claims.len(), N);
    let env = fleet.job_env();
    counters.reset().await;
    for c in &claims {
        let job = rosbackup::queue::BackupJob::scheduled(
            c.device_id,
            c.tenant_id,
            c.job_id.clone(),
            c.due_at,
        );
        let r = rosbackup::worker::execute(&env, &job, "counting")
            .await
            .expect("execute");
        assert_eq!(r.status, RunStatus::Success, "{r:?}");
    }
    let p = counters.phase(&queue).await;
    report("execute alone", n, &p);
    let statements: i64 = p.statements.values().sum();
    assert_eq!(
        statements,
        STATEMENTS_PER_BACKUP * n,
        "PostgreSQL statements for {N} backups: {:#?}",
        p.statements
    );
    let written = counters.write_calls().await;
    assert_eq!(
        written,
        WRITES_PER_BACKUP * n,
        "PostgreSQL statements that write, for {N} backups: {:#?}",
        p.statements
    );
    let trips: i64 = p.round_trips.values().sum();
    assert_eq!(
        trips,
        REDIS_ROUND_TRIPS_PER_EXECUTE * n,
        "Redis round trips for {N} backups: {:#?}",
        p.round_trips
    );

    // ---- execute on an offline device (the seed's status key): read and skip ----
    sqlx::query("UPDATE devices SET next_due_at = now() - interval '1 second'")
        .execute(fleet.store().pool())
        .await
        .expect("due again");
    let claims = fleet
        .store()
        .claim_due(chrono::Utc::now(), N as i64)
        .await
        .expect("claim");
    let mut status = fleet.queue.connection();
    for c in &claims {
        let _: () = redis::cmd("SET")
            .arg(format!("device:{}:status", c.device_id))
            .arg("offline")
            .query_async(&mut status)
            .await
            .expect("mark offline");
    }
    counters.reset().await;
    for c in &claims {
        let job = rosbackup::queue::BackupJob::scheduled(
            c.device_id,
            c.tenant_id,
            c.job_id.clone(),
            c.due_at,
        );
        let r = rosbackup::worker::execute(&env, &job, "counting")
            .await
            .expect("execute");
        assert_eq!(r.status, RunStatus::Skipped, "{r:?}");
    }
    let p = counters.phase(&queue).await;
    report("execute, device offline (skipped)", n, &p);
    let statements: i64 = p.statements.values().sum();
    assert_eq!(
        statements,
        STATEMENTS_PER_OFFLINE_SKIP * n,
        "PostgreSQL statements for {N} offline skips: {:#?}",
        p.statements
    );
    let trips: i64 = p.round_trips.values().sum();
    assert_eq!(
        trips,
        REDIS_ROUND_TRIPS_PER_OFFLINE_SKIP * n,
        "Redis round trips for {N} offline skips: {:#?}",
        p.round_trips
    );
    // The skip gave the lease back in its statement: no device is left leased.
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM devices WHERE lease_token IS NOT NULL OR outstanding_job IS NOT NULL",
    )
    .fetch_one(fleet.store().pool())
    .await
    .expect("leases");
    assert_eq!(leased, 0, "an offline skip left a lease or a claim behind");
    for c in &claims {
        let _: () = redis::cmd("DEL")
            .arg(format!("device:{}:status", c.device_id))
            .query_async(&mut status)
            .await
            .expect("status key removed");
    }

    drop(counters);
    fleet.cleanup().await;
    pg.stop(Duration::from_secs(10)).await;
    redis_svc.stop(Duration::from_secs(5)).await;
}

/// The facts the lease's statement returns are what the separate reads it replaces
/// return (`Store::timeout_inputs`, `binary::store::state`): the profile's override, the
/// recent runs that reached the device (newest first, skips left out, at most
/// `RECENT_RUNS`), the binary modes, newest binary and backoff, and the jump host's
/// pinned key (`bastions::pin`). Also for a device with none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_returns_what_the_separate_reads_did() {
    use rosbackup::store::{Lease, LeaseAttempt};
    let fleet = Fleet::of(2).await;
    let devices = fleet.import(None).await;
    let (full, bare) = (&devices[0], &devices[1]);
    let pool = fleet.store().pool().clone();
    let exec = |sql: String| {
        let pool = pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("set-up statement");
        }
    };
    let (id, tenant) = (full.id, full.tenant_id);
    let profile = uuid::Uuid::new_v4();
    exec(format!(
        "INSERT INTO credential_profiles (id, tenant_id, name, username, password_enc, export_timeout_seconds) \
         VALUES ('{profile}', '{tenant}', 'p', 'u', '\\x00', 42)"
    ))
    .await;
    exec(format!(
        "UPDATE devices SET credential_profile_id = '{profile}', export_timeout_seconds = 7, \
         backup_binary = 'always' WHERE id = '{id}'"
    ))
    .await;
    // 25 runs that reached the device (more than RECENT_RUNS) between skips.
    for i in 0..25 {
        let (status, timed_out, export_ms) = match i % 3 {
            0 => ("success", "false", format!("{}", 100 + i)),
            1 => ("failed", "true", "NULL".to_string()),
            _ => ("failed", "false", "NULL".to_string()),
        };
        exec(format!(
            "INSERT INTO backup_runs (device_id, tenant_id, job_id, trigger, worker, started_at, finished_at, \
             status, duration_ms, export_ms, timed_out) VALUES \
             ('{id}', '{tenant}', 'j{i}', 'scheduled', 'w', now(), now(), '{status}', {}, {export_ms}, {timed_out}), \
             ('{id}', '{tenant}', 's{i}', 'scheduled', 'w', now(), now(), 'skipped', 1, NULL, false)",
            1000 + i
        ))
        .await;
    }
    exec(format!(
        "INSERT INTO binary_tenant_mode (tenant_id, mode) VALUES ('{tenant}', 'on-change') \
         ON CONFLICT (tenant_id) DO UPDATE SET mode = EXCLUDED.mode"
    ))
    .await;
    exec(format!(
        "INSERT INTO binary_state (device_id, password_enc, consecutive_failures, retry_after) \
         VALUES ('{id}', '\\x00', 2, now() + interval '1 hour')"
    ))
    .await;
    for (job, sha, age) in [("b1", "old", 2), ("b2", "new", 1)] {
        exec(format!(
            "INSERT INTO binary_backups (device_id, tenant_id, job_id, collected_at, size, sha256, \
             config_sha256, format, file_enc, password_enc) VALUES \
             ('{id}', '{tenant}', '{job}', now() - interval '{age} hours', 1, 'x', '{sha}', 'rc4', '\\x00', '\\x00')"
        ))
        .await;
    }
    // The device's own jump host, with a pinned key; its profile's, without one.
    exec(format!(
        "UPDATE devices SET jump_host = 'bastion.example', jump_port = 2222 WHERE id = '{id}'"
    ))
    .await;
    exec(format!(
        "UPDATE credential_profiles SET jump_host = 'other.example', jump_port = 22 WHERE id = '{profile}'"
    ))
    .await;
    exec(format!(
        "INSERT INTO bastion_host_keys (tenant_id, host, port, fingerprint) \
         VALUES ('{tenant}', 'bastion.example', 2222, 'SHA256:pinned')"
    ))
    .await;
    for d in [full, bare] {
        let lease = Lease {
            device_id: d.id,
            job_id: "manual:facts".into(),
            token: uuid::Uuid::new_v4(),
            worker: "facts".into(),
            ttl: Duration::from_secs(30),
        };
        let LeaseAttempt::Acquired { device, facts, .. } =
            fleet.store().acquire_lease(&lease).await.expect("lease")
        else {
            panic!("the lease is free");
        };
        let from_lease =
            rosbackup::export_timeout::inputs_from_lease(device.export_timeout_seconds, &facts);
        let separate = fleet.store().timeout_inputs(d.id).await.expect("inputs");
        assert_eq!(from_lease, separate, "timeout inputs of {}", d.name);
        let state = rosbackup::binary::store::state(fleet.store(), d.id)
            .await
            .expect("state");
        let leased = rosbackup::binary::store::state_from_lease(&facts);
        assert_eq!(
            format!("{leased:?}"),
            format!("{state:?}"),
            "binary state of {}",
            d.name
        );
        if d.id == full.id {
            assert_eq!(from_lease.device, Some(7));
            assert_eq!(from_lease.profile, Some(42));
            assert_eq!(
                from_lease.recent.len(),
                rosbackup::export_timeout::RECENT_RUNS as usize
            );
            assert_eq!(facts.binary_newest_sha256.as_deref(), Some("new"));
            let pinned = rosbackup::bastions::pin(fleet.store(), tenant, "bastion.example", 2222)
                .await
                .expect("pin");
            assert_eq!(pinned.as_deref(), Some("SHA256:pinned"));
            use rosbackup::jump::JumpSource;
            assert_eq!(facts.jump_pin(JumpSource::Device), pinned.as_deref());
            assert_eq!(facts.jump_pin(JumpSource::Profile), None);
            assert_eq!(facts.jump_pin(JumpSource::Tenant), None);
            assert_eq!(facts.binary_failures, Some(2));
        } else {
            assert_eq!(*facts, Default::default(), "a device with no history");
        }
        fleet.store().release_lease(&lease).await.expect("release");
    }
    fleet.cleanup().await;
}
