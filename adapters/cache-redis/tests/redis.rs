//! The shared cache on a real, throwaway `redis-server`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use profile_cache_redis::testing::RedisServer;
use profile_cache_redis::{RedisCache, RedisCacheConfig};
use profile_core::contract::{CacheContract, cache_contract};
use profile_core::domain::{
    AccountSnapshot, AccountStatus, OrderStats, Profile, ProfileRecord, ProfileSnapshot, RewardsBalance,
    RewardsSnapshot,
};
use profile_core::ports::CachePort;
use profile_memory::MemoryCache;

/// These tests measure time against the cache's own deadlines (12 ms per operation,
/// 80 ms for a verification), so they run one at a time: ten of them side by side, each
/// with its own Redis and runtime, would make the machine's scheduling the thing tested.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(url: String, ttl: Duration) -> RedisCacheConfig {
    RedisCacheConfig { profile_ttl: ttl, ..RedisCacheConfig::new(url) }
}

/// A cache on `cfg` over an in-process first level of the same TTL, once connected.
async fn start(cfg: RedisCacheConfig) -> RedisCache {
    let local = MemoryCache::with_profile_ttl(cfg.profile_ttl);
    let cache = RedisCache::start(cfg, local).expect("start");
    assert!(cache.wait_connected(Duration::from_secs(5)).await, "never connected");
    cache
}

async fn cache(redis: &RedisServer, ttl: Duration) -> RedisCache {
    start(config(redis.url(), ttl)).await
}

/// For an instance whose operations' deadline is not what the test is about: a second
/// instead of 12 ms, so that a busy machine does not turn its writes into misses.
fn patient_config(url: String, ttl: Duration) -> RedisCacheConfig {
    RedisCacheConfig { op_timeout: Duration::from_secs(1), ..config(url, ttl) }
}

async fn patient(redis: &RedisServer, ttl: Duration) -> RedisCache {
    start(patient_config(redis.url(), ttl)).await
}

fn snapshot(user_id: i64, version: i64) -> Arc<ProfileSnapshot> {
    let account = AccountSnapshot {
        id: user_id,
        email: format!("u{user_id}@example.com"),
        username: format!("u{user_id}"),
        status: AccountStatus::Active,
        created_at: Utc::now(),
        last_login_at: None,
        login_count: 0,
        orders: OrderStats::default(),
    };
    let mut record = ProfileRecord::new_default(user_id);
    record.version = version;
    record.fields.personal.display_name = Some(format!("v{version}"));
    ProfileSnapshot::new(Profile::assemble(&account, &record))
}

async fn version(cache: &RedisCache, user_id: i64) -> Option<i64> {
    cache.profile(user_id).await.map(|s| s.profile.version)
}

/// Stores version `v` of `user_id` through `a` until `b` reads it: on a busy machine a put
/// or a read may miss its 12 ms (a miss, as the cache allows), and is retried as the
/// next request would. For setting up; what a test asserts about one operation it
/// asserts on that operation.
async fn shared(a: &RedisCache, b: &RedisCache, user_id: i64, v: i64) -> bool {
    eventually(Duration::from_secs(2), async || {
        a.put_profile(snapshot(user_id, v)).await;
        version(b, user_id).await == Some(v)
    })
    .await
}

async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_honours_the_cache_contract() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(400);
    let cache = patient(&redis, ttl).await;
    let contract = CacheContract {
        profile_ttl: ttl,
        sleep: Box::new(|d| Box::pin(tokio::time::sleep(d))),
        first_id: 7_000_001,
    };
    cache_contract(&cache, &contract).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_reaches_the_other_within_100_ms() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(60);
    let (a, b) = (patient(&redis, ttl).await, patient(&redis, ttl).await);
    a.put_profile(snapshot(1, 1)).await;
    assert_eq!(version(&b, 1).await, Some(1), "B reads what A stored");
    // B now holds v1 in its first level; A's next version must replace it there.
    for v in 2..=20 {
        a.put_profile(snapshot(1, v)).await;
        let t = Instant::now();
        let seen = eventually(Duration::from_millis(100), async || version(&b, 1).await == Some(v)).await;
        assert!(seen, "B still serves an older copy 100 ms after A stored v{v} ({:?})", t.elapsed());
    }
    // An older snapshot arriving late on B (a slow reader) never lands over the newer one.
    b.put_profile(snapshot(1, 5)).await;
    assert_eq!(version(&a, 1).await, Some(20));
    assert_eq!(version(&b, 1).await, Some(20));
    // An invalidation on A drops B's copy.
    a.invalidate_profile(1).await;
    assert!(eventually(Duration::from_millis(100), async || version(&b, 1).await.is_none()).await);
}

/// SPEC §10: no copy is served more than the TTL after it was read from the databases,
/// also one that reached B's first level from Redis long after that read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_filled_from_redis_expires_a_ttl_after_its_data_was_read_not_after_the_fill() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let (a, b) = (patient(&redis, ttl).await, patient(&redis, ttl).await);
    let read = Instant::now();
    a.put_profile(snapshot(3, 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(version(&b, 3).await, Some(1), "B fills its first level from Redis");
    tokio::time::sleep((read + ttl + Duration::from_millis(100)).saturating_duration_since(Instant::now()))
        .await;
    assert_eq!(version(&b, 3).await, None, "B still serves a copy read more than a TTL ago");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_fetched_by_one_instance_is_found_by_the_other() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let (a, b) =
        (patient(&redis, Duration::from_secs(60)).await, patient(&redis, Duration::from_secs(60)).await);
    let s = RewardsSnapshot {
        balance: Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }),
        fetched_at: Utc::now(),
    };
    a.put_rewards(9, s.clone()).await;
    assert_eq!(b.rewards(9).await, Some(s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_costs_one_timeout_then_nothing_and_is_rejoined_by_itself() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let port = redis.port();
    let ttl = Duration::from_secs(60);
    let (a, b) = (cache(&redis, ttl).await, cache(&redis, ttl).await);
    assert!(shared(&a, &b, 1, 1).await, "B never read what A stored");
    redis.kill();
    let t = Instant::now();
    let _ = a.profile(2).await;
    let _ = a.rewards(2).await;
    a.put_profile(snapshot(2, 1)).await;
    assert!(t.elapsed() < Duration::from_millis(50), "a dead Redis cost {:?}", t.elapsed());
    assert!(eventually(Duration::from_secs(2), async || !a.is_connected() && !b.is_connected()).await);
    assert_eq!(version(&b, 1).await, None, "a disconnected instance served an in-process copy");
    let t = Instant::now();
    for _ in 0..100 {
        let _ = b.profile(1).await;
    }
    assert!(t.elapsed() < Duration::from_millis(20), "a known-dead Redis still costs {:?}", t.elapsed());

    let _redis = RedisServer::start_on(port);
    assert!(a.wait_connected(Duration::from_secs(5)).await && b.wait_connected(Duration::from_secs(5)).await);
    assert!(shared(&a, &b, 1, 2).await, "B never read what A stored once Redis was back");
    a.put_profile(snapshot(1, 3)).await;
    assert!(eventually(Duration::from_millis(100), async || version(&b, 1).await != Some(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_detected_and_its_old_entries_are_unusable_when_it_is_back() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(60);
    let (a, b) = (cache(&redis, ttl).await, cache(&redis, ttl).await);
    assert!(shared(&a, &b, 1, 1).await, "B never read what A stored");
    redis.pause();
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), async || !a.is_connected() && !b.is_connected()).await,
        "a paused Redis went unnoticed for {:?}",
        t.elapsed()
    );
    // Meanwhile B's copy is not served (A may have changed the profile unannounced).
    assert_eq!(version(&b, 1).await, None);
    let t = Instant::now();
    let _ = a.profile(1).await;
    assert!(t.elapsed() < Duration::from_millis(5));
    redis.resume();
    assert!(a.wait_connected(Duration::from_secs(5)).await && b.wait_connected(Duration::from_secs(5)).await);
    assert_eq!(version(&a, 1).await, None, "an entry from before the outage was served");
    assert_eq!(version(&b, 1).await, None, "an entry from before the outage was served");
    assert!(shared(&a, &b, 1, 2).await, "B never read what A stored once Redis was back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_starts_without_redis_and_connects_later_by_itself() {
    let _serial = SERIAL.lock().await;
    let port = profile_cache_redis::testing::free_port();
    let ttl = Duration::from_secs(60);
    let url = format!("redis://127.0.0.1:{port}/0");
    let a = RedisCache::start(config(url, ttl), MemoryCache::with_profile_ttl(ttl)).expect("start");
    let t = Instant::now();
    a.put_profile(snapshot(1, 1)).await;
    assert_eq!(version(&a, 1).await, None, "served a profile without the shared cache");
    assert!(t.elapsed() < Duration::from_millis(50), "an absent Redis cost {:?}", t.elapsed());
    assert!(!a.is_connected());
    let redis = RedisServer::start_on(port);
    assert!(a.wait_connected(Duration::from_secs(5)).await, "never connected once Redis was up");
    let b = cache(&redis, ttl).await;
    assert!(shared(&a, &b, 1, 2).await, "B never read what A stored");
}

/// A loopback TCP proxy in front of Redis that can hold Redis's replies back for a
/// while: operations look slow to the client only (Redis itself runs them at once).
struct SlowProxy {
    port: u16,
    held_until: Arc<Mutex<Instant>>,
}

impl SlowProxy {
    async fn start(redis_port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let held_until = Arc::new(Mutex::new(Instant::now()));
        let held = held_until.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let held = held.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(n) = sr.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        // Rechecked often, so a hold lifted early releases the replies.
                        loop {
                            let until = *held.lock().unwrap();
                            let now = Instant::now();
                            if until <= now {
                                break;
                            }
                            tokio::time::sleep((until - now).min(Duration::from_millis(5))).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, held_until }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Holds back every reply (on every connection) until `d` from now.
    fn hold(&self, d: Duration) {
        *self.held_until.lock().unwrap() = Instant::now() + d;
    }
}

/// Runs `cmd` on Redis directly, past any proxy and cache: what the server holds.
fn query<T: redis::FromRedisValue>(redis: &RedisServer, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1)).expect("connect");
    cmd.query(&mut conn).expect("a direct Redis query")
}

fn generation(redis: &RedisServer) -> Option<i64> {
    query(redis, redis::cmd("GET").arg("profile-api:gen"))
}

fn cached_scripts(redis: &RedisServer) -> usize {
    let info: String = query(redis, redis::cmd("INFO").arg("memory"));
    let line = info.lines().find_map(|l| l.strip_prefix("number_of_cached_scripts:")).expect("script count");
    line.trim().parse().expect("a number")
}

/// A fresh or restarted Redis knows no scripts; loading one inside a request's 12 ms
/// (a refused EVALSHA, the load, the EVALSHA again) would make the first operations
/// after each connection misses. Connecting loads them all first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_are_loaded_before_the_cache_is_used() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let port = redis.port();
    let a = cache(&redis, Duration::from_secs(60)).await;
    // The generation bump run on connecting, and the four of the request path.
    assert_eq!(cached_scripts(&redis), 5, "scripts loaded on connecting");
    redis.kill();
    assert!(eventually(Duration::from_secs(2), async || !a.is_connected()).await);
    let redis = RedisServer::start_on(port);
    assert!(a.wait_connected(Duration::from_secs(5)).await, "never reconnected");
    assert_eq!(cached_scripts(&redis), 5, "scripts loaded again on reconnecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replies_cost_misses_not_a_resynchronisation_and_a_sustained_hang_still_disconnects() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let proxy = SlowProxy::start(redis.port()).await;
    let ttl = Duration::from_secs(60);
    let b = patient(&redis, ttl).await;
    let a = start(config(proxy.url(), ttl)).await;
    b.put_profile(snapshot(1, 1)).await;
    b.put_profile(snapshot(2, 1)).await;
    // Through the proxy a read may miss its 12 ms on a busy machine: retried, as the
    // next request would.
    let read = eventually(Duration::from_secs(2), async || version(&a, 1).await == Some(1)).await;
    assert!(read, "A never read what B stored");
    let before = generation(&redis);
    assert!(before.is_some());

    // Every reply to A is late once, well past op_timeout (12 ms), yet in time for the
    // verification of the put below (80 ms after it gave up, so with some 55 ms to spare
    // for a busy machine) and well within the heartbeat timeout (1 s): a busy instance,
    // not a lost Redis.
    let hold = Duration::from_millis(35);
    proxy.hold(hold);
    let t = Instant::now();
    a.put_profile(snapshot(2, 2)).await;
    assert!(t.elapsed() < hold, "the put waited for its late reply ({:?})", t.elapsed());
    assert_eq!(version(&a, 3).await, None, "a late read is a miss");
    let _ = a.rewards(3).await;
    assert!(t.elapsed() < Duration::from_millis(50), "late replies cost {:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(600)).await;

    assert_eq!(generation(&redis), before, "one slow operation resynchronised every instance");
    assert!(a.is_connected() && b.is_connected());
    assert_eq!(version(&b, 1).await, Some(1), "B's shared entry is still served");
    assert_eq!(version(&a, 1).await, Some(1), "A's in-process copy is still served");
    // A's unconfirmed put of v2 was announced (directly or by its verification): no
    // instance serves v1 of user 2 any more.
    assert_ne!(version(&b, 2).await, Some(1), "B still serves the copy A replaced");
    assert_ne!(version(&a, 2).await, Some(1), "A still serves the copy it replaced");
    // Invalidation from A still reaches B at once.
    a.put_profile(snapshot(1, 2)).await;
    assert!(eventually(Duration::from_millis(100), async || version(&b, 1).await != Some(1)).await);

    // A sustained hang (seen by A only) is still detected within 2 s.
    proxy.hold(Duration::from_secs(30));
    let t = Instant::now();
    let _ = a.profile(1).await;
    assert!(
        eventually(Duration::from_secs(2), async || !a.is_connected()).await,
        "a hanging Redis went unnoticed for {:?}",
        t.elapsed()
    );
    assert_eq!(version(&a, 1).await, None, "a disconnected instance served an in-process copy");
    assert!(b.is_connected());
    // Back: A resynchronises (a new generation) and serves again.
    proxy.hold(Duration::ZERO);
    assert!(a.wait_connected(Duration::from_secs(5)).await, "never reconnected");
    assert_ne!(generation(&redis), before);
    assert!(shared(&a, &b, 1, 3).await, "B never read what A stored once it was back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_slow_reads_opens_the_breaker_without_disconnecting() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let proxy = SlowProxy::start(redis.port()).await;
    let ttl = Duration::from_secs(60);
    let b = patient(&redis, ttl).await;
    let a = start(config(proxy.url(), ttl)).await;
    b.put_profile(snapshot(1, 1)).await;
    let before = generation(&redis);

    // Late replies for less than the heartbeat needs to notice: reads are misses, and
    // after BREAKER_FAILURES of them in a row the request path stops waiting.
    proxy.hold(Duration::from_millis(350));
    for _ in 0..profile_cache_redis::BREAKER_FAILURES {
        assert_eq!(version(&a, 1).await, None);
    }
    let t = Instant::now();
    for _ in 0..100 {
        assert_eq!(version(&a, 1).await, None);
    }
    assert!(t.elapsed() < Duration::from_millis(20), "an open breaker still costs {:?}", t.elapsed());
    assert!(a.is_connected(), "an open breaker is not a disconnection");
    // After the cooldown, one read in time closes it again; nothing was resynchronised.
    let hit = eventually(Duration::from_secs(2), async || version(&a, 1).await == Some(1)).await;
    assert!(hit, "the breaker never closed");
    assert_eq!(generation(&redis), before);
    assert!(a.is_connected() && b.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_that_cannot_be_verified_disconnects_and_resynchronises() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let proxy = SlowProxy::start(redis.port()).await;
    let ttl = Duration::from_secs(60);
    let b = patient(&redis, ttl).await;
    // A heartbeat far apart, so that only the verification can notice the hang here.
    let slow_beat = RedisCacheConfig {
        heartbeat: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(120),
        ..config(proxy.url(), ttl)
    };
    let a = start(slow_beat).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = generation(&redis);

    // Reads alone during a hang of 700 ms: misses, no disconnection.
    proxy.hold(Duration::from_millis(700));
    for _ in 0..3 {
        assert_eq!(version(&a, 1).await, None);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(a.is_connected(), "late reads disconnected the instance");
    assert_eq!(generation(&redis), before);

    // A put (a committed change to announce) during the same kind of hang: its
    // verification times out too, so nobody may have heard of it: A disconnects...
    proxy.hold(Duration::from_millis(700));
    let t = Instant::now();
    a.put_profile(snapshot(1, 2)).await;
    assert!(t.elapsed() < Duration::from_millis(50), "the put cost {:?}", t.elapsed());
    assert!(
        eventually(Duration::from_millis(300), async || !a.is_connected()).await,
        "an unconfirmed announcement left the instance connected"
    );
    // ...and on reconnecting makes every shared entry unusable for every instance.
    assert!(a.wait_connected(Duration::from_secs(5)).await, "never reconnected");
    assert_ne!(generation(&redis), before, "reconnected without a new generation");
    assert!(b.is_connected());
}

/// A first level that holds back one profile put until an invalidation of that user
/// reached it: the interleaving where another instance stores a newer version, and its
/// announcement is handled, between this instance's store in Redis and its own copy.
struct PutAfterInvalidation {
    inner: Arc<MemoryCache>,
    user_id: i64,
    invalidated: tokio::sync::Notify,
    held: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl CachePort for PutAfterInvalidation {
    async fn profile(&self, user_id: i64) -> Option<Arc<ProfileSnapshot>> {
        self.inner.profile(user_id).await
    }
    async fn put_profile(&self, snapshot: Arc<ProfileSnapshot>) {
        use std::sync::atomic::Ordering;
        if snapshot.profile.user_id == self.user_id && !self.held.swap(true, Ordering::SeqCst) {
            self.invalidated.notified().await;
        }
        self.inner.put_profile(snapshot).await;
    }
    async fn invalidate_profile(&self, user_id: i64) {
        self.inner.invalidate_profile(user_id).await;
        if user_id == self.user_id {
            self.invalidated.notify_one();
        }
    }
    async fn clear_profiles(&self) {
        self.inner.clear_profiles().await;
    }
    async fn rewards(&self, user_id: i64) -> Option<RewardsSnapshot> {
        self.inner.rewards(user_id).await
    }
    async fn put_rewards(&self, user_id: i64, snapshot: RewardsSnapshot) {
        self.inner.put_rewards(user_id, snapshot).await;
    }
}

/// A stores version 1 in Redis; before it keeps its own copy, B stores version 2 and
/// A handles B's announcement. A must not go on serving version 1 from its first level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_version_announced_while_an_older_put_finishes_is_not_shadowed() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(60);
    let gated = Arc::new(PutAfterInvalidation {
        inner: MemoryCache::with_profile_ttl(ttl),
        user_id: 5,
        invalidated: tokio::sync::Notify::new(),
        held: std::sync::atomic::AtomicBool::new(false),
    });
    let a = Arc::new(RedisCache::start(patient_config(redis.url(), ttl), gated).expect("start"));
    assert!(a.wait_connected(Duration::from_secs(5)).await, "never connected");
    let b = patient(&redis, ttl).await;
    let put = tokio::spawn({
        let a = a.clone();
        async move { a.put_profile(snapshot(5, 1)).await }
    });
    // A's version 1 is in Redis (B's version 2 replaces it), A's own copy still held back.
    assert!(eventually(Duration::from_secs(2), async || version(&b, 5).await == Some(1)).await);
    b.put_profile(snapshot(5, 2)).await;
    tokio::time::timeout(Duration::from_secs(5), put).await.expect("A's put finished").expect("put");
    assert_eq!(version(&a, 5).await, Some(2), "A serves the version B replaced");
}
