//! Inbound HTTP adapter on warp: routes, bearer auth, problem+json, ETags, metrics.
//!
//! The composition root builds an [`AppState`] and either hands it to [`serve`] with a
//! bound listener, or takes [`routes`] to run them itself (tests drive them with
//! `warp::test`).

mod auth;
mod batching;
mod conditional;
mod handlers;
mod observe;
mod problem;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use profile_core::ProfileService;
use profile_core::ports::TokenVerifier;
use warp::Filter;
use warp::reply::Response;

pub use auth::MAX_TOKEN_LEN;
pub use handlers::MAX_BODY;
pub use observe::describe_metrics;

use crate::observe::RequestId;

/// Renders the process's metrics in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the routes need.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub service: Arc<ProfileService>,
    /// Judges the bearer tokens (the composition root picks the implementation).
    pub verifier: Arc<dyn TokenVerifier>,
    /// Renders `GET /metrics`.
    pub metrics: MetricsRenderer,
}

impl AppState {
    /// Bundles the service, the token verifier and the metrics renderer.
    pub fn new(
        service: Arc<ProfileService>,
        verifier: Arc<dyn TokenVerifier>,
        metrics: MetricsRenderer,
    ) -> Self {
        Self { service, verifier, metrics }
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The state, shared by every request.
pub(crate) struct Ctx {
    pub(crate) state: AppState,
}

/// Every route, with errors as problem+json and the per-request observability applied.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let ctx = Arc::new(Ctx { state });
    let with_ctx = warp::any().map(move || ctx.clone());
    let now = || warp::any().map(Instant::now);

    // Handler futures are boxed: unboxed, their multi-kilobyte state would be memcpy'd
    // through every layer of warp's combinator futures on each request.
    //
    // Each path answers every method itself, so a known path with a wrong method is a
    // 405 with `Allow` rather than a 404. Nothing after a method filter may reject, or
    // the next alternative (the 405) would run instead.
    let profile = {
        let read = with_ctx
            .clone()
            .and(now())
            .and(warp::header::headers_cloned())
            .then(|ctx, start, headers| Box::pin(handlers::get_profile(ctx, start, headers)));
        let patch = warp::patch()
            .and(with_ctx.clone())
            .and(now())
            .and(warp::header::headers_cloned())
            .and(warp::body::stream())
            .then(|ctx, start, headers, body| Box::pin(handlers::patch_profile(ctx, start, headers, body)));
        let other = warp::any().map(|| problem::method_not_allowed("GET, HEAD, PATCH"));
        warp::path!("user" / "profile").and(get_or_head(read).or(patch).unify().or(other).unify())
    };
    let healthz = warp::path!("healthz").and(get_and_head(warp::any().map(handlers::healthz)));
    let readyz = warp::path!("readyz").and(get_and_head(with_ctx.clone().then(handlers::readyz)));
    let metrics = warp::path!("metrics").and(get_and_head(with_ctx.map(handlers::metrics)));
    let openapi = warp::path!("openapi.yaml").and(get_and_head(warp::any().map(handlers::openapi)));

    let api = profile
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .recover(handlers::recover)
        .unify();

    // A missing or insane x-request-id is not an error: it is replaced.
    let request_id =
        warp::header::optional::<RequestId>(observe::X_REQUEST_ID).or(warp::any().map(|| None)).unify();
    let metrics = Arc::new(observe::RequestMetrics::new());
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        .and(request_id)
        .and(api)
        .map(move |start, method, path, id, res| observe::finish(&metrics, start, method, path, id, res))
}

/// `GET` answered by `read`, and `HEAD` with the same status and headers and no body
/// (RFC 9110 §9.3.2); other methods are rejected.
fn get_or_head<F>(read: F) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync,
{
    let get = warp::get().and(read.clone());
    let head = warp::head().and(read).map(handlers::without_body);
    get.or(head).unify()
}

/// A read-only route: [`get_or_head`], and any other method `405` naming both.
fn get_and_head<F>(read: F) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync,
{
    let other = warp::any().map(|| problem::method_not_allowed("GET, HEAD"));
    get_or_head(read).or(other).unify()
}

/// Serves [`routes`] on an already bound listener until `shutdown` resolves; then stops
/// accepting, lets in-flight requests finish for at most `drain_timeout`, and returns.
///
/// The accept loop is this adapter's rather than `warp::serve`'s, which logs every
/// connection that ends in an error at `error` level: a client hanging up mid-request,
/// or speaking something else than HTTP, is the client's doing and is logged at `debug`.
/// Each connection's answers go out once the other ready connections have run
/// ([`batching`]), so that a busy server wakes its clients once per batch of answers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) {
    let service = warp::service(routes(state));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(service.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let http = auto::Builder::new(TokioExecutor::new());
            let stream = TokioIo::new(batching::DeferredWrite::new(stream));
            let connection = http.serve_connection_with_upgrades(stream, service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        timeout_s = drain_timeout.as_secs_f64(),
        "shutdown signalled: draining in-flight requests"
    );
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("drain timeout reached; abandoning remaining connections"),
    }
}

/// A failed `accept`. One that concerns only the connection being accepted (reset or
/// aborted by the client before it was taken) is passed over; anything else (out of
/// file descriptors) is the server's trouble: logged, and accepting pauses for a second
/// rather than spinning on it.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
