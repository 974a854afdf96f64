//! The shared cache on a real, throwaway `redis-server`.

use std::sync::Arc;
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

fn config(url: String, ttl: Duration) -> RedisCacheConfig {
    RedisCacheConfig { profile_ttl: ttl, ..RedisCacheConfig::new(url) }
}

async fn cache(redis: &RedisServer, ttl: Duration) -> RedisCache {
    let local = MemoryCache::with_profile_ttl(ttl);
    let cache = RedisCache::start(config(redis.url(), ttl), local).expect("start");
    assert!(cache.wait_connected(Duration::from_secs(5)).await, "never connected");
    cache
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
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(400);
    let cache = cache(&redis, ttl).await;
    let contract = CacheContract {
        profile_ttl: ttl,
        sleep: Box::new(|d| Box::pin(tokio::time::sleep(d))),
        first_id: 7_000_001,
    };
    cache_contract(&cache, &contract).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_reaches_the_other_within_100_ms() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(60);
    let (a, b) = (cache(&redis, ttl).await, cache(&redis, ttl).await);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_fetched_by_one_instance_is_found_by_the_other() {
    let redis = RedisServer::start();
    let (a, b) = (cache(&redis, Duration::from_secs(60)).await, cache(&redis, Duration::from_secs(60)).await);
    let s = RewardsSnapshot {
        balance: Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }),
        fetched_at: Utc::now(),
    };
    a.put_rewards(9, s.clone()).await;
    assert_eq!(b.rewards(9).await, Some(s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_costs_one_timeout_then_nothing_and_is_rejoined_by_itself() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let ttl = Duration::from_secs(60);
    let (a, b) = (cache(&redis, ttl).await, cache(&redis, ttl).await);
    a.put_profile(snapshot(1, 1)).await;
    assert_eq!(version(&b, 1).await, Some(1));
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
    a.put_profile(snapshot(1, 2)).await;
    assert_eq!(version(&b, 1).await, Some(2));
    a.put_profile(snapshot(1, 3)).await;
    assert!(eventually(Duration::from_millis(100), async || version(&b, 1).await == Some(3)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_detected_and_its_old_entries_are_unusable_when_it_is_back() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(60);
    let (a, b) = (cache(&redis, ttl).await, cache(&redis, ttl).await);
    a.put_profile(snapshot(1, 1)).await;
    assert_eq!(version(&b, 1).await, Some(1));
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
    a.put_profile(snapshot(1, 2)).await;
    assert_eq!(version(&b, 1).await, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_starts_without_redis_and_connects_later_by_itself() {
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
    a.put_profile(snapshot(1, 2)).await;
    assert_eq!(version(&b, 1).await, Some(2));
}
