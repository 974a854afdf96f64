//! Bad input, against the real binary: bodies that are not UTF-8, nested to absurd
//! depths, with duplicate keys, wrong types, out-of-range numbers, oversized or lying
//! about their size, invisible characters, and SQL metacharacters.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::{Dbs, Http, Resp, Server, raw_exchange, token};
use serde_json::{Value, json};

fn assert_problem(r: &Resp, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
    let b = r.json();
    assert_eq!(b["status"], status, "{what}");
    b
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| a.iter().map(|e| e["field"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

struct Fixture {
    _dbs: Dbs,
    server: Server,
    http: Http,
    url: String,
    auth: String,
    me: String,
}

impl Fixture {
    /// A server without the profile cache, so every read comes from the databases.
    fn start() -> Self {
        let dbs = Dbs::new();
        dbs.seed(2);
        let server = Server::start(&dbs, &["--profile-cache-ttl-s", "0"]);
        let url = server.url("/user/profile");
        let me = token(1);
        Self { _dbs: dbs, server, http: Http::new(), url, auth: format!("Bearer {me}"), me }
    }

    async fn raw_patch(&self, body: &[u8]) -> Resp {
        self.http
            .send(
                "PATCH",
                &self.url,
                &[("authorization", &self.auth), ("content-type", "application/merge-patch+json")],
                Some(body),
            )
            .await
    }

    async fn patch(&self, body: &Value) -> Resp {
        self.http.patch(&self.url, &self.me, body, &[]).await
    }

    async fn profile(&self) -> Value {
        let r = self.http.get(&self.url, &self.me).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// The server still answers, and the profile is still at `version`.
    async fn assert_alive_at(&self, version: i64) {
        let h = self.http.send("GET", &self.server.url("/healthz"), &[], None).await;
        assert_eq!(h.status, 200);
        assert_eq!(self.profile().await["version"], version, "nothing written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_refused_and_the_server_survives() {
    let f = Fixture::start();

    // Not UTF-8: inside a string, as a key, bare, and an overlong encoding of '"'.
    for (what, body) in [
        ("invalid UTF-8 in a string", &b"{\"personal\":{\"city\":\"\xff\xfe\"}}"[..]),
        ("invalid UTF-8 in a key", b"{\"pers\xc3\x28onal\":{}}"),
        ("a lone continuation byte", b"{\x80}"),
        ("overlong encoding", b"{\"personal\":{\"city\":\"\xc0\xa2\"}}"),
        ("a UTF-16 surrogate as UTF-8", b"{\"personal\":{\"city\":\"\xed\xa0\x80\"}}"),
        ("a lone surrogate escape", br#"{"personal":{"city":"\ud800"}}"#),
    ] {
        assert_problem(&f.raw_patch(body).await, 400, what);
    }

    // Deep nesting: 10,000 levels do not fit in 16 KiB when closed, so send them
    // unclosed (the parser descends before it could see the end), closed but over the
    // size limit, and closed at the deepest depth that fits.
    let opened = "[".repeat(10_000);
    assert_problem(&f.raw_patch(opened.as_bytes()).await, 400, "10,000 unclosed arrays");
    let opened_obj = r#"{"a":"#.repeat(3_000);
    assert_problem(&f.raw_patch(opened_obj.as_bytes()).await, 400, "3,000 unclosed objects");
    let closed = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = f.raw_patch(closed.as_bytes()).await;
    assert!([400, 413, 422].contains(&r.status), "10,000 closed arrays: {} {}", r.status, r.text());
    let fits = format!("{}{}", "[".repeat(8_000), "]".repeat(8_000));
    assert_problem(&f.raw_patch(fits.as_bytes()).await, 400, "8,000 closed arrays");
    let in_field = format!(
        r#"{{"preferences":{{"notifications":{{"sms":{}true{}}}}}}}"#,
        "[".repeat(7_000),
        "]".repeat(7_000)
    );
    assert_problem(&f.raw_patch(in_field.as_bytes()).await, 400, "7,000 levels inside a field");
    // Nesting the parser does accept, in a boolean field: a type error naming the field.
    let shallow =
        format!(r#"{{"preferences":{{"notifications":{{"sms":{}1{}}}}}}}"#, "[".repeat(100), "]".repeat(100));
    let b = assert_problem(&f.raw_patch(shallow.as_bytes()).await, 422, "100 levels inside a field");
    assert_eq!(fields(&b), ["preferences.notifications.sms"]);

    // Other syntax.
    for (what, body) in [
        ("empty body", &b""[..]),
        ("trailing garbage", br#"{"personal":{}} x"#),
        ("two documents", br#"{}{}"#),
        ("single quotes", br#"{'personal':{}}"#),
        ("a comment", br#"{/* hi */}"#),
        ("NaN", br#"{"personal":{"city":NaN}}"#),
        ("a NUL byte", b"{\"personal\":{\"city\":\"a\0b\"}}"),
    ] {
        assert_problem(&f.raw_patch(body).await, 400, what);
    }
    // JSON that is not an object.
    for body in ["[]", "null", "\"x\"", "42", "true"] {
        assert_problem(&f.raw_patch(body.as_bytes()).await, 422, body);
    }
    f.assert_alive_at(0).await;
    assert!(!f.server.stderr().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_last_one_wins_deterministically() {
    // serde_json keeps the last of duplicate keys; the server inherits that. Documented
    // here: the value that wins is the last, a duplicated object replaces (does not
    // merge with) the earlier one, and validation judges only the winner.
    let f = Fixture::start();
    for round in 0..3 {
        let r = f.raw_patch(br#"{"personal":{"city":"Paris","city":"Rome"}}"#).await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        assert_eq!(r.json()["personal"]["city"], "Rome", "round {round}");
        assert_eq!(f.profile().await["personal"]["city"], "Rome");
    }
    // An invalid value shadowed by a valid one is not an error…
    let r = f.raw_patch(br#"{"personal":{"phone":"12","phone":"+442071234567"}}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(f.profile().await["personal"]["phone"], "+442071234567");
    // …and a valid one shadowed by an invalid one is.
    let r = f.raw_patch(br#"{"personal":{"phone":"+442071234567","phone":"12"}}"#).await;
    assert_eq!(fields(&assert_problem(&r, 422, "valid then invalid")), ["personal.phone"]);
    // A repeated section replaces the earlier one whole.
    let r = f.raw_patch(br#"{"personal":{"city":"Oslo"},"personal":{"bio":"hi"}}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = f.profile().await;
    assert_eq!(p["personal"]["city"], "Rome", "the first section was dropped, not merged");
    assert_eq!(p["personal"]["bio"], "hi");
    // The same body always gives the same answer.
    let a = f.raw_patch(br#"{"preferences":{"theme":"dark","theme":"light","theme":"dark"}}"#).await;
    let b = f.raw_patch(br#"{"preferences":{"theme":"dark","theme":"light","theme":"dark"}}"#).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.json()["preferences"]["theme"], "dark");
    assert_eq!(a.header("etag"), b.header("etag"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_for_every_editable_field_are_one_422_naming_each() {
    let f = Fixture::start();
    let doc = json!({
        "personal": {
            "display_name": 42, "first_name": true, "last_name": ["a"], "email": {"a": 1},
            "phone": 4420712345i64, "avatar_url": false, "bio": 1.5, "birth_date": [1990, 12, 10],
            "city": {}, "country": 0
        },
        "preferences": {
            "language": 1, "timezone": [], "theme": true, "currency": 978,
            "notifications": {"email": "yes", "sms": 1, "push": [], "marketing": {}},
            "privacy": {"profile_visibility": false, "show_activity": "false"}
        },
        "business": {
            "company_name": 7, "job_title": [], "tax_id": 123456, "website": {},
            "billing_address": {"line1": 1, "line2": true, "city": [], "postal_code": 10115, "country": {}}
        }
    });
    let expected = [
        "personal.display_name",
        "personal.first_name",
        "personal.last_name",
        "personal.email",
        "personal.phone",
        "personal.avatar_url",
        "personal.bio",
        "personal.birth_date",
        "personal.city",
        "personal.country",
        "preferences.language",
        "preferences.timezone",
        "preferences.theme",
        "preferences.currency",
        "preferences.notifications.email",
        "preferences.notifications.sms",
        "preferences.notifications.push",
        "preferences.notifications.marketing",
        "preferences.privacy.profile_visibility",
        "preferences.privacy.show_activity",
        "business.company_name",
        "business.job_title",
        "business.tax_id",
        "business.website",
        "business.billing_address.line1",
        "business.billing_address.line2",
        "business.billing_address.city",
        "business.billing_address.postal_code",
        "business.billing_address.country",
    ];
    let b = assert_problem(&f.patch(&doc).await, 422, "every field mistyped");
    let got = fields(&b);
    for field in expected {
        assert!(got.iter().any(|g| g == field), "422 does not name {field}: {got:?}");
    }
    for e in b["errors"].as_array().unwrap() {
        assert_eq!(e["code"], "invalid_type", "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    assert_eq!(got.len(), expected.len(), "each field once: {got:?}");

    // Sections and nested objects of the wrong type are named as such.
    let doc = json!({"personal": "Ada", "preferences": {"notifications": "all", "privacy": [true]},
                     "business": {"billing_address": "1 Main St"}});
    let got = fields(&assert_problem(&f.patch(&doc).await, 422, "mistyped sections"));
    for field in ["personal", "preferences.notifications", "preferences.privacy", "business.billing_address"]
    {
        assert!(got.iter().any(|g| g == field), "422 does not name {field}: {got:?}");
    }
    f.assert_alive_at(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_out_of_range_never_pass_as_booleans_or_strings() {
    let f = Fixture::start();
    // JSON-representable numbers: each a type error in one 422 with the others.
    let body = br#"{"preferences":{"notifications":{"sms":-0,"push":-0.0,"email":1,"marketing":0},
                   "privacy":{"show_activity":123456789012345678901234567890}},
                   "personal":{"display_name":123456789012345678901234567890,"city":-0,"bio":1e308,
                               "first_name":18446744073709551616,"last_name":-9223372036854775809},
                   "business":{"company_name":5e-324}}"#;
    let got = fields(&assert_problem(&f.raw_patch(body).await, 422, "out-of-range numbers"));
    for field in [
        "preferences.notifications.sms",
        "preferences.notifications.push",
        "preferences.notifications.email",
        "preferences.notifications.marketing",
        "preferences.privacy.show_activity",
        "personal.display_name",
        "personal.city",
        "personal.bio",
        "personal.first_name",
        "personal.last_name",
        "business.company_name",
    ] {
        assert!(got.iter().any(|g| g == field), "422 does not name {field}: {got:?}");
    }
    // Numbers beyond f64 (1e400) are not JSON this service can represent: the body is
    // refused as malformed (400), as problem+json, and nothing is written.
    for body in [
        &br#"{"preferences":{"notifications":{"sms":1e400}}}"#[..],
        br#"{"personal":{"display_name":-1e400}}"#,
        br#"{"personal":{"city":1e99999999999}}"#,
    ] {
        let r = f.raw_patch(body).await;
        assert!(r.status == 400, "{}: {} {}", String::from_utf8_lossy(body), r.status, r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    f.assert_alive_at(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_before_they_are_read() {
    let f = Fixture::start();
    let addr = f.server.addr;
    let head = |framing: &str| {
        format!(
            "PATCH /user/profile HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\n{framing}\r\n",
            f.auth
        )
    };

    // Announces 10 MB, sends 64 bytes and then nothing: the 413 must not wait for the rest.
    let (status, took, text) =
        raw_exchange(addr, &head("Content-Length: 10485760\r\n"), &[b' '; 64], Duration::from_secs(5));
    assert_eq!(status, Some(413), "{text}");
    assert!(took < Duration::from_secs(2), "413 took {took:?}: the server waited for the body");
    assert!(text.to_lowercase().contains("application/problem+json"), "{text}");

    // Chunked, no length announced: refused once 16 KiB have arrived, without the end.
    let mut body = Vec::new();
    for _ in 0..5 {
        body.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
        body.extend_from_slice(&[b' '; 4096]);
        body.extend_from_slice(b"\r\n");
    }
    let (status, took, text) =
        raw_exchange(addr, &head("Transfer-Encoding: chunked\r\n"), &body, Duration::from_secs(5));
    assert_eq!(status, Some(413), "{text}");
    assert!(took < Duration::from_secs(2), "413 took {took:?}");

    // A 10 MB body actually sent, by a client that reads the answer while writing.
    let big = vec![b' '; 10 * 1024 * 1024];
    let started = std::time::Instant::now();
    let r = f
        .http
        .try_send(
            "PATCH",
            &f.url,
            &[("authorization", &f.auth), ("content-type", "application/json")],
            Some(&big),
        )
        .await;
    // The server may close the connection while the client is still writing; then the
    // client sees a reset rather than the 413. Either way it is quick and not a success.
    if let Ok(r) = &r {
        assert_problem(r, 413, "10 MB body");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "10 MB refusal took {:?}", started.elapsed());
    // Exactly at the limit is accepted by size (and judged as JSON).
    let mut at_limit = br#"{"personal":{"bio":"x"}}"#.to_vec();
    at_limit.resize(16 * 1024, b' ');
    assert_eq!(f.raw_patch(&at_limit).await.status, 200);
    f.assert_alive_at(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_and_bidi_characters_are_refused_in_names() {
    let f = Fixture::start();
    let doc = json!({
        "personal": {"display_name": "Ad\u{200B}a", "first_name": "\u{202E}evoL", "last_name": "Love\u{200B}",
                     "city": "Lon\u{202D}don"},
        "business": {"company_name": "Acme\u{2066}", "job_title": "Eng\u{FEFF}ineer"}
    });
    let got = fields(&assert_problem(&f.patch(&doc).await, 422, "invisible characters"));
    for field in [
        "personal.display_name",
        "personal.first_name",
        "personal.last_name",
        "personal.city",
        "business.company_name",
        "business.job_title",
    ] {
        assert!(got.iter().any(|g| g == field), "422 does not name {field}: {got:?}");
    }
    // Only a zero-width space, which trimming does not remove, is not a name either.
    let r = f.patch(&json!({"personal": {"display_name": "\u{200B}"}})).await;
    assert_eq!(fields(&assert_problem(&r, 422, "only U+200B")), ["personal.display_name"]);
    f.assert_alive_at(0).await;
    // The joiner inside an emoji sequence is allowed (SPEC §5).
    let r = f.patch(&json!({"personal": {"display_name": "Ada \u{1F469}\u{200D}\u{1F4BB}"}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(f.profile().await["personal"]["display_name"], "Ada \u{1F469}\u{200D}\u{1F4BB}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metacharacters_are_stored_and_returned_verbatim() {
    let f = Fixture::start();
    let values = json!({
        "personal": {"display_name": "'; DROP TABLE users; --",
                     "first_name": "Robert'); DROP TABLE profiles;--",
                     "last_name": "\" OR 1=1 --", "city": "%_\\",
                     "bio": "' OR '1'='1\n\" OR \"\"=\"\n%_\\ ; -- /* */ `x` $1 ?1 :name"},
        "business": {"company_name": "%_\\ LIKE '%'", "job_title": "\\\\'\\\""}
    });
    let r = f.patch(&values).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Read back from the database (no profile cache), twice: verbatim, every time.
    for _ in 0..2 {
        let p = f.profile().await;
        for (section, fields) in values.as_object().unwrap() {
            for (key, v) in fields.as_object().unwrap() {
                assert_eq!(&p[section][key], v, "{section}.{key} not verbatim");
            }
        }
    }
    // The tables the strings name are still there, and another user is unaffected.
    let other = f.http.get(&f.url, &token(2)).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(other.json()["personal"]["display_name"], "user2");
    assert_eq!(f.http.send("GET", &f.server.url("/readyz"), &[], None).await.status, 200);
    // An e-mail with LIKE wildcards is compared as text, not as a pattern.
    let r = f.patch(&json!({"personal": {"email": "a%_b@example.com"}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = f.http.patch(&f.url, &token(2), &json!({"personal": {"email": "axyb@example.com"}}), &[]).await;
    assert_eq!(r.status, 200, "a wildcard address must not block a different one: {}", r.text());
    let r = f.http.patch(&f.url, &token(2), &json!({"personal": {"email": "A%_B@example.com"}}), &[]).await;
    assert_problem(&r, 409, "the same address, other case");
}

/// A client that hangs up in the middle of its request, or sends bytes that are not
/// HTTP, is the client's doing: the server goes on serving and logs no error (an
/// operator alerting on error lines would be paged for every flaky mobile network).
#[tokio::test]
async fn clients_hanging_up_mid_request_log_no_error() {
    use std::io::Write;
    let f = Fixture::start();
    let addr = f.server.addr;
    for partial in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..],
        b"PATCH /user/profile HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"per",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS hello, not HTTP\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(partial).expect("write");
        drop(s);
    }
    // Served as before, and by then the hang-ups are behind it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = f.http.get(&f.url, &f.me).await;
    assert_eq!(r.status, 200);
    let log = f.server.stderr();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("\"level\":\"ERROR\"")).collect();
    assert!(errors.is_empty(), "error lines for client hang-ups:\n{}", errors.join("\n"));
}
