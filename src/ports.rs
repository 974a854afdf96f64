//! The ports: what the core needs from the outside world, with their contracts.
//!
//! Every adapter of a port must honour the contract written on each method; the shared
//! suite in [`crate::contract`] (feature `contract`) checks the storage ports.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    AccountSnapshot, FieldError, ProfileRecord, ProfileSnapshot, RewardsBalance, RewardsSnapshot, UserId,
};
use std::sync::Arc;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stored state is not what the operation requires (a journal entry completed
    /// over a record that moved on). Never returned for contention between updates:
    /// those queue.
    #[error("the record changed since it was read")]
    VersionConflict,
    /// Another account already holds this e-mail address (compared case-insensitively).
    #[error("the e-mail address is taken")]
    EmailTaken,
    /// The row the operation targets does not exist.
    #[error("not found")]
    NotFound,
    /// The store cannot serve now (locked, read-only, pool exhausted, timed out); retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the text is for logs, never for clients.
    #[error("storage failure: {0}")]
    Failure(String),
}

/// The rewards service is failing (error status, bad body, timeout, refused, breaker open).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rewards service failing: {0}")]
pub struct RewardsError(pub String);

/// A journal entry's id in the profiles database.
pub type JournalId = i64;

/// An e-mail change that spans both databases, recorded before either is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailChange {
    /// Journal id (assigned by the store).
    pub id: JournalId,
    /// E-mail before the change.
    pub old_email: String,
    /// E-mail after the change (lower-case).
    pub new_email: String,
    /// The profile record to store when the change completes (its `version` is the
    /// stored version + 1).
    pub record: ProfileRecord,
    /// When the intent was recorded.
    pub created_at: DateTime<Utc>,
    /// Until when the party working on the entry holds it; nobody else settles it
    /// before then. A request holds its own entry while it runs; a settler claims an
    /// entry with [`ProfileRepository::claim_email_change`].
    pub claimed_until: DateTime<Utc>,
}

/// Why the core refused an update inside the unit of work; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The patch is invalid given the stored record; every failing field is listed.
    Invalid(Vec<FieldError>),
    /// The precondition (`If-Match`) does not hold for the stored record.
    PreconditionFailed,
    /// The decision was to be made with a copy of the account that came with an older
    /// record than the one stored: the core decides again with the account read afresh.
    Outdated,
}

/// What the core decided for the stored record, inside the store's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes; nothing is written.
    Keep,
    /// Store this record (its `version` is the stored version + 1).
    Store(ProfileRecord),
    /// The patch changes the e-mail: journal the change (held by the caller until
    /// `claimed_until`); the record is stored only when the change completes.
    ChangeEmail {
        /// The record to store on completion (`version` = stored + 1).
        record: ProfileRecord,
        /// The account's e-mail before the change.
        old_email: String,
        /// The new e-mail, lower-case.
        new_email: String,
        /// When the intent is recorded.
        created_at: DateTime<Utc>,
        /// Until when the caller holds the entry.
        claimed_until: DateTime<Utc>,
    },
    /// Refused; nothing is written.
    Refuse(Refusal),
}

/// The pure core function a unit-of-work update runs on the stored record (the default
/// record when the user has no row yet). It runs on the store's thread, once.
pub type Decide = Box<dyn FnOnce(&ProfileRecord) -> Decision + Send>;

/// What a unit-of-work update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// [`Decision::Keep`]: the stored record (the default one when there is no row).
    Unchanged(ProfileRecord),
    /// [`Decision::Store`]: the record now stored.
    Stored(ProfileRecord),
    /// [`Decision::ChangeEmail`]: the journal entry now pending, held by the caller.
    EmailChangeBegun(EmailChange),
    /// [`Decision::Refuse`]: nothing written.
    Refused(Refusal),
    /// The user has an unsettled e-mail change: `decide` was not called and nothing was
    /// written. The change must be settled first (it holds the user's next state).
    Blocked(EmailChange),
}

/// What [`ProfileRepository::load_current`] read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentRecord {
    /// The user's record; `None` when the user never edited their profile.
    pub record: Option<ProfileRecord>,
    /// The user's pending e-mail change, if any.
    pub pending: Option<EmailChange>,
}

/// The main database: accounts and their orders. Shared with the wider application.
#[async_trait]
pub trait AccountRepository: Send + Sync {
    /// The account with its completed-order statistics, in one read.
    ///
    /// MUST return `Ok(None)` when no account has this id (whatever its status; status
    /// is reported, not filtered). Statistics count only orders with status `completed`.
    async fn account(&self, user_id: UserId) -> Result<Option<AccountSnapshot>, StoreError>;

    /// Sets the account's e-mail (given lower-case).
    ///
    /// MUST return `EmailTaken` when another account holds the address in any case, and
    /// `NotFound` when the account does not exist. Setting the current address succeeds.
    async fn set_email(&self, user_id: UserId, email: &str) -> Result<(), StoreError>;

    /// Answers when the database can run a query (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The profiles database, owned by this service.
#[async_trait]
pub trait ProfileRepository: Send + Sync {
    /// The user's record; `Ok(None)` when the user never edited their profile.
    async fn load(&self, user_id: UserId) -> Result<Option<ProfileRecord>, StoreError>;

    /// The user's record with the user's pending e-mail change, if any, read together
    /// (one consistent snapshot): while a change is pending, a read shows the state
    /// before it whole, never the new address with the old fields.
    async fn load_current(&self, user_id: UserId) -> Result<CurrentRecord, StoreError>;

    /// The update as one unit of work: in one write transaction, loads the user's record
    /// (the default record, version 0, when there is no row), and — unless the user has
    /// a pending e-mail change, then [`UpdateOutcome::Blocked`] — calls `decide` on it
    /// once and carries out its [`Decision`].
    ///
    /// Concurrent updates of one user, the very first included, MUST be applied one
    /// after the other, each deciding on the record the previous one left: none is
    /// lost and none fails because of another. A [`Decision::Store`] whose version is
    /// not the stored version + 1 is a bug in the caller: `Failure`, nothing written.
    async fn update(&self, user_id: UserId, decide: Decide) -> Result<UpdateOutcome, StoreError>;

    /// In one transaction: stores the pending entry's record and marks the entry done.
    ///
    /// MUST return `VersionConflict` (entry left pending, nothing written) when the
    /// stored version is not the record's version - 1, and `NotFound` when no pending
    /// entry has this id.
    async fn complete_email_change(&self, id: JournalId) -> Result<(), StoreError>;

    /// Marks a pending entry rolled back, writing no profile field. `NotFound` when no
    /// pending entry has this id.
    async fn abort_email_change(&self, id: JournalId) -> Result<(), StoreError>;

    /// Takes a pending entry for settling until `until`, if nobody holds it at `now`
    /// (its `claimed_until` is not after `now`). Returns whether it was taken: of
    /// several parties claiming at once, exactly one gets `true`. `NotFound` when no
    /// pending entry has this id.
    async fn claim_email_change(
        &self,
        id: JournalId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Every entry neither completed nor aborted, oldest first.
    async fn pending_email_changes(&self) -> Result<Vec<EmailChange>, StoreError>;

    /// Answers when the database can run a query (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The rewards service.
#[async_trait]
pub trait RewardsPort: Send + Sync {
    /// `Ok(Some(balance))`, `Ok(None)` when the user has no rewards account, or an error
    /// when the service is failing. MUST return within the adapter's configured timeout.
    async fn balance(&self, user_id: UserId) -> Result<Option<RewardsBalance>, RewardsError>;
}

/// Caches of assembled profiles and rewards balances. Never fails: a cache that cannot
/// answer behaves as a miss.
#[async_trait]
pub trait CachePort: Send + Sync {
    /// The cached profile, if present and its data was read from the databases less than
    /// the profile TTL ago ([`ProfileSnapshot::age`], which a put does not reset).
    async fn profile(&self, user_id: UserId) -> Option<Arc<ProfileSnapshot>>;

    /// Stores (replaces) a profile, unless the cache holds — or, since an invalidation,
    /// held — a higher `version` of it: an older snapshot never replaces a newer one.
    async fn put_profile(&self, snapshot: Arc<ProfileSnapshot>);

    /// Drops a profile, so the next read goes to the databases. The dropped entry's
    /// version stays known (for the profile TTL): a later put of an older snapshot is
    /// still refused.
    async fn invalidate_profile(&self, user_id: UserId);

    /// Drops every cached profile (copies that may have missed an invalidation); the
    /// rewards balances stay.
    async fn clear_profiles(&self);

    /// The last known balance, whatever its age, while the cache keeps it (at least
    /// long enough to serve it as `stale`); the core compares `fetched_at` to its window.
    async fn rewards(&self, user_id: UserId) -> Option<RewardsSnapshot>;

    /// Stores (replaces) the last known balance.
    async fn put_rewards(&self, user_id: UserId, snapshot: RewardsSnapshot);

    /// What a profile read needs from the cache, in one call: the cached profile (as
    /// [`Self::profile`] answers it) and the last known balance (as [`Self::rewards`]
    /// does; a cache that keeps a copy of it beside the profile may answer that copy,
    /// which is never older than the one `rewards` held when either was last put).
    ///
    /// The default asks both; a cache that keeps the two side by side finds them in one
    /// lookup, which is what every cached read pays.
    async fn profile_and_rewards(
        &self,
        user_id: UserId,
    ) -> (Option<Arc<ProfileSnapshot>>, Option<RewardsSnapshot>) {
        futures::join!(self.profile(user_id), self.rewards(user_id))
    }
}

/// Why a bearer token does not authenticate anyone; every transport refuses the call
/// (HTTP `401`, gRPC `UNAUTHENTICATED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer credentials at all.
    #[error("no bearer token")]
    Missing,
    /// Credentials present but unusable: malformed, badly signed, wrong algorithm,
    /// wrong issuer or audience, not yet valid, too long, or a bad `sub`.
    #[error("the bearer token is invalid")]
    Invalid,
    /// A well-formed token past its expiry (plus leeway).
    #[error("the bearer token has expired")]
    Expired,
}

/// Verifies bearer tokens (the token's text, without the `Bearer ` scheme).
///
/// MUST return the user id the token names when it is valid by the rules of SPEC §3,
/// and the matching [`AuthError`] otherwise; MUST be cheap for a token seen before.
pub trait TokenVerifier: Send + Sync {
    /// The user the token authenticates.
    fn verify(&self, token: &str) -> Result<UserId, AuthError>;
}

/// The time source; tests pin it.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// How long each step of a request took, for `Server-Timing`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Profiles database, when it was read or written.
    pub db_profiles: Option<Duration>,
    /// Main database, when it was read or written.
    pub db_main: Option<Duration>,
    /// Rewards service call, when one was made.
    pub rewards: Option<Duration>,
}
