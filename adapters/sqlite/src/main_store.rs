//! The main database: accounts and orders (shared with the wider application).

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use profile_core::domain::{AccountSnapshot, AccountStatus, OrderStats, UserId};
use profile_core::ports::{AccountRepository, StoreError};

use crate::db::{Db, Keyed, KeyedSql, TxError};
use crate::schema::users;
use crate::{DbConfig, OpenError, PoolStatus, time};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations_main/sqlite");

/// The account with its completed-order figures: a primary-key lookup joined to one
/// range of the covering `orders_user_status_stats` index.
pub(crate) const ACCOUNT_SQL: &str = "\
SELECT u.id AS id, u.email AS email, u.username AS username, u.status AS status, \
       u.created_at AS created_at, u.last_login_at AS last_login_at, u.login_count AS login_count, \
       COUNT(o.user_id) AS orders_count, COALESCE(SUM(o.total_cents), 0) AS total_spent_cents, \
       MAX(o.created_at) AS last_order_at \
FROM users AS u LEFT JOIN orders AS o ON o.user_id = u.id AND o.status = 'completed' \
WHERE u.id = ?1 \
GROUP BY u.id";

/// [`ACCOUNT_SQL`] as a [`Keyed`] statement.
struct AccountById;

impl KeyedSql for AccountById {
    const SQL: &'static str = ACCOUNT_SQL;
    type Columns = (BigInt, Text, Text, Text, Text, Nullable<Text>, BigInt, BigInt, BigInt, Nullable<Text>);
}

/// Users of one seeding batch; `?1`..=`?2` are the ids, `?3` the epoch of the first day.
const SEED_USERS_SQL: &str = "\
WITH RECURSIVE seq(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?2) \
INSERT INTO users (id, email, username, status, created_at, last_login_at, login_count) \
SELECT i, 'user' || i || '@example.com', 'user' || i, 'active', \
       strftime('%Y-%m-%dT%H:%M:%SZ', ?3 + (i * 7919) % 31536000, 'unixepoch'), \
       CASE WHEN i % 7 = 0 THEN NULL \
            ELSE strftime('%Y-%m-%dT%H:%M:%SZ', ?3 + 31536000 + (i * 104729) % 15552000, 'unixepoch') END, \
       CASE WHEN i % 7 = 0 THEN 0 ELSE 1 + (i * 31) % 200 END \
FROM seq";

/// Orders of one seeding batch, `?4` per user, user by user (CROSS JOIN fixes the loop
/// order, so the index grows at its end); every 10th is `refunded` and every 10th
/// `pending`, the rest `completed`.
const SEED_ORDERS_SQL: &str = "\
WITH RECURSIVE seq(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?2), \
     nth(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM nth WHERE j + 1 < ?4) \
INSERT INTO orders (user_id, total_cents, status, created_at) \
SELECT i, 500 + (i * 7919 + j * 104729) % 49500, \
       CASE (i + j) % 10 WHEN 0 THEN 'refunded' WHEN 5 THEN 'pending' ELSE 'completed' END, \
       strftime('%Y-%m-%dT%H:%M:%SZ', ?3 + (i * 7919) % 31536000 + (j + 1) * 259200 + (i * 31 + j * 97) % 86400, 'unixepoch') \
FROM seq CROSS JOIN nth";

/// 2024-01-01T00:00:00Z: seeded accounts are created during 2024.
const SEED_EPOCH: i64 = 1_704_067_200;
/// Users per seeding transaction: large enough to amortise commits, small enough to
/// report progress and keep the WAL in check.
const SEED_BATCH: u64 = 10_000;

fn migrate(c: &mut SqliteConnection) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(c.run_pending_migrations(MIGRATIONS)?.iter().map(ToString::to_string).collect())
}

/// The columns the service reads, by table (what the `check` mode verifies).
const READ_COLUMNS: [(&str, &[&str]); 2] = [
    ("users", &["id", "email", "username", "status", "created_at", "last_login_at", "login_count"]),
    ("orders", &["user_id", "total_cents", "status", "created_at"]),
];

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

/// Changes nothing; fails naming the tables and columns of [`READ_COLUMNS`] missing.
fn check(c: &mut SqliteConnection) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    let rows = diesel::sql_query(
        "SELECT m.name AS table_name, p.name AS column_name \
         FROM sqlite_master AS m, pragma_table_info(m.name) AS p \
         WHERE m.type = 'table' AND m.name IN ('users', 'orders')",
    )
    .load::<ColumnRow>(c)?;
    let mut missing = Vec::new();
    for (table, columns) in READ_COLUMNS {
        if !rows.iter().any(|r| r.table_name == table) {
            missing.push(format!("table {table}"));
            continue;
        }
        for col in columns {
            if !rows.iter().any(|r| r.table_name == table && r.column_name == *col) {
                missing.push(format!("column {table}.{col}"));
            }
        }
    }
    if missing.is_empty() { Ok(Vec::new()) } else { Err(missing.join(", ").into()) }
}

/// What [`MainStore::seed`] created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    /// Id of the first account created (one past the previous highest).
    pub first_id: i64,
    /// Id of the last account created (`first_id - 1` when none was asked for).
    pub last_id: i64,
    /// Accounts created.
    pub users: u64,
    /// Orders created.
    pub orders: u64,
}

/// The main database adapter: [`AccountRepository`] plus the `seed` engine.
#[derive(Debug)]
pub struct MainStore {
    db: Db,
}

/// A row of [`ACCOUNT_SQL`], read by position: the fields in the order of its columns
/// ([`AccountById::Columns`]). By name, diesel compared column names for every field
/// of every row, 4 % of a PATCH's instructions.
#[derive(Queryable)]
struct AccountRow {
    id: i64,
    email: String,
    username: String,
    status: String,
    created_at: String,
    last_login_at: Option<String>,
    login_count: i64,
    orders_count: i64,
    total_spent_cents: i64,
    last_order_at: Option<String>,
}

fn bad_row(id: i64, what: &str, value: &str) -> StoreError {
    StoreError::Failure(format!("main database: user {id} has an unreadable {what}: {value:?}"))
}

fn parse_ts(id: i64, what: &str, value: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    time::parse(value).ok_or_else(|| bad_row(id, what, value))
}

impl AccountRow {
    fn into_snapshot(self) -> Result<AccountSnapshot, StoreError> {
        let id = self.id;
        Ok(AccountSnapshot {
            id,
            status: AccountStatus::parse(&self.status).ok_or_else(|| bad_row(id, "status", &self.status))?,
            created_at: parse_ts(id, "created_at", &self.created_at)?,
            last_login_at: self
                .last_login_at
                .as_deref()
                .map(|s| parse_ts(id, "last_login_at", s))
                .transpose()?,
            login_count: self.login_count,
            orders: OrderStats {
                orders_count: self.orders_count,
                total_spent_cents: self.total_spent_cents,
                last_order_at: self
                    .last_order_at
                    .as_deref()
                    .map(|s| parse_ts(id, "order created_at", s))
                    .transpose()?,
            },
            email: self.email,
            username: self.username,
        })
    }
}

impl MainStore {
    pub(crate) async fn open(cfg: &DbConfig) -> Result<Self, OpenError> {
        Ok(Self { db: Db::open("main", cfg, migrate).await? })
    }

    /// Opens without migrating: the schema belongs to the wider application; fails with
    /// [`OpenError::Missing`] naming what the service reads and does not find.
    pub async fn open_checked(cfg: &DbConfig) -> Result<Self, OpenError> {
        match Db::open("main", cfg, check).await {
            Ok(db) => Ok(Self { db }),
            // In this mode the only "migration" is the check.
            Err(OpenError::Migrate { path, reason }) => Err(OpenError::Missing { path, missing: reason }),
            Err(e) => Err(e),
        }
    }

    /// Versions of the migrations this open applied (empty when the schema was current).
    pub fn applied_migrations(&self) -> &[String] {
        self.db.applied_migrations()
    }

    /// Connection counts for the pool gauges.
    pub fn pool_status(&self) -> PoolStatus {
        self.db.pool_status()
    }

    /// Stops the checkpointer and closes the pools; later calls answer `Unavailable`.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Whether any account exists (demo mode seeds only an empty database).
    pub async fn has_users(&self) -> Result<bool, StoreError> {
        self.db
            .read(|c| {
                let any: Option<i64> = users::table.select(users::id).first(c).optional()?;
                Ok(any.is_some())
            })
            .await
    }

    /// Appends `users` deterministic demo accounts after the highest existing id, with
    /// `orders_per_user` orders each, in transactions of 10,000 accounts; calls
    /// `progress` with the number of accounts created so far after each transaction.
    ///
    /// Account `i` has e-mail `user{i}@example.com` and username `user{i}`.
    pub async fn seed(
        &self,
        users: u64,
        orders_per_user: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<SeedReport, StoreError> {
        let mut report = SeedReport { first_id: 0, last_id: 0, users: 0, orders: 0 };
        let mut first = true;
        loop {
            let count = (users - report.users).min(SEED_BATCH);
            let count_i64 =
                i64::try_from(count).map_err(|_| StoreError::Failure("too many users".to_owned()))?;
            let orders = i64::from(orders_per_user);
            // Each batch picks its start inside its own transaction, so a concurrent
            // writer of users cannot make two batches collide.
            let (start, end) = self
                .db
                .write(move |c| {
                    let max: Option<i64> = users::table.select(diesel::dsl::max(users::id)).first(c)?;
                    let start = max.unwrap_or(0) + 1;
                    let end = start + count_i64 - 1;
                    if count_i64 > 0 {
                        diesel::sql_query(SEED_USERS_SQL)
                            .bind::<BigInt, _>(start)
                            .bind::<BigInt, _>(end)
                            .bind::<BigInt, _>(SEED_EPOCH)
                            .execute(c)?;
                        if orders > 0 {
                            diesel::sql_query(SEED_ORDERS_SQL)
                                .bind::<BigInt, _>(start)
                                .bind::<BigInt, _>(end)
                                .bind::<BigInt, _>(SEED_EPOCH)
                                .bind::<BigInt, _>(orders)
                                .execute(c)?;
                        }
                    }
                    Ok((start, end))
                })
                .await
                .map_err(|e| match e {
                    StoreError::Failure(m) if m.contains("UNIQUE") => StoreError::Failure(format!(
                        "{m}: a user{{i}}@example.com address of the new ids is already taken"
                    )),
                    other => other,
                })?;
            if first {
                report.first_id = start;
                first = false;
            }
            report.last_id = end;
            report.users += count;
            report.orders += count * u64::from(orders_per_user);
            if count > 0 {
                progress(report.users);
            }
            if report.users >= users {
                return Ok(report);
            }
        }
    }
}

#[async_trait]
impl AccountRepository for MainStore {
    async fn account(&self, user_id: UserId) -> Result<Option<AccountSnapshot>, StoreError> {
        let row = self
            .db
            .read(move |c| Ok(Keyed::<AccountById>::new(user_id).get_result::<AccountRow>(c).optional()?))
            .await?;
        row.map(AccountRow::into_snapshot).transpose()
    }

    async fn set_email(&self, user_id: UserId, email: &str) -> Result<(), StoreError> {
        let email = email.to_owned();
        self.db
            .write(move |c| {
                match diesel::update(users::table.find(user_id)).set(users::email.eq(&email)).execute(c) {
                    Ok(0) => Err(StoreError::NotFound.into()),
                    Ok(_) => Ok(()),
                    // The only UNIQUE on a row whose id is fixed is the NOCASE e-mail.
                    Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                        Err(StoreError::EmailTaken.into())
                    }
                    Err(e) => Err(TxError::from(e)),
                }
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping("users").await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use diesel::connection::SimpleConnection;

    use super::*;

    fn cfg(dir: &tempfile::TempDir) -> DbConfig {
        DbConfig { path: dir.path().join("main.db"), pool_size: 2, busy_timeout: Duration::from_secs(5) }
    }

    #[derive(QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    pub(crate) fn plan(c: &mut SqliteConnection, sql: &str) -> Vec<String> {
        diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load::<PlanRow>(c)
            .expect("explain")
            .into_iter()
            .map(|r| r.detail)
            .collect()
    }

    #[tokio::test]
    async fn account_query_is_two_index_searches() {
        let dir = tempfile::tempdir().unwrap();
        let store = MainStore::open(&cfg(&dir)).await.unwrap();
        store.seed(50, 4, &|_| {}).await.unwrap();
        // Statistics make the planner's choice the one a real, analysed database gets.
        store.db.write(|c| Ok(c.batch_execute("ANALYZE")?)).await.unwrap();
        let conn = store.db.reader_conn().await;
        let steps = conn.interact(|c| plan(c, ACCOUNT_SQL)).await.unwrap();
        assert!(steps.iter().all(|s| s.starts_with("SEARCH ")), "plan: {steps:?}");
        assert!(steps.iter().any(|s| s.contains("USING INTEGER PRIMARY KEY")), "plan: {steps:?}");
        assert!(
            steps.iter().any(|s| s.contains("USING COVERING INDEX orders_user_status_stats")),
            "plan: {steps:?}"
        );
    }

    #[tokio::test]
    async fn stats_count_completed_orders_only_and_read_foreign_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let store = MainStore::open(&cfg(&dir)).await.unwrap();
        store
            .db
            .write(|c| {
                c.batch_execute(
                    "INSERT INTO users (id, email, username, created_at, last_login_at, login_count) \
                     VALUES (7, 'Ada@Example.com', 'ada', '2026-01-05 10:00:00', '2026-11-25T20:02:00+01:00', 57); \
                     INSERT INTO orders (user_id, total_cents, status, created_at) VALUES \
                     (7, 1000, 'completed', '2026-02-01T00:00:00Z'), \
                     (7, 2500, 'completed', '2026-03-01T00:00:00.250Z'), \
                     (7, 9999, 'refunded', '2026-04-01T00:00:00Z'), \
                     (7, 7777, 'pending', '2026-05-01T00:00:00Z');",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let a = store.account(7).await.unwrap().unwrap();
        // Every field, so a column read into the wrong field (by position) shows.
        assert_eq!(a.id, 7);
        assert_eq!(a.email, "Ada@Example.com");
        assert_eq!(a.username, "ada");
        assert_eq!(a.login_count, 57);
        assert_eq!(a.status, AccountStatus::Active);
        assert_eq!(time::format(&a.created_at), "2026-01-05T10:00:00Z");
        assert_eq!(a.last_login_at.map(|t| time::format(&t)).as_deref(), Some("2026-11-25T19:02:00Z"));
        assert_eq!(a.orders.orders_count, 2);
        assert_eq!(a.orders.total_spent_cents, 3500);
        assert_eq!(
            a.orders.last_order_at.map(|t| time::format(&t)).as_deref(),
            Some("2026-03-01T00:00:00.250Z")
        );
        assert_eq!(store.account(8).await.unwrap(), None);
    }

    #[tokio::test]
    async fn every_connection_gets_the_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = MainStore::open(&cfg(&dir)).await.unwrap();
        #[derive(QueryableByName)]
        struct Pragmas {
            #[diesel(sql_type = BigInt)]
            busy: i64,
            #[diesel(sql_type = Text)]
            journal: String,
            #[diesel(sql_type = BigInt)]
            fk: i64,
            #[diesel(sql_type = BigInt)]
            sync: i64,
            #[diesel(sql_type = BigInt)]
            limit: i64,
        }
        let conn = store.db.reader_conn().await;
        let p = conn
            .interact(|c| {
                diesel::sql_query(
                    "SELECT b.timeout AS busy, j.journal_mode AS journal, f.foreign_keys AS fk, \
                     s.synchronous AS sync, l.journal_size_limit AS \"limit\" \
                     FROM pragma_busy_timeout AS b, pragma_journal_mode AS j, pragma_foreign_keys AS f, \
                     pragma_synchronous AS s, pragma_journal_size_limit AS l",
                )
                .get_result::<Pragmas>(c)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.busy, 5000);
        assert_eq!(p.journal, "wal");
        assert_eq!(p.fk, 1);
        assert_eq!(p.sync, 1, "NORMAL");
        assert_eq!(p.limit, crate::db::JOURNAL_SIZE_LIMIT as i64);
    }
}
