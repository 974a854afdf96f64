//! The core's profile as the proto `Profile`: the same fields and values as the JSON of
//! SPEC §4, with times as `Timestamp` and the etag bare.

use chrono::{DateTime, Utc};
use profile_core::domain::{ProfileView, RewardsStatus, Theme, Visibility};
use prost_types::Timestamp;

use crate::pb;

/// A time as a `Timestamp` (the core keeps microseconds, so nothing is lost).
pub(crate) fn timestamp(t: DateTime<Utc>) -> Timestamp {
    // `timestamp_subsec_nanos` is below 2e9 (leap seconds), well within i32.
    Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

fn theme(t: Theme) -> &'static str {
    match t {
        Theme::Light => "light",
        Theme::Dark => "dark",
        Theme::System => "system",
    }
}

fn visibility(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Contacts => "contacts",
        Visibility::Private => "private",
    }
}

fn rewards_status(s: RewardsStatus) -> pb::RewardsStatus {
    match s {
        RewardsStatus::Live => pb::RewardsStatus::Live,
        RewardsStatus::Cached => pb::RewardsStatus::Cached,
        RewardsStatus::Stale => pb::RewardsStatus::Stale,
        RewardsStatus::Unavailable => pb::RewardsStatus::Unavailable,
    }
}

/// The complete profile message, `etag` included.
pub(crate) fn profile(view: &ProfileView) -> pb::Profile {
    let p = view.profile();
    let pe = &p.personal;
    let pr = &p.preferences;
    let st = &p.statistics;
    let b = &p.business;
    let r = &view.rewards;
    pb::Profile {
        user_id: p.user_id,
        version: p.version,
        created_at: Some(timestamp(p.created_at)),
        updated_at: p.updated_at.map(timestamp),
        personal: Some(pb::Personal {
            display_name: Some(pe.display_name.clone()),
            first_name: pe.first_name.clone(),
            last_name: pe.last_name.clone(),
            email: Some(pe.email.clone()),
            phone: pe.phone.clone(),
            avatar_url: pe.avatar_url.clone(),
            bio: pe.bio.clone(),
            birth_date: pe.birth_date.map(|d| d.format("%Y-%m-%d").to_string()),
            city: pe.city.clone(),
            country: pe.country.clone(),
        }),
        preferences: Some(pb::Preferences {
            language: Some(pr.language.clone()),
            timezone: Some(pr.timezone.clone()),
            theme: Some(theme(pr.theme).to_owned()),
            currency: Some(pr.currency.clone()),
            notifications: Some(pb::Notifications {
                email: Some(pr.notifications.email),
                sms: Some(pr.notifications.sms),
                push: Some(pr.notifications.push),
                marketing: Some(pr.notifications.marketing),
            }),
            privacy: Some(pb::Privacy {
                profile_visibility: Some(visibility(pr.privacy.profile_visibility).to_owned()),
                show_activity: Some(pr.privacy.show_activity),
            }),
        }),
        statistics: Some(pb::Statistics {
            member_since: Some(timestamp(st.member_since)),
            last_login_at: st.last_login_at.map(timestamp),
            login_count: st.login_count,
            orders_count: st.orders_count,
            total_spent_cents: st.total_spent_cents,
            last_order_at: st.last_order_at.map(timestamp),
            profile_completeness: i32::from(st.profile_completeness),
        }),
        business: Some(pb::Business {
            company_name: b.company_name.clone(),
            job_title: b.job_title.clone(),
            tax_id: b.tax_id.clone(),
            website: b.website.clone(),
            billing_address: b.billing_address.as_ref().map(|a| pb::BillingAddress {
                line1: Some(a.line1.clone()),
                line2: a.line2.clone(),
                city: Some(a.city.clone()),
                postal_code: a.postal_code.clone(),
                country: Some(a.country.clone()),
            }),
        }),
        rewards: Some(pb::Rewards {
            points: r.points,
            tier: r.tier.clone(),
            status: rewards_status(r.status) as i32,
            as_of: r.as_of.map(timestamp),
        }),
        etag: view.etag().as_str().to_owned(),
    }
}
