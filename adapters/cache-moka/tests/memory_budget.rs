//! Both caches filled to their default capacity, profiles with realistic and fully
//! populated data (each profile kept parsed and serialised), stay under 250 MB, leaving
//! the server 50 MB of its 300 MB budget. Alone in its test binary so no other test
//! moves the resident set size it measures, and under the allocator the binary uses.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use profile_cache_moka::{CacheConfig, MokaCache};
use profile_core::domain::{
    AccountSnapshot, AccountStatus, BillingAddress, OrderStats, Profile, ProfileRecord, ProfileSnapshot,
    RewardsBalance, RewardsSnapshot,
};
use profile_core::ports::CachePort;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident set size in bytes, from `/proc/self/status`.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn full_profile(id: i64) -> Arc<ProfileSnapshot> {
    let account = AccountSnapshot {
        id,
        email: format!("firstname.lastname{id}@example.com"),
        username: format!("user{id}"),
        status: AccountStatus::Active,
        created_at: Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).single().expect("date"),
        last_login_at: Some(Utc::now()),
        login_count: 57,
        orders: OrderStats { orders_count: 12, total_spent_cents: 48_950, last_order_at: Some(Utc::now()) },
    };
    let mut r = ProfileRecord::new_default(id);
    r.version = 3;
    r.updated_at = Some(Utc::now());
    let p = &mut r.fields.personal;
    p.display_name = Some(format!("Ada Lovelace {id}"));
    p.first_name = Some("Augusta Ada".into());
    p.last_name = Some("King-Noel".into());
    p.phone = Some("+442071234567".into());
    p.avatar_url = Some(format!("https://cdn.example.com/avatars/{id}/large.png"));
    p.bio = Some("Mathematician and writer, chiefly known for work on the Analytical Engine. ".repeat(3));
    p.birth_date = NaiveDate::from_ymd_opt(1990, 12, 10);
    p.city = Some("London".into());
    p.country = Some("GB".into());
    let prefs = &mut r.fields.preferences;
    prefs.language = "en-GB".into();
    prefs.timezone = "Europe/London".into();
    prefs.currency = "GBP".into();
    let b = &mut r.fields.business;
    b.company_name = Some("Analytical Engines Ltd".into());
    b.job_title = Some("Principal Engineer".into());
    b.tax_id = Some("GB123456789".into());
    b.website = Some("https://analytical-engines.example.com".into());
    b.billing_address = Some(BillingAddress {
        line1: "12 St James's Square".into(),
        line2: Some("Flat 3".into()),
        city: "London".into(),
        postal_code: Some("SW1Y 4JH".into()),
        country: "GB".into(),
    });
    ProfileSnapshot::new(Profile::assemble(&account, &r))
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn full_default_caches_stay_within_the_servers_memory_budget() {
    // The server must stay under 300 MB resident with full default caches; leave it
    // 50 MB for everything else.
    const BUDGET: u64 = 250 * 1024 * 1024;
    let config = CacheConfig { profile_ttl: Duration::from_secs(3600), ..CacheConfig::default() };
    let cache = MokaCache::new(config);

    let before = rss().expect("rss");
    let n = config.profile_capacity;
    for id in 1..=n as i64 {
        cache.put_profile(full_profile(id)).await;
    }
    cache.run_pending_tasks();
    let profiles = rss().expect("rss").saturating_sub(before);
    eprintln!("{n} profiles: {} MiB resident ({} bytes each)", profiles >> 20, profiles / n);

    let before = rss().expect("rss");
    let m = config.rewards_capacity;
    let fetched_at = Utc::now();
    for id in 1..=m as i64 {
        let balance = Some(RewardsBalance { points: id, tier: Some("platinum".into()) });
        cache.put_rewards(id, RewardsSnapshot { balance, fetched_at }).await;
    }
    cache.run_pending_tasks();
    let rewards = rss().expect("rss").saturating_sub(before);
    eprintln!("{m} balances: {} MiB resident ({} bytes each)", rewards >> 20, rewards / m);

    let (p, r) = cache.entry_counts();
    assert!(p >= n * 9 / 10 && r >= m * 9 / 10, "the caches hold them: {p}, {r}");
    assert!(profiles + rewards < BUDGET, "{profiles} + {rewards} bytes");
}
