//! Stalls as every reader sees them: which frame of a stack is the program's blocking line, what
//! the stack says about the category, and how a stall's begin, further looks and end pair up.
//!
//! The recorder writes what it saw: the kernel's view of the stuck thread (system call, CPU share)
//! and raw stacks. Readers symbolize the stacks ([`crate::resolve`]) and then, here, name the
//! blocking site ([`attribute`]), refine the category from the stack ([`refine`]) and follow each
//! stall to its end with a [`StallTracker`], which keeps the most telling of its looks. The report,
//! the exports, the TUI, the gate and the fleet exporters all use this one model.

use std::collections::HashMap;

use crate::model::{Event, StackFrame, Stall, StallCategory};

/// Source paths of code that is not the program's own: std, dependencies, loopscope itself.
pub const LIBRARY_PATHS: &[&str] = &[
    "/rustc/",
    "/rust/deps/",
    "/lib/rustlib/src/rust/",
    "/registry/src/",
    "/git/checkouts/",
    "crates/loopscope/src/",
    "crates/loopscope-core/src/",
];

/// Crates whose functions are library code, for frames known only by their symbol (a release
/// build without line tables, where no source path tells a dependency from the program): std, the
/// runtime, and the libraries async programs commonly block in or run under.
pub const LIBRARY_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "tokio",
    "tokio_util",
    "tokio_stream",
    "futures",
    "futures_util",
    "futures_core",
    "futures_executor",
    "futures_channel",
    "mio",
    "hyper",
    "hyper_util",
    "h2",
    "http",
    "http_body",
    "tower",
    "tower_service",
    "tower_http",
    "axum",
    "tonic",
    "reqwest",
    "rustls",
    "tokio_rustls",
    "native_tls",
    "openssl",
    "serde",
    "serde_json",
    "tracing",
    "tracing_core",
    "tracing_subscriber",
    "bytes",
    "parking_lot",
    "parking_lot_core",
    "crossbeam",
    "crossbeam_channel",
    "crossbeam_utils",
    "rayon",
    "rayon_core",
    "loopscope",
    "loopscope_core",
    "backtrace",
    "libc",
    "hashbrown",
    "sqlx",
    "redis",
    "tungstenite",
    "tokio_tungstenite",
    "warp",
    "actix_rt",
    "actix_web",
    "quanta",
    "dashmap",
    "socket2",
    "want",
    "slab",
    "once_cell",
    "log",
    "env_logger",
    "async_trait",
    "pin_project",
    "pin_project_lite",
];

/// Whether a function known only by its name is library code: a C symbol (no `::` path), or a
/// function of one of the [`LIBRARY_CRATES`].
fn library_symbol(function: &str) -> bool {
    let name = function.trim_start_matches(['<', '&']).trim_start_matches("mut ").trim_start_matches("dyn ");
    match name.split_once("::") {
        None => true,
        Some((krate, _)) => LIBRARY_CRATES.contains(&krate),
    }
}

/// Whether a frame is library code: in a shared library (libc, the loader), from std, a
/// dependency or loopscope, or without a name at all. A frame with a function name but no source
/// file (a build without line tables) is the program's unless its name is a library's.
pub fn is_library(f: &StackFrame) -> bool {
    match &f.file {
        _ if f.object.is_some() => true,
        Some(file) => LIBRARY_PATHS.iter().any(|p| file.contains(p)),
        None => library_symbol(&f.function),
    }
}

/// The module path of a library source file: `core::ops::function` for
/// `/rustc/<hash>/library/core/src/ops/function.rs`, `tokio::runtime::task::harness` for
/// `.../registry/src/<index>/tokio-1.54.0/src/runtime/task/harness.rs`. `None` for the program's
/// files and paths it cannot read a crate from.
pub fn library_module(file: &str) -> Option<String> {
    let (krate, rest) = if let Some(at) =
        file.find("/library/").filter(|_| file.contains("/rustc/") || file.contains("/rustlib/"))
    {
        file[at + "/library/".len()..].split_once("/src/")?
    } else {
        let at = ["/registry/src/", "/rust/deps/"].iter().find_map(|p| file.find(p).map(|i| i + p.len()))?;
        let mut tail = &file[at..];
        if file[..at].ends_with("/registry/src/") {
            // Past the index directory (`index.crates.io-<hash>/`).
            tail = tail.split_once('/')?.1;
        }
        let (dir, rest) = tail.split_once("/src/")?;
        // `tokio-1.54.0`: the name is what comes before the version.
        let name =
            dir.rsplit_once('-').filter(|(_, v)| v.starts_with(|c: char| c.is_ascii_digit())).map_or(dir, |(n, _)| n);
        (name, rest)
    };
    module_path(krate, rest)
}

/// The module path of one of the program's source files, read from a Cargo layout: the
/// package's directory names the crate (`app/src/handlers/api.rs` is `app::handlers::api`, a
/// binary's `app/src/bin/tool.rs` is `tool`). `None` outside a `src` directory.
pub fn program_module(file: &str) -> Option<String> {
    let parts: Vec<&str> = file.split('/').collect();
    // The innermost directory that roots a crate's sources.
    let at = parts.iter().rposition(|p| matches!(*p, "src" | "examples" | "tests" | "benches"))?;
    let rest = parts[at + 1..].join("/");
    match parts[at] {
        // `app/src/bin/tool.rs` and `app/src/bin/tool/cmd.rs`: the binary `tool`.
        "src" if parts.get(at + 1) == Some(&"bin") && parts.len() > at + 2 => bin_module(&parts[at + 2..]),
        "src" => module_path(parts.get(at.checked_sub(1)?)?, &rest),
        // Each file of `examples/`, `tests/` and `benches/` is a crate of its own.
        _ => bin_module(&parts[at + 1..]),
    }
}

/// The module of a file of a crate rooted at `name.rs` or `name/main.rs` (`parts`: `name.rs`,
/// or `name` and the path below it).
fn bin_module(parts: &[&str]) -> Option<String> {
    match parts {
        [file] => module_path(file.strip_suffix(".rs")?, "main.rs"),
        [name, rest @ ..] => module_path(name, &rest.join("/")),
        [] => None,
    }
}

/// `krate::a::b` for `a/b.rs`, `a/b/mod.rs`; the crate alone for `lib.rs` or `main.rs`.
fn module_path(krate: &str, rest: &str) -> Option<String> {
    if krate.is_empty() || krate.contains('/') {
        return None;
    }
    let mut path = vec![krate.replace('-', "_")];
    let mut parts: Vec<&str> = rest.strip_suffix(".rs")?.split('/').collect();
    if matches!(parts.last(), Some(&("lib" | "mod" | "main"))) {
        parts.pop();
    }
    path.extend(parts.iter().filter(|p| !p.is_empty()).map(|p| p.replace('-', "_")));
    Some(path.join("::"))
}

/// A function's name as debug information gives an inlined call: often bare (`poll`,
/// `{closure#0}`), as the line tables name only the function. Prefixed with its file's module
/// ([`library_module`], [`program_module`]), so that a stack reads `tokio::runtime::task::harness::poll_future`
/// rather than `poll_future`, and the checks that look for a library by name find it.
pub fn qualify(function: String, file: Option<&str>) -> String {
    let bare = !short_name(&function).contains("::") && !function.starts_with('<');
    let module = |file: &str| {
        if LIBRARY_PATHS.iter().any(|p| file.contains(p)) { library_module(file) } else { program_module(file) }
    };
    match file.filter(|_| bare).and_then(module) {
        Some(module) => format!("{module}::{function}"),
        None => function,
    }
}

/// Index of the innermost frame in the program's own code.
pub fn blocking_site(stack: &[StackFrame]) -> Option<usize> {
    stack.iter().position(|f| !is_library(f))
}

/// The frames of the polled task: from the stuck instruction out to tokio's task harness. Frames
/// further out belong to the worker loop, which on a thread that took over a worker from
/// `block_in_place` runs inside a closure defined in `block_in_place` itself.
pub fn task_frames(stack: &[StackFrame]) -> &[StackFrame] {
    let harness = stack.iter().position(|f| f.function.starts_with("tokio::runtime::task::"));
    &stack[..harness.unwrap_or(stack.len())]
}

/// Whether a library frame's function (std, tokio, libc, ...) contains `needle`; the program's
/// own functions never count, whatever they are called.
pub fn in_stack(stack: &[StackFrame], needle: &str) -> bool {
    stack.iter().any(|f| is_library(f) && f.function.contains(needle))
}

/// Whether the stalled poll was inside `tokio::task::block_in_place`: the worker had been handed
/// over, and blocking there is the fix, not a stall.
pub fn is_block_in_place(stack: &[StackFrame]) -> bool {
    in_stack(task_frames(stack), "block_in_place")
}

/// What the stack says that the kernel's view could not: a nested executor parks on a futex like
/// a lock does, a resolver's queries look like any other socket I/O, and a thread copying a large
/// buffer inside `write` is "running" to the kernel, like one that computes.
pub fn refine(category: StallCategory, stack: &[StackFrame]) -> StallCategory {
    let task = task_frames(stack);
    // The library frames between the stuck instruction and the program's own code.
    let calls = &stack[..blocking_site(stack).unwrap_or(stack.len())];
    let called = |needle: &str| calls.iter().any(|f| f.function.contains(needle));
    if in_stack(task, "getaddrinfo") || in_stack(task, "to_socket_addrs") {
        StallCategory::Dns
    } else if category == StallCategory::LockWait && in_stack(task, "block_on") {
        StallCategory::NestedExecutor
    } else if matches!(category, StallCategory::CpuBound | StallCategory::Unknown) && called("std::fs::") {
        StallCategory::FileIo
    } else if matches!(category, StallCategory::CpuBound | StallCategory::Unknown) && called("std::net::") {
        StallCategory::NetworkIo
    } else {
        category
    }
}

/// How much a category says about what blocked the poll, for choosing among several looks at
/// one stall: a named blocking call beats the kernel's plain view of a thread (waiting on a
/// futex, computing), which beats not knowing. A poll seen once in a resolver and once in the
/// loop around it was blocked by name resolution.
pub fn evidence(c: StallCategory) -> u8 {
    match c {
        StallCategory::Dns | StallCategory::NestedRuntime => 4,
        StallCategory::NestedExecutor | StallCategory::FileIo | StallCategory::NetworkIo => 3,
        StallCategory::SyncSleep | StallCategory::LockWait => 2,
        StallCategory::CpuBound | StallCategory::Preempted => 1,
        StallCategory::Unknown => 0,
    }
}

/// The program's line in a stack: the innermost frame of the program's own code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramLine {
    /// `file:line`, or the function's name when the build has no line tables.
    pub line: Option<String>,
    /// The function there.
    pub function: Option<String>,
    /// What it called (the frame just inside it).
    pub call: Option<String>,
}

/// The program's line in a symbolized stack (all `None` when every frame is a library's).
pub fn program_line(stack: &[StackFrame]) -> ProgramLine {
    match blocking_site(stack) {
        None => ProgramLine::default(),
        Some(i) => ProgramLine {
            line: stack[i].location().or_else(|| Some(stack[i].function.clone())),
            function: Some(stack[i].function.clone()),
            call: i.checked_sub(1).map(|c| stack[c].function.clone()),
        },
    }
}

/// Names a stall's blocking site, function and call from its symbolized stack and refines its
/// category. A stall that already names its site (recorded by a loopscope that symbolized in the
/// program) is left as it is.
pub fn attribute(s: &mut Stall) {
    if s.stack.is_empty() || s.blocking_site.is_some() {
        return;
    }
    let at = program_line(&s.stack);
    s.blocking_site = at.line;
    s.blocking_function = at.function;
    s.call = at.call;
    s.category = refine(s.category, &s.stack);
}

/// A function's name as a person reads it in a stack: generic arguments folded (`Vec<T>::push`
/// → `Vec::push`), closures as `{closure}`, and an `async fn`'s state machine
/// (`handler::{async_fn#0}`) shown as the function it belongs to.
pub fn short_name(function: &str) -> String {
    let mut out = String::with_capacity(function.len());
    let mut depth = 0usize;
    for c in function.chars() {
        match c {
            // Generic arguments follow a name or a `::` (turbofish); a `<` elsewhere opens a
            // qualified path (`<T as Trait>::f`), which is kept.
            '<' if depth > 0 || out.ends_with(|p: char| p.is_alphanumeric() || matches!(p, '_' | ':' | '}')) => {
                depth += 1
            }
            '>' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    let out = out.replace("::::", "::").replace("{{closure}}", "{closure}");
    let all: Vec<&str> = out.split("::").collect();
    let mut parts = all.clone();
    parts.retain(|p| !(p.starts_with("{async_fn") || p.starts_with("{async_block") || p.starts_with("{shim")));
    if parts.iter().all(|p| p.is_empty()) {
        // A bare `{async_fn#0}` (an inlined async fn's body): nothing better to call it.
        return all.last().unwrap_or(&"").to_string();
    }
    parts.join("::").trim_end_matches("::").to_string()
}

/// The directory a program's source paths are relative to, found from one absolute path (as debug
/// information gives blocking sites) and the relative paths spawn sites carry: the part of the
/// absolute path before the first directory a relative site path starts with. Shows both kinds
/// of path the same way.
pub fn source_root<'a>(relative: impl IntoIterator<Item = &'a str>, absolute: &str) -> Option<String> {
    if !absolute.starts_with('/') {
        return None;
    }
    relative.into_iter().filter(|f| !f.starts_with('/') && !f.starts_with('<')).find_map(|f| {
        let first = f.split('/').next().filter(|c| !c.is_empty() && *c != "." && *c != "..")?;
        let at = absolute.find(&format!("/{first}/"))?;
        Some(absolute[..=at].to_string())
    })
}

/// Where a stall's cause lies, for keeping host noise apart from the program's faults (in this
/// order in every list: the program's first, the host's last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// At a line of the program's own code: a fault to fix.
    Program,
    /// Blocked, but no line of the program could be named (every frame in the runtime or a
    /// library, or no stack).
    Unattributed,
    /// The host held the worker up (it was runnable but not running), or the watchdog itself
    /// could not run in time to look (a late stall with nothing captured): never a program fault.
    Host,
}

impl Origin {
    /// The origin of a stall of `category`, `late` or not, with or without a blocking site.
    pub fn of(category: StallCategory, late: bool, blocking_site: bool) -> Origin {
        if category.is_host() || (late && category == StallCategory::Unknown && !blocking_site) {
            Origin::Host
        } else if blocking_site {
            Origin::Program
        } else {
            Origin::Unattributed
        }
    }

    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Program => "program",
            Origin::Host => "host",
            Origin::Unattributed => "unattributed",
        }
    }
}

/// A stall that ended, with what all its looks and its end said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// As raised (attributed), or with the stack of a later look when it was raised without
    /// one (a thread inside a system call gives its stack when the call returns).
    pub stall: Stall,
    /// Its blocking site when it was raised (what it was grouped under until it ended).
    pub begun_site: Option<String>,
    /// The category it was raised with.
    pub raised: StallCategory,
    /// Its final category: the most telling look, or the category over the whole stall.
    pub category: StallCategory,
    /// How long the poll took, in nanoseconds.
    pub duration_ns: u64,
}

struct Open {
    stall: Stall,
    /// Its blocking site and category when it was raised.
    begun_site: Option<String>,
    raised: StallCategory,
    /// The most telling category seen so far (raised, or a look's).
    best: StallCategory,
}

/// Pairs stalls' begins, looks and ends; bounded.
#[derive(Default)]
pub struct StallTracker {
    open: HashMap<u64, Open>,
    /// Stalls ignored because the poll was in `block_in_place`.
    ignored: Vec<u64>,
    /// Begins not followed because too many stalls were open.
    untracked: u64,
}

impl std::fmt::Debug for StallTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallTracker").field("open", &self.open.len()).field("untracked", &self.untracked).finish()
    }
}

impl Clone for StallTracker {
    fn clone(&self) -> Self {
        StallTracker {
            open: self
                .open
                .iter()
                .map(|(k, o)| {
                    (
                        *k,
                        Open {
                            stall: o.stall.clone(),
                            begun_site: o.begun_site.clone(),
                            raised: o.raised,
                            best: o.best,
                        },
                    )
                })
                .collect(),
            ignored: self.ignored.clone(),
            untracked: self.untracked,
        }
    }
}

impl StallTracker {
    /// Stalls followed at once; more are counted by their begin only.
    pub const MAX_OPEN: usize = 10_000;

    /// Follows a new (attributed) stall; false if it is no stall at all (the poll was inside
    /// `block_in_place`, which hands the worker over first).
    pub fn begin(&mut self, s: &Stall) -> bool {
        if is_block_in_place(&s.stack) {
            if self.ignored.len() < Self::MAX_OPEN {
                self.ignored.push(s.id);
            }
            return false;
        }
        if self.open.len() < Self::MAX_OPEN {
            self.open.insert(
                s.id,
                Open { stall: s.clone(), begun_site: s.blocking_site.clone(), raised: s.category, best: s.category },
            );
        } else {
            self.untracked += 1;
        }
        true
    }

    /// Takes in another look at an open stall (its kernel view and symbolized stack). A stall
    /// raised without a line of the program takes the look's, if it names one.
    pub fn look(&mut self, id: u64, category: StallCategory, stack: &[StackFrame]) {
        if let Some(o) = self.open.get_mut(&id) {
            if o.stall.blocking_site.is_none() && blocking_site(stack).is_some() {
                o.stall.stack = stack.to_vec();
                // The line, function and call from this stack; its category is this look's.
                attribute(&mut o.stall);
                o.stall.category = o.raised;
            }
            let seen = refine(category, stack);
            if evidence(seen) > evidence(o.best) {
                o.best = seen;
            }
        }
    }

    /// Ends a stall; `None` for one not followed (ignored, or never begun). `category` is the
    /// category the recorder judged over the whole stall, if it differs from the live one.
    pub fn end(&mut self, id: u64, duration_ns: u64, category: Option<StallCategory>) -> Option<Closed> {
        if let Some(i) = self.ignored.iter().position(|x| *x == id) {
            self.ignored.swap_remove(i);
            return None;
        }
        let o = self.open.remove(&id)?;
        let raised = o.raised;
        let category = if o.best != raised { o.best } else { category.map_or(raised, |c| refine(c, &o.stall.stack)) };
        Some(Closed { stall: o.stall, begun_site: o.begun_site, raised, category, duration_ns })
    }

    /// Whether a stall is followed and has not ended.
    pub fn is_open(&self, id: u64) -> bool {
        self.open.contains_key(&id)
    }

    /// How many stalls are followed and have not ended.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Stalls begun and not ended, in the order they were raised.
    pub fn open(&self) -> Vec<&Stall> {
        let mut v: Vec<&Stall> = self.open.values().map(|o| &o.stall).collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Begins that could not be followed (more than [`StallTracker::MAX_OPEN`] open at once).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

/// One stall of a whole recording, its begin, looks and end paired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paired {
    /// As raised (attributed).
    pub stall: Stall,
    /// The category it was raised with.
    pub raised: StallCategory,
    /// Its final category.
    pub category: StallCategory,
    /// How long the poll took in all, once it returned (`None`: still blocked when the
    /// recording ended).
    pub duration_ns: Option<u64>,
}

/// Every stall in a recording's events (resolved), in the order raised, paired with its end:
/// what a test or a tool that holds a whole recording wants. Stalls inside `block_in_place` are
/// left out.
pub fn pair(events: &[Event]) -> Vec<Paired> {
    let mut tracker = StallTracker::default();
    let mut out: Vec<Paired> = Vec::new();
    let mut at: HashMap<u64, usize> = HashMap::new();
    for e in events {
        match e {
            Event::StallBegin(s) => {
                if tracker.begin(s) {
                    at.insert(s.id, out.len());
                    out.push(Paired { stall: s.clone(), raised: s.category, category: s.category, duration_ns: None });
                }
            }
            Event::StallLook { id, category, stack, .. } => tracker.look(*id, *category, stack),
            Event::StallEnd { id, duration_ns, category } => {
                if let (Some(c), Some(&i)) = (tracker.end(*id, *duration_ns, *category), at.get(id)) {
                    out[i].category = c.category;
                    out[i].duration_ns = Some(c.duration_ns);
                    out[i].stall = c.stall;
                }
            }
            Event::RecorderError { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_library_names_from_inlined_calls_get_their_module() {
        let rustc = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/ops/function.rs";
        assert_eq!(library_module(rustc).as_deref(), Some("core::ops::function"));
        let tokio =
            "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.0/src/runtime/task/harness.rs";
        assert_eq!(library_module(tokio).as_deref(), Some("tokio::runtime::task::harness"));
        let lib = "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-util-0.7.1/src/lib.rs";
        assert_eq!(library_module(lib).as_deref(), Some("tokio_util"));
        let std_mod = "/rustc/abc/library/std/src/sys/pal/unix/mod.rs";
        assert_eq!(library_module(std_mod).as_deref(), Some("std::sys::pal::unix"));
        // The program's own files, and paths without a crate, stay as they are.
        assert_eq!(library_module("/work/app/src/main.rs"), None);
        assert_eq!(library_module("/rustc/abc/library/weird.rs"), None);

        assert_eq!(qualify("poll_future".into(), Some(tokio)), "tokio::runtime::task::harness::poll_future");
        assert_eq!(qualify("{closure#0}<T>".into(), Some(rustc)), "core::ops::function::{closure#0}<T>");
        // Already qualified, a qualified path, or the program's: unchanged.
        assert_eq!(qualify("tokio::spawn".into(), Some(tokio)), "tokio::spawn");
        assert_eq!(qualify("<T as Future>::poll".into(), Some(tokio)), "<T as Future>::poll");
        assert_eq!(qualify("handle".into(), None), "handle");
        // The program's files, read from a Cargo layout.
        assert_eq!(qualify("handle".into(), Some("/work/app/src/main.rs")), "app::handle");
        assert_eq!(program_module("workloads/sleep-storm/src/lib.rs").as_deref(), Some("sleep_storm"));
        assert_eq!(program_module("/w/app/src/http/mod.rs").as_deref(), Some("app::http"));
        assert_eq!(program_module("src/http/api.rs"), None);
        assert_eq!(program_module("/w/app/src/bin/tool.rs").as_deref(), Some("tool"));
        assert_eq!(program_module("/w/app/src/bin/tool/cmd.rs").as_deref(), Some("tool::cmd"));
        assert_eq!(program_module("/w/app/build.rs"), None);
        // Examples, tests and benches are crates of their own, wherever the tree is.
        assert_eq!(program_module("/home/me/src/app/examples/demo.rs").as_deref(), Some("demo"));
        assert_eq!(program_module("/home/me/src/app/tests/it/main.rs").as_deref(), Some("it"));
        assert_eq!(program_module("/home/me/src/app/src/db.rs").as_deref(), Some("app::db"));
        // Qualified, the frame is found where name checks look for it.
        let f = frame(&qualify("poll_future".into(), Some(tokio)), Some(tokio), 1);
        assert!(task_frames(std::slice::from_ref(&f)).is_empty());
    }

    #[test]
    fn a_bare_async_body_keeps_a_name() {
        assert_eq!(short_name("{async_fn#0}"), "{async_fn#0}");
        assert_eq!(short_name("app::handle::{async_fn#0}"), "app::handle");
    }

    fn frame(function: &str, file: Option<&str>, line: u32) -> StackFrame {
        StackFrame {
            address: 0x1000,
            function: function.into(),
            file: file.map(Into::into),
            line: file.map(|_| line),
            inlined: false,
            object: None,
        }
    }

    fn stall(id: u64, category: StallCategory, stack: Vec<StackFrame>) -> Stall {
        let mut s = Stall::unknown(id, 0, Some(0), 0, 10_000_000, false);
        s.category = category;
        s.stack = stack;
        attribute(&mut s);
        s
    }

    #[test]
    fn the_blocking_site_is_the_innermost_frame_of_the_program() {
        let s = stall(
            1,
            StallCategory::SyncSleep,
            vec![
                frame("clock_nanosleep", None, 0),
                frame("std::thread::sleep", Some("/rustc/abc/library/std/src/thread/mod.rs"), 10),
                frame("app::handler", Some("/home/me/app/src/handler.rs"), 42),
                frame("tokio::runtime::task::harness::poll", Some("/root/.cargo/registry/src/x/tokio/src/h.rs"), 1),
            ],
        );
        assert_eq!(s.blocking_site.as_deref(), Some("/home/me/app/src/handler.rs:42"));
        assert_eq!(s.blocking_function.as_deref(), Some("app::handler"));
        assert_eq!(s.call.as_deref(), Some("std::thread::sleep"));
        assert_eq!(s.category, StallCategory::SyncSleep);
    }

    #[test]
    fn without_line_tables_the_function_is_named() {
        let s = stall(
            1,
            StallCategory::SyncSleep,
            vec![
                frame("std::thread::sleep", None, 0),
                frame("mini_redis::db::Db::set", None, 0),
                frame("tokio::runtime::task::raw::poll", None, 0),
            ],
        );
        assert_eq!(s.blocking_site.as_deref(), Some("mini_redis::db::Db::set"));
        assert_eq!(s.call.as_deref(), Some("std::thread::sleep"));
    }

    #[test]
    fn the_stack_refines_what_the_kernel_saw() {
        let dns = vec![frame("getaddrinfo", None, 0), frame("app::f", Some("src/a.rs"), 3)];
        let mut dns = dns;
        dns[0].object = Some("libc.so.6".into());
        assert_eq!(stall(1, StallCategory::NetworkIo, dns).category, StallCategory::Dns);
        let fs = vec![
            frame("std::fs::read", Some("/rustc/x/library/std/src/fs.rs"), 1),
            frame("app::f", Some("src/a.rs"), 3),
        ];
        assert_eq!(stall(2, StallCategory::CpuBound, fs).category, StallCategory::FileIo);
        let exec = vec![
            frame("futures_executor::local_pool::block_on", Some("/root/.cargo/registry/src/x/f.rs"), 1),
            frame("app::f", Some("src/a.rs"), 3),
        ];
        assert_eq!(stall(3, StallCategory::LockWait, exec).category, StallCategory::NestedExecutor);
    }

    #[test]
    fn a_stall_ends_with_its_most_telling_look_or_its_whole_duration_category() {
        let mut t = StallTracker::default();
        let raised = stall(1, StallCategory::CpuBound, vec![frame("app::f", Some("src/a.rs"), 3)]);
        assert!(t.begin(&raised));
        // A look in a resolver outranks the first sighting's computing.
        let mut resolver = frame("getaddrinfo", None, 0);
        resolver.object = Some("libc.so.6".into());
        t.look(1, StallCategory::NetworkIo, &[resolver, frame("app::f", Some("src/a.rs"), 3)]);
        let closed = t.end(1, 30_000_000, Some(StallCategory::Preempted)).unwrap();
        assert_eq!(
            (closed.raised, closed.category, closed.duration_ns),
            (StallCategory::CpuBound, StallCategory::Dns, 30_000_000)
        );
        // Without a better look, the whole-stall category wins.
        let raised = stall(2, StallCategory::Preempted, vec![]);
        assert!(t.begin(&raised));
        assert_eq!(t.end(2, 1, Some(StallCategory::CpuBound)).unwrap().category, StallCategory::CpuBound);
        // And without either, the raised one.
        assert!(t.begin(&stall(3, StallCategory::SyncSleep, vec![])));
        assert_eq!(t.end(3, 1, None).unwrap().category, StallCategory::SyncSleep);
        assert!(t.end(3, 1, None).is_none(), "ended once");
        assert!(t.open().is_empty());
    }

    #[test]
    fn a_stall_raised_inside_a_system_call_is_named_by_the_look_that_got_its_stack() {
        let mut t = StallTracker::default();
        // Raised while the thread was inside `write`: no stack then.
        assert!(t.begin(&stall(1, StallCategory::CpuBound, vec![])));
        // A look without a program frame changes nothing.
        let mut libc_write = frame("write", None, 0);
        libc_write.object = Some("libc.so.6".into());
        t.look(1, StallCategory::CpuBound, std::slice::from_ref(&libc_write));
        // The stack taken when `write` returned names the line.
        let std_write = frame("std::fs::write", Some("/rustc/abc/library/std/src/fs.rs"), 300);
        t.look(1, StallCategory::CpuBound, &[libc_write, std_write, frame("app::save", Some("src/store.rs"), 7)]);
        let c = t.end(1, 200_000_000, None).unwrap();
        assert_eq!(c.begun_site, None);
        assert_eq!(c.stall.blocking_site.as_deref(), Some("src/store.rs:7"));
        assert_eq!(c.stall.blocking_function.as_deref(), Some("app::save"));
        // Raised as the kernel saw it; ended as the stack says.
        assert_eq!((c.raised, c.category), (StallCategory::CpuBound, StallCategory::FileIo));
    }

    #[test]
    fn block_in_place_is_not_a_stall() {
        let mut t = StallTracker::default();
        let s = stall(
            1,
            StallCategory::SyncSleep,
            vec![
                frame("std::thread::sleep", Some("/rustc/x/library/std/src/thread/mod.rs"), 1),
                frame("app::f", Some("src/a.rs"), 3),
                frame(
                    "tokio::runtime::scheduler::multi_thread::worker::block_in_place",
                    Some("/root/.cargo/registry/src/t/w.rs"),
                    1,
                ),
                frame("tokio::runtime::task::harness::poll", Some("/root/.cargo/registry/src/t/h.rs"), 1),
            ],
        );
        assert!(!t.begin(&s));
        assert!(t.end(1, 5, None).is_none());
    }

    #[test]
    fn the_tracker_is_bounded() {
        let mut t = StallTracker::default();
        for id in 0..(StallTracker::MAX_OPEN as u64 + 5) {
            t.begin(&stall(id, StallCategory::SyncSleep, vec![]));
        }
        assert_eq!(t.open().len(), StallTracker::MAX_OPEN);
        assert_eq!(t.untracked(), 5);
    }

    #[test]
    fn names_read_as_people_write_them() {
        assert_eq!(short_name("alloc::vec::Vec<T,A>::push"), "alloc::vec::Vec::push");
        assert_eq!(short_name("app::handler::{{closure}}"), "app::handler::{closure}");
        assert_eq!(short_name("app::handler::{async_fn#0}"), "app::handler");
        assert_eq!(short_name("<app::Db as core::ops::Drop>::drop"), "<app::Db as core::ops::Drop>::drop");
        assert_eq!(
            short_name("tokio::runtime::task::core::Core<T,S>::poll::{{closure}}"),
            "tokio::runtime::task::core::Core::poll::{closure}"
        );
        assert_eq!(short_name("std::thread::sleep"), "std::thread::sleep");
        assert_eq!(short_name("core::iter::Iterator::collect::<Vec<u8>>"), "core::iter::Iterator::collect");
    }

    #[test]
    fn paths_are_shown_from_the_programs_root() {
        let sites = ["workloads/blocking/src/lib.rs", "<other sites>"];
        assert_eq!(source_root(sites, "/work/main/workloads/blocking/src/lib.rs").as_deref(), Some("/work/main/"));
        assert_eq!(source_root(["src/main.rs"], "/home/me/app/src/db.rs").as_deref(), Some("/home/me/app/"));
        assert_eq!(source_root(["src/main.rs"], "src/db.rs"), None);
        assert_eq!(source_root(["/abs/x.rs"], "/home/me/app/src/db.rs"), None);
    }

    #[test]
    fn origins_keep_the_host_apart() {
        assert_eq!(Origin::of(StallCategory::Preempted, false, true), Origin::Host);
        assert_eq!(Origin::of(StallCategory::Unknown, true, false), Origin::Host);
        assert_eq!(Origin::of(StallCategory::SyncSleep, false, true), Origin::Program);
        assert_eq!(Origin::of(StallCategory::CpuBound, false, false), Origin::Unattributed);
    }
}
