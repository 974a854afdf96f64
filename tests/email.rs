//! The e-mail lives in the main database: both databases change together or neither.

mod common;

use common::*;
use profile_core::ServiceError;
use profile_core::ports::CachePort;
use profile_memory::Op;
use serde_json::{Value, json};

#[tokio::test]
async fn an_email_change_applies_to_both_databases_with_the_other_fields() {
    let app = App::new();
    let out = app
        .patch_ok(ALICE, json!({ "personal": { "email": "Alice.New@Example.COM", "first_name": "Alice" } }))
        .await;
    let doc = json(&out);
    assert_eq!(doc["personal"]["email"], "alice.new@example.com");
    assert_eq!(doc["personal"]["first_name"], "Alice");
    assert_eq!(doc["version"], 1);
    assert_eq!(app.email(ALICE), "alice.new@example.com");
    let rec = app.record(ALICE).expect("record written");
    assert_eq!((rec.version, rec.fields.personal.first_name.as_deref()), (1, Some("Alice")));
    assert_eq!(app.profiles.pending_count(), 0);

    let got = app.get_json(ALICE).await;
    assert_eq!(got["personal"]["email"], "alice.new@example.com");
    assert_eq!(got["personal"]["first_name"], "Alice");
    assert_eq!(got["version"], 1);

    // E-mail only: still a change of the representation, version + 1.
    let doc = json(&app.patch_ok(ALICE, json!({ "personal": { "email": "alice3@example.com" } })).await);
    assert_eq!(doc["version"], 2);
    assert_eq!(app.email(ALICE), "alice3@example.com");
    app.cache.invalidate_profile(ALICE).await;
    assert_eq!(app.get_json(ALICE).await["personal"]["email"], "alice3@example.com", "read from the stores");
}

#[tokio::test]
async fn an_email_taken_by_another_account_changes_nothing() {
    let app = App::new();
    // Bob's address in another case; Carol's was stored mixed-case by the wider application.
    for taken in ["BOB@example.com", "carol@example.com"] {
        let r = app
            .patch(ALICE, json!({ "personal": { "email": taken, "first_name": "Alice" }, "preferences": { "theme": "dark" } }))
            .await;
        assert_eq!(r.unwrap_err(), ServiceError::EmailTaken, "{taken}");
        assert_eq!(app.email(ALICE), ALICE_EMAIL);
        assert_eq!(app.email(BOB), "bob@example.com");
        assert_eq!(app.email(CAROL), "Carol@Example.COM");
        assert_eq!(app.record(ALICE), None, "profile fields of the same patch not applied");
        assert_eq!(app.profiles.pending_count(), 0, "no pending journal entry");
        let doc = app.get_json(ALICE).await;
        assert_eq!(doc["personal"]["email"], ALICE_EMAIL);
        assert_eq!(doc["personal"]["first_name"], Value::Null);
        assert_eq!(doc["preferences"]["theme"], "system");
        assert_eq!(doc["version"], 0);
    }
    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (0, 0));
}

#[tokio::test]
async fn the_same_email_in_another_case_is_no_change() {
    let app = App::new();
    let out = app.patch_ok(ALICE, json!({ "personal": { "email": "  ALICE@Example.com " } })).await;
    assert_eq!(json(&out)["version"], 0);
    assert_eq!(json(&out)["personal"]["email"], ALICE_EMAIL);
    assert_eq!(app.accounts.faults.calls(Op::SetEmail), 0);
    assert_eq!(app.profiles.journal_len(), 0);
    assert_eq!(app.saves(), 0);

    // With another field: a profile-only change, no journal.
    let out =
        app.patch_ok(ALICE, json!({ "personal": { "email": "Alice@EXAMPLE.com", "city": "London" } })).await;
    assert_eq!(json(&out)["version"], 1);
    assert_eq!(app.accounts.faults.calls(Op::SetEmail), 0);
    assert_eq!(app.profiles.journal_len(), 0);
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
}
