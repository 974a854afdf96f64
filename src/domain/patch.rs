//! `ProfileUpdate`: a JSON Merge Patch (RFC 7396) of the editable fields, parsed and
//! validated in one pass that collects every problem, then merged into a record.
//!
//! Three steps, every problem of the first two reported together:
//! 1. the structural pass walks the JSON document: unknown and read-only keys, wrong JSON
//!    types, `null` on a required field; it builds a `PatchDocument` of raw values;
//! 2. garde validates that document: each field's rule is declared at the field
//!    (`#[garde(custom(…))]`, nested sections with `#[garde(dive)]`); the rules are
//!    custom because garde's built-ins neither give SPEC's stable codes nor trim before
//!    counting characters;
//! 3. the valid raw values become the typed values of [`ProfileUpdate`].

use chrono::NaiveDate;
use serde_json::{Map, Value};

use super::error::FieldError;
use super::profile::{BillingAddress, Notifications, Preferences, Privacy, ProfileFields, Theme, Visibility};
use super::rules::{self, Issue};
use super::values::{
    AddressLine, Bio, BusinessText, CountryCode, CurrencyCode, DisplayName, Email, FieldValue, LanguageTag,
    PersonName, Phone, PostalCode, TaxId, TimeZone, WebUrl,
};

/// One field of a merge patch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    /// The key was not sent: leave the field as it is.
    #[default]
    Absent,
    /// The key was `null`: clear the field, or reset it to its default.
    Null,
    /// A new, valid value.
    Value(T),
}

impl<T> Patch<T> {
    /// Applies to an optional field of the record, converting the value with `into`.
    fn merge_opt_with<U>(&self, current: &mut Option<U>, into: impl FnOnce(&T) -> U) {
        match self {
            Patch::Absent => {}
            Patch::Null => *current = None,
            Patch::Value(v) => *current = Some(into(v)),
        }
    }

    /// Applies to a field of the record with a default, converting the value with `into`.
    fn merge_default_with<U>(
        &self,
        current: &mut U,
        default: impl FnOnce() -> U,
        into: impl FnOnce(&T) -> U,
    ) {
        match self {
            Patch::Absent => {}
            Patch::Null => *current = default(),
            Patch::Value(v) => *current = into(v),
        }
    }

    /// The same patch with the value converted by `f`; a value `f` refuses becomes
    /// `Absent` (the refusal was reported by validation).
    fn and_then<U>(&self, f: impl FnOnce(&T) -> Option<U>) -> Patch<U> {
        match self {
            Patch::Absent => Patch::Absent,
            Patch::Null => Patch::Null,
            Patch::Value(v) => f(v).map_or(Patch::Absent, Patch::Value),
        }
    }
}

impl<T: Clone> Patch<T> {
    /// Applies to an optional field.
    fn merge_opt(&self, current: &mut Option<T>) {
        self.merge_opt_with(current, T::clone);
    }

    /// Applies to a field with a default.
    fn merge_default(&self, current: &mut T, default: impl FnOnce() -> T) {
        self.merge_default_with(current, default, T::clone);
    }
}

impl<T: AsRef<str>> Patch<T> {
    /// Applies a text value to an optional field of the record, which keeps strings.
    fn merge_text(&self, current: &mut Option<String>) {
        self.merge_opt_with(current, text);
    }
}

/// A validated value as the record's string.
fn text(v: &impl AsRef<str>) -> String {
    v.as_ref().to_owned()
}

impl Patch<String> {
    /// The typed value of a raw text, `Absent` when its rule refuses it.
    fn parsed<V: FieldValue>(&self) -> Patch<V> {
        self.and_then(|s| V::parse(s).ok())
    }
}

/// Nested sections validate only when sent as an object.
impl<T: garde::Validate> garde::Validate for Patch<T> {
    type Context = T::Context;

    fn validate_into(
        &self,
        ctx: &Self::Context,
        parent: &mut dyn FnMut() -> garde::Path,
        report: &mut garde::Report,
    ) {
        if let Patch::Value(v) = self {
            v.validate_into(ctx, parent, report);
        }
    }
}

/// Field patches of a billing address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BillingAddressPatch {
    /// `line1`.
    pub line1: Patch<AddressLine>,
    /// `line2`.
    pub line2: Patch<AddressLine>,
    /// `city`.
    pub city: Patch<AddressLine>,
    /// `postal_code`.
    pub postal_code: Patch<PostalCode>,
    /// `country`.
    pub country: Patch<CountryCode>,
}

/// Field patches of the notification switches (`Null` resets to the default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotificationsPatch {
    /// `email`.
    pub email: Patch<bool>,
    /// `sms`.
    pub sms: Patch<bool>,
    /// `push`.
    pub push: Patch<bool>,
    /// `marketing`.
    pub marketing: Patch<bool>,
}

/// Field patches of the privacy settings (`Null` resets to the default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrivacyPatch {
    /// `profile_visibility`.
    pub profile_visibility: Patch<Visibility>,
    /// `show_activity`.
    pub show_activity: Patch<bool>,
}

/// A validated merge patch of everything editable. Every value it holds is valid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileUpdate {
    /// `personal.display_name` (never `Null`).
    pub display_name: Patch<DisplayName>,
    /// `personal.first_name`.
    pub first_name: Patch<PersonName>,
    /// `personal.last_name`.
    pub last_name: Patch<PersonName>,
    /// `personal.email`, lower-cased (never `Null`).
    pub email: Patch<Email>,
    /// `personal.phone`.
    pub phone: Patch<Phone>,
    /// `personal.avatar_url`.
    pub avatar_url: Patch<WebUrl>,
    /// `personal.bio`.
    pub bio: Patch<Bio>,
    /// `personal.birth_date`.
    pub birth_date: Patch<NaiveDate>,
    /// `personal.city`.
    pub city: Patch<PersonName>,
    /// `personal.country`, upper-case.
    pub country: Patch<CountryCode>,
    /// `preferences.language`.
    pub language: Patch<LanguageTag>,
    /// `preferences.timezone`.
    pub timezone: Patch<TimeZone>,
    /// `preferences.theme`.
    pub theme: Patch<Theme>,
    /// `preferences.currency`.
    pub currency: Patch<CurrencyCode>,
    /// `preferences.notifications`: `Null` resets all switches, an object merges key by key.
    pub notifications: Patch<NotificationsPatch>,
    /// `preferences.privacy`: `Null` resets it, an object merges key by key.
    pub privacy: Patch<PrivacyPatch>,
    /// `business.company_name`.
    pub company_name: Patch<BusinessText>,
    /// `business.job_title`.
    pub job_title: Patch<BusinessText>,
    /// `business.tax_id`.
    pub tax_id: Patch<TaxId>,
    /// `business.website`.
    pub website: Patch<WebUrl>,
    /// `business.billing_address`: `Null` removes it, an object merges into the current one.
    pub billing_address: Patch<BillingAddressPatch>,
}

/// A patch as a transport built it: its valid part and every problem found while
/// building it. The service reports those problems together with the ones that need the
/// stored state (a billing address incomplete after merging), in one refusal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedUpdate {
    /// The valid part of the patch.
    pub update: ProfileUpdate,
    /// Every problem found while building it (empty when the patch is valid).
    pub problems: Vec<FieldError>,
}

// ---------------------------------------------------------------------------------------
// The raw document garde validates: the structure the JSON had, the values as sent.
// Field names are the JSON keys, so garde's paths are SPEC's dotted paths.
// ---------------------------------------------------------------------------------------

/// garde's context: the day the age rule counts from.
type Today = NaiveDate;

/// A garde rule from a [`FieldValue`]: the raw text must parse as `V`.
fn valid<V: FieldValue>(field: &Patch<String>, _today: &Today) -> garde::Result {
    match field {
        Patch::Value(s) => V::parse(s).map(drop).map_err(to_garde),
        Patch::Absent | Patch::Null => Ok(()),
    }
}

/// The rule of `birth_date`, the one that needs the context.
fn valid_birth_date(field: &Patch<String>, today: &Today) -> garde::Result {
    match field {
        Patch::Value(s) => rules::birth_date(s, *today).map(drop).map_err(to_garde),
        Patch::Absent | Patch::Null => Ok(()),
    }
}

/// garde's errors carry a message only: the stable code rides in front of it, as
/// `code: message`, and [`from_garde`] takes it back out.
fn to_garde(issue: Issue) -> garde::Error {
    garde::Error::new(format!("{}: {}", issue.code, issue.message))
}

/// One entry of garde's report as the client's [`FieldError`].
fn from_garde(path: &garde::Path, error: &garde::Error) -> FieldError {
    let (code, message) = error.message().split_once(": ").unwrap_or(("invalid", error.message()));
    let code = rules::CODES.iter().copied().find(|c| *c == code).unwrap_or("invalid");
    FieldError::new(path.to_string(), code, message)
}

/// The whole patch document, as sent.
#[derive(Debug, Default, garde::Validate)]
#[garde(context(Today))]
struct PatchDocument {
    /// `personal`.
    #[garde(dive)]
    personal: Patch<PersonalDocument>,
    /// `preferences`.
    #[garde(dive)]
    preferences: Patch<PreferencesDocument>,
    /// `business`.
    #[garde(dive)]
    business: Patch<BusinessDocument>,
}

/// `personal`, as sent.
#[derive(Debug, Default, garde::Validate)]
#[garde(context(Today))]
struct PersonalDocument {
    #[garde(custom(valid::<DisplayName>))]
    display_name: Patch<String>,
    #[garde(custom(valid::<PersonName>))]
    first_name: Patch<String>,
    #[garde(custom(valid::<PersonName>))]
    last_name: Patch<String>,
    #[garde(custom(valid::<Email>))]
    email: Patch<String>,
    #[garde(custom(valid::<Phone>))]
    phone: Patch<String>,
    #[garde(custom(valid::<WebUrl>))]
    avatar_url: Patch<String>,
    #[garde(custom(valid::<Bio>))]
    bio: Patch<String>,
    #[garde(custom(valid_birth_date))]
    birth_date: Patch<String>,
    #[garde(custom(valid::<PersonName>))]
    city: Patch<String>,
    #[garde(custom(valid::<CountryCode>))]
    country: Patch<String>,
}

/// `preferences`, as sent.
#[derive(Debug, Default, garde::Validate)]
#[garde(context(Today))]
struct PreferencesDocument {
    #[garde(custom(valid::<LanguageTag>))]
    language: Patch<String>,
    #[garde(custom(valid::<TimeZone>))]
    timezone: Patch<String>,
    #[garde(custom(valid::<Theme>))]
    theme: Patch<String>,
    #[garde(custom(valid::<CurrencyCode>))]
    currency: Patch<String>,
    /// JSON booleans: the structural pass is their whole rule.
    #[garde(skip)]
    notifications: Patch<NotificationsPatch>,
    #[garde(dive)]
    privacy: Patch<PrivacyDocument>,
}

/// `preferences.privacy`, as sent.
#[derive(Debug, Default, garde::Validate)]
#[garde(context(Today))]
struct PrivacyDocument {
    #[garde(custom(valid::<Visibility>))]
    profile_visibility: Patch<String>,
    #[garde(skip)]
    show_activity: Patch<bool>,
}

/// `business`, as sent.
#[derive(Debug, Default, garde::Validate)]
#[garde(context(Today))]
struct BusinessDocument {
    #[garde(custom(valid::<BusinessText>))]
    company_name: Patch<String>,
    #[garde(custom(valid::<BusinessText>))]
    job_title: Patch<String>,
    #[garde(custom(valid::<TaxId>))]
    tax_id: Patch<String>,
    #[garde(custom(valid::<WebUrl>))]
    website: Patch<String>,
    #[garde(dive)]
    billing_address: Patch<BillingAddressDocument>,
}

/// `business.billing_address`, as sent.
#[derive(Debug, Default, garde::Validate)]
#[garde(context(Today))]
struct BillingAddressDocument {
    #[garde(custom(valid::<AddressLine>))]
    line1: Patch<String>,
    #[garde(custom(valid::<AddressLine>))]
    line2: Patch<String>,
    #[garde(custom(valid::<AddressLine>))]
    city: Patch<String>,
    #[garde(custom(valid::<PostalCode>))]
    postal_code: Patch<String>,
    #[garde(custom(valid::<CountryCode>))]
    country: Patch<String>,
}

impl PatchDocument {
    /// The typed update: each value its rule accepts (the others were reported).
    fn into_update(self, today: Today) -> ProfileUpdate {
        let mut u = ProfileUpdate::default();
        if let Patch::Value(p) = &self.personal {
            u.display_name = p.display_name.parsed();
            u.first_name = p.first_name.parsed();
            u.last_name = p.last_name.parsed();
            u.email = p.email.parsed();
            u.phone = p.phone.parsed();
            u.avatar_url = p.avatar_url.parsed();
            u.bio = p.bio.parsed();
            u.birth_date = p.birth_date.and_then(|s| rules::birth_date(s, today).ok());
            u.city = p.city.parsed();
            u.country = p.country.parsed();
        }
        if let Patch::Value(p) = self.preferences {
            u.language = p.language.parsed();
            u.timezone = p.timezone.parsed();
            u.theme = p.theme.parsed();
            u.currency = p.currency.parsed();
            u.notifications = p.notifications;
            u.privacy = p.privacy.and_then(|v| {
                Some(PrivacyPatch {
                    profile_visibility: v.profile_visibility.parsed(),
                    show_activity: v.show_activity.clone(),
                })
            });
        }
        if let Patch::Value(b) = &self.business {
            u.company_name = b.company_name.parsed();
            u.job_title = b.job_title.parsed();
            u.tax_id = b.tax_id.parsed();
            u.website = b.website.parsed();
            u.billing_address = b.billing_address.and_then(|a| {
                Some(BillingAddressPatch {
                    line1: a.line1.parsed(),
                    line2: a.line2.parsed(),
                    city: a.city.parsed(),
                    postal_code: a.postal_code.parsed(),
                    country: a.country.parsed(),
                })
            });
        }
        u
    }
}

// ---------------------------------------------------------------------------------------
// The structural pass.
// ---------------------------------------------------------------------------------------

const READ_ONLY: &[&str] = &["user_id", "version", "created_at", "updated_at", "statistics", "rewards"];

/// Collects the structural problems while walking the patch document.
struct Walker<'a> {
    errors: &'a mut Vec<FieldError>,
}

impl Walker<'_> {
    /// The object at `path`, reporting unknown keys; `None` when it is not an object.
    fn object<'v>(&mut self, path: &str, value: &'v Value, known: &[&str]) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.errors.push(FieldError::new(path, "invalid_type", "must be an object"));
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                self.errors.push(FieldError::new(
                    format!("{path}.{key}"),
                    "unknown_field",
                    "is not a field of the profile",
                ));
            }
        }
        Some(map)
    }

    /// A nested object walked by `walk`, or `null` inside a section (a top-level section
    /// sent as `null` is a type error, as before).
    fn section<T>(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        key: &str,
        known: &[&str],
        walk: impl FnOnce(&mut Self, &Map<String, Value>, &str) -> T,
    ) -> Patch<T> {
        let top = path.is_empty();
        let path = if top { key.to_owned() } else { format!("{path}.{key}") };
        match map.get(key) {
            None => Patch::Absent,
            // A top-level section cannot be `null`: there is nothing to clear as a whole.
            Some(Value::Null) if !top => Patch::Null,
            Some(v) => match self.object(&path, v, known) {
                Some(m) => Patch::Value(walk(self, m, &path)),
                None => Patch::Absent,
            },
        }
    }

    /// A string field, as sent. `nullable` false makes `null` an error.
    fn string(
        &mut self,
        map: &Map<String, Value>,
        section: &str,
        key: &str,
        nullable: bool,
    ) -> Patch<String> {
        let path = format!("{section}.{key}");
        match map.get(key) {
            None => Patch::Absent,
            Some(Value::Null) if nullable => Patch::Null,
            Some(Value::Null) => {
                self.errors.push(FieldError::new(path, "required", "cannot be null: this field is required"));
                Patch::Absent
            }
            Some(Value::String(s)) => Patch::Value(s.clone()),
            Some(_) => {
                self.errors.push(FieldError::new(path, "invalid_type", "must be a string or null"));
                Patch::Absent
            }
        }
    }

    fn boolean(&mut self, map: &Map<String, Value>, section: &str, key: &str) -> Patch<bool> {
        match map.get(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(Value::Bool(b)) => Patch::Value(*b),
            Some(_) => {
                self.errors.push(FieldError::new(
                    format!("{section}.{key}"),
                    "invalid_type",
                    "must be true, false or null",
                ));
                Patch::Absent
            }
        }
    }

    fn personal(&mut self, m: &Map<String, Value>, s: &str) -> PersonalDocument {
        PersonalDocument {
            display_name: self.string(m, s, "display_name", false),
            first_name: self.string(m, s, "first_name", true),
            last_name: self.string(m, s, "last_name", true),
            email: self.string(m, s, "email", false),
            phone: self.string(m, s, "phone", true),
            avatar_url: self.string(m, s, "avatar_url", true),
            bio: self.string(m, s, "bio", true),
            birth_date: self.string(m, s, "birth_date", true),
            city: self.string(m, s, "city", true),
            country: self.string(m, s, "country", true),
        }
    }

    fn preferences(&mut self, m: &Map<String, Value>, s: &str) -> PreferencesDocument {
        PreferencesDocument {
            language: self.string(m, s, "language", true),
            timezone: self.string(m, s, "timezone", true),
            theme: self.string(m, s, "theme", true),
            currency: self.string(m, s, "currency", true),
            notifications: self.section(
                m,
                s,
                "notifications",
                &["email", "sms", "push", "marketing"],
                |w, n, p| NotificationsPatch {
                    email: w.boolean(n, p, "email"),
                    sms: w.boolean(n, p, "sms"),
                    push: w.boolean(n, p, "push"),
                    marketing: w.boolean(n, p, "marketing"),
                },
            ),
            privacy: self.section(m, s, "privacy", &["profile_visibility", "show_activity"], |w, v, p| {
                PrivacyDocument {
                    profile_visibility: w.string(v, p, "profile_visibility", true),
                    show_activity: w.boolean(v, p, "show_activity"),
                }
            }),
        }
    }

    fn business(&mut self, m: &Map<String, Value>, s: &str) -> BusinessDocument {
        const ADDRESS: &[&str] = &["line1", "line2", "city", "postal_code", "country"];
        BusinessDocument {
            company_name: self.string(m, s, "company_name", true),
            job_title: self.string(m, s, "job_title", true),
            tax_id: self.string(m, s, "tax_id", true),
            website: self.string(m, s, "website", true),
            billing_address: self.section(m, s, "billing_address", ADDRESS, |w, a, p| {
                BillingAddressDocument {
                    line1: w.string(a, p, "line1", true),
                    line2: w.string(a, p, "line2", true),
                    city: w.string(a, p, "city", true),
                    postal_code: w.string(a, p, "postal_code", true),
                    country: w.string(a, p, "country", true),
                }
            }),
        }
    }
}

const PERSONAL: &[&str] = &[
    "display_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "avatar_url",
    "bio",
    "birth_date",
    "city",
    "country",
];
const PREFERENCES: &[&str] = &["language", "timezone", "theme", "currency", "notifications", "privacy"];
const BUSINESS: &[&str] = &["company_name", "job_title", "tax_id", "website", "billing_address"];

impl PatchDocument {
    /// The structural pass: the document's shape, its raw values, and the structural
    /// problems (unknown and read-only keys, wrong JSON types, `null` on a required field).
    fn read(doc: &Value) -> (Self, Vec<FieldError>) {
        let mut errors = Vec::new();
        let Value::Object(top) = doc else {
            return (
                Self::default(),
                vec![FieldError::new("", "invalid_type", "the patch must be a JSON object")],
            );
        };
        let mut w = Walker { errors: &mut errors };
        let document = PatchDocument {
            personal: w.section(top, "", "personal", PERSONAL, Walker::personal),
            preferences: w.section(top, "", "preferences", PREFERENCES, Walker::preferences),
            business: w.section(top, "", "business", BUSINESS, Walker::business),
        };
        for key in top.keys().map(String::as_str) {
            match key {
                "personal" | "preferences" | "business" => {}
                k if READ_ONLY.contains(&k) => {
                    errors.push(FieldError::new(k, "read_only", "is read-only and cannot be changed"))
                }
                k => errors.push(FieldError::new(k, "unknown_field", "is not a field of the profile")),
            }
        }
        (document, errors)
    }
}

impl ProfileUpdate {
    /// Parses and validates a merge-patch document. `today` anchors the age rule.
    ///
    /// Every problem is reported at once: unknown and read-only keys, wrong JSON types,
    /// `null` on a required field, and every rule of SPEC §5.
    pub fn parse(doc: &Value, today: NaiveDate) -> Result<Self, Vec<FieldError>> {
        let (update, errors) = Self::parse_partial(doc, today);
        if errors.is_empty() { Ok(update) } else { Err(errors) }
    }

    /// Like [`parse`](Self::parse), but also returns the valid part of an invalid
    /// document, so that checks needing the stored state (a billing address complete
    /// after merging) can still run and be reported in the same response.
    pub fn parse_partial(doc: &Value, today: NaiveDate) -> (Self, Vec<FieldError>) {
        let (document, mut errors) = PatchDocument::read(doc);
        if let Err(report) = garde::Validate::validate_with(&document, &today) {
            errors.extend(report.iter().map(|(path, e)| from_garde(path, e)));
        }
        (document.into_update(today), errors)
    }

    /// The one validation path of every transport: a merge-patch document (HTTP sends
    /// one; gRPC builds one from its message and field mask) into a [`ParsedUpdate`].
    pub fn from_merge_patch(doc: &Value, today: NaiveDate) -> ParsedUpdate {
        let (update, problems) = Self::parse_partial(doc, today);
        ParsedUpdate { update, problems }
    }
}

impl ProfileUpdate {
    /// Merges the patch into `fields` and the account's e-mail and username. Returns the
    /// new fields and, when it differs from `current_email`, the new e-mail. Fails with
    /// the cross-field problems (a billing address missing line1, city or country after
    /// the merge).
    pub fn apply(
        &self,
        fields: &ProfileFields,
        current_email: &str,
        username: &str,
    ) -> Result<(ProfileFields, Option<String>), Vec<FieldError>> {
        let mut f = fields.clone();
        let p = &mut f.personal;
        match &self.display_name {
            // Sending back the username shown for an unset display name changes nothing.
            Patch::Value(v) if p.display_name.is_none() && v.as_str() == username => {}
            Patch::Value(v) => p.display_name = Some(v.as_str().to_owned()),
            _ => {}
        }
        self.first_name.merge_text(&mut p.first_name);
        self.last_name.merge_text(&mut p.last_name);
        self.phone.merge_text(&mut p.phone);
        self.avatar_url.merge_text(&mut p.avatar_url);
        self.bio.merge_text(&mut p.bio);
        self.birth_date.merge_opt(&mut p.birth_date);
        self.city.merge_text(&mut p.city);
        self.country.merge_text(&mut p.country);

        let pr = &mut f.preferences;
        self.language.merge_default_with(&mut pr.language, || Preferences::DEFAULT_LANGUAGE.to_owned(), text);
        self.timezone.merge_default_with(&mut pr.timezone, || Preferences::DEFAULT_TIMEZONE.to_owned(), text);
        self.theme.merge_default(&mut pr.theme, Theme::default);
        self.currency.merge_default_with(&mut pr.currency, || Preferences::DEFAULT_CURRENCY.to_owned(), text);
        match &self.notifications {
            Patch::Absent => {}
            Patch::Null => pr.notifications = Notifications::default(),
            Patch::Value(n) => {
                let d = Notifications::default();
                let cur = &mut pr.notifications;
                n.email.merge_default(&mut cur.email, || d.email);
                n.sms.merge_default(&mut cur.sms, || d.sms);
                n.push.merge_default(&mut cur.push, || d.push);
                n.marketing.merge_default(&mut cur.marketing, || d.marketing);
            }
        }
        match &self.privacy {
            Patch::Absent => {}
            Patch::Null => pr.privacy = Privacy::default(),
            Patch::Value(v) => {
                let d = Privacy::default();
                let cur = &mut pr.privacy;
                v.profile_visibility.merge_default(&mut cur.profile_visibility, || d.profile_visibility);
                v.show_activity.merge_default(&mut cur.show_activity, || d.show_activity);
            }
        }

        let b = &mut f.business;
        self.company_name.merge_text(&mut b.company_name);
        self.job_title.merge_text(&mut b.job_title);
        self.tax_id.merge_text(&mut b.tax_id);
        self.website.merge_text(&mut b.website);
        match &self.billing_address {
            Patch::Absent => {}
            Patch::Null => b.billing_address = None,
            Patch::Value(ap) => {
                // Work on optional parts so a partial address can be reported precisely.
                let cur = b.billing_address.as_ref();
                let mut line1 = cur.map(|a| a.line1.clone());
                let mut line2 = cur.and_then(|a| a.line2.clone());
                let mut city = cur.map(|a| a.city.clone());
                let mut postal_code = cur.and_then(|a| a.postal_code.clone());
                let mut country = cur.map(|a| a.country.clone());
                ap.line1.merge_text(&mut line1);
                ap.line2.merge_text(&mut line2);
                ap.city.merge_text(&mut city);
                ap.postal_code.merge_text(&mut postal_code);
                ap.country.merge_text(&mut country);
                match (line1, city, country) {
                    (Some(line1), Some(city), Some(country)) => {
                        b.billing_address = Some(BillingAddress { line1, line2, city, postal_code, country });
                    }
                    (line1, city, country) => {
                        let missing = [
                            ("line1", line1.is_none()),
                            ("city", city.is_none()),
                            ("country", country.is_none()),
                        ];
                        return Err(missing
                            .iter()
                            .filter(|(_, m)| *m)
                            .map(|(k, _)| {
                                FieldError::new(
                                    format!("business.billing_address.{k}"),
                                    "required",
                                    "a billing address needs line1, city and country",
                                )
                            })
                            .collect());
                    }
                }
            }
        }

        let new_email = match &self.email {
            Patch::Value(e) if e.as_str() != current_email => Some(e.as_str().to_owned()),
            _ => None,
        };
        Ok((f, new_email))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn problems(doc: Value) -> Vec<(String, &'static str, String)> {
        let mut v: Vec<_> = ProfileUpdate::from_merge_patch(&doc, today())
            .problems
            .into_iter()
            .map(|e| (e.field, e.code, e.message))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn garde_reports_nested_rules_by_dotted_path_with_codes_and_messages() {
        let got = problems(json!({
            "preferences": { "privacy": { "profile_visibility": "friends" }, "language": "en_GB" },
            "business": { "billing_address": { "country": "AA", "postal_code": "1234567890abcdefg" } },
            "personal": { "bio": "a\tb", "birth_date": "2020-01-01" }
        }));
        let want = vec![
            (
                "business.billing_address.country",
                "invalid_country",
                "must be an ISO 3166-1 alpha-2 country code such as GB",
            ),
            ("business.billing_address.postal_code", "too_long", "must be at most 16 characters"),
            (
                "personal.bio",
                "control_characters",
                "must not contain control or invisible formatting characters other than line breaks",
            ),
            ("personal.birth_date", "age_out_of_range", "age must be between 13 and 130 years"),
            (
                "preferences.language",
                "invalid_language",
                "must be a BCP 47 language tag such as en, en-GB or zh-Hant-TW",
            ),
            (
                "preferences.privacy.profile_visibility",
                "invalid_choice",
                "must be one of: public, contacts, private",
            ),
        ];
        let want: Vec<_> = want.into_iter().map(|(f, c, m)| (f.to_owned(), c, m.to_owned())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn structural_and_rule_problems_merge_into_one_list() {
        let got = problems(json!({
            "personal": { "phone": 5, "city": " ", "display_name": null, "x": 1 },
            "preferences": { "notifications": { "sms": "yes" }, "theme": "neon" },
            "rewards": {}
        }));
        let fields: Vec<_> = got.iter().map(|(f, c, _)| (f.as_str(), *c)).collect();
        assert_eq!(
            fields,
            [
                ("personal.city", "empty"),
                ("personal.display_name", "required"),
                ("personal.phone", "invalid_type"),
                ("personal.x", "unknown_field"),
                ("preferences.notifications.sms", "invalid_type"),
                ("preferences.theme", "invalid_choice"),
                ("rewards", "read_only"),
            ]
        );
    }

    #[test]
    fn a_null_section_is_a_type_error_a_null_nested_object_is_not() {
        let got = problems(
            json!({ "personal": null, "preferences": null, "business": { "billing_address": null } }),
        );
        let fields: Vec<_> = got.iter().map(|(f, c, _)| (f.as_str(), *c)).collect();
        assert_eq!(fields, [("personal", "invalid_type"), ("preferences", "invalid_type")]);
        let parsed =
            ProfileUpdate::from_merge_patch(&json!({ "business": { "billing_address": null } }), today());
        assert_eq!(parsed.update.billing_address, Patch::Null);
    }

    #[test]
    fn valid_values_become_typed_and_normalised() {
        let parsed = ProfileUpdate::from_merge_patch(
            &json!({
                "personal": { "phone": " +442071234567 ", "country": "gb", "city": null },
                "preferences": { "timezone": "europe/london", "privacy": { "profile_visibility": "Public" } },
                "business": { "billing_address": { "country": "fr", "line2": null } }
            }),
            today(),
        );
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let u = parsed.update;
        assert_eq!(u.phone, Patch::Value(Phone::parse("+442071234567").unwrap()));
        assert_eq!(u.country, Patch::Value(CountryCode::parse("GB").unwrap()));
        assert_eq!(u.city, Patch::Null);
        assert_eq!(u.timezone, Patch::Value(TimeZone::parse("Europe/London").unwrap()));
        assert!(matches!(
            u.privacy,
            Patch::Value(PrivacyPatch { profile_visibility: Patch::Value(Visibility::Public), .. })
        ));
        let Patch::Value(a) = u.billing_address else { panic!("address") };
        assert_eq!(
            (a.country.clone(), a.line2.clone(), a.line1.clone()),
            (Patch::Value(CountryCode::parse("FR").unwrap()), Patch::Null, Patch::Absent)
        );
    }

    #[test]
    fn every_rule_code_survives_the_trip_through_garde() {
        for code in rules::CODES {
            let e = to_garde(Issue { code, message: "m: with a colon".into() });
            let f = from_garde(&garde::Path::new("personal").join("x"), &e);
            assert_eq!(
                (f.field.as_str(), f.code, f.message.as_str()),
                ("personal.x", *code, "m: with a colon")
            );
        }
    }
}
