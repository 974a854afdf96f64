//! Rewards composed per request: live, cached within the window, stale, unavailable.

mod common;

use std::time::Duration;

use common::*;
use profile_core::ServiceConfig;
use profile_core::domain::RewardsBalance;
use profile_memory::Op;
use serde_json::{Value, json};

fn rewards(doc: &Value) -> Value {
    doc["rewards"].clone()
}

#[tokio::test]
async fn the_first_read_is_live_as_of_now() {
    let app = App::new();
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        rewards(&doc),
        json!({ "points": 1250, "tier": "gold", "status": "live", "as_of": "2026-11-26T05:00:00Z" })
    );
    assert_eq!(app.rewards.calls(), 1);
}

#[tokio::test]
async fn within_the_window_the_balance_is_cached_without_a_call() {
    let app = App::new();
    app.get(ALICE).await;
    app.advance_s(29);
    app.rewards.set(ALICE, Some(RewardsBalance { points: 9999, tier: None }));
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        rewards(&doc),
        json!({ "points": 1250, "tier": "gold", "status": "cached", "as_of": "2026-11-26T05:00:00Z" })
    );
    assert_eq!(app.rewards.calls(), 1);
}

#[tokio::test]
async fn after_the_window_it_is_fetched_again() {
    let app = App::new();
    app.get(ALICE).await;
    app.advance_s(31);
    app.rewards.set(ALICE, Some(RewardsBalance { points: 1300, tier: Some("platinum".into()) }));
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        rewards(&doc),
        json!({ "points": 1300, "tier": "platinum", "status": "live", "as_of": "2026-11-26T05:00:31Z" })
    );
    assert_eq!(app.rewards.calls(), 2);
}

#[tokio::test]
async fn the_window_comes_from_the_config() {
    let app = App::with_config(ServiceConfig {
        rewards_window: Duration::from_secs(5),
        ..ServiceConfig::default()
    });
    app.get(ALICE).await;
    app.advance_s(4);
    assert_eq!(app.get_json(ALICE).await["rewards"]["status"], "cached");
    app.advance_s(2);
    assert_eq!(app.get_json(ALICE).await["rewards"]["status"], "live");
    assert_eq!(app.rewards.calls(), 2);
}

#[tokio::test]
async fn a_failing_service_after_the_window_serves_the_last_value_as_stale() {
    let app = App::new();
    app.get(ALICE).await;
    app.advance_s(120);
    app.rewards.fail_always(true);
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        rewards(&doc),
        json!({ "points": 1250, "tier": "gold", "status": "stale", "as_of": "2026-11-26T05:00:00Z" })
    );
    assert_eq!(app.rewards.calls(), 2, "it was asked");

    // Back again: live with the fresh value.
    app.rewards.fail_always(false);
    app.advance_s(1);
    let doc = app.get_json(ALICE).await;
    assert_eq!(doc["rewards"]["status"], "live");
    assert_eq!(doc["rewards"]["as_of"], "2026-11-26T05:02:01Z");
}

#[tokio::test]
async fn never_known_and_failing_is_unavailable() {
    let app = App::new();
    app.rewards.fail_always(true);
    let doc = app.get_json(ALICE).await;
    assert_eq!(rewards(&doc), json!({ "points": 0, "tier": null, "status": "unavailable", "as_of": null }));
    // Nothing is cached from a failure: the next read asks again.
    app.get(ALICE).await;
    assert_eq!(app.rewards.calls(), 2);
}

#[tokio::test]
async fn no_rewards_account_is_live_zero_and_cached_like_a_balance() {
    let app = App::new();
    app.rewards.set(ALICE, None);
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        rewards(&doc),
        json!({ "points": 0, "tier": null, "status": "live", "as_of": "2026-11-26T05:00:00Z" })
    );
    app.advance_s(10);
    let doc = app.get_json(ALICE).await;
    assert_eq!(
        rewards(&doc),
        json!({ "points": 0, "tier": null, "status": "cached", "as_of": "2026-11-26T05:00:00Z" })
    );
    assert_eq!(app.rewards.calls(), 1);
    // And served stale when the service then fails.
    app.advance_s(60);
    app.rewards.fail_always(true);
    assert_eq!(app.get_json(ALICE).await["rewards"]["status"], "stale");
}

#[tokio::test]
async fn rewards_are_composed_per_request_even_from_the_profile_cache() {
    let app = App::new();
    app.get(ALICE).await;
    let account_reads = app.accounts.faults.calls(Op::Account);
    app.advance_s(31);
    app.rewards.set(ALICE, Some(RewardsBalance { points: 2000, tier: Some("gold".into()) }));
    let doc = app.get_json(ALICE).await;
    assert_eq!(app.accounts.faults.calls(Op::Account), account_reads, "profile came from the cache");
    assert_eq!(
        rewards(&doc),
        json!({ "points": 2000, "tier": "gold", "status": "live", "as_of": "2026-11-26T05:00:31Z" })
    );
    assert_eq!(app.rewards.calls(), 2);
}

#[tokio::test]
async fn a_failing_rewards_service_never_fails_the_profile() {
    let app = App::new();
    app.rewards.fail_always(true);
    for _ in 0..3 {
        let doc = app.get_json(ALICE).await;
        assert_eq!(doc["personal"]["email"], ALICE_EMAIL);
        assert_eq!(doc["rewards"]["status"], "unavailable");
    }
    let doc = json(&app.patch_ok(ALICE, json!({ "personal": { "first_name": "Ada" } })).await);
    assert_eq!(doc["personal"]["first_name"], "Ada");
    assert_eq!(doc["rewards"]["status"], "unavailable");
}
