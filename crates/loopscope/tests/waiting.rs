//! What is stuck: every alive task's time since its last poll, per spawn site, and task dumps
//! that name where each task waits (tokio's task dump, the `taskdump` feature).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use loopscope::Session;
use loopscope::core::model::{DumpOutcome, DumpTrigger, Frame, TaskAges, TaskDump};
use loopscope::core::report::Report;
use loopscope::core::tasks::DumpReport;

/// The line of this file that carries `marker` (a comment at the end of the line).
fn line_of(marker: &str) -> u32 {
    let src = include_str!("waiting.rs");
    let at = src.lines().position(|l| l.trim_end().ends_with(marker) && !l.contains("line_of(")).expect(marker);
    at as u32 + 1
}

/// Waits for a live frame that `want` accepts, up to `within`.
fn wait_for<T>(rx: &Receiver<Frame>, within: Duration, mut want: impl FnMut(&Frame) -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) => {
                if let Some(t) = want(&f) {
                    return t;
                }
            }
            Err(e) => panic!("no such frame within {within:?}: {e}"),
        }
    }
}

struct Run {
    session: Session,
    rt: tokio::runtime::Runtime,
    frames: Receiver<Frame>,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start(
    workers: Option<usize>,
    configure: impl FnOnce(loopscope::SessionBuilder) -> loopscope::SessionBuilder,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("waiting.loopscope");
    let mut b = match workers {
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_current_thread(),
    };
    b.enable_all();
    let (tx, frames) = sync_channel(100_000);
    let builder = Session::builder().record_to(&path).interval(Duration::from_millis(100)).live_frames(tx);
    let session = configure(builder).install(&mut b).unwrap();
    let rt = b.build().unwrap();
    Run { session, rt, frames, path, _dir: dir }
}

impl Run {
    fn finish(self) -> Report {
        self.rt.shutdown_background();
        self.session.finish().unwrap();
        Report::from_file(&self.path).unwrap()
    }
}

#[test]
fn waiting_tasks_are_followed_per_site_with_their_idle_times_and_ids() {
    let run = start(Some(2), |b| b.dump_when_idle(None));
    let (hold, rx) = tokio::sync::watch::channel(());
    let mut ids = Vec::new();
    for _ in 0..20 {
        let mut rx = rx.clone();
        // Twenty tasks waiting for a change that never comes.
        let h = run.rt.spawn(async move { rx.changed().await.ok() }); // site: waiters
        ids.push(h.id().to_string().parse::<u64>().unwrap());
    }
    // A busy task beside them: polled all the time, never idle for long.
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    run.rt.spawn(ticker); // site: ticker
    let waiters = line_of("// site: waiters");
    let ticker = line_of("// site: ticker");
    // Until an interval's task ages show the waiters idle for half a second.
    let (ages, sites) = wait_for(&run.frames, Duration::from_secs(20), {
        let mut sites: Vec<(u32, u32)> = Vec::new();
        move |f| {
            if let Frame::Sites(s) = f {
                sites.extend(s.iter().map(|d| (d.id, d.line)));
            }
            match f {
                Frame::TaskAges(t) if t.idlest.len() >= 16 && t.idlest[15].idle_ns >= 500_000_000 => {
                    Some(((**t).clone(), sites.clone()))
                }
                _ => None,
            }
        }
    });
    let site_of = |line: u32| {
        sites
            .iter()
            .find(|(_, l)| *l == line)
            .map(|(id, _)| *id)
            .unwrap_or_else(|| panic!("line {line} among {sites:?}"))
    };
    let w = ages.sites.iter().find(|s| s.site == site_of(waiters)).expect("the waiters' site");
    assert_eq!(w.alive, 20);
    let idle = w.idle.decode().unwrap();
    assert_eq!(idle.count(), 20);
    // (Histogram buckets: 500 ms lands in a bucket a little lower.)
    assert_eq!(idle.count_above(Duration::from_millis(490)), 20, "every waiter idle: {:?}", idle.summary());
    // The idlest tasks are waiters (with their real tokio ids), not the ticker.
    assert_eq!(ages.idlest.len(), TaskAges::MAX_IDLEST);
    for t in &ages.idlest {
        assert_eq!(t.site, site_of(waiters));
        assert!(ids.contains(&t.id), "task {} is one of the waiters {ids:?}", t.id);
    }
    let tick = ages.sites.iter().find(|s| s.site == site_of(ticker)).expect("the ticker's site");
    assert_eq!(tick.alive, 1);
    assert!(tick.idle.decode().unwrap().max() < Duration::from_millis(400), "the ticker is polled every 5 ms");
    assert_eq!(ages.untracked, 0);
    // The waiters wait until the runtime shuts down (the report's figures are those of the last
    // interval before, whole).
    let report = run.finish();
    drop(hold);
    let at = format!("waiting.rs:{waiters}:");
    let site = report.waiting.iter().find(|s| s.spawn_site.as_deref().is_some_and(|s| s.contains(&at)));
    let site = site.expect("the report's waiting view of the waiters");
    assert_eq!(site.alive, 20);
    assert!(site.idle.p50 >= Duration::from_millis(500));
    assert!(report.tasks_followed);
    assert!(report.idlest.iter().all(|t| ids.contains(&t.id)));
}

/// Two tasks that take two tokio mutexes in opposite order: each holds one and waits for the
/// other, for ever.
async fn deadlock(a: Arc<tokio::sync::Mutex<u32>>, b: Arc<tokio::sync::Mutex<u32>>, both: Arc<tokio::sync::Barrier>) {
    let first = tokio::spawn({
        let (a, b, both) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&both));
        async move {
            let _a = a.lock().await;
            both.wait().await;
            let _b = b.lock().await; // await: a then b
        }
    });
    let second = tokio::spawn(async move {
        let _b = b.lock().await;
        both.wait().await;
        let _a = a.lock().await; // await: b then a
    });
    let _ = (first, second);
}

#[test]
fn a_dump_names_both_await_points_of_a_deadlock_when_its_tasks_idle() {
    let run = start(Some(2), |b| b.dump_when_idle(Some(Duration::from_millis(300))));
    let locks = (Arc::new(tokio::sync::Mutex::new(0)), Arc::new(tokio::sync::Mutex::new(0)));
    run.rt.block_on(deadlock(locks.0, locks.1, Arc::new(tokio::sync::Barrier::new(2))));
    // (The signal test beside this one may set off a dump in its own session only.)
    let dump: TaskDump = wait_for(&run.frames, Duration::from_secs(30), |f| match f {
        Frame::TaskDump(d) => Some((**d).clone()),
        _ => None,
    });
    assert!(matches!(dump.trigger, DumpTrigger::Idle { idle_ns, .. } if idle_ns >= 300_000_000), "{:?}", dump.trigger);
    assert_eq!(dump.outcome, DumpOutcome::Complete);
    let report = run.finish();
    let shown: &DumpReport = report.dumps.first().expect("the dump in the report");
    let points: Vec<String> =
        shown.groups.iter().flat_map(|g| g.await_points.iter().filter_map(|p| p.line.clone())).collect();
    for marker in ["// await: a then b", "// await: b then a"] {
        let want = format!("tests/waiting.rs:{}", line_of(marker));
        assert!(points.iter().any(|p| p.ends_with(&want)), "{want} among the await points {points:?}");
    }
    // Each deadlocked task in a group of its own, with its spawn site and idle time.
    for g in shown
        .groups
        .iter()
        .filter(|g| g.await_points.iter().any(|p| p.line.as_deref().is_some_and(|l| l.contains("waiting.rs"))))
    {
        assert_eq!(g.count, 1);
        assert!(g.spawn_site.as_deref().is_some_and(|s| s.contains("tests/waiting.rs:")), "{:?}", g.spawn_site);
        assert!(g.idle >= Duration::from_millis(300), "{:?}", g.idle);
    }
}

#[test]
fn a_dump_asked_for_while_a_worker_blocks_times_out_and_names_the_worker() {
    let run = start(Some(1), |b| b.dump_when_idle(None));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = run.rt.spawn(async move {
        started_tx.send(()).unwrap();
        // Blocks the only worker until the test has its answer.
        let _ = release_rx.recv_timeout(Duration::from_secs(30));
    });
    let worker = std::thread::spawn({
        let handle = run.rt.handle().clone();
        move || handle.block_on(blocker)
    });
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(run.session.request_dump());
    let dump: TaskDump = wait_for(&run.frames, Duration::from_secs(30), |f| match f {
        Frame::TaskDump(d) => Some((**d).clone()),
        _ => None,
    });
    release_tx.send(()).unwrap();
    worker.join().unwrap().unwrap();
    match dump.outcome {
        DumpOutcome::TimedOut { waited_ns, stalled_workers } => {
            assert!(waited_ns >= 1_000_000_000);
            assert_eq!(stalled_workers.len(), 1, "the one worker, blocked");
        }
        other => panic!("expected a timed-out dump, got {other:?}"),
    }
    assert_eq!(dump.trigger, DumpTrigger::Request);
    run.finish();
}

#[test]
fn the_dump_signal_takes_a_dump_in_the_sessions_that_asked_for_it() {
    let run = start(Some(1), |b| b.dump_when_idle(None).dump_on_signal(true));
    let quiet = start(Some(1), |b| b.dump_when_idle(None));
    // A task polled on each runtime: the sessions have started recording.
    run.rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    quiet.rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    // SAFETY: sends a signal to this process, whose handler the session installed.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) }, 0);
    let dump: TaskDump = wait_for(&run.frames, Duration::from_secs(10), |f| match f {
        Frame::TaskDump(d) => Some((**d).clone()),
        _ => None,
    });
    assert_eq!(dump.trigger, DumpTrigger::Signal);
    assert_eq!(dump.outcome, DumpOutcome::Complete);
    // The session that did not ask has seen its intervals go by without a dump.
    let quiet_report = quiet.finish();
    assert_eq!(quiet_report.dumps_total, 0);
    run.finish();
}

#[test]
fn a_runtime_with_two_workers_takes_one_dump_and_says_why_not_a_second() {
    let run = start(Some(2), |b| b.dump_when_idle(None));
    run.rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    let _idle = run.rt.spawn(std::future::pending::<()>());
    let next_dump = |what: &str| -> TaskDump {
        // A request is taken once the last dump's gap has passed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !run.session.request_dump() {
            assert!(Instant::now() < deadline, "the {what} dump was never taken");
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for(&run.frames, Duration::from_secs(30), |f| match f {
            Frame::TaskDump(d) => Some((**d).clone()),
            _ => None,
        })
    };
    let first = next_dump("first");
    assert_eq!(first.outcome, DumpOutcome::Complete, "{first:?}");
    let second = next_dump("second");
    match &second.outcome {
        DumpOutcome::Unavailable { reason } => assert!(reason.contains("tokio-rs/tokio#8370"), "{reason}"),
        other => panic!("expected the second dump refused, got {other:?}"),
    }
    let report = run.finish();
    assert_eq!(report.dumps_total, 2);
}
