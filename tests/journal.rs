//! The cross-database journal: an e-mail change and the profile fields of the same patch
//! land together or not at all, whichever step fails, once the journal is settled. An
//! entry that cannot be settled never blocks other users, and is rolled forward (the
//! patch carried through) rather than reverted when the new address is still free.

mod common;

use common::*;
use profile_core::ServiceError;
use std::sync::Arc;
use std::time::Duration;

use profile_core::domain::ProfileRecord;
use profile_core::ports::{AccountRepository, Decision, ProfileRepository, StoreError, UpdateOutcome};
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
    app.profiles.faults.fail_next(Op::Update, 1, unavailable());
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
async fn failure_changing_the_main_database_is_carried_through_by_recovery() {
    let app = App::new();
    app.get(ALICE).await; // cached
    app.accounts.faults.fail_next(Op::SetEmail, 1, unavailable());
    let r = app.patch(ALICE, email_patch()).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    assert_eq!(app.profiles.pending_count(), 1, "a 503 leaves the change to the journal");
    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (1, 0));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW, "rolled forward: the new address was still free");
    assert!(patched(&app));
    assert_eq!(app.get_json(ALICE).await["version"], 1, "the stale cached copy was dropped");
}

#[tokio::test]
async fn failure_between_the_two_commits_is_completed_by_recovery() {
    let app = App::new();
    app.get(ALICE).await; // cached
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, unavailable());
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

/// Journals an e-mail change for ALICE as a process that died right after would leave
/// it: held until `claimed_until`, nothing else done.
async fn orphan_entry(app: &App, new_email: &str, claimed_until: chrono::DateTime<chrono::Utc>) {
    let mut record = ProfileRecord::new_default(ALICE);
    record.version = 1;
    record.updated_at = Some(start());
    record.fields.personal.first_name = Some("Patched".into());
    let decision = Decision::ChangeEmail {
        record,
        old_email: ALICE_EMAIL.into(),
        new_email: new_email.into(),
        created_at: start(),
        claimed_until,
    };
    let out = app.profiles.update(ALICE, Box::new(move |_| decision)).await.expect("journal");
    assert!(matches!(out, UpdateOutcome::EmailChangeBegun(_)), "{out:?}");
    assert_eq!(app.profiles.pending_count(), 1);
}

#[tokio::test]
async fn an_intent_that_never_reached_the_main_database_is_rolled_forward() {
    let app = App::new();
    orphan_entry(&app, NEW, start()).await;
    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (1, 0));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
    assert_eq!(app.get_json(ALICE).await["version"], 1);
}

#[tokio::test]
async fn an_intent_whose_address_was_taken_meanwhile_is_closed_with_nothing_applied() {
    let app = App::new();
    orphan_entry(&app, "bob@example.com", start()).await;
    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.rolled_back), (0, 1));
    assert_eq!(app.profiles.pending_count(), 0);
    assert_eq!(app.email(ALICE), ALICE_EMAIL, "nothing reverted, nothing taken");
    assert_eq!(app.record(ALICE), None, "profile unchanged");
}

#[tokio::test]
async fn an_entry_held_by_someone_else_is_left_until_its_claim_runs_out() {
    let app = App::new();
    // Another instance's request is working on it for ten more seconds.
    orphan_entry(&app, NEW, start() + chrono::TimeDelta::seconds(10)).await;
    let report = app.service.recover().await.expect("recover");
    assert_eq!((report.completed, report.held), (0, 1), "held by its owner");
    assert_eq!(app.email(ALICE), ALICE_EMAIL);
    app.advance_s(11);
    let report = app.service.recover().await.expect("recover");
    assert_eq!(report.completed, 1, "settled once the owner's claim ran out");
    assert_settled(&app).await;
}

#[tokio::test]
async fn a_pending_change_is_settled_before_its_user_changes_again_and_blocks_nobody_else() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    assert_eq!(app.email(ALICE), NEW, "main database already changed");
    // Other users are not held up by Alice's entry.
    assert_eq!(json(&app.patch_ok(BOB, json!({ "personal": { "city": "Oslo" } })).await)["version"], 1);
    // Alice's next patch carries her pending change through first, then applies on it.
    let doc = json(&app.patch_ok(ALICE, json!({ "personal": { "last_name": "Second" } })).await);
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["personal"]["email"], NEW);
    assert_eq!(doc["personal"]["first_name"], "Patched");
    assert_eq!(doc["personal"]["last_name"], "Second");
    assert_settled(&app).await;
}

#[tokio::test]
async fn a_stuck_entry_never_blocks_other_users_or_start_up_and_settles_once_the_cause_is_gone() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1_000, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    for n in 0..3 {
        let report = app.service.recover().await.expect("start-up recovery never fails on one entry");
        assert_eq!(report.stuck, 1, "pass {n}");
        app.advance_s(2);
    }
    let doc = json(&app.patch_ok(BOB, json!({ "personal": { "city": "Oslo" } })).await);
    assert_eq!(doc["personal"]["city"], "Oslo", "other users' patches succeed meanwhile");
    let r = app.patch(ALICE, json!({ "personal": { "last_name": "Second" } })).await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "Alice waits for her change: {r:?}");

    app.profiles.faults.fail_next(Op::CompleteEmailChange, 0, unavailable());
    app.advance_s(120);
    let report = app.service.settle_journal().await.expect("settle");
    assert_eq!((report.completed, report.stuck), (1, 0));
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
}

#[tokio::test]
async fn a_journal_entry_gone_missing_is_an_internal_error_not_a_missing_account() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, StoreError::NotFound);
    let r = app.patch(ALICE, email_patch()).await;
    assert!(matches!(r, Err(ServiceError::Internal(_))), "{r:?}");
}

#[tokio::test]
async fn a_failed_case_only_email_change_lands_whole_or_not_at_all() {
    let app = App::new();
    // Carol's address was stored mixed-case by the wider application; her patch lower-cases it.
    app.accounts.faults.fail_next(Op::SetEmail, 1, unavailable());
    let r = app
        .patch(CAROL, json!({ "personal": { "email": "carol@example.com", "first_name": "Patched" } }))
        .await;
    assert!(matches!(r, Err(ServiceError::Unavailable(_))), "{r:?}");
    app.service.recover().await.expect("recover");
    let first_name = app.record(CAROL).and_then(|r| r.fields.personal.first_name);
    assert_eq!(
        (app.email(CAROL).as_str(), first_name.as_deref()),
        ("carol@example.com", Some("Patched")),
        "both halves carried through together"
    );
}

#[tokio::test]
async fn a_retried_patch_after_a_failed_completion_is_answered_and_kept() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    assert_eq!(app.profiles.pending_count(), 1, "left pending, as after a crash");
    // The client retries the same PATCH and is told it succeeded.
    let doc = json(&app.patch_ok(ALICE, email_patch()).await);
    assert_eq!(
        (doc["personal"]["email"].clone(), doc["personal"]["first_name"].clone(), doc["version"].clone()),
        (json!(NEW), json!("Patched"), json!(1))
    );
    // Later the process restarts.
    app.service.recover().await.expect("recover");
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW, "a change reported as successful must not be undone");
}

#[tokio::test]
async fn an_abandoned_entry_is_settled_by_the_next_pass_without_waiting_for_its_lease() {
    let app = App::new();
    app.profiles.faults.fail_next(Op::CompleteEmailChange, 1, unavailable());
    assert!(app.patch(ALICE, email_patch()).await.is_err());
    assert_eq!(app.profiles.pending_count(), 1);
    let report = app.service.settle_journal().await.expect("settle");
    assert_eq!(report.completed, 1, "this process gave the entry up: no lease to wait for");
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
async fn a_concurrent_update_of_the_same_user_waits_for_a_change_in_flight() {
    let app = Arc::new(App::new());
    // The main database is slow, so the e-mail change is mid-protocol when the second
    // request starts; that request must wait for it, not settle it under its feet.
    app.accounts.faults.set_latency(Some(Duration::from_millis(150)));
    let a = tokio::spawn({
        let app = app.clone();
        async move { app.patch(ALICE, email_patch()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = app.patch(ALICE, json!({ "personal": { "last_name": "Second" } })).await;
    let a = a.await.expect("join");
    assert!(a.is_ok(), "e-mail change: {a:?}");
    let b = json(&b.expect("concurrent change"));
    assert_eq!(b["personal"]["email"], NEW, "the later answer never carries the older address");
    app.accounts.faults.set_latency(None);
    assert_settled(&app).await;
    assert_eq!(app.email(ALICE), NEW);
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["personal"]["last_name"], "Second");
    assert_eq!(doc["version"], 2);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_change_leaves_the_change_whole_and_the_cache_agreeing() {
    for step in [Op::Update, Op::SetEmail, Op::CompleteEmailChange] {
        let app = Arc::new(App::new());
        app.get(ALICE).await; // cached: the old state
        // Each store call takes 40 ms; the client leaves 60 ms in, at the given step.
        app.profiles.faults.set_latency(Some(Duration::from_millis(40)));
        app.accounts.faults.set_latency(Some(Duration::from_millis(40)));
        let leave_after = match step {
            Op::Update => 10,
            Op::SetEmail => 60,
            _ => 100,
        };
        let request = tokio::spawn({
            let app = app.clone();
            async move { app.patch(ALICE, email_patch()).await }
        });
        tokio::time::sleep(Duration::from_millis(leave_after)).await;
        request.abort();
        tokio::time::sleep(Duration::from_millis(400)).await;
        app.profiles.faults.set_latency(None);
        app.accounts.faults.set_latency(None);
        assert_eq!(app.profiles.pending_count(), 0, "{step:?}: the write ran to its end");
        assert_settled(&app).await;
        let doc = app.get_json(ALICE).await;
        assert_eq!(
            (doc["personal"]["email"].clone(), doc["version"].clone()),
            (json!(NEW), json!(1)),
            "{step:?}: the cache holds what was committed"
        );
    }
}

#[tokio::test]
async fn while_a_change_is_pending_reads_show_the_state_before_it_whole() {
    let app = App::without_profile_cache();
    // A process died after the main database took the new address, before completing.
    orphan_entry(&app, NEW, start() + chrono::TimeDelta::seconds(10)).await;
    app.accounts.set_email(ALICE, NEW).await.expect("set");
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        (doc["personal"]["email"].clone(), doc["personal"]["first_name"].clone(), doc["version"].clone()),
        (json!(ALICE_EMAIL), Value::Null, json!(0)),
        "the old state, whole"
    );
    app.advance_s(11);
    app.service.settle_journal().await.expect("settle");
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        (doc["personal"]["email"].clone(), doc["personal"]["first_name"].clone()),
        (json!(NEW), json!("Patched"))
    );
}
