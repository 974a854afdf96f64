//! `ProfileUpdate`: a JSON Merge Patch (RFC 7396) of the editable fields, parsed and
//! validated in one pass that collects every problem, then merged into a record.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use super::error::FieldError;
use super::profile::{BillingAddress, Notifications, Preferences, Privacy, ProfileFields, Theme, Visibility};
use super::rules::{self, Issue};

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

impl<T: Clone> Patch<T> {
    /// Applies to an optional field.
    fn merge_opt(&self, current: &mut Option<T>) {
        match self {
            Patch::Absent => {}
            Patch::Null => *current = None,
            Patch::Value(v) => *current = Some(v.clone()),
        }
    }

    /// Applies to a field with a default.
    fn merge_default(&self, current: &mut T, default: impl FnOnce() -> T) {
        match self {
            Patch::Absent => {}
            Patch::Null => *current = default(),
            Patch::Value(v) => *current = v.clone(),
        }
    }
}

/// Field patches of a billing address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BillingAddressPatch {
    /// `line1`.
    pub line1: Patch<String>,
    /// `line2`.
    pub line2: Patch<String>,
    /// `city`.
    pub city: Patch<String>,
    /// `postal_code`.
    pub postal_code: Patch<String>,
    /// `country`.
    pub country: Patch<String>,
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
    pub display_name: Patch<String>,
    /// `personal.first_name`.
    pub first_name: Patch<String>,
    /// `personal.last_name`.
    pub last_name: Patch<String>,
    /// `personal.email`, lower-cased (never `Null`).
    pub email: Patch<String>,
    /// `personal.phone`.
    pub phone: Patch<String>,
    /// `personal.avatar_url`.
    pub avatar_url: Patch<String>,
    /// `personal.bio`.
    pub bio: Patch<String>,
    /// `personal.birth_date`.
    pub birth_date: Patch<NaiveDate>,
    /// `personal.city`.
    pub city: Patch<String>,
    /// `personal.country`, upper-case.
    pub country: Patch<String>,
    /// `preferences.language`.
    pub language: Patch<String>,
    /// `preferences.timezone`.
    pub timezone: Patch<String>,
    /// `preferences.theme`.
    pub theme: Patch<Theme>,
    /// `preferences.currency`.
    pub currency: Patch<String>,
    /// `preferences.notifications`: `Null` resets all switches, an object merges key by key.
    pub notifications: Patch<NotificationsPatch>,
    /// `preferences.privacy`: `Null` resets it, an object merges key by key.
    pub privacy: Patch<PrivacyPatch>,
    /// `business.company_name`.
    pub company_name: Patch<String>,
    /// `business.job_title`.
    pub job_title: Patch<String>,
    /// `business.tax_id`.
    pub tax_id: Patch<String>,
    /// `business.website`.
    pub website: Patch<String>,
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

const READ_ONLY: &[&str] = &["user_id", "version", "created_at", "updated_at", "statistics", "rewards"];

/// Collects problems while walking the patch document.
struct Walker<'a> {
    errors: &'a mut Vec<FieldError>,
    today: NaiveDate,
}

impl Walker<'_> {
    fn push(&mut self, path: &str, issue: Issue) {
        self.errors.push(FieldError::new(path, issue.code, issue.message));
    }

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

    /// A string field parsed by `rule`. `nullable` false makes `null` an error.
    fn string<T>(
        &mut self,
        map: &Map<String, Value>,
        section: &str,
        key: &str,
        nullable: bool,
        rule: impl FnOnce(&str) -> Result<T, Issue>,
    ) -> Patch<T> {
        let path = format!("{section}.{key}");
        match map.get(key) {
            None => Patch::Absent,
            Some(Value::Null) if nullable => Patch::Null,
            Some(Value::Null) => {
                self.errors.push(FieldError::new(path, "required", "cannot be null: this field is required"));
                Patch::Absent
            }
            Some(Value::String(s)) => match rule(s) {
                Ok(v) => Patch::Value(v),
                Err(issue) => {
                    self.push(&path, issue);
                    Patch::Absent
                }
            },
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

    fn personal(&mut self, value: &Value, u: &mut ProfileUpdate) {
        const S: &str = "personal";
        let known = [
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
        let Some(m) = self.object(S, value, &known) else { return };
        let today = self.today;
        u.display_name = self.string(m, S, "display_name", false, |s| rules::text(s, 64));
        u.first_name = self.string(m, S, "first_name", true, |s| rules::text(s, 100));
        u.last_name = self.string(m, S, "last_name", true, |s| rules::text(s, 100));
        u.email = self.string(m, S, "email", false, rules::email);
        u.phone = self.string(m, S, "phone", true, rules::phone);
        u.avatar_url = self.string(m, S, "avatar_url", true, rules::web_url);
        u.bio = self.string(m, S, "bio", true, |s| rules::multiline_text(s, 500));
        u.birth_date = self.string(m, S, "birth_date", true, |s| rules::birth_date(s, today));
        u.city = self.string(m, S, "city", true, |s| rules::text(s, 100));
        u.country = self.string(m, S, "country", true, rules::country);
    }

    fn preferences(&mut self, value: &Value, u: &mut ProfileUpdate) {
        const S: &str = "preferences";
        let known = ["language", "timezone", "theme", "currency", "notifications", "privacy"];
        let Some(m) = self.object(S, value, &known) else { return };
        u.language = self.string(m, S, "language", true, rules::language);
        u.timezone = self.string(m, S, "timezone", true, rules::timezone);
        u.theme = self.string(m, S, "theme", true, |s| {
            rules::one_of(s, Theme::NAMES).map(|n| Theme::from_name(n).unwrap_or_default())
        });
        u.currency = self.string(m, S, "currency", true, rules::currency);
        match m.get("notifications") {
            None => {}
            Some(Value::Null) => u.notifications = Patch::Null,
            Some(v) => {
                const N: &str = "preferences.notifications";
                if let Some(n) = self.object(N, v, &["email", "sms", "push", "marketing"]) {
                    u.notifications = Patch::Value(NotificationsPatch {
                        email: self.boolean(n, N, "email"),
                        sms: self.boolean(n, N, "sms"),
                        push: self.boolean(n, N, "push"),
                        marketing: self.boolean(n, N, "marketing"),
                    });
                }
            }
        }
        match m.get("privacy") {
            None => {}
            Some(Value::Null) => u.privacy = Patch::Null,
            Some(v) => {
                const P: &str = "preferences.privacy";
                if let Some(p) = self.object(P, v, &["profile_visibility", "show_activity"]) {
                    u.privacy = Patch::Value(PrivacyPatch {
                        profile_visibility: self.string(p, P, "profile_visibility", true, |s| {
                            rules::one_of(s, Visibility::NAMES)
                                .map(|n| Visibility::from_name(n).unwrap_or_default())
                        }),
                        show_activity: self.boolean(p, P, "show_activity"),
                    });
                }
            }
        }
    }

    fn business(&mut self, value: &Value, u: &mut ProfileUpdate) {
        const S: &str = "business";
        let known = ["company_name", "job_title", "tax_id", "website", "billing_address"];
        let Some(m) = self.object(S, value, &known) else { return };
        u.company_name = self.string(m, S, "company_name", true, |s| rules::text(s, 120));
        u.job_title = self.string(m, S, "job_title", true, |s| rules::text(s, 120));
        u.tax_id = self.string(m, S, "tax_id", true, rules::tax_id);
        u.website = self.string(m, S, "website", true, rules::web_url);
        match m.get("billing_address") {
            None => {}
            Some(Value::Null) => u.billing_address = Patch::Null,
            Some(v) => {
                const B: &str = "business.billing_address";
                let known = ["line1", "line2", "city", "postal_code", "country"];
                if let Some(b) = self.object(B, v, &known) {
                    u.billing_address = Patch::Value(BillingAddressPatch {
                        line1: self.string(b, B, "line1", true, |s| rules::text(s, 200)),
                        line2: self.string(b, B, "line2", true, |s| rules::text(s, 200)),
                        city: self.string(b, B, "city", true, |s| rules::text(s, 200)),
                        postal_code: self.string(b, B, "postal_code", true, |s| rules::text(s, 16)),
                        country: self.string(b, B, "country", true, rules::country),
                    });
                }
            }
        }
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
        let mut errors = Vec::new();
        let mut update = ProfileUpdate::default();
        let Value::Object(top) = doc else {
            return (update, vec![FieldError::new("", "invalid_type", "the patch must be a JSON object")]);
        };
        let mut w = Walker { errors: &mut errors, today };
        for (key, value) in top {
            match key.as_str() {
                "personal" => w.personal(value, &mut update),
                "preferences" => w.preferences(value, &mut update),
                "business" => w.business(value, &mut update),
                k if READ_ONLY.contains(&k) => {
                    w.errors.push(FieldError::new(k, "read_only", "is read-only and cannot be changed"))
                }
                k => w.errors.push(FieldError::new(k, "unknown_field", "is not a field of the profile")),
            }
        }
        (update, errors)
    }

    /// The one validation path of every transport: a merge-patch document (HTTP sends
    /// one; gRPC builds one from its message and field mask) into a [`ParsedUpdate`].
    pub fn from_merge_patch(doc: &Value, today: NaiveDate) -> ParsedUpdate {
        let (update, problems) = Self::parse_partial(doc, today);
        ParsedUpdate { update, problems }
    }

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
            Patch::Value(v) if p.display_name.is_none() && v == username => {}
            Patch::Value(v) => p.display_name = Some(v.clone()),
            _ => {}
        }
        self.first_name.merge_opt(&mut p.first_name);
        self.last_name.merge_opt(&mut p.last_name);
        self.phone.merge_opt(&mut p.phone);
        self.avatar_url.merge_opt(&mut p.avatar_url);
        self.bio.merge_opt(&mut p.bio);
        self.birth_date.merge_opt(&mut p.birth_date);
        self.city.merge_opt(&mut p.city);
        self.country.merge_opt(&mut p.country);

        let pr = &mut f.preferences;
        self.language.merge_default(&mut pr.language, || Preferences::DEFAULT_LANGUAGE.to_owned());
        self.timezone.merge_default(&mut pr.timezone, || Preferences::DEFAULT_TIMEZONE.to_owned());
        self.theme.merge_default(&mut pr.theme, Theme::default);
        self.currency.merge_default(&mut pr.currency, || Preferences::DEFAULT_CURRENCY.to_owned());
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
        self.company_name.merge_opt(&mut b.company_name);
        self.job_title.merge_opt(&mut b.job_title);
        self.tax_id.merge_opt(&mut b.tax_id);
        self.website.merge_opt(&mut b.website);
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
                ap.line1.merge_opt(&mut line1);
                ap.line2.merge_opt(&mut line2);
                ap.city.merge_opt(&mut city);
                ap.postal_code.merge_opt(&mut postal_code);
                ap.country.merge_opt(&mut country);
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
            Patch::Value(e) if e != current_email => Some(e.clone()),
            _ => None,
        };
        Ok((f, new_email))
    }
}
