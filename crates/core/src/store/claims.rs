//! Scheduling claims: an enqueuer claims the devices that are due, each with its
//! deterministic job id, and drops or checks claims whose job ended or vanished.
//!
//! Why apart from the devices: a claim is the fleet's "at most one outstanding scheduled
//! job per device" invariant (set only where none is outstanding, under `SKIP LOCKED`),
//! and these are the statements the enqueuer runs every tick.

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A device the enqueuer claimed: push a job with this id, due at `due_at`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: String,
    pub due_at: DateTime<Utc>,
}

/// The deterministic id of a device's scheduled job for one due slot.
pub fn scheduled_job_id(device_id: &Uuid, due_at: DateTime<Utc>) -> String {
    format!("backup:{device_id}:{}", due_at.timestamp())
}

impl Store {
    /// Claim up to `limit` devices due before `horizon`, oldest first: each gets
    /// `outstanding_job` set to its deterministic job id. Safe with concurrent enqueuers.
    pub async fn claim_due(
        &self,
        horizon: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(CLAIM_SQL)
            .bind(horizon)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(claims_from(rows))
    }

    /// Claim due devices without ever exceeding `cap` outstanding claims, however many
    /// enqueuers run: the count and the claim happen in one transaction under one
    /// advisory lock, so two enqueuers cannot both see the same room. Returns the
    /// outstanding count before the claim and the claims (at most `batch`).
    pub async fn claim_due_capped(
        &self,
        horizon: DateTime<Utc>,
        cap: i64,
        batch: i64,
    ) -> Result<(i64, Vec<Claim>), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CLAIM_LOCK)
            .execute(&mut *tx)
            .await?;
        let outstanding: i64 =
            sqlx::query_scalar("SELECT count(*) FROM devices WHERE outstanding_job IS NOT NULL")
                .fetch_one(&mut *tx)
                .await?;
        let room = (cap - outstanding).min(batch);
        if room <= 0 {
            tx.commit().await?;
            return Ok((outstanding, Vec::new()));
        }
        let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(CLAIM_SQL)
            .bind(horizon)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((outstanding, claims_from(rows)))
    }

    /// Drop a claim (the push failed, the job vanished from Redis, or the job ended
    /// without an outcome). Only the named job's claim is dropped.
    pub async fn release_claim(&self, device_id: Uuid, job_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET outstanding_job = NULL, outstanding_since = NULL \
             WHERE id = $1 AND outstanding_job = $2",
        )
        .bind(device_id)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Drop a claim and move the device's due time (a job that was superseded or found
    /// the device busy): the next claim gets a new slot, hence a new job id.
    pub async fn release_claim_until(
        &self,
        device_id: Uuid,
        job_id: &str,
        next_due_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE devices SET outstanding_job = NULL, outstanding_since = NULL, \
             next_due_at = GREATEST(next_due_at, $3) \
             WHERE id = $1 AND outstanding_job = $2",
        )
        .bind(device_id)
        .bind(job_id)
        .bind(next_due_at)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Claims older than `older_than` (to check against Redis), oldest first.
    pub async fn stale_claims(
        &self,
        older_than: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, outstanding_job FROM devices \
             WHERE outstanding_job IS NOT NULL AND outstanding_since < $1 \
             ORDER BY outstanding_since LIMIT $2",
        )
        .bind(older_than)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Scheduled jobs outstanding (claimed, not yet ended): what the queue cap bounds.
    pub async fn count_outstanding(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM devices WHERE outstanding_job IS NOT NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Age in seconds of the oldest enabled, unblocked device that is due (0 if none).
    pub async fn oldest_due_age(&self) -> Result<f64, StoreError> {
        let v: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - min(next_due_at))::float8 FROM devices \
             WHERE enabled AND blocked_reason IS NULL AND next_due_at <= now()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(v.unwrap_or(0.0).max(0.0))
    }
}

/// The advisory lock enqueuers claim under ([`Store::claim_due_capped`]).
const CLAIM_LOCK: i64 = 0x726f_7362_636c_6169;

/// Claim up to `$2` devices due by `$1`, oldest first (`FOR UPDATE SKIP LOCKED`: racing
/// claimers take different devices); the job id is derived from the due time.
const CLAIM_SQL: &str = "WITH due AS ( \
               SELECT id FROM devices \
               WHERE enabled AND blocked_reason IS NULL AND outstanding_job IS NULL AND next_due_at <= $1 \
               ORDER BY next_due_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE devices d SET \
               outstanding_job = 'backup:' || d.id::text || ':' || floor(extract(epoch FROM d.next_due_at))::bigint::text, \
               outstanding_since = now() \
             FROM due WHERE d.id = due.id AND d.outstanding_job IS NULL \
             RETURNING d.id, d.tenant_id, d.next_due_at";

fn claims_from(rows: Vec<(Uuid, Uuid, DateTime<Utc>)>) -> Vec<Claim> {
    let mut claims: Vec<Claim> = rows
        .into_iter()
        .map(|(device_id, tenant_id, due_at)| Claim {
            job_id: scheduled_job_id(&device_id, due_at),
            device_id,
            tenant_id,
            due_at,
        })
        .collect();
    claims.sort_by_key(|c| c.due_at);
    claims
}
