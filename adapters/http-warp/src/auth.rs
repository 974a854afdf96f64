//! Bearer-token authentication (SPEC §3): HS256 JWTs, algorithm pinned.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use profile_core::domain::UserId;
use serde::{Deserialize, Serialize};
use warp::http::HeaderValue;

/// Longest bearer token considered; anything longer is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 60;

/// Verified tokens remembered at most; past it, expired ones are dropped, then all.
const CACHE_CAP: usize = 16 * 1024;

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

/// Why a request is not authenticated; every variant is a `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` credentials at all.
    Missing,
    /// Credentials present but unusable: malformed, badly signed, wrong algorithm,
    /// wrong issuer or audience, not yet valid, too long, or a bad `sub`.
    Invalid,
    /// A well-formed token past its `exp` (plus leeway).
    Expired,
}

/// Verifies tokens; built once so each request pays only for the check itself.
///
/// Clients send the same token on every request until it expires, and a full decode
/// (two JSON parses of header and claims each, HMAC) costs more than the rest of a
/// cached profile read. So tokens that passed are remembered, keyed by their exact
/// text, with the time claims re-checked on every use. Only successes are stored:
/// they need the secret to forge, so a client cannot fill the cache with junk.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    verified: RwLock<HashMap<Box<str>, Verified>>,
}

/// What a successful verification established, for re-use.
#[derive(Debug, Clone, Copy)]
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

impl Verifier {
    /// Builds the key and validation rules from the configuration.
    pub(crate) fn new(cfg: &AuthConfig) -> Self {
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
        Self { key: DecodingKey::from_secret(&cfg.secret), validation, verified: RwLock::new(HashMap::new()) }
    }

    /// The user named by the `Authorization` header.
    pub(crate) fn authenticate(&self, header: Option<&HeaderValue>) -> Result<UserId, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        // Bounded before anything else looks at it: the header is attacker-controlled.
        if header.len() > MAX_TOKEN_LEN + "Bearer ".len() + 16 {
            return Err(AuthError::Invalid);
        }
        let raw = header.to_str().map_err(|_| AuthError::Invalid)?;
        let (scheme, rest) = raw.trim_start().split_once(' ').unwrap_or((raw.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            // Another scheme means no bearer credentials were offered (RFC 6750 §3).
            return Err(AuthError::Missing);
        }
        let token = rest.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.verify(token)
    }

    /// Validates a token and returns its subject.
    pub(crate) fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        let now = unix_now();
        let known = self.verified.read().unwrap_or_else(PoisonError::into_inner).get(token).copied();
        if let Some(v) = known {
            return v.check(now);
        }
        let claims = match jsonwebtoken::decode::<Subject>(token, &self.key, &self.validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => return Err(AuthError::Expired),
            Err(_) => return Err(AuthError::Invalid),
        };
        let user = claims.sub.as_deref().and_then(parse_subject).ok_or(AuthError::Invalid)?;
        self.remember(token, Verified { user, exp: seconds(claims.exp), nbf: claims.nbf.map(seconds) }, now);
        Ok(user)
    }

    fn remember(&self, token: &str, v: Verified, now: u64) {
        let mut map = self.verified.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CACHE_CAP {
            map.retain(|_, v| v.check(now).is_ok());
            if map.len() >= CACHE_CAP {
                // Still full of live tokens: start over rather than track recency.
                map.clear();
            }
        }
        map.insert(token.into(), v);
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
/// when configured, so `serve` with the same configuration accepts it.
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
        assert_eq!(Verifier::new(&c).verify(&t), Ok(7));
        let hv = HeaderValue::from_str(&format!("bearer  {t} ")).unwrap();
        assert_eq!(Verifier::new(&c).authenticate(Some(&hv)), Ok(7));
    }

    #[test]
    fn scheme_and_shape_errors() {
        let v = Verifier::new(&cfg());
        assert_eq!(v.authenticate(None), Err(AuthError::Missing));
        assert_eq!(v.authenticate(Some(&HeaderValue::from_static("Basic abc"))), Err(AuthError::Missing));
        assert_eq!(v.authenticate(Some(&HeaderValue::from_static("Bearer"))), Err(AuthError::Missing));
        assert_eq!(v.authenticate(Some(&HeaderValue::from_static("Bearer a.b.c"))), Err(AuthError::Invalid));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(v.authenticate(Some(&HeaderValue::from_str(&long).unwrap())), Err(AuthError::Invalid));
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
        let verifier = Verifier::new(&c);
        let t = mint_token(&c, 9, Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&t), Ok(9));
        assert_eq!(verifier.verify(&t), Ok(9));
        // A failure is not remembered as anything, and a near-miss of a cached token is
        // verified in full.
        assert_eq!(verifier.verify(&format!("{t}x")), Err(AuthError::Invalid));
        assert_eq!(verifier.verified.read().unwrap().len(), 1);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = cfg();
        let verifier = Verifier::new(&c);
        let now = unix_now();
        for i in 0..CACHE_CAP {
            verifier.remember(&format!("t{i}"), Verified { user: 1, exp: now + 600, nbf: None }, now);
        }
        let t = mint_token(&c, 2, Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&t), Ok(2));
        assert!(verifier.verified.read().unwrap().len() <= CACHE_CAP);
    }

    #[test]
    fn minting_refuses_non_positive_ids() {
        assert!(mint_token(&cfg(), 0, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", cfg()).contains("unit-secret"));
    }
}
