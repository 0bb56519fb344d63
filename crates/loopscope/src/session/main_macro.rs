//! What `#[loopscope::main]` expands to calls into here.
//!
//! This runs inside the profiled program: it never panics on the recorder's account and writes
//! to stderr without `eprintln!` (which would panic on a closed stderr).

use std::future::Future;
use std::io::Write as _;

use crate::Session;

/// Builds the runtime, installs the recorder from the environment, runs `body` to completion and
/// finishes the recording after the runtime has shut down.
///
/// A bad `LOOPSCOPE_*` variable or a recorder that cannot start is reported once on stderr and
/// the program runs unprofiled: loopscope never stops the program it profiles. When the recorder
/// is installed, one line on stderr says what it measures and where it goes, and one more at the
/// end where the recording is (`LOOPSCOPE_QUIET=1` silences both).
pub fn block_on<T, F: Future<Output = T>>(mut builder: tokio::runtime::Builder, body: F) -> T {
    builder.enable_all();
    let session = match Session::from_env() {
        Ok(b) => {
            let measures = b.measures();
            match b.install(&mut builder) {
                Ok(session) if session.is_enabled() => {
                    if !quiet() {
                        say(&format!("loopscope: profiling {measures}: {}", destinations(&session)));
                        if crate::detector::stack::program_has_line_tables() == Some(false) {
                            say(&format!(
                                "loopscope: this binary has no line tables, so stalls will be named by function: {}",
                                loopscope_core::resolve::LINE_TABLES_HINT
                            ));
                        }
                    }
                    Some(session)
                }
                Ok(_) => None,
                Err(e) => {
                    say(&format!("loopscope: not profiling: {e}"));
                    None
                }
            }
        }
        Err(e) => {
            say(&format!("loopscope: not profiling: {e}"));
            None
        }
    };
    // As `#[tokio::main]` does: a runtime that cannot be built is the program's failure, not the
    // recorder's.
    let runtime = builder.build().expect("Failed building the Runtime");
    let out = runtime.block_on(body);
    // Tasks still alive are dropped (and their last polls recorded) before the recording ends.
    drop(runtime);
    if let Some(session) = session {
        let serving = session.serving_at().or_else(|| session.prometheus_at().map(|a| format!("http://{a}/metrics")));
        let path = std::env::var_os("LOOPSCOPE_RECORD").filter(|p| !p.is_empty());
        match session.finish() {
            Ok(Some(report)) if !quiet() => tell(&report, path.as_deref(), serving.as_deref()),
            Ok(_) => {}
            Err(e) => say(&format!("loopscope: the recording did not finish cleanly: {e}")),
        }
    }
    out
}

/// One line on stderr; a stderr that cannot be written to is not the program's problem.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where an installed session's data goes: the recording file, the live socket, the Prometheus
/// endpoint, the OTLP collector, as the environment asked.
fn destinations(session: &Session) -> String {
    let mut to = Vec::new();
    if let Some(path) = std::env::var_os("LOOPSCOPE_RECORD").filter(|p| !p.is_empty()) {
        let path = path.to_string_lossy();
        to.push(format!("recording to {path} (read it with `loopscope report {path}` once the program ends)"));
    }
    if let Some(addr) = session.serving_at() {
        to.push(format!("live data served at {addr} (`loopscope tui --attach {addr}`)"));
    }
    if let Some(addr) = session.prometheus_at() {
        to.push(format!("Prometheus figures at http://{addr}/metrics"));
    }
    if let Some(url) = std::env::var_os("LOOPSCOPE_OTLP").filter(|u| !u.is_empty()) {
        to.push(format!("OTLP figures pushed to {}", url.to_string_lossy()));
    }
    to.join("; ")
}

/// `LOOPSCOPE_QUIET=1` (set by `loopscope record`, which prints the whole report) keeps the
/// opening and closing lines off stderr.
fn quiet() -> bool {
    std::env::var_os("LOOPSCOPE_QUIET").is_some_and(|v| v == "1")
}

fn tell(report: &crate::Report, path: Option<&std::ffi::OsStr>, serving: Option<&str>) {
    let stalls: u64 = report.stalls.iter().map(|g| g.count).sum();
    let stalls = match stalls {
        0 => String::new(),
        1 => ", 1 stall".to_string(),
        n => format!(", {n} stalls"),
    };
    let polls = match report.runtime.polls {
        1 => "1 poll".to_string(),
        n => format!("{n} polls"),
    };
    match path {
        Some(path) => {
            let path = path.to_string_lossy();
            say(&format!(
                "loopscope: {polls}{stalls} recorded to {path} (`loopscope report {path}`, `loopscope tui {path}`)"
            ))
        }
        None => say(&format!(
            "loopscope: {polls}{stalls} profiled (served at {}; no recording file)",
            serving.unwrap_or("?")
        )),
    }
}
