//! `loopscope tui FILE` (replay), `--attach ADDR`, `--console URL`, and `loopscope run ... --tui`
//! (live, in-process).

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::anyhow;
use loopscope::Report;
use loopscope::core::format::{Completeness, Recording};
use loopscope::core::live::FeedEvent;
use loopscope_tui::app::Dumper;
use loopscope_tui::term::Feed;
use loopscope_tui::{App, Source, Timeline};

use crate::Failure;
use crate::cli::{RunOpts, TuiArgs, WorkloadCmd};
use crate::run::{Live, run_workload_with};

/// Whether standard input and output are a terminal the TUI can use.
pub fn have_terminal() -> bool {
    std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

pub fn need_terminal(what: &str) -> Result<(), Failure> {
    if have_terminal() {
        Ok(())
    } else {
        Err(Failure::Input(anyhow!("{what} needs a terminal (standard input and output are not one)")))
    }
}

/// `loopscope tui FILE`, `loopscope tui --attach ADDR` and `loopscope tui --console URL`.
pub fn tui_command(args: &TuiArgs) -> Result<(), Failure> {
    let terminal = |e: std::io::Error| Failure::Run(anyhow!("terminal: {e}"));
    if let Some(addr) = &args.attach {
        need_terminal("loopscope tui")?;
        let events = loopscope::core::live::attach(addr.clone());
        return watch_feed(Source::Attached(addr.to_string()), events, Some(attached_dumper(addr.clone())))
            .map_err(terminal);
    }
    if let Some(url) = &args.console {
        need_terminal("loopscope tui")?;
        return watch_feed(Source::Console(url.clone()), loopscope_console::connect(url.clone()), None)
            .map_err(terminal);
    }
    let file = args.file.as_ref().expect("clap requires FILE, --attach or --console");
    let mut resolver = crate::resolver();
    let rec = Recording::read_with(file, &mut resolver).map_err(|e| Failure::Input(e.into()))?;
    need_terminal("loopscope tui")?;
    let cut = match &rec.completeness {
        Completeness::Truncated { at_byte, reason } => {
            Some(format!("recording cut short at byte {at_byte} ({reason})"))
        }
        Completeness::Complete => None,
    };
    let mut app = App::new(Timeline::from_recording(rec), Source::Replay(file.display().to_string()));
    let notes = resolver.notes();
    app.status = cut.or_else(|| notes.first().cloned());
    loopscope_tui::term::run(app, None).map_err(terminal)
}

/// The `d` key of a viewer attached to a program's live socket: a dump request on a connection
/// of its own (the dump comes on the attached stream).
pub fn attached_dumper(addr: loopscope::core::live::ServeAddr) -> Dumper {
    Dumper(Box::new(move || {
        let request = loopscope::core::units::unix_now_ns() | 1;
        loopscope::core::live::ask_dump(&addr, request).map_err(|e| format!("{addr}: {e}"))
    }))
}

/// The TUI on this thread over a session that arrives as feed events (attached, tokio-console),
/// until the user quits.
pub fn watch_feed(
    source: Source,
    events: std::sync::mpsc::Receiver<FeedEvent>,
    dumper: Option<Dumper>,
) -> std::io::Result<()> {
    let timeline = Timeline::with_resolver(crate::resolver());
    let mut app = App::new(timeline, source);
    app.dumper = dumper;
    loopscope_tui::term::run(app, Some(Feed::Attached(events)))
}

/// `loopscope run WORKLOAD --tui`: the workload runs on its runtime in another thread, the TUI
/// on this one; quitting the TUI stops the workload. Returns the run's report.
pub fn run_live(opts: &RunOpts, workload: &WorkloadCmd) -> Result<Report, Failure> {
    need_terminal("--tui")?;
    let (frames, rx) = std::sync::mpsc::sync_channel(4096);
    let stop = Arc::new(tokio::sync::Notify::new());
    let dumps = Arc::new(std::sync::Mutex::new(None::<loopscope::DumpHandle>));
    let live = Live { frames, stop: Arc::clone(&stop), dumps: Arc::clone(&dumps) };
    let (opts, workload) = (opts.clone(), workload.clone());
    let name = workload.name().to_string();
    let runner = std::thread::Builder::new()
        .name("loopscope-workload".into())
        .spawn(move || run_workload_with(&opts, &workload, Some(live)))
        .map_err(|e| Failure::Run(anyhow!("cannot start the workload thread: {e}")))?;
    let mut app = App::new(Timeline::with_resolver(crate::resolver()), Source::Live(name));
    app.dumper = Some(Dumper(Box::new(move || {
        match dumps.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(loopscope::DumpHandle::request) {
            Some(true) => Ok(()),
            Some(false) => Err("one is under way, or the run has ended".into()),
            None => Err("the recorder is not running yet".into()),
        }
    })));
    let ui = loopscope_tui::term::run(app, Some(Feed::Frames(rx)));
    stop.notify_one();
    let report = runner.join().map_err(|_| Failure::Run(anyhow!("the workload thread panicked")))??;
    ui.map_err(|e| Failure::Run(anyhow!("terminal: {e}")))?;
    Ok(report)
}
