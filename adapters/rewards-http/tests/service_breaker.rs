//! The core service over the real rewards adapter: a hanging rewards service costs each
//! profile read at most the timeout, and only until the breaker opens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use profile_core::domain::{AccountSnapshot, RewardsStatus};
use profile_core::ports::SystemClock;
use profile_core::{ProfileService, ServiceConfig};
use profile_memory::{MemoryAccounts, MemoryCache, MemoryProfiles};
use profile_rewards_http::stub::{StubMode, StubServer, expected_balance};
use profile_rewards_http::{HttpRewards, RewardsHttpConfig};

const TIMEOUT: Duration = Duration::from_millis(100);
const FAILURES: u32 = 3;

fn account(id: i64) -> AccountSnapshot {
    profile_memory::sample_account(id)
}

#[tokio::test]
async fn a_hanging_rewards_service_stops_slowing_reads_once_the_breaker_opens() {
    let stub = StubServer::start_local(StubMode::Hang).await.expect("stub");
    let rewards = HttpRewards::new(RewardsHttpConfig {
        base_url: stub.url(),
        api_key: None,
        timeout: TIMEOUT,
        breaker_failures: FAILURES,
        breaker_cooldown: Duration::from_millis(400),
    })
    .expect("config");
    let accounts = MemoryAccounts::new();
    accounts.insert(account(7));
    let service = ProfileService::new(
        accounts,
        MemoryProfiles::new(),
        Arc::new(rewards),
        MemoryCache::new(),
        Arc::new(SystemClock),
        ServiceConfig::default(),
    );

    let started = Instant::now();
    for _ in 0..50 {
        let one = Instant::now();
        let read = service.get(7).await.expect("the profile is served");
        assert_eq!(read.view.rewards.status, RewardsStatus::Unavailable);
        assert!(one.elapsed() < TIMEOUT + Duration::from_millis(150), "one read took {:?}", one.elapsed());
    }
    let total = started.elapsed();
    // Only the calls before the breaker opened wait for the timeout.
    assert!(total >= TIMEOUT * FAILURES, "{total:?}");
    assert!(total < TIMEOUT * (FAILURES + 5), "50 reads took {total:?}; 50 × timeout is {:?}", TIMEOUT * 50);
    assert!(stub.control().calls() <= u64::from(FAILURES) + 1, "calls: {}", stub.control().calls());

    // Recovery: after the cooldown a probe succeeds and balances are live again.
    stub.control().set_mode(StubMode::Normal);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let read = service.get(7).await.expect("profile");
    assert_eq!(read.view.rewards.status, RewardsStatus::Live);
    let expected = expected_balance(7).expect("7 has an account");
    assert_eq!(read.view.rewards.points, expected.points);
    assert_eq!(read.view.rewards.tier, expected.tier);
}
