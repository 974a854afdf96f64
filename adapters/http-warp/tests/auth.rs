//! SPEC §3 on the HTTP side: the `Authorization: Bearer` header, the 401 answers and
//! their `WWW-Authenticate` challenge. The token is judged by the `TokenVerifier` port
//! (here the `MemoryTokens` fake); the JWT rules are tested in `profile-auth-jwt`.

mod common;

use common::*;
use profile_core::ports::AuthError;

fn assert_401(res: &warp::http::Response<warp::hyper::body::Bytes>, what: &str) {
    assert_eq!(res.status(), 401, "{what}: {}", String::from_utf8_lossy(res.body()));
    let challenge = header(res, "www-authenticate").unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    assert_problem(res, 401);
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
    // None of these offered a token, so the verifier was never asked.
    assert_eq!(app.tokens.calls(), 0);
}

#[tokio::test]
async fn malformed_tokens() {
    let app = App::new();
    for t in ["abc", "a.b", "a.b.c", "...", "Bearer x.y.z"] {
        let res = app.get_with_auth(&format!("Bearer {t}")).await;
        assert_401(&res, t);
        assert_eq!(header(&res, "www-authenticate"), Some("Bearer error=\"invalid_token\""));
    }
    // Refused by the HTTP adapter's own bound, even though the verifier would accept it.
    let long = "a".repeat(profile_http_warp::MAX_TOKEN_LEN + 1);
    app.tokens.insert(&long, ACTIVE);
    let calls = app.tokens.calls();
    assert_401(&app.get_with_auth(&format!("Bearer {long}")).await, "oversized");
    assert_eq!(app.tokens.calls(), calls, "an oversized token reached the verifier");
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    let app = App::new();
    let res = app.get_with_auth(&format!("bearer {}", app.token(ACTIVE))).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_verifier_gets_the_bare_token() {
    let app = App::new();
    let token = app.token(ACTIVE);
    let res = app.get_with_auth(&format!("Bearer   {token}  ")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.tokens.last_token().as_deref(), Some(token.as_str()));
}

#[tokio::test]
async fn the_token_names_the_user() {
    let app = App::new();
    let res = app.get(OTHER).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(&res)["user_id"], OTHER);
    let res = app.get(ACTIVE).await;
    assert_eq!(json(&res)["user_id"], ACTIVE);
}

#[tokio::test]
async fn expired_tokens_get_the_invalid_token_challenge() {
    let app = App::new();
    app.tokens.refuse("old-token", AuthError::Expired);
    let res = app.get_with_auth("Bearer old-token").await;
    assert_401(&res, "expired");
    assert_eq!(header(&res, "www-authenticate"), Some("Bearer error=\"invalid_token\""));
    assert_eq!(json(&res)["detail"], "The bearer token has expired.");
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
    let res = warp::test::request()
        .method("PATCH")
        .path("/user/profile")
        .header("authorization", "Bearer not-a-known-token")
        .header("content-type", "text/plain")
        .body("not json")
        .reply(&app.routes())
        .await;
    assert_401(&res, "patch with a refused token");
}
