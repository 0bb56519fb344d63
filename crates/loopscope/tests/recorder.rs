//! The recorder on real tokio runtimes: exact poll counts, poll durations, scheduling latency,
//! spawn sites, and the recording written beside the report.

use std::sync::Arc;
use std::time::Duration;

use loopscope::core::format::{Completeness, Recording};
use loopscope::{Report, Session};

fn multi_thread(workers: usize) -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(workers).enable_all();
    b
}

fn run_recorded<F: std::future::Future<Output = ()>>(
    mut builder: tokio::runtime::Builder,
    session: loopscope::SessionBuilder,
    app: impl FnOnce() -> F,
) -> Report {
    let session = session.install(&mut builder).unwrap();
    let rt = builder.build().unwrap();
    rt.block_on(app());
    drop(rt);
    session.finish().unwrap().expect("an enabled session returns a report")
}

#[test]
fn blocking_polls_and_yield_polls_land_at_their_spawn_sites() {
    let mut sleep_line = 0;
    let mut yield_line = 0;
    let report = run_recorded(multi_thread(2), Session::builder(), || async {
        sleep_line = line!() + 1;
        let sleeper = tokio::spawn(async {
            for i in 0..10 {
                std::thread::sleep(Duration::from_millis(20));
                if i < 9 {
                    tokio::task::yield_now().await;
                }
            }
        });
        yield_line = line!() + 1;
        let yielder = tokio::spawn(async {
            for i in 0..10_000 {
                if i < 9_999 {
                    tokio::task::yield_now().await;
                }
            }
        });
        sleeper.await.unwrap();
        yielder.await.unwrap();
    });
    let file = file!();
    let sleeper = report.site(&format!("{file}:{sleep_line}")).expect("the sleeping task's spawn site");
    assert_eq!(sleeper.polls, 10, "one poll per sleep");
    let p50 = sleeper.poll.p50;
    assert!(p50 >= Duration::from_millis(20) && p50 <= Duration::from_millis(25), "p50 of a 20 ms sleep: {p50:?}");
    assert_eq!(sleeper.slow_polls, 10);
    assert_eq!(sleeper.tasks.spawned, 1);
    assert_eq!(sleeper.tasks.finished, 1);

    let yielder = report.site(&format!("{file}:{yield_line}")).expect("the yielding task's spawn site");
    assert_eq!(yielder.polls, 10_000);
    assert!(yielder.poll.p99 < Duration::from_millis(1), "p99 of empty polls: {:?}", yielder.poll.p99);
    assert_eq!(report.runtime.polls, 10_010);
    let per_worker: u64 = report.workers.iter().map(|w| w.polls).sum();
    assert_eq!(per_worker, 10_010, "worker totals add up to the runtime's");
}

#[test]
fn scheduling_latency_includes_time_queued_behind_a_blocking_poll() {
    let mut woken_line = 0;
    let report = run_recorded(
        {
            let mut b = tokio::runtime::Builder::new_current_thread();
            b.enable_all();
            b
        },
        Session::builder(),
        || async {
            let notify = Arc::new(tokio::sync::Notify::new());
            let n = Arc::clone(&notify);
            woken_line = line!() + 1;
            let woken = tokio::spawn(async move { n.notified().await });
            // Let the waiter register, then wake it and block the only thread for 30 ms.
            tokio::task::yield_now().await;
            let blocker = tokio::spawn(async move {
                notify.notify_one();
                std::thread::sleep(Duration::from_millis(30));
            });
            blocker.await.unwrap();
            woken.await.unwrap();
        },
    );
    let site = report.site(&format!("{}:{woken_line}", file!())).expect("the woken task's site");
    assert!(
        site.sched.max >= Duration::from_millis(25),
        "woken during a 30 ms blocking poll, waited only {:?}",
        site.sched.max
    );
    assert!(report.recording.schedule_latency_tracked);
}

#[test]
fn schedule_latency_can_be_switched_off() {
    let report = run_recorded(multi_thread(1), Session::builder().schedule_latency(false), || async {
        tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
    });
    assert_eq!(report.runtime.sched.count, 0);
    assert!(report.runtime.polls >= 2);
    assert!(!report.recording.schedule_latency_tracked);
}

#[test]
fn the_recording_holds_the_same_histograms_as_the_live_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.loopscope");
    let live = run_recorded(
        multi_thread(2),
        Session::builder().record_to(&path).interval(Duration::from_millis(20)).workload("test"),
        || async {
            let mut tasks = Vec::new();
            for i in 0..50u64 {
                tasks.push(tokio::spawn(async move {
                    for _ in 0..20 {
                        tokio::time::sleep(Duration::from_millis(1 + i % 3)).await;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        },
    );
    let from_file = Report::from_file(&path).unwrap();
    assert_eq!(from_file.recording.completeness, Completeness::Complete);
    assert!(from_file.recording.intervals >= 2, "a 20 ms interval over a longer run");
    assert_eq!(from_file.runtime, live.runtime);
    assert_eq!(from_file.sites, live.sites);
    assert_eq!(from_file.workers, live.workers);
    assert_eq!(from_file.recording.workload.as_deref(), Some("test"));

    let rec = Recording::read(&path).unwrap();
    assert!(rec.is_complete());
    assert_eq!(rec.footer.as_ref().unwrap().intervals as usize, rec.intervals.len());
    // 50 tasks x 21 polls (20 sleeps then completion).
    let polls: u64 = rec.intervals.iter().flat_map(|i| &i.sites).map(|s| s.poll.count).sum();
    assert_eq!(polls, live.runtime.polls);
    assert_eq!(live.sites.iter().map(|s| s.tasks.spawned).sum::<u64>(), 50);
}

#[test]
fn an_unwritable_recording_is_reported_once_and_profiling_goes_on() {
    let report = run_recorded(multi_thread(1), Session::builder().record_to("/dev/full"), || async {
        tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
    });
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("/dev/full"), "{}", report.errors[0]);
    assert!(report.runtime.polls >= 2, "profiling continued in memory");

    let missing_dir =
        run_recorded(multi_thread(1), Session::builder().record_to("/nonexistent/dir/run.loopscope"), || async {
            tokio::spawn(async {}).await.unwrap();
        });
    assert_eq!(missing_dir.errors.len(), 1);
    assert!(missing_dir.errors[0].contains("/nonexistent/dir/run.loopscope"));
}

#[test]
fn from_env_without_the_variable_installs_nothing() {
    // SAFETY: no other test in this binary reads or writes LOOPSCOPE_RECORD.
    unsafe { std::env::remove_var("LOOPSCOPE_RECORD") };
    let mut b = multi_thread(1);
    let session = Session::from_env().unwrap().install(&mut b).unwrap();
    assert!(!session.is_enabled());
    let rt = b.build().unwrap();
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    assert!(session.finish().unwrap().is_none());
}

#[test]
fn bad_settings_name_the_setting() {
    let mut b = multi_thread(1);
    let err = Session::builder().interval(Duration::from_millis(1)).install(&mut b).unwrap_err();
    assert!(err.to_string().contains("interval"), "{err}");
    let err = Session::builder().slow_poll_threshold(Duration::ZERO).install(&mut b).unwrap_err();
    assert!(err.to_string().contains("slow_poll_threshold"), "{err}");
}

#[test]
fn spawn_sites_beyond_the_limit_share_one_other_site() {
    let report = run_recorded(multi_thread(1), Session::builder().max_sites(2), || async {
        tokio::spawn(async {}).await.unwrap();
        tokio::spawn(async {}).await.unwrap();
        tokio::spawn(async {}).await.unwrap();
        tokio::spawn(async {}).await.unwrap();
    });
    assert_eq!(report.sites.len(), 3, "{:?}", report.sites.iter().map(|s| &s.location).collect::<Vec<_>>());
    let other = report.sites.iter().find(|s| s.location == "<other sites>").unwrap();
    assert_eq!(other.tasks.spawned, 2);
    assert_eq!(report.runtime.tasks.spawned, 4);
}

/// A steady task: sleeps 1–5 ms (seeded), then does a couple of microseconds of work.
async fn steady(seed: u64, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_micros(1_000 + x % 4_000)).await;
        let mut h = x;
        for _ in 0..200 {
            h = std::hint::black_box(h.rotate_left(5) ^ 0x5555);
        }
    }
}

/// Fifty distinct spawn sites.
/// Spawns `f` from the `i`th of 50 spawn sites (50 lines of this file).
fn spawn_site<F: Future<Output = ()> + Send + 'static>(i: usize, f: F) -> tokio::task::JoinHandle<()> {
    match i {
        0 => tokio::spawn(f),
        1 => tokio::spawn(f),
        2 => tokio::spawn(f),
        3 => tokio::spawn(f),
        4 => tokio::spawn(f),
        5 => tokio::spawn(f),
        6 => tokio::spawn(f),
        7 => tokio::spawn(f),
        8 => tokio::spawn(f),
        9 => tokio::spawn(f),
        10 => tokio::spawn(f),
        11 => tokio::spawn(f),
        12 => tokio::spawn(f),
        13 => tokio::spawn(f),
        14 => tokio::spawn(f),
        15 => tokio::spawn(f),
        16 => tokio::spawn(f),
        17 => tokio::spawn(f),
        18 => tokio::spawn(f),
        19 => tokio::spawn(f),
        20 => tokio::spawn(f),
        21 => tokio::spawn(f),
        22 => tokio::spawn(f),
        23 => tokio::spawn(f),
        24 => tokio::spawn(f),
        25 => tokio::spawn(f),
        26 => tokio::spawn(f),
        27 => tokio::spawn(f),
        28 => tokio::spawn(f),
        29 => tokio::spawn(f),
        30 => tokio::spawn(f),
        31 => tokio::spawn(f),
        32 => tokio::spawn(f),
        33 => tokio::spawn(f),
        34 => tokio::spawn(f),
        35 => tokio::spawn(f),
        36 => tokio::spawn(f),
        37 => tokio::spawn(f),
        38 => tokio::spawn(f),
        39 => tokio::spawn(f),
        40 => tokio::spawn(f),
        41 => tokio::spawn(f),
        42 => tokio::spawn(f),
        43 => tokio::spawn(f),
        44 => tokio::spawn(f),
        45 => tokio::spawn(f),
        46 => tokio::spawn(f),
        47 => tokio::spawn(f),
        48 => tokio::spawn(f),
        _ => tokio::spawn(f),
    }
}

#[test]
fn polls_of_many_sites_in_turn_each_land_at_their_own_site() {
    // One thread polls 50 sites in rotation: every poll is of another site than the last, and the
    // hooks' cache of recent sites (16 entries) sees collisions.
    let report = run_recorded(
        {
            let mut b = tokio::runtime::Builder::new_current_thread();
            b.enable_all();
            b
        },
        Session::builder(),
        || async {
            let tasks: Vec<_> = (0..50 * 3)
                .map(|i| {
                    spawn_site(i % 50, async move {
                        for _ in 0..(i % 50) * 4 {
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        },
    );
    assert_eq!(report.sites.len(), 50);
    let file = file!();
    let first_line = report
        .sites
        .iter()
        .filter_map(|s| s.location.strip_prefix(&format!("{file}:")))
        .map(|rest| rest.split(':').next().unwrap().parse::<u32>().unwrap())
        .min()
        .unwrap();
    for i in 0..50u32 {
        let site = report.site(&format!("{file}:{}", first_line + i)).unwrap_or_else(|| panic!("site {i}"));
        // Three tasks, each polled once more than it yields.
        assert_eq!(site.polls, 3 * (u64::from(i) * 4 + 1), "site {i}: {}", site.location);
        assert_eq!(site.tasks.spawned, 3, "site {i}");
    }
}

#[test]
fn fifty_busy_spawn_sites_write_at_most_a_megabyte_and_a_quarter_per_minute() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sites.loopscope");
    let interval = Duration::from_millis(500);
    let report = run_recorded(multi_thread(2), Session::builder().record_to(&path).interval(interval), || async {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Vec<_> = (0..50 * 8).map(|i| spawn_site(i % 50, steady(i as u64, Arc::clone(&stop)))).collect();
        tokio::time::sleep(Duration::from_millis(2_600)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(report.sites.len(), 50);
    let rec = Recording::read(&path).unwrap();
    let steady = rec.intervals.iter().filter(|i| i.sites.len() == 50).count();
    assert!(steady >= 4, "{steady} intervals with all 50 sites active");
    // What the file grows by: from the first interval on (the header and the sites' declarations
    // are written once), per interval; at the default 1 s interval there are 60 per minute (a 1 s
    // interval holds more values than a 500 ms one, but the number of distinct histogram buckets,
    // which sets the size, saturates).
    let bytes = std::fs::metadata(&path).unwrap().len();
    let mut reader = loopscope::core::format::Reader::open(&path).unwrap();
    let first_interval = loop {
        let at = reader.offset();
        match reader.next_frame().unwrap() {
            Some(loopscope::core::model::Frame::Interval(_)) => break at,
            Some(_) => {}
            None => panic!("no interval in {}", path.display()),
        }
    };
    let per_minute = (bytes - first_interval) as f64 / rec.intervals.len() as f64 * 60.0;
    eprintln!(
        "50 sites: {bytes} bytes, {} from the first of {} intervals on: {:.0} KB per minute at 1 s",
        bytes - first_interval,
        rec.intervals.len(),
        per_minute / 1e3
    );
    // 640 KB per minute when this test was written (2026-11-25, the whole file over 7 intervals);
    // about 1 MB since (2026-12-01: interval frames ~15 KB each, task ages 1.3 KB). The bound
    // catches further growth; bringing it back down is open work (docs/format.md "Size").
    assert!(per_minute < 1_250_000.0, "{per_minute} bytes per minute");
}

#[test]
fn the_lean_profile_measures_lag_with_a_probe_instead_of_per_task() {
    let mut line = 0;
    let report = run_recorded(multi_thread(2), Session::builder().profile(loopscope::Profile::Lean), || async {
        line = line!() + 1;
        let ticker = tokio::spawn(async {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        ticker.await.unwrap();
    });
    assert_eq!(report.runtime.sched.count, 0, "no per-task scheduling latency in the lean profile");
    assert!(report.runtime.lag.count >= 5, "the probe sampled every 10 ms: {:?}", report.runtime.lag);
    assert!(!report.recording.schedule_latency_tracked);
    // Only the program's task is profiled, not the probe.
    assert_eq!(report.sites.len(), 1, "{:?}", report.sites.iter().map(|s| &s.location).collect::<Vec<_>>());
    assert!(report.site(&format!("{}:{line}", file!())).is_some());
    assert_eq!(report.runtime.tasks.spawned, 1);
    assert_eq!(report.runtime.polls, 31);
}

#[test]
fn live_frames_carry_the_whole_recording_and_a_gone_receiver_is_harmless() {
    use loopscope::core::model::Frame;
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let report = run_recorded(
        multi_thread(2),
        Session::builder().interval(Duration::from_millis(20)).live_frames(tx),
        || async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    );
    let frames: Vec<Frame> = rx.try_iter().collect();
    assert!(matches!(frames.first(), Some(Frame::Header(_))), "the header comes first");
    assert!(matches!(frames.last(), Some(Frame::Footer(_))), "the footer comes last");
    let intervals = frames.iter().filter(|f| matches!(f, Frame::Interval(_))).count() as u64;
    assert_eq!(intervals, report.recording.intervals, "every interval of the report went live");

    // A receiver dropped at once, or one that never reads (a tiny channel): the program runs on.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    drop(rx);
    let (tx2, _never_read) = std::sync::mpsc::sync_channel(1);
    for live in [None, Some(tx), Some(tx2)] {
        let mut b = Session::builder().interval(Duration::from_millis(20));
        if let Some(l) = live {
            b = b.live_frames(l);
        }
        let report = run_recorded(multi_thread(2), b, || async {
            tokio::spawn(async {
                for _ in 0..1000 {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            })
            .await
            .unwrap();
        });
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.runtime.polls >= 1000, "{}", report.runtime.polls);
    }
}
