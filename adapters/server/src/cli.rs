//! Command line and environment: every flag of SPEC §2, each also read from its variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The profile service.
#[derive(Debug, Parser)]
#[command(
    name = "profile-api",
    version,
    about = "Serves the authenticated user's complete profile over HTTP."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate both databases, then serve HTTP (and gRPC with --grpc-listen) until SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Apply pending migrations to both databases and exit.
    Migrate(MigrateArgs),
    /// Append deterministic demo accounts and orders to the main database.
    Seed(SeedArgs),
    /// Print a signed bearer token for a user.
    Token(TokenArgs),
    /// Run the deterministic rewards service for local development and benchmarks.
    RewardsStub(StubArgs),
}

/// Where the two databases live and how many connections each gets.
#[derive(Debug, Args, Clone)]
pub struct DbArgs {
    /// Main database (accounts, orders, login activity): a file path (SQLite) or a
    /// postgres:// / postgresql:// URL (PostgreSQL).
    #[arg(long, env = "PROFILE_MAIN_DB", default_value = "data/main.db", hide_env_values = true)]
    pub main_db: PathBuf,
    /// Profiles database (owned by this service): a file path or a PostgreSQL URL.
    #[arg(long, env = "PROFILE_PROFILES_DB", default_value = "data/profiles.db", hide_env_values = true)]
    pub profiles_db: PathBuf,
    /// What start-up does to the main database's schema, which belongs to the wider
    /// application: `apply` pending migrations, or only `check` that the tables and
    /// columns the service reads exist.
    #[arg(long, env = "PROFILE_MAIN_DB_MIGRATIONS", value_enum, default_value_t = MainMigrations::Apply)]
    pub main_db_migrations: MainMigrations,
    /// Connections in the main database's pool [default: sized for the machine].
    #[arg(long, env = "PROFILE_MAIN_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub main_pool_size: Option<u32>,
    /// Connections in the profiles database's pool [default: sized for the machine].
    #[arg(long, env = "PROFILE_PROFILES_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub profiles_pool_size: Option<u32>,
    /// How long a database statement waits for a lock held elsewhere (another process
    /// writing, a backup) before giving up, in milliseconds; a request that gives up is
    /// answered `503` with `Retry-After`.
    #[arg(long, env = "PROFILE_DB_BUSY_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub db_busy_timeout_ms: u64,
}

/// `--main-db-migrations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MainMigrations {
    /// Apply pending migrations.
    Apply,
    /// Change nothing; verify what the service reads.
    Check,
}

/// Bearer-token settings shared by `serve` and `token`.
#[derive(Debug, Args, Clone)]
pub struct JwtArgs {
    /// HS256 secret for bearer tokens (required by `serve` unless --demo).
    #[arg(long, env = "PROFILE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Required `iss` claim, when set.
    #[arg(long, env = "PROFILE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "PROFILE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (HOST:PORT; a host name such as localhost is resolved).
    #[arg(long, env = "PROFILE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Demo mode: seed demo data into an empty main database, start a built-in rewards
    /// stub, generate a secret if none is set, and print a ready-to-paste curl line.
    #[arg(long)]
    pub demo: bool,
    /// Databases.
    #[command(flatten)]
    pub db: DbArgs,
    /// Tokens.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Base URL of the rewards service (none: rewards reported `unavailable`).
    #[arg(long, env = "PROFILE_REWARDS_URL")]
    pub rewards_url: Option<String>,
    /// Bearer key sent to the rewards service.
    #[arg(long, env = "PROFILE_REWARDS_API_KEY", hide_env_values = true)]
    pub rewards_api_key: Option<String>,
    /// Longest wait for one rewards call, in milliseconds.
    #[arg(long, env = "PROFILE_REWARDS_TIMEOUT_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub rewards_timeout_ms: u64,
    /// Rewards cache window, in seconds.
    #[arg(long, env = "PROFILE_REWARDS_CACHE_TTL_S", default_value_t = 30)]
    pub rewards_cache_ttl_s: u64,
    /// Profile cache TTL, in seconds; 0 disables the profile cache.
    #[arg(long, env = "PROFILE_PROFILE_CACHE_TTL_S", default_value_t = 60)]
    pub profile_cache_ttl_s: u64,
    /// Consecutive rewards failures that open the circuit breaker.
    #[arg(long, env = "PROFILE_REWARDS_BREAKER_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rewards_breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through, in ms.
    #[arg(long, env = "PROFILE_REWARDS_BREAKER_COOLDOWN_MS", default_value_t = 5000)]
    pub rewards_breaker_cooldown_ms: u64,
    /// Longest wait for in-flight requests on shutdown, in seconds.
    #[arg(long, env = "PROFILE_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,
    /// Also serve gRPC (profile.v1.ProfileService) on this address (HOST:PORT); off when unset.
    #[arg(long, env = "PROFILE_GRPC_LISTEN", value_parser = parse_listen)]
    pub grpc_listen: Option<SocketAddr>,
    /// The cache shared by every instance, `redis://[:PASSWORD@]HOST:PORT[/DB]` (none:
    /// each process caches on its own).
    #[arg(long, env = "PROFILE_CACHE_URL", hide_env_values = true)]
    pub cache_url: Option<String>,
}

impl ServeArgs {
    /// `serve`'s settings from its arguments (those after `serve`) and the environment,
    /// read and validated as the binary reads them.
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        use clap::FromArgMatches;
        let command = Self::augment_args(clap::Command::new("serve"));
        let argv = std::iter::once(std::ffi::OsString::from("serve")).chain(args.into_iter().map(Into::into));
        Self::from_arg_matches(&command.try_get_matches_from(argv)?)
    }
}

/// A listening address: `IP:PORT`, or `HOST:PORT` resolved to its first address.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let expected = "expected HOST:PORT, e.g. 127.0.0.1:8080";
    if !s.contains(':') {
        return Err(format!("no port ({expected})"));
    }
    std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("cannot resolve it: {e} ({expected})"))?
        .next()
        .ok_or_else(|| format!("it resolves to no address ({expected})"))
}

/// `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Databases.
    #[command(flatten)]
    pub db: DbArgs,
}

/// `seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Accounts to append.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub users: u64,
    /// Orders per account.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub orders_per_user: u32,
    /// Databases.
    #[command(flatten)]
    pub db: DbArgs,
}

/// `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id the token is for (`sub`).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub user: i64,
    /// Print tokens for this many consecutive users, starting at --user, one per line
    /// (for load tests).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl_s: u64,
    /// Tokens.
    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// `rewards-stub`.
#[derive(Debug, Args)]
pub struct StubArgs {
    /// Address to listen on (HOST:PORT).
    #[arg(long, env = "PROFILE_REWARDS_STUB_LISTEN", default_value = "127.0.0.1:8090", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// How the stub answers: `normal`, `hang` (never answers), `fail` (500), for
    /// exercising the profile service against a failing rewards service.
    #[arg(long, env = "PROFILE_REWARDS_STUB_MODE", value_enum, default_value_t = StubModeArg::Normal)]
    pub mode: StubModeArg,
    /// Bearer key the stub requires (none: any request is answered).
    #[arg(long, env = "PROFILE_REWARDS_STUB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Behaviour of `rewards-stub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StubModeArg {
    /// Deterministic balances.
    Normal,
    /// Accept and never answer.
    Hang,
    /// Answer 500.
    Fail,
}

impl From<StubModeArg> for profile_rewards_http::stub::StubMode {
    fn from(m: StubModeArg) -> Self {
        match m {
            StubModeArg::Normal => Self::Normal,
            StubModeArg::Hang => Self::Hang,
            StubModeArg::Fail => Self::Fail500,
        }
    }
}
