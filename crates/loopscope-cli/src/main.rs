//! The `loopscope` command.

mod catalogue;
mod cli;
mod demo;
mod doctor;
mod flame;
mod gate;
mod progress;
mod record;
mod run;
mod tui;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code when a workload or the recorder failed, or the gate found a regression.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage or input error (bad flag, unreadable or corrupt recording, bad policy).
pub const EXIT_USAGE: u8 = 2;
// Exit code 3 (the gate was inconclusive) comes from `loopscope_gate::Outcome::exit_code`.

/// A resolver that symbolizes recordings' stacks from the binaries on disk.
pub fn resolver() -> loopscope::core::resolve::Resolver {
    loopscope::core::resolve::Resolver::new(loopscope_symbols::Symbolizer::boxed())
}

/// A fresh directory in the temporary directory, `prefix` and a random name, that only this user
/// can enter (0700): nothing can be waiting at its paths, and others cannot read what goes in.
pub fn private_temp_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| anyhow::anyhow!("cannot create a directory in {}: {e}", std::env::temp_dir().display()))
}

/// An error with the exit code it maps to.
pub enum Failure {
    /// Bad input: exit 2.
    Input(anyhow::Error),
    /// The run failed: exit 1.
    Run(anyhow::Error),
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as for any Unix tool, instead of a panic on EPIPE.
    // SAFETY: restores the default disposition of SIGPIPE before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // Before any recorder session, so that the recorder's own hook still sees the panic.
    catalogue::quiet_nested_runtime_panics();
    let done = |r: Result<(), Failure>| r.map(|()| EXIT_OK);
    let result = match cli.command {
        Command::Run(args) => done(run::run_command(&args)),
        Command::Report(args) => done(run::report_command(&args)),
        Command::Demo(args) => done(demo::demo_command(&args)),
        Command::Export(args) => done(run::export_command(&args)),
        Command::Tui(args) => done(tui::tui_command(&args)),
        Command::Check(args) => gate::check_command(&args),
        Command::Gate(args) => gate::gate_command(&args),
        Command::Record(args) => record::record_command(&args),
        Command::Doctor(args) => doctor::doctor_command(&args),
        Command::Dump(args) => done(run::dump_command(&args)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
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
