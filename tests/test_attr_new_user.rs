//! `#[loopscope::test]` in a project of one's own, as docs/testing.md tells a user to adopt it:
//! a new cargo project with `loopscope` (feature `test`) in its dev-dependencies and
//! `--cfg tokio_unstable` in `.cargo/config.toml`, its tests run with `cargo test` and
//! `cargo nextest run`; and the one error each of a build without the cfg and without the
//! feature. The builds share the scratch target directory (`support::scratch`).

use std::process::Output;

mod support;

use support::scratch::{self, CFG_LINES};
use support::{programs, text, workspace_file};

/// Two tests of an existing suite, moved from `#[tokio::test]` to `#[loopscope::test]`.
const TESTS_RS: &str = r#"use std::time::Duration;

#[loopscope::test]
async fn sleeps_in_async_code() {
    std::thread::sleep(Duration::from_millis(5));
}

#[loopscope::test]
async fn awaits_a_timer() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}
"#;

/// The line of the blocking sleep in [`TESTS_RS`].
fn sleep_line() -> usize {
    TESTS_RS.lines().position(|l| l.contains("std::thread::sleep")).unwrap() + 1
}

/// A project whose `tests/blocking.rs` is [`TESTS_RS`], with loopscope in its dev-dependencies
/// (with the features in `features`).
fn project(name: &str, with_cfg: bool, features: &str) -> tempfile::TempDir {
    let loopscope = workspace_file("crates/loopscope").canonicalize().unwrap();
    let dev =
        format!("\n[dev-dependencies]\nloopscope = {{ path = {:?}{features} }}\n", loopscope.display().to_string());
    let project = scratch::project(name, "fn main() {}\n", with_cfg, &dev);
    std::fs::create_dir(project.path().join("tests")).unwrap();
    std::fs::write(project.path().join("tests/blocking.rs"), TESTS_RS).unwrap();
    project
}

fn all_output(out: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

/// The compiler's error messages of a `cargo test --no-run --message-format json`.
fn build_errors(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-message" && m["message"]["level"] == "error")
        .map(|m| m["message"]["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_docs_give_the_lines_this_test_uses() {
    let docs = std::fs::read_to_string(workspace_file("docs/testing.md")).unwrap();
    for needle in
        ["[dev-dependencies]", "features = [\"test\"]", CFG_LINES.lines().nth(1).unwrap(), "#[loopscope::test]"]
    {
        assert!(docs.contains(needle), "docs/testing.md lacks {needle:?}");
    }
}

#[test]
fn an_existing_suite_fails_the_test_that_blocks_under_cargo_test_and_nextest() {
    let project = project("adopt-test-attr", true, ", features = [\"test\"]");
    let out = scratch::cargo(project.path()).args(["test", "--offline", "--test", "blocking"]).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{}", all_output(&out));
    assert!(stdout.contains("test awaits_a_timer ... ok"), "{}", all_output(&out));
    assert!(stdout.contains("test sleeps_in_async_code ... FAILED"), "{}", all_output(&out));
    let line = format!("   at       tests/blocking.rs:{}\n", sleep_line());
    for needle in ["test `blocking::sleeps_in_async_code` blocked its runtime", "1) sync-sleep: a poll blocked", &line]
    {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{}", all_output(&out));
    }

    let test = "an_existing_suite_fails_the_test_that_blocks_under_cargo_test_and_nextest";
    if programs::program_or_skip(test, "cargo-nextest", "cargo install cargo-nextest --locked").is_none() {
        return;
    }
    // nextest runs each test in a process of its own.
    let out = scratch::cargo(project.path())
        .args(["nextest", "run", "--offline", "--no-fail-fast", "--test", "blocking", "--color", "never"])
        .output()
        .unwrap();
    let all = all_output(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("PASS") && all.contains("awaits_a_timer"), "{all}");
    assert!(all.contains("FAIL") && all.contains("sleeps_in_async_code"), "{all}");
    assert!(all.contains(&line) && all.contains("1) sync-sleep: a poll blocked"), "{all}");
    assert!(all.contains("1 passed, 1 failed"), "{all}");
}

/// Builds the project's tests, which must fail; the output and the compiler's errors.
fn failed_build(project: &tempfile::TempDir) -> (std::process::Output, Vec<String>) {
    let out = scratch::cargo(project.path())
        .args(["test", "--no-run", "--offline", "--message-format", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", all_output(&out));
    let errors = build_errors(&out);
    (out, errors)
}

#[test]
fn without_the_cfg_the_test_build_fails_with_the_set_up_instruction() {
    let (out, errors) = failed_build(&project("adopt-no-cfg", false, ", features = [\"test\"]"));
    assert_eq!(errors.len(), 1, "one error, loopscope's: {errors:#?}\n{}", text(&out.stderr));
    for needle in ["--cfg tokio_unstable", ".cargo/config.toml", CFG_LINES.lines().nth(1).unwrap()] {
        assert!(errors[0].contains(needle), "{needle:?} not in: {}", errors[0]);
    }
}

#[test]
fn without_the_feature_the_attribute_says_how_to_turn_it_on() {
    let (_, errors) = failed_build(&project("adopt-no-feature", true, ""));
    // One per attribute, each the same, and nothing else.
    assert_eq!(errors.len(), 2, "{errors:#?}");
    for e in &errors {
        assert!(e.contains("#[loopscope::test] needs the `test` feature of the loopscope crate"), "{e}");
        assert!(e.contains("[dev-dependencies]") && e.contains("features = [\"test\"]"), "{e}");
    }
}
