//! If the program takes over the capture signal after loopscope installed its handler, loopscope
//! never sends it: stalls are still caught, without a stack. (A file of its own: signal handlers
//! belong to the whole process.)

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use loopscope::Session;

static THEIRS: AtomicU32 = AtomicU32::new(0);

extern "C" fn their_handler(_: libc::c_int) {
    THEIRS.fetch_add(1, Ordering::Relaxed);
}

fn one_stall() -> loopscope::Report {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signal.loopscope");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = Session::builder().record_to(&path).install(&mut b).unwrap();
    let rt = b.build().unwrap();
    rt.block_on(async { tokio::spawn(async { std::thread::sleep(Duration::from_millis(40)) }).await.unwrap() });
    drop(rt);
    session.finish().unwrap().unwrap();
    let mut resolver = loopscope::core::resolve::Resolver::new(loopscope_symbols::Symbolizer::boxed());
    loopscope::Report::from_file_with(&path, &mut resolver).unwrap()
}

#[test]
fn a_signal_the_program_took_over_is_never_sent() {
    let first = one_stall();
    assert_eq!(first.runtime.stalls.count, 1);
    assert!(first.stalls[0].blocking_site.is_some(), "loopscope's own handler captured the stack");

    let sig = libc::SIGRTMIN() + 7;
    // SAFETY: installs a plain async-signal-safe handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = their_handler as *const () as usize;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
    }
    let second = one_stall();
    assert_eq!(second.runtime.stalls.count, 1, "still caught");
    assert!(second.stalls[0].blocking_site.is_none(), "but without a stack");
    assert_eq!(THEIRS.load(Ordering::Relaxed), 0, "the program's handler never saw loopscope's signal");
}
