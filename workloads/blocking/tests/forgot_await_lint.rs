//! The forgot-await mistake cannot be caught at run time by a profiler (nothing runs), but the
//! compiler catches it: this test compiles the mistake with rustc and checks the warning.

use std::process::Command;

#[test]
fn rustc_warns_about_a_future_that_is_never_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("forgot.rs");
    std::fs::write(
        &src,
        "async fn record_once() {}\n\
         async fn handler() {\n    record_once();\n}\n\
         fn main() { let _ = handler; }\n",
    )
    .unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
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
