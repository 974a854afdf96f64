//! GET / PATCH /user/profile through the routes, over the in-memory fakes.

mod common;

use common::*;
use profile_core::ports::{AuthError, StoreError};
use profile_memory::Op;
use serde_json::{Value, json};

fn without_rewards_freshness(mut doc: Value) -> Value {
    if let Some(r) = doc.get_mut("rewards").and_then(Value::as_object_mut) {
        r.remove("status");
        r.remove("as_of");
    }
    doc
}

#[tokio::test]
async fn get_returns_the_profile_with_cache_headers() {
    let app = App::new();
    let res = app.get(ACTIVE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), Some("application/json"));
    assert_eq!(header(&res, "cache-control"), Some("private, no-cache"));
    assert_eq!(header(&res, "vary"), Some("Authorization"));
    assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
    let etag = header(&res, "etag").expect("etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "strong etag: {etag}");
    let doc = json(&res);
    assert_eq!(doc["user_id"], ACTIVE);
    assert_eq!(doc["version"], 0);
    assert_eq!(doc["personal"]["email"], EMAIL);
    assert_eq!(doc["personal"]["display_name"], "user1");
    assert_eq!(doc["preferences"]["theme"], "system");
    assert!(doc["business"]["billing_address"].is_null());
    assert_eq!(doc["rewards"]["points"], 1250);
    assert_eq!(doc["rewards"]["status"], "live");
}

#[tokio::test]
async fn server_timing_names_the_steps_that_ran() {
    let app = App::new();
    let first = app.get(ACTIVE).await;
    let st = header(&first, "server-timing").expect("server-timing");
    for step in ["total;dur=", "db_profiles;dur=", "db_main;dur=", "rewards;dur="] {
        assert!(st.contains(step), "{step} missing in {st}");
    }
    // Second read: profile and rewards both from cache, so only the total remains.
    let second = app.get(ACTIVE).await;
    let st = header(&second, "server-timing").expect("server-timing");
    assert!(st.starts_with("total;dur="), "{st}");
    assert!(!st.contains("db_") && !st.contains("rewards"), "{st}");
    let dur: f64 = st["total;dur=".len()..].parse().expect("milliseconds");
    assert!(dur >= 0.0);
}

#[tokio::test]
async fn etag_is_stable_across_reads() {
    let app = App::new();
    let a = app.get(ACTIVE).await;
    let b = app.get(ACTIVE).await;
    assert_eq!(json(&b)["rewards"]["status"], "cached");
    assert_eq!(header(&a, "etag"), header(&b, "etag"));
}

async fn get_if_none_match(app: &App, value: &str) -> warp::http::Response<warp::hyper::body::Bytes> {
    warp::test::request()
        .path("/user/profile")
        .header("authorization", format!("Bearer {}", app.token(ACTIVE)))
        .header("if-none-match", value)
        .reply(&app.routes())
        .await
}

#[tokio::test]
async fn if_none_match_gives_304_without_body() {
    let app = App::new();
    let etag = header(&app.get(ACTIVE).await, "etag").expect("etag").to_owned();
    let opaque = etag.trim_matches('"').to_owned();
    for value in [etag.clone(), format!("W/{etag}"), format!("\"nope\", {etag}"), "*".to_owned()] {
        let res = get_if_none_match(&app, &value).await;
        assert_eq!(res.status(), 304, "If-None-Match: {value}");
        assert!(res.body().is_empty());
        assert_eq!(header(&res, "etag"), Some(etag.as_str()));
        assert_eq!(header(&res, "cache-control"), Some("private, no-cache"));
        assert_eq!(header(&res, "vary"), Some("Authorization"));
        assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
    }
    for value in ["\"nope\"".to_owned(), opaque, format!("\"{}x\"", etag.trim_matches('"'))] {
        let res = get_if_none_match(&app, &value).await;
        assert_eq!(res.status(), 200, "If-None-Match: {value}");
        assert!(!res.body().is_empty());
    }
}

#[tokio::test]
async fn account_status_maps_to_404_and_403() {
    let app = App::new();
    let doc = assert_problem(&app.get(MISSING).await, 404);
    assert!(doc.get("errors").is_none());
    assert_problem(&app.get(DELETED).await, 404);
    assert_problem(&app.get(SUSPENDED).await, 403);
    let patch = json!({"personal": {"first_name": "Ada"}});
    assert_problem(&app.patch(SUSPENDED, &patch).await, 403);
    assert_problem(&app.patch(DELETED, &patch).await, 404);
}

#[tokio::test]
async fn merge_patch_round_trip() {
    let app = App::new();
    let before = app.get(ACTIVE).await;
    let patch = json!({
        "personal": {"first_name": "Ada", "last_name": "Lovelace", "country": "gb", "phone": "+442071234567"},
        "preferences": {"theme": "dark", "notifications": {"sms": true}},
        "business": {"company_name": "Analytical Engines Ltd",
                     "billing_address": {"line1": "1 Main St", "city": "London", "country": "GB"}}
    });
    let res = app.patch(ACTIVE, &patch).await;
    assert_eq!(res.status(), 200, "{}", String::from_utf8_lossy(res.body()));
    assert_eq!(header(&res, "content-type"), Some("application/json"));
    assert_eq!(header(&res, "cache-control"), Some("private, no-cache"));
    assert_eq!(header(&res, "vary"), Some("Authorization"));
    assert!(
        header(&res, "server-timing")
            .is_some_and(|s| s.contains("total;dur=") && s.contains("db_profiles;dur="))
    );
    let patched = json(&res);
    assert_eq!(patched["version"], 1);
    assert_eq!(patched["personal"]["country"], "GB");
    assert_eq!(patched["preferences"]["notifications"]["sms"], true);
    assert_eq!(patched["preferences"]["notifications"]["email"], true);
    assert_eq!(patched["business"]["billing_address"]["line1"], "1 Main St");
    let new_etag = header(&res, "etag").expect("etag");
    assert_ne!(Some(new_etag), header(&before, "etag"));

    let after = app.get(ACTIVE).await;
    assert_eq!(header(&after, "etag"), Some(new_etag));
    assert_eq!(without_rewards_freshness(json(&after)), without_rewards_freshness(patched));
}

#[tokio::test]
async fn noop_patch_keeps_version_and_etag() {
    let app = App::new();
    let first = app.patch(ACTIVE, &json!({"preferences": {"theme": "dark"}})).await;
    assert_eq!(json(&first)["version"], 1);
    for body in [json!({"preferences": {"theme": "dark"}}), json!({})] {
        let res = app.patch(ACTIVE, &body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(json(&res)["version"], 1, "{body}");
        assert_eq!(json(&res)["updated_at"], json(&first)["updated_at"]);
        assert_eq!(header(&res, "etag"), header(&first, "etag"));
    }
}

#[tokio::test]
async fn if_match_is_a_precondition() {
    let app = App::new();
    let etag = header(&app.get(ACTIVE).await, "etag").expect("etag").to_owned();
    let patch = |if_match: &str| {
        warp::test::request()
            .method("PATCH")
            .path("/user/profile")
            .header("authorization", format!("Bearer {}", app.token(ACTIVE)))
            .header("content-type", "application/json")
            .header("if-match", if_match)
            .body(r#"{"personal":{"city":"London"}}"#)
    };
    let res = patch("\"stale\"").reply(&app.routes()).await;
    assert_problem(&res, 412);
    assert_eq!(app.profiles.get(ACTIVE), None, "nothing written on 412");
    let res = patch(&etag).reply(&app.routes()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(&res)["version"], 1);
    // The old ETag names a state that is gone now.
    assert_problem(&patch(&etag).reply(&app.routes()).await, 412);
}

#[tokio::test]
async fn validation_errors_list_every_field() {
    let app = App::new();
    let body = json!({
        "user_id": 5,
        "nickname": "x",
        "personal": {"phone": "12", "display_name": null, "email": "not-an-email"},
        "preferences": {"theme": "neon", "notifications": {"sms": "yes"}},
        "business": {"website": "ftp://x"}
    });
    let res = app.patch(ACTIVE, &body).await;
    let doc = assert_problem(&res, 422);
    let fields: Vec<&str> =
        doc["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    for f in [
        "user_id",
        "nickname",
        "personal.phone",
        "personal.display_name",
        "personal.email",
        "preferences.theme",
        "preferences.notifications.sms",
        "business.website",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    for e in doc["errors"].as_array().expect("errors") {
        assert!(e["code"].as_str().is_some_and(|c| !c.is_empty()), "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    assert!(!String::from_utf8_lossy(res.body()).contains("not-an-email"));
    assert_eq!(app.profiles.get(ACTIVE), None, "all-or-nothing");
}

#[tokio::test]
async fn non_object_json_is_422() {
    let app = App::new();
    for body in [json!([1, 2]), json!("x"), json!(null), json!(3)] {
        assert_problem(&app.patch(ACTIVE, &body).await, 422);
    }
}

async fn patch_raw(
    app: &App,
    content_type: Option<&str>,
    body: &[u8],
) -> warp::http::Response<warp::hyper::body::Bytes> {
    let mut req = warp::test::request()
        .method("PATCH")
        .path("/user/profile")
        .header("authorization", format!("Bearer {}", app.token(ACTIVE)))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.reply(&app.routes()).await
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let app = App::new();
    for body in [&b"{"[..], b"", b"{\"personal\": }", b"{\"a\":\"\xff\xfe\"}", b"\xef\xbb\xbf{}x"] {
        let res = patch_raw(&app, Some("application/json"), body).await;
        assert_problem(&res, 400);
    }
}

#[tokio::test]
async fn wrong_media_type_is_415() {
    let app = App::new();
    for ct in [Some("text/plain"), Some("application/xml"), Some("application/json-patch+json"), None] {
        assert_problem(&patch_raw(&app, ct, b"{}").await, 415);
    }
    for ct in
        ["application/json; charset=utf-8", "application/merge-patch+json;charset=UTF-8", "APPLICATION/JSON"]
    {
        assert_eq!(patch_raw(&app, Some(ct), b"{}").await.status(), 200, "{ct}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = App::new();
    let big = format!(r#"{{"personal":{{"bio":"{}"}}}}"#, "a".repeat(profile_http_warp::MAX_BODY));
    assert_problem(&patch_raw(&app, Some("application/json"), big.as_bytes()).await, 413);
    // A Content-Length that understates the body: the limit holds while reading.
    let res = warp::test::request()
        .method("PATCH")
        .path("/user/profile")
        .header("authorization", format!("Bearer {}", app.token(ACTIVE)))
        .header("content-type", "application/json")
        .body(big.as_bytes())
        .header("content-length", "10")
        .reply(&app.routes())
        .await;
    assert_problem(&res, 413);
    // Exactly at the limit is fine as far as size goes (the bio itself is too long: 422).
    let at_limit = format!(r#"{{"personal":{{"bio":"{}"}}}}"#, "a".repeat(profile_http_warp::MAX_BODY - 23));
    assert_eq!(at_limit.len(), profile_http_warp::MAX_BODY);
    assert_problem(&patch_raw(&app, Some("application/json"), at_limit.as_bytes()).await, 422);
}

#[tokio::test]
async fn taken_email_is_409_without_the_address() {
    let app = App::new();
    let res = app.patch(ACTIVE, &json!({"personal": {"email": "TAKEN@example.com"}})).await;
    let doc = assert_problem(&res, 409);
    assert!(doc["detail"].as_str().is_some_and(|d| d.contains("personal.email")), "{doc}");
    let text = String::from_utf8_lossy(res.body()).to_lowercase();
    assert!(!text.contains("taken@example.com"));
    assert!(!text.contains(EMAIL));
    assert_eq!(app.accounts.get(ACTIVE).map(|a| a.email), Some(EMAIL.to_owned()));
    // A free address goes through, lower-cased.
    let res = app.patch(ACTIVE, &json!({"personal": {"email": "Ada.L@Example.com"}})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(&res)["personal"]["email"], "ada.l@example.com");
}

#[tokio::test]
async fn unavailable_storage_is_503_with_retry_after() {
    let app = App::new();
    app.accounts.faults.fail_next(
        Op::Account,
        1,
        StoreError::Unavailable("database is locked: /var/db/main.db".into()),
    );
    let res = app.get(ACTIVE).await;
    assert_problem(&res, 503);
    assert_eq!(header(&res, "retry-after"), Some("1"));
    let text = String::from_utf8_lossy(res.body());
    assert!(!text.contains("locked") && !text.contains("/var/db"), "{text}");
}

#[tokio::test]
async fn storage_failure_is_a_generic_500() {
    let app = App::new();
    app.profiles.faults.fail_next(
        Op::Load,
        1,
        StoreError::Failure("SELECT * FROM profiles WHERE email='ada@example.com'".into()),
    );
    let res = app.get(ACTIVE).await;
    let doc = assert_problem(&res, 500);
    let text = String::from_utf8_lossy(res.body());
    assert!(!text.contains("SELECT") && !text.contains(EMAIL), "{text}");
    assert_eq!(doc["detail"], "An unexpected error occurred.");
}

#[tokio::test]
async fn no_error_body_carries_the_token_or_email() {
    let app = App::new();
    let token = app.token(ACTIVE);
    let bearer = format!("Bearer {token}");
    let mut responses = Vec::new();
    responses.push(app.patch(ACTIVE, &json!({"personal": {"email": OTHER_EMAIL}})).await);
    responses
        .push(app.patch(ACTIVE, &json!({"personal": {"email": "bad@@example.com", "phone": "x"}})).await);
    responses.push(patch_raw(&app, Some("text/plain"), b"{}").await);
    responses.push(patch_raw(&app, Some("application/json"), b"{").await);
    responses.push(
        warp::test::request().path("/nope").header("authorization", &bearer).reply(&app.routes()).await,
    );
    responses.push(
        warp::test::request()
            .method("DELETE")
            .path("/user/profile")
            .header("authorization", &bearer)
            .reply(&app.routes())
            .await,
    );
    let expired = "an-expired-token-of-user-1";
    app.tokens.refuse(expired, AuthError::Expired);
    responses.push(app.get_with_auth(&format!("Bearer {expired}")).await);
    responses.push(app.get_with_auth(&format!("Bearer {token}x")).await);
    for res in responses {
        assert!(res.status().as_u16() >= 400);
        let text = String::from_utf8_lossy(res.body());
        assert!(!text.contains(&token), "token leaked: {text}");
        assert!(!text.contains(expired), "token leaked: {text}");
        assert!(
            !text.contains(EMAIL) && !text.contains(OTHER_EMAIL) && !text.contains("bad@@"),
            "email leaked: {text}"
        );
    }
}

#[tokio::test]
async fn malformed_if_none_match_is_ignored() {
    let app = App::new();
    let etag = header(&app.get(ACTIVE).await, "etag").expect("etag").to_owned();
    for value in [
        "*+$KE7X -C$b".to_owned(),
        format!("{etag}, garbage"),
        format!("*, {etag}"),
        format!("{etag} {etag}"),
        etag.trim_matches('"').to_owned(),
    ] {
        let res = get_if_none_match(&app, &value).await;
        assert_eq!(res.status(), 200, "If-None-Match: {value}");
        assert!(!res.body().is_empty());
    }
}

#[tokio::test]
async fn if_match_lists_weak_tags_star_and_malformed_values() {
    let app = App::new();
    let patch = |if_match: String, city: &str| {
        warp::test::request()
            .method("PATCH")
            .path("/user/profile")
            .header("authorization", format!("Bearer {}", app.token(ACTIVE)))
            .header("content-type", "application/json")
            .header("if-match", if_match)
            .body(json!({"personal": {"city": city}}).to_string())
    };
    let etag = header(&app.get(ACTIVE).await, "etag").expect("etag").to_owned();
    for value in [
        format!("W/{etag}"),
        format!("{etag}, garbage"),
        format!("*, {etag}"),
        etag.trim_matches('"').to_owned(),
        "*+$KE7X -C$b".to_owned(),
        String::new(),
    ] {
        let res = patch(value.clone(), "Paris").reply(&app.routes()).await;
        assert_problem(&res, 412);
        assert_eq!(app.profiles.get(ACTIVE), None, "nothing written for If-Match: {value:?}");
    }
    let res = patch(format!("\"stale\", {etag}"), "London").reply(&app.routes()).await;
    assert_eq!(res.status(), 200, "a list naming the current tag");
    let etag = header(&res, "etag").expect("etag").to_owned();
    let res = patch(format!("W/\"x\", {etag}"), "Paris").reply(&app.routes()).await;
    assert_eq!(res.status(), 200, "a weak tag beside the current strong one");
    let res = patch("*".to_owned(), "Rome").reply(&app.routes()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(&res)["version"], 3);
}
