#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod exit;
mod fleet;
mod flusher;
mod hot;
mod kernel;
mod main_macro;
mod mistakes;
#[cfg(feature = "otlp")]
mod otlp;
mod probe;
pub mod prometheus;
pub mod serve;
mod session;
mod shared;
mod stack;
mod watchdog;

pub use loopscope_core as core;
pub use loopscope_core::report::Report;
pub use loopscope_core::workload::WorkloadResult;
pub use session::{Error, Profile, Session, SessionBuilder};

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
/// variable is reported once on stderr and the program runs unprofiled. After the runtime shuts
/// down the recording is finished and one line on stderr says where it is (`LOOPSCOPE_QUIET=1`
/// silences it).
pub use loopscope_macros::main;

#[doc(hidden)]
pub mod __private {
    pub use crate::main_macro::block_on;
    pub use tokio;
}
