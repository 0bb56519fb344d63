//! The forgot-await mistake cannot be caught at run time by a profiler (nothing runs), but the
//! compiler catches it: this test compiles the mistake with rustc and checks the warning.

use std::path::PathBuf;
use std::process::Command;

#[path = "../../../tests/support/programs.rs"]
mod programs;

/// The compiler: `RUSTC` when set, else the `rustc` beside the `cargo` running the tests (every
/// Rust toolchain has one), else one on `PATH`.
fn rustc() -> Option<PathBuf> {
    if let Some(rustc) = std::env::var_os("RUSTC").filter(|r| !r.is_empty()) {
        return Some(rustc.into());
    }
    let beside_cargo = std::env::var_os("CARGO").map(|c| PathBuf::from(c).with_file_name("rustc"));
    beside_cargo.filter(|r| r.is_file()).or_else(|| programs::on_path("rustc"))
}

#[test]
fn rustc_warns_about_a_future_that_is_never_awaited() {
    let Some(rustc) = programs::found_or_skip(
        "rustc_warns_about_a_future_that_is_never_awaited",
        "rustc",
        "rustup, https://rustup.rs",
        rustc(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("forgot.rs");
    std::fs::write(
        &src,
        "async fn record_once() {}\n\
         async fn handler() {\n    record_once();\n}\n\
         fn main() { let _ = handler; }\n",
    )
    .unwrap();
    let out = Command::new(rustc)
        .args(["--edition", "2024", "--crate-type", "bin", "--emit", "metadata", "-o"])
        .arg(dir.path().join("forgot.rmeta"))
        .arg(&src)
        .output()
        .expect("rustc runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("unused implementer of `Future` that must be used"), "{stderr}");
    assert!(stderr.contains("futures do nothing unless you `.await` or poll them"), "{stderr}");
    assert!(stderr.contains("forgot.rs:3"), "the warning names the line: {stderr}");
}
