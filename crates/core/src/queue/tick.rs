//! The worker's poll strategy for apalis-redis (see [`Tick`] for why it is ours).

use super::*;

/// Poll strategy that fires every `every` and always leaves a timer armed with the
/// current waker, so an idle worker never misses its next look at the queue.
///
/// While the worker is busy (its `busy` probe says jobs are running, or a job was fetched
/// within the last second) it fires every `busy_every` instead. apalis-core 1.0 drains the
/// lock/ack events of running jobs only when the worker task is woken (`try_recv`, which
/// registers no waker) through a channel of `4 × batch_size` slots; with a 250 ms tick a
/// worker started about 4 jobs a second however many slots it had free (measured by the
/// fleet benchmark). Waking often while busy keeps those events flowing; an idle worker
/// still costs Redis one fetch per `every`.
pub struct Tick {
    every: Duration,
    busy_every: Duration,
    busy: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for Tick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tick")
            .field("every", &self.every)
            .field("busy_every", &self.busy_every)
            .finish_non_exhaustive()
    }
}

/// How often a busy worker wakes (see [`Tick`]).
pub const BUSY_TICK: Duration = Duration::from_millis(20);

impl Tick {
    pub fn new(every: Duration) -> Self {
        Tick {
            every,
            busy_every: BUSY_TICK.min(every),
            busy: None,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }

    /// Fire every [`BUSY_TICK`] while `busy()` is true.
    pub fn with_busy(mut self, busy: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.busy = Some(busy);
        self
    }

    fn period(&self, snapshot: &PollSnapshot) -> Duration {
        let recently_fed = snapshot.total_ready > 0 && snapshot.idle_for < Duration::from_secs(1);
        if recently_fed || self.busy.as_ref().is_some_and(|b| b()) {
            self.busy_every
        } else {
            self.every
        }
    }
}

impl PollStrategy for Tick {
    fn poll_drive(&mut self, cx: &mut Context<'_>, snapshot: &PollSnapshot) -> Poll<Option<()>> {
        let period = self.period(snapshot);
        // A timer armed for the idle period is pulled in when the worker becomes busy.
        let soon = tokio::time::Instant::now() + period;
        if self.sleep.deadline() > soon {
            self.sleep.as_mut().reset(soon);
        }
        let mut fired = false;
        while self.sleep.as_mut().poll(cx).is_ready() {
            let next = tokio::time::Instant::now() + period;
            self.sleep.as_mut().reset(next);
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tick_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn snap(total_ready: u64, idle_for: Duration) -> PollSnapshot {
        PollSnapshot {
            consecutive_ready: 0,
            total_ready,
            total_pending: 0,
            idle_for,
        }
    }

    #[tokio::test]
    async fn a_busy_worker_wakes_often_an_idle_one_at_its_interval() {
        let every = Duration::from_millis(250);
        let idle = Tick::new(every);
        // Never fed, or fed long ago: the idle interval.
        assert_eq!(idle.period(&snap(0, Duration::ZERO)), every);
        assert_eq!(idle.period(&snap(5, Duration::from_secs(3))), every);
        // A job fetched within the last second: busy.
        assert_eq!(idle.period(&snap(5, Duration::from_millis(10))), BUSY_TICK);
        // Jobs running (the probe), however long ago the last fetch was.
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = running.clone();
        let busy = Tick::new(every).with_busy(Arc::new(move || r.load(Ordering::SeqCst)));
        assert_eq!(busy.period(&snap(5, Duration::from_secs(3))), BUSY_TICK);
        running.store(false, Ordering::SeqCst);
        assert_eq!(busy.period(&snap(5, Duration::from_secs(3))), every);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timer_is_pulled_in_when_the_worker_becomes_busy() {
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = running.clone();
        let mut tick =
            Tick::new(Duration::from_secs(5)).with_busy(Arc::new(move || r.load(Ordering::SeqCst)));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let s = snap(0, Duration::ZERO);
        assert!(tick.poll_drive(&mut cx, &s).is_pending());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(
            tick.poll_drive(&mut cx, &s).is_pending(),
            "idle: 5 s not over"
        );
        running.store(true, Ordering::SeqCst);
        assert!(tick.poll_drive(&mut cx, &s).is_pending());
        tokio::time::advance(BUSY_TICK).await;
        assert!(
            tick.poll_drive(&mut cx, &s).is_ready(),
            "busy: fires after {BUSY_TICK:?}, not after the idle 5 s"
        );
    }
}
