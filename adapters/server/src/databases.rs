//! Chooses each database's adapter from its setting: a file path is SQLite, a
//! `postgres://` or `postgresql://` URL is PostgreSQL, each database on its own. Nothing
//! outside this module knows which kind is in use: the rest of the server sees the
//! ports and the core's upkeep traits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use profile_core::admin::{MainAdmin, StoreAdmin};
use profile_core::ports::{AccountRepository, ProfileRepository};

use crate::cli::{DbArgs, MainMigrations};
use crate::error::AppError;

/// The main database's setting, for messages.
pub const MAIN_SETTING: &str = "--main-db (PROFILE_MAIN_DB)";
/// The profiles database's setting, for messages.
pub const PROFILES_SETTING: &str = "--profiles-db (PROFILE_PROFILES_DB)";

/// A new PostgreSQL connection waits at most this long (libpq's `connect_timeout`), so a
/// database server that went away makes requests fail fast.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The main database: its port, its upkeep, and how logs show it.
pub struct MainDb {
    /// The port the core reads accounts through.
    pub accounts: Arc<dyn AccountRepository>,
    /// Its upkeep (gauges, close, seeding).
    pub admin: Arc<dyn MainAdmin>,
    /// The database as logs may show it (no password).
    pub shown: String,
}

impl MainDb {
    /// One store serving as both the port and its upkeep.
    pub fn new<T: AccountRepository + MainAdmin + 'static>(store: Arc<T>, shown: impl Into<String>) -> Self {
        Self { accounts: store.clone(), admin: store, shown: shown.into() }
    }
}

/// The profiles database: its port, its upkeep, and how logs show it.
pub struct ProfilesDb {
    /// The port the core reads and writes profiles through.
    pub profiles: Arc<dyn ProfileRepository>,
    /// Its upkeep (gauges, close).
    pub admin: Arc<dyn StoreAdmin>,
    /// The database as logs may show it (no password).
    pub shown: String,
}

impl ProfilesDb {
    /// One store serving as both the port and its upkeep.
    pub fn new<T: ProfileRepository + StoreAdmin + 'static>(store: Arc<T>, shown: impl Into<String>) -> Self {
        Self { profiles: store.clone(), admin: store, shown: shown.into() }
    }
}

/// Both databases, opened and migrated (or checked).
pub struct Databases {
    /// The main database.
    pub main: MainDb,
    /// The profiles database.
    pub profiles: ProfilesDb,
}

impl Databases {
    /// Closes both pools.
    pub async fn close(&self) {
        self.main.admin.close().await;
        self.profiles.admin.close().await;
    }
}

/// Which kind of database a setting names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Sqlite(PathBuf),
    Postgres(String),
}

/// A URL (anything with a scheme) must be PostgreSQL's; anything else is a file path.
fn kind(setting: &'static str, value: &Path) -> Result<Kind, AppError> {
    let Some(text) = value.to_str() else {
        return Ok(Kind::Sqlite(value.to_path_buf()));
    };
    match text.split_once("://") {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql") =>
        {
            Ok(Kind::Postgres(text.to_owned()))
        }
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            Err(AppError::setting(
                setting,
                format!(
                    "unknown scheme {scheme:?}: give a file path (SQLite) or a postgres:// or postgresql:// URL"
                ),
            ))
        }
        _ => Ok(Kind::Sqlite(value.to_path_buf())),
    }
}

/// The default pool size. SQLite's work is this process's CPU: reads scale with cores,
/// and a few spare connections absorb requests that wait on the other database. A
/// PostgreSQL connection mostly waits (round trips, the commit's WAL flush) while the
/// server works elsewhere: twice as many keep it busy (measured: 32 PATCHes in flight
/// on one core, 8 connections answered 20 % more than 4; 16 no more than 8).
fn default_pool_size(kind: &Kind) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    match kind {
        Kind::Sqlite(_) => (cores * 2).max(4),
        Kind::Postgres(_) => (cores * 4).max(8),
    }
}

/// Opens (creating and migrating, or checking) both databases.
pub async fn open(db: &DbArgs) -> Result<Databases, AppError> {
    open_with(db, None, None).await
}

/// A database the caller supplied, or the setting to open it from.
enum Source<T> {
    Supplied(T),
    Open(Kind),
}

/// Opens the databases the caller did not supply, from their settings. The settings to
/// use are validated before either database is touched; when the profiles database
/// cannot be opened, the main one is closed (supplied or not: it was handed over to be
/// part of the whole).
pub async fn open_with(
    db: &DbArgs,
    main: Option<MainDb>,
    profiles: Option<ProfilesDb>,
) -> Result<Databases, AppError> {
    let main = match main {
        Some(m) => Source::Supplied(m),
        None => Source::Open(kind(MAIN_SETTING, &db.main_db)?),
    };
    let profiles = match profiles {
        Some(p) => Source::Supplied(p),
        None => Source::Open(kind(PROFILES_SETTING, &db.profiles_db)?),
    };
    let main = match main {
        Source::Supplied(m) => m,
        Source::Open(k) => open_main(db, k).await?,
    };
    let profiles = match profiles {
        Source::Supplied(p) => p,
        Source::Open(k) => match open_profiles(db, k).await {
            Ok(p) => p,
            Err(e) => {
                main.admin.close().await;
                return Err(e);
            }
        },
    };
    Ok(Databases { main, profiles })
}

/// SQLite: how long a statement waits for a lock; PostgreSQL: for a free connection,
/// and the longest a statement may run.
fn timeout(db: &DbArgs) -> Duration {
    Duration::from_millis(db.db_busy_timeout_ms)
}

/// Opens the main database (migrating it, or only checking what the service reads).
async fn open_main(db: &DbArgs, kind: Kind) -> Result<MainDb, AppError> {
    let pool_size = db.main_pool_size.map_or_else(|| default_pool_size(&kind), |n| n as usize);
    let check = db.main_db_migrations == MainMigrations::Check;
    let failed = |e: &dyn std::fmt::Display| AppError::setting(MAIN_SETTING, e.to_string());
    match kind {
        Kind::Sqlite(path) => {
            let cfg = profile_sqlite::DbConfig { path: path.clone(), pool_size, busy_timeout: timeout(db) };
            let store = if check {
                profile_sqlite::MainStore::open_checked(&cfg).await
            } else {
                profile_sqlite::open_main(&cfg).await
            }
            .map_err(|e| failed(&e))?;
            Ok(MainDb::new(Arc::new(store), path.display().to_string()))
        }
        Kind::Postgres(url) => {
            let cfg = profile_postgres::PgConfig {
                url: url.clone(),
                pool_size,
                timeout: timeout(db),
                connect_timeout: PG_CONNECT_TIMEOUT,
            };
            let schema =
                if check { profile_postgres::MainSchema::Check } else { profile_postgres::MainSchema::Apply };
            let store = profile_postgres::open_main(&cfg, schema).await.map_err(|e| failed(&e))?;
            Ok(MainDb::new(Arc::new(store), profile_postgres::redact(&url)))
        }
    }
}

/// Opens and migrates the profiles database.
async fn open_profiles(db: &DbArgs, kind: Kind) -> Result<ProfilesDb, AppError> {
    let pool_size = db.profiles_pool_size.map_or_else(|| default_pool_size(&kind), |n| n as usize);
    let failed = |e: &dyn std::fmt::Display| AppError::setting(PROFILES_SETTING, e.to_string());
    match kind {
        Kind::Sqlite(path) => {
            let cfg = profile_sqlite::DbConfig { path: path.clone(), pool_size, busy_timeout: timeout(db) };
            let store = profile_sqlite::open_profiles(&cfg).await.map_err(|e| failed(&e))?;
            Ok(ProfilesDb::new(Arc::new(store), path.display().to_string()))
        }
        Kind::Postgres(url) => {
            let cfg = profile_postgres::PgConfig {
                url: url.clone(),
                pool_size,
                timeout: timeout(db),
                connect_timeout: PG_CONNECT_TIMEOUT,
            };
            let store = profile_postgres::open_profiles(&cfg).await.map_err(|e| failed(&e))?;
            Ok(ProfilesDb::new(Arc::new(store), profile_postgres::redact(&url)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_pools_default_to_twice_sqlites() {
        let lite = default_pool_size(&Kind::Sqlite("p.db".into()));
        let pg = default_pool_size(&Kind::Postgres("postgres://h/db".into()));
        assert!(lite >= 4, "{lite}");
        assert!(pg >= 8 && pg == 2 * lite, "{pg} vs {lite}");
    }

    #[test]
    fn kind_follows_the_scheme() {
        let k = |s: &str| kind(MAIN_SETTING, Path::new(s));
        assert_eq!(k("data/main.db").unwrap(), Kind::Sqlite("data/main.db".into()));
        assert_eq!(k("/abs/x.db").unwrap(), Kind::Sqlite("/abs/x.db".into()));
        assert_eq!(k("postgres://a@b/c").unwrap(), Kind::Postgres("postgres://a@b/c".into()));
        assert_eq!(k("postgresql://a@b/c").unwrap(), Kind::Postgres("postgresql://a@b/c".into()));
        let e = k("mysql://a:pw@b/c").unwrap_err();
        assert_eq!(e.setting, Some(MAIN_SETTING));
        assert!(e.message.contains("unknown scheme \"mysql\""), "{}", e.message);
        assert!(!e.message.contains("pw"), "{}", e.message);
    }
}
