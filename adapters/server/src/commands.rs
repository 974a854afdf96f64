//! The operator subcommands: `migrate`, `seed`, `token`, `rewards-stub`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use profile_auth_jwt::AuthConfig;
use profile_rewards_http::stub::StubControl;

use crate::cli::{MigrateArgs, SeedArgs, StubArgs, TokenArgs};
use crate::databases;
use crate::error::AppError;

/// `profile-api migrate`.
pub async fn migrate(args: MigrateArgs) -> Result<(), AppError> {
    let dbs = databases::open(&args.db).await?;
    dbs.close().await;
    println!("migrated {} and {}", dbs.main.shown, dbs.profiles.shown);
    Ok(())
}

/// `profile-api seed --users N [--orders-per-user M]`.
pub async fn seed(args: SeedArgs) -> Result<(), AppError> {
    let dbs = databases::open(&args.db).await?;
    dbs.profiles.admin.close().await;
    let main = dbs.main.admin.clone();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(args.users), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} seeding [{bar:40}] {pos}/{len} users ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let progress = {
        let bar = bar.clone();
        move |done: u64| bar.set_position(done)
    };
    let report = main
        .seed(args.users, args.orders_per_user, &progress)
        .await
        .map_err(|e| AppError::setting(databases::MAIN_SETTING, format!("seeding failed: {e}")))?;
    bar.finish_and_clear();
    main.close().await;
    println!(
        "seeded {} users (ids {}..={}) with {} orders in {:.2}s",
        report.users,
        report.first_id,
        report.last_id,
        report.orders,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `profile-api token --user ID [--ttl-s S]`.
pub fn token(args: TokenArgs) -> Result<(), AppError> {
    let secret = args.jwt.jwt_secret.filter(|s| !s.is_empty()).ok_or_else(|| {
        AppError::setting("--jwt-secret (PROFILE_JWT_SECRET)", "is required to sign a token")
    })?;
    let auth = AuthConfig {
        secret: secret.into_bytes(),
        issuer: args.jwt.jwt_issuer.filter(|s| !s.is_empty()),
        audience: args.jwt.jwt_audience.filter(|s| !s.is_empty()),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let last = args.user.saturating_add(i64::try_from(args.count).unwrap_or(i64::MAX) - 1);
    for user in args.user..=last {
        let token = profile_auth_jwt::mint_token(&auth, user, Duration::from_secs(args.ttl_s))
            .map_err(|e| AppError::other(format!("cannot sign the token: {e}")))?;
        writeln!(out, "{token}").map_err(|e| AppError::other(format!("cannot write the token: {e}")))?;
    }
    out.flush().map_err(|e| AppError::other(format!("cannot write the token: {e}")))?;
    Ok(())
}

/// `profile-api rewards-stub [--listen ADDR]`.
pub async fn rewards_stub(args: StubArgs) -> Result<(), AppError> {
    let control = match &args.api_key {
        Some(key) => StubControl::with_api_key(args.mode.into(), key),
        None => StubControl::new(args.mode.into()),
    };
    let stub = profile_rewards_http::stub::StubServer::start(args.listen, control).await.map_err(|e| {
        AppError::setting(
            "--listen (PROFILE_REWARDS_STUB_LISTEN)",
            format!("cannot listen on {}: {e}", args.listen),
        )
    })?;
    println!("rewards stub listening on http://{}", stub.addr());
    let _ = tokio::signal::ctrl_c().await;
    stub.shutdown().await;
    Ok(())
}
