//! Two instances of the real binary on one pair of SQLite files and one throwaway Redis
//! (SPEC §10): changes reach the other instance within 100 ms, balances are shared, and
//! a Redis that dies or hangs costs correctness nothing.

mod common;

use std::time::{Duration, Instant};

use common::{Dbs, Http, Resp, Server, token};
use profile_cache_redis::testing::RedisServer;
use profile_rewards_http::stub::{StubMode, StubServer};

/// The profile without the per-request rewards fields.
fn data(r: &Resp) -> serde_json::Value {
    let mut v = r.json();
    let rewards = v["rewards"].as_object_mut().expect("rewards");
    rewards.remove("status");
    rewards.remove("as_of");
    v
}

async fn metric(http: &Http, server: &Server, name: &str) -> f64 {
    let text = http.send("GET", &server.url("/metrics"), &[], None).await.text();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_connected(http: &Http, server: &Server, want: bool, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let connected = metric(http, server, "shared_cache_connected").await == 1.0;
        if connected == want {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Pair {
    a: Server,
    b: Server,
    http: Http,
    _stub: StubServer,
}

async fn pair(dbs: &Dbs, redis: &RedisServer) -> Pair {
    let stub = StubServer::start_local(StubMode::Normal).await.expect("stub");
    let rewards_url = format!("http://{}", stub.addr());
    let url = redis.url();
    let args = ["--rewards-url", rewards_url.as_str(), "--cache-url", url.as_str()];
    let a = Server::start(dbs, &args);
    let b = Server::start(dbs, &args);
    let http = Http::new();
    for s in [&a, &b] {
        assert!(wait_connected(&http, s, true, Duration::from_secs(10)).await, "never connected to Redis");
    }
    Pair { a, b, http, _stub: stub }
}

/// PATCHes `name` on `writer`, then checks `reader` answers the same body and ETag 100 ms later.
async fn patch_is_seen(p: &Pair, writer: &Server, reader: &Server, user: i64, name: &str) {
    let me = token(user);
    let w = p
        .http
        .patch(
            &writer.url("/user/profile"),
            &me,
            &serde_json::json!({"personal": {"display_name": name}}),
            &[],
        )
        .await;
    assert_eq!(w.status, 200, "{}", w.text());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = p.http.get(&reader.url("/user/profile"), &me).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(data(&r), data(&w), "the other instance serves another body 100 ms after the PATCH");
    assert_eq!(r.header("etag"), w.header("etag"), "the other instance serves another ETag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_cache_and_see_each_others_changes() {
    let dbs = Dbs::new();
    dbs.seed(3);
    let redis = RedisServer::start();
    let p = pair(&dbs, &redis).await;
    let me = token(1);
    // Both hold a copy first.
    for s in [&p.a, &p.b] {
        assert_eq!(p.http.get(&s.url("/user/profile"), &me).await.status, 200);
        assert_eq!(p.http.get(&s.url("/user/profile"), &me).await.status, 200);
    }
    for i in 0..5 {
        patch_is_seen(&p, &p.a, &p.b, 1, &format!("from A {i}")).await;
        patch_is_seen(&p, &p.b, &p.a, 1, &format!("from B {i}")).await;
    }
    // A balance fetched by A is `cached` on B.
    let two = token(2);
    let ra = p.http.get(&p.a.url("/user/profile"), &two).await.json();
    assert_eq!(ra["rewards"]["status"], "live");
    let rb = p.http.get(&p.b.url("/user/profile"), &two).await.json();
    assert_eq!(rb["rewards"]["status"], "cached", "B called the rewards service again");
    assert_eq!(rb["rewards"]["as_of"], ra["rewards"]["as_of"]);
    assert_eq!(rb["rewards"]["points"], ra["rewards"]["points"]);
    // Metrics show the traffic.
    for (s, name) in [(&p.a, "a"), (&p.b, "b")] {
        for m in [
            "shared_cache_invalidations_sent_total",
            "shared_cache_invalidations_received_total",
            "shared_cache_hits_total",
        ] {
            assert!(metric(&p.http, s, m).await > 0.0, "{m} is 0 on {name}");
        }
    }
}

/// Every instance answers correctly, quickly, and ready, with no copy another changed.
async fn still_correct(p: &Pair, user: i64, round: &str) {
    for s in [&p.a, &p.b] {
        assert_eq!(p.http.send("GET", &s.url("/readyz"), &[], None).await.status, 200, "{round}: /readyz");
    }
    for (writer, reader) in [(&p.a, &p.b), (&p.b, &p.a)] {
        let t = Instant::now();
        patch_is_seen(p, writer, reader, user, &format!("{round} {:?}", t)).await;
        // PATCH + 100 ms pause + GET: the outage adds nothing that shows.
        assert!(t.elapsed() < Duration::from_millis(600), "{round}: took {:?}", t.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_hung_redis_costs_nothing_but_speed_and_is_rejoined_by_itself() {
    let dbs = Dbs::new();
    dbs.seed(3);
    let mut redis = RedisServer::start();
    let port = redis.port();
    let p = pair(&dbs, &redis).await;
    let me = token(1);
    for s in [&p.a, &p.b] {
        assert_eq!(p.http.get(&s.url("/user/profile"), &me).await.status, 200);
    }

    // Paused: every answer stays 200 and correct; after 2 s nobody serves an old copy.
    redis.pause();
    for s in [&p.a, &p.b] {
        let t = Instant::now();
        let r = p.http.get(&s.url("/user/profile"), &me).await;
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_millis(300), "a hung Redis cost {:?}", t.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in [&p.a, &p.b] {
        assert!(wait_connected(&p.http, s, false, Duration::from_millis(10)).await, "still 'connected'");
    }
    still_correct(&p, 1, "paused").await;
    redis.resume();
    for s in [&p.a, &p.b] {
        assert!(wait_connected(&p.http, s, true, Duration::from_secs(5)).await, "did not reconnect");
    }
    // Entries from before the pause are unusable; invalidation works again.
    still_correct(&p, 1, "resumed").await;

    // Killed, then started again on the same port.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    still_correct(&p, 1, "killed").await;
    let _redis = RedisServer::start_on(port);
    for s in [&p.a, &p.b] {
        assert!(wait_connected(&p.http, s, true, Duration::from_secs(5)).await, "did not reconnect");
    }
    still_correct(&p, 1, "restarted").await;
    assert!(metric(&p.http, &p.a, "shared_cache_errors_total").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cache_url_exits_naming_the_flag_without_the_password() {
    let dbs = Dbs::new();
    for bad in ["http://:s3cret-pw@127.0.0.1:6379", "redis://:s3cret-pw@[::1"] {
        let out = std::process::Command::new(common::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", common::SECRET, "--cache-url", bad])
            .args(dbs.args())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains("--cache-url"), "last line does not name the flag: {last}");
        assert!(!stderr.contains("s3cret-pw"), "the password is shown: {stderr}");
    }
    assert!(!dbs.main().exists(), "a bad setting left a database behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_never_reaches_the_log_and_the_service_still_serves() {
    let dbs = Dbs::new();
    dbs.seed(1);
    let redis = RedisServer::start();
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/0", redis.port());
    let server = Server::start_env(&dbs, &[], &[("PROFILE_CACHE_URL", &url)]);
    let http = Http::new();
    for _ in 0..3 {
        assert_eq!(http.get(&server.url("/user/profile"), &token(1)).await.status, 200);
    }
    assert_eq!(http.send("GET", &server.url("/readyz"), &[], None).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(&http, &server, "shared_cache_connected").await, 0.0);
    let log = server.stderr();
    assert!(!log.contains("s3cret-pw"), "the password is in the log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_through_both_instances_lose_nothing() {
    let dbs = Dbs::new();
    dbs.seed(1);
    let redis = RedisServer::start();
    let p = pair(&dbs, &redis).await;
    let me = token(1);
    let fields: [(&str, &str); 8] = [
        ("personal", "first_name"),
        ("personal", "last_name"),
        ("personal", "city"),
        ("personal", "bio"),
        ("business", "company_name"),
        ("business", "job_title"),
        ("personal", "display_name"),
        ("business", "tax_id"),
    ];
    let mut tasks = Vec::new();
    for (i, (section, field)) in fields.into_iter().enumerate() {
        let url = if i % 2 == 0 { p.a.url("/user/profile") } else { p.b.url("/user/profile") };
        let (http, me) = (p.http.clone(), me.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..3 {
                let value = format!("V{i}-{k}");
                let body = serde_json::json!({ section: { field: value } });
                let r = http.patch(&url, &me, &body, &[]).await;
                assert_eq!(r.status, 200, "{field}: {}", r.text());
            }
        }));
    }
    for t in tasks {
        t.await.expect("patcher");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ra = p.http.get(&p.a.url("/user/profile"), &me).await;
    let rb = p.http.get(&p.b.url("/user/profile"), &me).await;
    assert_eq!(data(&ra), data(&rb), "the instances disagree");
    assert_eq!(ra.header("etag"), rb.header("etag"));
    let v = ra.json();
    assert_eq!(v["version"], 24, "a patch was lost: {v}");
    for (i, (section, field)) in fields.into_iter().enumerate() {
        assert_eq!(v[section][field], format!("V{i}-2"), "{field} lost its last write");
    }
}
