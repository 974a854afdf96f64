//! Shared harness: the routes over `ProfileService` with in-memory fakes.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{TimeZone, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use profile_core::domain::{AccountSnapshot, AccountStatus, OrderStats, RewardsBalance};
use profile_core::{ProfileService, ServiceConfig};
use profile_http_warp::{AppState, AuthConfig, routes};
use profile_memory::{ManualClock, MemoryAccounts, MemoryCache, MemoryProfiles, MemoryRewards};
use serde_json::Value;
use warp::Filter;
use warp::http::Response;
use warp::hyper::body::Bytes;
use warp::reply::Response as WarpResponse;

pub const SECRET: &[u8] = b"http-warp-test-secret";
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
    pub auth: AuthConfig,
    pub state: AppState,
}

pub fn auth(issuer: Option<&str>, audience: Option<&str>) -> AuthConfig {
    AuthConfig {
        secret: SECRET.to_vec(),
        issuer: issuer.map(str::to_owned),
        audience: audience.map(str::to_owned),
    }
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
        Self::with_auth(auth(None, None))
    }

    pub fn with_auth(auth: AuthConfig) -> Self {
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
        let state = AppState::new(service, auth.clone(), Arc::new(|| METRICS_TEXT.to_owned()));
        Self { accounts, profiles, rewards, cache, auth, state }
    }

    pub fn routes(
        &self,
    ) -> impl Filter<Extract = (WarpResponse,), Error = std::convert::Infallible> + Clone + 'static {
        routes(self.state.clone())
    }

    pub fn token(&self, user: i64) -> String {
        profile_http_warp::mint_token(&self.auth, user, Duration::from_secs(600)).expect("mint")
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

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Signs arbitrary claims with HS256 and `secret`.
pub fn sign(claims: &Value, secret: &[u8]) -> String {
    sign_alg(claims, secret, Algorithm::HS256)
}

pub fn sign_alg(claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("encode")
}

/// base64url without padding, for hand-made tokens.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token with an arbitrary header and a junk signature.
pub fn forged(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        signature
    )
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
