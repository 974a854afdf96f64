//! `serve`: validate the settings, set up logs and metrics, build the app (migrate,
//! recover, wire the adapters into the core), bind, serve until a signal, tear down.

use crate::app::App;
use crate::cli::ServeArgs;
use crate::error::AppError;
use crate::telemetry;

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
    // Refuse before touching any file: a bad setting must leave nothing behind.
    crate::app::check(&args)?;
    let _log_guard = telemetry::init_logging();
    let prometheus = telemetry::install_metrics()?;
    let app = App::builder(args).metrics(prometheus).build().await?;
    let listeners = match app.bind().await {
        Ok(listeners) => listeners,
        Err(e) => {
            app.close().await;
            return Err(e);
        }
    };
    app.announce(&listeners);
    app.serve(listeners, shutdown_signal()).await;
    Ok(())
}
