//! Shared fixture: a `ProfileService` over the in-memory fakes, with seeded accounts and
//! a pinned clock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use profile_core::domain::{
    AccountSnapshot, AccountStatus, OrderStats, ProfileRecord, ProfileUpdate, RewardsBalance, UserId,
};
pub use profile_core::domain::{EntityTag, Precondition};
use profile_core::{ProfileRead, ProfileService, ServiceConfig, ServiceError};
use profile_memory::{
    ManualClock, MemoryAccounts, MemoryCache, MemoryProfiles, MemoryRewards, TokioExecutor,
};
use serde_json::Value;

/// Active account with login figures, orders and a rewards balance.
pub const ALICE: UserId = 1;
/// Another active account (`bob@example.com`).
pub const BOB: UserId = 2;
/// A suspended account.
pub const SUSPENDED: UserId = 3;
/// A deleted account.
pub const DELETED: UserId = 4;
/// An active account whose e-mail the wider application stored in mixed case.
pub const CAROL: UserId = 5;
/// No account has this id.
pub const MISSING: UserId = 99;

pub const ALICE_EMAIL: &str = "alice@example.com";

/// Parses an RFC 3339 timestamp.
pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("timestamp").with_timezone(&Utc)
}

/// The clock's starting time.
pub fn start() -> DateTime<Utc> {
    t("2026-11-26T05:00:00Z")
}

fn account(id: UserId, email: &str, username: &str, status: AccountStatus) -> AccountSnapshot {
    AccountSnapshot {
        id,
        email: email.to_owned(),
        username: username.to_owned(),
        status,
        created_at: t("2026-01-05T10:00:00Z"),
        last_login_at: None,
        login_count: 0,
        orders: OrderStats::default(),
    }
}

/// The service and handles on every fake behind it.
pub struct App {
    pub service: ProfileService,
    pub accounts: Arc<MemoryAccounts>,
    pub profiles: Arc<MemoryProfiles>,
    pub rewards: Arc<MemoryRewards>,
    pub cache: Arc<MemoryCache>,
    pub clock: Arc<ManualClock>,
}

impl App {
    /// Profile cache enabled, default config.
    pub fn new() -> Self {
        Self::build(MemoryCache::new(), ServiceConfig::default())
    }

    /// Profile cache disabled (every read goes to the stores), default config.
    pub fn without_profile_cache() -> Self {
        Self::build(MemoryCache::without_profiles(), ServiceConfig::default())
    }

    /// Profile cache enabled, the given config.
    pub fn with_config(config: ServiceConfig) -> Self {
        Self::build(MemoryCache::new(), config)
    }

    /// The given cache, default config.
    pub fn with_cache(cache: Arc<MemoryCache>) -> Self {
        Self::build(cache, ServiceConfig::default())
    }

    fn build(cache: Arc<MemoryCache>, config: ServiceConfig) -> Self {
        let accounts = MemoryAccounts::new();
        let profiles = MemoryProfiles::new();
        let rewards = MemoryRewards::new();
        let clock = ManualClock::new(start());

        let mut alice = account(ALICE, ALICE_EMAIL, "alice", AccountStatus::Active);
        alice.last_login_at = Some(t("2026-11-25T19:02:00Z"));
        alice.login_count = 57;
        alice.orders = OrderStats {
            orders_count: 12,
            total_spent_cents: 48950,
            last_order_at: Some(t("2026-11-19T12:00:00Z")),
        };
        accounts.insert(alice);
        accounts.insert(account(BOB, "bob@example.com", "bob", AccountStatus::Active));
        accounts.insert(account(SUSPENDED, "sus@example.com", "sus", AccountStatus::Suspended));
        accounts.insert(account(DELETED, "gone@example.com", "gone", AccountStatus::Deleted));
        accounts.insert(account(CAROL, "Carol@Example.COM", "carol", AccountStatus::Active));
        rewards.set(ALICE, Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }));

        let service = ProfileService::new(
            accounts.clone(),
            profiles.clone(),
            rewards.clone(),
            cache.clone(),
            clock.clone(),
            config,
        )
        .with_executor(Arc::new(TokioExecutor));
        Self { service, accounts, profiles, rewards, cache, clock }
    }

    /// A read that must succeed.
    pub async fn get(&self, id: UserId) -> ProfileRead {
        self.service.get(id).await.expect("get")
    }

    /// The JSON document of a read that must succeed.
    pub async fn get_json(&self, id: UserId) -> Value {
        json(&self.get(id).await)
    }

    /// Parses `doc` and applies it with no precondition, as the PATCH handler would.
    pub async fn patch(&self, id: UserId, doc: Value) -> Result<ProfileRead, ServiceError> {
        self.patch_if(id, doc, Precondition::None).await
    }

    /// Parses `doc` and applies it under `precondition`.
    pub async fn patch_if(
        &self,
        id: UserId,
        doc: Value,
        precondition: Precondition,
    ) -> Result<ProfileRead, ServiceError> {
        let parsed = ProfileUpdate::from_merge_patch(&doc, self.service.today());
        self.service.update(id, parsed, precondition).await
    }

    /// A patch that must succeed.
    pub async fn patch_ok(&self, id: UserId, doc: Value) -> ProfileRead {
        self.patch(id, doc).await.expect("patch")
    }

    /// The stored profile record, bypassing the service.
    pub fn record(&self, id: UserId) -> Option<ProfileRecord> {
        self.profiles.get(id)
    }

    /// The account e-mail in the main database, bypassing the service.
    pub fn email(&self, id: UserId) -> String {
        self.accounts.get(id).expect("account").email
    }

    /// Number of profile records written to the profiles store so far.
    pub fn saves(&self) -> u64 {
        self.profiles.writes()
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance_s(&self, s: u64) {
        self.clock.advance(Duration::from_secs(s));
    }
}

/// The JSON document of a read.
pub fn json(read: &ProfileRead) -> Value {
    serde_json::from_slice(&read.view.to_json()).expect("to_json is JSON")
}

/// The (field, code) pairs of an `Invalid` error, sorted; panics on anything else.
pub fn invalid(r: Result<ProfileRead, ServiceError>) -> Vec<(String, &'static str)> {
    match r {
        Err(ServiceError::Invalid(errors)) => {
            let mut v: Vec<_> = errors.into_iter().map(|e| (e.field, e.code)).collect();
            v.sort();
            v
        }
        Err(other) => panic!("expected Invalid, got {other:?}"),
        Ok(read) => panic!("expected Invalid, got a profile: {}", json(&read)),
    }
}

/// Builds an expected (field, code) list, sorted.
pub fn errs(pairs: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    let mut v: Vec<_> = pairs.iter().map(|(f, c)| ((*f).to_owned(), *c)).collect();
    v.sort();
    v
}

/// The document without `rewards.status` and `rewards.as_of`, which may differ between
/// two responses describing the same data.
pub fn without_freshness(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(r) = d.get_mut("rewards").and_then(Value::as_object_mut) {
        r.remove("status");
        r.remove("as_of");
    }
    d
}

/// A precondition naming exactly `tag` (as `If-Match: "<tag>"` would).
pub fn one(tag: &EntityTag) -> Precondition {
    Precondition::OneOf(vec![tag.clone()])
}
