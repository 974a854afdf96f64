//! The storage format of shared-cache entries: explicit, versioned, and independent of
//! the domain's own serde shape, so renaming a field in the core cannot break (or
//! silently misread) entries other instances wrote. A change of layout bumps
//! [`FORMAT`]; entries of another format read as misses.

use chrono::{DateTime, NaiveDate, Utc};
use profile_core::domain::{
    AccountSnapshot, AccountStatus, BillingAddress, Business, Notifications, OrderStats, Personal,
    Preferences, Privacy, Profile, RewardsBalance, RewardsSnapshot, Statistics, Theme, Visibility,
};
use serde::{Deserialize, Serialize};

/// The layout version written in every entry.
pub const FORMAT: u32 = 1;

/// A profile entry: the format, when it was read from the databases (ms since the
/// epoch), the profile, and the account's username when the writer knew the account
/// (absent in entries of older writers, ignored by them: same format).
#[derive(Serialize, Deserialize)]
struct StoredProfile {
    f: u32,
    read_at_ms: i64,
    p: ProfileV1,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ProfileV1 {
    user_id: i64,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    display_name: String,
    first_name: Option<String>,
    last_name: Option<String>,
    email: String,
    phone: Option<String>,
    avatar_url: Option<String>,
    bio: Option<String>,
    birth_date: Option<NaiveDate>,
    city: Option<String>,
    country: Option<String>,
    language: String,
    timezone: String,
    theme: String,
    currency: String,
    notify_email: bool,
    notify_sms: bool,
    notify_push: bool,
    notify_marketing: bool,
    visibility: String,
    show_activity: bool,
    member_since: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
    login_count: i64,
    orders_count: i64,
    total_spent_cents: i64,
    last_order_at: Option<DateTime<Utc>>,
    completeness: u8,
    company_name: Option<String>,
    job_title: Option<String>,
    tax_id: Option<String>,
    website: Option<String>,
    billing: Option<AddressV1>,
}

#[derive(Serialize, Deserialize)]
struct AddressV1 {
    line1: String,
    line2: Option<String>,
    city: String,
    postal_code: Option<String>,
    country: String,
}

/// Encodes a profile read from the databases at `read_at_ms`, with the username of the
/// account it shows when known.
pub fn encode_profile(profile: &Profile, username: Option<&str>, read_at_ms: i64) -> Vec<u8> {
    let p = profile;
    let (per, pre, st, b) = (&p.personal, &p.preferences, &p.statistics, &p.business);
    let stored = StoredProfile {
        f: FORMAT,
        read_at_ms,
        username: username.map(str::to_owned),
        p: ProfileV1 {
            user_id: p.user_id,
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
            display_name: per.display_name.clone(),
            first_name: per.first_name.clone(),
            last_name: per.last_name.clone(),
            email: per.email.clone(),
            phone: per.phone.clone(),
            avatar_url: per.avatar_url.clone(),
            bio: per.bio.clone(),
            birth_date: per.birth_date,
            city: per.city.clone(),
            country: per.country.clone(),
            language: pre.language.clone(),
            timezone: pre.timezone.clone(),
            theme: pre.theme.name().to_owned(),
            currency: pre.currency.clone(),
            notify_email: pre.notifications.email,
            notify_sms: pre.notifications.sms,
            notify_push: pre.notifications.push,
            notify_marketing: pre.notifications.marketing,
            visibility: pre.privacy.profile_visibility.name().to_owned(),
            show_activity: pre.privacy.show_activity,
            member_since: st.member_since,
            last_login_at: st.last_login_at,
            login_count: st.login_count,
            orders_count: st.orders_count,
            total_spent_cents: st.total_spent_cents,
            last_order_at: st.last_order_at,
            completeness: st.profile_completeness,
            company_name: b.company_name.clone(),
            job_title: b.job_title.clone(),
            tax_id: b.tax_id.clone(),
            website: b.website.clone(),
            billing: b.billing_address.as_ref().map(|a| AddressV1 {
                line1: a.line1.clone(),
                line2: a.line2.clone(),
                city: a.city.clone(),
                postal_code: a.postal_code.clone(),
                country: a.country.clone(),
            }),
        },
    };
    // Plain data into a Vec: cannot fail.
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// Decodes a profile entry: the profile, the account it shows (when the entry names its
/// username: the rest is in the profile, and only active accounts' profiles are cached)
/// and when it was read from the databases; `None` for an entry of another format or
/// one that does not parse (a miss).
pub fn decode_profile(bytes: &[u8]) -> Option<(Profile, Option<AccountSnapshot>, i64)> {
    let stored: StoredProfile = serde_json::from_slice(bytes).ok()?;
    if stored.f != FORMAT {
        return None;
    }
    let p = stored.p;
    let profile = Profile {
        user_id: p.user_id,
        version: p.version,
        created_at: p.created_at,
        updated_at: p.updated_at,
        personal: Personal {
            display_name: p.display_name,
            first_name: p.first_name,
            last_name: p.last_name,
            email: p.email,
            phone: p.phone,
            avatar_url: p.avatar_url,
            bio: p.bio,
            birth_date: p.birth_date,
            city: p.city,
            country: p.country,
        },
        preferences: Preferences {
            language: p.language,
            timezone: p.timezone,
            theme: Theme::from_name(&p.theme)?,
            currency: p.currency,
            notifications: Notifications {
                email: p.notify_email,
                sms: p.notify_sms,
                push: p.notify_push,
                marketing: p.notify_marketing,
            },
            privacy: Privacy {
                profile_visibility: Visibility::from_name(&p.visibility)?,
                show_activity: p.show_activity,
            },
        },
        statistics: Statistics {
            member_since: p.member_since,
            last_login_at: p.last_login_at,
            login_count: p.login_count,
            orders_count: p.orders_count,
            total_spent_cents: p.total_spent_cents,
            last_order_at: p.last_order_at,
            profile_completeness: p.completeness,
        },
        business: Business {
            company_name: p.company_name,
            job_title: p.job_title,
            tax_id: p.tax_id,
            website: p.website,
            billing_address: p.billing.map(|a| BillingAddress {
                line1: a.line1,
                line2: a.line2,
                city: a.city,
                postal_code: a.postal_code,
                country: a.country,
            }),
        },
    };
    let account = stored.username.map(|username| AccountSnapshot {
        id: profile.user_id,
        email: profile.personal.email.clone(),
        username,
        status: AccountStatus::Active,
        created_at: profile.created_at,
        last_login_at: profile.statistics.last_login_at,
        login_count: profile.statistics.login_count,
        orders: OrderStats {
            orders_count: profile.statistics.orders_count,
            total_spent_cents: profile.statistics.total_spent_cents,
            last_order_at: profile.statistics.last_order_at,
        },
    });
    Some((profile, account, stored.read_at_ms))
}

/// A rewards entry.
#[derive(Serialize, Deserialize)]
struct StoredRewards {
    f: u32,
    /// `false`: the user has no rewards account.
    account: bool,
    points: i64,
    tier: Option<String>,
    fetched_at: DateTime<Utc>,
}

/// Encodes a rewards snapshot.
pub fn encode_rewards(s: &RewardsSnapshot) -> Vec<u8> {
    let stored = StoredRewards {
        f: FORMAT,
        account: s.balance.is_some(),
        points: s.balance.as_ref().map_or(0, |b| b.points),
        tier: s.balance.as_ref().and_then(|b| b.tier.clone()),
        fetched_at: s.fetched_at,
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// Decodes a rewards entry; `None` for another format or garbage.
pub fn decode_rewards(bytes: &[u8]) -> Option<RewardsSnapshot> {
    let s: StoredRewards = serde_json::from_slice(bytes).ok()?;
    if s.f != FORMAT {
        return None;
    }
    let balance = s.account.then_some(RewardsBalance { points: s.points, tier: s.tier });
    Some(RewardsSnapshot { balance, fetched_at: s.fetched_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use profile_core::domain::{ProfileRecord, ProfileSnapshot};

    fn account() -> AccountSnapshot {
        AccountSnapshot {
            id: 42,
            email: "ada@example.com".into(),
            username: "ada".into(),
            status: AccountStatus::Active,
            created_at: DateTime::from_timestamp(1_700_000_000, 123_000).unwrap_or_default(),
            last_login_at: None,
            login_count: 3,
            orders: OrderStats::default(),
        }
    }

    fn profile() -> Profile {
        let account = account();
        let mut record = ProfileRecord::new_default(42);
        record.version = 7;
        record.fields.personal.city = Some("London".into());
        record.fields.preferences.theme = Theme::Dark;
        record.fields.business.billing_address = Some(BillingAddress {
            line1: "1 Main St".into(),
            line2: None,
            city: "London".into(),
            postal_code: Some("NW1".into()),
            country: "GB".into(),
        });
        Profile::assemble(&account, &record)
    }

    #[test]
    fn a_profile_round_trips_to_the_same_json_and_fingerprint() {
        let original = ProfileSnapshot::new(profile());
        let bytes = encode_profile(&original.profile, None, 1234);
        let (back, account, read_at) = decode_profile(&bytes).expect("decodes");
        assert_eq!(read_at, 1234);
        assert_eq!(account, None, "no username written, no account read back");
        let again = ProfileSnapshot::new(back);
        assert_eq!(again.json(), original.json());
        assert_eq!(again.fingerprint, original.fingerprint);
    }

    #[test]
    fn the_account_a_profile_shows_round_trips_with_its_username() {
        let bytes = encode_profile(&profile(), Some("ada"), 1);
        let (_, back, _) = decode_profile(&bytes).expect("decodes");
        assert_eq!(back, Some(account()));
    }

    #[test]
    fn another_format_or_garbage_is_a_miss() {
        let bytes = encode_profile(&profile(), None, 1);
        let text = String::from_utf8(bytes).expect("utf-8").replacen("\"f\":1", "\"f\":2", 1);
        assert!(decode_profile(text.as_bytes()).is_none());
        assert!(decode_profile(b"not json").is_none());
        assert!(decode_rewards(b"{}").is_none());
    }

    #[test]
    fn rewards_round_trip_with_and_without_an_account() {
        let at = DateTime::from_timestamp(1_700_000_000, 5_000).unwrap_or_default();
        for balance in [None, Some(RewardsBalance { points: 5, tier: Some("gold".into()) })] {
            let s = RewardsSnapshot { balance, fetched_at: at };
            assert_eq!(decode_rewards(&encode_rewards(&s)), Some(s));
        }
    }
}
