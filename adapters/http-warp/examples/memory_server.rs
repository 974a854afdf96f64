//! The routes over in-memory fakes, for load-testing the adapter alone:
//! `cargo run --release -p profile-http-warp --example memory_server` prints a token and
//! serves on 127.0.0.1:8090 (or the address given as the first argument) until Ctrl-C.
//! Tokens are checked by the `MemoryTokens` fake (no JWT cost in the measurement).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use profile_core::domain::{AccountSnapshot, AccountStatus, OrderStats, RewardsBalance};
use profile_core::ports::SystemClock;
use profile_core::{ProfileService, ServiceConfig};
use profile_http_warp::{AppState, serve};
use profile_memory::{MemoryAccounts, MemoryCache, MemoryProfiles, MemoryRewards, MemoryTokens};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let accounts = MemoryAccounts::new();
    accounts.insert(AccountSnapshot {
        id: 1,
        email: "user1@example.com".into(),
        username: "user1".into(),
        status: AccountStatus::Active,
        created_at: Utc::now(),
        last_login_at: None,
        login_count: 0,
        orders: OrderStats::default(),
    });
    let rewards = MemoryRewards::new();
    rewards.set(1, Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }));
    let service = Arc::new(ProfileService::new(
        accounts,
        MemoryProfiles::new(),
        rewards,
        MemoryCache::new(),
        Arc::new(SystemClock),
        ServiceConfig { rewards_window: Duration::from_secs(3600), ..ServiceConfig::default() },
    ));
    let tokens = MemoryTokens::new();
    println!("token: {}", tokens.issue(1));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let state = AppState::new(service, tokens, Arc::new(String::new));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, state, shutdown, Duration::from_secs(5)).await;
    Ok(())
}
