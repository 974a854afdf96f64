//! The PostgreSQL adapter against throwaway servers: opening (bad URLs, refused logins,
//! missing databases, concurrent migrations, the `check` mode), an outage and the
//! recovery after it, the wider application's rows, and seeding.

use std::time::{Duration, Instant};

use profile_core::admin::{MainAdmin, StoreAdmin};
use profile_core::domain::AccountStatus;
use profile_core::ports::{AccountRepository, ProfileRepository, StoreError};
use profile_postgres::testing::PgServer;
use profile_postgres::{MainSchema, OpenError, PgConfig, open_main, open_profiles};

fn cfg(url: String) -> PgConfig {
    PgConfig { url, pool_size: 4, timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(2) }
}

#[tokio::test]
async fn bad_urls_missing_databases_and_refused_logins_are_named_without_the_password() {
    let server = PgServer::shared();
    server.psql("postgres", "DO $$ BEGIN CREATE ROLE app LOGIN PASSWORD 'right-pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    let db = server.database();

    let e = open_main(&cfg("postgres://app:hunter2@127.0.0.1:1:2/x".into()), MainSchema::Apply)
        .await
        .unwrap_err();
    assert!(matches!(e, OpenError::Url { .. }), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let e = open_main(&cfg("mysql://app@localhost/x".into()), MainSchema::Apply).await.unwrap_err();
    assert!(e.to_string().contains("unknown scheme"), "{e}");

    let e =
        open_main(&cfg(server.tcp_url("no_such_db", "postgres", None)), MainSchema::Apply).await.unwrap_err();
    assert!(matches!(e, OpenError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");

    let e = open_profiles(&cfg(server.tcp_url(db.name(), "app", Some("hunter2")))).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("postgresql://app@127.0.0.1:"), "names the target: {text}");
    assert!(!text.contains('\n'), "one line: {text}");

    // The right password works (the role may connect to the database).
    db.psql("GRANT ALL ON SCHEMA public TO app");
    let store = open_profiles(&cfg(server.tcp_url(db.name(), "app", Some("right-pw")))).await.unwrap();
    assert_eq!(store.ping().await, Ok(()));
}

#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let db = PgServer::shared().database();
    let folder = |name: &str| {
        let dir = format!("{}/../../{name}/postgres", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_dir(dir).expect("migrations folder").count()
    };
    let (main_n, profiles_n) = (folder("migrations_main"), folder("migrations_profiles"));
    let opens = (0..4).map(|_| async { open_main(&cfg(db.url()), MainSchema::Apply).await });
    let stores: Vec<_> = futures::future::join_all(opens).await.into_iter().map(Result::unwrap).collect();
    let applied: usize = stores.iter().map(|s| s.applied_migrations().len()).sum();
    assert_eq!(applied, main_n, "each main migration applied once, by one instance");
    let profiles = (0..4).map(|_| async { open_profiles(&cfg(db.url())).await });
    let stores: Vec<_> = futures::future::join_all(profiles).await.into_iter().map(Result::unwrap).collect();
    let applied: usize = stores.iter().map(|s| s.applied_migrations().len()).sum();
    assert_eq!(
        applied, profiles_n,
        "each profiles migration once, beside the main ones in the same database"
    );
    assert_eq!(db.psql("SELECT count(*) FROM __diesel_schema_migrations"), (main_n + profiles_n).to_string());
}

#[tokio::test]
async fn check_mode_changes_nothing_and_names_what_is_missing() {
    let db = PgServer::shared().database();
    let e = open_main(&cfg(db.url()), MainSchema::Check).await.unwrap_err();
    assert!(matches!(e, OpenError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("table users, table orders"), "{e}");
    assert_eq!(db.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0", "nothing created");

    // The wider application's own tables, one column short.
    db.psql(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT NOT NULL, username TEXT NOT NULL, \
         status TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL, last_login_at TIMESTAMPTZ); \
         CREATE TABLE orders (id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL, total_cents BIGINT NOT NULL, \
         status TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)",
    );
    let e = open_main(&cfg(db.url()), MainSchema::Check).await.unwrap_err();
    assert!(e.to_string().ends_with("lacks what the service reads: column users.login_count"), "{e}");
    db.psql("ALTER TABLE users ADD COLUMN login_count INTEGER NOT NULL DEFAULT 0");
    let store = open_main(&cfg(db.url()), MainSchema::Check).await.unwrap();
    assert!(store.applied_migrations().is_empty());
    assert_eq!(store.account(1).await, Ok(None));
    assert_eq!(db.psql("SELECT count(*) FROM pg_tables WHERE tablename = '__diesel_schema_migrations'"), "0");
}

#[tokio::test]
async fn rows_the_wider_application_writes_in_postgres_types_read_back() {
    let db = PgServer::shared().database();
    let store = open_main(&cfg(db.url()), MainSchema::Apply).await.unwrap();
    db.psql(
        "INSERT INTO users (id, email, username, created_at, last_login_at, login_count) VALUES \
         (7, 'Ada@Example.com', 'ada', '2026-01-05 10:00:00+00', '2026-11-25 20:02:00.123456+01', 57); \
         INSERT INTO users (id, email, username, status, created_at) VALUES (8, 'b@example.com', 'b', 'active', now()); \
         INSERT INTO orders (user_id, total_cents, status, created_at) VALUES \
         (7, 1000, 'completed', '2026-02-01 00:00:00+00'), (7, 2500, 'completed', '2026-03-01 00:00:00.25+00'), \
         (7, 9999, 'refunded', '2026-04-01 00:00:00+00'), (7, 7777, 'pending', '2026-05-01 00:00:00+00'); \
         UPDATE users SET status = 'suspended' WHERE id = 8",
    );
    let a = store.account(7).await.unwrap().unwrap();
    assert_eq!(a.email, "Ada@Example.com");
    assert_eq!(a.created_at.to_rfc3339(), "2026-01-05T10:00:00+00:00");
    assert_eq!(a.last_login_at.unwrap().to_rfc3339(), "2026-11-25T19:02:00.123456+00:00");
    assert_eq!(a.login_count, 57);
    assert_eq!((a.orders.orders_count, a.orders.total_spent_cents), (2, 3500));
    assert_eq!(a.orders.last_order_at.unwrap().to_rfc3339(), "2026-03-01T00:00:00.250+00:00");
    assert_eq!(store.account(8).await.unwrap().unwrap().status, AccountStatus::Suspended);
    // Unique whatever the case, ASCII or not (the test server's ctype is C.UTF-8).
    assert_eq!(store.set_email(8, "ada@example.com").await, Err(StoreError::EmailTaken));
    db.psql("UPDATE users SET email = 'Ärger@example.com' WHERE id = 7");
    assert_eq!(store.set_email(8, "ärger@example.com").await, Err(StoreError::EmailTaken));
    assert_eq!(store.set_email(7, "ärger@example.com").await, Ok(()), "its own address, re-cased");
    assert_eq!(store.set_email(9, "x@example.com").await, Err(StoreError::NotFound));
}

#[tokio::test]
async fn seeding_is_deterministic_and_appends() {
    let db = PgServer::shared().database();
    let store = open_main(&cfg(db.url()), MainSchema::Apply).await.unwrap();
    assert!(!store.has_users().await.unwrap());
    let r = store.seed(30, 10, &|_| {}).await.unwrap();
    assert_eq!((r.first_id, r.last_id, r.users, r.orders), (1, 30, 30, 300));
    let r = store.seed(5, 0, &|_| {}).await.unwrap();
    assert_eq!((r.first_id, r.last_id, r.orders), (31, 35, 0));
    assert!(store.has_users().await.unwrap());
    let a = store.account(12).await.unwrap().unwrap();
    assert_eq!((a.email.as_str(), a.username.as_str()), ("user12@example.com", "user12"));
    assert!(a.orders.orders_count > 0 && a.orders.orders_count < 10, "{:?}", a.orders);
    assert_eq!(db.psql("SELECT count(*) FROM orders WHERE user_id = 12"), "10");
}

#[tokio::test]
async fn seeding_is_not_cut_by_the_request_path_statement_timeout() {
    let db = PgServer::shared().database();
    // A 50 ms busy timeout: each seeding batch's statements take far longer than that.
    let store =
        open_main(&PgConfig { timeout: Duration::from_millis(50), ..cfg(db.url()) }, MainSchema::Apply)
            .await
            .unwrap();
    let t = Instant::now();
    let r = store.seed(30_000, 10, &|_| {}).await.expect("seeding completes under a 50 ms busy timeout");
    assert_eq!((r.first_id, r.last_id, r.users, r.orders), (1, 30_000, 30_000, 300_000));
    assert!(t.elapsed() > Duration::from_millis(50), "too small to prove anything: {:?}", t.elapsed());
    assert_eq!(db.psql("SELECT count(*) FROM orders"), "300000");
    // The store serves the seeded rows under the same small timeout afterwards.
    let a = store.account(1).await.unwrap().unwrap();
    assert_eq!(a.orders.orders_count, 8, "8 of its 10 orders are completed: {:?}", a.orders);
    assert_eq!(db.psql("SELECT count(*) FROM users"), "30000");
}

#[tokio::test]
async fn an_outage_fails_fast_and_the_store_recovers_by_itself() {
    let server = PgServer::start();
    let db = server.database();
    let main = open_main(&cfg(db.url()), MainSchema::Apply).await.unwrap();
    let profiles = open_profiles(&cfg(db.url())).await.unwrap();
    main.seed(3, 1, &|_| {}).await.unwrap();
    // Fill the pools with live connections.
    let reads = (0..8).map(|i| main.account(1 + i % 3));
    for r in futures::future::join_all(reads).await {
        assert!(r.unwrap().is_some());
    }
    assert_eq!(profiles.load(1).await, Ok(None));

    server.stop();
    for _ in 0..6 {
        let start = Instant::now();
        let r = main.account(1).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(3), "fails fast: {:?}", start.elapsed());
        let p = profiles.ping().await;
        assert!(matches!(p, Err(StoreError::Unavailable(_))), "{p:?}");
    }
    let msg = format!("{:?}", main.account(1).await);
    assert!(!msg.contains("SELECT"), "no SQL text: {msg}");

    server.restart();
    server.wait_ready(Duration::from_secs(30));
    // Dead connections are replaced: within a couple of calls, everything answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = main.account(1).await.is_ok() && profiles.ping().await.is_ok();
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the stores did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in futures::future::join_all((0..8).map(|_| main.account(2))).await {
        assert!(r.unwrap().is_some(), "every pooled connection works after the restart");
    }
    let status = main.pool_status();
    assert!(status.size >= 1 && status.size <= 4, "{status:?}");
    main.close().await;
    assert!(matches!(main.account(1).await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn the_reads_use_their_indexes() {
    let db = PgServer::shared().database();
    let main = open_main(&cfg(db.url()), MainSchema::Apply).await.unwrap();
    let _profiles = open_profiles(&cfg(db.url())).await.unwrap();
    main.seed(3000, 10, &|_| {}).await.unwrap();
    // As autovacuum leaves a settled table: the visibility map lets the index answer alone.
    db.psql("VACUUM ANALYZE users, orders");
    let sql = profile_postgres::testing::ACCOUNT_SQL.replace("$1", "1234");
    let plan = db.psql(&format!("EXPLAIN (COSTS OFF) {sql}"));
    assert!(plan.contains("users_pkey"), "{plan}");
    assert!(plan.contains("Index Only Scan using orders_user_status_stats"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    // Enough finished entries that a scan would show; the pending ones are found by index.
    db.psql(
        "INSERT INTO email_journal (user_id, old_email, new_email, record, state, created_at) \
         SELECT i, 'a', 'b', '{}', 'done', now() FROM generate_series(1, 20000) AS i; ANALYZE email_journal",
    );
    db.psql(
        "INSERT INTO profiles (user_id, version, language, timezone, theme, currency, notify_email, \
         notify_sms, notify_push, notify_marketing, profile_visibility, show_activity) \
         SELECT i, 1, 'en', 'UTC', 'system', 'USD', true, false, true, false, 'public', true \
         FROM generate_series(1, 20000) AS i; ANALYZE profiles",
    );
    // The row and the pending entry a read and a write start from: one statement, both
    // by index.
    let sql = profile_postgres::testing::CURRENT_SQL.replace("$1", "7");
    let plan = db.psql(&format!("EXPLAIN (COSTS OFF) {sql}"));
    assert!(plan.contains("profiles_pkey"), "{plan}");
    assert!(plan.contains("email_journal_pending_user"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}
