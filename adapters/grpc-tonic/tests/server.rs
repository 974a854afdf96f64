//! The gRPC server around the service: health following readiness, reflection (v1 and
//! v1alpha), the 16 KiB limit, metrics and the bounded drain.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use profile_core::ports::StoreError;
use profile_grpc_tonic::pb;
use profile_memory::Op;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new().install_recorder().expect("recorder");
        profile_grpc_tonic::describe_metrics();
        handle
    })
}

async fn health(g: &Grpc, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(g.channel.clone());
    let res = client.check(HealthCheckRequest { service: service.to_owned() }).await.expect("health check");
    ServingStatus::try_from(res.into_inner().status).expect("status")
}

#[tokio::test]
async fn health_follows_readiness_for_both_names() {
    let app = App::new();
    let g = app.grpc_with(Duration::from_millis(50)).await;
    assert_eq!(health(&g, "").await, ServingStatus::Serving);
    assert_eq!(health(&g, "profile.v1.ProfileService").await, ServingStatus::Serving);
    // A database that stops answering its ping: NOT_SERVING, then back.
    app.accounts.faults.fail_next(Op::Ping, 1_000_000, StoreError::Unavailable("down".into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(&g, "").await != ServingStatus::NotServing {
        assert!(Instant::now() < deadline, "health never went NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health(&g, "profile.v1.ProfileService").await, ServingStatus::NotServing);
    app.accounts.faults.fail_next(Op::Ping, 0, StoreError::Unavailable("down".into()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(&g, "profile.v1.ProfileService").await != ServingStatus::Serving {
        assert!(Instant::now() < deadline, "health never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An unknown name is NOT_FOUND, as the health protocol says.
    let mut client = HealthClient::new(g.channel.clone());
    let err = client.check(HealthCheckRequest { service: "nope.Service".into() }).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    g.shutdown().await;
}

#[tokio::test]
async fn reflection_lists_the_service_in_v1_and_v1alpha() {
    let app = App::new();
    let g = app.grpc().await;
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(g.channel.clone());
        let reqs = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(
                    "profile.v1.ProfileService".into(),
                )),
            },
        ];
        let mut answers =
            client.server_reflection_info(tokio_stream::iter(reqs)).await.expect("v1").into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.next().await.expect("answer").expect("ok").message_response
        else {
            panic!("no service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"profile.v1.ProfileService".to_owned()), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.next().await.expect("answer").expect("ok").message_response
        else {
            panic!("no file descriptor")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(g.channel.clone());
        let reqs = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            // The imported well-known types are served too, so generic clients can decode.
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileByFilename(
                    "google/protobuf/field_mask.proto".into(),
                )),
            },
        ];
        let mut answers =
            client.server_reflection_info(tokio_stream::iter(reqs)).await.expect("v1alpha").into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.next().await.expect("answer").expect("ok").message_response
        else {
            panic!("no service list")
        };
        assert!(list.service.iter().any(|s| s.name == "profile.v1.ProfileService"));
        let answer = answers.next().await.expect("answer").expect("ok").message_response;
        assert!(matches!(answer, Some(MessageResponse::FileDescriptorResponse(_))), "{answer:?}");
    }
    g.shutdown().await;
}

#[tokio::test]
async fn messages_over_16_kib_are_resource_exhausted() {
    let app = App::new();
    let mut g = app.grpc().await;
    let bearer = format!("Bearer {}", app.token(ACTIVE));
    let big = |n: usize| pb::UpdateProfileRequest {
        profile: Some(pb::Profile {
            personal: Some(pb::Personal { bio: Some("x".repeat(n)), ..Default::default() }),
            ..Default::default()
        }),
        update_mask: None,
    };
    let err = g.client.update_profile(with_auth(big(17 * 1024), Some(&bearer))).await.expect_err("too big");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("16 KiB"), "{}", err.message());
    // Just under the limit is read, and judged by the field rules (bio ≤ 500).
    let err = g.client.update_profile(with_auth(big(16 * 1024 - 64), Some(&bearer))).await.expect_err("bio");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    g.shutdown().await;
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_with_latency() {
    let handle = recorder();
    let app = App::new();
    let mut g = app.grpc().await;
    let bearer = format!("Bearer {}", app.token(ACTIVE));
    g.client.get_profile(with_auth(pb::GetProfileRequest {}, Some(&bearer))).await.expect("get");
    let _ = g.client.get_profile(with_auth(pb::GetProfileRequest {}, None)).await;
    g.shutdown().await;
    let text = handle.render();
    let line = |needle: &str| text.lines().find(|l| l.starts_with(needle)).map(str::to_owned);
    let ok = line("grpc_requests_total{method=\"/profile.v1.ProfileService/GetProfile\",code=\"OK\"}");
    assert!(ok.is_some(), "{text}");
    let unauth = line(
        "grpc_requests_total{method=\"/profile.v1.ProfileService/GetProfile\",code=\"UNAUTHENTICATED\"}",
    );
    assert!(unauth.is_some(), "{text}");
    assert!(text.contains("grpc_request_duration_seconds"), "{text}");
}

#[tokio::test]
async fn the_drain_is_bounded_when_a_call_hangs() {
    let app = App::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = profile_grpc_tonic::GrpcState::new(app.service.clone(), std::sync::Arc::new(FakeVerifier));
    let server = tokio::spawn(profile_grpc_tonic::serve(
        listener,
        state,
        async move {
            let _ = stopped.await;
        },
        Duration::from_millis(300),
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = pb::profile_service_client::ProfileServiceClient::new(channel);
    app.accounts.faults.set_latency(Some(Duration::from_secs(30)));
    let bearer = "Bearer user-1".to_owned();
    let hanging =
        tokio::spawn(
            async move { client.get_profile(with_auth(pb::GetProfileRequest {}, Some(&bearer))).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let _ = stop.send(());
    let done = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(done.is_ok(), "serve did not return within its drain bound");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    hanging.abort();
}

#[tokio::test]
async fn a_call_in_flight_at_shutdown_is_answered_and_an_idle_channel_does_not_hold_the_exit() {
    let app = App::new();
    let mut g = app.grpc().await;
    let bearer = format!("Bearer {}", app.token(ACTIVE));
    app.accounts.faults.set_latency(Some(Duration::from_millis(300)));
    let mut client = g.client.clone();
    let call =
        tokio::spawn(
            async move { client.get_profile(with_auth(pb::GetProfileRequest {}, Some(&bearer))).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    if let Some(stop) = g.stop.take() {
        let _ = stop.send(());
    }
    let answer = call.await.expect("join");
    assert!(answer.is_ok(), "the call in flight was cut: {answer:?}");
    // The harness's drain bound is 2 s; the open channel (g.channel) is idle by now.
    let served = tokio::time::timeout(Duration::from_secs(5), g.task.take().expect("task")).await;
    assert!(served.is_ok(), "serve did not return");
    assert!(started.elapsed() < Duration::from_millis(1500), "drain took {:?}", started.elapsed());
}
