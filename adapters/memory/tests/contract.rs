//! The shared storage-port contract suite, run against the in-memory fakes, so tests
//! written against the fakes mean the same as against the real databases.

use profile_core::contract::{AccountFixture, account_repository_contract, profile_repository_contract};
use profile_memory::{MemoryAccounts, MemoryProfiles};

#[tokio::test]
async fn memory_profiles_honour_the_contract() {
    let repo = MemoryProfiles::new();
    profile_repository_contract(repo.as_ref()).await;
}

#[tokio::test]
async fn memory_accounts_honour_the_contract() {
    let repo = MemoryAccounts::new();
    let fixture = AccountFixture::sample();
    for a in [&fixture.active, &fixture.other_active, &fixture.suspended, &fixture.deleted] {
        repo.insert(a.clone());
    }
    account_repository_contract(repo.as_ref(), &fixture).await;
}
