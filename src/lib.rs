//! The profile service's pure core: domain types, validation, ports and use cases.
//!
//! It performs no I/O of its own: databases, caches, the rewards service and HTTP are
//! reached through the traits in [`ports`], implemented by the crates under `adapters/`.

pub mod admin;
#[cfg(feature = "contract")]
pub mod contract;
pub mod domain;
pub mod ports;
pub mod service;

pub use service::{Executor, ProfileRead, ProfileService, RecoveryReport, ServiceConfig, ServiceError};
