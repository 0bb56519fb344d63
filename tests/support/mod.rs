//! Helpers shared by the end-to-end tests of the `loopscope` binary.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Outside programs (tmux, promtool): found on `PATH`, or skipped with a `SKIPPED:` line.
pub mod programs;
pub mod scratch;

/// Tests that run workloads take turns: run all at once on a 2-core machine they would measure
/// each other rather than themselves.
static WORKLOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_workload_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    WORKLOAD.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn loopscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loopscope"))
}

pub fn run(args: &[&str]) -> Output {
    loopscope().args(args).stdin(Stdio::null()).output().expect("the loopscope binary runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Records a short sleep-storm run (six 100 ms intervals) to `path`.
pub fn record_short_run(path: &Path) {
    let out = run(&[
        "run",
        "sleep-storm",
        "--for",
        "600ms",
        "--tasks",
        "100",
        "--interval",
        "100ms",
        "--record",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

pub fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}
