//! The abuse phase of the soak: while the fleet runs, sample it, kill a random worker
//! every so often and start a replacement, restart Redis with its data gone and NATS and
//! PostgreSQL with theirs kept, when asked; then a quiescent interval in which only exits
//! are watched. What it did and saw ([`Abuse`]) goes to the audit and the report.

use super::*;

/// The private Redis, to restart on its port.
pub(super) struct RedisAt<'a> {
    pub(super) url: &'a str,
    pub(super) port: u16,
    pub(super) dir: &'a Path,
}

/// What the abuse phase did and saw.
pub(super) struct Abuse {
    pub(super) samples: Vec<Sample>,
    pub(super) kills: Vec<KillRecord>,
    pub(super) redis_restarts: Vec<DateTime<Utc>>,
    /// Seconds from the start to the Redis restart.
    pub(super) redis_restart_t: Option<f64>,
    pub(super) keys_after_restart: Option<u64>,
    pub(super) service_restarts: Vec<ServiceRestart>,
    pub(super) unexpected: Vec<String>,
    pub(super) abuse_ended_at: DateTime<Utc>,
    /// Seconds the abuse lasted.
    pub(super) total: f64,
}

/// The abuse phase: sample every `sample_every`, kill a worker every `kill_every` (and
/// start a replacement), restart the services when asked; then a quiescent interval in
/// which only exits are watched.
pub(super) async fn abuse(
    opts: &SoakOptions,
    running: &mut Running,
    fleet: &mut Spawner<'_>,
    redis: &RedisAt<'_>,
    store: &Store,
) -> Result<Abuse, SoakError> {
    let t0 = Instant::now();
    let abuse_end = t0 + opts.duration;
    let mut samples: Vec<Sample> = Vec::new();
    let mut kills: Vec<KillRecord> = Vec::new();
    let mut restarts: Vec<DateTime<Utc>> = Vec::new();
    let mut restart_t: Option<f64> = None;
    let mut keys_after_restart = None;
    let mut unexpected: Vec<String> = Vec::new();
    let pick_pause = |r: &mut rand::rngs::ThreadRng| {
        opts.kill_every.map(|(lo, hi)| {
            if hi > lo {
                Duration::from_millis(r.gen_range(lo.as_millis() as u64..=hi.as_millis() as u64))
            } else {
                lo
            }
        })
    };
    let mut next_kill = pick_pause(&mut rand::thread_rng()).map(|d| t0 + d);
    let mut next_restart = opts.redis_restart_at.map(|d| t0 + d);
    let mut service_restarts: Vec<ServiceRestart> = Vec::new();
    let mut next_service_restarts: Vec<(Instant, Restartable)> = opts
        .service_restarts()
        .map(|(d, which)| (t0 + d, which))
        .collect();
    let mut next_sample = t0;
    let mut last_progress = t0;
    let mut interrupted = std::pin::pin!(rosbackup_core::shutdown::signal());
    loop {
        let now = Instant::now();
        if now >= abuse_end {
            break;
        }
        check_exits(running, &mut unexpected);
        if now >= next_sample {
            samples.push(sample(running, redis.url, t0).await);
            next_sample += opts.sample_every;
        }
        if let Some(at) = next_kill
            && now >= at
            && !running.workers.is_empty()
        {
            let i = rand::thread_rng().gen_range(0..running.workers.len());
            let mut w = running.workers.remove(i);
            // SAFETY: kill(2) on a child we spawned and still own.
            unsafe {
                libc::kill(w.pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = w.child.wait().await;
            say(format!("kill -9     {} (pid {})", w.name, w.pid));
            kills.push(KillRecord {
                at: Utc::now(),
                worker: w.name.clone(),
                pid: w.pid,
            });
            running.workers.push(fleet.worker()?);
            next_kill = pick_pause(&mut rand::thread_rng()).map(|d| Instant::now() + d);
        }
        if let Some(at) = next_restart
            && now >= at
        {
            next_restart = None;
            if let Some(r) = running.redis.as_mut() {
                r.stop(Duration::from_secs(10)).await;
            }
            running.redis = None;
            let r = services::redis_at("redis://127.0.0.1/0", redis.port, redis.dir).await?;
            running.redis = Some(r);
            restarts.push(Utc::now());
            restart_t = Some(t0.elapsed().as_secs_f64());
            keys_after_restart = redis_keys(redis.url).await;
            say(format!(
                "Redis      restarted empty (DBSIZE {})",
                keys_after_restart.map_or("?".into(), |k| k.to_string())
            ));
        }
        if let Some(i) = next_service_restarts.iter().position(|(at, _)| now >= *at) {
            let (_, which) = next_service_restarts.remove(i);
            service_restarts.push(restart_service(running, which, &opts.dir).await?);
        }
        if now.duration_since(last_progress) >= Duration::from_secs(60) {
            last_progress = now;
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM backup_runs WHERE status = 'success'")
                    .fetch_one(store.pool())
                    .await
                    .unwrap_or(-1);
            say(format!(
                "progress   {:.0} s: {done} successful backups, {} kills, last sample {}",
                t0.elapsed().as_secs_f64(),
                kills.len(),
                samples
                    .last()
                    .map(|s| format!("redis keys {:?}, workers {}", s.redis_keys, s.workers.len()))
                    .unwrap_or_default()
            ));
        }
        tokio::select! {
            _ = &mut interrupted => {
                return Err(SoakError::Setup("interrupted".into()));
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    let abuse_ended_at = Utc::now();
    let total = t0.elapsed().as_secs_f64();
    say(format!(
        "quiescent  abuse over after {total:.0} s; {} s more for the last window",
        opts.quiescent().as_secs()
    ));
    let q_end = Instant::now() + opts.quiescent();
    while Instant::now() < q_end {
        check_exits(running, &mut unexpected);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Abuse {
        samples,
        kills,
        redis_restarts: restarts,
        redis_restart_t: restart_t,
        keys_after_restart,
        service_restarts,
        unexpected,
        abuse_ended_at,
        total,
    })
}

/// A shared service the soak restarts with its data kept (Redis, restarted empty, is
/// handled on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restartable {
    Nats,
    Postgres,
}

impl Restartable {
    /// The name its [`Service`] carries (and the report shows).
    pub(super) fn name(self) -> &'static str {
        match self {
            Restartable::Nats => "NATS",
            Restartable::Postgres => "PostgreSQL",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Restartable::Nats => 4222,
            Restartable::Postgres => 5432,
        }
    }

    /// PostgreSQL gets its fast shutdown (SIGINT: sessions are cut, as a crash or a
    /// failover cuts them; SIGTERM would wait for every client), NATS SIGTERM.
    fn stop_signal(self) -> libc::c_int {
        match self {
            Restartable::Nats => libc::SIGTERM,
            Restartable::Postgres => libc::SIGINT,
        }
    }

    async fn start(self, url: &str, port: u16, dir: &Path) -> Result<Service, ServiceError> {
        match self {
            Restartable::Nats => services::nats_at(url, port, dir).await,
            Restartable::Postgres => services::postgres_at(url, port, dir).await,
        }
    }
}

impl SoakOptions {
    /// The services to restart and when, from the start.
    pub(super) fn service_restarts(&self) -> impl Iterator<Item = (Duration, Restartable)> {
        [
            (self.nats_restart_at, Restartable::Nats),
            (self.postgres_restart_at, Restartable::Postgres),
        ]
        .into_iter()
        .filter_map(|(at, which)| at.map(|d| (d, which)))
    }
}

/// Restart the private NATS or PostgreSQL on its port with its data kept. Returns when
/// it answers again.
async fn restart_service(
    running: &mut Running,
    which: Restartable,
    dir: &Path,
) -> Result<ServiceRestart, SoakError> {
    let name = which.name();
    let i = running
        .services
        .iter()
        .position(|s| s.name == name && s.private())
        .ok_or_else(|| SoakError::Setup(format!("{name} is not a private server of the soak")))?;
    let mut svc = running.services.remove(i);
    let port = services::host_port(&svc.url, which.default_port())
        .map(|(_, p)| p)
        .ok_or_else(|| SoakError::Setup(format!("{name}: no port in its URL")))?;
    let stopped = Instant::now();
    svc.stop_with(which.stop_signal(), Duration::from_secs(30))
        .await;
    let url = svc.url.clone();
    let again = match which.start(&url, port, dir).await {
        Ok(s) => s,
        Err(e) => {
            // Keep the stopped one listed so the cleanup still knows about it.
            running.services.push(svc);
            return Err(e.into());
        }
    };
    running.services.push(again);
    let down_seconds = stopped.elapsed().as_secs_f64();
    say(format!(
        "{name:<10} restarted (down {down_seconds:.1} s, data kept)"
    ));
    Ok(ServiceRestart {
        service: name.into(),
        at: Utc::now(),
        down_seconds,
        first_success_after_seconds: None,
    })
}
