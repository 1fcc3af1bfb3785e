//! The soak's samples and their flatness verdicts (the module docs of [`super`] say what
//! "flat" means). Pure, so growth and noise can be fabricated in tests.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Relative tolerance of the flatness checks (see the module docs).
pub const FLAT_REL: f64 = 0.15;
/// Absolute allowance for RSS series, KiB.
pub const FLAT_ABS_RSS_KIB: f64 = 16.0 * 1024.0;
/// Absolute allowance for open-fd series.
pub const FLAT_ABS_FDS: f64 = 32.0;
/// Absolute allowance for the Redis key count.
pub const FLAT_ABS_KEYS: f64 = 50.0;

/// One sample of one process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub fds: u64,
}

/// One sampling instant.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    pub enqueuer: Option<ProcSample>,
    pub simulator: Option<ProcSample>,
    /// Per live worker (name → sample).
    pub workers: BTreeMap<String, ProcSample>,
    /// `DBSIZE` of the private Redis (`None` while it is down).
    pub redis_keys: Option<u64>,
}

/// A sampled series and its verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub samples: usize,
    pub first: f64,
    pub last: f64,
    pub max: f64,
    /// Least-squares slope, units per minute.
    pub slope_per_min: f64,
    pub reference_avg: f64,
    pub last_third_avg: f64,
    pub allowed: f64,
    pub flat: bool,
}

/// Evaluate one series. `points` are (seconds, value); `reference` is the window the last
/// third is compared with (default: the second third).
pub fn series(
    name: &str,
    points: &[(f64, f64)],
    total: f64,
    reference: Option<(f64, f64)>,
    abs: f64,
) -> Series {
    let third = total / 3.0;
    let avg = |from: f64, to: f64| {
        let v: Vec<f64> = points
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, v)| *v)
            .collect();
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let (rf, rt) = reference.unwrap_or((third, 2.0 * third));
    let reference_avg = avg(rf, rt);
    let last_avg = avg(2.0 * third, f64::INFINITY);
    let n = points.len() as f64;
    let slope = if points.len() >= 2 {
        let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
        let num: f64 = points.iter().map(|(t, v)| (t - mt) * (v - mv)).sum();
        let den: f64 = points.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
        if den > 0.0 { num / den * 60.0 } else { 0.0 }
    } else {
        0.0
    };
    let (flat, reference_avg, last_third_avg, allowed) = match (reference_avg, last_avg) {
        (Some(r), Some(l)) => {
            let allowed = r * (1.0 + FLAT_REL) + abs;
            (l <= allowed, r, l, allowed)
        }
        // Too few samples to say anything: not flat (a soak must be long enough).
        _ => (false, 0.0, 0.0, 0.0),
    };
    Series {
        name: name.to_string(),
        samples: points.len(),
        first: points.first().map_or(0.0, |p| p.1),
        last: points.last().map_or(0.0, |p| p.1),
        max: points.iter().map(|p| p.1).fold(0.0, f64::max),
        slope_per_min: slope,
        reference_avg,
        last_third_avg,
        allowed,
        flat,
    }
}

/// The series the soak reports, from its samples.
pub fn all_series(samples: &[Sample], total: f64, redis_restart: Option<f64>) -> Vec<Series> {
    let pick = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t, v)))
            .collect()
    };
    let third = total / 3.0;
    let keys_reference = redis_restart
        .filter(|r| *r > third)
        .map(|r| ((r - third).max(0.0), r));
    vec![
        series(
            "enqueuer RSS KiB",
            &pick(&|s| s.enqueuer.map(|p| p.rss_kib as f64)),
            total,
            None,
            FLAT_ABS_RSS_KIB,
        ),
        series(
            "enqueuer fds",
            &pick(&|s| s.enqueuer.map(|p| p.fds as f64)),
            total,
            None,
            FLAT_ABS_FDS,
        ),
        series(
            "worker RSS KiB (largest live)",
            &pick(&|s| {
                s.workers
                    .values()
                    .map(|p| p.rss_kib as f64)
                    .reduce(f64::max)
            }),
            total,
            None,
            FLAT_ABS_RSS_KIB,
        ),
        series(
            "worker fds (largest live)",
            &pick(&|s| s.workers.values().map(|p| p.fds as f64).reduce(f64::max)),
            total,
            None,
            FLAT_ABS_FDS,
        ),
        series(
            "simulator RSS KiB",
            &pick(&|s| s.simulator.map(|p| p.rss_kib as f64)),
            total,
            None,
            FLAT_ABS_RSS_KIB,
        ),
        series(
            "simulator fds",
            &pick(&|s| s.simulator.map(|p| p.fds as f64)),
            total,
            None,
            FLAT_ABS_FDS,
        ),
        series(
            "Redis keys",
            &pick(&|s| s.redis_keys.map(|k| k as f64)),
            total,
            keys_reference,
            FLAT_ABS_KEYS,
        ),
    ]
}

/// RSS (KiB) and open fds of a process, from /proc.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample { rss_kib, fds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_not_flat_and_noise_is() {
        let grow: Vec<(f64, f64)> = (0..90)
            .map(|i| (i as f64, 100_000.0 + i as f64 * 2_000.0))
            .collect();
        let s = series("x", &grow, 90.0, None, FLAT_ABS_RSS_KIB);
        assert!(!s.flat, "{s:?}");
        assert!(s.slope_per_min > 100_000.0);
        let noise: Vec<(f64, f64)> = (0..90)
            .map(|i| {
                (
                    i as f64,
                    100_000.0 + if i % 2 == 0 { 3_000.0 } else { -3_000.0 },
                )
            })
            .collect();
        let s = series("x", &noise, 90.0, None, FLAT_ABS_RSS_KIB);
        assert!(s.flat, "{s:?}");
        // Too few samples is not a pass.
        assert!(!series("x", &[(1.0, 1.0)], 90.0, None, 0.0).flat);
    }

    #[test]
    fn a_redis_restart_moves_the_key_count_reference() {
        // Keys: 1000 until the restart at 50 s, then 0 rising back to 1000 by 80 s.
        let pts: Vec<(f64, f64)> = (0..90)
            .map(|i| {
                let t = i as f64;
                let v = if t < 50.0 {
                    1000.0
                } else {
                    ((t - 50.0) * 33.0).min(1000.0)
                };
                (t, v)
            })
            .collect();
        let series = all_series(
            &pts.iter()
                .map(|(t, v)| Sample {
                    t: *t,
                    redis_keys: Some(*v as u64),
                    ..Sample::default()
                })
                .collect::<Vec<_>>(),
            90.0,
            Some(50.0),
        );
        let keys = series
            .iter()
            .find(|s| s.name == "Redis keys")
            .expect("keys");
        assert!(keys.flat, "{keys:?}");
        assert!((keys.reference_avg - 1000.0).abs() < 1.0);
    }
}
