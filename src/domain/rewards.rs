//! The rewards balance and how fresh it is.

use chrono::{DateTime, Utc};
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
            Some(t) => super::timetext::write_json(out, t),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let times = crate::domain::timetext::tests::times();
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
