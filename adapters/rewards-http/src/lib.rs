//! Rewards balance over HTTP (hyper 1 client) with a timeout and a circuit breaker.
//!
//! [`HttpRewards`] implements [`RewardsPort`] against `GET {base}/v1/users/{id}/balance`
//! (SPEC §8). Every call is bounded by the configured timeout (request and body read
//! together), and a [`breaker::CircuitBreaker`] stops calling a service that keeps
//! failing, so a dead rewards service costs requests nothing once it is open.
//!
//! Metric handles are resolved when an adapter is built: install the metrics recorder
//! before calling [`HttpRewards::new`] or [`UnconfiguredRewards::new`].

pub mod breaker;
pub mod stub;

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use metrics::{Counter, Gauge, Histogram, Unit};
use profile_core::domain::{RewardsBalance, UserId};
use profile_core::ports::{RewardsError, RewardsPort};
use serde::Deserialize;

use crate::breaker::{BreakerState, CircuitBreaker};

/// Counter of rewards calls by `outcome`.
pub const CALLS_TOTAL: &str = "rewards_calls_total";
/// Histogram of the duration of rewards calls that reached the network.
pub const CALL_DURATION: &str = "rewards_call_duration_seconds";
/// Gauge of the breaker state: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "rewards_breaker_state";

/// The largest response body read; a balance is a few dozen bytes, so anything bigger
/// is a misbehaving service, not a reason to buffer megabytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Registers the descriptions of this crate's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        CALLS_TOTAL,
        Unit::Count,
        "Rewards service calls by outcome (ok, not_found, error, timeout, rejected_open, unconfigured)."
    );
    metrics::describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Duration of rewards service calls that were attempted (not rejected by the breaker)."
    );
    metrics::describe_gauge!(BREAKER_STATE, "Rewards circuit breaker state: 0 closed, 1 open, 2 half-open.");
}

/// Settings of the rewards HTTP adapter.
#[derive(Debug, Clone)]
pub struct RewardsHttpConfig {
    /// `http://host[:port][/path]`; the balance path is appended to it.
    pub base_url: String,
    /// Sent as `Authorization: Bearer {key}` when set.
    pub api_key: Option<String>,
    /// The longest a call may take, connection, request and body included.
    pub timeout: Duration,
    /// Consecutive failures that open the breaker (at least 1).
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub breaker_cooldown: Duration,
}

/// The rewards adapter cannot be built from this configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// The request target, split once at start-up so each call only formats the path.
#[derive(Debug, Clone)]
struct Base {
    authority: Authority,
    /// Path prefix without a trailing slash (may be empty).
    prefix: String,
}

fn parse_base(url: &str) -> Result<Base, ConfigError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(ConfigError::new("the rewards URL is empty; expected http://host[:port][/path]"));
    }
    // The URL is not echoed in errors: it may carry credentials.
    let uri: Uri = url.parse().map_err(|_| {
        ConfigError::new("the rewards URL is not a valid URL; expected http://host[:port][/path]")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => {
            return Err(ConfigError::new(
                "https rewards URLs are not supported: this build has no TLS client; use an http:// URL \
                 (e.g. a local TLS-terminating proxy)",
            ));
        }
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(_) => {
            return Err(ConfigError::new("the rewards URL must use the http:// scheme"));
        }
        None => {
            return Err(ConfigError::new(
                "the rewards URL must start with http://, e.g. http://127.0.0.1:9090",
            ));
        }
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ConfigError::new("the rewards URL has no host; expected http://host[:port][/path]"))?;
    if authority.as_str().contains('@') {
        return Err(ConfigError::new(
            "the rewards URL must not contain credentials; use --rewards-api-key instead",
        ));
    }
    if authority.host().is_empty() {
        return Err(ConfigError::new("the rewards URL has no host; expected http://host[:port][/path]"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(ConfigError::new("the rewards URL must not have a query or fragment"));
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(Base { authority, prefix })
}

/// The JSON body of a `200` (SPEC §8).
#[derive(Debug, Deserialize)]
struct BalanceBody {
    user_id: Option<i64>,
    points: i64,
    #[serde(default)]
    tier: Option<String>,
}

/// Metric handles of the HTTP adapter, resolved once so a call costs only atomics.
#[derive(Debug, Clone)]
struct CallMetrics {
    ok: Counter,
    not_found: Counter,
    error: Counter,
    timeout: Counter,
    rejected_open: Counter,
    duration: Histogram,
}

impl CallMetrics {
    fn new() -> Self {
        let outcome = |o: &'static str| metrics::counter!(CALLS_TOTAL, "outcome" => o);
        Self {
            ok: outcome("ok"),
            not_found: outcome("not_found"),
            error: outcome("error"),
            timeout: outcome("timeout"),
            rejected_open: outcome("rejected_open"),
            duration: metrics::histogram!(CALL_DURATION),
        }
    }
}

/// [`RewardsPort`] over HTTP/1.1 with pooled keep-alive connections, a per-call timeout
/// and a circuit breaker.
pub struct HttpRewards {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: Base,
    auth: Option<HeaderValue>,
    timeout: Duration,
    breaker: CircuitBreaker,
    metrics: CallMetrics,
}

impl std::fmt::Debug for HttpRewards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key stays out of debug output.
        f.debug_struct("HttpRewards")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl HttpRewards {
    /// Builds the adapter; fails on a base URL that is not `http://host[:port][/path]`,
    /// an API key that cannot be sent in a header, a zero timeout or a zero failure
    /// threshold. Building needs no runtime; calls run on Tokio.
    pub fn new(cfg: RewardsHttpConfig) -> Result<Self, ConfigError> {
        let base = parse_base(&cfg.base_url)?;
        if cfg.timeout.is_zero() {
            return Err(ConfigError::new("the rewards timeout must be greater than zero"));
        }
        if cfg.breaker_failures == 0 {
            return Err(ConfigError::new("the rewards breaker failure threshold must be at least 1"));
        }
        let auth = match &cfg.api_key {
            None => None,
            Some(key) => {
                let key = key.trim();
                if key.is_empty() {
                    return Err(ConfigError::new("the rewards API key is empty"));
                }
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    ConfigError::new("the rewards API key contains characters not allowed in an HTTP header")
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        let state = metrics::gauge!(BREAKER_STATE);
        let breaker = CircuitBreaker::new(cfg.breaker_failures, cfg.breaker_cooldown, move |s| {
            on_breaker_change(&state, s)
        });
        Ok(Self { client, base, auth, timeout: cfg.timeout, breaker, metrics: CallMetrics::new() })
    }

    /// The breaker's state now (for tests and diagnostics).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state(Instant::now())
    }

    /// One request and its body, unbounded in time (the caller applies the timeout).
    async fn call(&self, user_id: UserId) -> Result<Option<RewardsBalance>, RewardsError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.base.authority.clone())
            .path_and_query(format!("{}/v1/users/{user_id}/balance", self.base.prefix))
            .build()
            .map_err(|e| RewardsError(format!("cannot build the request URL: {e}")))?;
        let mut req = Request::get(uri)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Empty::new())
            .map_err(|e| RewardsError(format!("cannot build the request: {e}")))?;
        if let Some(auth) = &self.auth {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let resp = self.client.request(req).await.map_err(|e| RewardsError(error_chain(&e)))?;
        let status = resp.status();
        // The body is read whatever the status, so the connection goes back to the pool.
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| RewardsError(format!("reading the body (status {status}): {e}")))?
            .to_bytes();
        match status {
            StatusCode::OK => {
                let parsed: BalanceBody = serde_json::from_slice(&body)
                    .map_err(|e| RewardsError(format!("unparsable balance body: {e}")))?;
                if parsed.user_id.is_some_and(|id| id != user_id) {
                    return Err(RewardsError("the balance is for another user".to_owned()));
                }
                Ok(Some(RewardsBalance { points: parsed.points, tier: parsed.tier }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(RewardsError(format!("unexpected status {s}"))),
        }
    }
}

fn on_breaker_change(gauge: &Gauge, state: BreakerState) {
    gauge.set(state.gauge_value());
    match state {
        BreakerState::Open => tracing::warn!(target: "rewards", "rewards circuit breaker open"),
        BreakerState::HalfOpen => {
            tracing::info!(target: "rewards", "rewards circuit breaker half-open: probing")
        }
        BreakerState::Closed => tracing::debug!(target: "rewards", "rewards circuit breaker closed"),
    }
}

/// The error and its sources on one line: hyper's top-level message alone ("client
/// error (Connect)") does not say what went wrong.
fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[async_trait]
impl RewardsPort for HttpRewards {
    async fn balance(&self, user_id: UserId) -> Result<Option<RewardsBalance>, RewardsError> {
        let start = Instant::now();
        let Ok(permit) = self.breaker.try_acquire(start) else {
            self.metrics.rejected_open.increment(1);
            return Err(RewardsError("circuit breaker open".to_owned()));
        };
        let result = tokio::time::timeout(self.timeout, self.call(user_id)).await;
        let now = Instant::now();
        self.metrics.duration.record(now.saturating_duration_since(start).as_secs_f64());
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                self.metrics.timeout.increment(1);
                permit.failure(now);
                let ms = self.timeout.as_millis();
                tracing::debug!(target: "rewards", user_id, "rewards call timed out after {ms} ms");
                return Err(RewardsError(format!("no answer within {ms} ms")));
            }
        };
        match &result {
            Ok(Some(_)) => self.metrics.ok.increment(1),
            Ok(None) => self.metrics.not_found.increment(1),
            Err(e) => {
                self.metrics.error.increment(1);
                tracing::debug!(target: "rewards", user_id, error = %e, "rewards call failed");
            }
        }
        if result.is_ok() {
            permit.success(now);
        } else {
            permit.failure(now);
        }
        result
    }
}

/// [`RewardsPort`] for when no rewards URL is configured: every call fails at once, so
/// balances show as `unavailable`.
#[derive(Debug, Clone)]
pub struct UnconfiguredRewards {
    calls: Counter,
}

impl UnconfiguredRewards {
    /// The adapter (counts calls as `rewards_calls_total{outcome="unconfigured"}`).
    pub fn new() -> Self {
        Self { calls: metrics::counter!(CALLS_TOTAL, "outcome" => "unconfigured") }
    }
}

impl Default for UnconfiguredRewards {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl RewardsPort for UnconfiguredRewards {
    async fn balance(&self, _user_id: UserId) -> Result<Option<RewardsBalance>, RewardsError> {
        self.calls.increment(1);
        Err(RewardsError("no rewards service configured".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> Result<(String, String), ConfigError> {
        parse_base(url).map(|b| (b.authority.to_string(), b.prefix))
    }

    #[test]
    fn accepts_http_urls() {
        assert_eq!(base("http://127.0.0.1:9090"), Ok(("127.0.0.1:9090".into(), String::new())));
        assert_eq!(base("http://rewards/"), Ok(("rewards".into(), String::new())));
        assert_eq!(base("http://rewards:80/api/"), Ok(("rewards:80".into(), "/api".into())));
        assert_eq!(base(" http://[::1]:81/a/b "), Ok(("[::1]:81".into(), "/a/b".into())));
    }

    #[test]
    fn rejects_other_urls() {
        let https = base("https://rewards.example.com").expect_err("https");
        assert!(https.to_string().contains("https"), "{https}");
        assert!(https.to_string().contains("TLS"), "{https}");
        for bad in [
            "",
            "rewards:80",
            "/v1",
            "ftp://x",
            "http://user:pw@host",
            "http://h/?q=1",
            "http://h/#f",
            "http://",
        ] {
            let e = base(bad).expect_err(bad);
            assert!(!e.to_string().contains("pw"), "leaks the URL: {e}");
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let cfg = |f: fn(&mut RewardsHttpConfig)| {
            let mut c = RewardsHttpConfig {
                base_url: "http://127.0.0.1:1".into(),
                api_key: None,
                timeout: Duration::from_millis(100),
                breaker_failures: 5,
                breaker_cooldown: Duration::from_secs(5),
            };
            f(&mut c);
            HttpRewards::new(c).map(|_| ())
        };
        assert!(cfg(|_| {}).is_ok());
        assert!(cfg(|c| c.timeout = Duration::ZERO).is_err());
        assert!(cfg(|c| c.breaker_failures = 0).is_err());
        assert!(cfg(|c| c.api_key = Some("bad\nkey".into())).is_err());
        assert!(cfg(|c| c.api_key = Some("  ".into())).is_err());
    }
}
