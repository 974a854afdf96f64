//! Micro-benchmarks of the core's per-request work: validating a full patch, merging it
//! into a record, and serialising a profile (`cargo bench -p profile-core`).

#![allow(missing_docs)]

use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use profile_core::domain::{
    AccountSnapshot, AccountStatus, OrderStats, Profile, ProfileRecord, ProfileSnapshot, ProfileUpdate,
    ProfileView, Rewards, RewardsStatus,
};
use serde_json::json;
use std::hint::black_box;

fn full_patch() -> serde_json::Value {
    json!({
        "personal": {
            "display_name": "Ada L.", "first_name": "Ada", "last_name": "Lovelace",
            "email": "Ada@Example.com", "phone": "+442071234567",
            "avatar_url": "https://cdn.example.com/a/42.png", "bio": "Mathematician.\nWriter.",
            "birth_date": "1990-12-10", "city": "London", "country": "gb"
        },
        "preferences": {
            "language": "en-gb", "timezone": "Europe/London", "theme": "dark", "currency": "gbp",
            "notifications": { "email": true, "sms": false, "push": true, "marketing": false },
            "privacy": { "profile_visibility": "private", "show_activity": false }
        },
        "business": {
            "company_name": "Analytical Engines Ltd", "job_title": "Engineer", "tax_id": "gb123456789",
            "website": "https://example.com",
            "billing_address": { "line1": "1 Main St", "line2": null, "city": "London",
                                 "postal_code": "NW1 6XE", "country": "GB" }
        }
    })
}

fn account() -> AccountSnapshot {
    AccountSnapshot {
        id: 42,
        email: "ada@example.com".into(),
        username: "ada".into(),
        status: AccountStatus::Active,
        created_at: Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap(),
        last_login_at: Some(Utc.with_ymd_and_hms(2026, 11, 25, 19, 2, 0).unwrap()),
        login_count: 57,
        orders: OrderStats {
            orders_count: 12,
            total_spent_cents: 48950,
            last_order_at: Some(Utc.with_ymd_and_hms(2026, 11, 19, 12, 0, 0).unwrap()),
        },
    }
}

fn benches(c: &mut Criterion) {
    let today = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    let doc = full_patch();
    c.bench_function("validate full patch", |b| {
        b.iter(|| ProfileUpdate::parse(black_box(&doc), today).unwrap())
    });

    let update = ProfileUpdate::parse(&doc, today).unwrap();
    let record = ProfileRecord::new_default(42);
    c.bench_function("merge full patch", |b| {
        b.iter(|| update.apply(black_box(&record.fields), "ada@example.com", "ada").unwrap())
    });

    let (fields, _) = update.apply(&record.fields, "ada@example.com", "ada").unwrap();
    let full = ProfileRecord { fields, version: 3, ..record };
    let profile = Profile::assemble(&account(), &full);
    c.bench_function("snapshot (serialise + fingerprint) a profile", |b| {
        b.iter(|| ProfileSnapshot::new(black_box(profile.clone())))
    });
    let view = ProfileView {
        snapshot: ProfileSnapshot::new(profile),
        rewards: Rewards {
            points: 1250,
            tier: Some("gold".into()),
            status: RewardsStatus::Cached,
            as_of: Some(Utc.with_ymd_and_hms(2026, 11, 26, 5, 0, 0).unwrap()),
        },
    };
    c.bench_function("response body of a cached profile", |b| b.iter(|| black_box(&view).to_json()));
    c.bench_function("etag of a cached profile", |b| b.iter(|| black_box(&view).etag()));
}

criterion_group!(core, benches);
criterion_main!(core);
