//! Times and dates as the profile's JSON writes them, without the formatting machinery.
//!
//! chrono serialises a `DateTime<Utc>` through its `Display` (RFC 3339 with `Z`, and a
//! fraction of 0, 3, 6 or 9 digits, the fewest that hold it) and a `NaiveDate` as
//! `YYYY-MM-DD`, both handed to serde one character at a time. Every profile snapshot
//! (each update, each read the cache misses) writes five of them; here each is formatted
//! on the stack and handed over as one string, the same bytes. Years outside 0–9999 and
//! leap seconds, which these formats would write differently, go to chrono.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::{Serialize, Serializer};

/// The longest text written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LONGEST: usize = 30;

/// A time's or date's text, on the stack.
struct Text {
    bytes: [u8; LONGEST],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Self { bytes: [0; LONGEST], len: 0 }
    }

    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    fn digits(&mut self, n: u32, width: u32) {
        for i in (0..width).rev() {
            self.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn as_str(&self) -> &str {
        // Digits and ASCII separators only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

fn date(out: &mut Text, year: i32, month: u32, day: u32) {
    out.digits(year as u32, 4);
    out.push(b'-');
    out.digits(month, 2);
    out.push(b'-');
    out.digits(day, 2);
}

/// chrono's text of `t`, or `None` where this writer would differ from it.
fn time_text(t: &DateTime<Utc>) -> Option<Text> {
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = Text::new();
    date(&mut out, year, t.month(), t.day());
    for (sep, n) in [(b'T', t.hour()), (b':', t.minute()), (b':', t.second())] {
        out.push(sep);
        out.digits(n, 2);
    }
    if nanos != 0 {
        out.push(b'.');
        match nanos {
            n if n % 1_000_000 == 0 => out.digits(n / 1_000_000, 3),
            n if n % 1_000 == 0 => out.digits(n / 1_000, 6),
            n => out.digits(n, 9),
        }
    }
    out.push(b'Z');
    Some(out)
}

/// chrono's text of `d`, or `None` where this writer would differ from it.
fn date_text(d: &NaiveDate) -> Option<Text> {
    if !(0..=9999).contains(&d.year()) {
        return None;
    }
    let mut out = Text::new();
    date(&mut out, d.year(), d.month(), d.day());
    Some(out)
}

/// Appends `t` as a quoted JSON string, the bytes serde_json writes for it.
pub(crate) fn write_json(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    match time_text(t) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        // Writing a string into a Vec cannot fail.
        None => drop(serde_json::to_writer(&mut *out, t)),
    }
}

/// `serialize_with` for a `DateTime<Utc>`: the same text as its own `Serialize`.
pub(crate) fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match time_text(t) {
        Some(text) => s.serialize_str(text.as_str()),
        None => t.serialize(s),
    }
}

/// `serialize_with` for an `Option<DateTime<Utc>>`.
pub(crate) fn time_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

/// `serialize_with` for an `Option<NaiveDate>`.
pub(crate) fn date_opt<S: Serializer>(d: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => match date_text(d) {
            Some(text) => s.serialize_str(text.as_str()),
            None => d.serialize(s),
        },
        None => s.serialize_none(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    #[derive(Serialize)]
    struct Ours {
        #[serde(serialize_with = "time")]
        t: DateTime<Utc>,
        #[serde(serialize_with = "time_opt")]
        o: Option<DateTime<Utc>>,
        #[serde(serialize_with = "date_opt")]
        d: Option<NaiveDate>,
    }

    #[derive(Serialize)]
    struct Chronos {
        t: DateTime<Utc>,
        o: Option<DateTime<Utc>>,
        d: Option<NaiveDate>,
    }

    /// Times of every fraction width, the four-digit year's edges and beyond, and every
    /// day of a leap year and its neighbours.
    pub(crate) fn times() -> Vec<DateTime<Utc>> {
        let at = |secs: i64, nanos: u32| Utc.timestamp_opt(secs, nanos).unwrap();
        let mut times = vec![
            at(0, 0),
            at(1_796_181_150, 0),
            at(1_796_181_150, 120_000_000),
            at(1_796_181_150, 123_456_000),
            at(1_796_181_150, 123_456_789),
            at(1_796_181_150, 1),
            at(1_796_181_150, 100),
            at(1_796_181_150, 999_999_999),
            // 9999-12-31T23:59:59Z, the last four-digit year, and one past it.
            at(253_402_300_799, 5_000),
            at(253_402_300_800, 0),
            // Before the epoch, and before year 0.
            at(-1, 500_000_000),
            at(-62_198_755_200, 0),
        ];
        // Every day of a leap year and its neighbours, at varied times of day.
        let mut secs = 1_704_067_200; // 2024-01-01
        for i in 0..1200u64 {
            times.push(at(secs, ((i * 7_919_117) % 1_000_000_000) as u32));
            secs += 86_400 + 3_607;
        }
        times
    }

    #[test]
    fn the_text_is_chronos_own() {
        let mut dates = vec![
            NaiveDate::from_ymd_opt(0, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(-1, 12, 31).unwrap(),
        ];
        dates.extend(times().iter().map(DateTime::date_naive));
        for (i, t) in times().into_iter().enumerate() {
            let o = (i % 3 != 0).then_some(t);
            let d = (i % 4 != 0).then(|| dates[i % dates.len()]);
            let ours = serde_json::to_string(&Ours { t, o, d }).unwrap();
            let chronos = serde_json::to_string(&Chronos { t, o, d }).unwrap();
            assert_eq!(ours, chronos, "{t:?} {d:?}");
            let mut written = Vec::new();
            write_json(&mut written, &t);
            assert_eq!(written, serde_json::to_vec(&t).unwrap(), "{t:?}");
        }
    }
}
