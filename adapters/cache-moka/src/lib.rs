//! Profile and rewards caches on mini-moka, with TTLs and bounded capacity.
//!
//! [`MokaCache`] implements [`CachePort`]: assembled profiles live for the profile TTL,
//! the last known rewards balance for the (long) rewards retention; the core decides
//! whether a balance is `cached` or `stale` from its `fetched_at`. Both caches are
//! bounded by entry count, so memory stays bounded however many users are seen.
//!
//! A cached profile carries a copy of the user's balance beside it, so a profile read
//! finds both in one lookup ([`CachePort::profile_and_rewards`]): over 10,000 users a
//! mini-moka lookup is most of what a cached read costs above the HTTP exchange.
//!
//! Metric handles are resolved when the cache is built: install the metrics recorder
//! before calling [`MokaCache::new`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge, Unit};
use mini_moka::sync::{Cache, ConcurrentCacheExt};
use profile_core::domain::{ProfileSnapshot, RewardsSnapshot, UserId};
use profile_core::ports::CachePort;

/// Counter of lookups that found an entry, by `cache`.
pub const HITS_TOTAL: &str = "cache_hits_total";
/// Counter of lookups that found nothing, by `cache`.
pub const MISSES_TOTAL: &str = "cache_misses_total";
/// Gauge of the approximate number of entries, by `cache`.
pub const ENTRIES: &str = "cache_entries";

/// Registers the descriptions of this crate's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        HITS_TOTAL,
        Unit::Count,
        "Cache lookups that found an entry, by cache (profile, rewards)."
    );
    metrics::describe_counter!(
        MISSES_TOTAL,
        Unit::Count,
        "Cache lookups that found nothing, by cache (profile, rewards)."
    );
    metrics::describe_gauge!(
        ENTRIES,
        Unit::Count,
        "Approximate number of cached entries, by cache (profile, rewards)."
    );
}

/// Settings of the caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an assembled profile is served from the cache; zero disables the profile cache.
    pub profile_ttl: Duration,
    /// Most profiles kept at once.
    pub profile_capacity: u64,
    /// How long the last known rewards balance is kept (to serve it as `stale`).
    pub rewards_retention: Duration,
    /// Most balances kept at once.
    pub rewards_capacity: u64,
}

impl Default for CacheConfig {
    /// 60 s / 50 000 profiles, 24 h / 100 000 balances. Measured (tests/memory_budget.rs,
    /// under the binary's allocator): a fully populated profile (parsed and serialised)
    /// costs about 3.7 KiB resident with the cache's own overhead, a balance about
    /// 0.3 KiB, so both caches full take about 215 MiB.
    fn default() -> Self {
        Self {
            profile_ttl: Duration::from_secs(60),
            profile_capacity: 50_000,
            rewards_retention: Duration::from_secs(24 * 3600),
            rewards_capacity: 100_000,
        }
    }
}

/// mini-moka refuses (panics on) expirations beyond 1000 years; nobody needs more than a century.
const MAX_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Puts of one user are serialised on one of these locks so that "keep the newer
/// entry" is a single step; gets never take them.
const STRIPES: usize = 64;

/// Metric handles of one cache, resolved once so a lookup costs one atomic increment.
#[derive(Debug, Clone)]
struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    entries: Gauge,
}

impl CacheMetrics {
    fn new(cache: &'static str) -> Self {
        Self {
            hits: metrics::counter!(HITS_TOTAL, "cache" => cache),
            misses: metrics::counter!(MISSES_TOTAL, "cache" => cache),
            entries: metrics::gauge!(ENTRIES, "cache" => cache),
        }
    }

    fn lookup<T>(&self, found: Option<T>) -> Option<T> {
        match &found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }
}

/// A cached profile, and the user's last known balance as the rewards cache held it.
///
/// The copy is kept equal to the rewards cache's entry: both puts take the user's stripe
/// lock, a profile put copies the balance in, a balance put updates the copy in place
/// (replacing the entry would restart its time to live). It can only outlive the rewards
/// cache's own entry (evicted for room), never lag behind it.
#[derive(Debug)]
struct Held {
    snapshot: Arc<ProfileSnapshot>,
    rewards: Mutex<Option<RewardsSnapshot>>,
}

impl Held {
    fn rewards(&self) -> Option<RewardsSnapshot> {
        // The guarded value is replaced whole: a poisoned lock carries no broken state.
        self.rewards.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_rewards(&self, snapshot: RewardsSnapshot) {
        *self.rewards.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
    }
}

/// [`CachePort`] on two mini-moka caches.
pub struct MokaCache {
    /// `None` when the profile TTL is zero: nothing is stored, every lookup misses.
    profiles: Option<Cache<UserId, Arc<Held>>>,
    /// Versions of invalidated entries, kept for the profile TTL: an older snapshot put
    /// right after an invalidation is still refused.
    floors: Option<Cache<UserId, i64>>,
    rewards: Cache<UserId, RewardsSnapshot>,
    /// The profile TTL, counted from when a snapshot's data was read from the databases
    /// (mini-moka's own, from the put, only bounds it).
    profile_ttl: Duration,
    stripes: [Mutex<()>; STRIPES],
    profile_metrics: CacheMetrics,
    rewards_metrics: CacheMetrics,
}

impl std::fmt::Debug for MokaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (profiles, rewards) = self.entry_counts();
        f.debug_struct("MokaCache")
            .field("profiles", &profiles)
            .field("rewards", &rewards)
            .finish_non_exhaustive()
    }
}

impl MokaCache {
    /// Builds both caches from `config`.
    pub fn new(config: CacheConfig) -> Self {
        let profiles = (!config.profile_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(config.profile_capacity)
                .time_to_live(config.profile_ttl.min(MAX_EXPIRY))
                .build()
        });
        let floors = (!config.profile_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(config.profile_capacity)
                .time_to_live(config.profile_ttl.min(MAX_EXPIRY))
                .build()
        });
        let rewards = Cache::builder()
            .max_capacity(config.rewards_capacity)
            .time_to_live(config.rewards_retention.min(MAX_EXPIRY))
            .build();
        let this = Self {
            profiles,
            floors,
            rewards,
            profile_ttl: config.profile_ttl,
            stripes: std::array::from_fn(|_| Mutex::new(())),
            profile_metrics: CacheMetrics::new("profile"),
            rewards_metrics: CacheMetrics::new("rewards"),
        };
        this.profile_metrics.entries.set(0.0);
        this.rewards_metrics.entries.set(0.0);
        this
    }

    /// Approximate entry counts (profiles, balances); exact after [`Self::run_pending_tasks`].
    pub fn entry_counts(&self) -> (u64, u64) {
        (self.profiles.as_ref().map_or(0, Cache::entry_count), self.rewards.entry_count())
    }

    /// Applies pending evictions and expirations now (mini-moka batches them), and
    /// refreshes the entry gauges.
    pub fn run_pending_tasks(&self) {
        if let Some(p) = &self.profiles {
            p.sync();
        }
        self.rewards.sync();
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let (profiles, rewards) = self.entry_counts();
        self.profile_metrics.entries.set(profiles as f64);
        self.rewards_metrics.entries.set(rewards as f64);
    }

    /// The entry of `user_id`, unless its data was read from the databases a TTL ago or
    /// more (a snapshot an update made from a cached account ages from that account's read).
    fn held(&self, user_id: UserId) -> Option<Arc<Held>> {
        self.profiles
            .as_ref()
            .and_then(|c| c.get(&user_id))
            .filter(|h| h.snapshot.fresh_within(self.profile_ttl))
    }

    fn stripe(&self, user_id: UserId) -> std::sync::MutexGuard<'_, ()> {
        let i = user_id.rem_euclid(STRIPES as i64) as usize;
        // The guarded data is `()`: a poisoned lock carries no broken state.
        self.stripes[i].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl CachePort for MokaCache {
    async fn profile(&self, user_id: UserId) -> Option<Arc<ProfileSnapshot>> {
        self.profile_metrics.lookup(self.held(user_id)).map(|h| h.snapshot.clone())
    }

    /// One lookup when the profile is cached with a balance beside it; the rewards cache
    /// is asked only when it is not.
    async fn profile_and_rewards(
        &self,
        user_id: UserId,
    ) -> (Option<Arc<ProfileSnapshot>>, Option<RewardsSnapshot>) {
        let held = self.profile_metrics.lookup(self.held(user_id));
        let rewards = match held.as_ref().and_then(|h| h.rewards()) {
            Some(copy) => {
                self.rewards_metrics.hits.increment(1);
                Some(copy)
            }
            None => self.rewards_metrics.lookup(self.rewards.get(&user_id)),
        };
        (held.map(|h| h.snapshot.clone()), rewards)
    }

    /// Replaces the cached profile unless the cached one has a higher `version`: a read
    /// that loaded the databases before a concurrent update must not put its older state
    /// back over the update's (the next get would show old data for a whole TTL).
    async fn put_profile(&self, snapshot: Arc<ProfileSnapshot>) {
        let Some(cache) = &self.profiles else { return };
        let user_id = snapshot.profile.user_id;
        {
            let _guard = self.stripe(user_id);
            let version = snapshot.profile.version;
            if cache.get(&user_id).is_some_and(|cur| cur.snapshot.profile.version > version)
                || self.floors.as_ref().and_then(|f| f.get(&user_id)).is_some_and(|floor| floor > version)
            {
                return;
            }
            let rewards = Mutex::new(self.rewards.get(&user_id));
            cache.insert(user_id, Arc::new(Held { snapshot, rewards }));
        }
        self.profile_metrics.entries.set(cache.entry_count() as f64);
    }

    async fn invalidate_profile(&self, user_id: UserId) {
        let Some(cache) = &self.profiles else { return };
        {
            let _guard = self.stripe(user_id);
            if let (Some(cur), Some(floors)) = (cache.get(&user_id), &self.floors) {
                let version = cur.snapshot.profile.version;
                let floor = floors.get(&user_id).map_or(version, |f| f.max(version));
                floors.insert(user_id, floor);
            }
            cache.invalidate(&user_id);
        }
        self.profile_metrics.entries.set(cache.entry_count() as f64);
    }

    async fn clear_profiles(&self) {
        let Some(cache) = &self.profiles else { return };
        // Floors stay: versions only grow, so they remain true lower bounds.
        cache.invalidate_all();
        cache.sync();
        self.profile_metrics.entries.set(cache.entry_count() as f64);
    }

    async fn rewards(&self, user_id: UserId) -> Option<RewardsSnapshot> {
        self.rewards_metrics.lookup(self.rewards.get(&user_id))
    }

    /// Replaces the last known balance unless the cached one was fetched later (two
    /// concurrent fetches for one user: the later answer is the better one).
    async fn put_rewards(&self, user_id: UserId, snapshot: RewardsSnapshot) {
        {
            let _guard = self.stripe(user_id);
            if self.rewards.get(&user_id).is_some_and(|cur| cur.fetched_at > snapshot.fetched_at) {
                return;
            }
            if let Some(held) = self.held(user_id) {
                held.set_rewards(snapshot.clone());
            }
            self.rewards.insert(user_id, snapshot);
        }
        self.rewards_metrics.entries.set(self.rewards.entry_count() as f64);
    }
}
