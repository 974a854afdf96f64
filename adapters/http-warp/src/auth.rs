//! Bearer credentials from the `Authorization` header (RFC 6750); the token itself is
//! checked by the [`TokenVerifier`] port (SPEC §3).

use profile_core::domain::UserId;
use profile_core::ports::{AuthError, TokenVerifier};
use warp::http::HeaderValue;

/// Longest bearer token passed to the verifier; anything longer is refused before any
/// parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The user named by the `Authorization` header, as `verifier` judges its token.
pub(crate) fn authenticate(
    verifier: &dyn TokenVerifier,
    header: Option<&HeaderValue>,
) -> Result<UserId, AuthError> {
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
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Invalid);
    }
    verifier.verify(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use profile_memory::MemoryTokens;

    #[test]
    fn the_token_reaches_the_verifier_without_scheme_or_spaces() {
        let tokens = MemoryTokens::new();
        let t = tokens.issue(7);
        let hv = HeaderValue::from_str(&format!("bearer  {t} ")).unwrap();
        assert_eq!(authenticate(&*tokens, Some(&hv)), Ok(7));
        assert_eq!(tokens.last_token().as_deref(), Some(t.as_str()));
    }

    #[test]
    fn scheme_and_shape_errors() {
        let tokens = MemoryTokens::new();
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        // Known to the verifier: only the HTTP-side bound can refuse it.
        tokens.insert(&long, 1);
        let v: &dyn TokenVerifier = &*tokens;
        assert_eq!(authenticate(v, None), Err(AuthError::Missing));
        assert_eq!(authenticate(v, Some(&HeaderValue::from_static("Basic abc"))), Err(AuthError::Missing));
        assert_eq!(authenticate(v, Some(&HeaderValue::from_static("Bearer"))), Err(AuthError::Missing));
        assert_eq!(authenticate(v, Some(&HeaderValue::from_static("Bearer    "))), Err(AuthError::Missing));
        assert_eq!(authenticate(v, Some(&HeaderValue::from_static("Bearer a.b.c"))), Err(AuthError::Invalid));
        let header = format!("Bearer {long}");
        assert_eq!(authenticate(v, Some(&HeaderValue::from_str(&header).unwrap())), Err(AuthError::Invalid));
        let huge = format!("Bearer {}", "a".repeat(4 * MAX_TOKEN_LEN));
        assert_eq!(authenticate(v, Some(&HeaderValue::from_str(&huge).unwrap())), Err(AuthError::Invalid));
        // Only "Bearer a.b.c" got as far as the verifier.
        assert_eq!(tokens.calls(), 1);
    }

    #[test]
    fn the_verifiers_refusal_is_passed_on() {
        let tokens = MemoryTokens::new();
        tokens.refuse("old", AuthError::Expired);
        let hv = HeaderValue::from_static("Bearer old");
        assert_eq!(authenticate(&*tokens, Some(&hv)), Err(AuthError::Expired));
    }
}
