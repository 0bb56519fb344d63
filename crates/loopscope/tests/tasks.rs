//! What is stuck rather than slow: tasks that pile up (a leak) and tasks that panic where nobody
//! looks.

use std::time::Duration;

use loopscope::Session;
use loopscope::core::report::Report;

fn record(app: impl std::future::Future<Output = ()>) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.loopscope");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = Session::builder().record_to(&path).interval(Duration::from_millis(100)).install(&mut b).unwrap();
    let rt = b.build().unwrap();
    rt.block_on(app);
    // The leaked tasks are still alive: the runtime drops them at shutdown.
    rt.shutdown_background();
    session.finish().unwrap();
    Report::from_file(&path).unwrap()
}

/// The tests of this file record one at a time: panics are counted process-wide by the hook.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn panics_in_tasks_are_counted_with_their_message_and_line() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut line = 0;
    let report = record(async {
        let mut handles = Vec::new();
        for i in 0..10u32 {
            // Seven detached (their panics are lost to the program), three awaited.
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await;
                if i < 100 {
                    panic!("bad input {}", i % 2);
                }
            });
            line = line!() - 3;
            if i >= 7 {
                handles.push(task);
            }
        }
        for h in handles {
            assert!(h.await.unwrap_err().is_panic());
        }
        // The detached ones have run by now: they yielded once, as the awaited ones did.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A panic outside any task is not a task's.
        let _ = std::thread::spawn(|| panic!("not a task")).join();
    });
    let here = format!("{}:{line}:", file!());
    let at_line: Vec<_> =
        report.panics.iter().filter(|p| p.location.as_deref().is_some_and(|l| l.contains(&here))).collect();
    let count = |m: &str| at_line.iter().filter(|p| p.message == m).map(|p| p.count).sum::<u64>();
    assert_eq!((count("bad input 0"), count("bad input 1")), (5, 5), "{:#?}", report.panics);
    assert!(at_line.iter().all(|p| p.spawn_site.as_deref().is_some_and(|s| s.contains(file!()))), "{at_line:#?}");
    assert!(!report.panics.iter().any(|p| p.message == "not a task"), "{:#?}", report.panics);
}

#[test]
fn tasks_that_pile_up_are_flagged_and_steady_ones_are_not() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut leak_line = 0;
    let mut steady_line = 0;
    let report = record(async {
        let (_keep, never) = tokio::sync::watch::channel(());
        for _ in 0..15 {
            // Per "request": one task that finishes, and one that waits for a signal that never
            // comes (a leak).
            for _ in 0..20 {
                let mut never = never.clone();
                tokio::spawn(async move {
                    let _ = never.changed().await;
                });
                leak_line = line!() - 3;
                tokio::spawn(async { tokio::time::sleep(Duration::from_millis(30)).await });
                steady_line = line!() - 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let site = |line: u32| format!("{}:{line}:", file!());
    let growing =
        |line: u32| report.growing.iter().find(|g| g.spawn_site.as_deref().is_some_and(|s| s.contains(&site(line))));
    let leak = growing(leak_line).unwrap_or_else(|| panic!("the leak: {:#?}", report.growing));
    // 20 tasks every ~100 ms: about 200 a second (a loaded host stretches the loop's sleeps).
    assert!(leak.growth.per_second > 50.0 && leak.growth.per_second < 260.0, "{leak:#?}");
    assert!(leak.growth.last_third_min > leak.growth.first_third_max);
    assert!(growing(steady_line).is_none(), "{:#?}", report.growing);
}
