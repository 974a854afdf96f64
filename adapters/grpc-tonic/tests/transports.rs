//! One table of scenarios, each run through HTTP and through gRPC against services in
//! the same starting state: the outcomes (profile and etag, or error kind and every
//! field violation) must be identical, and as the scenario expects.

mod common;

use common::*;
use profile_core::ports::{CachePort, StoreError};
use profile_grpc_tonic::pb;
use profile_memory::Op;
use prost_types::FieldMask;
use serde_json::{Value, json};
use tonic_types::StatusExt;

/// Who calls.
#[derive(Clone, Copy, Debug)]
enum Who {
    User(i64),
    NoToken,
    Garbage,
    Expired,
    BadSignature,
    OtherScheme,
}

/// How the gRPC request of an update is built from the scenario.
#[derive(Clone)]
enum Grpc {
    /// The HTTP body as a message, no mask (the body has no `null`).
    NoMask,
    /// The HTTP body as a message, its leaf paths as the mask (`null` ones clear).
    Leaves,
    /// An explicit mask and message (as JSON).
    Mask(&'static [&'static str], Value),
    /// The caller's `GetProfile` answer, changed, sent back without a mask.
    FromGet(fn(&mut pb::Profile)),
}

#[derive(Clone, Copy)]
enum Etag {
    None,
    Current,
    CurrentQuoted,
    Stale,
}

#[derive(Clone)]
enum Step {
    Get,
    Update { http: Value, grpc: Grpc, etag: Etag },
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    setup: Vec<Value>,
    fault: Option<(Op, StoreError)>,
    who: Who,
    step: Step,
    /// `ok` or the gRPC code name the error must map to.
    expect: &'static str,
    /// Every (field, code) the error must list, in any order.
    fields: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok { profile: Value, etag: String },
    Err { kind: &'static str, errors: Vec<(String, String, String)> },
}

fn case(name: &'static str, who: Who, step: Step, expect: &'static str) -> Case {
    Case { name, setup: Vec::new(), fault: None, who, step, expect, fields: Vec::new() }
}

fn update(http: Value, grpc: Grpc) -> Step {
    Step::Update { http, grpc, etag: Etag::None }
}

impl Case {
    fn setup(mut self, patch: Value) -> Self {
        self.setup.push(patch);
        self
    }
    fn fields(mut self, f: &[(&'static str, &'static str)]) -> Self {
        self.fields = f.to_vec();
        self
    }
    fn etag(mut self, e: Etag) -> Self {
        if let Step::Update { etag, .. } = &mut self.step {
            *etag = e;
        }
        self
    }
    fn fault(mut self, op: Op, e: StoreError) -> Self {
        self.fault = Some((op, e));
        self
    }
}

/// The HTTP status → gRPC code correspondence of SPEC §11.
fn http_kind(status: u16) -> &'static str {
    match status {
        200 => "ok",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        412 => "ABORTED",
        413 => "RESOURCE_EXHAUSTED",
        422 => "INVALID_ARGUMENT",
        503 => "UNAVAILABLE",
        500 => "INTERNAL",
        _ => "unexpected HTTP status",
    }
}

fn grpc_kind(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Unauthenticated => "UNAUTHENTICATED",
        PermissionDenied => "PERMISSION_DENIED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        Aborted => "ABORTED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        InvalidArgument => "INVALID_ARGUMENT",
        Unavailable => "UNAVAILABLE",
        Internal => "INTERNAL",
        _ => "unexpected gRPC code",
    }
}

/// Sorted, so a mask's order (the client's) does not matter.
fn sorted(mut v: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    v.sort();
    v
}

async fn prepare(c: &Case) -> App {
    let app = App::new();
    for p in &c.setup {
        app.setup(ACTIVE, p).await;
    }
    app
}

async fn arm_fault(app: &App, c: &Case) {
    if let Some((op, e)) = &c.fault {
        // The set-up read cached the profile; the faulty read must reach the store.
        app.cache.invalidate_profile(ACTIVE).await;
        match op {
            Op::Account | Op::SetEmail => app.accounts.faults.fail_next(*op, 1, e.clone()),
            _ => app.profiles.faults.fail_next(*op, 1, e.clone()),
        }
    }
}

fn sign(claims: &Value, secret: &[u8]) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).expect("sign")
}

/// The `authorization` value, the same for both transports.
fn authorization(app: &App, who: Who) -> Option<String> {
    match who {
        Who::User(u) => Some(format!("Bearer {}", app.token(u))),
        Who::NoToken => None,
        Who::Garbage => Some("Bearer not.a.token".to_owned()),
        Who::Expired => Some(format!("Bearer {}", sign(&json!({"sub": "1", "exp": 1_000_000}), SECRET))),
        Who::BadSignature => Some(format!(
            "Bearer {}",
            sign(&json!({"sub": "1", "exp": 4_000_000_000_u64}), b"another-secret")
        )),
        Who::OtherScheme => Some("Basic dXNlcjpwYXNz".to_owned()),
    }
}

async fn run_http(c: &Case) -> Outcome {
    let app = prepare(c).await;
    let routes = app.http_routes();
    let current = {
        let res = warp::test::request()
            .path("/user/profile")
            .header("authorization", format!("Bearer {}", app.token(ACTIVE)))
            .reply(&routes)
            .await;
        res.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    };
    arm_fault(&app, c).await;
    let mut req = match &c.step {
        Step::Get => warp::test::request().path("/user/profile"),
        Step::Update { http, etag, .. } => {
            let r = warp::test::request()
                .method("PATCH")
                .path("/user/profile")
                .header("content-type", "application/merge-patch+json")
                .body(http.to_string());
            match etag {
                Etag::None => r,
                Etag::Current | Etag::CurrentQuoted => r.header("if-match", current.as_str()),
                Etag::Stale => r.header("if-match", "\"0123456789abcdef0123456789abcdef\""),
            }
        }
    };
    if let Some(a) = authorization(&app, c.who) {
        req = req.header("authorization", a);
    }
    let res = req.reply(&routes).await;
    let body: Value = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    if res.status() == 200 {
        let etag = res.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("");
        Outcome::Ok { profile: body, etag: etag.trim_matches('"').to_owned() }
    } else {
        let errors = body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let f = |k: &str| e[k].as_str().unwrap_or("").to_owned();
                        (f("field"), f("code"), f("message"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Outcome::Err { kind: http_kind(res.status().as_u16()), errors: sorted(errors) }
    }
}

async fn run_grpc(c: &Case) -> (Outcome, String) {
    let app = prepare(c).await;
    let mut g = app.grpc().await;
    let current = g
        .client
        .get_profile(with_auth(pb::GetProfileRequest {}, Some(&format!("Bearer {}", app.token(ACTIVE)))))
        .await
        .expect("set-up GetProfile")
        .into_inner();
    arm_fault(&app, c).await;
    let auth = authorization(&app, c.who);
    let answer = match &c.step {
        Step::Get => g.client.get_profile(with_auth(pb::GetProfileRequest {}, auth.as_deref())).await,
        Step::Update { http, grpc, etag } => {
            let (mut profile, mask) = match grpc {
                Grpc::NoMask => (profile_from_json(http), None),
                Grpc::Leaves => (profile_from_json(http), Some(leaf_paths(http))),
                Grpc::Mask(paths, msg) => {
                    (profile_from_json(msg), Some(paths.iter().map(|p| (*p).to_owned()).collect()))
                }
                Grpc::FromGet(change) => {
                    let mut p = current.clone();
                    p.etag.clear();
                    change(&mut p);
                    (p, None)
                }
            };
            profile.etag = match etag {
                Etag::None => profile.etag,
                Etag::Current => current.etag.clone(),
                Etag::CurrentQuoted => format!("\"{}\"", current.etag),
                Etag::Stale => "0123456789abcdef0123456789abcdef".to_owned(),
            };
            let req = pb::UpdateProfileRequest {
                profile: Some(profile),
                update_mask: mask.map(|paths| FieldMask { paths }),
            };
            g.client.update_profile(with_auth(req, auth.as_deref())).await
        }
    };
    g.shutdown().await;
    match answer {
        Ok(res) => {
            let p = res.into_inner();
            (Outcome::Ok { profile: profile_json(&p), etag: p.etag.clone() }, String::new())
        }
        Err(status) => {
            let errors = status
                .get_details_bad_request()
                .map(|b| {
                    b.field_violations
                        .into_iter()
                        .map(|v| (v.field, v.reason, v.description))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            (
                Outcome::Err { kind: grpc_kind(status.code()), errors: sorted(errors) },
                status.message().to_owned(),
            )
        }
    }
}

fn full_address() -> Value {
    json!({"business": {"billing_address": {
        "line1": "1 Main St", "line2": "Flat 2", "city": "London", "postal_code": "NW1 6XE", "country": "GB"}}})
}

fn everything() -> Value {
    json!({
        "personal": {
            "display_name": "Ada L.", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
            "phone": "+442071234567", "avatar_url": "https://cdn.example.com/a/1.png", "bio": "Line one\nline two",
            "birth_date": "1990-12-10", "city": "London", "country": "gb"
        },
        "preferences": {
            "language": "en-gb", "timezone": "Europe/London", "theme": "dark", "currency": "gbp",
            "notifications": {"email": false, "sms": true, "push": false, "marketing": true},
            "privacy": {"profile_visibility": "contacts", "show_activity": true}
        },
        "business": {
            "company_name": "Analytical Engines Ltd", "job_title": "Engineer", "tax_id": "gb123456789",
            "website": "https://example.com",
            "billing_address": {"line1": "1 Main St", "line2": null, "city": "London", "postal_code": "NW1 6XE", "country": "gb"}
        }
    })
}

/// One invalid value per field rule of SPEC §5: (section, key, value, code).
const RULES: &[(&str, &str, &str, &str)] = &[
    ("personal", "display_name", "   ", ""),
    ("personal", "display_name", "\u{200B}zero-width", ""),
    ("personal", "first_name", "", ""),
    ("personal", "last_name", "\u{202E}override", ""),
    ("personal", "email", "not-an-address", ""),
    ("personal", "phone", "+12", ""),
    ("personal", "phone", "020 7123 4567", ""),
    ("personal", "avatar_url", "ftp://example.com/a.png", ""),
    ("personal", "avatar_url", "/relative.png", ""),
    ("personal", "bio", "tab\there", ""),
    ("personal", "birth_date", "1990-13-01", ""),
    ("personal", "birth_date", "2020-01-01", ""),
    ("personal", "birth_date", "1800-01-01", ""),
    ("personal", "city", "\u{0007}bell", ""),
    ("personal", "country", "XX", ""),
    ("preferences", "language", "not a tag!", ""),
    ("preferences", "timezone", "Mars/Olympus", ""),
    ("preferences", "theme", "blue", ""),
    ("preferences", "currency", "XYZ", ""),
    ("business", "company_name", "", ""),
    ("business", "tax_id", "AB", ""),
    ("business", "tax_id", "AB_1234", ""),
    ("business", "website", "example.com", ""),
];

fn long(n: usize) -> String {
    "é".repeat(n)
}

fn cases() -> Vec<Case> {
    let me = Who::User(ACTIVE);
    let mut v = vec![
        // Reads.
        case("default profile", me, Step::Get, "ok"),
        case("complete profile", me, Step::Get, "ok").setup(everything()),
        // Partial updates.
        case("leaf mask paths", me, update(json!({"personal": {"phone": "+442071234567", "city": "Leeds"}}), Grpc::Leaves), "ok"),
        case("no mask: set leaves merge", me, update(json!({"personal": {"phone": "+442071234567"}, "preferences": {"notifications": {"sms": true}}}), Grpc::NoMask), "ok")
            .setup(everything()),
        case("clearing an optional field", me, update(json!({"personal": {"phone": null, "bio": null}}), Grpc::Leaves), "ok")
            .setup(everything()),
        case("clearing resets defaults", me, update(json!({"preferences": {"theme": null, "currency": null, "notifications": {"sms": null}, "privacy": {"show_activity": null}}}), Grpc::Leaves), "ok")
            .setup(everything()),
        case("nested merge key by key", me, update(json!({"preferences": {"notifications": {"marketing": false}}}), Grpc::NoMask), "ok")
            .setup(everything()),
        case("address merges into the current one", me, update(json!({"business": {"billing_address": {"city": "Leeds"}}}), Grpc::NoMask), "ok")
            .setup(full_address()),
        case(
            "a message path replaces the address",
            me,
            update(
                json!({"business": {"billing_address": {"line1": "2 New St", "line2": null, "city": "Leeds", "postal_code": null, "country": "gb"}}}),
                Grpc::Mask(&["business.billing_address"], json!({"business": {"billing_address": {"line1": "2 New St", "city": "Leeds", "country": "gb"}}})),
            ),
            "ok",
        )
        .setup(full_address()),
        case(
            "an unset message path removes the address",
            me,
            update(json!({"business": {"billing_address": null}}), Grpc::Mask(&["business.billing_address"], json!({}))),
            "ok",
        )
        .setup(full_address()),
        case(
            "a message path replaces notifications",
            me,
            update(
                json!({"preferences": {"notifications": {"email": null, "sms": true, "push": null, "marketing": null}}}),
                Grpc::Mask(&["preferences.notifications"], json!({"preferences": {"notifications": {"sms": true}}})),
            ),
            "ok",
        )
        .setup(everything()),
        case(
            "a section path replaces the section",
            me,
            update(
                json!({"personal": {"display_name": "Ada", "first_name": null, "last_name": null, "email": "ada@example.com",
                    "phone": null, "avatar_url": null, "bio": null, "birth_date": null, "city": null, "country": null}}),
                Grpc::Mask(&["personal"], json!({"personal": {"display_name": "Ada", "email": "ada@example.com"}})),
            ),
            "ok",
        )
        .setup(everything()),
        case(
            "star replaces every editable field",
            me,
            update(
                json!({
                    "personal": {"display_name": "Ada", "first_name": null, "last_name": null, "email": "ada@example.com",
                        "phone": null, "avatar_url": null, "bio": null, "birth_date": null, "city": null, "country": null},
                    "preferences": {"language": null, "timezone": null, "theme": "light", "currency": null, "notifications": null, "privacy": null},
                    "business": {"company_name": null, "job_title": null, "tax_id": null, "website": null, "billing_address": null}
                }),
                Grpc::Mask(&["*"], json!({"personal": {"display_name": "Ada", "email": "ada@example.com"}, "preferences": {"theme": "light"}})),
            ),
            "ok",
        )
        .setup(everything()),
        case(
            "star with an empty profile",
            me,
            update(
                json!({
                    "personal": {"display_name": null, "first_name": null, "last_name": null, "email": null,
                        "phone": null, "avatar_url": null, "bio": null, "birth_date": null, "city": null, "country": null},
                    "preferences": {"language": null, "timezone": null, "theme": null, "currency": null, "notifications": null, "privacy": null},
                    "business": {"company_name": null, "job_title": null, "tax_id": null, "website": null, "billing_address": null}
                }),
                Grpc::Mask(&["*"], json!({})),
            ),
            "INVALID_ARGUMENT",
        )
        .fields(&[("personal.display_name", "required"), ("personal.email", "required")]),
        case(
            "a GetProfile answer sent back changed",
            me,
            update(json!({"personal": {"bio": "Changed"}, "preferences": {"theme": "light"}}), Grpc::FromGet(|p| {
                p.personal.as_mut().expect("personal").bio = Some("Changed".into());
                p.preferences.as_mut().expect("preferences").theme = Some("light".into());
                p.version = 999;
                p.statistics.as_mut().expect("statistics").login_count = 1_000;
            })),
            "ok",
        )
        .setup(everything()),
        case("a GetProfile answer sent back unchanged", me, update(json!({}), Grpc::FromGet(|_| {})), "ok"),
        case("a GetProfile answer of a full profile sent back unchanged", me, update(json!({}), Grpc::FromGet(|_| {})), "ok")
            .setup(everything()),
        case("valid values are normalised", me, update(json!({"personal": {"email": "  Ada.New@Example.COM ", "country": "fr"}, "preferences": {"language": "PT-br", "currency": "eur"}, "business": {"tax_id": "ab-12cd"}}), Grpc::NoMask), "ok"),
        case("limits count characters", me, update(json!({"personal": {"display_name": long(64), "bio": long(500)}}), Grpc::NoMask), "ok"),
        case("over the limits", me, update(json!({"personal": {"display_name": long(65), "bio": long(501), "first_name": long(101)}, "business": {"job_title": long(121), "billing_address": {"postal_code": long(17)}}}), Grpc::NoMask), "INVALID_ARGUMENT")
            .setup(full_address())
            .fields(&[("personal.display_name", ""), ("personal.bio", ""), ("personal.first_name", ""), ("business.job_title", ""), ("business.billing_address.postal_code", "")]),
        case("null on a required field", me, update(json!({"personal": {"display_name": null, "email": null}}), Grpc::Leaves), "INVALID_ARGUMENT")
            .fields(&[("personal.display_name", "required"), ("personal.email", "required")]),
        case("an address incomplete after merging", me, update(json!({"business": {"billing_address": {"city": "Leeds"}}}), Grpc::NoMask), "INVALID_ARGUMENT")
            .fields(&[("business.billing_address.line1", "required"), ("business.billing_address.country", "required")]),
        case(
            "all errors at once",
            me,
            update(
                json!({"personal": {"phone": "12", "email": "nope", "birth_date": "yesterday", "country": "ZZ"},
                    "preferences": {"theme": "neon", "timezone": "Nowhere/City", "privacy": {"profile_visibility": "everyone"}},
                    "business": {"website": "not a url", "tax_id": "!", "billing_address": {"postal_code": "1"}}}),
                Grpc::NoMask,
            ),
            "INVALID_ARGUMENT",
        )
        .fields(&[
            ("personal.phone", ""), ("personal.email", ""), ("personal.birth_date", ""), ("personal.country", ""),
            ("preferences.theme", ""), ("preferences.timezone", ""), ("preferences.privacy.profile_visibility", ""),
            ("business.website", ""), ("business.tax_id", ""),
            ("business.billing_address.line1", "required"), ("business.billing_address.city", "required"),
            ("business.billing_address.country", "required"),
        ]),
        // Refused paths.
        case("a read-only section", me, update(json!({"statistics": {"login_count": 1}}), Grpc::Mask(&["statistics"], json!({}))), "INVALID_ARGUMENT")
            .fields(&[("statistics", "read_only")]),
        case("read-only fields", me, update(json!({"user_id": 7, "version": 9, "rewards": {"points": 1}}), Grpc::Mask(&["version", "user_id", "rewards"], json!({}))), "INVALID_ARGUMENT")
            .fields(&[("user_id", "read_only"), ("version", "read_only"), ("rewards", "read_only")]),
        case("an unknown field", me, update(json!({"personal": {"nickname": "x"}}), Grpc::Mask(&["personal.nickname"], json!({}))), "INVALID_ARGUMENT")
            .fields(&[("personal.nickname", "unknown_field")]),
        case("an unknown section", me, update(json!({"settings": {}}), Grpc::Mask(&["settings"], json!({}))), "INVALID_ARGUMENT")
            .fields(&[("settings", "unknown_field")]),
        case(
            "refused paths and invalid values together",
            me,
            update(
                json!({"personal": {"phone": "12", "nickname": "x"}, "created_at": "2020-01-01T00:00:00Z"}),
                Grpc::Mask(&["personal.phone", "personal.nickname", "created_at"], json!({"personal": {"phone": "12"}})),
            ),
            "INVALID_ARGUMENT",
        )
        .fields(&[("personal.phone", "invalid_phone"), ("personal.nickname", "unknown_field"), ("created_at", "read_only")]),
        // Preconditions.
        case("current etag", me, update(json!({"personal": {"city": "Leeds"}}), Grpc::NoMask), "ok").etag(Etag::Current),
        case("current etag, quoted", me, update(json!({"personal": {"city": "Leeds"}}), Grpc::NoMask), "ok").etag(Etag::CurrentQuoted),
        case("stale etag", me, update(json!({"personal": {"city": "Leeds"}}), Grpc::NoMask), "ABORTED").etag(Etag::Stale),
        // E-mail.
        case("e-mail change", me, update(json!({"personal": {"email": "new@example.com"}}), Grpc::NoMask), "ok"),
        case("e-mail taken", me, update(json!({"personal": {"email": "TAKEN@example.com"}}), Grpc::NoMask), "ALREADY_EXISTS"),
        // Storage.
        case("a database that cannot serve (read)", me, Step::Get, "UNAVAILABLE")
            .fault(Op::Account, StoreError::Unavailable("database is locked at /srv/secret/main.db".into())),
        case("a database that cannot serve (write)", me, update(json!({"personal": {"city": "Leeds"}}), Grpc::NoMask), "UNAVAILABLE")
            .fault(Op::Update, StoreError::Unavailable("database is locked at /srv/secret/profiles.db".into())),
        case("an internal failure", me, update(json!({"personal": {"city": "Leeds"}}), Grpc::NoMask), "INTERNAL")
            .fault(Op::Update, StoreError::Failure("SQL: UPDATE profiles SET secret".into())),
    ];
    // Every auth failure and account state, for both methods.
    for (label, who, expect) in [
        ("no token", Who::NoToken, "UNAUTHENTICATED"),
        ("a garbage token", Who::Garbage, "UNAUTHENTICATED"),
        ("an expired token", Who::Expired, "UNAUTHENTICATED"),
        ("a badly signed token", Who::BadSignature, "UNAUTHENTICATED"),
        ("another scheme", Who::OtherScheme, "UNAUTHENTICATED"),
        ("a suspended account", Who::User(SUSPENDED), "PERMISSION_DENIED"),
        ("a deleted account", Who::User(DELETED), "NOT_FOUND"),
        ("an unknown account", Who::User(MISSING), "NOT_FOUND"),
    ] {
        v.push(Case { name: label, ..case("", who, Step::Get, expect) });
        v.push(Case {
            name: label,
            ..case("", who, update(json!({"personal": {"city": "Leeds"}}), Grpc::NoMask), expect)
        });
    }
    // Every field rule, one at a time, as a leaf mask path.
    for (section, key, value, _) in RULES {
        let body = json!({ (*section): { (*key): value } });
        let path: &'static str = Box::leak(format!("{section}.{key}").into_boxed_str());
        let fields: &'static [(&'static str, &'static str)] = Box::leak(vec![(path, "")].into_boxed_slice());
        v.push(case("field rule", me, update(body, Grpc::Leaves), "INVALID_ARGUMENT").fields(fields));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_answer_every_scenario_alike() {
    let mut failures = Vec::new();
    for c in cases() {
        let http = run_http(&c).await;
        let (grpc, grpc_message) = run_grpc(&c).await;
        let label = format!("{} ({:?})", c.name, c.who);
        if http != grpc {
            failures.push(format!("{label}: transports differ\n  HTTP: {http:?}\n  gRPC: {grpc:?}"));
            continue;
        }
        match &grpc {
            Outcome::Ok { profile, etag } => {
                if c.expect != "ok" {
                    failures.push(format!("{label}: expected {}, both answered ok: {profile}", c.expect));
                }
                if etag.len() != 32 {
                    failures.push(format!("{label}: etag {etag:?}"));
                }
            }
            Outcome::Err { kind, errors } => {
                if *kind != c.expect {
                    failures
                        .push(format!("{label}: expected {}, both answered {kind}: {errors:?}", c.expect));
                }
                for (field, code) in &c.fields {
                    if !errors.iter().any(|(f, cd, _)| f == field && (code.is_empty() || cd == code)) {
                        failures.push(format!("{label}: no violation {field}/{code} in {errors:?}"));
                    }
                }
                if *kind == "INVALID_ARGUMENT" && errors.len() != c.fields.len() {
                    failures.push(format!("{label}: expected {} violations, got {errors:?}", c.fields.len()));
                }
                for secret in ["/srv", "secret", "SQL", "UPDATE"] {
                    if grpc_message.contains(secret) {
                        failures.push(format!("{label}: the gRPC message leaks {secret:?}: {grpc_message}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} scenario(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// The scenarios' expectations hold on their own: a case answered `ok` changed what it
/// should (spot checks of the documents both transports agreed on).
#[tokio::test]
async fn agreed_outcomes_are_the_expected_ones() {
    let by_name = |name: &str| cases().into_iter().find(|c| c.name == name).expect(name);
    let Outcome::Ok { profile, .. } = run_http(&by_name("a message path replaces the address")).await else {
        panic!("replace refused")
    };
    assert_eq!(
        profile["business"]["billing_address"],
        json!({"line1": "2 New St", "line2": null, "city": "Leeds", "postal_code": null, "country": "GB"})
    );
    let (Outcome::Ok { profile, .. }, _) = run_grpc(&by_name("a GetProfile answer sent back changed")).await
    else {
        panic!("sent-back answer refused")
    };
    assert_eq!(profile["personal"]["bio"], "Changed");
    assert_eq!(profile["preferences"]["theme"], "light");
    assert_eq!(profile["version"], 2, "output fields are ignored; one effective change");
    assert_eq!(profile["statistics"]["login_count"], 3);
    let (Outcome::Ok { profile, .. }, _) =
        run_grpc(&by_name("a GetProfile answer of a full profile sent back unchanged")).await
    else {
        panic!("unchanged answer refused")
    };
    assert_eq!(profile["version"], 1, "sending back what was read changes nothing");
    let (Outcome::Ok { profile, .. }, _) = run_grpc(&by_name("clearing resets defaults")).await else {
        panic!("reset refused")
    };
    assert_eq!(profile["preferences"]["theme"], "system");
    assert_eq!(profile["preferences"]["currency"], "USD");
    assert_eq!(profile["preferences"]["notifications"]["sms"], false);
    assert_eq!(profile["preferences"]["notifications"]["marketing"], true);
    let (Outcome::Ok { profile, .. }, _) = run_grpc(&by_name("valid values are normalised")).await else {
        panic!("normalised values refused")
    };
    assert_eq!(profile["personal"]["email"], "ada.new@example.com");
    assert_eq!(profile["preferences"]["language"], "pt-BR");
    assert_eq!(profile["business"]["tax_id"], "AB-12CD");
}
