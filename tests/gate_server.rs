//! The worked example of docs/ci-gates.md end to end: `scripts/gate-server-example` gates
//! workloads/tiny-server, a tokio server of this workspace built as a user's would be, over real
//! TCP on 127.0.0.1 (each server on a port the system picks, which it prints): started under
//! `loopscope record`, driven by tiny-load, stopped with SIGTERM, baseline and candidate
//! interleaved, then `loopscope check`. The server is built in the shared scratch target
//! directory (`support::scratch`), so only the first run compiles it.

use std::path::Path;
use std::process::{Command, Output};

mod support;

use support::{scratch, text, workspace_file};

fn all_output(out: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

/// The script, with the workspace's loopscope, two runs of 700 ms per side, output in `out`.
fn script(out: &Path) -> Command {
    let mut cmd = Command::new(workspace_file("scripts/gate-server-example"));
    scratch::build_env(&mut cmd);
    cmd.env("LOOPSCOPE", env!("CARGO_BIN_EXE_loopscope"))
        .env("RUNS", "2")
        .env("LOAD_FOR", "700ms")
        .env("OUT", out)
        .env_remove("LOAD")
        .env_remove("POLICY")
        .env_remove("LOOPSCOPE_RECORD")
        .env_remove("LOOPSCOPE_SERVE")
        .env_remove("GITHUB_ACTIONS");
    cmd
}

#[test]
fn the_server_example_passes_two_builds_of_one_program_and_catches_a_slow_candidate() {
    let root = workspace_file(".");
    let built = scratch::cargo(&root)
        .args(["build", "--release", "--offline", "--locked", "-p", "tiny-server"])
        .output()
        .expect("cargo runs");
    assert!(built.status.success(), "{}", all_output(&built));
    let release = scratch::target_dir().join("release");
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny-server-base", "tiny-server-candidate"] {
        std::fs::copy(release.join("tiny-server"), dir.path().join(name)).unwrap();
    }

    // Two builds of the same code: a pass, which says that the programs differ.
    let out = script(&dir.path().join("same"))
        .arg(dir.path().join("tiny-server-base"))
        .arg("---")
        .arg(dir.path().join("tiny-server-candidate"))
        .env("LOAD", release.join("tiny-load"))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    assert!(
        stdout.contains(
            "the programs differ: the baseline records \"tiny-server-base\", the candidate \"tiny-server-candidate\""
        ),
        "{stdout}"
    );
    // Each run served real requests, and ended on SIGTERM with a complete recording.
    for run in ["base-1", "base-2", "candidate-1", "candidate-2"] {
        let log = std::fs::read_to_string(dir.path().join(format!("same/{run}.log"))).unwrap();
        assert!(log.contains("listening on 127.0.0.1:") && log.contains("tiny-load: "), "{run}: {log}");
        assert!(log.contains("tiny-server: stopped after 8 connections"), "{run}: {log}");
        assert!(log.contains("— complete"), "{run}: {log}");
    }

    // As the docs run it: no arguments, the script builds the server and starts the candidate
    // with --slow 2ms (a hundred times a request's own work): a regression of the handler's poll
    // time.
    let out = script(&dir.path().join("slow")).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(stdout.contains("verdict: REGRESSION"), "{stdout}");
    let rule = stdout
        .lines()
        .find(|l| l.starts_with("poll at tiny-server/src/main.rs p50"))
        .unwrap_or_else(|| panic!("no p50 rule in:\n{stdout}"));
    assert!(rule.ends_with("REGRESSION"), "{rule}");
    assert!(text(&out.stderr).contains("recordings and logs in"), "{}", text(&out.stderr));
}
