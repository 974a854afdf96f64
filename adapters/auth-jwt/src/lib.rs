//! [`TokenVerifier`] on HS256 JSON Web Tokens (SPEC §3), algorithm pinned, with a bounded
//! cache of verified tokens; and [`mint_token`] for the `token` subcommand.
//!
//! The rules: HS256 with the configured secret and nothing else (`none`, HS384/512, RS*,
//! ES* are refused), `exp` required, `nbf` honoured, 60 s leeway on both, `iss`/`aud`
//! required to match when configured and ignored when not, and `sub` a positive decimal
//! user id.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use profile_core::domain::UserId;
use profile_core::ports::{AuthError, TokenVerifier};
use serde::{Deserialize, Serialize};

/// Longest token considered; anything longer is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 60;

/// How bearer tokens are verified (and minted by the `token` subcommand).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// HS256 signing secret.
    pub secret: Vec<u8>,
    /// Required `iss` when set; not checked when `None`.
    pub issuer: Option<String>,
    /// Required member of `aud` when set; not checked when `None`.
    pub audience: Option<String>,
}

impl fmt::Debug for AuthConfig {
    // The secret must never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Bounds of the verified-token cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Verified tokens remembered at most; past it, the least useful are evicted.
    pub max_entries: u64,
    /// How long a verified token is remembered before it is verified in full again.
    pub time_to_live: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self { max_entries: 16 * 1024, time_to_live: Duration::from_secs(600) }
    }
}

/// What a successful verification established, for re-use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verified {
    user: UserId,
    exp: u64,
    nbf: Option<u64>,
}

impl Verified {
    /// The library's rules: expired when `exp < now - leeway`, immature when
    /// `nbf > now + leeway`.
    fn check(&self, now: u64) -> Result<UserId, AuthError> {
        if self.exp < now.saturating_sub(LEEWAY_S) {
            return Err(AuthError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_S)) {
            return Err(AuthError::Invalid);
        }
        Ok(self.user)
    }
}

/// A cache entry: the token's full text (the key is only its hash), what it proved, and
/// when.
#[derive(Debug)]
struct Entry {
    token: Box<str>,
    verified: Verified,
    at: Instant,
}

/// The claims this service reads after validation.
#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    sub: Option<String>,
    // Present and numeric: validation requires and checks it before this is read.
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A JSON NumericDate as whole seconds, rounded like the library does.
fn seconds(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 { v.round() as u64 } else { 0 }
}

/// Verifies HS256 tokens; built once so each call pays only for the check itself.
///
/// Clients send the same token on every request until it expires, and a full decode
/// (two JSON parses of header and claims each, HMAC) costs more than the rest of a
/// cached profile read. So tokens that passed are remembered in a concurrent cache
/// bounded by entry count, each entry for at most the time to live, with the time claims
/// re-checked on every use. Only successes are stored: they need the secret to forge, so
/// a client cannot fill the cache with junk.
///
/// The cache is `quick_cache`, not mini-moka like the profile and rewards caches: every
/// request looks a token up, and over 10,000 clients a mini-moka lookup (its read log,
/// access-order queue and expiry clock) cost a twentieth of the server's CPU, against a
/// hash probe and a reference bit here. The time to live is an age check on the entry.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Keyed by a seeded 128-bit hash of the token, so a lookup neither allocates nor
    /// hashes the whole token twice; the entry holds the full text, compared on a hit.
    verified: quick_cache::sync::Cache<u128, Arc<Entry>>,
    time_to_live: Duration,
    seed: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &"HS256")
            .field("cached", &self.verified.len())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier with the default cache bounds.
    pub fn new(cfg: &AuthConfig) -> Self {
        Self::with_cache(cfg, CacheLimits::default())
    }

    /// A verifier whose verified-token cache has the given bounds.
    pub fn with_cache(cfg: &AuthConfig, limits: CacheLimits) -> Self {
        // Pinning the list to HS256 is what refuses `none`, HS384/512 and RS*/ES*
        // tokens: the header's `alg` must be in it before any key is used.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required: HashSet<String> = HashSet::from(["exp".to_owned()]);
        match &cfg.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                // Otherwise a token without `iss` would slip through the check.
                required.insert("iss".to_owned());
            }
            None => validation.iss = None,
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.validate_aud = true;
                required.insert("aud".to_owned());
            }
            // The library refuses any `aud` when none is configured; the spec says ignore it.
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = required;
        let verified =
            quick_cache::sync::Cache::new(usize::try_from(limits.max_entries).unwrap_or(usize::MAX));
        // A per-process seed, so which tokens share a hash cannot be worked out offline.
        let seed = RandomState::new().hash_one(0_u8);
        Self {
            key: DecodingKey::from_secret(&cfg.secret),
            validation,
            verified,
            time_to_live: limits.time_to_live,
            seed,
        }
    }

    fn key_of(&self, token: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128_with_seed(token.as_bytes(), self.seed)
    }

    /// The full check: signature, algorithm, time and registered claims, then `sub`.
    fn decode(&self, token: &str) -> Result<Verified, AuthError> {
        let claims = match jsonwebtoken::decode::<Subject>(token, &self.key, &self.validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => return Err(AuthError::Expired),
            Err(_) => return Err(AuthError::Invalid),
        };
        let user = claims.sub.as_deref().and_then(parse_subject).ok_or(AuthError::Invalid)?;
        Ok(Verified { user, exp: seconds(claims.exp), nbf: claims.nbf.map(seconds) })
    }

    #[cfg(test)]
    fn cached_entries(&self) -> u64 {
        self.verified.len() as u64
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        let now = unix_now();
        let key = self.key_of(token);
        if let Some(entry) = self.verified.get(&key)
            && *entry.token == *token
            && entry.at.elapsed() < self.time_to_live
        {
            let answer = entry.verified.check(now);
            if answer.is_err() {
                // Past its time: no use keeping it until the time to live runs out.
                self.verified.remove(&key);
            }
            return answer;
        }
        let verified = self.decode(token)?;
        let answer = verified.check(now);
        if answer.is_ok() {
            self.verified.insert(key, Arc::new(Entry { token: token.into(), verified, at: Instant::now() }));
        }
        answer
    }
}

/// A positive decimal id, digits only (no sign, no spaces).
fn parse_subject(sub: &str) -> Option<UserId> {
    if sub.is_empty() || !sub.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    sub.parse::<UserId>().ok().filter(|id| *id > 0)
}

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MintError(String);

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: String,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs an HS256 token for `user_id`, valid for `ttl` from now, carrying `iss`/`aud`
/// when configured, so a [`JwtVerifier`] with the same configuration accepts it.
pub fn mint_token(cfg: &AuthConfig, user_id: UserId, ttl: Duration) -> Result<String, MintError> {
    if user_id <= 0 {
        return Err(MintError(format!("user id must be a positive integer, got {user_id}")));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| MintError("the system clock is before 1970".to_owned()))?
        .as_secs();
    let claims = MintClaims {
        sub: user_id.to_string(),
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
        iss: cfg.issuer.as_deref(),
        aud: cfg.audience.as_deref(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&cfg.secret))
        .map_err(|e| MintError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig { secret: b"unit-secret".to_vec(), issuer: None, audience: None }
    }

    #[test]
    fn subject_must_be_a_positive_decimal() {
        assert_eq!(parse_subject("42"), Some(42));
        assert_eq!(parse_subject("0"), None);
        assert_eq!(parse_subject("-1"), None);
        assert_eq!(parse_subject("+1"), None);
        assert_eq!(parse_subject(" 1"), None);
        assert_eq!(parse_subject("1e3"), None);
        assert_eq!(parse_subject(""), None);
        assert_eq!(parse_subject("99999999999999999999"), None);
    }

    #[test]
    fn minted_tokens_verify() {
        let c = cfg();
        let t = mint_token(&c, 7, Duration::from_secs(60)).unwrap();
        assert_eq!(JwtVerifier::new(&c).verify(&t), Ok(7));
    }

    #[test]
    fn shape_errors() {
        let v = JwtVerifier::new(&cfg());
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("a.b.c"), Err(AuthError::Invalid));
        assert_eq!(v.verify(&"a".repeat(MAX_TOKEN_LEN + 1)), Err(AuthError::Invalid));
    }

    #[test]
    fn remembered_tokens_still_expire() {
        let v = Verified { user: 3, exp: 1_000, nbf: Some(500) };
        assert_eq!(v.check(1_000), Ok(3));
        assert_eq!(v.check(1_060), Ok(3), "within leeway");
        assert_eq!(v.check(1_061), Err(AuthError::Expired));
        assert_eq!(v.check(440), Ok(3), "nbf within leeway");
        assert_eq!(v.check(439), Err(AuthError::Invalid));
    }

    #[test]
    fn cache_hits_answer_like_the_first_verification() {
        let c = cfg();
        let verifier = JwtVerifier::new(&c);
        let t = mint_token(&c, 9, Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&t), Ok(9));
        assert_eq!(verifier.verify(&t), Ok(9));
        // A failure is not remembered as anything, and a near-miss of a cached token is
        // verified in full.
        assert_eq!(verifier.verify(&format!("{t}x")), Err(AuthError::Invalid));
        assert_eq!(verifier.cached_entries(), 1);
    }

    #[test]
    fn a_cached_token_is_rechecked_against_the_clock() {
        let c = cfg();
        let verifier = JwtVerifier::new(&c);
        let t = mint_token(&c, 5, Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&t), Ok(5));
        // Pretend it was verified long ago with an `exp` now far behind us: the cached
        // entry alone must answer `Expired`, and then be dropped.
        let key = verifier.key_of(&t);
        let past = Verified { user: 5, exp: unix_now() - 3600, nbf: None };
        verifier
            .verified
            .insert(key, Arc::new(Entry { token: t.clone().into(), verified: past, at: Instant::now() }));
        assert_eq!(verifier.verify(&t), Err(AuthError::Expired));
        assert_eq!(verifier.cached_entries(), 0);
        // Re-verified in full afterwards (the real token is still valid).
        assert_eq!(verifier.verify(&t), Ok(5));
    }

    #[test]
    fn a_hash_collision_is_verified_in_full() {
        let c = cfg();
        let verifier = JwtVerifier::new(&c);
        let t = mint_token(&c, 6, Duration::from_secs(60)).unwrap();
        let other = "not.a.token";
        // An entry under `other`'s key that belongs to another token must not answer it.
        let ok = Verified { user: 6, exp: unix_now() + 600, nbf: None };
        verifier.verified.insert(
            verifier.key_of(other),
            Arc::new(Entry { token: t.clone().into(), verified: ok, at: Instant::now() }),
        );
        assert_eq!(verifier.verify(other), Err(AuthError::Invalid));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = cfg();
        let limits = CacheLimits { max_entries: 8, time_to_live: Duration::from_secs(600) };
        let verifier = JwtVerifier::with_cache(&c, limits);
        for user in 1..=40 {
            let t = mint_token(&c, user, Duration::from_secs(60)).unwrap();
            assert_eq!(verifier.verify(&t), Ok(user));
        }
        let n = verifier.cached_entries();
        assert!(n <= 8, "{n} entries cached");
        // A full cache never turns a valid token away.
        let t = mint_token(&c, 41, Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&t), Ok(41));
        assert_eq!(verifier.verify(&t), Ok(41));
    }

    #[test]
    fn entries_live_no_longer_than_the_time_to_live() {
        let c = cfg();
        let ttl = Duration::from_secs(600);
        let verifier = JwtVerifier::with_cache(&c, CacheLimits { max_entries: 8, time_to_live: ttl });
        let t = mint_token(&c, 3, Duration::from_secs(60)).unwrap();
        // An entry under the token's key that says user 4: answered while young, so the
        // cache is what answers ...
        let forged = |at| {
            Arc::new(Entry {
                token: t.clone().into(),
                verified: Verified { user: 4, exp: unix_now() + 600, nbf: None },
                at,
            })
        };
        verifier.verified.insert(verifier.key_of(&t), forged(Instant::now()));
        assert_eq!(verifier.verify(&t), Ok(4));
        // ... and past its time to live the token is verified in full again.
        let old = Instant::now().checked_sub(ttl + Duration::from_secs(1)).unwrap();
        verifier.verified.insert(verifier.key_of(&t), forged(old));
        assert_eq!(verifier.verify(&t), Ok(3));
        assert_eq!(verifier.verify(&t), Ok(3), "the fresh verification is what stays");
    }

    #[test]
    fn a_cache_of_no_entries_verifies_every_time() {
        let c = cfg();
        let verifier = JwtVerifier::with_cache(
            &c,
            CacheLimits { max_entries: 0, time_to_live: Duration::from_secs(600) },
        );
        let t = mint_token(&c, 2, Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&t), Ok(2));
        assert_eq!(verifier.verify(&t), Ok(2));
        assert_eq!(verifier.cached_entries(), 0);
    }

    #[test]
    fn minting_refuses_non_positive_ids() {
        assert!(mint_token(&cfg(), 0, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", cfg()).contains("unit-secret"));
        assert!(!format!("{:?}", JwtVerifier::new(&cfg())).contains("unit-secret"));
    }
}
