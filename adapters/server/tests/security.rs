//! Security, against the real binary: hostile tokens, no way to reach another user's
//! profile, `nosniff` on every response, nothing sensitive in error bodies or logs.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::{
    Dbs, Http, Resp, SECRET, Server, assert_no_leaks, craft_token, now_s, request_log_lines, signed_token,
    token,
};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const ISSUER: &str = "acme";
const AUDIENCE: &str = "profile";

fn assert_unauthorized(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: expected 401, got {}: {}", r.status, r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: WWW-Authenticate is {challenge:?}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
}

/// Claims the server would accept (with the issuer and audience it is configured with).
fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now_s(), "exp": now_s() + 600, "iss": ISSUER, "aud": AUDIENCE})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_get_401_with_a_bearer_challenge() {
    let dbs = Dbs::new();
    dbs.seed(2);
    let server = Server::start(&dbs, &["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]);
    let http = Http::new();
    let url = server.url("/user/profile");
    let secret = SECRET.as_bytes();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});

    // Controls: hand-made tokens are accepted when nothing is wrong with them, so every
    // refusal below is down to the one defect each case has.
    let control = [
        ("well-formed", signed_token(&good_claims("1"))),
        (
            "exp 30 s ago (within the 60 s leeway)",
            signed_token(&with(good_claims("1"), "exp", json!(now_s() - 30))),
        ),
        ("nbf 30 s ahead (within leeway)", signed_token(&with(good_claims("1"), "nbf", json!(now_s() + 30)))),
        ("nbf in the past", signed_token(&with(good_claims("1"), "nbf", json!(now_s() - 300)))),
        (
            "aud as an array holding ours",
            signed_token(&with(good_claims("1"), "aud", json!(["other", AUDIENCE]))),
        ),
    ];
    for (what, t) in &control {
        let r = http.get(&url, t).await;
        assert_eq!(r.status, 200, "control {what}: {}", r.text());
        assert_eq!(r.json()["user_id"], 1, "control {what}");
    }

    let good = signed_token(&good_claims("1"));
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_payload = common::b64url(&serde_json::to_vec(&good_claims("2")).unwrap());
    let pad = "x".repeat(100 * 1024);

    let hostile: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            craft_token(&json!({"alg": "none", "typ": "JWT"}), &good_claims("1"), None, secret),
        ),
        ("alg None", craft_token(&json!({"alg": "None"}), &good_claims("1"), None, secret)),
        (
            "alg NONE with an HMAC",
            craft_token(&json!({"alg": "NONE"}), &good_claims("1"), Some(Algorithm::HS256), secret),
        ),
        (
            "alg none, header only",
            format!("{}.{}.", common::b64url(br#"{"alg":"none"}"#), rest.split_once('.').unwrap().0),
        ),
        (
            "HS512 with the right secret",
            craft_token(&json!({"alg": "HS512"}), &good_claims("1"), Some(Algorithm::HS512), secret),
        ),
        (
            "HS384 with the right secret",
            craft_token(&json!({"alg": "HS384"}), &good_claims("1"), Some(Algorithm::HS384), secret),
        ),
        // Algorithm confusion: an RS256 header over an HMAC made with the shared secret.
        (
            "RS256 header, HMAC signature",
            craft_token(&json!({"alg": "RS256"}), &good_claims("1"), Some(Algorithm::HS256), secret),
        ),
        (
            "RS256 header, junk signature",
            format!(
                "{}.{}.{}",
                common::b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
                rest.split_once('.').unwrap().0,
                common::b64url(&[7u8; 256])
            ),
        ),
        (
            "ES256 header",
            craft_token(&json!({"alg": "ES256"}), &good_claims("1"), Some(Algorithm::HS256), secret),
        ),
        ("valid signature over a modified payload (sub 1 → 2)", format!("{head}.{forged_payload}.{sig}")),
        (
            "signed with another secret",
            craft_token(&hs256, &good_claims("1"), Some(Algorithm::HS256), b"another-secret"),
        ),
        ("signature stripped", format!("{head}.{}.", rest.split_once('.').unwrap().0)),
        ("expired beyond the leeway", signed_token(&with(good_claims("1"), "exp", json!(now_s() - 120)))),
        (
            "not yet valid beyond the leeway",
            signed_token(&with(good_claims("1"), "nbf", json!(now_s() + 300))),
        ),
        ("no exp", signed_token(&without(good_claims("1"), "exp"))),
        ("wrong issuer", signed_token(&with(good_claims("1"), "iss", json!("evil")))),
        ("no issuer", signed_token(&without(good_claims("1"), "iss"))),
        ("wrong audience", signed_token(&with(good_claims("1"), "aud", json!("billing")))),
        (
            "audience array without ours",
            signed_token(&with(good_claims("1"), "aud", json!(["billing", "x"]))),
        ),
        ("no audience", signed_token(&without(good_claims("1"), "aud"))),
        ("no sub", signed_token(&without(good_claims("1"), "sub"))),
        ("sub not numeric", signed_token(&with(good_claims("1"), "sub", json!("admin")))),
        ("sub empty", signed_token(&with(good_claims("1"), "sub", json!("")))),
        ("sub zero", signed_token(&with(good_claims("1"), "sub", json!("0")))),
        ("sub negative", signed_token(&with(good_claims("1"), "sub", json!("-1")))),
        ("sub fractional", signed_token(&with(good_claims("1"), "sub", json!("1.5")))),
        ("sub with a space", signed_token(&with(good_claims("1"), "sub", json!(" 1")))),
        ("sub overflowing i64", signed_token(&with(good_claims("1"), "sub", json!("99999999999999999999")))),
        ("100 KB token, validly signed", signed_token(&with(good_claims("1"), "pad", json!(pad)))),
        ("100 KB of junk", "a".repeat(100 * 1024)),
        ("two segments", format!("{head}.{}", rest.split_once('.').unwrap().0)),
        ("not base64", "!!!.???.***".to_owned()),
    ];
    let mut bodies = String::new();
    for (what, t) in &hostile {
        let r = http.get(&url, t).await;
        assert_unauthorized(&r, what);
        // The same on a write, and nothing written.
        let r = http.patch(&url, t, &json!({"personal": {"city": "Pwned"}}), &[]).await;
        assert_unauthorized(&r, &format!("PATCH with {what}"));
        bodies.push_str(&r.text());
        bodies.push('\n');
    }
    let auth = format!("Bearer {}", good);
    // Other schemes and shapes of the header.
    for (what, value) in [
        ("Basic scheme", "Basic dXNlcjE6cHc=".to_owned()),
        ("token without a scheme", good.clone()),
        ("empty bearer", "Bearer ".to_owned()),
        ("two tokens", format!("{auth} {good}")),
    ] {
        let r = http.send("GET", &url, &[("authorization", &value)], None).await;
        assert_unauthorized(&r, what);
        bodies.push_str(&r.text());
    }
    let me = http.get(&url, &good).await.json();
    assert_eq!(me["personal"]["city"], Value::Null, "no refused PATCH wrote anything");
    assert_eq!(me["version"], 0);

    let tokens: Vec<&str> = hostile.iter().map(|(_, t)| t.as_str()).chain([good.as_str()]).collect();
    assert_no_leaks(&bodies, "a 401 body", &tokens);
    let stderr_path = server.stderr_path.clone();
    assert!(server.terminate().success());
    let logs = request_log_lines(&std::fs::read_to_string(stderr_path).unwrap());
    let mut needles: Vec<&str> = tokens.clone();
    // Parts of tokens would do too: the signature of the good one, a forged payload.
    needles.extend([sig, forged_payload.as_str()]);
    assert_no_leaks(&logs, "the server log", &needles);
}

/// Every body user 1 gets back must be user 1's, or no profile at all.
fn assert_not_user_2(r: &Resp, what: &str) {
    let text = r.text();
    for secret in ["Second Secret", "Bergen", "user2@example.com", "two.secret@example.com"] {
        assert!(!text.contains(secret), "{what} leaked user 2's data ({secret}): {text}");
    }
    if r.status == 200 {
        assert_eq!(r.json()["user_id"], 1, "{what}: {text}");
    } else {
        assert!([404, 405, 422].contains(&r.status), "{what}: unexpected {}: {text}", r.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_reaches_another_users_profile() {
    let dbs = Dbs::new();
    dbs.seed(2);
    // No profile cache: every read below goes to the databases.
    let server = Server::start(&dbs, &["--profile-cache-ttl-s", "0"]);
    let http = Http::new();
    let url = server.url("/user/profile");
    let (me, other) = (token(1), token(2));
    let r = http
        .patch(
            &url,
            &other,
            &json!({"personal": {"display_name": "Second Secret", "city": "Bergen",
                                 "email": "two.secret@example.com"}}),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = format!("Bearer {me}");
    let a: &str = &auth;

    let gets: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/user/profile?user_id=2".into(), vec![]),
        ("/user/profile?id=2&user=2&sub=2".into(), vec![]),
        ("/user/profile?user_id=2&user_id=2".into(), vec![]),
        ("/user/profile/2".into(), vec![]),
        ("/user/profile/%32".into(), vec![]),
        ("/users/2/profile".into(), vec![]),
        ("/user/2/profile".into(), vec![]),
        ("/users/2".into(), vec![]),
        ("/profile/2".into(), vec![]),
        ("/user/profile/../2".into(), vec![]),
        ("/user/profile".into(), vec![("x-user-id", "2")]),
        ("/user/profile".into(), vec![("x-user", "2"), ("x-forwarded-user", "2"), ("x-auth-user-id", "2")]),
        ("/user/profile".into(), vec![("x-original-url", "/users/2/profile"), ("x-rewrite-url", "/users/2")]),
    ];
    for (path, extra) in &gets {
        let mut headers = vec![("authorization", a)];
        headers.extend(extra.iter().copied());
        let r = http.send("GET", &server.url(path), &headers, None).await;
        assert_not_user_2(&r, &format!("GET {path} {extra:?}"));
    }
    // The plain read is user 1's, and so are the query and header variants.
    assert_eq!(http.get(&server.url("/user/profile?user_id=2"), &me).await.status, 200);

    // Writes: a user id in the body is refused, in the URL ignored or not routed.
    let patch_cases: Vec<(&str, Value)> = vec![
        ("/user/profile", json!({"user_id": 2, "personal": {"city": "Pwned"}})),
        ("/user/profile", json!({"personal": {"user_id": 2, "city": "Pwned"}})),
        ("/user/profile", json!({"id": 2, "sub": "2", "personal": {"city": "Pwned"}})),
        ("/users/2/profile", json!({"personal": {"city": "Pwned"}})),
        ("/user/profile/2", json!({"personal": {"city": "Pwned"}})),
    ];
    for (path, body) in &patch_cases {
        let r = http.patch(&server.url(path), &me, body, &[]).await;
        assert!(r.status == 404 || r.status == 422, "PATCH {path} {body}: {} {}", r.status, r.text());
        assert_not_user_2(&r, &format!("PATCH {path} {body}"));
    }
    let r = http
        .patch(
            &server.url("/user/profile?user_id=2"),
            &me,
            &json!({"personal": {"city": "Lisbon"}}),
            &[("x-user-id", "2")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_not_user_2(&r, "PATCH ?user_id=2");
    assert_eq!(r.json()["personal"]["city"], "Lisbon", "the caller's own profile changed");

    // User 2 is untouched by all of it.
    let p2 = http.get(&url, &other).await.json();
    assert_eq!(p2["user_id"], 2);
    assert_eq!(p2["personal"]["city"], "Bergen");
    assert_eq!(p2["version"], 1);
    let p1 = http.get(&url, &me).await.json();
    assert_eq!(p1["personal"]["city"], "Lisbon");
    assert_eq!(p1["personal"]["email"], "user1@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_nosniff_and_no_error_leaks_internals() {
    let dbs = Dbs::new();
    dbs.seed(3);
    common::exec_sql(&dbs.main(), "UPDATE users SET status = 'suspended' WHERE id = 3");
    let server = Server::start(&dbs, &[]);
    let http = Http::new();
    let url = server.url("/user/profile");
    let me = token(1);
    let auth = format!("Bearer {me}");
    let json_ct = ("content-type", "application/json");
    let mut seen: Vec<(String, Resp)> = Vec::new();
    let mut push = |what: &str, r: Resp, status: u16| {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        seen.push((what.to_owned(), r));
    };

    let r = http.get(&url, &me).await;
    let etag = r.header("etag").unwrap().to_owned();
    push("GET 200", r, 200);
    push(
        "GET 304",
        http.send("GET", &url, &[("authorization", &auth), ("if-none-match", &etag)], None).await,
        304,
    );
    push("PATCH 200", http.patch(&url, &me, &json!({"personal": {"city": "Rome"}}), &[]).await, 200);
    push(
        "PATCH 412",
        http.patch(&url, &me, &json!({"personal": {"city": "Oslo"}}), &[("if-match", &etag)]).await,
        412,
    );
    push("GET 401 no token", http.send("GET", &url, &[], None).await, 401);
    push("GET 401 bad token", http.get(&url, "x.y.z").await, 401);
    push("GET 403 suspended", http.get(&url, &token(3)).await, 403);
    push("GET 404 no account", http.get(&url, &token(999)).await, 404);
    push("GET 404 route", http.send("GET", &server.url("/nope/../etc/passwd"), &[], None).await, 404);
    push("GET 404 deep route", http.send("GET", &server.url("/user/profile/x/y"), &[], None).await, 404);
    push("DELETE 405", http.send("DELETE", &url, &[("authorization", &auth)], None).await, 405);
    push("POST /healthz 405", http.send("POST", &server.url("/healthz"), &[], None).await, 405);
    push(
        "PATCH 415",
        http.send("PATCH", &url, &[("authorization", &auth), ("content-type", "text/xml")], Some(b"<x/>"))
            .await,
        415,
    );
    push(
        "PATCH 413",
        http.send("PATCH", &url, &[("authorization", &auth), json_ct], Some(&vec![b' '; 20_000])).await,
        413,
    );
    push(
        "PATCH 400",
        http.send("PATCH", &url, &[("authorization", &auth), json_ct], Some(br#"{"personal": {"city": "#))
            .await,
        400,
    );
    push(
        "PATCH 422",
        http.patch(
            &url,
            &me,
            &json!({"personal": {"email": "not an address@example.com", "phone": "SELECT * FROM users"},
                    "statistics": {"login_count": 1}}),
            &[],
        )
        .await,
        422,
    );
    push(
        "PATCH 409",
        http.patch(&url, &me, &json!({"personal": {"email": "USER2@example.com"}}), &[]).await,
        409,
    );
    push("GET /healthz", http.send("GET", &server.url("/healthz"), &[], None).await, 200);
    push("GET /readyz", http.send("GET", &server.url("/readyz"), &[], None).await, 200);
    push("GET /metrics", http.send("GET", &server.url("/metrics"), &[], None).await, 200);

    // Requests hyper cannot parse as HTTP never reach the routes: hyper answers them
    // itself, without `nosniff` but also without a body, so there is nothing to sniff.
    for (what, line) in [
        ("malformed Content-Length", "Content-Length: 12abc\r\n"),
        ("header line without a colon", "Bad Header\r\n"),
    ] {
        let head = format!("PATCH /user/profile HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n{line}\r\n");
        let (got, _, text) = common::raw_exchange(server.addr, &head, b"", Duration::from_secs(5));
        assert_eq!(got, Some(400), "{what}: {text}");
        assert!(text.to_lowercase().contains("content-length: 0\r\n"), "{what}: a body: {text}");
    }

    let temp = dbs.dir.path().display().to_string();
    for (what, r) in &seen {
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what} lacks nosniff");
        if r.status >= 400 {
            assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
            assert_no_leaks(
                &r.text(),
                &format!("{what} body"),
                &[&me, &temp, "example.com", "profiles.db", "main.db", "diesel", "deadpool"],
            );
        }
    }

    let stderr_path = server.stderr_path.clone();
    assert!(server.terminate().success());
    let logs = request_log_lines(&std::fs::read_to_string(stderr_path).unwrap());
    assert!(logs.lines().count() >= seen.len(), "one log line per request");
    assert_no_leaks(&logs, "the server log", &[&me, &temp, "example.com", ".db"]);
}
