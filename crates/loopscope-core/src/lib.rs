//! The tokio-free core of loopscope.
//!
//! Everything that reads or writes profiling data lives here, independent of the runtime that
//! produced it, so that the readers (`loopscope report`, the TUI, the CI gate) never depend on
//! tokio:
//!
//! - [`dist`]: bounded HdrHistogram distributions of nanosecond durations, with outliers counted.
//! - [`model`]: what a recording holds: header, spawn sites, workers, intervals, events, footer.
//! - [`format`]: the on-disk recording (framed, checksummed, streamable, crash tolerant).
//! - [`export`]: the recording as a standard HdrHistogram interval log.
//! - [`validate`]: what a recording may contain, checked by the reader for every reader.
//! - [`resolve`]: symbolizing stacks on the reader's side ([`resolve::Symbolize`]).
//! - [`stall`]: the one stall model: blocking sites, categories from stacks, begin/look/end pairing.
//! - [`report`]: aggregation of a recording into the per-runtime / per-site report and its JSON
//!   (its text rendering is the command's: `loopscope-cli`'s `report_text`).
//! - [`tasks`]: what the program's tasks wait for: idle times per spawn site, task dumps' await points.
//! - [`workload`]: the end-to-end figures a workload reports beside the recorder's.
//! - [`text`]: plain-text tables built from one column spec (no I/O), for every reader's tables.
#![warn(missing_docs)]

pub mod dist;
pub mod export;
pub mod format;
pub mod growth;
pub mod live;
pub mod model;
mod model_v1;
pub mod report;
pub mod resolve;
pub mod stall;
pub mod tasks;
pub mod text;
pub mod units;
pub mod validate;
pub mod workload;

pub use dist::{Dist, DistAcc};
pub use format::{ReadError, Reader, Recording, WriteError, Writer};
pub use model::*;
pub use report::Report;
pub use workload::WorkloadResult;
