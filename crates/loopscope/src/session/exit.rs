//! Recordings survive `std::process::exit`.
//!
//! `exit` runs the C library's exit handlers and ends the process without unwinding: no
//! destructor runs, so a session would never finish and its last interval and footer would be
//! lost. One handler, registered with `atexit` when the first session is installed, asks every
//! session still running to write what it measured and its footer, and waits a bounded time for
//! each (the flusher could be stuck on a full disk: the program's exit is never held up for long).

use std::sync::Mutex;
use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::outputs::flusher::Cmd;

/// Sessions running, by id, with their flusher's channel.
static RUNNING: Mutex<Vec<(u64, Sender<Cmd>)>> = Mutex::new(Vec::new());

/// How long the exit handler waits for each session's flusher.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Adds a running session; registers the exit handler once per process.
pub(crate) fn register(id: u64, flusher: Sender<Cmd>) {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        // SAFETY: registers a function with C linkage that never unwinds.
        unsafe { libc::atexit(at_exit) };
    });
    crate::hot::lock(&RUNNING).push((id, flusher));
}

/// Removes a session that finished.
pub(crate) fn unregister(id: u64) {
    crate::hot::lock(&RUNNING).retain(|(s, _)| *s != id);
}

extern "C" fn at_exit() {
    // Never panic out of an exit handler, and never wait on a lock a dying thread may hold.
    let _ = std::panic::catch_unwind(|| {
        let Ok(running) = RUNNING.try_lock() else { return };
        let flushers: Vec<Sender<Cmd>> = running.iter().map(|(_, tx)| tx.clone()).collect();
        drop(running);
        for tx in flushers {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            if tx.send(Cmd::Exit(done)).is_ok() {
                let _ = wait.recv_timeout(EXIT_WAIT);
            }
        }
    });
}
