//! The plumbing both stores share: connection strings, the pool, migrations under an
//! advisory lock, and error mapping (without SQL text, URLs or passwords).

use std::error::Error as StdError;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{HookError, Metrics, RecycleError, RecycleResult};
use deadpool_diesel::postgres::Runtime;
use deadpool_diesel::{InteractError, ManagerConfig, RecyclingMethod};
use diesel::connection::{AnsiTransactionManager, Connection, SimpleConnection, TransactionManager};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{ConnectionError, DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::BigInt;
use diesel::{PgConnection, QueryResult, RunQueryDsl};
use profile_core::admin::PoolStatus;
use profile_core::ports::StoreError;

use crate::{OpenError, PgConfig};

/// The advisory lock (two-key form, so it never meets a one-key per-user lock) every
/// instance takes around its migrations: instances starting together migrate in turn.
const MIGRATION_LOCK: (i32, i32) = (0x7072_6f66, 1); // "prof"

/// A connection string as the operator wrote it, with what libpq needs added.
#[derive(Clone)]
pub(crate) struct Target {
    /// For libpq: the URL with `connect_timeout` (and nothing else) added.
    conninfo: String,
    /// For messages: the URL without password.
    pub(crate) shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The URL without its password (in the user part or a `password=` parameter).
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "password")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if pairs.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

impl Target {
    /// Checks the URL's shape; adds `connect_timeout` unless the URL sets one.
    pub(crate) fn parse(url: &str, connect_timeout: Duration) -> Result<Self, OpenError> {
        let mut u = url::Url::parse(url).map_err(|e| OpenError::Url { reason: e.to_string() })?;
        if u.scheme() != "postgres" && u.scheme() != "postgresql" {
            return Err(OpenError::Url {
                reason: format!("unknown scheme {:?} (expected postgres:// or postgresql://)", u.scheme()),
            });
        }
        let db = u.path().trim_start_matches('/');
        if db.is_empty() && !u.query_pairs().any(|(k, _)| k == "dbname") {
            return Err(OpenError::Url {
                reason: "names no database (postgres://USER@HOST/DATABASE)".to_owned(),
            });
        }
        let shown = redact(url);
        if !u.query_pairs().any(|(k, _)| k == "connect_timeout") {
            // libpq counts whole seconds and takes anything under 2 as 2.
            let secs = connect_timeout.as_secs().max(2);
            u.query_pairs_mut().append_pair("connect_timeout", &secs.to_string());
        }
        Ok(Self { conninfo: u.to_string(), shown })
    }

    /// One connection outside any pool (migrations, checks).
    pub(crate) fn connect(&self) -> Result<PgConnection, OpenError> {
        PgConnection::establish(&self.conninfo)
            .map_err(|e| OpenError::Connect { target: self.shown.clone(), reason: connection_reason(&e) })
    }
}

/// libpq's reason on one line ("connection to server … failed: FATAL: database "x" does
/// not exist"); it never holds the password.
pub(crate) fn connection_reason(e: &ConnectionError) -> String {
    let text = match e {
        ConnectionError::BadConnection(m) => m.clone(),
        ConnectionError::InvalidConnectionUrl(m) => format!("invalid connection URL: {m}"),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether an error means the connection itself is gone (server restarted, network cut).
fn connection_lost(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(_, info) => {
            let m = info.message();
            m.contains("terminating connection")
                || m.contains("server closed the connection")
                || m.contains("no connection to the server")
                || m.contains("connection to server")
        }
        _ => false,
    }
}

/// Maps a driver error: lost connections, timeouts and contention may pass; the rest is
/// a failure. Only the server's one-line message is kept — never the SQL, never the
/// `DETAIL` (it quotes row values such as e-mail addresses).
pub(crate) fn diesel_error(label: &str, e: &DieselError) -> StoreError {
    match e {
        DieselError::DatabaseError(kind, info) => {
            let msg = info.message().lines().next().unwrap_or("").to_owned();
            let transient = matches!(
                kind,
                DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand
                    | DatabaseErrorKind::SerializationFailure
            ) || [
                "terminating connection",
                "server closed the connection",
                "no connection to the server",
                "connection to server",
                "statement timeout",
                "lock timeout",
                "deadlock detected",
                "shutting down",
                "starting up",
                "in recovery",
                "too many clients",
                "read-only transaction",
            ]
            .iter()
            .any(|m| msg.contains(m));
            if transient {
                StoreError::Unavailable(format!("{label} database: {msg}"))
            } else {
                StoreError::Failure(format!("{label} database: {msg}"))
            }
        }
        DieselError::BrokenTransactionManager => {
            StoreError::Unavailable(format!("{label} database connection broke mid-transaction"))
        }
        DieselError::NotFound => StoreError::Failure(format!("{label} database: row not found")),
        DieselError::DeserializationError(e) => {
            StoreError::Failure(format!("{label} database: unreadable value: {e}"))
        }
        DieselError::SerializationError(e) => {
            StoreError::Failure(format!("{label} database: value not writable: {e}"))
        }
        _ => StoreError::Failure(format!("{label} database: driver error")),
    }
}

/// A store's error inside a transaction: diesel's, or a verdict of the store's own.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The driver failed.
    Diesel(DieselError),
    /// The operation decided to fail (conflict, not found, bad stored data).
    Store(StoreError),
}

impl From<DieselError> for TxError {
    fn from(e: DieselError) -> Self {
        Self::Diesel(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A fixed-text statement of a store's own, [`KeyedSql::SQL`], with one `BIGINT` key at
/// its `$1`, kept prepared on each connection under its type: one round trip a call,
/// where a `sql_query` is prepared anew every time (two round trips), and no text built
/// or hashed per call.
pub(crate) struct Keyed<Q> {
    key: i64,
    sql: PhantomData<Q>,
}

/// Names the text of a [`Keyed`] statement.
pub(crate) trait KeyedSql: 'static {
    /// The statement, with one `$1`.
    const SQL: &'static str;
    /// Where `$1` starts in [`SQL`](Self::SQL), found once at compile time (a statement
    /// without one does not build): searching the text on each of the several passes
    /// diesel makes over a query per call cost more than the rest of building it.
    const KEY_AT: usize = key_at(Self::SQL);
}

/// The byte offset of the first `$1` in `sql`; fails the build (in const evaluation) if none.
const fn key_at(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'$' && b[i + 1] == b'1' {
            return i;
        }
        i += 1;
    }
    panic!("a keyed statement has no $1")
}

impl<Q: KeyedSql> Keyed<Q> {
    /// `Q::SQL` with `key` bound at its `$1`.
    pub(crate) fn new(key: i64) -> Self {
        Self { key, sql: PhantomData }
    }
}

impl<Q: KeyedSql> QueryId for Keyed<Q> {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Q: KeyedSql> QueryFragment<Pg> for Keyed<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (head, tail) = Q::SQL.split_at(Q::KEY_AT);
        let tail = &tail[2..];
        out.push_sql(head);
        out.push_bind_param::<BigInt, _>(&self.key)?;
        out.push_sql(tail);
        Ok(())
    }
}

impl<Q: KeyedSql> Query for Keyed<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q: KeyedSql> RunQueryDsl<PgConnection> for Keyed<Q> {}

/// The per-user lock as a statement each connection prepares when it is set up, for
/// [`locked`] to run beside `BEGIN` in one simple query: a
/// `SELECT pg_advisory_xact_lock(…)` sent as text is parsed and planned on every call
/// (pgbench: 28 µs of server CPU against 17 µs prepared).
const USER_LOCK: &str = "profile_api_user_lock";

/// Runs `f` in a transaction (READ COMMITTED) that first queues behind every other
/// writer of `user_id`, on any instance, until it ends: `BEGIN` and the transaction-level
/// advisory lock go in one round trip. Each later statement takes its snapshot after the
/// lock is held, so it sees what the previous holder committed.
pub(crate) fn locked<R>(
    c: &mut PgConnection,
    user_id: i64,
    f: impl FnOnce(&mut PgConnection) -> Result<R, TxError>,
) -> Result<R, TxError> {
    // An integer formatted into the text: nothing a client sent reaches the SQL.
    let begin = format!("BEGIN; EXECUTE {USER_LOCK}({user_id})");
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(c, &begin) {
        // BEGIN ran and the lock failed (a timeout): the server holds an aborted
        // transaction diesel does not know of. End it, or retire the connection.
        if c.batch_execute("ROLLBACK").is_err() {
            return Err(DieselError::BrokenTransactionManager.into());
        }
        return Err(e.into());
    }
    match f(c) {
        Ok(v) => {
            AnsiTransactionManager::commit_transaction(c)?;
            Ok(v)
        }
        Err(e) => match AnsiTransactionManager::rollback_transaction(c) {
            Ok(()) | Err(DieselError::BrokenTransactionManager) => Err(e),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Since when connections made before it are suspect (a query found its connection dead).
#[derive(Debug, Default)]
struct Suspect(Mutex<Option<Instant>>);

impl Suspect {
    fn mark(&self) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(Instant::now());
        }
    }
    fn covers(&self, created: Instant) -> bool {
        self.0.lock().ok().and_then(|s| *s).is_some_and(|t| created <= t)
    }
}

/// deadpool-diesel's manager, but recycling in place: its own check runs `SELECT 1` on a
/// blocking thread on every checkout. Here a connection is pinged only when one of its
/// generation was found dead (the server restarted), so after an outage the stale ones
/// are weeded out at the next checkout instead of each failing one request.
pub(crate) struct PgManager {
    inner: deadpool_diesel::postgres::Manager,
    suspect: Arc<Suspect>,
}

impl deadpool::managed::Manager for PgManager {
    type Type = deadpool_diesel::Connection<PgConnection>;
    type Error = deadpool_diesel::Error;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        deadpool::managed::Manager::create(&self.inner).await
    }

    async fn recycle(&self, conn: &mut Self::Type, metrics: &Metrics) -> RecycleResult<Self::Error> {
        {
            let Ok(mut guard) = conn.try_lock() else {
                return Err(RecycleError::message("connection lock poisoned or held"));
            };
            let c: &mut PgConnection = &mut guard;
            if <PgConnection as Connection>::TransactionManager::is_broken_transaction_manager(c) {
                return Err(RecycleError::Backend(deadpool_diesel::Error::BrokenTransactionManger));
            }
        }
        if self.suspect.covers(metrics.created) {
            conn.interact(|c| c.batch_execute("SELECT 1"))
                .await
                .map_err(|e| RecycleError::message(format!("ping interrupted: {e}")))?
                .map_err(|e| RecycleError::Backend(deadpool_diesel::Error::Ping(e)))?;
        }
        Ok(())
    }
}

type Pool = deadpool::managed::Pool<PgManager>;
type Hook = deadpool::managed::Hook<PgManager>;
type PoolError = deadpool::managed::PoolError<deadpool_diesel::Error>;

fn pool_error(label: &str, e: &PoolError) -> StoreError {
    match e {
        PoolError::Timeout(_) => {
            StoreError::Unavailable(format!("no {label} database connection free in time"))
        }
        PoolError::Closed => StoreError::Unavailable(format!("{label} database is closed")),
        PoolError::NoRuntimeSpecified => StoreError::Failure(format!("{label} database pool has no runtime")),
        PoolError::Backend(deadpool_diesel::Error::Connection(c)) => {
            StoreError::Unavailable(format!("cannot connect to {label} database: {}", connection_reason(c)))
        }
        PoolError::PostCreateHook(_) => {
            StoreError::Unavailable(format!("cannot set up a {label} database connection"))
        }
        _ => StoreError::Unavailable(format!("cannot connect to {label} database")),
    }
}

fn interact_error(label: &str, e: &InteractError) -> StoreError {
    match e {
        InteractError::Panic(_) => StoreError::Failure(format!("{label} database task panicked")),
        InteractError::Cancelled => StoreError::Unavailable(format!("{label} database task cancelled")),
    }
}

/// Runs the embedded migrations of one database; returns the versions applied.
pub(crate) type Migrate = fn(&mut PgConnection) -> Result<Vec<String>, Box<dyn StdError + Send + Sync>>;

/// What `open` does to the schema: migrate it, or only check what the service reads.
pub(crate) enum Schema {
    /// Apply pending migrations (under the advisory lock).
    Migrate(Migrate),
    /// Change nothing; fail naming what is missing.
    Check(fn(&mut PgConnection) -> Result<(), String>),
}

/// One database: a pool of connections.
pub(crate) struct Db {
    /// "main" or "profiles", for messages.
    pub(crate) label: &'static str,
    pool: Pool,
    suspect: Arc<Suspect>,
    applied: Vec<String>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("label", &self.label).field("status", &self.pool_status()).finish()
    }
}

impl Db {
    /// Connects, migrates (or checks) and pools one database.
    pub(crate) async fn open(label: &'static str, cfg: &PgConfig, schema: Schema) -> Result<Self, OpenError> {
        let target = Target::parse(&cfg.url, cfg.connect_timeout)?;
        let t = target.clone();
        let applied = tokio::task::spawn_blocking(move || -> Result<Vec<String>, OpenError> {
            let mut c = t.connect()?;
            match schema {
                Schema::Migrate(migrate) => migrate_locked(&mut c, migrate)
                    .map_err(|reason| OpenError::Migrate { target: t.shown.clone(), reason }),
                Schema::Check(check) => check(&mut c)
                    .map(|()| Vec::new())
                    .map_err(|missing| OpenError::Missing { target: t.shown.clone(), missing }),
            }
        })
        .await
        .map_err(|e| OpenError::Connect { target: target.shown.clone(), reason: e.to_string() })??;

        let suspect = Arc::new(Suspect::default());
        let manager = PgManager {
            inner: deadpool_diesel::postgres::Manager::from_config(
                target.conninfo.clone(),
                Runtime::Tokio1,
                ManagerConfig { recycling_method: RecyclingMethod::CustomFunction(Box::new(|_| Ok(()))) },
            ),
            suspect: suspect.clone(),
        };
        // A statement that runs past the timeout is cancelled (`Unavailable`), so a stuck
        // lock or an overloaded server never holds a request for long. Every statement of
        // the request path is a key lookup by an index; with sequential scans off, the
        // generic plan a connection keeps for one is its index scan even when it was made
        // from the statistics of a small table (a sequential scan, repeated as the table
        // grows until the next ANALYZE). Only this service's sessions are affected. The
        // per-user lock is prepared once here.
        let setup: Arc<str> = format!(
            "SET statement_timeout = {}; SET TIME ZONE 'UTC'; SET enable_seqscan = off; \
             PREPARE {USER_LOCK}(BIGINT) AS SELECT pg_advisory_xact_lock($1)",
            cfg.timeout.as_millis()
        )
        .into();
        let hook = Hook::async_fn(move |conn, _| {
            let setup = setup.clone();
            Box::pin(async move {
                conn.interact(move |c| c.batch_execute(&setup))
                    .await
                    .map_err(|e| HookError::message(format!("connection setup interrupted: {e}")))?
                    .map_err(|e| HookError::Backend(deadpool_diesel::Error::Ping(e)))
            })
        });
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.timeout))
            .create_timeout(Some(cfg.connect_timeout.max(Duration::from_secs(2)) + Duration::from_secs(1)))
            .recycle_timeout(Some(cfg.timeout))
            .post_create(hook)
            .build()
            .map_err(|e| OpenError::Connect { target: target.shown.clone(), reason: e.to_string() })?;
        let db = Self { label, pool, suspect, applied };
        // Opens one pooled connection now, so a broken setup fails at start-up.
        drop(db.pool.get().await.map_err(|e| OpenError::Connect {
            target: target.shown.clone(),
            reason: pool_error(label, &e).to_string(),
        })?);
        Ok(db)
    }

    /// Migrations this open applied (empty when the schema was current).
    pub(crate) fn applied_migrations(&self) -> &[String] {
        &self.applied
    }

    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<R, TxError> + Send + 'static,
    {
        let (label, pool, suspect) = (self.label, self.pool.clone(), self.suspect.clone());
        // Checkout, statement and return to the pool run as one task of their own: when
        // the request that asked is dropped (its client went away), the connection still
        // goes back only once its statement is done. Returned mid-statement, the next
        // checkout would find it busy and discard it, and opening its replacement under
        // load is what made requests wait for a new connection.
        let task = tokio::spawn(async move {
            let conn = pool.get().await.map_err(|e| pool_error(label, &e))?;
            let out = conn.interact(f).await.map_err(|e| interact_error(label, &e))?;
            match out {
                Ok(r) => Ok(r),
                Err(TxError::Store(e)) => Err(e),
                Err(TxError::Diesel(e)) => {
                    if connection_lost(&e) {
                        // This one is dead; its elder siblings probably too.
                        suspect.mark();
                        drop(deadpool::managed::Object::take(conn));
                    }
                    Err(diesel_error(label, &e))
                }
            }
        });
        task.await
            .unwrap_or_else(|_| Err(StoreError::Failure(format!("the {label} database call did not finish"))))
    }

    /// Runs `f` outside a transaction (one statement reads consistently on its own).
    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<R, TxError> + Send + 'static,
    {
        self.run(f).await
    }

    /// Runs `f` in a transaction (READ COMMITTED), rolled back when `f` fails.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<R, TxError> + Send + 'static,
    {
        self.run(move |c| c.transaction(f)).await
    }

    /// A query that touches the schema, for readiness.
    pub(crate) async fn ping(&self, table: &'static str) -> Result<(), StoreError> {
        self.read(move |c| {
            c.batch_execute(&format!("SELECT 1 FROM {table} LIMIT 1"))?;
            Ok(())
        })
        .await
    }

    /// Connection counts.
    pub(crate) fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus { size: s.size, in_use: s.size.saturating_sub(s.available), max: s.max_size }
    }

    /// Closes the pool; later calls answer `Unavailable`.
    pub(crate) fn close(&self) {
        self.pool.close();
    }
}

/// Migrates under the session-level advisory lock; it dies with the connection, so an
/// instance killed mid-migration never blocks the others.
fn migrate_locked(c: &mut PgConnection, migrate: Migrate) -> Result<Vec<String>, String> {
    let (k1, k2) = MIGRATION_LOCK;
    c.batch_execute(&format!("SELECT pg_advisory_lock({k1}, {k2})"))
        .map_err(|e| diesel_error("", &e).to_string())?;
    let out = migrate(c).map_err(|e| e.to_string());
    let _ = c.batch_execute(&format!("SELECT pg_advisory_unlock({k1}, {k2})"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_found_where_the_text_has_it() {
        assert_eq!(key_at("$1"), 0);
        assert_eq!(key_at("SELECT a FROM t WHERE id = $1 LIMIT 1"), 27);
        let sql = "SELECT x AS y WHERE k = $1 GROUP BY k";
        let (head, tail) = sql.split_at(key_at(sql));
        assert_eq!((head, &tail[2..]), ("SELECT x AS y WHERE k = ", " GROUP BY k"));
    }

    #[test]
    fn redact_drops_passwords_everywhere() {
        assert_eq!(redact("postgres://app:s3cret@db1:5432/main"), "postgres://app@db1:5432/main");
        assert_eq!(
            redact("postgresql://app@db1/main?password=s3cret&sslmode=require"),
            "postgresql://app@db1/main?sslmode=require"
        );
        assert_eq!(redact("postgres://app@db1/main"), "postgres://app@db1/main");
        assert_eq!(redact("postgres://a:b@c:notaport/d"), "(an unparsable URL)");
    }

    #[test]
    fn parse_checks_the_shape_and_adds_a_connect_timeout() {
        let t = Target::parse("postgres://app:pw@db1/main", Duration::from_secs(3)).unwrap();
        assert_eq!(t.shown, "postgres://app@db1/main");
        assert!(t.conninfo.ends_with("?connect_timeout=3"), "{}", t.conninfo);
        let t = Target::parse("postgres://app@db1/main?connect_timeout=9", Duration::from_secs(3)).unwrap();
        assert!(!t.conninfo.contains("connect_timeout=3"));
        for bad in ["mysql://app@db1/main", "postgres://app@db1", "postgres://app@db1/", "not a url"] {
            let e = Target::parse(bad, Duration::from_secs(3)).unwrap_err();
            assert!(matches!(e, OpenError::Url { .. }), "{bad}: {e}");
        }
        let e = Target::parse("postgres://app:hunter2@db1:99999/main", Duration::from_secs(3)).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    /// A writer that gave up waiting for a user's lock (the statement timeout) leaves its
    /// connection fit for the next caller: the half-begun transaction is rolled back.
    #[tokio::test]
    async fn a_lock_wait_cut_by_the_timeout_leaves_the_connection_usable() {
        let server = crate::testing::PgServer::shared();
        let test_db = server.database();
        let cfg = test_db.one_connection(Duration::from_millis(300));
        let db = Db::open("profiles", &cfg, Schema::Check(|_| Ok(()))).await.expect("open");
        let mut holder = PgConnection::establish(&test_db.url()).expect("second session");
        holder.batch_execute("SELECT pg_advisory_lock(77)").expect("hold user 77");
        let waited = db.run(|c| locked(c, 77, |_| Ok(()))).await;
        assert!(matches!(waited, Err(StoreError::Unavailable(_))), "{waited:?}");
        holder.batch_execute("SELECT pg_advisory_unlock(77)").expect("release");
        // The pool's one connection, in a transaction and outside one.
        db.run(|c| locked(c, 77, |c| Ok(c.batch_execute("SELECT 1")?)))
            .await
            .expect("locked after the timeout");
        db.read(|c| Ok(c.batch_execute("SELECT 1")?)).await.expect("a read after the timeout");
    }

    /// A request dropped while its statement runs (its client went away) must not cost
    /// the pool its connection: the next caller gets the same backend once the statement
    /// is done, instead of a new connection opened under load.
    #[tokio::test]
    async fn a_call_abandoned_mid_statement_keeps_its_connection() {
        use diesel::RunQueryDsl;
        use diesel::sql_types::Integer;

        #[derive(diesel::QueryableByName)]
        struct Pid {
            #[diesel(sql_type = Integer)]
            pid: i32,
        }
        let server = crate::testing::PgServer::shared();
        let test_db = server.database();
        let cfg = test_db.one_connection(Duration::from_secs(5));
        let db = Db::open("profiles", &cfg, Schema::Check(|_| Ok(()))).await.expect("open");
        let pid =
            || db.read(|c| Ok(diesel::sql_query("SELECT pg_backend_pid() AS pid").get_result::<Pid>(c)?.pid));
        let first = pid().await.expect("first call");
        // Abandoned after 50 ms, while its 300 ms statement still runs.
        let slow = db.read(|c| Ok(diesel::sql_query("SELECT pg_sleep(0.3)").execute(c)?));
        assert!(tokio::time::timeout(Duration::from_millis(50), slow).await.is_err());
        let next = pid().await.expect("the call after the abandoned one");
        assert_eq!(next, first, "the connection was discarded and a new backend opened");
    }
}
