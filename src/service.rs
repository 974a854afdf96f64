//! `ProfileService`: the use cases — read, update, settle the journal.
//!
//! An update is one unit of work in the profiles store: the store loads the record and
//! calls [`decide`] (pure: precondition, validation, merge) and stores what it returns,
//! in one transaction, so concurrent updates of one user queue instead of failing. An
//! update that changes the e-mail also goes through the journal (intent → main database
//! → record applied and intent closed), and the entry holds the user's next state until
//! it is settled: later updates of that user wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, SubsecRound, TimeDelta, Utc};
use futures::future::BoxFuture;

use crate::domain::{
    AccountSnapshot, AccountStatus, FieldError, ParsedUpdate, Patch, Precondition, Profile, ProfileRecord,
    ProfileSnapshot, ProfileView, Rewards, RewardsSnapshot, RewardsStatus, UserId,
};
use crate::ports::{
    AccountRepository, CachePort, Clock, Decide, Decision, EmailChange, JournalId, ProfileRepository,
    Refusal, RewardsPort, StoreError, Timings, UpdateOutcome,
};

/// Why a use case failed. Each transport maps each to its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No account with this id, or it is deleted.
    #[error("no such account")]
    AccountNotFound,
    /// The account is suspended.
    #[error("the account is suspended")]
    AccountSuspended,
    /// The patch is invalid; every failing field is listed.
    #[error("the patch is invalid")]
    Invalid(Vec<FieldError>),
    /// The precondition (`If-Match`) does not hold for the current state.
    #[error("the profile changed since it was read")]
    PreconditionFailed,
    /// Another account holds the e-mail address.
    #[error("the e-mail address is taken")]
    EmailTaken,
    /// A database cannot serve now; the client may retry.
    #[error("storage unavailable")]
    Unavailable(String),
    /// An unexpected failure; the text is for logs only.
    #[error("internal failure")]
    Internal(String),
}

impl ServiceError {
    /// A storage failure of the profiles store or the journal: nothing there means "no
    /// such account", so only availability keeps its meaning.
    fn storage(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }

    /// A failure of the main database's account operations.
    fn account(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::AccountNotFound,
            StoreError::EmailTaken => Self::EmailTaken,
            other => Self::storage(other),
        }
    }
}

/// Runs the service's background work: the rest of a write whose caller went away, and
/// waits. Implemented by the server on its runtime (and by test runtimes).
pub trait Executor: Send + Sync {
    /// Runs `task` to its end, whatever happens to the caller.
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// Resolves after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Tunables of the service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// Rewards cache window: a balance younger than this is served as `cached`.
    pub rewards_window: Duration,
    /// How long a request holds its own journal entry; nobody else settles it meanwhile.
    /// Longer than any e-mail change takes, short enough that an entry of a process that
    /// died is settled by another soon after.
    pub journal_lease: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { rewards_window: Duration::from_secs(30), journal_lease: Duration::from_secs(10) }
    }
}

/// A profile with the timings of the steps that produced it.
#[derive(Debug, Clone)]
pub struct ProfileRead {
    /// The profile.
    pub view: ProfileView,
    /// Step durations for `Server-Timing`.
    pub timings: Timings,
}

/// What a pass over the journal did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entries whose e-mail change was carried through: profile applied.
    pub completed: u32,
    /// Entries whose e-mail change could not happen (address taken, account gone):
    /// closed, nothing applied.
    pub rolled_back: u32,
    /// Entries that could not be settled now (a database failing); retried later.
    pub stuck: u32,
    /// Entries another party holds (a request in flight, another instance).
    pub held: u32,
}

/// The use cases, over the ports. Cheap to clone: every clone is the same service.
#[derive(Clone)]
pub struct ProfileService {
    core: Arc<Core>,
}

struct Core {
    accounts: Arc<dyn AccountRepository>,
    profiles: Arc<dyn ProfileRepository>,
    rewards: Arc<dyn RewardsPort>,
    cache: Arc<dyn CachePort>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    executor: OnceLock<Arc<dyn Executor>>,
    journal: JournalState,
}

/// What this process knows of the journal.
#[derive(Default)]
struct JournalState {
    /// Entries this process holds and is working on right now.
    in_flight: Mutex<HashSet<JournalId>>,
    /// Entries a request of this process gave up on: still held under their lease,
    /// but free for this process to settle at once.
    abandoned: Mutex<HashSet<JournalId>>,
    /// Per entry that failed to settle: attempts so far, and when to try again.
    backoff: Mutex<HashMap<JournalId, (u32, DateTime<Utc>)>>,
    /// Bumped whenever an e-mail change of this process reaches the main database, so
    /// an update that read the account before can tell its copy may be old.
    email_epoch: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The account an update applies to, and where it came from.
#[derive(Debug, Clone)]
struct Known {
    /// The account (checked for status).
    account: AccountSnapshot,
    /// When it was read from the main database.
    read_at: Instant,
    /// When it came from the cached profile: that profile's version. The update then
    /// applies only to that version ([`Refusal::Outdated`] otherwise).
    shown_at: Option<i64>,
}

/// Runs a future and measures it.
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

fn add(slot: &mut Option<Duration>, d: Duration) {
    *slot = Some(slot.unwrap_or_default() + d);
}

/// The status rule: deleted accounts do not exist, suspended ones may not act.
fn active(account: Option<AccountSnapshot>) -> Result<AccountSnapshot, ServiceError> {
    match account {
        None => Err(ServiceError::AccountNotFound),
        Some(a) => match a.status {
            AccountStatus::Active => Ok(a),
            AccountStatus::Suspended => Err(ServiceError::AccountSuspended),
            AccountStatus::Deleted => Err(ServiceError::AccountNotFound),
        },
    }
}

/// The pure heart of an update, run by the store on the stored record inside its
/// transaction: the precondition against the ETag of the state it names (the stored
/// record with the account and rewards read for this request), then the merge and
/// every rule; the next record, nothing, or a refusal.
pub fn decide(
    current: &ProfileRecord,
    account: &AccountSnapshot,
    rewards: &Rewards,
    parsed: &ParsedUpdate,
    precondition: &Precondition,
    now: DateTime<Utc>,
    lease: Duration,
) -> Decision {
    if !precondition.is_none() {
        let snapshot = ProfileSnapshot::new(Profile::assemble(account, current));
        let view = ProfileView { snapshot, rewards: rewards.clone() };
        if !precondition.allows(&view.etag()) {
            return Decision::Refuse(Refusal::PreconditionFailed);
        }
    }
    let mut errors = parsed.problems.clone();
    let (fields, new_email) = match parsed.update.apply(&current.fields, &account.email, &account.username) {
        Ok(done) if errors.is_empty() => done,
        Ok(_) => return Decision::Refuse(Refusal::Invalid(errors)),
        Err(more) => {
            // A key already refused on its own is not reported again as missing.
            let extra: Vec<FieldError> =
                more.into_iter().filter(|m| !errors.iter().any(|e| e.field == m.field)).collect();
            errors.extend(extra);
            return Decision::Refuse(Refusal::Invalid(errors));
        }
    };
    if fields == current.fields && new_email.is_none() {
        return Decision::Keep;
    }
    let record = ProfileRecord {
        user_id: current.user_id,
        version: current.version + 1,
        updated_at: Some(now),
        fields,
    };
    match new_email {
        None => Decision::Store(record),
        Some(new_email) => Decision::ChangeEmail {
            record,
            old_email: account.email.clone(),
            new_email,
            created_at: now,
            claimed_until: now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX),
        },
    }
}

impl ProfileService {
    /// Wires the service to its adapters.
    pub fn new(
        accounts: Arc<dyn AccountRepository>,
        profiles: Arc<dyn ProfileRepository>,
        rewards: Arc<dyn RewardsPort>,
        cache: Arc<dyn CachePort>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        let core = Core {
            accounts,
            profiles,
            rewards,
            cache,
            clock,
            config,
            executor: OnceLock::new(),
            journal: JournalState::default(),
        };
        Self { core: Arc::new(core) }
    }

    /// Runs every write on `executor`, so a write that has started finishes even when
    /// its caller goes away, and lets updates wait for another instance's e-mail
    /// change. Without one, a write runs in the caller's future (dropping it midway
    /// leaves an e-mail change for the journal to settle) and such waits fail as
    /// `Unavailable`.
    pub fn with_executor(self, executor: Arc<dyn Executor>) -> Self {
        // Set once, before the service is shared; a second executor is ignored.
        let _ = self.core.executor.set(executor);
        self
    }

    /// Today's date (UTC), the anchor of the age rule.
    pub fn today(&self) -> NaiveDate {
        self.core.clock.now().date_naive()
    }

    /// Both databases answer a query.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        let (a, p) = futures::join!(self.core.accounts.ping(), self.core.profiles.ping());
        a.map_err(ServiceError::storage)?;
        p.map_err(ServiceError::storage)?;
        Ok(())
    }

    /// The user's complete profile: from the profile cache, else both databases read
    /// concurrently with the rewards balance; rewards composed for this request in
    /// every case.
    pub async fn get(&self, user_id: UserId) -> Result<ProfileRead, ServiceError> {
        let core = &self.core;
        let mut timings = Timings::default();
        let (cached, known) = core.cache.profile_and_rewards(user_id).await;
        let (snapshot, rewards) = match cached {
            Some(s) => (s, core.rewards_given(user_id, known, &mut timings).await),
            None => {
                let mut reward_t = Timings::default();
                let read_at = Instant::now();
                let (both, rewards) = futures::join!(
                    core.read_both(user_id, &mut timings),
                    core.rewards_given(user_id, known, &mut reward_t)
                );
                timings.rewards = reward_t.rewards;
                let (account, record) = both?;
                let snapshot = ProfileSnapshot::of(&account, &record, read_at);
                core.cache.put_profile(snapshot.clone()).await;
                (snapshot, rewards)
            }
        };
        Ok(ProfileRead { view: ProfileView { snapshot, rewards }, timings })
    }

    /// The update use case: applies a parsed patch under a precondition, reporting every
    /// problem of the patch together, those that need the stored state included.
    ///
    /// Without a precondition the patch applies to the latest state; concurrent updates
    /// of one user queue and never fail because of each other. With one, it applies
    /// only to the state it names (`PreconditionFailed` otherwise, nothing written). A
    /// patch that changes nothing writes nothing and keeps `version`. An e-mail change
    /// goes through the journal so both databases change or neither does. Once started
    /// (with an executor), the write runs to its end even if this future is dropped.
    pub async fn update(
        &self,
        user_id: UserId,
        parsed: ParsedUpdate,
        precondition: Precondition,
    ) -> Result<ProfileRead, ServiceError> {
        let core = self.core.clone();
        let Some(executor) = core.executor.get().cloned() else {
            return core.update(user_id, Arc::new(parsed), precondition).await;
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        executor.spawn(Box::pin(async move {
            let _ = tx.send(core.update(user_id, Arc::new(parsed), precondition).await);
        }));
        rx.await
            .unwrap_or_else(|_| Err(ServiceError::Internal("the update task ended without an answer".into())))
    }

    /// Settles every journal entry nobody else holds, each on its own: one that cannot
    /// be settled now is counted `stuck`, retried on a later pass (with backoff), and
    /// never stops the others. Run at start-up and periodically; fails only when the
    /// journal cannot be listed.
    pub async fn settle_journal(&self) -> Result<RecoveryReport, ServiceError> {
        self.core.settle_journal().await
    }

    /// Start-up recovery: one pass of [`settle_journal`](Self::settle_journal).
    pub async fn recover(&self) -> Result<RecoveryReport, ServiceError> {
        self.settle_journal().await
    }
}

/// What [`Core::take_for_settling`] found.
enum Take<'a> {
    /// This process now holds the entry and settles it.
    Held(Held<'a>),
    /// Another party holds it (a request in flight, another instance).
    Busy,
    /// It is no longer pending: settled since it was read.
    Gone,
}

/// Marks a journal entry as worked on by this process for as long as it lives.
struct Held<'a> {
    journal: &'a JournalState,
    id: JournalId,
}

impl<'a> Held<'a> {
    fn new(journal: &'a JournalState, id: JournalId) -> Self {
        lock(&journal.in_flight).insert(id);
        Self { journal, id }
    }

    /// Leaves the entry for this process to settle later without waiting for its lease.
    fn abandon(self) {
        lock(&self.journal.abandoned).insert(self.id);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock(&self.journal.in_flight).remove(&self.id);
    }
}

impl Core {
    /// Now, at the precision every store keeps (microseconds).
    fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(6)
    }

    fn lease_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::from_std(self.config.journal_lease).unwrap_or(TimeDelta::MAX)
    }

    /// A short wait before looking again, growing with the time already waited; fails
    /// once a wait has outlasted any lease, or when there is no executor to wait on.
    async fn pause(&self, waited: Duration) -> Result<Duration, ServiceError> {
        let unavailable =
            || ServiceError::Unavailable("the user's e-mail change is still in progress".into());
        let executor = self.executor.get().ok_or_else(unavailable)?;
        if waited > self.config.journal_lease * 2 {
            return Err(unavailable());
        }
        let step = (waited / 4).clamp(Duration::from_millis(1), Duration::from_millis(50));
        executor.sleep(step).await;
        Ok(step)
    }

    /// Reads the account (checked for status) and the profile record concurrently.
    async fn read_both(
        &self,
        user_id: UserId,
        timings: &mut Timings,
    ) -> Result<(AccountSnapshot, ProfileRecord), ServiceError> {
        let ((account, main_t), (current, prof_t)) =
            futures::join!(timed(self.accounts.account(user_id)), timed(self.profiles.load_current(user_id)));
        add(&mut timings.db_main, main_t);
        add(&mut timings.db_profiles, prof_t);
        let mut account = active(account.map_err(ServiceError::storage)?)?;
        let current = current.map_err(ServiceError::storage)?;
        if let Some(change) = current.pending {
            // The main database may already hold the new address; until the change is
            // settled the profile shows the state before it, whole.
            account.email = change.old_email;
        }
        let record = current.record.unwrap_or_else(|| ProfileRecord::new_default(user_id));
        Ok((account, record))
    }

    /// The account, checked for status, timed.
    async fn account(&self, user_id: UserId, timings: &mut Timings) -> Result<AccountSnapshot, ServiceError> {
        let (account, t) = timed(self.accounts.account(user_id)).await;
        add(&mut timings.db_main, t);
        active(account.map_err(ServiceError::storage)?)
    }

    /// The account read from the main database now.
    async fn fresh_account(&self, user_id: UserId, timings: &mut Timings) -> Result<Known, ServiceError> {
        let read_at = Instant::now();
        Ok(Known { account: self.account(user_id, timings).await?, read_at, shown_at: None })
    }

    /// The account an update applies to, and the rewards of this request: the account
    /// the cached profile shows (what the client was served, so `If-Match` names it),
    /// else the one in the main database; an e-mail change always reads the database.
    async fn account_and_rewards(
        &self,
        user_id: UserId,
        changes_email: bool,
        timings: &mut Timings,
    ) -> (Result<Known, ServiceError>, Rewards) {
        let (cached, known_rewards) = self.cache.profile_and_rewards(user_id).await;
        let shown = cached.filter(|_| !changes_email).and_then(|s| {
            let account = s.account()?.clone();
            Some(Known { account, read_at: s.read_instant(), shown_at: Some(s.profile.version) })
        });
        let mut reward_t = Timings::default();
        let (known, rewards) = match shown {
            Some(known) => (Ok(known), self.rewards_given(user_id, known_rewards, &mut reward_t).await),
            None => {
                futures::join!(
                    self.fresh_account(user_id, timings),
                    self.rewards_given(user_id, known_rewards, &mut reward_t)
                )
            }
        };
        timings.rewards = reward_t.rewards;
        (known, rewards)
    }

    /// Rewards for this request, given the cache's last known balance: within the window
    /// that one, else from the service, else the last known value (`stale`), else
    /// nothing (`unavailable`).
    async fn rewards_given(
        &self,
        user_id: UserId,
        known: Option<RewardsSnapshot>,
        timings: &mut Timings,
    ) -> Rewards {
        let now = self.clock.now();
        let window = TimeDelta::from_std(self.config.rewards_window).unwrap_or(TimeDelta::MAX);
        let known = match known {
            Some(s) if now.signed_duration_since(s.fetched_at) < window => {
                return Rewards::from_snapshot(s, RewardsStatus::Cached);
            }
            known => known,
        };
        let (answer, took) = timed(self.rewards.balance(user_id)).await;
        timings.rewards = Some(took);
        match answer {
            Ok(balance) => {
                let snapshot = RewardsSnapshot { balance, fetched_at: self.now() };
                let rewards = Rewards::from_snapshot(snapshot.clone(), RewardsStatus::Live);
                self.cache.put_rewards(user_id, snapshot).await;
                rewards
            }
            Err(_) => {
                known.map_or_else(Rewards::unavailable, |s| Rewards::from_snapshot(s, RewardsStatus::Stale))
            }
        }
    }

    /// Caches and returns the state a write left: the record with the account it was
    /// decided on, the copy aging from when that account was read.
    async fn answer(
        &self,
        known: &Known,
        record: &ProfileRecord,
        rewards: Rewards,
        timings: Timings,
    ) -> ProfileRead {
        let snapshot = ProfileSnapshot::of(&known.account, record, known.read_at);
        self.cache.put_profile(snapshot.clone()).await;
        ProfileRead { view: ProfileView { snapshot, rewards }, timings }
    }

    async fn update(
        &self,
        user_id: UserId,
        parsed: Arc<ParsedUpdate>,
        precondition: Precondition,
    ) -> Result<ProfileRead, ServiceError> {
        let mut timings = Timings::default();
        let epoch = self.journal.email_epoch.load(Ordering::SeqCst);
        let changes_email = !matches!(parsed.update.email, Patch::Absent);
        let (known, rewards) = self.account_and_rewards(user_id, changes_email, &mut timings).await;
        let mut known = known?;
        let precondition = Arc::new(precondition);
        let mut waited = Duration::ZERO;
        loop {
            let decide_fn: Decide = {
                let (account, rewards, parsed, precondition) =
                    (known.account.clone(), rewards.clone(), parsed.clone(), precondition.clone());
                let (now, lease, shown_at) = (self.now(), self.config.journal_lease, known.shown_at);
                Box::new(move |current: &ProfileRecord| {
                    if shown_at.is_some_and(|v| v != current.version) {
                        // The cached account came with an older record: whatever changed
                        // since (an e-mail change included) may have changed it too.
                        return Decision::Refuse(Refusal::Outdated);
                    }
                    decide(current, &account, &rewards, &parsed, &precondition, now, lease)
                })
            };
            let (outcome, t) = timed(self.profiles.update(user_id, decide_fn)).await;
            add(&mut timings.db_profiles, t);
            match outcome.map_err(ServiceError::storage)? {
                UpdateOutcome::Unchanged(record) | UpdateOutcome::Stored(record) => {
                    if self.journal.email_epoch.load(Ordering::SeqCst) != epoch {
                        // An e-mail change landed since the account was read: never
                        // answer (or cache) the newer version with the older address.
                        known = self.fresh_account(user_id, &mut timings).await?;
                    }
                    return Ok(self.answer(&known, &record, rewards, timings).await);
                }
                UpdateOutcome::Refused(Refusal::Outdated) => {
                    known = self.fresh_account(user_id, &mut timings).await?;
                }
                UpdateOutcome::Refused(Refusal::Invalid(errors)) => {
                    return Err(ServiceError::Invalid(errors));
                }
                UpdateOutcome::Refused(Refusal::PreconditionFailed) => {
                    return Err(ServiceError::PreconditionFailed);
                }
                UpdateOutcome::EmailChangeBegun(change) => {
                    let held = Held::new(&self.journal, change.id);
                    return self.finish_email_change(&known, &change, held, rewards, timings).await;
                }
                UpdateOutcome::Blocked(change) => {
                    // The entry holds this user's next state: settle it (or wait for
                    // whoever holds it), then decide again on what it left.
                    match self.take_for_settling(&change).await? {
                        Take::Held(held) => {
                            self.settle_one(&change, held).await?;
                            known = self.fresh_account(user_id, &mut timings).await?;
                        }
                        Take::Busy => waited += self.pause(waited).await?,
                        // Settled meanwhile by whoever held it: decide again at once,
                        // with the account as that change left it.
                        Take::Gone => known = self.fresh_account(user_id, &mut timings).await?,
                    }
                }
            }
        }
    }

    /// Takes `change` for settling, if this process may now: nobody here is working on
    /// it, and either a request of this process abandoned it or the store lets this
    /// process claim it (of several parties, exactly one wins).
    async fn take_for_settling(&self, change: &EmailChange) -> Result<Take<'_>, ServiceError> {
        {
            let mut in_flight = lock(&self.journal.in_flight);
            if in_flight.contains(&change.id) {
                return Ok(Take::Busy);
            }
            if lock(&self.journal.abandoned).remove(&change.id) {
                in_flight.insert(change.id);
                return Ok(Take::Held(Held { journal: &self.journal, id: change.id }));
            }
        }
        let now = self.now();
        match self.profiles.claim_email_change(change.id, now, self.lease_from(now)).await {
            Ok(true) => Ok(Take::Held(Held::new(&self.journal, change.id))),
            Ok(false) => Ok(Take::Busy),
            // No longer pending: its holder settled it since this process read it.
            Err(StoreError::NotFound) => Ok(Take::Gone),
            Err(e) => Err(ServiceError::storage(e)),
        }
    }

    /// The rest of the journal protocol after the intent is recorded: the e-mail in the
    /// main database, then the record applied and the intent closed.
    async fn finish_email_change(
        &self,
        known: &Known,
        change: &EmailChange,
        held: Held<'_>,
        rewards: Rewards,
        mut timings: Timings,
    ) -> Result<ProfileRead, ServiceError> {
        let (set, t) = timed(self.accounts.set_email(known.account.id, &change.new_email)).await;
        add(&mut timings.db_main, t);
        if let Err(e) = set {
            if e == StoreError::EmailTaken {
                // Nothing changed anywhere: close the intent, and answer 409 only once
                // it is closed (a pending one would later be carried through).
                let (aborted, t) = timed(self.profiles.abort_email_change(change.id)).await;
                add(&mut timings.db_profiles, t);
                if aborted.is_ok() {
                    return Err(ServiceError::EmailTaken);
                }
            }
            // The main database may or may not hold the address: the settler finds out.
            held.abandon();
            self.cache.invalidate_profile(known.account.id).await;
            return Err(ServiceError::account(e));
        }
        self.journal.email_epoch.fetch_add(1, Ordering::SeqCst);
        let (done, t) = timed(self.profiles.complete_email_change(change.id)).await;
        add(&mut timings.db_profiles, t);
        if let Err(e) = done {
            held.abandon();
            self.cache.invalidate_profile(known.account.id).await;
            return Err(ServiceError::storage(e));
        }
        drop(held);
        let mut known = known.clone();
        known.account.email = change.new_email.clone();
        Ok(self.answer(&known, &change.record, rewards, timings).await)
    }

    /// Carries one entry through, judging by what the main database holds; the caller
    /// holds the entry and the user. Rolls forward: an address the account already has,
    /// or can still take, completes the change; one that is taken, or an account gone
    /// or changed meanwhile by the wider application, closes it with nothing applied.
    /// Returns whether the change was completed.
    async fn settle_one(&self, change: &EmailChange, held: Held<'_>) -> Result<bool, ServiceError> {
        match self.carry_through(change).await {
            Ok(completed) => {
                lock(&self.journal.backoff).remove(&change.id);
                self.cache.invalidate_profile(change.record.user_id).await;
                Ok(completed)
            }
            Err(e) => {
                held.abandon();
                Err(e)
            }
        }
    }

    async fn carry_through(&self, change: &EmailChange) -> Result<bool, ServiceError> {
        let user_id = change.record.user_id;
        let account = self.accounts.account(user_id).await.map_err(ServiceError::storage)?;
        let complete = match account.filter(|a| a.status != AccountStatus::Deleted) {
            None => false,
            // Exact comparison: the change stores the address exactly as given.
            Some(a) if a.email == change.new_email => true,
            Some(a) if a.email.eq_ignore_ascii_case(&change.old_email) => {
                match self.accounts.set_email(user_id, &change.new_email).await {
                    Ok(()) => true,
                    Err(StoreError::EmailTaken | StoreError::NotFound) => false,
                    Err(e) => return Err(ServiceError::storage(e)),
                }
            }
            Some(_) => false,
        };
        if complete {
            self.journal.email_epoch.fetch_add(1, Ordering::SeqCst);
            self.profiles.complete_email_change(change.id).await.map_err(ServiceError::storage)?;
        } else {
            self.profiles.abort_email_change(change.id).await.map_err(ServiceError::storage)?;
        }
        Ok(complete)
    }

    async fn settle_journal(&self) -> Result<RecoveryReport, ServiceError> {
        let mut report = RecoveryReport::default();
        let pending = self.profiles.pending_email_changes().await.map_err(ServiceError::storage)?;
        let now = self.now();
        for change in pending {
            let due = lock(&self.journal.backoff).get(&change.id).is_none_or(|(_, at)| *at <= now);
            if !due {
                report.stuck += 1;
                continue;
            }
            let held = match self.take_for_settling(&change).await {
                Ok(Take::Held(held)) => held,
                Ok(Take::Busy) => {
                    report.held += 1;
                    continue;
                }
                // Settled by its holder since the list was read: nothing to do.
                Ok(Take::Gone) => continue,
                Err(_) => {
                    self.back_off(change.id, now);
                    report.stuck += 1;
                    continue;
                }
            };
            match self.settle_one(&change, held).await {
                Ok(true) => report.completed += 1,
                Ok(false) => report.rolled_back += 1,
                Err(_) => {
                    self.back_off(change.id, now);
                    report.stuck += 1;
                }
            }
        }
        Ok(report)
    }

    /// Doubles the wait before the next attempt at an entry, up to a minute.
    fn back_off(&self, id: JournalId, now: DateTime<Utc>) {
        let mut backoff = lock(&self.journal.backoff);
        let entry = backoff.entry(id).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let wait = TimeDelta::milliseconds(250i64 << entry.0.min(8)).min(TimeDelta::minutes(1));
        entry.1 = now + wait;
    }
}
