//! Shared harness: the routes over `ProfileService` with in-memory fakes.

#![allow(dead_code)]

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use profile_core::domain::{AccountSnapshot, AccountStatus, OrderStats, RewardsBalance};
use profile_core::{ProfileService, ServiceConfig};
use profile_http_warp::{AppState, routes};
use profile_memory::{ManualClock, MemoryAccounts, MemoryCache, MemoryProfiles, MemoryRewards, MemoryTokens};
use serde_json::Value;
use warp::Filter;
use warp::http::Response;
use warp::hyper::body::Bytes;
use warp::reply::Response as WarpResponse;

pub const ACTIVE: i64 = 1;
pub const SUSPENDED: i64 = 2;
pub const DELETED: i64 = 3;
pub const OTHER: i64 = 4;
pub const MISSING: i64 = 99;
pub const EMAIL: &str = "ada@example.com";
pub const OTHER_EMAIL: &str = "taken@example.com";
pub const METRICS_TEXT: &str = "# TYPE test_metric counter\ntest_metric 1\n";

pub struct App {
    pub accounts: Arc<MemoryAccounts>,
    pub profiles: Arc<MemoryProfiles>,
    pub rewards: Arc<MemoryRewards>,
    pub cache: Arc<MemoryCache>,
    /// The fake verifier: tokens made by [`App::token`] name their user; the JWT rules
    /// themselves are tested in `profile-auth-jwt`.
    pub tokens: Arc<MemoryTokens>,
    pub state: AppState,
}

fn account(id: i64, email: &str, status: AccountStatus) -> AccountSnapshot {
    AccountSnapshot {
        id,
        email: email.to_owned(),
        username: format!("user{id}"),
        status,
        created_at: Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).single().unwrap_or_default(),
        last_login_at: None,
        login_count: 3,
        orders: OrderStats::default(),
    }
}

impl App {
    pub fn new() -> Self {
        let accounts = MemoryAccounts::new();
        accounts.insert(account(ACTIVE, EMAIL, AccountStatus::Active));
        accounts.insert(account(SUSPENDED, "sus@example.com", AccountStatus::Suspended));
        accounts.insert(account(DELETED, "gone@example.com", AccountStatus::Deleted));
        accounts.insert(account(OTHER, OTHER_EMAIL, AccountStatus::Active));
        let profiles = MemoryProfiles::new();
        let rewards = MemoryRewards::new();
        rewards.set(ACTIVE, Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }));
        let cache = MemoryCache::new();
        let service = Arc::new(ProfileService::new(
            accounts.clone(),
            profiles.clone(),
            rewards.clone(),
            cache.clone(),
            ManualClock::new(Utc::now()),
            ServiceConfig::default(),
        ));
        let tokens = MemoryTokens::new();
        let state = AppState::new(service, tokens.clone(), Arc::new(|| METRICS_TEXT.to_owned()));
        Self { accounts, profiles, rewards, cache, tokens, state }
    }

    pub fn routes(
        &self,
    ) -> impl Filter<Extract = (WarpResponse,), Error = std::convert::Infallible> + Clone + 'static {
        routes(self.state.clone())
    }

    pub fn token(&self, user: i64) -> String {
        self.tokens.issue(user)
    }

    /// GET /user/profile as `user`.
    pub async fn get(&self, user: i64) -> Response<Bytes> {
        warp::test::request()
            .path("/user/profile")
            .header("authorization", format!("Bearer {}", self.token(user)))
            .reply(&self.routes())
            .await
    }

    /// PATCH /user/profile as `user` with a JSON body.
    pub async fn patch(&self, user: i64, body: &Value) -> Response<Bytes> {
        warp::test::request()
            .method("PATCH")
            .path("/user/profile")
            .header("authorization", format!("Bearer {}", self.token(user)))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .reply(&self.routes())
            .await
    }

    /// GET /user/profile with a raw Authorization value.
    pub async fn get_with_auth(&self, authorization: &str) -> Response<Bytes> {
        warp::test::request()
            .path("/user/profile")
            .header("authorization", authorization)
            .reply(&self.routes())
            .await
    }
}

pub fn json(res: &Response<Bytes>) -> Value {
    serde_json::from_slice(res.body()).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", res.body()))
}

pub fn header<'a>(res: &'a Response<Bytes>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().expect("header text"))
}

/// Asserts an RFC 9457 body of `status` and returns it.
pub fn assert_problem(res: &Response<Bytes>, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status, "body: {}", String::from_utf8_lossy(res.body()));
    assert_eq!(header(res, "content-type"), Some("application/problem+json"));
    assert_eq!(header(res, "x-content-type-options"), Some("nosniff"));
    assert!(header(res, "x-request-id").is_some());
    let doc = json(res);
    assert!(doc["type"].as_str().is_some_and(|s| !s.is_empty()), "type: {doc}");
    assert!(doc["title"].as_str().is_some_and(|s| !s.is_empty()), "title: {doc}");
    assert_eq!(doc["status"], status, "status member: {doc}");
    assert!(doc["detail"].as_str().is_some_and(|s| !s.is_empty()), "detail: {doc}");
    if status == 422 {
        assert!(doc["errors"].is_array(), "errors: {doc}");
    }
    doc
}
