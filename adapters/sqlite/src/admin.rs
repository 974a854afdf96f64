//! The core's store-upkeep traits, so the composition root never calls methods of the
//! SQLite stores themselves.

use async_trait::async_trait;
use profile_core::admin::{MainAdmin, PoolStatus, SeedReport, StoreAdmin};
use profile_core::ports::StoreError;

use crate::{MainStore, ProfileStore};

fn status(s: crate::PoolStatus) -> PoolStatus {
    PoolStatus { size: s.size, in_use: s.in_use, max: s.max }
}

#[async_trait]
impl StoreAdmin for MainStore {
    fn pool_status(&self) -> PoolStatus {
        status(MainStore::pool_status(self))
    }

    async fn close(&self) {
        MainStore::close(self).await;
    }
}

#[async_trait]
impl MainAdmin for MainStore {
    async fn has_users(&self) -> Result<bool, StoreError> {
        MainStore::has_users(self).await
    }

    async fn seed(
        &self,
        users: u64,
        orders_per_user: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<SeedReport, StoreError> {
        let r = MainStore::seed(self, users, orders_per_user, progress).await?;
        Ok(SeedReport { first_id: r.first_id, last_id: r.last_id, users: r.users, orders: r.orders })
    }
}

#[async_trait]
impl StoreAdmin for ProfileStore {
    fn pool_status(&self) -> PoolStatus {
        status(ProfileStore::pool_status(self))
    }

    async fn close(&self) {
        ProfileStore::close(self).await;
    }
}
