//! The Go poller's per-device Redis lock, so rosbackup workers and the-other-dude's Go
//! pollers never back up the same router at once while both run during a cutover.
//!
//! The Go poller (bsm/redislock) holds `backup:device:{id}` around each export: `SET key
//! token NX PX ttl` with a random token and a TTL of the command timeout + 30 s, and
//! releases it only if the value is still its token. We take the same key the same way,
//! in addition to our own lease (which fences everything we record); a device whose lock
//! someone else holds is skipped like a device leased by another execution. The key is
//! not prefixed by our queue name: the Go pollers must see it.
//!
//! Our token is the lease token of the execution that holds it. So when an execution of
//! ours dies mid-export (`kill -9`) and the next one takes its expired lease over, the
//! stale lock it left is recognised as ours and replaced, instead of blocking the device
//! for the Go poller's longer TTL; a Go poller's lock is never replaced.
//!
//! The device's online status (the seed's `device:{id}:status`) is read by the same
//! script, before the lock is taken, so that a backup costs Redis one round trip for
//! both (issue #20); an offline device's lock is not taken. The scripts are built once
//! per process: [`redis::Script::new`] hashes its source on every call.

use redis::aio::ConnectionLike;
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// The Go poller's key for a device.
pub fn key(device_id: &Uuid) -> String {
    format!("backup:device:{device_id}")
}

/// The Go poller's TTL: the command timeout plus 30 s.
pub fn ttl(command_timeout: Duration) -> Duration {
    command_timeout + Duration::from_secs(30)
}

/// When the device's status (`KEYS[2]`) is present and not `online`: `{2, 0}`, the lock
/// untouched (the seed's rule: no key is "maybe online"). Otherwise take the lock key
/// (`KEYS[1]`) when it is free or holds `stale` (the token of a dead execution of ours):
/// `{1, 0}`; else `{0, PTTL}`. One script, so it is atomic like `SET NX`.
const ACQUIRE: &str = r#"local s = redis.call("get", KEYS[2])
if s and s ~= "online" then
  return {2, 0}
end
local v = redis.call("get", KEYS[1])
if (not v) or (ARGV[3] ~= "" and v == ARGV[3]) then
  redis.call("set", KEYS[1], ARGV[1], "PX", ARGV[2])
  return {1, 0}
end
return {0, redis.call("pttl", KEYS[1])}"#;

/// Delete the key only while it still holds our token (the holder's compare-and-delete).
const RELEASE: &str = r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#;

static ACQUIRE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACQUIRE));
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));

/// A lock we hold; [`SeedLock::release`] gives it back.
#[derive(Debug)]
pub struct SeedLock {
    key: String,
    token: String,
}

/// What trying to take the lock found.
#[derive(Debug)]
pub enum Attempt {
    Obtained(SeedLock),
    /// Someone else holds it for about this long (`None`: no expiry or already gone).
    Held(Option<Duration>),
    /// The device's status key says it is not online; the lock was not taken.
    Offline,
}

impl SeedLock {
    /// Unless the device's status key (`status_key`, [`crate::queue::status_key`]) says
    /// it is offline, take the device's lock with `token` (free, or held by `stale`, a
    /// dead execution of ours), for `ttl`.
    pub async fn acquire<C: ConnectionLike + Send>(
        conn: &mut C,
        device_id: &Uuid,
        status_key: &str,
        ttl: Duration,
        token: &Uuid,
        stale: Option<&Uuid>,
    ) -> redis::RedisResult<Attempt> {
        let key = key(device_id);
        let token = token.simple().to_string();
        let stale = stale.map(|t| t.simple().to_string()).unwrap_or_default();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let (got, pttl): (i64, i64) = ACQUIRE_SCRIPT
            .key(&key)
            .key(status_key)
            .arg(&token)
            .arg(ms)
            .arg(&stale)
            .invoke_async(conn)
            .await?;
        match got {
            1 => Ok(Attempt::Obtained(SeedLock { key, token })),
            2 => Ok(Attempt::Offline),
            _ => Ok(Attempt::Held(
                u64::try_from(pttl).ok().map(Duration::from_millis),
            )),
        }
    }

    /// Release the lock if it is still ours; `Ok(false)` when it had expired or been
    /// taken by someone else meanwhile.
    pub async fn release<C: ConnectionLike + Send>(self, conn: &mut C) -> redis::RedisResult<bool> {
        let n: i64 = RELEASE_SCRIPT
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(conn)
            .await?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_pollers_key_and_ttl() {
        let id = Uuid::parse_str("7d3f2a1e-0000-4000-8000-000000000001").expect("uuid");
        assert_eq!(
            key(&id),
            "backup:device:7d3f2a1e-0000-4000-8000-000000000001"
        );
        assert_eq!(ttl(Duration::from_secs(60)), Duration::from_secs(90));
    }
}
