//! Drop-in compatibility with a the-other-dude deployment, tested with the Go poller's own
//! names and formats: its per-device Redis lock `backup:device:{id}`.

use crate::common::fleet::{Fleet, FleetOptions, redis_url};
use rosbackup::queue::BackupJob;
use rosbackup::sim::SimConfig;
use rosbackup::store::{Lease, LeaseAttempt, RunStatus};
use std::time::Duration;
use uuid::Uuid;

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET")
}

/// A Go poller holding `backup:device:{id}` keeps our workers off that device (manual:
/// `locked`, metric `skipped`, no SSH session, its lock untouched); while we back a device
/// up we hold the same key with our own token and the Go poller's TTL, and release it
/// after; `ROSBACKUP_SEED_LOCK=false` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_pollers_redis_lock_is_taken_and_respected() {
    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 2,
            export_delay: Duration::from_millis(1500),
            ..FleetOptions::default().sim
        },
        ..FleetOptions::default()
    })
    .await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let env = fleet.job_env();
    assert!(env.backup.seed_lock, "on by default");
    let mut conn = redis().await;
    let (held, free) = (&devices[0], &devices[1]);
    let held_key = format!("backup:device:{}", held.id);
    let free_key = format!("backup:device:{}", free.id);

    // A Go poller holds the first device's lock (its client's SET NX PX).
    let set: Option<String> = redis::cmd("SET")
        .arg(&held_key)
        .arg("go-poller-token")
        .arg("NX")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    assert!(set.is_some());
    let report =
        rosbackup::worker::execute(&env, &BackupJob::manual(held.id, held.tenant_id), "tod")
            .await
            .expect("execute");
    assert_eq!(report.status, RunStatus::Locked, "{report:?}");
    assert_eq!(
        env.metrics
            .backup_total
            .with_label_values(&["skipped"])
            .get(),
        1
    );
    assert_eq!(fleet.sim.stats()[&held.id].sessions, 0, "no SSH session");
    assert_eq!(
        get(&mut conn, &held_key).await.as_deref(),
        Some("go-poller-token"),
        "another holder's lock is never released by us"
    );
    let row = fleet
        .store()
        .device(held.id)
        .await
        .expect("row")
        .expect("device");
    assert!(row.lease_expires_at.is_none(), "our lease was given back");

    // The other device: we hold its key while exporting, with our token and the Go
    // poller's TTL (command timeout + 30 s), and give it back afterwards.
    let run = tokio::spawn({
        let env = env.clone();
        let job = BackupJob::manual(free.id, free.tenant_id);
        async move { rosbackup::worker::execute(&env, &job, "tod").await }
    });
    fleet
        .wait_for(
            Duration::from_secs(20),
            "our lock during the export",
            || {
                let key = free_key.clone();
                async move {
                    let mut c = redis().await;
                    get(&mut c, &key).await.is_some()
                }
            },
        )
        .await;
    let token = get(&mut conn, &free_key).await.expect("held");
    assert_eq!(token.len(), 32, "a random token: {token}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&free_key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    let ttl = (fleet.backup.export.command_timeout + Duration::from_secs(30)).as_millis() as i64;
    assert!(pttl > ttl - 20_000 && pttl <= ttl, "PTTL {pttl} of {ttl}");
    let report = run.await.expect("join").expect("execute");
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(
        get(&mut conn, &free_key).await,
        None,
        "released after the backup"
    );

    // Switched off, the Go poller's lock is not looked at.
    let mut off = (*env).clone();
    off.backup.seed_lock = false;
    let report =
        rosbackup::worker::execute(&off, &BackupJob::manual(held.id, held.tenant_id), "tod")
            .await
            .expect("execute");
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(
        get(&mut conn, &held_key).await.as_deref(),
        Some("go-poller-token")
    );
    let _: i64 = redis::cmd("DEL")
        .arg(&held_key)
        .query_async(&mut conn)
        .await
        .expect("DEL");

    // An execution of ours that died mid-export left its lock (its token is its lease
    // token). The execution that takes its expired lease over replaces that lock at once
    // instead of waiting out the Go poller's TTL.
    let dead = Lease {
        device_id: free.id,
        job_id: "manual:dead".into(),
        token: Uuid::new_v4(),
        worker: "killed".into(),
        ttl: Duration::from_secs(1),
    };
    assert!(matches!(
        fleet.store().acquire_lease(&dead).await.expect("lease"),
        LeaseAttempt::Acquired { .. }
    ));
    let _: () = redis::cmd("SET")
        .arg(&free_key)
        .arg(dead.token.simple().to_string())
        .arg("PX")
        .arg(600_000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    fleet
        .wait_lease_expired(free.id, "the dead lease expires")
        .await;
    let report =
        rosbackup::worker::execute(&env, &BackupJob::manual(free.id, free.tenant_id), "tod")
            .await
            .expect("execute");
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(
        get(&mut conn, &free_key).await,
        None,
        "replaced, then released"
    );
    fleet.cleanup().await;
}

/// The lock's script reads the seed's online status before it takes the lock (issue #20:
/// one Redis round trip for both): an offline device is skipped as offline whether its
/// lock is free or a Go poller's, the free lock is not taken, the Go poller's is left as
/// it was, and the lease the job took is given back by the statement recording the skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_is_skipped_before_its_lock_is_taken() {
    let fleet = Fleet::of(3).await;
    let devices = fleet.import(None).await;
    fleet.postpone_all().await;
    let env = fleet.job_env();
    assert!(env.backup.seed_lock, "on by default");
    let mut conn = redis().await;
    let (held, free, online) = (&devices[0], &devices[1], &devices[2]);
    let key = |id: &Uuid| format!("backup:device:{id}");
    let _: () = redis::cmd("SET")
        .arg(key(&held.id))
        .arg("go-poller-token")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    for (d, status) in [(held, "offline"), (free, "offline"), (online, "online")] {
        let _: () = redis::cmd("SET")
            .arg(rosbackup::queue::status_key(&d.id))
            .arg(status)
            .arg("EX")
            .arg(600)
            .query_async(&mut conn)
            .await
            .expect("status");
    }
    for d in [held, free] {
        let report = rosbackup::worker::execute(&env, &BackupJob::manual(d.id, d.tenant_id), "tod")
            .await
            .expect("execute");
        assert_eq!(report.status, RunStatus::Skipped, "{report:?}");
        assert_eq!(report.message.as_deref(), Some("device is offline"));
        let row = fleet
            .store()
            .device(d.id)
            .await
            .expect("row")
            .expect("device");
        assert!(row.lease_expires_at.is_none(), "the lease was given back");
        assert_eq!(row.lease_starts, 0, "a skip does not count as a start");
        assert_eq!(row.last_status.as_deref(), Some("skipped"));
    }
    assert_eq!(
        env.metrics
            .backup_total
            .with_label_values(&["skipped_offline"])
            .get(),
        2
    );
    assert_eq!(
        get(&mut conn, &key(&held.id)).await.as_deref(),
        Some("go-poller-token"),
        "a Go poller's lock is left as it was"
    );
    assert_eq!(get(&mut conn, &key(&free.id)).await, None, "no lock taken");
    assert_eq!(fleet.sim.stats()[&held.id].sessions, 0, "no SSH session");
    assert_eq!(fleet.sim.stats()[&free.id].sessions, 0, "no SSH session");

    // `online` (the seed's word for it) is backed up, and its lock given back after.
    let report =
        rosbackup::worker::execute(&env, &BackupJob::manual(online.id, online.tenant_id), "tod")
            .await
            .expect("execute");
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    assert_eq!(get(&mut conn, &key(&online.id)).await, None, "released");
    for d in &devices {
        let _: () = redis::cmd("DEL")
            .arg(key(&d.id))
            .arg(rosbackup::queue::status_key(&d.id))
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
    fleet.cleanup().await;
}
