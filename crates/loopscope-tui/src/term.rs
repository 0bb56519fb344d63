//! The terminal: set-up and guaranteed restoration, and the event loop.
//!
//! The terminal is restored on every way out: a normal quit, Ctrl-C (a key in raw mode), a panic
//! anywhere (ratatui's panic hook, and the guard's `Drop` while unwinding), and SIGTERM/SIGHUP
//! (a flag the loop checks between frames).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use loopscope_core::model::Frame;
use ratatui::crossterm::event::{self, Event};

use crate::app::{App, map_key};
use loopscope_core::live::FeedEvent;

/// Restores the terminal, and the signal dispositions, when dropped.
struct Guard {
    handlers: Vec<signal_hook::SigId>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        ratatui::restore();
        for h in self.handlers.drain(..) {
            signal_hook::low_level::unregister(h);
        }
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Longest time between two redraws while data arrives; keys redraw at once.
const FRAME: Duration = Duration::from_millis(100);

/// Where live data comes from.
pub enum Feed {
    /// Frames of a session in this process.
    Frames(Receiver<Frame>),
    /// An attached session (`loopscope_core::live::attach`) or any other source of feed events.
    Attached(Receiver<FeedEvent>),
}

/// Folds in what has arrived; returns whether anything did, and whether the feed is gone.
fn drain(app: &mut App, feed: &Feed) -> (bool, bool) {
    let mut any = false;
    loop {
        let event = match feed {
            Feed::Frames(rx) => rx.try_recv().map(FeedEvent::Frame),
            Feed::Attached(rx) => rx.try_recv(),
        };
        match event {
            Ok(FeedEvent::Frame(f)) => app.timeline.push(f),
            Ok(FeedEvent::Reset) => app.reset(),
            Ok(FeedEvent::Status(s)) => app.status = s,
            Err(TryRecvError::Empty) => return (any, false),
            Err(TryRecvError::Disconnected) => return (true, true),
        }
        any = true;
    }
}

/// Whether the terminal hung up (its window or multiplexer went away without a signal reaching
/// us): reads would return end-of-file forever, and the loop would spin instead of waiting.
fn terminal_gone() -> bool {
    let mut fds =
        [libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: 1, events: 0, revents: 0 }];
    // SAFETY: two valid pollfd entries; a zero timeout never blocks.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    n > 0 && fds.iter().any(|f| f.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0)
}

/// Runs the TUI until the user quits. With a feed, frames are folded in as they arrive.
pub fn run(mut app: App, feed: Option<Feed>) -> io::Result<()> {
    let term_signal = Arc::new(AtomicBool::new(false));
    let mut handlers = Vec::new();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        handlers.push(signal_hook::flag::register(sig, Arc::clone(&term_signal))?);
    }
    let mut terminal = ratatui::try_init()?;
    let _guard = Guard { handlers };
    let heartbeat = Arc::new(std::sync::atomic::AtomicU64::new(now_secs()));
    let done = Arc::new(AtomicBool::new(false));
    let _stop_watch = StopOnDrop(Arc::clone(&done));
    watch_for_hangup(Arc::clone(&heartbeat), done);
    let mut dirty = true;
    let mut last_step = Instant::now();
    let mut feed = feed;
    while !app.quit && !term_signal.load(Ordering::Relaxed) && !terminal_gone() {
        if let Some(f) = &feed {
            let (any, gone) = drain(&mut app, f);
            dirty |= any;
            if gone {
                app.status = Some(if app.timeline.finished { "session finished".into() } else { "feed closed".into() });
                feed = None;
            }
        }
        if app.playing
            && last_step.elapsed() >= Duration::from_nanos(app.timeline.interval_ns()).min(Duration::from_secs(1))
        {
            app.advance();
            last_step = Instant::now();
            dirty = true;
        }
        if dirty {
            terminal.draw(|f| crate::ui::render(f, &mut app))?;
            dirty = false;
            // A test hook: proves the terminal is restored when the TUI panics mid-session.
            if std::env::var_os("LOOPSCOPE_TUI_FAILPOINT").is_some_and(|v| v == "panic") {
                panic!("LOOPSCOPE_TUI_FAILPOINT=panic");
            }
        }
        // Wait for input ourselves: crossterm's reader spins forever on a terminal that hung up
        // (end-of-file is not "no data"), so it is only asked once input is known to be there,
        // and for what it has buffered (keys that arrived together; resizes).
        if wait_for_input(FRAME) == Input::Gone {
            break;
        }
        while !terminal_gone() && event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(key) => {
                    if let Some(action) = map_key(key, app.typing_filter, app.help) {
                        app.apply(action);
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        heartbeat.store(now_secs(), Ordering::Relaxed);
    }
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Input {
    Ready,
    Timeout,
    Gone,
}

/// Waits until the terminal has input, `timeout` passes, or the terminal hangs up.
fn wait_for_input(timeout: Duration) -> Input {
    let mut fd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd entry.
    let n = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    if n > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Input::Gone
    } else if n > 0 {
        Input::Ready
    } else {
        Input::Timeout
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The last resort if the terminal hangs up while the loop is inside crossterm's reader (a
/// window of microseconds): a thread that ends the process when the terminal is gone and the
/// loop has not come round for a few seconds. A recording being written stays readable (it is
/// written frame by frame, as after `kill -9`).
fn watch_for_hangup(heartbeat: Arc<std::sync::atomic::AtomicU64>, done: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new().name("loopscope-tui-hangup".into()).spawn(move || {
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            if terminal_gone() && now_secs().saturating_sub(heartbeat.load(Ordering::Relaxed)) >= 3 {
                std::process::exit(2);
            }
        }
    });
}
