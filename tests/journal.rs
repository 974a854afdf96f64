//! The cross-database journal: an e-mail change and the profile fields of the same patch
//! land together or not at all, whichever step fails, once `recover()` has run.

mod common;

use common::*;
use profile_core::ServiceError;
use profile_core::domain::ProfileRecord;
use profile_core::ports::{AccountRepository, EmailChange, ProfileRepository, StoreError};
use profile_memory::Op;
use serde_json::{Value, json};

const NEW: &str = "new@example.com";

fn email_patch() -> Value {
    json!({ "personal": { "email": "New@Example.com", "first_name": "Patched" } })
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("injected".into())
}

fn patched(app: &App) -> bool {
    app.record(ALICE).and_then(|r| r.fields.personal.first_name).as_deref() == Some("Patched")
}

/// After recovery: no pending entry, and the new e-mail is in the main database exactly
/// when the patch's other fields are in the profile — also as a read shows it.
async fn assert_settled(app: &App) {
    assert_eq!(app.profiles.pending_count(), 0, "no pending journal entry");
    let email_changed = app.email(ALICE) == NEW;
    assert_eq!(email_changed, patched(app), "account.email == new ⇔ profile fields applied");
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        doc["personal"]["email"] == NEW,
        doc["personal"]["first_name"] == "Patched",
        "as served: {doc}"
    );
}

#[tokio::test]
async fn failure_recording_the_intent_changes_nothing() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::BeginEmailChange, 1, unavailable());
    let r = app.patch(ALICE, email_patch()).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    assert_eq!(app.accounts.faults.calls(Op::SetEmail), 0, "main database never touched");
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
    assert_eq!(app.record(ALICE), None);
    assert_eq!(app.profiles.pending_count(), 0);
    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (0, 0));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
}

#[tokio::test]
async fn failure_changing_the_main_database_leaves_both_old() {
    let app = App::new();
    app.get(ALICE).await; // cached
    app.accounts.faults.fail_next(Op::SetEmail, 1, unavailable());
    let r = app.patch(ALICE, email_patch()).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    app.service.recover().await.expect("recover");
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
    assert!(!patched(&app));
    assert_eq!(app.get_json(ALICE).await["version"], 0);
}

#[tokio::test]
async fn failure_between_the_two_commits_is_completed_by_recovery() {
    let app = App::new();
    app.get(ALICE).await; // cached
    // Twice: the completion, and the immediate attempt to settle it.
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 2, unavailable());
    let r = app.patch(ALICE, email_patch()).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    // The "process died here" state: main database changed, entry pending.
    assert_eq!(app.email(ALICE), NEW);
    assert_eq!(app.profiles.pending_count(), 1);
    assert!(!patched(&app));

    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (1, 0));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
    assert!(patched(&app));
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["personal"]["email"], NEW);
    assert_eq!(doc["personal"]["first_name"], "Patched", "recovery dropped the stale cached profile");
}

#[tokio::test]
async fn an_intent_that_never_reached_the_main_database_is_rolled_back() {
    let app = App::new();
    let mut record = ProfileRecord::new_default(ALICE);
    record.version = 1;
    record.updated_at = Some(start());
    record.fields.personal.first_name = Some("Patched".into());
    let change = EmailChange {
        id: 0,
        old_email: ALICE_EMAIL.into(),
        new_email: NEW.into(),
        record,
        created_at: start(),
    };
    app.profiles.begin_email_change(&change).await.expect("begin");
    assert_eq!(app.profiles.pending_count(), 1);

    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (0, 1));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
    assert_eq!(app.record(ALICE), None, "profile unchanged");
    assert_eq!(app.get_json(ALICE).await["version"], 0);
}

#[tokio::test]
async fn recovery_after_a_concurrent_profile_change_restores_the_old_email() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 2, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    assert_eq!(app.email(ALICE), NEW, "main database already changed");
    // Something outside this process moves the record's version before recovery runs.
    let mut other = ProfileRecord::new_default(ALICE);
    other.version = 1;
    other.fields.personal.last_name = Some("Concurrent".into());
    app.profiles.save(&other).await.expect("save");
    assert_eq!(app.record(ALICE).unwrap().version, 1);

    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (0, 1));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), ALICE_EMAIL, "e-mail restored");
    assert!(!patched(&app));
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["personal"]["last_name"], "Concurrent", "the concurrent change is kept");
    assert_eq!(doc["personal"]["email"], ALICE_EMAIL);
}

#[tokio::test]
async fn a_version_race_at_completion_is_undone_and_retried() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, StoreError::VersionConflict);
    let doc = json(&app.patch_ok(ALICE, email_patch()).await);
    assert_eq!(doc["personal"]["email"], NEW);
    assert_eq!(doc["personal"]["first_name"], "Patched");
    assert_eq!(doc["version"], 1);
    assert_eq!(app.profiles.faults.calls(Op::BeginEmailChange), 2, "retried");
    app.service.recover().await.expect("recover");
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
}

#[tokio::test]
async fn a_version_race_at_completion_with_if_match_changes_nothing() {
    let app = App::new();
    let tag = app.get(ALICE).await.view.etag();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, StoreError::VersionConflict);
    let r = app.patch_if(ALICE, email_patch(), one(&tag)).await;
    assert_eq!(r.unwrap_err(), ServiceError::PreconditionFailed);
    assert_eq!(app.email(ALICE), ALICE_EMAIL, "e-mail change undone");
    assert_eq!(app.profiles.pending_count(), 0);
    assert_settled(&app).await;
}

#[tokio::test]
async fn a_version_race_at_begin_is_retried() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::BeginEmailChange, 1, StoreError::VersionConflict);
    let doc = json(&app.patch_ok(ALICE, email_patch()).await);
    assert_eq!((doc["personal"]["email"].clone(), doc["version"].clone()), (json!(NEW), json!(1)));
    assert_settled(&app).await;
}

#[tokio::test]
async fn recovery_stops_on_a_storage_failure_and_can_run_again() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 3, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    let r = app.service.recover().await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    assert_eq!(app.profiles.pending_count(), 1, "left for the next run");
    let report = app.service.recover().await.expect("second run");
    assert_eq!((report.completed, report.rolled_back), (1, 0));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
}

#[tokio::test]
async fn a_failed_case_only_email_change_does_not_apply_the_profile_fields() {
    let app = App::new();
    // Carol's address was stored mixed-case by the wider application; her patch lower-cases it.
    app.accounts.faults.fail_next(Op::SetEmail, 1, unavailable());
    let r = app
        .patch(CAROL, json!({ "personal": { "email": "carol@example.com", "first_name": "Patched" } }))
        .await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    app.service.recover().await.expect("recover");
    assert_eq!(app.email(CAROL), "Carol@Example.COM", "main database not changed");
    let first_name = app.record(CAROL).and_then(|r| r.fields.personal.first_name);
    assert_eq!(first_name, None, "a PATCH that failed must not have applied its profile fields");
}

#[tokio::test]
async fn a_retried_patch_after_a_failed_completion_survives_recovery() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 2, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    assert_eq!(app.profiles.pending_count(), 1, "left pending, as after a crash");
    // The client retries the same PATCH and is told it succeeded.
    let doc = json(&app.patch_ok(ALICE, email_patch()).await);
    assert_eq!(
        (doc["personal"]["email"].clone(), doc["personal"]["first_name"].clone()),
        (json!(NEW), json!("Patched"))
    );
    // Later the process restarts.
    app.service.recover().await.expect("recover");
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW, "a change reported as successful must not be undone");
}

#[tokio::test]
async fn a_failed_completion_is_settled_at_once_when_the_store_recovers() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    assert_eq!(app.profiles.pending_count(), 0, "settled without waiting for a restart");
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
}

#[tokio::test]
async fn set_email_honours_its_contract_in_the_fake() {
    // The journal's guarantees rest on these; a broken fake would hide core bugs.
    let app = App::new();
    assert_eq!(app.accounts.set_email(ALICE, "bob@example.com").await, Err(StoreError::EmailTaken));
    assert_eq!(app.accounts.set_email(MISSING, "x@example.com").await, Err(StoreError::NotFound));
    assert_eq!(app.accounts.set_email(ALICE, ALICE_EMAIL).await, Ok(()));
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
}

#[tokio::test]
async fn a_concurrent_update_of_the_same_user_does_not_settle_a_change_in_flight() {
    let app = std::sync::Arc::new(App::new());
    // The main database is slow, so the e-mail change is mid-protocol when the second
    // request starts; that request must not roll the change back under its feet.
    app.accounts.faults.set_latency(Some(std::time::Duration::from_millis(150)));
    let a = tokio::spawn({
        let app = app.clone();
        async move { app.patch(ALICE, email_patch()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let b = app.patch(ALICE, json!({ "personal": { "last_name": "Second" } })).await;
    let a = a.await.expect("join");
    assert!(a.is_ok(), "e-mail change: {a:?}");
    assert!(b.is_ok(), "concurrent change: {b:?}");
    app.accounts.faults.set_latency(None);
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["personal"]["last_name"], "Second");
    assert_eq!(doc["version"], 2);
}
