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

/// Restores the terminal when dropped.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Longest time between two redraws while data arrives; keys redraw at once.
const FRAME: Duration = Duration::from_millis(100);

/// Where live frames come from, and what to do when they stop.
pub struct Feed {
    /// Frames of the session.
    pub frames: Receiver<Frame>,
}

/// Runs the TUI until the user quits. With a feed, frames are folded in as they arrive.
pub fn run(mut app: App, feed: Option<Feed>) -> io::Result<()> {
    let term_signal = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&term_signal))?;
    }
    let mut terminal = ratatui::try_init()?;
    let _guard = Guard;
    let mut dirty = true;
    let mut last_step = Instant::now();
    let mut feed = feed;
    while !app.quit && !term_signal.load(Ordering::Relaxed) {
        if let Some(f) = &feed {
            loop {
                match f.frames.try_recv() {
                    Ok(frame) => {
                        app.timeline.push(frame);
                        dirty = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        app.status =
                            Some(if app.timeline.finished { "session finished".into() } else { "feed closed".into() });
                        feed = None;
                        dirty = true;
                        break;
                    }
                }
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
        }
        if event::poll(FRAME)? {
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
    }
    Ok(())
}
