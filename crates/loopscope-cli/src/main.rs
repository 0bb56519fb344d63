//! The `loopscope` command.

mod catalogue;
mod cli;
mod demo;
mod progress;
mod run;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code when a workload or the recorder failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage or input error (bad flag, unreadable or corrupt recording).
pub const EXIT_USAGE: u8 = 2;

/// An error with the exit code it maps to.
pub enum Failure {
    /// Bad input: exit 2.
    Input(anyhow::Error),
    /// The run failed: exit 1.
    Run(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any recorder session, so that the recorder's own hook still sees the panic.
    catalogue::quiet_nested_runtime_panics();
    let result = match cli.command {
        Command::Run(args) => run::run_command(&args),
        Command::Report(args) => run::report_command(&args),
        Command::Demo(args) => demo::demo_command(&args),
        Command::Export(args) => run::export_command(&args),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure::Input(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
