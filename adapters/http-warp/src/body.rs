//! The profile body, with the serialised profile part memoised per cached snapshot.
//!
//! Serialising the whole profile (timestamps formatted by chrono) was the largest cost
//! of a cached read. The profile part only changes when the core hands out a new
//! snapshot, and cached reads hand out the same `Arc` again, so its JSON is kept next to
//! that `Arc` and only the small rewards part is serialised per request.
//!
//! The output is byte-for-byte what `ProfileView::to_json` produces (a test holds it to
//! that). This belongs in the core — `ProfileSnapshot::new` already serialises the
//! profile to fingerprint it and throws the bytes away — and can go once the core keeps
//! them.

use std::sync::{Arc, Mutex, PoisonError};

use profile_core::domain::{ProfileSnapshot, ProfileView};

/// Slots of the direct-mapped memo; a collision only costs a re-serialisation.
const SLOTS: usize = 1024;

struct Entry {
    snapshot: Arc<ProfileSnapshot>,
    json: Arc<[u8]>,
}

/// Serialised profile parts, one slot per `user_id % SLOTS`.
pub(crate) struct BodyMemo {
    slots: Box<[Mutex<Option<Entry>>]>,
}

impl BodyMemo {
    pub(crate) fn new() -> Self {
        Self { slots: (0..SLOTS).map(|_| Mutex::new(None)).collect() }
    }

    /// The document of SPEC §4 for `view`.
    pub(crate) fn render(&self, view: &ProfileView) -> Vec<u8> {
        let profile = self.profile_json(&view.snapshot);
        let Some(open) = profile.strip_suffix(b"}") else {
            return view.to_json();
        };
        let mut out = Vec::with_capacity(profile.len() + 128);
        out.extend_from_slice(open);
        out.extend_from_slice(b",\"rewards\":");
        if serde_json::to_writer(&mut out, &view.rewards).is_err() {
            return view.to_json();
        }
        out.push(b'}');
        out
    }

    fn profile_json(&self, snapshot: &Arc<ProfileSnapshot>) -> Arc<[u8]> {
        let slot = &self.slots[snapshot.profile.user_id.unsigned_abs() as usize % SLOTS];
        if let Some(e) = slot.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && Arc::ptr_eq(&e.snapshot, snapshot)
        {
            return e.json.clone();
        }
        // Serialised outside the lock; a racing writer of the same slot just wins.
        let json: Arc<[u8]> = serde_json::to_vec(&snapshot.profile).unwrap_or_default().into();
        *slot.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Entry { snapshot: snapshot.clone(), json: json.clone() });
        json
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use profile_core::domain::{
        AccountSnapshot, AccountStatus, OrderStats, Profile, ProfileRecord, Rewards, RewardsSnapshot,
        RewardsStatus,
    };

    use super::*;

    fn view(user: i64, city: Option<&str>, rewards: Rewards) -> ProfileView {
        let account = AccountSnapshot {
            id: user,
            email: format!("u{user}@example.com"),
            username: format!("u\"{user}\u{1F600}"),
            status: AccountStatus::Active,
            created_at: Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap(),
            last_login_at: Some(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()),
            login_count: 5,
            orders: OrderStats::default(),
        };
        let mut record = ProfileRecord::new_default(user);
        record.fields.personal.city = city.map(str::to_owned);
        ProfileView { snapshot: ProfileSnapshot::new(Profile::assemble(&account, &record)), rewards }
    }

    fn live() -> Rewards {
        let snap = RewardsSnapshot {
            balance: Some(profile_core::domain::RewardsBalance { points: 7, tier: Some("gold".into()) }),
            fetched_at: Utc::now(),
        };
        Rewards::from_snapshot(&snap, RewardsStatus::Live)
    }

    #[test]
    fn renders_exactly_what_the_core_serialises() {
        let memo = BodyMemo::new();
        for v in
            [view(1, None, Rewards::unavailable()), view(2, Some("Oslo"), live()), view(-3, Some(""), live())]
        {
            assert_eq!(memo.render(&v), v.to_json());
            // The memoised path too.
            assert_eq!(memo.render(&v), v.to_json());
        }
    }

    #[test]
    fn a_new_snapshot_is_not_served_from_the_memo() {
        let memo = BodyMemo::new();
        let old = view(1, Some("Oslo"), live());
        assert_eq!(memo.render(&old), old.to_json());
        let new = view(1, Some("Bergen"), old.rewards.clone());
        assert_eq!(memo.render(&new), new.to_json());
        // Same slot, other user.
        let other = view(1 + SLOTS as i64, Some("Oslo"), live());
        assert_eq!(memo.render(&other), other.to_json());
        assert_eq!(memo.render(&new), new.to_json());
    }
}
