//! `loopscope doctor`: checks that a cargo project is set up to be profiled by loopscope, and
//! says what to change: tokio's version, the `--cfg tokio_unstable` flag, the `loopscope`
//! dependency and its use, and the debug information of the profile that will be profiled.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::anyhow;

use crate::Failure;
use crate::cli::DoctorArgs;

/// The oldest tokio with the runtime hooks loopscope uses (`on_before_task_poll` with
/// `TaskMeta`, schedule latency).
const TOKIO_MIN: (u64, u64) = (1, 54);

/// The line a project's `.cargo/config.toml` needs under `[build]`.
const CFG_FIX: &str = "rustflags = [\"--cfg\", \"tokio_unstable\"]";

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    /// Nothing to change.
    Ok,
    /// loopscope works, with less in its reports.
    Warn,
    /// loopscope will not build or record as things are.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// One check's result: a line of the output.
struct Finding {
    level: Level,
    check: &'static str,
    text: String,
}

impl Finding {
    fn new(level: Level, check: &'static str, text: impl Into<String>) -> Finding {
        Finding { level, check, text: text.into() }
    }
}

/// `loopscope doctor`: prints one line per check; exit 0 without errors, 1 with.
pub fn doctor_command(args: &DoctorArgs) -> Result<u8, Failure> {
    let manifest = match &args.manifest_path {
        Some(p) => {
            if !p.is_file() {
                return Err(Failure::Input(anyhow!(
                    "--manifest-path {}: no such file (expected the Cargo.toml of the project to profile)",
                    p.display()
                )));
            }
            p.clone()
        }
        None => find_manifest()?,
    };
    let project_dir = manifest.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let configs = ConfigFiles::load(&project_dir)?;
    let meta = cargo_metadata(&manifest, build_target(&configs).as_deref())?;
    let root_manifest = Path::new(meta["workspace_root"].as_str().unwrap_or_default()).join("Cargo.toml");
    let root_toml = read_toml(&root_manifest)?;

    let mut findings = Vec::new();
    findings.push(check_tokio(&meta));
    findings.extend(check_loopscope(&meta));
    findings.push(check_cfg(&configs, &project_dir));
    let target_dir = PathBuf::from(meta["target_directory"].as_str().unwrap_or("target"));
    let binary = binaries(&meta).into_iter().next().unwrap_or_else(|| "<your binary>".into());
    let defined = |t: &toml::Table| t.get("profile").and_then(|p| p.get(&args.profile)).is_some();
    if !matches!(args.profile.as_str(), "dev" | "release" | "test" | "bench")
        && !defined(&root_toml)
        && !configs.files.iter().any(|(_, t)| defined(t))
    {
        return Err(Failure::Input(anyhow!(
            "--profile {}: no such profile (expected dev, release, test, bench, or one defined by [profile.{}] in {})",
            args.profile,
            args.profile,
            root_manifest.display()
        )));
    }
    let profile = Profile::resolve(&args.profile, &root_toml, &configs);
    findings.extend(profile.check(&root_manifest, &target_dir, &binary));

    for f in &findings {
        println!("{:<5}  {:<15}  {}", f.level, f.check, f.text);
    }
    let count = |l: Level| findings.iter().filter(|f| f.level == l).count();
    let (errors, warnings) = (count(Level::Error), count(Level::Warn));
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    println!(
        "\n{}: {errors} error{}, {warnings} warning{} (profile `{}`)",
        manifest.display(),
        plural(errors),
        plural(warnings),
        args.profile
    );
    Ok(if errors > 0 { crate::EXIT_FAILURE } else { crate::EXIT_OK })
}

/// The nearest `Cargo.toml` from the current directory up, as cargo finds it.
fn find_manifest() -> Result<PathBuf, Failure> {
    let cwd = std::env::current_dir().map_err(|e| Failure::Input(anyhow!("cannot read the current directory: {e}")))?;
    cwd.ancestors().map(|d| d.join("Cargo.toml")).find(|p| p.is_file()).ok_or_else(|| {
        Failure::Input(anyhow!(
            "no Cargo.toml in {} or any directory above it (give the project with --manifest-path PATH)",
            cwd.display()
        ))
    })
}

/// The target the project is built for: `CARGO_BUILD_TARGET`, or `build.target` of the nearest
/// cargo config that sets it, else the host of `rustc -vV`; `None` when that is not one triple
/// (several targets, a target spec file) or cannot be read.
fn build_target(configs: &ConfigFiles) -> Option<String> {
    let configured = match std::env::var("CARGO_BUILD_TARGET") {
        Ok(t) if !t.is_empty() => Some(toml::Value::String(t)),
        _ => configs.values(&["build", "target"]).next().map(|(_, v)| v.clone()),
    };
    if let Some(value) = configured {
        let one = match &value {
            toml::Value::Array(a) if a.len() == 1 => a[0].as_str(),
            v => v.as_str(),
        };
        return one.filter(|t| !t.is_empty() && !t.ends_with(".json")).map(str::to_owned);
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("host: ")).map(|h| h.trim().to_owned())
}

/// `cargo metadata --format-version 1` of the project: its packages and resolved dependencies.
///
/// With `target`, the graph is the one cargo builds for that platform (`--filter-platform`):
/// without it cargo wants every package of the lock file, those of other platforms too, and an
/// offline machine that built the project has not downloaded those (`heapless` wants
/// `atomic-polyfill` on a few embedded targets only).
fn cargo_metadata(manifest: &Path, target: Option<&str>) -> Result<serde_json::Value, Failure> {
    if let Some(target) = target
        && let Ok(meta) = cargo_metadata_for(manifest, Some(target))
    {
        return Ok(meta);
    }
    // A target cargo does not know (a custom one): the whole graph, as cargo gives it.
    cargo_metadata_for(manifest, None)
}

fn cargo_metadata_for(manifest: &Path, target: Option<&str>) -> Result<serde_json::Value, Failure> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["metadata", "--format-version", "1", "--manifest-path"]).arg(manifest);
    if let Some(target) = target {
        cmd.args(["--filter-platform", target]);
    }
    let out =
        cmd.output().map_err(|e| Failure::Input(anyhow!("cannot run `{} metadata`: {e}", cargo.to_string_lossy())))?;
    if !out.status.success() {
        return Err(Failure::Input(anyhow!(
            "`cargo metadata` failed on {}:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| Failure::Input(anyhow!("`cargo metadata` printed no JSON: {e}")))
}

fn read_toml(path: &Path) -> Result<toml::Table, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure::Input(anyhow!("cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>().map_err(|e| Failure::Input(anyhow!("{}: not valid TOML: {e}", path.display())))
}

/// The packages of the resolved graph.
fn packages(meta: &serde_json::Value) -> &[serde_json::Value] {
    meta["packages"].as_array().map_or(&[], Vec::as_slice)
}

/// The workspace's own packages.
fn members(meta: &serde_json::Value) -> Vec<&serde_json::Value> {
    let ids: Vec<&str> =
        meta["workspace_members"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_str).collect();
    packages(meta).iter().filter(|p| p["id"].as_str().is_some_and(|id| ids.contains(&id))).collect()
}

/// Members that depend on `loopscope` (normal dependencies).
fn members_using_loopscope(meta: &serde_json::Value) -> Vec<&serde_json::Value> {
    members(meta)
        .into_iter()
        .filter(|m| {
            m["dependencies"].as_array().into_iter().flatten().any(|d| d["name"] == "loopscope" && d["kind"].is_null())
        })
        .collect()
}

/// Names of the binaries of the members that use loopscope (of every member when none does).
fn binaries(meta: &serde_json::Value) -> Vec<String> {
    let users = members_using_loopscope(meta);
    if users.is_empty() { members(meta) } else { users }
        .into_iter()
        .flat_map(|m| m["targets"].as_array().into_iter().flatten())
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect()
}

/// `1.54.1` as (1, 54); pre-release and build suffixes ignored.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn check_tokio(meta: &serde_json::Value) -> Finding {
    let versions: Vec<&str> =
        packages(meta).iter().filter(|p| p["name"] == "tokio").filter_map(|p| p["version"].as_str()).collect();
    let (min_major, min_minor) = TOKIO_MIN;
    if versions.is_empty() {
        return Finding::new(
            Level::Error,
            "tokio",
            format!(
                "tokio is not a dependency: add `tokio = \"{min_major}.{min_minor}\"` (or newer) to [dependencies]"
            ),
        );
    }
    let old: Vec<&&str> = versions.iter().filter(|v| major_minor(v).is_none_or(|v| v < TOKIO_MIN)).collect();
    match old.first() {
        None => Finding::new(
            Level::Ok,
            "tokio",
            format!("tokio {} (loopscope needs {min_major}.{min_minor} or newer)", versions.join(", ")),
        ),
        Some(v) => Finding::new(
            Level::Error,
            "tokio",
            format!(
                "tokio {v} is older than {min_major}.{min_minor}, the first with the runtime hooks loopscope uses: \
                 require `tokio = \"{min_major}.{min_minor}\"` in Cargo.toml and run `cargo update -p tokio`"
            ),
        ),
    }
}

/// Whether loopscope is a dependency, and whether a binary installs it.
fn check_loopscope(meta: &serde_json::Value) -> Vec<Finding> {
    let users = members_using_loopscope(meta);
    if users.is_empty() {
        let names: Vec<&str> = members(meta).iter().filter_map(|m| m["name"].as_str()).collect();
        return vec![Finding::new(
            Level::Error,
            "loopscope",
            format!(
                "loopscope is not a dependency of {}: add `loopscope = {{ git = \"https://example.invalid/loopscope\" }}` \
                 (or `{{ path = \"PATH/TO/loopscope/crates/loopscope\" }}`) to [dependencies]",
                if names.is_empty() { "this project".into() } else { names.join(", ") }
            ),
        )];
    }
    let version =
        packages(meta).iter().find(|p| p["name"] == "loopscope").and_then(|p| p["version"].as_str()).unwrap_or("?");
    let names: Vec<&str> = users.iter().filter_map(|m| m["name"].as_str()).collect();
    let mut out = vec![Finding::new(
        Level::Ok,
        "loopscope",
        format!("loopscope {version} is a dependency of {}", names.join(", ")),
    )];
    // The binaries' main files: one that installs the recorder is enough.
    let mains: Vec<PathBuf> = users
        .iter()
        .flat_map(|m| m["targets"].as_array().into_iter().flatten())
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["src_path"].as_str().map(PathBuf::from))
        .collect();
    let installs = |p: &PathBuf| {
        std::fs::read_to_string(p).is_ok_and(|s| s.contains("loopscope::main") || s.contains("loopscope::Session"))
    };
    out.push(match mains.iter().find(|p| installs(p)) {
        Some(p) => Finding::new(Level::Ok, "recorder", format!("{} installs the recorder", p.display())),
        None if mains.is_empty() => Finding::new(
            Level::Warn,
            "recorder",
            "no binary in the packages that depend on loopscope: the program to profile must install the recorder \
             (`#[loopscope::main]` or `loopscope::Session::from_env()`)",
        ),
        None => Finding::new(
            Level::Warn,
            "recorder",
            format!(
                "{} mentions neither `loopscope::main` nor `loopscope::Session`: replace `#[tokio::main]` with \
                 `#[loopscope::main]`, or the program records nothing",
                mains.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        ),
    });
    out
}

/// The cargo configuration files that apply to a build started in the project's directory:
/// `.cargo/config.toml` (or `.cargo/config`) there and in every directory above, and in
/// `$CARGO_HOME`.
struct ConfigFiles {
    files: Vec<(PathBuf, toml::Table)>,
}

impl ConfigFiles {
    fn load(project_dir: &Path) -> Result<ConfigFiles, Failure> {
        let dir = project_dir.canonicalize().unwrap_or_else(|_| project_dir.to_path_buf());
        let mut dirs: Vec<PathBuf> = dir.ancestors().map(|d| d.join(".cargo")).collect();
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
        if let Some(home) = home
            && !dirs.contains(&home)
        {
            dirs.push(home);
        }
        let mut files = Vec::new();
        for d in dirs {
            for name in ["config.toml", "config"] {
                let path = d.join(name);
                if path.is_file() {
                    files.push((path.clone(), read_toml(&path)?));
                    break;
                }
            }
        }
        Ok(ConfigFiles { files })
    }

    /// `key` (a dotted path) in each file that sets it.
    fn values<'a>(&'a self, key: &'a [&'a str]) -> impl Iterator<Item = (&'a Path, &'a toml::Value)> + 'a {
        self.files.iter().filter_map(move |(path, table)| {
            let (last, head) = key.split_last()?;
            let mut t = table;
            for k in head {
                t = t.get(*k)?.as_table()?;
            }
            Some((path.as_path(), t.get(*last)?))
        })
    }
}

/// Flags of a rustflags value: an array of strings, or one string split at spaces.
fn flags_of(v: &toml::Value) -> Vec<String> {
    match v {
        toml::Value::String(s) => s.split_whitespace().map(String::from).collect(),
        toml::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

/// Whether flags hold `--cfg tokio_unstable` (or `--cfg=tokio_unstable`).
fn has_cfg(flags: &[String]) -> bool {
    flags.iter().enumerate().any(|(i, f)| {
        f == "--cfg=tokio_unstable" || (f == "--cfg" && flags.get(i + 1).is_some_and(|n| n == "tokio_unstable"))
    })
}

/// Where the build's rustflags come from, in cargo's order: the first source set wins
/// (`CARGO_ENCODED_RUSTFLAGS`, `RUSTFLAGS`, `target.*.rustflags`, `build.rustflags`).
fn check_cfg(configs: &ConfigFiles, project_dir: &Path) -> Finding {
    let check = "tokio_unstable";
    let env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    let config_file = project_dir.join(".cargo/config.toml");
    let fix_env = |var: &str| {
        format!(
            "{var} is set in the environment and replaces the rustflags of cargo's configuration: add `--cfg tokio_unstable` to it, or unset it"
        )
    };
    if let Some(v) = env("CARGO_ENCODED_RUSTFLAGS") {
        let flags: Vec<String> = v.split('\x1f').map(String::from).collect();
        return if has_cfg(&flags) {
            Finding::new(Level::Ok, check, "--cfg tokio_unstable is set by CARGO_ENCODED_RUSTFLAGS")
        } else {
            Finding::new(Level::Error, check, fix_env("CARGO_ENCODED_RUSTFLAGS"))
        };
    }
    if let Some(v) = env("RUSTFLAGS") {
        let flags: Vec<String> = v.split_whitespace().map(String::from).collect();
        return if has_cfg(&flags) {
            Finding::new(Level::Ok, check, "--cfg tokio_unstable is set by RUSTFLAGS")
        } else {
            Finding::new(Level::Error, check, fix_env("RUSTFLAGS"))
        };
    }
    // target.<triple or cfg>.rustflags, from the files and CARGO_TARGET_<TRIPLE>_RUSTFLAGS.
    let mut target: Vec<(String, Vec<String>)> = Vec::new();
    for (path, table) in &configs.files {
        for (key, t) in table.get("target").and_then(toml::Value::as_table).into_iter().flatten() {
            if let Some(v) = t.get("rustflags") {
                target.push((format!("target.{key}.rustflags in {}", path.display()), flags_of(v)));
            }
        }
    }
    for (var, v) in std::env::vars() {
        if var.starts_with("CARGO_TARGET_") && var.ends_with("_RUSTFLAGS") {
            target.push((var, v.split_whitespace().map(String::from).collect()));
        }
    }
    let mut build: Vec<(String, Vec<String>)> = configs
        .values(&["build", "rustflags"])
        .map(|(path, v)| (format!("build.rustflags in {}", path.display()), flags_of(v)))
        .collect();
    if let Some(v) = env("CARGO_BUILD_RUSTFLAGS") {
        build.push(("CARGO_BUILD_RUSTFLAGS".into(), v.split_whitespace().map(String::from).collect()));
    }
    let setting = |sources: &[(String, Vec<String>)]| sources.iter().find(|(_, f)| has_cfg(f)).map(|(s, _)| s.clone());
    let missing = format!(
        "add `{CFG_FIX}` under `[build]` in {}, or build with RUSTFLAGS=\"--cfg tokio_unstable\"",
        config_file.display()
    );
    match (setting(&target), setting(&build)) {
        (Some(source), _) => Finding::new(Level::Ok, check, format!("--cfg tokio_unstable is set by {source}")),
        (None, Some(source)) if !target.is_empty() => Finding::new(
            Level::Warn,
            check,
            format!(
                "--cfg tokio_unstable is set by {source}, but {} replaces build.rustflags where it applies: add the cfg \
                 there too",
                target[0].0
            ),
        ),
        (None, Some(source)) => Finding::new(Level::Ok, check, format!("--cfg tokio_unstable is set by {source}")),
        (None, None) => Finding::new(
            Level::Error,
            check,
            format!("--cfg tokio_unstable is not set, so loopscope does not build: {missing}"),
        ),
    }
}

/// The settings of the profile that will be profiled that decide what a stall report can name.
struct Profile {
    name: String,
    /// (value, where it was set); `None`: the default.
    debug: Option<(toml::Value, String)>,
    strip: Option<(toml::Value, String)>,
    split: Option<(toml::Value, String)>,
    /// The built-in profile it derives from (`dev` or `release`).
    base: &'static str,
}

impl Profile {
    /// The profile's settings from the workspace's Cargo.toml, cargo's configuration files and
    /// `CARGO_PROFILE_<NAME>_*`, following `inherits`; later sources win, as in cargo.
    fn resolve(name: &str, manifest: &toml::Table, configs: &ConfigFiles) -> Profile {
        // The profile and the ones it inherits from, down to dev or release.
        let mut chain = vec![name.to_string()];
        while chain.len() < 16 {
            let last = chain.last().map_or("dev", String::as_str);
            let parent = match last {
                "dev" | "release" => break,
                "test" => Some("dev".to_string()),
                "bench" => Some("release".to_string()),
                _ => Self::lookup(last, "inherits", manifest, configs).and_then(|(v, _)| v.as_str().map(String::from)),
            };
            match parent {
                Some(p) if !chain.contains(&p) => chain.push(p),
                _ => break,
            }
        }
        let base = if chain.last().is_some_and(|p| p == "release") { "release" } else { "dev" };
        let get = |key: &str| chain.iter().find_map(|p| Self::lookup(p, key, manifest, configs));
        Profile {
            name: name.to_string(),
            debug: get("debug"),
            strip: get("strip"),
            split: get("split-debuginfo"),
            base,
        }
    }

    /// `[profile.NAME] key`: from `CARGO_PROFILE_NAME_KEY`, else the configuration files (nearest
    /// first), else the manifest.
    fn lookup(
        profile: &str,
        key: &str,
        manifest: &toml::Table,
        configs: &ConfigFiles,
    ) -> Option<(toml::Value, String)> {
        let var = format!(
            "CARGO_PROFILE_{}_{}",
            profile.to_uppercase().replace('-', "_"),
            key.to_uppercase().replace('-', "_")
        );
        if let Ok(v) = std::env::var(&var) {
            let value = match v.as_str() {
                "true" => toml::Value::Boolean(true),
                "false" => toml::Value::Boolean(false),
                _ => v.parse::<i64>().map_or_else(|_| toml::Value::String(v.clone()), toml::Value::Integer),
            };
            return Some((value, var));
        }
        let keys = ["profile", profile, key];
        if let Some((path, v)) = configs.values(&keys).next() {
            return Some((v.clone(), path.display().to_string()));
        }
        let v = manifest.get("profile")?.as_table()?.get(profile)?.as_table()?.get(key)?;
        Some((v.clone(), "Cargo.toml".into()))
    }

    fn check(&self, manifest: &Path, target_dir: &Path, binary: &str) -> Vec<Finding> {
        let section = format!("[profile.{}] in {}", self.name, manifest.display());
        let said = |v: &Option<(toml::Value, String)>, key: &str| match v {
            Some((v, from)) if from == "Cargo.toml" => format!("{key} = {v}"),
            Some((v, from)) => format!("{key} = {v} (from {from})"),
            None => format!("{key} not set (the default)"),
        };
        let mut out = Vec::new();

        // Line tables: anything but none.
        let lines = match &self.debug {
            None => self.base == "dev",
            Some((toml::Value::Boolean(b), _)) => *b,
            Some((toml::Value::Integer(n), _)) => *n > 0,
            Some((toml::Value::String(s), _)) => matches!(s.as_str(), "line-tables-only" | "limited" | "full"),
            Some(_) => false,
        };
        let debug_said = said(&self.debug, "debug");
        out.push(if lines {
            Finding::new(Level::Ok, "debug", format!("{debug_said}: stall reports name file:line"))
        } else {
            Finding::new(
                Level::Warn,
                "debug",
                format!(
                    "{debug_said}: no line tables, so stall reports name functions but no lines: add \
                     `debug = \"line-tables-only\"` under {section}"
                ),
            )
        });

        // Split debug information: not in the binary.
        let profile_dir = match self.name.as_str() {
            "dev" | "test" => "debug".to_string(),
            "bench" => "release".to_string(),
            n => n.to_string(),
        };
        let split = self.split.as_ref().and_then(|(v, _)| v.as_str().map(String::from));
        let split_said = said(&self.split, "split-debuginfo");
        out.push(match split.as_deref() {
            Some("packed") if lines => Finding::new(
                Level::Warn,
                "split-debuginfo",
                format!(
                    "{split_said}: the debug information is not in the binary but in {}: the symbolizer reads it from \
                     beside the binary, so copy the .dwp with the binary (or set split-debuginfo = \"off\" under {section})",
                    target_dir.join(&profile_dir).join(format!("{binary}.dwp")).display()
                ),
            ),
            Some("unpacked") if lines => Finding::new(
                Level::Warn,
                "split-debuginfo",
                format!(
                    "{split_said}: the debug information is not in the binary but in .dwo files under {}, which the \
                     symbolizer reads where the build left them: keep that directory beside a copied binary (or set \
                     split-debuginfo = \"off\" under {section})",
                    target_dir.join(&profile_dir).join("deps").display()
                ),
            ),
            Some("off") | None => Finding::new(Level::Ok, "split-debuginfo", format!("{split_said}: debug information in the binary")),
            Some(other) if lines => Finding::new(
                Level::Warn,
                "split-debuginfo",
                format!("{split_said}: unknown value {other:?} (expected \"off\", \"packed\" or \"unpacked\")"),
            ),
            Some(_) => Finding::new(Level::Ok, "split-debuginfo", format!("{split_said} (no debug information to split)")),
        });

        // Stripping: symbols lose the function names too.
        let strip = match &self.strip {
            None => "none".to_string(),
            Some((toml::Value::Boolean(true), _)) => "symbols".to_string(),
            Some((toml::Value::Boolean(false), _)) => "none".to_string(),
            Some((v, _)) => v.as_str().unwrap_or("?").to_string(),
        };
        let strip_said = said(&self.strip, "strip");
        out.push(match strip.as_str() {
            "symbols" => Finding::new(
                Level::Error,
                "strip",
                format!(
                    "{strip_said}: the binary loses its symbols, so stall reports can name neither a function nor a \
                     line: remove it or set `strip = \"none\"` under {section}"
                ),
            ),
            "debuginfo" if lines => Finding::new(
                Level::Warn,
                "strip",
                format!(
                    "{strip_said}: removes the line tables `debug` asks for, so stall reports name functions but no \
                     lines: set `strip = \"none\"` under {section}"
                ),
            ),
            "none" | "debuginfo" => Finding::new(Level::Ok, "strip", format!("{strip_said}: symbols kept")),
            other => Finding::new(
                Level::Warn,
                "strip",
                format!("{strip_said}: unknown value {other:?} (expected \"none\", \"debuginfo\" or \"symbols\")"),
            ),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cfg_is_found_in_every_spelling() {
        let f = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(has_cfg(&f("--cfg tokio_unstable")));
        assert!(has_cfg(&f("-C debuginfo=1 --cfg=tokio_unstable")));
        assert!(!has_cfg(&f("--cfg tokio_unstable_x")));
        assert!(!has_cfg(&f("tokio_unstable --cfg")));
        assert_eq!(major_minor("1.54.1"), Some((1, 54)));
        assert_eq!(major_minor("1.9.0-alpha.1"), Some((1, 9)));
        assert!(major_minor("1.9.0").unwrap() < TOKIO_MIN);
    }
}
