//! Queue introspection (`Queue::jobs`, `job`, `workers`, `take_dead`) against a real
//! Redis and real apalis workers. Every test uses its own queue name (key prefix) and
//! purges it at the end.

use apalis::prelude::WorkerBuilderExt;
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::monitor::Monitor;
use apalis_core::task::attempt::Attempt;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use chrono::{TimeZone, Utc};
use redis::AsyncCommands;
use rosbackup::queue::{BackupJob, JobInfo, JobListState, JobState, Queue, QueueConfig};
use rosbackup::store::Trigger;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

async fn test_queue() -> Queue {
    Queue::connect(QueueConfig {
        redis_url: crate::common::fleet::redis_url(),
        name: format!("rbtest:{}", Uuid::new_v4().simple()),
        heartbeat: Duration::from_secs(1),
        missed_heartbeats: 3,
        poll_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    })
    .await
    .expect("Redis is running")
}

fn scheduled_job(tenant: Uuid, due_at: i64) -> BackupJob {
    let device = Uuid::new_v4();
    BackupJob::scheduled(
        device,
        tenant,
        format!("backup:{device}:{due_at}"),
        Utc.timestamp_opt(due_at, 0).unwrap(),
    )
}

/// Poll `check` every 50 ms until it returns Some, or panic after `secs`.
async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running apalis worker and the means to stop it.
struct RunningWorker {
    name: String,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl RunningWorker {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(15), self.handle).await;
    }
}

fn stop_signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = Result<(), std::io::Error>> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
        Ok(())
    })
}

/// The production rule of `worker::handle` for an infrastructure error: plain `Err`
/// (apalis re-schedules) until the third attempt, then `AbortError` (apalis kills it).
async fn always_failing(job: BackupJob, attempt: Attempt) -> Result<(), BoxDynError> {
    let e = std::io::Error::other(format!("postgres is down ({})", job.device_id));
    if attempt.current() >= 3 {
        Err(AbortError::new(e).into())
    } else {
        Err(e.into())
    }
}

fn spawn_failing_worker(queue: &Queue) -> RunningWorker {
    let name = format!("rbtest-fail-{}", Uuid::new_v4().simple());
    let (queue, n) = (queue.clone(), name.clone());
    let monitor = Monitor::new().register(move |_| {
        WorkerBuilder::new(n.clone())
            .backend(queue.backend())
            .concurrency(1)
            .catch_panic()
            .build(always_failing)
    });
    let (stop, signal) = stop_signal();
    let handle = tokio::spawn(async move {
        let _ = monitor.run_with_signal(signal).await;
    });
    RunningWorker { name, stop, handle }
}

/// Holds each job until the test lets it go.
struct Gate {
    started: mpsc::UnboundedSender<String>,
    release: Notify,
}

async fn gated(job: BackupJob, gate: Data<Arc<Gate>>) -> Result<(), BoxDynError> {
    let _ = gate.started.send(job.job_id.clone());
    gate.release.notified().await;
    Ok(())
}

fn spawn_gated_worker(queue: &Queue, gate: Arc<Gate>) -> RunningWorker {
    let name = format!("rbtest-gated-{}", Uuid::new_v4().simple());
    let (queue, n) = (queue.clone(), name.clone());
    let monitor = Monitor::new().register(move |_| {
        WorkerBuilder::new(n.clone())
            .backend(queue.backend())
            .data(gate.clone())
            .concurrency(1)
            .catch_panic()
            .build(gated)
    });
    let (stop, signal) = stop_signal();
    let handle = tokio::spawn(async move {
        let _ = monitor.run_with_signal(signal).await;
    });
    RunningWorker { name, stop, handle }
}

fn ids(jobs: &[JobInfo]) -> Vec<String> {
    jobs.iter().map(|j| j.job_id.clone()).collect()
}

/// A job whose handler keeps failing goes dead the way production does it (two
/// re-scheduled failures, then an abort); it is listed with attempts and the error,
/// and `take_dead` removes it for good and hands back its payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_job_is_listed_and_taken() {
    let queue = test_queue().await;
    let tenant = Uuid::new_v4();
    let job = BackupJob::manual(Uuid::new_v4(), tenant);
    queue.push(std::slice::from_ref(&job)).await.unwrap();
    let worker = spawn_failing_worker(&queue);

    let (dead, total) = wait_for(60, "the job to go dead", || async {
        let (jobs, total) = queue.jobs(JobListState::Dead, None, 0, 10).await.unwrap();
        (!jobs.is_empty()).then_some((jobs, total))
    })
    .await;
    worker.stop().await;

    assert_eq!(total, 1);
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.job_id, job.job_id);
    assert_eq!(d.state, JobListState::Dead);
    assert_eq!(d.device_id, Some(job.device_id));
    assert_eq!(d.tenant_id, Some(tenant));
    assert_eq!(d.trigger, Some(Trigger::Manual));
    assert_eq!(d.due_at, Some(job.due_at));
    assert_eq!(d.run_at, None);
    assert_eq!(d.attempts, 3, "{d:?}");
    assert_eq!(d.max_attempts, Some(25));
    assert_eq!(d.worker, None);
    assert_eq!(d.status.as_deref(), Some("Killed"));
    assert!(d.done_at.is_some());
    assert_eq!(
        d.last_error.as_deref(),
        Some(format!("AbortError: postgres is down ({})", job.device_id).as_str())
    );
    assert_eq!(queue.job(&job.job_id).await.unwrap().as_ref(), Some(d));
    assert_eq!(queue.depth().await.unwrap().dead, 1);

    // Tenant scoping.
    let (mine, n) = queue
        .jobs(JobListState::Dead, Some(tenant), 0, 10)
        .await
        .unwrap();
    assert_eq!((ids(&mine), n), (vec![job.job_id.clone()], 1));
    let (theirs, n) = queue
        .jobs(JobListState::Dead, Some(Uuid::new_v4()), 0, 10)
        .await
        .unwrap();
    assert!(theirs.is_empty());
    assert_eq!(n, 0);

    // Not dead → None, nothing changes.
    assert_eq!(queue.take_dead("no-such-job").await.unwrap(), None);

    let taken = queue.take_dead(&job.job_id).await.unwrap();
    assert_eq!(taken.as_ref(), Some(&job));
    assert_eq!(queue.take_dead(&job.job_id).await.unwrap(), None);
    assert_eq!(
        queue
            .job_states(std::slice::from_ref(&job.job_id))
            .await
            .unwrap(),
        vec![JobState::Missing]
    );
    assert_eq!(queue.job(&job.job_id).await.unwrap(), None);
    let (dead, total) = queue.jobs(JobListState::Dead, None, 0, 10).await.unwrap();
    assert!(dead.is_empty());
    assert_eq!(total, 0);
    let mut conn = queue.connection();
    let meta_left: bool = conn
        .exists(format!(
            "{}:{}",
            queue.config().apalis().job_meta_hash(),
            job.job_id
        ))
        .await
        .unwrap();
    assert!(!meta_left, "the meta hash is gone");

    // Its id is free again: a re-push is accepted (apalis dedupes on the data hash).
    queue.push(std::slice::from_ref(&job)).await.unwrap();
    assert_eq!(
        queue
            .job_states(std::slice::from_ref(&job.job_id))
            .await
            .unwrap(),
        vec![JobState::Pending]
    );
    queue.purge().await.unwrap();
}

/// Scheduled vs due, paging across the ready list / zset boundary, the tenant filter,
/// and a payload that does not decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_due_paging_tenants_and_garbage() {
    let queue = test_queue().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now().timestamp();
    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(scheduled_job(a, now - 100 - i));
    }
    for i in 0..3 {
        jobs.push(scheduled_job(b, now - 200 - i));
    }
    for i in 0..4 {
        jobs.push(scheduled_job(a, now + 1000 + i));
    }
    for i in 0..2 {
        jobs.push(scheduled_job(b, now + 2000 + i));
    }
    queue.push(&jobs).await.unwrap();

    // A ready job whose payload is garbage, written directly.
    let c = queue.config().apalis();
    let mut conn = queue.connection();
    let garbage = "garbage:1".to_string();
    let _: () = conn
        .hset(c.job_data_hash(), &garbage, b"\xff\x00 not json".as_slice())
        .await
        .unwrap();
    let _: () = conn.rpush(c.active_jobs_list(), &garbage).await.unwrap();

    // Scheduled: the 6 future jobs, soonest first, run_at = due_at.
    let (sched, total) = queue
        .jobs(JobListState::Scheduled, None, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 6);
    let mut future: Vec<&BackupJob> = jobs.iter().filter(|j| j.due_at > now).collect();
    future.sort_by_key(|j| j.due_at);
    assert_eq!(
        ids(&sched),
        future.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>()
    );
    for (info, job) in sched.iter().zip(&future) {
        assert_eq!(info.state, JobListState::Scheduled);
        assert_eq!(info.run_at, Some(job.due_at));
        assert_eq!(info.due_at, Some(job.due_at));
        assert_eq!(info.device_id, Some(job.device_id));
        assert_eq!(info.tenant_id, Some(job.tenant_id));
        assert_eq!(info.trigger, Some(Trigger::Scheduled));
        assert_eq!(info.attempts, 0);
        assert_eq!(info.last_error, None);
        assert_eq!(info.status.as_deref(), Some("Pending"));
    }

    // Due: the ready (garbage) job first, then the 8 past-due ones (push clamps their
    // run_at to the push time, so it is <= now but not their due_at).
    let (due, total) = queue.jobs(JobListState::Due, None, 0, 100).await.unwrap();
    assert_eq!(total, 9);
    assert_eq!(due.len(), 9);
    let g = &due[0];
    assert_eq!(g.job_id, garbage);
    assert_eq!(g.state, JobListState::Due);
    assert_eq!(
        (g.device_id, g.tenant_id, g.trigger, g.due_at, g.run_at),
        (None, None, None, None, None)
    );
    assert_eq!(g.attempts, 0);
    let check_now = Utc::now().timestamp();
    for info in &due[1..] {
        assert_eq!(info.state, JobListState::Due);
        let job = jobs.iter().find(|j| j.job_id == info.job_id).unwrap();
        assert!(job.due_at < now);
        assert_eq!(info.due_at, Some(job.due_at));
        let run_at = info.run_at.expect("due zset member has a run_at");
        assert!(run_at >= now && run_at <= check_now, "{run_at} vs {now}");
    }
    assert_eq!(queue.job(&garbage).await.unwrap().as_ref(), Some(g));
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.scheduled, depth.due), (6, 9));

    // Paging: pages of 4 and of 1 give back the same sequence, across the boundary.
    let mut paged = Vec::new();
    for off in [0, 4, 8] {
        let (page, total) = queue.jobs(JobListState::Due, None, off, 4).await.unwrap();
        assert_eq!(total, 9);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, ids(&due));
    let mut singles = Vec::new();
    for off in 0..10 {
        let (page, _) = queue.jobs(JobListState::Due, None, off, 1).await.unwrap();
        singles.extend(ids(&page));
    }
    assert_eq!(singles, ids(&due));
    let (page, total) = queue
        .jobs(JobListState::Scheduled, None, 2, 3)
        .await
        .unwrap();
    assert_eq!((ids(&page), total), (ids(&sched[2..5]), 6));
    let (page, total) = queue
        .jobs(JobListState::Scheduled, None, 6, 3)
        .await
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 6);
    let (page, _) = queue
        .jobs(JobListState::Scheduled, None, 0, 0)
        .await
        .unwrap();
    assert!(page.is_empty());

    // Tenant filter: exact counts, only that tenant's jobs, same order, pageable.
    for (tenant, state, expect) in [
        (a, JobListState::Scheduled, 4),
        (b, JobListState::Scheduled, 2),
        (a, JobListState::Due, 5),
        (b, JobListState::Due, 3),
    ] {
        let (all, _) = queue.jobs(state, None, 0, 100).await.unwrap();
        let want: Vec<String> = all
            .iter()
            .filter(|j| j.tenant_id == Some(tenant))
            .map(|j| j.job_id.clone())
            .collect();
        let (got, total) = queue.jobs(state, Some(tenant), 0, 100).await.unwrap();
        assert_eq!(total, expect);
        assert_eq!(ids(&got), want);
        assert!(got.iter().all(|j| j.tenant_id == Some(tenant)));
        let mut paged = Vec::new();
        for off in (0..expect).step_by(3) {
            let (page, total) = queue.jobs(state, Some(tenant), off, 3).await.unwrap();
            assert_eq!(total, expect);
            paged.extend(ids(&page));
        }
        assert_eq!(paged, want);
    }
    let (none, total) = queue
        .jobs(JobListState::Due, Some(Uuid::new_v4()), 0, 100)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(total, 0);

    // One job by id.
    let s = queue.job(&future[0].job_id).await.unwrap().unwrap();
    assert_eq!(s, sched[0]);
    assert_eq!(queue.job("no-such-job").await.unwrap(), None);
    // Nothing runs or is dead here.
    assert_eq!(
        queue
            .jobs(JobListState::Running, None, 0, 10)
            .await
            .unwrap(),
        (vec![], 0)
    );
    assert_eq!(queue.workers().await.unwrap(), vec![]);

    queue.purge().await.unwrap();
}

/// With more jobs than one scan chunk (1,000), the tenant filter still counts exactly
/// and pages across chunk boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_filter_scans_across_chunks() {
    let queue = test_queue().await;
    let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
    let now = Utc::now().timestamp();
    let jobs: Vec<BackupJob> = (0..2500)
        .map(|i| scheduled_job(if i % 7 == 0 { mine } else { other }, now + 1000 + i))
        .collect();
    queue.push(&jobs).await.unwrap();
    let want: Vec<String> = jobs
        .iter()
        .filter(|j| j.tenant_id == mine)
        .map(|j| j.job_id.clone())
        .collect();
    assert_eq!(want.len(), 358);

    let (page, total) = queue
        .jobs(JobListState::Scheduled, Some(mine), 140, 10)
        .await
        .unwrap();
    assert_eq!(total, 358);
    assert_eq!(ids(&page), want[140..150].to_vec());
    let (page, total) = queue
        .jobs(JobListState::Scheduled, Some(mine), 350, 100)
        .await
        .unwrap();
    assert_eq!(total, 358);
    assert_eq!(ids(&page), want[350..].to_vec());
    let (page, total) = queue
        .jobs(JobListState::Scheduled, None, 1495, 10)
        .await
        .unwrap();
    assert_eq!(total, 2500);
    assert_eq!(
        ids(&page),
        jobs[1495..1505]
            .iter()
            .map(|j| j.job_id.clone())
            .collect::<Vec<_>>()
    );
    queue.purge().await.unwrap();
}

/// A running job shows its worker, in `jobs(Running)`, `job()` and `workers()`; once
/// released it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_job_and_its_worker() {
    let queue = test_queue().await;
    let tenant = Uuid::new_v4();
    let job = BackupJob::manual(Uuid::new_v4(), tenant);
    queue.push(std::slice::from_ref(&job)).await.unwrap();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        started: started_tx,
        release: Notify::new(),
    });
    let worker = spawn_gated_worker(&queue, gate.clone());
    let started = tokio::time::timeout(Duration::from_secs(30), started_rx.recv())
        .await
        .expect("the job starts")
        .unwrap();
    assert_eq!(started, job.job_id);

    // The lease (status Running, locked_at) is written by the next backend poll.
    let (running, total) = wait_for(10, "the job's lease", || async {
        let (jobs, total) = queue
            .jobs(JobListState::Running, None, 0, 10)
            .await
            .unwrap();
        (jobs.first().and_then(|j| j.locked_at).is_some()).then_some((jobs, total))
    })
    .await;
    assert_eq!(total, 1);
    let r = &running[0];
    assert_eq!(r.job_id, job.job_id);
    assert_eq!(r.state, JobListState::Running);
    assert_eq!(r.worker.as_deref(), Some(worker.name.as_str()));
    assert_eq!(r.device_id, Some(job.device_id));
    assert_eq!(r.status.as_deref(), Some("Running"));
    assert_eq!(queue.job(&job.job_id).await.unwrap().as_ref(), Some(r));
    let (mine, n) = queue
        .jobs(JobListState::Running, Some(tenant), 0, 10)
        .await
        .unwrap();
    assert_eq!((ids(&mine), n), (vec![job.job_id.clone()], 1));
    assert_eq!(
        queue
            .jobs(JobListState::Running, Some(Uuid::new_v4()), 0, 10)
            .await
            .unwrap(),
        (vec![], 0)
    );
    assert_eq!(
        queue
            .jobs(JobListState::Running, None, 1, 10)
            .await
            .unwrap(),
        (vec![], 1)
    );

    let workers = queue.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    let w = &workers[0];
    assert_eq!(w.name, worker.name);
    assert!(w.alive);
    assert!((Utc::now().timestamp() - w.last_heartbeat).abs() <= 5);
    assert_eq!(w.inflight, vec![job.job_id.clone()]);

    gate.release.notify_one();
    let done = wait_for(30, "the job to finish", || async {
        queue
            .job(&job.job_id)
            .await
            .unwrap()
            .filter(|j| j.state == JobListState::Done)
    })
    .await;
    assert_eq!(done.attempts, 1);
    assert_eq!(done.last_error, None);
    assert_eq!(done.worker, None);
    let (finished, total) = queue.jobs(JobListState::Done, None, 0, 10).await.unwrap();
    assert_eq!((ids(&finished), total), (vec![job.job_id.clone()], 1));
    let w = wait_for(10, "the in-flight set to empty", || async {
        let ws = queue.workers().await.unwrap();
        ws.into_iter().find(|w| w.inflight.is_empty())
    })
    .await;
    assert_eq!(w.name, worker.name);

    worker.stop().await;
    queue.purge().await.unwrap();
}

/// `purge` removes the queue from apalis' shared list of queues too (a worker's
/// registration puts it there), and leaves the other queues in it alone: a demo or a test
/// run leaves nothing behind on a shared Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_also_takes_the_queue_off_apalis_list_of_queues() {
    const LIST: &str = "core:apalis:queues:list";
    let (queue, other) = (test_queue().await, test_queue().await);
    let listed = |q: &Queue| {
        let (mut conn, member) = (q.connection(), q.config().apalis().workers_set());
        async move {
            let score: Option<f64> = conn.zscore(LIST, &member).await.unwrap();
            score.is_some()
        }
    };
    let gate = Arc::new(Gate {
        started: mpsc::unbounded_channel().0,
        release: Notify::new(),
    });
    let (a, b) = (
        spawn_gated_worker(&queue, gate.clone()),
        spawn_gated_worker(&other, gate),
    );
    for q in [&queue, &other] {
        wait_for(10, "the worker's registration", || async {
            listed(q).await.then_some(())
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
    queue.purge().await.unwrap();
    assert!(!listed(&queue).await, "the purged queue is still listed");
    assert!(listed(&other).await, "another queue was taken off the list");
    other.purge().await.unwrap();
    assert!(!listed(&other).await);
}
