//! Partial loss of Redis' data (eviction under `allkeys-*`, a failover): a job whose
//! payload survives but that sits in no queue set must not keep its device's claim
//! forever.

use crate::common::fleet::Fleet;
use rosbackup::enqueuer::{Enqueuer, EnqueuerSettings};
use std::time::Duration;

/// One job's membership of the scheduled set removed, then the whole set deleted: each
/// time reconcile finds the orphans, forgets them and the devices are claimed again; a
/// worker then backs every device up exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_in_no_queue_set_are_reclaimed_not_stuck() {
    let fleet = Fleet::of(5).await;
    let devices = fleet.import(None).await;
    let enqueuer = Enqueuer {
        settings: EnqueuerSettings {
            // Every claim is old enough to be checked against Redis at once.
            stale_after: Duration::ZERO,
            ..fleet.enqueuer().settings
        },
        ..fleet.enqueuer()
    };
    let apalis = fleet.queue.config().apalis();
    let scheduled = apalis.scheduled_jobs_set();
    let mut redis = fleet.queue.connection();

    let first = enqueuer.tick().await.expect("tick");
    assert_eq!(first.pushed, 5, "{first:?}");
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(&scheduled)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("ZRANGE");
    assert_eq!(ids.len(), 5);

    // One job loses its place in the scheduled set (its payload stays).
    let _: i64 = redis::cmd("ZREM")
        .arg(&scheduled)
        .arg(&ids[0])
        .query_async(&mut redis)
        .await
        .expect("ZREM");
    let r = enqueuer.reconcile().await.expect("reconcile");
    assert_eq!((r.orphaned, r.lost), (1, 0), "{r:?}");
    let again = enqueuer.tick().await.expect("tick");
    assert_eq!(again.pushed, 1, "{again:?}");

    // The whole scheduled set is lost.
    let _: i64 = redis::cmd("DEL")
        .arg(&scheduled)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    let r = enqueuer.reconcile().await.expect("reconcile");
    assert_eq!(r.orphaned, 5, "{r:?}");
    let again = enqueuer.tick().await.expect("tick");
    assert_eq!(again.pushed, 5, "{again:?}");
    assert_eq!(
        enqueuer
            .metrics
            .claims_released
            .with_label_values(&["orphaned"])
            .get(),
        6
    );

    let (stop, worker, _) = fleet.spawn_worker("loss", 4);
    fleet
        .wait_for(
            Duration::from_secs(60),
            "every device backed up",
            || async { fleet.successes().await >= 5 },
        )
        .await;
    let _ = stop.send(());
    worker.await.expect("join").expect("worker");
    let runs = fleet.runs().await;
    for d in &devices {
        let ok = runs
            .iter()
            .filter(|r| r.device_id == d.id && r.status == "success")
            .count();
        assert_eq!(ok, 1, "device {} backed up {ok} times: {runs:?}", d.id);
    }
    fleet.cleanup().await;
}
