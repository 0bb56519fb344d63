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
    DEFAULT_SAMPLE_PERIOD, DEFAULT_SAMPLE_THRESHOLD, DEFAULT_SAMPLES_PER_SECOND, Error, Profile, Session,
    SessionBuilder,
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

#[doc(hidden)]
#[cfg(tokio_unstable)]
pub mod __private {
    pub use crate::session::main_macro::block_on;
    pub use tokio;
}
