//! `serve`: migrate, recover, wire the adapters into the core, serve until a signal.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use profile_auth_jwt::{AuthConfig, JwtVerifier};
use profile_core::ports::{RewardsPort, SystemClock};
use profile_core::{ProfileService, ServiceConfig};
use profile_http_warp::AppState;
use profile_rewards_http::stub::StubMode;
use profile_rewards_http::{HttpRewards, RewardsHttpConfig, UnconfiguredRewards};
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::databases::{self, MAIN_SETTING};
use crate::error::AppError;
use crate::journal::{self, TokioExecutor};

/// Users `serve --demo` seeds into an empty main database.
const DEMO_USERS: u64 = 1_000;

/// Installs the Prometheus recorder and describes every metric the adapters emit.
fn install_metrics() -> Result<PrometheusHandle, AppError> {
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
fn init_logging() -> Option<crate::logsink::LogGuard> {
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// `profile-api serve [--demo]`.
pub async fn serve(args: ServeArgs) -> Result<(), AppError> {
    let missing_secret = || {
        AppError::setting(
            "--jwt-secret (PROFILE_JWT_SECRET)",
            "is required: set a signing secret, or run `profile-api serve --demo`",
        )
    };
    // Refuse before touching any file: a bad setting must leave nothing behind.
    if !args.demo && args.jwt.jwt_secret.as_deref().is_none_or(str::is_empty) {
        return Err(missing_secret());
    }
    crate::cache::check(args.cache_url.as_deref())?;
    let _log_guard = init_logging();
    let prometheus = install_metrics()?;

    let dbs = databases::open(&args.db).await?;
    let main = dbs.main_admin.clone();
    let profiles = dbs.profiles_admin.clone();

    let mut secret = args.jwt.jwt_secret.clone().filter(|s| !s.is_empty());
    let mut rewards_url = args.rewards_url.clone().filter(|s| !s.is_empty());
    let mut demo_stub = None;
    if args.demo {
        if !main.has_users().await.map_err(|e| AppError::setting(MAIN_SETTING, e.to_string()))? {
            main.seed(DEMO_USERS, 10, &|_| {})
                .await
                .map_err(|e| AppError::setting(MAIN_SETTING, format!("cannot seed demo data: {e}")))?;
            tracing::info!(users = DEMO_USERS, "seeded demo accounts");
        }
        if rewards_url.is_none() {
            let stub = profile_rewards_http::stub::StubServer::start_local(StubMode::Normal)
                .await
                .map_err(|e| AppError::other(format!("cannot start the demo rewards stub: {e}")))?;
            rewards_url = Some(format!("http://{}", stub.addr()));
            demo_stub = Some(stub);
        }
        if secret.is_none() {
            secret = Some(random_secret());
        }
    }
    let secret = secret.ok_or_else(missing_secret)?;
    let auth = AuthConfig {
        secret: secret.into_bytes(),
        issuer: args.jwt.jwt_issuer.clone().filter(|s| !s.is_empty()),
        audience: args.jwt.jwt_audience.clone().filter(|s| !s.is_empty()),
    };

    let rewards: Arc<dyn RewardsPort> = match &rewards_url {
        Some(url) => Arc::new(
            HttpRewards::new(RewardsHttpConfig {
                base_url: url.clone(),
                api_key: args.rewards_api_key.clone().filter(|s| !s.is_empty()),
                timeout: Duration::from_millis(args.rewards_timeout_ms),
                breaker_failures: args.rewards_breaker_failures,
                breaker_cooldown: Duration::from_millis(args.rewards_breaker_cooldown_ms),
            })
            .map_err(|e| AppError::setting("--rewards-url (PROFILE_REWARDS_URL)", e.to_string()))?,
        ),
        None => Arc::new(UnconfiguredRewards::new()),
    };
    let rewards_window = Duration::from_secs(args.rewards_cache_ttl_s);
    let cache = crate::cache::build(
        args.cache_url.as_deref(),
        Duration::from_secs(args.profile_cache_ttl_s),
        rewards_window,
    )?;
    let executor = TokioExecutor::default();
    let service = Arc::new(
        ProfileService::new(
            dbs.accounts.clone(),
            dbs.profiles.clone(),
            rewards,
            cache,
            Arc::new(SystemClock),
            ServiceConfig { rewards_window, ..ServiceConfig::default() },
        )
        .with_executor(Arc::new(executor.clone())),
    );

    // Carry through e-mail changes a previous process left half-done; one that cannot be
    // settled now is retried in the background and never keeps the service from starting.
    journal::settle_once(&service).await;
    let settler = journal::spawn_settler(service.clone());

    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        AppError::setting("--listen (PROFILE_LISTEN)", format!("cannot listen on {}: {e}", args.listen))
    })?;
    let addr =
        listener.local_addr().map_err(|e| AppError::setting("--listen (PROFILE_LISTEN)", e.to_string()))?;
    let grpc_listener = crate::grpc::bind(args.grpc_listen).await?;

    let render = {
        let main = main.clone();
        let profiles = profiles.clone();
        let prometheus = prometheus.clone();
        Arc::new(move || {
            for (db, status) in [("main", main.pool_status()), ("profiles", profiles.pool_status())] {
                metrics::gauge!("db_pool_size", "db" => db).set(status.size as f64);
                metrics::gauge!("db_pool_in_use", "db" => db).set(status.in_use as f64);
                metrics::gauge!("db_pool_max_size", "db" => db).set(status.max as f64);
            }
            prometheus.render()
        })
    };
    // Histograms keep raw samples until upkeep folds them in; do it off the request path.
    let upkeep = tokio::spawn({
        let prometheus = prometheus.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                prometheus.run_upkeep();
            }
        }
    });

    let state = AppState::new(service, Arc::new(JwtVerifier::new(&auth)), render);
    tracing::info!(
        %addr,
        main_db = %dbs.main_shown,
        profiles_db = %dbs.profiles_shown,
        rewards = if rewards_url.is_some() { "configured" } else { "unconfigured" },
        demo = args.demo,
        "profile-api listening"
    );
    crate::grpc::announce(grpc_listener.as_ref())?;
    println!("profile-api listening on http://{addr}");
    if args.demo {
        let token = profile_auth_jwt::mint_token(&auth, 1, Duration::from_secs(24 * 3600))
            .map_err(|e| AppError::other(format!("cannot mint the demo token: {e}")))?;
        println!("demo: try it with");
        println!("curl -s -H 'Authorization: Bearer {token}' http://{addr}/user/profile");
    }

    // One signal stops both transports; each drains within the same bound.
    let shutdown = crate::grpc::Shutdown::on(shutdown_signal());
    let drain = Duration::from_secs(args.shutdown_timeout_s);
    let (service, verifier) = (state.service.clone(), state.verifier.clone());
    let http = profile_http_warp::serve(listener, state, shutdown.wait(), drain);
    crate::grpc::serve_beside(http, grpc_listener, service, verifier, &shutdown, drain).await;

    if !executor.drain(Duration::from_secs(args.shutdown_timeout_s)).await {
        tracing::warn!("writes still running at shutdown; the journal settles any left half-done");
    }
    tracing::info!("shutting down: closing pools");
    upkeep.abort();
    settler.abort();
    if let Some(stub) = demo_stub {
        stub.shutdown().await;
    }
    dbs.close().await;
    Ok(())
}

/// A fresh 256-bit secret for demo mode (tokens die with the process).
fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
