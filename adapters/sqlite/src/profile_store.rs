//! The profiles database: profile rows and the cross-database e-mail journal.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::Sqlite;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use profile_core::domain::{
    BillingAddress, Business, Notifications, PersonalFields, Preferences, Privacy, ProfileFields,
    ProfileRecord, Theme, UserId, Visibility,
};
use profile_core::ports::{
    CurrentRecord, Decide, Decision, EmailChange, JournalId, ProfileRepository, StoreError, UpdateOutcome,
};

use crate::db::{Db, Keyed, KeyedSql, TxError, Writer};
use crate::schema::{email_journal, profiles};
use crate::{DbConfig, OpenError, PoolStatus, time};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations_profiles/sqlite");

const PENDING: &str = "pending";
const DONE: &str = "done";
const ABORTED: &str = "aborted";

fn migrate(c: &mut SqliteConnection) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(c.run_pending_migrations(MIGRATIONS)?.iter().map(ToString::to_string).collect())
}

/// The profiles database adapter: [`ProfileRepository`].
#[derive(Debug)]
pub struct ProfileStore {
    db: Db,
    /// Updates queued for the group-commit task (see [`group_commit`]).
    updates: tokio::sync::mpsc::UnboundedSender<UpdateJob>,
}

/// Most updates one group commit carries.
const MAX_BATCH: usize = 64;

/// One queued [`ProfileRepository::update`] and where its outcome goes.
struct UpdateJob {
    user_id: UserId,
    decide: Decide,
    reply: tokio::sync::oneshot::Sender<Result<UpdateOutcome, StoreError>>,
}

/// Runs queued updates on the writer, as many as are waiting (up to [`MAX_BATCH`]) in
/// one `BEGIN IMMEDIATE` transaction, one after the other in queue order: each decides
/// on what the ones before it left, exactly as if each had its own transaction. Every
/// caller is answered only once the transaction has committed, each with its own
/// outcome; if the commit fails, all of them get that error and nothing of the batch
/// is stored. One transaction (one commit, pages written once) per batch instead of
/// per update is what lets the single writer keep up with many connections; a lone
/// update is a batch of one. The batch runs on this task's thread while the write lock
/// is free ([`Writer::write_here`]): the decisions and statements are CPU work on
/// cached pages, cheaper than the thread switches of a hand-off to the blocking pool.
/// Ends when the store is dropped.
async fn group_commit(writer: Writer, mut queue: tokio::sync::mpsc::UnboundedReceiver<UpdateJob>) {
    let label = writer.label();
    let mut waiting: Vec<UpdateJob> = Vec::new();
    loop {
        if waiting.is_empty() && queue.recv_many(&mut waiting, MAX_BATCH).await == 0 {
            return;
        }
        while waiting.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
            }
        }
        let (mut replies, work): (Vec<_>, Vec<_>) = waiting
            .drain(..waiting.len().min(MAX_BATCH))
            .map(|job| (job.reply, (job.user_id, job.decide)))
            .unzip();
        let ran = writer
            .write_here(move |c| {
                let mut outcomes = Vec::with_capacity(work.len());
                let mut work = work.into_iter();
                for (user_id, decide) in work.by_ref() {
                    let outcome = update_in_tx(c, user_id, decide);
                    // A driver failure may have ended the transaction: run nothing more
                    // in it (the rest go to the next batch, their decisions untouched).
                    let failed = matches!(outcome, Err(TxError::Diesel(_)));
                    outcomes.push(outcome);
                    if failed {
                        break;
                    }
                }
                Ok((outcomes, work.collect::<Vec<_>>()))
            })
            .await;
        match ran {
            Ok((outcomes, rest)) => {
                let later = replies.split_off(outcomes.len());
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome.map_err(|e| e.into_store(label)));
                }
                // Jobs not run keep their place at the head of the queue.
                let rest = later.into_iter().zip(rest).map(|(reply, (user_id, decide))| UpdateJob {
                    user_id,
                    decide,
                    reply,
                });
                waiting.splice(0..0, rest);
            }
            // Rolled back (or never started): nothing of the batch was stored.
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A `profiles` row, column for column.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = profiles, check_for_backend(Sqlite))]
struct ProfileRow {
    user_id: i64,
    version: i64,
    updated_at: Option<String>,
    display_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    avatar_url: Option<String>,
    bio: Option<String>,
    birth_date: Option<String>,
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
            updated_at: r.updated_at.as_ref().map(time::format),
            display_name: p.display_name.clone(),
            first_name: p.first_name.clone(),
            last_name: p.last_name.clone(),
            phone: p.phone.clone(),
            avatar_url: p.avatar_url.clone(),
            bio: p.bio.clone(),
            birth_date: p.birth_date.map(|d| d.format("%Y-%m-%d").to_string()),
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
        let updated_at = match self.updated_at {
            Some(s) => Some(time::parse(&s).ok_or_else(|| bad_row(id, "updated_at", &s))?),
            None => None,
        };
        let birth_date = match self.birth_date {
            Some(s) => {
                Some(NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| bad_row(id, "birth_date", &s))?)
            }
            None => None,
        };
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
            updated_at,
            fields: ProfileFields {
                personal: PersonalFields {
                    display_name: self.display_name,
                    first_name: self.first_name,
                    last_name: self.last_name,
                    phone: self.phone,
                    avatar_url: self.avatar_url,
                    bio: self.bio,
                    birth_date,
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

/// Pending entries, oldest first. The state is a literal so the partial index
/// `email_journal_pending` applies (a bound parameter would not match its WHERE).
const PENDING_SQL: &str = "SELECT id, old_email, new_email, record, created_at, claimed_until FROM email_journal WHERE state = 'pending' ORDER BY id";

/// The user's pending entry, if any (the partial index `email_journal_pending_user`).
const PENDING_OF_USER_SQL: &str = "SELECT id, old_email, new_email, record, created_at, claimed_until FROM email_journal WHERE state = 'pending' AND user_id = ?1 ORDER BY id LIMIT 1";

/// An `email_journal` row.
#[derive(Debug, QueryableByName)]
#[diesel(table_name = email_journal, check_for_backend(Sqlite))]
struct JournalRow {
    id: i64,
    old_email: String,
    new_email: String,
    record: String,
    created_at: String,
    claimed_until: String,
}

#[derive(Insertable)]
#[diesel(table_name = email_journal)]
struct NewJournalRow<'a> {
    user_id: i64,
    old_email: &'a str,
    new_email: &'a str,
    record: &'a str,
    state: &'a str,
    created_at: &'a str,
    claimed_until: &'a str,
}

fn parse_record(id: JournalId, json: &str) -> Result<ProfileRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Failure(format!("profiles database: journal entry {id} has an unreadable record: {e}"))
    })
}

/// A stored claim: '' (nobody) reads as the distant past.
fn parse_claim(id: JournalId, text: &str) -> Result<DateTime<Utc>, StoreError> {
    if text.is_empty() {
        return Ok(DateTime::<Utc>::MIN_UTC);
    }
    time::parse(text).ok_or_else(|| {
        StoreError::Failure(format!("profiles database: journal entry {id} has an unreadable claimed_until"))
    })
}

impl JournalRow {
    fn into_change(self) -> Result<EmailChange, StoreError> {
        let created_at = time::parse(&self.created_at).ok_or_else(|| {
            StoreError::Failure(format!(
                "profiles database: journal entry {} has an unreadable created_at: {:?}",
                self.id, self.created_at
            ))
        })?;
        Ok(EmailChange {
            record: parse_record(self.id, &self.record)?,
            claimed_until: parse_claim(self.id, &self.claimed_until)?,
            id: self.id,
            old_email: self.old_email,
            new_email: self.new_email,
            created_at,
        })
    }
}

/// [`PENDING_OF_USER_SQL`] as a [`Keyed`] statement (as a `sql_query`, its parse was 7 %
/// of a PATCH's CPU).
struct PendingOfUser;

impl KeyedSql for PendingOfUser {
    const SQL: &'static str = PENDING_OF_USER_SQL;
    type Columns = diesel::sql_types::Untyped;
}

/// The user's pending journal entry, if any.
fn pending_of(c: &mut SqliteConnection, user_id: UserId) -> Result<Option<JournalRow>, TxError> {
    Ok(Keyed::<PendingOfUser>::new(user_id).get_result::<JournalRow>(c).optional()?)
}

/// The user's profile row, if any. Not `.first()`: its `LIMIT ?` is a bound parameter,
/// and the bundled SQLite (3.53) marks a statement whose LIMIT is a parameter for
/// re-preparation each time that parameter is bound, so the cached statement was parsed
/// anew on every call (10 % of a PATCH's CPU). The primary key yields one row at most.
fn profile_row(c: &mut SqliteConnection, user_id: UserId) -> QueryResult<Option<ProfileRow>> {
    profiles::table.find(user_id).select(ProfileRow::as_select()).get_result(c).optional()
}

/// One unit of work on the writer connection, inside its `BEGIN IMMEDIATE`
/// transaction: the user's pending entry blocks; else the pure decision on the stored
/// record, carried out.
fn update_in_tx(c: &mut SqliteConnection, user_id: UserId, decide: Decide) -> Result<UpdateOutcome, TxError> {
    if let Some(row) = pending_of(c, user_id)? {
        return Ok(UpdateOutcome::Blocked(row.into_change()?));
    }
    let row = profile_row(c, user_id)?;
    let current = match row {
        Some(r) => r.into_record()?,
        None => ProfileRecord::new_default(user_id),
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
            UpsertProfile(ProfileRow::from_record(&record)).execute(c)?;
            UpdateOutcome::Stored(record)
        }
        Decision::ChangeEmail { record, old_email, new_email, created_at, claimed_until } => {
            next_of(&record)?;
            let json = serde_json::to_string(&record)
                .map_err(|e| StoreError::Failure(format!("cannot encode the journal record: {e}")))?;
            let (created, claim) = (time::format(&created_at), time::format(&claimed_until));
            let row = NewJournalRow {
                user_id,
                old_email: &old_email,
                new_email: &new_email,
                record: &json,
                state: PENDING,
                created_at: &created,
                claimed_until: &claim,
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

/// The version rule of [`ProfileRepository::save`]: the stored version (0 without a row)
/// must be `version - 1`. Returns whether the row exists.
fn check_version(c: &mut SqliteConnection, user_id: UserId, version: i64) -> Result<bool, TxError> {
    let stored: Option<i64> =
        profiles::table.find(user_id).select(profiles::version).get_result(c).optional()?;
    if Some(stored.unwrap_or(0)) != version.checked_sub(1) {
        return Err(StoreError::VersionConflict.into());
    }
    Ok(stored.is_some())
}

/// Checks the version and writes the whole row; call inside a write transaction.
fn store_record(c: &mut SqliteConnection, record: &ProfileRecord) -> Result<(), TxError> {
    check_version(c, record.user_id, record.version)?;
    UpsertProfile(ProfileRow::from_record(record)).execute(c)?;
    Ok(())
}

/// The columns of `profiles`, in [`ProfileRow`] order.
const PROFILE_COLUMNS: [&str; 31] = [
    "user_id",
    "version",
    "updated_at",
    "display_name",
    "first_name",
    "last_name",
    "phone",
    "avatar_url",
    "bio",
    "birth_date",
    "city",
    "country",
    "language",
    "timezone",
    "theme",
    "currency",
    "notify_email",
    "notify_sms",
    "notify_push",
    "notify_marketing",
    "profile_visibility",
    "show_activity",
    "company_name",
    "job_title",
    "tax_id",
    "website",
    "billing_line1",
    "billing_line2",
    "billing_city",
    "billing_postal_code",
    "billing_country",
];

/// `INSERT … ON CONFLICT DO UPDATE` of a whole row. Diesel prepares an UPDATE or a
/// single-row INSERT anew on every call; this statement has one fixed text, so the
/// connection keeps it prepared (keyed by its type) and a save skips SQLite's parser.
struct UpsertProfile(ProfileRow);

static UPSERT_SQL: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
    let head = format!("INSERT INTO profiles ({}) VALUES (", PROFILE_COLUMNS.join(", "));
    let updates: Vec<String> = PROFILE_COLUMNS[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
    let tail = format!(") ON CONFLICT (user_id) DO UPDATE SET {}", updates.join(", "));
    (head, tail)
});

impl QueryId for UpsertProfile {
    type QueryId = UpsertProfile;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for UpsertProfile {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Bool, Nullable, Text};
        let r = &self.0;
        let (head, tail) = &*UPSERT_SQL;
        out.push_sql(head);
        out.push_bind_param::<BigInt, _>(&r.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&r.version)?;
        for v in [
            &r.updated_at,
            &r.display_name,
            &r.first_name,
            &r.last_name,
            &r.phone,
            &r.avatar_url,
            &r.bio,
            &r.birth_date,
            &r.city,
            &r.country,
        ] {
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(v)?;
        }
        for v in [&r.language, &r.timezone, &r.theme, &r.currency] {
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(v)?;
        }
        for v in [&r.notify_email, &r.notify_sms, &r.notify_push, &r.notify_marketing] {
            out.push_sql(", ");
            out.push_bind_param::<Bool, _>(v)?;
        }
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&r.profile_visibility)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&r.show_activity)?;
        for v in [
            &r.company_name,
            &r.job_title,
            &r.tax_id,
            &r.website,
            &r.billing_line1,
            &r.billing_line2,
            &r.billing_city,
            &r.billing_postal_code,
            &r.billing_country,
        ] {
            out.push_sql(", ");
            out.push_bind_param::<Nullable<Text>, _>(v)?;
        }
        out.push_sql(tail);
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for UpsertProfile {}

impl ProfileStore {
    pub(crate) async fn open(cfg: &DbConfig) -> Result<Self, OpenError> {
        let db = Db::open("profiles", cfg, migrate).await?;
        let (updates, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(group_commit(db.writer(), queue));
        Ok(Self { db, updates })
    }

    /// Versions of the migrations this open applied (empty when the schema was current).
    pub fn applied_migrations(&self) -> &[String] {
        self.db.applied_migrations()
    }

    /// Connection counts for the pool gauges.
    pub fn pool_status(&self) -> PoolStatus {
        self.db.pool_status()
    }

    /// Stops the checkpointer and closes the pools; later calls answer `Unavailable`.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

#[async_trait]
impl ProfileRepository for ProfileStore {
    async fn load(&self, user_id: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        let row = self.db.read(move |c| Ok(profile_row(c, user_id)?)).await?;
        row.map(ProfileRow::into_record).transpose()
    }

    async fn load_current(&self, user_id: UserId) -> Result<CurrentRecord, StoreError> {
        let (row, pending) = self
            .db
            .read(move |c| {
                // One read transaction: the row and the journal as of the same commit.
                c.transaction::<_, TxError, _>(|c| {
                    let row = profile_row(c, user_id)?;
                    Ok((row, pending_of(c, user_id)?))
                })
            })
            .await?;
        Ok(CurrentRecord {
            record: row.map(ProfileRow::into_record).transpose()?,
            pending: pending.map(JournalRow::into_change).transpose()?,
        })
    }

    async fn update(&self, user_id: UserId, decide: Decide) -> Result<UpdateOutcome, StoreError> {
        let gone = || StoreError::Unavailable("profiles database is closed".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.updates.send(UpdateJob { user_id, decide, reply }).map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    async fn complete_email_change(&self, id: JournalId) -> Result<(), StoreError> {
        self.db
            .write(move |c| {
                let json: String = email_journal::table
                    .find(id)
                    .filter(email_journal::state.eq(PENDING))
                    .select(email_journal::record)
                    .get_result(c)
                    .optional()?
                    .ok_or(StoreError::NotFound)?;
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
                // On the single writer inside one transaction: read and set cannot interleave.
                let held: String = email_journal::table
                    .find(id)
                    .filter(email_journal::state.eq(PENDING))
                    .select(email_journal::claimed_until)
                    .get_result(c)
                    .optional()?
                    .ok_or(StoreError::NotFound)?;
                if parse_claim(id, &held)? > now {
                    return Ok(false);
                }
                diesel::update(email_journal::table.find(id))
                    .set(email_journal::claimed_until.eq(time::format(&until)))
                    .execute(c)?;
                Ok(true)
            })
            .await
    }

    async fn pending_email_changes(&self) -> Result<Vec<EmailChange>, StoreError> {
        let rows = self.db.read(|c| Ok(diesel::sql_query(PENDING_SQL).load::<JournalRow>(c)?)).await?;
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
    use diesel::sqlite::Sqlite;

    use super::*;

    async fn store_in(dir: &tempfile::TempDir) -> ProfileStore {
        let cfg =
            DbConfig { path: dir.path().join("p.db"), pool_size: 1, busy_timeout: Duration::from_secs(5) };
        ProfileStore::open(&cfg).await.unwrap()
    }

    #[tokio::test]
    async fn load_and_pending_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let load = profiles::table.find(42_i64).select(ProfileRow::as_select());
        // debug_query prints the SQL with "-- binds: [...]" after it: an SQL comment, so
        // the text can be explained as is (unbound parameters are NULL; the plan is alike).
        let load_sql = diesel::debug_query::<Sqlite, _>(&load).to_string().replace("-- binds", "\n-- binds");
        let conn = store.db.reader_conn().await;
        let (load_plan, pending_plan) = conn
            .interact(move |c| {
                (crate::main_store::tests::plan(c, &load_sql), crate::main_store::tests::plan(c, PENDING_SQL))
            })
            .await
            .unwrap();
        assert_eq!(load_plan.len(), 1, "{load_plan:?}");
        assert!(load_plan[0].starts_with("SEARCH profiles USING INTEGER PRIMARY KEY"), "{load_plan:?}");
        assert!(
            pending_plan
                .iter()
                .all(|s| !s.starts_with("SCAN ") || s.contains("USING INDEX email_journal_pending")),
            "{pending_plan:?}"
        );
        assert!(pending_plan.iter().any(|s| s.contains("email_journal_pending")), "{pending_plan:?}");
    }

    #[derive(QueryableByName)]
    struct Opcode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        opcode: String,
    }

    /// The save builds no temporary b-tree: a CHECK's IN list of strings is coded as one,
    /// made anew for every row written (nearly a quarter of a PATCH's instructions).
    #[tokio::test]
    async fn a_save_codes_its_checks_without_temporary_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let (head, tail) = &*UPSERT_SQL;
        let sql = format!("EXPLAIN {head}{}{tail}", vec!["?"; PROFILE_COLUMNS.len()].join(", "));
        let conn = store.db.reader_conn().await;
        let ops = conn.interact(move |c| diesel::sql_query(sql).load::<Opcode>(c).unwrap()).await.unwrap();
        assert!(ops.len() > 20, "an upsert's program: {}", ops.len());
        let ephemeral = ops.iter().filter(|o| o.opcode == "OpenEphemeral").count();
        assert_eq!(ephemeral, 0, "temporary tables opened by a save");
    }

    #[derive(QueryableByName)]
    struct Rows {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        rows: Option<String>,
    }

    /// Every stored value, quoted, row by row.
    fn all_rows(c: &mut SqliteConnection) -> Option<String> {
        let row = PROFILE_COLUMNS.map(|col| format!("quote({col})")).join(" || ',' || ");
        let sql = format!(
            "SELECT group_concat(r, ';') AS rows FROM (SELECT {row} AS r FROM profiles ORDER BY user_id)"
        );
        diesel::sql_query(sql).get_result::<Rows>(c).unwrap().rows
    }

    /// The rebuild of the table (and its way back) keeps every row as it was, and the
    /// rewritten checks refuse what the old ones refused.
    #[tokio::test]
    async fn the_checks_rebuild_keeps_every_row_and_every_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let mut edited = ProfileRecord {
            version: 3,
            updated_at: Some(chrono::Utc::now()),
            ..ProfileRecord::new_default(7)
        };
        edited.fields.preferences.theme = profile_core::domain::Theme::Dark;
        edited.fields.personal.city = Some("Zürich".into());
        for record in [edited, ProfileRecord { version: 1, ..ProfileRecord::new_default(8) }] {
            store
                .db
                .write(move |c| Ok(UpsertProfile(ProfileRow::from_record(&record)).execute(c).map(drop)?))
                .await
                .unwrap();
        }
        store
            .db
            .write(|c| {
                let before = all_rows(c);
                assert!(
                    before.as_deref().is_some_and(|r| r.contains("'dark'") && r.contains("'Zürich'")),
                    "{before:?}"
                );
                c.revert_last_migration(MIGRATIONS).unwrap();
                assert_eq!(all_rows(c), before, "after the way back");
                c.run_pending_migrations(MIGRATIONS).unwrap();
                assert_eq!(all_rows(c), before, "after the rebuild");
                for (col, bad) in [("theme", "blue"), ("profile_visibility", "everyone"), ("theme", "Light")]
                {
                    let sql = format!("UPDATE profiles SET {col} = '{bad}' WHERE user_id = 7");
                    assert!(c.batch_execute(&sql).is_err(), "{col} = {bad} accepted");
                }
                c.batch_execute(
                    "UPDATE profiles SET theme = 'system', profile_visibility = 'contacts' WHERE user_id = 7",
                )
                .unwrap();
                Ok(())
            })
            .await
            .unwrap();
    }
}
