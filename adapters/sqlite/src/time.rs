//! Timestamps as stored: RFC 3339 UTC text.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// `2026-11-20T08:31:12Z`, with as many fraction digits as the value needs, so a value
/// read back is equal to the one written (the profile cache and the database must agree).
pub(crate) fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Any RFC 3339 timestamp; also SQLite's own `YYYY-MM-DD HH:MM:SS[.fff]` (taken as UTC),
/// which other applications writing the main database may use.
pub(crate) fn parse(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn round_trips_and_reads_other_spellings() {
        let t = Utc.with_ymd_and_hms(2026, 11, 20, 8, 31, 12).unwrap();
        assert_eq!(format(&t), "2026-11-20T08:31:12Z");
        let precise = t + chrono::TimeDelta::nanoseconds(123_456_789);
        assert_eq!(parse(&format(&precise)), Some(precise));
        for s in [
            "2026-11-20T08:31:12Z",
            "2026-11-20T08:31:12+00:00",
            "2026-11-20T09:31:12+01:00",
            "2026-11-20t08:31:12z",
            "2026-11-20 08:31:12",
            "2026-11-20T08:31:12",
        ] {
            assert_eq!(parse(s), Some(t), "{s}");
        }
        assert_eq!(parse("2026-11-20T08:31:12.5Z"), Some(t + chrono::TimeDelta::milliseconds(500)));
        assert_eq!(parse("yesterday"), None);
    }
}
