//! SPEC §3's token rules, through the `TokenVerifier` port.
//!
//! Every case runs twice on one verifier, so the second answer comes from the cache
//! when the first was a success, and must be the same.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use profile_auth_jwt::{AuthConfig, JwtVerifier, MAX_TOKEN_LEN, mint_token};
use profile_core::ports::{AuthError, TokenVerifier};
use serde_json::{Value, json};

const SECRET: &[u8] = b"auth-jwt-test-secret";

fn auth(issuer: Option<&str>, audience: Option<&str>) -> AuthConfig {
    AuthConfig {
        secret: SECRET.to_vec(),
        issuer: issuer.map(str::to_owned),
        audience: audience.map(str::to_owned),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Signs arbitrary claims with HS256 and `secret`.
fn sign(claims: &Value, secret: &[u8]) -> String {
    sign_alg(claims, secret, Algorithm::HS256)
}

fn sign_alg(claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("encode")
}

/// base64url without padding, for hand-made tokens.
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..chunk.len() + 1 {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token with an arbitrary header and a junk signature.
fn forged(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        signature
    )
}

/// The verifier's answer for `token`, asked twice (the second time possibly cached).
fn check(v: &JwtVerifier, token: &str) -> Result<i64, AuthError> {
    let first = v.verify(token);
    assert_eq!(v.verify(token), first, "a second verification of the same token answered differently");
    first
}

fn claims_answer(v: &JwtVerifier, claims: &Value) -> Result<i64, AuthError> {
    check(v, &sign(claims, SECRET))
}

#[test]
fn malformed_tokens() {
    let v = JwtVerifier::new(&auth(None, None));
    for t in ["abc", "a.b", "a.b.c", "...", "Bearer x.y.z", "a.b.c.d"] {
        assert_eq!(check(&v, t), Err(AuthError::Invalid), "{t}");
    }
    assert_eq!(check(&v, &"a".repeat(MAX_TOKEN_LEN + 1)), Err(AuthError::Invalid), "oversized");
}

#[test]
fn other_algorithms_are_refused() {
    let v = JwtVerifier::new(&auth(None, None));
    let claims = json!({"sub": "1", "exp": now() + 600});
    let none = forged(&json!({"alg": "none", "typ": "JWT"}), &claims, "");
    assert_eq!(check(&v, &none), Err(AuthError::Invalid), "alg none");
    let none_upper = forged(&json!({"alg": "None", "typ": "JWT"}), &claims, "");
    assert_eq!(check(&v, &none_upper), Err(AuthError::Invalid), "alg None");
    let hs512 = sign_alg(&claims, SECRET, Algorithm::HS512);
    assert_eq!(check(&v, &hs512), Err(AuthError::Invalid), "HS512");
    let hs384 = sign_alg(&claims, SECRET, Algorithm::HS384);
    assert_eq!(check(&v, &hs384), Err(AuthError::Invalid), "HS384");
    let rs256 = forged(&json!({"alg": "RS256", "typ": "JWT"}), &claims, &b64url(&[7u8; 256]));
    assert_eq!(check(&v, &rs256), Err(AuthError::Invalid), "RS256");
    // The same claims under HS256 and the right secret pass, so the above failed on alg.
    assert_eq!(claims_answer(&v, &claims), Ok(1));
}

#[test]
fn signature_must_match_the_secret() {
    let v = JwtVerifier::new(&auth(None, None));
    let claims = json!({"sub": "1", "exp": now() + 600});
    let wrong = sign(&claims, b"another-secret");
    assert_eq!(check(&v, &wrong), Err(AuthError::Invalid), "wrong secret");
    // Tampered payload, original signature, after the original was verified and cached.
    let good = sign(&claims, SECRET);
    assert_eq!(check(&v, &good), Ok(1));
    let parts: Vec<&str> = good.split('.').collect();
    let evil = format!(
        "{}.{}.{}",
        parts[0],
        b64url(json!({"sub": "4", "exp": now() + 600}).to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(check(&v, &evil), Err(AuthError::Invalid), "tampered");
}

#[test]
fn exp_is_required_and_enforced_with_leeway() {
    let v = JwtVerifier::new(&auth(None, None));
    let t = now();
    assert_eq!(claims_answer(&v, &json!({"sub": "1"})), Err(AuthError::Invalid), "no exp");
    assert_eq!(
        claims_answer(&v, &json!({"sub": "1", "exp": "soon"})),
        Err(AuthError::Invalid),
        "exp not a number"
    );
    assert_eq!(claims_answer(&v, &json!({"sub": "1", "exp": t - 3600})), Err(AuthError::Expired), "expired");
    assert_eq!(
        claims_answer(&v, &json!({"sub": "1", "exp": t - 120})),
        Err(AuthError::Expired),
        "expired beyond leeway"
    );
    assert_eq!(claims_answer(&v, &json!({"sub": "1", "exp": t - 30})), Ok(1), "within leeway");
}

#[test]
fn nbf_is_honoured_with_leeway() {
    let v = JwtVerifier::new(&auth(None, None));
    let t = now();
    assert_eq!(
        claims_answer(&v, &json!({"sub": "1", "exp": t + 3600, "nbf": t + 600})),
        Err(AuthError::Invalid),
        "future nbf"
    );
    assert_eq!(
        claims_answer(&v, &json!({"sub": "1", "exp": t + 3600, "nbf": t + 30})),
        Ok(1),
        "nbf in leeway"
    );
    assert_eq!(claims_answer(&v, &json!({"sub": "1", "exp": t + 3600, "nbf": t - 10})), Ok(1), "past nbf");
}

#[test]
fn sub_must_be_a_positive_integer_string() {
    let v = JwtVerifier::new(&auth(None, None));
    let exp = now() + 600;
    for sub in
        [json!(null), json!("abc"), json!("0"), json!("-1"), json!("1.5"), json!(" 1"), json!(1), json!("")]
    {
        assert_eq!(claims_answer(&v, &json!({"sub": sub, "exp": exp})), Err(AuthError::Invalid), "sub {sub}");
    }
    assert_eq!(claims_answer(&v, &json!({"exp": exp})), Err(AuthError::Invalid), "no sub");
    assert_eq!(claims_answer(&v, &json!({"sub": "1", "exp": exp})), Ok(1));
    assert_eq!(claims_answer(&v, &json!({"sub": "4", "exp": exp})), Ok(4));
}

#[test]
fn iss_and_aud_are_ignored_when_not_configured() {
    let v = JwtVerifier::new(&auth(None, None));
    let exp = now() + 600;
    let claims = json!({"sub": "1", "exp": exp, "iss": "someone", "aud": ["x", "y"]});
    assert_eq!(claims_answer(&v, &claims), Ok(1));
    assert_eq!(claims_answer(&v, &json!({"sub": "1", "exp": exp, "aud": "x"})), Ok(1));
}

#[test]
fn iss_and_aud_are_checked_when_configured() {
    let cfg = auth(Some("https://issuer.test"), Some("profile-api"));
    let v = JwtVerifier::new(&cfg);
    let exp = now() + 600;
    let ok = json!({"sub": "1", "exp": exp, "iss": "https://issuer.test", "aud": "profile-api"});
    assert_eq!(claims_answer(&v, &ok), Ok(1));
    let in_array =
        json!({"sub": "1", "exp": exp, "iss": "https://issuer.test", "aud": ["other", "profile-api"]});
    assert_eq!(claims_answer(&v, &in_array), Ok(1), "aud array");
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
        assert_eq!(claims_answer(&v, &claims), Err(AuthError::Invalid), "{what}");
    }
    // mint_token carries the configured iss and aud.
    let minted = mint_token(&cfg, 1, Duration::from_secs(600)).expect("mint");
    assert_eq!(check(&v, &minted), Ok(1));
    // ... and a verifier without them still accepts it (ignored when not configured).
    assert_eq!(check(&JwtVerifier::new(&auth(None, None)), &minted), Ok(1));
}

#[test]
fn only_iss_configured_leaves_aud_unchecked() {
    let v = JwtVerifier::new(&auth(Some("me"), None));
    let exp = now() + 600;
    assert_eq!(claims_answer(&v, &json!({"sub": "1", "exp": exp, "iss": "me", "aud": "whatever"})), Ok(1));
    assert_eq!(claims_answer(&v, &json!({"sub": "1", "exp": exp, "iss": "you"})), Err(AuthError::Invalid));
}

#[test]
fn minted_tokens_carry_the_user_and_the_ttl() {
    let cfg = auth(None, None);
    let v = JwtVerifier::new(&cfg);
    assert_eq!(check(&v, &mint_token(&cfg, 42, Duration::from_secs(600)).expect("mint")), Ok(42));
    // A zero TTL is still inside the leeway; the claims say exp = now.
    assert_eq!(check(&v, &mint_token(&cfg, 43, Duration::ZERO).expect("mint")), Ok(43));
    // Another secret does not verify it.
    let other = AuthConfig { secret: b"other".to_vec(), ..cfg };
    assert_eq!(
        check(&v, &mint_token(&other, 42, Duration::from_secs(600)).expect("mint")),
        Err(AuthError::Invalid)
    );
}

#[test]
fn usable_as_a_shared_port_object() {
    let v: std::sync::Arc<dyn TokenVerifier> = std::sync::Arc::new(JwtVerifier::new(&auth(None, None)));
    let t = mint_token(&auth(None, None), 7, Duration::from_secs(60)).expect("mint");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            let t = t.clone();
            std::thread::spawn(move || (0..100).all(|_| v.verify(&t) == Ok(7)))
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("thread"));
    }
}
