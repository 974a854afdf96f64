//! Logs and metrics of the process: the JSON log writer and the Prometheus recorder,
//! set up once by `serve` before the app is built.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::AppError;

/// Installs the Prometheus recorder and describes every metric the adapters emit.
pub fn install_metrics() -> Result<PrometheusHandle, AppError> {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
    let handle = PrometheusBuilder::new()
        .set_buckets(&buckets)
        .and_then(|b| b.install_recorder())
        .map_err(|e| AppError::other(format!("cannot install the metrics recorder: {e}")))?;
    profile_http_warp::describe_metrics();
    profile_grpc_tonic::describe_metrics();
    profile_rewards_http::describe_metrics();
    profile_cache_moka::describe_metrics();
    crate::cache::describe_metrics();
    crate::journal::describe_metrics();
    metrics::describe_gauge!("db_pool_size", "Connections open in the pool, by database");
    metrics::describe_gauge!("db_pool_in_use", "Connections checked out of the pool, by database");
    metrics::describe_gauge!("db_pool_max_size", "Configured pool capacity, by database");
    Ok(handle)
}

/// Default log filter. Connections that send garbage make warp log at ERROR; those are
/// the client's faults, answered 400 by hyper, and must not let anyone fill the log.
const DEFAULT_LOG_FILTER: &str = "info,warp::server=off";

/// Sends logs through a background writer so a slow terminal never stalls a request.
pub fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    // The appender's worker flushes whenever its queue runs dry, so buffering only
    // batches lines into fewer write calls under load; nothing waits in the buffer.
    let (writer, guard) =
        tracing_appender::non_blocking(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    guard
}
