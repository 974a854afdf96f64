//! The real binary on PostgreSQL (SPEC §10): several instances on one database server,
//! an outage and the recovery after it, mixed kinds, and bad configuration.
#![allow(missing_docs)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Dbs, Http, Server, bin, token};
use profile_postgres::testing::PgServer;
use serde_json::json;

fn last_stderr_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned()
}

/// Starts two instances at once (each migrating the same empty databases).
fn start_two(dbs: &Dbs, extra: &[&str]) -> (Server, Server) {
    std::thread::scope(|s| {
        let a = s.spawn(|| Server::start(dbs, extra));
        let b = s.spawn(|| Server::start(dbs, extra));
        (a.join().expect("instance A"), b.join().expect("instance B"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_queue_writes_of_one_user_and_share_email_uniqueness() {
    let pg = PgServer::shared();
    let (main, profiles) = (pg.database(), pg.database());
    let dbs = Dbs::postgres(main.url(), profiles.url());
    // Both start together on empty databases: the migrations run once, both serve.
    let (a, b) = start_two(&dbs, &["--profile-cache-ttl-s", "0"]);
    let migrations = |folder: &str| {
        let dir = format!("{}/../../{folder}/postgres", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_dir(dir).expect("migrations folder").count().to_string()
    };
    assert_eq!(main.psql("SELECT count(*) FROM __diesel_schema_migrations"), migrations("migrations_main"));
    assert_eq!(
        profiles.psql("SELECT count(*) FROM __diesel_schema_migrations"),
        migrations("migrations_profiles")
    );
    dbs.seed(5);
    let http = Http::new();
    for s in [&a, &b] {
        assert_eq!(http.send("GET", &s.url("/readyz"), &[], None).await.status, 200);
    }

    // Concurrent PATCHes of one user through both, each a field of its own, no If-Match:
    // every one succeeds and none is lost — the user's very first edit among them.
    let me = token(1);
    let fields = [
        ("personal", "display_name"),
        ("personal", "first_name"),
        ("personal", "last_name"),
        ("personal", "city"),
        ("personal", "bio"),
        ("business", "company_name"),
        ("business", "job_title"),
        ("business", "tax_id"),
    ];
    let patches = fields.iter().enumerate().map(|(i, (section, field))| {
        let server = if i % 2 == 0 { &a } else { &b };
        let url = server.url("/user/profile");
        let (http, me) = (http.clone(), me.clone());
        let body = json!({ *section: { *field: format!("VAL-{i}") } });
        async move { http.patch(&url, &me, &body, &[]).await }
    });
    let tasks: Vec<_> = patches.map(tokio::spawn).collect();
    for t in tasks {
        let r = t.await.expect("patch task");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for server in [&a, &b] {
        let p = http.get(&server.url("/user/profile"), &me).await.json();
        assert_eq!(p["version"], fields.len(), "{p}");
        for (i, (section, field)) in fields.iter().enumerate() {
            assert_eq!(p[section][field], format!("VAL-{i}"), "{section}.{field} lost: {p}");
        }
    }

    // Two users take one address through different instances: one 200, one 409.
    let body = json!({"personal": {"email": "Shared@Example.com"}});
    let (url_a, url_b, t2, t3) = (a.url("/user/profile"), b.url("/user/profile"), token(2), token(3));
    let (ra, rb) = tokio::join!(http.patch(&url_a, &t2, &body, &[]), http.patch(&url_b, &t3, &body, &[]));
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "A: {} B: {}", ra.text(), rb.text());
    assert_eq!(main.psql("SELECT count(*) FROM users WHERE lower(email) = 'shared@example.com'"), "1");
    assert_eq!(profiles.psql("SELECT count(*) FROM email_journal WHERE state = 'pending'"), "0");

    for s in [a, b] {
        let status = s.terminate();
        assert!(status.success(), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_entries_of_a_killed_instance_are_settled_by_another() {
    let pg = PgServer::shared();
    let (main, profiles) = (pg.database(), pg.database());
    let dbs = Dbs::postgres(main.url(), profiles.url());
    dbs.seed(8);
    let (mut a, b) = start_two(&dbs, &["--profile-cache-ttl-s", "0"]);
    let http = Http::new();

    // Another application holds the users table against writes (reads still pass), so
    // A's e-mail changes are journalled and then stuck on the main database.
    let mut holder = main
        .psql_command("BEGIN; LOCK TABLE users IN EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;")
        .spawn()
        .expect("spawn the lock holder");
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND mode = 'ExclusiveLock' \
                AND relation = 'users'::regclass \
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    while main.psql(held) == "0" {
        assert!(Instant::now() < deadline, "the lock holder never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = a.url("/user/profile");
    let burst: Vec<_> = (1..=6)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            let body =
                json!({"personal": {"email": format!("moved{i}@example.com"), "city": format!("City{i}")}});
            tokio::spawn(async move {
                let auth = format!("Bearer {}", token(i));
                let payload = serde_json::to_vec(&body).expect("json");
                let headers =
                    [("authorization", auth.as_str()), ("content-type", "application/merge-patch+json")];
                http.try_send("PATCH", &url, &headers, Some(&payload)).await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while profiles.psql("SELECT count(*) FROM email_journal WHERE state = 'pending'") != "6" {
        assert!(Instant::now() < deadline, "the burst never reached the journal");
        std::thread::sleep(Duration::from_millis(20));
    }
    // kill -9 mid-burst: six changes journalled, none carried through.
    a.child.kill().expect("kill -9 instance A");
    let _ = a.child.wait();
    for t in burst {
        let _ = t.await;
    }
    let _ = holder.wait();

    // B settles them once A's hold on them runs out (the lease), within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    while profiles.psql("SELECT count(*) FROM email_journal WHERE state = 'pending'") != "0" {
        assert!(Instant::now() < deadline, "instance B did not settle the journal: {}", b.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each user is whole: the address the main database holds, and the patch's other
    // fields exactly when the change went through.
    for i in 1..=6 {
        let p = http.get(&b.url("/user/profile"), &token(i)).await.json();
        let email = main.psql(&format!("SELECT email FROM users WHERE id = {i}"));
        assert_eq!(p["personal"]["email"], email.as_str(), "{p}");
        if email == format!("moved{i}@example.com") {
            assert_eq!(p["personal"]["city"], format!("City{i}"), "{p}");
        } else {
            assert_eq!(email, format!("user{i}@example.com"));
            assert_eq!(p["personal"]["city"], serde_json::Value::Null, "{p}");
        }
    }
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_fast_and_heals_without_a_restart() {
    let pg = PgServer::start();
    let (main, profiles) = (pg.database(), pg.database());
    let dbs = Dbs::postgres(main.url(), profiles.url());
    dbs.seed(3);
    let server = Server::start(&dbs, &["--profile-cache-ttl-s", "0"]);
    let http = Http::new();
    let url = server.url("/user/profile");
    for _ in 0..3 {
        assert_eq!(http.get(&url, &token(1)).await.status, 200);
    }

    pg.stop();
    for _ in 0..5 {
        let start = Instant::now();
        let r = http.get(&url, &token(1)).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.header("retry-after").is_some(), "503 carries Retry-After");
        assert!(start.elapsed() < Duration::from_secs(3), "fails fast: {:?}", start.elapsed());
        common::assert_no_leaks(
            &r.text(),
            "503 body",
            &["postgres://", &dbs.dir.path().display().to_string()],
        );
        let r = http.patch(&url, &token(1), &json!({"personal": {"city": "Oslo"}}), &[]).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(http.send("GET", &server.url("/readyz"), &[], None).await.status, 503);
    }

    pg.restart();
    pg.wait_ready(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http.get(&url, &token(1)).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {} {} users={} log={}",
            r.status,
            r.text(),
            main.psql("SELECT count(*) FROM users"),
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http.send("GET", &server.url("/readyz"), &[], None).await.status, 200);
    let r = http.patch(&url, &token(1), &json!({"personal": {"city": "Oslo"}}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = common::request_log_lines(&server.stderr());
    common::assert_free_of(&log, "log", &["SELECT", "INSERT", "UPDATE profiles", "password"]);
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_on_postgres_with_profiles_on_sqlite() {
    let pg = PgServer::shared();
    let main = pg.database();
    let files = Dbs::new();
    let dbs = Dbs::postgres(main.url(), files.profiles().display().to_string());
    dbs.seed(2);
    let server = Server::start(&dbs, &[]);
    let http = Http::new();
    let url = server.url("/user/profile");
    let r = http.patch(&url, &token(2), &json!({"personal": {"city": "Lyon"}}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http.get(&url, &token(2)).await.json()["personal"]["email"], "user2@example.com");
    assert!(files.profiles().exists(), "the profiles database is the SQLite file");
    let m = http.send("GET", &server.url("/metrics"), &[], None).await.text();
    assert!(m.contains("db_pool_size{db=\"main\"}") && m.contains("db_pool_size{db=\"profiles\"}"), "{m}");
    assert!(server.terminate().success());
}

#[test]
fn bad_postgres_configuration_exits_naming_the_setting_without_the_password() {
    let pg = PgServer::shared();
    pg.psql(
        "postgres",
        "DO $$ BEGIN CREATE ROLE e2e LOGIN PASSWORD 'right-pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    let db = pg.database();
    let files = Dbs::new();
    let sqlite = files.profiles().display().to_string();
    let migrate = |main: &str, profiles: &str, extra: &[&str]| {
        Command::new(bin())
            .arg("migrate")
            .args(["--main-db", main, "--profiles-db", profiles])
            .args(extra)
            .env_remove("PROFILE_MAIN_DB_MIGRATIONS")
            .output()
            .expect("run migrate")
    };
    // `check` on an empty database: refused, nothing created.
    let out = migrate(&db.url(), &sqlite, &["--main-db-migrations", "check"]);
    assert!(!out.status.success(), "check on an empty database must be refused");
    let line = last_stderr_line(&out);
    assert!(
        line.contains("--main-db")
            && line.contains("lacks what the service reads: table users, table orders"),
        "{line}"
    );
    assert_eq!(db.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
    let cases: Vec<(String, String, Vec<&str>, &str, &str)> = vec![
        ("mysql://u:hunter2@h/db".into(), sqlite.clone(), vec![], "--main-db", "unknown scheme"),
        (
            "postgres://u:hunter2@h:port/db".into(),
            sqlite.clone(),
            vec![],
            "--main-db",
            "not a usable PostgreSQL URL",
        ),
        (
            files.main().display().to_string(),
            pg.tcp_url("no_such_database", "postgres", None),
            vec![],
            "--profiles-db",
            "does not exist",
        ),
        (
            pg.tcp_url(db.name(), "e2e", Some("hunter2")),
            sqlite.clone(),
            vec![],
            "--main-db",
            "password authentication failed",
        ),
    ];
    for (main, profiles, extra, setting, what) in cases {
        let out = migrate(&main, &profiles, &extra);
        assert!(!out.status.success(), "{main} {profiles} must be refused");
        let line = last_stderr_line(&out);
        assert!(line.contains(setting) && line.contains(what), "{main} / {profiles}: {line}");
        let all = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        assert!(!all.contains("hunter2"), "the password leaked: {all}");
        assert!(!all.contains("panicked"), "{all}");
    }
    // `apply` creates the schema, after which `check` passes.
    assert!(migrate(&db.url(), &sqlite, &[]).status.success());
    let out = migrate(&db.url(), &sqlite, &["--main-db-migrations", "check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    // The same check on SQLite: an empty main file lacks the tables.
    let fresh = Dbs::new();
    let out = Command::new(bin())
        .arg("migrate")
        .args(fresh.args())
        .env("PROFILE_MAIN_DB_MIGRATIONS", "check")
        .output()
        .expect("run migrate");
    assert!(!out.status.success());
    let line = last_stderr_line(&out);
    assert!(line.contains("--main-db") && line.contains("table users, table orders"), "{line}");
}
