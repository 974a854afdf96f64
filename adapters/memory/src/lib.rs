//! In-memory fakes of every port, honouring the port contracts, with fault injection
//! (fail the next N calls of an operation, add latency) for tests of the core and of
//! anything built on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use profile_core::Executor;
use profile_core::admin::{MainAdmin, PoolStatus, SeedReport, StoreAdmin};
use profile_core::domain::{
    AccountSnapshot, ProfileRecord, ProfileSnapshot, RewardsBalance, RewardsSnapshot, UserId,
};
use profile_core::ports::{
    AccountRepository, AuthError, CachePort, Clock, CurrentRecord, Decide, Decision, EmailChange, JournalId,
    ProfileRepository, RewardsError, RewardsPort, StoreError, TokenVerifier, UpdateOutcome,
};

/// An operation of a fake, as a target for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `AccountRepository::account`.
    Account,
    /// `AccountRepository::set_email`.
    SetEmail,
    /// `ProfileRepository::load`.
    Load,
    /// `ProfileRepository::update`.
    Update,
    /// `ProfileRepository::claim_email_change`.
    ClaimEmailChange,
    /// `ProfileRepository::complete_email_change`.
    CompleteEmailChange,
    /// `ProfileRepository::abort_email_change`.
    AbortEmailChange,
    /// `ProfileRepository::pending_email_changes`.
    PendingEmailChanges,
    /// `ping` of either repository.
    Ping,
}

/// Scheduled failures and latency, shared by a fake's operations.
#[derive(Debug, Default)]
pub struct Faults {
    plan: Mutex<HashMap<Op, (u32, StoreError)>>,
    latency: Mutex<Option<Duration>>,
    calls: Mutex<HashMap<Op, u64>>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide later assertions.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// The next `n` calls of `op` fail with `error` (and change nothing).
    pub fn fail_next(&self, op: Op, n: u32, error: StoreError) {
        lock(&self.plan).insert(op, (n, error));
    }

    /// Every call sleeps this long first (`None` removes the delay).
    pub fn set_latency(&self, latency: Option<Duration>) {
        *lock(&self.latency) = latency;
    }

    /// How many times `op` was called, failed calls included.
    pub fn calls(&self, op: Op) -> u64 {
        lock(&self.calls).get(&op).copied().unwrap_or(0)
    }

    /// From now on every call answers `Unavailable`, like a store whose pools were closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    async fn enter(&self, op: Op) -> Result<(), StoreError> {
        *lock(&self.calls).entry(op).or_default() += 1;
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        let latency = *lock(&self.latency);
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        let mut plan = lock(&self.plan);
        if let Some((n, err)) = plan.get_mut(&op)
            && *n > 0
        {
            *n -= 1;
            return Err(err.clone());
        }
        Ok(())
    }
}

/// An active account as tests need one: `user{id}@example.com`, username `user{id}`,
/// created 2026-01-05T10:00:00Z, no logins, no orders. Adjust with struct update syntax.
pub fn sample_account(id: UserId) -> AccountSnapshot {
    AccountSnapshot {
        id,
        email: format!("user{id}@example.com"),
        username: format!("user{id}"),
        status: profile_core::domain::AccountStatus::Active,
        created_at: chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 5, 10, 0, 0)
            .single()
            .unwrap_or_default(),
        last_login_at: None,
        login_count: 0,
        orders: profile_core::domain::OrderStats::default(),
    }
}

/// The main database in memory.
#[derive(Debug, Default)]
pub struct MemoryAccounts {
    accounts: Mutex<HashMap<UserId, AccountSnapshot>>,
    /// Fault injection for this fake.
    pub faults: Faults,
}

impl MemoryAccounts {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds or replaces an account (what the wider application would write).
    pub fn insert(&self, account: AccountSnapshot) {
        lock(&self.accounts).insert(account.id, account);
    }

    /// The stored account, bypassing fault injection.
    pub fn get(&self, id: UserId) -> Option<AccountSnapshot> {
        lock(&self.accounts).get(&id).cloned()
    }
}

#[async_trait]
impl AccountRepository for MemoryAccounts {
    async fn account(&self, user_id: UserId) -> Result<Option<AccountSnapshot>, StoreError> {
        self.faults.enter(Op::Account).await?;
        Ok(self.get(user_id))
    }

    async fn set_email(&self, user_id: UserId, email: &str) -> Result<(), StoreError> {
        self.faults.enter(Op::SetEmail).await?;
        let mut all = lock(&self.accounts);
        if all.values().any(|a| a.id != user_id && a.email.eq_ignore_ascii_case(email)) {
            return Err(StoreError::EmailTaken);
        }
        let account = all.get_mut(&user_id).ok_or(StoreError::NotFound)?;
        account.email = email.to_owned();
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.faults.enter(Op::Ping).await
    }
}

/// No pool: the gauges read 0; closing makes every later call `Unavailable`.
#[async_trait]
impl StoreAdmin for MemoryAccounts {
    fn pool_status(&self) -> PoolStatus {
        PoolStatus::default()
    }

    async fn close(&self) {
        self.faults.close();
    }
}

/// Seeding appends [`sample_account`]s whose statistics count every order asked for as
/// completed (the real stores mix in other statuses).
#[async_trait]
impl MainAdmin for MemoryAccounts {
    async fn has_users(&self) -> Result<bool, StoreError> {
        Ok(!lock(&self.accounts).is_empty())
    }

    async fn seed(
        &self,
        users: u64,
        orders_per_user: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<SeedReport, StoreError> {
        let first_id = {
            let mut all = lock(&self.accounts);
            let first_id = all.keys().max().copied().unwrap_or(0) + 1;
            let count = i64::try_from(users).map_err(|_| StoreError::Failure("too many users".into()))?;
            for id in first_id..first_id + count {
                let orders = profile_core::domain::OrderStats {
                    orders_count: i64::from(orders_per_user),
                    ..profile_core::domain::OrderStats::default()
                };
                all.insert(id, AccountSnapshot { orders, ..sample_account(id) });
            }
            first_id
        };
        progress(users);
        Ok(SeedReport {
            first_id,
            last_id: first_id + i64::try_from(users).unwrap_or(0) - 1,
            users,
            orders: users * u64::from(orders_per_user),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JournalState {
    Pending,
    Done,
    Aborted,
}

#[derive(Debug, Default)]
struct ProfilesState {
    records: HashMap<UserId, ProfileRecord>,
    journal: Vec<(EmailChange, JournalState)>,
}

impl ProfilesState {
    fn check_version(&self, record: &ProfileRecord) -> Result<(), StoreError> {
        let stored = self.records.get(&record.user_id).map_or(0, |r| r.version);
        if stored + 1 == record.version { Ok(()) } else { Err(StoreError::VersionConflict) }
    }

    fn pending(&mut self, id: JournalId) -> Result<&mut (EmailChange, JournalState), StoreError> {
        self.journal
            .iter_mut()
            .find(|(c, s)| c.id == id && *s == JournalState::Pending)
            .ok_or(StoreError::NotFound)
    }
}

/// The profiles database in memory, journal included. One lock over everything makes
/// each operation a transaction, and updates of one user queue on it.
#[derive(Debug, Default)]
pub struct MemoryProfiles {
    state: Mutex<ProfilesState>,
    next_id: AtomicU64,
    writes: AtomicU64,
    /// Fault injection for this fake.
    pub faults: Faults,
}

impl MemoryProfiles {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The stored record, bypassing fault injection.
    pub fn get(&self, user_id: UserId) -> Option<ProfileRecord> {
        lock(&self.state).records.get(&user_id).cloned()
    }

    /// Stores a record as it is, bypassing the unit of work (test set-up).
    pub fn insert(&self, record: ProfileRecord) {
        lock(&self.state).records.insert(record.user_id, record);
    }

    /// Number of journal entries still pending.
    pub fn pending_count(&self) -> usize {
        lock(&self.state).journal.iter().filter(|(_, s)| *s == JournalState::Pending).count()
    }

    /// Number of journal entries ever recorded, settled ones included.
    pub fn journal_len(&self) -> usize {
        lock(&self.state).journal.len()
    }

    /// How many times a profile record was written (stored or completed).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ProfileRepository for MemoryProfiles {
    async fn load(&self, user_id: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.faults.enter(Op::Load).await?;
        Ok(self.get(user_id))
    }

    async fn load_current(&self, user_id: UserId) -> Result<CurrentRecord, StoreError> {
        self.faults.enter(Op::Load).await?;
        let st = lock(&self.state);
        let pending = st
            .journal
            .iter()
            .find(|(c, s)| c.record.user_id == user_id && *s == JournalState::Pending)
            .map(|(c, _)| c.clone());
        Ok(CurrentRecord { record: st.records.get(&user_id).cloned(), pending })
    }

    async fn update(&self, user_id: UserId, decide: Decide) -> Result<UpdateOutcome, StoreError> {
        self.faults.enter(Op::Update).await?;
        let mut st = lock(&self.state);
        if let Some((c, _)) =
            st.journal.iter().find(|(c, s)| c.record.user_id == user_id && *s == JournalState::Pending)
        {
            return Ok(UpdateOutcome::Blocked(c.clone()));
        }
        let current =
            st.records.get(&user_id).cloned().unwrap_or_else(|| ProfileRecord::new_default(user_id));
        Ok(match decide(&current) {
            Decision::Keep => UpdateOutcome::Unchanged(current),
            Decision::Refuse(r) => UpdateOutcome::Refused(r),
            Decision::Store(record) => {
                if record.user_id != user_id || st.check_version(&record).is_err() {
                    return Err(StoreError::Failure("decided record is not the next version".into()));
                }
                st.records.insert(user_id, record.clone());
                self.writes.fetch_add(1, Ordering::SeqCst);
                UpdateOutcome::Stored(record)
            }
            Decision::ChangeEmail { record, old_email, new_email, created_at, claimed_until } => {
                if record.user_id != user_id || st.check_version(&record).is_err() {
                    return Err(StoreError::Failure("decided record is not the next version".into()));
                }
                let id = i64::try_from(self.next_id.fetch_add(1, Ordering::Relaxed) + 1).unwrap_or(i64::MAX);
                let change = EmailChange { id, old_email, new_email, record, created_at, claimed_until };
                st.journal.push((change.clone(), JournalState::Pending));
                UpdateOutcome::EmailChangeBegun(change)
            }
        })
    }

    async fn complete_email_change(&self, id: JournalId) -> Result<(), StoreError> {
        self.faults.enter(Op::CompleteEmailChange).await?;
        let mut st = lock(&self.state);
        let record = st.pending(id)?.0.record.clone();
        st.check_version(&record)?;
        st.records.insert(record.user_id, record);
        st.pending(id)?.1 = JournalState::Done;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn abort_email_change(&self, id: JournalId) -> Result<(), StoreError> {
        self.faults.enter(Op::AbortEmailChange).await?;
        lock(&self.state).pending(id)?.1 = JournalState::Aborted;
        Ok(())
    }

    async fn claim_email_change(
        &self,
        id: JournalId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.faults.enter(Op::ClaimEmailChange).await?;
        let mut st = lock(&self.state);
        let entry = &mut st.pending(id)?.0;
        if entry.claimed_until > now {
            return Ok(false);
        }
        entry.claimed_until = until;
        Ok(true)
    }

    async fn pending_email_changes(&self) -> Result<Vec<EmailChange>, StoreError> {
        self.faults.enter(Op::PendingEmailChanges).await?;
        let st = lock(&self.state);
        Ok(st.journal.iter().filter(|(_, s)| *s == JournalState::Pending).map(|(c, _)| c.clone()).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.faults.enter(Op::Ping).await
    }
}

/// No pool: the gauges read 0; closing makes every later call `Unavailable`.
#[async_trait]
impl StoreAdmin for MemoryProfiles {
    fn pool_status(&self) -> PoolStatus {
        PoolStatus::default()
    }

    async fn close(&self) {
        self.faults.close();
    }
}

/// The rewards service in memory: balances by user, scheduled failures, latency.
#[derive(Debug, Default)]
pub struct MemoryRewards {
    balances: Mutex<HashMap<UserId, RewardsBalance>>,
    fail_next: Mutex<u32>,
    fail_always: Mutex<bool>,
    latency: Mutex<Option<Duration>>,
    calls: AtomicU64,
}

impl MemoryRewards {
    /// A service where nobody has a rewards account.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets a user's balance (`None`: no rewards account, the service's 404).
    pub fn set(&self, user_id: UserId, balance: Option<RewardsBalance>) {
        let mut all = lock(&self.balances);
        match balance {
            Some(b) => all.insert(user_id, b),
            None => all.remove(&user_id),
        };
    }

    /// The next `n` calls fail.
    pub fn fail_next(&self, n: u32) {
        *lock(&self.fail_next) = n;
    }

    /// Every call fails while `on`.
    pub fn fail_always(&self, on: bool) {
        *lock(&self.fail_always) = on;
    }

    /// Every call sleeps this long first.
    pub fn set_latency(&self, latency: Option<Duration>) {
        *lock(&self.latency) = latency;
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl RewardsPort for MemoryRewards {
    async fn balance(&self, user_id: UserId) -> Result<Option<RewardsBalance>, RewardsError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let latency = *lock(&self.latency);
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        {
            let mut n = lock(&self.fail_next);
            if *n > 0 {
                *n -= 1;
                return Err(RewardsError("injected failure".into()));
            }
        }
        if *lock(&self.fail_always) {
            return Err(RewardsError("injected failure".into()));
        }
        Ok(lock(&self.balances).get(&user_id).cloned())
    }
}

/// Both caches in memory, without expiry unless built [`with_profile_ttl`](Self::with_profile_ttl)
/// (the core's rewards window still applies); `disabled_profiles` makes every profile
/// lookup a miss, like a TTL of 0.
#[derive(Debug, Default)]
pub struct MemoryCache {
    profiles: Mutex<HashMap<UserId, (Arc<ProfileSnapshot>, std::time::Instant)>>,
    /// Versions of invalidated entries: an older put after an invalidation is refused.
    floors: Mutex<HashMap<UserId, i64>>,
    rewards: Mutex<HashMap<UserId, RewardsSnapshot>>,
    disabled_profiles: bool,
    profile_ttl: Option<Duration>,
}

impl MemoryCache {
    fn peek_locked(
        &self,
        profiles: &HashMap<UserId, (Arc<ProfileSnapshot>, std::time::Instant)>,
        user_id: UserId,
    ) -> Option<Arc<ProfileSnapshot>> {
        let (snapshot, at) = profiles.get(&user_id)?;
        self.profile_ttl.is_none_or(|ttl| at.elapsed() < ttl).then(|| snapshot.clone())
    }

    /// A cache of both kinds.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A cache that never keeps profiles (rewards still kept).
    pub fn without_profiles() -> Arc<Self> {
        Arc::new(Self { disabled_profiles: true, ..Self::default() })
    }

    /// A cache whose profiles expire `ttl` after they were put.
    pub fn with_profile_ttl(ttl: Duration) -> Arc<Self> {
        Arc::new(Self { profile_ttl: Some(ttl), ..Self::default() })
    }

    /// The cached profile, for assertions.
    pub fn peek_profile(&self, user_id: UserId) -> Option<Arc<ProfileSnapshot>> {
        self.peek_locked(&lock(&self.profiles), user_id)
    }
}

#[async_trait]
impl CachePort for MemoryCache {
    async fn profile(&self, user_id: UserId) -> Option<Arc<ProfileSnapshot>> {
        if self.disabled_profiles {
            return None;
        }
        self.peek_profile(user_id)
    }

    async fn put_profile(&self, snapshot: Arc<ProfileSnapshot>) {
        if self.disabled_profiles {
            return;
        }
        let user_id = snapshot.profile.user_id;
        let version = snapshot.profile.version;
        let mut profiles = lock(&self.profiles);
        let newer_cached =
            self.peek_locked(&profiles, user_id).is_some_and(|cur| cur.profile.version > version);
        if newer_cached || lock(&self.floors).get(&user_id).is_some_and(|floor| *floor > version) {
            return;
        }
        // The TTL runs from when the snapshot's data was read, not from the put.
        let read_at = snapshot.read_instant();
        profiles.insert(user_id, (snapshot, read_at));
    }

    async fn invalidate_profile(&self, user_id: UserId) {
        let mut profiles = lock(&self.profiles);
        if let Some((cur, _)) = profiles.remove(&user_id) {
            let mut floors = lock(&self.floors);
            let floor = floors.entry(user_id).or_insert(cur.profile.version);
            *floor = (*floor).max(cur.profile.version);
        }
    }

    async fn clear_profiles(&self) {
        lock(&self.profiles).clear();
    }

    async fn rewards(&self, user_id: UserId) -> Option<RewardsSnapshot> {
        lock(&self.rewards).get(&user_id).cloned()
    }

    async fn put_rewards(&self, user_id: UserId, snapshot: RewardsSnapshot) {
        let mut rewards = lock(&self.rewards);
        // Two concurrent fetches: the later answer is the better one.
        if rewards.get(&user_id).is_none_or(|cur| cur.fetched_at <= snapshot.fetched_at) {
            rewards.insert(user_id, snapshot);
        }
    }
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self { now: Mutex::new(start) })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.now);
        *now += chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::zero());
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *lock(&self.now) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.now)
    }
}

/// [`Executor`] on the test's tokio runtime: spawned writes run to their end.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioExecutor;

impl Executor for TokioExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Bearer tokens in memory: a table from token text to the answer `verify` gives.
///
/// An unknown token is [`AuthError::Invalid`], an empty one [`AuthError::Missing`]
/// (like the real verifier). Records how often it was asked and the last token asked.
#[derive(Debug, Default)]
pub struct MemoryTokens {
    answers: RwLock<HashMap<String, Result<UserId, AuthError>>>,
    calls: AtomicU64,
    last: Mutex<Option<String>>,
}

impl MemoryTokens {
    /// A verifier that knows no token.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A token for `user_id` (the same text for the same user), accepted from now on.
    pub fn issue(&self, user_id: UserId) -> String {
        let token = format!("memory-token-{user_id}");
        self.insert(&token, user_id);
        token
    }

    /// Accepts `token` as `user_id`.
    pub fn insert(&self, token: &str, user_id: UserId) {
        self.answers.write().unwrap_or_else(|p| p.into_inner()).insert(token.to_owned(), Ok(user_id));
    }

    /// Refuses `token` with `error` (e.g. `Expired`).
    pub fn refuse(&self, token: &str, error: AuthError) {
        self.answers.write().unwrap_or_else(|p| p.into_inner()).insert(token.to_owned(), Err(error));
    }

    /// Calls of `verify` so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The token text of the last `verify` call.
    pub fn last_token(&self) -> Option<String> {
        lock(&self.last).clone()
    }
}

impl TokenVerifier for MemoryTokens {
    fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last) = Some(token.to_owned());
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let answers = self.answers.read().unwrap_or_else(|p| p.into_inner());
        answers.get(token).copied().unwrap_or(Err(AuthError::Invalid))
    }
}
