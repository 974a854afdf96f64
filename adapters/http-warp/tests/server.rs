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

/// The value of `name` in a raw HTTP/1.1 answer's head.
fn head_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = text.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn head_on_a_socket_sends_the_get_length_and_no_body() {
    let app = App::new();
    let mut server = start(&app, Duration::from_secs(5)).await;
    let token = app.token(ACTIVE);
    // Warm the rewards cache so both answers carry the same document.
    exchange(server.addr, &get_request(&token)).await.expect("get");
    for (path, auth) in [("/user/profile", true), ("/healthz", false), ("/openapi.yaml", false)] {
        let auth = if auth { format!("Authorization: Bearer {token}\r\n") } else { String::new() };
        let req = |m: &str| format!("{m} {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n");
        let (get_status, get) = exchange(server.addr, req("GET").as_bytes()).await.expect("get");
        let (head_status, head) = exchange(server.addr, req("HEAD").as_bytes()).await.expect("head");
        assert_eq!((get_status, head_status), (200, 200), "{path}");
        let body_len = get.split_once("\r\n\r\n").map(|(_, b)| b.len()).expect("body");
        let length = body_len.to_string();
        assert_eq!(head_field(&get, "content-length"), Some(length.as_str()), "GET {path}");
        assert_eq!(head_field(&head, "content-length"), Some(length.as_str()), "HEAD {path}");
        assert_eq!(head_field(&head, "content-type"), head_field(&get, "content-type"), "{path}");
        assert_eq!(head_field(&head, "etag"), head_field(&get, "etag"), "{path}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD {path} sent a body: {head}");
    }
    let _ = server.stop.take().map(|tx| tx.send(()));
    tokio::time::timeout(Duration::from_secs(5), server.task).await.expect("stops").expect("joins");
}
