//! CPU time and memory of a process, read from `/proc` (Linux).
//!
//! Why: the benchmarks compare our processes with Python peers started as children, so
//! they measure every process the same way from outside — user+system CPU ticks and
//! resident set size — rather than trusting each tool's own numbers.

use std::time::Duration;

/// A point-in-time sample of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU time consumed so far (this process only, not reaped children).
    pub cpu: Duration,
    /// Peak resident set size so far (`VmHWM`), bytes.
    pub peak_rss: u64,
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Samples `pid` (use `std::process::id()` for ourselves). `None` when it has exited.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) … utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tps = ticks_per_second();
    let cpu = Duration::from_micros((utime + stime) * 1_000_000 / tps);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Some(Sample {
        cpu,
        peak_rss: kib("VmHWM:"),
    })
}

/// CPU time of every live thread of `pid` in nanoseconds (the first field of each
/// `/proc/<pid>/task/<tid>/schedstat`), for windows where the 10 ms clock ticks of
/// [`sample`] are too coarse (a process using a millisecond a second). Threads that
/// have exited are not counted: use it for processes whose threads live throughout.
pub fn cpu_precise(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread may end between the listing and the read.
        if let Some(d) = schedstat(&task.ok()?.path()) {
            total += d;
        }
    }
    Some(total)
}

/// On-CPU time of one thread (`/proc/<pid>/task/<tid>`).
fn schedstat(task_dir: &std::path::Path) -> Option<Duration> {
    let text = std::fs::read_to_string(task_dir.join("schedstat")).ok()?;
    let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU time the whole machine has spent busy so far (all cores, every process, kernel
/// included: user, nice, system, irq, softirq and steal from `/proc/stat`). The suites
/// take the difference over a case to charge each client for everything its backups made
/// the machine do — the simulator, PostgreSQL, Redis, NATS — not only its own process.
pub fn machine_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    machine_cpu_from(&stat, ticks_per_second())
}

fn machine_cpu_from(stat: &str, tps: u64) -> Option<Duration> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    Some(Duration::from_micros(
        busy.checked_mul(1_000_000)? / tps.max(1),
    ))
}

/// The shared services whose CPU the suites report by name: what every backup makes
/// PostgreSQL, Redis and NATS do is the part of the machine's CPU a fleet's workers share.
pub const SERVICES: [&str; 3] = ["postgres", "redis-server", "nats-server"];

/// CPU time so far of every live process whose command name is `comm`, each with its
/// reaped children: PostgreSQL's backends end when their connection closes, and the
/// postmaster that reaps them carries their CPU on (`cutime` + `cstime`). Processes of
/// that name the machine runs for others count too, so take differences over a case on
/// an otherwise quiet machine.
pub fn cpu_by_name(comm: &str) -> Duration {
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process may end between the listing and the read.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            ticks += stat_ticks_if_named(&stat, comm).unwrap_or(0);
        }
    }
    Duration::from_micros(ticks * 1_000_000 / ticks_per_second())
}

/// The CPU of each of [`SERVICES`] and of this process at one moment; [`Services::since`]
/// gives each one's share of a case.
#[derive(Debug, Clone)]
pub struct Services {
    each: Vec<(&'static str, Duration)>,
}

impl Services {
    pub fn now() -> Services {
        let mut each: Vec<(&'static str, Duration)> =
            SERVICES.iter().map(|n| (*n, cpu_by_name(n))).collect();
        each.push((
            "bench",
            sample(std::process::id())
                .map(|s| s.cpu)
                .unwrap_or_default(),
        ));
        Services { each }
    }

    /// Each one's CPU between `before` and this sample, as `(name, cpu)`; the names are
    /// those of [`SERVICES`] (`redis-server` as `redis`, …) and `bench` (this process).
    pub fn since(&self, before: &Services) -> Vec<(&'static str, Duration)> {
        self.each
            .iter()
            .zip(&before.each)
            .map(|((name, end), (_, start))| {
                let short = name.strip_suffix("-server").unwrap_or(name);
                (short, end.saturating_sub(*start))
            })
            .collect()
    }
}

/// utime + stime + cutime + cstime of one `/proc/<pid>/stat` line when its command name
/// is `comm`.
fn stat_ticks_if_named(stat: &str, comm: &str) -> Option<u64> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    if stat.get(open + 1..close)? != comm {
        return None;
    }
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the name: state(0) … utime(11) stime(12) cutime(13) cstime(14).
    let mut sum = 0u64;
    for i in 11..=14 {
        sum += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// CPU time of this process's reaped children so far (`getrusage(RUSAGE_CHILDREN)`).
pub fn children_cpu() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: `ru` is a plain C struct written by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Makes a child about to be spawned receive SIGTERM when this process dies, however it
/// dies (a killed `rosbackup-bench` used to leave its workers running, holding PostgreSQL
/// connections). Linux's parent-death signal follows the *thread* that forked, so spawn
/// from a thread that lives as long as the child: the suites spawn from the thread that
/// runs `block_on`, the main thread.
pub fn die_with_parent<C: PreExec>(cmd: &mut C) {
    // SAFETY: the closure only calls prctl and getppid (async-signal-safe) between fork
    // and exec.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec_hook(Box::new(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would signal.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        }));
    }
}

/// `pre_exec` of std's and tokio's `Command`.
pub trait PreExec {
    /// # Safety
    /// As `std::os::unix::process::CommandExt::pre_exec`.
    unsafe fn pre_exec_hook(
        &mut self,
        f: Box<dyn FnMut() -> std::io::Result<()> + Send + Sync + 'static>,
    );
}

impl PreExec for std::process::Command {
    unsafe fn pre_exec_hook(
        &mut self,
        f: Box<dyn FnMut() -> std::io::Result<()> + Send + Sync + 'static>,
    ) {
        use std::os::unix::process::CommandExt;
        // SAFETY: forwarded to the caller.
        unsafe {
            self.pre_exec(f);
        }
    }
}

impl PreExec for tokio::process::Command {
    unsafe fn pre_exec_hook(
        &mut self,
        f: Box<dyn FnMut() -> std::io::Result<()> + Send + Sync + 'static>,
    ) {
        // SAFETY: forwarded to the caller.
        unsafe {
            self.pre_exec(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        // Burn some CPU so the counter moves, and hold memory so RSS is non-zero.
        let before = sample(std::process::id()).expect("own /proc entry");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample(std::process::id()).expect("own /proc entry");
        assert!(after.peak_rss > 0);
        assert!(after.cpu >= before.cpu);
    }

    #[test]
    fn machine_cpu_counts_busy_fields_only() {
        // user 100, nice 20, system 30, idle 5000, iowait 7, irq 3, softirq 2, steal 1,
        // guest 50 (inside user), guest_nice 0.
        let stat = "cpu  100 20 30 5000 7 3 2 1 50 0\ncpu0 50 10 15 2500 3 1 1 0 25 0\n";
        let busy = super::machine_cpu_from(stat, 100).expect("parses");
        assert_eq!(busy, Duration::from_millis(1560));
        assert!(super::machine_cpu_from("intr 1 2 3\n", 100).is_none());
        assert!(super::machine_cpu().is_some_and(|d| d > Duration::ZERO));
    }

    #[test]
    fn precise_cpu_grows_with_work() {
        // This thread's own counter: other test threads may end meanwhile and leave the
        // process total.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let me = std::path::PathBuf::from(format!("/proc/self/task/{tid}"));
        let before = super::schedstat(&me).expect("own schedstat");
        // Spin until the counter shows 50 ms more; a counter that never moves fails at
        // the (generous) wall-clock limit instead of hanging.
        let t = std::time::Instant::now();
        let mut x = 1u64;
        let mut used = Duration::ZERO;
        while used < Duration::from_millis(50) && t.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            used = super::schedstat(&me)
                .expect("own schedstat")
                .saturating_sub(before);
        }
        assert!(
            used >= Duration::from_millis(50),
            "{used:?} after {:?}",
            t.elapsed()
        );
        assert!(super::cpu_precise(std::process::id()).is_some_and(|d| d >= used));
        assert!(super::cpu_precise(u32::MAX).is_none());
    }

    #[test]
    fn a_service_is_counted_by_its_name_with_its_reaped_children() {
        let line = "812 (postgres) S 1 812 812 0 -1 4194560 5 0 0 0 40 20 7 3 20 0 1 0";
        assert_eq!(super::stat_ticks_if_named(line, "postgres"), Some(70));
        assert_eq!(super::stat_ticks_if_named(line, "redis-server"), None);
        // A name with spaces and parentheses: fields start after the last ')'.
        let odd = "9 (a (b) c) S 1 9 9 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0";
        assert_eq!(super::stat_ticks_if_named(odd, "a (b) c"), Some(10));
        assert_eq!(super::stat_ticks_if_named("9 (x) S 1", "x"), None);
        // This test process is found by its own name, and has used some CPU.
        let me = std::fs::read_to_string("/proc/self/comm").expect("own comm");
        let before = super::cpu_by_name(me.trim());
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while super::cpu_by_name(me.trim()) <= before && start.elapsed() < Duration::from_secs(20) {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        assert!(super::cpu_by_name(me.trim()) > before);
    }

    #[test]
    fn exited_process_has_no_sample() {
        assert!(sample(u32::MAX).is_none());
    }

    #[test]
    fn a_child_gets_sigterm_when_the_thread_that_started_it_ends() {
        use std::os::unix::process::ExitStatusExt;
        // The parent-death signal follows the forking thread: a thread that exits
        // stands in for a bench process that dies.
        let mut child = std::thread::spawn(|| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("60");
            super::die_with_parent(&mut cmd);
            cmd.spawn().expect("spawn sleep")
        })
        .join()
        .expect("spawning thread");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
}
