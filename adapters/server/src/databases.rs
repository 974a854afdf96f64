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

/// Both databases, opened and migrated (or checked).
pub struct Databases {
    /// The main database's port.
    pub accounts: Arc<dyn AccountRepository>,
    /// The main database's upkeep (gauges, close, seeding).
    pub main_admin: Arc<dyn MainAdmin>,
    /// The profiles database's port.
    pub profiles: Arc<dyn ProfileRepository>,
    /// The profiles database's upkeep (gauges, close).
    pub profiles_admin: Arc<dyn StoreAdmin>,
    /// The main database as logs may show it (no password).
    pub main_shown: String,
    /// The profiles database as logs may show it (no password).
    pub profiles_shown: String,
}

impl Databases {
    /// Closes both pools.
    pub async fn close(&self) {
        self.main_admin.close().await;
        self.profiles_admin.close().await;
    }
}

/// The profiles database's port, its upkeep, and how logs show it.
type OpenedProfiles = (Arc<dyn ProfileRepository>, Arc<dyn StoreAdmin>, String);

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

/// The default pool size: reads scale with cores, and a few spare connections absorb
/// requests that wait on the other database.
fn default_pool_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).max(4)
}

/// Opens (creating and migrating, or checking) both databases.
pub async fn open(db: &DbArgs) -> Result<Databases, AppError> {
    // Validate both settings before touching either database.
    let main_kind = kind(MAIN_SETTING, &db.main_db)?;
    let profiles_kind = kind(PROFILES_SETTING, &db.profiles_db)?;
    // SQLite: how long a statement waits for a lock; PostgreSQL: for a free connection,
    // and the longest a statement may run.
    let timeout = Duration::from_millis(db.db_busy_timeout_ms);
    let main_pool = db.main_pool_size.map_or_else(default_pool_size, |n| n as usize);
    let profiles_pool = db.profiles_pool_size.map_or_else(default_pool_size, |n| n as usize);
    let check = db.main_db_migrations == MainMigrations::Check;

    let (accounts, main_admin, main_shown): (Arc<dyn AccountRepository>, Arc<dyn MainAdmin>, String) =
        match main_kind {
            Kind::Sqlite(path) => {
                let cfg = profile_sqlite::DbConfig {
                    path: path.clone(),
                    pool_size: main_pool,
                    busy_timeout: timeout,
                };
                let store = if check {
                    profile_sqlite::MainStore::open_checked(&cfg).await
                } else {
                    profile_sqlite::open_main(&cfg).await
                }
                .map_err(|e| AppError::setting(MAIN_SETTING, e.to_string()))?;
                let store = Arc::new(store);
                (store.clone(), store, path.display().to_string())
            }
            Kind::Postgres(url) => {
                let cfg = profile_postgres::PgConfig {
                    url: url.clone(),
                    pool_size: main_pool,
                    timeout,
                    connect_timeout: PG_CONNECT_TIMEOUT,
                };
                let schema = if check {
                    profile_postgres::MainSchema::Check
                } else {
                    profile_postgres::MainSchema::Apply
                };
                let store = profile_postgres::open_main(&cfg, schema)
                    .await
                    .map_err(|e| AppError::setting(MAIN_SETTING, e.to_string()))?;
                let store = Arc::new(store);
                (store.clone(), store, profile_postgres::redact(&url))
            }
        };
    let opened: Result<OpenedProfiles, AppError> = match profiles_kind {
        Kind::Sqlite(path) => {
            let cfg = profile_sqlite::DbConfig {
                path: path.clone(),
                pool_size: profiles_pool,
                busy_timeout: timeout,
            };
            match profile_sqlite::open_profiles(&cfg).await {
                Ok(store) => {
                    let store = Arc::new(store);
                    Ok((store.clone(), store, path.display().to_string()))
                }
                Err(e) => Err(AppError::setting(PROFILES_SETTING, e.to_string())),
            }
        }
        Kind::Postgres(url) => {
            let cfg = profile_postgres::PgConfig {
                url: url.clone(),
                pool_size: profiles_pool,
                timeout,
                connect_timeout: PG_CONNECT_TIMEOUT,
            };
            match profile_postgres::open_profiles(&cfg).await {
                Ok(store) => {
                    let store = Arc::new(store);
                    Ok((store.clone(), store, profile_postgres::redact(&url)))
                }
                Err(e) => Err(AppError::setting(PROFILES_SETTING, e.to_string())),
            }
        }
    };
    let (profiles, profiles_admin, profiles_shown) = match opened {
        Ok(p) => p,
        Err(e) => {
            main_admin.close().await;
            return Err(e);
        }
    };
    Ok(Databases { accounts, main_admin, profiles, profiles_admin, main_shown, profiles_shown })
}

#[cfg(test)]
mod tests {
    use super::*;

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
