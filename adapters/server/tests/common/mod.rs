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
use profile_http_warp::AuthConfig;

pub const SECRET: &str = "end-to-end-test-secret-0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_profile-api")
}

/// A temp folder holding both databases.
pub struct Dbs {
    pub dir: tempfile::TempDir,
}

impl Dbs {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }
    pub fn main(&self) -> PathBuf {
        self.dir.path().join("db/main.db")
    }
    pub fn profiles(&self) -> PathBuf {
        self.dir.path().join("db/profiles.db")
    }
    pub fn args(&self) -> Vec<String> {
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
    profile_http_warp::mint_token(&auth, user, Duration::from_secs(600)).expect("token")
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
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req =
            req.body(Full::new(Bytes::from(body.map(<[u8]>::to_vec).unwrap_or_default()))).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("response in time")
            .expect("response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        Resp { status, headers, body }
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
