//! Read-only views of the fleet for people: device search, states, activity, freshness.
//!
//! The dashboard and the API ask the same questions — "which devices need attention, and
//! why?", "how many backups per minute, and what failed?", "how old are our backups?" — so
//! the answers live here once, as SQL over the device store. Every query takes an
//! optional tenant and applies it in SQL: a tenant-scoped caller's numbers are computed
//! from its own rows only.
//!
//! A device's *state* is one word, derived in SQL by [`STATE_SQL`] with a fixed precedence
//! (disabled, blocked, offline, backing off, failing, never, ok), so a filter and a count
//! of the same state always agree.

use crate::store::{DEVICE_COLUMNS, Device, Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Error kinds that mean "the device did not answer at all".
pub const OFFLINE_KINDS: [&str; 2] = ["timeout", "connection_refused"];

/// One device's state, in SQL over the `devices` row.
pub const STATE_SQL: &str = "CASE \
    WHEN NOT enabled THEN 'disabled' \
    WHEN blocked_reason IN ('auth_failed', 'credentials_unreadable') THEN 'blocked_auth' \
    WHEN blocked_reason IS NOT NULL THEN 'blocked_host_key' \
    WHEN consecutive_failures > 0 AND last_error_kind IN ('timeout', 'connection_refused') THEN 'offline' \
    WHEN consecutive_failures > 0 AND backoff_until > now() THEN 'backing_off' \
    WHEN consecutive_failures > 0 THEN 'failing' \
    WHEN last_success_at IS NULL THEN 'never' \
    ELSE 'ok' END";

/// The device's tenant's name, in SQL over the `devices` row.
const TENANT_NAME_SQL: &str =
    "(SELECT t.name FROM tenants t WHERE t.id = devices.tenant_id) AS tenant_name";

/// Device states, as [`STATE_SQL`] names them, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Ok,
    Never,
    Failing,
    BackingOff,
    Offline,
    BlockedAuth,
    BlockedHostKey,
    Disabled,
}

impl DeviceState {
    pub const ALL: [DeviceState; 8] = [
        DeviceState::Ok,
        DeviceState::Never,
        DeviceState::Failing,
        DeviceState::BackingOff,
        DeviceState::Offline,
        DeviceState::BlockedAuth,
        DeviceState::BlockedHostKey,
        DeviceState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Ok => "ok",
            DeviceState::Never => "never",
            DeviceState::Failing => "failing",
            DeviceState::BackingOff => "backing_off",
            DeviceState::Offline => "offline",
            DeviceState::BlockedAuth => "blocked_auth",
            DeviceState::BlockedHostKey => "blocked_host_key",
            DeviceState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceState> {
        DeviceState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            DeviceState::Ok => "OK",
            DeviceState::Never => "Waiting for first backup",
            DeviceState::Failing => "Failing",
            DeviceState::BackingOff => "Backing off",
            DeviceState::Offline => "Offline",
            DeviceState::BlockedAuth => "Blocked: credentials",
            DeviceState::BlockedHostKey => "Blocked: host key",
            DeviceState::Disabled => "Disabled",
        }
    }

    /// What the state means, for tooltips and the README.
    pub fn explain(self) -> &'static str {
        match self {
            DeviceState::Ok => "the last backup succeeded",
            DeviceState::Never => "imported, no backup attempted yet",
            DeviceState::Failing => "the last backup failed; a retry is due",
            DeviceState::BackingOff => {
                "the last backup failed; waiting before the next try (5 min, 15 min, then 1 h)"
            }
            DeviceState::Offline => {
                "the last backup failed without an answer (timeout or connection refused)"
            }
            DeviceState::BlockedAuth => {
                "the login was refused: not retried until the credentials change"
            }
            DeviceState::BlockedHostKey => {
                "the host key changed: not retried until it is verified and reset"
            }
            DeviceState::Disabled => "not backed up (disabled by an operator)",
        }
    }

    /// States an operator has to look at.
    pub fn needs_attention(self) -> bool {
        matches!(
            self,
            DeviceState::Failing
                | DeviceState::BackingOff
                | DeviceState::Offline
                | DeviceState::BlockedAuth
                | DeviceState::BlockedHostKey
        )
    }
}

/// What a device listing may filter on. `status` is a [`DeviceState`] name or
/// `attention` (any state that needs an operator).
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    pub tenant_id: Option<Uuid>,
    /// Substring of name or host, or an exact id.
    pub search: Option<String>,
    pub status: Option<StatusFilter>,
    pub error_kind: Option<String>,
    pub sort: DeviceSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

/// A state filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    State(DeviceState),
    /// Any state for which [`DeviceState::needs_attention`] holds.
    Attention,
}

impl StatusFilter {
    pub fn parse(s: &str) -> Option<StatusFilter> {
        if s == "attention" {
            return Some(StatusFilter::Attention);
        }
        DeviceState::parse(s).map(StatusFilter::State)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Attention => "attention",
            StatusFilter::State(s) => s.as_str(),
        }
    }
}

/// Sortable columns (whitelisted: the SQL is built from these, never from input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceSort {
    #[default]
    Name,
    Host,
    Version,
    LastSuccess,
    NextDue,
    State,
    Failures,
}

impl DeviceSort {
    pub const ALL: [DeviceSort; 7] = [
        DeviceSort::Name,
        DeviceSort::Host,
        DeviceSort::Version,
        DeviceSort::LastSuccess,
        DeviceSort::NextDue,
        DeviceSort::State,
        DeviceSort::Failures,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSort::Name => "name",
            DeviceSort::Host => "host",
            DeviceSort::Version => "version",
            DeviceSort::LastSuccess => "last_success",
            DeviceSort::NextDue => "next_due",
            DeviceSort::State => "state",
            DeviceSort::Failures => "failures",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceSort> {
        DeviceSort::ALL.into_iter().find(|d| d.as_str() == s)
    }

    fn column(self) -> &'static str {
        match self {
            DeviceSort::Name => "name",
            DeviceSort::Host => "host",
            DeviceSort::Version => "routeros_version",
            DeviceSort::LastSuccess => "last_success_at",
            DeviceSort::NextDue => "next_due_at",
            DeviceSort::State => "state",
            DeviceSort::Failures => "consecutive_failures",
        }
    }
}

/// A listed device and its state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRow {
    #[sqlx(flatten)]
    pub device: Device,
    pub state: String,
    /// The device's tenant's name, when it has one.
    pub tenant_name: Option<String>,
}

impl DeviceRow {
    pub fn state(&self) -> DeviceState {
        DeviceState::parse(&self.state).unwrap_or(DeviceState::Failing)
    }
}

/// One page of a device listing.
#[derive(Debug, Clone)]
pub struct DevicePage {
    /// Devices matching the filters (all pages).
    pub total: i64,
    pub rows: Vec<DeviceRow>,
}

/// (bucket start, status, error kind, count) as the activity query returns it.
type ActivityRow = (i64, String, Option<String>, i64);

/// Backups finished in one bucket of time, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ActivityBucket {
    /// Start of the bucket.
    pub minute: DateTime<Utc>,
    pub success: i64,
    /// Failures by error kind.
    pub failed: BTreeMap<String, i64>,
}

/// How old the fleet's last successful backups are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AgeBucket {
    pub label: String,
    /// Upper bound in seconds (`None`: unbounded, or never backed up).
    pub max_age_seconds: Option<i64>,
    pub devices: i64,
}

/// Fleet freshness: the headline number.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Freshness {
    /// Enabled devices.
    pub enabled: i64,
    /// Enabled devices with a successful backup within one interval.
    pub fresh: i64,
    /// `fresh / enabled` (1.0 for an empty fleet).
    pub share: f64,
    /// The oldest last-success among enabled devices that have one.
    pub oldest_success: Option<DateTime<Utc>>,
}

/// Devices of one tenant.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct TenantCount {
    pub tenant_id: Uuid,
    /// The tenant's name (`rosbackup tenants`), when it has one.
    pub name: Option<String>,
    pub devices: i64,
}

impl TenantCount {
    /// How people see the tenant: its name, else the start of its id.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{}…", &self.tenant_id.to_string()[..8]),
        }
    }
}

/// A run with its device's name, for fleet-wide feeds.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct RecentRun {
    pub id: i64,
    pub device_id: Uuid,
    pub device_name: String,
    pub tenant_id: Uuid,
    pub job_id: String,
    pub trigger: String,
    pub worker: String,
    pub finished_at: DateTime<Utc>,
    pub status: String,
    pub error_kind: Option<String>,
    pub duration_ms: i64,
}

/// Escape `%`, `_` and `\` for a LIKE pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Dashboard and API queries over the store.
#[derive(Debug, Clone)]
pub struct Report {
    store: Store,
}

impl Report {
    pub fn new(store: Store) -> Report {
        Report { store }
    }

    /// A page of devices matching `q`.
    pub async fn devices(&self, q: &DeviceQuery) -> Result<DevicePage, StoreError> {
        let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let search_id = search.and_then(|s| Uuid::try_parse(s).ok());
        let pattern = search.map(|s| format!("%{}%", like_escape(s)));
        let (state, attention) = match q.status {
            None => (None, false),
            Some(StatusFilter::Attention) => (None, true),
            Some(StatusFilter::State(s)) => (Some(s.as_str()), false),
        };
        // $1 tenant, $2 pattern, $3 id, $4 state, $5 attention, $6 error kind.
        let filtered = format!(
            "SELECT {DEVICE_COLUMNS}, {STATE_SQL} AS state, {TENANT_NAME_SQL} FROM devices \
             WHERE ($1::uuid IS NULL OR tenant_id = $1) \
               AND ($2::text IS NULL OR name ILIKE $2 OR host ILIKE $2 OR id = $3::uuid) \
               AND ($6::text IS NULL OR last_error_kind = $6)"
        );
        let state_filter = "($4::text IS NULL OR state = $4) \
             AND (NOT $5 OR state IN ('failing', 'backing_off', 'offline', 'blocked_auth', 'blocked_host_key'))";
        let dir = if q.descending { "DESC" } else { "ASC" };
        let col = q.sort.column();
        let count_sql = sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM ({filtered}) d WHERE {state_filter}"
        ));
        let page_sql = sqlx::AssertSqlSafe(format!(
            "SELECT * FROM ({filtered}) d WHERE {state_filter} \
             ORDER BY {col} {dir} NULLS LAST, name, id LIMIT $7 OFFSET $8"
        ));
        let total: i64 = sqlx::query_scalar(count_sql)
            .bind(q.tenant_id)
            .bind(&pattern)
            .bind(search_id)
            .bind(state)
            .bind(attention)
            .bind(&q.error_kind)
            .fetch_one(self.store.pool())
            .await?;
        let rows = sqlx::query_as::<_, DeviceRow>(page_sql)
            .bind(q.tenant_id)
            .bind(&pattern)
            .bind(search_id)
            .bind(state)
            .bind(attention)
            .bind(&q.error_kind)
            .bind(q.limit.clamp(1, 1000))
            .bind(q.offset.max(0))
            .fetch_all(self.store.pool())
            .await?;
        Ok(DevicePage { total, rows })
    }

    /// One device with its state (`None` if missing or outside `tenant`).
    pub async fn device(
        &self,
        id: Uuid,
        tenant: Option<Uuid>,
    ) -> Result<Option<DeviceRow>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS}, {STATE_SQL} AS state, {TENANT_NAME_SQL} FROM devices \
             WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
        ));
        Ok(sqlx::query_as::<_, DeviceRow>(sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(self.store.pool())
            .await?)
    }

    /// Devices per state (every state present, zero when none).
    pub async fn states(
        &self,
        tenant: Option<Uuid>,
    ) -> Result<BTreeMap<&'static str, i64>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STATE_SQL} AS state, count(*) FROM devices \
             WHERE ($1::uuid IS NULL OR tenant_id = $1) GROUP BY 1"
        ));
        let rows: Vec<(String, i64)> = sqlx::query_as(sql)
            .bind(tenant)
            .fetch_all(self.store.pool())
            .await?;
        let mut out: BTreeMap<&'static str, i64> =
            DeviceState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (state, n) in rows {
            if let Some(s) = DeviceState::parse(&state) {
                out.insert(s.as_str(), n);
            }
        }
        Ok(out)
    }

    /// Share of enabled devices backed up within one interval (their own, or
    /// `default_interval` for devices without one; cron devices use the default too).
    pub async fn freshness(
        &self,
        tenant: Option<Uuid>,
        default_interval: std::time::Duration,
    ) -> Result<Freshness, StoreError> {
        let (enabled, fresh, oldest): (i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), \
               count(*) FILTER (WHERE last_success_at > now() - make_interval(secs => \
                   COALESCE(backup_interval_seconds, $2)::double precision)), \
               min(last_success_at) \
             FROM devices WHERE enabled AND ($1::uuid IS NULL OR tenant_id = $1)",
        )
        .bind(tenant)
        .bind(i64::try_from(default_interval.as_secs()).unwrap_or(i64::MAX))
        .fetch_one(self.store.pool())
        .await?;
        let share = if enabled == 0 {
            1.0
        } else {
            fresh as f64 / enabled as f64
        };
        Ok(Freshness {
            enabled,
            fresh,
            share,
            oldest_success: oldest,
        })
    }

    /// Runs finished per bucket of `bucket_minutes` over the last `minutes`, oldest
    /// first; buckets without runs are present with zeros so charts have a steady x axis.
    /// Buckets are aligned to multiples of their length since the epoch, computed from one
    /// clock (the database's), so the window and the buckets always agree.
    pub async fn activity(
        &self,
        tenant: Option<Uuid>,
        minutes: i64,
        bucket_minutes: i64,
    ) -> Result<Vec<ActivityBucket>, StoreError> {
        let bucket = bucket_minutes.clamp(1, 24 * 60) * 60;
        let minutes = minutes.clamp(1, 7 * 24 * 60);
        let count = (minutes * 60 + bucket - 1) / bucket;
        // $2: bucket seconds, $3: number of buckets.
        let (now, rows): (i64, Vec<ActivityRow>) = {
            let now: f64 = sqlx::query_scalar("SELECT extract(epoch FROM now())::double precision")
                .fetch_one(self.store.pool())
                .await?;
            let now = now as i64;
            let rows = sqlx::query_as(
                "SELECT (floor(extract(epoch FROM finished_at) / $2) * $2)::bigint, status, error_kind, count(*) \
                 FROM backup_runs \
                 WHERE finished_at >= to_timestamp($4::bigint) \
                   AND ($1::uuid IS NULL OR tenant_id = $1) \
                   AND status IN ('success', 'failed') \
                 GROUP BY 1, 2, 3",
            )
            .bind(tenant)
            .bind(bucket as f64)
            .bind(count)
            .bind(now - now.rem_euclid(bucket) - (count - 1) * bucket)
            .fetch_all(self.store.pool())
            .await?;
            (now, rows)
        };
        let last = now - now.rem_euclid(bucket);
        let mut buckets: BTreeMap<i64, ActivityBucket> = (0..count)
            .map(|i| {
                let start = last - (count - 1 - i) * bucket;
                (
                    start,
                    ActivityBucket {
                        minute: DateTime::from_timestamp(start, 0).unwrap_or_default(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        for (start, status, kind, n) in rows {
            let Some(b) = buckets.get_mut(&start) else {
                continue;
            };
            if status == "success" {
                b.success += n;
            } else {
                *b.failed
                    .entry(kind.unwrap_or_else(|| "unknown".into()))
                    .or_default() += n;
            }
        }
        Ok(buckets.into_values().collect())
    }

    /// Enabled devices by the age of their last successful backup.
    pub async fn backup_ages(&self, tenant: Option<Uuid>) -> Result<Vec<AgeBucket>, StoreError> {
        const EDGES: [(&str, i64); 6] = [
            ("< 15 min", 900),
            ("15 min – 1 h", 3600),
            ("1 – 6 h", 6 * 3600),
            ("6 – 24 h", 86400),
            ("1 – 7 days", 7 * 86400),
            ("> 7 days", i64::MAX),
        ];
        let ages: Vec<Option<f64>> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - last_success_at)::double precision \
             FROM devices WHERE enabled AND ($1::uuid IS NULL OR tenant_id = $1)",
        )
        .bind(tenant)
        .fetch_all(self.store.pool())
        .await?;
        let mut counts = [0i64; EDGES.len()];
        let mut never = 0i64;
        for age in ages {
            match age {
                None => never += 1,
                Some(a) => {
                    let i = EDGES
                        .iter()
                        .position(|(_, max)| a < *max as f64)
                        .unwrap_or(EDGES.len() - 1);
                    counts[i] += 1;
                }
            }
        }
        let mut out: Vec<AgeBucket> = EDGES
            .iter()
            .zip(counts)
            .map(|((label, max), devices)| AgeBucket {
                label: (*label).to_string(),
                max_age_seconds: (*max != i64::MAX).then_some(*max),
                devices,
            })
            .collect();
        out.push(AgeBucket {
            label: "no backup yet".into(),
            max_age_seconds: None,
            devices: never,
        });
        Ok(out)
    }

    /// Tenants with their device counts (all tenants, or just `tenant`).
    pub async fn tenants(&self, tenant: Option<Uuid>) -> Result<Vec<TenantCount>, StoreError> {
        Ok(sqlx::query_as::<_, TenantCount>(
            "SELECT d.tenant_id, t.name, count(*) AS devices \
             FROM devices d LEFT JOIN tenants t ON t.id = d.tenant_id \
             WHERE ($1::uuid IS NULL OR d.tenant_id = $1) GROUP BY 1, 2 \
             ORDER BY t.name NULLS LAST, 1",
        )
        .bind(tenant)
        .fetch_all(self.store.pool())
        .await?)
    }

    /// Error kinds currently present on devices (for filter menus).
    pub async fn error_kinds(&self, tenant: Option<Uuid>) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT last_error_kind FROM devices \
             WHERE last_error_kind IS NOT NULL AND consecutive_failures > 0 \
               AND ($1::uuid IS NULL OR tenant_id = $1) ORDER BY 1",
        )
        .bind(tenant)
        .fetch_all(self.store.pool())
        .await?)
    }

    /// The latest runs across the fleet; `failures_only` keeps failed ones.
    pub async fn recent_runs(
        &self,
        tenant: Option<Uuid>,
        failures_only: bool,
        limit: i64,
    ) -> Result<Vec<RecentRun>, StoreError> {
        Ok(sqlx::query_as::<_, RecentRun>(
            "SELECT r.id, r.device_id, d.name AS device_name, r.tenant_id, r.job_id, r.trigger, \
               r.worker, r.finished_at, r.status, r.error_kind, r.duration_ms \
             FROM backup_runs r JOIN devices d ON d.id = r.device_id \
             WHERE ($1::uuid IS NULL OR r.tenant_id = $1) AND (NOT $2 OR r.status = 'failed') \
             ORDER BY r.id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(failures_only)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.store.pool())
        .await?)
    }

    /// Scheduling view of one tenant's queue, from PostgreSQL (the Redis queue is shared
    /// by all tenants, so a scoped caller's counts come from its own device rows).
    pub async fn tenant_queue(&self, tenant: Uuid) -> Result<TenantQueue, StoreError> {
        Ok(sqlx::query_as::<_, TenantQueue>(
            "SELECT \
               count(*) FILTER (WHERE outstanding_job IS NOT NULL AND next_due_at > now() \
                   AND (lease_expires_at IS NULL OR lease_expires_at <= now())) AS scheduled, \
               count(*) FILTER (WHERE outstanding_job IS NOT NULL AND next_due_at <= now() \
                   AND (lease_expires_at IS NULL OR lease_expires_at <= now())) AS due, \
               count(*) FILTER (WHERE lease_expires_at > now()) AS running \
             FROM devices WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(self.store.pool())
        .await?)
    }
}

/// A tenant's share of the queue (see [`Report::tenant_queue`]).
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct TenantQueue {
    pub scheduled: i64,
    pub due: i64,
    pub running: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_escape("a%b_c\\d"), "a\\%b\\_c\\\\d");
        assert_eq!(like_escape("router-1"), "router-1");
    }

    #[test]
    fn state_and_sort_names_round_trip() {
        for s in DeviceState::ALL {
            assert_eq!(DeviceState::parse(s.as_str()), Some(s));
            assert!(STATE_SQL.contains(&format!("'{}'", s.as_str())));
        }
        for s in DeviceSort::ALL {
            assert_eq!(DeviceSort::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            StatusFilter::parse("attention"),
            Some(StatusFilter::Attention)
        );
        assert_eq!(StatusFilter::parse("bogus"), None);
    }
}
