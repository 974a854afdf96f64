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
use crate::ports::{AccountRepository, EmailChange, ProfileRepository, StoreError};

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
        updated_at: Some(at(2026, 11, 20, 8, 31, 12) + TimeDelta::nanoseconds(123_456_789)),
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

fn change(record: ProfileRecord, n: i64) -> EmailChange {
    EmailChange {
        id: -1,
        old_email: format!("old{n}@example.com"),
        new_email: format!("new{n}@example.com"),
        record,
        created_at: at(2026, 11, 22, 12, 0, 0) + TimeDelta::microseconds(n * 1_000_001),
    }
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

    // --- load / save and the version rule ---------------------------------------------
    let a = id(0);
    expect_load(repo, a, None, "of a user who never saved must be Ok(None)").await;
    assert_eq!(
        repo.save(&ProfileRecord { version: 0, ..full_record(a, 0) }).await,
        Err(StoreError::VersionConflict),
        "save() of version 0 must be VersionConflict (a missing row is version 0, so 1 is next)"
    );
    assert_eq!(
        repo.save(&full_record(a, 2)).await,
        Err(StoreError::VersionConflict),
        "save() of version 2 over a missing row must be VersionConflict"
    );
    expect_load(repo, a, None, "after refused saves (nothing may be written)").await;

    let v1 = full_record(a, 1);
    assert_eq!(repo.save(&v1).await, Ok(()), "save() of version 1 over a missing row must succeed");
    expect_load(repo, a, Some(&v1), "must return exactly what was saved (every field, the exact timestamp)")
        .await;

    let stale = ProfileRecord { fields: ProfileFields::default(), ..full_record(a, 1) };
    assert_eq!(
        repo.save(&stale).await,
        Err(StoreError::VersionConflict),
        "a second save() of version 1 must conflict"
    );
    assert_eq!(
        repo.save(&full_record(a, 3)).await,
        Err(StoreError::VersionConflict),
        "save() skipping a version must conflict"
    );
    expect_load(repo, a, Some(&v1), "after conflicting saves (nothing may be written)").await;

    let v2 = cleared(v1.clone(), 2, 0);
    assert_eq!(repo.save(&v2).await, Ok(()), "save() of the next version must succeed");
    expect_load(repo, a, Some(&v2), "after a save clearing every optional field (cleared means None)").await;

    let b = id(1);
    expect_load(repo, b, None, "of another user must not see user A's writes").await;

    // Two writers with the same expected version: exactly one wins.
    let c = id(2);
    let (x, y) = (full_record(c, 1), cleared(full_record(c, 1), 1, 7));
    let (rx, ry) = futures::join!(repo.save(&x), repo.save(&y));
    let winner = match (&rx, &ry) {
        (Ok(()), Err(StoreError::VersionConflict)) => &x,
        (Err(StoreError::VersionConflict), Ok(())) => &y,
        other => panic!(
            "two concurrent save() of the same version: want one Ok and one VersionConflict, got {other:?}"
        ),
    };
    expect_load(repo, c, Some(winner), "after a save race (the winner's record)").await;

    // --- the e-mail journal --------------------------------------------------------------
    let before = pending_ids(repo).await;

    // begin → listed, not applied; complete → applied, closed.
    let j1 = change(full_record(a, 3), 1);
    let id1 =
        repo.begin_email_change(&j1).await.expect("begin_email_change() with the next version must succeed");
    expect_load(repo, a, Some(&v2), "after begin_email_change() (the record is not applied yet)").await;
    let listed = repo.pending_email_changes().await.expect("pending_email_changes()");
    let entry = listed.iter().find(|e| e.id == id1).expect("a begun entry must be listed as pending");
    assert_eq!(
        entry,
        &EmailChange { id: id1, ..j1.clone() },
        "a pending entry must hold exactly what was begun"
    );

    let j_stale = change(full_record(a, 2), 2);
    assert_eq!(
        repo.begin_email_change(&j_stale).await,
        Err(StoreError::VersionConflict),
        "begin_email_change() with a stale version must be VersionConflict"
    );
    let mut want = before.clone();
    want.push(id1);
    assert_eq!(pending_ids(repo).await, want, "a refused begin must record nothing");

    assert_eq!(repo.complete_email_change(id1).await, Ok(()), "complete_email_change() of a pending entry");
    expect_load(repo, a, Some(&j1.record), "after complete_email_change() (the entry's record applied)")
        .await;
    assert_eq!(pending_ids(repo).await, before, "a completed entry must no longer be pending");
    assert_eq!(
        repo.complete_email_change(id1).await,
        Err(StoreError::NotFound),
        "completing twice must be NotFound"
    );
    assert_eq!(
        repo.abort_email_change(id1).await,
        Err(StoreError::NotFound),
        "aborting a completed entry must be NotFound"
    );

    // begin on a user without a row (version 1), abort → nothing written.
    let j2 = change(full_record(b, 1), 3);
    let id2 =
        repo.begin_email_change(&j2).await.expect("begin_email_change() of version 1 over a missing row");
    assert_ne!(id2, id1, "journal ids must be distinct");
    assert_eq!(repo.abort_email_change(id2).await, Ok(()), "abort_email_change() of a pending entry");
    expect_load(repo, b, None, "after an aborted change (no profile field written)").await;
    assert_eq!(pending_ids(repo).await, before, "an aborted entry must no longer be pending");
    assert_eq!(
        repo.abort_email_change(id2).await,
        Err(StoreError::NotFound),
        "aborting twice must be NotFound"
    );
    assert_eq!(
        repo.complete_email_change(id2).await,
        Err(StoreError::NotFound),
        "completing an aborted entry must be NotFound"
    );

    // The profile moves between begin and complete: conflict, entry stays pending.
    let j3 = change(full_record(a, 4), 4);
    let id3 = repo.begin_email_change(&j3).await.expect("begin_email_change()");
    let moved = cleared(j1.record.clone(), 4, 30);
    assert_eq!(repo.save(&moved).await, Ok(()), "a save() while an entry is pending must work");
    assert_eq!(
        repo.complete_email_change(id3).await,
        Err(StoreError::VersionConflict),
        "complete_email_change() after the version moved must be VersionConflict"
    );
    expect_load(repo, a, Some(&moved), "after a conflicting complete (nothing written)").await;
    let mut want = before.clone();
    want.push(id3);
    assert_eq!(pending_ids(repo).await, want, "a conflicting complete must leave the entry pending");

    // Several pending entries are listed oldest first.
    let j4 = change(full_record(id(3), 1), 5);
    let id4 = repo.begin_email_change(&j4).await.expect("begin_email_change()");
    let j5 = change(full_record(id(4), 1), 6);
    let id5 = repo.begin_email_change(&j5).await.expect("begin_email_change()");
    let mut want = before.clone();
    want.extend([id3, id4, id5]);
    assert_eq!(pending_ids(repo).await, want, "pending entries must be listed oldest first");
    for (id, what) in [(id3, "id3"), (id4, "id4"), (id5, "id5")] {
        assert_eq!(repo.abort_email_change(id).await, Ok(()), "abort_email_change({what})");
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
}
