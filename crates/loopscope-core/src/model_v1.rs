//! The frames of format version 1 that version 2 changed, read into today's model.
//!
//! Version 1 symbolized stacks in the profiled program and stored them whole; it had no raw
//! frames, no stall looks, no per-worker CPU and run-queue figures and no stall tally. Everything
//! else (header, declarations, footer, workload) is encoded the same way in both versions.

use serde::Deserialize;

use crate::dist::Dist;
use crate::model::{self, Gauges, SiteInterval, StackFrame, StallCategory};

/// Version 1's [`model::Interval`].
#[derive(Deserialize)]
pub(crate) struct Interval {
    index: u64,
    start_ns: u64,
    end_ns: u64,
    sites: Vec<SiteInterval>,
    workers: Vec<WorkerInterval>,
    gauges: Gauges,
    lag: Dist,
}

#[derive(Deserialize)]
struct WorkerInterval {
    worker: u32,
    slow_polls: u64,
    poll: Dist,
    sched: Dist,
}

impl From<Interval> for model::Interval {
    fn from(i: Interval) -> Self {
        model::Interval {
            index: i.index,
            start_ns: i.start_ns,
            end_ns: i.end_ns,
            sites: i.sites,
            workers: i
                .workers
                .into_iter()
                .map(|w| model::WorkerInterval {
                    worker: w.worker,
                    slow_polls: w.slow_polls,
                    poll: w.poll,
                    sched: w.sched,
                    cpu_ns: 0,
                    run_delay_ns: 0,
                    switches: 0,
                    preemptions: 0,
                })
                .collect(),
            gauges: i.gauges,
            lag: i.lag,
            stall_tally: Vec::new(),
            spans: Vec::new(),
            panics: Vec::new(),
        }
    }
}

/// Version 1's [`model::Stall`]: symbolized by the recorder, no raw frames.
#[derive(Deserialize)]
pub(crate) struct Stall {
    id: u64,
    worker: u32,
    site: Option<u32>,
    started_ns: u64,
    detected_ns: u64,
    category: StallCategory,
    syscall: Option<String>,
    fd_target: Option<String>,
    cpu_percent: u32,
    blocking_site: Option<String>,
    blocking_function: Option<String>,
    call: Option<String>,
    stack: Vec<StackFrame>,
    late: bool,
}

/// Version 1's [`model::Event`].
#[derive(Deserialize)]
pub(crate) enum Event {
    RecorderError { at_ns: u64, message: String },
    StallBegin(Stall),
    StallEnd { id: u64, duration_ns: u64, category: Option<StallCategory> },
}

impl From<Event> for model::Event {
    fn from(e: Event) -> Self {
        match e {
            Event::RecorderError { at_ns, message } => model::Event::RecorderError { at_ns, message },
            Event::StallEnd { id, duration_ns, category } => model::Event::StallEnd { id, duration_ns, category },
            Event::StallBegin(s) => model::Event::StallBegin(model::Stall {
                id: s.id,
                worker: s.worker,
                site: s.site,
                started_ns: s.started_ns,
                detected_ns: s.detected_ns,
                category: s.category,
                syscall: s.syscall,
                fd_target: s.fd_target,
                cpu_percent: s.cpu_percent,
                frames: Vec::new(),
                blocking_site: s.blocking_site,
                blocking_function: s.blocking_function,
                call: s.call,
                stack: s.stack,
                late: s.late,
                spans: Vec::new(),
            }),
        }
    }
}
