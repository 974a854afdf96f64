//! The cache contract suite, run against the in-memory cache fake.

use std::time::Duration;

use profile_core::contract::{CacheContract, cache_contract};
use profile_memory::MemoryCache;

#[tokio::test]
async fn memory_cache_honours_the_cache_contract() {
    let ttl = Duration::from_millis(300);
    let cache = MemoryCache::with_profile_ttl(ttl);
    let contract = CacheContract {
        profile_ttl: ttl,
        sleep: Box::new(|d| Box::pin(tokio::time::sleep(d))),
        first_id: 7_000_001,
    };
    cache_contract(cache.as_ref(), &contract).await;
}
