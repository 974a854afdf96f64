//! An `UpdateProfileRequest` (a `Profile` and a `FieldMask`) as the JSON Merge Patch the
//! HTTP transport would receive for the same change (SPEC §11), so one core parser
//! validates both transports' updates.
//!
//! - No mask (or an empty one): every leaf field set under `personal`, `preferences`
//!   and `business`; output fields are ignored (AIP-203).
//! - A leaf path: that field, `null` when unset in the message (clear or reset).
//! - A path naming a message: the message with every key given, unset ones `null`, so
//!   merging it replaces the message (AIP-134). An unset nested message is `null`
//!   (removed or reset); an unset section is every key `null`.
//! - `*`: every section, as above.
//! - Unknown and read-only paths are refused, reported with the field problems.

use profile_core::domain::FieldError;
use serde_json::{Map, Value};

use crate::pb;

/// One level of the editable part of the proto `Profile`.
enum Node {
    Leaf,
    Msg(&'static [(&'static str, Node)]),
}

use Node::{Leaf, Msg};

const NOTIFICATIONS: &[(&str, Node)] = &[("email", Leaf), ("sms", Leaf), ("push", Leaf), ("marketing", Leaf)];
const PRIVACY: &[(&str, Node)] = &[("profile_visibility", Leaf), ("show_activity", Leaf)];
const BILLING_ADDRESS: &[(&str, Node)] =
    &[("line1", Leaf), ("line2", Leaf), ("city", Leaf), ("postal_code", Leaf), ("country", Leaf)];
const PERSONAL: &[(&str, Node)] = &[
    ("display_name", Leaf),
    ("first_name", Leaf),
    ("last_name", Leaf),
    ("email", Leaf),
    ("phone", Leaf),
    ("avatar_url", Leaf),
    ("bio", Leaf),
    ("birth_date", Leaf),
    ("city", Leaf),
    ("country", Leaf),
];
const PREFERENCES: &[(&str, Node)] = &[
    ("language", Leaf),
    ("timezone", Leaf),
    ("theme", Leaf),
    ("currency", Leaf),
    ("notifications", Msg(NOTIFICATIONS)),
    ("privacy", Msg(PRIVACY)),
];
const BUSINESS: &[(&str, Node)] = &[
    ("company_name", Leaf),
    ("job_title", Leaf),
    ("tax_id", Leaf),
    ("website", Leaf),
    ("billing_address", Msg(BILLING_ADDRESS)),
];
const SECTIONS: &[(&str, Node)] =
    &[("personal", Msg(PERSONAL)), ("preferences", Msg(PREFERENCES)), ("business", Msg(BUSINESS))];

/// Top-level fields a client reads but never changes (`etag` is the precondition).
const READ_ONLY: &[&str] =
    &["user_id", "version", "created_at", "updated_at", "statistics", "rewards", "etag"];

fn child(fields: &'static [(&'static str, Node)], name: &str) -> Option<&'static Node> {
    fields.iter().find(|(n, _)| *n == name).map(|(_, node)| node)
}

/// The node a path names in the editable part, if any.
fn resolve(path: &str) -> Option<&'static Node> {
    let mut fields = SECTIONS;
    let mut found = None;
    for segment in path.split('.') {
        let node = child(fields, segment)?;
        found = Some(node);
        match node {
            Msg(f) => fields = f,
            // Anything after a leaf names nothing.
            Leaf => fields = &[],
        }
    }
    found
}

fn text(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn flag(v: Option<bool>) -> Value {
    v.map_or(Value::Null, Value::Bool)
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn notifications(n: &pb::Notifications) -> Value {
    object(vec![
        ("email", flag(n.email)),
        ("sms", flag(n.sms)),
        ("push", flag(n.push)),
        ("marketing", flag(n.marketing)),
    ])
}

fn privacy(p: &pb::Privacy) -> Value {
    object(vec![
        ("profile_visibility", text(&p.profile_visibility)),
        ("show_activity", flag(p.show_activity)),
    ])
}

fn billing_address(a: &pb::BillingAddress) -> Value {
    object(vec![
        ("line1", text(&a.line1)),
        ("line2", text(&a.line2)),
        ("city", text(&a.city)),
        ("postal_code", text(&a.postal_code)),
        ("country", text(&a.country)),
    ])
}

fn personal(p: &pb::Personal) -> Value {
    object(vec![
        ("display_name", text(&p.display_name)),
        ("first_name", text(&p.first_name)),
        ("last_name", text(&p.last_name)),
        ("email", text(&p.email)),
        ("phone", text(&p.phone)),
        ("avatar_url", text(&p.avatar_url)),
        ("bio", text(&p.bio)),
        ("birth_date", text(&p.birth_date)),
        ("city", text(&p.city)),
        ("country", text(&p.country)),
    ])
}

fn preferences(p: &pb::Preferences) -> Value {
    object(vec![
        ("language", text(&p.language)),
        ("timezone", text(&p.timezone)),
        ("theme", text(&p.theme)),
        ("currency", text(&p.currency)),
        ("notifications", p.notifications.as_ref().map_or(Value::Null, notifications)),
        ("privacy", p.privacy.as_ref().map_or(Value::Null, privacy)),
    ])
}

fn business(b: &pb::Business) -> Value {
    object(vec![
        ("company_name", text(&b.company_name)),
        ("job_title", text(&b.job_title)),
        ("tax_id", text(&b.tax_id)),
        ("website", text(&b.website)),
        ("billing_address", b.billing_address.as_ref().map_or(Value::Null, billing_address)),
    ])
}

/// The editable part with every key present: unset fields and messages are `null`,
/// and an unset section is every key `null` (replacing a section with an empty one).
fn full(p: &pb::Profile) -> Value {
    object(vec![
        ("personal", personal(&p.personal.clone().unwrap_or_default())),
        ("preferences", preferences(&p.preferences.clone().unwrap_or_default())),
        ("business", business(&p.business.clone().unwrap_or_default())),
    ])
}

/// Keeps only set leaves; a message left without any is dropped.
fn set_leaves(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(map) => {
            let kept: Map<String, Value> =
                map.into_iter().filter_map(|(k, v)| set_leaves(v).map(|v| (k, v))).collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        leaf => Some(leaf),
    }
}

fn lookup<'v>(mut v: &'v Value, path: &str) -> &'v Value {
    for segment in path.split('.') {
        match v.get(segment) {
            Some(next) => v = next,
            None => return &Value::Null,
        }
    }
    v
}

fn insert(doc: &mut Map<String, Value>, path: &str, value: Value) {
    let mut segments: Vec<&str> = path.split('.').collect();
    let Some(last) = segments.pop() else { return };
    let mut map = doc;
    for s in segments {
        let slot = map.entry(s.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(m) = slot else { return };
        map = m;
    }
    map.insert(last.to_owned(), value);
}

/// The merge-patch document equivalent to the request, and the refused mask paths.
pub fn merge_patch(req: &pb::UpdateProfileRequest) -> (Value, Vec<FieldError>) {
    let profile = req.profile.clone().unwrap_or_default();
    let full = full(&profile);
    let paths: &[String] = req.update_mask.as_ref().map_or(&[], |m| &m.paths);
    if paths.is_empty() {
        return (set_leaves(full).unwrap_or_else(|| Value::Object(Map::new())), Vec::new());
    }

    let mut problems = Vec::new();
    let mut chosen: Vec<&str> = Vec::new();
    for path in paths {
        if path == "*" {
            chosen.extend(SECTIONS.iter().map(|(n, _)| *n));
        } else if READ_ONLY.contains(&path.split('.').next().unwrap_or("")) {
            problems.push(FieldError::new(path.as_str(), "read_only", "is read-only and cannot be changed"));
        } else if resolve(path).is_some() {
            chosen.push(path);
        } else {
            problems.push(FieldError::new(path.as_str(), "unknown_field", "is not a field of the profile"));
        }
    }
    // A path inside a message the mask replaces whole adds nothing to it.
    let covered =
        |p: &str, by: &str| p.len() > by.len() && p.starts_with(by) && p.as_bytes()[by.len()] == b'.';
    let kept: Vec<&str> = chosen.iter().copied().filter(|p| !chosen.iter().any(|q| covered(p, q))).collect();
    let mut doc = Map::new();
    for path in kept {
        insert(&mut doc, path, lookup(&full, path).clone());
    }
    (Value::Object(doc), problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::FieldMask;
    use serde_json::json;

    fn req(profile: pb::Profile, paths: &[&str]) -> pb::UpdateProfileRequest {
        pb::UpdateProfileRequest {
            profile: Some(profile),
            update_mask: (!paths.is_empty())
                .then(|| FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        }
    }

    fn phone_and_city() -> pb::Profile {
        pb::Profile {
            user_id: 7,
            version: 3,
            personal: Some(pb::Personal { phone: Some("+442071234567".into()), ..Default::default() }),
            business: Some(pb::Business {
                billing_address: Some(pb::BillingAddress {
                    city: Some("Paris".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn no_mask_is_every_set_leaf_and_ignores_output_fields() {
        let (doc, problems) = merge_patch(&req(phone_and_city(), &[]));
        assert!(problems.is_empty());
        assert_eq!(
            doc,
            json!({"personal": {"phone": "+442071234567"}, "business": {"billing_address": {"city": "Paris"}}})
        );
    }

    #[test]
    fn leaf_paths_set_or_clear() {
        let (doc, _) = merge_patch(&req(phone_and_city(), &["personal.phone", "personal.bio"]));
        assert_eq!(doc, json!({"personal": {"phone": "+442071234567", "bio": null}}));
    }

    #[test]
    fn message_paths_replace_whole() {
        let (doc, _) = merge_patch(&req(
            phone_and_city(),
            &["business.billing_address", "business.billing_address.city"],
        ));
        assert_eq!(
            doc,
            json!({"business": {"billing_address":
                {"line1": null, "line2": null, "city": "Paris", "postal_code": null, "country": null}}})
        );
        let (doc, _) = merge_patch(&req(phone_and_city(), &["preferences.notifications"]));
        assert_eq!(doc, json!({"preferences": {"notifications": null}}));
    }

    #[test]
    fn star_replaces_every_section() {
        let (doc, problems) = merge_patch(&req(phone_and_city(), &["*"]));
        assert!(problems.is_empty());
        assert_eq!(doc["personal"]["display_name"], Value::Null);
        assert_eq!(doc["personal"]["phone"], "+442071234567");
        assert_eq!(doc["preferences"]["privacy"], Value::Null);
        assert_eq!(doc["business"]["billing_address"]["city"], "Paris");
        assert_eq!(doc.as_object().map(Map::len), Some(3));
    }

    #[test]
    fn unknown_and_read_only_paths_are_refused() {
        let (doc, problems) = merge_patch(&req(
            phone_and_city(),
            &[
                "statistics.login_count",
                "version",
                "personal.nickname",
                "personal.phone.x",
                "",
                "personal.phone",
            ],
        ));
        let got: Vec<(&str, &str)> = problems.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            [
                ("statistics.login_count", "read_only"),
                ("version", "read_only"),
                ("personal.nickname", "unknown_field"),
                ("personal.phone.x", "unknown_field"),
                ("", "unknown_field"),
            ]
        );
        assert_eq!(doc, json!({"personal": {"phone": "+442071234567"}}));
    }
}
