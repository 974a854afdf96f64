//! Several clients saving one profile at once, on the real binary: they queue, none
//! fails because of another, none is lost (SPEC §5). One server for the whole file.

mod common;

use common::{Dbs, Http, Server, token};
use serde_json::{Value, json};

/// The value client `field` sends in its `n`-th PATCH: always different from the one
/// before, so every PATCH is effective and bumps `version`.
fn value(field: &str, n: usize) -> Value {
    let even = n.is_multiple_of(2);
    match field {
        "phone" => json!(format!("+4420712{n:05}")),
        "avatar_url" => json!(format!("https://cdn.example.com/{n}.png")),
        "country" => json!(if even { "GB" } else { "FR" }),
        "language" => json!(if even { "fr" } else { "de" }),
        "timezone" => json!(if even { "Europe/Paris" } else { "Europe/Oslo" }),
        "theme" => json!(if even { "light" } else { "dark" }),
        "currency" => json!(if even { "EUR" } else { "GBP" }),
        "sms" | "show_activity" => json!(even),
        other => json!(format!("{other} {n}")),
    }
}

/// The merge patch setting one field, and where the answer shows it.
fn patch_of(field: &str, v: Value) -> (Value, &'static str) {
    match field {
        "language" | "timezone" | "theme" | "currency" => (json!({"preferences": {field: v}}), "preferences"),
        "sms" => (json!({"preferences": {"notifications": {"sms": v}}}), "preferences.notifications"),
        "show_activity" => (json!({"preferences": {"privacy": {"show_activity": v}}}), "preferences.privacy"),
        "company_name" | "job_title" => (json!({"business": {field: v}}), "business"),
        _ => (json!({"personal": {field: v}}), "personal"),
    }
}

fn at<'a>(doc: &'a Value, path: &str, field: &str) -> &'a Value {
    path.split('.').fold(doc, |d, k| &d[k]).get(field).unwrap_or(&Value::Null)
}

const FIELDS: [&str; 16] = [
    "display_name",
    "first_name",
    "last_name",
    "phone",
    "avatar_url",
    "bio",
    "city",
    "country",
    "language",
    "timezone",
    "theme",
    "currency",
    "sms",
    "show_activity",
    "company_name",
    "job_title",
];

/// 16 clients × 50 PATCHes of distinct fields of one user, no If-Match.
async fn distinct_fields_of_one_user(http: &Http, server: &Server) {
    const PER_CLIENT: usize = 50;
    let (url, user) = (server.url("/user/profile"), 1);
    let clients: Vec<_> = FIELDS
        .iter()
        .map(|&field| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let t = token(user);
                let mut statuses = Vec::new();
                for n in 0..PER_CLIENT {
                    let (body, _) = patch_of(field, value(field, n));
                    let r = http.patch(&url, &t, &body, &[]).await;
                    if r.status != 200 {
                        eprintln!("{field} #{n}: {} {}", r.status, r.text());
                    }
                    statuses.push(r.status);
                }
                statuses
            })
        })
        .collect();
    for (field, c) in FIELDS.iter().zip(clients) {
        let statuses = c.await.expect("client");
        assert!(statuses.iter().all(|s| *s == 200), "{field}: every PATCH must be 200, got {statuses:?}");
    }
    let doc = http.get(&url, &token(user)).await.json();
    assert_eq!(doc["version"], 16 * PER_CLIENT, "every effective PATCH counted: {doc}");
    for field in FIELDS {
        let (_, path) = patch_of(field, Value::Null);
        let want = value(field, PER_CLIENT - 1);
        let want = if field == "country" { json!(want.as_str().unwrap().to_uppercase()) } else { want };
        assert_eq!(at(&doc, path, field), &want, "{field} must be at its last write: {doc}");
    }
}

/// Profile PATCHes of one user with e-mail changes mixed in: all 200, nothing lost,
/// and the two databases agree at the end.
async fn with_email_changes(http: &Http, server: &Server, dbs: &Dbs) {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 25;
    let (url, user) = (server.url("/user/profile"), 2);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let t = token(user);
                let mut statuses = Vec::new();
                for n in 0..PER_CLIENT {
                    let body = if c == 0 {
                        json!({"personal": {"email": format!("u2-{n}@example.com")}, "business": {"job_title": format!("jt {n}")}})
                    } else {
                        patch_of(FIELDS[c], value(FIELDS[c], n)).0
                    };
                    let r = http.patch(&url, &t, &body, &[]).await;
                    if r.status != 200 {
                        eprintln!("client {c} #{n}: {} {}", r.status, r.text());
                    }
                    statuses.push(r.status);
                }
                statuses
            })
        })
        .collect();
    for (c, task) in clients.into_iter().enumerate() {
        let statuses = task.await.expect("client");
        assert!(statuses.iter().all(|s| *s == 200), "client {c}: every PATCH must be 200, got {statuses:?}");
    }
    let doc = http.get(&url, &token(user)).await.json();
    assert_eq!(doc["version"], CLIENTS * PER_CLIENT, "{doc}");
    let last_email = format!("u2-{}@example.com", PER_CLIENT - 1);
    assert_eq!(doc["personal"]["email"], last_email.as_str());
    assert_eq!(
        doc["business"]["job_title"],
        format!("jt {}", PER_CLIENT - 1),
        "e-mail and its fields together"
    );
    use profile_core::ports::{AccountRepository, ProfileRepository};
    let cfg = |path| profile_sqlite::DbConfig {
        path,
        pool_size: 1,
        busy_timeout: std::time::Duration::from_secs(5),
    };
    let main = profile_sqlite::open_main(&cfg(dbs.main())).await.expect("main");
    let profiles = profile_sqlite::open_profiles(&cfg(dbs.profiles())).await.expect("profiles");
    assert_eq!(main.account(user).await.unwrap().unwrap().email, last_email, "main database agrees");
    assert_eq!(profiles.load(user).await.unwrap().unwrap().version, (CLIENTS * PER_CLIENT) as i64);
    assert!(profiles.pending_email_changes().await.unwrap().is_empty(), "no journal entry left open");
    main.close().await;
    profiles.close().await;
}

/// Many clients sending the same If-Match: exactly one 200 per ETag, the rest 412.
async fn one_winner_per_etag(http: &Http, server: &Server) {
    let (url, user) = (server.url("/user/profile"), 3);
    for round in 0..5 {
        let etag = http.get(&url, &token(user)).await.header("etag").expect("etag").to_owned();
        let clients: Vec<_> = (0..8)
            .map(|n| {
                let (http, url, etag) = (http.clone(), url.clone(), etag.clone());
                tokio::spawn(async move {
                    let body = json!({"personal": {"city": format!("c{round}-{n}")}});
                    http.patch(&url, &token(user), &body, &[("if-match", &etag)]).await.status
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for c in clients {
            statuses.push(c.await.expect("client"));
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412, 412, 412, 412, 412, 412, 412], "round {round}");
    }
    assert_eq!(http.get(&url, &token(user)).await.json()["version"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_of_one_user_queue_and_none_is_lost() {
    let dbs = Dbs::new();
    dbs.seed(3);
    let server = Server::start(&dbs, &[]);
    let http = Http::new();
    distinct_fields_of_one_user(&http, &server).await;
    with_email_changes(&http, &server, &dbs).await;
    one_winner_per_etag(&http, &server).await;
    assert!(server.terminate().success());
}
