//! What the composition root needs of a store besides its port: pool gauges, closing,
//! and demo seeding. Every storage adapter implements these, so the server never calls
//! methods of one kind of store.

use async_trait::async_trait;

use crate::ports::StoreError;

/// Connection counts of a store, for the pool gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Connections open now.
    pub size: usize,
    /// Connections checked out now.
    pub in_use: usize,
    /// Connections the store may open at most.
    pub max: usize,
}

/// What [`MainAdmin::seed`] created.
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

/// Upkeep of any store.
#[async_trait]
pub trait StoreAdmin: Send + Sync {
    /// Connection counts now.
    fn pool_status(&self) -> PoolStatus;

    /// Closes the pools; later calls answer `Unavailable`.
    async fn close(&self);
}

/// Upkeep of the main database: demo data.
#[async_trait]
pub trait MainAdmin: StoreAdmin {
    /// Whether any account exists (demo mode seeds only an empty database).
    async fn has_users(&self) -> Result<bool, StoreError>;

    /// Appends `users` deterministic demo accounts after the highest existing id, with
    /// `orders_per_user` orders each (SPEC §2), in batched transactions; calls
    /// `progress` with the number of accounts created so far after each batch.
    async fn seed(
        &self,
        users: u64,
        orders_per_user: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<SeedReport, StoreError>;
}
