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
use crate::attach::FeedEvent;
use crate::timeline::Timeline;

/// Restores the terminal when dropped.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Longest time between two redraws while data arrives; keys redraw at once.
const FRAME: Duration = Duration::from_millis(100);

/// Where live data comes from.
pub enum Feed {
    /// Frames of a session in this process.
    Frames(Receiver<Frame>),
    /// An attached session ([`crate::attach::attach`]).
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
            Ok(FeedEvent::Reset) => app.timeline = Timeline::default(),
            Ok(FeedEvent::Status(s)) => app.status = s,
            Err(TryRecvError::Empty) => return (any, false),
            Err(TryRecvError::Disconnected) => return (true, true),
        }
        any = true;
    }
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
