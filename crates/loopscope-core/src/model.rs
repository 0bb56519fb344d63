//! What a recording holds.
//!
//! A recording is a header, then a stream of declarations (spawn sites and workers, each declared
//! once before first use), intervals, events and at most one workload result, then a footer. The
//! same types are written by the recorder and read back by every reader.

use serde::{Deserialize, Serialize};

use crate::dist::Dist;
use crate::workload::WorkloadResult;

/// Version of the recording format this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// The tokio scheduler a recording was taken on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// `Builder::new_current_thread`.
    CurrentThread,
    /// `Builder::new_multi_thread`.
    MultiThread,
    /// No task was polled, so the runtime was never seen.
    Unknown,
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::CurrentThread => "current-thread",
            Flavor::MultiThread => "multi-thread",
            Flavor::Unknown => "unknown",
        })
    }
}

/// First frame of every recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Recording format version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u16,
    /// Version of the loopscope library that wrote the recording.
    pub loopscope_version: String,
    /// Scheduler flavor.
    pub flavor: Flavor,
    /// Worker threads the runtime was built with (1 for current-thread).
    pub workers: u32,
    /// Host name.
    pub host: String,
    /// Process id of the recorded program.
    pub pid: u32,
    /// Wall-clock start, in nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// Command line of the recorded program.
    pub command_line: Vec<String>,
    /// Name of the workload, when the program is one of loopscope's workloads.
    pub workload: Option<String>,
    /// Length of one interval, in nanoseconds.
    pub interval_ns: u64,
    /// Polls longer than this are counted as slow, in nanoseconds.
    pub slow_poll_ns: u64,
    /// Whether per-task scheduling latency was tracked (tokio's `track_task_schedule_latency`).
    pub schedule_latency: bool,
    /// Stall threshold of the watchdog, in nanoseconds; `None` when the detector was off.
    pub stall_threshold_ns: Option<u64>,
}

/// A place in the source where tasks are spawned (`TaskMeta::spawned_at`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SiteDecl {
    /// Identifier used by intervals; dense from 0.
    pub id: u32,
    /// Source file, as the compiler saw it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl SiteDecl {
    /// The file name given to the site that collects spawn sites beyond the configured maximum.
    pub const OTHER_FILE: &'static str = "<other sites>";

    /// `file:line:col`.
    pub fn location(&self) -> String {
        if self.file == Self::OTHER_FILE {
            return self.file.clone();
        }
        format!("{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Checks that a declaration (of a site or a worker) takes the next dense id, `next`.
pub fn check_declared_in_order(what: &str, id: u32, next: usize) -> Result<(), String> {
    if id as usize == next { Ok(()) } else { Err(format!("{what} {id} declared out of order (expected {next})")) }
}

/// A thread that polled tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerDecl {
    /// Identifier used by intervals; dense from 0.
    pub id: u32,
    /// tokio's worker index (`tokio::runtime::worker_index`) when the thread first polled.
    pub index: Option<u32>,
    /// The thread's name.
    pub thread_name: String,
}

/// One interval's figures for one spawn site.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteInterval {
    /// The [`SiteDecl::id`].
    pub site: u32,
    /// Tasks spawned from this site during the interval.
    pub spawned: u64,
    /// Tasks from this site that terminated during the interval.
    pub finished: u64,
    /// Polls longer than the slow-poll threshold.
    pub slow_polls: u64,
    /// Poll durations.
    pub poll: Dist,
    /// Scheduling latencies (wake to poll).
    pub sched: Dist,
}

/// One interval's figures for one worker thread.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInterval {
    /// The [`WorkerDecl::id`].
    pub worker: u32,
    /// Polls longer than the slow-poll threshold.
    pub slow_polls: u64,
    /// Poll durations.
    pub poll: Dist,
    /// Scheduling latencies.
    pub sched: Dist,
}

/// Runtime gauges sampled at the end of an interval (tokio's `RuntimeMetrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gauges {
    /// Tasks alive in the runtime.
    pub alive_tasks: u64,
    /// Tasks in the global (injection) queue.
    pub global_queue: u64,
    /// Tasks in each worker's local queue.
    pub local_queues: Vec<u64>,
    /// Threads in the blocking pool.
    pub blocking_threads: u64,
    /// Idle threads in the blocking pool.
    pub idle_blocking_threads: u64,
}

/// Everything measured during one interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    /// 0-based sequence number.
    pub index: u64,
    /// Start, in nanoseconds since the session started.
    pub start_ns: u64,
    /// End, in nanoseconds since the session started.
    pub end_ns: u64,
    /// Per spawn site (only sites with activity).
    pub sites: Vec<SiteInterval>,
    /// Per worker thread (only threads with activity).
    pub workers: Vec<WorkerInterval>,
    /// Runtime gauges at the end of the interval.
    pub gauges: Gauges,
    /// The lag probe's measurements (the `lean` profile's runtime-wide scheduling latency): how
    /// long a task woken by a yield waited before it was polled again.
    pub lag: Dist,
}

/// What a stalled worker was doing, from the kernel's view of the stuck thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StallCategory {
    /// A synchronous sleep (`std::thread::sleep`): `nanosleep` / `clock_nanosleep`.
    SyncSleep,
    /// Blocking I/O on a file, FIFO or pipe (`std::fs`).
    FileIo,
    /// Blocking network I/O on a socket (`std::net`).
    NetworkIo,
    /// Blocking name resolution (`ToSocketAddrs`, `getaddrinfo`): a socket to port 53.
    Dns,
    /// Waiting on a futex: a `std::sync::Mutex`, a condvar, or a parked thread.
    LockWait,
    /// Running on the CPU the whole time: computation without a yield.
    CpuBound,
    /// Another executor run inside the poll (`futures::executor::block_on`, a nested event loop).
    NestedExecutor,
    /// `Runtime::block_on` / `Handle::block_on` inside a task (tokio panics).
    NestedRuntime,
    /// Runnable but not running: the host did not give the thread CPU (overload, paused VM).
    Preempted,
    /// None of the above could be told.
    Unknown,
}

impl StallCategory {
    /// Every category, in declaration order (exporters create a counter for each up front).
    pub const ALL: [StallCategory; 10] = [
        StallCategory::SyncSleep,
        StallCategory::FileIo,
        StallCategory::NetworkIo,
        StallCategory::Dns,
        StallCategory::LockWait,
        StallCategory::CpuBound,
        StallCategory::NestedExecutor,
        StallCategory::NestedRuntime,
        StallCategory::Preempted,
        StallCategory::Unknown,
    ];

    /// The kebab-case name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            StallCategory::SyncSleep => "sync-sleep",
            StallCategory::FileIo => "file-io",
            StallCategory::NetworkIo => "network-io",
            StallCategory::Dns => "dns",
            StallCategory::LockWait => "lock-wait",
            StallCategory::CpuBound => "cpu-bound",
            StallCategory::NestedExecutor => "nested-executor",
            StallCategory::NestedRuntime => "nested-runtime",
            StallCategory::Preempted => "preempted",
            StallCategory::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for StallCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One frame of a captured stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFrame {
    /// Code address (a return address minus one, for lookup).
    pub address: u64,
    /// Demangled function name, without the hash.
    pub function: String,
    /// Source file, when debug information has it.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// Whether this function was inlined into the next frame.
    pub inlined: bool,
    /// File name of the loaded object the code is in (`None` for the program itself).
    pub object: Option<String>,
}

impl StackFrame {
    /// `file:line`, when known.
    pub fn location(&self) -> Option<String> {
        Some(format!("{}:{}", self.file.as_deref()?, self.line?))
    }
}

/// A poll that blocked its worker for longer than the stall threshold, as detected live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    /// Identifier, unique within the recording; the matching [`Event::StallEnd`] carries it.
    pub id: u64,
    /// The [`WorkerDecl::id`] of the stuck thread.
    pub worker: u32,
    /// The [`SiteDecl::id`] of the polled task's spawn site.
    pub site: Option<u32>,
    /// When the poll started, in nanoseconds since the session started.
    pub started_ns: u64,
    /// When the watchdog raised the stall.
    pub detected_ns: u64,
    /// What the thread was doing.
    pub category: StallCategory,
    /// The system call the thread was in when detected (e.g. `clock_nanosleep`), if any.
    pub syscall: Option<String>,
    /// What the file descriptor of that call refers to (a path, `socket:[…]`, `pipe:[…]`).
    pub fd_target: Option<String>,
    /// The thread's CPU time over wall time while it was stuck, in percent.
    pub cpu_percent: u32,
    /// The line in the program's own code that blocked (`file:line`): the innermost frame that is
    /// not in std, libc, tokio, futures or loopscope.
    pub blocking_site: Option<String>,
    /// The function at the blocking site.
    pub blocking_function: Option<String>,
    /// What the blocking site called (e.g. `std::thread::sleep`).
    pub call: Option<String>,
    /// The whole stack, innermost frame first (inlined frames included); empty if not captured.
    pub stack: Vec<StackFrame>,
    /// Raised after the poll had already returned: the watchdog did not get to run during it (an
    /// overloaded host). Its duration is exact; what it was doing is unknown.
    pub late: bool,
}

impl Stall {
    /// A stall known only by when and where it happened: category unknown, nothing captured
    /// (a long poll seen after it ended, or from data without stacks).
    pub fn unknown(id: u64, worker: u32, site: Option<u32>, started_ns: u64, detected_ns: u64, late: bool) -> Stall {
        Stall {
            id,
            worker,
            site,
            started_ns,
            detected_ns,
            category: StallCategory::Unknown,
            syscall: None,
            fd_target: None,
            cpu_percent: 0,
            blocking_site: None,
            blocking_function: None,
            call: None,
            stack: Vec::new(),
            late,
        }
    }
}

/// Something that happened at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The recorder hit an error and stopped part of its work.
    RecorderError {
        /// When, in nanoseconds since the session started.
        at_ns: u64,
        /// What went wrong.
        message: String,
    },
    /// A poll has blocked its worker longer than the stall threshold (raised while it still does).
    StallBegin(Stall),
    /// The stalled poll returned.
    StallEnd {
        /// The [`Stall::id`].
        id: u64,
        /// How long the poll took in all, in nanoseconds.
        duration_ns: u64,
        /// The category seen over the whole stall, when it differs from the live one (a thread
        /// that computed but had little CPU when first seen on an overloaded host).
        category: Option<StallCategory>,
    },
}

/// Last frame of a complete recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    /// End, in nanoseconds since the session started.
    pub end_ns: u64,
    /// Intervals written.
    pub intervals: u64,
    /// Errors the recorder met (also recorded as events).
    pub errors: Vec<String>,
}

/// One frame of a recording, in the order they appear in a file.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Always first.
    Header(Header),
    /// New spawn sites.
    Sites(Vec<SiteDecl>),
    /// New worker threads.
    Workers(Vec<WorkerDecl>),
    /// One interval.
    Interval(Box<Interval>),
    /// An event.
    Event(Event),
    /// The workload's own end-to-end figures.
    Workload(Box<WorkloadResult>),
    /// Always last, when the recording ended cleanly.
    Footer(Footer),
}
