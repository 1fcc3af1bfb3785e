//! The Redis side of manual-backup admission (the decisions are in [`crate::manual`]).
//!
//! Two keys beside apalis' own, under the queue's prefix:
//!
//! - `{queue}:manual:device:{device}`: the device's latest manual job, as
//!   `"{requested_at_ms} {job_id}"` (a day's TTL, so deleted devices leave nothing behind;
//!   a slot written in seconds by an older version is read as such);
//! - `{queue}:manual:pending`: a sorted set of the manual jobs not known to be finished,
//!   scored by request time. Its size is what the global bound counts.
//!
//! Reading is plain reads; the one write is [`Queue::claim_manual`], a Lua script that
//! sets the device's slot only if it still holds what the caller read (compare-and-set)
//! and only while the pending set is below the bound. Redis runs a script atomically, so
//! any number of API, enqueuer and CLI processes can race: for one device exactly one
//! wins the slot, and the bound is never passed.

use super::{JobState, Queue, QueueError};
use redis::AsyncCommands;
use uuid::Uuid;

/// A device's latest manual job, as its slot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualSlot {
    pub job_id: String,
    /// Unix milliseconds (the requester's clock): precise enough to order the request
    /// against a change of the device in the same second (see [`crate::manual::decide`]).
    pub requested_at_ms: i64,
}

/// A slot time below this is Unix seconds (written before slots held milliseconds).
const SECONDS_BELOW: i64 = 100_000_000_000;

impl ManualSlot {
    /// Unix seconds of the request.
    pub fn requested_at(&self) -> i64 {
        self.requested_at_ms.div_euclid(1000)
    }

    fn encode(&self) -> String {
        format!("{} {}", self.requested_at_ms, self.job_id)
    }

    fn decode(raw: &str) -> Option<ManualSlot> {
        let (at, id) = raw.split_once(' ')?;
        let at: i64 = at.parse().ok()?;
        Some(ManualSlot {
            requested_at_ms: if at < SECONDS_BELOW { at * 1000 } else { at },
            job_id: id.to_string(),
        })
    }
}

/// What a device's slot says, read for [`crate::manual::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// The slot's raw value (`None`: empty), for the compare-and-set.
    pub raw: Option<String>,
    /// The slot decoded (`None`: empty, or a value we cannot read, which is replaced).
    pub slot: Option<ManualSlot>,
    /// Where apalis holds the slot's job.
    pub state: JobState,
    /// When apalis marked the job done (Unix seconds), for a done job.
    pub done_at: Option<i64>,
}

/// The outcome of [`Queue::claim_manual`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The slot is ours: push the job.
    Claimed,
    /// Someone else changed the slot since it was read: read again.
    Changed,
    /// The pending set holds this many jobs, at or above the bound.
    Full(u64),
}

const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {'changed', 0} end
local n = redis.call('ZCARD', KEYS[2])
if ARGV[6] ~= '' then
  if redis.call('ZSCORE', KEYS[2], ARGV[6]) then n = n - 1 end
end
if n >= tonumber(ARGV[5]) then return {'full', n} end
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[2], ARGV[6]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', 86400)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return {'claimed', n + 1}
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"#;

/// Whether a pending manual job, in `state` and requested `age_s` ago, no longer counts
/// against the bound: finished, aborted, in no set, or gone for longer than the push grace.
pub fn finished_or_lost(state: JobState, age_s: i64, grace_s: i64) -> bool {
    match state {
        JobState::Done | JobState::Killed | JobState::Orphaned => true,
        JobState::Missing => age_s >= grace_s,
        JobState::Pending | JobState::Running | JobState::Failed => false,
    }
}

impl Queue {
    fn manual_device_key(&self, device: Uuid) -> String {
        format!("{}:manual:device:{device}", self.cfg.name)
    }

    fn manual_pending_key(&self) -> String {
        format!("{}:manual:pending", self.cfg.name)
    }

    /// Read a device's manual slot and where its job is.
    pub async fn manual_slot(&self, device: Uuid) -> Result<SlotView, QueueError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(self.manual_device_key(device)).await?;
        let slot = raw.as_deref().and_then(ManualSlot::decode);
        let Some(s) = &slot else {
            return Ok(SlotView {
                raw,
                slot,
                state: JobState::Missing,
                done_at: None,
            });
        };
        let state = self
            .job_states(std::slice::from_ref(&s.job_id))
            .await?
            .first()
            .copied()
            .unwrap_or(JobState::Missing);
        let done_at = if state == JobState::Done {
            let meta = format!("{}:{}", self.cfg.apalis().job_meta_hash(), s.job_id);
            let v: Option<String> = conn.hget(meta, "done_at").await?;
            v.and_then(|v| v.trim().parse().ok())
        } else {
            None
        };
        Ok(SlotView {
            raw,
            slot,
            state,
            done_at,
        })
    }

    /// Take a device's slot for `new` if it still holds `expected` (what
    /// [`Queue::manual_slot`] read) and fewer than `limit` manual jobs are pending
    /// (`replaced`, the slot's previous job, no longer counts: it is finished or lost).
    pub async fn claim_manual(
        &self,
        device: Uuid,
        expected: Option<&str>,
        new: &ManualSlot,
        replaced: Option<&str>,
        limit: u64,
    ) -> Result<Claim, QueueError> {
        let mut conn = self.conn.clone();
        let (word, n): (String, i64) = redis::Script::new(CLAIM)
            .key(self.manual_device_key(device))
            .key(self.manual_pending_key())
            .arg(expected.unwrap_or(""))
            .arg(new.encode())
            .arg(&new.job_id)
            .arg(new.requested_at())
            .arg(limit)
            .arg(replaced.unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        Ok(match word.as_str() {
            "claimed" => Claim::Claimed,
            "full" => Claim::Full(n.max(0) as u64),
            _ => Claim::Changed,
        })
    }

    /// Undo a claim whose job could not be pushed.
    pub async fn release_manual(&self, device: Uuid, slot: &ManualSlot) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.manual_device_key(device))
            .key(self.manual_pending_key())
            .arg(slot.encode())
            .arg(&slot.job_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Manual jobs counted against the bound.
    pub async fn manual_pending(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(conn.zcard(self.manual_pending_key()).await?)
    }

    /// Drop finished and lost jobs from the pending set: the oldest `at_most` of it
    /// (`None`: all of it, a chunk at a time). A job in no set, or gone from Redis and
    /// requested more than `grace_s` ago (its push is not merely still on its way), is
    /// lost. Returns how many were dropped. Not atomic with claims, and need not be: a
    /// job that finished never becomes pending again.
    pub async fn prune_manual(
        &self,
        now: i64,
        grace_s: i64,
        at_most: Option<usize>,
    ) -> Result<u64, QueueError> {
        const CHUNK: usize = 256;
        let mut conn = self.conn.clone();
        let key = self.manual_pending_key();
        let mut dropped = 0u64;
        let mut start = 0isize;
        loop {
            let take = at_most.unwrap_or(CHUNK).min(CHUNK);
            let page: Vec<(String, i64)> = conn
                .zrange_withscores(&key, start, start + take as isize - 1)
                .await?;
            if page.is_empty() {
                break;
            }
            let ids: Vec<String> = page.iter().map(|(id, _)| id.clone()).collect();
            let states = self.job_states(&ids).await?;
            let gone: Vec<&String> = page
                .iter()
                .zip(&states)
                .filter(|((_, at), state)| finished_or_lost(**state, now - *at, grace_s))
                .map(|((id, _), _)| id)
                .collect();
            if !gone.is_empty() {
                let n: u64 = conn.zrem(&key, &gone).await?;
                dropped += n;
            }
            start += (page.len() - gone.len()) as isize;
            if at_most.is_some() || page.len() < take {
                break;
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_garbage_reads_as_empty() {
        let s = ManualSlot {
            job_id: "manual:d:u".into(),
            requested_at_ms: 1_700_000_000_123,
        };
        assert_eq!(ManualSlot::decode(&s.encode()), Some(s));
        assert_eq!(ManualSlot::decode("garbage"), None);
        assert_eq!(ManualSlot::decode("x manual:d:u"), None);
        // A slot an older version wrote in seconds.
        let old = ManualSlot::decode("1700000000 manual:d:u").expect("an old slot");
        assert_eq!(
            (old.requested_at_ms, old.requested_at()),
            (1_700_000_000_000, 1_700_000_000)
        );
    }
}
