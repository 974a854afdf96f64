//! The shared storage-port contract suite, run against a throwaway PostgreSQL server.

use std::time::Duration;

use chrono::{SecondsFormat, TimeZone, Utc};
use profile_core::contract::{AccountFixture, account_repository_contract, profile_repository_contract};
use profile_core::domain::AccountSnapshot;
use profile_postgres::testing::PgServer;
use profile_postgres::{MainSchema, PgConfig, open_main, open_profiles};

fn cfg(url: String) -> PgConfig {
    PgConfig { url, pool_size: 4, timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(2) }
}

fn ts(t: &chrono::DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What the wider application would write for this account, in PostgreSQL's types.
fn insert_user(a: &AccountSnapshot) -> String {
    format!(
        "INSERT INTO users (id, email, username, status, created_at, last_login_at, login_count) \
         VALUES ({}, {}, {}, {}, {}, {}, {});",
        a.id,
        quote(&a.email),
        quote(&a.username),
        quote(a.status.as_str()),
        ts(&a.created_at),
        a.last_login_at.as_ref().map_or("NULL".to_owned(), ts),
        a.login_count,
    )
}

#[tokio::test]
async fn postgres_main_store_honours_the_contract() {
    let db = PgServer::shared().database();
    let store = open_main(&cfg(db.url()), MainSchema::Apply).await.unwrap();
    let f = AccountFixture::sample();
    let stats = &f.active.orders;
    assert_eq!((stats.orders_count, stats.total_spent_cents), (2, 3500));
    let last = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::TimeDelta::milliseconds(250);
    assert_eq!(stats.last_order_at, Some(last));
    let mut sql = String::from("BEGIN;");
    for a in [&f.active, &f.other_active, &f.suspended, &f.deleted] {
        sql.push_str(&insert_user(a));
    }
    sql.push_str(&format!(
        "INSERT INTO orders (user_id, total_cents, status, created_at) VALUES \
         ({id}, 1000, 'completed', '2026-02-01T00:00:00Z'), \
         ({id}, 2500, 'completed', '2026-03-01T00:00:00.250Z'), \
         ({id}, 90000, 'refunded', '2026-06-01T00:00:00Z'), \
         ({id}, 70000, 'pending', '2026-07-01T00:00:00Z'), \
         ({other}, 123, 'completed', '2026-08-01T00:00:00Z'); COMMIT;",
        id = f.active.id,
        other = f.suspended.id,
    ));
    db.psql(&sql);
    let f = AccountFixture {
        suspended: AccountSnapshot {
            orders: profile_core::domain::OrderStats {
                orders_count: 1,
                total_spent_cents: 123,
                last_order_at: Some(Utc.with_ymd_and_hms(2026, 8, 1, 0, 0, 0).unwrap()),
            },
            ..f.suspended
        },
        ..f
    };
    account_repository_contract(&store, &f).await;
}

#[tokio::test]
async fn postgres_profile_store_honours_the_contract() {
    let db = PgServer::shared().database();
    let store = open_profiles(&cfg(db.url())).await.unwrap();
    profile_repository_contract(&store).await;
}
