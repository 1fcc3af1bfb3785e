//! Which export timeout applies to a device (issue #18, "Big configs on slow routers").
//!
//! Why: one fleet-wide `CONFIG_BACKUP_COMMAND_TIMEOUT` fails the routers with the largest
//! configs (full BGP tables, thousands of firewall rules) every time, and a failure that
//! repeats forever is worse than a slow success. So an operator can set a timeout on a
//! device or on its credential profile, and without one the timeout adapts: a device whose
//! recent successful exports took long gets a proportionally longer one, and a device that
//! keeps timing out gets a longer one after each timeout — both bounded by
//! `ROSBACKUP_EXPORT_TIMEOUT_MAX`, so a dead router never holds a worker slot for long.
//!
//! [`effective`] decides, as a pure function of the settings, the overrides and the
//! device's recent runs (read by [`Store::timeout_inputs`] from `backup_runs`, where every
//! run records the timeout that applied, its source, how long a successful export took and
//! whether the timeout expired). The worker applies it to the export and to the Go poller's
//! lock TTL ([`crate::seed_lock::ttl`]); `devices show`, the API and the device page show
//! the same decision.
//!
//! What bounds a long timeout is still the lease (ARCHITECTURE.md): the export runs under
//! a lease renewed every third of its TTL, and is dropped at the last confirmed renewal +
//! TTL − TTL/10 when renewals stop, whatever the timeout; a longer timeout only lets a
//! healthy worker hold its lease (and its slot) longer, at most the effective timeout plus
//! twice the connect timeout (plus the binary step's own timeout when one is due).

use crate::store::{Store, StoreError};
use std::time::Duration;
use uuid::Uuid;

/// The largest override accepted (device or profile), in seconds: one hour. Beyond it a
/// value is a mistake (a millisecond count, an extra zero), not a slow router.
pub const MAX_OVERRIDE_SECONDS: u32 = 3600;

/// A recent successful export's duration is multiplied by this (k).
pub const DURATION_FACTOR: u32 = 2;

/// Each consecutive timeout multiplies the next timeout by this.
pub const GROWTH_PER_TIMEOUT: u32 = 2;

/// The runs looked at (newest first; the lease's statement reads them too, so the
/// number lives in the store), and the successes among them that count.
pub use crate::store::RECENT_RUNS;
pub const RECENT_SUCCESSES: usize = 5;

/// The fleet's timeout and the adaptive default's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutSettings {
    /// `CONFIG_BACKUP_COMMAND_TIMEOUT`.
    pub fleet: Duration,
    /// `ROSBACKUP_EXPORT_TIMEOUT_MAX` (a ceiling below the fleet timeout is the fleet
    /// timeout: adapting never shortens it).
    pub max: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            fleet: Duration::from_secs(60),
            max: Duration::from_secs(600),
        }
    }
}

/// Where the timeout that applies came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutSource {
    /// The device's own override.
    Device,
    /// Its credential profile's override.
    Profile,
    /// Longer than the fleet's, from the device's recent runs.
    Adaptive,
    /// `CONFIG_BACKUP_COMMAND_TIMEOUT`.
    Fleet,
}

impl TimeoutSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutSource::Device => "device",
            TimeoutSource::Profile => "profile",
            TimeoutSource::Adaptive => "adaptive",
            TimeoutSource::Fleet => "fleet",
        }
    }
}

/// One recent run, as much as the decision needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentRun {
    /// A successful export that took this long.
    Success { export: Duration },
    /// The export timeout expired (before or after output had started).
    TimedOut,
    /// Any other failure: it says nothing about how long an export takes.
    Other,
}

/// What [`effective`] decides from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeoutInputs {
    /// The device's override, seconds.
    pub device: Option<u32>,
    /// Its credential profile's override, seconds.
    pub profile: Option<u32>,
    /// Its recent runs that reached the device, newest first.
    pub recent: Vec<RecentRun>,
}

/// The timeout that applies and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Effective {
    /// Whole seconds.
    pub seconds: u32,
    pub source: TimeoutSource,
}

impl Effective {
    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.seconds))
    }
}

/// The export timeout for a device's next run.
///
/// | device override | profile override | recent runs | timeout | source |
/// |---|---|---|---|---|
/// | set | any | any | the device's | `device` |
/// | none | set | any | the profile's | `profile` |
/// | none | none | no success, no timeout | fleet | `fleet` |
/// | none | none | successes | max(fleet, k × the longest of the last 5 successful exports), rounded up to a second | `adaptive` if above fleet, else `fleet` |
/// | none | none | n timeouts since the last success (other failures skipped) | the line above × 2ⁿ | `adaptive` |
/// | none | none | any | never above max(`ROSBACKUP_EXPORT_TIMEOUT_MAX`, fleet) | |
///
/// k is [`DURATION_FACTOR`] (2), the growth [`GROWTH_PER_TIMEOUT`] (2). Overrides are
/// an operator's explicit choice and are not capped by the ceiling (they are validated
/// to 1..=[`MAX_OVERRIDE_SECONDS`] where they are set).
pub fn effective(settings: &TimeoutSettings, inputs: &TimeoutInputs) -> Effective {
    if let Some(seconds) = inputs.device {
        return Effective {
            seconds,
            source: TimeoutSource::Device,
        };
    }
    if let Some(seconds) = inputs.profile {
        return Effective {
            seconds,
            source: TimeoutSource::Profile,
        };
    }
    let fleet = whole_seconds(settings.fleet);
    let ceiling = whole_seconds(settings.max).max(fleet);
    let longest = inputs
        .recent
        .iter()
        .filter_map(|r| match r {
            RecentRun::Success { export } => Some(*export),
            _ => None,
        })
        .take(RECENT_SUCCESSES)
        .max();
    let from_durations = longest.map_or(0, |d| whole_seconds(d.saturating_mul(DURATION_FACTOR)));
    let streak = inputs
        .recent
        .iter()
        .filter(|r| !matches!(r, RecentRun::Other))
        .take_while(|r| matches!(r, RecentRun::TimedOut))
        .count();
    let growth =
        u64::from(GROWTH_PER_TIMEOUT).saturating_pow(u32::try_from(streak).unwrap_or(u32::MAX));
    let seconds = u64::from(fleet.max(from_durations))
        .saturating_mul(growth)
        .min(u64::from(ceiling));
    let seconds = u32::try_from(seconds).unwrap_or(ceiling);
    Effective {
        seconds,
        source: if seconds > fleet {
            TimeoutSource::Adaptive
        } else {
            TimeoutSource::Fleet
        },
    }
}

/// A duration in whole seconds, rounded up (at least 1).
fn whole_seconds(d: Duration) -> u32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(s.max(1)).unwrap_or(u32::MAX)
}

/// Why an override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error("expected a whole number of seconds (1 to {MAX_OVERRIDE_SECONDS}) or \"auto\"")]
    NotANumber,
    #[error("must be at least 1 second (\"auto\" removes the override)")]
    TooSmall,
    #[error("must be at most {MAX_OVERRIDE_SECONDS} seconds (one hour)")]
    TooLarge,
}

/// Check an override given as a number (the API's JSON field).
pub fn check_override(seconds: i64) -> Result<u32, OverrideError> {
    if seconds < 1 {
        Err(OverrideError::TooSmall)
    } else if seconds > i64::from(MAX_OVERRIDE_SECONDS) {
        Err(OverrideError::TooLarge)
    } else {
        u32::try_from(seconds).map_err(|_| OverrideError::TooLarge)
    }
}

/// Parse an override given as text (the CLI, the inventory CSV, the page's form): whole
/// seconds, or `auto` / empty for none.
pub fn parse_override(text: &str) -> Result<Option<u32>, OverrideError> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    if let Some(rest) = t.strip_prefix('-')
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(OverrideError::TooSmall);
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OverrideError::NotANumber);
    }
    match t.parse::<i64>() {
        Ok(n) => check_override(n).map(Some),
        // All digits but too long for an i64: absurd.
        Err(_) => Err(OverrideError::TooLarge),
    }
}

/// One run row as [`Store::timeout_inputs`] reads it.
type RunFacts = (String, bool, Option<i64>);

/// The pure part of reading the history: `(status, timed_out, export_ms)` rows, newest
/// first, into [`RecentRun`]s.
pub fn recent_runs(rows: &[RunFacts]) -> Vec<RecentRun> {
    rows.iter()
        .map(
            |(status, timed_out, ms)| match (status.as_str(), timed_out, ms) {
                ("success", _, Some(ms)) => RecentRun::Success {
                    export: Duration::from_millis(u64::try_from(*ms).unwrap_or(0)),
                },
                (_, true, _) => RecentRun::TimedOut,
                _ => RecentRun::Other,
            },
        )
        .collect()
}

/// The inputs of a leased device's timeout, from its row and the facts its lease's
/// statement returned ([`crate::store::LeaseFacts`]): the same as
/// [`Store::timeout_inputs`] reads, without two more round trips per backup.
pub fn inputs_from_lease(
    device_timeout_seconds: Option<i32>,
    facts: &crate::store::LeaseFacts,
) -> TimeoutInputs {
    let rows: Vec<RunFacts> = facts
        .recent_status
        .iter()
        .zip(&facts.recent_timed_out)
        .zip(&facts.recent_export_ms)
        .map(|((status, timed_out), ms)| (status.clone(), *timed_out, *ms))
        .collect();
    TimeoutInputs {
        device: positive(device_timeout_seconds),
        profile: positive(facts.profile_timeout_seconds),
        recent: recent_runs(&rows),
    }
}

/// An override column's value as seconds (`None`, zero or negative: none).
fn positive(v: Option<i32>) -> Option<u32> {
    v.and_then(|s| u32::try_from(s).ok()).filter(|s| *s > 0)
}

impl Store {
    /// A device's overrides (its own and its profile's) and its last
    /// [`RECENT_RUNS`] runs that reached it (`success` and `failed`; skips and locks say
    /// nothing about the device), in two statements. A success recorded before
    /// `export_ms` existed counts with its whole run's `duration_ms` (an overestimate).
    /// `NotFound` when the device is gone.
    pub async fn timeout_inputs(&self, device_id: Uuid) -> Result<TimeoutInputs, StoreError> {
        let overrides: Option<(Option<i32>, Option<i32>)> = sqlx::query_as(
            "SELECT d.export_timeout_seconds, \
             (SELECT p.export_timeout_seconds FROM credential_profiles p WHERE p.id = d.credential_profile_id) \
             FROM devices d WHERE d.id = $1",
        )
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?;
        let Some((device, profile)) = overrides else {
            return Err(StoreError::NotFound(device_id));
        };
        let rows: Vec<RunFacts> = sqlx::query_as(
            "SELECT status, timed_out, COALESCE(export_ms, duration_ms) FROM backup_runs \
             WHERE device_id = $1 AND status IN ('success', 'failed') ORDER BY id DESC LIMIT $2",
        )
        .bind(device_id)
        .bind(RECENT_RUNS)
        .fetch_all(self.pool())
        .await?;
        Ok(TimeoutInputs {
            device: positive(device),
            profile: positive(profile),
            recent: recent_runs(&rows),
        })
    }

    /// Set or remove (`None`) a device's override. `NotFound` when the device is gone.
    pub async fn set_export_timeout(
        &self,
        device_id: Uuid,
        seconds: Option<u32>,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET export_timeout_seconds = $2, updated_at = now() WHERE id = $1",
        )
        .bind(device_id)
        .bind(seconds.map(|s| i32::try_from(s).unwrap_or(i32::MAX)))
        .execute(self.pool())
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(device_id));
        }
        Ok(())
    }

    /// Set or remove (`None`) a credential profile's override; `false` when the profile
    /// is gone.
    pub async fn set_profile_export_timeout(
        &self,
        profile_id: Uuid,
        seconds: Option<u32>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE credential_profiles SET export_timeout_seconds = $2, updated_at = now() \
             WHERE id = $1",
        )
        .bind(profile_id)
        .bind(seconds.map(|s| i32::try_from(s).unwrap_or(i32::MAX)))
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lease's columns read as the separate statements' rows: overrides of zero or
    /// less are none, the three run columns pair up in order (newest first).
    #[test]
    fn inputs_from_the_lease_s_columns() {
        let facts = crate::store::LeaseFacts {
            profile_timeout_seconds: Some(0),
            recent_status: vec!["success".into(), "failed".into(), "failed".into()],
            recent_timed_out: vec![false, true, false],
            recent_export_ms: vec![Some(1500), None, Some(3)],
            ..Default::default()
        };
        let inputs = inputs_from_lease(Some(30), &facts);
        assert_eq!(inputs.device, Some(30));
        assert_eq!(inputs.profile, None);
        assert_eq!(
            inputs.recent,
            vec![
                RecentRun::Success {
                    export: Duration::from_millis(1500)
                },
                RecentRun::TimedOut,
                RecentRun::Other,
            ]
        );
        let none = inputs_from_lease(Some(-1), &crate::store::LeaseFacts::default());
        assert_eq!(none, TimeoutInputs::default());
    }

    fn settings(fleet: u64, max: u64) -> TimeoutSettings {
        TimeoutSettings {
            fleet: Duration::from_secs(fleet),
            max: Duration::from_secs(max),
        }
    }

    fn ok(ms: u64) -> RecentRun {
        RecentRun::Success {
            export: Duration::from_millis(ms),
        }
    }

    fn auto(recent: Vec<RecentRun>) -> TimeoutInputs {
        TimeoutInputs {
            recent,
            ..TimeoutInputs::default()
        }
    }

    fn eff(seconds: u32, source: TimeoutSource) -> Effective {
        Effective { seconds, source }
    }

    #[test]
    fn the_device_wins_over_the_profile_and_the_profile_over_the_history() {
        let s = settings(60, 600);
        let history = vec![RecentRun::TimedOut, RecentRun::TimedOut, ok(500_000)];
        let both = TimeoutInputs {
            device: Some(30),
            profile: Some(900),
            recent: history.clone(),
        };
        assert_eq!(effective(&s, &both), eff(30, TimeoutSource::Device));
        let profile = TimeoutInputs {
            device: None,
            ..both.clone()
        };
        assert_eq!(effective(&s, &profile), eff(900, TimeoutSource::Profile));
        // Overrides are not capped by the adaptive ceiling: they are the operator's.
        let big = TimeoutInputs {
            device: Some(3600),
            ..TimeoutInputs::default()
        };
        assert_eq!(effective(&s, &big), eff(3600, TimeoutSource::Device));
    }

    #[test]
    fn no_history_or_fast_exports_keep_the_fleet_timeout() {
        let s = settings(60, 600);
        assert_eq!(effective(&s, &auto(vec![])), eff(60, TimeoutSource::Fleet));
        assert_eq!(
            effective(&s, &auto(vec![ok(1_000), RecentRun::Other, ok(29_000)])),
            eff(60, TimeoutSource::Fleet)
        );
        // Exactly half the fleet timeout: k × 30 s = 60 s is not longer.
        assert_eq!(
            effective(&s, &auto(vec![ok(30_000)])),
            eff(60, TimeoutSource::Fleet)
        );
    }

    #[test]
    fn slow_successes_lengthen_it_proportionally_from_the_longest_recent_one() {
        let s = settings(60, 600);
        assert_eq!(
            effective(&s, &auto(vec![ok(40_000)])),
            eff(80, TimeoutSource::Adaptive)
        );
        // The longest of the last five successes, rounded up to a second.
        assert_eq!(
            effective(
                &s,
                &auto(vec![ok(10_000), ok(45_300), RecentRun::Other, ok(20_000)])
            ),
            eff(91, TimeoutSource::Adaptive)
        );
        // A sixth success back is no longer recent.
        let mut old = vec![ok(1_000); 5];
        old.push(ok(200_000));
        assert_eq!(effective(&s, &auto(old)), eff(60, TimeoutSource::Fleet));
        // Bounded by the ceiling.
        assert_eq!(
            effective(&s, &auto(vec![ok(500_000)])),
            eff(600, TimeoutSource::Adaptive)
        );
    }

    #[test]
    fn each_timeout_since_the_last_success_doubles_it_up_to_the_ceiling() {
        let s = settings(60, 600);
        let grown = |n: usize| {
            let mut runs = vec![RecentRun::TimedOut; n];
            runs.push(RecentRun::Other);
            effective(&s, &auto(runs))
        };
        assert_eq!(grown(1), eff(120, TimeoutSource::Adaptive));
        assert_eq!(grown(2), eff(240, TimeoutSource::Adaptive));
        assert_eq!(grown(3), eff(480, TimeoutSource::Adaptive));
        assert_eq!(grown(4), eff(600, TimeoutSource::Adaptive), "bounded");
        assert_eq!(grown(60), eff(600, TimeoutSource::Adaptive), "no overflow");
        // Other failures between timeouts neither break nor extend the streak; a success
        // ends it (and its duration is the new base).
        assert_eq!(
            effective(
                &s,
                &auto(vec![
                    RecentRun::TimedOut,
                    RecentRun::Other,
                    RecentRun::TimedOut,
                    ok(50_000),
                    RecentRun::TimedOut,
                ])
            ),
            eff(400, TimeoutSource::Adaptive)
        );
        assert_eq!(
            effective(&s, &auto(vec![ok(1_000), RecentRun::TimedOut])),
            eff(60, TimeoutSource::Fleet),
            "a success after timeouts ends the growth"
        );
    }

    #[test]
    fn a_ceiling_below_the_fleet_timeout_never_shortens_it() {
        let s = settings(60, 30);
        assert_eq!(
            effective(&s, &auto(vec![RecentRun::TimedOut])),
            eff(60, TimeoutSource::Fleet)
        );
        // Small timeouts (tests) round up to whole seconds.
        let s = settings(1, 8);
        assert_eq!(
            effective(&s, &auto(vec![ok(2_600)])),
            eff(6, TimeoutSource::Adaptive)
        );
    }

    #[test]
    fn overrides_are_whole_seconds_from_one_to_an_hour_or_auto() {
        assert_eq!(parse_override("auto"), Ok(None));
        assert_eq!(parse_override(" AUTO "), Ok(None));
        assert_eq!(parse_override(""), Ok(None));
        assert_eq!(parse_override("300"), Ok(Some(300)));
        assert_eq!(parse_override("3600"), Ok(Some(3600)));
        assert_eq!(parse_override("0"), Err(OverrideError::TooSmall));
        assert_eq!(parse_override("-5"), Err(OverrideError::TooSmall));
        assert_eq!(parse_override("3601"), Err(OverrideError::TooLarge));
        assert_eq!(
            parse_override("99999999999999999999999"),
            Err(OverrideError::TooLarge)
        );
        assert_eq!(parse_override("1.5"), Err(OverrideError::NotANumber));
        assert_eq!(parse_override("60s"), Err(OverrideError::NotANumber));
        assert_eq!(check_override(0), Err(OverrideError::TooSmall));
        assert_eq!(check_override(-1), Err(OverrideError::TooSmall));
        assert_eq!(check_override(86_400), Err(OverrideError::TooLarge));
        assert_eq!(check_override(1), Ok(1));
    }

    #[test]
    fn run_rows_become_recent_runs() {
        let rows = vec![
            ("failed".to_string(), true, Some(1_000)),
            ("failed".to_string(), false, Some(10)),
            ("success".to_string(), false, Some(2_500)),
            ("success".to_string(), false, None),
        ];
        assert_eq!(
            recent_runs(&rows),
            vec![
                RecentRun::TimedOut,
                RecentRun::Other,
                ok(2_500),
                RecentRun::Other
            ]
        );
    }

    #[test]
    fn the_go_pollers_lock_ttl_follows_the_effective_timeout() {
        let s = settings(60, 600);
        let e = effective(&s, &auto(vec![RecentRun::TimedOut]));
        assert_eq!(
            crate::seed_lock::ttl(e.duration()),
            Duration::from_secs(150)
        );
        let d = effective(
            &s,
            &TimeoutInputs {
                device: Some(900),
                ..TimeoutInputs::default()
            },
        );
        assert_eq!(
            crate::seed_lock::ttl(d.duration()),
            Duration::from_secs(930)
        );
    }
}
