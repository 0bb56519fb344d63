//! The recording format: round trip, every possible cut point, and foreign or damaged files.

use std::time::Duration;

use loopscope_core::dist::DistAcc;
use loopscope_core::format::{Completeness, FRAME_HEADER_LEN, PREAMBLE_LEN, ReadError, Reader, Recording, Writer};
use loopscope_core::model::*;
use loopscope_core::report::Report;
use loopscope_core::resolve::Resolver;
use loopscope_core::workload::WorkloadResult;

fn header() -> Header {
    Header {
        format_version: FORMAT_VERSION,
        loopscope_version: "test".into(),
        flavor: Flavor::MultiThread,
        workers: 2,
        host: "host".into(),
        pid: 42,
        start_unix_ns: 1_700_000_000_000_000_000,
        command_line: vec!["prog".into(), "--flag".into()],
        workload: Some("synthetic".into()),
        interval_ns: 1_000_000_000,
        slow_poll_ns: 100_000,
        schedule_latency: true,
        stall_threshold_ns: Some(10_000_000),
    }
}

fn dist(base_ns: u64, n: u64) -> loopscope_core::Dist {
    let mut d = DistAcc::new();
    for i in 0..n {
        d.record_n_ns(base_ns + i * 17, 1 + i % 4);
    }
    d.to_dist()
}

fn frames() -> Vec<Frame> {
    let mut v = vec![
        Frame::Sites(vec![
            SiteDecl { id: 0, file: "src/main.rs".into(), line: 10, column: 5 },
            SiteDecl { id: 1, file: "src/lib.rs".into(), line: 99, column: 9 },
        ]),
        Frame::Workers(vec![WorkerDecl { id: 0, index: Some(0), thread_name: "w0".into() }]),
    ];
    for i in 0..3u64 {
        v.push(Frame::Interval(Box::new(Interval {
            index: i,
            start_ns: i * 1_000_000_000,
            end_ns: (i + 1) * 1_000_000_000,
            sites: vec![
                SiteInterval {
                    site: 0,
                    spawned: 3,
                    finished: 1,
                    slow_polls: 2,
                    poll: dist(500, 50),
                    sched: dist(900, 40),
                },
                SiteInterval {
                    site: 1,
                    spawned: 1,
                    finished: 0,
                    slow_polls: 0,
                    poll: dist(20_000, 5),
                    sched: dist(1, 3),
                },
            ],
            workers: vec![WorkerInterval {
                worker: 0,
                slow_polls: 2,
                poll: dist(500, 55),
                sched: dist(1, 43),
                cpu_ns: 900_000_000,
                run_delay_ns: 5_000_000,
                switches: 40,
                preemptions: 3,
            }],
            gauges: Gauges { alive_tasks: 3, global_queue: i, local_queues: vec![1, 2], ..Gauges::default() },
            lag: dist(700, 5),
            stall_tally: vec![],
            spans: Vec::new(),
            panics: Vec::new(),
        })));
    }
    v.push(Frame::Event(Event::RecorderError { at_ns: 5, message: "a test error".into() }));
    let mut lateness = DistAcc::new();
    lateness.record(Duration::from_micros(300));
    v.push(Frame::Workload(Box::new(
        WorkloadResult::new("synthetic").metric("wakeups_per_s", 12.5, "1/s").distribution("timer_lateness", &lateness),
    )));
    v.push(Frame::Footer(Footer { end_ns: 3_000_000_000, intervals: 3, errors: vec![] }));
    v
}

/// The bytes of a small recording and the offset where each frame ends.
fn small_recording() -> (Vec<u8>, Vec<u64>) {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let mut ends = vec![w.bytes_written()];
    for f in frames() {
        w.write(&f).unwrap();
        ends.push(w.bytes_written());
    }
    (w.into_inner(), ends)
}

fn read_bytes(bytes: &[u8]) -> Result<Recording, ReadError> {
    Recording::from_reader(Reader::new(bytes, "mem.loopscope")?, None)
}

#[test]
fn round_trip_gives_identical_frames_and_histograms() {
    let (bytes, _) = small_recording();
    let rec = read_bytes(&bytes).unwrap();
    assert_eq!(rec.header, header());
    assert!(rec.is_complete());
    assert_eq!(rec.intervals.len(), 3);
    let written: Vec<Interval> =
        frames().into_iter().filter_map(|f| if let Frame::Interval(i) = f { Some(*i) } else { None }).collect();
    assert_eq!(rec.intervals, written);
    for (a, b) in rec.intervals.iter().zip(&written) {
        for (sa, sb) in a.sites.iter().zip(&b.sites) {
            assert_eq!(sa.poll.decode().unwrap(), sb.poll.decode().unwrap());
        }
    }
    assert_eq!(rec.workload.as_ref().unwrap().get_metric("wakeups_per_s"), Some(12.5));
    assert_eq!(rec.events.len(), 1);
}

#[test]
fn every_cut_point_recovers_the_complete_prefix_without_panicking() {
    let (bytes, ends) = small_recording();
    let header_end = ends[0];
    let n_intervals_before = |cut: u64| {
        // Frames 0 and 1 are declarations; intervals are frames 2..5.
        (0..3).filter(|k| ends[3 + k] <= cut).count()
    };
    for cut in 0..=bytes.len() as u64 {
        let result = read_bytes(&bytes[..cut as usize]);
        if cut < header_end {
            let err = result.expect_err("no header, nothing to recover");
            assert!(matches!(err, ReadError::Truncated { .. }), "cut at {cut}: expected a truncation error, got {err}");
            assert!(err.to_string().contains("mem.loopscope"), "{err}");
            continue;
        }
        let rec = result.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(rec.intervals.len(), n_intervals_before(cut), "cut at {cut}");
        if cut == bytes.len() as u64 {
            assert!(rec.is_complete());
        } else {
            let Completeness::Truncated { at_byte, .. } = &rec.completeness else {
                panic!("cut at {cut} reported complete");
            };
            let last_complete = *ends.iter().filter(|e| **e <= cut).max().unwrap();
            assert_eq!(*at_byte, last_complete, "cut at {cut}");
        }
        // The streaming report agrees with the recovered prefix.
        let report =
            Report::from_reader(Reader::new(&bytes[..cut as usize], "mem").unwrap(), &mut Resolver::addresses_only())
                .unwrap();
        assert_eq!(report.recording.intervals as usize, rec.intervals.len());
        assert_eq!(report.recording.completeness, rec.completeness);
    }
}

#[test]
fn foreign_and_damaged_files_give_one_clear_error() {
    let err = read_bytes(b"this is a plain text file, not a recording at all").unwrap_err();
    assert!(matches!(err, ReadError::NotARecording { offset: 0, .. }), "{err}");
    assert!(err.to_string().contains("mem.loopscope") && err.to_string().contains("not a loopscope recording"));

    let (bytes, ends) = small_recording();
    // A newer format version.
    let mut newer = bytes.clone();
    newer[8] = 99;
    let err = read_bytes(&newer).unwrap_err();
    assert!(matches!(err, ReadError::UnsupportedVersion { found: 99, .. }), "{err}");

    // A flipped byte inside the third frame's payload: corruption at that frame's offset.
    let third = ends[2];
    let mut flipped = bytes.clone();
    flipped[(third + FRAME_HEADER_LEN + 3) as usize] ^= 0x55;
    let err = read_bytes(&flipped).unwrap_err();
    assert_eq!(err.offset(), Some(third), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");

    // An absurd frame length.
    let mut huge = bytes.clone();
    huge[(ends[1] + 1) as usize..(ends[1] + 5) as usize].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = read_bytes(&huge).unwrap_err();
    assert_eq!(err.offset(), Some(ends[1]), "{err}");

    // Random garbage after a valid preamble, many seeds: never a panic, always an error or a
    // recovered prefix.
    let mut state = 0x1234_5678_9abc_def0u64;
    for _ in 0..500 {
        let mut junk = bytes[..PREAMBLE_LEN as usize].to_vec();
        let len = (state % 300) as usize;
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            junk.push(state as u8);
        }
        let _ = read_bytes(&junk);
    }
}

#[test]
fn a_valid_frame_that_names_an_undeclared_site_is_corruption() {
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let at = w.bytes_written();
    w.write(&Frame::Interval(Box::new(Interval {
        sites: vec![SiteInterval { site: 7, ..SiteInterval::default() }],
        ..Interval::default()
    })))
    .unwrap();
    let bytes = w.into_inner();
    let err = read_bytes(&bytes).unwrap_err();
    assert_eq!(err.offset(), Some(at));
    assert!(err.to_string().contains("undeclared site 7"), "{err}");
    let err =
        Report::from_reader(Reader::new(&bytes[..], "mem").unwrap(), &mut Resolver::addresses_only()).unwrap_err();
    assert!(err.to_string().contains("undeclared site 7"), "{err}");
}

#[test]
fn the_report_sums_intervals() {
    let (bytes, _) = small_recording();
    let report = Report::from_reader(Reader::new(&bytes[..], "mem").unwrap(), &mut Resolver::addresses_only()).unwrap();
    assert_eq!(report.recording.intervals, 3);
    assert_eq!(report.sites.len(), 2);
    let main = report.site("src/main.rs:10").unwrap();
    assert_eq!(main.tasks.spawned, 9);
    assert_eq!(main.tasks.finished, 3);
    assert_eq!(main.slow_polls, 6);
    assert_eq!(main.polls, 3 * dist(500, 50).count);
    assert_eq!(report.runtime.polls, 3 * dist(500, 55).count);
    assert_eq!(report.runtime.queues.global_max, 2);
    assert_eq!(report.runtime.lag.count, 3 * dist(700, 5).count);
    assert_eq!(report.errors, vec!["a test error".to_string()]);
    assert_eq!(report.workload.as_ref().unwrap().distributions[0].name, "timer_lateness");
}

#[test]
fn the_interval_log_export_is_read_back_by_hdrhistogram() {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let (bytes, _) = small_recording();
    let mut out = Vec::new();
    let stats = loopscope_core::export::write_hlog(Reader::new(&bytes[..], "mem").unwrap(), &mut out).unwrap();
    assert_eq!(stats.intervals, 3);
    assert!(!stats.truncated);
    let text = String::from_utf8(out.clone()).unwrap();
    let mut histograms = Vec::new();
    for entry in IntervalLogIterator::new(&out) {
        if let LogEntry::Interval(h) = entry.expect("a valid interval log line") {
            histograms.push((
                h.tag().map(|t| t.as_str().to_string()),
                h.encoded_histogram().to_string(),
                h.start_timestamp(),
            ));
        }
    }
    // Per interval: runtime poll and sched, and poll and sched for each of the two sites.
    assert_eq!(histograms.len() as u64, stats.histograms);
    assert_eq!(histograms.len(), 3 * 6, "{text}");
    let (tag, encoded, start) = &histograms[2];
    assert_eq!(tag.as_deref(), Some("poll@src/main.rs:10:5"));
    assert_eq!(*start, Duration::ZERO);
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let h: hdrhistogram::Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
    assert_eq!(h, dist(500, 50).decode().unwrap().to_histogram(), "the site's first poll histogram, intact");
}

#[test]
fn the_trace_export_draws_ended_and_unfinished_stalls_on_their_workers() {
    let stall = |id: u64, started_ns: u64| Stall {
        id,
        worker: 0,
        site: Some(1),
        started_ns,
        detected_ns: started_ns + 10_000_000,
        category: StallCategory::CpuBound,
        syscall: None,
        fd_target: None,
        cpu_percent: 99,
        frames: vec![],
        blocking_site: Some("src/lib.rs:120".into()),
        blocking_function: Some("prog::spin".into()),
        call: None,
        stack: vec![],
        late: false,
        spans: Vec::new(),
    };
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    let mut frames = frames();
    frames.pop(); // no footer: the second stall never ends
    frames.push(Frame::Event(Event::StallBegin(stall(1, 1_000_000_000))));
    // The symbolizer's later looks can change the category at the end.
    frames.push(Frame::Event(Event::StallEnd {
        id: 1,
        duration_ns: 40_000_000,
        category: Some(StallCategory::SyncSleep),
    }));
    frames.push(Frame::Event(Event::StallBegin(stall(2, 2_500_000_000))));
    for f in &frames {
        w.write(f).unwrap();
    }
    let bytes = w.into_inner();
    let mut out = Vec::new();
    let stats = loopscope_core::export::write_trace(
        Reader::new(&bytes[..], "mem").unwrap(),
        &mut Resolver::addresses_only(),
        &mut out,
    )
    .unwrap();
    assert_eq!((stats.stalls, stats.unfinished, stats.intervals, stats.truncated), (2, 1, 3, true));
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let slices: Vec<&serde_json::Value> =
        doc["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), 2);
    assert_eq!(slices[0]["ts"], 1_000_000.0);
    assert_eq!(slices[0]["dur"], 40_000.0);
    assert_eq!(slices[0]["args"]["category"], "sync-sleep");
    assert_eq!(slices[0]["args"]["spawn_site"], "src/lib.rs:99:9");
    assert_eq!(slices[0]["name"], "stall: sync-sleep at src/lib.rs:120");
    // Unfinished: drawn to the last moment the recording holds (the end of interval 3, 3 s).
    assert_eq!(slices[1]["ts"], 2_500_000.0);
    assert_eq!(slices[1]["dur"], 500_000.0);
    assert_eq!(slices[1]["args"]["finished"], false);
}

/// A task dump as large as the recorder makes one, of the same stack again and again: it
/// compresses far more than readers let a frame inflate, so the writer stores it as it is, and
/// it reads back whole. Task ages round-trip beside it.
#[test]
fn the_largest_task_dump_of_repetitive_stacks_reads_back() {
    let frame = |i: u64| StackFrame {
        address: 0x5555_0000 + i,
        function: "tokio::sync::batch_semaphore::Acquire::poll::{{closure}}".repeat(2),
        file: Some(
            "/home/user/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/sync/batch_semaphore.rs"
                .into(),
        ),
        line: Some(i as u32),
        inlined: false,
        object: None,
    };
    let groups: Vec<DumpGroup> = (0..TaskDump::MAX_GROUPS as u64)
        .map(|g| DumpGroup {
            site: Some((g % 2) as u32),
            count: 3,
            ids: (0..TaskDump::MAX_IDS as u64).collect(),
            idle_ns: 5_000_000_000,
            traces: (0..8).map(|_| (0..16).map(frame).collect()).collect(),
        })
        .collect();
    let dump = TaskDump {
        at_ns: 3_000_000_000,
        trigger: DumpTrigger::Idle { site: 1, idle_ns: 2_500_000_000 },
        requests: vec![7, 9],
        outcome: DumpOutcome::Complete,
        tasks: 900,
        skipped: 132,
        groups,
    };
    let ages = TaskAges {
        interval: 2,
        sites: vec![SiteTasks {
            site: 1,
            alive: 4,
            idle: dist(2_000_000_000, 4),
            age: dist(3_000_000_000, 4),
            idle_over: [4, 0, 0],
        }],
        idlest: vec![IdleTask { id: 12, site: 1, idle_ns: 2_000_000_051, age_ns: 3_000_000_051, never_polled: false }],
        untracked: 1,
    };
    let mut bytes = Vec::new();
    let mut w = Writer::new(&mut bytes, &header()).unwrap();
    for f in frames().into_iter().filter(|f| !matches!(f, Frame::Footer(_))) {
        w.write(&f).unwrap();
    }
    w.write(&Frame::TaskAges(Box::new(ages.clone()))).unwrap();
    w.write(&Frame::TaskDump(Box::new(dump.clone()))).unwrap();
    w.write(&Frame::Footer(Footer { end_ns: 4_000_000_000, intervals: 3, errors: Vec::new() })).unwrap();
    let rec = read_bytes(&bytes).unwrap();
    assert!(rec.is_complete());
    assert_eq!(rec.task_ages, vec![ages]);
    assert_eq!(rec.dumps, vec![dump]);
}
