//! What a recording holds.
//!
//! A recording is a header, then a stream of declarations (the runtime once it is known; spawn
//! sites, workers and loaded modules, each declared once before first use), intervals, events and
//! at most one workload result, then a footer. The same types are written by the recorder and read
//! back by every reader.
//!
//! Stacks are stored as the recorder took them: instruction addresses, with the loaded modules
//! they fall in ([`ModuleDecl`]: path, build id, load bias). Readers symbolize them from the
//! binaries on disk (`crate::resolve`); the profiled program never parses debug information.

use serde::{Deserialize, Serialize};

use crate::dist::Dist;
use crate::workload::WorkloadResult;

/// Version of the recording format this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 2;

/// The oldest recording format version this build reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;

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

/// First frame of every recording, written when the session is installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Recording format version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u16,
    /// Version of the loopscope library that wrote the recording.
    pub loopscope_version: String,
    /// Scheduler flavor ([`Flavor::Unknown`] until a [`RuntimeDecl`] says; readers apply it).
    pub flavor: Flavor,
    /// Worker threads the runtime was built with (1 for current-thread; 0 until known).
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

impl Header {
    /// Takes in what a [`RuntimeDecl`] says about the runtime.
    pub fn apply_runtime(&mut self, r: &RuntimeDecl) {
        self.flavor = r.flavor;
        self.workers = r.workers;
    }

    /// The program's name: the file name of its first command-line word (`program` when unknown).
    pub fn program(&self) -> &str {
        let first = self.command_line.first().map_or("", String::as_str);
        let name = first.rsplit('/').next().unwrap_or(first);
        if name.is_empty() { "program" } else { name }
    }
}

/// The runtime, declared once its first task is polled (the header is written before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDecl {
    /// Scheduler flavor.
    pub flavor: Flavor,
    /// Worker threads (1 for current-thread).
    pub workers: u32,
}

/// A loaded object (the program or a shared library) that captured stacks point into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDecl {
    /// Identifier, dense from 0.
    pub id: u32,
    /// Absolute path of the file, as the program saw it when it ran.
    pub path: String,
    /// Whether this is the program itself (a shared library's code is never the program's own).
    pub main: bool,
    /// The GNU build id of the loaded file (`NT_GNU_BUILD_ID`), when it has one: a reader checks
    /// that the file it finds at `path` is the same build.
    pub build_id: Option<Vec<u8>>,
    /// Load bias: a runtime address minus this is the address in the file.
    pub bias: u64,
    /// Lowest runtime address of the module's loaded segments.
    pub start: u64,
    /// One past its highest.
    pub end: u64,
}

impl ModuleDecl {
    /// Whether a runtime address falls in this module.
    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// The module's file name, for frames without a symbol.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The build id in hexadecimal, as `readelf -n` prints it.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_ref().map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
    }
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

/// A `tracing` span's callsite, as the recorder's layer (`loopscope::tracing_layer`) met it: every
/// span created at one place in the code shares one declaration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanDecl {
    /// Identifier used by stalls, samples and intervals; dense from 0.
    pub id: u32,
    /// The span's name (`get`, `request`).
    pub name: String,
    /// Its target, usually the module path (`mini_redis::cmd::get`).
    pub target: String,
    /// Where it is created, when the callsite says.
    pub file: Option<String>,
    /// Its line.
    pub line: Option<u32>,
}

impl SpanDecl {
    /// `target::name`, as tracing's own output names a span.
    pub fn path(&self) -> String {
        if self.target.is_empty() { self.name.clone() } else { format!("{}::{}", self.target, self.name) }
    }
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

/// One interval's poll time under one span, for one spawn site: the time between entering the
/// span and leaving it again within a poll (an instrumented future's span is entered for each of
/// its polls), so a site whose tasks run several request paths is broken down by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanInterval {
    /// The [`SiteDecl::id`] of the polled tasks.
    pub site: u32,
    /// The [`SpanDecl::id`].
    pub span: u32,
    /// Poll time spent inside the span.
    pub poll: Dist,
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
    /// CPU time the thread got during the interval, in nanoseconds (the kernel's
    /// `/proc/self/task/TID/schedstat`; 0 when unknown).
    pub cpu_ns: u64,
    /// Time the thread was runnable but waiting for a CPU during the interval, in nanoseconds:
    /// what the host took from it (run-queue delay, same source; 0 when unknown). It counts the
    /// wait after every wake-up as well as after every preemption.
    pub run_delay_ns: u64,
    /// Times the thread gave its CPU up itself (to sleep or wait) during the interval
    /// (`voluntary_ctxt_switches` in `/proc/self/task/TID/status`; 0 when unknown).
    pub switches: u64,
    /// Times the thread was preempted during the interval (`nonvoluntary_ctxt_switches`; 0 when
    /// unknown).
    pub preemptions: u64,
}

/// Stalls the recorder counted but did not record one by one (past its budget of stall events:
/// a storm of stalls is summarised, not recorded without bound), per spawn site and category.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallTally {
    /// The [`SiteDecl::id`] of the stalled tasks' spawn site.
    pub site: Option<u32>,
    /// What the stuck threads were doing (from the kernel's view only: no stack was taken).
    pub category: StallCategory,
    /// Stalls.
    pub count: u64,
    /// Their total duration, in nanoseconds.
    pub total_ns: u64,
    /// The longest, in nanoseconds.
    pub max_ns: u64,
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
    /// Stalls that ended in this interval and were only counted (see [`StallTally`]).
    pub stall_tally: Vec<StallTally>,
    /// Poll time per (spawn site, span), when the program's `tracing` spans are recorded.
    pub spans: Vec<SpanInterval>,
    /// Tasks that panicked during the interval, by spawn site, location and message.
    pub panics: Vec<PanicCount>,
}

/// Tasks of one spawn site that panicked at one place with one message, in one interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicCount {
    /// The [`SiteDecl::id`] of the panicking tasks (`None`: past the recorder's cap of distinct
    /// panics, counted together).
    pub site: Option<u32>,
    /// Where it panicked (`file:line:col`), when the panic says.
    pub location: Option<String>,
    /// The panic's message (its first 512 bytes).
    pub message: String,
    /// How many times.
    pub count: u64,
}

/// What a stalled worker was doing, from the kernel's view of the stuck thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    #[default]
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

    /// Whether the host, not the program, held the worker up: stalls of this category never fail
    /// a gate or a test, and are shown apart.
    pub fn is_host(self) -> bool {
        self == StallCategory::Preempted
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
    /// The captured stack as the recorder took it: instruction addresses for lookup (a return
    /// address minus one), innermost first, in the modules of [`Frame::Modules`]. Empty if no
    /// stack was captured.
    pub frames: Vec<u64>,
    /// The line in the program's own code that blocked (`file:line`): the innermost frame that is
    /// not in std, libc, tokio, futures or loopscope. Filled in by readers (`crate::resolve`).
    pub blocking_site: Option<String>,
    /// The function at the blocking site.
    pub blocking_function: Option<String>,
    /// What the blocking site called (e.g. `std::thread::sleep`).
    pub call: Option<String>,
    /// The whole stack, symbolized, innermost frame first (inlined frames included); filled in
    /// by readers from [`Stall::frames`]; empty if not captured.
    pub stack: Vec<StackFrame>,
    /// Raised after the poll had already returned: the watchdog did not get to run during it (an
    /// overloaded host). Its duration is exact; what it was doing is unknown.
    pub late: bool,
    /// The `tracing` spans the poll was in ([`SpanDecl::id`]), outermost first; empty without
    /// the layer.
    pub spans: Vec<u32>,
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
            frames: Vec::new(),
            blocking_site: None,
            blocking_function: None,
            call: None,
            stack: Vec::new(),
            late,
            spans: Vec::new(),
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
    /// Another look at a stall that goes on (taken at 2, 4 and 8 times the threshold): one stack
    /// is one instant, and a poll can be caught in the loop around a blocking call, or computing
    /// before it blocks. Readers keep the most telling look (`crate::stall`).
    StallLook {
        /// The [`Stall::id`].
        id: u64,
        /// What the kernel's view of the thread said at this look.
        category: StallCategory,
        /// The stack at this look, as in [`Stall::frames`].
        frames: Vec<u64>,
        /// The symbolized stack, filled in by readers.
        stack: Vec<StackFrame>,
    },
}

/// Stacks sampled, in one interval, from polls that ran longer than the sampling threshold but
/// not as long as the stall threshold: where slow polls spend their time. Each sample stands for
/// `period_ns` of poll time. Written just before the interval's own frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Samples {
    /// The interval they belong to ([`Interval::index`]).
    pub interval: u64,
    /// A poll is sampled once it has run this long, in nanoseconds.
    pub threshold_ns: u64,
    /// The poll time one sample stands for (the time between two samples of one poll), in ns.
    pub period_ns: u64,
    /// The distinct stacks sampled, with how many samples each.
    pub stacks: Vec<SampledStack>,
    /// Samples whose stacks were not kept (past the recorder's cap of distinct stacks per
    /// interval, or taken without a stack): counted per spawn site in `stacks` with no frames.
    pub dropped: u64,
    /// Samples that were due but not taken, past the budget of samples per second.
    pub skipped: u64,
}

/// One stack sampled from slow polls, and how often.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledStack {
    /// The [`SiteDecl::id`] of the polled tasks' spawn site.
    pub site: Option<u32>,
    /// What the kernel saw the thread doing at the sample (computing, or in a system call).
    pub category: StallCategory,
    /// Samples of this stack.
    pub count: u64,
    /// Instruction addresses, innermost first, as in [`Stall::frames`]; empty when not captured.
    pub frames: Vec<u64>,
    /// The symbolized stack, filled in by readers.
    pub stack: Vec<StackFrame>,
    /// The `tracing` spans the sampled polls were in, outermost first, as in [`Stall::spans`].
    pub spans: Vec<u32>,
}

/// The program's alive tasks at the end of one interval, as the recorder follows them: per spawn
/// site, how long since each was spawned and since its last poll began. Tasks are followed in a
/// table of bounded size (see [`TaskAges::untracked`]). Written just before the interval's own
/// frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAges {
    /// The interval it belongs to ([`Interval::index`]).
    pub interval: u64,
    /// Per spawn site with alive tasks.
    pub sites: Vec<SiteTasks>,
    /// The tasks idle the longest (not polled for the longest time), longest first; at most
    /// [`TaskAges::MAX_IDLEST`].
    pub idlest: Vec<IdleTask>,
    /// Alive tasks the recorder does not follow: spawned while the places their ids map to in its
    /// table were taken by older tasks.
    pub untracked: u64,
}

impl TaskAges {
    /// The most idle tasks listed per interval.
    pub const MAX_IDLEST: usize = 16;
}

/// The alive tasks of one spawn site at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTasks {
    /// The [`SiteDecl::id`].
    pub site: u32,
    /// Alive tasks followed.
    pub alive: u64,
    /// How long since each alive task's last poll began (since its spawn, if never polled).
    pub idle: Dist,
    /// How long since each alive task was spawned.
    pub age: Dist,
    /// Tasks idle for more than 1 s, 10 s and 60 s, counted exactly (`idle`'s histogram stops at
    /// 60 s).
    pub idle_over: [u64; 3],
}

/// One alive task that has not been polled for a long time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleTask {
    /// tokio's task id (`tokio::task::Id`, as printed by it).
    pub id: u64,
    /// The [`SiteDecl::id`] of its spawn site.
    pub site: u32,
    /// Nanoseconds since its last poll began (since its spawn, if never polled).
    pub idle_ns: u64,
    /// Nanoseconds since it was spawned.
    pub age_ns: u64,
    /// Whether it has never been polled.
    pub never_polled: bool,
}

/// A task dump: what every task of the runtime was waiting for, from tokio's own task dump
/// (`Handle::dump`, with the `taskdump` feature), grouped by identical traces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDump {
    /// When it was asked for, in nanoseconds since the session started.
    pub at_ns: u64,
    /// Why it was taken.
    pub trigger: DumpTrigger,
    /// The numbers viewers gave their requests (`loopscope dump --attach`), to find their answer
    /// among the frames: the one that set the dump off and any that came while it ran (at most
    /// [`TaskDump::MAX_REQUESTS`]).
    pub requests: Vec<u64>,
    /// How it went.
    pub outcome: DumpOutcome,
    /// Tasks in the dump.
    pub tasks: u64,
    /// Tasks in the dump left out of `groups`: past the recorder's caps on tasks symbolized
    /// (the idlest are kept), groups or frames.
    pub skipped: u64,
    /// Tasks with the same spawn site and the same trace, the largest groups first.
    pub groups: Vec<DumpGroup>,
}

impl TaskDump {
    /// The most groups a dump keeps (the rest are counted in [`TaskDump::tasks`] only).
    pub const MAX_GROUPS: usize = 256;
    /// The most task ids a group lists.
    pub const MAX_IDS: usize = 16;
    /// The most viewers' requests one dump answers.
    pub const MAX_REQUESTS: usize = 16;
    /// The most traces of one group (futures one task waits on; the recorder keeps 8).
    pub const MAX_TRACES: usize = 64;
}

/// Why a task dump was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpTrigger {
    /// Asked for by a viewer (`loopscope dump --attach`, a key in the TUI) or the program.
    #[default]
    Request,
    /// The program received the dump signal (`SIGUSR2`, when enabled).
    Signal,
    /// A spawn site's tasks had been idle beyond the dump threshold.
    Idle {
        /// The [`SiteDecl::id`].
        site: u32,
        /// How long its idlest task had not been polled, in nanoseconds.
        idle_ns: u64,
    },
}

/// How a task dump went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpOutcome {
    /// Every task was traced.
    #[default]
    Complete,
    /// The dump did not finish in time, or was not started: tokio pauses every worker for a
    /// dump, and a worker stuck in a poll never pauses.
    TimedOut {
        /// How long the recorder waited, in nanoseconds (0: not started, as a worker was stuck
        /// in a poll already).
        waited_ns: u64,
        /// The [`WorkerDecl::id`]s of the threads in one poll for 100 ms or more when it gave up
        /// (what held the dump up; their stalls name the line).
        stalled_workers: Vec<u32>,
    },
    /// Dumps cannot be taken in this program (why: the feature is off, the platform has none).
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// Tasks of one spawn site caught in one identical trace by a task dump.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpGroup {
    /// The [`SiteDecl::id`] of their spawn site, when the recorder follows them.
    pub site: Option<u32>,
    /// Tasks in the group.
    pub count: u64,
    /// Some of their task ids (at most [`TaskDump::MAX_IDS`]).
    pub ids: Vec<u64>,
    /// The longest time one of them had not been polled, in nanoseconds (0: unknown).
    pub idle_ns: u64,
    /// The trace: one stack per future the task was waiting on (a `join!` of two futures waits on
    /// both), each innermost first, symbolized in the program when the dump was taken.
    pub traces: Vec<Vec<StackFrame>>,
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
    /// The runtime, once known (at most once).
    Runtime(RuntimeDecl),
    /// New loaded modules, before the first stack that points into them.
    Modules(Vec<ModuleDecl>),
    /// Stacks sampled from slow polls in one interval.
    Samples(Box<Samples>),
    /// New spawn sites.
    Sites(Vec<SiteDecl>),
    /// New `tracing` span callsites, before the first frame that refers to them.
    Spans(Vec<SpanDecl>),
    /// New worker threads.
    Workers(Vec<WorkerDecl>),
    /// One interval.
    Interval(Box<Interval>),
    /// An event.
    Event(Event),
    /// The workload's own end-to-end figures.
    Workload(Box<WorkloadResult>),
    /// The alive tasks' ages at the end of one interval.
    TaskAges(Box<TaskAges>),
    /// A task dump.
    TaskDump(Box<TaskDump>),
    /// Always last, when the recording ended cleanly.
    Footer(Footer),
}
