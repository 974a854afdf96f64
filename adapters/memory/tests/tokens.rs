//! `MemoryTokens`: the fake `TokenVerifier`.

use profile_core::ports::{AuthError, TokenVerifier};
use profile_memory::MemoryTokens;

#[test]
fn answers_what_it_was_told() {
    let tokens = MemoryTokens::new();
    let t = tokens.issue(7);
    assert_eq!(tokens.issue(7), t, "one text per user");
    assert_eq!(tokens.verify(&t), Ok(7));
    tokens.insert("hand-made", 9);
    assert_eq!(tokens.verify("hand-made"), Ok(9));
    tokens.refuse("old", AuthError::Expired);
    assert_eq!(tokens.verify("old"), Err(AuthError::Expired));
    assert_eq!(tokens.verify("unknown"), Err(AuthError::Invalid));
    assert_eq!(tokens.verify(""), Err(AuthError::Missing));
    // A token is matched exactly, not by prefix or case.
    assert_eq!(tokens.verify(&format!("{t}x")), Err(AuthError::Invalid));
    assert_eq!(tokens.verify(&t.to_uppercase()), Err(AuthError::Invalid));
    assert_eq!(tokens.calls(), 7);
    assert_eq!(tokens.last_token().as_deref(), Some(t.to_uppercase().as_str()));
}
