//! The flusher thread: once per interval it snapshots every thread's cells, merges them per spawn
//! site and per worker, samples the runtime's gauges, appends an interval frame to the recording
//! and folds it into the running report. It is the only place that allocates per interval and the
//! only writer of the file.

use std::collections::HashMap;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use loopscope_core::dist::DistAcc;
use loopscope_core::format::{Completeness, Writer};
use loopscope_core::model::{
    Event, FORMAT_VERSION, Flavor, Footer, Frame, Gauges, Header, IdleTask, Interval, ModuleDecl, RuntimeDecl,
    SampledStack, Samples, SiteInterval, SiteTasks, SpanInterval, StallCategory, TaskAges, WorkerInterval,
};

/// Distinct sampled stacks kept per interval; further samples are counted at their site.
const MAX_SAMPLED_STACKS: usize = 1000;
/// Entries of one interval's samples in all (stacks, and counts per site without a stack),
/// within what readers accept of one frame (`loopscope_core::validate::MAX_LIST`).
const MAX_SAMPLE_ENTRIES: usize = 2000;

/// What tells sampled stacks apart: site, category, frames and spans.
type SampleKey = (u32, StallCategory, Vec<u64>, Vec<u32>);
use loopscope_core::report::{Aggregator, Report};
use loopscope_core::workload::WorkloadResult;
use tokio::runtime::RuntimeFlavor;

use crate::hot::Shared;
use crate::hot::cells::{Prev, PrevCells};

/// Messages from the session to the flusher.
pub(crate) enum Cmd {
    Workload(Box<WorkloadResult>),
    /// An event to write at once (a stall, from the watchdog).
    Event(Box<Event>),
    /// Loaded modules the next stacks point into.
    Modules(Vec<ModuleDecl>),
    /// A slow poll's stack sample (empty frames: taken without a stack) and the spans it was in.
    Sample {
        site: u32,
        category: StallCategory,
        frames: Vec<u64>,
        spans: Vec<u32>,
    },
    /// A task dump, taken by the dumping thread.
    Dump(Box<loopscope_core::model::TaskDump>),
    /// The process is exiting (`std::process::exit`): write what was measured and the footer
    /// now, then say so. Threads are not joined: the process ends right after.
    Exit(SyncSender<()>),
    Finish,
}

/// Static facts about the session, for the header.
pub(crate) struct Meta {
    pub(crate) path: Option<PathBuf>,
    pub(crate) interval: Duration,
    pub(crate) workload: Option<String>,
    pub(crate) schedule_latency: bool,
    pub(crate) stall_threshold: Option<Duration>,
    pub(crate) command_line: Vec<String>,
    pub(crate) start_unix_ns: u64,
    /// Where every frame also goes as it is made (the TUI's live mode, the attach server).
    pub(crate) live: Vec<SyncSender<Frame>>,
    /// Slow-poll sampling's threshold and period, in ns, when it is on.
    pub(crate) sampling: Option<(u64, u64)>,
    /// A site's tasks idle this long set off a task dump (once per site).
    pub(crate) dump_idle: Option<Duration>,
    /// Whether the dump signal (`SIGUSR2`) takes a dump.
    pub(crate) dump_signal: bool,
}

enum Sink {
    Open(Writer<File>),
    None,
}

pub(crate) struct Flusher {
    shared: Arc<Shared>,
    meta: Meta,
    sink: Sink,
    agg: Aggregator,
    /// Whether the runtime has been declared (it is known once its first task is polled).
    runtime_declared: bool,
    /// Whether the footer has been written (at the end, or when the process exits).
    finished: bool,
    prev: HashMap<(u32, u32), PrevCells>,
    /// Per worker: its CPU time and run-queue delay at the last interval.
    prev_sched: HashMap<u32, [u64; 4]>,
    /// This interval's slow-poll samples: (site, category, frames, spans) → count; samples past
    /// the cap of distinct stacks are counted at their site without frames.
    samples: HashMap<SampleKey, u64>,
    /// Previous snapshots of the threads' (site, span) histograms, by (worker, site, span).
    prev_spans: HashMap<(u32, u32, u32), Prev>,
    /// Span callsites declared so far.
    spans_declared: usize,
    /// Stalls waiting for their end, to be logged as `tracing` events.
    #[cfg(feature = "tracing")]
    stall_log: crate::outputs::stall_log::StallLog,
    #[cfg(feature = "tracing")]
    span_decls: Vec<loopscope_core::model::SpanDecl>,
    #[cfg(feature = "tracing")]
    stall_log_failed: bool,
    samples_dropped: u64,
    prev_spawned: Vec<u64>,
    prev_finished: Vec<u64>,
    sites_declared: usize,
    workers_declared: usize,
    index: u64,
    interval_start_ns: u64,
    /// Whether the last interval's task ages followed any task.
    tasks_followed: bool,
}

impl Flusher {
    /// Opens the recording and writes its header, so that a program that ends at once (or is
    /// killed) still leaves a readable file.
    pub(crate) fn new(shared: Arc<Shared>, meta: Meta) -> Self {
        let header = header(&shared, &meta);
        let sink = match &meta.path {
            None => Sink::None,
            Some(path) => match create_private(path)
                .map_err(|e| e.to_string())
                .and_then(|f| Writer::new(f, &header).map_err(|e| e.to_string()))
            {
                Ok(w) => Sink::Open(w),
                Err(e) => {
                    shared.report_error(format!("cannot create recording {}: {e}", path.display()));
                    Sink::None
                }
            },
        };
        let mut f = Flusher {
            shared,
            meta,
            sink,
            agg: Aggregator::new(header.clone()),
            runtime_declared: false,
            finished: false,
            prev: HashMap::new(),
            prev_sched: HashMap::new(),
            samples: HashMap::new(),
            prev_spans: HashMap::new(),
            spans_declared: 0,
            #[cfg(feature = "tracing")]
            stall_log: Default::default(),
            #[cfg(feature = "tracing")]
            span_decls: Vec::new(),
            #[cfg(feature = "tracing")]
            stall_log_failed: false,
            samples_dropped: 0,
            prev_spawned: Vec::new(),
            prev_finished: Vec::new(),
            sites_declared: 0,
            workers_declared: 0,
            index: 0,
            interval_start_ns: 0,
            tasks_followed: false,
        };
        f.send_live(Frame::Header(header));
        f
    }

    /// Runs until told to finish; returns the final report.
    pub(crate) fn run(mut self, rx: Receiver<Cmd>) -> Report {
        let mut next = Instant::now() + self.meta.interval;
        loop {
            let timeout = next.saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(Cmd::Workload(w)) => self.guarded(|f| f.emit(Frame::Workload(w))),
                Ok(Cmd::Modules(m)) => self.guarded(|f| {
                    #[cfg(feature = "tracing")]
                    f.stall_log.modules(&m);
                    f.emit(Frame::Modules(m));
                }),
                Ok(Cmd::Sample { site, category, frames, spans }) => self.take_sample((site, category, frames, spans)),
                Ok(Cmd::Event(e)) => self.guarded(|f| {
                    // Declare the sites and workers it names first, so readers can resolve them.
                    f.declare_new();
                    // Recorded first: the program's subscriber, called next, may fail or block.
                    #[cfg(feature = "tracing")]
                    let logged = (*e).clone();
                    f.emit(Frame::Event(*e));
                    #[cfg(feature = "tracing")]
                    f.log_stall(&logged);
                }),
                Ok(Cmd::Dump(d)) => self.guarded(|f| {
                    // Declare the sites its groups name first.
                    f.declare_new();
                    f.emit(Frame::TaskDump(d));
                }),
                Ok(Cmd::Exit(done)) => {
                    self.guarded(|f| {
                        f.flush_interval();
                        f.finish();
                    });
                    let _ = done.send(());
                }
                Ok(Cmd::Finish) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    next += self.meta.interval;
                    // After a long pause (a suspended machine), do not try to catch up.
                    if next < Instant::now() {
                        next = Instant::now() + self.meta.interval;
                    }
                    self.guarded(Flusher::flush_interval);
                }
            }
        }
        self.guarded(|f| {
            f.flush_interval();
            f.finish();
        });
        self.agg.report(Completeness::Complete, 0)
    }

    /// Runs a step, turning a panic into a reported failure that stops recording.
    fn guarded(&mut self, step: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| step(self))).is_err() {
            self.shared.fail("internal error in the recorder's flusher".into());
            self.sink = Sink::None;
        }
    }

    /// Hands a stall's beginning or end to the `tracing` log.
    ///
    /// The program's subscriber runs here: one that panics turns the log off (said once), and
    /// never the recording.
    #[cfg(feature = "tracing")]
    fn log_stall(&mut self, e: &Event) {
        if self.stall_log_failed {
            return;
        }
        let log = &mut self.stall_log;
        let (sites, spans) = (self.agg.sites(), &self.span_decls);
        let logged = catch_unwind(AssertUnwindSafe(|| match e {
            Event::StallBegin(s) => log.begin(s, sites, spans),
            Event::StallLook { id, frames, .. } => log.look(*id, frames),
            Event::StallEnd { id, duration_ns, category } => log.end(*id, *duration_ns, *category),
            _ => {}
        }));
        if logged.is_err() {
            self.stall_log_failed = true;
            self.shared.report_error("logging a stall as a tracing event panicked; stalls are no longer logged".into());
        }
    }

    /// Counts a slow-poll sample into this interval's stacks, within the cap of distinct stacks.
    fn take_sample(&mut self, key: SampleKey) {
        if let Some(n) = self.samples.get_mut(&key) {
            *n += 1;
            return;
        }
        if self.samples.len() >= MAX_SAMPLED_STACKS || key.2.is_empty() {
            if !key.2.is_empty() {
                self.samples_dropped += 1;
            }
            let mut at = (key.0, key.1, Vec::new(), Vec::new());
            if !self.samples.contains_key(&at) && self.samples.len() >= MAX_SAMPLE_ENTRIES {
                // Past every cap: counted for the whole program, in one entry.
                at = (u32::MAX, StallCategory::Unknown, Vec::new(), Vec::new());
            }
            *self.samples.entry(at).or_default() += 1;
            return;
        }
        self.samples.insert(key, 1);
    }

    /// This interval's samples as a frame (`None` when sampling is off).
    fn samples_frame(&mut self) -> Option<Frame> {
        let (threshold_ns, period_ns) = self.meta.sampling?;
        let mut stacks: Vec<SampledStack> = self
            .samples
            .drain()
            .map(|((site, category, frames, spans), count)| SampledStack {
                site: Some(site).filter(|s| *s != u32::MAX),
                category,
                count,
                frames,
                stack: Vec::new(),
                spans,
            })
            .collect();
        stacks.sort_by_key(|s| std::cmp::Reverse(s.count));
        let (dropped, skipped) = (std::mem::take(&mut self.samples_dropped), self.shared.take_skipped_samples());
        // An interval without a slow poll costs no frame.
        if stacks.is_empty() && skipped == 0 {
            return None;
        }
        Some(Frame::Samples(Box::new(Samples {
            interval: self.index,
            threshold_ns,
            period_ns,
            stacks,
            dropped,
            skipped,
        })))
    }

    /// Declares the runtime once its first task has been polled (the handle is known then).
    fn declare_runtime(&mut self) {
        if self.runtime_declared {
            return;
        }
        let Some(handle) = self.shared.runtime() else { return };
        let flavor = match handle.runtime_flavor() {
            RuntimeFlavor::CurrentThread => Flavor::CurrentThread,
            RuntimeFlavor::MultiThread => Flavor::MultiThread,
            _ => Flavor::Unknown,
        };
        self.runtime_declared = true;
        self.emit(Frame::Runtime(RuntimeDecl { flavor, workers: handle.metrics().num_workers() as u32 }));
    }

    fn write_failed(&mut self, e: String) {
        let path = self.meta.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let message = format!("writing recording {path} failed: {e}; recording to the file stopped");
        self.shared.report_error(message.clone());
        self.sink = Sink::None;
        let _ = self.agg.push(&Frame::Event(Event::RecorderError { at_ns: self.shared.now_ns(), message }));
    }

    /// Writes a frame to the recording and folds it into the report.
    fn emit(&mut self, frame: Frame) {
        if self.finished {
            return;
        }
        if let Err(e) = self.agg.push(&frame) {
            self.shared.report_error(format!("inconsistent frame dropped: {e}"));
            return;
        }
        match &mut self.sink {
            Sink::Open(w) => match w.write(&frame) {
                Ok(()) => {}
                // Nothing was written: the file goes on without this frame.
                Err(loopscope_core::format::WriteError::Encode(e)) => {
                    self.shared.report_error(format!("a frame could not be encoded and was left out: {e}"));
                }
                Err(e) => self.write_failed(e.to_string()),
            },
            Sink::None => {}
        }
        self.send_live(frame);
    }

    /// Hands a frame to the live receivers without ever waiting: a receiver that falls behind
    /// loses intervals and events; one that would lose a header, a declaration or the footer (its
    /// stream would no longer make sense) is cut off instead, as is one that is gone.
    fn send_live(&mut self, frame: Frame) {
        let essential = matches!(
            frame,
            Frame::Header(_)
                | Frame::Runtime(_)
                | Frame::Modules(_)
                | Frame::Sites(_)
                | Frame::Spans(_)
                | Frame::Workers(_)
                | Frame::Footer(_)
        );
        self.meta.live.retain(|live| match live.try_send(frame.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => !essential,
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    fn flush_interval(&mut self) {
        if self.finished {
            return;
        }
        self.declare_runtime();
        if !self.runtime_declared {
            // No task has been polled yet: nothing to record.
            return;
        }
        let end_ns = self.shared.now_ns();
        let threads = self.declare_new();
        let shared = Arc::clone(&self.shared);
        let sites = shared.sites();

        let n_sites = self.sites_declared;
        let mut site_acc: Vec<Option<(DistAcc, DistAcc, u64)>> = (0..n_sites).map(|_| None).collect();
        let mut workers = Vec::new();
        let mut gone = Vec::new();
        let mut span_acc: std::collections::BTreeMap<(u32, u32), DistAcc> = std::collections::BTreeMap::new();
        for t in &threads {
            // Read before draining: a thread marked exited has made its last poll.
            if t.exited.load(Ordering::Acquire) {
                gone.push(t.decl.id);
            }
            let (mut wpoll, mut wsched, mut wslow) = (DistAcc::new(), DistAcc::new(), 0u64);
            for (s, acc) in site_acc.iter_mut().enumerate() {
                let Some(cells) = t.cells(s) else { continue };
                let prev = self.prev.entry((t.decl.id, s as u32)).or_insert_with(|| PrevCells::new(cells));
                let acc = acc.get_or_insert_with(|| (DistAcc::new(), DistAcc::new(), 0));
                cells.poll.drain_into(&mut prev.poll, &mut [&mut acc.0, &mut wpoll]);
                cells.sched.drain_into(&mut prev.sched, &mut [&mut acc.1, &mut wsched]);
                let slow = cells.slow.load(Ordering::Relaxed);
                let dslow = slow.wrapping_sub(prev.slow);
                prev.slow = slow;
                acc.2 += dslow;
                wslow += dslow;
            }
            for (site, span, hist) in t.spans.cells() {
                // Only sites and spans already declared: a newer one is taken next interval.
                if site as usize >= self.sites_declared || span as usize >= self.spans_declared {
                    continue;
                }
                let prev = self.prev_spans.entry((t.decl.id, site, span)).or_insert_with(|| Prev::new(hist));
                let acc = span_acc.entry((site, span)).or_default();
                hist.drain_into(prev, &mut [acc]);
            }
            let [cpu_ns, run_delay_ns, switches, preemptions] = self.sched_delta(t);
            if wpoll.count() > 0 || wsched.count() > 0 || run_delay_ns > 0 {
                workers.push(WorkerInterval {
                    worker: t.decl.id,
                    slow_polls: wslow,
                    poll: wpoll.to_dist(),
                    sched: wsched.to_dist(),
                    cpu_ns,
                    run_delay_ns,
                    switches,
                    preemptions,
                });
            }
        }
        if !gone.is_empty() {
            self.forget_threads(&gone);
        }
        let mut out_sites = Vec::new();
        for (s, acc) in site_acc.into_iter().enumerate() {
            let (spawned, finished) = sites.task_counts(s);
            let dsp = spawned.wrapping_sub(self.prev_spawned[s]);
            let dfin = finished.wrapping_sub(self.prev_finished[s]);
            self.prev_spawned[s] = spawned;
            self.prev_finished[s] = finished;
            let (poll, sched, slow) = acc.unwrap_or_default();
            if poll.count() == 0 && sched.count() == 0 && dsp == 0 && dfin == 0 {
                continue;
            }
            out_sites.push(SiteInterval {
                site: s as u32,
                spawned: dsp,
                finished: dfin,
                slow_polls: slow,
                poll: poll.to_dist(),
                sched: sched.to_dist(),
            });
        }
        // Before the runtime's count of tasks: a task spawned after it is never taken for a ghost.
        let counted_at = self.shared.now_raw();
        let gauges = self.gauges();
        let (ages, longest_idle) = self.task_ages(self.shared.runtime().map(|_| gauges.alive_tasks), counted_at);
        let interval = Interval {
            index: self.index,
            start_ns: self.interval_start_ns,
            end_ns,
            sites: out_sites,
            workers,
            gauges,
            lag: self.shared.take_lag(),
            stall_tally: self.shared.take_tally(),
            panics: self.shared.take_panics(),
            spans: span_acc
                .into_iter()
                .filter(|(_, acc)| acc.count() > 0)
                .map(|((site, span), acc)| SpanInterval { site, span, poll: acc.to_dist() })
                .collect(),
        };
        // Site declarations first (in `declare_new` above), then the samples, then the interval.
        if let Some(samples) = self.samples_frame() {
            self.emit(samples);
        }
        if let Some(ages) = ages {
            self.emit(Frame::TaskAges(Box::new(ages)));
        }
        // Each site's longest idle time: an automatic dump's trigger.
        let shared = Arc::clone(&self.shared);
        shared.dumps().check(&shared, &longest_idle, self.meta.dump_idle, self.meta.dump_signal);
        self.index += 1;
        self.interval_start_ns = end_ns;
        self.emit(Frame::Interval(Box::new(interval)));
    }

    /// Frees the places of threads that exited, now that their last polls are in an interval.
    fn forget_threads(&mut self, gone: &[u32]) {
        self.shared.forget_threads(gone);
        self.prev.retain(|(worker, _), _| !gone.contains(worker));
        self.prev_spans.retain(|(worker, _, _), _| !gone.contains(worker));
        self.prev_sched.retain(|worker, _| !gone.contains(worker));
    }

    /// The CPU time, run-queue delay, voluntary and involuntary switches of a worker since the
    /// last interval, or since it was declared (all 0 when the kernel does not say).
    fn sched_delta(&mut self, t: &crate::hot::ThreadSlot) -> [u64; 4] {
        let Some(now) = sched_now(t.tid) else { return [0; 4] };
        match self.prev_sched.insert(t.decl.id, now) {
            Some(prev) => std::array::from_fn(|k| now[k].saturating_sub(prev[k])),
            None => [0; 4],
        }
    }

    /// Emits declarations of sites and worker threads seen since the last call; returns the threads.
    fn declare_new(&mut self) -> Vec<Arc<crate::hot::ThreadSlot>> {
        self.declare_runtime();
        let declared = self.shared.sites().declared();
        if declared > self.sites_declared {
            let new = self.shared.sites().decls_from(self.sites_declared);
            self.sites_declared += new.len();
            self.prev_spawned.resize(self.sites_declared, 0);
            self.prev_finished.resize(self.sites_declared, 0);
            self.emit(Frame::Sites(new));
        }
        let spans = crate::hot::spans::decls_from(self.spans_declared);
        if !spans.is_empty() {
            self.spans_declared += spans.len();
            #[cfg(feature = "tracing")]
            self.span_decls.extend(spans.iter().cloned());
            self.emit(Frame::Spans(spans));
        }
        let threads = self.shared.threads();
        // Worker ids are handed out in order; the ones at or past the count declared are new.
        let mut new: Vec<&Arc<crate::hot::ThreadSlot>> =
            threads.iter().filter(|t| t.decl.id as usize >= self.workers_declared).collect();
        if !new.is_empty() {
            new.sort_by_key(|t| t.decl.id);
            for t in &new {
                // The baseline for the worker's first interval.
                if let Some(now) = sched_now(t.tid) {
                    self.prev_sched.insert(t.decl.id, now);
                }
            }
            // Ids taken by threads that exited before they were declared are declared too, so
            // that ids stay dense.
            let last = new.last().map_or(0, |t| t.decl.id as usize);
            let decls: Vec<_> = (self.workers_declared..=last)
                .map(|id| match new.iter().find(|t| t.decl.id as usize == id) {
                    Some(t) => t.decl.clone(),
                    None => {
                        loopscope_core::model::WorkerDecl { id: id as u32, index: None, thread_name: "(exited)".into() }
                    }
                })
                .collect();
            self.workers_declared = last + 1;
            self.emit(Frame::Workers(decls));
        }
        threads
    }

    /// The alive tasks' idle times and ages per site, from the task table (`None` when no task is
    /// followed and none was in the last interval, so an idle program's recording stays small),
    /// and each site's longest idle time, for the automatic dumps.
    fn task_ages(&mut self, alive_in_runtime: Option<u64>, counted_at: u64) -> (Option<TaskAges>, Vec<(u32, u64)>) {
        let now = self.shared.now_raw();
        if alive_in_runtime.is_some_and(|n| n <= self.shared.own_tasks()) {
            // The runtime has no task of the program's: any place still taken by a task spawned
            // before the count is a task whose end tokio reported before its spawn (a spawn on
            // a runtime shutting down).
            self.shared.tasks().clear_spawned_before(counted_at);
        }
        let bounds = loopscope_core::tasks::IDLE_BOUNDS.map(|b| u64::try_from(b.as_nanos()).unwrap_or(u64::MAX));
        let mut per_site: std::collections::BTreeMap<u32, (u64, DistAcc, DistAcc, [u64; 3], u64)> = Default::default();
        // The idlest tasks, kept as a small list sorted longest first.
        let mut idlest: Vec<IdleTask> = Vec::with_capacity(TaskAges::MAX_IDLEST + 1);
        let (mut followed, mut undeclared) = (0u64, 0u64);
        for t in self.shared.tasks().alive() {
            // Only sites already declared (a newer one is declared next interval).
            if t.site as usize >= self.sites_declared {
                undeclared += 1;
                continue;
            }
            followed += 1;
            let idle_ns = self.shared.nanos_between(if t.last == 0 { t.spawned } else { t.last }, now);
            let age_ns = self.shared.nanos_between(t.spawned, now);
            let e = per_site.entry(t.site).or_default();
            e.0 += 1;
            e.1.record_n_ns(idle_ns, 1);
            e.2.record_n_ns(age_ns, 1);
            for (over, bound) in e.3.iter_mut().zip(bounds) {
                *over += u64::from(idle_ns > bound);
            }
            e.4 = e.4.max(idle_ns);
            if idlest.len() < TaskAges::MAX_IDLEST || idlest.last().is_some_and(|l| l.idle_ns < idle_ns) {
                let at = idlest.partition_point(|i| i.idle_ns >= idle_ns);
                idlest.insert(at, IdleTask { id: t.id, site: t.site, idle_ns, age_ns, never_polled: t.last == 0 });
                idlest.truncate(TaskAges::MAX_IDLEST);
            }
        }
        let longest: Vec<(u32, u64)> = per_site.iter().map(|(site, e)| (*site, e.4)).collect();
        let had = std::mem::replace(&mut self.tasks_followed, followed > 0);
        if followed == 0 && !had {
            return (None, longest);
        }
        let ages = TaskAges {
            interval: self.index,
            sites: per_site
                .into_iter()
                .map(|(site, (alive, idle, age, idle_over, _))| SiteTasks {
                    site,
                    alive,
                    idle: idle.to_dist(),
                    age: age.to_dist(),
                    idle_over,
                })
                .collect(),
            idlest,
            // The runtime's count includes the recorder's own tasks (the lag probe, a dump's).
            untracked: alive_in_runtime.unwrap_or(0).saturating_sub(followed + undeclared + self.shared.own_tasks()),
        };
        (Some(ages), longest)
    }

    fn gauges(&self) -> Gauges {
        let Some(handle) = self.shared.runtime() else { return Gauges::default() };
        let m = handle.metrics();
        Gauges {
            alive_tasks: m.num_alive_tasks() as u64,
            global_queue: m.global_queue_depth() as u64,
            local_queues: (0..m.num_workers()).map(|w| m.worker_local_queue_depth(w) as u64).collect(),
            blocking_threads: m.num_blocking_threads() as u64,
            idle_blocking_threads: m.num_idle_blocking_threads() as u64,
        }
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.declare_runtime();
        let footer = Footer { end_ns: self.shared.now_ns(), intervals: self.index, errors: self.shared.errors() };
        self.emit(Frame::Footer(footer));
        self.finished = true;
        // The runtime handle would otherwise keep the runtime's internals alive through the hooks.
        self.shared.forget_runtime();
    }
}

/// The header, as known at install: the runtime is declared later ([`Frame::Runtime`]).
fn header(shared: &Shared, meta: &Meta) -> Header {
    Header {
        format_version: FORMAT_VERSION,
        loopscope_version: env!("CARGO_PKG_VERSION").into(),
        flavor: Flavor::Unknown,
        workers: 0,
        host: hostname(),
        pid: std::process::id(),
        start_unix_ns: meta.start_unix_ns,
        command_line: meta.command_line.clone(),
        workload: meta.workload.clone(),
        interval_ns: meta.interval.as_nanos() as u64,
        slow_poll_ns: shared.slow_poll_ns(),
        schedule_latency: meta.schedule_latency,
        stall_threshold_ns: meta.stall_threshold.map(|t| t.as_nanos() as u64),
    }
}

/// Creates (or truncates) a recording readable by its owner only: it holds the command line,
/// source paths and stacks.
fn create_private(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A worker thread's CPU time, run-queue delay, voluntary and involuntary switches so far.
fn sched_now(tid: i32) -> Option<[u64; 4]> {
    let (cpu, delay) = crate::detector::kernel::schedstat(tid)?;
    let (voluntary, involuntary) = crate::detector::kernel::switches(tid).unwrap_or((0, 0));
    Some([cpu, delay, voluntary, involuntary])
}
