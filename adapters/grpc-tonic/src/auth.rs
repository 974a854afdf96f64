//! `authorization: Bearer <token>` metadata, verified through the core's `TokenVerifier`.

use profile_core::domain::UserId;
use profile_core::ports::{AuthError, TokenVerifier};
use tonic::metadata::MetadataMap;

/// Longest `authorization` value looked at; anything longer is refused unparsed (the
/// HTTP transport's bound: an 8 KiB token plus the scheme).
const MAX_AUTHORIZATION: usize = 8 * 1024 + 32;

/// The bearer token of the call, by the rules the HTTP transport applies to its header:
/// the scheme is case-insensitive, another scheme or an empty token means none was sent.
pub(crate) fn bearer(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
    if value.len() > MAX_AUTHORIZATION {
        return Err(AuthError::Invalid);
    }
    let raw = value.to_str().map_err(|_| AuthError::Invalid)?;
    let raw = raw.trim_start();
    let (scheme, rest) = raw.split_once(' ').unwrap_or((raw.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// The user the call's token names.
pub(crate) fn authenticate(
    verifier: &dyn TokenVerifier,
    metadata: &MetadataMap,
) -> Result<UserId, AuthError> {
    verifier.verify(bearer(metadata)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", v.parse().expect("ascii"));
        m
    }

    #[test]
    fn schemes_and_shapes() {
        assert_eq!(bearer(&MetadataMap::new()), Err(AuthError::Missing));
        assert_eq!(bearer(&md("Basic abc")), Err(AuthError::Missing));
        assert_eq!(bearer(&md("Bearer")), Err(AuthError::Missing));
        assert_eq!(bearer(&md("Bearer   ")), Err(AuthError::Missing));
        assert_eq!(bearer(&md("bearer  a.b.c ")), Ok("a.b.c"));
        assert_eq!(
            bearer(&md(&format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION)))),
            Err(AuthError::Invalid)
        );
    }
}
