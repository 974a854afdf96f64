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

/// Default log filter. Connections that hang up mid-request or send garbage are the
/// client's doing: the HTTP adapter logs them at `debug` only (answered 400 by hyper when
/// there is anyone to answer), so nobody can fill the log with them.
const DEFAULT_LOG_FILTER: &str = "info";

/// Sends logs through a background writer so a slow terminal never stalls a request
/// (see [`crate::logsink`]); the guard writes what is pending when dropped.
pub fn init_logging() -> Option<crate::logsink::LogGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().event_format(crate::logformat::JsonLines).with_env_filter(filter);
    match crate::logsink::spawn(std::io::stderr()) {
        Ok((sink, guard)) => {
            let _ = builder.with_writer(sink).try_init();
            Some(guard)
        }
        // No thread to spare: write each line straight to stderr instead.
        Err(_) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            None
        }
    }
}
