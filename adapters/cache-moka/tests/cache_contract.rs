//! The cache contract suite, run against the mini-moka cache.

use std::time::Duration;

use profile_cache_moka::{CacheConfig, MokaCache};
use profile_core::contract::{CacheContract, cache_contract};

#[tokio::test]
async fn moka_cache_honours_the_cache_contract() {
    let ttl = Duration::from_millis(300);
    let cache = MokaCache::new(CacheConfig { profile_ttl: ttl, ..CacheConfig::default() });
    let contract = CacheContract {
        profile_ttl: ttl,
        sleep: Box::new(|d| Box::pin(tokio::time::sleep(d))),
        first_id: 7_000_001,
    };
    cache_contract(&cache, &contract).await;
}
