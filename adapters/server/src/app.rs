//! The composition root: [`App`], built by [`AppBuilder`] from the `serve` settings.
//!
//! Read top to bottom, [`AppBuilder::build`] is the whole wiring of the service:
//!
//! 1. validate the settings that need no I/O (cache URL, token secret);
//! 2. open both databases from their settings (`databases.rs` picks SQLite or
//!    PostgreSQL), unless the caller supplied a store;
//! 3. demo mode: seed an empty main database through [`MainAdmin`], start the rewards
//!    stub, invent a secret;
//! 4. the token verifier, the rewards port, the cache, the clock (each from the
//!    settings, or the caller's fake);
//! 5. the core's [`ProfileService`] over those ports, on a tracked [`TokioExecutor`];
//! 6. settle the e-mail change journal once, then keep settling it in the background;
//! 7. the `/metrics` renderer (pool gauges through [`StoreAdmin`]) and its upkeep.
//!
//! [`App::serve`] then runs every transport on the listeners until the shutdown signal,
//! and tears down: waits for writes in flight, stops the background tasks, closes the
//! pools. The binary (`serve.rs`) and the end-to-end tests go through this same builder;
//! tests swap in fakes with its setters (the "test app" pattern), the binary never does.
//! Nothing here knows which kind of database is in use: stores are reached through the
//! ports and the core's upkeep traits ([`StoreAdmin`], [`MainAdmin`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use profile_auth_jwt::{AuthConfig, JwtVerifier};
use profile_core::admin::{MainAdmin, StoreAdmin};
use profile_core::ports::{
    AccountRepository, CachePort, Clock, ProfileRepository, RewardsPort, SystemClock, TokenVerifier,
};
use profile_core::{ProfileService, ServiceConfig};
use profile_http_warp::{AppState, MetricsRenderer};
use profile_rewards_http::stub::{StubMode, StubServer};
use profile_rewards_http::{HttpRewards, RewardsHttpConfig, UnconfiguredRewards};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cli::ServeArgs;
use crate::databases::{self, Databases, MAIN_SETTING, MainDb, ProfilesDb};
use crate::error::AppError;
use crate::journal::{self, TokioExecutor};

/// Users `serve --demo` seeds into an empty main database.
const DEMO_USERS: u64 = 1_000;

/// How logs name a store the caller supplied instead of a setting.
const SUPPLIED: &str = "(supplied by the caller)";

/// The setting named when `serve` has no token secret.
const SECRET_SETTING: &str = "--jwt-secret (PROFILE_JWT_SECRET)";

/// A setting's value, when it is set and not empty.
fn set(value: Option<&String>) -> Option<String> {
    value.filter(|s| !s.is_empty()).cloned()
}

fn missing_secret() -> AppError {
    AppError::setting(SECRET_SETTING, "is required: set a signing secret, or run `profile-api serve --demo`")
}

/// Refuses settings that are wrong on their face, before anything is opened: a bad
/// setting must leave nothing behind.
pub fn check(config: &ServeArgs) -> Result<(), AppError> {
    check_with(config, false)
}

/// [`check`], where a supplied verifier makes the secret unnecessary.
fn check_with(config: &ServeArgs, verifier_supplied: bool) -> Result<(), AppError> {
    if !verifier_supplied && !config.demo && set(config.jwt.jwt_secret.as_ref()).is_none() {
        return Err(missing_secret());
    }
    crate::cache::check(config.cache_url.as_deref())
}

/// The process's Prometheus recorder, for an app built without one: installed by the
/// first such app, shared by the next (a test process builds many).
fn process_recorder() -> Result<PrometheusHandle, AppError> {
    static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut slot = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = crate::telemetry::install_metrics()?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// What a caller may put in place of what the settings would build.
#[derive(Default)]
struct Overrides {
    rewards: Option<Arc<dyn RewardsPort>>,
    cache: Option<Arc<dyn CachePort>>,
    clock: Option<Arc<dyn Clock>>,
    verifier: Option<Arc<dyn TokenVerifier>>,
}

/// Builds an [`App`] from the `serve` settings. Every part comes from the settings unless
/// a setter supplied it; the binary supplies only the metrics recorder it installed,
/// tests supply fakes (`adapters/memory`) for what they need to control.
pub struct AppBuilder {
    config: ServeArgs,
    prometheus: Option<PrometheusHandle>,
    main: Option<MainDb>,
    profiles: Option<ProfilesDb>,
    overrides: Overrides,
}

impl AppBuilder {
    /// A builder that would build everything from `config`.
    pub fn new(config: ServeArgs) -> Self {
        Self { config, prometheus: None, main: None, profiles: None, overrides: Overrides::default() }
    }

    /// Renders `/metrics` from this recorder (default: the process's, installed once).
    #[must_use]
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// Uses this store as the main database instead of opening `--main-db`.
    #[must_use]
    pub fn main_database<T: AccountRepository + MainAdmin + 'static>(mut self, store: Arc<T>) -> Self {
        self.main = Some(MainDb::new(store, SUPPLIED));
        self
    }

    /// Uses this store as the profiles database instead of opening `--profiles-db`.
    #[must_use]
    pub fn profiles_database<T: ProfileRepository + StoreAdmin + 'static>(mut self, store: Arc<T>) -> Self {
        self.profiles = Some(ProfilesDb::new(store, SUPPLIED));
        self
    }

    /// Uses this rewards port instead of the HTTP client (or the demo stub).
    #[must_use]
    pub fn rewards(mut self, rewards: Arc<dyn RewardsPort>) -> Self {
        self.overrides.rewards = Some(rewards);
        self
    }

    /// Uses this cache instead of the in-process (and shared) one.
    #[must_use]
    pub fn cache(mut self, cache: Arc<dyn CachePort>) -> Self {
        self.overrides.cache = Some(cache);
        self
    }

    /// Uses this clock instead of the system's.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.overrides.clock = Some(clock);
        self
    }

    /// Uses this token verifier instead of HS256 JWTs (no secret is needed then).
    #[must_use]
    pub fn verifier(mut self, verifier: Arc<dyn TokenVerifier>) -> Self {
        self.overrides.verifier = Some(verifier);
        self
    }

    /// Opens, wires and recovers: the steps listed in the module documentation. On an
    /// error, whatever was opened is closed again.
    pub async fn build(self) -> Result<App, AppError> {
        let Self { config, prometheus, main, profiles, overrides } = self;
        check_with(&config, overrides.verifier.is_some())?;
        let prometheus = match prometheus {
            Some(handle) => handle,
            None => process_recorder()?,
        };
        let dbs = databases::open_with(&config.db, main, profiles).await?;
        let mut demo_stub = None;
        let wired = match wire(&config, &dbs, overrides, &mut demo_stub).await {
            Ok(wired) => wired,
            Err(e) => {
                if let Some(stub) = demo_stub {
                    stub.shutdown().await;
                }
                dbs.close().await;
                return Err(e);
            }
        };

        // Carry through e-mail changes a previous process left half-done; one that cannot
        // be settled now is retried in the background and never keeps the service from
        // starting.
        journal::settle_once(&wired.service).await;
        let settler = journal::spawn_settler(wired.service.clone());
        let (metrics, upkeep) = metrics_endpoint(prometheus, &dbs);
        Ok(App {
            listen: config.listen,
            grpc_listen: config.grpc_listen,
            drain: Duration::from_secs(config.shutdown_timeout_s),
            demo: config.demo,
            service: wired.service,
            verifier: wired.verifier,
            metrics,
            executor: wired.executor,
            dbs,
            settler,
            upkeep,
            demo_stub,
            demo_token: wired.demo_token,
            rewards: wired.rewards,
        })
    }
}

/// What [`wire`] builds over the opened databases.
struct Wired {
    service: Arc<ProfileService>,
    verifier: Arc<dyn TokenVerifier>,
    executor: TokioExecutor,
    demo_token: Option<String>,
    rewards: &'static str,
}

/// Steps 3 to 5: demo data, verifier, rewards, cache, clock, and the service over them.
async fn wire(
    config: &ServeArgs,
    dbs: &Databases,
    overrides: Overrides,
    demo_stub: &mut Option<StubServer>,
) -> Result<Wired, AppError> {
    let mut secret = set(config.jwt.jwt_secret.as_ref());
    let mut rewards_url = set(config.rewards_url.as_ref());
    if config.demo {
        seed_demo(dbs.main.admin.as_ref()).await?;
        if rewards_url.is_none() && overrides.rewards.is_none() {
            let stub = StubServer::start_local(StubMode::Normal)
                .await
                .map_err(|e| AppError::other(format!("cannot start the demo rewards stub: {e}")))?;
            rewards_url = Some(format!("http://{}", stub.addr()));
            *demo_stub = Some(stub);
        }
        if secret.is_none() {
            secret = Some(random_secret());
        }
    }

    let (verifier, demo_token): (Arc<dyn TokenVerifier>, _) = match overrides.verifier {
        Some(verifier) => (verifier, None),
        None => {
            let auth = AuthConfig {
                secret: secret.ok_or_else(missing_secret)?.into_bytes(),
                issuer: set(config.jwt.jwt_issuer.as_ref()),
                audience: set(config.jwt.jwt_audience.as_ref()),
            };
            let demo_token = if config.demo {
                let token = profile_auth_jwt::mint_token(&auth, 1, Duration::from_secs(24 * 3600))
                    .map_err(|e| AppError::other(format!("cannot mint the demo token: {e}")))?;
                Some(token)
            } else {
                None
            };
            (Arc::new(JwtVerifier::new(&auth)), demo_token)
        }
    };

    let (rewards, shown): (Arc<dyn RewardsPort>, _) = match (overrides.rewards, rewards_url) {
        (Some(rewards), _) => (rewards, "supplied"),
        (None, Some(url)) => (Arc::new(http_rewards(config, url)?), "configured"),
        (None, None) => (Arc::new(UnconfiguredRewards::new()), "unconfigured"),
    };
    let rewards_window = Duration::from_secs(config.rewards_cache_ttl_s);
    let cache = match overrides.cache {
        Some(cache) => cache,
        None => crate::cache::build(
            config.cache_url.as_deref(),
            Duration::from_secs(config.profile_cache_ttl_s),
            rewards_window,
        )?,
    };
    let clock = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
    let executor = TokioExecutor::default();
    let service = ProfileService::new(
        dbs.main.accounts.clone(),
        dbs.profiles.profiles.clone(),
        rewards,
        cache,
        clock,
        ServiceConfig { rewards_window, ..ServiceConfig::default() },
    )
    .with_executor(Arc::new(executor.clone()));
    Ok(Wired { service: Arc::new(service), verifier, executor, demo_token, rewards: shown })
}

/// The rewards client of `--rewards-url` and its tuning settings.
fn http_rewards(config: &ServeArgs, base_url: String) -> Result<HttpRewards, AppError> {
    HttpRewards::new(RewardsHttpConfig {
        base_url,
        api_key: set(config.rewards_api_key.as_ref()),
        timeout: Duration::from_millis(config.rewards_timeout_ms),
        breaker_failures: config.rewards_breaker_failures,
        breaker_cooldown: Duration::from_millis(config.rewards_breaker_cooldown_ms),
    })
    .map_err(|e| AppError::setting("--rewards-url (PROFILE_REWARDS_URL)", e.to_string()))
}

/// Demo data in an empty main database (a database with accounts is left alone).
async fn seed_demo(main: &dyn MainAdmin) -> Result<(), AppError> {
    if main.has_users().await.map_err(|e| AppError::setting(MAIN_SETTING, e.to_string()))? {
        return Ok(());
    }
    main.seed(DEMO_USERS, 10, &|_| {})
        .await
        .map_err(|e| AppError::setting(MAIN_SETTING, format!("cannot seed demo data: {e}")))?;
    tracing::info!(users = DEMO_USERS, "seeded demo accounts");
    Ok(())
}

/// `GET /metrics`: the pool gauges, read through [`StoreAdmin`] at each scrape, then the
/// recorder's text. Histograms keep raw samples until upkeep folds them in; that runs
/// off the request path, every few seconds.
fn metrics_endpoint(prometheus: PrometheusHandle, dbs: &Databases) -> (MetricsRenderer, JoinHandle<()>) {
    let main = dbs.main.admin.clone();
    let profiles = dbs.profiles.admin.clone();
    let render = {
        let prometheus = prometheus.clone();
        Arc::new(move || {
            let stores: [(&str, &dyn StoreAdmin); 2] =
                [("main", main.as_ref()), ("profiles", profiles.as_ref())];
            for (db, store) in stores {
                let status = store.pool_status();
                metrics::gauge!("db_pool_size", "db" => db).set(status.size as f64);
                metrics::gauge!("db_pool_in_use", "db" => db).set(status.in_use as f64);
                metrics::gauge!("db_pool_max_size", "db" => db).set(status.max as f64);
            }
            prometheus.render()
        })
    };
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            prometheus.run_upkeep();
        }
    });
    (render, upkeep)
}

/// A fresh 256-bit secret for demo mode (tokens die with the process).
fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bound sockets of every transport: HTTP always, gRPC when configured.
pub struct Listeners {
    http: TcpListener,
    http_addr: SocketAddr,
    grpc: Option<(TcpListener, SocketAddr)>,
}

impl Listeners {
    /// Binds HTTP on `http` and, when given, gRPC on `grpc`.
    pub async fn bind(http: SocketAddr, grpc: Option<SocketAddr>) -> Result<Self, AppError> {
        const LISTEN: &str = "--listen (PROFILE_LISTEN)";
        let http_listener = TcpListener::bind(http)
            .await
            .map_err(|e| AppError::setting(LISTEN, format!("cannot listen on {http}: {e}")))?;
        let http_addr = http_listener.local_addr().map_err(|e| AppError::setting(LISTEN, e.to_string()))?;
        let grpc = match crate::grpc::bind(grpc).await? {
            Some(listener) => {
                let addr = listener
                    .local_addr()
                    .map_err(|e| AppError::setting(crate::grpc::SETTING, e.to_string()))?;
                Some((listener, addr))
            }
            None => None,
        };
        Ok(Self { http: http_listener, http_addr, grpc })
    }

    /// Where HTTP listens (the port the system chose for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where gRPC listens, when it does.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|(_, addr)| *addr)
    }
}

/// The service, wired and recovered, ready to serve: the core over its adapters, the
/// token verifier, the `/metrics` renderer, and the background work (journal settler,
/// metrics upkeep) that [`App::serve`] or [`App::close`] stops.
pub struct App {
    listen: SocketAddr,
    grpc_listen: Option<SocketAddr>,
    drain: Duration,
    demo: bool,
    service: Arc<ProfileService>,
    verifier: Arc<dyn TokenVerifier>,
    metrics: MetricsRenderer,
    executor: TokioExecutor,
    dbs: Databases,
    settler: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    demo_stub: Option<StubServer>,
    demo_token: Option<String>,
    rewards: &'static str,
}

impl App {
    /// A builder over `config`, for swapping parts in before [`AppBuilder::build`].
    pub fn builder(config: ServeArgs) -> AppBuilder {
        AppBuilder::new(config)
    }

    /// Builds everything from `config`.
    pub async fn build(config: ServeArgs) -> Result<Self, AppError> {
        AppBuilder::new(config).build().await
    }

    /// The core's use cases, as every transport gets them.
    pub fn service(&self) -> &Arc<ProfileService> {
        &self.service
    }

    /// Binds the addresses of the settings (`--listen`, `--grpc-listen`).
    pub async fn bind(&self) -> Result<Listeners, AppError> {
        Listeners::bind(self.listen, self.grpc_listen).await
    }

    /// Logs where the app listens and prints it for the person (and the test) that
    /// started it, gRPC's line first; in demo mode, a ready-to-paste curl line too.
    pub fn announce(&self, listeners: &Listeners) {
        let addr = listeners.http_addr();
        tracing::info!(
            %addr,
            main_db = %self.dbs.main.shown,
            profiles_db = %self.dbs.profiles.shown,
            rewards = self.rewards,
            demo = self.demo,
            "profile-api listening"
        );
        if let Some(grpc) = listeners.grpc_addr() {
            tracing::info!(addr = %grpc, "profile-api gRPC listening");
            println!("profile-api gRPC listening on {grpc}");
        }
        println!("profile-api listening on http://{addr}");
        if let Some(token) = &self.demo_token {
            println!("demo: try it with");
            println!("curl -s -H 'Authorization: Bearer {token}' http://{addr}/user/profile");
        }
    }

    /// Serves every transport on `listeners` until `shutdown` resolves; each then drains
    /// within `--shutdown-timeout-s`. Then tears down, as [`App::close`].
    pub async fn serve(self, listeners: Listeners, shutdown: impl Future<Output = ()> + Send + 'static) {
        let shutdown = crate::grpc::Shutdown::on(shutdown);
        let state = AppState::new(self.service.clone(), self.verifier.clone(), self.metrics.clone());
        let http = profile_http_warp::serve(listeners.http, state, shutdown.wait(), self.drain);
        crate::grpc::serve_beside(
            http,
            listeners.grpc.map(|(listener, _)| listener),
            self.service.clone(),
            self.verifier.clone(),
            &shutdown,
            self.drain,
        )
        .await;
        self.close().await;
    }

    /// Waits (within the drain bound) for writes whose clients went away, stops the
    /// background tasks and the demo stub, closes the pools.
    pub async fn close(self) {
        if !self.executor.drain(self.drain).await {
            tracing::warn!("writes still running at shutdown; the journal settles any left half-done");
        }
        tracing::info!("shutting down: closing pools");
        self.upkeep.abort();
        self.settler.abort();
        if let Some(stub) = self.demo_stub {
            stub.shutdown().await;
        }
        self.dbs.close().await;
    }
}
