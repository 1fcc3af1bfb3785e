//! When a device is due: first-backup jitter, interval or cron, failure backoff.
//!
//! Pure functions of the clock and the device's state, so the enqueuer, the worker (which
//! writes the next due time with each outcome) and the tests agree on the rules:
//!
//! - a new device is first due at now + uniform jitter in [min, max] (so importing 10,000
//!   devices does not make 10,000 routers and our workers busy in the same second);
//! - after a success it is due one interval later, or at the next cron instant;
//! - after a transient failure it is due after a backoff of 5 min, 15 min, then 1 h (cap)
//!   by consecutive failures — unless the regular schedule comes sooner;
//! - `auth_failed` and `host_key_mismatch` block the device (see [`crate::ErrorKind::blocks`]);
//!   blocked devices are never due until an operator acts.

use chrono::{DateTime, Utc};
use rand::Rng;
use std::str::FromStr;
use std::time::Duration;

/// How often a device is backed up.
#[derive(Debug, Clone)]
pub enum Schedule {
    Interval(Duration),
    Cron(Box<cron::Schedule>),
}

/// A cron expression that did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron expression {expr:?}: {reason}")]
pub struct CronError {
    pub expr: String,
    pub reason: String,
}

/// Parse a cron expression. Five fields (`min hour dom month dow`, what operators write
/// in crontabs) are accepted as well as the `cron` crate's six or seven (seconds first,
/// optional year).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, CronError> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {trimmed}"),
        6 | 7 => trimmed.to_string(),
        _ => {
            return Err(CronError {
                expr: expr.to_string(),
                reason: format!("expected 5, 6 or 7 fields, found {fields}"),
            });
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| CronError {
        expr: expr.to_string(),
        reason: e.to_string(),
    })
}

impl Schedule {
    /// The next regular due time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Interval(d) => {
                t + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::hours(6))
            }
            Schedule::Cron(c) => c
                .after(&t)
                .next()
                // A cron expression with no future instant (a past year) never fires;
                // fall back to a day so the device is not due in a loop.
                .unwrap_or(t + chrono::Duration::days(1)),
        }
    }
}

/// The fleet-wide scheduling rules (from the environment).
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub interval: Duration,
    pub cron: Option<Box<cron::Schedule>>,
    pub jitter_min: Duration,
    pub jitter_max: Duration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            interval: Duration::from_secs(21_600),
            cron: None,
            jitter_min: Duration::from_secs(30),
            jitter_max: Duration::from_secs(300),
        }
    }
}

impl ScheduleSettings {
    /// The schedule of one device: its own cron, else its own interval, else the fleet's
    /// cron, else the fleet's interval. A stored per-device cron that no longer parses
    /// falls back to the fleet schedule (it was validated when it was set).
    pub fn for_device(&self, interval_seconds: Option<i32>, cron: Option<&str>) -> Schedule {
        if let Some(Ok(c)) = cron.filter(|c| !c.trim().is_empty()).map(parse_cron) {
            return Schedule::Cron(Box::new(c));
        }
        if let Some(secs) = interval_seconds.filter(|s| *s > 0) {
            return Schedule::Interval(Duration::from_secs(secs as u64));
        }
        match &self.cron {
            Some(c) => Schedule::Cron(c.clone()),
            None => Schedule::Interval(self.interval),
        }
    }

    /// When a device seen for the first time is first due.
    pub fn first_due(&self, now: DateTime<Utc>, rng: &mut impl Rng) -> DateTime<Utc> {
        let lo = self.jitter_min.as_millis() as i64;
        let hi = (self.jitter_max.as_millis() as i64).max(lo);
        now + chrono::Duration::milliseconds(rng.gen_range(lo..=hi))
    }
}

/// Backoff after `consecutive_failures` transient failures in a row (1-based).
pub fn backoff(consecutive_failures: i32) -> Duration {
    match consecutive_failures {
        i32::MIN..=1 => Duration::from_secs(5 * 60),
        2 => Duration::from_secs(15 * 60),
        _ => Duration::from_secs(60 * 60),
    }
}

/// When a device is next due after a transient failure at `now`: the backoff, or the
/// regular schedule if that comes first (a 60 s interval is not stretched to 5 min).
pub fn due_after_failure(
    schedule: &Schedule,
    now: DateTime<Utc>,
    consecutive_failures: i32,
) -> DateTime<Utc> {
    let back = now
        + chrono::Duration::from_std(backoff(consecutive_failures))
            .unwrap_or(chrono::Duration::hours(1));
    back.min(schedule.next_after(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, h, m, s).unwrap()
    }

    #[test]
    fn interval_and_cron() {
        let i = Schedule::Interval(Duration::from_secs(21_600));
        assert_eq!(i.next_after(at(1, 0, 0)), at(7, 0, 0));
        let c = Schedule::Cron(Box::new(parse_cron("30 2 * * *").unwrap()));
        assert_eq!(c.next_after(at(1, 0, 0)), at(2, 30, 0));
        assert_eq!(
            c.next_after(at(2, 30, 0)),
            at(2, 30, 0) + chrono::Duration::days(1)
        );
        let six = parse_cron("0 */15 * * * *").unwrap();
        assert_eq!(
            Schedule::Cron(Box::new(six)).next_after(at(1, 7, 0)),
            at(1, 15, 0)
        );
        assert!(
            parse_cron("* * *")
                .unwrap_err()
                .to_string()
                .contains("found 3")
        );
        assert!(parse_cron("99 * * * *").is_err());
    }

    #[test]
    fn device_override_order() {
        let fleet = ScheduleSettings {
            cron: Some(Box::new(parse_cron("0 3 * * *").unwrap())),
            ..ScheduleSettings::default()
        };
        assert!(matches!(fleet.for_device(None, None), Schedule::Cron(_)));
        assert!(matches!(
            fleet.for_device(Some(60), None),
            Schedule::Interval(d) if d == Duration::from_secs(60)
        ));
        assert_eq!(
            fleet
                .for_device(Some(60), Some("0 4 * * *"))
                .next_after(at(1, 0, 0)),
            at(4, 0, 0)
        );
        // A broken stored cron falls back to the fleet's schedule.
        assert_eq!(
            fleet.for_device(None, Some("nope")).next_after(at(1, 0, 0)),
            at(3, 0, 0)
        );
        let plain = ScheduleSettings::default();
        assert!(matches!(
            plain.for_device(None, Some("  ")),
            Schedule::Interval(d) if d == Duration::from_secs(21_600)
        ));
    }

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let s = ScheduleSettings::default();
        let mut rng = rand::thread_rng();
        let now = at(0, 0, 0);
        let dues: Vec<_> = (0..2000).map(|_| s.first_due(now, &mut rng)).collect();
        assert!(
            dues.iter()
                .all(|d| *d >= now + chrono::Duration::seconds(30)
                    && *d <= now + chrono::Duration::seconds(300))
        );
        let early = dues
            .iter()
            .filter(|d| **d < now + chrono::Duration::seconds(165))
            .count();
        assert!(
            (700..1300).contains(&early),
            "{early} of 2000 in the first half"
        );
    }

    #[test]
    fn backoff_steps_and_caps() {
        let day = Schedule::Interval(Duration::from_secs(86_400));
        let now = at(0, 0, 0);
        assert_eq!(due_after_failure(&day, now, 1), at(0, 5, 0));
        assert_eq!(due_after_failure(&day, now, 2), at(0, 15, 0));
        assert_eq!(due_after_failure(&day, now, 3), at(1, 0, 0));
        assert_eq!(due_after_failure(&day, now, 40), at(1, 0, 0));
        let minute = Schedule::Interval(Duration::from_secs(60));
        assert_eq!(due_after_failure(&minute, now, 3), at(0, 1, 0));
    }
}
