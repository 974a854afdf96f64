//! SQLite adapters (diesel + deadpool-diesel): the main database and the profiles database.
//!
//! [`open_main`] and [`open_profiles`] create the file (and its folder) when missing, run
//! the embedded migrations and return a store implementing the core's port. Each store
//! keeps a pool of reader connections and a single writer connection: SQLite admits one
//! writer at a time, so concurrent writers of this process queue in-process instead of
//! spinning on `database is locked`.

mod admin;
mod db;
mod main_store;
mod profile_store;
mod schema;
mod time;

use std::path::PathBuf;
use std::time::Duration;

pub use main_store::{MainStore, SeedReport};
pub use profile_store::ProfileStore;

/// Where a database lives and how its pool behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// The database file; it and its folder are created when missing.
    pub path: PathBuf,
    /// Reader connections (at least 1); the single writer connection comes on top.
    pub pool_size: usize,
    /// How long a statement waits for a lock, and a caller for a free connection.
    pub busy_timeout: Duration,
}

/// Connection counts of a store, for the pool gauges (readers and the writer together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Connections open now.
    pub size: usize,
    /// Connections checked out now.
    pub in_use: usize,
    /// Connections the store may open at most.
    pub max: usize,
}

/// Why a database could not be opened; the text names the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The path cannot be handed to SQLite.
    #[error("database path {path} is not valid UTF-8")]
    Path {
        /// The offending path.
        path: PathBuf,
    },
    /// The folder holding the database cannot be created.
    #[error("cannot create database folder {}/: {reason}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What went wrong, in plain words.
        reason: String,
    },
    /// The database file cannot be created or opened for writing.
    #[error("cannot create or open database file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong, in plain words.
        reason: String,
    },
    /// SQLite refused the file (not a database, corrupt, locked for too long, …).
    #[error("cannot open database {}: {reason}", path.display())]
    Connect {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The `check` mode found the schema lacking what the service reads.
    #[error("database {} lacks what the service reads: {missing}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The missing tables and columns.
        missing: String,
    },
    /// A migration failed; the database is left at the last migration that succeeded.
    #[error("cannot migrate database {}: {reason}", path.display())]
    Migrate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Opens (creating and migrating as needed) the main database: accounts and orders.
///
/// The `migrate` subcommand needs nothing more: open, then [`MainStore::close`].
pub async fn open_main(cfg: &DbConfig) -> Result<MainStore, OpenError> {
    MainStore::open(cfg).await
}

/// Opens (creating and migrating as needed) the profiles database.
pub async fn open_profiles(cfg: &DbConfig) -> Result<ProfileStore, OpenError> {
    ProfileStore::open(cfg).await
}
