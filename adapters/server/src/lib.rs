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

/// Parses the command line and runs the subcommand; the exit code says how it went.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
