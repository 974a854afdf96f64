//! The core service over `MokaCache` and the in-memory fakes: rewards freshness as the
//! core judges it from what this cache keeps, and profile replacement on update.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use profile_cache_moka::{CacheConfig, MokaCache};
use profile_core::domain::{
    AccountSnapshot, Precondition, ProfileUpdate, RewardsBalance, RewardsStatus, UserId,
};
use profile_core::ports::Clock;
use profile_core::{ProfileService, ServiceConfig};
use profile_memory::{ManualClock, MemoryAccounts, MemoryProfiles, MemoryRewards, Op};
use serde_json::json;

const ALICE: UserId = 1;
const NEWCOMER: UserId = 2;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 5, 0, 0).single().expect("date")
}

fn account(id: UserId) -> AccountSnapshot {
    AccountSnapshot { login_count: 3, ..profile_memory::sample_account(id) }
}

struct App {
    service: ProfileService,
    accounts: Arc<MemoryAccounts>,
    profiles: Arc<MemoryProfiles>,
    rewards: Arc<MemoryRewards>,
    clock: Arc<ManualClock>,
}

impl App {
    fn new(profile_ttl: Duration) -> Self {
        let accounts = MemoryAccounts::new();
        accounts.insert(account(ALICE));
        accounts.insert(account(NEWCOMER));
        let profiles = MemoryProfiles::new();
        let rewards = MemoryRewards::new();
        rewards.set(ALICE, Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }));
        let clock = ManualClock::new(start());
        let cache = Arc::new(MokaCache::new(CacheConfig { profile_ttl, ..CacheConfig::default() }));
        let config = ServiceConfig { rewards_window: Duration::from_secs(30), ..ServiceConfig::default() };
        let service = ProfileService::new(
            accounts.clone(),
            profiles.clone(),
            rewards.clone(),
            cache,
            clock.clone(),
            config,
        );
        Self { service, accounts, profiles, rewards, clock }
    }

    async fn rewards(&self, id: UserId) -> (i64, Option<String>, RewardsStatus, Option<DateTime<Utc>>) {
        let r = self.service.get(id).await.expect("profile").view.rewards;
        (r.points, r.tier, r.status, r.as_of)
    }

    async fn display_name(&self, id: UserId) -> (i64, String) {
        let read = self.service.get(id).await.expect("profile");
        (read.view.profile().version, read.view.profile().personal.display_name.clone())
    }

    async fn rename(&self, id: UserId, name: &str) {
        let doc = json!({ "personal": { "display_name": name } });
        let parsed = ProfileUpdate::from_merge_patch(&doc, self.service.today());
        self.service.update(id, parsed, Precondition::None).await.expect("updated");
    }
}

fn gold() -> Option<String> {
    Some("gold".into())
}

#[tokio::test]
async fn rewards_are_live_then_cached_then_stale_while_the_service_fails() {
    let app = App::new(Duration::from_secs(60));
    assert_eq!(app.rewards(ALICE).await, (1250, gold(), RewardsStatus::Live, Some(start())));

    app.clock.advance(Duration::from_secs(29));
    app.rewards.set(ALICE, Some(RewardsBalance { points: 2000, tier: None }));
    assert_eq!(app.rewards(ALICE).await, (1250, gold(), RewardsStatus::Cached, Some(start())));
    assert_eq!(app.rewards.calls(), 1, "no call within the window");

    app.clock.advance(Duration::from_secs(2));
    app.rewards.fail_always(true);
    assert_eq!(app.rewards(ALICE).await, (1250, gold(), RewardsStatus::Stale, Some(start())));

    app.rewards.fail_always(false);
    let now = app.clock.now();
    assert_eq!(app.rewards(ALICE).await, (2000, None, RewardsStatus::Live, Some(now)));
}

#[tokio::test]
async fn rewards_are_unavailable_when_nothing_was_ever_known() {
    let app = App::new(Duration::from_secs(60));
    app.rewards.fail_always(true);
    assert_eq!(app.rewards(NEWCOMER).await, (0, None, RewardsStatus::Unavailable, None));
}

#[tokio::test]
async fn no_rewards_account_is_cached_like_a_balance() {
    let app = App::new(Duration::from_secs(60));
    assert_eq!(app.rewards(NEWCOMER).await, (0, None, RewardsStatus::Live, Some(start())));
    app.clock.advance(Duration::from_secs(10));
    assert_eq!(app.rewards(NEWCOMER).await, (0, None, RewardsStatus::Cached, Some(start())));
    assert_eq!(app.rewards.calls(), 1);
}

#[tokio::test]
async fn rewards_are_composed_per_request_even_from_a_cached_profile() {
    let app = App::new(Duration::from_secs(3600));
    app.rewards(ALICE).await;
    app.clock.advance(Duration::from_secs(31));
    app.rewards.set(ALICE, Some(RewardsBalance { points: 7, tier: None }));
    let loads = app.profiles.faults.calls(Op::Load);
    assert_eq!(app.rewards(ALICE).await.0, 7);
    assert_eq!(app.profiles.faults.calls(Op::Load), loads, "the profile came from the cache");
}

#[tokio::test]
async fn an_update_replaces_the_cached_profile() {
    let app = App::new(Duration::from_secs(3600));
    assert_eq!(app.display_name(ALICE).await, (0, "user1".into()));
    for (version, name) in [(1, "Ada"), (2, "Ada L."), (3, "Countess")] {
        app.rename(ALICE, name).await;
        let loads = app.profiles.faults.calls(Op::Load);
        assert_eq!(app.display_name(ALICE).await, (version, name.into()));
        assert_eq!(app.profiles.faults.calls(Op::Load), loads, "served from the cache, already updated");
    }
}

#[tokio::test]
async fn a_read_racing_an_update_never_leaves_the_old_profile_cached() {
    let app = Arc::new(App::new(Duration::from_secs(3600)));
    // Account reads are slow, profile loads instant: the update loads version 0, waits
    // for the account, then writes and caches version 1 at ~100 ms; the read starting at
    // 50 ms loads version 0 still, and would cache it at ~150 ms.
    app.accounts.faults.set_latency(Some(Duration::from_millis(100)));
    let updater = {
        let app = app.clone();
        tokio::spawn(async move { app.rename(ALICE, "New").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let racing = app.display_name(ALICE).await;
    updater.await.expect("update task");
    assert_eq!(racing, (0, "user1".into()), "the racing read saw the old state, as set up");
    app.accounts.faults.set_latency(None);
    assert_eq!(app.display_name(ALICE).await, (1, "New".into()));
}

async fn logins(service: &ProfileService) -> i64 {
    service.get(ALICE).await.expect("profile").view.profile().statistics.login_count
}

#[tokio::test]
async fn the_profile_ttl_bounds_how_long_outside_changes_are_hidden() {
    let app = App::new(Duration::from_millis(100));
    assert_eq!(logins(&app.service).await, 3);
    app.accounts.insert(AccountSnapshot { login_count: 4, ..account(ALICE) });
    assert_eq!(logins(&app.service).await, 3, "cached");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(logins(&app.service).await, 4, "expired and read again");
}

#[tokio::test]
async fn a_zero_profile_ttl_reads_the_databases_every_time() {
    let app = App::new(Duration::ZERO);
    app.service.get(ALICE).await.expect("profile");
    app.service.get(ALICE).await.expect("profile");
    assert_eq!(app.profiles.faults.calls(Op::Load), 2);
    app.accounts.insert(AccountSnapshot { login_count: 9, ..account(ALICE) });
    let read = app.service.get(ALICE).await.expect("profile");
    assert_eq!(read.view.profile().statistics.login_count, 9);
    // Rewards are still cached.
    assert_eq!(read.view.rewards.status, RewardsStatus::Cached);
}
