//! The app built in-process through `AppBuilder`, the builder the binary uses, and
//! driven over real HTTP on 127.0.0.1: with fakes of `adapters/memory` swapped in where
//! a test needs to control or observe a part (the "test app" pattern), and with no fake
//! at all from the binary's own settings on SQLite files.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{Http, Resp, SECRET};
use profile_api::app::{App, AppBuilder};
use profile_api::cli::ServeArgs;
use profile_core::domain::RewardsBalance;
use profile_core::ports::{AccountRepository, ProfileRepository, StoreError};
use profile_memory::{ManualClock, MemoryAccounts, MemoryCache, MemoryProfiles, MemoryRewards, MemoryTokens};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `serve`'s settings from these arguments, parsed as the binary parses them, on port 0.
fn settings(extra: &[&str]) -> ServeArgs {
    let mut args = vec!["--listen", "127.0.0.1:0", "--rewards-url", ""];
    args.extend_from_slice(extra);
    ServeArgs::parse_args(args).expect("valid settings")
}

/// The fakes a test can reach into, and a builder with all of them swapped in.
struct Fakes {
    accounts: Arc<MemoryAccounts>,
    profiles: Arc<MemoryProfiles>,
    rewards: Arc<MemoryRewards>,
    clock: Arc<ManualClock>,
    tokens: Arc<MemoryTokens>,
}

impl Fakes {
    fn new() -> Self {
        Self {
            accounts: MemoryAccounts::new(),
            profiles: MemoryProfiles::new(),
            rewards: MemoryRewards::new(),
            clock: ManualClock::new(Utc::now()),
            tokens: MemoryTokens::new(),
        }
    }

    fn builder(&self, config: ServeArgs) -> AppBuilder {
        App::builder(config)
            .main_database(self.accounts.clone())
            .profiles_database(self.profiles.clone())
            .rewards(self.rewards.clone())
            .clock(self.clock.clone())
            .verifier(self.tokens.clone())
    }
}

/// An app serving on its own task until [`Running::stop`].
struct Running {
    base: String,
    stop: oneshot::Sender<()>,
    done: JoinHandle<()>,
}

impl Running {
    async fn start(builder: AppBuilder) -> Self {
        let app = builder.build().await.expect("the app builds");
        Self::serve(app).await
    }

    async fn serve(app: App) -> Self {
        let listeners = app.bind().await.expect("the app binds 127.0.0.1:0");
        let base = format!("http://{}", listeners.http_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(app.serve(listeners, async move {
            let _ = stopped.await;
        }));
        Self { base, stop, done }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signals shutdown and waits for the teardown to finish.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.done)
            .await
            .expect("the app stops within its drain bound")
            .expect("the serving task ends without a panic");
    }
}

fn etag(resp: &Resp) -> String {
    resp.header("etag").expect("an ETag header").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_with_if_match_over_http_and_a_stale_tag_is_refused_with_412() {
    let fakes = Fakes::new();
    fakes.accounts.insert(profile_memory::sample_account(1));
    fakes.rewards.set(1, Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }));
    let token = fakes.tokens.issue(1);
    let app = Running::start(fakes.builder(settings(&[]))).await;
    let http = Http::new();
    let profile = app.url("/user/profile");

    let first = http.get(&profile, &token).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    assert_eq!(body["version"], 0);
    assert_eq!(body["personal"]["display_name"], "user1", "the account's username until edited");
    assert_eq!(
        body["rewards"],
        json!({"points": 1250, "tier": "gold", "status": "live", "as_of": body["rewards"]["as_of"]})
    );
    let tag = etag(&first);

    let patched = http
        .patch(&profile, &token, &json!({"personal": {"display_name": "Ada L."}}), &[("if-match", &tag)])
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["version"], 1);
    assert_eq!(patched.json()["personal"]["display_name"], "Ada L.");
    let new_tag = etag(&patched);
    assert_ne!(new_tag, tag, "a change gives a new ETag");
    assert_eq!(fakes.profiles.get(1).map(|r| r.version), Some(1), "the write went to the supplied store");

    // The first tag is stale now: refused, nothing written.
    let refused =
        http.patch(&profile, &token, &json!({"personal": {"city": "London"}}), &[("if-match", &tag)]).await;
    assert_eq!(refused.status, 412, "{}", refused.text());
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(fakes.profiles.writes(), 1);
    let after = http.get(&profile, &token).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["version"], 1);
    assert_eq!(after.json()["personal"]["city"], json!(null));
    assert_eq!(etag(&after), new_tag, "reads with no change between carry the same ETag");

    // The supplied verifier judges tokens: one it does not know is refused.
    let stranger = http.get(&profile, "not-a-token-it-issued").await;
    assert_eq!(stranger.status, 401, "{}", stranger.text());

    app.stop().await;
    // Teardown closed the supplied stores through their upkeep trait.
    assert!(matches!(fakes.accounts.ping().await, Err(StoreError::Unavailable(_))));
    assert!(matches!(fakes.profiles.ping().await, Err(StoreError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rewards_service_shows_the_last_balance_stale_and_no_balance_unavailable() {
    let fakes = Fakes::new();
    for id in [1, 2] {
        fakes.accounts.insert(profile_memory::sample_account(id));
        fakes.rewards.set(id, Some(RewardsBalance { points: 10 * id, tier: Some("silver".into()) }));
    }
    let cache = MemoryCache::new();
    let (one, two) = (fakes.tokens.issue(1), fakes.tokens.issue(2));
    let app =
        Running::start(fakes.builder(settings(&["--rewards-cache-ttl-s", "30"])).cache(cache.clone())).await;
    let http = Http::new();
    let profile = app.url("/user/profile");

    let live = http.get(&profile, &one).await.json();
    assert_eq!(live["rewards"]["status"], "live");
    let as_of = live["rewards"]["as_of"].clone();
    assert!(as_of.is_string(), "{live}");
    assert!(cache.peek_profile(1).is_some(), "the supplied cache is the one in use");
    let cached = http.get(&profile, &one).await.json();
    assert_eq!(cached["rewards"]["status"], "cached", "within the window, no new call");
    assert_eq!(fakes.rewards.calls(), 1);

    // The rewards service fails from now on, and the window has passed.
    fakes.rewards.fail_always(true);
    fakes.clock.advance(Duration::from_secs(31));
    let stale = http.get(&profile, &one).await;
    assert_eq!(stale.status, 200, "a failing rewards service never fails the profile");
    let stale = stale.json();
    assert_eq!(
        stale["rewards"],
        json!({"points": 10, "tier": "silver", "status": "stale", "as_of": as_of}),
        "the last known balance, with the time it was fetched"
    );

    // Nothing is known of user 2's balance: unavailable, points 0, no tier, no time.
    let unknown = http.get(&profile, &two).await;
    assert_eq!(unknown.status, 200, "{}", unknown.text());
    assert_eq!(
        unknown.json()["rewards"],
        json!({"points": 0, "tier": null, "status": "unavailable", "as_of": null})
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_seeds_an_empty_supplied_main_database_and_metrics_show_its_pools() {
    let fakes = Fakes::new();
    let token = fakes.tokens.issue(1000);
    let app = Running::start(fakes.builder(settings(&["--demo"]))).await;
    assert!(fakes.accounts.get(1000).is_some() && fakes.accounts.get(1001).is_none(), "1000 demo users");

    let http = Http::new();
    let resp = http.get(&app.url("/user/profile"), &token).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["statistics"]["orders_count"], 10, "ten orders each");
    // No demo stub: the supplied rewards port is asked, and knows nobody (the 404 case).
    assert_eq!(resp.json()["rewards"]["points"], 0);
    assert_eq!(resp.json()["rewards"]["status"], "live");
    assert_eq!(fakes.rewards.calls(), 1);

    let metrics = http.send("GET", &app.url("/metrics"), &[], None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for db in ["main", "profiles"] {
        assert!(text.contains(&format!("db_pool_size{{db=\"{db}\"}}")), "no pool gauge for {db}:\n{text}");
    }
    app.stop().await;

    // A second start finds accounts and seeds nothing more.
    let again = fakes.builder(settings(&["--demo"])).build().await.expect("builds again");
    assert!(fakes.accounts.get(1001).is_none(), "a database with accounts is left alone");
    again.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_settings_build_the_app_on_sqlite_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let main = dir.path().join("db/main.db").display().to_string();
    let profiles = dir.path().join("db/profiles.db").display().to_string();
    let db = ["--main-db", main.as_str(), "--profiles-db", profiles.as_str(), "--jwt-secret", SECRET];
    let with = |extra: &[&str]| settings(&[&db[..], extra].concat());

    // Demo mode on fresh files: seeded through the store's upkeep trait, the rewards stub
    // started, the configured secret used for tokens.
    let app = App::build(with(&["--demo", "--grpc-listen", "127.0.0.1:0"])).await.expect("builds on SQLite");
    assert!(std::path::Path::new(&main).exists() && std::path::Path::new(&profiles).exists());
    let listeners = app.bind().await.expect("binds");
    let grpc = listeners.grpc_addr().expect("gRPC is bound when configured");
    tokio::net::TcpStream::connect(grpc).await.expect("the gRPC listener accepts connections");
    let base = format!("http://{}", listeners.http_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(app.serve(listeners, async move {
        let _ = stopped.await;
    }));
    let running = Running { base, stop, done };

    let http = Http::new();
    let token = common::token(7);
    assert_eq!(http.send("GET", &running.url("/readyz"), &[], None).await.status, 200);
    let read = http.get(&running.url("/user/profile"), &token).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let orders = read.json()["statistics"]["orders_count"].as_i64().expect("a count");
    assert!((1..=10).contains(&orders), "most of the ten demo orders are completed: {orders}");
    assert_eq!(read.json()["rewards"]["status"], "live", "the demo stub answers");
    let patched = http
        .patch(
            &running.url("/user/profile"),
            &token,
            &json!({"personal": {"city": "Lyon"}}),
            &[("if-match", &etag(&read))],
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    running.stop().await;

    // Not demo mode, same files: the pools were closed cleanly and the write is there.
    let running = Running::start(App::builder(with(&[]))).await;
    let read = http.get(&running.url("/user/profile"), &token).await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["version"], 1);
    assert_eq!(read.json()["personal"]["city"], "Lyon");
    assert_eq!(read.json()["rewards"]["status"], "unavailable", "no rewards URL configured");
    let forged = common::craft_token(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "7", "exp": common::now_s() + 600}),
        Some(jsonwebtoken::Algorithm::HS256),
        b"another-secret-entirely-0123456789",
    );
    assert_eq!(http.get(&running.url("/user/profile"), &forged).await.status, 401);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_before_any_database_is_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let main = dir.path().join("main.db").display().to_string();
    let profiles = dir.path().join("profiles.db").display().to_string();

    let no_secret = settings(&["--main-db", &main, "--profiles-db", &profiles]);
    let e = App::build(no_secret).await.err().expect("no secret, no app");
    assert_eq!(e.setting, Some("--jwt-secret (PROFILE_JWT_SECRET)"));

    let bad_profiles =
        settings(&["--main-db", &main, "--profiles-db", "mysql://u:pw@h/db", "--jwt-secret", SECRET]);
    let e = App::build(bad_profiles).await.err().expect("unknown scheme, no app");
    assert_eq!(e.setting, Some("--profiles-db (PROFILE_PROFILES_DB)"));
    assert!(!e.message.contains("pw"), "{}", e.message);

    assert!(!std::path::Path::new(&main).exists(), "a refused start leaves no database file behind");
}
