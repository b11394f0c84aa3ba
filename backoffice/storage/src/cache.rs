//! The shared cache: short-lived values (sessions, looked-up settings) and atomic counters
//! (failed logins, rate limits), with expiry.
//!
//! [`Cache`] is in-process by default (one backoffice process) and Redis when processes must
//! share it (`cache.redis = "redis://…"`). On Redis every key gets a prefix (`openteller:` by
//! default), so one Redis can serve several deployments or test runs.
//!
//! [`CacheConfig`] (`[cache]`) builds both the cache and the [`Bus`], which share the
//! connection for commands.
//!
//! What this module must never do: let a counter live forever because a process died between
//! two commands (the increment and its expiry are one Lua script on Redis), hold a lock across
//! an `.await`, or print the Redis password (it is removed from `Debug` and errors).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;
use tokio::time::Instant;

use crate::bus::Bus;

/// How long connecting to Redis and each command may take before failing.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[cache]` configuration section; builds the [`Cache`] and the [`Bus`].
///
/// ```toml
/// [cache]
/// redis = "redis://127.0.0.1:6379/"   # absent: in-process
/// prefix = "openteller:"              # the default
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Redis URL (`redis://[:PASSWORD@]HOST:PORT/DB`, `rediss://` is not built in); `None`
    /// keeps the cache and the bus in this process.
    pub redis: Option<String>,
    /// Put before every Redis key and pub/sub channel name.
    pub prefix: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            redis: None,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// The default Redis key prefix.
pub const DEFAULT_PREFIX: &str = "openteller:";

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("redis", &self.redis.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl CacheConfig {
    /// Builds the cache and the bus. With Redis, connects (failing if Redis does not answer
    /// within a few seconds) and shares one command connection between the two; the bus adds
    /// its own connection for subscriptions.
    pub async fn build(&self) -> Result<(Cache, Bus), CacheError> {
        match &self.redis {
            None => Ok((Cache::local(), Bus::local())),
            Some(url) => {
                let client = open_client(url)?;
                let conn = connect(&client).await?;
                let cache = Cache::from_redis(conn.clone(), &self.prefix);
                let bus = Bus::from_redis(client, conn, &self.prefix).await?;
                Ok((cache, bus))
            }
        }
    }

    /// Builds the cache alone.
    pub async fn cache(&self) -> Result<Cache, CacheError> {
        match &self.redis {
            None => Ok(Cache::local()),
            Some(url) => Cache::redis(url, &self.prefix).await,
        }
    }

    /// Builds the bus alone (with Redis: two connections of its own).
    pub async fn bus(&self) -> Result<Bus, CacheError> {
        match &self.redis {
            None => Ok(Bus::local()),
            Some(url) => Bus::redis(url, &self.prefix).await,
        }
    }
}

/// Errors of the cache and the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The configuration cannot work (malformed Redis URL, …).
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// [`Cache::incr`] on a value that is not an integer, or would overflow.
    #[error("cache value of {key:?} is not an integer")]
    NotAnInteger {
        /// The key, without the prefix.
        key: String,
    },
    /// Redis failed or did not answer.
    #[error("Redis {op} failed")]
    Redis {
        /// What was being done.
        op: &'static str,
        /// The client error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub(crate) fn redis_err(op: &'static str) -> impl FnOnce(redis::RedisError) -> CacheError {
    move |e| CacheError::Redis {
        op,
        source: Box::new(e),
    }
}

/// `redis://user:secret@host/` → `redis://***@host/`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn open_client(url: &str) -> Result<redis::Client, CacheError> {
    // The client's own message may quote the URL, password included: keep only its kind.
    redis::Client::open(url)
        .map_err(|e| CacheError::Config(format!("cache.redis {}: {:?}", redact_url(url), e.kind())))
}

pub(crate) async fn connect(client: &redis::Client) -> Result<ConnectionManager, CacheError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(redis_err("connect"))
}

/// A TTL in milliseconds for Redis: at least 1 (0 is refused by Redis).
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64)
}

/// The cache; cheap to clone (clones share the store or the connection).
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local(Arc<LocalCache>),
    Redis(RedisCache),
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Local(_) => f.write_str("Cache::Local"),
            Backend::Redis(r) => f
                .debug_struct("Cache::Redis")
                .field("prefix", &r.prefix)
                .finish(),
        }
    }
}

impl Cache {
    /// An in-process cache: values live in this process only.
    pub fn local() -> Self {
        Self {
            backend: Backend::Local(Arc::default()),
        }
    }

    /// A cache in Redis at `url`, every key prefixed with `prefix`. Connects now.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, CacheError> {
        let client = open_client(url)?;
        Ok(Self::from_redis(connect(&client).await?, prefix))
    }

    fn from_redis(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            backend: Backend::Redis(RedisCache {
                conn,
                prefix: Arc::from(prefix),
            }),
        }
    }

    /// `"local"` or `"redis"`, for logs and health reports.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Local(_) => "local",
            Backend::Redis(_) => "redis",
        }
    }

    /// The value under `key`, unless missing or expired.
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        match &self.backend {
            Backend::Local(local) => Ok(local.get(key)),
            Backend::Redis(redis) => redis.get(key).await,
        }
    }

    /// Stores `value` under `key`, replacing any value and its expiry; with a `ttl` it
    /// expires after that long (at least 1 ms), without it never.
    pub async fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Local(local) => {
                local.set(key, value, ttl);
                Ok(())
            }
            Backend::Redis(redis) => redis.set(key, value, ttl).await,
        }
    }

    /// Removes `key`; says whether it was there.
    pub async fn del(&self, key: &str) -> Result<bool, CacheError> {
        match &self.backend {
            Backend::Local(local) => Ok(local.del(key)),
            Backend::Redis(redis) => redis.del(key).await,
        }
    }

    /// Adds one to the integer under `key` and returns the new value, atomically across every
    /// user of the cache. A missing key counts from 0 and, with `ttl_on_create`, expires that
    /// long after this first increment (a fixed window: later increments do not extend it).
    /// A counter that somehow lost its expiry gets it back on the next increment.
    pub async fn incr(
        &self,
        key: &str,
        ttl_on_create: Option<Duration>,
    ) -> Result<i64, CacheError> {
        match &self.backend {
            Backend::Local(local) => local.incr(key, ttl_on_create),
            Backend::Redis(redis) => redis.incr(key, ttl_on_create).await,
        }
    }

    /// Makes `key` expire `ttl` from now (at least 1 ms); says whether the key exists.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        match &self.backend {
            Backend::Local(local) => Ok(local.expire(key, ttl)),
            Backend::Redis(redis) => redis.expire(key, ttl).await,
        }
    }

    /// Checks that the cache answers.
    pub async fn ping(&self) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Local(_) => Ok(()),
            Backend::Redis(redis) => redis.ping().await,
        }
    }
}

// ---- in-process ----

#[derive(Default)]
struct LocalCache {
    entries: Mutex<HashMap<String, Entry>>,
    writes: AtomicU64,
}

struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// Expired entries are dropped when read, and all of them every this many writes.
const SWEEP_EVERY: u64 = 1024;

impl LocalCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // No code panics while holding the lock, and the map is valid after any panic anyway.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wrote(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            entries.retain(|_, e| e.live(now));
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn set(&self, key: &str, value: &str, ttl: Option<Duration>) {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.insert(
            key.to_owned(),
            Entry {
                value: value.to_owned(),
                expires: ttl.map(|t| deadline(now, t)),
            },
        );
        self.wrote(&mut entries, now);
    }

    fn del(&self, key: &str) -> bool {
        let now = Instant::now();
        self.lock().remove(key).is_some_and(|e| e.live(now))
    }

    fn incr(&self, key: &str, ttl_on_create: Option<Duration>) -> Result<i64, CacheError> {
        let now = Instant::now();
        let mut entries = self.lock();
        let current = entries.get_mut(key).filter(|e| e.live(now));
        let value = match current {
            Some(entry) => {
                let next = entry
                    .value
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| n.checked_add(1))
                    .ok_or_else(|| CacheError::NotAnInteger {
                        key: key.to_owned(),
                    })?;
                entry.value = next.to_string();
                if entry.expires.is_none() {
                    entry.expires = ttl_on_create.map(|t| deadline(now, t));
                }
                next
            }
            None => {
                entries.insert(
                    key.to_owned(),
                    Entry {
                        value: "1".to_owned(),
                        expires: ttl_on_create.map(|t| deadline(now, t)),
                    },
                );
                1
            }
        };
        self.wrote(&mut entries, now);
        Ok(value)
    }

    fn expire(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.get_mut(key) {
            Some(e) if e.live(now) => {
                e.expires = Some(deadline(now, ttl));
                true
            }
            _ => false,
        }
    }
}

fn deadline(now: Instant, ttl: Duration) -> Instant {
    let ttl = ttl.max(Duration::from_millis(1));
    // Far-future TTLs saturate at about 30 years instead of overflowing.
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

// ---- Redis ----

#[derive(Clone)]
struct RedisCache {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

/// INCR and its expiry in one step: a counter never outlives its window, even when this
/// process dies right after the increment.
const INCR_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = tonumber(ARGV[1])
if ttl > 0 and (n == 1 or redis.call('PTTL', KEYS[1]) == -1) then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return n
";

impl RedisCache {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        self.conn
            .clone()
            .get(self.key(key))
            .await
            .map_err(redis_err("GET"))
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        match ttl {
            Some(ttl) => conn.pset_ex(self.key(key), value, ttl_millis(ttl)).await,
            None => conn.set(self.key(key), value).await,
        }
        .map_err(redis_err("SET"))
    }

    async fn del(&self, key: &str) -> Result<bool, CacheError> {
        let removed: i64 = self
            .conn
            .clone()
            .del(self.key(key))
            .await
            .map_err(redis_err("DEL"))?;
        Ok(removed > 0)
    }

    async fn incr(&self, key: &str, ttl_on_create: Option<Duration>) -> Result<i64, CacheError> {
        let ttl = ttl_on_create.map_or(0, ttl_millis);
        let result: Result<i64, _> = redis::Script::new(INCR_SCRIPT)
            .key(self.key(key))
            .arg(ttl)
            .invoke_async(&mut self.conn.clone())
            .await;
        result.map_err(|e| {
            if e.to_string().contains("not an integer") {
                CacheError::NotAnInteger {
                    key: key.to_owned(),
                }
            } else {
                redis_err("INCR")(e)
            }
        })
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        let ms = i64::try_from(ttl_millis(ttl)).unwrap_or(i64::MAX);
        self.conn
            .clone()
            .pexpire(self.key(key), ms)
            .await
            .map_err(redis_err("PEXPIRE"))
    }

    async fn ping(&self) -> Result<(), CacheError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(redis_err("PING"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(redact_url("redis://u:p@h/"), "redis://***@h/");
        assert_eq!(redact_url("redis://h:6379/"), "redis://h:6379/");
        let config = CacheConfig {
            redis: Some("redis://:s3cret@h/".into()),
            ..CacheConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn bad_url_hides_password() {
        let Err(e) = open_client("redis://:s3cret@h:notaport/") else {
            panic!("accepted a bad port");
        };
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn config_shape() {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            cache: CacheConfig,
        }
        let none: File = toml::from_str("").expect("empty");
        assert_eq!(none.cache, CacheConfig::default());
        assert_eq!(none.cache.prefix, "openteller:");
        let redis: File =
            toml::from_str("[cache]\nredis = \"redis://127.0.0.1:6379/\"\n").expect("redis");
        assert_eq!(
            redis.cache.redis.as_deref(),
            Some("redis://127.0.0.1:6379/")
        );
        assert!(toml::from_str::<File>("[cache]\nredsi = \"x\"\n").is_err());
    }

    #[test]
    fn ttl_is_at_least_a_millisecond() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
        assert_eq!(ttl_millis(Duration::MAX), i64::MAX as u64);
    }
}
