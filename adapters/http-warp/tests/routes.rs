//! Operational routes, unknown routes, methods, and the headers every response carries.

mod common;

use common::*;
use profile_core::ports::StoreError;
use profile_memory::Op;

#[tokio::test]
async fn healthz_is_ok() {
    let app = App::new();
    let res = warp::test::request().path("/healthz").reply(&app.routes()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(&res)["status"], "ok");
    assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn readyz_follows_the_databases() {
    let app = App::new();
    let res = warp::test::request().path("/readyz").reply(&app.routes()).await;
    assert_eq!(res.status(), 200);
    app.profiles.faults.fail_next(
        Op::Ping,
        1,
        StoreError::Unavailable("disk I/O error at /data/profiles.db".into()),
    );
    let res = warp::test::request().path("/readyz").reply(&app.routes()).await;
    assert_problem(&res, 503);
    assert!(!String::from_utf8_lossy(res.body()).contains("/data/profiles.db"));
    app.accounts.faults.fail_next(Op::Ping, 1, StoreError::Failure("boom".into()));
    assert_problem(&warp::test::request().path("/readyz").reply(&app.routes()).await, 503);
    assert_eq!(warp::test::request().path("/readyz").reply(&app.routes()).await.status(), 200);
}

#[tokio::test]
async fn metrics_renders_the_given_text() {
    let app = App::new();
    let res = warp::test::request().path("/metrics").reply(&app.routes()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), Some("text/plain; version=0.0.4"));
    assert_eq!(res.body().as_ref(), METRICS_TEXT.as_bytes());
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let app = App::new();
    for path in ["/", "/user", "/user/profile/x", "/user/2/profile", "/nope?x=1"] {
        let res = warp::test::request().path(path).reply(&app.routes()).await;
        assert_problem(&res, 404);
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = App::new();
    let cases = [
        ("POST", "/user/profile", "GET, PATCH"),
        ("PUT", "/user/profile", "GET, PATCH"),
        ("DELETE", "/user/profile", "GET, PATCH"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/readyz", "GET"),
        ("PATCH", "/metrics", "GET"),
    ];
    for (method, path, allow) in cases {
        let res = warp::test::request().method(method).path(path).reply(&app.routes()).await;
        assert_problem(&res, 405);
        assert_eq!(header(&res, "allow"), Some(allow), "{method} {path}");
    }
}

#[tokio::test]
async fn request_id_is_echoed_when_sane() {
    let app = App::new();
    let res = warp::test::request()
        .path("/healthz")
        .header("x-request-id", "abc-123_XYZ.~!")
        .reply(&app.routes())
        .await;
    assert_eq!(header(&res, "x-request-id"), Some("abc-123_XYZ.~!"));
    let max = "r".repeat(128);
    let res =
        warp::test::request().path("/nope").header("x-request-id", max.as_str()).reply(&app.routes()).await;
    assert_eq!(header(&res, "x-request-id"), Some(max.as_str()), "echoed on errors too");
}

#[tokio::test]
async fn insane_request_ids_are_replaced() {
    let app = App::new();
    let too_long = "r".repeat(129);
    let cases: [&[u8]; 4] = [too_long.as_bytes(), b"has space", b"", b"caf\xc3\xa9"];
    for sent in cases {
        let res =
            warp::test::request().path("/healthz").header("x-request-id", sent).reply(&app.routes()).await;
        assert_eq!(res.status(), 200);
        let id = header(&res, "x-request-id").expect("request id");
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    let a = warp::test::request().path("/healthz").reply(&app.routes()).await;
    let b = warp::test::request().path("/healthz").reply(&app.routes()).await;
    assert_ne!(header(&a, "x-request-id"), header(&b, "x-request-id"));
}
