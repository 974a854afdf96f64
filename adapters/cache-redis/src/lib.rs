//! The shared cache on Redis: the second level behind each instance's in-process cache,
//! with cross-instance invalidation (SPEC §10).
//!
//! [`RedisCache`] implements [`CachePort`] over the first level it is handed (any
//! `Arc<dyn CachePort>`, e.g. the mini-moka cache) and Redis:
//!
//! - Entries are in a format of their own ([`format`]), written by Lua scripts that
//!   compare versions (never an older profile over a newer one, nor an older balance
//!   over a newer one) and carry a *generation*: every profile entry is stamped with
//!   the value of one generation key, and reads only accept entries of the current
//!   generation. Bumping that key makes every profile entry unusable at once.
//! - Every put or invalidation of a profile is published on one channel, from inside
//!   the same script, before the call returns; every other instance drops its
//!   in-process copy when the message arrives.
//! - A supervisor task holds the subscription and sends itself a heartbeat through
//!   Redis; a missing heartbeat (a Redis that hangs: lost after `heartbeat_timeout`,
//!   1 s, checked every `heartbeat`), a closed subscription, or an announcement that
//!   could not be confirmed (below) marks the cache *disconnected*. Disconnected,
//!   nothing touches Redis and the in-process profiles are cleared and bypassed
//!   (balances are still served from the first level). Once subscribed again the
//!   supervisor bumps the generation and tells every instance to clear its in-process
//!   profiles, and only then reads Redis again.
//!
//! # Which failures disconnect
//!
//! Disconnecting is expensive for everybody: the generation bump on reconnect makes
//! every shared profile unusable for every instance. A request-path operation that runs
//! past its timeout (`op_timeout`, 12 ms) is usually not a sign that Redis is gone: on a
//! busy instance the reply waits behind the instance's own work. So one slow or failed
//! operation never disconnects by itself; what it costs depends on what may have been
//! lost with it:
//!
//! - A read (a profile or a balance) that fails or times out is a miss, and nothing
//!   else was lost. A balance put is not announced (a later fetch wins), so losing one
//!   only loses sharing. These count toward a *breaker*: after
//!   [`BREAKER_FAILURES`] failures in a row (any operation) the request path stops
//!   waiting for Redis for [`BREAKER_COOLDOWN`] (reads are misses at once), then tries
//!   again; one success closes it. The breaker does not disconnect: invalidations are
//!   still received on the subscription, which the heartbeat keeps checking, so the
//!   in-process copies stay trustworthy.
//! - A profile put or invalidation announces a change (a PATCH's answer, an e-mail
//!   change settled) and drops the other instances' copies. When it fails or times out
//!   (or is skipped because the breaker is open) the script may or may not have run,
//!   so the other instances may still hold the old copy, and so may Redis. The instance
//!   drops its own in-process copy at once and hands the user to a background
//!   *verification*, off the request path: an invalidation of that user (drop the entry,
//!   keep its version as a tombstone, publish) under [`VERIFY_TIMEOUT`] (80 ms, counted
//!   from when the request is answered, so a verified change still reaches the others
//!   within the 100 ms of SPEC §10). An invalidation is always safe to repeat — at worst it costs one miss,
//!   and it never stores anything that could be older than what others wrote — and
//!   it is queued on the same multiplexed connection after the original command, so it
//!   runs after it if that one ran at all. If the verification succeeds, the change has
//!   been announced; if it fails too, the instance cannot know whether anyone heard
//!   of the change, and it disconnects (and so resynchronises everybody on reconnect).
//!   A failed `clear_profiles` is verified the same way with a new generation.
//! - A Redis that hangs is still found within 2 s: by the heartbeat (about 1 s), and by
//!   any verification that times out. A closed connection ends the
//!   subscription; a refused one never connects.
//!
//! Each request-path operation waits at most `op_timeout`, and the verifications are
//! never waited for: a GET waits for at most four operations (profile, balance, then
//! on a miss the profile put and the balance put) and a PATCH for three (balance,
//! balance put, profile put or invalidation), so a slow Redis costs at most
//! 4 × 12 ms = 48 ms per request, then nothing once the breaker is open or the
//! heartbeat is lost. Redis errors are misses.
//!
//! The connection URL (it may carry a password) is never logged nor put in an error.

pub mod format;
pub mod testing;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use metrics::{Counter, Gauge, Unit};
use profile_core::domain::{ProfileSnapshot, RewardsSnapshot, UserId};
use profile_core::ports::CachePort;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use redis::{RedisResult, Script};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Gauge: 1 while subscribed and usable, 0 otherwise.
pub const CONNECTED: &str = "shared_cache_connected";
/// Counter of shared-cache lookups that found a usable entry, by `cache`.
pub const HITS_TOTAL: &str = "shared_cache_hits_total";
/// Counter of shared-cache lookups that found nothing usable, by `cache`.
pub const MISSES_TOTAL: &str = "shared_cache_misses_total";
/// Counter of failed or timed-out Redis operations.
pub const ERRORS_TOTAL: &str = "shared_cache_errors_total";
/// Counter of invalidations this instance announced.
pub const INVALIDATIONS_SENT_TOTAL: &str = "shared_cache_invalidations_sent_total";
/// Counter of invalidations received from other instances.
pub const INVALIDATIONS_RECEIVED_TOTAL: &str = "shared_cache_invalidations_received_total";

/// Registers the descriptions of this crate's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        CONNECTED,
        Unit::Count,
        "1 while the shared cache (Redis) is connected and subscribed."
    );
    metrics::describe_counter!(
        HITS_TOTAL,
        Unit::Count,
        "Shared-cache lookups that found an entry, by cache."
    );
    metrics::describe_counter!(
        MISSES_TOTAL,
        Unit::Count,
        "Shared-cache lookups that found nothing, by cache."
    );
    metrics::describe_counter!(
        ERRORS_TOTAL,
        Unit::Count,
        "Shared-cache operations that failed or timed out."
    );
    metrics::describe_counter!(
        INVALIDATIONS_SENT_TOTAL,
        Unit::Count,
        "Profile invalidations announced to other instances."
    );
    metrics::describe_counter!(
        INVALIDATIONS_RECEIVED_TOTAL,
        Unit::Count,
        "Profile invalidations received from other instances."
    );
}

/// Settings of the shared cache.
#[derive(Clone)]
pub struct RedisCacheConfig {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]` (or `rediss://`); never logged.
    pub url: String,
    /// Profile TTL, counted from the databases read; zero disables profiles here too.
    pub profile_ttl: Duration,
    /// How long balances are kept (24 h, for `stale`).
    pub rewards_retention: Duration,
    /// The rewards window: a first-level balance younger than this is used as is.
    pub rewards_window: Duration,
    /// Longest wait for one Redis operation of a request (a miss past it; see the
    /// crate doc for what a run of them, or an unconfirmed announcement, does).
    pub op_timeout: Duration,
    /// How often the supervisor checks the connection.
    pub heartbeat: Duration,
    /// A heartbeat older than this means the connection is lost.
    pub heartbeat_timeout: Duration,
    /// Prefix of every key and channel (instances sharing a cache share it).
    pub key_prefix: String,
}

impl RedisCacheConfig {
    /// Defaults for `url`: 60 s profiles, 24 h balances, 30 s window, 12 ms per
    /// operation, a heartbeat every 250 ms, lost after 1 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            profile_ttl: Duration::from_secs(60),
            rewards_retention: Duration::from_secs(24 * 3600),
            rewards_window: Duration::from_secs(30),
            op_timeout: Duration::from_millis(12),
            heartbeat: Duration::from_millis(250),
            heartbeat_timeout: Duration::from_secs(1),
            key_prefix: "profile-api".into(),
        }
    }
}

impl std::fmt::Debug for RedisCacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCacheConfig")
            .field("url", &redacted(&self.url))
            .field("profile_ttl", &self.profile_ttl)
            .field("rewards_retention", &self.rewards_retention)
            .field("op_timeout", &self.op_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// The URL with any user name and password replaced by `***`.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Checks a cache URL; the error never repeats the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<redis::Client, String> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis") => {}
        Some("rediss") => return Err("rediss:// (TLS) is not supported by this build; use redis://".into()),
        _ => return Err("expected redis://[:PASSWORD@]HOST:PORT[/DB]".into()),
    }
    let client = redis::Client::open(url)
        .map_err(|_| "is not a valid Redis URL (expected redis://[:PASSWORD@]HOST:PORT[/DB])".to_owned())?;
    Ok(client)
}

/// Reads a profile entry of the current generation.
static GET_PROFILE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local gen = redis.call('GET', KEYS[2]) or '0'
local e = redis.call('HMGET', KEYS[1], 'g', 'd')
if e[1] == gen and e[2] then return e[2] end
return false",
    )
});

/// Stores a profile unless the current generation holds a higher version (an entry or
/// the tombstone of an invalidation); announces it unless it only refreshed the same
/// version. Returns 0 refused, 1 stored, 2 stored and announced.
static PUT_PROFILE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local gen = redis.call('GET', KEYS[2]) or '0'
local e = redis.call('HMGET', KEYS[1], 'g', 'v')
local v = tonumber(ARGV[1])
local announce = 1
if e[1] == gen and e[2] then
  local cur = tonumber(e[2])
  if cur > v then return 0 end
  if cur == v then announce = 0 end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'g', gen, 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if announce == 1 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1 + announce",
    )
});

/// Drops a profile, keeping its version as a tombstone (an older put stays refused),
/// and announces it.
static INVALIDATE_PROFILE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local gen = redis.call('GET', KEYS[2]) or '0'
local e = redis.call('HMGET', KEYS[1], 'g', 'v')
if e[1] == gen and e[2] then
  redis.call('HDEL', KEYS[1], 'd')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
else
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1",
    )
});

/// Makes every profile entry unusable (a new generation) and tells every instance to
/// drop its in-process profiles.
static NEW_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local g = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return g",
    )
});

/// Stores a balance unless a later fetch is stored.
static PUT_REWARDS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local cur = redis.call('HGET', KEYS[1], 'a')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'a', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1",
    )
});

/// The time the supervisor gives connecting, subscribing and the heartbeat.
const CONTROL_TIMEOUT: Duration = Duration::from_millis(500);

/// The time the background verification of an unconfirmed announcement gets: it starts
/// as the request is answered, so when it succeeds the change has been published within
/// the 100 ms SPEC §10 allows; when it does not, the instance disconnects.
pub const VERIFY_TIMEOUT: Duration = Duration::from_millis(80);

/// Failed or timed-out request-path operations in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 5;

/// How long an open breaker keeps the request path from waiting for Redis.
pub const BREAKER_COOLDOWN: Duration = Duration::from_millis(500);

/// What a background verification re-announces.
#[derive(Clone, Copy)]
enum Verify {
    /// One user's profile: invalidated again.
    Profile(UserId),
    /// Every profile: a new generation.
    All,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

struct Metrics {
    connected: Gauge,
    profile_hits: Counter,
    profile_misses: Counter,
    rewards_hits: Counter,
    rewards_misses: Counter,
    errors: Counter,
    sent: Counter,
    received: Counter,
}

impl Metrics {
    fn new() -> Self {
        Self {
            connected: metrics::gauge!(CONNECTED),
            profile_hits: metrics::counter!(HITS_TOTAL, "cache" => "profile"),
            profile_misses: metrics::counter!(MISSES_TOTAL, "cache" => "profile"),
            rewards_hits: metrics::counter!(HITS_TOTAL, "cache" => "rewards"),
            rewards_misses: metrics::counter!(MISSES_TOTAL, "cache" => "rewards"),
            errors: metrics::counter!(ERRORS_TOTAL),
            sent: metrics::counter!(INVALIDATIONS_SENT_TOTAL),
            received: metrics::counter!(INVALIDATIONS_RECEIVED_TOTAL),
        }
    }
}

struct Keys {
    prefix: String,
    generation: String,
    channel: String,
    heartbeat: String,
}

struct Shared {
    local: Arc<dyn CachePort>,
    client: redis::Client,
    conn: ConnectionManager,
    cfg: RedisCacheConfig,
    keys: Keys,
    instance: String,
    connected: AtomicBool,
    down: Notify,
    /// Bumped by every invalidation received and every change of connection state: a
    /// read from Redis that saw it change does not fill the first level.
    epoch: AtomicU64,
    last_heartbeat: Mutex<Instant>,
    /// Request-path operations that failed in a row.
    failures: AtomicU32,
    /// Until when the open breaker keeps the request path from waiting for Redis.
    open_until: Mutex<Option<Instant>>,
    m: Metrics,
}

/// The two-level cache: the first level it is handed, and Redis shared by every instance.
pub struct RedisCache {
    shared: Arc<Shared>,
    supervisor: JoinHandle<()>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("config", &self.shared.cfg)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisCache {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl RedisCache {
    /// Checks the URL and starts the supervisor (on the current Tokio runtime), which
    /// connects in the background and keeps reconnecting; Redis need not be up. Install
    /// the metrics recorder first. `local`, the first level, has the same profile TTL
    /// (counted, as every cache counts it, from a snapshot's read time).
    pub fn start(cfg: RedisCacheConfig, local: Arc<dyn CachePort>) -> Result<Self, String> {
        let client = parse_url(&cfg.url)?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONTROL_TIMEOUT))
            .set_response_timeout(Some(CONTROL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg)
            .map_err(|_| "cannot set up the Redis connection".to_owned())?;
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let instance = format!("{:x}-{:x}", std::process::id(), nanos);
        let prefix = cfg.key_prefix.clone();
        let keys = Keys {
            generation: format!("{prefix}:gen"),
            channel: format!("{prefix}:inv"),
            heartbeat: format!("{prefix}:hb:{instance}"),
            prefix,
        };
        let shared = Arc::new(Shared {
            local,
            client,
            conn,
            cfg,
            keys,
            instance,
            connected: AtomicBool::new(false),
            down: Notify::new(),
            epoch: AtomicU64::new(0),
            last_heartbeat: Mutex::new(Instant::now()),
            failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
            m: Metrics::new(),
        });
        shared.m.connected.set(0.0);
        let supervisor = tokio::spawn(shared.clone().supervise());
        Ok(Self { shared, supervisor })
    }

    /// Whether the shared cache is connected, subscribed and in use.
    pub fn is_connected(&self) -> bool {
        self.shared.connected()
    }

    /// Waits until connected, up to `limit`; returns whether it is.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while !self.is_connected() {
            if start.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Shared {
    fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn profile_key(&self, user_id: UserId) -> String {
        format!("{}:p:{user_id}", self.keys.prefix)
    }

    fn rewards_key(&self, user_id: UserId) -> String {
        format!("{}:r:{user_id}", self.keys.prefix)
    }

    /// Opens the circuit: nothing touches Redis until the supervisor has resynchronised.
    fn trip(&self) {
        if self.connected.swap(false, Ordering::SeqCst) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.m.connected.set(0.0);
            self.down.notify_one();
        }
    }

    /// Whether the breaker keeps the request path from waiting for Redis right now.
    fn breaker_open(&self) -> bool {
        lock(&self.open_until).is_some_and(|until| Instant::now() < until)
    }

    /// Counts a failed request-path operation; opens the breaker at the threshold (and
    /// again at every failure past it, e.g. the probe after the cooldown).
    fn failed(&self, timed_out: bool) {
        self.m.errors.increment(1);
        let n = self.failures.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        if n >= BREAKER_FAILURES {
            let was_open = lock(&self.open_until).replace(Instant::now() + BREAKER_COOLDOWN).is_some();
            if !was_open {
                tracing::warn!(failures = n, "shared cache slow or failing; not waiting for it for a while");
            }
        } else if timed_out {
            tracing::debug!("shared cache operation timed out");
        }
    }

    fn succeeded(&self) {
        if self.failures.swap(0, Ordering::SeqCst) >= BREAKER_FAILURES {
            *lock(&self.open_until) = None;
            tracing::info!("shared cache answering in time again");
        }
    }

    /// Runs one request-path operation under the timeout, unless disconnected or the
    /// breaker is open; a failure or a timeout is a miss and counts toward the breaker.
    async fn op<T>(&self, f: impl Future<Output = RedisResult<T>>) -> Option<T> {
        if !self.connected() || self.breaker_open() {
            return None;
        }
        match tokio::time::timeout(self.cfg.op_timeout, f).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(kind = ?e.kind(), "shared cache operation failed");
                self.failed(false);
                None
            }
            Err(_) => {
                self.failed(true);
                None
            }
        }
    }

    /// Runs one request-path operation that announces a change like [`op`](Self::op);
    /// when it is not confirmed (failed, timed out, or skipped by the open breaker) the
    /// announcement is verified in the background. Disconnected, nothing is needed: the
    /// resynchronisation on reconnect covers every change.
    async fn announce<T>(
        self: &Arc<Self>,
        what: Verify,
        f: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        if !self.connected() {
            return None;
        }
        let done = self.op(f).await;
        if done.is_none() {
            self.verify(what);
        }
        done
    }

    /// The script call that announces `what` to every instance: one user's profile
    /// invalidated (its version kept as a tombstone), or a new generation of all.
    fn invalidation(&self, what: Verify) -> redis::ScriptInvocation<'static> {
        match what {
            Verify::Profile(user_id) => {
                let mut inv = INVALIDATE_PROFILE.prepare_invoke();
                inv.key(self.profile_key(user_id))
                    .key(&self.keys.generation)
                    .arg(ms(self.cfg.profile_ttl))
                    .arg(&self.keys.channel)
                    .arg(format!("p|{}|{user_id}", self.instance));
                inv
            }
            Verify::All => {
                let mut inv = NEW_GENERATION.prepare_invoke();
                inv.key(&self.keys.generation).arg(&self.keys.channel).arg(format!("g|{}", self.instance));
                inv
            }
        }
    }

    /// Re-announces `what` off the request path under [`VERIFY_TIMEOUT`]; if that
    /// fails too, disconnects (nobody may have heard of the change).
    fn verify(self: &Arc<Self>, what: Verify) {
        let this = self.clone();
        tokio::spawn(async move {
            if !this.connected() {
                return;
            }
            let mut conn = this.conn.clone();
            let inv = this.invalidation(what);
            match tokio::time::timeout(VERIFY_TIMEOUT, inv.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(_)) => {
                    this.m.sent.increment(1);
                }
                _ => {
                    this.m.errors.increment(1);
                    tracing::warn!(
                        "shared cache: a change could not be announced; bypassing it until reconnected"
                    );
                    this.trip();
                }
            }
        });
    }

    async fn clear_local(&self) {
        self.local.clear_profiles().await;
    }

    /// Connects, resynchronises, serves messages until the connection is lost; forever.
    async fn supervise(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.connect().await {
                Some(stream) => {
                    backoff = Duration::from_millis(50);
                    self.serve(stream).await;
                    self.connected.store(false, Ordering::SeqCst);
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                    self.m.connected.set(0.0);
                    self.clear_local().await;
                    tracing::warn!(
                        "shared cache disconnected: in-process profiles bypassed until it is back"
                    );
                }
                None => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// Subscribes, loads the scripts, then makes every profile entry unusable and has
    /// every instance drop its in-process profiles (changes made while this one was away
    /// were never announced), and only then declares the cache connected.
    async fn connect(&self) -> Option<PubSubStream> {
        let mut pubsub =
            tokio::time::timeout(CONTROL_TIMEOUT, self.client.get_async_pubsub()).await.ok()?.ok()?;
        let channels = vec![self.keys.channel.clone(), self.keys.heartbeat.clone()];
        tokio::time::timeout(CONTROL_TIMEOUT, pubsub.subscribe(channels)).await.ok()?.ok()?;
        let stream = pubsub.into_on_message();
        let mut conn = self.conn.clone();
        // The request path's scripts, loaded before it may use them: a fresh or restarted
        // Redis knows none, and loading one inside a request's operation (a refused
        // EVALSHA, the load, the EVALSHA again) often takes longer than `op_timeout`,
        // which would turn the first operations after every (re)connection into misses.
        let scripts = [&*GET_PROFILE, &*PUT_PROFILE, &*INVALIDATE_PROFILE, &*PUT_REWARDS];
        let loads = futures::future::try_join_all(scripts.map(|script| {
            let mut conn = conn.clone();
            async move { script.load_async(&mut conn).await }
        }));
        tokio::time::timeout(CONTROL_TIMEOUT, loads).await.ok()?.ok()?;
        let message = format!("g|{}", self.instance);
        let mut inv = NEW_GENERATION.prepare_invoke();
        inv.key(&self.keys.generation).arg(&self.keys.channel).arg(&message);
        let generation: i64 =
            tokio::time::timeout(CONTROL_TIMEOUT, inv.invoke_async(&mut conn)).await.ok()?.ok()?;
        self.clear_local().await;
        *lock(&self.last_heartbeat) = Instant::now();
        self.failures.store(0, Ordering::SeqCst);
        *lock(&self.open_until) = None;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.connected.store(true, Ordering::SeqCst);
        self.m.connected.set(1.0);
        tracing::info!(generation, "shared cache connected");
        Some(stream)
    }

    async fn serve(self: &Arc<Self>, mut stream: PubSubStream) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.on_message(&msg).await,
                    None => return,
                },
                _ = tick.tick() => {
                    if lock(&self.last_heartbeat).elapsed() > self.cfg.heartbeat_timeout {
                        self.m.errors.increment(1);
                        tracing::warn!("shared cache heartbeat lost");
                        return;
                    }
                    let this = self.clone();
                    tokio::spawn(async move {
                        let mut conn = this.conn.clone();
                        let mut cmd = redis::cmd("PUBLISH");
                        cmd.arg(&this.keys.heartbeat).arg("beat");
                        let beat = cmd.query_async::<i64>(&mut conn);
                        if !matches!(tokio::time::timeout(CONTROL_TIMEOUT, beat).await, Ok(Ok(_))) {
                            this.m.errors.increment(1);
                            this.trip();
                        }
                    });
                }
                () = self.down.notified() => return,
            }
        }
    }

    async fn on_message(&self, msg: &redis::Msg) {
        if msg.get_channel_name() == self.keys.heartbeat {
            *lock(&self.last_heartbeat) = Instant::now();
            return;
        }
        let Ok(text) = std::str::from_utf8(msg.get_payload_bytes()) else { return };
        let mut parts = text.splitn(3, '|');
        let (kind, from, user) = (parts.next(), parts.next(), parts.next());
        if from == Some(self.instance.as_str()) {
            return;
        }
        match (kind, user.and_then(|u| u.parse::<UserId>().ok())) {
            (Some("p"), Some(user_id)) => {
                self.epoch.fetch_add(1, Ordering::SeqCst);
                self.local.invalidate_profile(user_id).await;
                self.m.received.increment(1);
            }
            (Some("g"), _) => {
                self.epoch.fetch_add(1, Ordering::SeqCst);
                self.clear_local().await;
                self.m.received.increment(1);
            }
            _ => {}
        }
    }
}

#[async_trait]
impl CachePort for RedisCache {
    /// The first level's copy while connected (never one filled from Redis past the
    /// TTL), else Redis's entry of the current generation, which then fills the first
    /// level; nothing at all while disconnected.
    async fn profile(&self, user_id: UserId) -> Option<Arc<ProfileSnapshot>> {
        let s = &self.shared;
        let ttl = s.cfg.profile_ttl;
        if ttl.is_zero() || !s.connected() {
            return None;
        }
        // A copy filled from Redis keeps its original read time, so the first level
        // stops serving it a TTL after that read, not after the fill.
        if let Some(hit) = s.local.profile(user_id).await {
            return Some(hit);
        }
        let epoch = s.epoch.load(Ordering::SeqCst);
        let (key, mut conn) = (s.profile_key(user_id), s.conn.clone());
        let raw: Option<Option<Vec<u8>>> = s
            .op(async {
                let mut inv = GET_PROFILE.prepare_invoke();
                inv.key(&key).key(&s.keys.generation);
                inv.invoke_async(&mut conn).await
            })
            .await;
        let decoded = raw.flatten().and_then(|b| format::decode_profile(&b));
        let age = decoded.as_ref().map(|(_, _, read_at)| Utc::now().timestamp_millis() - read_at);
        let (Some((profile, account, _)), Some(age)) = (decoded, age) else {
            s.m.profile_misses.increment(1);
            return None;
        };
        let left = ms(ttl) - age.max(0);
        if left <= 0 || profile.user_id != user_id {
            s.m.profile_misses.increment(1);
            return None;
        }
        s.m.profile_hits.increment(1);
        let age = Duration::from_millis(u64::try_from(age).unwrap_or_default());
        let read_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let snapshot = ProfileSnapshot::restored(profile, account, read_at);
        if s.connected() && s.epoch.load(Ordering::SeqCst) == epoch {
            s.local.put_profile(snapshot.clone()).await;
        }
        Some(snapshot)
    }

    /// Stores in Redis under the version guard (announcing a new version to the other
    /// instances before returning), then in the first level; skipped when Redis holds a
    /// newer version, and while disconnected.
    async fn put_profile(&self, snapshot: Arc<ProfileSnapshot>) {
        let s = &self.shared;
        if s.cfg.profile_ttl.is_zero() || !s.connected() {
            return;
        }
        let user_id = snapshot.profile.user_id;
        // An invalidation this instance takes in from now on may announce a version newer
        // than this one: see below.
        let epoch = s.epoch.load(Ordering::SeqCst);
        // The entry lives for what is left of the TTL since its data was read (an update
        // made from a cached account keeps that account's read time).
        let age = snapshot.age();
        let left = ms(s.cfg.profile_ttl.saturating_sub(age));
        if left <= 0 {
            return;
        }
        let username = snapshot.account().map(|a| a.username.as_str());
        let payload =
            format::encode_profile(&snapshot.profile, username, Utc::now().timestamp_millis() - ms(age));
        let message = format!("p|{}|{user_id}", s.instance);
        let (key, mut conn) = (s.profile_key(user_id), s.conn.clone());
        let stored: Option<i64> = s
            .announce(Verify::Profile(user_id), async {
                let mut inv = PUT_PROFILE.prepare_invoke();
                inv.key(&key)
                    .key(&s.keys.generation)
                    .arg(snapshot.profile.version)
                    .arg(payload)
                    .arg(left)
                    .arg(&s.keys.channel)
                    .arg(&message);
                inv.invoke_async(&mut conn).await
            })
            .await;
        match stored {
            Some(n) if n >= 1 => {
                if n == 2 {
                    s.m.sent.increment(1);
                }
                s.local.put_profile(snapshot).await;
                // Another instance may have stored a newer version after this one, and its
                // announcement been handled (the first level's copy dropped) before the
                // line above: then the copy just put is older than Redis's and nothing
                // would drop it. A handler bumps the epoch before it drops, so either it
                // drops this copy after the put, or the epoch shows it here.
                if s.epoch.load(Ordering::SeqCst) != epoch {
                    s.local.invalidate_profile(user_id).await;
                }
            }
            Some(_) => {}
            None => {
                // Unconfirmed (being verified): this instance's own copy may be older.
                s.local.invalidate_profile(user_id).await;
            }
        }
    }

    /// Drops the first level's copy and Redis's entry (keeping its version as a
    /// tombstone), and announces it before returning.
    async fn invalidate_profile(&self, user_id: UserId) {
        let s = &self.shared;
        s.local.invalidate_profile(user_id).await;
        if s.cfg.profile_ttl.is_zero() {
            return;
        }
        let (what, mut conn) = (Verify::Profile(user_id), s.conn.clone());
        let done: Option<i64> =
            s.announce(what, async { s.invalidation(what).invoke_async(&mut conn).await }).await;
        if done.is_some() {
            s.m.sent.increment(1);
        }
    }

    /// Drops every in-process profile and, through a new generation, every shared one,
    /// telling the other instances to drop theirs.
    async fn clear_profiles(&self) {
        let s = &self.shared;
        s.clear_local().await;
        let mut conn = s.conn.clone();
        let done: Option<i64> = s
            .announce(Verify::All, async { s.invalidation(Verify::All).invoke_async(&mut conn).await })
            .await;
        if done.is_some() {
            s.m.sent.increment(1);
        }
    }

    /// The first level's balance when it is within the window; else the later of it
    /// and Redis's (which then fills the first level).
    async fn rewards(&self, user_id: UserId) -> Option<RewardsSnapshot> {
        let s = &self.shared;
        let local = s.local.rewards(user_id).await;
        let window = chrono::TimeDelta::from_std(s.cfg.rewards_window).unwrap_or(chrono::TimeDelta::MAX);
        if local.as_ref().is_some_and(|l| Utc::now().signed_duration_since(l.fetched_at) < window)
            || !s.connected()
        {
            return local;
        }
        let (key, mut conn) = (s.rewards_key(user_id), s.conn.clone());
        let raw: Option<Option<Vec<u8>>> =
            s.op(redis::cmd("HGET").arg(&key).arg("d").query_async::<Option<Vec<u8>>>(&mut conn)).await;
        let Some(remote) = raw.flatten().and_then(|b| format::decode_rewards(&b)) else {
            s.m.rewards_misses.increment(1);
            return local;
        };
        s.m.rewards_hits.increment(1);
        if local.as_ref().is_some_and(|l| l.fetched_at >= remote.fetched_at) {
            return local;
        }
        s.local.put_rewards(user_id, remote.clone()).await;
        Some(remote)
    }

    /// Stores the balance in the first level and in Redis (a later fetch wins).
    async fn put_rewards(&self, user_id: UserId, snapshot: RewardsSnapshot) {
        let s = &self.shared;
        s.local.put_rewards(user_id, snapshot.clone()).await;
        if !s.connected() {
            return;
        }
        let payload = format::encode_rewards(&snapshot);
        let (key, mut conn) = (s.rewards_key(user_id), s.conn.clone());
        let fetched = snapshot.fetched_at.timestamp_micros();
        let _: Option<i64> = s
            .op(async {
                let mut inv = PUT_REWARDS.prepare_invoke();
                inv.key(&key).arg(fetched).arg(payload).arg(ms(s.cfg.rewards_retention));
                inv.invoke_async(&mut conn).await
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_errors_never_repeat_them() {
        assert_eq!(redacted("redis://:s3cret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        for bad in ["http://:s3cret@host", "s3cret", "redis://:s3cret@[bad", "rediss://:s3cret@host:1"] {
            let e = parse_url(bad).err().unwrap_or_default();
            assert!(!e.is_empty(), "{bad} accepted");
            assert!(!e.contains("s3cret"), "password in {e}");
        }
        assert!(parse_url("redis://:pw@127.0.0.1:6379/2").is_ok());
    }
}
