//! Cluster membership on the shared Redis: every node writes itself into a
//! sorted set scored by when its entry expires (Redis's own clock, so node
//! clocks may disagree), with its description beside it; a node that stops
//! beating drops out after the TTL. Entries past their time are removed by
//! whoever beats next.

use edge_host_api::StoreError;
use edge_proto::Member;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// KEYS: the set, the descriptions. ARGV: url, ttl ms, description JSON.
const BEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, url in ipairs(gone) do redis.call('HDEL', KEYS[2], url) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"#;

/// KEYS: the set, the descriptions. Returns the live members' descriptions.
const LIST: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(live))
"#;

/// The sorted set of members, scored by when each entry expires (ms).
pub(crate) const SET: &str = "edge:members";
const INFO: &str = "edge:member-info";

/// The cluster's members, on a Redis server.
#[derive(Clone)]
pub struct RedisMembership {
    conn: ConnectionManager,
    beat: redis::Script,
    list: redis::Script,
}

fn error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("membership: {e}"))
}

impl RedisMembership {
    /// Over a connection from [`crate::connect`].
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            beat: redis::Script::new(BEAT),
            list: redis::Script::new(LIST),
        }
    }

    /// Writes (or renews) `me`, live for `ttl` from now.
    pub async fn beat(&self, me: &Member, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(me).map_err(error)?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .beat
            .key(SET)
            .key(INFO)
            .arg(&me.url)
            .arg(ttl.as_millis() as u64)
            .arg(json)
            .invoke_async(&mut conn)
            .await
            .map_err(error)?;
        Ok(())
    }

    /// The members whose entries have not expired, sorted by URL.
    pub async fn members(&self) -> Result<Vec<Member>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Vec<Option<String>> = self
            .list
            .key(SET)
            .key(INFO)
            .invoke_async(&mut conn)
            .await
            .map_err(error)?;
        let mut members: Vec<Member> = raw
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect();
        members.sort_by(|a, b| a.url.cmp(&b.url));
        Ok(members)
    }

    /// Removes `url` at once (a node shutting down).
    pub async fn leave(&self, url: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .zrem(SET, url)
            .ignore()
            .hdel(INFO, url)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(error)?;
        Ok(())
    }
}
