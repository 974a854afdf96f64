//! SPEC §3: bearer tokens, through the routes.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

fn assert_401(res: &warp::http::Response<warp::hyper::body::Bytes>, what: &str) {
    assert_eq!(res.status(), 401, "{what}: {}", String::from_utf8_lossy(res.body()));
    let challenge = header(res, "www-authenticate").unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    assert_problem(res, 401);
}

async fn status_for(app: &App, claims: &Value) -> u16 {
    app.get_with_auth(&format!("Bearer {}", sign(claims, SECRET))).await.status().as_u16()
}

#[tokio::test]
async fn missing_or_non_bearer_credentials() {
    let app = App::new();
    let res = warp::test::request().path("/user/profile").reply(&app.routes()).await;
    assert_401(&res, "no header");
    assert_eq!(header(&res, "www-authenticate"), Some("Bearer"));
    assert_401(&app.get_with_auth("Basic dXNlcjpwYXNz").await, "basic");
    assert_401(&app.get_with_auth("Bearer").await, "empty bearer");
    assert_401(&app.get_with_auth("Bearer    ").await, "blank bearer");
}

#[tokio::test]
async fn malformed_tokens() {
    let app = App::new();
    for t in ["abc", "a.b", "a.b.c", "...", "Bearer x.y.z"] {
        let res = app.get_with_auth(&format!("Bearer {t}")).await;
        assert_401(&res, t);
        assert_eq!(header(&res, "www-authenticate"), Some("Bearer error=\"invalid_token\""));
    }
    let huge = format!("Bearer {}", "a".repeat(profile_http_warp::MAX_TOKEN_LEN + 1));
    assert_401(&app.get_with_auth(&huge).await, "oversized");
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    let app = App::new();
    let res = app.get_with_auth(&format!("bearer {}", app.token(ACTIVE))).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn other_algorithms_are_refused() {
    let app = App::new();
    let claims = json!({"sub": "1", "exp": now() + 600});
    let none = forged(&json!({"alg": "none", "typ": "JWT"}), &claims, "");
    assert_401(&app.get_with_auth(&format!("Bearer {none}")).await, "alg none");
    let none_upper = forged(&json!({"alg": "None", "typ": "JWT"}), &claims, "");
    assert_401(&app.get_with_auth(&format!("Bearer {none_upper}")).await, "alg None");
    let hs512 = sign_alg(&claims, SECRET, Algorithm::HS512);
    assert_401(&app.get_with_auth(&format!("Bearer {hs512}")).await, "HS512");
    let hs384 = sign_alg(&claims, SECRET, Algorithm::HS384);
    assert_401(&app.get_with_auth(&format!("Bearer {hs384}")).await, "HS384");
    let rs256 = forged(&json!({"alg": "RS256", "typ": "JWT"}), &claims, &b64url(&[7u8; 256]));
    assert_401(&app.get_with_auth(&format!("Bearer {rs256}")).await, "RS256");
    // The same claims under HS256 and the right secret pass, so the above failed on alg.
    assert_eq!(status_for(&app, &claims).await, 200);
}

#[tokio::test]
async fn signature_must_match_the_secret() {
    let app = App::new();
    let claims = json!({"sub": "1", "exp": now() + 600});
    let wrong = sign(&claims, b"another-secret");
    assert_401(&app.get_with_auth(&format!("Bearer {wrong}")).await, "wrong secret");
    // Tampered payload, original signature.
    let good = sign(&claims, SECRET);
    let parts: Vec<&str> = good.split('.').collect();
    let evil = format!(
        "{}.{}.{}",
        parts[0],
        b64url(json!({"sub": "4", "exp": now() + 600}).to_string().as_bytes()),
        parts[2]
    );
    assert_401(&app.get_with_auth(&format!("Bearer {evil}")).await, "tampered");
}

#[tokio::test]
async fn exp_is_required_and_enforced_with_leeway() {
    let app = App::new();
    let t = now();
    assert_eq!(status_for(&app, &json!({"sub": "1"})).await, 401, "no exp");
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": "soon"})).await, 401, "exp not a number");
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": t - 3600})).await, 401, "expired");
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": t - 120})).await, 401, "expired beyond leeway");
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": t - 30})).await, 200, "within leeway");
    let res =
        app.get_with_auth(&format!("Bearer {}", sign(&json!({"sub": "1", "exp": t - 3600}), SECRET))).await;
    assert_eq!(header(&res, "www-authenticate"), Some("Bearer error=\"invalid_token\""));
}

#[tokio::test]
async fn nbf_is_honoured_with_leeway() {
    let app = App::new();
    let t = now();
    assert_eq!(
        status_for(&app, &json!({"sub": "1", "exp": t + 3600, "nbf": t + 600})).await,
        401,
        "future nbf"
    );
    assert_eq!(
        status_for(&app, &json!({"sub": "1", "exp": t + 3600, "nbf": t + 30})).await,
        200,
        "nbf in leeway"
    );
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": t + 3600, "nbf": t - 10})).await, 200, "past nbf");
}

#[tokio::test]
async fn sub_must_be_a_positive_integer_string() {
    let app = App::new();
    let exp = now() + 600;
    for sub in
        [json!(null), json!("abc"), json!("0"), json!("-1"), json!("1.5"), json!(" 1"), json!(1), json!("")]
    {
        assert_eq!(status_for(&app, &json!({"sub": sub, "exp": exp})).await, 401, "sub {sub}");
    }
    assert_eq!(status_for(&app, &json!({"exp": exp})).await, 401, "no sub");
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": exp})).await, 200);
}

#[tokio::test]
async fn iss_and_aud_are_ignored_when_not_configured() {
    let app = App::new();
    let exp = now() + 600;
    let claims = json!({"sub": "1", "exp": exp, "iss": "someone", "aud": ["x", "y"]});
    assert_eq!(status_for(&app, &claims).await, 200);
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": exp, "aud": "x"})).await, 200);
}

#[tokio::test]
async fn iss_and_aud_are_checked_when_configured() {
    let app = App::with_auth(auth(Some("https://issuer.test"), Some("profile-api")));
    let exp = now() + 600;
    let ok = json!({"sub": "1", "exp": exp, "iss": "https://issuer.test", "aud": "profile-api"});
    assert_eq!(status_for(&app, &ok).await, 200);
    let in_array =
        json!({"sub": "1", "exp": exp, "iss": "https://issuer.test", "aud": ["other", "profile-api"]});
    assert_eq!(status_for(&app, &in_array).await, 200, "aud array");
    let cases = [
        ("wrong iss", json!({"sub": "1", "exp": exp, "iss": "https://evil.test", "aud": "profile-api"})),
        ("missing iss", json!({"sub": "1", "exp": exp, "aud": "profile-api"})),
        ("wrong aud", json!({"sub": "1", "exp": exp, "iss": "https://issuer.test", "aud": "other"})),
        (
            "aud array without us",
            json!({"sub": "1", "exp": exp, "iss": "https://issuer.test", "aud": ["a", "b"]}),
        ),
        ("missing aud", json!({"sub": "1", "exp": exp, "iss": "https://issuer.test"})),
    ];
    for (what, claims) in cases {
        let res = app.get_with_auth(&format!("Bearer {}", sign(&claims, SECRET))).await;
        assert_401(&res, what);
    }
    // mint_token carries the configured iss and aud.
    assert_eq!(app.get(ACTIVE).await.status(), 200);
}

#[tokio::test]
async fn only_iss_configured_leaves_aud_unchecked() {
    let app = App::with_auth(auth(Some("me"), None));
    let exp = now() + 600;
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": exp, "iss": "me", "aud": "whatever"})).await, 200);
    assert_eq!(status_for(&app, &json!({"sub": "1", "exp": exp, "iss": "you"})).await, 401);
}

#[tokio::test]
async fn patch_requires_a_token_before_anything_else() {
    let app = App::new();
    let res = warp::test::request()
        .method("PATCH")
        .path("/user/profile")
        .header("content-type", "text/plain")
        .body("not json")
        .reply(&app.routes())
        .await;
    assert_401(&res, "patch without token");
}
