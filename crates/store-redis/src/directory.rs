//! The session directory on the shared Redis: which node owns each
//! local-state session, with an epoch that grows at every change of owner.
//! A session in remote-state mode has no entry. Every change is one Lua
//! script, so two nodes can never both take a session.

use edge_host_api::{StoreError, valid_session_id};
use redis::aio::ConnectionManager;

/// KEYS[1] = the entry. ARGV = me. Takes the session if nobody owns it.
/// Returns {owner, epoch}.
const CLAIM: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then return {owner, redis.call('HGET', KEYS[1], 'epoch')} end
local epoch = redis.call('INCR', 'edge:epoch')
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch)
return {ARGV[1], tostring(epoch)}
"#;

/// KEYS[1] = the entry. ARGV = from, to. Returns {owner, epoch} after.
const TRANSFER: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner ~= ARGV[1] then
  if not owner then return {} end
  return {owner, redis.call('HGET', KEYS[1], 'epoch')}
end
local epoch = redis.call('INCR', 'edge:epoch')
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'epoch', epoch)
return {ARGV[2], tostring(epoch)}
"#;

/// KEYS[1] = the entry. ARGV = me. Drops it if it names me. Returns 1/0.
const RELEASE: &str = r#"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// KEYS[1] = the entry, KEYS[2] = the members set. ARGV = owner, epoch.
/// Drops the entry if it still names that owner at that epoch and the owner
/// is not a live member (by Redis's clock, as membership is). Returns
/// {"revoked"}, {"alive"}, or {"changed", owner, epoch} / {"changed"}.
const REVOKE: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if owner ~= ARGV[1] or epoch ~= ARGV[2] then
  if not owner then return {'changed'} end
  return {'changed', owner, epoch}
end
local expires = redis.call('ZSCORE', KEYS[2], owner)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if expires and tonumber(expires) > now then return {'alive'} end
redis.call('DEL', KEYS[1])
return {'revoked'}
"#;

/// What [`RedisDirectory::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The entry is gone: nobody owns the session now.
    Revoked,
    /// The owner is a live member: nothing changed.
    Alive,
    /// The entry no longer names that owner at that epoch (now: this one).
    Changed(Option<Owner>),
}

/// Who owns a session, and since which change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owner's URL.
    pub url: String,
    /// Grows at every change of owner.
    pub epoch: u64,
}

/// The session directory, on a Redis server.
#[derive(Clone)]
pub struct RedisDirectory {
    conn: ConnectionManager,
    claim: redis::Script,
    transfer: redis::Script,
    release: redis::Script,
    revoke: redis::Script,
}

fn error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("directory: {e}"))
}

fn entry(session: &str) -> Result<String, StoreError> {
    if !valid_session_id(session) {
        return Err(StoreError::InvalidSession);
    }
    Ok(format!("edge:own:{session}"))
}

fn owner(reply: Vec<String>) -> Result<Option<Owner>, StoreError> {
    match reply.as_slice() {
        [] => Ok(None),
        [url, epoch] => Ok(Some(Owner {
            url: url.clone(),
            epoch: epoch.parse().map_err(error)?,
        })),
        other => Err(error(format!("unexpected reply {other:?}"))),
    }
}

impl RedisDirectory {
    /// Over a connection from [`crate::connect`].
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            claim: redis::Script::new(CLAIM),
            transfer: redis::Script::new(TRANSFER),
            release: redis::Script::new(RELEASE),
            revoke: redis::Script::new(REVOKE),
        }
    }

    /// Who owns `session` (`None`: nobody, it is remote-state).
    pub async fn owner(&self, session: &str) -> Result<Option<Owner>, StoreError> {
        let mut conn = self.conn.clone();
        let (url, epoch): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(entry(session)?)
            .arg("owner")
            .arg("epoch")
            .query_async(&mut conn)
            .await
            .map_err(error)?;
        match (url, epoch) {
            (Some(url), Some(epoch)) => owner(vec![url, epoch]),
            _ => Ok(None),
        }
    }

    /// Takes `session` for `me` unless another node owns it; returns the
    /// owner after (`me` when taken, or already owned by `me`).
    pub async fn claim(&self, session: &str, me: &str) -> Result<Owner, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .claim
            .key(entry(session)?)
            .arg(me)
            .invoke_async(&mut conn)
            .await
            .map_err(error)?;
        owner(reply)?.ok_or_else(|| error("claim answered nothing"))
    }

    /// Hands `session` from `from` to `to` if `from` owns it; returns the
    /// owner after (`None`: nobody owned it).
    pub async fn transfer(
        &self,
        session: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<Owner>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .transfer
            .key(entry(session)?)
            .arg(from)
            .arg(to)
            .invoke_async(&mut conn)
            .await
            .map_err(error)?;
        owner(reply)
    }

    /// Gives `session` up if `me` owns it (it leaves local-state mode, or
    /// is deleted). True when it was `me`'s.
    pub async fn release(&self, session: &str, me: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let released: i64 = self
            .release
            .key(entry(session)?)
            .arg(me)
            .invoke_async(&mut conn)
            .await
            .map_err(error)?;
        Ok(released == 1)
    }

    /// Takes `session` away from `from`, an owner that is not a live member
    /// any more (its node died or lost the cluster): the entry is dropped,
    /// atomically with checking that it still names `from` at its epoch and
    /// that `from` has not beaten since.
    pub async fn revoke(&self, session: &str, from: &Owner) -> Result<Revoked, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .revoke
            .key(entry(session)?)
            .key(crate::members::SET)
            .arg(&from.url)
            .arg(from.epoch.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(error)?;
        match reply.first().map(String::as_str) {
            Some("revoked") => Ok(Revoked::Revoked),
            Some("alive") => Ok(Revoked::Alive),
            Some("changed") => Ok(Revoked::Changed(owner(reply[1..].to_vec())?)),
            _ => Err(error(format!("unexpected reply {reply:?}"))),
        }
    }
}
