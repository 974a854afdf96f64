//! The profiles database: profile rows and the cross-database e-mail journal.
//!
//! Every write that touches a user's record first takes a transaction-level advisory
//! lock keyed by the user id: writers of one user, from any instance, queue on it — the
//! first edit of a user too, when there is no row yet to lock. Updates go through one
//! batch writer per store ([`batch_writer`]): several users' updates in a transaction.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use profile_core::admin::{PoolStatus, StoreAdmin};
use profile_core::domain::{
    BillingAddress, Business, Notifications, PersonalFields, Preferences, Privacy, ProfileFields,
    ProfileRecord, Theme, UserId, Visibility,
};
use profile_core::ports::{
    CurrentRecord, Decide, Decision, EmailChange, JournalId, ProfileRepository, StoreError, UpdateOutcome,
};

use crate::db::{Db, Keyed, KeyedSql, Schema, TxError, locked};
use crate::schema::{email_journal, profiles};
use crate::{OpenError, PgConfig};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations_profiles/postgres");

const PENDING: &str = "pending";
const DONE: &str = "done";
const ABORTED: &str = "aborted";

fn migrate(c: &mut PgConnection) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(c.run_pending_migrations(MIGRATIONS)?.iter().map(ToString::to_string).collect())
}

/// The profiles database adapter: [`ProfileRepository`].
#[derive(Debug)]
pub struct ProfileStore {
    db: Arc<Db>,
    /// Updates for [`batch_writer`].
    updates: tokio::sync::mpsc::UnboundedSender<UpdateJob>,
}

/// The most updates one batch transaction takes.
const MAX_BATCH: usize = 32;

/// An update waiting for [`batch_writer`], and where its outcome goes.
struct UpdateJob {
    user_id: UserId,
    decide: Decide,
    reply: tokio::sync::oneshot::Sender<Result<UpdateOutcome, StoreError>>,
}

/// Group commit: the updates queued while a batch runs go into the next one, one
/// transaction for all of them. Each update of a batch takes its user's lock with
/// `pg_try_advisory_xact_lock`, so a batch never waits on a lock: an update whose user is
/// locked elsewhere (another instance's write, a settling e-mail change) leaves the batch
/// and runs alone, queueing on the lock as before, and blocks nobody else. A batch costs
/// `BEGIN`, three round trips an update (lock, read, write) and one `COMMIT`, where an
/// update alone costs four (pgbench on the same server: 147 µs of server CPU an update
/// in batches of 4, against 202 µs one by one). One batch is in flight at a time (two
/// gave smaller batches and no more throughput); a lone update is a batch of one, one
/// round trip more than alone, so that the writer never waits on a lock. Ends when the
/// store is dropped.
async fn batch_writer(db: Arc<Db>, mut queue: tokio::sync::mpsc::UnboundedReceiver<UpdateJob>) {
    let mut waiting: Vec<UpdateJob> = Vec::new();
    loop {
        // Everything queued, up to a batch, once there is something.
        if queue.recv_many(&mut waiting, MAX_BATCH).await == 0 {
            return;
        }
        // Awaited: what queues meanwhile is the next batch.
        update_batch(db.clone(), std::mem::take(&mut waiting)).await;
    }
}

/// Updates in one transaction; those whose user is locked elsewhere run alone after.
async fn update_batch(db: Arc<Db>, jobs: Vec<UpdateJob>) {
    let (replies, work): (Vec<_>, Vec<_>) =
        jobs.into_iter().map(|job| (job.reply, (job.user_id, job.decide))).unzip();
    match db.run(move |c| c.transaction(|c| batch_in_tx(c, work))).await {
        Ok(steps) => {
            for (reply, step) in replies.into_iter().zip(steps) {
                match step {
                    Step::Done(outcome) => {
                        let _ = reply.send(*outcome);
                    }
                    Step::Locked(user_id, decide) => {
                        tokio::spawn(update_alone(db.clone(), UpdateJob { user_id, decide, reply }));
                    }
                }
            }
        }
        // Rolled back (or never begun): nothing of the batch was stored.
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One update in a transaction of its own, queueing on its user's lock.
async fn update_alone(db: Arc<Db>, job: UpdateJob) {
    let UpdateJob { user_id, decide, reply } = job;
    let outcome = db.run(move |c| locked(c, user_id, |c| update_in_tx(c, user_id, decide))).await;
    let _ = reply.send(outcome);
}

/// What became of one update of a batch.
enum Step {
    /// Decided and carried out (or refused) in the batch; final once it commits.
    Done(Box<Result<UpdateOutcome, StoreError>>),
    /// Its user's lock is held elsewhere: not run, to be run alone.
    Locked(UserId, Decide),
}

/// The updates of a batch, in order, inside its transaction. An update's own failure
/// (an unreadable row) is its answer and the others go on; a driver error ends the
/// transaction, and with it the batch.
fn batch_in_tx(c: &mut PgConnection, work: Vec<(UserId, Decide)>) -> Result<Vec<Step>, TxError> {
    let mut steps = Vec::with_capacity(work.len());
    for (user_id, decide) in work {
        if !Keyed::<TryLockUser>::new(user_id).get_result::<Got>(c)?.got {
            steps.push(Step::Locked(user_id, decide));
            continue;
        }
        steps.push(Step::Done(Box::new(match update_in_tx(c, user_id, decide) {
            Ok(outcome) => Ok(outcome),
            Err(TxError::Store(e)) => Err(e),
            Err(driver) => return Err(driver),
        })));
    }
    Ok(steps)
}

/// The user's transaction-level lock if it is free (or already this transaction's).
struct TryLockUser;

impl KeyedSql for TryLockUser {
    const SQL: &'static str = "SELECT pg_try_advisory_xact_lock($1) AS got";
}

/// [`TryLockUser`]'s answer.
#[derive(QueryableByName)]
struct Got {
    #[diesel(sql_type = Bool)]
    got: bool,
}

/// A `profiles` row, column for column. `None` is written as a bound NULL (no column has
/// another default), so an INSERT of it has one text (with `DEFAULT` for `None`, diesel
/// would prepare it anew on every write).
#[derive(Debug, Queryable, QueryableByName, Selectable, Insertable, AsChangeset)]
#[diesel(
    table_name = profiles,
    primary_key(user_id),
    check_for_backend(Pg),
    treat_none_as_default_value = false,
    treat_none_as_null = true
)]
struct ProfileRow {
    user_id: i64,
    version: i64,
    updated_at: Option<DateTime<Utc>>,
    display_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    avatar_url: Option<String>,
    bio: Option<String>,
    birth_date: Option<NaiveDate>,
    city: Option<String>,
    country: Option<String>,
    language: String,
    timezone: String,
    theme: String,
    currency: String,
    notify_email: bool,
    notify_sms: bool,
    notify_push: bool,
    notify_marketing: bool,
    profile_visibility: String,
    show_activity: bool,
    company_name: Option<String>,
    job_title: Option<String>,
    tax_id: Option<String>,
    website: Option<String>,
    billing_line1: Option<String>,
    billing_line2: Option<String>,
    billing_city: Option<String>,
    billing_postal_code: Option<String>,
    billing_country: Option<String>,
}

fn bad_row(user_id: UserId, what: &str, value: &str) -> StoreError {
    StoreError::Failure(format!("profiles database: profile {user_id} has an unreadable {what}: {value:?}"))
}

impl ProfileRow {
    fn from_record(r: &ProfileRecord) -> Self {
        let p = &r.fields.personal;
        let pr = &r.fields.preferences;
        let b = &r.fields.business;
        let a = b.billing_address.as_ref();
        Self {
            user_id: r.user_id,
            version: r.version,
            updated_at: r.updated_at,
            display_name: p.display_name.clone(),
            first_name: p.first_name.clone(),
            last_name: p.last_name.clone(),
            phone: p.phone.clone(),
            avatar_url: p.avatar_url.clone(),
            bio: p.bio.clone(),
            birth_date: p.birth_date,
            city: p.city.clone(),
            country: p.country.clone(),
            language: pr.language.clone(),
            timezone: pr.timezone.clone(),
            theme: pr.theme.name().to_owned(),
            currency: pr.currency.clone(),
            notify_email: pr.notifications.email,
            notify_sms: pr.notifications.sms,
            notify_push: pr.notifications.push,
            notify_marketing: pr.notifications.marketing,
            profile_visibility: pr.privacy.profile_visibility.name().to_owned(),
            show_activity: pr.privacy.show_activity,
            company_name: b.company_name.clone(),
            job_title: b.job_title.clone(),
            tax_id: b.tax_id.clone(),
            website: b.website.clone(),
            billing_line1: a.map(|a| a.line1.clone()),
            billing_line2: a.and_then(|a| a.line2.clone()),
            billing_city: a.map(|a| a.city.clone()),
            billing_postal_code: a.and_then(|a| a.postal_code.clone()),
            billing_country: a.map(|a| a.country.clone()),
        }
    }

    fn into_record(self) -> Result<ProfileRecord, StoreError> {
        let id = self.user_id;
        let theme = Theme::from_name(&self.theme).ok_or_else(|| bad_row(id, "theme", &self.theme))?;
        let visibility = Visibility::from_name(&self.profile_visibility)
            .ok_or_else(|| bad_row(id, "profile_visibility", &self.profile_visibility))?;
        let billing_address = match (self.billing_line1, self.billing_city, self.billing_country) {
            (Some(line1), Some(city), Some(country)) => Some(BillingAddress {
                line1,
                line2: self.billing_line2,
                city,
                postal_code: self.billing_postal_code,
                country,
            }),
            (None, None, None) => None,
            _ => return Err(bad_row(id, "billing address", "partial")),
        };
        Ok(ProfileRecord {
            user_id: id,
            version: self.version,
            updated_at: self.updated_at,
            fields: ProfileFields {
                personal: PersonalFields {
                    display_name: self.display_name,
                    first_name: self.first_name,
                    last_name: self.last_name,
                    phone: self.phone,
                    avatar_url: self.avatar_url,
                    bio: self.bio,
                    birth_date: self.birth_date,
                    city: self.city,
                    country: self.country,
                },
                preferences: Preferences {
                    language: self.language,
                    timezone: self.timezone,
                    theme,
                    currency: self.currency,
                    notifications: Notifications {
                        email: self.notify_email,
                        sms: self.notify_sms,
                        push: self.notify_push,
                        marketing: self.notify_marketing,
                    },
                    privacy: Privacy { profile_visibility: visibility, show_activity: self.show_activity },
                },
                business: Business {
                    company_name: self.company_name,
                    job_title: self.job_title,
                    tax_id: self.tax_id,
                    website: self.website,
                    billing_address,
                },
            },
        })
    }
}

/// An `email_journal` row as the store reads it.
#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = email_journal, check_for_backend(Pg))]
struct JournalRow {
    id: i64,
    old_email: String,
    new_email: String,
    record: String,
    created_at: DateTime<Utc>,
    claimed_until: DateTime<Utc>,
}

#[derive(Insertable)]
#[diesel(table_name = email_journal)]
struct NewJournalRow<'a> {
    user_id: i64,
    old_email: &'a str,
    new_email: &'a str,
    record: &'a str,
    state: &'a str,
    created_at: DateTime<Utc>,
    claimed_until: DateTime<Utc>,
}

fn parse_record(id: JournalId, json: &str) -> Result<ProfileRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Failure(format!("profiles database: journal entry {id} has an unreadable record: {e}"))
    })
}

impl JournalRow {
    fn into_change(self) -> Result<EmailChange, StoreError> {
        Ok(EmailChange {
            record: parse_record(self.id, &self.record)?,
            id: self.id,
            old_email: self.old_email,
            new_email: self.new_email,
            created_at: self.created_at,
            claimed_until: self.claimed_until,
        })
    }
}

/// `state = 'pending'` as a literal, so the partial indexes apply to every plan (a bound
/// parameter would not match their `WHERE` in a generic plan).
fn pending() -> diesel::expression::SqlLiteral<Bool> {
    diesel::dsl::sql::<Bool>("email_journal.state = 'pending'")
}

/// What TIMESTAMPTZ keeps: microseconds. What a write returns is what a read returns.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The record as the database stores it.
fn stored_form(mut r: ProfileRecord) -> ProfileRecord {
    r.updated_at = r.updated_at.map(micros);
    r
}

/// Queues this transaction behind every other writer of the user, on any instance,
/// until it ends (one-key form: the migration lock uses the two-key form).
fn lock_user(c: &mut PgConnection, user_id: UserId) -> Result<(), TxError> {
    Keyed::<LockUser>::new(user_id).execute(c)?;
    Ok(())
}

/// The transaction-level lock of one user, as a [`Keyed`] statement.
struct LockUser;

impl KeyedSql for LockUser {
    const SQL: &'static str = "SELECT pg_advisory_xact_lock($1)";
}

/// The user's row and pending journal entry, each when there is one, in one statement,
/// so one snapshot for both. A user has at most one pending entry (a write that finds one
/// settles it before it may begin another), found by the partial index
/// `email_journal_pending_user`: `state` is a literal so that index applies to every plan.
pub const CURRENT_SQL: &str = "\
SELECT p.user_id, p.version, p.updated_at, p.display_name, p.first_name, p.last_name, p.phone, \
       p.avatar_url, p.bio, p.birth_date, p.city, p.country, p.language, p.timezone, p.theme, \
       p.currency, p.notify_email, p.notify_sms, p.notify_push, p.notify_marketing, \
       p.profile_visibility, p.show_activity, p.company_name, p.job_title, p.tax_id, p.website, \
       p.billing_line1, p.billing_line2, p.billing_city, p.billing_postal_code, p.billing_country, \
       j.id, j.old_email, j.new_email, j.record, j.created_at, j.claimed_until \
FROM (SELECT $1::BIGINT AS uid) AS k \
LEFT JOIN profiles AS p ON p.user_id = k.uid \
LEFT JOIN LATERAL ( \
    SELECT e.id, e.old_email, e.new_email, e.record, e.created_at, e.claimed_until \
    FROM email_journal AS e WHERE e.state = 'pending' AND e.user_id = k.uid LIMIT 1) AS j ON TRUE";

/// What [`CURRENT_SQL`] found: a part is `None` when its row does not exist (its first
/// non-null column reads null).
#[derive(QueryableByName)]
struct CurrentRow {
    #[diesel(embed)]
    profile: Option<ProfileRow>,
    #[diesel(embed)]
    pending: Option<JournalRow>,
}

/// The user's row and pending journal entry as of one snapshot.
fn current(c: &mut PgConnection, user_id: UserId) -> Result<CurrentRow, TxError> {
    Ok(Keyed::<CurrentById>::new(user_id).get_result::<CurrentRow>(c)?)
}

/// [`CURRENT_SQL`] as a [`Keyed`] statement.
struct CurrentById;

impl KeyedSql for CurrentById {
    const SQL: &'static str = CURRENT_SQL;
}

/// The version rule: the stored version (0 without a row) must be `version - 1`. Tells
/// whether the row exists.
fn check_version(c: &mut PgConnection, user_id: UserId, version: i64) -> Result<Stored, TxError> {
    let stored: Option<i64> = profiles::table.find(user_id).select(profiles::version).first(c).optional()?;
    if Some(stored.unwrap_or(0)) != version.checked_sub(1) {
        return Err(StoreError::VersionConflict.into());
    }
    Ok(if stored.is_some() { Stored::Row } else { Stored::Nothing })
}

/// What the user's lock holder found stored: a row, or nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Row,
    Nothing,
}

/// The conflict clause of [`Upsert`]: every column but the key from the row offered.
const UPSERT_TAIL: &str = " ON CONFLICT (user_id) DO UPDATE SET version = excluded.version, \
updated_at = excluded.updated_at, display_name = excluded.display_name, \
first_name = excluded.first_name, last_name = excluded.last_name, \
phone = excluded.phone, avatar_url = excluded.avatar_url, bio = excluded.bio, \
birth_date = excluded.birth_date, city = excluded.city, \
country = excluded.country, language = excluded.language, \
timezone = excluded.timezone, theme = excluded.theme, \
currency = excluded.currency, notify_email = excluded.notify_email, \
notify_sms = excluded.notify_sms, notify_push = excluded.notify_push, \
notify_marketing = excluded.notify_marketing, \
profile_visibility = excluded.profile_visibility, \
show_activity = excluded.show_activity, company_name = excluded.company_name, \
job_title = excluded.job_title, tax_id = excluded.tax_id, \
website = excluded.website, billing_line1 = excluded.billing_line1, \
billing_line2 = excluded.billing_line2, billing_city = excluded.billing_city, \
billing_postal_code = excluded.billing_postal_code, \
billing_country = excluded.billing_country";

/// Diesel's INSERT of a whole row (its `None`s bound as NULL) with [`UPSERT_TAIL`] after
/// it. Diesel prepares every `DO UPDATE` anew, parse and plan on each write; this has one
/// fixed text, so each connection keeps it prepared.
struct Upsert<I>(I);

/// [`Upsert`]'s statement-cache key: there is one such statement.
struct UpsertId;

impl<I> QueryId for Upsert<I> {
    type QueryId = UpsertId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<I: QueryFragment<Pg>> QueryFragment<Pg> for Upsert<I> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(UPSERT_TAIL);
        Ok(())
    }
}

impl<I> RunQueryDsl<PgConnection> for Upsert<I> {}

/// `UPDATE profiles SET` every column but the key `WHERE user_id =` the key, from a row's
/// changeset. Diesel prepares every UPDATE it builds anew; this has one fixed text (no
/// column is skipped: `None` sets NULL), so each connection keeps it prepared.
struct RowUpdate<C> {
    changeset: C,
    user_id: i64,
}

/// [`RowUpdate`]'s statement-cache key: there is one such statement.
struct RowUpdateId;

impl<C> QueryId for RowUpdate<C> {
    type QueryId = RowUpdateId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C: QueryFragment<Pg>> QueryFragment<Pg> for RowUpdate<C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE \"profiles\" SET ");
        self.changeset.walk_ast(out.reborrow())?;
        out.push_sql(" WHERE \"user_id\" = ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        Ok(())
    }
}

impl<C> RunQueryDsl<PgConnection> for RowUpdate<C> {}

/// Writes the whole row; call under the user's lock, which makes `found` hold until the
/// transaction ends. A row found is updated: an `INSERT … ON CONFLICT DO UPDATE` costs the
/// server a speculative insertion and the conflict's resolution first (4 µs of 92). The first row of a
/// user is the upsert, so that a row written meanwhile by anyone not taking the lock is
/// replaced rather than a unique violation.
fn write_row(c: &mut PgConnection, record: &ProfileRecord, found: Stored) -> Result<(), TxError> {
    let row = ProfileRow::from_record(record);
    let written = match found {
        Stored::Row => RowUpdate { changeset: (&row).as_changeset(), user_id: row.user_id }.execute(c)?,
        Stored::Nothing => Upsert(diesel::insert_into(profiles::table).values(&row)).execute(c)?,
    };
    if written != 1 {
        return Err(StoreError::Failure(format!("profile {} was not written", record.user_id)).into());
    }
    Ok(())
}

/// Checks the version and writes the record; call under the user's lock.
fn store_record(c: &mut PgConnection, record: &ProfileRecord) -> Result<(), TxError> {
    let found = check_version(c, record.user_id, record.version)?;
    write_row(c, record, found)
}

/// One unit of work, in one transaction under the user's lock: the user's pending entry
/// blocks; else the pure decision on the stored record, carried out.
fn update_in_tx(c: &mut PgConnection, user_id: UserId, decide: Decide) -> Result<UpdateOutcome, TxError> {
    let CurrentRow { profile, pending } = current(c, user_id)?;
    if let Some(row) = pending {
        return Ok(UpdateOutcome::Blocked(row.into_change()?));
    }
    let (current, found) = match profile {
        Some(r) => (r.into_record()?, Stored::Row),
        None => (ProfileRecord::new_default(user_id), Stored::Nothing),
    };
    let next_of = |record: &ProfileRecord| -> Result<(), TxError> {
        if record.user_id == user_id && record.version == current.version + 1 {
            Ok(())
        } else {
            Err(StoreError::Failure("the decided record is not the next version".into()).into())
        }
    };
    Ok(match decide(&current) {
        Decision::Keep => UpdateOutcome::Unchanged(current),
        Decision::Refuse(r) => UpdateOutcome::Refused(r),
        Decision::Store(record) => {
            next_of(&record)?;
            let record = stored_form(record);
            write_row(c, &record, found)?;
            UpdateOutcome::Stored(record)
        }
        Decision::ChangeEmail { record, old_email, new_email, created_at, claimed_until } => {
            next_of(&record)?;
            let (record, created_at, claimed_until) =
                (stored_form(record), micros(created_at), micros(claimed_until));
            let json = serde_json::to_string(&record)
                .map_err(|e| StoreError::Failure(format!("cannot encode the journal record: {e}")))?;
            let row = NewJournalRow {
                user_id,
                old_email: &old_email,
                new_email: &new_email,
                record: &json,
                state: PENDING,
                created_at,
                claimed_until,
            };
            let id = diesel::insert_into(email_journal::table)
                .values(&row)
                .returning(email_journal::id)
                .get_result::<i64>(c)?;
            UpdateOutcome::EmailChangeBegun(EmailChange {
                id,
                old_email,
                new_email,
                record,
                created_at,
                claimed_until,
            })
        }
    })
}

/// The pending entry `id`: its user and record; `NotFound` when none is pending.
fn pending_entry(c: &mut PgConnection, id: JournalId) -> Result<(UserId, String), TxError> {
    Ok(email_journal::table
        .find(id)
        .filter(pending())
        .select((email_journal::user_id, email_journal::record))
        .first::<(i64, String)>(c)
        .optional()?
        .ok_or(StoreError::NotFound)?)
}

impl ProfileStore {
    pub(crate) async fn open(cfg: &PgConfig) -> Result<Self, OpenError> {
        let db = Arc::new(Db::open("profiles", cfg, Schema::Migrate(migrate)).await?);
        let (updates, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_writer(db.clone(), queue));
        Ok(Self { db, updates })
    }

    /// Versions of the migrations this open applied (empty when the schema was current).
    pub fn applied_migrations(&self) -> &[String] {
        self.db.applied_migrations()
    }
}

#[async_trait]
impl StoreAdmin for ProfileStore {
    fn pool_status(&self) -> PoolStatus {
        self.db.pool_status()
    }

    async fn close(&self) {
        self.db.close();
    }
}

#[async_trait]
impl ProfileRepository for ProfileStore {
    async fn load(&self, user_id: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        let row = self
            .db
            .read(move |c| {
                Ok(profiles::table.find(user_id).select(ProfileRow::as_select()).first(c).optional()?)
            })
            .await?;
        row.map(ProfileRow::into_record).transpose()
    }

    async fn load_current(&self, user_id: UserId) -> Result<CurrentRecord, StoreError> {
        let CurrentRow { profile, pending } = self.db.read(move |c| current(c, user_id)).await?;
        Ok(CurrentRecord {
            record: profile.map(ProfileRow::into_record).transpose()?,
            pending: pending.map(JournalRow::into_change).transpose()?,
        })
    }

    async fn update(&self, user_id: UserId, decide: Decide) -> Result<UpdateOutcome, StoreError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.updates
            .send(UpdateJob { user_id, decide, reply })
            .map_err(|_| StoreError::Unavailable("the profiles database is closed".into()))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::Failure("the profiles update did not finish".into())))
    }

    async fn complete_email_change(&self, id: JournalId) -> Result<(), StoreError> {
        self.db
            .write(move |c| {
                let (user_id, _) = pending_entry(c, id)?;
                lock_user(c, user_id)?;
                // Re-read under the lock: another settler may have finished it meanwhile.
                let (_, json) = pending_entry(c, id)?;
                // A conflict here rolls the whole transaction back: the entry stays pending.
                store_record(c, &parse_record(id, &json)?)?;
                diesel::update(email_journal::table.find(id))
                    .set(email_journal::state.eq(DONE))
                    .execute(c)?;
                Ok(())
            })
            .await
    }

    async fn abort_email_change(&self, id: JournalId) -> Result<(), StoreError> {
        self.db
            .write(move |c| {
                let (user_id, _) = pending_entry(c, id)?;
                lock_user(c, user_id)?;
                let n =
                    diesel::update(email_journal::table.find(id).filter(email_journal::state.eq(PENDING)))
                        .set(email_journal::state.eq(ABORTED))
                        .execute(c)?;
                if n == 0 { Err(StoreError::NotFound.into()) } else { Ok(()) }
            })
            .await
    }

    async fn claim_email_change(
        &self,
        id: JournalId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.db
            .write(move |c| {
                // One conditional UPDATE: of concurrent claimers the row lock lets one
                // through; the others re-check the condition on its new claim and miss.
                let taken = diesel::update(
                    email_journal::table
                        .find(id)
                        .filter(pending())
                        .filter(email_journal::claimed_until.le(now)),
                )
                .set(email_journal::claimed_until.eq(micros(until)))
                .execute(c)?;
                if taken == 1 {
                    return Ok(true);
                }
                pending_entry(c, id)?;
                Ok(false)
            })
            .await
    }

    async fn pending_email_changes(&self) -> Result<Vec<EmailChange>, StoreError> {
        let rows = self
            .db
            .read(|c| {
                Ok(email_journal::table
                    .filter(pending())
                    .order(email_journal::id)
                    .select(JournalRow::as_select())
                    .load(c)?)
            })
            .await?;
        rows.into_iter().map(JournalRow::into_change).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping("profiles").await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use diesel::connection::SimpleConnection;

    use super::*;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    #[derive(QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }

    /// A prepared statement's generic plan is made from the statistics of its day: for a
    /// profiles table analyzed while it held a few rows, a sequential scan, which every
    /// read and write then repeats as the table grows, until the next ANALYZE (of a fresh
    /// deployment's first busy minute, run 1 of `pg-patch` spent twice the CPU of run
    /// 2). The store's connections plan key lookups by their index whatever the size.
    #[tokio::test]
    async fn key_lookups_keep_their_index_when_planned_on_a_small_table() {
        let server = crate::testing::PgServer::shared();
        let test_db = server.database();
        let cfg = test_db.one_connection(Duration::from_secs(5));
        let store = ProfileStore::open(&cfg).await.expect("open");
        test_db.psql(
            "INSERT INTO profiles (user_id, version, language, timezone, theme, currency, notify_email, \
             notify_sms, notify_push, notify_marketing, profile_visibility, show_activity) \
             SELECT i, 1, 'en', 'UTC', 'system', 'USD', true, false, true, false, 'public', true \
             FROM generate_series(1, 50) AS i; ANALYZE profiles",
        );
        let plan = store
            .db
            .read(|c| {
                c.batch_execute(&format!(
                    "SET plan_cache_mode = force_generic_plan; PREPARE current_plan(BIGINT) AS {}",
                    CURRENT_SQL.replace("$1::BIGINT", "$1")
                ))?;
                let lines =
                    diesel::sql_query("EXPLAIN (COSTS OFF) EXECUTE current_plan(7)").load::<PlanLine>(c)?;
                c.batch_execute("DEALLOCATE current_plan; RESET plan_cache_mode")?;
                Ok(lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n"))
            })
            .await
            .expect("plan");
        assert!(plan.contains("profiles_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }

    fn pool_of_four(test_db: &crate::testing::TestDb<'_>) -> PgConfig {
        PgConfig {
            url: test_db.url(),
            pool_size: 4,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

    fn set_city(n: i64) -> Decide {
        Box::new(move |current: &ProfileRecord| {
            let mut next = current.clone();
            next.version += 1;
            next.fields.personal.city = Some(format!("City {n}"));
            Decision::Store(next)
        })
    }

    /// Updates queued together share one transaction (group commit): the rows they wrote
    /// carry fewer distinct `xmin`s (writing transactions) than there were updates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_updates_of_many_users_share_transactions() {
        let server = crate::testing::PgServer::shared();
        let test_db = server.database();
        let store = ProfileStore::open(&pool_of_four(&test_db)).await.expect("open");
        let updates = (1..=32_i64).map(|u| store.update(u, set_city(u)));
        for (u, outcome) in (1..=32_i64).zip(futures::future::join_all(updates).await) {
            assert!(
                matches!(outcome, Ok(UpdateOutcome::Stored(ref r)) if r.version == 1),
                "{u}: {outcome:?}"
            );
        }
        let rows = test_db.psql("SELECT count(*) FROM profiles");
        let transactions = test_db.psql("SELECT count(DISTINCT xmin::text) FROM profiles");
        assert_eq!(rows, "32");
        let transactions: usize = transactions.parse().expect("count");
        assert!(transactions < 32, "one transaction per update ({transactions})");
    }

    /// A batch never waits on a lock: while another session holds one user's lock, the
    /// other users' updates queued with it are answered, and that user's once the lock
    /// is released.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_user_locked_elsewhere_delays_only_that_user() {
        let server = crate::testing::PgServer::shared();
        let test_db = server.database();
        let store = Arc::new(ProfileStore::open(&pool_of_four(&test_db)).await.expect("open"));
        let mut holder = test_db
            .psql_command("BEGIN; SELECT pg_advisory_xact_lock(1); SELECT pg_sleep(3); COMMIT")
            .spawn()
            .expect("lock holder");
        let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 1 AND granted";
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while test_db.psql(held) != "1" {
            assert!(std::time::Instant::now() < deadline, "the lock was never taken");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let locked = tokio::spawn({
            let store = store.clone();
            async move { store.update(1, set_city(1)).await }
        });
        let others = futures::future::join_all((2..=9_i64).map(|u| store.update(u, set_city(u))));
        let others = tokio::time::timeout(Duration::from_millis(1500), others)
            .await
            .expect("the other users waited for the locked one");
        assert!(others.iter().all(|o| matches!(o, Ok(UpdateOutcome::Stored(_)))), "{others:?}");
        assert!(!locked.is_finished(), "user 1 was updated while its lock was held elsewhere");
        let one = locked.await.expect("task");
        assert!(matches!(one, Ok(UpdateOutcome::Stored(ref r)) if r.version == 1), "{one:?}");
        assert!(holder.wait().expect("lock holder").success());
    }

    /// PostgreSQL rebuilds and plans a table's CHECK expressions in every INSERT and UPDATE
    /// (a fifth of a profile write's server CPU for the five the table had); a domain's
    /// rules are kept ready. The value rules still refuse what they refused.
    #[tokio::test]
    async fn profile_writes_carry_no_table_checks_and_the_value_rules_still_hold() {
        let server = crate::testing::PgServer::shared();
        let test_db = server.database();
        let cfg = test_db.one_connection(Duration::from_secs(5));
        let store = ProfileStore::open(&cfg).await.expect("open");
        let checks = store
            .db
            .read(|c| {
                Ok(diesel::sql_query(
                    "SELECT count(*) AS n FROM pg_constraint \
                     WHERE conrelid = 'profiles'::regclass AND contype = 'c'",
                )
                .get_result::<Count>(c)?
                .n)
            })
            .await
            .expect("count");
        assert_eq!(checks, 0, "table-level CHECK constraints on profiles");
        let row = |version: i64, theme: &str, visibility: &str| {
            format!(
                "INSERT INTO profiles (user_id, version, language, timezone, theme, currency, \
                 notify_email, notify_sms, notify_push, notify_marketing, profile_visibility, \
                 show_activity) VALUES (7, {version}, 'en', 'UTC', '{theme}', 'USD', true, false, \
                 true, false, '{visibility}', true)"
            )
        };
        let run = |sql: &str| test_db.psql_command(sql).stderr(std::process::Stdio::piped()).output();
        for (sql, rule) in [
            (row(0, "dark", "public"), "profile_version"),
            (row(1, "neon", "public"), "theme_name"),
            (row(1, "dark", "everyone"), "visibility_name"),
        ] {
            let out = run(&sql).expect("psql");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains(rule), "{sql}: {err}");
        }
        let out = run(&row(1, "dark", "public")).expect("psql");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let read = store.load(7).await.expect("read").expect("row");
        assert_eq!((read.version, read.fields.preferences.theme), (1, Theme::Dark));
    }

    /// The statements of every read and write are prepared once per connection: the
    /// server parses and plans none of them again (an UPSERT diesel builds itself is
    /// prepared anew on each call, a round trip and a parse more).
    #[tokio::test]
    async fn reads_and_writes_reuse_their_prepared_statements() {
        let server = crate::testing::PgServer::shared();
        let test_db = server.database();
        let cfg = test_db.one_connection(Duration::from_secs(5));
        let store = ProfileStore::open(&cfg).await.expect("open");
        for n in 1..=3_i64 {
            let decide: Decide = Box::new(move |current: &ProfileRecord| {
                let mut next = current.clone();
                next.version += 1;
                next.fields.personal.city = Some(format!("City {n}"));
                Decision::Store(next)
            });
            let outcome = store.update(42, decide).await.expect("update");
            assert!(matches!(outcome, UpdateOutcome::Stored(ref r) if r.version == n), "{outcome:?}");
            let current = store.load_current(42).await.expect("read");
            assert_eq!(current.record.map(|r| r.version), Some(n));
        }
        let prepared = |pattern: &'static str| {
            store.db.read(move |c| {
                Ok(diesel::sql_query(
                    "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE $1",
                )
                .bind::<diesel::sql_types::Text, _>(pattern)
                .get_result::<Count>(c)?
                .n)
            })
        };
        // One connection, three writes (the first row, then two updates of it) and three
        // reads: one statement each.
        assert_eq!(prepared("INSERT INTO \"profiles\"%").await.expect("count"), 1);
        assert_eq!(prepared("UPDATE \"profiles\"%").await.expect("count"), 1);
        assert_eq!(prepared("SELECT p.user_id%").await.expect("count"), 1);
    }
}
