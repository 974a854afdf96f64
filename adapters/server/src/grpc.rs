//! The gRPC transport beside HTTP (SPEC §11): on when `--grpc-listen` names an address,
//! stopped by the same signal and drained within the same bound as HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use profile_core::ProfileService;
use profile_core::ports::TokenVerifier;
use profile_grpc_tonic::GrpcState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::AppError;

/// The setting named in errors about the gRPC listener.
pub const SETTING: &str = "--grpc-listen (PROFILE_GRPC_LISTEN)";

/// Binds the gRPC listener when one is configured.
pub async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, AppError> {
    let Some(addr) = addr else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| AppError::setting(SETTING, format!("cannot listen on {addr}: {e}")))
}

/// One shutdown signal, awaited by every listener.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Fires when `signal` resolves.
    pub fn on(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Resolves once the signal has fired.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|fired| *fired).await;
        }
    }
}

/// Runs `http` and, when a gRPC listener is bound, the gRPC transport beside it, until
/// both have stopped (each drains within `drain` after `shutdown` fires).
pub async fn serve_beside(
    http: impl Future<Output = ()>,
    grpc: Option<TcpListener>,
    service: Arc<ProfileService>,
    verifier: Arc<dyn TokenVerifier>,
    shutdown: &Shutdown,
    drain: Duration,
) {
    let Some(listener) = grpc else {
        http.await;
        return;
    };
    let state = GrpcState::new(service, verifier);
    let grpc = profile_grpc_tonic::serve(listener, state, shutdown.wait(), drain);
    let ((), served) = tokio::join!(http, grpc);
    if let Err(e) = served {
        tracing::error!(error = %e, "gRPC transport stopped");
    }
}
