//! GET: the complete representation of SPEC §4, defaults, statistics, access, ETag.

mod common;

use common::*;
use profile_core::ServiceError;
use profile_memory::Op;
use serde_json::{Value, json};

/// The key tree of SPEC §4; leaves are placeholders, only the keys matter.
fn contract_keys() -> Value {
    json!({
        "user_id": 0, "version": 0, "created_at": 0, "updated_at": 0,
        "personal": {
            "display_name": 0, "first_name": 0, "last_name": 0, "email": 0, "phone": 0,
            "avatar_url": 0, "bio": 0, "birth_date": 0, "city": 0, "country": 0
        },
        "preferences": {
            "language": 0, "timezone": 0, "theme": 0, "currency": 0,
            "notifications": { "email": 0, "sms": 0, "push": 0, "marketing": 0 },
            "privacy": { "profile_visibility": 0, "show_activity": 0 }
        },
        "statistics": {
            "member_since": 0, "last_login_at": 0, "login_count": 0, "orders_count": 0,
            "total_spent_cents": 0, "last_order_at": 0, "profile_completeness": 0
        },
        "business": {
            "company_name": 0, "job_title": 0, "tax_id": 0, "website": 0,
            "billing_address": { "line1": 0, "line2": 0, "city": 0, "postal_code": 0, "country": 0 }
        },
        "rewards": { "points": 0, "tier": 0, "status": 0, "as_of": 0 }
    })
}

/// Asserts `actual` has exactly the keys of `expected` at every level; an expected object
/// may be `null` in `actual` only at a path listed in `nullable_objects`.
fn assert_keys(expected: &Value, actual: &Value, path: &str, nullable_objects: &[&str]) {
    let Value::Object(exp) = expected else { return };
    if actual.is_null() && nullable_objects.contains(&path) {
        return;
    }
    let act = actual.as_object().unwrap_or_else(|| panic!("{path:?} is not an object: {actual}"));
    let mut want: Vec<_> = exp.keys().collect();
    let mut got: Vec<_> = act.keys().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "keys of {path:?}");
    for (k, v) in exp {
        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        assert_keys(v, &act[k], &p, nullable_objects);
    }
}

fn at<'a>(doc: &'a Value, dotted: &str) -> &'a Value {
    dotted.split('.').fold(doc, |v, k| v.get(k).unwrap_or_else(|| panic!("missing key {dotted}")))
}

#[tokio::test]
async fn never_edited_profile_is_complete_with_defaults_and_account_statistics() {
    let app = App::new();
    let read = app.get(ALICE).await;
    let doc = json(&read);

    assert_eq!(doc["user_id"], 1);
    assert_eq!(doc["version"], 0);
    assert_eq!(doc["created_at"], "2026-01-05T10:00:00Z");
    assert_eq!(doc["updated_at"], Value::Null);
    assert_eq!(doc["personal"]["display_name"], "alice");
    assert_eq!(doc["personal"]["email"], ALICE_EMAIL);
    assert_eq!(
        doc["preferences"],
        json!({
            "language": "en", "timezone": "UTC", "theme": "system", "currency": "USD",
            "notifications": { "email": true, "sms": false, "push": true, "marketing": false },
            "privacy": { "profile_visibility": "private", "show_activity": false }
        })
    );
    assert_eq!(
        doc["statistics"],
        json!({
            "member_since": "2026-01-05T10:00:00Z", "last_login_at": "2026-11-25T19:02:00Z",
            "login_count": 57, "orders_count": 12, "total_spent_cents": 48950,
            "last_order_at": "2026-11-19T12:00:00Z",
            // Only display_name (the username) is set: floor(100 × 1 / 12).
            "profile_completeness": 8
        })
    );
}

#[tokio::test]
async fn json_has_every_contract_key_with_nulls_not_omitted() {
    let app = App::new();
    let doc = app.get_json(ALICE).await;
    assert_keys(&contract_keys(), &doc, "", &["business.billing_address"]);
    for path in [
        "updated_at",
        "personal.first_name",
        "personal.last_name",
        "personal.phone",
        "personal.avatar_url",
        "personal.bio",
        "personal.birth_date",
        "personal.city",
        "personal.country",
        "business.company_name",
        "business.job_title",
        "business.tax_id",
        "business.website",
        "business.billing_address",
    ] {
        assert_eq!(at(&doc, path), &Value::Null, "{path} must be present and null");
    }

    // A user with nothing known at all: statistics and rewards nulls are present too.
    app.rewards.fail_always(true);
    let bob = app.get_json(BOB).await;
    assert_keys(&contract_keys(), &bob, "", &["business.billing_address"]);
    for path in ["statistics.last_login_at", "statistics.last_order_at", "rewards.tier", "rewards.as_of"] {
        assert_eq!(at(&bob, path), &Value::Null, "{path} must be present and null");
    }
}

#[tokio::test]
async fn json_of_a_full_profile_has_the_billing_address_object_with_null_line2() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({
            "personal": { "first_name": "Ada", "birth_date": "1990-12-10" },
            "business": { "billing_address": { "line1": "1 Main St", "city": "London", "country": "GB" } }
        }),
    )
    .await;
    let doc = app.get_json(ALICE).await;
    // No nullable objects this time: billing_address must be a complete object.
    assert_keys(&contract_keys(), &doc, "", &[]);
    assert_eq!(doc["business"]["billing_address"]["line2"], Value::Null);
    assert_eq!(doc["business"]["billing_address"]["postal_code"], Value::Null);
    assert_eq!(doc["personal"]["birth_date"], "1990-12-10");
    assert_eq!(doc["updated_at"], "2026-11-26T05:00:00Z");
}

#[tokio::test]
async fn completeness_is_floor_of_set_fields_over_twelve() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({ "personal": { "first_name": "Ada", "last_name": "Lovelace", "phone": "+442071234567" } }),
    )
    .await;
    // display_name + 3 = 4 → 33.
    assert_eq!(app.get_json(ALICE).await["statistics"]["profile_completeness"], 33);

    // Fields outside the twelve do not count.
    app.patch_ok(
        ALICE,
        json!({
            "business": { "tax_id": "GB123456789",
                          "billing_address": { "line1": "1 Main St", "city": "London", "country": "GB" } },
            "preferences": { "theme": "dark" }
        }),
    )
    .await;
    assert_eq!(app.get_json(ALICE).await["statistics"]["profile_completeness"], 33);

    app.patch_ok(
        ALICE,
        json!({
            "personal": {
                "display_name": "Ada L.", "avatar_url": "https://cdn.example.com/a/1.png", "bio": "Hi",
                "birth_date": "1990-12-10", "city": "London", "country": "GB"
            },
            "business": { "company_name": "Analytical Engines Ltd", "job_title": "Engineer",
                          "website": "https://example.com" }
        }),
    )
    .await;
    assert_eq!(app.get_json(ALICE).await["statistics"]["profile_completeness"], 100);

    // Clearing two: 10 of 12 → 83.
    app.patch_ok(ALICE, json!({ "personal": { "bio": null }, "business": { "website": null } })).await;
    assert_eq!(app.get_json(ALICE).await["statistics"]["profile_completeness"], 83);
}

#[tokio::test]
async fn reading_writes_nothing() {
    let app = App::without_profile_cache();
    app.get(ALICE).await;
    app.get(ALICE).await;
    assert_eq!(app.record(ALICE), None, "a read must not create a profile record");
    assert_eq!(app.saves(), 0);
    assert_eq!(app.profiles.faults.calls(Op::Update), 0, "a read never enters the unit of work");
    assert_eq!(app.accounts.faults.calls(Op::SetEmail), 0);
    assert_eq!(app.get_json(ALICE).await["version"], 0);
}

#[tokio::test]
async fn suspended_account_is_refused() {
    let app = App::new();
    assert_eq!(app.service.get(SUSPENDED).await.unwrap_err(), ServiceError::AccountSuspended);
    let patched = app.patch(SUSPENDED, json!({ "personal": { "first_name": "X" } })).await;
    assert_eq!(patched.unwrap_err(), ServiceError::AccountSuspended);
    assert_eq!(app.record(SUSPENDED), None);
}

#[tokio::test]
async fn deleted_and_missing_accounts_are_not_found() {
    let app = App::new();
    for id in [DELETED, MISSING] {
        assert_eq!(app.service.get(id).await.unwrap_err(), ServiceError::AccountNotFound, "user {id}");
        let patched = app.patch(id, json!({ "personal": { "first_name": "X" } })).await;
        assert_eq!(patched.unwrap_err(), ServiceError::AccountNotFound, "user {id}");
        assert_eq!(app.record(id), None);
    }
}

#[tokio::test]
async fn statistics_follow_the_main_database_when_not_cached() {
    let app = App::without_profile_cache();
    app.get(ALICE).await;
    let mut account = app.accounts.get(ALICE).expect("alice");
    account.login_count = 58;
    account.orders.orders_count = 13;
    account.orders.total_spent_cents = 50000;
    app.accounts.insert(account);
    let stats = &app.get_json(ALICE).await["statistics"];
    assert_eq!(stats["login_count"], 58);
    assert_eq!(stats["orders_count"], 13);
    assert_eq!(stats["total_spent_cents"], 50000);
}

#[tokio::test]
async fn etag_is_strong_and_stable_across_reads() {
    for app in [App::new(), App::without_profile_cache()] {
        let a = app.get(ALICE).await.view.etag();
        let b = app.get(ALICE).await.view.etag();
        assert_eq!(a, b);
        assert!(!a.as_str().is_empty() && !a.as_str().contains('"'), "opaque, unquoted: {a}");
    }
}

#[tokio::test]
async fn etag_changes_after_a_change_and_matches_the_update_response() {
    let app = App::new();
    let before = app.get(ALICE).await.view.etag();
    let updated = app.patch_ok(ALICE, json!({ "personal": { "city": "London" } })).await.view.etag();
    let after = app.get(ALICE).await.view.etag();
    assert_ne!(before, after);
    assert_eq!(updated, after, "the PATCH response carries the ETag a GET then returns");

    // A change made through the main database (e-mail) changes it too.
    let app = App::without_profile_cache();
    let before = app.get(ALICE).await.view.etag();
    app.patch_ok(ALICE, json!({ "personal": { "email": "alice2@example.com" } })).await;
    assert_ne!(before, app.get(ALICE).await.view.etag());
}

#[tokio::test]
async fn etag_ignores_rewards_status_and_as_of_but_not_points() {
    let app = App::new();
    let live = app.get(ALICE).await;
    app.advance_s(5);
    let cached = app.get(ALICE).await;
    assert_eq!(json(&live)["rewards"]["status"], "live");
    assert_eq!(json(&cached)["rewards"]["status"], "cached");
    assert_eq!(live.view.etag(), cached.view.etag());

    // Past the window, fetched again (new as_of), same points: same ETag.
    app.advance_s(60);
    let live_again = app.get(ALICE).await;
    assert_eq!(json(&live_again)["rewards"]["status"], "live");
    assert_ne!(json(&live_again)["rewards"]["as_of"], json(&live)["rewards"]["as_of"]);
    assert_eq!(live.view.etag(), live_again.view.etag());

    // Failing service: stale, same points: same ETag.
    app.advance_s(60);
    app.rewards.fail_always(true);
    let stale = app.get(ALICE).await;
    assert_eq!(json(&stale)["rewards"]["status"], "stale");
    assert_eq!(live.view.etag(), stale.view.etag());

    // The points are data: a new balance changes the ETag.
    app.rewards.fail_always(false);
    app.rewards
        .set(ALICE, Some(profile_core::domain::RewardsBalance { points: 1300, tier: Some("gold".into()) }));
    app.advance_s(60);
    assert_ne!(live.view.etag(), app.get(ALICE).await.view.etag());
}
