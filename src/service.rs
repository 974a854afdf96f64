//! `ProfileService`: the use cases — read, update, recover.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeDelta};

use crate::domain::{
    AccountSnapshot, AccountStatus, FieldError, ParsedUpdate, Precondition, Profile, ProfileRecord,
    ProfileSnapshot, ProfileUpdate, ProfileView, Rewards, RewardsSnapshot, RewardsStatus, UserId,
};
use crate::ports::{
    AccountRepository, CachePort, Clock, EmailChange, JournalId, ProfileRepository, RewardsPort, StoreError,
    Timings,
};

/// Why a use case failed. The HTTP adapter maps each to a status.
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
    /// `If-Match` did not match the current ETag.
    #[error("the profile changed since it was read")]
    PreconditionFailed,
    /// Another account holds the e-mail address.
    #[error("the e-mail address is taken")]
    EmailTaken,
    /// Concurrent writers kept winning; the client may retry.
    #[error("the profile is being changed concurrently; try again")]
    Conflict,
    /// A database cannot serve now; the client may retry.
    #[error("storage unavailable")]
    Unavailable(String),
    /// An unexpected failure; the text is for logs only.
    #[error("internal failure")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::NotFound => Self::AccountNotFound,
            StoreError::VersionConflict => Self::Conflict,
            StoreError::Failure(m) => Self::Internal(m),
        }
    }
}

/// Tunables of the service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// Rewards cache window: a balance younger than this is served as `cached`.
    pub rewards_window: Duration,
    /// Attempts of an update without `If-Match` that lose a version race before `Conflict`.
    pub max_update_attempts: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { rewards_window: Duration::from_secs(30), max_update_attempts: 5 }
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

/// What start-up recovery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entries whose e-mail change had reached the main database: profile applied.
    pub completed: u32,
    /// Entries whose e-mail change had not: rolled back.
    pub rolled_back: u32,
}

/// The use cases, over the ports.
pub struct ProfileService {
    accounts: Arc<dyn AccountRepository>,
    profiles: Arc<dyn ProfileRepository>,
    rewards: Arc<dyn RewardsPort>,
    cache: Arc<dyn CachePort>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    /// Journal entries a request of this process is working through right now; settling
    /// them from another request would race with it.
    in_flight: Arc<Mutex<HashSet<JournalId>>>,
    /// Counts journal entries this process left pending (a failure or a cancelled
    /// request mid-protocol); `settled_upto` is how many of those a sweep has seen
    /// settled. While they are equal no entry can be pending (start-up recovery settles
    /// those of earlier processes), so updates skip the journal query.
    left_pending: Arc<AtomicU64>,
    settled_upto: AtomicU64,
}

/// Removes a journal id from the in-flight set however the request ends (cancellation
/// included), and counts the entry as left pending unless it was seen settled.
struct InFlight {
    set: Arc<Mutex<HashSet<JournalId>>>,
    left_pending: Arc<AtomicU64>,
    id: JournalId,
    settled: bool,
}

impl InFlight {
    fn enter(service: &ProfileService, id: JournalId) -> Self {
        service.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        Self {
            set: service.in_flight.clone(),
            left_pending: service.left_pending.clone(),
            id,
            settled: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        if !self.settled {
            self.left_pending.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Runs a future and measures it.
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
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
        Self {
            accounts,
            profiles,
            rewards,
            cache,
            clock,
            config,
            in_flight: Arc::default(),
            left_pending: Arc::default(),
            settled_upto: AtomicU64::new(0),
        }
    }

    /// Today's date (UTC), the anchor of the age rule.
    pub fn today(&self) -> NaiveDate {
        self.clock.now().date_naive()
    }

    /// Both databases answer a query.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        let (a, p) = futures::join!(self.accounts.ping(), self.profiles.ping());
        a?;
        p?;
        Ok(())
    }

    /// The user's complete profile: from the profile cache, else both databases read
    /// concurrently; rewards composed for this request in every case.
    pub async fn get(&self, user_id: UserId) -> Result<ProfileRead, ServiceError> {
        let mut timings = Timings::default();
        let snapshot = match self.cache.profile(user_id).await {
            Some(s) => s,
            None => {
                let (account, record) = self.read_both(user_id, &mut timings).await?;
                let snapshot = ProfileSnapshot::new(Profile::assemble(&account, &record));
                self.cache.put_profile(snapshot.clone()).await;
                snapshot
            }
        };
        let rewards = self.rewards_for(user_id, &mut timings).await;
        Ok(ProfileRead { view: ProfileView { snapshot, rewards }, timings })
    }

    /// Reads the account (checked for status) and the profile record concurrently.
    async fn read_both(
        &self,
        user_id: UserId,
        timings: &mut Timings,
    ) -> Result<(AccountSnapshot, ProfileRecord), ServiceError> {
        let ((account, main_t), (record, prof_t)) =
            futures::join!(timed(self.accounts.account(user_id)), timed(self.profiles.load(user_id)));
        timings.db_main = Some(timings.db_main.unwrap_or_default() + main_t);
        timings.db_profiles = Some(timings.db_profiles.unwrap_or_default() + prof_t);
        let account = match account? {
            None => return Err(ServiceError::AccountNotFound),
            Some(a) => match a.status {
                AccountStatus::Active => a,
                AccountStatus::Suspended => return Err(ServiceError::AccountSuspended),
                AccountStatus::Deleted => return Err(ServiceError::AccountNotFound),
            },
        };
        let record = record?.unwrap_or_else(|| ProfileRecord::new_default(user_id));
        Ok((account, record))
    }

    /// Rewards for this request: within the window from the cache, else from the
    /// service, else the last known value (`stale`), else nothing (`unavailable`).
    async fn rewards_for(&self, user_id: UserId, timings: &mut Timings) -> Rewards {
        let known = self.cache.rewards(user_id).await;
        let now = self.clock.now();
        let window = TimeDelta::from_std(self.config.rewards_window).unwrap_or(TimeDelta::MAX);
        if let Some(s) = known.as_ref().filter(|s| now.signed_duration_since(s.fetched_at) < window) {
            return Rewards::from_snapshot(s, RewardsStatus::Cached);
        }
        let (answer, took) = timed(self.rewards.balance(user_id)).await;
        timings.rewards = Some(took);
        match answer {
            Ok(balance) => {
                let snapshot = RewardsSnapshot { balance, fetched_at: self.clock.now() };
                let rewards = Rewards::from_snapshot(&snapshot, RewardsStatus::Live);
                self.cache.put_rewards(user_id, snapshot).await;
                rewards
            }
            Err(_) => match &known {
                Some(s) => Rewards::from_snapshot(s, RewardsStatus::Stale),
                None => Rewards::unavailable(),
            },
        }
    }

    /// The PATCH use case: parses a merge-patch document and applies it, reporting every
    /// problem of the document together, those that need the stored state included.
    ///
    /// With `if_match`, the patch applies only to the state that ETag names
    /// (`PreconditionFailed` otherwise, nothing written); without it, to the latest
    /// state, retrying when a concurrent writer wins. A patch that changes nothing
    /// writes nothing and keeps `version`. An e-mail change goes through the journal so
    /// both databases change or neither does.
    pub async fn update(
        &self,
        user_id: UserId,
        parsed: ParsedUpdate,
        precondition: Precondition,
    ) -> Result<ProfileRead, ServiceError> {
        let if_match = (!precondition.is_none()).then_some(&precondition);
        self.apply_update(user_id, &parsed.update, parsed.problems, if_match).await
    }

    /// Applies a parsed patch, given the problems already found while parsing it.
    async fn apply_update(
        &self,
        user_id: UserId,
        patch: &ProfileUpdate,
        mut errors: Vec<FieldError>,
        if_match: Option<&Precondition>,
    ) -> Result<ProfileRead, ServiceError> {
        let mut timings = Timings::default();
        // A change the journal left half-done must be settled before a new one builds on
        // it; otherwise recovery could later undo the new change.
        self.settle_left_pending().await?;
        for _ in 0..self.config.max_update_attempts.max(1) {
            let (account, record) = self.read_both(user_id, &mut timings).await?;
            let current = ProfileSnapshot::new(Profile::assemble(&account, &record));
            let rewards = self.rewards_for(user_id, &mut timings).await;
            if let Some(tag) = if_match {
                let view = ProfileView { snapshot: current.clone(), rewards: rewards.clone() };
                if !tag.allows(&view.etag()) {
                    return Err(ServiceError::PreconditionFailed);
                }
            }
            let applied = patch.apply(&record.fields, &account.email, &account.username);
            let (fields, new_email) = match applied {
                Ok(done) if errors.is_empty() => done,
                Ok(_) => return Err(ServiceError::Invalid(errors)),
                Err(more) => {
                    // A key already refused on its own is not reported again as missing.
                    let extra: Vec<FieldError> =
                        more.into_iter().filter(|m| !errors.iter().any(|e| e.field == m.field)).collect();
                    errors.extend(extra);
                    return Err(ServiceError::Invalid(errors));
                }
            };
            if fields == record.fields && new_email.is_none() {
                self.cache.put_profile(current.clone()).await;
                return Ok(ProfileRead { view: ProfileView { snapshot: current, rewards }, timings });
            }
            let next = ProfileRecord {
                user_id,
                version: record.version + 1,
                updated_at: Some(self.clock.now()),
                fields,
            };
            let written = match &new_email {
                None => {
                    let (r, t) = timed(self.profiles.save(&next)).await;
                    add(&mut timings.db_profiles, t);
                    r
                }
                Some(email) => self.change_email(&account, email, &next, &mut timings).await,
            };
            match written {
                Ok(()) => {
                    let mut account = account;
                    if let Some(email) = new_email {
                        account.email = email;
                    }
                    let snapshot = ProfileSnapshot::new(Profile::assemble(&account, &next));
                    self.cache.put_profile(snapshot.clone()).await;
                    return Ok(ProfileRead { view: ProfileView { snapshot, rewards }, timings });
                }
                Err(StoreError::VersionConflict) if if_match.is_some() => {
                    return Err(ServiceError::PreconditionFailed);
                }
                Err(StoreError::VersionConflict) => continue,
                Err(e) => {
                    // Whatever happened, the next read must not trust the cached state.
                    self.cache.invalidate_profile(user_id).await;
                    return Err(e.into());
                }
            }
        }
        Err(ServiceError::Conflict)
    }

    /// The journal protocol: intent in the profiles database → e-mail in the main
    /// database → profile fields applied and intent closed in one profiles transaction.
    async fn change_email(
        &self,
        account: &AccountSnapshot,
        new_email: &str,
        next: &ProfileRecord,
        timings: &mut Timings,
    ) -> Result<(), StoreError> {
        let mut change = EmailChange {
            id: 0,
            old_email: account.email.clone(),
            new_email: new_email.to_owned(),
            record: next.clone(),
            created_at: self.clock.now(),
        };
        let (id, t) = timed(self.profiles.begin_email_change(&change)).await;
        add(&mut timings.db_profiles, t);
        change.id = id?;
        let mut guard = InFlight::enter(self, change.id);
        let (set, t) = timed(self.accounts.set_email(account.id, new_email)).await;
        add(&mut timings.db_main, t);
        if let Err(e) = set {
            // The main database refused or failed: settle the entry by what it now holds.
            guard.settled = self.settle(&change).await.is_ok();
            return Err(e);
        }
        let (done, t) = timed(self.profiles.complete_email_change(change.id)).await;
        add(&mut timings.db_profiles, t);
        match done {
            Ok(()) => {
                guard.settled = true;
                Ok(())
            }
            Err(StoreError::VersionConflict) => {
                // Someone changed the profile in between: undo the e-mail, close the entry.
                self.accounts.set_email(account.id, &change.old_email).await?;
                self.profiles.abort_email_change(change.id).await?;
                guard.settled = true;
                Err(StoreError::VersionConflict)
            }
            Err(e) => {
                // Settle now if the store lets us; else it stays pending for the next
                // update or for start-up recovery.
                guard.settled = self.settle(&change).await.is_ok();
                Err(e)
            }
        }
    }

    /// Finishes or rolls back one journal entry, judging by what the main database holds.
    async fn settle(&self, change: &EmailChange) -> Result<bool, StoreError> {
        let account = self.accounts.account(change.record.user_id).await?;
        // Exact comparison: the change stores the address exactly as given (lower-case),
        // while the wider application may have written another case of the old one.
        let reached_main = account.is_some_and(|a| a.email == change.new_email);
        if reached_main {
            match self.profiles.complete_email_change(change.id).await {
                Ok(()) => return Ok(true),
                Err(StoreError::VersionConflict) => {
                    // The profile moved on since the intent: the intent's state can no
                    // longer be applied whole, so undo its e-mail half instead.
                    self.accounts.set_email(change.record.user_id, &change.old_email).await?;
                }
                Err(e) => return Err(e),
            }
        }
        self.profiles.abort_email_change(change.id).await?;
        Ok(false)
    }

    /// Settles the e-mail changes this process left unfinished, if it left any, so that
    /// no update builds on a half-done one (recovery could otherwise undo it later).
    async fn settle_left_pending(&self) -> Result<(), ServiceError> {
        let left = self.left_pending.load(Ordering::SeqCst);
        if left == self.settled_upto.load(Ordering::SeqCst) {
            return Ok(());
        }
        let pending = self.profiles.pending_email_changes().await?;
        for change in pending {
            let busy = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains(&change.id);
            if !busy {
                self.settle(&change).await?;
                self.cache.invalidate_profile(change.record.user_id).await;
            }
        }
        // Entries counted after `left` was read are left for the next sweep.
        self.settled_upto.fetch_max(left, Ordering::SeqCst);
        Ok(())
    }

    /// Finishes or rolls back every unfinished cross-database change (run at start-up,
    /// before serving). Stops at the first storage failure.
    pub async fn recover(&self) -> Result<RecoveryReport, ServiceError> {
        let mut report = RecoveryReport::default();
        for change in self.profiles.pending_email_changes().await? {
            if self.settle(&change).await? {
                report.completed += 1;
            } else {
                report.rolled_back += 1;
            }
            self.cache.invalidate_profile(change.record.user_id).await;
        }
        Ok(report)
    }
}

fn add(slot: &mut Option<Duration>, d: Duration) {
    *slot = Some(slot.unwrap_or_default() + d);
}
