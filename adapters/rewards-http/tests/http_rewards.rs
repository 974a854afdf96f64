//! `HttpRewards` against real local HTTP servers: the stub, and small servers written
//! here for answers the stub does not give.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use profile_core::domain::RewardsBalance;
use profile_core::ports::RewardsPort;
use profile_rewards_http::breaker::BreakerState;
use profile_rewards_http::stub::{StubControl, StubMode, StubServer, expected_balance};
use profile_rewards_http::{HttpRewards, RewardsHttpConfig};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_millis(100);
const COOLDOWN: Duration = Duration::from_millis(100);

fn config(url: String) -> RewardsHttpConfig {
    RewardsHttpConfig {
        base_url: url,
        api_key: None,
        timeout: TIMEOUT,
        breaker_failures: 3,
        breaker_cooldown: COOLDOWN,
    }
}

fn adapter(url: String) -> HttpRewards {
    HttpRewards::new(config(url)).expect("valid config")
}

async fn stub(mode: StubMode) -> StubServer {
    StubServer::start_local(mode).await.expect("stub starts")
}

/// What a [`fixed_server`] saw.
#[derive(Default)]
struct Seen {
    authorization: Mutex<Vec<Option<String>>>,
    connections: AtomicU64,
}

/// A server answering every request with `status` and `body`, recording the
/// `Authorization` header of each request and counting connections.
async fn fixed_server(status: StatusCode, body: &'static [u8]) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen2.connections.fetch_add(1, Ordering::SeqCst);
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let auth =
                        req.headers().get("authorization").map(|v| v.to_str().unwrap_or("?").to_owned());
                    seen.authorization.lock().expect("lock").push(auth);
                    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
                    *resp.status_mut() = status;
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn assert_within_timeout(started: Instant) {
    let took = started.elapsed();
    assert!(took >= TIMEOUT, "returned before the timeout: {took:?}");
    assert!(took < TIMEOUT + Duration::from_millis(150), "took {took:?}, timeout is {TIMEOUT:?}");
}

#[tokio::test]
async fn a_200_is_the_balance() {
    let s = stub(StubMode::Normal).await;
    let r = adapter(s.url());
    let b = r.balance(7).await.expect("ok");
    assert_eq!(b, Some(RewardsBalance { points: 55_433, tier: Some("gold".into()) }));
    assert_eq!(b, expected_balance(7));
}

#[tokio::test]
async fn a_null_tier_is_no_tier() {
    let s = stub(StubMode::Normal).await;
    let r = adapter(s.url());
    assert_eq!(r.balance(1).await, Ok(Some(RewardsBalance { points: 7919, tier: None })));
}

#[tokio::test]
async fn an_absent_tier_is_no_tier() {
    let (url, _) = fixed_server(StatusCode::OK, br#"{"user_id": 5, "points": 12}"#).await;
    assert_eq!(adapter(url).balance(5).await, Ok(Some(RewardsBalance { points: 12, tier: None })));
}

#[tokio::test]
async fn a_base_path_is_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let path = Arc::new(Mutex::new(String::new()));
    let path2 = path.clone();
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                *path2.lock().expect("lock") = req.uri().to_string();
                async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(br#"{"points":1}"#))))
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        }
    });
    let r = adapter(format!("http://{addr}/rewards/"));
    assert!(r.balance(42).await.is_ok());
    assert_eq!(*path.lock().expect("lock"), "/rewards/v1/users/42/balance");
}

#[tokio::test]
async fn a_404_is_no_account() {
    let s = stub(StubMode::Normal).await;
    let r = adapter(s.url());
    assert_eq!(r.balance(10).await, Ok(None));
}

#[tokio::test]
async fn a_500_is_a_failure() {
    let s = stub(StubMode::Fail500).await;
    let e = adapter(s.url()).balance(7).await.expect_err("500");
    assert!(e.0.contains("500"), "{e}");
}

#[tokio::test]
async fn other_statuses_are_failures() {
    for status in [
        StatusCode::NO_CONTENT,
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::BAD_REQUEST,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let (url, _) = fixed_server(status, b"").await;
        assert!(adapter(url).balance(7).await.is_err(), "{status}");
    }
}

#[tokio::test]
async fn a_malformed_body_is_a_failure() {
    let s = stub(StubMode::Malformed).await;
    assert!(adapter(s.url()).balance(7).await.is_err());
    for body in [
        &br#"{"user_id": 7, "points": "many"}"#[..],
        b"",
        b"null",
        b"<html>",
        br#"{"user_id": 8, "points": 1}"#,
    ] {
        let (url, _) = fixed_server(StatusCode::OK, body).await;
        assert!(adapter(url).balance(7).await.is_err(), "{}", String::from_utf8_lossy(body));
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_failure() {
    static BIG: [u8; 100 * 1024] = [b' '; 100 * 1024];
    let (url, _) = fixed_server(StatusCode::OK, &BIG).await;
    let e = adapter(url).balance(7).await.expect_err("too big");
    assert!(e.0.contains("body"), "{e}");
}

#[tokio::test]
async fn a_hanging_service_times_out() {
    let s = stub(StubMode::Hang).await;
    let r = adapter(s.url());
    let started = Instant::now();
    let e = r.balance(7).await.expect_err("timeout");
    assert_within_timeout(started);
    assert!(e.0.contains("100 ms"), "{e}");
    assert_eq!(s.control().calls(), 1);
}

#[tokio::test]
async fn a_body_that_never_ends_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ncontent-type: application/json\r\n\r\n{\"points\"";
            // Answer only once the request arrived (hyper rejects an unsolicited response);
            // both are small enough for one read and one write on loopback.
            let mut buf = [0u8; 4096];
            while stream.readable().await.is_ok() && !matches!(stream.try_read(&mut buf), Ok(n) if n > 0) {}
            if stream.writable().await.is_ok() {
                let _ = stream.try_write(head);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let started = Instant::now();
    assert!(adapter(format!("http://{addr}")).balance(7).await.is_err());
    assert_within_timeout(started);
}

#[tokio::test]
async fn a_refused_connection_is_a_failure() {
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let started = Instant::now();
    let e = adapter(format!("http://{addr}")).balance(7).await.expect_err("refused");
    assert!(started.elapsed() < TIMEOUT, "a refused connection should fail fast");
    assert!(e.0.to_lowercase().contains("refused"), "{e}");
}

#[tokio::test]
async fn the_api_key_is_sent_when_configured() {
    let (url, seen) = fixed_server(StatusCode::OK, br#"{"user_id": 7, "points": 3, "tier": null}"#).await;
    let with_key =
        HttpRewards::new(RewardsHttpConfig { api_key: Some("s3cret".into()), ..config(url.clone()) })
            .expect("config");
    with_key.balance(7).await.expect("ok");
    adapter(url).balance(7).await.expect("ok");
    let auth = seen.authorization.lock().expect("lock").clone();
    assert_eq!(auth, vec![Some("Bearer s3cret".to_owned()), None]);
}

#[tokio::test]
async fn the_stub_checks_its_api_key() {
    let s = StubServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        StubControl::with_api_key(StubMode::Normal, "k1"),
    )
    .await
    .expect("stub");
    let good =
        HttpRewards::new(RewardsHttpConfig { api_key: Some("k1".into()), ..config(s.url()) }).expect("cfg");
    let bad =
        HttpRewards::new(RewardsHttpConfig { api_key: Some("k2".into()), ..config(s.url()) }).expect("cfg");
    assert_eq!(good.balance(7).await, Ok(expected_balance(7)));
    assert!(bad.balance(7).await.is_err());
    assert!(adapter(s.url()).balance(7).await.is_err());
}

#[tokio::test]
async fn connections_are_reused() {
    let (url, seen) = fixed_server(StatusCode::OK, br#"{"points": 3}"#).await;
    let r = adapter(url);
    for _ in 0..5 {
        r.balance(7).await.expect("ok");
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_fails_fast() {
    let s = stub(StubMode::Fail500).await;
    let r = adapter(s.url());
    for _ in 0..3 {
        assert!(r.balance(7).await.is_err());
    }
    assert_eq!(s.control().calls(), 3);
    assert_eq!(r.breaker_state(), BreakerState::Open);
    let started = Instant::now();
    for _ in 0..20 {
        let e = r.balance(7).await.expect_err("open");
        assert!(e.0.contains("breaker"), "{e}");
    }
    assert!(started.elapsed() < Duration::from_millis(20), "fast failures took {:?}", started.elapsed());
    assert_eq!(s.control().calls(), 3, "no request may reach the service while open");
}

#[tokio::test]
async fn a_404_is_a_success_for_the_breaker() {
    let s = stub(StubMode::Normal).await;
    let r = adapter(s.url());
    for _ in 0..4 {
        s.control().set_mode(StubMode::Fail500);
        assert!(r.balance(7).await.is_err());
        assert!(r.balance(7).await.is_err());
        s.control().set_mode(StubMode::Normal);
        assert_eq!(r.balance(10).await, Ok(None));
    }
    assert_eq!(r.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn timeouts_open_the_breaker_too() {
    let s = stub(StubMode::Hang).await;
    let r = adapter(s.url());
    for _ in 0..3 {
        assert!(r.balance(7).await.is_err());
    }
    let started = Instant::now();
    assert!(r.balance(7).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(10));
    assert_eq!(s.control().calls(), 3);
}

#[tokio::test]
async fn after_the_cooldown_one_probe_goes_through_and_a_failure_reopens() {
    let s = stub(StubMode::Fail500).await;
    let r = adapter(s.url());
    for _ in 0..3 {
        assert!(r.balance(7).await.is_err());
    }
    tokio::time::sleep(COOLDOWN + Duration::from_millis(20)).await;
    assert_eq!(r.breaker_state(), BreakerState::HalfOpen);
    assert!(r.balance(7).await.is_err(), "the probe fails: still 500");
    assert_eq!(s.control().calls(), 4, "the probe reached the service");
    assert_eq!(r.breaker_state(), BreakerState::Open);
    assert!(r.balance(7).await.is_err());
    assert_eq!(s.control().calls(), 4, "re-opened for another cooldown");
}

#[tokio::test]
async fn only_one_probe_is_let_through_at_a_time() {
    let s = stub(StubMode::Hang).await;
    let r = Arc::new(adapter(s.url()));
    for _ in 0..3 {
        assert!(r.balance(7).await.is_err());
    }
    tokio::time::sleep(COOLDOWN + Duration::from_millis(20)).await;
    let calls = (0..8).map(|_| {
        let r = r.clone();
        tokio::spawn(async move { r.balance(7).await })
    });
    for c in calls.collect::<Vec<_>>() {
        assert!(c.await.expect("task").is_err());
    }
    assert_eq!(s.control().calls(), 4, "exactly one probe");
}

#[tokio::test]
async fn a_successful_probe_closes_the_breaker() {
    let s = stub(StubMode::Fail500).await;
    let r = adapter(s.url());
    for _ in 0..3 {
        assert!(r.balance(7).await.is_err());
    }
    s.control().set_mode(StubMode::Normal);
    assert!(r.balance(7).await.is_err(), "still open before the cooldown");
    tokio::time::sleep(COOLDOWN + Duration::from_millis(20)).await;
    assert_eq!(r.balance(7).await, Ok(expected_balance(7)));
    assert_eq!(r.breaker_state(), BreakerState::Closed);
    for id in 1..=5 {
        assert_eq!(r.balance(id).await, Ok(expected_balance(id)));
    }
    assert_eq!(s.control().calls(), 3 + 1 + 5);
}

#[tokio::test]
async fn a_stub_shutdown_drops_hanging_requests() {
    let s = stub(StubMode::Hang).await;
    let url = s.url();
    let long =
        HttpRewards::new(RewardsHttpConfig { timeout: Duration::from_secs(5), ..config(url) }).expect("cfg");
    let call = tokio::spawn(async move { long.balance(7).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    s.shutdown().await;
    assert!(call.await.expect("task").is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn metrics_count_outcomes_and_show_the_breaker() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let s = stub(StubMode::Normal).await;
    let r = metrics::with_local_recorder(&recorder, || {
        profile_rewards_http::describe_metrics();
        adapter(s.url())
    });
    r.balance(7).await.expect("ok");
    r.balance(10).await.expect("not found");
    s.control().set_mode(StubMode::Fail500);
    for _ in 0..3 {
        assert!(r.balance(7).await.is_err());
    }
    assert!(r.balance(7).await.is_err());
    let text = handle.render();
    for line in [
        r#"rewards_calls_total{outcome="ok"} 1"#,
        r#"rewards_calls_total{outcome="not_found"} 1"#,
        r#"rewards_calls_total{outcome="error"} 3"#,
        r#"rewards_calls_total{outcome="rejected_open"} 1"#,
        "rewards_breaker_state 1",
        "rewards_call_duration_seconds_count 5",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}
