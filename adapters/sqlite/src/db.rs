//! The plumbing both stores share: file creation, pools and per-connection pragmas,
//! migrations, error mapping, and the WAL checkpointer.

use std::error::Error as StdError;
use std::io;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{HookError, Metrics, RecycleError, RecycleResult};
use deadpool_diesel::sqlite::Runtime;
use deadpool_diesel::{InteractError, ManagerConfig, RecyclingMethod};
use diesel::connection::SimpleConnection;
use diesel::connection::{AnsiTransactionManager, Connection, TransactionManager};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Integer};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, QueryableByName, RunQueryDsl, SqliteConnection};
use profile_core::ports::StoreError;
use tokio::task::JoinHandle;

use crate::{DbConfig, OpenError, PoolStatus};

/// A fixed-text statement of a store's own, [`KeyedSql::SQL`], with one `BIGINT` key
/// bound at its `?1`. A `sql_query` is prepared anew on every call; this one is kept
/// prepared by each connection, keyed by its type (no text built or hashed per call).
pub(crate) struct Keyed<Q> {
    key: i64,
    sql: PhantomData<Q>,
}

/// Names the text of a [`Keyed`] statement.
pub(crate) trait KeyedSql: 'static {
    /// The statement, with one `?1`.
    const SQL: &'static str;
    /// The SQL types of its columns, in order, for rows read by position (`Queryable`);
    /// `Untyped` for rows read by name (`QueryableByName`), which looks every column up
    /// by its name on every row.
    type Columns: 'static;
    /// Where `?1` starts in [`SQL`](Self::SQL), found once at compile time (a statement
    /// without one does not build): searching the text on each of the several passes
    /// diesel makes over a query per call cost more than the rest of building it.
    const KEY_AT: usize = key_at(Self::SQL);
}

/// The byte offset of the first `?1` in `sql`; fails the build (in const evaluation) if none.
const fn key_at(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'?' && b[i + 1] == b'1' {
            return i;
        }
        i += 1;
    }
    panic!("a keyed statement has no ?1")
}

impl<Q: KeyedSql> Keyed<Q> {
    /// `Q::SQL` with `key` bound at its `?1`.
    pub(crate) fn new(key: i64) -> Self {
        Self { key, sql: PhantomData }
    }
}

impl<Q: KeyedSql> QueryId for Keyed<Q> {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Q: KeyedSql> QueryFragment<Sqlite> for Keyed<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let (head, tail) = Q::SQL.split_at(Q::KEY_AT);
        let tail = &tail[2..];
        out.push_sql(head);
        out.push_bind_param::<BigInt, _>(&self.key)?;
        out.push_sql(tail);
        Ok(())
    }
}

impl<Q: KeyedSql> Query for Keyed<Q> {
    type SqlType = Q::Columns;
}

impl<Q: KeyedSql> RunQueryDsl<SqliteConnection> for Keyed<Q> {}

/// After a checkpoint resets the WAL, SQLite shrinks the file back to this size: above
/// what the WAL reaches between restarts ([`FORCE_FRAMES`] pages, ≈ 20 MB), so the file
/// is not shrunk and grown again on every cycle.
pub(crate) const JOURNAL_SIZE_LIMIT: u64 = 32 * 1024 * 1024;
/// How often the checkpointer copies the WAL's new frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL frames (pages) past which the checkpointer restarts the WAL on the writer, so it
/// is reused from its start (≈ 16 MB). The restart holds the writer while it copies
/// the last frames and syncs both files (≈ 2 ms here, the database file flushed just
/// before it; ≈ 10 ms without that), so it sets how often every queued write waits that
/// long: at SQLite's own threshold (1,000 frames), five times a second under `patch`.
pub(crate) const RESTART_FRAMES: i64 = 4000;
/// WAL frames past which the restart waits for readers (up to [`CHECKPOINT_WAIT_MAX`])
/// instead of giving up at once: readers that never pause (checkpoint starvation).
const FORCE_FRAMES: i64 = 5000;
/// The longest a forced restart waits for readers, holding the writer meanwhile.
const CHECKPOINT_WAIT_MAX: Duration = Duration::from_millis(100);
/// Slack on top of `busy_timeout` for opening a connection (open + pragmas).
const CONNECT_GRACE: Duration = Duration::from_secs(2);

/// deadpool-diesel's connection manager, except for recycling. Its own recycle check
/// runs on a blocking thread (`interact`) on every checkout, doubling the thread
/// hand-offs of each query, which profiling showed as the largest cost of a write. The
/// check it makes — no transaction left open, no poisoned lock — reads in-memory state
/// only, so it is made here in place.
pub(crate) struct SqliteManager(deadpool_diesel::sqlite::Manager);

impl deadpool::managed::Manager for SqliteManager {
    type Type = deadpool_diesel::Connection<SqliteConnection>;
    type Error = deadpool_diesel::Error;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        deadpool::managed::Manager::create(&self.0).await
    }

    async fn recycle(&self, conn: &mut Self::Type, _: &Metrics) -> RecycleResult<Self::Error> {
        // An idle pooled connection is never locked: anything else means it is unusable.
        let Ok(mut guard) = conn.try_lock() else {
            return Err(RecycleError::message("connection lock poisoned or held"));
        };
        let c: &mut SqliteConnection = &mut guard;
        if <SqliteConnection as Connection>::TransactionManager::is_broken_transaction_manager(c) {
            return Err(RecycleError::Backend(deadpool_diesel::Error::BrokenTransactionManger));
        }
        Ok(())
    }
}

type Pool = deadpool::managed::Pool<SqliteManager>;
type Hook = deadpool::managed::Hook<SqliteManager>;
type PoolError = deadpool::managed::PoolError<deadpool_diesel::Error>;

/// A store's error inside a transaction: diesel's, or a verdict of the store's own.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The driver failed.
    Diesel(diesel::result::Error),
    /// The operation decided to fail (conflict, not found, bad stored data).
    Store(StoreError),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Diesel(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl TxError {
    pub(crate) fn into_store(self, label: &str) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Diesel(e) => diesel_error(label, &e),
        }
    }
}

/// Maps a driver error: lock, read-only and I/O trouble may pass, the rest is a failure.
pub(crate) fn diesel_error(label: &str, e: &diesel::result::Error) -> StoreError {
    use diesel::result::Error as E;
    match e {
        E::DatabaseError(_, info) => {
            // diesel keeps only SQLite's message, not its result code.
            let msg = info.message();
            if is_locked(e) {
                StoreError::Unavailable(format!("{label} database is locked (busy timeout elapsed)"))
            } else if msg.contains("readonly") || msg.contains("read-only") {
                StoreError::Unavailable(format!("{label} database is read-only"))
            } else if msg.contains("disk is full")
                || msg.contains("disk I/O")
                || msg.contains("unable to open")
            {
                StoreError::Unavailable(format!("{label} database: {msg}"))
            } else {
                StoreError::Failure(format!("{label} database: {msg}"))
            }
        }
        other => StoreError::Failure(format!("{label} database: {other}")),
    }
}

fn pool_error(label: &str, e: &PoolError) -> StoreError {
    match e {
        PoolError::Timeout(_) => {
            StoreError::Unavailable(format!("no {label} database connection free in time"))
        }
        PoolError::Closed => StoreError::Unavailable(format!("{label} database is closed")),
        PoolError::NoRuntimeSpecified => StoreError::Failure(format!("{label} database pool has no runtime")),
        other => {
            StoreError::Unavailable(format!("cannot connect to {label} database: {}", pool_reason(other)))
        }
    }
}

fn interact_error(label: &str, e: &InteractError) -> StoreError {
    match e {
        InteractError::Panic(_) => StoreError::Failure(format!("{label} database task panicked")),
        InteractError::Cancelled => StoreError::Unavailable(format!("{label} database task cancelled")),
    }
}

/// The innermost reason of a pool error, without deadpool's wrapping prose.
fn pool_reason(e: &PoolError) -> String {
    match e {
        PoolError::Backend(deadpool_diesel::Error::Connection(c)) => c.to_string(),
        PoolError::Backend(deadpool_diesel::Error::Ping(p)) => p.to_string(),
        PoolError::PostCreateHook(HookError::Backend(deadpool_diesel::Error::Ping(p))) => p.to_string(),
        PoolError::PostCreateHook(HookError::Backend(b)) => b.to_string(),
        PoolError::PostCreateHook(HookError::Message(m)) => m.to_string(),
        PoolError::Timeout(_) => "timed out (is another process holding the database locked?)".to_owned(),
        other => other.to_string(),
    }
}

/// An I/O error in plain words ("permission denied"), without the OS error number.
fn io_reason(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied => "permission denied".to_owned(),
        K::NotFound => "no such file or folder".to_owned(),
        K::AlreadyExists => "a file with that name exists".to_owned(),
        K::ReadOnlyFilesystem => "read-only file system".to_owned(),
        K::IsADirectory => "it is a folder".to_owned(),
        K::NotADirectory => "a part of the path is a file, not a folder".to_owned(),
        K::StorageFull => "no space left on device".to_owned(),
        _ => {
            let text = e.to_string();
            // "Foo bar (os error 13)" → "foo bar"
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            let mut chars = text.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

/// Creates the folder and the file, so SQLite's own terser errors are never the first.
fn prepare_file(path: &Path) -> Result<(), OpenError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| OpenError::Folder { path: parent.to_path_buf(), reason: io_reason(&e) })?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| OpenError::File { path: path.to_path_buf(), reason: io_reason(&e) })?;
    Ok(())
}

/// The pragmas every connection gets, `busy_timeout` first so the others wait for locks.
fn setup_sql(busy: Duration, reader: bool) -> String {
    let mut sql = format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
         PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};",
        busy.as_millis()
    );
    if reader {
        // Readers never write; this makes a slip an error instead of a lock fight.
        sql.push_str(" PRAGMA query_only = ON;");
    } else {
        // No checkpoint inside a commit: SQLite's automatic one copies the whole WAL and
        // syncs both files (10–50 ms) on the single writer, every ~1000 pages, while
        // every queued write waits — that was the p99 of `patch`. The checkpointer does
        // that copy on a connection of its own, off the writer (see [`checkpointer`]).
        sql.push_str(" PRAGMA wal_autocheckpoint = 0;");
    }
    sql
}

fn build_pool(url: &str, max: usize, busy: Duration, reader: bool) -> Result<Pool, String> {
    // Recycling is `SqliteManager`'s in-place check; the configured method is never run.
    let manager = SqliteManager(deadpool_diesel::sqlite::Manager::from_config(
        url,
        Runtime::Tokio1,
        ManagerConfig { recycling_method: RecyclingMethod::CustomFunction(Box::new(|_| Ok(()))) },
    ));
    let sql: std::sync::Arc<str> = setup_sql(busy, reader).into();
    // Deadpool replaces connections at any time (e.g. after a cancelled checkout), so the
    // pragmas belong to connection creation, not to start-up.
    let hook = Hook::async_fn(move |conn, _| {
        let sql = sql.clone();
        Box::pin(async move {
            conn.interact(move |c| c.batch_execute(&sql))
                .await
                .map_err(|e| HookError::message(format!("connection setup interrupted: {e}")))?
                .map_err(|e| HookError::Backend(deadpool_diesel::Error::Ping(e)))
        })
    });
    Pool::builder(manager)
        .max_size(max)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(busy))
        .create_timeout(Some(busy + CONNECT_GRACE))
        .recycle_timeout(Some(busy + CONNECT_GRACE))
        .post_create(hook)
        .build()
        .map_err(|e| e.to_string())
}

/// Runs the embedded migrations of one database; returns the versions applied.
pub(crate) type Migrate = fn(&mut SqliteConnection) -> Result<Vec<String>, Box<dyn StdError + Send + Sync>>;

/// One database: a reader pool, a one-connection writer pool and the checkpointer.
pub(crate) struct Db {
    /// "main" or "profiles", for messages.
    pub(crate) label: &'static str,
    readers: Pool,
    writer: Pool,
    /// The statements of a [`Writer::write_here`] attempt.
    here: Arc<HereSql>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    applied: Vec<String>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("label", &self.label).field("status", &self.pool_status()).finish()
    }
}

impl Db {
    /// Creates, migrates and pools one database file.
    pub(crate) async fn open(
        label: &'static str,
        cfg: &DbConfig,
        migrate: Migrate,
    ) -> Result<Self, OpenError> {
        let path = cfg.path.clone();
        let text = path.to_str().ok_or_else(|| OpenError::Path { path: path.clone() })?;
        // SQLite opens with URI parsing on: keep a plain path from reading as a URI.
        let url = if text.starts_with("file:") || text.starts_with("sqlite:") {
            format!("./{text}")
        } else {
            text.to_owned()
        };
        let prep_path = path.clone();
        tokio::task::spawn_blocking(move || prepare_file(&prep_path))
            .await
            .map_err(|e| OpenError::File { path: path.clone(), reason: e.to_string() })??;

        let connect = |reason: String| OpenError::Connect { path: path.clone(), reason };
        let writer = build_pool(&url, 1, cfg.busy_timeout, false).map_err(connect)?;
        let readers = build_pool(&url, cfg.pool_size.max(1), cfg.busy_timeout, true).map_err(connect)?;

        let conn = writer.get().await.map_err(|e| connect(pool_reason(&e)))?;
        let applied = conn
            .interact(move |c| {
                // IMMEDIATE: two processes starting together migrate one after the other.
                c.immediate_transaction::<_, Box<dyn StdError + Send + Sync>, _>(migrate)
            })
            .await
            .map_err(|e| OpenError::Migrate { path: path.clone(), reason: e.to_string() })?
            .map_err(|e| OpenError::Migrate { path: path.clone(), reason: e.to_string() })?;
        drop(conn);
        // Opens one reader now, so a broken setup fails at start-up, not on a request.
        drop(readers.get().await.map_err(|e| connect(pool_reason(&e)))?);

        let task = tokio::spawn(checkpointer(writer.weak(), url, path.clone(), label, cfg.busy_timeout));
        Ok(Self {
            label,
            readers,
            writer,
            here: Arc::new(HereSql::new(cfg.busy_timeout)),
            checkpointer: Mutex::new(Some(task)),
            applied,
        })
    }

    /// Migrations this open applied (empty when the schema was current).
    pub(crate) fn applied_migrations(&self) -> &[String] {
        &self.applied
    }

    /// Runs `f` on a reader connection, here on the calling task's thread: for the store's
    /// reads, key lookups in files the OS keeps cached (the account read with its order
    /// figures takes about 15 µs). Handing each to a blocking thread and back cost more
    /// than the read: two thread switches, a task spawn and the blocking pool's lock, on
    /// the core that serves requests (uncached GET 6,000 → 7,900 req/s, PATCH 5,500 →
    /// 6,500 on one core). In WAL mode a reader never waits on the writer or on a
    /// checkpoint, so nothing here sleeps. Writes run on a blocking thread ([`Db::write`]),
    /// where a commit can wait on the write lock, except the profile updates' group
    /// commit, in place while the lock is free ([`Writer::write_here`]). Being
    /// synchronous, a read cannot be abandoned midway: it ends before its connection goes
    /// back.
    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut SqliteConnection) -> Result<R, TxError>,
    {
        let conn = self.readers.get().await.map_err(|e| pool_error(self.label, &e))?;
        let (out, _conn) = in_place(self.label, "read", conn, f)?;
        out.map_err(|e| e.into_store(self.label))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer, on a blocking thread;
    /// rolled back when `f` fails.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<R, TxError> + Send + 'static,
    {
        self.writer().write(f).await
    }

    /// A handle on the writer alone, for a task of the store's own.
    pub(crate) fn writer(&self) -> Writer {
        Writer { label: self.label, pool: self.writer.clone(), here: self.here.clone() }
    }

    /// A query that touches the file (the schema), for readiness.
    pub(crate) async fn ping(&self, table: &'static str) -> Result<(), StoreError> {
        self.read(move |c| {
            c.batch_execute(&format!("SELECT 1 FROM {table} LIMIT 1"))?;
            Ok(())
        })
        .await
    }

    /// Connection counts, readers and writer together.
    pub(crate) fn pool_status(&self) -> PoolStatus {
        let r = self.readers.status();
        let w = self.writer.status();
        let in_use = |s: &deadpool_diesel::Status| s.size.saturating_sub(s.available);
        PoolStatus { size: r.size + w.size, in_use: in_use(&r) + in_use(&w), max: r.max_size + w.max_size }
    }

    /// Stops the checkpointer, truncates the WAL once more and closes both pools.
    pub(crate) async fn close(&self) {
        self.stop_checkpointer();
        if !self.writer.is_closed()
            && let Ok(conn) = self.writer.get().await
        {
            let label = self.label;
            let done = conn.interact(|c| c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")).await;
            if let Ok(Err(e)) = done {
                tracing::debug!(database = label, error = %e, "final checkpoint skipped");
            }
        }
        self.readers.close();
        self.writer.close();
    }

    fn stop_checkpointer(&self) {
        let task = match self.checkpointer.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task {
            task.abort();
        }
    }

    #[cfg(test)]
    pub(crate) async fn reader_conn(&self) -> deadpool::managed::Object<SqliteManager> {
        self.readers.get().await.expect("a reader connection")
    }
}

/// The writer connection of one database, cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    label: &'static str,
    pool: Pool,
    here: Arc<HereSql>,
}

/// What [`Writer::write_here`] runs around its transaction, made once per database.
#[derive(Debug)]
struct HereSql {
    /// `BEGIN IMMEDIATE` failing at once on a lock held elsewhere, then the usual wait.
    begin: String,
    /// The usual wait, when `begin` stopped at its `BEGIN`.
    restore: String,
}

impl HereSql {
    fn new(busy: Duration) -> Self {
        let restore = format!("PRAGMA busy_timeout = {}", busy.as_millis());
        Self { begin: format!("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE; {restore}"), restore }
    }
}

impl Writer {
    /// "main" or "profiles", for messages.
    pub(crate) fn label(&self) -> &'static str {
        self.label
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer, on a blocking thread;
    /// rolled back when `f` fails.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<R, TxError> + Send + 'static,
    {
        on_pool(self.label, self.pool.clone(), move |c| c.immediate_transaction(f)).await
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer, here on the calling
    /// task's thread when the write lock is free at once, else as [`write`](Self::write)
    /// does, on a blocking thread waiting up to `busy_timeout`.
    ///
    /// For the group commit of profile updates: the lock is this process's own (its one
    /// writer connection, taken here only once checked out), and in WAL mode with
    /// `synchronous = NORMAL` a commit appends to the WAL without syncing it, so the
    /// transaction only computes and writes to the OS's cache. Handed to a blocking
    /// thread on the core that serves requests, each batch cost two thread switches and
    /// a task spawn; in `mixed` (a batch of one or two updates) that was 0.19 context
    /// switches per request, 0.03 here. Only another process holding the lock (a tool on
    /// the file, say) makes the attempt fall back: the attempt never waits for it.
    /// Being synchronous, the transaction cannot be abandoned midway; a panic in `f` is
    /// an error of this call, its connection closed (rolling it back) and replaced.
    pub(crate) async fn write_here<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<R, TxError> + Send + 'static,
    {
        let label = self.label;
        let conn = self.pool.get().await.map_err(|e| pool_error(label, &e))?;
        let (out, conn) = in_place(label, "write", conn, |c| {
            match AnsiTransactionManager::begin_transaction_sql(c, &self.here.begin) {
                Ok(()) => Here::Done(Self::finish(c, f)),
                // The batch stopped at BEGIN: the timeout is still 0.
                Err(e) if is_locked(&e) && c.batch_execute(&self.here.restore).is_ok() => Here::Locked(f),
                // Where the batch stopped is unknown: the connection is replaced.
                Err(e) => Here::Broken(e),
            }
        })?;
        match out {
            Here::Done(done) => done.map_err(|e| e.into_store(label)),
            Here::Locked(f) => {
                drop(conn);
                self.write(f).await
            }
            Here::Broken(e) => {
                drop(deadpool::managed::Object::take(conn));
                Err(diesel_error(label, &e))
            }
        }
    }

    /// Runs `f` in the transaction just begun on `c`, then commits it, or rolls it back
    /// when `f` fails (as diesel's `immediate_transaction` does after its `BEGIN`).
    fn finish<R, F>(c: &mut SqliteConnection, f: F) -> Result<R, TxError>
    where
        F: FnOnce(&mut SqliteConnection) -> Result<R, TxError>,
    {
        match f(c) {
            Ok(value) => {
                AnsiTransactionManager::commit_transaction(c)?;
                Ok(value)
            }
            Err(e) => {
                AnsiTransactionManager::rollback_transaction(c)?;
                Err(e)
            }
        }
    }
}

/// Runs `f` on `conn` here, on the calling task's thread, and hands the connection back
/// with its result. A panic in `f` is an error of this call (`what` names the call), as
/// on a blocking thread; the connection it left in an unknown state is closed, not
/// returned to the pool.
fn in_place<T>(
    label: &'static str,
    what: &str,
    conn: deadpool::managed::Object<SqliteManager>,
    f: impl FnOnce(&mut SqliteConnection) -> T,
) -> Result<(T, deadpool::managed::Object<SqliteManager>), StoreError> {
    let out = {
        let mut guard = conn
            .lock()
            .map_err(|_| StoreError::Failure(format!("a {label} database connection is poisoned")))?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut guard)))
    };
    match out {
        Ok(value) => Ok((value, conn)),
        Err(_) => {
            drop(deadpool::managed::Object::take(conn));
            Err(StoreError::Failure(format!("{label} database {what} panicked")))
        }
    }
}

/// How a [`Writer::write_here`] attempt went.
enum Here<R, F> {
    /// The transaction ran (committed, or rolled back when `f` failed).
    Done(Result<R, TxError>),
    /// Another connection holds the write lock: `f`, not run.
    Locked(F),
    /// `BEGIN` failed otherwise.
    Broken(diesel::result::Error),
}

/// Whether SQLite refused for a lock held elsewhere (`SQLITE_BUSY`).
fn is_locked(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info) if info.message().contains("locked"))
}

/// Checks a connection out of `pool`, runs `f` on it on a blocking thread and returns
/// it, as one task of their own: when the request that asked is dropped (its client went
/// away), the connection still goes back only once `f` is done. Returned mid-statement,
/// the next checkout would find it busy and discard it (for the one writer: a second
/// writer opened beside it).
async fn on_pool<R, F>(label: &'static str, pool: Pool, f: F) -> Result<R, StoreError>
where
    R: Send + 'static,
    F: FnOnce(&mut SqliteConnection) -> Result<R, TxError> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let conn = pool.get().await.map_err(|e| pool_error(label, &e))?;
        conn.interact(f).await.map_err(|e| interact_error(label, &e))?.map_err(|e| e.into_store(label))
    });
    task.await
        .unwrap_or_else(|_| Err(StoreError::Failure(format!("the {label} database call did not finish"))))
}

impl Drop for Db {
    fn drop(&mut self) {
        self.stop_checkpointer();
    }
}

#[derive(QueryableByName)]
struct CheckpointRow {
    #[diesel(sql_type = Integer)]
    busy: i32,
    /// Frames in the WAL (-1 when the database is not in WAL mode).
    #[diesel(sql_type = Integer)]
    log: i32,
}

/// Runs one `wal_checkpoint(mode)`: whether it finished, and the WAL's frame count.
fn checkpoint(c: &mut SqliteConnection, mode: &str) -> diesel::QueryResult<(bool, i64)> {
    let row = diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).get_result::<CheckpointRow>(c)?;
    Ok((row.busy == 0, i64::from(row.log)))
}

/// `wal_checkpoint(mode)` on the writer waiting at most `wait` for readers.
fn writer_checkpoint(
    c: &mut SqliteConnection,
    mode: &str,
    wait: Duration,
    busy: Duration,
) -> diesel::QueryResult<bool> {
    // The checkpoint holds the write lock while it waits for readers: keep that short.
    c.batch_execute(&format!("PRAGMA busy_timeout = {}", wait.as_millis()))?;
    let done = checkpoint(c, mode);
    c.batch_execute(&format!("PRAGMA busy_timeout = {}", busy.as_millis()))?;
    Ok(done?.0)
}

/// The checkpointer's own connection: copies frames without holding the writer.
fn open_checkpoint_conn(url: &str, busy: Duration) -> diesel::ConnectionResult<SqliteConnection> {
    let mut c = SqliteConnection::establish(url)?;
    c.batch_execute(&format!("PRAGMA busy_timeout = {}", busy.as_millis()))
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(c)
}

/// Keeps the WAL bounded without stalling writes. The writer never checkpoints on its
/// own (`wal_autocheckpoint = 0`). Every tick, a `PASSIVE` checkpoint on a separate
/// connection copies the new frames into the database file and syncs it while the
/// writer goes on committing. Once the WAL holds [`RESTART_FRAMES`], a `RESTART` on the
/// writer copies the few frames committed meanwhile and lets the next write reuse the
/// WAL from its start; it does not wait for readers, unless the WAL has outgrown
/// [`FORCE_FRAMES`] because readers never pause (checkpoint starvation: then it waits
/// up to [`CHECKPOINT_WAIT_MAX`], holding the writer).
async fn checkpointer(
    writer: deadpool::managed::WeakPool<SqliteManager>,
    url: String,
    path: std::path::PathBuf,
    label: &'static str,
    busy: Duration,
) {
    let wait = (busy / 4).min(CHECKPOINT_WAIT_MAX);
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut own: Option<SqliteConnection> = None;
    loop {
        tick.tick().await;
        if writer.upgrade().is_none_or(|p| p.is_closed()) {
            return;
        }
        let url = url.clone();
        // The connection comes back for the next tick unless it failed.
        let reuse = own.take();
        let copied = tokio::task::spawn_blocking(move || {
            let mut c = match reuse.map_or_else(|| open_checkpoint_conn(&url, busy), Ok) {
                Ok(c) => c,
                Err(e) => return Err(e.to_string()),
            };
            checkpoint(&mut c, "PASSIVE").map(|(_, log)| (c, log)).map_err(|e| e.to_string())
        })
        .await;
        let log = match copied {
            Ok(Ok((conn, log))) => {
                own = Some(conn);
                log
            }
            Ok(Err(e)) => {
                tracing::warn!(database = label, error = %e, "WAL checkpoint failed");
                continue;
            }
            Err(e) => {
                tracing::warn!(database = label, error = %e, "WAL checkpoint task failed");
                continue;
            }
        };
        if log < RESTART_FRAMES {
            continue;
        }
        // SQLite syncs the database file only when a checkpoint completes, which under
        // steady reads is the restart: it then flushed every page the passive ones had
        // copied since the last restart (megabytes: ≈ 10 ms) while holding the writer.
        // Flushed here first, off the writer, the restart has only its own few pages
        // to sync.
        let file = path.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || flush_database_file(&file)).await {
            tracing::debug!(database = label, error = %e, "flush before the WAL restart failed");
        }
        let Some(pool) = writer.upgrade() else { return };
        let Ok(conn) = pool.get().await else { continue };
        drop(pool);
        let wait = if log >= FORCE_FRAMES { wait } else { Duration::ZERO };
        match conn.interact(move |c| writer_checkpoint(c, "RESTART", wait, busy)).await {
            Ok(Ok(true)) => tracing::debug!(database = label, wal_frames = log, "WAL restarted"),
            Ok(Ok(false)) => {
                tracing::debug!(database = label, wal_frames = log, "WAL restart waited out by readers")
            }
            Ok(Err(e)) => tracing::warn!(database = label, error = %e, "WAL checkpoint failed"),
            Err(e) => tracing::warn!(database = label, error = %e, "WAL checkpoint task failed"),
        }
    }
}

/// Writes back the database file's cached pages (`fdatasync`), through a descriptor this
/// process keeps open for its whole life, one per file: closing any descriptor of a file
/// drops every POSIX lock the process holds on it, so a descriptor opened and closed
/// here would take SQLite's locks from this process's connections (another process
/// could then think them gone and, say, delete the WAL under them).
#[cfg(unix)]
fn flush_database_file(path: &Path) -> io::Result<()> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Arc, OnceLock, PoisonError};
    /// By (device, inode).
    type Kept = Mutex<HashMap<(u64, u64), Arc<std::fs::File>>>;
    static KEPT: OnceLock<Kept> = OnceLock::new();
    // Identified without opening it (an open to look would need a close).
    let meta = std::fs::metadata(path)?;
    let file = {
        let mut kept = KEPT.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
        match kept.get(&(meta.dev(), meta.ino())) {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(std::fs::File::open(path)?);
                kept.insert((meta.dev(), meta.ino()), f.clone());
                f
            }
        }
    };
    file.sync_data()
}

/// Elsewhere the restart syncs the database file itself, as before.
#[cfg(not(unix))]
fn flush_database_file(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbConfig;

    #[test]
    fn the_key_is_found_where_the_text_has_it() {
        assert_eq!(key_at("?1"), 0);
        assert_eq!(key_at("SELECT a FROM t WHERE id = ?1 LIMIT 1"), 27);
        let sql = "SELECT x AS y WHERE k = ?1 GROUP BY k";
        let (head, tail) = sql.split_at(key_at(sql));
        assert_eq!((head, &tail[2..]), ("SELECT x AS y WHERE k = ", " GROUP BY k"));
    }

    #[derive(QueryableByName)]
    struct CacheSize {
        #[diesel(sql_type = Integer)]
        cache_size: i32,
    }

    /// Runs long enough (a count to three million) to be abandoned midway.
    fn long_count(c: &mut SqliteConnection) -> Result<i32, TxError> {
        let sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000000) \
                   SELECT count(*) AS cache_size FROM n";
        Ok(diesel::sql_query(sql).get_result::<CacheSize>(c)?.cache_size)
    }

    fn mark(c: &mut SqliteConnection) -> Result<(), TxError> {
        c.batch_execute("PRAGMA cache_size = -4321")?;
        Ok(())
    }

    fn cache_size(c: &mut SqliteConnection) -> Result<i32, TxError> {
        Ok(diesel::sql_query("PRAGMA cache_size").get_result::<CacheSize>(c)?.cache_size)
    }

    async fn abandoned<T>(call: impl Future<Output = T>) {
        let gave_up = tokio::time::timeout(Duration::from_millis(20), call).await.is_err();
        assert!(gave_up, "the count was too quick");
    }

    /// A database in `dir` with one reader and the writer.
    async fn one_connection_db(dir: &tempfile::TempDir) -> Db {
        let cfg =
            DbConfig { path: dir.path().join("t.db"), pool_size: 1, busy_timeout: Duration::from_secs(5) };
        Db::open("profiles", &cfg, |_| Ok(Vec::new())).await.expect("open")
    }

    /// Flushing a database file keeps this process's locks on it. A descriptor of the
    /// file closed after the flush would drop the shared lock a read transaction holds,
    /// and another process could then lock the file exclusively (SQLite's exclusive
    /// locking mode needs exactly that). The other process is this test run again with
    /// `LOCK_PROBE_DB` set: it tries, and must fail; once nothing is held, it must succeed.
    #[cfg(unix)]
    #[tokio::test]
    async fn flushing_a_database_file_keeps_the_locks_this_process_holds() {
        if let Some(path) = std::env::var_os("LOCK_PROBE_DB") {
            let expect_busy = std::env::var_os("LOCK_PROBE_EXPECT_BUSY").is_some_and(|v| v == "1");
            let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            c.batch_execute("PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE;").unwrap();
            let locked = c.batch_execute("SELECT count(*) FROM sqlite_schema;");
            assert_eq!(locked.is_err(), expect_busy, "exclusive lock: {locked:?}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = one_connection_db(&dir).await;
        let path = dir.path().join("t.db");
        let reader = db.reader_conn().await;
        reader
            .lock()
            .unwrap()
            .batch_execute("BEGIN; SELECT count(*) FROM sqlite_schema;")
            .expect("a read transaction");
        flush_database_file(&path).expect("the flush");
        flush_database_file(&path).expect("a second flush, through the same descriptor");
        assert!(flush_database_file(&dir.path().join("missing.db")).is_err());

        let probe = |holding: bool| {
            let this = "db::tests::flushing_a_database_file_keeps_the_locks_this_process_holds";
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", this, "--nocapture"])
                .env("LOCK_PROBE_DB", &path)
                .env("LOCK_PROBE_EXPECT_BUSY", if holding { "1" } else { "0" })
                .output()
                .expect("the probe process")
        };
        let held = probe(true);
        assert!(held.status.success(), "{}", String::from_utf8_lossy(&held.stdout));
        reader.lock().unwrap().batch_execute("COMMIT").unwrap();
        drop(reader);
        drop(db);
        // The probe itself works: with nothing held, it gets the lock (once the closed
        // store's last connections, the checkpointer's among them, are gone).
        let mut free = probe(false);
        for _ in 0..50 {
            if free.status.success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            free = probe(false);
        }
        assert!(free.status.success(), "{}", String::from_utf8_lossy(&free.stdout));
    }

    /// A read that panics is an error of that call, and the connection it ran on is
    /// replaced (`cache_size` is per connection, so it tells them apart).
    #[tokio::test]
    async fn a_read_that_panics_is_an_error_and_its_connection_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = one_connection_db(&dir).await;
        db.read(mark).await.expect("marking the reader");
        assert_eq!(db.read(cache_size).await.expect("read"), -4321);
        let panicked = db.read(|_| -> Result<(), TxError> { panic!("a bug in a read") }).await;
        assert!(
            matches!(panicked, Err(StoreError::Failure(ref m)) if m.contains("panicked")),
            "{panicked:?}"
        );
        let size = db.read(cache_size).await.expect("the read after the panic");
        assert_ne!(size, -4321, "the connection the panic left was returned to the pool");
    }

    /// A write dropped while its statement runs (its client went away) must not cost the
    /// pool its connection: the next call gets the same connection once the statement is
    /// done. `cache_size` is per connection, so it tells them apart.
    #[tokio::test]
    async fn a_write_abandoned_mid_statement_keeps_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let db = one_connection_db(&dir).await;

        // (A read runs on the calling thread: it cannot be abandoned midway.)
        db.write(mark).await.expect("marking the writer");
        abandoned(db.write(long_count)).await;
        let size = db.write(cache_size).await.expect("the write after the abandoned one");
        assert_eq!(size, -4321, "the writer was discarded and a second one opened");
    }

    /// A database in `dir` as [`one_connection_db`] makes it, with a table `t (x)`.
    async fn db_with_table(dir: &tempfile::TempDir) -> (Db, Writer) {
        let db = one_connection_db(dir).await;
        let w = db.writer();
        w.write_here(|c| Ok(c.batch_execute("CREATE TABLE t (x INTEGER)")?)).await.expect("create");
        (db, w)
    }

    fn count_t(c: &mut SqliteConnection) -> Result<i32, TxError> {
        Ok(diesel::sql_query("SELECT count(*) AS cache_size FROM t").get_result::<CacheSize>(c)?.cache_size)
    }

    /// A write in place commits what it did, or nothing when it fails.
    #[tokio::test]
    async fn a_write_in_place_commits_or_rolls_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (db, w) = db_with_table(&dir).await;
        w.write_here(|c| Ok(c.batch_execute("INSERT INTO t VALUES (1)")?)).await.expect("insert");
        let failed = w
            .write_here(|c| -> Result<(), TxError> {
                c.batch_execute("INSERT INTO t VALUES (2)")?;
                Err(TxError::Store(StoreError::VersionConflict))
            })
            .await;
        assert_eq!(failed, Err(StoreError::VersionConflict));
        assert_eq!(db.read(count_t).await.unwrap(), 1, "the failed write left a row");
        w.write_here(|c| Ok(c.batch_execute("INSERT INTO t VALUES (3)")?))
            .await
            .expect("the writer is free again");
        assert_eq!(db.read(count_t).await.unwrap(), 2);
    }

    /// While another connection holds the write lock, a write in place waits for it on a
    /// blocking thread (the runtime's one thread keeps running other tasks meanwhile) and
    /// lands once the lock is free, with the writer's usual `busy_timeout` back on.
    #[tokio::test]
    async fn a_write_in_place_waits_for_a_lock_held_elsewhere_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let (db, w) = db_with_table(&dir).await;
        let path = dir.path().join("t.db");
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            c.batch_execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);").unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            c.batch_execute("COMMIT").unwrap();
        });
        held_rx.recv().unwrap();
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let started = std::time::Instant::now();
        w.write_here(|c| Ok(c.batch_execute("INSERT INTO t VALUES (2)")?))
            .await
            .expect("the write, once free");
        let waited = started.elapsed();
        ticker.abort();
        holder.join().unwrap();
        assert!(waited >= Duration::from_millis(200), "the write did not wait for the lock: {waited:?}");
        let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(ticks >= 5, "the runtime's thread was held while the lock was waited for ({ticks} ticks)");
        assert_eq!(db.read(count_t).await.unwrap(), 2);
        let timeout = diesel::sql_query("PRAGMA busy_timeout")
            .get_result::<BusyTimeout>(&mut *db.writer.get().await.unwrap().lock().unwrap())
            .unwrap();
        assert_eq!(timeout.timeout, 5000);
    }

    #[derive(QueryableByName)]
    struct BusyTimeout {
        #[diesel(sql_type = Integer)]
        timeout: i32,
    }

    /// A write in place that panics is an error of that call: its transaction is rolled
    /// back and its connection replaced (`cache_size` is per connection).
    #[tokio::test]
    async fn a_write_in_place_that_panics_is_an_error_and_its_connection_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (db, w) = db_with_table(&dir).await;
        w.write_here(mark).await.expect("marking the writer");
        assert_eq!(w.write_here(cache_size).await.unwrap(), -4321);
        let panicked = w
            .write_here(|c| -> Result<(), TxError> {
                c.batch_execute("INSERT INTO t VALUES (1)").unwrap();
                panic!("a bug in a write")
            })
            .await;
        assert!(
            matches!(panicked, Err(StoreError::Failure(ref m)) if m.contains("panicked")),
            "{panicked:?}"
        );
        assert_ne!(w.write_here(cache_size).await.unwrap(), -4321, "the panicked connection was kept");
        assert_eq!(db.read(count_t).await.unwrap(), 0, "the panicked write was committed");
    }

    #[derive(QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = diesel::sql_types::Text)]
        compile_options: String,
    }

    /// The bundled SQLite is built as `.cargo/config.toml` asks: multi-thread mode (no
    /// per-connection mutex: a pool's lock already keeps each connection to one thread at
    /// a time) and no memory statistics (a global mutex on every allocation).
    #[tokio::test]
    async fn the_bundled_sqlite_takes_no_mutex_a_pool_already_provides() {
        let dir = tempfile::tempdir().unwrap();
        let db = one_connection_db(&dir).await;
        let options = db
            .read(|c| Ok(diesel::sql_query("PRAGMA compile_options").load::<CompileOption>(c)?))
            .await
            .unwrap();
        let options: Vec<_> = options.into_iter().map(|o| o.compile_options).collect();
        assert!(options.iter().any(|o| o == "THREADSAFE=2"), "{options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
    }
}
