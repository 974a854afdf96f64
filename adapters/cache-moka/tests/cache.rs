//! `MokaCache` on its own: TTLs, replacement, invalidation, retention, capacity, metrics.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use profile_cache_moka::{CacheConfig, MokaCache};
use profile_core::domain::{
    Profile, ProfileRecord, ProfileSnapshot, RewardsBalance, RewardsSnapshot, UserId,
};
use profile_core::ports::CachePort;

fn snapshot(id: UserId, version: i64, display_name: &str) -> Arc<ProfileSnapshot> {
    let account = profile_memory::sample_account(id);
    let mut record = ProfileRecord::new_default(id);
    record.version = version;
    record.fields.personal.display_name = Some(display_name.to_owned());
    ProfileSnapshot::new(Profile::assemble(&account, &record))
}

fn balance(points: i64, minutes_ago: i64) -> RewardsSnapshot {
    RewardsSnapshot {
        balance: Some(RewardsBalance { points, tier: None }),
        fetched_at: Utc::now() - TimeDelta::minutes(minutes_ago),
    }
}

fn cache(profile_ttl: Duration) -> MokaCache {
    MokaCache::new(CacheConfig { profile_ttl, ..CacheConfig::default() })
}

#[tokio::test]
async fn a_profile_is_served_until_its_ttl_expires() {
    let c = cache(Duration::from_millis(100));
    c.put_profile(snapshot(1, 0, "a")).await;
    assert_eq!(c.profile(1).await.map(|s| s.profile.personal.display_name.clone()), Some("a".into()));
    assert!(c.profile(2).await.is_none());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(c.profile(1).await.is_none(), "expired");
}

#[tokio::test]
async fn a_zero_ttl_disables_the_profile_cache() {
    let c = cache(Duration::ZERO);
    c.put_profile(snapshot(1, 0, "a")).await;
    assert!(c.profile(1).await.is_none());
    c.invalidate_profile(1).await;
    c.put_rewards(1, balance(5, 0)).await;
    assert!(c.rewards(1).await.is_some(), "rewards are still kept");
    c.run_pending_tasks();
    assert_eq!(c.entry_counts(), (0, 1));
}

#[tokio::test]
async fn a_put_replaces_the_profile() {
    let c = cache(Duration::from_secs(60));
    c.put_profile(snapshot(1, 1, "old")).await;
    c.put_profile(snapshot(1, 2, "new")).await;
    let got = c.profile(1).await.expect("cached");
    assert_eq!((got.profile.version, got.profile.personal.display_name.as_str()), (2, "new"));
    // Same version, different data (e.g. statistics moved on): replaced too.
    c.put_profile(snapshot(1, 2, "newer")).await;
    assert_eq!(c.profile(1).await.expect("cached").profile.personal.display_name, "newer");
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    let c = cache(Duration::from_secs(60));
    c.put_profile(snapshot(1, 3, "v3")).await;
    c.put_profile(snapshot(1, 2, "v2 read before the update")).await;
    assert_eq!(c.profile(1).await.expect("cached").profile.version, 3);
}

#[tokio::test]
async fn invalidate_drops_the_profile_only() {
    let c = cache(Duration::from_secs(60));
    c.put_profile(snapshot(1, 0, "a")).await;
    c.put_profile(snapshot(2, 0, "b")).await;
    c.put_rewards(1, balance(5, 0)).await;
    c.invalidate_profile(1).await;
    assert!(c.profile(1).await.is_none());
    assert!(c.profile(2).await.is_some());
    assert!(c.rewards(1).await.is_some());
    // After an invalidation any version may be stored again.
    c.put_profile(snapshot(1, 0, "a again")).await;
    assert!(c.profile(1).await.is_some());
}

#[tokio::test]
async fn rewards_outlive_the_profile_ttl_whatever_their_age() {
    let c = cache(Duration::from_millis(50));
    c.put_profile(snapshot(1, 0, "a")).await;
    let old = balance(1250, 120);
    c.put_rewards(1, old.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(c.profile(1).await.is_none());
    assert_eq!(c.rewards(1).await, Some(old), "kept regardless of fetched_at");
    assert!(c.rewards(2).await.is_none());
}

#[tokio::test]
async fn rewards_expire_after_the_retention() {
    let c = MokaCache::new(CacheConfig {
        rewards_retention: Duration::from_millis(50),
        ..CacheConfig::default()
    });
    c.put_rewards(1, balance(1, 0)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(c.rewards(1).await.is_none());
}

#[tokio::test]
async fn a_put_replaces_the_balance_unless_it_is_older() {
    let c = cache(Duration::from_secs(60));
    c.put_rewards(1, balance(1, 5)).await;
    let newer = balance(2, 1);
    c.put_rewards(1, newer.clone()).await;
    assert_eq!(c.rewards(1).await, Some(newer.clone()));
    c.put_rewards(1, balance(3, 3)).await;
    assert_eq!(c.rewards(1).await, Some(newer), "an older fetch finishing late is dropped");
    let none = RewardsSnapshot { balance: None, fetched_at: Utc::now() };
    c.put_rewards(1, none.clone()).await;
    assert_eq!(c.rewards(1).await, Some(none), "no account (404) is cached like a balance");
}

#[tokio::test]
async fn capacity_bounds_the_entry_count() {
    let c = MokaCache::new(CacheConfig {
        profile_ttl: Duration::from_secs(60),
        profile_capacity: 100,
        rewards_retention: Duration::from_secs(60),
        rewards_capacity: 200,
    });
    let one = snapshot(1, 0, "x");
    for id in 0..5_000 {
        let mut s = (*one).clone();
        s.profile.user_id = id;
        c.put_profile(Arc::new(s)).await;
        c.put_rewards(id, balance(id, 0)).await;
    }
    c.run_pending_tasks();
    let (profiles, rewards) = c.entry_counts();
    assert!(profiles <= 100 + 5, "{profiles} profiles");
    assert!(rewards <= 200 + 5, "{rewards} balances");
    assert!(profiles > 0 && rewards > 0);
}

#[tokio::test]
async fn metrics_count_hits_misses_and_entries() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let c = metrics::with_local_recorder(&recorder, || {
        profile_cache_moka::describe_metrics();
        cache(Duration::from_secs(60))
    });
    c.put_profile(snapshot(1, 0, "a")).await;
    c.put_profile(snapshot(2, 0, "b")).await;
    c.profile(1).await;
    c.profile(1).await;
    c.profile(3).await;
    c.rewards(1).await;
    c.put_rewards(1, balance(1, 0)).await;
    c.rewards(1).await;
    c.run_pending_tasks();
    let text = handle.render();
    for line in [
        r#"cache_hits_total{cache="profile"} 2"#,
        r#"cache_misses_total{cache="profile"} 1"#,
        r#"cache_hits_total{cache="rewards"} 1"#,
        r#"cache_misses_total{cache="rewards"} 1"#,
        r#"cache_entries{cache="profile"} 2"#,
        r#"cache_entries{cache="rewards"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}
