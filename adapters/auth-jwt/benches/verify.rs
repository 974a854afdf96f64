//! What a request pays to authenticate: a cached verification (the steady state: a
//! client re-sends its token) against a full one (`cargo bench -p profile-auth-jwt`).

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use profile_auth_jwt::{AuthConfig, CacheLimits, JwtVerifier, mint_token};
use profile_core::ports::TokenVerifier;

fn cfg() -> AuthConfig {
    AuthConfig {
        secret: b"bench-secret-bench-secret-bench-secret".to_vec(),
        issuer: Some("https://issuer.example".into()),
        audience: Some("profile-api".into()),
    }
}

fn verify(c: &mut Criterion) {
    let cfg = cfg();
    let token = mint_token(&cfg, 42, Duration::from_secs(3600)).expect("mint");

    let cached = JwtVerifier::new(&cfg);
    assert_eq!(cached.verify(&token), Ok(42));
    c.bench_function("verify/cached", |b| b.iter(|| cached.verify(black_box(&token))));

    // A cache that admits nothing: every call decodes and checks the HMAC.
    let uncached =
        JwtVerifier::with_cache(&cfg, CacheLimits { max_entries: 0, time_to_live: Duration::from_secs(60) });
    c.bench_function("verify/full", |b| b.iter(|| uncached.verify(black_box(&token))));

    // The cached path from 4 threads at once, as the HTTP workers call it (no global lock).
    let shared: Arc<dyn TokenVerifier> = Arc::new(JwtVerifier::new(&cfg));
    let tokens: Vec<String> =
        (1..=4).map(|u| mint_token(&cfg, u, Duration::from_secs(3600)).expect("mint")).collect();
    for t in &tokens {
        shared.verify(t).expect("valid");
    }
    c.bench_function("verify/cached_4_threads_x1000", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in &tokens {
                    let v = shared.clone();
                    s.spawn(move || {
                        for _ in 0..1000 {
                            black_box(v.verify(black_box(t)).ok());
                        }
                    });
                }
            })
        })
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
