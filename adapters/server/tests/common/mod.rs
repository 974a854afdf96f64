//! Harness for end-to-end tests: the real `profile-api` binary on port 0, temp
//! databases, the rewards stub in-process, and a small HTTP client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use profile_auth_jwt::AuthConfig;

pub const SECRET: &str = "end-to-end-test-secret-0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_profile-api")
}

/// A temp folder holding both databases (SQLite), or the logs only when the databases
/// are PostgreSQL URLs.
pub struct Dbs {
    pub dir: tempfile::TempDir,
    /// `--main-db` and `--profiles-db` as PostgreSQL URLs, when not files in `dir`.
    pub urls: Option<(String, String)>,
}

impl Dbs {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir"), urls: None }
    }
    /// Both databases on PostgreSQL.
    pub fn postgres(main_url: String, profiles_url: String) -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir"), urls: Some((main_url, profiles_url)) }
    }
    pub fn main(&self) -> PathBuf {
        self.dir.path().join("db/main.db")
    }
    pub fn profiles(&self) -> PathBuf {
        self.dir.path().join("db/profiles.db")
    }
    pub fn args(&self) -> Vec<String> {
        if let Some((main, profiles)) = &self.urls {
            return vec!["--main-db".into(), main.clone(), "--profiles-db".into(), profiles.clone()];
        }
        vec![
            "--main-db".into(),
            self.main().display().to_string(),
            "--profiles-db".into(),
            self.profiles().display().to_string(),
        ]
    }
    /// Runs `profile-api seed`.
    pub fn seed(&self, users: u64) {
        let out = Command::new(bin())
            .args(["seed", "--users", &users.to_string(), "--orders-per-user", "5"])
            .args(self.args())
            .output()
            .expect("run seed");
        assert!(out.status.success(), "seed failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A running server process; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout_lines: mpsc::Receiver<String>,
    pub stderr_path: PathBuf,
}

impl Server {
    /// Starts `profile-api serve` with extra args; waits until it listens.
    pub fn start(dbs: &Dbs, extra: &[&str]) -> Self {
        Self::start_env(dbs, extra, &[])
    }

    pub fn start_env(dbs: &Dbs, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let stderr_path = dbs.dir.path().join(format!("stderr-{}.log", rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(dbs.args())
            .args(extra)
            .env_remove("PROFILE_REWARDS_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("profile-api listening on http://") {
                        break rest.trim().parse().expect("address");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "server did not start: {}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        };
        Self { child, addr, stdout_lines: rx, stderr_path }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_timeout(&mut self.child, Duration::from_secs(20)).expect("server exits after SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn token(user: i64) -> String {
    let auth = AuthConfig { secret: SECRET.as_bytes().to_vec(), issuer: None, audience: None };
    profile_auth_jwt::mint_token(&auth, user, Duration::from_secs(600)).expect("token")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A small HTTP/1.1 client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new() -> Self {
        Self { client: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub async fn send(&self, method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        self.try_send(method, url, headers, body).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// Like `send`, but a transport failure (the server died, the connection was
    /// reset) is an `Err` instead of a panic. A response slower than 20 s still panics.
    pub async fn try_send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, String> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req =
            req.body(Full::new(Bytes::from(body.map(<[u8]>::to_vec).unwrap_or_default()))).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("response in time")
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body =
            resp.into_body().collect().await.map_err(|e| format!("body failed: {e}"))?.to_bytes().to_vec();
        Ok(Resp { status, headers, body })
    }

    pub async fn get(&self, url: &str, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.send("GET", url, &[("authorization", &auth)], None).await
    }

    pub async fn patch(
        &self,
        url: &str,
        token: &str,
        body: &serde_json::Value,
        extra: &[(&str, &str)],
    ) -> Resp {
        let auth = format!("Bearer {token}");
        let mut headers =
            vec![("authorization", auth.as_str()), ("content-type", "application/merge-patch+json")];
        headers.extend_from_slice(extra);
        self.send("PATCH", url, &headers, Some(&serde_json::to_vec(body).expect("json"))).await
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Seconds since the Unix epoch, for hand-made token claims.
pub fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs()
        as i64
}

/// base64url without padding (RFC 7515 §2), for hand-made tokens.
pub fn b64url(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT with exactly this header and these claims. `sign_as` computes the signature
/// with that algorithm and `secret` whatever the header claims (so an `RS256` header
/// can carry an HMAC made with the shared secret); `None` leaves the signature empty.
pub fn craft_token(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    sign_as: Option<jsonwebtoken::Algorithm>,
    secret: &[u8],
) -> String {
    let message = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(header).expect("header")),
        b64url(&serde_json::to_vec(claims).expect("claims"))
    );
    let signature = match sign_as {
        None => String::new(),
        Some(alg) => jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(secret),
            alg,
        )
        .expect("sign"),
    };
    format!("{message}.{signature}")
}

/// An HS256 token over `claims`, signed with the server's secret.
pub fn signed_token(claims: &serde_json::Value) -> String {
    craft_token(
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        Some(jsonwebtoken::Algorithm::HS256),
        SECRET.as_bytes(),
    )
}

/// Runs SQL on a database file through a connection of its own (another process's view).
pub fn exec_sql(db: &Path, sql: &str) {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let mut c = diesel::SqliteConnection::establish(&db.display().to_string()).expect("open database");
    c.batch_execute("PRAGMA busy_timeout = 5000").expect("busy timeout");
    c.batch_execute(sql).expect("run SQL");
}

/// Fails when `text` contains any of `needles` (case-insensitively when a needle is all
/// lower-case), quoting the offending line.
pub fn assert_free_of(text: &str, what: &str, needles: &[&str]) {
    for line in text.lines() {
        for needle in needles.iter().filter(|n| !n.is_empty()) {
            let hit = if needle.chars().any(char::is_uppercase) {
                line.contains(needle)
            } else {
                line.to_lowercase().contains(needle)
            };
            assert!(!hit, "{what} contains {needle:?}: {line}");
        }
    }
}

/// What must never appear in an error body or a log line: SQL text, source locations,
/// panics, and the temp folder holding the databases (pass it in `extra` with tokens and
/// e-mail addresses of the test).
pub fn assert_no_leaks(text: &str, what: &str, extra: &[&str]) {
    let mut needles =
        vec!["SELECT", "INSERT", "UPDATE", "DELETE FROM", "sqlite", "/src/", ".rs:", "panicked"];
    needles.extend_from_slice(extra);
    assert_free_of(text, what, &needles);
}

/// The server's log lines apart from the start-up line, which names the database files on
/// purpose (the operator needs to know which files the process opened).
pub fn request_log_lines(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("\"message\":\"profile-api listening\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `head` then `body` on a raw connection, half-keeps it open (does not send the
/// rest), and reads what the server answers within `limit`: the status (if any) and
/// how long the answer took.
pub fn raw_exchange(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
    limit: Duration,
) -> (Option<u16>, Duration, String) {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(limit)).expect("timeout");
    // The server may answer and close before it has taken everything: not an error here.
    let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    if len.is_some_and(|len| got.len() >= end + 4 + len) {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok());
    (status, elapsed, text)
}
