//! The real binary, driven as a client would, against SPEC §2–§7.
#![allow(missing_docs)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Dbs, Http, Server, bin, token};
use serde_json::json;

/// Every key of SPEC §4, nested, present (null allowed where optional).
fn assert_shape(p: &serde_json::Value) {
    let top = [
        "user_id",
        "version",
        "created_at",
        "updated_at",
        "personal",
        "preferences",
        "statistics",
        "business",
        "rewards",
    ];
    for k in top {
        assert!(p.get(k).is_some(), "missing top-level key {k} in {p}");
    }
    for k in [
        "display_name",
        "first_name",
        "last_name",
        "email",
        "phone",
        "avatar_url",
        "bio",
        "birth_date",
        "city",
        "country",
    ] {
        assert!(p["personal"].get(k).is_some(), "missing personal.{k}");
    }
    for k in ["language", "timezone", "theme", "currency", "notifications", "privacy"] {
        assert!(p["preferences"].get(k).is_some(), "missing preferences.{k}");
    }
    for k in ["email", "sms", "push", "marketing"] {
        assert!(p["preferences"]["notifications"][k].is_boolean(), "notifications.{k}");
    }
    assert!(p["preferences"]["privacy"]["profile_visibility"].is_string());
    assert!(p["preferences"]["privacy"]["show_activity"].is_boolean());
    for k in [
        "member_since",
        "last_login_at",
        "login_count",
        "orders_count",
        "total_spent_cents",
        "last_order_at",
        "profile_completeness",
    ] {
        assert!(p["statistics"].get(k).is_some(), "missing statistics.{k}");
    }
    for k in ["company_name", "job_title", "tax_id", "website", "billing_address"] {
        assert!(p["business"].get(k).is_some(), "missing business.{k}");
    }
    for k in ["points", "tier", "status", "as_of"] {
        assert!(p["rewards"].get(k).is_some(), "missing rewards.{k}");
    }
}

fn assert_problem(r: &common::Resp, status: u16) -> serde_json::Value {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "problem content type for {status}"
    );
    let b = r.json();
    assert_eq!(b["status"], status);
    assert!(b["title"].is_string() && b["type"].is_string());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_the_contract_as_a_client() {
    let dbs = Dbs::new();
    walk_the_contract(&dbs, &|sql| common::exec_sql(&dbs.main(), sql)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_the_contract_as_a_client_on_postgres() {
    let server = profile_postgres::testing::PgServer::shared();
    let (main, profiles) = (server.database(), server.database());
    walk_the_contract(&Dbs::postgres(main.url(), profiles.url()), &|sql| {
        main.psql(sql);
    })
    .await;
}

/// SPEC §3–§7 as a client sees them, on whichever databases `dbs` names; `main_sql`
/// writes to the main database as the wider application does.
async fn walk_the_contract(dbs: &Dbs, main_sql: &dyn Fn(&str)) {
    dbs.seed(3);
    let stub =
        profile_rewards_http::stub::StubServer::start_local(profile_rewards_http::stub::StubMode::Normal)
            .await
            .unwrap();
    let rewards_url = format!("http://{}", stub.addr());
    let server = Server::start(dbs, &["--rewards-url", &rewards_url]);
    let http = Http::new();
    let me = token(1);
    let url = server.url("/user/profile");

    // Operations.
    assert_eq!(http.send("GET", &server.url("/healthz"), &[], None).await.status, 200);
    assert_eq!(http.send("GET", &server.url("/readyz"), &[], None).await.status, 200);

    // A never-edited profile, complete, with defaults.
    let r = http.get(&url, &me).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(r.header("cache-control"), Some("private, no-cache"));
    assert_eq!(r.header("vary"), Some("Authorization"));
    let timing = r.header("server-timing").unwrap().to_owned();
    for step in ["total;dur=", "db_profiles;dur=", "db_main;dur=", "rewards;dur="] {
        assert!(timing.contains(step), "Server-Timing {timing} lacks {step}");
    }
    assert!(r.header("x-request-id").is_some());
    let p = r.json();
    assert_shape(&p);
    assert_eq!(p["user_id"], 1);
    assert_eq!(p["version"], 0);
    assert_eq!(p["updated_at"], serde_json::Value::Null);
    assert_eq!(p["personal"]["email"], "user1@example.com");
    assert_eq!(p["personal"]["display_name"], "user1");
    assert_eq!(p["preferences"]["language"], "en");
    assert_eq!(p["preferences"]["timezone"], "UTC");
    assert_eq!(p["preferences"]["theme"], "system");
    assert_eq!(p["preferences"]["currency"], "USD");
    assert_eq!(p["business"]["billing_address"], serde_json::Value::Null);
    assert_eq!(p["rewards"]["status"], "live");
    let etag = r.header("etag").unwrap().to_owned();

    // Same data → same ETag; rewards now cached, status differs but tag does not.
    let r2 = http.get(&url, &me).await;
    assert_eq!(r2.json()["rewards"]["status"], "cached");
    assert_eq!(r2.header("etag"), Some(etag.as_str()));
    let nm = http
        .send("GET", &url, &[("authorization", &format!("Bearer {me}")), ("if-none-match", &etag)], None)
        .await;
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());

    // Merge patch: nested merge, trimming, normalisation.
    let r = http
        .patch(
            &url,
            &me,
            &json!({"personal": {"display_name": "  Ada L. ", "country": "gb", "phone": "+442071234567"},
                    "preferences": {"theme": "dark", "notifications": {"sms": true}},
                    "business": {"billing_address": {"line1": "1 Main St", "city": "London", "country": "gb"}}}),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert_shape(&p);
    assert_eq!(p["version"], 1);
    assert_eq!(p["personal"]["display_name"], "Ada L.");
    assert_eq!(p["personal"]["country"], "GB");
    assert_eq!(
        p["preferences"]["notifications"],
        json!({"email": true, "sms": true, "push": true, "marketing": false})
    );
    assert_eq!(p["business"]["billing_address"]["country"], "GB");
    assert_eq!(p["business"]["billing_address"]["line2"], serde_json::Value::Null);
    let new_etag = r.header("etag").unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let after = http.get(&url, &me).await;
    assert_eq!(after.header("etag"), Some(new_etag.as_str()));
    let mut a = after.json();
    let mut b = p.clone();
    a["rewards"]["status"] = json!(null);
    a["rewards"]["as_of"] = json!(null);
    b["rewards"]["status"] = json!(null);
    b["rewards"]["as_of"] = json!(null);
    assert_eq!(a, b, "PATCH returns what a GET right after returns");

    // Stale If-Match → 412, nothing written.
    let r = http.patch(&url, &me, &json!({"personal": {"city": "Paris"}}), &[("if-match", &etag)]).await;
    assert_problem(&r, 412);
    assert_eq!(http.get(&url, &me).await.json()["personal"]["city"], serde_json::Value::Null);

    // A login recorded in the main database while the profile is cached: GET serves the
    // cached copy, and a PATCH under the ETag it served applies to what it showed.
    let third = token(3);
    let shown = http.get(&url, &third).await;
    main_sql("UPDATE users SET login_count = login_count + 1 WHERE id = 3");
    let served = http.get(&url, &third).await;
    assert_eq!(served.header("etag"), shown.header("etag"), "served from the profile cache");
    let served_tag = served.header("etag").unwrap().to_owned();
    let logins = served.json()["statistics"]["login_count"].clone();
    let r = http.patch(&url, &third, &json!({"personal": {"bio": "Hi"}}), &[("if-match", &served_tag)]).await;
    assert_eq!(r.status, 200, "the ETag GET serves must satisfy If-Match: {}", r.text());
    assert_eq!(r.json()["version"], 1);
    assert_eq!(r.json()["statistics"]["login_count"], logins, "applied to the state the client was shown");

    // A no-op patch keeps the version.
    let r = http.patch(&url, &me, &json!({"preferences": {"theme": "dark"}}), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], 1);

    // Every invalid field at once, nothing written.
    let r = http
        .patch(
            &url,
            &me,
            &json!({"personal": {"phone": "12", "birth_date": "2030-01-01", "nickname": "x"},
                    "preferences": {"notifications": {"sms": "yes"}, "timezone": "Mars/Base"},
                    "statistics": {"login_count": 3}}),
            &[],
        )
        .await;
    let b = assert_problem(&r, 422);
    let fields: Vec<&str> =
        b["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for f in [
        "personal.phone",
        "personal.birth_date",
        "personal.nickname",
        "preferences.notifications.sms",
        "preferences.timezone",
        "statistics",
    ] {
        assert!(fields.contains(&f), "422 does not name {f}: {fields:?}");
    }
    assert_eq!(http.get(&url, &me).await.json()["version"], 1);

    // Media type, size, syntax.
    let auth = format!("Bearer {me}");
    let r = http
        .send("PATCH", &url, &[("authorization", &auth), ("content-type", "text/plain")], Some(b"{}"))
        .await;
    assert_problem(&r, 415);
    let big = vec![b' '; 17 * 1024];
    let r = http
        .send("PATCH", &url, &[("authorization", &auth), ("content-type", "application/json")], Some(&big))
        .await;
    assert_problem(&r, 413);
    let r = http
        .send(
            "PATCH",
            &url,
            &[("authorization", &auth), ("content-type", "application/json")],
            Some(b"{nope"),
        )
        .await;
    assert_problem(&r, 400);
    let r = http
        .send("PATCH", &url, &[("authorization", &auth), ("content-type", "application/json")], Some(b"[1]"))
        .await;
    assert_problem(&r, 422);

    // E-mail: taken (case-insensitively) → 409 and nothing of the patch applied.
    let r = http
        .patch(&url, &me, &json!({"personal": {"email": "USER2@example.com", "city": "Rome"}}), &[])
        .await;
    assert_problem(&r, 409);
    let p = http.get(&url, &me).await.json();
    assert_eq!(p["personal"]["email"], "user1@example.com");
    assert_eq!(p["personal"]["city"], serde_json::Value::Null);
    // E-mail and profile together.
    let r =
        http.patch(&url, &me, &json!({"personal": {"email": "Ada@Example.com", "city": "Rome"}}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["personal"]["email"], "ada@example.com");
    assert_eq!(r.json()["personal"]["city"], "Rome");
    // The old address is free again for another account.
    let r = http.patch(&url, &token(2), &json!({"personal": {"email": "user1@example.com"}}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Authentication.
    assert_eq!(
        http.send("GET", &url, &[], None).await.header("www-authenticate").map(|h| h.starts_with("Bearer")),
        Some(true)
    );
    assert_problem(&http.send("GET", &url, &[], None).await, 401);
    assert_problem(&http.get(&url, "not-a-token").await, 401);
    assert_problem(&http.get(&url, &token(999)).await, 404);

    // Routing.
    assert_problem(&http.send("GET", &server.url("/nope"), &[], None).await, 404);
    let r = http.send("DELETE", &url, &[("authorization", &auth)], None).await;
    assert_problem(&r, 405);
    assert!(r.header("allow").unwrap().contains("PATCH"));

    // Metrics after traffic.
    let m = http.send("GET", &server.url("/metrics"), &[], None).await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "cache_hits_total",
        "cache_misses_total",
        "cache_entries",
        "rewards_calls_total",
        "rewards_call_duration_seconds",
        "rewards_breaker_state",
        "db_pool_size",
        "db_pool_in_use",
        "journal_recoveries_total",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }

    // Nothing sensitive in the logs.
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    stub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_token_or_email_and_shutdown_is_clean() {
    let dbs = Dbs::new();
    dbs.seed(1);
    let server = Server::start(&dbs, &[]);
    let http = Http::new();
    let me = token(1);
    let r = http.get(&server.url("/user/profile"), &me).await;
    assert_eq!(r.status, 200);
    // No rewards URL configured: rewards unavailable, profile still served.
    assert_eq!(
        r.json()["rewards"],
        json!({"points": 0, "tier": null, "status": "unavailable", "as_of": null})
    );
    let r = http
        .patch(
            &server.url("/user/profile"),
            &me,
            &json!({"personal": {"email": "secret.person@example.com"}}),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let stderr_path = server.stderr_path.clone();
    assert!(server.terminate().success());
    let logs = std::fs::read_to_string(stderr_path).unwrap();
    assert!(logs.contains("/user/profile"), "one line per request with the route: {logs}");
    assert!(!logs.contains(&me), "token leaked into logs");
    assert!(!logs.contains("example.com"), "email leaked into logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let dbs = Dbs::new();
    dbs.seed(1);
    let stub =
        profile_rewards_http::stub::StubServer::start_local(profile_rewards_http::stub::StubMode::Hang)
            .await
            .unwrap();
    let rewards_url = format!("http://{}", stub.addr());
    // A slow rewards call keeps the request in flight long enough to signal during it.
    let server = Server::start(&dbs, &["--rewards-url", &rewards_url, "--rewards-timeout-ms", "1500"]);
    let http = Http::new();
    let url = server.url("/user/profile");
    let me = token(1);
    let inflight = tokio::spawn({
        let http = http.clone();
        async move { http.get(&url, &me).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = server.child.id().to_string();
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let r = inflight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    assert_eq!(r.json()["rewards"]["status"], "unavailable");
    let mut server = server;
    let status = common::wait_timeout(&mut server.child, Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "exit 0 after SIGTERM, got {status:?}");
    assert!(started.elapsed() < Duration::from_secs(12));
    stub.shutdown().await;
}

fn last_stderr_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").to_owned()
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_setting() {
    let dbs = Dbs::new();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(bin());
        c.args(args).env_remove("PROFILE_JWT_SECRET");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let db = dbs.args();
    let db: Vec<&str> = db.iter().map(String::as_str).collect();

    let out = run(&[&["serve", "--listen", "127.0.0.1:0"][..], &db].concat(), &[]);
    assert!(!out.status.success());
    let last = last_stderr_line(&out);
    assert!(last.contains("--jwt-secret"), "{last}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(!dbs.main().exists(), "a refused start leaves no database file behind");

    let out = run(&[&["serve", "--jwt-secret", "s", "--listen", "not-an-address"][..], &db].concat(), &[]);
    assert!(!out.status.success());
    assert!(last_stderr_line(&out).contains("--listen"), "{}", last_stderr_line(&out));

    let out = run(
        &["serve", "--jwt-secret", "s", "--listen", "127.0.0.1:0"],
        &[("PROFILE_MAIN_DB", "/proc/no-such/main.db")],
    );
    assert!(!out.status.success());
    let last = last_stderr_line(&out);
    assert!(last.contains("--main-db"), "{last}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    let out = run(&[&["serve", "--jwt-secret", "s", "--rewards-timeout-ms", "soon"][..], &db].concat(), &[]);
    assert!(!out.status.success());
    assert!(last_stderr_line(&out).contains("--rewards-timeout-ms"), "{}", last_stderr_line(&out));
}

#[test]
fn migrate_creates_both_files_and_token_is_accepted() {
    let dbs = Dbs::new();
    let out = Command::new(bin()).arg("migrate").args(dbs.args()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dbs.main().exists() && dbs.profiles().exists());
    // Idempotent.
    let out = Command::new(bin()).arg("migrate").args(dbs.args()).output().unwrap();
    assert!(out.status.success());

    let out =
        Command::new(bin()).args(["token", "--user", "7", "--jwt-secret", common::SECRET]).output().unwrap();
    assert!(out.status.success());
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(tok.split('.').count(), 3, "a JWT");
    let out = Command::new(bin()).args(["token", "--user", "0", "--jwt-secret", "x"]).output().unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_subcommand_mints_what_serve_accepts() {
    let dbs = Dbs::new();
    dbs.seed(2);
    let server = Server::start_env(&dbs, &["--jwt-issuer", "acme", "--jwt-audience", "profile"], &[]);
    let out = Command::new(bin())
        .args([
            "token",
            "--user",
            "2",
            "--jwt-secret",
            common::SECRET,
            "--jwt-issuer",
            "acme",
            "--jwt-audience",
            "profile",
        ])
        .output()
        .unwrap();
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let http = Http::new();
    let r = http.get(&server.url("/user/profile"), &tok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["user_id"], 2);
    // A token without the configured issuer is refused.
    assert_eq!(http.get(&server.url("/user/profile"), &token(2)).await.status, 401);
}
