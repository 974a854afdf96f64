//! Faults, against the real binary: a database locked by another process, a rewards
//! service that is down, slow and flapping under load, and the process killed with
//! SIGKILL in the middle of cross-database writes.
#![allow(missing_docs)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Dbs, Http, Resp, Server, assert_no_leaks, request_log_lines, token};
use diesel::Connection;
use diesel::connection::SimpleConnection;
use profile_rewards_http::stub::{StubControl, StubMode, StubServer, expected_balance};
use serde_json::{Value, json};

/// Another process's write transaction on a database file, held until dropped.
struct WriteLock(diesel::SqliteConnection);

impl WriteLock {
    fn hold(db: &Path) -> Self {
        let mut c = diesel::SqliteConnection::establish(&db.display().to_string()).expect("open database");
        c.batch_execute("PRAGMA busy_timeout = 5000; BEGIN EXCLUSIVE").expect("take the write lock");
        Self(c)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.batch_execute("COMMIT");
    }
}

fn assert_unavailable(r: &Resp, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
    let retry = r.header("retry-after").unwrap_or_default();
    assert!(retry.parse::<u32>().is_ok_and(|s| (1..=60).contains(&s)), "{what}: Retry-After {retry:?}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(r.json()["status"], 503, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_refuses_writes_with_503_and_reads_go_on() {
    let dbs = Dbs::new();
    dbs.seed(3);
    let server = Server::start(&dbs, &["--db-busy-timeout-ms", "300"]);
    let http = Http::new();
    let url = server.url("/user/profile");
    let (u1, u2, u3) = (token(1), token(2), token(3));
    for (t, city) in [(&u1, "Rome"), (&u2, "Oslo")] {
        let r = http.patch(&url, t, &json!({"personal": {"city": city}}), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Warm user 3's profile into the cache.
    assert_eq!(http.get(&url, &u3).await.status, 200);

    // The profiles database, write-locked by another process for longer than the busy timeout.
    let lock = WriteLock::hold(&dbs.profiles());
    let started = Instant::now();
    let r = http.patch(&url, &u1, &json!({"personal": {"city": "Paris"}}), &[]).await;
    assert_unavailable(&r, "profile PATCH, profiles db locked");
    assert!(started.elapsed() < Duration::from_secs(3), "gave up after {:?}", started.elapsed());
    let r = http
        .patch(&url, &u2, &json!({"personal": {"email": "two.new@example.com", "city": "Bergen"}}), &[])
        .await;
    assert_unavailable(&r, "e-mail PATCH, profiles db locked");
    // Reads go on: the cached profile without touching the database, the others from it
    // (SQLite's WAL lets readers past a writer), unchanged by the refused writes.
    let r = http.get(&url, &u3).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let timing = r.header("server-timing").unwrap_or_default();
    assert!(!timing.contains("db_profiles"), "user 3 is served from the cache: {timing}");
    let p1 = http.get(&url, &u1).await;
    assert_eq!(p1.status, 200, "{}", p1.text());
    assert_eq!(p1.json()["personal"]["city"], "Rome");
    assert_eq!(p1.json()["version"], 1);
    let p2 = http.get(&url, &u2).await.json();
    assert_eq!(
        (p2["personal"]["email"].as_str(), p2["personal"]["city"].as_str()),
        (Some("user2@example.com"), Some("Oslo"))
    );
    drop(lock);

    // Released: writes work again, the e-mail change included.
    let r = http.patch(&url, &u1, &json!({"personal": {"city": "Paris"}}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    let r = http
        .patch(&url, &u2, &json!({"personal": {"email": "two.new@example.com", "city": "Bergen"}}), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The main database locked: an e-mail change answers 503 and is left to the journal;
    // a change of profile fields only does not need the main database and goes through.
    let lock = WriteLock::hold(&dbs.main());
    let r = http
        .patch(&url, &u2, &json!({"personal": {"email": "two.newer@example.com", "city": "Tromso"}}), &[])
        .await;
    assert_unavailable(&r, "e-mail PATCH, main db locked");
    let r = http.patch(&url, &u1, &json!({"personal": {"city": "Lyon"}}), &[]).await;
    assert_eq!(r.status, 200, "profile-only PATCH with the main db locked: {}", r.text());
    let p2 = http.get(&url, &u2).await.json();
    assert_eq!(p2["personal"]["email"], "two.new@example.com", "the state before the change, whole");
    assert_eq!(p2["personal"]["city"], "Bergen");
    // The unfinished change cannot be settled while the lock lasts: counted as stuck,
    // and it holds up nobody else.
    let metric = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("journal_entries_stuck "))
            .map(|l| l.split(' ').nth(1).unwrap_or("").to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = http.send("GET", &server.url("/metrics"), &[], None).await.text();
        if metric(&m).as_deref() == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "the stuck entry never showed in /metrics: {:?}", metric(&m));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = http.patch(&url, &u1, &json!({"personal": {"city": "Nice"}}), &[]).await;
    assert_eq!(r.status, 200, "other users' PATCHes go on beside a stuck entry: {}", r.text());
    drop(lock);
    // Released: the settler carries the change through by itself (rolled forward).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p2 = http.get(&url, &u2).await.json();
        if p2["personal"]["email"] == "two.newer@example.com" {
            assert_eq!(p2["personal"]["city"], "Tromso", "e-mail and fields together");
            break;
        }
        assert!(Instant::now() < deadline, "the change was never settled: {p2}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = http.send("GET", &server.url("/metrics"), &[], None).await.text();
    assert_eq!(metric(&m).as_deref(), Some("0"), "nothing stuck once settled");
    let r = http
        .patch(&url, &u2, &json!({"personal": {"email": "two.newer@example.com", "city": "Tromso"}}), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["personal"]["city"], "Tromso");

    let temp = dbs.dir.path().display().to_string();
    let stderr_path = server.stderr_path.clone();
    assert!(server.terminate().success());
    let logs = std::fs::read_to_string(stderr_path).unwrap();
    assert!(logs.contains("\"status\":503"), "the 503s are logged");
    assert_no_leaks(&request_log_lines(&logs), "the server log", &[&u1, &u2, &temp, "example.com"]);
}

/// What a profile's `rewards` must say for `user`, whatever the rewards service did.
fn check_rewards(user: i64, r: &Value) -> &'static str {
    let status = r["status"].as_str().unwrap_or_default();
    match status {
        "unavailable" => {
            assert_eq!(r, &json!({"points": 0, "tier": null, "status": "unavailable", "as_of": null}));
            "unavailable"
        }
        "live" | "cached" | "stale" => {
            let want = expected_balance(user);
            assert_eq!(r["points"], want.as_ref().map_or(0, |b| b.points), "user {user}: {r}");
            assert_eq!(r["tier"], json!(want.and_then(|b| b.tier)), "user {user}: {r}");
            assert!(r["as_of"].is_string(), "user {user}: {r}");
            match status {
                "live" => "live",
                "cached" => "cached",
                _ => "stale",
            }
        }
        other => panic!("user {user}: rewards status {other:?}: {r}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewards_down_slow_and_flapping_under_load_never_fail_the_profile() {
    const USERS: i64 = 20;
    const TASKS: usize = 4;
    /// Each load task stops when the faults are over, or after this many requests.
    const MAX_PER_TASK: usize = 150;
    let dbs = Dbs::new();
    dbs.seed(USERS as u64);
    let stub = StubServer::start_local(StubMode::Normal).await.unwrap();
    let stub_addr = stub.addr();
    let control: StubControl = stub.control().clone();
    let server = Server::start(
        &dbs,
        &[
            "--rewards-url",
            &stub.url(),
            "--rewards-timeout-ms",
            "100",
            "--rewards-cache-ttl-s",
            "1",
            "--rewards-breaker-failures",
            "3",
            "--rewards-breaker-cooldown-ms",
            "200",
        ],
    );
    let http = Http::new();
    let url = server.url("/user/profile");
    // Half the users have a known balance before the trouble starts.
    for user in 1..=USERS / 2 {
        let r = http.get(&url, &token(user)).await;
        assert_eq!(r.status, 200);
        assert_eq!(check_rewards(user, &r.json()["rewards"]), "live");
    }

    let done = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..TASKS {
        let (http, url, done) = (http.clone(), url.clone(), done.clone());
        load.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(MAX_PER_TASK);
            for i in 0..MAX_PER_TASK {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let user = 1 + (task as i64 * 7 + i as i64 * 3) % USERS;
                let t = token(user);
                let started = Instant::now();
                let r = if i % 5 == 4 {
                    let theme = ["light", "dark", "system"][i % 3];
                    http.patch(&url, &t, &json!({"preferences": {"theme": theme}}), &[]).await
                } else {
                    http.get(&url, &t).await
                };
                let took = started.elapsed();
                assert_eq!(r.status, 200, "task {task} request {i} (user {user}): {}", r.text());
                assert!(took < Duration::from_secs(2), "request took {took:?}: stalled on rewards");
                seen.push(check_rewards(user, &r.json()["rewards"]));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        }));
    }

    // The rewards service's bad day, in phases, while the load runs.
    let phase = |ms| tokio::time::sleep(Duration::from_millis(ms));
    phase(250).await;
    control.set_mode(StubMode::Fail500); // up, but failing
    phase(300).await;
    control.set_mode(StubMode::Hang); // slow: nothing within the timeout
    phase(300).await;
    control.set_mode(StubMode::Normal);
    stub.shutdown().await; // down: connections refused
    phase(400).await;
    let mut stub = None;
    for _ in 0..50 {
        match StubServer::start(stub_addr, control.clone()).await {
            Ok(s) => {
                stub = Some(s);
                break;
            }
            Err(_) => phase(20).await,
        }
    }
    let stub = stub.expect("the rewards stub restarts on its port");
    for i in 0..16 {
        // Flapping.
        control.set_mode(if i % 2 == 0 { StubMode::Fail500 } else { StubMode::Normal });
        phase(40).await;
    }
    control.set_mode(StubMode::Malformed);
    phase(200).await;
    control.set_mode(StubMode::Normal);
    done.store(true, Ordering::Relaxed);

    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for task in load {
        for s in task.await.expect("load task") {
            *counts.entry(s).or_default() += 1;
        }
    }
    let total = counts.values().sum::<usize>();
    assert!(total >= 200, "only {total} requests ran during the faults");
    assert!(counts.get("live").is_some_and(|n| *n > 0), "{counts:?}");
    assert!(
        counts.get("stale").copied().unwrap_or(0) + counts.get("unavailable").copied().unwrap_or(0) > 0,
        "the faults never reached a response: {counts:?}"
    );

    // Healthy again: once the window and the breaker's cooldown pass, balances are live.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http.get(&url, &token(USERS)).await;
        assert_eq!(r.status, 200);
        if check_rewards(USERS, &r.json()["rewards"]) == "live" {
            break;
        }
        assert!(Instant::now() < deadline, "rewards never came back live: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    stub.shutdown().await;
    eprintln!("{total} requests under rewards faults, rewards status: {counts:?}");
}

/// Which PATCH number `k` a profile shows for user `u`: from its e-mail, city and company,
/// which every PATCH of the burst sets together (0: none applied yet).
fn patch_number(u: i64, p: &Value) -> (u64, u64, u64) {
    let email = p["personal"]["email"].as_str().unwrap_or_default();
    let from_email = if email == format!("user{u}@example.com") {
        0
    } else {
        email
            .strip_prefix(&format!("u{u}-k"))
            .and_then(|r| r.strip_suffix("@example.com"))
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("user {u}: unexpected e-mail {email}"))
    };
    let num = |v: &Value, prefix: &str| match v.as_str() {
        None => 0,
        Some(s) => s.strip_prefix(prefix).and_then(|k| k.parse().ok()).unwrap_or_else(|| panic!("{s}")),
    };
    (from_email, num(&p["personal"]["city"], "City "), num(&p["business"]["company_name"], "Co "))
}

fn burst_patch(u: i64, k: u64) -> Value {
    json!({"personal": {"email": format!("u{u}-k{k}@example.com"), "city": format!("City {k}")},
           "business": {"company_name": format!("Co {k}")}})
}

/// After a restart: every account shows one whole PATCH, at least the last acknowledged.
async fn check_after_restart(http: &Http, server: &Server, acked: &[u64], tried: &[u64]) {
    for (i, (&ok, &last)) in acked.iter().zip(tried).enumerate() {
        let u = i as i64 + 1;
        let r = http.get(&server.url("/user/profile"), &token(u)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let (e, c, b) = patch_number(u, &r.json());
        assert!(e == c && c == b, "user {u}: e-mail of PATCH {e}, city of {c}, company of {b}");
        assert!(e >= ok, "user {u}: PATCH {ok} was answered 200 but the profile shows {e}");
        assert!(e <= last, "user {u}: shows PATCH {e}, never sent (last {last})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_email_and_profile_writes_loses_nothing_acknowledged_and_splits_nothing() {
    const USERS: usize = 6;
    let dbs = Dbs::new();
    dbs.seed(USERS as u64);
    let http = Http::new();
    // Per user: the last PATCH answered 200, and the last one sent.
    let mut acked = vec![0u64; USERS];
    let mut tried = vec![0u64; USERS];
    let mut answered = 0;
    for (round, kill_after_ms) in [180u64, 330, 470].into_iter().enumerate() {
        let mut server = Server::start(&dbs, &[]);
        check_after_restart(&http, &server, &acked, &tried).await;
        let url = server.url("/user/profile");
        let mut clients = Vec::new();
        for (i, &sent) in tried.iter().enumerate() {
            let (http, url, first) = (http.clone(), url.clone(), sent + 1);
            clients.push(tokio::spawn(async move {
                let u = i as i64 + 1;
                let t = token(u);
                let auth = format!("Bearer {t}");
                let (mut ok, mut k) = (None, first);
                loop {
                    let body = serde_json::to_vec(&burst_patch(u, k)).unwrap();
                    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
                    match http.try_send("PATCH", &url, &headers, Some(&body)).await {
                        Ok(r) => {
                            assert_eq!(r.status, 200, "round {round} user {u} PATCH {k}: {}", r.text());
                            ok = Some(k);
                        }
                        // The process died: this PATCH may or may not have happened.
                        Err(_) => return (ok, k),
                    }
                    k += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reaped");
        for (i, c) in clients.into_iter().enumerate() {
            let (ok, last) = c.await.expect("client");
            if let Some(ok) = ok {
                answered += ok - tried[i];
                acked[i] = ok;
            }
            tried[i] = last;
        }
    }
    assert!(answered >= USERS as u64 * 3, "the bursts barely ran: {answered} PATCHes answered");

    // Reads right after a restart show every change whole; what the killed process held
    // is settled once its claim runs out (the journal lease), by the settler.
    let server = Server::start(&dbs, &[]);
    check_after_restart(&http, &server, &acked, &tried).await;
    let cfg = |path| profile_sqlite::DbConfig { path, pool_size: 1, busy_timeout: Duration::from_secs(5) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let profiles = profile_sqlite::open_profiles(&cfg(dbs.profiles())).await.unwrap();
        let left = profiles.pending_email_changes().await.unwrap().len();
        profiles.close().await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} journal entries still pending 15 s after the restart");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    check_after_restart(&http, &server, &acked, &tried).await;
    let stderr_path = server.stderr_path.clone();
    assert!(server.terminate().success());
    let logs = std::fs::read_to_string(stderr_path).unwrap();
    assert_no_leaks(&request_log_lines(&logs), "the server log", &["example.com"]);

    // The files themselves: both databases agree, and no journal entry is left open.
    use profile_core::ports::{AccountRepository, ProfileRepository};
    let main = profile_sqlite::open_main(&cfg(dbs.main())).await.unwrap();
    let profiles = profile_sqlite::open_profiles(&cfg(dbs.profiles())).await.unwrap();
    assert!(profiles.pending_email_changes().await.unwrap().is_empty(), "journal entries left pending");
    for u in 1..=USERS as i64 {
        let account = main.account(u).await.unwrap().expect("account");
        let record = profiles.load(u).await.unwrap();
        let city = record.as_ref().and_then(|r| r.fields.personal.city.clone());
        let company = record.as_ref().and_then(|r| r.fields.business.company_name.clone());
        let p = json!({"personal": {"email": account.email, "city": city},
                       "business": {"company_name": company}});
        let (e, c, b) = patch_number(u, &p);
        assert!(e == c && c == b, "user {u} on disk: e-mail of PATCH {e}, city of {c}, company of {b}");
        assert!(e >= acked[u as usize - 1], "user {u} on disk lost an acknowledged PATCH");
    }
    main.close().await;
    profiles.close().await;
}
