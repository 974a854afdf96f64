//! `serve` on a real socket: chunked bodies, graceful shutdown and its deadline.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start(app: &App, drain: Duration) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let state = app.state.clone();
    let task = tokio::spawn(async move {
        profile_http_warp::serve(
            listener,
            state,
            async {
                let _ = rx.await;
            },
            drain,
        )
        .await;
    });
    Running { addr, stop: Some(tx), task }
}

/// Sends raw bytes, reads until the server closes; returns the status and the whole text.
async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

fn get_request(token: &str) -> Vec<u8> {
    format!(
        "GET /user/profile HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn serves_and_limits_chunked_bodies() {
    let app = App::new();
    let mut server = start(&app, Duration::from_secs(5)).await;
    let (status, text) = exchange(server.addr, &get_request(&app.token(ACTIVE))).await.expect("get");
    assert_eq!(status, 200, "{text}");
    assert!(text.to_ascii_lowercase().contains("x-request-id: "));

    // No Content-Length: only counting while reading can catch it.
    let chunk = "a".repeat(4096);
    let mut req = format!(
        "PATCH /user/profile HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.token(ACTIVE)
    );
    req.push_str("14\r\n{\"personal\":{\"bio\":\"\r\n");
    for _ in 0..5 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("3\r\n\"}}\r\n0\r\n\r\n");
    let (status, text) = exchange(server.addr, req.as_bytes()).await.expect("patch");
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("application/problem+json"));

    // A small chunked body is accepted.
    let body = r#"{"personal":{"city":"Oslo"}}"#;
    let req = format!(
        "PATCH /user/profile HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        app.token(ACTIVE),
        body.len()
    );
    let (status, text) = exchange(server.addr, req.as_bytes()).await.expect("patch");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"city\":\"Oslo\""));

    let _ = server.stop.take().map(|tx| tx.send(()));
    tokio::time::timeout(Duration::from_secs(5), server.task).await.expect("stops").expect("joins");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let app = App::new();
    app.accounts.faults.set_latency(Some(Duration::from_millis(600)));
    let mut server = start(&app, Duration::from_secs(10)).await;
    let addr = server.addr;
    let req = get_request(&app.token(ACTIVE));
    let in_flight = tokio::spawn(async move { exchange(addr, &req).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    let _ = server.stop.take().map(|tx| tx.send(()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "listener still accepting after the signal");

    let (status, text) = in_flight.await.expect("join").expect("in-flight request answered");
    assert_eq!(status, 200, "{text}");
    tokio::time::timeout(Duration::from_secs(5), server.task).await.expect("serve returns").expect("joins");
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn drain_is_bounded_by_the_timeout() {
    let app = App::new();
    app.accounts.faults.set_latency(Some(Duration::from_secs(30)));
    let mut server = start(&app, Duration::from_millis(300)).await;
    let addr = server.addr;
    let req = get_request(&app.token(ACTIVE));
    let stuck = tokio::spawn(async move { exchange(addr, &req).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    let _ = server.stop.take().map(|tx| tx.send(()));
    tokio::time::timeout(Duration::from_secs(5), server.task).await.expect("serve returns").expect("joins");
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "took {took:?}");
    stuck.abort();
}
