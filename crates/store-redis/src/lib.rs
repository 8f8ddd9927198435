//! [`StateStore`] on an external Redis server (the "cloud" model).
//!
//! Layout: one hash per session, `edge:s:{session}`, with two fields per key:
//! `v:{key}` (its version) and `d:{key}` (its bytes). Versions come from one
//! counter, `edge:version`, so they never repeat. A commit is a single Lua
//! script: Redis runs it atomically, so the version checks and the writes
//! cannot interleave with another node's commit.
//!
//! [`RedisMembership`]: the cluster's members on the same server;
//! [`RedisDirectory`]: which node owns each local-state session.

mod directory;
mod functions;
mod members;

pub use directory::{Owner, RedisDirectory, Revoked};
pub use functions::RedisFunctions;
pub use members::RedisMembership;

use async_trait::async_trait;
use edge_host_api::{Commit, StateStore, StoreError, Versioned, valid_session_id};
use redis::aio::ConnectionManager;

/// Redis-backed session state.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    commit: redis::Script,
    /// The node committing (the directory's name for it), if in a cluster.
    me: String,
}

/// KEYS[1] = the session hash, KEYS[2] = its directory entry. ARGV = the
/// committing node, n_reads, (key, version|"") × n_reads, n_writes,
/// (op, key, value) × n_writes with op "s" (set) or "d" (delete).
/// Returns "" on success, the key whose version changed, or NUL + the owner
/// when another node owns the session (the fence: a node that is not the
/// owner never writes a local-state session's keys).
const COMMIT_SCRIPT: &str = r#"
local h = KEYS[1]
local owner = redis.call('HGET', KEYS[2], 'owner')
if owner and owner ~= ARGV[1] then return '\0' .. owner end
local i = 2
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key, seen = ARGV[i], ARGV[i + 1]; i = i + 2
  local now = redis.call('HGET', h, 'v:' .. key)
  if now == false then now = '' end
  if now ~= seen then return key end
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  local op, key, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  if op == 's' then
    local version = redis.call('INCR', 'edge:version')
    redis.call('HSET', h, 'v:' .. key, version, 'd:' .. key, value)
  else
    redis.call('HDEL', h, 'v:' .. key, 'd:' .. key)
  end
end
return ''
"#;

/// How long [`connect`] tries before it gives up.
const CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

fn hash_key(session: &str) -> Result<String, StoreError> {
    if !valid_session_id(session) {
        return Err(StoreError::InvalidSession);
    }
    Ok(format!("edge:s:{session}"))
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// A connection to `url` (`redis://host:port[/db]`, or `rediss://` for
/// TLS) that reconnects by itself, shared by the store, the directory and
/// the membership (clones share it). Every command is bounded (5 s to
/// connect, 5 s for an answer): a hung server fails calls with
/// `unavailable`, it never holds them. With `roots` (PEM), a `rediss://`
/// server's certificate must come from one of those authorities; without,
/// from one the system trusts. With `identity` (a PEM certificate chain and
/// its key), the connection presents it to a `rediss://` server that asks
/// for a client certificate (`tls-auth-clients yes`).
pub async fn connect(
    url: &str,
    roots: Option<&[u8]>,
    identity: Option<(&[u8], &[u8])>,
) -> Result<ConnectionManager, StoreError> {
    let tls = url.starts_with("rediss://") && (roots.is_some() || identity.is_some());
    let client = if tls {
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: identity.map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.to_vec(),
                    client_key: key.to_vec(),
                }),
                root_cert: roots.map(<[u8]>::to_vec),
            },
        )
    } else {
        redis::Client::open(url)
    }
    .map_err(redis_error)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(std::time::Duration::from_secs(5))
        .set_response_timeout(std::time::Duration::from_secs(5))
        .set_number_of_retries(3)
        .set_max_delay(1000);
    // A Redis that cannot be reached (or trusted) fails the start within
    // seconds, with its reason, instead of holding it.
    tokio::time::timeout(
        CONNECT_LIMIT,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| StoreError::Backend(format!("redis: no connection within {CONNECT_LIMIT:?}")))?
    .map_err(redis_error)
}

impl RedisStore {
    /// The store over a connection from [`connect`].
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            commit: redis::Script::new(COMMIT_SCRIPT),
            me: String::new(),
        }
    }

    /// Connects to `url` ([`connect`]) and uses it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(connect(url, None, None).await?))
    }

    /// The store as node `me` uses it: its commits pass the directory's
    /// fence for sessions `me` owns.
    pub fn as_node(mut self, me: &str) -> Self {
        self.me = me.to_owned();
        self
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let h = hash_key(session)?;
        let mut conn = self.conn.clone();
        let (version, value): (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(&h)
            .arg(format!("v:{key}"))
            .arg(format!("d:{key}"))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(match (version, value) {
            (Some(version), Some(value)) => Some(Versioned { value, version }),
            _ => None,
        })
    }

    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let h = hash_key(session)?;
        let mut conn = self.conn.clone();
        let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&h)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut out: Vec<(String, u64)> = fields
            .into_iter()
            .filter_map(|(field, value)| {
                let key = field.strip_prefix("v:")?.to_owned();
                let version = std::str::from_utf8(&value).ok()?.parse().ok()?;
                Some((key, version))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn commit(&self, session: &str, commit: &Commit) -> Result<(), StoreError> {
        if commit.is_read_only() {
            return Ok(());
        }
        let h = hash_key(session)?;
        let mut invocation = self.commit.key(&h);
        invocation.key(format!("edge:own:{session}"));
        invocation.arg(&self.me).arg(commit.reads.len());
        for (key, seen) in &commit.reads {
            invocation
                .arg(key)
                .arg(seen.map(|v| v.to_string()).unwrap_or_default());
        }
        invocation.arg(commit.writes.len());
        for (key, value) in &commit.writes {
            match value {
                Some(bytes) => invocation.arg("s").arg(key).arg(bytes.as_slice()),
                None => invocation.arg("d").arg(key).arg(""),
            };
        }
        let mut conn = self.conn.clone();
        let conflict: String = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if conflict.is_empty() {
            Ok(())
        } else if let Some(owner) = conflict.strip_prefix('\0') {
            Err(StoreError::Owned(owner.to_owned()))
        } else {
            Err(StoreError::Conflict { key: conflict })
        }
    }

    async fn delete_session(&self, session: &str) -> Result<usize, StoreError> {
        let n = self.keys(session).await?.len();
        let h = hash_key(session)?;
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(&h)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(n)
    }
}
