//! The public entry point: [`Session`] and its [`SessionBuilder`].

pub(crate) mod exit;
pub(crate) mod main_macro;
#[cfg(feature = "test")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use loopscope_core::report::Report;
use loopscope_core::units::unix_now_ns;
use loopscope_core::workload::WorkloadResult;
use tokio::runtime::Builder;

use crate::detector::watchdog::Watchdog;
use crate::hot::Shared;
use crate::outputs::flusher::{Cmd, Flusher, Meta};

/// Default length of one interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default slow-poll threshold.
pub const DEFAULT_SLOW_POLL: Duration = Duration::from_micros(100);
/// Default stall threshold: a poll this long is a stall.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(10);
/// Default sampling threshold: a poll still running after this long has its stack sampled.
pub const DEFAULT_SAMPLE_THRESHOLD: Duration = Duration::from_millis(1);
/// Default sampling period: a slow poll is sampled again every this long while it runs.
pub const DEFAULT_SAMPLE_PERIOD: Duration = Duration::from_millis(1);
/// Default budget of slow-poll samples for the whole program, per second.
pub const DEFAULT_SAMPLES_PER_SECOND: u32 = 100;
/// The dump threshold `loopscope run` and `loopscope record` use (a session built in a program
/// takes automatic dumps only when asked: [`SessionBuilder::dump_when_idle`]).
pub const DEFAULT_DUMP_IDLE: Duration = Duration::from_secs(2);
/// Default limit on distinct spawn sites; further sites are merged into one "other" site.
pub const DEFAULT_MAX_SITES: u32 = 1000;
/// How often [`SessionBuilder::otlp`] exports, by default.
pub const DEFAULT_OTLP_PERIOD: Duration = Duration::from_secs(10);
/// Spawn sites with a `site` label of their own in the Prometheus figures, by default.
pub const DEFAULT_PROMETHEUS_SITES: usize = 20;

/// How much the recorder measures, against how much it costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Poll time per spawn site and worker, and per-task scheduling latency through tokio's
    /// `track_task_schedule_latency` (two clock reads per wake-up and poll). The default.
    #[default]
    Full,
    /// Poll time per spawn site and worker; scheduling latency for the runtime as a whole from a
    /// lag probe (one task of the recorder's, every 10 ms) instead of per task.
    Lean,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Profile::Full),
            "lean" => Ok(Profile::Lean),
            _ => Err(format!("unknown profile {s:?}: expected full or lean")),
        }
    }
}

/// Errors from configuring or finishing a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A builder setting is out of range.
    #[error("invalid loopscope setting `{key}`: {value} ({expected})")]
    InvalidSetting {
        /// The setting.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// An environment variable could not be parsed.
    #[error("invalid environment variable {var}={value:?}: expected {expected}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The live data cannot be served where [`SessionBuilder::serve`] asks.
    #[error("invalid loopscope setting `serve`: {addr} ({why})")]
    Serve {
        /// The address given.
        addr: String,
        /// What is expected, or what failed.
        why: String,
    },
    /// The Prometheus endpoint cannot listen where [`SessionBuilder::prometheus`] asks.
    #[error("invalid loopscope setting `prometheus`: {addr} ({why})")]
    Prometheus {
        /// The address given.
        addr: String,
        /// What is expected, or what failed.
        why: String,
    },
    /// The OTLP exporter cannot push where [`SessionBuilder::otlp`] asks (or this build lacks the
    /// `otlp` feature).
    #[error("invalid loopscope setting `otlp`: {endpoint} ({why})")]
    Otlp {
        /// The endpoint given.
        endpoint: String,
        /// What is expected, or what failed.
        why: String,
    },
    /// The recorder's background thread could not be started or died.
    #[error("loopscope recorder failed: {0}")]
    Recorder(String),
}

/// Configures a [`Session`].
#[derive(Clone, Debug)]
pub struct SessionBuilder {
    enabled: bool,
    path: Option<PathBuf>,
    interval: Duration,
    slow_poll: Duration,
    schedule_latency: bool,
    lag_probe: bool,
    stall_threshold: Option<Duration>,
    sampling: Option<crate::detector::watchdog::Sampling>,
    capture_stacks: bool,
    max_sites: u32,
    dump_idle: Option<Duration>,
    dump_signal: bool,
    dump_repeat: bool,
    task_ages: bool,
    workload: Option<String>,
    live: Option<std::sync::mpsc::SyncSender<crate::core::model::Frame>>,
    serve: Option<String>,
    serve_public: bool,
    prometheus: Option<String>,
    prometheus_public: bool,
    prometheus_sites: usize,
    otlp: Option<String>,
    otlp_period: Duration,
    /// A `#[loopscope::test]`'s state: its poll hooks also tell the test which poll runs.
    #[cfg(feature = "test")]
    test: Option<Arc<testing::state::TestState>>,
}

impl Default for SessionBuilder {
    fn default() -> Self {
        SessionBuilder {
            enabled: true,
            path: None,
            interval: DEFAULT_INTERVAL,
            slow_poll: DEFAULT_SLOW_POLL,
            schedule_latency: true,
            lag_probe: false,
            stall_threshold: Some(DEFAULT_STALL_THRESHOLD),
            sampling: Some(crate::detector::watchdog::Sampling {
                threshold: DEFAULT_SAMPLE_THRESHOLD,
                period: DEFAULT_SAMPLE_PERIOD,
                per_second: DEFAULT_SAMPLES_PER_SECOND,
            }),
            capture_stacks: true,
            dump_idle: None,
            dump_signal: false,
            dump_repeat: false,
            task_ages: true,
            max_sites: DEFAULT_MAX_SITES,
            workload: None,
            live: None,
            serve: None,
            serve_public: false,
            prometheus: None,
            prometheus_public: false,
            prometheus_sites: DEFAULT_PROMETHEUS_SITES,
            otlp: None,
            otlp_period: DEFAULT_OTLP_PERIOD,
            #[cfg(feature = "test")]
            test: None,
        }
    }
}

impl SessionBuilder {
    /// Serves the session's figures to Prometheus at `http://ADDR/metrics` (the text format 0.0.4,
    /// or OpenMetrics text to clients that ask for it):
    /// poll-time and scheduling-latency histograms per spawn site, stall counters by spawn site and
    /// category, worker busy ratios. `ADDR` is `HOST:PORT` on loopback (port 0: any free port,
    /// see [`Session::prometheus_at`]); a public address needs [`SessionBuilder::prometheus_public`].
    /// Serving runs on loopscope's own threads. See docs/fleet.md.
    pub fn prometheus(mut self, addr: impl Into<String>) -> Self {
        self.prometheus = Some(addr.into());
        self
    }

    /// Allows [`SessionBuilder::prometheus`] on a non-loopback address (anyone who reaches it can
    /// read the figures and the program's source file names; the endpoint says so once on stderr).
    pub fn prometheus_public(mut self, allow: bool) -> Self {
        self.prometheus_public = allow;
        self
    }

    /// How many spawn sites get a `site` label of their own in the Prometheus and OTLP figures
    /// (default 20): the first the session sees, from then on; the others share `site="other"`.
    pub fn prometheus_sites(mut self, n: usize) -> Self {
        self.prometheus_sites = n;
        self
    }

    /// Pushes the session's figures (the same as [`SessionBuilder::prometheus`]'s) to an
    /// OpenTelemetry collector over OTLP/HTTP with protobuf bodies: `endpoint` is the collector's
    /// base URL (`http://127.0.0.1:4318`) or its metrics URL. Plain HTTP: point it at a local
    /// collector agent. Exports every [`SessionBuilder::otlp_period`] and once more at the end, on
    /// loopscope's own thread. Needs the `otlp` cargo feature; without it, installing fails with
    /// [`Error::Otlp`].
    pub fn otlp(mut self, endpoint: impl Into<String>) -> Self {
        self.otlp = Some(endpoint.into());
        self
    }

    /// How often [`SessionBuilder::otlp`] exports (default 10 s).
    pub fn otlp_period(mut self, period: Duration) -> Self {
        self.otlp_period = period;
        self
    }

    /// Also hands every frame of the recording (header, declarations, intervals, stalls, footer)
    /// to `frames` as it is made, for a live view such as loopscope's TUI. The channel is never
    /// waited on: frames a slow receiver has no room for are dropped, and a receiver that is gone
    /// is forgotten; the profiled program is never held up.
    pub fn live_frames(mut self, frames: std::sync::mpsc::SyncSender<crate::core::model::Frame>) -> Self {
        self.live = Some(frames);
        self
    }

    /// Serves the session's live data for `loopscope tui --attach ADDR`: `unix:PATH` (or any
    /// path) for a Unix domain socket readable by this user only, or `127.0.0.1:PORT` for TCP
    /// (port 0 picks one; [`Session::serving_at`] says which). A non-loopback address is refused
    /// unless [`SessionBuilder::serve_public`] allows it. The server runs on its own threads and
    /// never holds up the program: slow or misbehaving clients are dropped.
    pub fn serve(mut self, addr: impl Into<String>) -> Self {
        self.serve = Some(addr.into());
        self
    }

    /// Allows [`SessionBuilder::serve`] on a non-loopback address (a warning is printed):
    /// anyone who can reach it can read the profile, stacks and source paths included.
    pub fn serve_public(mut self, allow: bool) -> Self {
        self.serve_public = allow;
        self
    }

    /// Streams the recording to `path` (created or truncated). Without it, the session only keeps
    /// the report in memory.
    pub fn record_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Length of one interval of the recording (default 1 s, at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Polls longer than this count as slow (default 100 µs).
    pub fn slow_poll_threshold(mut self, threshold: Duration) -> Self {
        self.slow_poll = threshold;
        self
    }

    /// Chooses what to measure: [`Profile::Full`] (default) or [`Profile::Lean`].
    pub fn profile(mut self, profile: Profile) -> Self {
        (self.schedule_latency, self.lag_probe) = match profile {
            Profile::Full => (true, false),
            Profile::Lean => (false, true),
        };
        self
    }

    /// Whether to track per-task scheduling latency with tokio's `track_task_schedule_latency`
    /// (default on; it costs about two clock reads per wake-up).
    pub fn schedule_latency(mut self, on: bool) -> Self {
        self.schedule_latency = on;
        self
    }

    /// Polls at least this long are stalls, raised live by the watchdog thread (default 10 ms,
    /// at least 1 ms).
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.stall_threshold = Some(threshold);
        self
    }

    /// Turns the stall detector (the watchdog thread) on or off (default on).
    pub fn stall_detector(mut self, on: bool) -> Self {
        self.stall_threshold = if on { Some(self.stall_threshold.unwrap_or(DEFAULT_STALL_THRESHOLD)) } else { None };
        self
    }

    /// Samples the stacks of polls that run longer than `threshold` (default 1 ms) but not as
    /// long as the stall threshold, again every `period` (default 1 ms) while they run, at most
    /// `per_second` samples a second for the whole program (default 100): where slow polls spend
    /// their time, per line of code, at a cost bounded by the budget. See docs/detector.md.
    pub fn sampling(mut self, threshold: Duration, period: Duration, per_second: u32) -> Self {
        self.sampling = Some(crate::detector::watchdog::Sampling { threshold, period, per_second });
        self
    }

    /// Turns slow-poll sampling on (with the current or default settings) or off.
    pub fn slow_poll_sampling(mut self, on: bool) -> Self {
        self.sampling = if on {
            self.sampling.or(Some(crate::detector::watchdog::Sampling {
                threshold: DEFAULT_SAMPLE_THRESHOLD,
                period: DEFAULT_SAMPLE_PERIOD,
                per_second: DEFAULT_SAMPLES_PER_SECOND,
            }))
        } else {
            None
        };
        self
    }

    /// Whether a stall captures the stuck thread's stack to name the blocking line (default on).
    /// Capture interrupts the thread once per stall with a real-time signal (`SIGRTMIN+7`); see
    /// `docs/detector.md`.
    pub fn capture_stacks(mut self, on: bool) -> Self {
        self.capture_stacks = on;
        self
    }

    /// Most distinct spawn sites recorded separately (default 1000); more are merged into one
    /// site named `<other sites>`, so memory stays bounded.
    pub fn max_sites(mut self, n: u32) -> Self {
        self.max_sites = n;
        self
    }

    /// Whether to follow every alive task: its spawn site, age and time since its last poll,
    /// per site each interval (default on; one store per poll, 2 MiB of table at most). Off, the
    /// report has no waiting tasks, task dumps have no idle times and no automatic dumps are
    /// taken. See docs/tasks.md.
    pub fn task_ages(mut self, on: bool) -> Self {
        self.task_ages = on;
        self
    }

    /// Takes a task dump (with the `taskdump` feature) once when a spawn site's tasks have not
    /// been polled for `after` (`None`, the default: never; [`DEFAULT_DUMP_IDLE`] is what
    /// `loopscope run` and `loopscope record` use), at most once per site and four times in all
    /// (once in all on a runtime with several workers, see [`SessionBuilder::repeat_dumps`]):
    /// what they wait for, with each group's await point. Off by default because a dump pauses
    /// the runtime and the first one reads the program's debug information into memory (tens to
    /// hundreds of MB, kept), and an idle listener is idle too. See docs/tasks.md.
    pub fn dump_when_idle(mut self, after: Option<Duration>) -> Self {
        self.dump_idle = after;
        self
    }

    /// Takes a task dump when the process receives `SIGUSR2` (default off; left off, with an
    /// error in the report, when the program handles `SIGUSR2` itself).
    pub fn dump_on_signal(mut self, on: bool) -> Self {
        self.dump_signal = on;
        self
    }

    /// Allows more than one task dump per session on a runtime with several workers (default
    /// off: tokio 1.54's dump can leave such a runtime one worker short after a dump, and a
    /// further dump can then stop a worker for good, tokio-rs/tokio#8370; a runtime with one
    /// worker takes any number). See docs/tasks.md.
    pub fn repeat_dumps(mut self, on: bool) -> Self {
        self.dump_repeat = on;
        self
    }

    /// Names the workload in the recording's header.
    pub fn workload(mut self, name: impl Into<String>) -> Self {
        self.workload = Some(name.into());
        self
    }

    /// Whether [`SessionBuilder::install`] will record anything.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// What a session built from this builder measures, in words: e.g. "poll time and per-task
    /// scheduling latency per spawn site and worker, and polls of 10ms or more (stalls)".
    pub fn measures(&self) -> String {
        let sched = if self.schedule_latency {
            "poll time and per-task scheduling latency per spawn site and worker"
        } else if self.lag_probe {
            "poll time per spawn site and worker, and scheduling latency from a lag probe"
        } else {
            "poll time per spawn site and worker"
        };
        let sampled = match &self.sampling {
            Some(sm) => format!(", stacks of polls over {} sampled", humantime::format_duration(sm.threshold)),
            None => String::new(),
        };
        match self.stall_threshold {
            Some(t) => format!("{sched}{sampled}, and polls of {} or more (stalls)", humantime::format_duration(t)),
            None => format!("{sched}{sampled} (stall detector off)"),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.interval < Duration::from_millis(10) {
            return Err(Error::InvalidSetting {
                key: "interval",
                value: format!("{:?}", self.interval),
                expected: "at least 10ms",
            });
        }
        if self.slow_poll.is_zero() {
            return Err(Error::InvalidSetting {
                key: "slow_poll_threshold",
                value: "0".into(),
                expected: "greater than zero",
            });
        }
        if let Some(t) = self.stall_threshold
            && t < Duration::from_millis(1)
        {
            return Err(Error::InvalidSetting {
                key: "stall_threshold",
                value: format!("{t:?}"),
                expected: "at least 1ms",
            });
        }
        if let Some(sm) = &self.sampling {
            if sm.threshold < Duration::from_micros(100) || sm.period < Duration::from_micros(100) {
                return Err(Error::InvalidSetting {
                    key: "sampling",
                    value: format!("threshold {:?}, period {:?}", sm.threshold, sm.period),
                    expected: "a threshold and a period of at least 100us",
                });
            }
            if sm.per_second == 0 || sm.per_second > 10_000 {
                return Err(Error::InvalidSetting {
                    key: "sampling",
                    value: format!("{} samples per second", sm.per_second),
                    expected: "1 to 10000 samples per second",
                });
            }
        }
        if self.max_sites == 0 || self.max_sites > 100_000 {
            return Err(Error::InvalidSetting {
                key: "max_sites",
                value: self.max_sites.to_string(),
                expected: "1 to 100000",
            });
        }
        Ok(())
    }

    /// Installs the recorder's hooks on a tokio runtime builder and starts its background threads.
    /// Build the runtime afterwards; call [`Session::finish`] when the program is done.
    ///
    /// Every setting is checked before anything starts; if an output then fails to start, the
    /// ones already started are stopped and the error returned: installing never hangs and never
    /// leaves a thread behind.
    pub fn install(self, builder: &mut Builder) -> Result<Session, Error> {
        if !self.enabled {
            return Ok(Session { active: None });
        }
        self.validate()?;
        let serve_addr = match &self.serve {
            None => None,
            Some(addr) => Some(crate::outputs::serve::ServeAddr::parse(addr).ok_or_else(|| Error::InvalidSetting {
                key: "serve",
                value: addr.clone(),
                expected: "unix:PATH, a socket path, or HOST:PORT such as 127.0.0.1:6670",
            })?),
        };
        let slow_ns = u64::try_from(self.slow_poll.as_nanos()).unwrap_or(u64::MAX);
        let stall_ns = self.stall_threshold.map_or(u64::MAX, |t| t.as_nanos() as u64);
        let shared = Shared::new(slow_ns, stall_ns, self.max_sites, self.lag_probe);
        if !self.task_ages {
            shared.stop_following_tasks();
        }
        // The outputs are declared before the senders that feed them, so that on an early return
        // the senders are dropped first and each output's threads see the end of their input
        // before the output is stopped (waiting for them).
        let mut server = None;
        let mut prometheus = None;
        let mut otlp = None;
        let mut live: Vec<std::sync::mpsc::SyncSender<crate::core::model::Frame>> = self.live.into_iter().collect();
        if let Some(parsed) = &serve_addr {
            let (frames, rx) = mpsc::sync_channel(crate::outputs::serve::CLIENT_QUEUE);
            live.push(frames);
            let weak = Arc::downgrade(&shared);
            let on_dump: crate::outputs::serve::DumpHook = Arc::new(move |n| {
                if let Some(s) = weak.upgrade() {
                    s.dumps().request(&s, loopscope_core::model::DumpTrigger::Request, n);
                }
            });
            server = Some(crate::outputs::serve::Server::start(parsed, self.serve_public, rx, on_dump)?);
        }
        if let Some(addr) = &self.prometheus {
            let (frames, rx) = mpsc::sync_channel(crate::outputs::serve::CLIENT_QUEUE);
            live.push(frames);
            prometheus = Some(crate::outputs::prometheus::Exporter::start(
                addr,
                self.prometheus_public,
                self.prometheus_sites,
                rx,
            )?);
        }
        if let Some(endpoint) = &self.otlp {
            otlp = Some(start_otlp(endpoint, self.otlp_period, self.prometheus_sites, &mut live)?);
        }
        let meta = Meta {
            path: self.path,
            interval: self.interval,
            workload: self.workload,
            schedule_latency: self.schedule_latency,
            stall_threshold: self.stall_threshold,
            command_line: std::env::args().collect(),
            start_unix_ns: unix_now_ns(),
            live,
            sampling: self
                .sampling
                .filter(|sm| self.stall_threshold.is_none_or(|t| sm.threshold < t))
                .map(|sm| (sm.threshold.as_nanos() as u64, sm.period.as_nanos() as u64)),
            dump_idle: self.dump_idle,
            dump_signal: self.dump_signal,
        };
        let (tx, rx) = mpsc::channel();
        let flusher = Flusher::new(Arc::clone(&shared), meta);
        let thread = std::thread::Builder::new()
            .name("loopscope-flusher".into())
            .spawn(move || flusher.run(rx))
            .map_err(|e| Error::Recorder(format!("cannot start the flusher thread: {e}")))?;
        // The watchdog also samples slow polls; it runs if either is asked for.
        let watch = crate::detector::watchdog::Config {
            stall_threshold: self.stall_threshold,
            sampling: self.sampling.filter(|s| self.stall_threshold.is_none_or(|t| s.threshold < t)),
            capture_stacks: self.capture_stacks,
        };
        let watchdog = match watch.stall_threshold.is_some() || watch.sampling.is_some() {
            false => None,
            true => {
                let (stop_tx, stop_rx) = mpsc::channel();
                let dog_shared = Arc::clone(&shared);
                let dog_tx = tx.clone();
                let spawned = std::thread::Builder::new()
                    .name("loopscope-watchdog".into())
                    .spawn(move || Watchdog::new(dog_shared, watch, dog_tx).run(stop_rx));
                match spawned {
                    Ok(handle) => {
                        shared.set_event_sink(Some(tx.clone()));
                        Some((stop_tx, handle))
                    }
                    Err(e) => {
                        let _ = tx.send(Cmd::Finish);
                        let _ = thread.join();
                        return Err(Error::Recorder(format!("cannot start the watchdog thread: {e}")));
                    }
                }
            }
        };
        shared.dumps().set_sink(Some(tx.clone()));
        shared.dumps().signals_seen_now();
        shared.dumps().set_repeat(self.dump_repeat);
        if self.dump_signal
            && let Err(e) = crate::dump::signal::install()
        {
            shared.report_error(e);
        }
        crate::session::exit::register(shared.id(), tx.clone());
        // Panics in tasks are counted whatever the detector does (a nested runtime is also a
        // stall when it runs).
        crate::detector::mistakes::watch(&shared);
        if self.schedule_latency {
            builder.track_task_schedule_latency();
        }
        // The poll hooks contain their own panics (only their cold paths can panic: a
        // `catch_unwind` around every poll costs about 4 ns, measured with `just bench-hooks`).
        // Each combination of clock and profile gets hooks compiled for it alone.
        // A test's session: its hooks also tell the test which poll runs (test sessions never
        // track scheduling latency).
        #[cfg(feature = "test")]
        let test_hooks = self.test.map(|test| {
            test.attach(&shared);
            match shared.reads_tsc() {
                true => install_test_poll_hooks::<true>(builder, &shared, test),
                false => install_test_poll_hooks::<false>(builder, &shared, test),
            }
        });
        #[cfg(not(feature = "test"))]
        let test_hooks: Option<()> = None;
        if test_hooks.is_none() {
            match (shared.reads_tsc(), self.schedule_latency, self.task_ages) {
                (true, true, true) => install_poll_hooks::<true, true, true>(builder, &shared),
                (true, false, true) => install_poll_hooks::<true, false, true>(builder, &shared),
                (false, true, true) => install_poll_hooks::<false, true, true>(builder, &shared),
                (false, false, true) => install_poll_hooks::<false, false, true>(builder, &shared),
                (true, true, false) => install_poll_hooks::<true, true, false>(builder, &shared),
                (true, false, false) => install_poll_hooks::<true, false, false>(builder, &shared),
                (false, true, false) => install_poll_hooks::<false, true, false>(builder, &shared),
                (false, false, false) => install_poll_hooks::<false, false, false>(builder, &shared),
            }
        }
        let s = Arc::clone(&shared);
        builder.on_task_spawn(move |meta| s.contain((), || s.on_spawn(meta)));
        let s = Arc::clone(&shared);
        builder.on_task_terminate(move |meta| s.contain((), || s.on_terminate(meta)));
        Ok(Session { active: Some(Active { shared, tx, thread: Some(thread), watchdog, server, prometheus, otlp }) })
    }
}

/// Installs the per-poll hooks, for a TSC clock or not and with per-task scheduling latency or
/// not.
fn install_poll_hooks<const TSC: bool, const SCHED: bool, const TASKS: bool>(
    builder: &mut Builder,
    shared: &Arc<Shared>,
) {
    let s = Arc::clone(shared);
    builder.on_before_task_poll(move |meta| s.before_poll::<TSC, SCHED, TASKS>(meta));
    let s = Arc::clone(shared);
    builder.on_after_task_poll(move |_| s.after_poll::<TSC>());
}

/// The per-poll hooks of a `#[loopscope::test]`'s session: the recorder's, and around them the
/// test's state in a thread-local (code inside the poll finds its test there). The test's own
/// figures (clocks, scheduler counts: system calls) are read outside the recorder's poll, so that
/// a stack the watchdog takes while the thread is in them is never taken for the poll's.
#[cfg(feature = "test")]
fn install_test_poll_hooks<const TSC: bool>(
    builder: &mut Builder,
    shared: &Arc<Shared>,
    test: Arc<testing::state::TestState>,
) {
    let (s, t) = (Arc::clone(shared), Arc::clone(&test));
    builder.on_before_task_poll(move |meta| {
        t.enter_poll();
        s.before_poll::<TSC, false, true>(meta);
        t.poll_began(s.current_poll());
    });
    let s = Arc::clone(shared);
    builder.on_after_task_poll(move |_| {
        s.after_poll::<TSC>();
        test.leave_poll();
    });
}

/// Asks a session for task dumps ([`Session::request_dump`]) without holding the session: it
/// does nothing once the session has finished.
#[derive(Clone)]
pub struct DumpHandle(std::sync::Weak<Shared>);

impl std::fmt::Debug for DumpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DumpHandle")
    }
}

impl DumpHandle {
    /// Asks for a task dump now (recorded as not taken when it cannot be: see
    /// [`Session::request_dump`]); false when the session has finished, or a dump is under way or
    /// was taken less than a second ago (then none is taken now).
    pub fn request(&self) -> bool {
        self.0.upgrade().is_some_and(|s| s.dumps().request(&s, loopscope_core::model::DumpTrigger::Request, 0))
    }
}

/// A recording session attached to one tokio runtime.
///
/// Dropping a session without calling [`Session::finish`] still finishes the recording.
pub struct Session {
    active: Option<Active>,
}

struct Active {
    shared: Arc<Shared>,
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<Report>>,
    watchdog: Option<(Sender<()>, JoinHandle<()>)>,
    server: Option<crate::outputs::serve::Server>,
    prometheus: Option<crate::outputs::prometheus::Exporter>,
    // Without the feature the field is always `None` (its type has no values).
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    otlp: Option<Otlp>,
}

#[cfg(feature = "otlp")]
type Otlp = crate::outputs::otlp::OtlpExporter;
#[cfg(not(feature = "otlp"))]
type Otlp = std::convert::Infallible;

type Live = Vec<std::sync::mpsc::SyncSender<crate::core::model::Frame>>;

#[cfg(feature = "otlp")]
fn start_otlp(endpoint: &str, period: Duration, sites: usize, live: &mut Live) -> Result<Otlp, Error> {
    let (frames, rx) = mpsc::sync_channel(crate::outputs::serve::CLIENT_QUEUE);
    live.push(frames);
    crate::outputs::otlp::OtlpExporter::start(endpoint, period, sites, rx)
}

#[cfg(not(feature = "otlp"))]
fn start_otlp(endpoint: &str, _: Duration, _: usize, _: &mut Live) -> Result<Otlp, Error> {
    Err(Error::Otlp { endpoint: endpoint.into(), why: "this build of loopscope lacks the `otlp` cargo feature".into() })
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("enabled", &self.active.is_some()).finish()
    }
}

impl Session {
    /// A builder with default settings.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// A builder driven by the environment:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `LOOPSCOPE_RECORD` | path of the recording; unset or empty (and no `LOOPSCOPE_SERVE`): the session does nothing |
    /// | `LOOPSCOPE_INTERVAL` | interval length, e.g. `1s`, `500ms` |
    /// | `LOOPSCOPE_SLOW_POLL` | slow-poll threshold, e.g. `100us` |
    /// | `LOOPSCOPE_PROFILE` | `full` (default) or `lean` |
    /// | `LOOPSCOPE_SCHEDULE_LATENCY` | `0` to turn per-task scheduling latency off |
    /// | `LOOPSCOPE_STALL_THRESHOLD` | stall threshold, e.g. `10ms`; `off` turns the detector off |
    /// | `LOOPSCOPE_SAMPLE_THRESHOLD` | slow-poll sampling threshold, e.g. `1ms`; `off` turns sampling off |
    /// | `LOOPSCOPE_SAMPLES_PER_SECOND` | the budget of slow-poll samples a second (default 100) |
    /// | `LOOPSCOPE_SERVE` | serve live data for `loopscope tui --attach`: `unix:PATH` or `127.0.0.1:PORT` |
    /// | `LOOPSCOPE_SERVE_PUBLIC` | `1` allows a non-loopback `LOOPSCOPE_SERVE` address |
    /// | `LOOPSCOPE_PROMETHEUS` | serve Prometheus figures at `http://HOST:PORT/metrics` (loopback) |
    /// | `LOOPSCOPE_PROMETHEUS_PUBLIC` | `1` allows a non-loopback `LOOPSCOPE_PROMETHEUS` address |
    /// | `LOOPSCOPE_OTLP` | push figures to an OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (`otlp` feature) |
    /// | `LOOPSCOPE_OTLP_PERIOD` | its export period, e.g. `10s` |
    /// | `LOOPSCOPE_DUMP_IDLE` | take a task dump when a site's tasks are idle this long, e.g. `2s`; `off` (the default) never |
    /// | `LOOPSCOPE_DUMP_SIGNAL` | `1` takes a task dump on `SIGUSR2` |
    /// | `LOOPSCOPE_DUMP_REPEAT` | `1` allows more than one task dump on a runtime with several workers ([`SessionBuilder::repeat_dumps`]) |
    /// | `LOOPSCOPE_TASK_AGES` | `0` stops following alive tasks' ages |
    pub fn from_env() -> Result<SessionBuilder, Error> {
        let mut b = SessionBuilder::default();
        let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        let serving = set("LOOPSCOPE_SERVE") || set("LOOPSCOPE_PROMETHEUS") || set("LOOPSCOPE_OTLP");
        match std::env::var_os("LOOPSCOPE_RECORD") {
            Some(p) if !p.is_empty() => b.path = Some(PathBuf::from(p)),
            // Serving alone profiles too, without a file.
            _ if serving => {}
            _ => {
                b.enabled = false;
                return Ok(b);
            }
        }
        if let Ok(v) = std::env::var("LOOPSCOPE_PROFILE")
            && !v.is_empty()
        {
            let profile =
                v.parse().map_err(|_| Error::Env { var: "LOOPSCOPE_PROFILE", value: v, expected: "full or lean" })?;
            b = b.profile(profile);
        }
        if let Some(d) = env_duration("LOOPSCOPE_INTERVAL")? {
            b.interval = d;
        }
        if let Some(d) = env_duration("LOOPSCOPE_SLOW_POLL")? {
            b.slow_poll = d;
        }
        match std::env::var("LOOPSCOPE_STALL_THRESHOLD") {
            Ok(v) if v == "off" || v == "0" => b.stall_threshold = None,
            _ => {
                if let Some(d) = env_duration("LOOPSCOPE_STALL_THRESHOLD")? {
                    b.stall_threshold = Some(d);
                }
            }
        }
        match std::env::var("LOOPSCOPE_SAMPLE_THRESHOLD") {
            Ok(v) if v == "off" || v == "0" => b.sampling = None,
            _ => {
                if let Some(d) = env_duration("LOOPSCOPE_SAMPLE_THRESHOLD")?
                    && let Some(sm) = &mut b.sampling
                {
                    sm.threshold = d;
                }
            }
        }
        if let Ok(v) = std::env::var("LOOPSCOPE_SAMPLES_PER_SECOND")
            && !v.is_empty()
            && let Some(sm) = &mut b.sampling
        {
            sm.per_second = v.parse().map_err(|_| Error::Env {
                var: "LOOPSCOPE_SAMPLES_PER_SECOND",
                value: v,
                expected: "a number of samples per second, 1 to 10000",
            })?;
        }
        if let Ok(v) = std::env::var("LOOPSCOPE_SERVE")
            && !v.is_empty()
        {
            b.serve = Some(v);
        }
        b.serve_public = env_flag("LOOPSCOPE_SERVE_PUBLIC")?;
        if let Ok(v) = std::env::var("LOOPSCOPE_PROMETHEUS")
            && !v.is_empty()
        {
            b.prometheus = Some(v);
        }
        b.prometheus_public = env_flag("LOOPSCOPE_PROMETHEUS_PUBLIC")?;
        if let Ok(v) = std::env::var("LOOPSCOPE_OTLP")
            && !v.is_empty()
        {
            b.otlp = Some(v);
        }
        if let Some(d) = env_duration("LOOPSCOPE_OTLP_PERIOD")? {
            b.otlp_period = d;
        }
        match std::env::var("LOOPSCOPE_DUMP_IDLE") {
            Ok(v) if v == "off" => b.dump_idle = None,
            _ => {
                if let Some(d) = env_duration("LOOPSCOPE_DUMP_IDLE")? {
                    b.dump_idle = Some(d);
                }
            }
        }
        b.dump_signal = env_flag("LOOPSCOPE_DUMP_SIGNAL")?;
        b.dump_repeat = env_flag("LOOPSCOPE_DUMP_REPEAT")?;
        if let Ok(v) = std::env::var("LOOPSCOPE_TASK_AGES") {
            b.task_ages = match v.as_str() {
                "1" | "true" | "on" | "" => true,
                "0" | "false" | "off" => false,
                _ => return Err(Error::Env { var: "LOOPSCOPE_TASK_AGES", value: v, expected: "0 or 1" }),
            };
        }
        if let Ok(v) = std::env::var("LOOPSCOPE_SCHEDULE_LATENCY") {
            b.schedule_latency = match v.as_str() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" => false,
                _ => {
                    return Err(Error::Env { var: "LOOPSCOPE_SCHEDULE_LATENCY", value: v, expected: "0 or 1" });
                }
            };
        }
        Ok(b)
    }

    /// Where the Prometheus endpoint listens ([`SessionBuilder::prometheus`]), with a port 0
    /// resolved.
    pub fn prometheus_at(&self) -> Option<std::net::SocketAddr> {
        self.active.as_ref()?.prometheus.as_ref().map(|p| p.bound)
    }

    /// Where the live data is served ([`SessionBuilder::serve`]), with a TCP port 0 resolved.
    pub fn serving_at(&self) -> Option<String> {
        self.active.as_ref()?.server.as_ref().map(|s| s.bound.to_string())
    }

    /// Asks for a task dump now: what every task waits for, recorded as a frame of the
    /// recording (with the `taskdump` feature; without it the recording says a dump was asked for
    /// and could not be taken, as it does for a further dump of a runtime with several workers,
    /// see [`SessionBuilder::repeat_dumps`]). Returns at once; false when the session records
    /// nothing, or a dump is under way or was taken less than a second ago (then none is taken
    /// now).
    pub fn request_dump(&self) -> bool {
        let Some(a) = self.active.as_ref() else { return false };
        a.shared.dumps().request(&a.shared, loopscope_core::model::DumpTrigger::Request, 0)
    }

    /// A handle that asks this session for task dumps from anywhere (another thread, an admin
    /// endpoint of the program); `None` when the session records nothing.
    pub fn dump_handle(&self) -> Option<DumpHandle> {
        self.active.as_ref().map(|a| DumpHandle(Arc::downgrade(&a.shared)))
    }

    /// Whether this session records anything.
    pub fn is_enabled(&self) -> bool {
        self.active.is_some()
    }

    /// Adds a workload's own end-to-end figures to the recording and the report.
    pub fn record_workload(&self, result: &WorkloadResult) {
        if let Some(a) = &self.active {
            let _ = a.tx.send(Cmd::Workload(Box::new(result.clone())));
        }
    }

    /// Errors the recorder has met so far (each is also printed once on stderr).
    pub fn errors(&self) -> Vec<String> {
        self.active.as_ref().map(|a| a.shared.errors()).unwrap_or_default()
    }

    /// Flushes the last interval, writes the footer, stops the background thread and returns the
    /// report (`None` for a session that records nothing).
    pub fn finish(mut self) -> Result<Option<Report>, Error> {
        match self.active.take() {
            None => Ok(None),
            Some(a) => a.finish().map(Some),
        }
    }
}

impl Active {
    fn finish(mut self) -> Result<Report, Error> {
        crate::session::exit::unregister(self.shared.id());
        // Polls from now on are not recorded, and no thread takes the runtime's handle again.
        self.shared.stop_recording();
        self.shared.set_event_sink(None);
        self.shared.dumps().set_sink(None);
        // The watchdog first: its last events reach the flusher before the finish message.
        if let Some((stop, handle)) = self.watchdog.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        let _ = self.tx.send(Cmd::Finish);
        let thread = self.thread.take().ok_or_else(|| Error::Recorder("already finished".into()))?;
        let joined = thread.join();
        // Whatever the flusher did, the handle must not keep the runtime alive through the hooks.
        self.shared.forget_runtime();
        // The flusher's end closed the live stream; clients have been sent the footer.
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
        if let Some(mut exporter) = self.prometheus.take() {
            exporter.stop();
        }
        // The flusher's end closed the exporter's frames: it makes its last export and ends.
        #[cfg(feature = "otlp")]
        if let Some(mut exporter) = self.otlp.take() {
            exporter.join();
        }
        joined.map_err(|_| Error::Recorder("the flusher thread panicked".into()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(a) = self.active.take() {
            let _ = a.finish();
        }
    }
}

/// A yes/no variable; unset or empty is no.
fn env_flag(var: &'static str) -> Result<bool, Error> {
    match std::env::var(var) {
        Err(_) => Ok(false),
        Ok(v) => match v.as_str() {
            "1" | "true" | "on" => Ok(true),
            "0" | "false" | "off" | "" => Ok(false),
            _ => Err(Error::Env { var, value: v, expected: "0 or 1" }),
        },
    }
}

fn env_duration(var: &'static str) -> Result<Option<Duration>, Error> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => humantime::parse_duration(&v).map(Some).map_err(|_| Error::Env {
            var,
            value: v,
            expected: "a duration such as 1s, 250ms or 100us",
        }),
        _ => Ok(None),
    }
}
