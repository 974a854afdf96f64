//! Inbound gRPC adapter on tonic: `profile.v1.ProfileService` over the core's use cases,
//! with `grpc.health.v1.Health`, server reflection (v1 and v1alpha) and rich error
//! details (`google.rpc.BadRequest`), per SPEC §11.
//!
//! The composition root builds a [`GrpcState`] and hands it to [`serve`] with a bound
//! listener. Updates are translated into the JSON Merge Patch the HTTP transport
//! receives and parsed by the same core function, so both transports report the same
//! fields, codes and messages.

mod auth;
mod convert;
mod handler;
mod mask;
mod observe;
mod status;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use profile_core::ProfileService;
use profile_core::ports::TokenVerifier;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use mask::merge_patch;
pub use observe::describe_metrics;

/// Code generated from `proto/profile/v1/profile.proto`: messages, server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("profile.v1");

    /// The encoded descriptor set of the proto and its imports, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("profile_v1_descriptor");
}

/// Largest accepted request message, in bytes (the HTTP body limit).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// The full name of the service, as health checking and reflection know it.
pub const SERVICE_NAME: &str = "profile.v1.ProfileService";

/// Everything the gRPC transport needs.
#[derive(Clone)]
pub struct GrpcState {
    /// The use cases.
    pub service: Arc<ProfileService>,
    /// Verifies bearer tokens (the same verifier the HTTP transport uses).
    pub verifier: Arc<dyn TokenVerifier>,
    /// How often readiness is probed for the health service.
    pub health_interval: Duration,
}

impl GrpcState {
    /// Bundles the service and the token verifier, probing readiness every second.
    pub fn new(service: Arc<ProfileService>, verifier: Arc<dyn TokenVerifier>) -> Self {
        Self { service, verifier, health_interval: Duration::from_secs(1) }
    }
}

impl fmt::Debug for GrpcState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcState").field("health_interval", &self.health_interval).finish_non_exhaustive()
    }
}

/// Why the gRPC server could not run.
#[derive(Debug, thiserror::Error)]
#[error("gRPC server failed: {0}")]
pub struct ServeError(String);

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

fn readiness(ok: bool) -> ServingStatus {
    if ok { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// Resolves once no call is in flight, plus a moment for the last answers to be written
/// out by their connections.
async fn calls_answered(in_flight: &AtomicUsize) {
    while in_flight.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves the profile service, health checking and reflection on an already bound
/// listener until `shutdown` resolves; then reports `NOT_SERVING`, stops accepting,
/// lets in-flight calls finish for at most `drain_bound`, and returns.
///
/// tonic's own graceful shutdown waits for every HTTP/2 connection to close, which an
/// idle client holding its channel open never does. So the drain ends as soon as no
/// call is being answered (or tonic is done), and at the latest after `drain_bound`.
pub async fn serve(
    listener: TcpListener,
    state: GrpcState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_bound: Duration,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all(&reporter, readiness(state.service.ready().await.is_ok())).await;
    let probe = tokio::spawn({
        let reporter = reporter.clone();
        let service = state.service.clone();
        let every = state.health_interval;
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            loop {
                tick.tick().await;
                let now = service.ready().await.is_ok();
                if last != Some(now) {
                    set_all(&reporter, readiness(now)).await;
                    last = Some(now);
                }
            }
        }
    });

    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| ServeError(format!("reflection: {e}")))?;
    let v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| ServeError(format!("reflection: {e}")))?;

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let reporter = reporter.clone();
        async move {
            shutdown.await;
            // Clients polling health move away before the listener closes.
            set_all(&reporter, ServingStatus::NotServing).await;
            let _ = signalled_tx.send(());
        }
    };
    let observe = observe::ObserveLayer::new();
    let in_flight = observe.in_flight();
    let server = tonic::transport::Server::builder()
        .layer(observe)
        .add_service(handler::server(state))
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha)
        // TCP_NODELAY on every accepted connection, as tonic's own listener does by
        // default (it ignores its `tcp_nodelay` setting for an incoming stream handed to
        // it): an answer written in several pieces is then never held back by Nagle
        // waiting on the client's delayed ACK.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);
    let mut server = std::pin::pin!(server);
    let result = tokio::select! {
        r = &mut server => Some(r),
        _ = signalled_rx => None,
    };
    let result = match result {
        Some(r) => r,
        None => {
            tracing::info!(timeout_s = drain_bound.as_secs_f64(), "gRPC: draining in-flight calls");
            let drained = tokio::time::timeout(drain_bound, async {
                tokio::select! {
                    r = &mut server => r,
                    () = calls_answered(&in_flight) => Ok(()),
                }
            });
            match drained.await {
                Ok(r) => {
                    tracing::info!("gRPC: every call answered");
                    r
                }
                Err(_) => {
                    tracing::warn!("gRPC: drain bound reached; abandoning remaining connections");
                    Ok(())
                }
            }
        }
    };
    probe.abort();
    result.map_err(|e| ServeError(e.to_string()))
}
