//! `loopscope run` and `loopscope report`.

use anyhow::{Context, anyhow};
use loopscope::core::format::Completeness;
use loopscope::{Report, Session, WorkloadResult};

use crate::Failure;
use crate::cli::{ExportArgs, Flavor, ReportArgs, RunArgs, RunOpts, WorkloadCmd};
use crate::progress::Progress;

/// A live view of a run: where the recorder's frames go, and how the view stops the run.
pub struct Live {
    /// The recorder's frames, as they are made.
    pub frames: std::sync::mpsc::SyncSender<loopscope::core::model::Frame>,
    /// Notified when the viewer quits: the workload is dropped and the session finished.
    pub stop: std::sync::Arc<tokio::sync::Notify>,
    /// Where the session's dump handle goes once it is installed (the viewer's `d` key).
    pub dumps: std::sync::Arc<std::sync::Mutex<Option<loopscope::DumpHandle>>>,
}

/// Runs one workload on a fresh runtime under the recorder; returns its report.
pub fn run_workload(opts: &RunOpts, workload: &WorkloadCmd) -> Result<Report, Failure> {
    run_workload_with(opts, workload, None)
}

/// [`run_workload`], optionally watched live.
pub fn run_workload_with(opts: &RunOpts, workload: &WorkloadCmd, live: Option<Live>) -> Result<Report, Failure> {
    if let WorkloadCmd::Chat(cfg) = workload {
        // Say so before starting anything when the clients cannot fit.
        chat::ensure_descriptors(cfg.clients).map_err(|e| Failure::Input(e.into()))?;
    }
    let mut builder = match opts.flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(opts.workers));
            b
        }
    };
    builder.enable_all();
    if let Some(port) = opts.console {
        start_console(port)?;
    }
    let profile = match opts.profile {
        crate::cli::ProfileArg::Full => loopscope::Profile::Full,
        crate::cli::ProfileArg::Lean => loopscope::Profile::Lean,
    };
    let mut session = Session::builder()
        .workload(workload.name())
        .interval(opts.interval)
        .slow_poll_threshold(opts.slow_poll)
        .profile(profile)
        .schedule_latency(profile == loopscope::Profile::Full && !opts.no_schedule_latency)
        .stall_threshold(opts.stall_threshold)
        .stall_detector(!opts.no_stall_detector)
        .dump_when_idle(opts.dump_idle.0)
        .repeat_dumps(opts.repeat_dumps);
    session = match opts.sample_threshold.0 {
        Some(t) => session.sampling(t, loopscope::DEFAULT_SAMPLE_PERIOD, opts.samples_per_second),
        None => session.slow_poll_sampling(false),
    };
    // The report is read back from the recording, where stall stacks are symbolized (the
    // recorder stores addresses only): without --record, a private temporary file.
    let scratch = match &opts.record {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("loopscope-run-")
                .suffix(".loopscope")
                .tempfile()
                .context("creating a temporary recording")
                .map_err(Failure::Run)?,
        ),
    };
    let path =
        opts.record.clone().unwrap_or_else(|| scratch.as_ref().map(|f| f.path().to_path_buf()).unwrap_or_default());
    session = session.record_to(&path);
    if let Some(addr) = &opts.serve {
        session = session.serve(addr.to_string()).serve_public(opts.serve_public);
    }
    if let Some(addr) = &opts.prometheus {
        session = session.prometheus(addr);
    }
    if let Some(url) = &opts.otlp {
        session = session.otlp(url);
    }
    let stop = live.as_ref().map(|l| std::sync::Arc::clone(&l.stop));
    let dumps = live.as_ref().map(|l| std::sync::Arc::clone(&l.dumps));
    if let Some(l) = live {
        session = session.live_frames(l.frames);
    }
    let session = session.install(&mut builder).map_err(|e| Failure::Input(e.into()))?;
    if let Some(d) = dumps {
        *d.lock().unwrap_or_else(|p| p.into_inner()) = session.dump_handle();
    }
    if let Some(at) = session.serving_at() {
        eprintln!("serving live data: loopscope tui --attach {at}");
    }
    if let Some(at) = session.prometheus_at() {
        eprintln!("Prometheus figures at http://{at}/metrics");
    }
    let rt = builder.build().context("building the tokio runtime").map_err(Failure::Run)?;

    // The TUI owns the terminal while it is open: no progress bar then.
    let progress = stop.is_none().then(|| Progress::start(workload.name(), opts.run_for));
    let result: Option<anyhow::Result<WorkloadResult>> = rt.block_on(async {
        let work = async {
            match workload {
                WorkloadCmd::SleepStorm(cfg) => Ok(sleep_storm::run(cfg, opts.run_for, opts.seed).await?),
                WorkloadCmd::Blocking(cfg) => Ok(blocking::run(cfg).await?),
                WorkloadCmd::Hangs(cfg) => Ok(hangs::run(cfg, opts.run_for).await?),
                WorkloadCmd::Scraper(cfg) => Ok(scraper::run(cfg, opts.run_for, opts.seed).await?),
                WorkloadCmd::Chat(cfg) => Ok(chat::run(cfg, opts.run_for, opts.seed).await?),
            }
        };
        match &stop {
            None => Some(work.await),
            Some(stop) => tokio::select! {
                r = work => Some(r),
                () = stop.notified() => None,
            },
        }
    });
    if let Some(p) = progress {
        p.finish();
    }
    drop(rt);

    // `None`: stopped from the TUI before the end; the report covers the run so far.
    let result = result.map(|r| r.with_context(|| format!("workload {} failed", workload.name())));
    if let Some(Ok(w)) = &result {
        session.record_workload(w);
    }
    let in_process = session
        .finish()
        .map_err(|e| Failure::Run(e.into()))?
        .ok_or_else(|| Failure::Run(anyhow!("the recorder was not enabled")))?;
    if let Some(r) = result {
        r.map_err(Failure::Run)?;
    }
    // The recording names the blocking lines; if writing it failed, the recorder's own report
    // (which says so in its errors) is all there is.
    match Report::from_file_with(&path, &mut crate::resolver()) {
        Ok(report) if report.recording.completeness == Completeness::Complete => Ok(report),
        _ => Ok(in_process),
    }
}

/// Serves tokio-console's data for this process (once; later runs in the same process share it).
fn start_console(port: u16) -> Result<(), Failure> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if STARTED.get().is_some() {
        return Ok(());
    }
    // Fail early and clearly if the port is taken; console-subscriber would only log it.
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| Failure::Input(anyhow!("--console {port}: cannot listen on 127.0.0.1:{port}: {e}")))?;
    let layer = console_subscriber::ConsoleLayer::builder().server_addr(([127, 0, 0, 1], port)).spawn();
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|e| Failure::Run(anyhow!("starting console-subscriber: {e}")))?;
    let _ = STARTED.set(());
    eprintln!("tokio-console can attach: tokio-console http://127.0.0.1:{port}");
    Ok(())
}

pub fn run_command(args: &RunArgs) -> Result<(), Failure> {
    if let WorkloadCmd::Blocking(cfg) = &args.workload
        && cfg.scenario == blocking::Which::ALL
    {
        if args.opts.tui {
            return Err(Failure::Input(anyhow!(
                "--tui watches one session; the catalogue runs one per scenario: pick one with --scenario"
            )));
        }
        return crate::catalogue::catalogue_command(&args.opts, cfg.repeat);
    }
    let report = if args.opts.tui {
        crate::tui::run_live(&args.opts, &args.workload)?
    } else {
        run_workload(&args.opts, &args.workload)?
    };
    print_report(&report, args.opts.json, args.opts.top);
    if let Some(path) = &args.opts.record {
        eprintln!("recording written to {}", path.display());
    }
    Ok(())
}

pub fn report_command(args: &ReportArgs) -> Result<(), Failure> {
    let report = Report::from_file_with(&args.file, &mut crate::resolver()).map_err(|e| Failure::Input(e.into()))?;
    if let Completeness::Truncated { at_byte, reason } = &report.recording.completeness {
        eprintln!(
            "warning: {} was cut short at byte {at_byte} ({reason}); {} complete interval{} recovered",
            args.file.display(),
            report.recording.intervals,
            if report.recording.intervals == 1 { "" } else { "s" }
        );
    }
    print_report(&report, args.json, args.top);
    Ok(())
}

/// `loopscope dump --attach ADDR`: asks the program for a task dump and prints it.
pub fn dump_command(args: &crate::cli::DumpArgs) -> Result<(), Failure> {
    // A number of its own, to find its answer among the stream's frames.
    let request = loopscope::core::units::unix_now_ns() ^ (u64::from(std::process::id()) << 32) | 1;
    let frames = loopscope::core::live::request_dump(&args.attach, request, args.timeout)
        .map_err(|e| Failure::Run(anyhow!(e)))?;
    let header = match frames.first() {
        Some(loopscope::core::model::Frame::Header(h)) => h.clone(),
        _ => return Err(Failure::Run(anyhow!("{}: the stream did not start with a header", args.attach))),
    };
    let mut agg = loopscope::core::report::Aggregator::new(header);
    for f in &frames {
        agg.push(f).map_err(|e| Failure::Run(anyhow!("{}: {}", args.attach, e.0)))?;
    }
    let report = agg.report(Completeness::Complete, 0);
    let dump = report.dumps.last().ok_or_else(|| Failure::Run(anyhow!("{}: no dump in the answer", args.attach)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(dump).map_err(|e| Failure::Run(e.into()))?);
    } else {
        print!("{}", loopscope_cli::report_text::render_dump(&report, dump));
    }
    Ok(())
}

pub fn print_report(report: &Report, json: bool, top: usize) {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", loopscope_cli::report_text::render(report, top));
    }
}

pub fn export_command(args: &ExportArgs) -> Result<(), Failure> {
    use loopscope::core::export::{self, ExportError};
    if args.hlog.as_deref().is_some_and(is_stdout) && args.trace.as_deref().is_some_and(is_stdout) {
        return Err(Failure::Input(anyhow!("--hlog and --trace cannot both write to standard output")));
    }
    let open = || loopscope::core::format::Reader::open(&args.file).map_err(|e| Failure::Input(e.into()));
    let failed = |e: ExportError| match e {
        ExportError::Write(_) => Failure::Run(e.into()),
        _ => Failure::Input(e.into()),
    };
    let cut_short = |intervals: u64| {
        eprintln!(
            "warning: {} was cut short; everything in its {intervals} complete intervals was exported",
            args.file.display()
        )
    };
    if let Some(path) = &args.hlog {
        let reader = open()?;
        let stats = write_export(path, "--hlog", |out| export::write_hlog(reader, out).map_err(failed))?;
        if stats.truncated {
            cut_short(stats.intervals);
        }
        if !is_stdout(path) {
            eprintln!(
                "{} histograms from {} intervals written to {}",
                stats.histograms,
                stats.intervals,
                path.display()
            );
        }
    }
    if args.folded.is_some() || args.flamegraph.is_some() {
        let what = match args.of {
            crate::cli::FoldedOf::Samples => export::Folded::Samples,
            crate::cli::FoldedOf::Stalls => export::Folded::Stalls,
        };
        let mut lines = Vec::new();
        let stats = export::write_folded(open()?, &mut crate::resolver(), what, &mut lines).map_err(failed)?;
        if stats.truncated {
            eprintln!("warning: {} was cut short; everything before the cut was exported", args.file.display());
        }
        let (unit, none) = match what {
            export::Folded::Samples => ("samples", "no slow-poll samples (is sampling on? `--sample-threshold`)"),
            export::Folded::Stalls => ("stalls", "no stalls with a stack"),
        };
        if stats.stacks == 0 {
            eprintln!("note: {} has {none}", args.file.display());
        }
        if let Some(path) = &args.folded {
            write_export(path, "--folded", |out| out.write_all(&lines).map_err(|e| Failure::Run(e.into())))?;
            if !is_stdout(path) {
                eprintln!("{} stacks of {} {unit} written to {}", stats.stacks, stats.events, path.display());
            }
        }
        if let Some(path) = &args.flamegraph {
            write_export(path, "--flamegraph", |out| crate::flame::draw(&lines, what, &args.file, out))?;
            if !is_stdout(path) {
                eprintln!("flame graph of {} {unit} written to {}", stats.events, path.display());
            }
        }
    }
    if let Some(path) = &args.trace {
        let reader = open()?;
        let stats = write_export(path, "--trace", |out| {
            export::write_trace(reader, &mut crate::resolver(), out).map_err(failed)
        })?;
        if stats.truncated {
            cut_short(stats.intervals);
        }
        if !is_stdout(path) {
            let unfinished = if stats.unfinished > 0 {
                format!(" ({} still running when it ended)", stats.unfinished)
            } else {
                String::new()
            };
            eprintln!(
                "{} stalls{unfinished} and {} intervals of counters written to {}",
                stats.stalls,
                stats.intervals,
                path.display()
            );
        }
    }
    Ok(())
}

fn is_stdout(path: &std::path::Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens `path` (`-`: standard output) and runs `write` on it; `flag` names the path in errors.
fn write_export<T>(
    path: &std::path::Path,
    flag: &str,
    write: impl FnOnce(&mut Box<dyn std::io::Write + '_>) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let mut out: Box<dyn std::io::Write + '_> = if is_stdout(path) {
        Box::new(std::io::stdout().lock())
    } else {
        let file =
            std::fs::File::create(path).map_err(|e| Failure::Input(anyhow!("{flag} {}: {e}", path.display())))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let stats = write(&mut out)?;
    out.flush().map_err(|e| Failure::Run(anyhow!("writing {}: {e}", path.display())))?;
    Ok(stats)
}
