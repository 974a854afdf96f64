//! The shared contract suite of the storage ports.
//!
//! Every adapter of [`AccountRepository`] and [`ProfileRepository`] runs these in its
//! tests, so the in-memory fakes and the real databases are held to the same contract
//! (the doc comments in [`crate::ports`]). Each function panics with a message naming the
//! broken rule.

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};

use crate::domain::{
    AccountSnapshot, AccountStatus, BillingAddress, Business, Notifications, OrderStats, PersonalFields,
    Preferences, Privacy, ProfileFields, ProfileRecord, Theme, UserId, Visibility,
};
use std::sync::{Arc, Mutex};

use crate::ports::{
    AccountRepository, CurrentRecord, Decision, EmailChange, ProfileRepository, Refusal, StoreError,
    UpdateOutcome,
};

/// Accounts the caller has stored, by its own means, before running
/// [`account_repository_contract`]; the suite leaves them as it found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFixture {
    /// An active account. Where the store holds orders, give it completed orders (its
    /// `orders` figures) and also orders of other statuses, which must not count.
    pub active: AccountSnapshot,
    /// Another active account; its stored e-mail should contain upper-case letters, so
    /// the case-insensitive uniqueness rule is exercised.
    pub other_active: AccountSnapshot,
    /// A suspended account.
    pub suspended: AccountSnapshot,
    /// A deleted account.
    pub deleted: AccountSnapshot,
    /// An id no account has.
    pub missing_id: UserId,
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap_or_default()
}

impl AccountFixture {
    /// A ready-made fixture (ids 1–4, 999 missing); `active` has two completed orders
    /// worth 3,500 cents, the latest at 2026-03-01T00:00:00.250Z.
    pub fn sample() -> Self {
        let account = |id: UserId, email: &str, status: AccountStatus| AccountSnapshot {
            id,
            email: email.to_owned(),
            username: format!("contract{id}"),
            status,
            created_at: at(2026, 1, 5, 10, 0, 0),
            last_login_at: None,
            login_count: 0,
            orders: OrderStats::default(),
        };
        Self {
            active: AccountSnapshot {
                last_login_at: Some(at(2026, 11, 25, 19, 2, 0)),
                login_count: 57,
                orders: OrderStats {
                    orders_count: 2,
                    total_spent_cents: 3500,
                    last_order_at: Some(at(2026, 3, 1, 0, 0, 0) + TimeDelta::milliseconds(250)),
                },
                ..account(1, "ada@example.com", AccountStatus::Active)
            },
            other_active: account(2, "Grace.Hopper@Example.COM", AccountStatus::Active),
            suspended: account(3, "suspended@example.com", AccountStatus::Suspended),
            deleted: account(4, "deleted@example.com", AccountStatus::Deleted),
            missing_id: 999,
        }
    }
}

async fn expect_account(repo: &dyn AccountRepository, want: &AccountSnapshot, when: &str) {
    let got = repo.account(want.id).await;
    assert_eq!(got, Ok(Some(want.clone())), "account({}) {when}", want.id);
}

/// Checks an [`AccountRepository`] against its contract, on the caller's fixture.
pub async fn account_repository_contract(repo: &dyn AccountRepository, fixture: &AccountFixture) {
    let f = fixture;
    assert_eq!(repo.ping().await, Ok(()), "ping must answer on a working store");

    // Lookup: every status is reported, not filtered; an unknown id is Ok(None).
    for a in [&f.active, &f.other_active, &f.suspended, &f.deleted] {
        expect_account(repo, a, "must return the stored account with its completed-order figures").await;
    }
    assert_eq!(repo.account(f.missing_id).await, Ok(None), "account() of an unknown id must be Ok(None)");

    // Setting the current address succeeds and changes nothing.
    assert_eq!(
        repo.set_email(f.active.id, &f.active.email.to_lowercase()).await,
        Ok(()),
        "set_email() to the account's own address must succeed"
    );
    expect_account(repo, &f.active, "after setting its own address").await;

    // Another account's address is taken whatever its case or status.
    for holder in [&f.other_active, &f.suspended, &f.deleted] {
        assert_eq!(
            repo.set_email(f.active.id, &holder.email.to_lowercase()).await,
            Err(StoreError::EmailTaken),
            "set_email() to the address of account {} ({:?}, stored as {:?}) must be EmailTaken",
            holder.id,
            holder.status,
            holder.email
        );
    }
    expect_account(repo, &f.active, "after refused e-mail changes (nothing may change)").await;

    assert_eq!(
        repo.set_email(f.missing_id, "nobody.contract@example.com").await,
        Err(StoreError::NotFound),
        "set_email() on an unknown id must be NotFound"
    );
    assert_eq!(repo.account(f.missing_id).await, Ok(None), "set_email() must not create an account");

    // A free address is stored; only the e-mail changes; the old one is free again.
    let fresh = format!("contract.fresh.{}@example.com", f.active.id);
    assert_eq!(
        repo.set_email(f.active.id, &fresh).await,
        Ok(()),
        "set_email() to a free address must succeed"
    );
    let moved = AccountSnapshot { email: fresh.clone(), ..f.active.clone() };
    expect_account(repo, &moved, "after set_email() (only the e-mail may change)").await;
    assert_eq!(
        repo.set_email(f.other_active.id, &fresh).await,
        Err(StoreError::EmailTaken),
        "the new address must now be taken"
    );

    // Restore the fixture: the old address was freed by the change.
    assert_eq!(
        repo.set_email(f.active.id, &f.active.email).await,
        Ok(()),
        "the previous address must be free again after a change"
    );
    expect_account(repo, &f.active, "after restoring the e-mail").await;
    expect_account(repo, &f.other_active, "at the end (other accounts untouched)").await;
}

/// First user id [`profile_repository_contract`] uses; it uses ten from here.
pub const PROFILE_CONTRACT_FIRST_ID: UserId = 1_000_001;

/// A record with every field set, non-ASCII text and a sub-second timestamp.
fn full_record(user_id: UserId, version: i64) -> ProfileRecord {
    ProfileRecord {
        user_id,
        version,
        // Microseconds: the precision every store keeps (SPEC §4).
        updated_at: Some(at(2026, 11, 20, 8, 31, 12) + TimeDelta::microseconds(123_456)),
        fields: ProfileFields {
            personal: PersonalFields {
                display_name: Some("Ada L. 👩‍💻".to_owned()),
                first_name: Some("Ada".to_owned()),
                last_name: Some("Lovelace-Byron".to_owned()),
                phone: Some("+442071234567".to_owned()),
                avatar_url: Some("https://cdn.example.com/a/42.png".to_owned()),
                bio: Some("Line one\nLine two — «quoted» 'single' \"double\"; DROP TABLE x;".to_owned()),
                birth_date: NaiveDate::from_ymd_opt(1990, 12, 10),
                city: Some("Zürich".to_owned()),
                country: Some("CH".to_owned()),
            },
            preferences: Preferences {
                language: "zh-Hant-TW".to_owned(),
                timezone: "Europe/London".to_owned(),
                theme: Theme::Dark,
                currency: "GBP".to_owned(),
                notifications: Notifications { email: false, sms: true, push: false, marketing: true },
                privacy: Privacy { profile_visibility: Visibility::Contacts, show_activity: true },
            },
            business: Business {
                company_name: Some("Analytical Engines Ltd".to_owned()),
                job_title: Some("Engineer".to_owned()),
                tax_id: Some("GB123456789".to_owned()),
                website: Some("https://example.com".to_owned()),
                billing_address: Some(BillingAddress {
                    line1: "1 Main St".to_owned(),
                    line2: Some("Flat 2".to_owned()),
                    city: "London".to_owned(),
                    postal_code: Some("NW1 6XE".to_owned()),
                    country: "GB".to_owned(),
                }),
            },
        },
    }
}

/// The same user's record with every optional field cleared and the defaults back.
fn cleared(mut r: ProfileRecord, version: i64, seconds: i64) -> ProfileRecord {
    r.version = version;
    r.updated_at = Some(at(2026, 11, 21, 0, 0, 0) + TimeDelta::seconds(seconds));
    r.fields = ProfileFields {
        personal: PersonalFields { display_name: Some("A".to_owned()), ..PersonalFields::default() },
        ..ProfileFields::default()
    };
    r
}

/// A decision to journal an e-mail change carrying `record`, held until `claimed_until`.
fn email_decision(record: ProfileRecord, n: i64, claimed_until: DateTime<Utc>) -> Decision {
    Decision::ChangeEmail {
        record,
        old_email: format!("old{n}@example.com"),
        new_email: format!("new{n}@example.com"),
        created_at: at(2026, 11, 22, 12, 0, 0) + TimeDelta::microseconds(n * 1_000_001),
        claimed_until,
    }
}

/// The change an [`email_decision`] must have journalled, with the id the store gave it.
fn journalled(id: i64, decision: &Decision) -> EmailChange {
    let Decision::ChangeEmail { record, old_email, new_email, created_at, claimed_until } = decision.clone()
    else {
        unreachable!("only e-mail decisions are journalled")
    };
    EmailChange { id, old_email, new_email, record, created_at, claimed_until }
}

/// Runs an update whose decision is fixed in advance (whatever the stored record).
async fn decide_as(repo: &dyn ProfileRepository, user_id: UserId, decision: Decision) -> UpdateOutcome {
    repo.update(user_id, Box::new(move |_| decision)).await.expect("update() must succeed on a working store")
}

/// Runs an update storing the next version of whatever is stored, with `bio` extended by
/// `tag`: a lost update shows as a missing tag.
async fn append_tag(repo: &dyn ProfileRepository, user_id: UserId, tag: String) -> UpdateOutcome {
    repo.update(
        user_id,
        Box::new(move |current: &ProfileRecord| {
            let mut next = current.clone();
            next.version += 1;
            next.updated_at = Some(at(2026, 11, 23, 0, 0, 0) + TimeDelta::seconds(next.version));
            let bio = next.fields.personal.bio.get_or_insert_with(String::new);
            bio.push_str(&tag);
            bio.push(';');
            Decision::Store(next)
        }),
    )
    .await
    .expect("update() must succeed on a working store")
}

async fn expect_load(
    repo: &dyn ProfileRepository,
    user_id: UserId,
    want: Option<&ProfileRecord>,
    when: &str,
) {
    assert_eq!(repo.load(user_id).await, Ok(want.cloned()), "load({user_id}) {when}");
}

async fn pending_ids(repo: &dyn ProfileRepository) -> Vec<i64> {
    let all = repo.pending_email_changes().await.expect("pending_email_changes() must succeed");
    all.iter().map(|c| c.id).collect()
}

/// Checks a [`ProfileRepository`] against its contract. Uses the user ids from
/// [`PROFILE_CONTRACT_FIRST_ID`] on (ten of them), which must hold no profile; other
/// users' profiles and journal entries may exist and are left alone.
pub async fn profile_repository_contract(repo: &dyn ProfileRepository) {
    let id = |n: i64| PROFILE_CONTRACT_FIRST_ID + n;
    assert_eq!(repo.ping().await, Ok(()), "ping must answer on a working store");

    // --- the unit of work -------------------------------------------------------------
    let a = id(0);
    expect_load(repo, a, None, "of a user who never saved must be Ok(None)").await;
    let seen = Arc::new(Mutex::new(None));
    let out = repo
        .update(a, {
            let seen = seen.clone();
            Box::new(move |current: &ProfileRecord| {
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(current.clone());
                Decision::Keep
            })
        })
        .await;
    let default = ProfileRecord::new_default(a);
    assert_eq!(
        out,
        Ok(UpdateOutcome::Unchanged(default.clone())),
        "Keep over a missing row: the default record"
    );
    assert_eq!(
        seen.lock().unwrap_or_else(|p| p.into_inner()).take(),
        Some(default),
        "decide() must see the default record (version 0) when there is no row"
    );
    expect_load(repo, a, None, "after Keep (nothing may be written)").await;

    let refused = decide_as(repo, a, Decision::Refuse(Refusal::PreconditionFailed)).await;
    assert_eq!(
        refused,
        UpdateOutcome::Refused(Refusal::PreconditionFailed),
        "Refuse is passed back as it is"
    );
    expect_load(repo, a, None, "after Refuse (nothing may be written)").await;

    let gap = repo.update(a, Box::new(move |_| Decision::Store(full_record(a, 2)))).await;
    assert!(
        matches!(gap, Err(StoreError::Failure(_))),
        "Store of a version that is not stored + 1 must fail, got {gap:?}"
    );
    expect_load(repo, a, None, "after a refused Store (nothing may be written)").await;

    let v1 = full_record(a, 1);
    assert_eq!(
        decide_as(repo, a, Decision::Store(v1.clone())).await,
        UpdateOutcome::Stored(v1.clone()),
        "Store of version 1 over a missing row"
    );
    expect_load(repo, a, Some(&v1), "must return exactly what was stored (every field, the exact timestamp)")
        .await;
    let out = repo
        .update(a, {
            let seen = seen.clone();
            Box::new(move |current: &ProfileRecord| {
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(current.clone());
                Decision::Keep
            })
        })
        .await;
    assert_eq!(out, Ok(UpdateOutcome::Unchanged(v1.clone())), "Keep returns the stored record");
    assert_eq!(
        seen.lock().unwrap_or_else(|p| p.into_inner()).take(),
        Some(v1.clone()),
        "decide() sees the row"
    );

    let v2 = cleared(v1.clone(), 2, 0);
    assert_eq!(decide_as(repo, a, Decision::Store(v2.clone())).await, UpdateOutcome::Stored(v2.clone()));
    expect_load(repo, a, Some(&v2), "after a Store clearing every optional field (cleared means None)").await;
    let b = id(1);
    expect_load(repo, b, None, "of another user must not see user A's writes").await;

    // --- concurrency: updates of one user queue, none is lost, the first edit included --
    for (user, what) in [(id(2), "a user with no row yet"), (a, "a user with a row")] {
        let start = repo.load(user).await.expect("load()").map_or(0, |r| r.version);
        let tags: Vec<String> = (0..16).map(|n| format!("t{n}")).collect();
        let outcomes =
            futures::future::join_all(tags.iter().map(|t| append_tag(repo, user, t.clone()))).await;
        assert!(
            outcomes.iter().all(|o| matches!(o, UpdateOutcome::Stored(_))),
            "16 concurrent updates of {what}: every one must be stored, got {outcomes:?}"
        );
        let last = repo.load(user).await.expect("load()").expect("a row after 16 updates");
        assert_eq!(last.version, start + 16, "16 concurrent updates of {what} must make 16 versions");
        let bio = last.fields.personal.bio.unwrap_or_default();
        for t in &tags {
            assert_eq!(
                bio.matches(&format!("{t};")).count(),
                1,
                "update {t} of {what} must be applied exactly once (lost or repeated): {bio}"
            );
        }
    }
    let v = repo.load(a).await.expect("load()").expect("row");

    // --- the e-mail journal --------------------------------------------------------------
    let before = pending_ids(repo).await;
    let far = at(2999, 1, 1, 0, 0, 0);
    let (early, late) = (at(2026, 11, 22, 0, 0, 0), at(2026, 11, 22, 0, 0, 10));

    // ChangeEmail → journalled, held, not applied; the user's updates are blocked.
    let next = ProfileRecord { version: v.version + 1, ..full_record(a, 0) };
    let d1 = email_decision(next.clone(), 1, late);
    let UpdateOutcome::EmailChangeBegun(begun) = decide_as(repo, a, d1.clone()).await else {
        panic!("ChangeEmail must answer EmailChangeBegun");
    };
    let id1 = begun.id;
    assert_eq!(begun, journalled(id1, &d1), "EmailChangeBegun must carry exactly the decided change");
    expect_load(repo, a, Some(&v), "after ChangeEmail (the record is not applied yet)").await;
    let listed = repo.pending_email_changes().await.expect("pending_email_changes()");
    let entry = listed.iter().find(|e| e.id == id1).expect("a begun entry must be listed as pending");
    assert_eq!(entry, &begun, "a pending entry must hold exactly what was begun");
    assert_eq!(
        repo.load_current(a).await,
        Ok(CurrentRecord { record: Some(v.clone()), pending: Some(begun.clone()) }),
        "load_current() must return the record with the user's pending change"
    );
    assert_eq!(
        repo.load_current(b).await,
        Ok(CurrentRecord { record: None, pending: None }),
        "load_current() of another user must not see user A's change"
    );
    let blocked = repo
        .update(a, Box::new(|_| panic!("decide() must not run while the user has a pending change")))
        .await;
    assert_eq!(
        blocked,
        Ok(UpdateOutcome::Blocked(begun.clone())),
        "a pending change blocks its user's updates"
    );
    assert!(
        matches!(decide_as(repo, b, Decision::Keep).await, UpdateOutcome::Unchanged(_)),
        "a pending change of one user must not block another"
    );

    // Claims: refused while held, granted once it ran out, exactly one winner.
    assert_eq!(repo.claim_email_change(id1, early, far).await, Ok(false), "a held entry cannot be claimed");
    assert_eq!(repo.claim_email_change(id1, late, far).await, Ok(true), "a claim that ran out can be taken");
    assert_eq!(
        repo.claim_email_change(id1, late, far).await,
        Ok(false),
        "a claim taken cannot be taken again"
    );
    let listed = repo.pending_email_changes().await.expect("pending_email_changes()");
    assert_eq!(
        listed.iter().find(|e| e.id == id1).map(|e| e.claimed_until),
        Some(far),
        "a claim must be recorded exactly"
    );
    let after = far + TimeDelta::seconds(1);
    let race = futures::future::join_all(
        (0..8).map(|n| repo.claim_email_change(id1, after, after + TimeDelta::seconds(n + 1))),
    )
    .await;
    let won = race.iter().filter(|r| **r == Ok(true)).count();
    assert!(race.iter().all(Result::is_ok) && won == 1, "of 8 concurrent claims exactly one wins: {race:?}");

    assert_eq!(repo.complete_email_change(id1).await, Ok(()), "complete_email_change() of a pending entry");
    expect_load(repo, a, Some(&next), "after complete_email_change() (the entry's record applied)").await;
    assert_eq!(pending_ids(repo).await, before, "a completed entry must no longer be pending");
    assert_eq!(
        repo.load_current(a).await,
        Ok(CurrentRecord { record: Some(next.clone()), pending: None }),
        "load_current() after completion: the applied record, nothing pending"
    );
    assert!(
        matches!(decide_as(repo, a, Decision::Keep).await, UpdateOutcome::Unchanged(_)),
        "a settled change no longer blocks"
    );
    assert_eq!(repo.complete_email_change(id1).await, Err(StoreError::NotFound), "completing twice");
    assert_eq!(repo.abort_email_change(id1).await, Err(StoreError::NotFound), "aborting a completed entry");
    assert_eq!(
        repo.claim_email_change(id1, after, far).await,
        Err(StoreError::NotFound),
        "claiming a completed entry"
    );

    // ChangeEmail on a user without a row, abort → nothing written.
    let d2 = email_decision(full_record(b, 1), 3, late);
    let UpdateOutcome::EmailChangeBegun(j2) = decide_as(repo, b, d2).await else {
        panic!("ChangeEmail over a missing row must answer EmailChangeBegun");
    };
    assert_ne!(j2.id, id1, "journal ids must be distinct");
    assert_eq!(repo.abort_email_change(j2.id).await, Ok(()), "abort_email_change() of a pending entry");
    expect_load(repo, b, None, "after an aborted change (no profile field written)").await;
    assert_eq!(pending_ids(repo).await, before, "an aborted entry must no longer be pending");
    assert_eq!(repo.abort_email_change(j2.id).await, Err(StoreError::NotFound), "aborting twice");
    assert_eq!(
        repo.complete_email_change(j2.id).await,
        Err(StoreError::NotFound),
        "completing an aborted entry"
    );

    // Several pending entries are listed oldest first.
    let mut ids = Vec::new();
    for (n, user) in [(5, id(3)), (6, id(4)), (7, id(5))] {
        let UpdateOutcome::EmailChangeBegun(j) =
            decide_as(repo, user, email_decision(full_record(user, 1), n, late)).await
        else {
            panic!("ChangeEmail must answer EmailChangeBegun");
        };
        ids.push(j.id);
    }
    let mut want = before.clone();
    want.extend(ids.iter().copied());
    assert_eq!(pending_ids(repo).await, want, "pending entries must be listed oldest first");
    for id in ids {
        assert_eq!(repo.abort_email_change(id).await, Ok(()), "abort_email_change({id})");
    }
    assert_eq!(pending_ids(repo).await, before, "the suite must leave no entry of its own pending");

    // Unknown ids.
    let unknown = i64::MAX - 7;
    assert_eq!(
        repo.complete_email_change(unknown).await,
        Err(StoreError::NotFound),
        "complete of an unknown id"
    );
    assert_eq!(repo.abort_email_change(unknown).await, Err(StoreError::NotFound), "abort of an unknown id");
    assert_eq!(
        repo.claim_email_change(unknown, after, far).await,
        Err(StoreError::NotFound),
        "claim of an unknown id"
    );
}

/// How [`cache_contract`] may exercise a cache.
pub struct CacheContract {
    /// The cache's profile TTL (keep it short: the suite waits it out once).
    pub profile_ttl: std::time::Duration,
    /// Resolves after the given time (the caller's runtime; the core has none).
    pub sleep: Box<dyn Fn(std::time::Duration) -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
    /// The first of 10 user ids the suite may use; nothing else may touch them.
    pub first_id: UserId,
}

/// A snapshot of `user_id` at `version`, its display name naming the version.
fn cache_snapshot(user_id: UserId, version: i64) -> Arc<crate::domain::ProfileSnapshot> {
    cache_snapshot_read(user_id, version, std::time::Instant::now())
}

/// [`cache_snapshot`] with its data read from the databases at `read_at`.
fn cache_snapshot_read(
    user_id: UserId,
    version: i64,
    read_at: std::time::Instant,
) -> Arc<crate::domain::ProfileSnapshot> {
    let mut account = AccountFixture::sample().active;
    account.id = user_id;
    let mut record = full_record(user_id, version);
    record.user_id = user_id;
    record.version = version;
    record.fields.personal.display_name = Some(format!("v{version}"));
    crate::domain::ProfileSnapshot::of(&account, &record, read_at)
}

async fn expect_version(cache: &dyn crate::ports::CachePort, user_id: UserId, want: Option<i64>, when: &str) {
    let (together, _) = cache.profile_and_rewards(user_id).await;
    assert_eq!(
        together.map(|s| s.profile.version),
        want,
        "profile_and_rewards({user_id}) {when}: wrong profile"
    );
    let got = cache.profile(user_id).await;
    match (&got, want) {
        (None, None) => {}
        (Some(s), Some(v)) => {
            assert_eq!(s.profile.version, v, "profile({user_id}) {when}: wrong version");
            let expected = cache_snapshot(user_id, v);
            assert_eq!(s.json(), expected.json(), "profile({user_id}) {when}: not the snapshot put");
            assert_eq!(s.fingerprint, expected.fingerprint, "profile({user_id}) {when}: fingerprint");
        }
        _ => panic!(
            "profile({user_id}) {when}: expected version {want:?}, got {:?}",
            got.map(|s| s.profile.version)
        ),
    }
}

/// The balance of `user_id`, asked alone and together with the profile.
async fn expect_rewards(
    cache: &dyn crate::ports::CachePort,
    user_id: UserId,
    want: Option<&crate::domain::RewardsSnapshot>,
    when: &str,
) {
    assert_eq!(cache.rewards(user_id).await.as_ref(), want, "rewards({user_id}) {when}");
    let (_, together) = cache.profile_and_rewards(user_id).await;
    assert_eq!(together.as_ref(), want, "profile_and_rewards({user_id}) {when}: wrong balance");
}

/// The contract of [`crate::ports::CachePort`]: get/put/invalidate/clear of profiles,
/// the profile TTL (counted from when a snapshot's data was read), never an older snapshot over a newer one (also right after an
/// invalidation), and rewards balances kept (newest `fetched_at` wins) well beyond the
/// profile TTL, whatever their age, so the core can serve them `stale`; and
/// `profile_and_rewards` answering what the two lookups answer, whichever was put first.
pub async fn cache_contract(cache: &dyn crate::ports::CachePort, c: &CacheContract) {
    use crate::domain::{RewardsBalance, RewardsSnapshot};
    let [a, b, d, e] = [c.first_id, c.first_id + 1, c.first_id + 2, c.first_id + 3];

    expect_version(cache, a, None, "before any put").await;
    cache.put_profile(cache_snapshot(a, 1)).await;
    expect_version(cache, a, Some(1), "after a put").await;
    cache.put_profile(cache_snapshot(a, 3)).await;
    expect_version(cache, a, Some(3), "after a newer put").await;
    cache.put_profile(cache_snapshot(a, 2)).await;
    expect_version(cache, a, Some(3), "after an older put (never older over newer)").await;
    cache.put_profile(cache_snapshot(a, 3)).await;
    expect_version(cache, a, Some(3), "after the same version again").await;

    cache.invalidate_profile(a).await;
    expect_version(cache, a, None, "after invalidate_profile").await;
    cache.put_profile(cache_snapshot(a, 2)).await;
    let got = cache.profile(a).await.map(|s| s.profile.version);
    assert!(got.is_none(), "an older snapshot put right after an invalidation was served: {got:?}");
    cache.put_profile(cache_snapshot(a, 4)).await;
    expect_version(cache, a, Some(4), "after a newer put following an invalidation").await;
    cache.invalidate_profile(e).await;
    expect_version(cache, e, None, "invalidating a user never cached").await;
    cache.put_profile(cache_snapshot(e, 1)).await;
    expect_version(cache, e, Some(1), "a put after invalidating a user never cached").await;

    cache.put_profile(cache_snapshot(b, 1)).await;
    expect_version(cache, a, Some(4), "other users' entries are their own").await;
    expect_version(cache, b, Some(1), "other users' entries are their own").await;

    let t0 = at(2026, 11, 26, 5, 0, 0);
    let older = RewardsSnapshot { balance: Some(RewardsBalance { points: 10, tier: None }), fetched_at: t0 };
    let newer = RewardsSnapshot {
        balance: Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }),
        fetched_at: t0 + TimeDelta::seconds(5),
    };
    let none = RewardsSnapshot { balance: None, fetched_at: t0 };
    // `a`'s profile is cached while its balances are put; `d` has no profile.
    expect_rewards(cache, a, None, "before any put").await;
    cache.put_rewards(a, older.clone()).await;
    expect_rewards(cache, a, Some(&older), "after a put").await;
    cache.put_rewards(a, newer.clone()).await;
    expect_rewards(cache, a, Some(&newer), "after a later fetch").await;
    cache.put_rewards(a, older.clone()).await;
    expect_rewards(cache, a, Some(&newer), "after an older fetch (it must not replace a newer one)").await;
    expect_version(cache, a, Some(4), "after balances were put").await;
    cache.put_rewards(d, none.clone()).await;
    expect_rewards(cache, d, Some(&none), "'no account' is kept like a balance").await;

    cache.clear_profiles().await;
    expect_version(cache, a, None, "after clear_profiles").await;
    expect_version(cache, b, None, "after clear_profiles").await;
    expect_rewards(cache, a, Some(&newer), "after clear_profiles (it must keep balances)").await;
    // A profile put after its balance answers with it, and with a later one.
    cache.put_profile(cache_snapshot(d, 1)).await;
    expect_rewards(cache, d, Some(&none), "a profile put after the balance").await;
    let later = RewardsSnapshot {
        balance: Some(RewardsBalance { points: 7, tier: None }),
        fetched_at: t0 + TimeDelta::seconds(9),
    };
    cache.put_rewards(d, later.clone()).await;
    expect_rewards(cache, d, Some(&later), "a balance put after the profile").await;
    expect_version(cache, d, Some(1), "after its balance changed").await;

    cache.put_profile(cache_snapshot(b, 2)).await;
    expect_version(cache, b, Some(2), "a put after clear_profiles").await;

    // The TTL runs from when a snapshot's data was read from the databases, not from its
    // put: an update made from a cached account must not make that account live longer.
    let f = c.first_id + 4;
    let ago = |age: std::time::Duration| std::time::Instant::now().checked_sub(age).expect("uptime");
    cache.put_profile(cache_snapshot_read(f, 1, ago(c.profile_ttl))).await;
    expect_version(cache, f, None, "after a put of a snapshot read a whole TTL before").await;
    cache.put_profile(cache_snapshot_read(f, 2, ago(c.profile_ttl / 4))).await;
    expect_version(cache, f, Some(2), "after a put of a snapshot read a quarter of a TTL before").await;
    (c.sleep)(c.profile_ttl + c.profile_ttl / 2 + std::time::Duration::from_millis(100)).await;
    expect_version(cache, b, None, "after the profile TTL").await;
    expect_version(cache, d, None, "after the profile TTL (a balance put must not extend it)").await;
    expect_rewards(
        cache,
        a,
        Some(&newer),
        "a balance must outlive the profile TTL, whatever its age (for `stale`)",
    )
    .await;
    expect_rewards(cache, d, Some(&later), "a balance must outlive the profile TTL").await;
}
