//! Entity tags and update preconditions, independent of any transport.

use std::fmt;

/// An opaque entity tag: the value a transport quotes (HTTP `ETag`) or passes bare
/// (gRPC `etag`). Two tags are equal when their texts are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTag(String);

impl EntityTag {
    /// Wraps a tag's text (without quotes).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The tag's text, without quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the client requires of the current state before an update applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    /// No requirement: the update applies to the latest state.
    #[default]
    None,
    /// Any current state will do (`If-Match: *`; a profile always exists).
    Any,
    /// The current tag must be one of these; an empty list (a malformed header) matches
    /// nothing.
    OneOf(Vec<EntityTag>),
}

impl Precondition {
    /// Whether an update may apply to the state whose tag is `current`.
    pub fn allows(&self, current: &EntityTag) -> bool {
        match self {
            Self::None | Self::Any => true,
            Self::OneOf(tags) => tags.contains(current),
        }
    }

    /// Whether the client named a state at all.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_tags_match() {
        let t = EntityTag::new("abc");
        assert!(Precondition::None.allows(&t));
        assert!(Precondition::Any.allows(&t));
        assert!(Precondition::OneOf(vec![EntityTag::new("x"), EntityTag::new("abc")]).allows(&t));
        assert!(!Precondition::OneOf(vec![EntityTag::new("abd")]).allows(&t));
        assert!(!Precondition::OneOf(vec![]).allows(&t));
    }
}
