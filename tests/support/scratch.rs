//! Scratch cargo projects that depend on this workspace's crates, built as a user would build
//! them, in one target directory shared by every test and every run (dependencies compiled once).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::workspace_file;

/// The target directory of every scratch build: under the workspace's own target directory, kept
/// between runs so that tokio and the recorder's dependencies are compiled once.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("scratch")
}

/// `cargo` (the one running these tests) in `dir`, with [`build_env`]: what the build sees is
/// what the project's own files say.
pub fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir);
    build_env(&mut cmd);
    cmd
}

/// The environment of a command that runs cargo: builds into [`target_dir`], offline, with
/// nothing from this environment that could add rustflags or move the target directory.
pub fn build_env(cmd: &mut Command) {
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_BUILD_RUSTDOCFLAGS",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_TARGET_DIR", target_dir()).env("CARGO_TERM_COLOR", "never").env("CARGO_NET_OFFLINE", "true");
}

/// The lines a project's `.cargo/config.toml` needs for loopscope (as the README says).
pub const CFG_LINES: &str = "[build]\nrustflags = [\"--cfg\", \"tokio_unstable\"]\n";

/// The release profile the README asks for: line numbers in stall reports.
pub const PROFILE_LINES: &str = "[profile.release]\ndebug = \"line-tables-only\"\n";

/// A new cargo project in a temporary directory (outside this workspace, so none of its settings
/// apply): package `name` with `main_rs` as `src/main.rs`, depending on loopscope by path and on
/// tokio, with this workspace's `Cargo.lock` so that it resolves offline to the versions already
/// built. `with_cfg` writes [`CFG_LINES`] to its `.cargo/config.toml`; `extra_manifest` is
/// appended to its `Cargo.toml`.
pub fn project(name: &str, main_rs: &str, with_cfg: bool, extra_manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("loopscope-scratch-").tempdir().expect("a temporary directory");
    let loopscope = workspace_file("crates/loopscope").canonicalize().expect("crates/loopscope exists");
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\nloopscope = {{ path = \
         {:?} }}\ntokio = {{ version = \"1.54\", features = [\"full\"] }}\n{extra_manifest}",
        loopscope.display().to_string()
    );
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/main.rs"), main_rs).unwrap();
    std::fs::copy(workspace_file("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    if with_cfg {
        std::fs::create_dir(dir.path().join(".cargo")).unwrap();
        std::fs::write(dir.path().join(".cargo/config.toml"), CFG_LINES).unwrap();
    }
    dir
}
