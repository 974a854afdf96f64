//! Accounts as the main database knows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A user's numeric id (the JWT `sub`).
pub type UserId = i64;

/// Lifecycle state of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    /// May use the service.
    Active,
    /// Exists but may not use the service (403).
    Suspended,
    /// Treated as absent (404).
    Deleted,
}

impl AccountStatus {
    /// The text stored in `users.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// Parses the text stored in `users.status`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// Figures over the user's `completed` orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderStats {
    /// Number of completed orders.
    pub orders_count: i64,
    /// Sum of their totals, in cents.
    pub total_spent_cents: i64,
    /// Creation time of the latest one.
    pub last_order_at: Option<DateTime<Utc>>,
}

/// An account with its order statistics, read in one go from the main database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSnapshot {
    /// Account id.
    pub id: UserId,
    /// E-mail address, lower-case as stored by this service.
    pub email: String,
    /// Username.
    pub username: String,
    /// Lifecycle state.
    pub status: AccountStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last login, if any.
    pub last_login_at: Option<DateTime<Utc>>,
    /// Number of logins.
    pub login_count: i64,
    /// Completed-order figures.
    pub orders: OrderStats,
}
