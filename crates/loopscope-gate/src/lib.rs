//! loopscope's CI latency gate.
//!
//! `loopscope check` loads two sets of recordings ([`data::Run`]), a [`policy::Policy`], and
//! judges every rule ([`check::check`]): distributions (poll time, scheduling latency, the
//! workload's own latencies; runtime-wide or per spawn site) with a seeded two-level block
//! bootstrap ([`stats`]), stall counts exactly. The [`render`] module turns the
//! [`check::Outcome`] into a table, JUnit XML, GitHub annotations, a Markdown summary and an SVG.

pub mod check;
pub mod data;
pub mod policy;
pub mod render;
pub mod stats;

pub use check::{Outcome, Verdict, check};
pub use data::{InputError, Run};
pub use policy::{DEFAULT_POLICY, Inconclusive, Policy, PolicyError};
