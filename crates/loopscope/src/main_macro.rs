//! What `#[loopscope::main]` expands to calls into here.

use std::future::Future;

use crate::Session;

/// Builds the runtime, installs the recorder from the environment, runs `body` to completion and
/// finishes the recording after the runtime has shut down.
///
/// A bad `LOOPSCOPE_*` variable or a recorder that cannot start is reported once on stderr and
/// the program runs unprofiled: loopscope never stops the program it profiles.
pub fn block_on<T, F: Future<Output = T>>(mut builder: tokio::runtime::Builder, body: F) -> T {
    builder.enable_all();
    let session = match Session::from_env().and_then(|b| b.install(&mut builder)) {
        Ok(session) => session.is_enabled().then_some(session),
        Err(e) => {
            eprintln!("loopscope: not profiling: {e}");
            None
        }
    };
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
            Err(e) => eprintln!("loopscope: the recording did not finish cleanly: {e}"),
        }
    }
    out
}

/// `LOOPSCOPE_QUIET=1` (set by `loopscope record`, which prints the whole report) keeps the
/// closing line off stderr.
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
    match path {
        Some(path) => {
            let path = path.to_string_lossy();
            eprintln!(
                "loopscope: {} polls{stalls} recorded to {path} (`loopscope report {path}`, `loopscope tui {path}`)",
                report.runtime.polls
            )
        }
        None => eprintln!(
            "loopscope: {} polls{stalls} profiled (served at {}; no recording file)",
            report.runtime.polls,
            serving.unwrap_or("?")
        ),
    }
}
