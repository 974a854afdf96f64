//! The fakes' upkeep traits: what the composition root asks of any store.

use std::sync::atomic::{AtomicU64, Ordering};

use profile_core::admin::{MainAdmin, StoreAdmin};
use profile_core::ports::{AccountRepository, ProfileRepository, StoreError};
use profile_memory::{MemoryAccounts, MemoryProfiles, sample_account};

#[tokio::test]
async fn seeding_appends_after_the_highest_id_and_reports_progress() {
    let accounts = MemoryAccounts::new();
    assert!(!accounts.has_users().await.unwrap());
    accounts.insert(sample_account(5));
    assert!(accounts.has_users().await.unwrap());
    let seen = AtomicU64::new(0);
    let report = accounts.seed(3, 4, &|n| seen.store(n, Ordering::SeqCst)).await.unwrap();
    assert_eq!((report.first_id, report.last_id, report.users, report.orders), (6, 8, 3, 12));
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let seeded = accounts.account(8).await.unwrap().expect("seeded account");
    assert_eq!(seeded.email, "user8@example.com");
    assert_eq!(seeded.orders.orders_count, 4);
    assert!(accounts.get(9).is_none());
}

#[tokio::test]
async fn closing_makes_every_later_call_unavailable() {
    let (accounts, profiles) = (MemoryAccounts::new(), MemoryProfiles::new());
    accounts.insert(sample_account(1));
    assert!(accounts.ping().await.is_ok() && profiles.ping().await.is_ok());
    StoreAdmin::close(&*accounts).await;
    StoreAdmin::close(&*profiles).await;
    assert!(matches!(accounts.account(1).await, Err(StoreError::Unavailable(_))));
    assert!(matches!(profiles.load(1).await, Err(StoreError::Unavailable(_))));
    assert_eq!(accounts.pool_status(), profile_core::admin::PoolStatus::default());
}
