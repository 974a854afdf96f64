//! The caches: the in-process one (mini-moka) and, with `--cache-url`, the shared one on
//! Redis behind it, composed through the port (SPEC §10).

use std::sync::Arc;
use std::time::Duration;

use profile_cache_moka::{CacheConfig, MokaCache};
use profile_cache_redis::{RedisCache, RedisCacheConfig};
use profile_core::ports::CachePort;

use crate::error::AppError;

/// The setting, as errors name it.
pub const SETTING: &str = "--cache-url (PROFILE_CACHE_URL)";

/// The configured URL; an empty one means none.
fn configured(url: Option<&str>) -> Option<&str> {
    url.filter(|u| !u.trim().is_empty())
}

/// Refuses a bad `--cache-url` before anything else happens; the message never repeats
/// the URL (it may hold a password).
pub fn check(url: Option<&str>) -> Result<(), AppError> {
    match configured(url) {
        Some(u) => profile_cache_redis::parse_url(u).map(|_| ()).map_err(|e| AppError::setting(SETTING, e)),
        None => Ok(()),
    }
}

/// Registers the descriptions of the shared cache's metrics.
pub fn describe_metrics() {
    profile_cache_redis::describe_metrics();
}

/// The cache the service uses: the in-process one alone, or the shared one in front of
/// which it stays. The shared one connects (and reconnects) in the background: Redis
/// need not be up at start.
pub fn build(
    url: Option<&str>,
    profile_ttl: Duration,
    rewards_window: Duration,
) -> Result<Arc<dyn CachePort>, AppError> {
    // Keep the last known balance far beyond the window so failures can serve it `stale`.
    let rewards_retention = rewards_window.max(Duration::from_secs(24 * 3600));
    let local =
        Arc::new(MokaCache::new(CacheConfig { profile_ttl, rewards_retention, ..CacheConfig::default() }));
    let Some(url) = configured(url) else { return Ok(local) };
    let config =
        RedisCacheConfig { profile_ttl, rewards_retention, rewards_window, ..RedisCacheConfig::new(url) };
    let shared = RedisCache::start(config, local).map_err(|e| AppError::setting(SETTING, e))?;
    tracing::info!(cache_url = %profile_cache_redis::redacted(url), "shared cache configured");
    Ok(Arc::new(shared))
}
