#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod flusher;
mod hot;
mod mistakes;
mod probe;
pub mod serve;
mod session;
mod shared;
mod stack;
mod watchdog;

pub use loopscope_core as core;
pub use loopscope_core::report::Report;
pub use loopscope_core::workload::WorkloadResult;
pub use session::{Error, Profile, Session, SessionBuilder};
