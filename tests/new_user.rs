//! loopscope on a program of one's own, as the README's "Use it on your program" tells a new
//! user: a new cargo project depending on the `loopscope` crate, built with cargo, run under the
//! real `loopscope record`. The builds share one target directory under the workspace's
//! (`support::scratch`), so only the first run compiles tokio and the recorder's dependencies.

use std::process::Output;

mod support;

use support::scratch::{self, CFG_LINES, PROFILE_LINES};
use support::{loopscope, text, workspace_file};

/// A program whose spawned task blocks its worker with a synchronous sleep.
const BLOCKING_MAIN: &str = r#"use std::time::Duration;

#[loopscope::main(worker_threads = 2)]
async fn main() {
    let ticks = tokio::spawn(async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let blocker = tokio::spawn(async {
        std::thread::sleep(Duration::from_millis(150));
    });
    blocker.await.unwrap();
    ticks.await.unwrap();
    println!("scratch program done");
}
"#;

fn all_output(out: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr))
}

#[test]
fn without_the_cfg_the_build_fails_with_one_error_that_names_the_fix() {
    let project = scratch::project("no-cfg", BLOCKING_MAIN, false, "");
    let out = scratch::cargo(project.path())
        .args(["check", "--offline", "--message-format", "json"])
        .output()
        .expect("cargo runs");
    assert!(!out.status.success(), "{}", all_output(&out));
    let errors: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-message" && m["message"]["level"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "one error, not tokio's: {errors:#?}\n{}", text(&out.stderr));
    assert!(errors[0]["package_id"].as_str().unwrap_or_default().contains("loopscope"), "{:#}", errors[0]);
    let message = errors[0]["message"]["message"].as_str().unwrap();
    for needle in
        ["--cfg tokio_unstable", ".cargo/config.toml", "[build]", CFG_LINES.lines().nth(1).unwrap(), "RUSTFLAGS"]
    {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    assert!(text(&out.stderr).contains("due to 1 previous error"), "{}", text(&out.stderr));
}

#[test]
fn a_new_project_built_as_the_readme_says_gets_a_report_naming_its_blocking_line() {
    // The README gives the user these very lines.
    let readme = std::fs::read_to_string(workspace_file("README.md")).unwrap();
    for needle in [
        "cargo install --path crates/loopscope-cli",
        CFG_LINES.lines().nth(1).unwrap(),
        PROFILE_LINES.lines().nth(1).unwrap(),
        "#[loopscope::main]",
        "loopscope record -- ./target/release/",
    ] {
        assert!(readme.contains(needle), "the README lacks {needle:?}");
    }

    let project = scratch::project("scratch-server", BLOCKING_MAIN, true, &format!("\n{PROFILE_LINES}"));
    let out = scratch::cargo(project.path()).args(["build", "--release", "--offline"]).output().expect("cargo runs");
    assert!(out.status.success(), "{}", all_output(&out));
    let binary = scratch::target_dir().join("release/scratch-server");

    // `loopscope doctor` finds nothing to change in it.
    let checked = doctor(&project.path().join("Cargo.toml"), &[]).output().unwrap();
    assert_eq!(checked.status.code(), Some(0), "{}", all_output(&checked));
    assert!(text(&checked.stdout).contains("0 errors, 0 warnings"), "{}", all_output(&checked));

    let recording = project.path().join("scratch.loopscope");
    let out = loopscope()
        .current_dir(project.path())
        .args(["record", "--out"])
        .arg(&recording)
        .arg("--")
        .arg(&binary)
        .env_remove("LOOPSCOPE_RECORD")
        .env_remove("LOOPSCOPE_SERVE")
        .env_remove("LOOPSCOPE_SYMBOLIZER")
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(report.contains("scratch program done"), "the program's own output: {}", all_output(&out));
    let line = BLOCKING_MAIN.lines().position(|l| l.contains("std::thread::sleep")).unwrap() + 1;
    assert!(report.contains("Stalls: 1 poll blocked a worker"), "{report}");
    assert!(report.contains(&format!("src/main.rs:{line}")), "the sleep's line, src/main.rs:{line}, in:\n{report}");
    assert!(report.contains("sync-sleep"), "{report}");
}

/// `loopscope doctor` on a project, offline (`cargo metadata` resolves from the copied lock file),
/// with no rustflags from this environment.
fn doctor(manifest: &std::path::Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = loopscope();
    cmd.arg("doctor").arg("--manifest-path").arg(manifest).args(extra).env("CARGO_NET_OFFLINE", "true");
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    cmd
}

/// The output line of one check.
fn check_line<'a>(stdout: &'a str, check: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_else(|| panic!("no line for the check {check:?} in:\n{stdout}"))
}

#[test]
fn doctor_finds_nothing_to_change_in_a_project_set_up_as_the_readme_says() {
    let project = scratch::project("good-server", BLOCKING_MAIN, true, &format!("\n{PROFILE_LINES}"));
    let out = doctor(&project.path().join("Cargo.toml"), &[]).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    for check in ["tokio", "loopscope", "recorder", "tokio_unstable", "debug", "split-debuginfo", "strip"] {
        assert!(check_line(&stdout, check).starts_with("ok "), "{stdout}");
    }
    assert!(check_line(&stdout, "tokio_unstable").contains(".cargo/config.toml"), "{stdout}");
    assert!(stdout.contains("0 errors, 0 warnings"), "{stdout}");

    // RUSTFLAGS in the environment replaces the config's rustflags: the cfg is gone.
    let out =
        doctor(&project.path().join("Cargo.toml"), &[]).env("RUSTFLAGS", "-C target-cpu=native").output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let line = check_line(&stdout, "tokio_unstable");
    assert!(line.starts_with("error") && line.contains("RUSTFLAGS") && line.contains("--cfg tokio_unstable"), "{line}");
}

#[test]
fn doctor_says_what_to_change_in_a_project_that_is_not_set_up() {
    // An old tokio (a local package standing in for tokio 1.40 from the registry, which is not
    // available offline), no loopscope, no cfg, and a release profile that strips symbols and
    // puts the line tables in a .dwp file.
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, body: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    write("old-tokio/Cargo.toml", "[package]\nname = \"tokio\"\nversion = \"1.40.0\"\nedition = \"2021\"\n");
    write("old-tokio/src/lib.rs", "");
    write(
        "Cargo.toml",
        "[package]\nname = \"bad-server\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\ntokio = { path = \
         \"old-tokio\" }\n\n[profile.release]\ndebug = \"line-tables-only\"\nsplit-debuginfo = \"packed\"\nstrip = \
         true\n\n[profile.fast]\ninherits = \"release\"\ndebug = false\nstrip = \"none\"\n",
    );
    write("src/main.rs", "fn main() {}\n");
    let manifest = dir.path().join("Cargo.toml");
    let out = doctor(&manifest, &[]).output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let expect = |check: &str, level: &str, needles: &[&str]| {
        let line = check_line(&stdout, check);
        assert!(line.starts_with(level), "{check}: {level} expected: {line}");
        for n in needles {
            assert!(line.contains(n), "{check}: {n:?} not in: {line}");
        }
    };
    expect("tokio", "error", &["1.40.0", "1.54", "cargo update -p tokio"]);
    expect("loopscope", "error", &["bad-server", "loopscope = {"]);
    expect(
        "tokio_unstable",
        "error",
        &["not set", "rustflags = [\"--cfg\", \"tokio_unstable\"]", ".cargo/config.toml"],
    );
    expect("debug", "ok", &["line-tables-only"]);
    expect("split-debuginfo", "warn", &["packed", "release/bad-server.dwp", "beside the binary"]);
    expect("strip", "error", &["strip = true", "neither a function nor a line", "[profile.release]"]);
    assert!(stdout.contains("4 errors, 1 warning"), "{stdout}");

    // A profile inheriting from release, without line tables.
    let out = doctor(&manifest, &["--profile", "fast"]).output().unwrap();
    let stdout = text(&out.stdout);
    let line = check_line(&stdout, "debug");
    assert!(
        line.starts_with("warn") && line.contains("debug = \"line-tables-only\"") && line.contains("[profile.fast]"),
        "{line}"
    );
    assert!(check_line(&stdout, "strip").starts_with("ok"), "{stdout}");
    assert!(
        check_line(&stdout, "split-debuginfo").starts_with("ok"),
        "inherited, but no line tables to split: {stdout}"
    );

    // Bad input: a profile the project does not define, no manifest there, and a manifest cargo
    // cannot read.
    let out = doctor(&manifest, &["--profile", "fastest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(text(&out.stderr).contains("--profile fastest: no such profile"), "{}", all_output(&out));
    let missing = dir.path().join("nowhere/Cargo.toml");
    let out = doctor(&missing, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(text(&out.stderr).contains(missing.to_str().unwrap()) && text(&out.stderr).contains("--manifest-path"));
    write("Cargo.toml", "[package\nname = \"bad-server\"\n");
    let out = doctor(&manifest, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", all_output(&out));
    assert!(text(&out.stderr).contains("cargo metadata") && text(&out.stderr).contains(manifest.to_str().unwrap()));
}

/// A program that blocks in a function of its own, as servers do (a handler called by the task).
const HANDLER_MAIN: &str = r#"use std::time::Duration;

mod store {
    /// Writes a value the slow way: a synchronous sleep stands for blocking I/O.
    #[inline(never)]
    pub fn save(value: u64) -> u64 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        std::hint::black_box(value + 1)
    }
}

#[loopscope::main(worker_threads = 2)]
async fn main() {
    let ticks = tokio::spawn(async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let saved = tokio::spawn(async { store::save(41) }).await.unwrap();
    ticks.await.unwrap();
    println!("saved {saved}");
}
"#;

#[test]
fn a_plain_release_build_gets_function_names_and_the_hint_for_lines() {
    // No `debug` in the release profile: what `cargo build --release` gives by default.
    let project = scratch::project("plain-server", HANDLER_MAIN, true, "");
    let out = scratch::cargo(project.path()).args(["build", "--release", "--offline"]).output().expect("cargo runs");
    assert!(out.status.success(), "{}", all_output(&out));
    let binary = scratch::target_dir().join("release/plain-server");
    let recording = project.path().join("plain.loopscope");
    let out = loopscope()
        .current_dir(project.path())
        .args(["record", "--out"])
        .arg(&recording)
        .arg("--")
        .arg(&binary)
        .env_remove("LOOPSCOPE_RECORD")
        .env_remove("LOOPSCOPE_SERVE")
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(report.contains("saved 42"), "{}", all_output(&out));
    assert!(report.contains("Stalls: 1 poll blocked a worker"), "{report}");
    // Named by the function, from the symbol table, and the way to get lines said once.
    assert!(report.contains("plain_server::store::save"), "the blocking function in:\n{report}");
    assert!(report.contains("no line tables") && report.contains("debug = \"line-tables-only\""), "{report}");
    assert_eq!(report.matches("no line tables").count(), 1, "said once: {report}");
    // And at install, when the program runs on its own with the recorder on.
    let out = std::process::Command::new(&binary)
        .env("LOOPSCOPE_RECORD", project.path().join("direct.loopscope"))
        .env_remove("LOOPSCOPE_QUIET")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("this binary has no line tables") && stderr.contains("line-tables-only"), "{stderr}");
}
