//! `#[loopscope::test]`'s machinery: tests that fail when their async code blocks the runtime.
//!
//! A test runs on its own runtime with its own recording session (the stall detector at a test
//! threshold, 2 ms by default), its body spawned as a task so that its polls are watched like any
//! other task's. After the body finished and the runtime shut down, the recording is read back
//! and its stacks symbolized here, in the test process (`loopscope-symbols`), and the
//! [`Verdict`] names what blocked. Strict mode also records calls to the C library's blocking
//! functions made inside a poll, however short (`interpose`).
//!
//! The attribute is the usual way in; [`TestRun`] is the same thing as a function, for a test
//! that wants the verdict as a value (a snapshot of the message, for instance).

// Not in a statically linked binary: there is no C library after the executable to call on.
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu", not(target_feature = "crt-static")))]
mod interpose;
mod policy;
pub(crate) mod state;
mod verdict;

use std::future::Future;
use std::panic::Location;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::{Builder, LocalOptions, LocalRuntime, Runtime, RuntimeFlavor};
use tokio::task::JoinHandle;

pub use policy::{POLICY_FILE, PolicyError};
pub use verdict::{Finding, FindingKind, Verdict};

use state::TestState;
use verdict::Pattern;

use crate::Session;

/// A poll this long or longer fails a test, unless the test, `LOOPSCOPE_TEST_THRESHOLD` or the
/// crate's `loopscope-test.toml` says otherwise.
pub const DEFAULT_TEST_THRESHOLD: Duration = Duration::from_millis(2);

/// The variable that sets the stall threshold of every test that does not set its own.
pub const THRESHOLD_VAR: &str = "LOOPSCOPE_TEST_THRESHOLD";

/// Why a test could not be watched (it then fails: a test that was not watched never passes).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The crate's `loopscope-test.toml` cannot be used.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// `LOOPSCOPE_TEST_THRESHOLD` cannot be used.
    #[error("invalid environment variable {THRESHOLD_VAR}={value:?}: expected a duration of 1ms or more, such as 5ms")]
    Threshold {
        /// Its value.
        value: String,
    },
    /// Strict mode is not available on this platform.
    #[error(
        "strict mode catches calls to the C library's blocking functions on Linux x86-64 with glibc, \
         dynamically linked, only; elsewhere leave `strict` off (stalls are still caught)"
    )]
    StrictUnsupported,
    /// The test's recording could not be created in the temporary directory.
    #[error("cannot create the test's recording {}: {source}", path.display())]
    Recording {
        /// The file (or the temporary directory).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The recorder could not start.
    #[error("the recorder cannot start: {0}")]
    Session(#[from] crate::Error),
    /// The test's runtime could not be built.
    #[error("the test's runtime cannot be built: {0}")]
    Runtime(std::io::Error),
}

/// A test run under the stall detector: what `#[loopscope::test]` expands to, usable directly.
///
/// ```rust,no_run
/// # #[cfg(feature = "test")] {
/// let checked = loopscope::testing::TestRun::new("my_test")
///     .stall_threshold(std::time::Duration::from_millis(5))
///     .run(tokio::runtime::Builder::new_current_thread(), async {
///         std::thread::sleep(std::time::Duration::from_millis(20)); // blocks the runtime
///     })
///     .unwrap();
/// assert!(!checked.verdict.passed());
/// println!("{}", checked.verdict); // the message a failing #[loopscope::test] panics with
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TestRun {
    name: String,
    threshold: Option<Duration>,
    strict: Option<bool>,
    allow: Vec<String>,
    crate_root: Option<PathBuf>,
    compiled_root: Option<&'static str>,
    multi_thread: bool,
}

/// A test's output and its verdict.
#[derive(Debug)]
#[must_use = "a verdict that nobody looks at fails nothing: call `assert_clean`"]
pub struct Checked<T> {
    /// What the test body returned.
    pub output: T,
    /// What the recorder saw.
    pub verdict: Verdict,
}

impl<T> Checked<T> {
    /// The test body's output; panics with the verdict's message if the body blocked its runtime
    /// (or the recorder could not watch it).
    #[track_caller]
    pub fn assert_clean(self) -> T {
        if !self.verdict.passed() {
            panic!("{}", self.verdict);
        }
        self.output
    }
}

impl TestRun {
    /// A test named `name` (in messages), with the defaults: the current-thread runtime, the
    /// threshold from `LOOPSCOPE_TEST_THRESHOLD`, the crate's `loopscope-test.toml` or
    /// [`DEFAULT_TEST_THRESHOLD`], not strict.
    pub fn new(name: impl Into<String>) -> TestRun {
        TestRun {
            name: name.into(),
            threshold: None,
            strict: None,
            allow: Vec::new(),
            crate_root: None,
            compiled_root: None,
            multi_thread: false,
        }
    }

    /// Polls this long or longer fail the test (at least 1 ms).
    pub fn stall_threshold(mut self, threshold: Duration) -> TestRun {
        self.threshold = Some(threshold);
        self
    }

    /// Also fails on calls to known blocking functions of the C library inside a poll, however
    /// short (Linux x86-64, glibc). See docs/testing.md for what it can and cannot see.
    pub fn strict(mut self, on: bool) -> TestRun {
        self.strict = Some(on);
        self
    }

    /// Code that may block: a function (`my_crate::logger::flush`, and what is nested in it) or a
    /// source path (`src/log.rs`, or `src/log.rs:42` for one line). A stall or blocking call whose
    /// stack passes through it is not a failure.
    pub fn allow(mut self, pattern: impl Into<String>) -> TestRun {
        self.allow.push(pattern.into());
        self
    }

    /// Where the crate's `loopscope-test.toml` is looked for. By default: the directory in
    /// `CARGO_MANIFEST_DIR` (which `cargo test` and `cargo nextest` set), else the one the
    /// attribute was compiled in.
    pub fn crate_root(mut self, dir: impl Into<PathBuf>) -> TestRun {
        self.crate_root = Some(dir.into());
        self
    }

    /// The crate's directory when the test was compiled (`option_env!("CARGO_MANIFEST_DIR")`).
    #[doc(hidden)]
    pub fn compiled_in(mut self, dir: Option<&'static str>) -> TestRun {
        self.compiled_root = dir;
        self
    }

    /// The runtime flavor `run`'s builder makes: `CurrentThread` (the default; the test then runs
    /// on a `LocalRuntime`, so `spawn_local` works too) or `MultiThread`.
    pub fn flavor(mut self, flavor: RuntimeFlavor) -> TestRun {
        self.multi_thread = flavor == RuntimeFlavor::MultiThread;
        self
    }

    /// Runs `body` as a task of the runtime `builder` makes (of this run's [`TestRun::flavor`];
    /// I/O and time are enabled here), under the recorder, and returns its output with the
    /// verdict. A panic of the body goes on after the runtime shut down (with the verdict on
    /// stderr if something blocked too).
    #[track_caller]
    pub fn run<F>(self, builder: Builder, body: F) -> Result<Checked<F::Output>, SetupError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut watch = self.start(builder, Location::caller())?;
        let (task, done) = watch.spawn(body);
        Ok(watch.finish_task(task, done))
    }

    /// As [`TestRun::run`], for a body that is not `Send`: on the current-thread runtime it runs
    /// as a task all the same; on the multi-thread runtime it runs in `block_on`, outside the
    /// runtime's tasks, so only the tasks it spawns are watched (the verdict says so).
    #[track_caller]
    pub fn run_local<F>(self, builder: Builder, body: F) -> Result<Checked<F::Output>, SetupError>
    where
        F: Future + 'static,
    {
        let mut watch = self.start(builder, Location::caller())?;
        match &watch.runtime {
            Some(Rt::Local(rt)) => {
                let task = rt.spawn_local(body);
                Ok(watch.finish_task(task, None))
            }
            Some(Rt::Multi(_)) => Ok(watch.finish_in_place(body)),
            None => unreachable!("a watch starts with its runtime"),
        }
    }

    /// Reads the settings, installs the recorder and builds the runtime.
    fn start(self, mut builder: Builder, body_at: &'static Location<'static>) -> Result<Watch, SetupError> {
        let settings = self.settings()?;
        if settings.strict
            && !cfg!(all(
                target_os = "linux",
                target_arch = "x86_64",
                target_env = "gnu",
                not(target_feature = "crt-static")
            ))
        {
            return Err(SetupError::StrictUnsupported);
        }
        let recording = TempRecording::create()?;
        let state = TestState::new(settings.strict, settings.threshold.as_nanos() as u64);
        builder.enable_all();
        let mut session = Session::builder()
            .record_to(&recording.0)
            .stall_threshold(settings.threshold)
            .schedule_latency(false)
            .workload(self.name.clone());
        session.test = Some(Arc::clone(&state));
        let session = session.install(&mut builder)?;
        let runtime = match self.multi_thread {
            true => builder.build().map(Rt::Multi),
            false => builder.build_local(LocalOptions::default()).map(Rt::Local),
        }
        .map_err(SetupError::Runtime)?;
        Ok(Watch {
            name: self.name,
            settings,
            session: Some(session),
            state,
            recording,
            runtime: Some(runtime),
            body_at: format!("{}:{}:{}", body_at.file(), body_at.line(), body_at.column()),
            notes: Vec::new(),
        })
    }

    /// The test's settings: its own, then `LOOPSCOPE_TEST_THRESHOLD`, then the crate's
    /// `loopscope-test.toml`, then the defaults.
    fn settings(&self) -> Result<Settings, SetupError> {
        let root = self
            .crate_root
            .clone()
            .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR").filter(|d| !d.is_empty()).map(PathBuf::from))
            .or_else(|| self.compiled_root.map(PathBuf::from));
        let policy = match &root {
            Some(dir) => policy::load(dir)?,
            None => None,
        };
        let from_env = match std::env::var(THRESHOLD_VAR) {
            Ok(v) if !v.is_empty() => match humantime::parse_duration(v.trim()) {
                Ok(d) if d >= Duration::from_millis(1) => Some(d),
                _ => return Err(SetupError::Threshold { value: v }),
            },
            _ => None,
        };
        let (threshold, threshold_from) = if let Some(t) = self.threshold {
            (t, "the test's `stall_threshold`")
        } else if let Some(t) = from_env {
            (t, THRESHOLD_VAR)
        } else if let Some(t) = policy.as_ref().and_then(|p| p.stall_threshold) {
            (t, POLICY_FILE)
        } else {
            (DEFAULT_TEST_THRESHOLD, "the default")
        };
        let strict = self.strict.or(policy.as_ref().and_then(|p| p.strict)).unwrap_or(false);
        let allow =
            self.allow.iter().chain(policy.iter().flat_map(|p| p.allow.iter())).map(|p| Pattern::parse(p)).collect();
        Ok(Settings { threshold, threshold_from, strict, allow })
    }
}

struct Settings {
    threshold: Duration,
    threshold_from: &'static str,
    strict: bool,
    allow: Vec<Pattern>,
}

enum Rt {
    Local(LocalRuntime),
    Multi(Runtime),
}

/// A recording in the temporary directory, removed when dropped.
struct TempRecording(PathBuf);

impl TempRecording {
    /// A new file of this process's in the temporary directory, readable by its owner only:
    /// created here (never an existing file or a link planted at a guessable name), then
    /// truncated and written by the session's flusher.
    fn create() -> Result<TempRecording, SetupError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let mut last = None;
        for _ in 0..64 {
            let nonce =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
            let path = std::env::temp_dir().join(format!(
                "loopscope-test-{}-{}-{nonce:08x}.loopscope",
                std::process::id(),
                RUNS.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(_) => return Ok(TempRecording(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(source) => return Err(SetupError::Recording { path, source }),
            }
        }
        Err(SetupError::Recording {
            path: std::env::temp_dir(),
            source: last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()),
        })
    }
}

impl Drop for TempRecording {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One test being watched: its session, its runtime, its recording.
struct Watch {
    name: String,
    settings: Settings,
    session: Option<Session>,
    state: Arc<TestState>,
    recording: TempRecording,
    runtime: Option<Rt>,
    body_at: String,
    notes: Vec<String>,
}

/// How long a multi-thread test waits for a poll that does not return before it gives up on it.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// The same for a thread inside `tokio::task::block_in_place` (its worker handed over, the
/// runtime going on without it): blocking there is allowed, waiting this long is not.
pub const GIVE_UP_IN_PLACE_AFTER: Duration = Duration::from_secs(60);

/// Says that the body's task is done (returned or panicked) when dropped.
struct Done(std::sync::mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Watch {
    /// Spawns the body as the test's task; on the multi-thread runtime, with a channel that says
    /// when it is done, so that the test thread can give up on a poll that never returns.
    #[track_caller]
    fn spawn<F>(&self, body: F) -> (JoinHandle<F::Output>, Option<std::sync::mpsc::Receiver<()>>)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(Rt::Local(rt)) => (rt.spawn_local(body), None),
            Some(Rt::Multi(rt)) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let task = rt.spawn(async move {
                    let _done = Done(tx);
                    body.await
                });
                (task, Some(rx))
            }
            None => unreachable!("a watch starts with its runtime"),
        }
    }

    /// Waits for the body's task, shuts the runtime down, and judges. On the multi-thread
    /// runtime, a poll still running after [`GIVE_UP_AFTER`] (outside `allow_blocking`) is given
    /// up on: the test fails with what the recorder saw, and the runtime is shut down without
    /// waiting for the blocked thread (a nested executor waiting for the runtime's own timer, for
    /// instance, waits forever).
    #[track_caller]
    fn finish_task<T: 'static>(
        &mut self,
        task: JoinHandle<T>,
        done: Option<std::sync::mpsc::Receiver<()>>,
    ) -> Checked<T> {
        if let Some(done) = done
            && let Some((stuck, thread)) = self.wait(&done)
        {
            // What the stuck thread is in now: the kernel's view over a short window (a thread
            // stuck for seconds is the program's, whatever the watchdog saw when it was raised).
            let cpu0 = crate::detector::kernel::thread_cpu_ns(thread.tid);
            let window = Duration::from_millis(50);
            std::thread::sleep(window);
            let share = crate::detector::kernel::cpu_share(
                cpu0,
                crate::detector::kernel::thread_cpu_ns(thread.tid),
                window.as_nanos() as u64,
            );
            let (category, _, _) = crate::detector::kernel::classify(thread.tid, share);
            self.state.set_stuck(thread.decl.id, category);
            if let Some(Rt::Multi(rt)) = self.runtime.take() {
                rt.shutdown_background();
            }
            self.notes.push(format!(
                "the test gave up after a poll had blocked its thread for {} without returning (the thread is \
                 left blocked): a deadlock?",
                loopscope_core::units::fmt_duration(stuck)
            ));
            let verdict = self.finish();
            panic!("{verdict}");
        }
        let joined = match self.runtime.as_ref() {
            Some(Rt::Local(rt)) => rt.block_on(task),
            Some(Rt::Multi(rt)) => rt.block_on(task),
            None => unreachable!("the runtime runs until the body is done"),
        };
        let verdict = self.finish();
        match joined {
            Ok(output) => Checked { output, verdict },
            Err(e) => {
                if !verdict.passed() {
                    say_verdict(&verdict);
                }
                match e.try_into_panic() {
                    Ok(payload) => std::panic::resume_unwind(payload),
                    Err(e) => panic!("the test's task ended without finishing: {e}"),
                }
            }
        }
    }

    /// Waits until the body's task is done; `Some((how long, its thread))` if a poll blocked for
    /// [`GIVE_UP_AFTER`] first ([`GIVE_UP_IN_PLACE_AFTER`] inside `block_in_place`).
    fn wait(&self, done: &std::sync::mpsc::Receiver<()>) -> Option<(Duration, Arc<crate::hot::ThreadSlot>)> {
        let shared = &self.session.as_ref()?.active.as_ref()?.shared;
        loop {
            match done.recv_timeout(Duration::from_millis(100)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return None,
            }
            if self.state.allowing() {
                continue;
            }
            let now = shared.now_raw();
            let longest = shared
                .threads()
                .into_iter()
                .filter_map(|t| {
                    let since = t.in_poll_since.load(Ordering::Relaxed);
                    // A thread in `block_in_place` handed its worker over: the runtime goes on,
                    // and only a far longer wait is taken for a deadlock.
                    let limit = if shared.handed_off(&t) { GIVE_UP_IN_PLACE_AFTER } else { GIVE_UP_AFTER };
                    let d = Duration::from_nanos(shared.nanos_between(since, now));
                    (since != 0 && d >= limit).then_some((d, t))
                })
                .max_by_key(|(d, _)| *d);
            if let Some(stuck) = longest {
                return Some(stuck);
            }
        }
    }

    /// Runs a body that is not `Send` in `block_on` on the multi-thread runtime.
    #[track_caller]
    fn finish_in_place<F: Future>(&mut self, body: F) -> Checked<F::Output> {
        self.notes.push(
            "the test's body is not `Send`, so on the multi-thread runtime it ran in `block_on`, outside the \
             runtime's tasks: its own polls were not watched (the tasks it spawned were). The current-thread \
             flavor watches it."
                .into(),
        );
        let Some(Rt::Multi(rt)) = self.runtime.as_ref() else { unreachable!("only on the multi-thread runtime") };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body)));
        let verdict = self.finish();
        match out {
            Ok(output) => Checked { output, verdict },
            Err(payload) => {
                if !verdict.passed() {
                    say_verdict(&verdict);
                }
                std::panic::resume_unwind(payload)
            }
        }
    }

    /// Shuts the runtime down (tasks still alive are dropped), finishes the recording and judges
    /// it.
    fn finish(&mut self) -> Verdict {
        drop(self.runtime.take());
        let mut errors = Vec::new();
        match self.session.take().map(Session::finish) {
            Some(Ok(Some(report))) => errors.extend(report.errors),
            Some(Ok(None)) | None => {}
            Some(Err(e)) => errors.push(e.to_string()),
        }
        verdict::judge(verdict::Inputs {
            test: &self.name,
            recording: &self.recording.0,
            state: &self.state,
            threshold: self.settings.threshold,
            threshold_from: self.settings.threshold_from,
            strict: self.settings.strict,
            allow: &self.settings.allow,
            body_site: &self.body_at,
            errors,
            notes: std::mem::take(&mut self.notes),
        })
    }
}

/// The verdict of a test whose body panicked too, on stderr (the panic is the test's failure).
fn say_verdict(verdict: &Verdict) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{verdict}");
}

/// What `#[loopscope::test]` expands to calls into here.
#[doc(hidden)]
pub mod glue {
    use std::cell::Cell;
    use std::future::Future;
    use std::panic::Location;

    use tokio::runtime::{Builder, RuntimeFlavor};

    use super::TestRun;

    /// The test's body, for choosing how to run it by whether it is `Send`.
    pub struct Body<F>(Cell<Option<F>>);

    impl<F> Body<F> {
        /// Wraps the body's future.
        pub fn new(body: F) -> Body<F> {
            Body(Cell::new(Some(body)))
        }

        fn take(&self) -> F {
            self.0.take().expect("a test body runs once")
        }
    }

    fn flavor(multi_thread: bool) -> RuntimeFlavor {
        if multi_thread { RuntimeFlavor::MultiThread } else { RuntimeFlavor::CurrentThread }
    }

    /// A `Send` body: a task on either runtime.
    pub trait RunSpawned {
        /// The body's output.
        type Output;
        /// Runs the test; panics with the verdict if it blocked.
        fn run(&self, run: TestRun, builder: Builder, multi_thread: bool) -> Self::Output;
    }

    impl<F> RunSpawned for &&Body<F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        type Output = F::Output;
        #[track_caller]
        fn run(&self, run: TestRun, builder: Builder, multi_thread: bool) -> F::Output {
            let at = Location::caller();
            let mut watch = run.flavor(flavor(multi_thread)).start(builder, at).unwrap_or_else(|e| fail(e));
            let (task, done) = watch.spawn(self.take());
            watch.finish_task(task, done).assert_clean()
        }
    }

    /// A `Send` body whose error is not (`Result<(), Box<dyn Error>>`, a test's usual signature):
    /// a task all the same, its error carried back as its `Debug` text, which the test harness
    /// prints as it would have printed the error.
    pub trait RunReported {
        /// The body's output.
        type Output;
        /// Runs the test; panics with the verdict if it blocked.
        fn run(&self, run: TestRun, builder: Builder, multi_thread: bool) -> Self::Output;
    }

    impl<F, T, E> RunReported for &Body<F>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: std::fmt::Debug + From<Reported> + 'static,
    {
        type Output = Result<T, E>;
        #[track_caller]
        fn run(&self, run: TestRun, builder: Builder, multi_thread: bool) -> Result<T, E> {
            let at = Location::caller();
            let mut watch = run.flavor(flavor(multi_thread)).start(builder, at).unwrap_or_else(|e| fail(e));
            let body = self.take();
            let (task, done) = watch.spawn(async move { body.await.map_err(|e| Reported(format!("{e:?}"))) });
            watch.finish_task(task, done).assert_clean().map_err(E::from)
        }
    }

    /// A test's error that could not leave its task's thread, as its `Debug` text.
    pub struct Reported(String);

    impl std::fmt::Debug for Reported {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::fmt::Display for Reported {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Reported {}

    /// A body that is not `Send`: a task on the current-thread runtime, `block_on` on the
    /// multi-thread one.
    pub trait RunInPlace {
        /// The body's output.
        type Output;
        /// Runs the test; panics with the verdict if it blocked.
        fn run(&self, run: TestRun, builder: Builder, multi_thread: bool) -> Self::Output;
    }

    impl<F> RunInPlace for Body<F>
    where
        F: Future + 'static,
    {
        type Output = F::Output;
        #[track_caller]
        fn run(&self, run: TestRun, builder: Builder, multi_thread: bool) -> F::Output {
            let at = Location::caller();
            let mut watch = run.flavor(flavor(multi_thread)).start(builder, at).unwrap_or_else(|e| fail(e));
            let body = self.take();
            match &watch.runtime {
                Some(super::Rt::Local(rt)) => {
                    let task = rt.spawn_local(body);
                    watch.finish_task(task, None).assert_clean()
                }
                Some(super::Rt::Multi(_)) => watch.finish_in_place(body).assert_clean(),
                None => unreachable!("a watch starts with its runtime"),
            }
        }
    }

    #[track_caller]
    fn fail(e: super::SetupError) -> ! {
        panic!("loopscope: this test cannot be watched, so it cannot pass: {e}")
    }
}
