//! Conditional requests (RFC 9110 §13) on the `headers` crate's entity tags: the `ETag`
//! the profile carries, `If-None-Match` for reads and `If-Match` as the core's
//! [`Precondition`] for updates.
//!
//! The `headers` crate parses each entity tag and compares them (strong for `If-Match`,
//! weak for `If-None-Match`), and joins several field lines into one list. What it does
//! not do is refuse a list with a malformed member (it skips that member), nor hand back
//! the tags it holds; both are needed here (SPEC §5: a malformed `If-None-Match` is
//! ignored, a malformed `If-Match` matches nothing), so the list is also split into its
//! members, each of which must parse as a `headers::ETag`.

use headers::{ETag, HeaderMapExt, IfMatch, IfNoneMatch};
use profile_core::domain::{EntityTag, Precondition};
use warp::http::header::{HeaderName, IF_MATCH, IF_NONE_MATCH};
use warp::http::{HeaderMap, HeaderValue};

/// The `ETag` field value of the core's opaque tag: a strong entity tag, the text
/// quoted. `None` only for a tag text HTTP cannot carry (a quote, a space or a control
/// character), which the core never makes (it writes hex digits).
pub(crate) fn etag_value(tag: &EntityTag) -> Option<HeaderValue> {
    let text = tag.as_str().as_bytes();
    // RFC 9110 §8.8.3: etagc = %x21 / %x23-7E / obs-text.
    if !text.iter().all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
        return None;
    }
    let mut v = Vec::with_capacity(text.len() + 2);
    v.push(b'"');
    v.extend_from_slice(text);
    v.push(b'"');
    HeaderValue::try_from(v).ok()
}

/// Whether a read of the representation whose `ETag` is `current` is answered `304`:
/// the `If-None-Match` field is `*` or lists a tag weakly equal to `current`. A
/// malformed field (any member that is not an entity tag, `*` inside a list) is ignored.
pub(crate) fn not_modified(headers: &HeaderMap, current: &HeaderValue) -> bool {
    // Most reads carry no validator: answer those without parsing anything.
    if !headers.contains_key(IF_NONE_MATCH) {
        return false;
    }
    let Some(current) = current.to_str().ok().and_then(|t| t.parse::<ETag>().ok()) else {
        return false;
    };
    let Ok(Some(field)) = headers.typed_try_get::<IfNoneMatch>() else {
        return false;
    };
    if field == IfNoneMatch::any() {
        return true;
    }
    match members(headers, &IF_NONE_MATCH) {
        Some(tags) if !tags.is_empty() => !field.precondition_passes(&current),
        _ => false,
    }
}

/// `If-Match` as the core's precondition: [`Precondition::None`] when absent,
/// [`Precondition::Any`] for `*`, else the strong tags listed (weak ones can never match
/// under the strong comparison `If-Match` uses). A malformed field yields an empty list,
/// which matches nothing (`412`).
pub(crate) fn precondition(headers: &HeaderMap) -> Precondition {
    let field = match headers.typed_try_get::<IfMatch>() {
        Ok(None) => return Precondition::None,
        Ok(Some(field)) => field,
        Err(_) => return Precondition::OneOf(Vec::new()),
    };
    if field.is_any() {
        return Precondition::Any;
    }
    let Some(tags) = members(headers, &IF_MATCH) else {
        return Precondition::OneOf(Vec::new());
    };
    let strong = tags
        .into_iter()
        .filter(|(tag, _)| !tag.is_weak())
        // A strong tag parsed by `headers` is `"…"`: its opaque text sits between the quotes.
        .filter_map(|(_, text)| text.strip_prefix('"')?.strip_suffix('"').map(EntityTag::new))
        .collect();
    Precondition::OneOf(strong)
}

/// Every member of an entity-tag list field, all its lines joined, each parsed by
/// `headers` and kept with its text; `None` when a line is not text or a member is not
/// an entity tag. Empty members (`"a", , "b"`) are allowed, as RFC 9110 §5.6.1 asks.
fn members(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<(ETag, String)>> {
    let mut out = Vec::new();
    for line in headers.get_all(name) {
        for member in split_list(line.to_str().ok()?) {
            if member.is_empty() {
                continue;
            }
            out.push((member.parse::<ETag>().ok()?, member.to_owned()));
        }
    }
    Some(out)
}

/// Splits a list at the commas outside quoted tags (a tag may contain a comma), trimming
/// each member.
fn split_list(line: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    line.split(move |c: char| {
        if c == '"' {
            quoted = !quoted;
        }
        c == ',' && !quoted
    })
    .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "abc";

    fn with(name: &HeaderName, lines: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(name.clone(), HeaderValue::from_static(l));
        }
        h
    }

    fn inm(lines: &[&'static str]) -> bool {
        let current = etag_value(&EntityTag::new(OURS)).expect("tag");
        not_modified(&with(&IF_NONE_MATCH, lines), &current)
    }

    fn im(lines: &[&'static str]) -> Precondition {
        precondition(&with(&IF_MATCH, lines))
    }

    fn one_of(tags: &[&str]) -> Precondition {
        Precondition::OneOf(tags.iter().map(|t| EntityTag::new(*t)).collect())
    }

    #[test]
    fn etag_is_the_quoted_opaque_tag() {
        let v = etag_value(&EntityTag::new("0f3a")).expect("tag");
        assert_eq!(v.to_str().ok(), Some("\"0f3a\""));
        assert!(v.to_str().unwrap().parse::<ETag>().is_ok(), "a valid entity tag for `headers`");
        assert!(etag_value(&EntityTag::new("a\"b")).is_none());
        assert!(etag_value(&EntityTag::new("a b")).is_none());
        assert!(etag_value(&EntityTag::new("a\u{1}b")).is_none());
    }

    #[test]
    fn if_none_match_matches_lists_weak_tags_and_star() {
        assert!(inm(&["\"abc\""]));
        assert!(inm(&["W/\"abc\""]));
        assert!(inm(&["*"]));
        assert!(inm(&["\"x\", \"abc\""]));
        assert!(inm(&["\"a,b\",W/\"abc\""]));
        assert!(inm(&["\"x\",, \"abc\""]));
        assert!(inm(&["\"x\"", "\"abc\""]), "several field lines are one list");
        assert!(!inm(&["\"abcd\""]));
        assert!(!inm(&["W/\"ab\""]));
        assert!(!inm(&["\"x\", \"y\""]));
    }

    #[test]
    fn malformed_if_none_match_is_ignored() {
        for bad in [
            "*+$KE7X -C$b",
            "abc",
            "\"abc",
            "abc\"",
            "",
            " , ",
            "*, \"abc\"",
            "\"abc\", *",
            "w/\"abc\"",
            "\"abc\" \"x\"",
            "\"abc\", garbage",
            "garbage, \"abc\"",
        ] {
            assert!(!inm(&[bad]), "If-None-Match: {bad:?}");
        }
        assert!(!inm(&["\"abc\"", "garbage"]), "a malformed line spoils the list");
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_bytes(b"\"ab\xffc\"").expect("obs-text"));
        assert!(!not_modified(&h, &etag_value(&EntityTag::new(OURS)).expect("tag")));
    }

    #[test]
    fn if_match_becomes_a_precondition() {
        assert_eq!(precondition(&HeaderMap::new()), Precondition::None);
        assert_eq!(im(&["*"]), Precondition::Any);
        assert_eq!(im(&["\"abc\""]), one_of(&["abc"]));
        assert_eq!(im(&["\"x\", \"abc\""]), one_of(&["x", "abc"]));
        assert_eq!(im(&["\"a,b\", \"c\""]), one_of(&["a,b", "c"]));
        assert_eq!(im(&["\"a\"", "\"b\""]), one_of(&["a", "b"]), "several field lines are one list");
        assert_eq!(im(&["\"\""]), one_of(&[""]));
        // Weak tags never match under the strong comparison.
        assert_eq!(im(&["W/\"abc\""]), one_of(&[]));
        assert_eq!(im(&["W/\"abc\", \"x\""]), one_of(&["x"]));
    }

    #[test]
    fn malformed_if_match_matches_nothing() {
        for bad in ["abc", "\"abc", "", "*, \"abc\"", "\"abc\", garbage", "*+$KE7X -C$b", "\"a\" \"b\""] {
            let p = im(&[bad]);
            assert_eq!(p, one_of(&[]), "If-Match: {bad:?}");
            assert!(!p.allows(&EntityTag::new(OURS)));
        }
        let mut h = HeaderMap::new();
        h.insert(IF_MATCH, HeaderValue::from_bytes(b"\"ab\xffc\"").expect("obs-text"));
        assert_eq!(precondition(&h), one_of(&[]));
    }
}
