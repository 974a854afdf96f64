//! The composition root of the profile service: configuration, wiring of the adapters
//! into the core, and the `profile-api` subcommands.

pub mod app;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod databases;
pub mod error;
pub mod grpc;
pub mod journal;
pub mod logformat;
pub mod logsink;
pub mod serve;
pub mod telemetry;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::{Cli, Command};
use crate::error::AppError;

/// The builder of the multi-threaded runtime everything runs on, with tokio's LIFO slot
/// disabled where the build allows it (`--cfg tokio_unstable`, set in `.cargo/config.toml`).
///
/// With the slot, a task woken by the task running now is polled right after it. An
/// HTTP/2 connection's task is woken by each call's task as it answers, so it ran after
/// every single call and wrote each answer in a `writev` of its own; without the slot it
/// runs once the calls that were ready have answered, and writes them together (measured:
/// eight answers per `writev` instead of one, half the CPU per gRPC call). Writes gain as
/// well: the SQLite writer's batches are handed back to more callers at a time.
fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder
}

/// Parses the command line and runs the subcommand; the exit code says how it went.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let runtime = match runtime_builder().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&AppError::other(format!("cannot start the async runtime: {e}"))),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(*args).await,
            Command::Migrate(args) => commands::migrate(args).await,
            Command::Seed(args) => commands::seed(args).await,
            Command::Token(args) => commands::token(args),
            Command::RewardsStub(args) => commands::rewards_stub(args).await,
        }
    });
    // Pools and background tasks may hold blocking threads: do not wait on them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &AppError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

/// Prints clap's verdict so that, for a bad setting, the last line names it.
fn clap_exit(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            // clap ends with a "For more information" hint; the error line must come last.
            let mut lines: Vec<&str> = rendered.lines().filter(|l| !l.trim().is_empty()).collect();
            lines.retain(|l| !l.starts_with("For more information"));
            if let Some(pos) = lines.iter().position(|l| l.starts_with("error:")) {
                let err = lines.remove(pos);
                for l in lines {
                    eprintln!("{l}");
                }
                eprintln!("{err}");
            } else {
                for l in lines {
                    eprintln!("{l}");
                }
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// A task woken by the running one waits its turn behind the tasks queued before it,
    /// as the HTTP/2 connection task must behind the calls that are ready (see
    /// [`super::runtime_builder`]). With tokio's LIFO slot, the woken task would run
    /// first. Fails too when the build flag is lost (a `RUSTFLAGS` in the environment
    /// replaces `.cargo/config.toml`'s).
    #[test]
    fn a_woken_task_runs_after_the_tasks_queued_before_it() {
        let rt = super::runtime_builder().worker_threads(1).build().expect("a runtime");
        let order = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(wake_one_behind_a_queued_one(order.clone()));
        assert_eq!(*order.lock().unwrap(), ["queued", "woken"]);
    }

    /// Parks one task on a channel, queues another, then wakes the first.
    async fn wake_one_behind_a_queued_one(order: Arc<Mutex<Vec<&'static str>>>) {
        let driver = tokio::spawn(async move {
            let (wake, woken) = tokio::sync::oneshot::channel::<()>();
            let o = order.clone();
            let waiting = tokio::spawn(async move {
                let _ = woken.await;
                o.lock().unwrap().push("woken");
            });
            // Let it run until it waits on the channel.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let o = order.clone();
            let queued = tokio::spawn(async move { o.lock().unwrap().push("queued") });
            let _ = wake.send(());
            (waiting, queued)
        });
        let (waiting, queued) = driver.await.expect("the driver");
        waiting.await.expect("the woken task");
        queued.await.expect("the queued task");
    }
}
