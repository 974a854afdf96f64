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
    pub fn from_snapshot(snapshot: &RewardsSnapshot, status: RewardsStatus) -> Self {
        let (points, tier) = match &snapshot.balance {
            Some(b) => (b.points, b.tier.clone()),
            None => (0, None),
        };
        Self { points, tier, status, as_of: Some(snapshot.fetched_at) }
    }
}
