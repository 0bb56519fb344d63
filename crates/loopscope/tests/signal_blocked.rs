//! A program whose threads block the capture signal (an inherited signal mask): every stall is
//! still counted and classified, without a stack, and the watchdog never waits for a signal that
//! cannot arrive. (A file of its own: signal masks and handlers belong to the whole process.)

use std::time::Duration;

use loopscope::Session;
use loopscope::core::model::{Event, StallCategory};

#[test]
fn with_the_signal_blocked_every_stall_is_counted_without_a_stack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocked.loopscope");
    let p = path.clone();
    // The runtime's threads are started from a thread that blocks the signal: they inherit it.
    let report = std::thread::spawn(move || {
        // SAFETY: blocks one signal for this thread (and the threads it starts).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGRTMIN() + 7);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        let session = Session::builder().record_to(&p).install(&mut b).unwrap();
        let rt = b.build().unwrap();
        rt.block_on(async {
            for _ in 0..10 {
                tokio::spawn(async { std::thread::sleep(Duration::from_millis(30)) }).await.unwrap();
            }
        });
        drop(rt);
        session.finish().unwrap().unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(report.runtime.stalls.count, 10, "every stall counted: {:#?}", report.stalls);
    let blocked: Vec<_> = report.errors.iter().filter(|e| e.contains("blocks signal SIGRTMIN+7")).collect();
    assert_eq!(blocked.len(), 1, "said once: {:?}", report.errors);
    let rec = loopscope::core::format::Recording::read(&path).unwrap();
    let stalls = loopscope::core::stall::pair(&rec.events);
    assert_eq!(stalls.len(), 10);
    for s in &stalls {
        assert!(s.stall.frames.is_empty(), "no stack could be taken");
        assert_eq!(s.category, StallCategory::SyncSleep, "classified from the kernel's view: {s:?}");
        assert!(s.duration_ns.is_some_and(|d| d >= 30_000_000), "{s:?}");
    }
    // No look was taken either (a look needs a stack).
    assert!(!rec.events.iter().any(|e| matches!(e, Event::StallLook { frames, .. } if !frames.is_empty())));
}
