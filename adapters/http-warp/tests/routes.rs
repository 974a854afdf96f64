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
        ("POST", "/user/profile", "GET, HEAD, PATCH"),
        ("PUT", "/user/profile", "GET, HEAD, PATCH"),
        ("DELETE", "/user/profile", "GET, HEAD, PATCH"),
        ("OPTIONS", "/user/profile", "GET, HEAD, PATCH"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("PATCH", "/metrics", "GET, HEAD"),
        ("PUT", "/openapi.yaml", "GET, HEAD"),
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

/// `HEAD` and `GET` of `path` (with `authorization` when given): the same status and
/// headers, no body, and a `Content-Length` naming the length of the `GET` body.
async fn assert_head_like_get(app: &App, path: &str, authorization: Option<&str>, status: u16) {
    let request = |method: &str| {
        let r = warp::test::request().method(method).path(path);
        match authorization {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    };
    // A first read fills the rewards cache, so both answers below say `cached`.
    request("GET").reply(&app.routes()).await;
    let get = request("GET").reply(&app.routes()).await;
    let head = request("HEAD").reply(&app.routes()).await;
    assert_eq!(get.status(), status, "GET {path}");
    assert_eq!(head.status(), status, "HEAD {path}");
    assert!(!get.body().is_empty(), "GET {path} has a body");
    assert!(head.body().is_empty(), "HEAD {path} has none");
    // Per request: the request id is new and the timing differs; warp::test sets no
    // Content-Length of its own.
    let varying = ["x-request-id", "server-timing", "content-length"];
    let names = |r: &warp::http::Response<warp::hyper::body::Bytes>| {
        let mut v: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(n, _)| !varying.contains(&n.as_str()))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&head), names(&get), "headers of HEAD {path}");
    for name in ["x-request-id", "server-timing"] {
        assert_eq!(head.headers().contains_key(name), get.headers().contains_key(name), "{name} on {path}");
    }
    let length = get.body().len().to_string();
    assert_eq!(header(&head, "content-length"), Some(length.as_str()), "HEAD {path}");
}

#[tokio::test]
async fn head_answers_every_get_route_without_a_body() {
    let app = App::new();
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.yaml"] {
        assert_head_like_get(&app, path, None, 200).await;
    }
    let bearer = format!("Bearer {}", app.token(ACTIVE));
    assert_head_like_get(&app, "/user/profile", Some(&bearer), 200).await;
    assert_head_like_get(&app, "/user/profile", None, 401).await;
    assert_head_like_get(&app, "/user/profile", Some(&format!("Bearer {}", app.token(SUSPENDED))), 403).await;
    app.profiles.faults.fail_next(Op::Ping, 3, StoreError::Unavailable("down".into()));
    assert_head_like_get(&app, "/readyz", None, 503).await;
}

#[tokio::test]
async fn head_of_the_profile_honours_if_none_match() {
    let app = App::new();
    let bearer = format!("Bearer {}", app.token(ACTIVE));
    let get = app.get(ACTIVE).await;
    let etag = header(&get, "etag").expect("etag");
    let res = warp::test::request()
        .method("HEAD")
        .path("/user/profile")
        .header("authorization", bearer.as_str())
        .header("if-none-match", etag)
        .reply(&app.routes())
        .await;
    assert_eq!(res.status(), 304);
    assert_eq!(header(&res, "etag"), Some(etag));
    assert_eq!(header(&res, "content-length"), None, "a 304 has no content to measure");
    assert!(res.body().is_empty());
}
