//! The rewards balance and how fresh it is.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// A balance as the rewards service reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardsBalance {
    /// Points.
    pub points: i64,
    /// Tier name, when the service reports one.
    pub tier: Option<String>,
}

/// What was last learnt from the rewards service about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardsSnapshot {
    /// `None` when the user has no rewards account (a 404).
    pub balance: Option<RewardsBalance>,
    /// When it was fetched.
    pub fetched_at: DateTime<Utc>,
}

/// How the served balance was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardsStatus {
    /// Fetched for this request.
    Live,
    /// Within the cache window.
    Cached,
    /// The service is failing; last known value, older than the window.
    Stale,
    /// No value known.
    Unavailable,
}

/// The `rewards` section of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewards {
    /// Points (0 when unknown or no account).
    pub points: i64,
    /// Tier, if any.
    pub tier: Option<String>,
    /// Freshness.
    pub status: RewardsStatus,
    /// When the balance was fetched; `None` when unavailable.
    pub as_of: Option<DateTime<Utc>>,
}

impl Rewards {
    /// Nothing is known.
    pub fn unavailable() -> Self {
        Self { points: 0, tier: None, status: RewardsStatus::Unavailable, as_of: None }
    }

    /// The section for a snapshot with the given status.
    pub fn from_snapshot(snapshot: RewardsSnapshot, status: RewardsStatus) -> Self {
        let (points, tier) = match snapshot.balance {
            Some(b) => (b.points, b.tier),
            None => (0, None),
        };
        Self { points, tier, status, as_of: Some(snapshot.fetched_at) }
    }

    /// Appends this section as JSON: the bytes `serde_json` writes for it, without its
    /// formatting machinery (this runs on every profile read; `as_of` through chrono's
    /// `Display` cost more than the rest of the answer's body).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"points\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.points).as_bytes());
        out.extend_from_slice(b",\"tier\":");
        match &self.tier {
            // Writing a string into a Vec cannot fail.
            Some(t) => drop(serde_json::to_writer(&mut *out, t)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.name().as_bytes());
        out.extend_from_slice(b"\",\"as_of\":");
        match &self.as_of {
            Some(t) => write_rfc3339(out, t),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
}

impl RewardsStatus {
    /// The name the JSON document uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Cached => "cached",
            Self::Stale => "stale",
            Self::Unavailable => "unavailable",
        }
    }
}

/// `t` as a quoted JSON string, as chrono serialises it: RFC 3339 in UTC with `Z`, and a
/// fraction of 0, 3, 6 or 9 digits, the fewest that hold it.
fn write_rfc3339(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let (year, nanos) = (t.year(), t.nanosecond());
    // Years of other than four digits, and leap seconds: chrono's own (never seen here).
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        drop(serde_json::to_writer(&mut *out, t));
        return;
    }
    fn digits(out: &mut Vec<u8>, n: u32, width: u32) {
        for i in (0..width).rev() {
            out.push(b'0' + (n / 10u32.pow(i) % 10) as u8);
        }
    }
    out.push(b'"');
    digits(out, year as u32, 4);
    for (sep, n) in
        [(b'-', t.month()), (b'-', t.day()), (b'T', t.hour()), (b':', t.minute()), (b':', t.second())]
    {
        out.push(sep);
        digits(out, n, 2);
    }
    if nanos != 0 {
        out.push(b'.');
        match nanos {
            n if n % 1_000_000 == 0 => digits(out, n / 1_000_000, 3),
            n if n % 1_000 == 0 => digits(out, n / 1_000, 6),
            n => digits(out, n, 9),
        }
    }
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// What `serde_json` writes for the section: the contract `write_json` keeps.
    fn by_serde(r: &Rewards) -> String {
        serde_json::to_string(r).unwrap()
    }

    fn by_hand(r: &Rewards) -> String {
        let mut out = Vec::new();
        r.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_section_is_written_as_serde_writes_it() {
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
        let tiers = [None, Some("gold".to_owned()), Some("gold \"plus\"\\\n\u{7f}é".to_owned())];
        let statuses =
            [RewardsStatus::Live, RewardsStatus::Cached, RewardsStatus::Stale, RewardsStatus::Unavailable];
        for (i, t) in times.iter().enumerate() {
            let r = Rewards {
                points: [0, 1250, -3, i64::MAX, i64::MIN][i % 5],
                tier: tiers[i % 3].clone(),
                status: statuses[i % 4],
                as_of: Some(*t),
            };
            assert_eq!(by_hand(&r), by_serde(&r), "{t:?}");
        }
        let none = Rewards::unavailable();
        assert_eq!(by_hand(&none), by_serde(&none));
    }
}
