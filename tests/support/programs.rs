//! Outside programs some tests drive (tmux, promtool, rustc): found on `PATH`, or the test says
//! loudly that it skips the part that needs one. Shared by the top-level tests (through
//! `support`) and, by `#[path]`, by the crates' tests that need a program.
//!
//! A skip is printed straight to the process's stderr, which the test harness does not capture,
//! so it shows in every `cargo test` run, passing or not. CI sets `LOOPSCOPE_TEST_PROGRAMS=require`
//! (`.ci/run` installs every program), which turns a missing program into a failure instead.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The variable that makes a missing program fail the test instead of skipping it.
pub const REQUIRE: &str = "LOOPSCOPE_TEST_PROGRAMS";

/// The executable file `program` in a directory of `PATH`, if any.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program` found on `PATH`; otherwise prints
/// `SKIPPED: <test>: <program> not found on PATH (install it with <install>)` and returns `None`
/// (the caller returns, or skips that part), or panics when `LOOPSCOPE_TEST_PROGRAMS=require`.
pub fn program_or_skip(test: &str, program: &str, install: &str) -> Option<PathBuf> {
    found_or_skip(test, program, install, on_path(program))
}

/// The same for a program found some other way: `found` is where it is, if anywhere.
pub fn found_or_skip(test: &str, program: &str, install: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let why = format!("{program} not found on PATH (install it with {install})");
    if std::env::var(REQUIRE).is_ok_and(|v| v == "require") {
        panic!("{test}: {why}, and {REQUIRE}=require");
    }
    skipped(&format!("SKIPPED: {test}: {why}"));
    None
}

/// Prints a skip line where it shows in every run (not through the harness's capture).
pub fn skipped(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
