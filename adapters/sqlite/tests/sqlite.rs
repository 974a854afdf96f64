//! The SQLite adapters against real temporary database files.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use profile_core::domain::{AccountStatus, ProfileRecord, UserId};
use profile_core::ports::{
    AccountRepository, Decision, EmailChange, ProfileRepository, Refusal, StoreError, UpdateOutcome,
};
use profile_sqlite::{DbConfig, OpenError, ProfileStore, open_main, open_profiles};

fn cfg(path: std::path::PathBuf) -> DbConfig {
    DbConfig { path, pool_size: 4, busy_timeout: Duration::from_secs(5) }
}

fn raw(path: &std::path::Path) -> SqliteConnection {
    let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    c.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
    c
}

/// Stores `record` through the unit of work (whatever is stored must be its version - 1).
async fn put(store: &ProfileStore, record: ProfileRecord) -> Result<(), StoreError> {
    match store.update(record.user_id, Box::new(move |_| Decision::Store(record))).await? {
        UpdateOutcome::Stored(_) => Ok(()),
        other => panic!("a Store decision answered {other:?}"),
    }
}

/// Journals an e-mail change carrying `record`, held until `claimed_until`.
async fn begin(store: &ProfileStore, change: &EmailChange) -> Result<EmailChange, StoreError> {
    let c = change.clone();
    let decision = Decision::ChangeEmail {
        record: c.record,
        old_email: c.old_email,
        new_email: c.new_email,
        created_at: c.created_at,
        claimed_until: c.claimed_until,
    };
    match store.update(change.record.user_id, Box::new(move |_| decision)).await? {
        UpdateOutcome::EmailChangeBegun(c) => Ok(c),
        other => panic!("a ChangeEmail decision answered {other:?}"),
    }
}

fn record(user_id: UserId, version: i64) -> ProfileRecord {
    ProfileRecord {
        version,
        updated_at: Some(Utc.with_ymd_and_hms(2026, 11, 20, 8, 31, 12).unwrap()),
        ..ProfileRecord::new_default(user_id)
    }
}

#[tokio::test]
async fn open_creates_folder_and_files_and_migrating_again_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let main_path = dir.path().join("nested/data/main.db");
    let profiles_path = dir.path().join("other/profiles.db");

    let main = open_main(&cfg(main_path.clone())).await.unwrap();
    let profiles = open_profiles(&cfg(profiles_path.clone())).await.unwrap();
    assert!(main_path.is_file() && profiles_path.is_file());
    assert_eq!(main.applied_migrations().len(), 1);
    assert_eq!(profiles.applied_migrations().len(), 3, "tables, journal claims, checks without IN lists");
    assert_eq!(main.ping().await, Ok(()));
    assert_eq!(profiles.ping().await, Ok(()));
    main.close().await;
    profiles.close().await;

    let main = open_main(&cfg(main_path.clone())).await.unwrap();
    let profiles = open_profiles(&cfg(profiles_path)).await.unwrap();
    assert!(main.applied_migrations().is_empty(), "second open must apply nothing");
    assert!(profiles.applied_migrations().is_empty(), "second open must apply nothing");
    assert_eq!(main.account(1).await, Ok(None));
    assert_eq!(profiles.load(1).await, Ok(None));

    // A main database whose tables the wider application created itself is adopted.
    let foreign = dir.path().join("foreign.db");
    raw(&foreign)
        .batch_execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE COLLATE NOCASE, \
             username TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'active', created_at TEXT NOT NULL, \
             last_login_at TEXT, login_count INTEGER NOT NULL DEFAULT 0); \
             INSERT INTO users (id, email, username, created_at) VALUES (5, 'x@example.com', 'x', '2026-01-01T00:00:00Z');",
        )
        .unwrap();
    let adopted = open_main(&cfg(foreign)).await.unwrap();
    assert_eq!(adopted.account(5).await.unwrap().unwrap().orders.orders_count, 0);
}

#[tokio::test]
async fn open_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a folder").unwrap();

    let err = open_main(&cfg(file.join("sub/main.db"))).await.unwrap_err();
    assert!(matches!(err, OpenError::Folder { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot create database folder ") && text.contains("plain-file/sub/:"),
        "{text}"
    );
    assert!(!text.contains("os error"), "{text}");

    let err = open_main(&cfg(dir.path().to_path_buf())).await.unwrap_err();
    assert!(matches!(err, OpenError::File { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot create or open database file "), "{err}");

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let err = open_profiles(&cfg(junk)).await.unwrap_err();
    assert!(matches!(err, OpenError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("junk.db") && text.contains("not a database"), "{text}");
}

/// Eight tasks × 50 updates, each task owning one field and retrying on conflict by
/// reloading, as the service does: no update may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_distinct_fields_lose_nothing() {
    const TASKS: usize = 8;
    const UPDATES: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_profiles(&cfg(dir.path().join("p.db"))).await.unwrap());
    let user = 42;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..UPDATES {
                let decide = Box::new(move |current: &ProfileRecord| {
                    let mut r = current.clone();
                    let value = Some(format!("task{t}-{n}"));
                    let p = &mut r.fields.personal;
                    let b = &mut r.fields.business;
                    match t {
                        0 => p.display_name = value,
                        1 => p.first_name = value,
                        2 => p.last_name = value,
                        3 => p.city = value,
                        4 => p.bio = value,
                        5 => b.company_name = value,
                        6 => b.job_title = value,
                        _ => b.tax_id = value,
                    }
                    r.version += 1;
                    r.updated_at = Some(Utc::now());
                    Decision::Store(r)
                });
                // No retry: the unit of work queues concurrent updates instead of failing them.
                match store.update(user, decide).await {
                    Ok(UpdateOutcome::Stored(_)) => {}
                    other => panic!("update {t}/{n}: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = store.load(user).await.unwrap().unwrap();
    assert_eq!(r.version, (TASKS * UPDATES) as i64);
    let last = |t: usize| Some(format!("task{t}-{}", UPDATES - 1));
    let p = &r.fields.personal;
    let b = &r.fields.business;
    assert_eq!(
        [
            &p.display_name,
            &p.first_name,
            &p.last_name,
            &p.city,
            &p.bio,
            &b.company_name,
            &b.job_title,
            &b.tax_id
        ],
        [&last(0), &last(1), &last(2), &last(3), &last(4), &last(5), &last(6), &last(7)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_updates_requiring_the_same_version_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_profiles(&cfg(dir.path().join("p.db"))).await.unwrap());
    for user in 1..=20 {
        // What If-Match does: each decides only on the state it saw (version 0).
        let update = |city: &'static str| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update(
                        user,
                        Box::new(move |current: &ProfileRecord| {
                            if current.version != 0 {
                                return Decision::Refuse(Refusal::PreconditionFailed);
                            }
                            let mut r = record(user, 1);
                            r.fields.personal.city = Some(city.into());
                            Decision::Store(r)
                        }),
                    )
                    .await
            })
        };
        let (x, y) = tokio::join!(update("A"), update("B"));
        let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
        let refused = UpdateOutcome::Refused(Refusal::PreconditionFailed);
        let wins = [&x, &y].iter().filter(|r| matches!(r, UpdateOutcome::Stored(_))).count();
        let losses = [&x, &y].iter().filter(|r| ***r == refused).count();
        assert_eq!((wins, losses), (1, 1), "user {user}: {x:?} {y:?}");
        let city = store.load(user).await.unwrap().unwrap().fields.personal.city.unwrap();
        assert_eq!(city, if matches!(x, UpdateOutcome::Stored(_)) { "A" } else { "B" });
    }
}

#[tokio::test]
async fn journal_entry_survives_a_crash_and_settles_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let config = cfg(dir.path().join("p.db"));
    let v1 = record(7, 1);
    let mut v2 = record(7, 2);
    v2.fields.personal.first_name = Some("Ada".into());
    let change = EmailChange {
        id: 0,
        old_email: "old@example.com".into(),
        new_email: "new@example.com".into(),
        record: v2.clone(),
        created_at: Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap(),
        claimed_until: Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 10).unwrap(),
    };
    {
        let store = open_profiles(&config).await.unwrap();
        put(&store, v1.clone()).await.unwrap();
        begin(&store, &change).await.unwrap();
        // The process dies here, before the main database commits: no close().
    }
    let store = open_profiles(&config).await.unwrap();
    let pending = store.pending_email_changes().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0], EmailChange { id: pending[0].id, ..change.clone() });
    store.abort_email_change(pending[0].id).await.unwrap();
    assert_eq!(store.load(7).await.unwrap(), Some(v1), "an aborted change writes no field");
    assert!(store.pending_email_changes().await.unwrap().is_empty());

    let id = begin(&store, &change).await.unwrap().id;
    assert_ne!(id, pending[0].id, "journal ids are never reused");
    drop(store);
    let store = open_profiles(&config).await.unwrap();
    store.complete_email_change(id).await.unwrap();
    assert_eq!(store.load(7).await.unwrap(), Some(v2), "a completed change applies its record");
    assert!(store.pending_email_changes().await.unwrap().is_empty());
    store.close().await;
    let states: Vec<(i64, String)> = {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
            #[diesel(sql_type = diesel::sql_types::Text)]
            state: String,
        }
        diesel::sql_query("SELECT id, state FROM email_journal ORDER BY id")
            .load::<Row>(&mut raw(&config.path))
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.state))
            .collect()
    };
    assert_eq!(states, vec![(pending[0].id, "aborted".to_owned()), (id, "done".to_owned())]);
}

#[tokio::test]
async fn a_database_locked_past_busy_timeout_is_unavailable_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let short = |p: &str| DbConfig {
        path: dir.path().join(p),
        pool_size: 2,
        busy_timeout: Duration::from_millis(100),
    };
    let profiles = open_profiles(&short("p.db")).await.unwrap();
    let main = open_main(&short("m.db")).await.unwrap();
    raw(&short("m.db").path)
        .batch_execute("INSERT INTO users (id, email, username, created_at) VALUES (1, 'a@example.com', 'a', '2026-01-01T00:00:00Z')")
        .unwrap();

    let mut lock_p = raw(&short("p.db").path);
    let mut lock_m = raw(&short("m.db").path);
    lock_p.batch_execute("BEGIN EXCLUSIVE").unwrap();
    lock_m.batch_execute("BEGIN EXCLUSIVE").unwrap();

    let (r1, r2) = (record(1, 1), record(2, 1));
    let change = EmailChange {
        id: 0,
        old_email: "a@example.com".into(),
        new_email: "b@example.com".into(),
        record: record(3, 1),
        created_at: Utc::now(),
        claimed_until: Utc::now(),
    };
    let started = Instant::now();
    let (a, b, c, d) = tokio::join!(
        put(&profiles, r1),
        put(&profiles, r2),
        begin(&profiles, &change),
        main.set_email(1, "b@example.com"),
    );
    let took = started.elapsed();
    for r in [a, b, c.map(|_| ()), d] {
        assert!(matches!(&r, Err(StoreError::Unavailable(m)) if m.contains("database")), "{r:?}");
    }
    assert!(took >= Duration::from_millis(90), "gave up after {took:?}, before busy_timeout");
    assert!(took < Duration::from_secs(3), "waited {took:?}, far past busy_timeout");
    // WAL readers are not blocked by a writer.
    assert_eq!(profiles.load(1).await, Ok(None));
    assert_eq!(main.account(1).await.unwrap().unwrap().status, AccountStatus::Active);

    lock_p.batch_execute("ROLLBACK").unwrap();
    lock_m.batch_execute("ROLLBACK").unwrap();
    assert_eq!(put(&profiles, record(1, 1)).await, Ok(()), "the store recovers once the lock is gone");
    assert_eq!(main.set_email(1, "b@example.com").await, Ok(()));
}

#[tokio::test]
async fn pool_status_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_profiles(&DbConfig {
        path: dir.path().join("p.db"),
        pool_size: 3,
        busy_timeout: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let s = store.pool_status();
    assert_eq!(s.max, 4, "three readers and the writer");
    assert!(s.size >= 2 && s.size <= 4, "{s:?}");
    assert_eq!(s.in_use, 0);
    store.close().await;
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    assert!(matches!(put(&store, record(1, 1)).await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn seed_is_deterministic_appends_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_main(&cfg(dir.path().join("m.db"))).await.unwrap();
    let calls = std::sync::Mutex::new(Vec::new());
    let report = store.seed(20, 10, &|n| calls.lock().unwrap().push(n)).await.unwrap();
    assert_eq!((report.first_id, report.last_id, report.users, report.orders), (1, 20, 20, 200));
    assert_eq!(*calls.lock().unwrap(), vec![20]);

    let mut completed = 0;
    let mut some_user_has_other_statuses = false;
    for id in 1..=20 {
        let a = store.account(id).await.unwrap().unwrap();
        assert_eq!(a.email, format!("user{id}@example.com"));
        assert_eq!(a.username, format!("user{id}"));
        assert_eq!(a.status, AccountStatus::Active);
        assert!(a.orders.orders_count <= 10);
        assert!(a.orders.orders_count > 0 && a.orders.last_order_at.is_some());
        completed += a.orders.orders_count;
        some_user_has_other_statuses |= a.orders.orders_count < 10;
    }
    assert_eq!(completed, 160, "most, not all, orders are completed");
    assert!(some_user_has_other_statuses);

    // The same figures in a fresh database: deterministic.
    let again = open_main(&cfg(dir.path().join("m2.db"))).await.unwrap();
    again.seed(20, 10, &|_| {}).await.unwrap();
    for id in [1, 7, 20] {
        assert_eq!(again.account(id).await.unwrap(), store.account(id).await.unwrap());
    }

    // Appends after the highest id, in batches of 10,000 with progress after each.
    calls.lock().unwrap().clear();
    let report = store.seed(25_000, 1, &|n| calls.lock().unwrap().push(n)).await.unwrap();
    assert_eq!((report.first_id, report.last_id, report.orders), (21, 25_020, 25_000));
    assert_eq!(*calls.lock().unwrap(), vec![10_000, 20_000, 25_000]);
    assert_eq!(store.account(25_020).await.unwrap().unwrap().email, "user25020@example.com");
    let none = store.seed(0, 10, &|_| panic!("no progress for nothing")).await.unwrap();
    assert_eq!((none.first_id, none.last_id, none.users), (25_021, 25_020, 0));
}

/// `cargo test --release -p profile-sqlite -- --ignored seed_100k --nocapture`
#[tokio::test]
#[ignore = "timing; run in release mode"]
async fn seed_100k() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_main(&cfg(dir.path().join("m.db"))).await.unwrap();
    let started = Instant::now();
    let report = store.seed(100_000, 10, &|_| {}).await.unwrap();
    let took = started.elapsed();
    eprintln!("seeded {} users and {} orders in {took:?}", report.users, report.orders);
    assert_eq!((report.users, report.orders), (100_000, 1_000_000));
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(store.account(100_000).await.unwrap().unwrap().orders.orders_count, 8);
}

fn wal_size(db: &std::path::Path) -> u64 {
    let wal = format!("{}-wal", db.display());
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Readers that always keep a read transaction open (each holds one ~20 ms, staggered),
/// the pattern that starves SQLite's automatic checkpoints.
fn start_readers(db: &std::path::Path, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|i| {
            let db = db.to_path_buf();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = raw(&db);
                std::thread::sleep(Duration::from_millis(10 * i));
                while !stop.load(Ordering::Relaxed) {
                    c.batch_execute("BEGIN; SELECT count(*) FROM profiles;").unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                    c.batch_execute("COMMIT").unwrap();
                }
            })
        })
        .collect()
}

/// The WAL header's checkpoint sequence and salts: they change whenever the WAL is
/// started anew (restarted in place, or recreated after a truncation).
fn wal_generation(db: &std::path::Path) -> Option<[u8; 12]> {
    use std::io::Read;
    let mut head = [0u8; 24];
    std::fs::File::open(format!("{}-wal", db.display())).ok()?.read_exact(&mut head).ok()?;
    head[12..24].try_into().ok()
}

/// Sustained writes with readers always present: the WAL file stays bounded (without
/// the store's checkpointer it grows with every commit: nothing ever restarts it).
/// 24,000 commits write at least 24,000 frames (≈ 98 MiB, three times the bound; the
/// checkpointer restarts the WAL at about 16 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_bounded_under_sustained_writes_with_readers() {
    const BOUND: u64 = 32 * 1024 * 1024;
    const COMMITS: u64 = 24_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let store: Arc<ProfileStore> = Arc::new(open_profiles(&cfg(path.clone())).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let readers = start_readers(&path, &stop);
    // (largest WAL seen, how many times the WAL was started anew)
    let monitor = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let (mut max, mut cycles, mut last) = (0, 0, None);
            while !stop.load(Ordering::Relaxed) {
                max = wal_size(&path).max(max);
                let generation = wal_generation(&path);
                if generation.is_some() && generation != last {
                    cycles += 1;
                    last = generation;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (max, cycles)
        })
    };

    let started = Instant::now();
    let mut versions: HashMap<UserId, i64> = HashMap::new();
    let bio = "x".repeat(400);
    for n in 0..COMMITS {
        let user = ((n * 7919) % 3000) as i64;
        let v = versions.entry(user).or_insert(0);
        *v += 1;
        let mut r = record(user, *v);
        r.fields.personal.bio = Some(format!("{n} {bio}"));
        put(&store, r).await.unwrap();
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let (max, cycles) = monitor.join().unwrap();
    eprintln!(
        "{COMMITS} commits in {took:?}: WAL started anew {cycles} times, largest WAL {} KiB",
        max >> 10
    );
    assert!(cycles >= 3, "the workload must fill the WAL several times over ({cycles} cycles)");
    assert!(max <= BOUND, "WAL grew to {max} bytes");
}
