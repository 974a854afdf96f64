//! The profile representation of SPEC §4 and the stored, editable part of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::account::{AccountSnapshot, UserId};
use super::etag::EntityTag;
use super::rewards::Rewards;

/// Interface colour scheme chosen by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    /// Light colours.
    Light,
    /// Dark colours.
    Dark,
    /// Follow the device setting.
    #[default]
    System,
}

impl Theme {
    /// Every accepted spelling, as the API writes it.
    pub const NAMES: &'static [&'static str] = &["light", "dark", "system"];

    /// The variant for one of [`Theme::NAMES`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "light" => Some(Self::Light),
            "dark" => Some(Self::Dark),
            "system" => Some(Self::System),
            _ => None,
        }
    }

    /// The name as the API and the stores write it (the inverse of [`Theme::from_name`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Dark => "dark",
            Self::System => "system",
        }
    }
}

/// Who may see the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Everyone.
    Public,
    /// The user's contacts.
    Contacts,
    /// Only the user.
    #[default]
    Private,
}

impl Visibility {
    /// Every accepted spelling, as the API writes it.
    pub const NAMES: &'static [&'static str] = &["public", "contacts", "private"];

    /// The variant for one of [`Visibility::NAMES`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "public" => Some(Self::Public),
            "contacts" => Some(Self::Contacts),
            "private" => Some(Self::Private),
            _ => None,
        }
    }

    /// The name as the API and the stores write it (the inverse of [`Visibility::from_name`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Contacts => "contacts",
            Self::Private => "private",
        }
    }
}

/// Notification channels the user accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notifications {
    /// E-mail notifications.
    pub email: bool,
    /// Text messages.
    pub sms: bool,
    /// Push notifications.
    pub push: bool,
    /// Marketing messages.
    pub marketing: bool,
}

impl Default for Notifications {
    fn default() -> Self {
        Self { email: true, sms: false, push: true, marketing: false }
    }
}

/// Privacy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Privacy {
    /// Who may see the profile.
    pub profile_visibility: Visibility,
    /// Whether activity is shown to others.
    pub show_activity: bool,
}

/// The preferences section; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// BCP 47 language tag in canonical case.
    pub language: String,
    /// IANA time zone name.
    pub timezone: String,
    /// Interface theme.
    pub theme: Theme,
    /// ISO 4217 currency code, upper-case.
    pub currency: String,
    /// Notification channels.
    pub notifications: Notifications,
    /// Privacy settings.
    pub privacy: Privacy,
}

impl Preferences {
    /// Default language.
    pub const DEFAULT_LANGUAGE: &'static str = "en";
    /// Default time zone.
    pub const DEFAULT_TIMEZONE: &'static str = "UTC";
    /// Default currency.
    pub const DEFAULT_CURRENCY: &'static str = "USD";
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            language: Self::DEFAULT_LANGUAGE.to_owned(),
            timezone: Self::DEFAULT_TIMEZONE.to_owned(),
            theme: Theme::default(),
            currency: Self::DEFAULT_CURRENCY.to_owned(),
            notifications: Notifications::default(),
            privacy: Privacy::default(),
        }
    }
}

/// A postal billing address; line1, city and country are always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingAddress {
    /// First address line.
    pub line1: String,
    /// Second address line.
    pub line2: Option<String>,
    /// City.
    pub city: String,
    /// Postal code.
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 code, upper-case.
    pub country: String,
}

/// The business section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Business {
    /// Company name.
    pub company_name: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Tax identifier, upper-case.
    pub tax_id: Option<String>,
    /// Company web site.
    pub website: Option<String>,
    /// Billing address, when one is set.
    pub billing_address: Option<BillingAddress>,
}

/// The personal fields kept in the profiles database (the e-mail lives in the main one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PersonalFields {
    /// Display name; `None` until the user sets one (the username is shown then).
    pub display_name: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// E.164 phone number.
    pub phone: Option<String>,
    /// Avatar image URL.
    pub avatar_url: Option<String>,
    /// Free text about the user.
    pub bio: Option<String>,
    /// Date of birth.
    pub birth_date: Option<NaiveDate>,
    /// City.
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2 code, upper-case.
    pub country: Option<String>,
}

/// Every editable field owned by the profiles database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProfileFields {
    /// Personal details (without the e-mail).
    pub personal: PersonalFields,
    /// Preferences.
    pub preferences: Preferences,
    /// Business data.
    pub business: Business,
}

/// One user's row in the profiles database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Owner.
    pub user_id: UserId,
    /// Number of changes so far; 0 for a profile never edited.
    pub version: i64,
    /// Time of the change that set `version`; `None` while `version` is 0.
    pub updated_at: Option<DateTime<Utc>>,
    /// The editable fields.
    pub fields: ProfileFields,
}

impl ProfileRecord {
    /// The record of a user who never edited their profile.
    pub fn new_default(user_id: UserId) -> Self {
        Self { user_id, version: 0, updated_at: None, fields: ProfileFields::default() }
    }
}

/// The personal section as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Personal {
    /// Display name (the username when never set).
    pub display_name: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Account e-mail, from the main database.
    pub email: String,
    /// E.164 phone number.
    pub phone: Option<String>,
    /// Avatar image URL.
    pub avatar_url: Option<String>,
    /// Free text about the user.
    pub bio: Option<String>,
    /// Date of birth.
    #[serde(serialize_with = "super::timetext::date_opt")]
    pub birth_date: Option<NaiveDate>,
    /// City.
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
}

/// The statistics section, derived from the main database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statistics {
    /// Account creation time.
    #[serde(serialize_with = "super::timetext::time")]
    pub member_since: DateTime<Utc>,
    /// Last login, if any.
    #[serde(serialize_with = "super::timetext::time_opt")]
    pub last_login_at: Option<DateTime<Utc>>,
    /// Number of logins.
    pub login_count: i64,
    /// Completed orders.
    pub orders_count: i64,
    /// Sum of completed orders, in cents.
    pub total_spent_cents: i64,
    /// Time of the latest completed order.
    #[serde(serialize_with = "super::timetext::time_opt")]
    pub last_order_at: Option<DateTime<Utc>>,
    /// `floor(100 × set / 12)` over the twelve completeness fields.
    pub profile_completeness: u8,
}

/// The complete profile except the rewards, which are composed per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// Owner.
    pub user_id: UserId,
    /// Number of changes so far.
    pub version: i64,
    /// Account creation time.
    #[serde(serialize_with = "super::timetext::time")]
    pub created_at: DateTime<Utc>,
    /// Time of the last change that bumped `version`.
    #[serde(serialize_with = "super::timetext::time_opt")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Personal details.
    pub personal: Personal,
    /// Preferences.
    pub preferences: Preferences,
    /// Statistics.
    pub statistics: Statistics,
    /// Business data.
    pub business: Business,
}

impl Profile {
    /// Builds the served profile from the account (main database) and the record (profiles database).
    pub fn assemble(account: &AccountSnapshot, record: &ProfileRecord) -> Self {
        let fields = &record.fields;
        let p = &fields.personal;
        let b = &fields.business;
        let display_name = p.display_name.clone().unwrap_or_else(|| account.username.clone());
        // display_name always has a value (the username at worst), so it always counts.
        let set = [
            p.first_name.is_some(),
            p.last_name.is_some(),
            p.phone.is_some(),
            p.avatar_url.is_some(),
            p.bio.is_some(),
            p.birth_date.is_some(),
            p.city.is_some(),
            p.country.is_some(),
            b.company_name.is_some(),
            b.job_title.is_some(),
            b.website.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count()
            + 1;
        let completeness = u8::try_from(100 * set / 12).unwrap_or(100);
        Self {
            user_id: account.id,
            version: record.version,
            created_at: account.created_at,
            updated_at: record.updated_at,
            personal: Personal {
                display_name,
                first_name: p.first_name.clone(),
                last_name: p.last_name.clone(),
                email: account.email.clone(),
                phone: p.phone.clone(),
                avatar_url: p.avatar_url.clone(),
                bio: p.bio.clone(),
                birth_date: p.birth_date,
                city: p.city.clone(),
                country: p.country.clone(),
            },
            preferences: fields.preferences.clone(),
            statistics: Statistics {
                member_since: account.created_at,
                last_login_at: account.last_login_at,
                login_count: account.login_count,
                orders_count: account.orders.orders_count,
                total_spent_cents: account.orders.total_spent_cents,
                last_order_at: account.orders.last_order_at,
                profile_completeness: completeness,
            },
            business: b.clone(),
        }
    }
}

/// An assembled profile with its serialised JSON and a fingerprint of it, as cached:
/// a cached read then serialises only the small rewards part.
///
/// It also keeps what it was assembled from, for the profile TTL: the account as read
/// from the main database (when known) and when the databases were read. A `PATCH`
/// applies to the account the cache shows, so a client's `If-Match` names the state
/// it was served; the snapshot it leaves keeps that account's read time, so no copy is
/// served more than the TTL after its account was read (SPEC §10).
#[derive(Debug, Clone)]
pub struct ProfileSnapshot {
    /// The profile.
    pub profile: Profile,
    /// Hash of the profile's JSON; the ETag is derived from it and the rewards balance.
    pub fingerprint: u128,
    /// The profile's JSON object (without rewards).
    json: Box<[u8]>,
    /// The account the profile shows, when the snapshot was assembled from one.
    account: Option<AccountSnapshot>,
    /// When the oldest data in the profile was read from the databases.
    read_at: Instant,
}

/// Two snapshots are equal when they show the same profile, however they were made.
impl PartialEq for ProfileSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.json == other.json && self.profile == other.profile
    }
}

impl Eq for ProfileSnapshot {}

/// The buffer a snapshot's JSON starts in: a profile with every field set is about
/// 1.2 KB, a new one about 0.8 KB (at most one growth either way).
const JSON_CAPACITY: usize = 1024;

impl ProfileSnapshot {
    /// Wraps a profile read just now, serialising and fingerprinting it once. It keeps
    /// no account: an update of it reads the account again.
    pub fn new(profile: Profile) -> Arc<Self> {
        Self::restored(profile, None, Instant::now())
    }

    /// The profile of `account` and `record`, both read from the databases at
    /// `read_at`, keeping the account (the one shown, e-mail included).
    pub fn of(account: &AccountSnapshot, record: &ProfileRecord, read_at: Instant) -> Arc<Self> {
        Self::restored(Profile::assemble(account, record), Some(account.clone()), read_at)
    }

    /// A profile read from the databases at `read_at` (as another cache level kept it),
    /// with the account it shows if known.
    pub fn restored(profile: Profile, account: Option<AccountSnapshot>, read_at: Instant) -> Arc<Self> {
        // Serialising plain data into a Vec cannot fail. Started at a typical profile's
        // size, so the buffer is not grown from empty through eight reallocations.
        let mut json = Vec::with_capacity(JSON_CAPACITY);
        if serde_json::to_writer(&mut json, &profile).is_err() {
            json.clear();
        }
        let json = json.into_boxed_slice();
        let fingerprint = xxhash_rust::xxh3::xxh3_128(&json);
        Arc::new(Self { profile, fingerprint, json, account, read_at })
    }

    /// The profile's JSON object, without rewards.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The account the profile shows, when the snapshot keeps it.
    pub fn account(&self) -> Option<&AccountSnapshot> {
        self.account.as_ref()
    }

    /// When the oldest data in the profile was read from the databases.
    pub fn read_instant(&self) -> Instant {
        self.read_at
    }

    /// How long ago that was.
    pub fn age(&self) -> Duration {
        self.read_at.elapsed()
    }

    /// Whether it may still be served under a profile TTL of `ttl`.
    pub fn fresh_within(&self, ttl: Duration) -> bool {
        self.age() < ttl
    }
}

/// What a read or an update returns: the cached part and the rewards of this request.
#[derive(Debug, Clone)]
pub struct ProfileView {
    /// The profile without rewards (shared with the cache).
    pub snapshot: Arc<ProfileSnapshot>,
    /// The rewards balance composed for this request.
    pub rewards: Rewards,
}

/// `n` as 32 lower-case hex digits (what `format!("{n:032x}")` writes, without the
/// formatting machinery: this runs on every read).
fn hex32(n: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, c) in text.iter_mut().enumerate() {
        *c = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are ASCII: the check always passes (and is cheaper than the lossy
    // conversion's chunking).
    std::str::from_utf8(&text).map(str::to_owned).unwrap_or_default()
}

/// The ETag's hash: xxh3-128 of the fingerprint and the points (little-endian), then 1
/// and the tier's bytes, or 0 when there is no tier. Hashed in one call from the stack
/// when the input fits (the streaming hasher's state costs more to set up than a short
/// input costs to hash); the digest is the same either way.
fn etag_digest(fingerprint: u128, points: i64, tier: Option<&str>) -> u128 {
    const ROOM: usize = 128;
    const FIXED: usize = 16 + 8 + 1;
    let tier = tier.map(str::as_bytes);
    if let Some(t) = tier.filter(|t| FIXED + t.len() > ROOM) {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&fingerprint.to_le_bytes());
        h.update(&points.to_le_bytes());
        h.update(&[1]);
        h.update(t);
        return h.digest128();
    }
    let mut buf = [0u8; ROOM];
    buf[..16].copy_from_slice(&fingerprint.to_le_bytes());
    buf[16..24].copy_from_slice(&points.to_le_bytes());
    let mut len = FIXED;
    if let Some(t) = tier {
        buf[24] = 1;
        buf[FIXED..FIXED + t.len()].copy_from_slice(t);
        len += t.len();
    }
    xxhash_rust::xxh3::xxh3_128(&buf[..len])
}

impl ProfileView {
    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.snapshot.profile
    }

    /// Strong entity tag over everything but `rewards.status` and `rewards.as_of`
    /// (opaque: HTTP quotes it, gRPC sends it bare).
    pub fn etag(&self) -> EntityTag {
        EntityTag::new(hex32(etag_digest(
            self.snapshot.fingerprint,
            self.rewards.points,
            self.rewards.tier.as_deref(),
        )))
    }

    /// The JSON document of SPEC §4: the cached profile object with `rewards` appended.
    pub fn to_json(&self) -> Vec<u8> {
        let profile = self.snapshot.json();
        let open = profile.strip_suffix(b"}").unwrap_or(profile);
        let mut out = Vec::with_capacity(profile.len() + 112);
        out.extend_from_slice(open);
        out.extend_from_slice(b",\"rewards\":");
        self.rewards.write_json(&mut out);
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in Theme::NAMES {
            assert_eq!(Theme::from_name(n).map(Theme::name), Some(*n));
        }
        for n in Visibility::NAMES {
            assert_eq!(Visibility::from_name(n).map(Visibility::name), Some(*n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{etag_digest, hex32};

    /// The digest as the streaming hasher computes it, piece by piece.
    fn streamed(fingerprint: u128, points: i64, tier: Option<&str>) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&fingerprint.to_le_bytes());
        h.update(&points.to_le_bytes());
        match tier {
            Some(t) => {
                h.update(&[1]);
                h.update(t.as_bytes());
            }
            None => h.update(&[0]),
        }
        h.digest128()
    }

    #[test]
    fn the_etag_digest_is_the_streamed_one_for_every_tier_length() {
        let long = "é".repeat(200);
        for (fp, points) in
            [(0, 0), (1, -1), (u128::MAX, i64::MAX), (0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 1234)]
        {
            assert_eq!(etag_digest(fp, points, None), streamed(fp, points, None));
            for n in 0..=long.len() {
                let Some(tier) = long.get(..n) else { continue };
                assert_eq!(
                    etag_digest(fp, points, Some(tier)),
                    streamed(fp, points, Some(tier)),
                    "tier of {n} bytes"
                );
            }
        }
        assert_ne!(etag_digest(7, 0, None), etag_digest(7, 0, Some("")), "no tier is not an empty tier");
    }

    #[test]
    fn hex32_is_zero_padded_lower_hex() {
        for n in [0, 1, 0xabc, u128::from(u64::MAX), u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            assert_eq!(hex32(n), format!("{n:032x}"));
        }
    }
}
