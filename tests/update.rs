//! PATCH: merge-patch semantics, validation, versioning, If-Match, retries, cache.

mod common;

use common::*;
use std::sync::Arc;

use profile_core::ServiceError;
use profile_core::ports::StoreError;
use profile_memory::Op;
use serde_json::{Value, json};

#[tokio::test]
async fn absent_keys_leave_fields_untouched() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({
            "personal": { "first_name": "Ada", "last_name": "Byron", "phone": "+442071234567" },
            "preferences": { "theme": "dark" },
            "business": { "company_name": "AE Ltd" }
        }),
    )
    .await;
    let doc = json(&app.patch_ok(ALICE, json!({ "personal": { "last_name": "Lovelace" } })).await);
    assert_eq!(doc["personal"]["first_name"], "Ada");
    assert_eq!(doc["personal"]["last_name"], "Lovelace");
    assert_eq!(doc["personal"]["phone"], "+442071234567");
    assert_eq!(doc["preferences"]["theme"], "dark");
    assert_eq!(doc["business"]["company_name"], "AE Ltd");
}

#[tokio::test]
async fn null_clears_optional_fields() {
    let app = App::new();
    let personal = json!({
        "first_name": "Ada", "last_name": "Lovelace", "phone": "+442071234567",
        "avatar_url": "https://cdn.example.com/a.png", "bio": "Hi", "birth_date": "1990-12-10",
        "city": "London", "country": "GB"
    });
    let business = json!({
        "company_name": "AE Ltd", "job_title": "Engineer", "tax_id": "GB123456789",
        "website": "https://example.com"
    });
    app.patch_ok(ALICE, json!({ "personal": personal, "business": business })).await;

    let clear =
        |v: &Value| -> Value { v.as_object().unwrap().keys().map(|k| (k.clone(), Value::Null)).collect() };
    let doc = json(
        &app.patch_ok(ALICE, json!({ "personal": clear(&personal), "business": clear(&business) })).await,
    );
    for k in personal.as_object().unwrap().keys() {
        assert_eq!(doc["personal"][k], Value::Null, "personal.{k}");
    }
    for k in business.as_object().unwrap().keys() {
        assert_eq!(doc["business"][k], Value::Null, "business.{k}");
    }
    assert_eq!(doc["personal"]["display_name"], "alice", "display_name falls back to the username");
    let got = app.get_json(ALICE).await;
    assert_eq!(without_freshness(&doc), without_freshness(&got), "a GET shows the cleared fields");
}

#[tokio::test]
async fn null_on_a_preference_resets_it_to_its_default() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({ "preferences": {
            "language": "en-GB", "timezone": "Europe/London", "theme": "dark", "currency": "GBP",
            "notifications": { "email": false, "sms": true, "push": false, "marketing": true },
            "privacy": { "profile_visibility": "public", "show_activity": true }
        }}),
    )
    .await;

    let doc = json(
        &app.patch_ok(
            ALICE,
            json!({ "preferences": { "language": null, "timezone": null, "theme": null, "currency": null } }),
        )
        .await,
    );
    let p = &doc["preferences"];
    assert_eq!(
        (&p["language"], &p["timezone"], &p["theme"], &p["currency"]),
        (&json!("en"), &json!("UTC"), &json!("system"), &json!("USD"))
    );
    assert_eq!(p["notifications"], json!({ "email": false, "sms": true, "push": false, "marketing": true }));

    // A single notification key.
    let doc =
        json(&app.patch_ok(ALICE, json!({ "preferences": { "notifications": { "email": null } } })).await);
    assert_eq!(
        doc["preferences"]["notifications"],
        json!({ "email": true, "sms": true, "push": false, "marketing": true })
    );

    // One privacy key, then the whole object.
    let doc =
        json(&app.patch_ok(ALICE, json!({ "preferences": { "privacy": { "show_activity": null } } })).await);
    assert_eq!(
        doc["preferences"]["privacy"],
        json!({ "profile_visibility": "public", "show_activity": false })
    );
    let doc = json(&app.patch_ok(ALICE, json!({ "preferences": { "privacy": null } })).await);
    assert_eq!(
        doc["preferences"]["privacy"],
        json!({ "profile_visibility": "private", "show_activity": false })
    );

    // The whole notifications object.
    let doc = json(&app.patch_ok(ALICE, json!({ "preferences": { "notifications": null } })).await);
    assert_eq!(
        doc["preferences"]["notifications"],
        json!({ "email": true, "sms": false, "push": true, "marketing": false })
    );
}

#[tokio::test]
async fn nested_objects_merge_key_by_key() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({ "preferences": { "notifications": { "push": false }, "privacy": { "show_activity": true } } }),
    )
    .await;
    let doc = json(
        &app.patch_ok(
            ALICE,
            json!({ "preferences": { "notifications": { "sms": true }, "privacy": { "profile_visibility": "contacts" } } }),
        )
        .await,
    );
    assert_eq!(
        doc["preferences"]["notifications"],
        json!({ "email": true, "sms": true, "push": false, "marketing": false })
    );
    assert_eq!(
        doc["preferences"]["privacy"],
        json!({ "profile_visibility": "contacts", "show_activity": true })
    );
}

#[tokio::test]
async fn billing_address_merges_into_the_existing_one() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({ "business": { "billing_address": {
            "line1": "1 Main St", "line2": "Flat 2", "city": "London", "postal_code": "NW1 6XE", "country": "gb"
        }}}),
    )
    .await;
    let doc = json(
        &app.patch_ok(
            ALICE,
            json!({ "business": { "billing_address": { "postal_code": "NW1 1AA", "line2": null } } }),
        )
        .await,
    );
    assert_eq!(
        doc["business"]["billing_address"],
        json!({ "line1": "1 Main St", "line2": null, "city": "London", "postal_code": "NW1 1AA", "country": "GB" })
    );
}

#[tokio::test]
async fn a_new_billing_address_must_have_line1_city_and_country() {
    let app = App::new();
    let r = app
        .patch(ALICE, json!({ "business": { "billing_address": { "line2": "Flat 2", "city": "London" } } }))
        .await;
    assert_eq!(
        invalid(r),
        errs(&[
            ("business.billing_address.line1", "required"),
            ("business.billing_address.country", "required")
        ])
    );
    assert_eq!(app.record(ALICE), None, "nothing written");
    assert_eq!(app.saves(), 0);

    // Nulling a required part of an existing address is refused the same way.
    app.patch_ok(
        ALICE,
        json!({ "business": { "billing_address": { "line1": "1 Main St", "city": "London", "country": "GB" } } }),
    )
    .await;
    let r = app.patch(ALICE, json!({ "business": { "billing_address": { "city": null } }, "personal": { "first_name": "Ada" } })).await;
    assert_eq!(invalid(r), errs(&[("business.billing_address.city", "required")]));
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["business"]["billing_address"]["city"], "London");
    assert_eq!(doc["personal"]["first_name"], Value::Null, "all or nothing");
    assert_eq!(doc["version"], 1);
}

#[tokio::test]
async fn billing_address_null_removes_it() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({ "business": { "billing_address": { "line1": "1 Main St", "city": "London", "country": "GB" } } }),
    )
    .await;
    let doc = json(&app.patch_ok(ALICE, json!({ "business": { "billing_address": null } })).await);
    assert_eq!(doc["business"]["billing_address"], Value::Null);
    assert_eq!(app.get_json(ALICE).await["business"]["billing_address"], Value::Null);
}

#[tokio::test]
async fn null_display_name_or_email_is_required() {
    let app = App::new();
    let r = app.patch(ALICE, json!({ "personal": { "display_name": null, "email": null } })).await;
    assert_eq!(invalid(r), errs(&[("personal.display_name", "required"), ("personal.email", "required")]));
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
    assert_eq!(app.get_json(ALICE).await["personal"]["display_name"], "alice");
}

#[tokio::test]
async fn read_only_keys_are_refused_by_name() {
    let app = App::new();
    let r = app
        .patch(
            ALICE,
            json!({
                "user_id": 2, "version": 9, "created_at": "2020-01-01T00:00:00Z", "updated_at": null,
                "statistics": { "login_count": 1000 }, "rewards": { "points": 1_000_000 }
            }),
        )
        .await;
    let fields: Vec<_> = invalid(r).into_iter().map(|(f, _)| f).collect();
    let mut want = vec!["user_id", "version", "created_at", "updated_at", "statistics", "rewards"];
    want.sort();
    assert_eq!(fields, want);
    assert_eq!(app.record(ALICE), None);
}

#[tokio::test]
async fn unknown_keys_are_refused_by_dotted_path() {
    let app = App::new();
    let r = app
        .patch(
            ALICE,
            json!({
                "nickname": "x",
                "personal": { "nickname": "Ada", "first_name": "Ada" },
                "preferences": { "font": "big", "notifications": { "pager": true }, "privacy": { "searchable": false } },
                "business": { "vat": "x", "billing_address": { "floor": "2", "line1": "1 Main St", "city": "L", "country": "GB" } }
            }),
        )
        .await;
    let fields: Vec<_> = invalid(r).into_iter().map(|(f, _)| f).collect();
    let mut want = vec![
        "nickname",
        "personal.nickname",
        "preferences.font",
        "preferences.notifications.pager",
        "preferences.privacy.searchable",
        "business.vat",
        "business.billing_address.floor",
    ];
    want.sort();
    assert_eq!(fields, want);
    assert_eq!(app.get_json(ALICE).await["personal"]["first_name"], Value::Null, "valid parts not applied");
}

#[tokio::test]
async fn every_invalid_field_is_reported_in_one_error_and_nothing_is_written() {
    let app = App::new();
    let r = app
        .patch(
            ALICE,
            json!({
                "version": 7,
                "personal": {
                    "first_name": "Ada",
                    "display_name": "   ",
                    "email": "not-an-email",
                    "phone": "12345",
                    "country": "XX",
                    "birth_date": "2020-01-01",
                    "nickname": "x"
                },
                "preferences": {
                    "theme": "neon", "timezone": "Mars/Base", "currency": "ABC",
                    "notifications": { "sms": "yes" }
                },
                "business": { "website": "ftp://example.com", "tax_id": "a" }
            }),
        )
        .await;
    let got = invalid(r);
    assert_eq!(got.len(), 13, "{got:?}");
    assert_eq!(
        got,
        errs(&[
            ("version", "read_only"),
            ("personal.display_name", "empty"),
            ("personal.email", "invalid_email"),
            ("personal.phone", "invalid_phone"),
            ("personal.country", "invalid_country"),
            ("personal.birth_date", "age_out_of_range"),
            ("personal.nickname", "unknown_field"),
            ("preferences.theme", "invalid_choice"),
            ("preferences.timezone", "invalid_timezone"),
            ("preferences.currency", "invalid_currency"),
            ("preferences.notifications.sms", "invalid_type"),
            ("business.website", "invalid_url"),
            ("business.tax_id", "invalid_tax_id"),
        ])
    );
    assert_eq!(app.record(ALICE), None);
    assert_eq!(app.saves(), 0);
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
    assert_eq!(app.get_json(ALICE).await["personal"]["first_name"], Value::Null);
}

#[tokio::test]
async fn type_errors_are_reported_with_the_others() {
    let app = App::new();
    let r = app
        .patch(
            ALICE,
            json!({
                "personal": { "first_name": 5, "phone": "nope" },
                "preferences": { "notifications": { "sms": "yes", "email": 1 }, "privacy": { "show_activity": "no" }, "theme": true },
                "business": "acme"
            }),
        )
        .await;
    assert_eq!(
        invalid(r),
        errs(&[
            ("personal.first_name", "invalid_type"),
            ("personal.phone", "invalid_phone"),
            ("preferences.notifications.sms", "invalid_type"),
            ("preferences.notifications.email", "invalid_type"),
            ("preferences.privacy.show_activity", "invalid_type"),
            ("preferences.theme", "invalid_type"),
            ("business", "invalid_type"),
        ])
    );
    assert_eq!(app.record(ALICE), None);
}

#[tokio::test]
async fn a_patch_that_is_not_an_object_is_invalid() {
    let app = App::new();
    for doc in [json!([]), json!("x"), json!(1), Value::Null] {
        assert!(matches!(app.patch(ALICE, doc.clone()).await, Err(ServiceError::Invalid(_))), "{doc}");
    }
    assert_eq!(app.record(ALICE), None);
}

#[tokio::test]
async fn billing_address_errors_are_reported_with_field_errors() {
    let app = App::new();
    let r = app
        .patch(ALICE, json!({ "personal": { "phone": "12" }, "business": { "billing_address": { "line2": "Flat 2" } } }))
        .await;
    assert_eq!(
        invalid(r),
        errs(&[
            ("personal.phone", "invalid_phone"),
            ("business.billing_address.line1", "required"),
            ("business.billing_address.city", "required"),
            ("business.billing_address.country", "required"),
        ])
    );
}

#[tokio::test]
async fn strings_are_trimmed_and_normalised() {
    let app = App::new();
    let doc = json(
        &app.patch_ok(
            ALICE,
            json!({
                "personal": { "first_name": "  Ada \t", "country": " gb ", "email": "  Ada.L@Example.COM ", "city": " London " },
                "preferences": { "language": "en-gb", "timezone": "europe/london", "theme": " Dark ", "currency": "gbp",
                                 "privacy": { "profile_visibility": "PUBLIC" } },
                "business": { "tax_id": " gb123-456 ",
                              "billing_address": { "line1": " 1 Main St ", "city": "London", "country": "fr" } }
            }),
        )
        .await,
    );
    assert_eq!(doc["personal"]["first_name"], "Ada");
    assert_eq!(doc["personal"]["city"], "London");
    assert_eq!(doc["personal"]["country"], "GB");
    assert_eq!(doc["personal"]["email"], "ada.l@example.com");
    assert_eq!(app.email(ALICE), "ada.l@example.com", "stored lower-cased in the main database");
    assert_eq!(doc["preferences"]["language"], "en-GB");
    assert_eq!(doc["preferences"]["timezone"], "Europe/London");
    assert_eq!(doc["preferences"]["theme"], "dark");
    assert_eq!(doc["preferences"]["currency"], "GBP");
    assert_eq!(doc["preferences"]["privacy"]["profile_visibility"], "public");
    assert_eq!(doc["business"]["tax_id"], "GB123-456");
    assert_eq!(doc["business"]["billing_address"]["line1"], "1 Main St");
    assert_eq!(doc["business"]["billing_address"]["country"], "FR");
    assert_eq!(app.get_json(ALICE).await["business"]["tax_id"], "GB123-456");
}

#[tokio::test]
async fn a_real_change_bumps_version_by_one_and_sets_updated_at() {
    let app = App::new();
    let doc = json(&app.patch_ok(ALICE, json!({ "personal": { "first_name": "Ada" } })).await);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["updated_at"], "2026-11-26T05:00:00Z");
    assert_eq!(app.record(ALICE).unwrap().version, 1);

    app.advance_s(3600);
    let doc = json(
        &app.patch_ok(ALICE, json!({ "personal": { "first_name": "Augusta", "last_name": "King" } })).await,
    );
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["updated_at"], "2026-11-26T06:00:00Z");
    let rec = app.record(ALICE).unwrap();
    assert_eq!((rec.version, rec.updated_at), (2, Some(t("2026-11-26T06:00:00Z"))));
}

#[tokio::test]
async fn a_patch_that_changes_nothing_keeps_version_and_writes_nothing() {
    let app = App::new();
    app.patch_ok(
        ALICE,
        json!({ "personal": { "first_name": "Ada" }, "preferences": { "theme": "dark" },
                "business": { "billing_address": { "line1": "1 Main St", "city": "London", "country": "GB" } } }),
    )
    .await;
    let saves = app.saves();
    app.advance_s(3600);
    for doc in [
        json!({}),
        json!({ "personal": { "first_name": " Ada ", "email": "ALICE@example.com" } }),
        json!({ "preferences": { "theme": "DARK", "language": null, "notifications": { "sms": false } } }),
        json!({ "business": { "billing_address": { "country": "gb" }, "tax_id": null } }),
    ] {
        let out = json(&app.patch_ok(ALICE, doc.clone()).await);
        assert_eq!(out["version"], 1, "{doc}");
        assert_eq!(out["updated_at"], "2026-11-26T05:00:00Z", "{doc}");
        assert_eq!(out["personal"]["first_name"], "Ada");
    }
    assert_eq!(app.saves(), saves, "no save call for a no-op patch");
    assert_eq!(app.profiles.journal_len(), 0);
    assert_eq!(app.accounts.faults.calls(Op::SetEmail), 0);
    assert_eq!(app.get_json(ALICE).await["version"], 1);
}

#[tokio::test]
async fn sending_back_the_editable_part_of_a_get_changes_nothing() {
    let app = App::new();
    let before = app.get(ALICE).await;
    let doc = json(&before);
    let patch = json!({ "personal": doc["personal"], "preferences": doc["preferences"], "business": doc["business"] });
    let out = app.patch_ok(ALICE, patch).await;
    assert_eq!(json(&out)["version"], 0);
    assert_eq!(json(&out)["updated_at"], Value::Null);
    assert_eq!(out.view.etag(), before.view.etag());
    assert_eq!(app.saves(), 0);
}

#[tokio::test]
async fn stale_if_match_is_precondition_failed_and_writes_nothing() {
    let app = App::new();
    let old_tag = app.get(ALICE).await.view.etag();
    app.patch_ok(ALICE, json!({ "personal": { "first_name": "Ada" } })).await;
    let saves = app.saves();

    let r = app
        .patch_if(
            ALICE,
            json!({ "personal": { "first_name": "Eve", "email": "eve@example.com" } }),
            one(&old_tag),
        )
        .await;
    assert_eq!(r.unwrap_err(), ServiceError::PreconditionFailed);
    assert_eq!(app.saves(), saves);
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
    assert_eq!(app.profiles.journal_len(), 0);
    let doc = app.get_json(ALICE).await;
    assert_eq!((doc["version"].clone(), doc["personal"]["first_name"].clone()), (json!(1), json!("Ada")));
}

#[tokio::test]
async fn matching_if_match_and_star_succeed() {
    let app = App::new();
    let tag = app.get(ALICE).await.view.etag();
    let out = app
        .patch_if(ALICE, json!({ "personal": { "first_name": "Ada" } }), one(&tag))
        .await
        .expect("matching tag");
    assert_eq!(json(&out)["version"], 1);

    let out = app
        .patch_if(ALICE, json!({ "personal": { "first_name": "Augusta" } }), Precondition::Any)
        .await
        .expect("*");
    assert_eq!(json(&out)["version"], 2);

    // A list containing the current tag matches; an empty list (a malformed header)
    // matches nothing.
    let tag = out.view.etag();
    let listed = Precondition::OneOf(vec![EntityTag::new("nope"), tag]);
    let out = app
        .patch_if(ALICE, json!({ "personal": { "last_name": "King" } }), listed)
        .await
        .expect("listed tag");
    assert_eq!(json(&out)["version"], 3);
    let none = Precondition::OneOf(Vec::new());
    let r = app.patch_if(ALICE, json!({ "personal": { "last_name": "Byron" } }), none).await;
    assert_eq!(r.unwrap_err(), ServiceError::PreconditionFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_of_one_user_queue_and_none_is_lost() {
    let app = Arc::new(App::new());
    // Every store call yields, so the patches really interleave.
    app.profiles.faults.set_latency(Some(std::time::Duration::from_millis(1)));
    let fields = ["first_name", "last_name", "city", "bio", "display_name", "phone"];
    let tasks: Vec<_> = fields
        .into_iter()
        .enumerate()
        .map(|(i, field)| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in 0..10 {
                    let value = if field == "phone" {
                        format!("+4420712345{n:02}")
                    } else {
                        format!("{field}{i}-{n}")
                    };
                    app.patch_ok(ALICE, json!({ "personal": { field: value } })).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["version"], 60, "every patch counted");
    assert_eq!(doc["personal"]["first_name"], "first_name0-9");
    assert_eq!(doc["personal"]["bio"], "bio3-9");
    assert_eq!(doc["personal"]["phone"], "+442071234509");
    assert_eq!(app.saves(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_with_one_etag_exactly_one_wins() {
    let app = Arc::new(App::new());
    app.profiles.faults.set_latency(Some(std::time::Duration::from_millis(1)));
    for round in 0..5 {
        let tag = app.get(ALICE).await.view.etag();
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let (app, tag) = (app.clone(), tag.clone());
                tokio::spawn(async move {
                    app.patch_if(ALICE, json!({ "personal": { "city": format!("c{round}-{n}") } }), one(&tag))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => wins += 1,
                Err(e) => assert_eq!(e, ServiceError::PreconditionFailed),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one patch per ETag");
    }
    assert_eq!(app.get_json(ALICE).await["version"], 5);
}

#[tokio::test]
async fn an_unavailable_store_fails_the_update_without_poisoning_the_cache() {
    let app = App::new();
    app.patch_ok(ALICE, json!({ "personal": { "first_name": "Ada" } })).await;
    app.get(ALICE).await; // cached
    app.profiles.faults.fail_next(Op::Update, 1, StoreError::Unavailable("locked".into()));
    let r = app.patch(ALICE, json!({ "personal": { "first_name": "Eve" } })).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["personal"]["first_name"], "Ada");
    assert_eq!(doc["version"], 1);
    assert_eq!(app.record(ALICE).unwrap().version, 1);
}

#[tokio::test]
async fn a_read_failure_during_update_is_reported() {
    let app = App::new();
    app.accounts.faults.fail_next(Op::Account, 1, StoreError::Unavailable("down".into()));
    let r = app.patch(ALICE, json!({ "personal": { "first_name": "Ada" } })).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    assert_eq!(app.record(ALICE), None);
}

#[tokio::test]
async fn an_update_replaces_the_cached_profile() {
    let app = App::new();
    assert_eq!(app.get_json(ALICE).await["personal"]["first_name"], Value::Null);
    assert!(app.cache.peek_profile(ALICE).is_some(), "the read filled the cache");
    let updated = json(&app.patch_ok(ALICE, json!({ "personal": { "first_name": "Ada" } })).await);
    let got = app.get_json(ALICE).await;
    assert_eq!(got["personal"]["first_name"], "Ada");
    assert_eq!(got["version"], 1);
    assert_eq!(app.cache.peek_profile(ALICE).unwrap().profile.version, 1);
    assert_eq!(without_freshness(&updated), without_freshness(&got), "PATCH returns what a GET then returns");
}

/// The use case as a second transport drives it: a typed update and a typed
/// precondition, no JSON document and no header text anywhere.
#[tokio::test]
async fn a_typed_update_under_a_typed_precondition_needs_no_json_nor_headers() {
    use profile_core::domain::{FieldValue, ParsedUpdate, Patch, PersonName, ProfileUpdate};
    let app = App::new();
    let before = app.get(ALICE).await;
    let typed = |first: &str| ParsedUpdate {
        update: ProfileUpdate {
            first_name: Patch::Value(PersonName::parse(first).expect("a valid name")),
            city: Patch::Null,
            ..ProfileUpdate::default()
        },
        problems: Vec::new(),
    };

    let out = app
        .service
        .update(ALICE, typed("Ada"), Precondition::OneOf(vec![before.view.etag()]))
        .await
        .expect("the current tag matches");
    assert_eq!(out.view.profile().personal.first_name.as_deref(), Some("Ada"));
    assert_eq!(out.view.profile().personal.city, None);
    assert_eq!(out.view.profile().version, 1);
    assert_ne!(out.view.etag(), before.view.etag());

    // The tag read before the write is stale now: refused, nothing written.
    let stale =
        app.service.update(ALICE, typed("Augusta"), Precondition::OneOf(vec![before.view.etag()])).await;
    assert_eq!(stale.unwrap_err(), ServiceError::PreconditionFailed);
    assert_eq!(app.get(ALICE).await.view.profile().personal.first_name.as_deref(), Some("Ada"));

    // A problem found by the transport while building the update is the core's to report.
    let mut invalid = typed("Grace");
    invalid.problems.push(profile_core::domain::FieldError::new(
        "personal.phone",
        "invalid_format",
        "bad phone",
    ));
    let refused = app.service.update(ALICE, invalid, Precondition::None).await.unwrap_err();
    assert!(matches!(refused, ServiceError::Invalid(ref errs) if errs.len() == 1), "{refused:?}");
    assert_eq!(app.get(ALICE).await.view.profile().version, 1);
}

/// The account changes in the main database (a login, an order) while the profile is
/// cached: reads keep serving the cached copy and its ETag, and a PATCH under that ETag
/// applies to the state the client was served instead of failing until the copy expires.
#[tokio::test]
async fn if_match_with_the_etag_a_cached_read_served_holds_after_the_account_changed_elsewhere() {
    let app = App::new();
    let first = app.get(ALICE).await;
    let mut account = app.accounts.get(ALICE).expect("alice");
    account.login_count += 1;
    app.accounts.insert(account);
    let served = app.get(ALICE).await;
    assert_eq!(served.view.etag(), first.view.etag(), "the read came from the cache");
    let patched = app
        .patch_if(ALICE, json!({ "personal": { "first_name": "Ada" } }), one(&served.view.etag()))
        .await
        .expect("the ETag the client was served names the current state");
    let doc = json(&patched);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["statistics"]["login_count"], 57, "applied to the account the client was shown");
    assert_eq!(without_freshness(&doc), without_freshness(&app.get_json(ALICE).await));
}

/// A cached copy older than the stored record (another instance wrote since) does not
/// say what the account is now: the update reads it from the main database.
#[tokio::test]
async fn an_update_behind_a_cached_copy_older_than_the_store_reads_the_account_again() {
    let app = App::new();
    app.get(ALICE).await; // version 0, cached
    let mut record = profile_core::domain::ProfileRecord::new_default(ALICE);
    record.version = 1;
    record.fields.personal.city = Some("Paris".into());
    app.profiles.insert(record);
    let mut account = app.accounts.get(ALICE).expect("alice");
    account.login_count = 99;
    app.accounts.insert(account);
    let doc = json(&app.patch_ok(ALICE, json!({ "personal": { "first_name": "Ada" } })).await);
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["personal"]["city"], "Paris");
    assert_eq!(doc["statistics"]["login_count"], 99, "the account as the main database holds it now");
}

/// An update made from the cached account leaves a copy that expires a TTL after that
/// account was read, not after the update: no account data is served past the TTL.
#[tokio::test]
async fn a_copy_made_from_a_cached_account_expires_a_ttl_after_the_account_was_read() {
    let ttl = std::time::Duration::from_secs(1);
    let app = App::with_cache(profile_memory::MemoryCache::with_profile_ttl(ttl));
    app.get(ALICE).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.patch_ok(ALICE, json!({ "personal": { "first_name": "Ada" } })).await;
    assert!(app.cache.peek_profile(ALICE).is_some(), "the update's copy is cached");
    let mut account = app.accounts.get(ALICE).expect("alice");
    account.login_count = 99;
    app.accounts.insert(account);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(app.cache.peek_profile(ALICE).is_none(), "a TTL after the account was read, the copy is gone");
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["statistics"]["login_count"], 99);
    assert_eq!(doc["personal"]["first_name"], "Ada");
}

/// An e-mail change never applies to a cached account: the address it replaces is
/// the one the main database holds.
#[tokio::test]
async fn an_email_change_reads_the_account_from_the_main_database() {
    let app = App::new();
    app.get(ALICE).await;
    let mut account = app.accounts.get(ALICE).expect("alice");
    account.login_count = 99;
    app.accounts.insert(account);
    let doc = json(&app.patch_ok(ALICE, json!({ "personal": { "email": "ada@example.com" } })).await);
    assert_eq!(doc["personal"]["email"], "ada@example.com");
    assert_eq!(doc["statistics"]["login_count"], 99);
    assert_eq!(app.email(ALICE), "ada@example.com");
}
