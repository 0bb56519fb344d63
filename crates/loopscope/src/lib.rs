#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// The recorder is built on tokio's unstable runtime hooks (`on_before_task_poll`, `TaskMeta`,
// schedule latency), which exist only with `--cfg tokio_unstable`. Without it, this one error says
// how to turn it on, instead of the dozen errors from tokio's missing items that would follow.
#[cfg(all(not(tokio_unstable), not(doc)))]
compile_error!(
    "loopscope needs tokio's unstable runtime hooks, and this build lacks `--cfg tokio_unstable`. \
     Add these lines to `.cargo/config.toml` in your project's root directory (beside Cargo.toml):

    [build]
    rustflags = [\"--cfg\", \"tokio_unstable\"]

or build with RUSTFLAGS=\"--cfg tokio_unstable\" (a RUSTFLAGS variable in the environment replaces \
the config's rustflags, so it must carry the cfg as well). `loopscope doctor` checks a project's set-up."
);
#[cfg(all(not(tokio_unstable), doc))]
compile_error!(
    "loopscope's documentation needs `--cfg tokio_unstable` for rustdoc as well: add \
     `rustdocflags = [\"--cfg\", \"tokio_unstable\"]` under `[build]` in `.cargo/config.toml`, or set \
     RUSTDOCFLAGS=\"--cfg tokio_unstable\"."
);

/// The stall detector: watchdog, stack capture and unwinding, the kernel's view of a thread.
#[cfg(tokio_unstable)]
mod detector;
/// Task dumps: every task's await point, from tokio's task dump (the `taskdump` feature).
#[cfg(tokio_unstable)]
mod dump;
/// The per-poll path and what it writes: clock, spawn sites, per-thread cells; the lag probe.
#[cfg(tokio_unstable)]
mod hot;
/// Where measurements go: the flusher (file, report, live frames), the live server, the fleet
/// exporters.
#[cfg(tokio_unstable)]
mod outputs;
/// The public API: `Session`, its builder, `#[loopscope::main]`'s runtime, the exit handler.
#[cfg(tokio_unstable)]
mod session;

/// The `tracing` layer that records which spans each poll runs in (the `tracing` feature).
#[cfg(all(tokio_unstable, feature = "tracing"))]
pub mod tracing_layer;

#[cfg(tokio_unstable)]
pub use outputs::{prometheus, serve};
#[cfg(all(tokio_unstable, feature = "tracing"))]
pub use tracing_layer::{SpanLayer, tracing_layer};

pub use loopscope_core as core;
pub use loopscope_core::report::Report;
pub use loopscope_core::workload::WorkloadResult;
#[cfg(tokio_unstable)]
pub use session::{
    DEFAULT_DUMP_IDLE, DEFAULT_SAMPLE_PERIOD, DEFAULT_SAMPLE_THRESHOLD, DEFAULT_SAMPLES_PER_SECOND, DumpHandle, Error,
    Profile, Session, SessionBuilder,
};

/// Runs an `async fn` on a tokio runtime with the recorder installed from the environment: a
/// drop-in for `#[tokio::main]`, with the same arguments (`flavor`, `worker_threads`,
/// `start_paused`, `unhandled_panic`; `crate = "path"` names where this crate is).
///
/// ```rust,no_run
/// #[loopscope::main(worker_threads = 4)]
/// async fn main() {
///     // ...
/// }
/// ```
///
/// The recorder follows the variables of [`Session::from_env`] (`LOOPSCOPE_RECORD`,
/// `LOOPSCOPE_SERVE`, `LOOPSCOPE_PROFILE`, `LOOPSCOPE_STALL_THRESHOLD`, ...). Without
/// `LOOPSCOPE_RECORD`, `LOOPSCOPE_SERVE`, `LOOPSCOPE_PROMETHEUS` or `LOOPSCOPE_OTLP` nothing is
/// installed: no hook, no thread, no file. A bad
/// variable is reported once on stderr and the program runs unprofiled. When the recorder is
/// installed, one line on stderr says what it measures and where it goes (the file, the live
/// socket, the Prometheus endpoint, the OTLP collector); after the runtime shuts down the
/// recording is finished and one more line says where it is (`LOOPSCOPE_QUIET=1` silences both).
#[cfg(tokio_unstable)]
pub use loopscope_macros::main;

/// Runs an `async fn` test on a tokio runtime under the stall detector and **fails the test** when
/// a poll blocked the runtime: a drop-in for `#[tokio::test]`, with the same arguments (`flavor`,
/// default `"current_thread"`; `worker_threads`, `start_paused`, `unhandled_panic`, `name`;
/// `crate = "path"` names where this crate is), and:
///
/// - `stall_threshold = "5ms"`: polls this long fail the test (default 2 ms, or
///   `LOOPSCOPE_TEST_THRESHOLD`, or `stall_threshold` in the crate's `loopscope-test.toml`);
/// - `strict`: also fail on calls to known blocking C library functions inside a poll, however
///   short (Linux x86-64, glibc);
/// - `allow = ["my_crate::logger::flush", "src/log.rs"]`: functions or source paths that may
///   block.
///
/// ```rust,no_run
/// #[loopscope::test]
/// async fn handler_does_not_block() {
///     // std::thread::sleep(Duration::from_millis(5)) here fails the test, naming this line
///     tokio::time::sleep(std::time::Duration::from_millis(5)).await; // passes
/// }
/// ```
///
/// The test fails after its runtime shut down, with a message that names each blocking line,
/// what it called, its category and duration, the task's spawn site and the program's frames of
/// the stack; `#[should_panic]` works as with `#[tokio::test]`. Stalls the host caused (a worker
/// waiting for a CPU) never fail a test. Needs this crate's `test` feature (in
/// `[dev-dependencies]`); see docs/testing.md and [`testing`].
#[cfg(all(tokio_unstable, feature = "test"))]
pub use loopscope_macros::test;
/// `#[loopscope::test]` needs this crate's `test` feature: add
/// `loopscope = { ..., features = ["test"] }` under `[dev-dependencies]`.
#[cfg(all(tokio_unstable, not(feature = "test")))]
pub use loopscope_macros::test_without_feature as test;

#[cfg(all(tokio_unstable, feature = "test"))]
pub use session::testing;

/// Runs `f`, a section of code known to block and accepted: a stall of a `#[loopscope::test]`
/// whose poll blocked for the threshold only because of time spent in such sections is not a
/// failure, and strict mode does not flag the blocking calls made inside.
///
/// ```rust
/// # fn write_audit_line(_: &str) {}
/// // A small synchronous write the project has decided to accept.
/// loopscope::allow_blocking(|| write_audit_line("user logged in"));
/// ```
///
/// Outside a test's poll it only runs `f` (one thread-local read with the `test` feature, nothing
/// at all without it), so it can stay in production code.
#[cfg(tokio_unstable)]
pub fn allow_blocking<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "test")]
    return session::testing::state::allow_blocking(f);
    #[cfg(not(feature = "test"))]
    f()
}

#[doc(hidden)]
#[cfg(tokio_unstable)]
pub mod __private {
    pub use crate::session::main_macro::block_on;
    #[cfg(feature = "test")]
    pub use crate::session::testing::glue as test;
    pub use tokio;
}
