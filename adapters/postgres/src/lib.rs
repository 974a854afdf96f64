//! PostgreSQL adapters (diesel + deadpool-diesel): the main database and the profiles
//! database, for running many instances of the service over one database server.
//!
//! [`open_main`] and [`open_profiles`] connect to the database a `postgres://` or
//! `postgresql://` URL names (it must exist), migrate it under an advisory lock (so
//! instances starting together migrate in turn) and return a store implementing the
//! core's port. Updates of one user queue on a per-user transaction lock, so they never
//! lose to each other across instances. No message of this crate holds the URL's
//! password or SQL text.

mod db;
mod main_store;
mod profile_store;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use db::redact;
pub use main_store::MainStore;
pub use profile_store::ProfileStore;

/// Where a database lives and how its pool behaves.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?…]` (libpq's URI syntax).
    pub url: String,
    /// Connections in the pool (at least 1).
    pub pool_size: usize,
    /// The longest wait for a free connection, and the longest a statement may run.
    pub timeout: Duration,
    /// The longest wait for a new connection (unless the URL sets `connect_timeout`).
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// What opening the main database does to its schema, which the wider application owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MainSchema {
    /// Apply pending migrations.
    #[default]
    Apply,
    /// Change nothing; verify the tables and columns the service reads.
    Check,
}

/// Why a database could not be opened; the text names the problem, never a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a PostgreSQL URL the service can use.
    #[error("is not a usable PostgreSQL URL: {reason}")]
    Url {
        /// What is wrong with it.
        reason: String,
    },
    /// The server refused or could not be reached (no such database, login refused, …).
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// The URL without password.
        target: String,
        /// libpq's reason, on one line.
        reason: String,
    },
    /// A migration failed; the database is left at the last migration that succeeded.
    #[error("cannot migrate {target}: {reason}")]
    Migrate {
        /// The URL without password.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// `check`: the schema lacks what the service reads.
    #[error("{target} lacks what the service reads: {missing}")]
    Missing {
        /// The URL without password.
        target: String,
        /// The missing tables and columns.
        missing: String,
    },
}

/// Opens the main database (accounts and orders), migrating or checking its schema.
pub async fn open_main(cfg: &PgConfig, schema: MainSchema) -> Result<MainStore, OpenError> {
    MainStore::open(cfg, schema).await
}

/// Opens (migrating as needed) the profiles database.
pub async fn open_profiles(cfg: &PgConfig) -> Result<ProfileStore, OpenError> {
    ProfileStore::open(cfg).await
}
