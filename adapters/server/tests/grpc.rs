//! The real binary with `--grpc-listen` (SPEC §11): a client generated from the
//! repository's proto, health and reflection, one state seen by both transports, no
//! gRPC port without the flag, a bad address refused naming the flag.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use profile_grpc_tonic::pb;
use profile_grpc_tonic::pb::profile_service_client::ProfileServiceClient;
use prost_types::FieldMask;
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect to gRPC")
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    req
}

/// TCP sockets the process listens on (from /proc: its socket inodes in LISTEN state).
fn listening_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}

#[tokio::test]
async fn a_generated_client_reads_and_updates_and_http_sees_the_same_state() {
    let dbs = Dbs::new();
    dbs.seed(3);
    let server = Server::start(&dbs, &["--grpc-listen", "127.0.0.1:0"]);
    let grpc_addr = server.grpc_addr.expect("the gRPC listening line");
    let token = token(2);
    let http = Http::new();
    let mut client = ProfileServiceClient::new(channel(grpc_addr).await);

    let read =
        client.get_profile(authed(pb::GetProfileRequest {}, &token)).await.expect("GetProfile").into_inner();
    assert_eq!(read.user_id, 2);
    assert_eq!(read.personal.as_ref().and_then(|p| p.email.as_deref()), Some("user2@example.com"));
    let over_http = http.get(&server.url("/user/profile"), &token).await;
    assert_eq!(over_http.status, 200);
    assert_eq!(over_http.header("etag"), Some(format!("\"{}\"", read.etag).as_str()), "same etag on both");

    // gRPC update → seen over HTTP at once.
    let req = pb::UpdateProfileRequest {
        profile: Some(pb::Profile {
            personal: Some(pb::Personal { city: Some("Leeds".into()), ..Default::default() }),
            etag: read.etag.clone(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths: vec!["personal.city".into(), "personal.phone".into()] }),
    };
    let updated = client.update_profile(authed(req, &token)).await.expect("UpdateProfile").into_inner();
    assert_eq!(updated.version, 1);
    assert_eq!(updated.personal.as_ref().and_then(|p| p.city.as_deref()), Some("Leeds"));
    let after = http.get(&server.url("/user/profile"), &token).await;
    assert_eq!(after.json()["personal"]["city"], "Leeds");
    assert_eq!(after.header("etag"), Some(format!("\"{}\"", updated.etag).as_str()));

    // HTTP update → seen over gRPC at once.
    let patched = http
        .patch(&server.url("/user/profile"), &token, &json!({"preferences": {"theme": "dark"}}), &[])
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let read =
        client.get_profile(authed(pb::GetProfileRequest {}, &token)).await.expect("GetProfile").into_inner();
    assert_eq!(read.preferences.as_ref().and_then(|p| p.theme.as_deref()), Some("dark"));
    assert_eq!(read.version, 2);
    assert_eq!(patched.header("etag"), Some(format!("\"{}\"", read.etag).as_str()));

    // The now stale etag is refused with nothing written; errors carry the detail.
    let stale = pb::UpdateProfileRequest {
        profile: Some(pb::Profile {
            personal: Some(pb::Personal {
                city: Some("York".into()),
                phone: Some("12".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: None,
    };
    let err = client.update_profile(authed(stale, &token)).await.expect_err("invalid phone");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut stale_tag = pb::Profile { etag: updated.etag.clone(), ..Default::default() };
    stale_tag.personal = Some(pb::Personal { city: Some("York".into()), ..Default::default() });
    let err = client
        .update_profile(authed(
            pb::UpdateProfileRequest { profile: Some(stale_tag), update_mask: None },
            &token,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), tonic::Code::Aborted);
    let err = client.get_profile(tonic::Request::new(pb::GetProfileRequest {})).await.expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Calls are in /metrics by method and code.
    let metrics = http.send("GET", &server.url("/metrics"), &[], None).await.text();
    assert!(
        metrics.contains(
            "grpc_requests_total{method=\"/profile.v1.ProfileService/UpdateProfile\",code=\"ABORTED\"}"
        ),
        "{metrics}"
    );
    // One log line per call, with method, code and request id; no token, no e-mail.
    // (Read after exit: the log writer is asynchronous.) The idle client channel left
    // open does not hold the exit up to the drain bound (10 s by default).
    let stderr_path = server.stderr_path.clone();
    let started = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "exit took {:?}", started.elapsed());
    let stderr = std::fs::read_to_string(stderr_path).expect("stderr");
    let calls: Vec<&str> = stderr.lines().filter(|l| l.contains("\"message\":\"grpc call\"")).collect();
    assert!(calls.len() >= 6, "{stderr}");
    assert!(
        calls.iter().any(|l| l.contains("UpdateProfile") && l.contains("\"code\":\"ABORTED\"")),
        "{stderr}"
    );
    assert!(calls.iter().all(|l| l.contains("\"request_id\":")), "{stderr}");
    let dir = dbs.dir.path().display().to_string();
    assert_no_leaks(&request_log_lines(&stderr), "the server log", &[&token, "user2@example.com", &dir]);
}

#[tokio::test]
async fn health_and_reflection_answer() {
    let dbs = Dbs::new();
    dbs.seed(1);
    let server = Server::start(&dbs, &["--grpc-listen", "127.0.0.1:0", "--shutdown-timeout-s", "1"]);
    let ch = channel(server.grpc_addr.expect("gRPC address")).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for name in ["", "profile.v1.ProfileService"] {
        let res = health
            .check(tonic_health::pb::HealthCheckRequest { service: name.into() })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            res.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{name:?}"
        );
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(ch);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        reflection.server_reflection_info(tokio_stream::iter([req])).await.expect("reflection").into_inner();
    let answer = answers.next().await.expect("answer").expect("ok").message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = answer else { panic!("{answer:?}") };
    assert!(list.service.iter().any(|s| s.name == "profile.v1.ProfileService"), "{list:?}");
    // SIGTERM with the client's channel and its reflection stream still open: the drain
    // stops at its bound and the process exits 0.
    let stderr_path = server.stderr_path.clone();
    let started = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "exit took {:?}", started.elapsed());
    drop(answers);
    let stderr = std::fs::read_to_string(stderr_path).expect("stderr");
    assert!(stderr.contains("gRPC: draining in-flight calls"), "{stderr}");
}

#[tokio::test]
async fn without_the_flag_no_grpc_port_is_open() {
    let dbs = Dbs::new();
    let off = Server::start(&dbs, &[]);
    assert!(off.grpc_addr.is_none());
    assert_eq!(listening_ports(off.child.id()), HashSet::from([off.addr.port()]));
    drop(off);
    let on = Server::start(&dbs, &["--grpc-listen", "127.0.0.1:0"]);
    let grpc = on.grpc_addr.expect("gRPC address").port();
    assert_eq!(listening_ports(on.child.id()), HashSet::from([on.addr.port(), grpc]));
}

fn refused(args: &[&str]) -> String {
    let dbs = Dbs::new();
    let out = Command::new(bin())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(dbs.args())
        .args(args)
        .env_remove("PROFILE_GRPC_LISTEN")
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "serve {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default().to_owned()
}

#[test]
fn a_bad_address_exits_non_zero_naming_the_flag() {
    for bad in ["nonsense", "127.0.0.1", "127.0.0.1:99999"] {
        let last = refused(&["--grpc-listen", bad]);
        assert!(last.contains("--grpc-listen"), "{bad}: {last}");
    }
    // An address that cannot be bound (taken) is named too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let last = refused(&["--grpc-listen", &addr]);
    assert!(last.contains("--grpc-listen") && last.contains("PROFILE_GRPC_LISTEN"), "{last}");
}

#[test]
fn the_environment_variable_turns_it_on() {
    let dbs = Dbs::new();
    let server = Server::start_env(&dbs, &[], &[("PROFILE_GRPC_LISTEN", "127.0.0.1:0")]);
    assert!(server.grpc_addr.is_some(), "{}", server.stderr());
}
