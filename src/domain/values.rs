//! Validated values (DESIGN.md: types that cannot hold invalid data). Each is built only
//! by [`FieldValue::parse`], which applies one rule of SPEC §5 ("Field rules") and its
//! normalisation; the rules themselves are the functions of [`rules`](super::rules).
//!
//! The stored record ([`ProfileFields`](super::ProfileFields)) still keeps plain strings,
//! so the storage adapters need no change; [`ProfileUpdate`](super::ProfileUpdate) holds
//! these types and turns them into the record's strings when it is applied.

use std::fmt;

use serde::Serialize;

use super::profile::{Theme, Visibility};
use super::rules::{self, Issue};

/// A value parsed from the text a client sent, by one field rule.
pub trait FieldValue: Sized {
    /// Trims, validates and normalises `input`; the [`Issue`] says why it was refused.
    fn parse(input: &str) -> Result<Self, Issue>;
}

/// Declares a validated string newtype over one rule of [`rules`].
macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident => $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl FieldValue for $name {
            fn parse(input: &str) -> Result<Self, Issue> {
                let rule: fn(&str) -> Result<String, Issue> = $rule;
                rule(input).map(Self)
            }
        }

        impl $name {
            /// The normalised text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The normalised text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

string_value!(
    /// An account e-mail address, lower-cased, at most 254 characters.
    Email => rules::email
);
string_value!(
    /// An E.164 phone number: `+` then 8 to 15 digits.
    Phone => rules::phone
);
string_value!(
    /// An absolute `http` or `https` URL of at most 2048 characters, kept as sent.
    WebUrl => rules::web_url
);
string_value!(
    /// An assigned ISO 3166-1 alpha-2 country code, upper-case.
    CountryCode => rules::country
);
string_value!(
    /// A well-formed BCP 47 language tag in canonical case.
    LanguageTag => rules::language
);
string_value!(
    /// An IANA time zone name in its canonical spelling.
    TimeZone => rules::timezone
);
string_value!(
    /// An active ISO 4217 currency code, upper-case.
    CurrencyCode => rules::currency
);
string_value!(
    /// A tax identifier: 4 to 32 of `A–Z 0–9 -`, upper-case.
    TaxId => rules::tax_id
);

/// Single-line text: trimmed, 1 to `MAX` characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Text<const MAX: usize>(String);

/// Multi-line text: like [`Text`], line breaks allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MultilineText<const MAX: usize>(String);

impl<const MAX: usize> FieldValue for Text<MAX> {
    fn parse(input: &str) -> Result<Self, Issue> {
        rules::text(input, MAX).map(Self)
    }
}

impl<const MAX: usize> FieldValue for MultilineText<MAX> {
    fn parse(input: &str) -> Result<Self, Issue> {
        rules::multiline_text(input, MAX).map(Self)
    }
}

impl<const MAX: usize> Text<MAX> {
    /// The trimmed text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> MultilineText<MAX> {
    /// The trimmed text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> AsRef<str> for Text<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> AsRef<str> for MultilineText<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `display_name`: 1 to 64 characters.
pub type DisplayName = Text<64>;
/// `first_name`, `last_name`, `city`: at most 100 characters.
pub type PersonName = Text<100>;
/// `bio`: at most 500 characters, line breaks allowed.
pub type Bio = MultilineText<500>;
/// `company_name`, `job_title`: at most 120 characters.
pub type BusinessText = Text<120>;
/// `billing_address.line1`, `line2`, `city`: at most 200 characters.
pub type AddressLine = Text<200>;
/// `billing_address.postal_code`: at most 16 characters.
pub type PostalCode = Text<16>;

impl FieldValue for Theme {
    fn parse(input: &str) -> Result<Self, Issue> {
        rules::one_of(input, Theme::NAMES).map(|n| Theme::from_name(n).unwrap_or_default())
    }
}

impl FieldValue for Visibility {
    fn parse(input: &str) -> Result<Self, Issue> {
        rules::one_of(input, Visibility::NAMES).map(|n| Visibility::from_name(n).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_hold_the_normalised_text() {
        assert_eq!(Phone::parse(" +442071234567 ").unwrap().as_str(), "+442071234567");
        assert_eq!(CountryCode::parse("gb").unwrap().as_str(), "GB");
        assert_eq!(LanguageTag::parse("zh-hant-tw").unwrap().as_str(), "zh-Hant-TW");
        assert_eq!(TimeZone::parse("europe/london").unwrap().as_str(), "Europe/London");
        assert_eq!(CurrencyCode::parse("gbp").unwrap().into_string(), "GBP");
        assert_eq!(Email::parse(" Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
        assert_eq!(TaxId::parse("gb-123").unwrap().as_str(), "GB-123");
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert_eq!(Bio::parse("a\nb").unwrap().as_str(), "a\nb");
        assert_eq!(Theme::parse(" Dark ").unwrap(), Theme::Dark);
        assert_eq!(Visibility::parse("PUBLIC").unwrap(), Visibility::Public);
    }

    #[test]
    fn values_refuse_with_the_rule_codes() {
        assert_eq!(Phone::parse("12").unwrap_err().code, "invalid_phone");
        assert_eq!(CountryCode::parse("AA").unwrap_err().code, "invalid_country");
        assert_eq!(PostalCode::parse(&"9".repeat(17)).unwrap_err().code, "too_long");
        assert_eq!(DisplayName::parse(" ").unwrap_err().code, "empty");
        assert_eq!(Theme::parse("neon").unwrap_err().code, "invalid_choice");
    }

    #[test]
    fn values_serialise_as_their_text() {
        let v = serde_json::to_value(CountryCode::parse("fr").unwrap()).unwrap();
        assert_eq!(v, serde_json::json!("FR"));
        let v = serde_json::to_value(PersonName::parse(" Ada ").unwrap()).unwrap();
        assert_eq!(v, serde_json::json!("Ada"));
    }
}
