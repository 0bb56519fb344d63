//! How the TUI copes with a large session: 10,000 spawn sites over 600 intervals, synthetic but
//! built from real histograms. Prints the time to compute a window's figures and to render each
//! view (at 160x48 into an off-screen buffer), and the time per row step when scrolling. Every
//! interval also has 100 slow-poll samples (the recorder's budget a second) at 100 distinct
//! symbolized stacks of 40 frames, over 2,000 lines of the program, and span histograms for the
//! active sites: the hot-lines views' data.
//!
//!   cargo run --release -p loopscope-tui --example scale [SITES] [INTERVALS] [--no-samples]

use std::time::{Duration, Instant};

use loopscope_core::dist::DistAcc;
use loopscope_core::model::{
    Frame, Gauges, Header, Interval, SampledStack, Samples, SiteDecl, SiteInterval, SpanDecl, SpanInterval, StackFrame,
    StallCategory,
};
use loopscope_tui::app::{Action, View};
use loopscope_tui::{App, Source, Timeline};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sites = args.first().copied().unwrap_or(10_000);
    let intervals = args.get(1).copied().unwrap_or(600);
    let sampled = !std::env::args().any(|a| a == "--no-samples");
    let mut t = Timeline::default();
    t.push(Frame::Header(Header {
        format_version: 1,
        loopscope_version: "scale".into(),
        flavor: loopscope_core::model::Flavor::MultiThread,
        workers: 2,
        host: "bench".into(),
        pid: 1,
        start_unix_ns: 0,
        command_line: vec![],
        workload: None,
        interval_ns: 1_000_000_000,
        slow_poll_ns: 100_000,
        schedule_latency: true,
        stall_threshold_ns: Some(10_000_000),
    }));
    t.push(Frame::Sites(
        (0..sites as u32)
            .map(|id| SiteDecl { id, file: format!("src/module_{}.rs", id / 100), line: id % 100 + 1, column: 5 })
            .collect(),
    ));
    t.push(Frame::Spans(
        (0..8u32)
            .map(|id| SpanDecl {
                id,
                name: format!("span_{id}"),
                target: "app::handlers".into(),
                file: None,
                line: None,
            })
            .collect(),
    ));
    let built = Instant::now();
    // A tenth of the sites are active in each interval, each with a few hundred polls.
    let mut rng = 1u64;
    for i in 0..intervals as u64 {
        let samples = Samples {
            interval: i,
            threshold_ns: 1_000_000,
            period_ns: 1_000_000,
            stacks: (0..100u64)
                .map(|k| {
                    let line = (i * 7 + k * 13) % 2_000;
                    SampledStack {
                        site: Some(((i as usize * 37 + k as usize * 10) % sites) as u32),
                        category: StallCategory::CpuBound,
                        count: 1,
                        frames: (0..40).map(|f| 0x10_0000 + line * 64 + f).collect(),
                        stack: stack(line),
                        spans: vec![(k % 8) as u32],
                    }
                })
                .collect(),
            dropped: 0,
            skipped: 0,
        };
        if sampled {
            t.push(Frame::Samples(Box::new(samples)));
        }
        let mut list = Vec::new();
        for k in 0..sites / 10 {
            let id = ((i as usize * 37 + k * 10) % sites) as u32;
            let (mut poll, mut sched) = (DistAcc::new(), DistAcc::new());
            for _ in 0..64 {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                poll.record_n_ns(1_000 + (rng >> 40) % 100_000, 4);
                sched.record_n_ns(2_000 + (rng >> 20) % 500_000, 4);
            }
            list.push(SiteInterval {
                site: id,
                spawned: 2,
                finished: 1,
                slow_polls: 3,
                poll: poll.to_dist(),
                sched: sched.to_dist(),
            });
        }
        t.push(Frame::Interval(Box::new(Interval {
            index: i,
            start_ns: i * 1_000_000_000,
            end_ns: (i + 1) * 1_000_000_000,
            sites: list,
            workers: vec![],
            gauges: Gauges { alive_tasks: 100_000, ..Gauges::default() },
            lag: DistAcc::new().to_dist(),
            stall_tally: vec![],
            panics: vec![],
            spans: (0..if sampled { (sites / 10).min(1_000) } else { 0 })
                .map(|k| {
                    let mut d = DistAcc::new();
                    d.record_n_ns(50_000 + k as u64 * 10, 16);
                    SpanInterval {
                        site: ((i as usize * 37 + k * 10) % sites) as u32,
                        span: (k % 8) as u32,
                        poll: d.to_dist(),
                    }
                })
                .collect(),
        })));
    }
    println!(
        "building the timeline (digesting samples): {:>6.0} ms, peak RSS {} MB",
        ms(built.elapsed()),
        peak_rss_mb()
    );
    let mut app = App::new(t, Source::Replay("scale".into()));
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed()
    };
    let whole = time(&mut || {
        app.stats();
    });
    println!("{sites} sites, {intervals} intervals");
    println!("window figures, whole run:         {:>8.1} ms", ms(whole));
    app.apply(Action::Step(-1));
    let step = time(&mut || {
        app.stats();
    });
    println!("window figures after a step back:  {:>8.1} ms", ms(step));
    app.apply(Action::CycleSpan);
    let last1 = time(&mut || {
        app.stats();
    });
    println!("window figures, last 1 s:          {:>8.1} ms", ms(last1));
    app.apply(Action::Last);
    app.apply(Action::CycleSpan);
    app.apply(Action::CycleSpan);
    app.apply(Action::CycleSpan); // back to the whole run
    app.stats();
    // A live session: one more interval arrives and the whole-run window grows by it.
    app.cursor = None;
    let next = app.timeline.intervals.back().cloned().unwrap();
    let mut grown = next.clone();
    grown.index += 1;
    grown.start_ns += 1_000_000_000;
    grown.end_ns += 1_000_000_000;
    app.timeline.push(Frame::Interval(Box::new(grown)));
    let live = time(&mut || {
        app.stats();
    });
    println!("window figures, one new interval:  {:>8.1} ms", ms(live));
    let mut term = Terminal::new(TestBackend::new(160, 48)).unwrap();
    for view in [View::Overview, View::Sites, View::Stalls, View::HotLines] {
        app.apply(Action::Goto(view));
        term.draw(|f| loopscope_tui::ui::render(f, &mut app)).unwrap();
        let d = time(&mut || {
            term.draw(|f| loopscope_tui::ui::render(f, &mut app)).unwrap();
        });
        println!("render {view:?}: {:>25.2} ms", ms(d));
    }
    app.apply(Action::Goto(View::Sites));
    let rows = app.site_rows().len();
    let steps = 1000.min(rows);
    let scroll = time(&mut || {
        for _ in 0..steps {
            app.apply(Action::Move(1));
            term.draw(|f| loopscope_tui::ui::render(f, &mut app)).unwrap();
        }
    });
    println!("scroll one row and redraw ({rows} rows): {:>6.2} ms per step", ms(scroll) / steps as f64);
    let sort = time(&mut || app.apply(Action::NextSort));
    println!("re-sort {rows} rows:                {:>8.2} ms", ms(sort));
    // A site with samples, from the hot lines view, and one of its lines with its source.
    app.apply(Action::Goto(View::HotLines));
    app.apply(Action::Open);
    for view in [View::Detail, View::LineDetail] {
        term.draw(|f| loopscope_tui::ui::render(f, &mut app)).unwrap();
        let d = time(&mut || {
            term.draw(|f| loopscope_tui::ui::render(f, &mut app)).unwrap();
        });
        println!("render {view:?}: {:>25.2} ms", ms(d));
        app.apply(Action::Open);
    }
    println!("hot lines in the window: {}, peak RSS {} MB", app.hot_rows().len(), peak_rss_mb());
}

/// A symbolized stack of 40 frames through `line` of the program.
fn stack(line: u64) -> Vec<StackFrame> {
    let frame = |function: String, file: String, line: u32| StackFrame {
        address: 0x10_0000,
        function,
        file: Some(file),
        line: Some(line),
        inlined: false,
        object: None,
    };
    let tokio = "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src/runtime/task/harness.rs";
    let mut s: Vec<StackFrame> = (0..10)
        .map(|k| frame(format!("core::slice::sort::stable::quicksort::quicksort_{k}"), format!("/rustc/17067e9ac6d7e98f18d4b8a9e4c8bd2e8b2a0ed6/library/core/src/slice/sort/stable/quicksort_{k}.rs"), 80 + k))
        .collect();
    s.push(frame(
        format!("app::handlers::module_{}::handle::{{{{closure}}}}", line / 100),
        format!("/home/u/app/src/handlers/module_{}.rs", line / 100),
        (line % 100) as u32 + 1,
    ));
    s.extend((0..29).map(|k| {
        frame(format!("tokio::runtime::task::harness::Harness<T,S>::poll_inner_{k}"), tokio.to_string(), 400 + k)
    }));
    s
}

/// The process's peak resident set, in MB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
