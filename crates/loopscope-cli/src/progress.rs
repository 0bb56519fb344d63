//! A progress bar on stderr while a workload runs, drawn from its own thread (never from the
//! profiled runtime) and only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    stop: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// Starts a bar for a run of `total`, labelled `what`; does nothing without a terminal.
    pub fn start(what: &str, total: Duration) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { stop: None };
        }
        let bar = ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            loop {
                let elapsed = start.elapsed();
                bar.set_position(elapsed.as_millis() as u64);
                bar.set_message(format!("{:.1}s / {:.1}s", elapsed.as_secs_f64(), total.as_secs_f64()));
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            bar.finish_and_clear();
        });
        Progress { stop: Some((tx, thread)) }
    }

    pub fn finish(mut self) {
        if let Some((tx, thread)) = self.stop.take() {
            let _ = tx.send(());
            let _ = thread.join();
        }
    }
}
