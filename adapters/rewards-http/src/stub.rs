//! A deterministic rewards service (SPEC §2 `rewards-stub`), for local development,
//! `serve --demo`, tests and benchmarks.
//!
//! `GET /v1/users/{id}/balance` answers from the id alone (see [`expected_balance`]):
//!
//! - an id divisible by 10 has no rewards account: `404`;
//! - otherwise `200` `{"user_id": id, "points": (id × 7919) mod 100000, "tier": …}` with
//!   tier `null` below 10 000 points, `"silver"` below 50 000, `"gold"` below 90 000,
//!   `"platinum"` from 90 000;
//! - an id that is not a positive integer: `400`; any other path `404`, other methods `405`;
//! - with an API key configured, a request without `Authorization: Bearer {key}`: `401`.
//!
//! The [`StubMode`] can be switched at run time through a [`StubControl`] (e.g. to make
//! the service hang for the rewards-down benchmark), and every request is counted.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use profile_core::domain::{RewardsBalance, UserId};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How the stub answers balance requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubMode {
    /// Deterministic balances (the module's rule).
    Normal,
    /// Accepts requests and never answers them (until the connection is dropped).
    Hang,
    /// `500` to every balance request.
    Fail500,
    /// `200` with a body that is not a balance.
    Malformed,
}

impl StubMode {
    fn to_u8(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::Hang => 1,
            Self::Fail500 => 2,
            Self::Malformed => 3,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Hang,
            2 => Self::Fail500,
            3 => Self::Malformed,
            _ => Self::Normal,
        }
    }
}

/// The balance the stub serves for `user_id` in [`StubMode::Normal`]; `None` means `404`.
pub fn expected_balance(user_id: UserId) -> Option<RewardsBalance> {
    if user_id % 10 == 0 {
        return None;
    }
    // i128 so that no id overflows; the result is below 100 000.
    let points = (i128::from(user_id) * 7919).rem_euclid(100_000) as i64;
    let tier = match points {
        0..10_000 => None,
        10_000..50_000 => Some("silver"),
        50_000..90_000 => Some("gold"),
        _ => Some("platinum"),
    };
    Some(RewardsBalance { points, tier: tier.map(str::to_owned) })
}

#[derive(Debug)]
struct ControlInner {
    mode: AtomicU8,
    calls: AtomicU64,
    /// The whole expected `Authorization` value.
    api_key: Option<String>,
}

/// Shared, cheap-to-clone switches of a running stub: its mode and request counter.
#[derive(Debug, Clone)]
pub struct StubControl(Arc<ControlInner>);

impl StubControl {
    /// A control starting in `mode`, accepting requests without credentials.
    pub fn new(mode: StubMode) -> Self {
        Self(Arc::new(ControlInner {
            mode: AtomicU8::new(mode.to_u8()),
            calls: AtomicU64::new(0),
            api_key: None,
        }))
    }

    /// A control starting in `mode` that answers `401` unless `Authorization: Bearer {key}`
    /// is sent.
    pub fn with_api_key(mode: StubMode, key: &str) -> Self {
        let expected = format!("Bearer {key}");
        let inner = ControlInner {
            mode: AtomicU8::new(mode.to_u8()),
            calls: AtomicU64::new(0),
            api_key: Some(expected),
        };
        Self(Arc::new(inner))
    }

    /// Switches the mode; requests arriving from now on see it.
    pub fn set_mode(&self, mode: StubMode) {
        self.0.mode.store(mode.to_u8(), Ordering::Relaxed);
    }

    /// The current mode.
    pub fn mode(&self) -> StubMode {
        StubMode::from_u8(self.0.mode.load(Ordering::Relaxed))
    }

    /// Requests received so far (every path and mode, hanging ones included).
    pub fn calls(&self) -> u64 {
        self.0.calls.load(Ordering::Relaxed)
    }

    /// Sets the request counter back to zero.
    pub fn reset_calls(&self) {
        self.0.calls.store(0, Ordering::Relaxed);
    }
}

fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn answer(control: &StubControl, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let inner = &control.0;
    inner.calls.fetch_add(1, Ordering::Relaxed);
    let Some(id) = req.uri().path().strip_prefix("/v1/users/").and_then(|p| p.strip_suffix("/balance"))
    else {
        return response(StatusCode::NOT_FOUND, r#"{"error":"no such route"}"#);
    };
    if req.method() != Method::GET {
        let mut resp = response(StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"method not allowed"}"#);
        resp.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    let Some(user_id) = id.parse::<UserId>().ok().filter(|id| *id > 0) else {
        return response(StatusCode::BAD_REQUEST, r#"{"error":"the user id must be a positive integer"}"#);
    };
    if let Some(expected) = &inner.api_key
        && req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes) != Some(expected.as_bytes())
    {
        let mut resp = response(StatusCode::UNAUTHORIZED, r#"{"error":"bad or missing API key"}"#);
        resp.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    match control.mode() {
        StubMode::Hang => std::future::pending().await,
        StubMode::Fail500 => response(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"stub failure"}"#),
        StubMode::Malformed => response(StatusCode::OK, r#"{"user_id": "#),
        StubMode::Normal => match expected_balance(user_id) {
            None => response(StatusCode::NOT_FOUND, r#"{"error":"no rewards account"}"#),
            Some(b) => {
                let tier = match &b.tier {
                    Some(t) => format!("\"{t}\""),
                    None => "null".to_owned(),
                };
                let body = format!(r#"{{"user_id":{user_id},"points":{},"tier":{tier}}}"#, b.points);
                response(StatusCode::OK, body)
            }
        },
    }
}

/// Serves the stub on `listener` until `shutdown` completes, then drops every open
/// connection (hanging requests included) and returns.
pub async fn serve(listener: TcpListener, control: StubControl, shutdown: impl Future<Output = ()> + Send) {
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        // Finished connections are reaped here so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(target: "rewards_stub", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let control = control.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(answer(&control, req).await) }
            });
            // A client going away mid-request is routine for a stub; nothing to report.
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
    connections.shutdown().await;
}

/// A stub running on its own task, stopped by [`StubServer::shutdown`] or on drop.
#[derive(Debug)]
pub struct StubServer {
    addr: SocketAddr,
    control: StubControl,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StubServer {
    /// Binds `addr` (port 0 picks a free port) and starts serving with `control`.
    pub async fn start(addr: SocketAddr, control: StubControl) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, control.clone(), async move {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        }));
        Ok(Self { addr, control, stop: Some(stop), task: Some(task) })
    }

    /// Starts a stub on a free loopback port in `mode`.
    pub async fn start_local(mode: StubMode) -> io::Result<Self> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 0)), StubControl::new(mode)).await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure the rewards adapter with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The stub's switches.
    pub fn control(&self) -> &StubControl {
        &self.control
    }

    /// Stops accepting, drops every connection and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_deterministic() {
        assert_eq!(expected_balance(10), None);
        assert_eq!(expected_balance(1), Some(RewardsBalance { points: 7919, tier: None }));
        assert_eq!(expected_balance(2), Some(RewardsBalance { points: 15_838, tier: Some("silver".into()) }));
        assert_eq!(expected_balance(7), Some(RewardsBalance { points: 55_433, tier: Some("gold".into()) }));
        assert_eq!(
            expected_balance(12),
            Some(RewardsBalance { points: 95_028, tier: Some("platinum".into()) })
        );
        assert!(expected_balance(i64::MAX).is_some_and(|b| (0..100_000).contains(&b.points)));
    }

    #[test]
    fn modes_round_trip() {
        let c = StubControl::new(StubMode::Normal);
        for m in [StubMode::Hang, StubMode::Fail500, StubMode::Malformed, StubMode::Normal] {
            c.set_mode(m);
            assert_eq!(c.mode(), m);
        }
    }
}
