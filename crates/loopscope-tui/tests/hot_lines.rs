//! The hot-lines views (a site's hot lines and its spans, a hot line with its source, every site's
//! hot lines) rendered from a recording written here with core's `Writer`: slow-poll samples
//! whose stacks are symbolized already, and poll time per (site, span). Read back as a replay
//! reads a file, rendered into ratatui's `TestBackend` and checked against snapshots
//! (`tests/snapshots/`; rerun with `INSTA_UPDATE=always` and read the diff).

use std::io::Cursor;

use loopscope_core::dist::{Dist, DistAcc};
use loopscope_core::format::{Reader, Recording, Writer};
use loopscope_core::model::*;
use loopscope_tui::app::{Action, View};
use loopscope_tui::{App, Source, Timeline};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
const INTERVALS: u64 = 4;

fn header() -> Header {
    Header {
        format_version: FORMAT_VERSION,
        loopscope_version: "0.1.0".into(),
        flavor: Flavor::MultiThread,
        workers: 1,
        host: "ci-runner".into(),
        pid: 4242,
        // Far in the future: the source excerpt is never flagged as newer than the recording.
        start_unix_ns: 4_000_000_000_000_000_000,
        command_line: vec!["/usr/local/bin/app".into()],
        workload: None,
        interval_ns: 100 * MS,
        slow_poll_ns: MS,
        schedule_latency: true,
        stall_threshold_ns: Some(10 * MS),
    }
}

/// A histogram of `(value_ns, count)` pairs.
fn dist(values: &[(u64, u64)]) -> Dist {
    let mut d = DistAcc::new();
    for &(v, n) in values {
        d.record_n_ns(v, n);
    }
    d.to_dist()
}

fn at(function: &str, file: &str, line: u32) -> StackFrame {
    StackFrame {
        address: 0x5000 + u64::from(line),
        function: function.into(),
        file: Some(file.into()),
        line: Some(line),
        inlined: false,
        object: None,
    }
}

/// Frames outside the program: from the task harness out to the worker thread.
fn runtime_frames() -> Vec<StackFrame> {
    let tokio = "/home/ci/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src";
    vec![
        at("tokio::runtime::task::harness::poll_future", &format!("{tokio}/runtime/task/harness.rs"), 473),
        at(
            "tokio::runtime::scheduler::multi_thread::worker::Context::run",
            &format!("{tokio}/runtime/scheduler/multi_thread/worker.rs"),
            530,
        ),
        at(
            "std::thread::Builder::spawn_unchecked_",
            "/rustc/17067e9ac6d7e98f18d4b8a9e4c8bd2e8b2a0ed6/library/std/src/thread/mod.rs",
            561,
        ),
    ]
}

fn stack(mut inner: Vec<StackFrame>) -> Vec<StackFrame> {
    inner.extend(runtime_frames());
    inner
}

/// A synchronous sleep in `app::db::query` (the fixture's `sleep.rs:6`, readable here).
fn sleeping() -> Vec<StackFrame> {
    stack(vec![
        StackFrame { object: Some("libc.so.6".into()), ..at("clock_nanosleep", "", 0) },
        at("std::thread::sleep", "/rustc/17067e9ac6d7e98f18d4b8a9e4c8bd2e8b2a0ed6/library/std/src/thread/mod.rs", 897),
        at("app::db::query::{{closure}}", "tests/fixtures/sleep.rs", 6),
    ])
}

/// Rendering computes in `app::http::render`, at an absolute path of the machine that recorded.
fn rendering() -> Vec<StackFrame> {
    stack(vec![
        at(
            "serde_json::ser::to_vec",
            "/home/ci/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde_json-1.0.140/src/ser.rs",
            2201,
        ),
        at("app::http::render::{{closure}}", "/home/ci/app/src/render.rs", 120),
    ])
}

/// A background job compresses in `app::jobs::compress`.
fn compressing() -> Vec<StackFrame> {
    stack(vec![at("app::jobs::compress", "/home/ci/app/src/jobs.rs", 57)])
}

fn sampled(site: u32, category: StallCategory, count: u64, stack: Vec<StackFrame>, spans: Vec<u32>) -> SampledStack {
    SampledStack { site: Some(site), category, count, frames: stack.iter().map(|f| f.address).collect(), stack, spans }
}

/// The frames of a server with two spawn sites, in the order a live stream sends them: per
/// interval, the samples, then the interval.
fn frames() -> Vec<Frame> {
    let mut frames = vec![
        Frame::Runtime(RuntimeDecl { flavor: Flavor::MultiThread, workers: 1 }),
        Frame::Sites(vec![
            SiteDecl { id: 0, file: "src/server.rs".into(), line: 88, column: 13 },
            SiteDecl { id: 1, file: "src/jobs.rs".into(), line: 30, column: 5 },
        ]),
        Frame::Spans(vec![
            SpanDecl {
                id: 0,
                name: "request".into(),
                target: "app::http".into(),
                file: Some("src/http.rs".into()),
                line: Some(12),
            },
            SpanDecl { id: 1, name: "query".into(), target: "app::db".into(), file: None, line: None },
        ]),
        Frame::Workers(vec![WorkerDecl { id: 0, index: Some(0), thread_name: "tokio-runtime-worker".into() }]),
    ];
    for i in 0..INTERVALS {
        frames.push(Frame::Samples(Box::new(Samples {
            interval: i,
            threshold_ns: MS,
            period_ns: MS,
            stacks: vec![
                sampled(0, StallCategory::SyncSleep, 6, sleeping(), vec![0, 1]),
                sampled(0, StallCategory::CpuBound, 2, rendering(), vec![0]),
                sampled(1, StallCategory::CpuBound, 3, compressing(), vec![]),
                // Taken without a stack: counted, left out of the shares.
                SampledStack { site: Some(0), category: StallCategory::CpuBound, count: 1, ..SampledStack::default() },
            ],
            dropped: 0,
            skipped: 0,
        })));
        // Site 0: 40 polls of 250 µs and 10 of 3 ms (40 ms); inside `request` 36 ms, inside
        // `query` 20 ms. Site 1: 10 polls of 3 ms.
        let site0 = dist(&[(250 * US, 40), (3 * MS, 10)]);
        let site1 = dist(&[(3 * MS, 10)]);
        frames.push(Frame::Interval(Box::new(Interval {
            index: i,
            start_ns: i * 100 * MS,
            end_ns: (i + 1) * 100 * MS,
            sites: vec![
                SiteInterval {
                    site: 0,
                    spawned: 5,
                    finished: 5,
                    slow_polls: 10,
                    poll: site0.clone(),
                    sched: dist(&[(20 * US, 50)]),
                },
                SiteInterval {
                    site: 1,
                    spawned: 1,
                    finished: 1,
                    slow_polls: 10,
                    poll: site1.clone(),
                    sched: dist(&[(40 * US, 10)]),
                },
            ],
            workers: vec![WorkerInterval {
                worker: 0,
                slow_polls: 20,
                poll: dist(&[(250 * US, 40), (3 * MS, 20)]),
                sched: dist(&[(20 * US, 60)]),
                cpu_ns: 70 * MS,
                run_delay_ns: 0,
                switches: 0,
                preemptions: 0,
            }],
            gauges: Gauges { alive_tasks: 3, local_queues: vec![0], ..Gauges::default() },
            lag: Dist::default(),
            stall_tally: Vec::new(),
            panics: Vec::new(),
            spans: vec![
                SpanInterval { site: 0, span: 0, poll: dist(&[(150 * US, 40), (3 * MS, 10)]) },
                SpanInterval { site: 0, span: 1, poll: dist(&[(2 * MS, 10)]) },
            ],
        })));
    }
    frames.push(Frame::Footer(Footer { end_ns: INTERVALS * 100 * MS, intervals: INTERVALS, errors: Vec::new() }));
    frames
}

/// The recording as a replay opens it: written with the `Writer`, read back with the `Reader`.
fn app() -> App {
    let mut w = Writer::new(Vec::new(), &header()).expect("the header is written");
    for f in frames() {
        w.write(&f).expect("a frame is written");
    }
    let reader = Reader::new(Cursor::new(w.into_inner()), "app.loopscope").expect("a recording");
    let rec = Recording::from_reader(reader, None).expect("it reads");
    assert_eq!(rec.samples.len(), INTERVALS as usize);
    App::new(Timeline::from_recording(rec), Source::Replay("app.loopscope".into()))
}

fn screen(app: &mut App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| loopscope_tui::ui::render(f, app)).unwrap();
    term.backend().to_string()
}

fn both_sizes(name: &str, app: &mut App) {
    insta::assert_snapshot!(format!("{name}_80x24"), screen(app, 80, 24));
    insta::assert_snapshot!(format!("{name}_160x48"), screen(app, 160, 48));
}

/// The screen's line holding `needle`.
fn line_of<'s>(screen: &'s str, needle: &str) -> &'s str {
    screen.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in\n{screen}"))
}

fn open_server_site(a: &mut App) {
    a.apply(Action::Goto(View::Sites));
    a.apply(Action::Open);
    assert_eq!((a.view, a.detail_site), (View::Detail, Some(0)), "the busiest site first");
}

#[test]
fn a_sites_detail_lists_its_hot_lines_and_its_spans() {
    let mut a = app();
    open_server_site(&mut a);
    let s = screen(&mut a, 80, 24);
    // 24 of the site's 32 samples with a stack were at the sleep, 8 in rendering; 24 ms of poll
    // time at one sample a millisecond. The 4 without a stack are counted apart.
    let sleep = line_of(&s, "tests/fixtures/sleep.rs:6");
    assert!(sleep.contains("24") && sleep.contains("75.0%") && sleep.contains("24.0ms"), "{sleep}");
    assert!(sleep.contains("app::db::query"), "{sleep}");
    // Shown from the program's root, as spawn sites are.
    let render = line_of(&s, "src/render.rs:120");
    assert!(render.contains("8") && render.contains("25.0%") && !render.contains("/home/ci"), "{render}");
    assert!(s.contains("Hot lines: 32 samples, 4 without a stack"), "{s}");
    assert!(s.contains("one sample: 1.00ms of a poll running past 1.00ms"), "{s}");
    // The selected line's category, innermost span and call under the table.
    assert!(s.contains("▶ sync-sleep · span app::db::query · calls std::thread::sleep"), "{s}");
    // By span: 36 of 40 ms inside `request`, 20 inside `query`.
    let request = line_of(&s, "app::http::request");
    assert!(request.contains("200") && request.contains("144ms") && request.contains("90.0%"), "{request}");
    let query = line_of(&s, "app::db::query  ");
    assert!(query.contains("40") && query.contains("80.0ms") && query.contains("50.0%"), "{query}");
    assert!(query.contains("2.00ms"), "p50/p99/max of 2 ms: {query}");
    // The histograms gave way; their percentiles stay in the head.
    assert!(s.contains("p99 3.00ms max 3.00ms   sched p50 20.0µs"), "{s}");
    both_sizes("site_hot_lines", &mut a);
    let wide = screen(&mut a, 160, 48);
    assert!(wide.contains("Poll time") && wide.contains("poll p99 per interval"), "room for the histograms: {wide}");
    let sleep = line_of(&wide, "tests/fixtures/sleep.rs:6");
    assert!(
        sleep.contains("sync-sleep") && sleep.contains("std::thread::sleep") && sleep.contains("app::db::query"),
        "{sleep}"
    );
}

#[test]
fn a_hot_line_opens_on_its_source_and_its_stack() {
    let mut a = app();
    open_server_site(&mut a);
    a.apply(Action::Open);
    assert_eq!(a.view, View::LineDetail);
    let s = screen(&mut a, 80, 24);
    assert!(s.contains("▶    6 │         std::thread::sleep(Duration::from_millis(30));"), "{s}");
    assert!(s.contains("24 samples, 75.0% of the site's samples with a stack: 24.0ms"), "{s}");
    assert!(s.contains("▶ app::db::query::{closure}  tests/fixtures/sleep.rs:6"), "the stack: {s}");
    both_sizes("line_detail", &mut a);
    // The next line's file is not on this machine: said so, as the stall detail does.
    a.apply(Action::Back);
    assert_eq!(a.view, View::Detail);
    a.apply(Action::Move(1));
    a.apply(Action::Open);
    let s = screen(&mut a, 160, 48);
    assert!(s.contains("src/render.rs:120  in app::http::render::{closure}"), "{s}");
    assert!(s.contains("(source /home/ci/app/src/render.rs is not readable here)"), "{s}");
    assert!(s.contains("calls serde_json::ser::to_vec   category cpu-bound   span app::http::request"), "{s}");
    // Stepping to a window without the line keeps it shown, as opened.
    a.apply(Action::CycleSpan);
    a.apply(Action::First);
    let s = screen(&mut a, 160, 48);
    assert!(s.contains("2 samples") && !s.contains("as opened"), "the first interval has it: {s}");
}

#[test]
fn the_programs_hot_lines_across_sites_lead_to_their_site() {
    let mut a = app();
    a.apply(Action::Goto(View::HotLines));
    let s = screen(&mut a, 80, 24);
    assert!(s.contains("4 Hot lines"), "a tab of its own: {s}");
    let (sleep, jobs, render) = (
        s.find("tests/fixtures/sleep.rs:6").unwrap(),
        s.find("src/jobs.rs:57").unwrap(),
        s.find("src/render.rs:120").unwrap(),
    );
    assert!(sleep < jobs && jobs < render, "by samples: 24, 12, 8\n{s}");
    let jobs_row = line_of(&s, "src/jobs.rs:57");
    assert!(
        jobs_row.contains("12") && jobs_row.contains("100.0%") && jobs_row.contains("src/jobs.rs:30"),
        "{jobs_row}"
    );
    assert!(s.contains("Hot lines: 44 samples at 3 lines of 2 sites"), "{s}");
    assert!(s.contains("▶ app::db::query::{closure} · sync-sleep · span app::db::query"), "the selected row: {s}");
    both_sizes("hot_lines", &mut a);
    a.apply(Action::Move(1));
    a.apply(Action::Open);
    assert_eq!((a.view, a.detail_site), (View::Detail, Some(1)));
    let s = screen(&mut a, 80, 24);
    assert!(s.contains("src/jobs.rs:30") && line_of(&s, "src/jobs.rs:57").contains("100.0%"), "{s}");
    a.apply(Action::Back);
    assert_eq!(a.view, View::HotLines, "Esc goes back where the site was opened from");
}

#[test]
fn the_window_narrows_the_samples() {
    let mut a = app();
    a.apply(Action::First);
    let top = &a.hot_rows()[0];
    assert_eq!((top.line.as_deref(), top.samples), (Some("tests/fixtures/sleep.rs:6"), 6));
    assert_eq!(a.site_spans(0).iter().map(|s| s.polls).sum::<u64>(), 60);
    a.apply(Action::Last);
    assert_eq!(a.hot_rows()[0].samples, 24);
    assert_eq!(a.site_spans(0).iter().map(|s| s.polls).sum::<u64>(), 240);
    assert!(a.site_spans(1).is_empty());
}

/// A live session grows its window one interval at a time; the sums match a fresh window's.
#[test]
fn a_live_window_grows_to_the_same_figures() {
    let mut a = App::new(Timeline::default(), Source::Live("test".into()));
    a.timeline.push(Frame::Header(header()));
    for f in frames() {
        let interval = matches!(f, Frame::Interval(_));
        a.timeline.push(f);
        if interval {
            a.stats();
        }
    }
    let (hot, spans) = (a.hot_rows().to_vec(), a.site_spans(0));
    let fresh = loopscope_tui::stats::WindowAcc::new(&a.timeline, 0, INTERVALS as usize);
    assert_eq!(hot, fresh.hot_rows(&a.timeline));
    assert_eq!(spans, fresh.site_spans(&a.timeline, 0));
    assert_eq!(a.stats().sampling.samples, 4 * 12);
    assert_eq!(hot[0].samples, 24);
    // The stacks of four intervals are kept once each.
    assert_eq!(a.timeline.stacks.len(), 3);
}

/// On a small terminal the site's detail keeps its top hot line in view, and the span table its
/// spans' names (its p50 and busy columns give way).
#[test]
fn a_small_terminal_keeps_a_hot_line_and_the_span_names() {
    let mut a = app();
    open_server_site(&mut a);
    let s = screen(&mut a, 40, 10);
    assert!(line_of(&s, "24.0ms").contains("75.0%"), "{s}");
    let s = screen(&mut a, 60, 16);
    let header = line_of(&s, "│span ");
    assert!(header.contains("p99") && !header.contains("p50") && !header.contains("busy"), "{s}");
    assert!(line_of(&s, "app::http::request").contains("90.0%"), "{s}");
}

#[test]
fn the_new_views_survive_tiny_terminals_and_empty_data() {
    for (w, h) in [(1, 1), (10, 5), (20, 6), (40, 10), (79, 23), (80, 24), (300, 100)] {
        let mut a = app();
        for action in [
            Action::Goto(View::HotLines),
            Action::Move(1),
            Action::Open,
            Action::Move(5),
            Action::Open,
            Action::Move(3),
            Action::Back,
            Action::Back,
        ] {
            a.apply(action);
            screen(&mut a, w, h);
        }
    }
    let mut empty = App::new(Timeline::default(), Source::Live("nothing yet".into()));
    for v in [View::HotLines, View::Detail, View::LineDetail] {
        empty.apply(Action::Goto(v));
        empty.apply(Action::Open);
        empty.apply(Action::Move(1));
        let s = screen(&mut empty, 80, 24);
        if v == View::HotLines {
            assert!(s.contains("No slow poll was sampled in this window"), "{s}");
        }
    }
}
