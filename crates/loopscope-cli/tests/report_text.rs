//! The text report of small recordings written here with core's `Writer` (fixed figures, no
//! clock, no absolute paths of this machine), read back as `loopscope report` reads a file and
//! checked against snapshots (`tests/snapshots/`; review changes with `cargo insta review`, or
//! rerun with `INSTA_UPDATE=always` and read the diff).

use std::io::Cursor;

use loopscope_cli::report_text::render;
use loopscope_core::dist::{Dist, DistAcc};
use loopscope_core::format::{Reader, Writer};
use loopscope_core::model::*;
use loopscope_core::report::Report;
use loopscope_core::resolve::Resolver;
use loopscope_core::stall::Origin;
use loopscope_core::workload::WorkloadResult;

const MS: u64 = 1_000_000;

fn header(command: &str, workload: Option<&str>) -> Header {
    Header {
        format_version: FORMAT_VERSION,
        loopscope_version: "0.1.0".into(),
        flavor: Flavor::Unknown,
        workers: 0,
        host: "ci-runner".into(),
        pid: 4242,
        start_unix_ns: 1_700_000_000_000_000_000,
        command_line: vec![command.into(), "--port".into(), "8080".into()],
        workload: workload.map(str::to_string),
        interval_ns: 100 * MS,
        slow_poll_ns: 100_000,
        schedule_latency: true,
        stall_threshold_ns: Some(10 * MS),
    }
}

/// `n` values from `base_ns` up in steps of `step_ns`.
fn dist(base_ns: u64, step_ns: u64, n: u64) -> Dist {
    let mut d = DistAcc::new();
    for i in 0..n {
        d.record_n_ns(base_ns + i * step_ns, 1);
    }
    d.to_dist()
}

/// A two-worker server with two spawn sites, recorded for three intervals.
fn server_frames() -> Vec<Frame> {
    let mut frames = vec![
        Frame::Runtime(RuntimeDecl { flavor: Flavor::MultiThread, workers: 2 }),
        Frame::Sites(vec![
            SiteDecl { id: 0, file: "src/server.rs".into(), line: 88, column: 13 },
            SiteDecl {
                id: 1,
                file: "/home/ci/.cargo/registry/src/index.crates.io-6f17d22bba15001f/hyper-1.7.0/src/server/conn.rs"
                    .into(),
                line: 412,
                column: 9,
            },
        ]),
        Frame::Workers(vec![
            WorkerDecl { id: 0, index: Some(0), thread_name: "tokio-runtime-worker".into() },
            WorkerDecl { id: 1, index: Some(1), thread_name: "tokio-runtime-worker".into() },
        ]),
    ];
    for i in 0..3u64 {
        frames.push(Frame::Interval(Box::new(Interval {
            index: i,
            start_ns: i * 100 * MS,
            end_ns: (i + 1) * 100 * MS,
            sites: vec![
                SiteInterval {
                    site: 0,
                    spawned: 400,
                    finished: 390,
                    slow_polls: 3,
                    poll: dist(2_000, 40, 1_200),
                    sched: dist(15_000, 300, 1_200),
                },
                SiteInterval {
                    site: 1,
                    spawned: 10,
                    finished: 10,
                    slow_polls: 0,
                    poll: dist(900, 10, 80),
                    sched: dist(4_000, 50, 80),
                },
            ],
            workers: vec![
                // Worker 0 polled the server's tasks, worker 1 hyper's.
                WorkerInterval {
                    worker: 0,
                    slow_polls: 3,
                    poll: dist(2_000, 40, 1_200),
                    sched: dist(15_000, 300, 1_200),
                    cpu_ns: 60 * MS,
                    run_delay_ns: 0,
                    switches: 0,
                    preemptions: 0,
                },
                WorkerInterval {
                    worker: 1,
                    slow_polls: 0,
                    poll: dist(900, 10, 80),
                    sched: dist(4_000, 50, 80),
                    cpu_ns: 40 * MS,
                    run_delay_ns: 0,
                    switches: 0,
                    preemptions: 0,
                },
            ],
            gauges: Gauges { alive_tasks: 10, global_queue: i, local_queues: vec![3, 1], ..Gauges::default() },
            lag: Dist::default(),
            stall_tally: Vec::new(),
            spans: Vec::new(),
            panics: Vec::new(),
        })));
    }
    frames
}

fn footer(end_ns: u64) -> Frame {
    Frame::Footer(Footer { end_ns, intervals: 3, errors: Vec::new() })
}

/// The bytes of a recording of these frames after `header`.
fn write(header: &Header, frames: &[Frame]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), header).expect("the header is written");
    for f in frames {
        w.write(f).expect("a frame is written");
    }
    w.into_inner()
}

/// What `loopscope report` would make of these bytes (without symbolizing: no binary to read).
fn report(bytes: Vec<u8>) -> Report {
    let reader = Reader::new(Cursor::new(bytes), "test.loopscope").expect("a recording");
    Report::from_reader(reader, &mut Resolver::addresses_only()).expect("a report")
}

fn stall(id: u64, worker: u32, started_ms: u64, category: StallCategory) -> Stall {
    let mut s = Stall::unknown(id, worker, Some(0), started_ms * MS, (started_ms + 12) * MS, false);
    s.category = category;
    s
}

/// Every `│` of a table sits in the same place on its heading and its rows, and (`words`: for a
/// table whose headings and cells are single words) every row has as many cells as the heading.
fn assert_aligned(text: &str, heading_start: &str, words: bool) {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.trim_start().starts_with(heading_start)).expect("the table's heading");
    let rows: Vec<&str> =
        lines[at..].iter().take_while(|l| l.starts_with("  ") && !l.trim().is_empty()).copied().collect();
    assert!(rows.len() > 1, "a heading and rows: {text}");
    let bars = |l: &str| l.chars().enumerate().filter(|(_, c)| *c == '│').map(|(i, _)| i).collect::<Vec<_>>();
    let fields = |l: &str| l.split_whitespace().count();
    for row in &rows[1..] {
        assert_eq!(bars(row), bars(rows[0]), "a row's separators drift from its heading's:\n{}", rows.join("\n"));
        if words {
            assert_eq!(fields(row), fields(rows[0]), "a row has more cells than headings:\n{}", rows.join("\n"));
        }
    }
}

#[test]
fn a_clean_run() {
    let mut frames = server_frames();
    frames.push(footer(300 * MS));
    let r = report(write(&header("/usr/local/bin/my-server", None), &frames));
    let text = render(&r, 10);
    assert!(text.starts_with("loopscope report — my-server — multi-thread runtime, 2 workers"), "{text}");
    assert!(text.contains("Stalls: none (no poll blocked a worker for more than 10.0ms)"), "{text}");
    assert!(!text.contains("host: workers waited"), "no run-queue delay, no host line: {text}");
    assert_aligned(&text, "site ", true);
    assert_aligned(&text, "thread ", false);
    insta::assert_snapshot!(text);
}

#[test]
fn a_run_with_stalls_of_the_program_and_of_the_host() {
    let mut frames = server_frames();
    // The workers waited for a CPU: the host's share shows beside scheduling latency.
    if let Frame::Interval(i) = &mut frames[4] {
        i.workers[0].run_delay_ns = 45 * MS;
        i.workers[1].run_delay_ns = 5 * MS;
    }
    let mut sleep = stall(1, 0, 20, StallCategory::SyncSleep);
    sleep.blocking_site = Some("src/cache.rs:57".into());
    sleep.blocking_function = Some("my_server::cache::refresh".into());
    sleep.call = Some("std::thread::sleep".into());
    sleep.syscall = Some("clock_nanosleep".into());
    let mut sleep_again = sleep.clone();
    (sleep_again.id, sleep_again.started_ns, sleep_again.detected_ns) = (2, 150 * MS, 162 * MS);
    let mut read = stall(3, 1, 40, StallCategory::FileIo);
    read.blocking_site = Some("src/config.rs:12".into());
    read.call = Some("std::fs::read_to_string".into());
    read.syscall = Some("read".into());
    read.fd_target = Some("/etc/my-server/config.toml".into());
    let spin = stall(4, 1, 210, StallCategory::CpuBound);
    let preempted = stall(5, 0, 230, StallCategory::Preempted);
    let late = Stall::unknown(6, 1, Some(1), 240 * MS, 260 * MS, true);
    let still = stall(7, 0, 280, StallCategory::LockWait);
    let events = [
        (2, Event::StallBegin(sleep)),
        (2, Event::StallEnd { id: 1, duration_ns: 25 * MS, category: None }),
        (2, Event::StallBegin(read)),
        (2, Event::StallEnd { id: 3, duration_ns: 14 * MS, category: None }),
        (3, Event::StallBegin(sleep_again)),
        (3, Event::StallEnd { id: 2, duration_ns: 30 * MS, category: None }),
        (4, Event::StallBegin(spin)),
        (4, Event::StallEnd { id: 4, duration_ns: 13 * MS, category: None }),
        (4, Event::StallBegin(preempted)),
        (4, Event::StallEnd { id: 5, duration_ns: 19 * MS, category: None }),
        (4, Event::StallBegin(late)),
        (4, Event::StallEnd { id: 6, duration_ns: 20 * MS, category: None }),
        (5, Event::StallBegin(still)),
    ];
    // Events go after the declarations, among the intervals (frames[3..6]).
    for (at, e) in events.into_iter().rev() {
        frames.insert(at + 1, Frame::Event(e));
    }
    // Past its budget of stall events, the recorder only counts them.
    if let Some(Frame::Interval(i)) = frames.iter_mut().rev().find(|f| matches!(f, Frame::Interval(_))) {
        i.stall_tally.push(StallTally {
            site: Some(0),
            category: StallCategory::SyncSleep,
            count: 4,
            total_ns: 60 * MS,
            max_ns: 18 * MS,
        });
    }
    frames.push(Frame::Event(Event::RecorderError {
        at_ns: 290 * MS,
        message: "stall events past the budget of 1000 are counted, not recorded".into(),
    }));
    frames.push(footer(300 * MS));
    let mut r = report(write(&header("./target/release/my-server", None), &frames));
    r.notes
        .push("my-server: no line tables (built without debug = \"line-tables-only\"): stalls name functions".into());
    // The report's own order (its JSON's): the program's, then the unattributed, then the host's.
    let origins: Vec<Origin> = r.stalls.iter().map(|g| g.origin).collect();
    let rank = |o: &Origin| [Origin::Program, Origin::Unattributed, Origin::Host].iter().position(|x| x == o);
    assert!(origins.is_sorted_by_key(rank), "{origins:?}");
    let text = render(&r, 10);
    // Seven stalls recorded one by one and four only counted; two of them the host's.
    assert!(text.contains("Stalls: 9 polls blocked a worker for more than 10.0ms (plus 2 the host caused"), "{text}");
    let program = text.find("sync-sleep").unwrap();
    let unattributed = text.find("cpu-bound").unwrap();
    let host = text.find("The host's").unwrap();
    assert!(program < unattributed && unattributed < host && host < text.find("preempted ").unwrap(), "{text}");
    assert!(text.contains("host: workers waited 50.0ms for a CPU (14% of the time they wanted one)"), "{text}");
    assert!(text.contains("\nNotes\n  - my-server: no line tables"), "{text}");
    assert_aligned(&text, "category ", false);
    assert_aligned(&text, "site ", true);
    insta::assert_snapshot!(text);
}

#[test]
fn a_recording_cut_short() {
    let mut frames = server_frames();
    frames.push(footer(300 * MS));
    let h = header("/usr/local/bin/my-server", None);
    let bytes = write(&h, &frames);
    // Killed while the last interval was being written: the bytes end inside its frame.
    let cut = write(&h, &frames[..frames.len() - 1]).len() - 40;
    let r = report(bytes[..cut].to_vec());
    let text = render(&r, 1);
    assert!(text.contains("2 intervals — CUT SHORT at byte"), "{text}");
    assert!(text.contains("Spawn sites (2 by busy time), top 1"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn a_workload_run_with_the_lag_probe() {
    let mut frames = server_frames();
    for f in &mut frames {
        if let Frame::Interval(i) = f {
            // The lean profile: no per-task scheduling latency, a lag probe instead.
            for s in &mut i.sites {
                s.sched = Dist::default();
            }
            for w in &mut i.workers {
                w.sched = Dist::default();
            }
            i.lag = dist(40_000, 1_000, 10);
        }
    }
    let mut lateness = DistAcc::new();
    for i in 0..500 {
        lateness.record_n_ns(1_000_000 + i * 2_000, 1);
    }
    frames.push(Frame::Workload(Box::new(
        WorkloadResult::new("sleep-storm")
            .metric("wakeups_per_s", 187_804.0, "1/s")
            .metric("run_time_s", 0.3, "s")
            .distribution("timer_lateness", &lateness),
    )));
    frames.push(footer(300 * MS));
    let mut h = header("/opt/loopscope/bin/loopscope", Some("sleep-storm"));
    h.schedule_latency = false;
    let text = render(&report(write(&h, &frames)), 10);
    assert!(text.starts_with("loopscope report — sleep-storm — "), "the workload, not the binary: {text}");
    assert!(text.contains("  lag probe "), "{text}");
    assert!(text.contains("Workload sleep-storm (its own measurements)"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn an_empty_recording_is_its_header() {
    let r = report(write(&header("/usr/local/bin/my-server", None), &[]));
    let text = render(&r, 10);
    assert!(text.contains("Runtime: no interval was recorded"), "{text}");
    assert!(text.contains("Spawn sites: none"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn one_poll_is_singular() {
    let mut frames = server_frames();
    frames.truncate(3);
    frames.push(Frame::Interval(Box::new(Interval {
        index: 0,
        start_ns: 0,
        end_ns: 100 * MS,
        sites: vec![SiteInterval {
            site: 0,
            spawned: 1,
            finished: 1,
            poll: dist(5_000, 1, 1),
            ..SiteInterval::default()
        }],
        workers: vec![WorkerInterval { worker: 0, poll: dist(5_000, 1, 1), ..WorkerInterval::default() }],
        ..Interval::default()
    })));
    frames.push(footer(100 * MS));
    let text = render(&report(write(&header("my-server", None), &frames)), 10);
    assert!(text.contains("Runtime: 1 poll, busy"), "{text}");
    assert!(text.contains("over 1 interval — complete"), "{text}");
}

#[test]
fn a_recording_without_the_detector_says_so() {
    let mut h = header("my-server", None);
    h.stall_threshold_ns = None;
    let mut frames = server_frames();
    frames.push(footer(300 * MS));
    let text = render(&report(write(&h, &frames)), 10);
    assert!(text.contains("\nStalls: detector off\n"), "{text}");
}
