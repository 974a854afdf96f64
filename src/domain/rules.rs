//! Field rules (SPEC §5 "Field rules"): pure validation and normalisation of one value.
//!
//! Every function trims its input first; an empty string after trimming is refused with
//! code `empty`. Lengths count Unicode scalar values (`chars().count()`) after trimming.
//! A refusal is an [`Issue`]: a stable machine code and a short human message that says
//! what is expected and never echoes the input.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use chrono_tz::{TZ_VARIANTS, Tz};
use email_address::{EmailAddress, Options as EmailOptions};
use iso_currency::Currency;
use isocountry::CountryCode;
use language_tags::LanguageTag;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use url::Url;

/// Why one value was refused: a stable machine code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Stable machine-readable code, e.g. `too_long`.
    pub code: &'static str,
    /// Short human message saying what is expected; never contains the input value.
    pub message: String,
}

impl Issue {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Issue {}

/// Every code a rule of this module gives, for transports that carry codes as text.
pub const CODES: &[&str] = &[
    "empty",
    "too_long",
    "control_characters",
    "invalid_email",
    "invalid_phone",
    "invalid_url",
    "invalid_date",
    "age_out_of_range",
    "invalid_country",
    "invalid_language",
    "invalid_timezone",
    "invalid_currency",
    "invalid_tax_id",
    "invalid_choice",
];

/// Maximum length of an email address, in characters.
pub const EMAIL_MAX_CHARS: usize = 254;
/// Maximum length of a web URL, in characters.
pub const URL_MAX_CHARS: usize = 2048;
/// Minimum age in whole years for a birth date.
pub const MIN_AGE_YEARS: i32 = 13;
/// Maximum age in whole years for a birth date.
pub const MAX_AGE_YEARS: i32 = 130;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Trims `input`; refuses it with `empty` when nothing is left.
fn trimmed(input: &str) -> Result<&str, Issue> {
    let s = input.trim();
    if s.is_empty() { Err(Issue::new("empty", "must not be empty")) } else { Ok(s) }
}

fn check_max_len(s: &str, max_chars: usize) -> Result<(), Issue> {
    if s.chars().count() > max_chars {
        Err(Issue::new("too_long", format!("must be at most {max_chars} characters")))
    } else {
        Ok(())
    }
}

/// Unicode general category Cf (format), from the `unicode-properties` tables (kept by
/// the unicode-rs project, regenerated for each Unicode version).
fn is_format_char(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// A "control character" in the sense of the spec: category Cc, or Cf other than U+200D
/// (the zero-width joiner used inside emoji sequences).
fn is_forbidden_control(c: char) -> bool {
    c.is_control() || (is_format_char(c) && c != '\u{200D}')
}

fn control_issue() -> Issue {
    Issue::new("control_characters", "must not contain control or invisible formatting characters")
}

// ---------------------------------------------------------------------------------------
// Free text
// ---------------------------------------------------------------------------------------

/// Single-line text: trimmed, non-empty, at most `max_chars` characters, no control
/// characters (Cc, or Cf other than U+200D). Returns the trimmed text.
pub fn text(input: &str, max_chars: usize) -> Result<String, Issue> {
    let s = trimmed(input)?;
    if s.chars().any(is_forbidden_control) {
        return Err(control_issue());
    }
    check_max_len(s, max_chars)?;
    Ok(s.to_owned())
}

/// Like [`text`], but line breaks (`\n`, `\r\n`, `\r`) are allowed. Line breaks are kept
/// as given and count as characters (`\r\n` counts as two).
pub fn multiline_text(input: &str, max_chars: usize) -> Result<String, Issue> {
    let s = trimmed(input)?;
    if s.chars().any(|c| c != '\n' && c != '\r' && is_forbidden_control(c)) {
        return Err(Issue::new(
            "control_characters",
            "must not contain control or invisible formatting characters other than line breaks",
        ));
    }
    check_max_len(s, max_chars)?;
    Ok(s.to_owned())
}

// ---------------------------------------------------------------------------------------
// Contact
// ---------------------------------------------------------------------------------------

/// Email address: valid per the `email_address` crate (no display name such as
/// `Name <a@b>`, no IP-literal domain, domain with at least two labels), at most 254
/// characters, no control characters. Returned lower-cased.
pub fn email(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    let lower = s.to_lowercase();
    check_max_len(&lower, EMAIL_MAX_CHARS)?;
    let invalid = || Issue::new("invalid_email", "must be a valid email address");
    if lower.chars().any(|c| is_forbidden_control(c) || c.is_whitespace()) {
        // Whitespace is only legal inside a quoted local part; refuse it outright.
        return Err(invalid());
    }
    let options = EmailOptions::default().without_display_text().without_domain_literal().with_required_tld();
    EmailAddress::parse_with_options(&lower, options).map_err(|_| invalid())?;
    Ok(lower)
}

/// Phone number in E.164 form: `+` then 8 to 15 ASCII digits, nothing else.
pub fn phone(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    let ok = s
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Issue::new("invalid_phone", "must be an E.164 number: + then 8 to 15 digits"))
    }
}

/// Absolute `http` or `https` URL with a host, at most 2048 characters. The input must
/// literally start with `http://` or `https://` (any case) and contain no whitespace,
/// backslash or control characters (which the URL parser would otherwise silently fix
/// up). Returns the trimmed input as given, not re-serialised.
pub fn web_url(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    check_max_len(s, URL_MAX_CHARS)?;
    let invalid = || Issue::new("invalid_url", "must be an absolute http or https URL");
    let lower_prefix: String = s.chars().take(8).collect::<String>().to_ascii_lowercase();
    let rest = if lower_prefix.starts_with("http://") {
        &s[7..]
    } else if lower_prefix.starts_with("https://") {
        &s[8..]
    } else {
        return Err(invalid());
    };
    // The authority must be present: `https:///path` would otherwise be "fixed up".
    if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
        return Err(invalid());
    }
    if s.chars().any(|c| c.is_whitespace() || c == '\\' || is_forbidden_control(c)) {
        return Err(invalid());
    }
    let url = Url::parse(s).map_err(|_| invalid())?;
    let scheme_ok = matches!(url.scheme(), "http" | "https");
    let host_ok = url.host_str().is_some_and(|h| !h.is_empty());
    if scheme_ok && host_ok { Ok(s.to_owned()) } else { Err(invalid()) }
}

// ---------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------

/// Birth date in strict `YYYY-MM-DD` form (`invalid_date` otherwise, including dates that
/// do not exist). The age on `today`, in whole years and birthday-aware, must be between
/// 13 and 130 inclusive (`age_out_of_range` otherwise, including future dates). Someone
/// born on 29 February turns a year older on 1 March in non-leap years.
pub fn birth_date(input: &str, today: NaiveDate) -> Result<NaiveDate, Issue> {
    let s = trimmed(input)?;
    let invalid = || Issue::new("invalid_date", "must be a real date written YYYY-MM-DD");
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(invalid());
    }
    // The shape check guarantees these slices are ASCII digits.
    let year: i32 = s[0..4].parse().map_err(|_| invalid())?;
    let month: u32 = s[5..7].parse().map_err(|_| invalid())?;
    let day: u32 = s[8..10].parse().map_err(|_| invalid())?;
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(invalid)?;

    let mut age = today.year() - date.year();
    if (today.month(), today.day()) < (date.month(), date.day()) {
        age -= 1;
    }
    if (MIN_AGE_YEARS..=MAX_AGE_YEARS).contains(&age) {
        Ok(date)
    } else {
        Err(Issue::new(
            "age_out_of_range",
            format!("age must be between {MIN_AGE_YEARS} and {MAX_AGE_YEARS} years"),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------------------

/// Assigned ISO 3166-1 alpha-2 country code (two ASCII letters, any case). Returned
/// upper-case.
pub fn country(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    let invalid = || Issue::new("invalid_country", "must be an ISO 3166-1 alpha-2 country code such as GB");
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid());
    }
    let upper = s.to_ascii_uppercase();
    CountryCode::for_alpha2(&upper).map_err(|_| invalid())?;
    Ok(upper)
}

/// Well-formed BCP 47 language tag (RFC 5646 syntax, including grandfathered and
/// private-use tags). Returned in canonical case: language and extlang lower, script
/// title-case, alphabetic region upper, variants/extensions/private use lower.
/// Well-formedness only: subtags are not checked against the IANA registry.
pub fn language(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    let invalid =
        || Issue::new("invalid_language", "must be a BCP 47 language tag such as en, en-GB or zh-Hant-TW");
    // Guard what the parser's private-use path does not check itself: only ASCII letters,
    // digits and '-', and every subtag 1 to 8 characters long.
    let subtags_ok =
        s.split('-').all(|t| (1..=8).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !subtags_ok {
        return Err(invalid());
    }
    let tag = LanguageTag::parse(s).map_err(|_| invalid())?;
    Ok(tag.into_string())
}

/// IANA time zone name known to chrono-tz (links such as `US/Eastern` included). An
/// exact-case match is preferred; otherwise a case-insensitive match is accepted. Returns
/// the canonical spelling from chrono-tz (e.g. `europe/london` -> `Europe/London`).
pub fn timezone(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    if let Ok(tz) = Tz::from_str(s) {
        return Ok(tz.name().to_owned());
    }
    TZ_VARIANTS
        .iter()
        .map(|tz| tz.name())
        .find(|name| name.eq_ignore_ascii_case(s))
        .map(str::to_owned)
        .ok_or_else(|| Issue::new("invalid_timezone", "must be an IANA time zone name such as Europe/London"))
}

/// Active ISO 4217 currency code (three ASCII letters, any case), returned upper-case.
/// Funds (e.g. BOV, CLF), special units (precious metals XAU/XAG/XPD/XPT, XDR, bond units
/// XBA–XBD, XSU, XUA, XAD, testing XTS, no-currency XXX) and superseded codes (e.g. HRK)
/// are refused.
pub fn currency(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    let invalid = || Issue::new("invalid_currency", "must be an active ISO 4217 currency code such as GBP");
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid());
    }
    let upper = s.to_ascii_uppercase();
    let cur = Currency::from_code(&upper).ok_or_else(invalid)?;
    if !cur.flags().is_empty() {
        return Err(invalid());
    }
    Ok(upper)
}

/// Tax identifier: ASCII upper-cased, then 4 to 32 characters, each `A`–`Z`, `0`–`9` or
/// `-`. Returned upper-case.
pub fn tax_id(input: &str) -> Result<String, Issue> {
    let s = trimmed(input)?;
    let upper = s.to_ascii_uppercase();
    let ok = (4..=32).contains(&upper.chars().count())
        && upper.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(upper)
    } else {
        Err(Issue::new("invalid_tax_id", "must be 4 to 32 characters: letters A-Z, digits 0-9 or -"))
    }
}

/// One of a fixed set of values (theme, profile visibility). Matched case-insensitively
/// after trimming; returns the canonical allowed value.
pub fn one_of(input: &str, allowed: &[&'static str]) -> Result<&'static str, Issue> {
    let s = trimmed(input)?;
    allowed
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(s))
        .ok_or_else(|| Issue::new("invalid_choice", format!("must be one of: {}", allowed.join(", "))))
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T: fmt::Debug>(r: Result<T, Issue>) -> &'static str {
        r.expect_err("expected a refusal").code
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    // ---- helpers ----

    #[test]
    fn format_chars_cover_cf_and_nothing_obvious_else() {
        for c in [
            '\u{00AD}',
            '\u{0600}',
            '\u{0605}',
            '\u{061C}',
            '\u{06DD}',
            '\u{070F}',
            '\u{0890}',
            '\u{0891}',
            '\u{08E2}',
            '\u{180E}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{FFF9}',
            '\u{FFFB}',
            '\u{110BD}',
            '\u{110CD}',
            '\u{13430}',
            '\u{1343F}',
            '\u{1BCA0}',
            '\u{1BCA3}',
            '\u{1D173}',
            '\u{1D17A}',
            '\u{E0001}',
            '\u{E0020}',
            '\u{E007F}',
        ] {
            assert!(is_format_char(c), "{:X}", c as u32);
        }
        for c in [
            'a',
            ' ',
            'é',
            '\u{0606}',
            '\u{2065}',
            '\u{2028}',
            '\u{FE0F}',
            '\u{FFFC}',
            '\u{1F600}',
            '\u{E0000}',
            '\u{E0080}',
            '\u{13440}',
            '\u{110BE}',
        ] {
            assert!(!is_format_char(c), "{:X}", c as u32);
        }
        let count = (0..=0x10FFFFu32).filter_map(char::from_u32).filter(|c| is_format_char(*c)).count();
        assert_eq!(count, 170, "Unicode 15 has 170 Cf code points");
        assert!(!is_forbidden_control('\u{200D}'));
        assert!(is_forbidden_control('\u{0007}'));
        assert!(is_forbidden_control('\u{0085}'));
    }

    #[test]
    fn issue_displays_its_message() {
        let i = text("", 5).unwrap_err();
        assert_eq!(i.to_string(), i.message);
    }

    // ---- text ----

    #[test]
    fn text_accepts_and_trims() {
        assert_eq!(text("  Ada Lovelace \t", 64).unwrap(), "Ada Lovelace");
        assert_eq!(text("Zoë", 3).unwrap(), "Zoë");
        assert_eq!(text("日本語", 3).unwrap(), "日本語");
        // Family emoji with zero-width joiners: allowed.
        let family = "👨\u{200D}👩\u{200D}👧";
        assert_eq!(text(family, 5).unwrap(), family);
        // Variation selector (Mn) is fine.
        assert_eq!(text("❤\u{FE0F}", 2).unwrap(), "❤\u{FE0F}");
    }

    #[test]
    fn text_boundary_lengths() {
        let at = "é".repeat(100);
        assert_eq!(text(&at, 100).unwrap(), at);
        let over = "é".repeat(101);
        let err = text(&over, 100).unwrap_err();
        assert_eq!(err.code, "too_long");
        assert_eq!(err.message, "must be at most 100 characters");
        // Trimmed before counting.
        assert!(text(&format!("  {at}  "), 100).is_ok());
    }

    #[test]
    fn text_refuses_empty_and_controls() {
        assert_eq!(code(text("", 10)), "empty");
        assert_eq!(code(text("   \n\t ", 10)), "empty");
        assert_eq!(code(text("Ada\u{202E}ecalevol", 64)), "control_characters");
        assert_eq!(code(text("Ada\u{200B}Lovelace", 64)), "control_characters");
        assert_eq!(code(text("\u{FEFF}Ada", 64)), "control_characters");
        assert_eq!(code(text("Ada\u{2066}x\u{2069}", 64)), "control_characters");
        assert_eq!(code(text("Ada\u{200E}", 64)), "control_characters");
        assert_eq!(code(text("co\u{00AD}op", 64)), "control_characters");
        assert_eq!(code(text("a\nb", 64)), "control_characters");
        assert_eq!(code(text("a\tb", 64)), "control_characters");
        assert_eq!(code(text("a\u{0000}b", 64)), "control_characters");
        assert_eq!(code(text("a\u{007F}b", 64)), "control_characters");
        // England flag uses tag characters (Cf): refused by the rule as written.
        assert_eq!(
            code(text("🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}", 64)),
            "control_characters"
        );
    }

    #[test]
    fn messages_never_echo_input() {
        let secret = "secret\u{202E}value";
        let e = text(secret, 64).unwrap_err();
        assert!(!e.message.contains("secret"));
        let e = email("Secret@Example").unwrap_err();
        assert!(!e.message.to_lowercase().contains("secret"));
    }

    // ---- multiline_text ----

    #[test]
    fn multiline_accepts_line_breaks() {
        assert_eq!(
            multiline_text("  line one\nline two\r\nthree\rfour  \n", 500).unwrap(),
            "line one\nline two\r\nthree\rfour"
        );
        let family = "👨\u{200D}👩\u{200D}👧";
        assert!(multiline_text(family, 5).is_ok());
    }

    #[test]
    fn multiline_refuses_other_controls_and_length() {
        assert_eq!(code(multiline_text("a\tb", 500)), "control_characters");
        assert_eq!(code(multiline_text("a\u{202E}b", 500)), "control_characters");
        assert_eq!(code(multiline_text("a\u{200B}b", 500)), "control_characters");
        assert_eq!(code(multiline_text("a\u{000B}b", 500)), "control_characters");
        assert_eq!(code(multiline_text(" \n ", 500)), "empty");
        assert!(multiline_text(&"ü".repeat(500), 500).is_ok());
        assert_eq!(code(multiline_text(&"ü".repeat(501), 500)), "too_long");
        // "\r\n" counts as two characters.
        assert!(multiline_text("a\r\nb", 4).is_ok());
        assert_eq!(code(multiline_text("a\r\nb", 3)), "too_long");
    }

    // ---- email ----

    #[test]
    fn email_accepts_and_lowercases() {
        assert_eq!(email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        assert_eq!(email("first.last+tag@sub.example.org").unwrap(), "first.last+tag@sub.example.org");
        assert_eq!(email("JOSÉ@Example.com").unwrap(), "josé@example.com");
    }

    #[test]
    fn email_refusals() {
        assert_eq!(code(email("")), "empty");
        assert_eq!(code(email("  ")), "empty");
        for bad in [
            "plainaddress",
            "@example.com",
            "ada@",
            "ada@@example.com",
            "ada@example..com",
            "ada@localhost",
            "Ada <ada@example.com>",
            "ada@[127.0.0.1]",
            "ada lovelace@example.com",
            "\"ada\u{202E}\"@example.com",
            "ada@exa\u{200B}mple.com",
        ] {
            assert_eq!(code(email(bad)), "invalid_email", "{bad:?}");
        }
    }

    #[test]
    fn email_length_boundary() {
        // 64-char local part, '@', then labels of 63 + 63 + n characters and ".com".
        let make = |total: usize| {
            let n = total - 64 - 1 - (63 + 1) * 2 - 4;
            format!("{}@{}.{}.{}.com", "a".repeat(64), "b".repeat(63), "c".repeat(63), "d".repeat(n))
        };
        let at = make(254);
        assert_eq!(at.chars().count(), 254);
        assert_eq!(email(&at).unwrap(), at);
        let over = make(255);
        assert_eq!(over.chars().count(), 255);
        assert_eq!(code(email(&over)), "too_long");
    }

    // ---- phone ----

    #[test]
    fn phone_accepts_e164() {
        assert_eq!(phone(" +447911123456 ").unwrap(), "+447911123456");
        assert_eq!(phone("+12345678").unwrap(), "+12345678"); // 8 digits
        assert_eq!(phone("+123456789012345").unwrap(), "+123456789012345"); // 15 digits
    }

    #[test]
    fn phone_refusals() {
        assert_eq!(code(phone("")), "empty");
        for bad in [
            "+1234567",          // 7 digits
            "+1234567890123456", // 16 digits
            "447911123456",      // no '+'
            "+44 7911 123456",   // spaces
            "+44-7911-123456",
            "++447911123456",
            "+",
            "+４４７９１１１２３４５６", // full-width digits
            "+447911123456x",
        ] {
            let e = phone(bad).unwrap_err();
            assert_eq!(e.code, "invalid_phone", "{bad:?}");
            assert_eq!(e.message, "must be an E.164 number: + then 8 to 15 digits");
        }
    }

    // ---- web_url ----

    #[test]
    fn url_accepts_http_and_https_as_given() {
        assert_eq!(
            web_url("  https://example.com/a/b?x=1#frag ").unwrap(),
            "https://example.com/a/b?x=1#frag"
        );
        assert_eq!(web_url("http://example.com").unwrap(), "http://example.com");
        // Not re-serialised (the parser would add a trailing slash and lowercase).
        assert_eq!(web_url("HTTPS://Example.COM").unwrap(), "HTTPS://Example.COM");
        assert!(web_url("http://[::1]:8080/x").is_ok());
        assert!(web_url("https://例え.jp/パス").is_ok());
    }

    #[test]
    fn url_refusals() {
        assert_eq!(code(web_url("  ")), "empty");
        for bad in [
            "ftp://example.com/file",
            "/relative/path",
            "example.com",
            "//example.com/x",
            "javascript:alert(1)",
            "data:text/html,hi",
            "mailto:ada@example.com",
            "http://",
            "https:///path",
            "http:example.com",
            "https://exa mple.com",
            "https://example.com/\u{202E}x",
            "https://exa\nmple.com",
            "https:\\\\example.com",
            "http://exa%mple.com",
        ] {
            assert_eq!(code(web_url(bad)), "invalid_url", "{bad:?}");
        }
    }

    #[test]
    fn url_length_boundary() {
        let base = "https://example.com/";
        let at = format!("{base}{}", "a".repeat(2048 - base.len()));
        assert_eq!(at.chars().count(), 2048);
        assert!(web_url(&at).is_ok());
        let over = format!("{at}a");
        assert_eq!(code(web_url(&over)), "too_long");
    }

    // ---- birth_date ----

    #[test]
    fn birth_date_accepts() {
        let today = d(2026, 3, 15);
        assert_eq!(birth_date(" 1990-01-05 ", today).unwrap(), d(1990, 1, 5));
        // Exactly 13 today.
        assert_eq!(birth_date("2013-03-15", today).unwrap(), d(2013, 3, 15));
        // Exactly 130 today.
        assert_eq!(birth_date("1896-03-15", today).unwrap(), d(1896, 3, 15));
        // 130 and 364 days.
        assert!(birth_date("1895-03-16", today).is_ok());
    }

    #[test]
    fn birth_date_age_boundaries() {
        let today = d(2026, 3, 15);
        // One day short of 13.
        assert_eq!(code(birth_date("2013-03-16", today)), "age_out_of_range");
        // 131 years.
        assert_eq!(code(birth_date("1895-03-15", today)), "age_out_of_range");
        assert_eq!(code(birth_date("1800-01-01", today)), "age_out_of_range");
        // Future and today.
        assert_eq!(code(birth_date("2030-01-01", today)), "age_out_of_range");
        assert_eq!(code(birth_date("2026-03-15", today)), "age_out_of_range");
        let e = birth_date("2020-01-01", today).unwrap_err();
        assert_eq!(e.message, "age must be between 13 and 130 years");
    }

    #[test]
    fn birth_date_leap_day() {
        let born = "2012-02-29";
        // 2025 is not a leap year: 13th birthday counts from 1 March.
        assert_eq!(code(birth_date(born, d(2025, 2, 28))), "age_out_of_range");
        assert!(birth_date(born, d(2025, 3, 1)).is_ok());
        // Leap year: on the day itself.
        assert_eq!(code(birth_date("2008-02-29", d(2021, 2, 28))), "age_out_of_range");
        assert!(birth_date("2000-02-29", d(2013, 2, 28)).is_err());
        assert!(birth_date("2000-02-29", d(2013, 3, 1)).is_ok());
        assert!(birth_date("2011-02-28", d(2024, 2, 28)).is_ok());
    }

    #[test]
    fn birth_date_format_refusals() {
        let today = d(2026, 3, 15);
        assert_eq!(code(birth_date("", today)), "empty");
        for bad in [
            "2026-02-30",
            "1990-02-29",
            "1990-13-01",
            "1990-00-10",
            "1990-01-00",
            "1990-1-5",
            "90-01-05",
            "1990/01/05",
            "05-01-1990",
            "1990-01-05T00:00:00",
            "+1990-01-05",
            "19900105",
            "１９９０-01-05",
            "1990-01-5 ",
        ] {
            assert_eq!(code(birth_date(bad, today)), "invalid_date", "{bad:?}");
        }
    }

    // ---- country ----

    #[test]
    fn country_accepts_any_case() {
        assert_eq!(country("GB").unwrap(), "GB");
        assert_eq!(country(" gb ").unwrap(), "GB");
        assert_eq!(country("Fr").unwrap(), "FR");
        assert_eq!(country("ss").unwrap(), "SS");
    }

    #[test]
    fn country_refusals() {
        assert_eq!(code(country(" ")), "empty");
        for bad in ["XX", "GBR", "G", "UK", "ZZ", "AA", "1A", "G B", "ıt", "ＧＢ"] {
            assert_eq!(code(country(bad)), "invalid_country", "{bad:?}");
        }
    }

    // ---- language ----

    #[test]
    fn language_accepts_and_canonicalises() {
        for (input, expected) in [
            ("en", "en"),
            ("EN", "en"),
            ("en-GB", "en-GB"),
            ("EN-gb", "en-GB"),
            ("pt-BR", "pt-BR"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("ZH-HANT-TW", "zh-Hant-TW"),
            (" es-419 ", "es-419"),
            ("sl-ROZAJ-biske", "sl-rozaj-biske"),
            ("de-CH-1901", "de-CH-1901"),
            ("en-US-U-CA-GREGORY", "en-US-u-ca-gregory"),
            ("en-X-Private", "en-x-private"),
            ("X-WHATEVER", "x-whatever"),
            ("I-KLINGON", "i-klingon"),
            ("zh-yue-HK", "zh-yue-HK"),
        ] {
            assert_eq!(language(input).unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn language_refusals() {
        assert_eq!(code(language("")), "empty");
        assert_eq!(code(language("   ")), "empty");
        for bad in [
            "en_GB",
            "e",
            "en-",
            "-en",
            "en--GB",
            "englishlanguage",
            "en-GB-x",
            "x-",
            "x--a",
            "x-abcdefghi",
            "en-a",
            "en-a-x-b",
            "en GB",
            "1en",
            "en-ΓΒ",
            "en-\u{200B}GB",
        ] {
            assert_eq!(code(language(bad)), "invalid_language", "{bad:?}");
        }
    }

    // ---- timezone ----

    #[test]
    fn timezone_accepts_and_canonicalises() {
        assert_eq!(timezone("Europe/London").unwrap(), "Europe/London");
        assert_eq!(timezone(" Europe/London ").unwrap(), "Europe/London");
        assert_eq!(timezone("europe/london").unwrap(), "Europe/London");
        assert_eq!(timezone("AMERICA/ARGENTINA/BUENOS_AIRES").unwrap(), "America/Argentina/Buenos_Aires");
        assert_eq!(timezone("UTC").unwrap(), "UTC");
        assert_eq!(timezone("utc").unwrap(), "UTC");
        assert_eq!(timezone("Asia/Kolkata").unwrap(), "Asia/Kolkata");
    }

    #[test]
    fn timezone_refusals() {
        assert_eq!(code(timezone("")), "empty");
        for bad in ["Mars/Olympus", "Europe/Londn", "Europe London", "+01:00", "BST", "Europe/London/"] {
            assert_eq!(code(timezone(bad)), "invalid_timezone", "{bad:?}");
        }
    }

    // ---- currency ----

    #[test]
    fn currency_accepts_active_codes() {
        assert_eq!(currency("GBP").unwrap(), "GBP");
        assert_eq!(currency(" gbp ").unwrap(), "GBP");
        assert_eq!(currency("eUr").unwrap(), "EUR");
        assert_eq!(currency("usd").unwrap(), "USD");
        assert_eq!(currency("JPY").unwrap(), "JPY");
    }

    #[test]
    fn currency_refusals() {
        assert_eq!(code(currency("")), "empty");
        for bad in [
            "XXX", "ABC", "XAU", "XAG", "XPD", "XPT", "XTS", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA",
            "BOV", "USN", "CLF", "HRK", "GB", "GBPP", "£", "G B",
        ] {
            assert_eq!(code(currency(bad)), "invalid_currency", "{bad:?}");
        }
    }

    // ---- tax_id ----

    #[test]
    fn tax_id_accepts_and_uppercases() {
        assert_eq!(tax_id("gb-123").unwrap(), "GB-123");
        assert_eq!(tax_id("  GB123456789 ").unwrap(), "GB123456789");
        assert_eq!(tax_id("abcd").unwrap(), "ABCD"); // 4 chars
        let at = "A".repeat(32);
        assert_eq!(tax_id(&at).unwrap(), at); // 32 chars
    }

    #[test]
    fn tax_id_refusals() {
        assert_eq!(code(tax_id("")), "empty");
        for bad in ["ab", "abc", "AB_12", "AB 123", "AB.123", "straße1", "ÄBC123"] {
            assert_eq!(code(tax_id(bad)), "invalid_tax_id", "{bad:?}");
        }
        assert_eq!(code(tax_id(&"A".repeat(33))), "invalid_tax_id");
    }

    // ---- one_of ----

    const THEMES: &[&str] = &["light", "dark", "system"];

    #[test]
    fn one_of_accepts_case_insensitively() {
        assert_eq!(one_of("dark", THEMES).unwrap(), "dark");
        assert_eq!(one_of("  Light ", THEMES).unwrap(), "light");
        assert_eq!(one_of("SYSTEM", THEMES).unwrap(), "system");
    }

    #[test]
    fn one_of_refusals() {
        assert_eq!(code(one_of("", THEMES)), "empty");
        let e = one_of("blue", THEMES).unwrap_err();
        assert_eq!(e.code, "invalid_choice");
        assert_eq!(e.message, "must be one of: light, dark, system");
        assert_eq!(code(one_of("dar k", THEMES)), "invalid_choice");
        let vis: &[&'static str] = &["public", "contacts", "private"];
        assert_eq!(one_of("Contacts", vis).unwrap(), "contacts");
        let e = one_of("friends", vis).unwrap_err();
        assert_eq!(e.code, "invalid_choice");
        assert_eq!(e.message, "must be one of: public, contacts, private");
    }
}
