//! The report: a recording aggregated per runtime, per worker and per spawn site.
//!
//! [`Aggregator`] consumes frames one at a time (from a file or live from the recorder), so its
//! memory depends on the number of spawn sites and workers, never on the length of the run.
//! [`Report`] is its result: data, serialized as JSON with a stable, documented schema
//! ([`SCHEMA_VERSION`], `docs/report.schema.json`). Displaying it is the reader's concern (the
//! `loopscope` command's text report is built on [`crate::text`]).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::dist::{DistAcc, Summary};
use crate::format::{Completeness, ReadError, Reader};
use crate::model::{
    Event, Flavor, Footer, Frame, Header, Interval, SiteDecl, SpanDecl, Stall, StallCategory, WorkerDecl,
};
use crate::resolve::Resolver;
use crate::stall::{Closed, Origin, StallTracker};
use crate::units::{duration_ns, opt_duration_ns};
use crate::workload::{Metric, WorkloadResult};
use std::collections::BTreeMap;

/// Version of the JSON report schema. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// Distinct recorder error messages kept by the aggregator; more are counted, not kept.
pub const MAX_ERRORS: usize = 1_000;

#[derive(Clone, Debug, Default)]
struct Acc {
    spawned: u64,
    finished: u64,
    slow_polls: u64,
    stalls: u64,
    poll: DistAcc,
    sched: DistAcc,
    /// CPU time and run-queue delay (workers only).
    cpu_ns: u64,
    run_delay_ns: u64,
}

/// Worker rows of the report: threads that ran the same tokio worker share a row (a thread that
/// took over a worker through `block_in_place` is that worker), so rows are bounded by the
/// runtime's workers however many threads come and go; threads without a worker index get rows
/// of their own, up to [`MAX_WORKER_ROWS`].
#[derive(Clone, Debug)]
struct WorkerRow {
    decl: WorkerDecl,
    threads: u32,
    acc: Acc,
}

/// Worker rows kept by the aggregator; threads beyond share the last one.
pub const MAX_WORKER_ROWS: usize = 1024;

impl Acc {
    fn add(&mut self, slow: u64, poll: &crate::Dist, sched: &crate::Dist) -> Result<(), String> {
        self.slow_polls += slow;
        self.poll.add_dist(poll).map_err(|e| format!("poll histogram: {e}"))?;
        self.sched.add_dist(sched).map_err(|e| format!("scheduling histogram: {e}"))
    }
}

/// Folds frames into running totals.
#[derive(Clone, Debug)]
pub struct Aggregator {
    header: Header,
    sites: Vec<SiteDecl>,
    /// Per declared worker: its row.
    worker_row: Vec<u32>,
    worker_rows: Vec<WorkerRow>,
    site_acc: Vec<Acc>,
    runtime: Acc,
    lag: DistAcc,
    intervals: u64,
    first_start_ns: Option<u64>,
    last_end_ns: u64,
    global_queue_max: u64,
    global_queue_sum: u64,
    local_queue_max: u64,
    blocking_threads_max: u64,
    /// Recorder errors, each once, in the order met.
    errors: Vec<String>,
    errors_dropped: u64,
    workload: Option<WorkloadResult>,
    footer: Option<Footer>,
    stalls: BTreeMap<StallKey, StallAcc>,
    tracker: StallTracker,
    /// Slow-poll samples by (spawn site, span, program line, category).
    hot: BTreeMap<HotKey, HotAcc>,
    /// `tracing` span callsites, by id.
    span_decls: Vec<SpanDecl>,
    /// Poll time per (spawn site, span).
    span_acc: BTreeMap<(u32, u32), DistAcc>,
    /// Per site: its alive tasks over time, for leaks.
    alive: Vec<Option<crate::growth::AliveSeries>>,
    /// Tasks that panicked, by (site, location, message).
    panics: BTreeMap<(Option<u32>, Option<String>, String), u64>,
    /// Alive tasks' idle times and task dumps.
    tasks: crate::tasks::TaskState,
    sampling: Sampling,
    detection_sum_ns: u64,
    detection_max_ns: u64,
    stall_count: u64,
}

/// Stalls are grouped by blocking site, category and spawn site.
type StallKey = (Option<String>, StallCategory, Option<u32>);

/// Slow-poll samples are grouped by spawn site, innermost span, program line and category.
type HotKey = (Option<u32>, Option<u32>, Option<String>, StallCategory);

#[derive(Clone, Debug, Default)]
struct HotAcc {
    samples: u64,
    function: Option<String>,
    call: Option<String>,
}

/// Distinct (site, line, category) groups of samples kept; further ones are counted as
/// `<other lines>` of their site.
pub const MAX_HOT_LINES: usize = 10_000;

/// Distinct (site, location, message) panics kept; further ones are counted together.
pub const MAX_PANIC_ROWS: usize = 1_000;

/// Distinct (site, span) pairs whose poll times are kept; further ones are left out (said in
/// the notes).
pub const MAX_SPAN_ROWS: usize = 10_000;

#[derive(Clone, Debug, Default)]
struct StallAcc {
    count: u64,
    closed: u64,
    late: u64,
    /// Counted by the recorder past its budget of stall events, not recorded one by one.
    unrecorded: u64,
    total_ns: u64,
    max_ns: u64,
    syscall: Option<String>,
    fd_target: Option<String>,
    call: Option<String>,
    blocking_function: Option<String>,
    /// The innermost span of the latest stall.
    span: Option<u32>,
}

impl Aggregator {
    /// Starts from a recording's header.
    pub fn new(header: Header) -> Self {
        Aggregator {
            header,
            sites: Vec::new(),
            worker_row: Vec::new(),
            worker_rows: Vec::new(),
            site_acc: Vec::new(),
            runtime: Acc::default(),
            lag: DistAcc::new(),
            intervals: 0,
            first_start_ns: None,
            last_end_ns: 0,
            global_queue_max: 0,
            global_queue_sum: 0,
            local_queue_max: 0,
            blocking_threads_max: 0,
            errors: Vec::new(),
            errors_dropped: 0,
            workload: None,
            footer: None,
            stalls: BTreeMap::new(),
            tracker: StallTracker::default(),
            hot: BTreeMap::new(),
            span_decls: Vec::new(),
            span_acc: BTreeMap::new(),
            alive: Vec::new(),
            panics: BTreeMap::new(),
            tasks: crate::tasks::TaskState::default(),
            sampling: Sampling::default(),
            detection_sum_ns: 0,
            detection_max_ns: 0,
            stall_count: 0,
        }
    }

    fn push_stall_begin(&mut self, s: &Stall) {
        if !self.tracker.begin(s) {
            // Inside `block_in_place`: the worker had been handed over; not a stall.
            return;
        }
        if let Some(acc) = s.site.and_then(|i| self.site_acc.get_mut(i as usize)) {
            acc.stalls += 1;
        }
        let key = (s.blocking_site.clone(), s.category, s.site);
        let acc = self.stalls.entry(key).or_default();
        acc.count += 1;
        acc.late += u64::from(s.late);
        acc.syscall.clone_from(&s.syscall);
        acc.fd_target.clone_from(&s.fd_target);
        acc.call.clone_from(&s.call);
        acc.blocking_function.clone_from(&s.blocking_function);
        acc.span = s.spans.last().copied();
        // A stall lasts at least until it was detected; the end event gives the full duration.
        acc.max_ns = acc.max_ns.max(s.detected_ns.saturating_sub(s.started_ns));
        self.stall_count += 1;
        let threshold = self.header.stall_threshold_ns.unwrap_or(0);
        let latency = s.detected_ns.saturating_sub(s.started_ns.saturating_add(threshold));
        self.detection_sum_ns += latency;
        self.detection_max_ns = self.detection_max_ns.max(latency);
    }

    fn push_stall_end(&mut self, closed: Closed) {
        let s = &closed.stall;
        let begun = (closed.begun_site.clone(), closed.raised, s.site);
        let key = (s.blocking_site.clone(), closed.category, s.site);
        if key != begun {
            // Reclassified by a later look or over its whole duration, or named by a look when
            // it was raised without a stack: move it to its group.
            let details = self.stalls.get_mut(&begun).map(|old| {
                old.count = old.count.saturating_sub(1);
                old.late = old.late.saturating_sub(u64::from(s.late));
                old.clone()
            });
            if self.stalls.get(&begun).is_some_and(|old| old.count == 0) {
                self.stalls.remove(&begun);
            }
            let new = self.stalls.entry(key.clone()).or_insert_with(|| StallAcc {
                count: 0,
                closed: 0,
                late: 0,
                unrecorded: 0,
                total_ns: 0,
                max_ns: 0,
                ..details.unwrap_or_default()
            });
            new.count += 1;
            new.late += u64::from(s.late);
            if s.blocking_site != closed.begun_site {
                new.call.clone_from(&s.call);
                new.blocking_function.clone_from(&s.blocking_function);
            }
        }
        if let Some(acc) = self.stalls.get_mut(&key) {
            acc.closed += 1;
            acc.total_ns += closed.duration_ns;
            acc.max_ns = acc.max_ns.max(closed.duration_ns);
        }
    }

    /// Folds in one frame (validated, as a [`Reader`] hands them out, and resolved, for stalls to
    /// name their blocking sites). An error describes a histogram that does not decode.
    pub fn push(&mut self, frame: &Frame) -> Result<(), AggregateError> {
        match frame {
            Frame::Header(_) | Frame::Modules(_) => {}
            Frame::Spans(d) => self.span_decls.extend(d.iter().cloned()),
            Frame::Samples(samples) => self.push_samples(samples),
            Frame::TaskAges(t) => self.tasks.push_ages(t),
            Frame::TaskDump(d) => self.tasks.push_dump(d),
            Frame::Runtime(r) => self.header.apply_runtime(r),
            Frame::Sites(s) => {
                self.sites.extend(s.iter().cloned());
                self.site_acc.resize_with(self.sites.len(), Acc::default);
            }
            Frame::Workers(w) => {
                for d in w {
                    let same = d.index.and_then(|i| self.worker_rows.iter().position(|r| r.decl.index == Some(i)));
                    let row = match same {
                        Some(row) => row,
                        None if self.worker_rows.len() < MAX_WORKER_ROWS => {
                            self.worker_rows.push(WorkerRow { decl: d.clone(), threads: 0, acc: Acc::default() });
                            self.worker_rows.len() - 1
                        }
                        None => self.worker_rows.len() - 1,
                    };
                    self.worker_rows[row].threads += 1;
                    self.worker_row.push(row as u32);
                }
            }
            Frame::Interval(i) => self.push_interval(i).map_err(AggregateError)?,
            Frame::Event(e) => match e {
                Event::StallBegin(s) => self.push_stall_begin(s),
                Event::StallLook { id, category, stack, .. } => self.tracker.look(*id, *category, stack),
                Event::StallEnd { id, duration_ns, category } => {
                    if let Some(closed) = self.tracker.end(*id, *duration_ns, *category) {
                        self.push_stall_end(closed);
                    }
                }
                Event::RecorderError { message, .. } => self.error(message),
            },
            Frame::Workload(w) => self.workload = Some((**w).clone()),
            Frame::Footer(f) => {
                for e in &f.errors {
                    self.error(e);
                }
                self.footer = Some(f.clone());
            }
        }
        Ok(())
    }

    fn push_samples(&mut self, s: &crate::model::Samples) {
        self.sampling.threshold_ns = s.threshold_ns;
        self.sampling.period_ns = s.period_ns;
        self.sampling.dropped += s.dropped;
        self.sampling.skipped += s.skipped;
        for st in &s.stacks {
            self.sampling.samples += st.count;
            if st.stack.is_empty() {
                // No stack was taken (the thread did not answer in time, the unwinder was
                // behind): counted, but it says nothing about where.
                self.sampling.without_stack += st.count;
                continue;
            }
            let at = crate::stall::program_line(&st.stack);
            let category = crate::stall::refine(st.category, &st.stack);
            let span = st.spans.last().copied();
            let mut key = (st.site, span, at.line.clone(), category);
            if !self.hot.contains_key(&key) && self.hot.len() >= MAX_HOT_LINES {
                key = (st.site, span, Some("<other lines>".into()), category);
            }
            let acc = self.hot.entry(key).or_default();
            acc.samples += st.count;
            if acc.function.is_none() {
                acc.function = at.function;
                acc.call = at.call;
            }
        }
    }

    fn error(&mut self, message: &str) {
        if self.errors.iter().any(|e| e == message) {
            return;
        }
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(message.to_string());
        } else {
            self.errors_dropped += 1;
        }
    }

    fn push_interval(&mut self, i: &Interval) -> Result<(), String> {
        let ctx = |e: String| format!("interval {}: {e}", i.index);
        for s in &i.sites {
            let acc =
                self.site_acc.get_mut(s.site as usize).ok_or_else(|| ctx(format!("undeclared site {}", s.site)))?;
            acc.spawned += s.spawned;
            acc.finished += s.finished;
            if s.spawned > 0 || s.finished > 0 {
                let alive = acc.spawned as i64 - acc.finished as i64;
                if self.alive.len() <= s.site as usize {
                    self.alive.resize(s.site as usize + 1, None);
                }
                let width = self.header.interval_ns;
                let start = *self.first_start_ns.get_or_insert(i.start_ns);
                self.alive[s.site as usize]
                    .get_or_insert_with(|| crate::growth::AliveSeries::new(start, width))
                    .push(i.end_ns, alive);
            }
            acc.add(s.slow_polls, &s.poll, &s.sched).map_err(ctx)?;
            self.runtime.spawned += s.spawned;
            self.runtime.finished += s.finished;
        }
        for w in &i.workers {
            let row = *self
                .worker_row
                .get(w.worker as usize)
                .ok_or_else(|| ctx(format!("undeclared worker {}", w.worker)))?;
            let acc = &mut self.worker_rows[row as usize].acc;
            acc.add(w.slow_polls, &w.poll, &w.sched).map_err(ctx)?;
            acc.cpu_ns = acc.cpu_ns.saturating_add(w.cpu_ns);
            acc.run_delay_ns = acc.run_delay_ns.saturating_add(w.run_delay_ns);
            self.runtime.add(w.slow_polls, &w.poll, &w.sched).map_err(ctx)?;
            self.runtime.cpu_ns = self.runtime.cpu_ns.saturating_add(w.cpu_ns);
            self.runtime.run_delay_ns = self.runtime.run_delay_ns.saturating_add(w.run_delay_ns);
        }
        self.lag.add_dist(&i.lag).map_err(|e| ctx(format!("lag probe histogram: {e}")))?;
        for p in &i.panics {
            let mut key = (p.site, p.location.clone(), p.message.clone());
            if !self.panics.contains_key(&key) && self.panics.len() >= MAX_PANIC_ROWS {
                key = (None, None, "<other panics>".into());
            }
            *self.panics.entry(key).or_default() += p.count;
        }
        for s in &i.spans {
            let key = (s.site, s.span);
            if !self.span_acc.contains_key(&key) && self.span_acc.len() >= MAX_SPAN_ROWS {
                continue;
            }
            let acc = self.span_acc.entry(key).or_default();
            acc.add_dist(&s.poll).map_err(|e| ctx(format!("span poll histogram: {e}")))?;
        }
        for t in &i.stall_tally {
            if let Some(acc) = t.site.and_then(|s| self.site_acc.get_mut(s as usize)) {
                acc.stalls += t.count;
            }
            let acc = self.stalls.entry((None, t.category, t.site)).or_default();
            acc.count += t.count;
            acc.closed += t.count;
            acc.unrecorded += t.count;
            acc.total_ns += t.total_ns;
            acc.max_ns = acc.max_ns.max(t.max_ns);
            self.stall_count += t.count;
        }
        self.intervals += 1;
        self.first_start_ns.get_or_insert(i.start_ns);
        self.last_end_ns = self.last_end_ns.max(i.end_ns);
        let g = &i.gauges;
        self.global_queue_max = self.global_queue_max.max(g.global_queue);
        self.global_queue_sum += g.global_queue;
        self.local_queue_max = self.local_queue_max.max(g.local_queues.iter().copied().max().unwrap_or(0));
        self.blocking_threads_max = self.blocking_threads_max.max(g.blocking_threads);
        Ok(())
    }

    /// Where sampled slow polls spent their time: per spawn site, its lines by samples (each
    /// line's share of the site's sampled time), sites with the most sampled time first.
    fn hot_lines(&self, site_name: &dyn Fn(Option<u32>) -> Option<String>) -> Vec<HotLine> {
        let period = self.sampling.period_ns;
        let mut per_site: BTreeMap<Option<u32>, u64> = BTreeMap::new();
        for ((site, _, _, _), acc) in &self.hot {
            *per_site.entry(*site).or_default() += acc.samples;
        }
        let mut lines: Vec<HotLine> = self
            .hot
            .iter()
            .map(|((site, span, line, category), acc)| {
                let site_samples = per_site[site].max(1);
                HotLine {
                    spawn_site: site_name(*site),
                    span: self.span_name(*span),
                    line: line.clone(),
                    function: acc.function.clone(),
                    call: acc.call.clone(),
                    category: *category,
                    samples: acc.samples,
                    time: Duration::from_nanos(acc.samples.saturating_mul(period)),
                    share: acc.samples as f64 / site_samples as f64,
                    site_samples: per_site[site],
                }
            })
            .collect();
        lines.sort_by(|a, b| {
            b.site_samples.cmp(&a.site_samples).then(a.spawn_site.cmp(&b.spawn_site)).then(b.samples.cmp(&a.samples))
        });
        lines
    }

    /// A span's `target::name`, if it was declared.
    fn span_name(&self, span: Option<u32>) -> Option<String> {
        span.and_then(|s| self.span_decls.get(s as usize)).map(SpanDecl::path)
    }

    /// Poll time per spawn site and span, the sites with the most polls first and each site's
    /// spans by busy time.
    fn span_rows(&self, site_name: &dyn Fn(Option<u32>) -> Option<String>) -> Vec<SpanReport> {
        let site_busy = |site: u32| self.site_acc.get(site as usize).map_or(Duration::ZERO, |a| a.poll.sum());
        let mut rows: Vec<SpanReport> = self
            .span_acc
            .iter()
            .filter_map(|(&(site, span), acc)| {
                let decl = self.span_decls.get(span as usize)?;
                let busy = site_busy(site);
                Some(SpanReport {
                    spawn_site: site_name(Some(site)),
                    span: decl.path(),
                    defined_at: decl.file.as_ref().map(|f| format!("{f}:{}", decl.line.unwrap_or(0))),
                    polls: acc.count(),
                    busy: acc.sum(),
                    site_share: if busy.is_zero() { 0.0 } else { acc.sum().as_secs_f64() / busy.as_secs_f64() },
                    poll: acc.summary(),
                })
            })
            .collect();
        rows.sort_by(|a, b| a.spawn_site.cmp(&b.spawn_site).then(b.busy.cmp(&a.busy)).then(a.span.cmp(&b.span)));
        rows
    }

    /// The sites declared so far.
    pub fn sites(&self) -> &[SiteDecl] {
        &self.sites
    }

    /// The report so far.
    pub fn report(&self, completeness: Completeness, skipped_frames: u64) -> Report {
        let start = self.first_start_ns.unwrap_or(0);
        let end = self.footer.as_ref().map_or(self.last_end_ns, |f| f.end_ns.max(self.last_end_ns));
        let duration = Duration::from_nanos(end.saturating_sub(start));
        let ratio = |busy: Duration, threads: u64| {
            let denom = duration.as_secs_f64() * threads.max(1) as f64;
            if denom > 0.0 { busy.as_secs_f64() / denom } else { 0.0 }
        };
        let rt = &self.runtime;
        let runtime = RuntimeReport {
            polls: rt.poll.count(),
            busy: rt.poll.sum(),
            busy_ratio: ratio(rt.poll.sum(), u64::from(self.header.workers)),
            poll: rt.poll.summary(),
            sched: rt.sched.summary(),
            lag: self.lag.summary(),
            slow_polls: rt.slow_polls,
            poll_outliers: rt.poll.outliers(),
            sched_outliers: rt.sched.outliers(),
            tasks: Tasks::new(rt.spawned, rt.finished),
            queues: Queues {
                global_max: self.global_queue_max,
                global_mean: if self.intervals == 0 {
                    0.0
                } else {
                    self.global_queue_sum as f64 / self.intervals as f64
                },
                local_max: self.local_queue_max,
                blocking_threads_max: self.blocking_threads_max,
            },
            host: HostTime::new(rt.cpu_ns, rt.run_delay_ns),
            stalls: StallTotals {
                count: self.stall_count,
                detection_latency_mean: Duration::from_nanos(
                    self.detection_sum_ns.checked_div(self.stall_count).unwrap_or(0),
                ),
                detection_latency_max: Duration::from_nanos(self.detection_max_ns),
            },
        };
        let workers = self
            .worker_rows
            .iter()
            .map(|WorkerRow { decl: d, threads, acc: a }| WorkerReport {
                id: d.id,
                index: d.index,
                thread_name: d.thread_name.clone(),
                threads: *threads,
                polls: a.poll.count(),
                busy: a.poll.sum(),
                busy_ratio: ratio(a.poll.sum(), 1),
                poll: a.poll.summary(),
                sched: a.sched.summary(),
                slow_polls: a.slow_polls,
                host: HostTime::new(a.cpu_ns, a.run_delay_ns),
            })
            .collect();
        let total_busy = rt.poll.sum().as_secs_f64();
        let mut sites: Vec<SiteReport> = self
            .sites
            .iter()
            .zip(&self.site_acc)
            .filter(|(_, a)| a.poll.count() > 0 || a.spawned > 0)
            .map(|(d, a)| SiteReport {
                id: d.id,
                location: d.location(),
                file: d.file.clone(),
                line: d.line,
                column: d.column,
                tasks: Tasks::new(a.spawned, a.finished),
                polls: a.poll.count(),
                busy: a.poll.sum(),
                busy_share: if total_busy > 0.0 { a.poll.sum().as_secs_f64() / total_busy } else { 0.0 },
                poll: a.poll.summary(),
                sched: a.sched.summary(),
                slow_polls: a.slow_polls,
                stalls: a.stalls,
                poll_outliers: a.poll.outliers(),
                sched_outliers: a.sched.outliers(),
            })
            .collect();
        sites.sort_by(|a, b| b.busy.cmp(&a.busy).then(b.polls.cmp(&a.polls)).then(a.id.cmp(&b.id)));
        let errors = self.errors.clone();
        let site_name = |id: Option<u32>| id.and_then(|i| self.sites.get(i as usize)).map(SiteDecl::location);
        let open = self.tracker.open();
        let mut stalls: Vec<StallGroup> = self
            .stalls
            .iter()
            .map(|(key, acc)| {
                let (blocking_site, category, site) = key;
                // Stalls still open at the end count with the time they were known to last.
                let open_ns: u64 = open
                    .iter()
                    .filter(|s| (&s.blocking_site, s.category, s.site) == (blocking_site, *category, *site))
                    .map(|s| s.detected_ns.saturating_sub(s.started_ns))
                    .sum();
                StallGroup {
                    origin: Origin::of(*category, acc.late == acc.count && acc.count > 0, blocking_site.is_some()),
                    blocking_site: blocking_site.clone(),
                    blocking_function: acc.blocking_function.clone(),
                    call: acc.call.clone(),
                    category: *category,
                    spawn_site: site_name(*site),
                    count: acc.count,
                    unfinished: acc.count.saturating_sub(acc.closed),
                    late: acc.late,
                    unrecorded: acc.unrecorded,
                    total: Duration::from_nanos(acc.total_ns + open_ns),
                    max: Duration::from_nanos(acc.max_ns),
                    syscall: acc.syscall.clone(),
                    fd_target: acc.fd_target.clone(),
                    span: self.span_name(acc.span),
                }
            })
            .collect();
        let hot_lines = self.hot_lines(&site_name);
        let spans = self.span_rows(&site_name);
        let mut panics: Vec<PanicReport> = self
            .panics
            .iter()
            .map(|((site, location, message), count)| PanicReport {
                spawn_site: site_name(*site),
                location: location.clone(),
                message: message.clone(),
                count: *count,
            })
            .collect();
        panics.sort_by(|a, b| b.count.cmp(&a.count).then(a.spawn_site.cmp(&b.spawn_site)));
        let growing: Vec<TaskGrowth> = self
            .alive
            .iter()
            .enumerate()
            .filter_map(|(site, series)| {
                let g = series.as_ref()?.growth(end)?;
                Some(TaskGrowth { spawn_site: site_name(Some(site as u32)), growth: g })
            })
            .collect();
        // The program's faults first, then what could not be tied to a line, then the host's.
        let rank = |o: Origin| match o {
            Origin::Program => 0,
            Origin::Unattributed => 1,
            Origin::Host => 2,
        };
        stalls.sort_by(|a, b| {
            rank(a.origin).cmp(&rank(b.origin)).then(b.total.cmp(&a.total)).then(b.count.cmp(&a.count))
        });
        let h = &self.header;
        Report {
            schema_version: SCHEMA_VERSION,
            loopscope_version: env!("CARGO_PKG_VERSION").to_string(),
            recording: RecordingInfo {
                format_version: h.format_version,
                written_by: h.loopscope_version.clone(),
                workload: h.workload.clone(),
                flavor: h.flavor,
                workers: h.workers,
                host: h.host.clone(),
                pid: h.pid,
                start_unix_ns: h.start_unix_ns,
                command_line: h.command_line.clone(),
                duration,
                intervals: self.intervals,
                interval: Duration::from_nanos(h.interval_ns),
                slow_poll_threshold: Duration::from_nanos(h.slow_poll_ns),
                schedule_latency_tracked: h.schedule_latency,
                stall_threshold: h.stall_threshold_ns.map(Duration::from_nanos),
                completeness,
                skipped_frames,
                events_dropped: self.errors_dropped,
            },
            runtime,
            workers,
            sites,
            stalls,
            sampling: self.sampling,
            hot_lines,
            spans,
            panics,
            growing,
            waiting: self.tasks.waiting(site_name),
            idlest: self.tasks.idlest(site_name),
            untracked_tasks: self.tasks.untracked(),
            tasks_followed: self.tasks.followed(),
            dumps: self.tasks.dumps().map(|d| crate::tasks::DumpReport::new(d, site_name)).collect(),
            dumps_total: self.tasks.dumps_total(),
            workload: self.workload.as_ref().map(WorkloadReport::from),
            errors,
            notes: Vec::new(),
        }
    }
}

impl Report {
    /// Reads a recording file and aggregates it, streaming (memory independent of its length).
    /// Stacks are not symbolized: see [`Report::from_file_with`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Report, ReadError> {
        Report::from_reader(Reader::open(path)?, &mut Resolver::addresses_only())
    }

    /// Reads a recording file, symbolizing its stacks with `resolver` so that stalls name their
    /// blocking lines.
    pub fn from_file_with(path: impl AsRef<Path>, resolver: &mut Resolver) -> Result<Report, ReadError> {
        Report::from_reader(Reader::open(path)?, resolver)
    }

    /// Aggregates the rest of an opened recording.
    pub fn from_reader<R: Read>(mut reader: Reader<R>, resolver: &mut Resolver) -> Result<Report, ReadError> {
        let mut agg = Aggregator::new(reader.header().clone());
        let path = reader.path().to_path_buf();
        let completeness = reader.read_rest(|at, frame| {
            agg.push(&resolver.frame(frame)).map_err(|e| ReadError::Corrupt {
                path: path.clone(),
                offset: at,
                reason: e.0,
            })
        })?;
        let mut report = agg.report(completeness, reader.skipped_frames());
        report.notes = resolver.notes();
        Ok(report)
    }
}

/// Task counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tasks {
    /// Tasks spawned.
    pub spawned: u64,
    /// Tasks that terminated.
    pub finished: u64,
    /// Spawned and not terminated at the end of the recording.
    pub alive: u64,
}

impl Tasks {
    fn new(spawned: u64, finished: u64) -> Self {
        Tasks { spawned, finished, alive: spawned.saturating_sub(finished) }
    }
}

/// Queue gauges over the recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Queues {
    /// Largest global (injection) queue depth sampled.
    pub global_max: u64,
    /// Mean global queue depth over the samples.
    pub global_mean: f64,
    /// Largest local queue depth sampled on any worker.
    pub local_max: u64,
    /// Largest blocking-pool size sampled.
    pub blocking_threads_max: u64,
}

/// Stalls of the whole runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StallTotals {
    /// Stalls detected.
    pub count: u64,
    /// Mean time from a stall's threshold being crossed to the watchdog raising it.
    #[serde(rename = "detection_latency_mean_ns", with = "duration_ns")]
    pub detection_latency_mean: Duration,
    /// Longest such time.
    #[serde(rename = "detection_latency_max_ns", with = "duration_ns")]
    pub detection_latency_max: Duration,
}

/// Stalls of one kind at one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StallGroup {
    /// Whose fault: the program's (a line was named), the host's (preempted, or seen too late
    /// to look), or unattributed. Host stalls never fail a gate or a test.
    pub origin: Origin,
    /// The line in the program's own code that blocked (`file:line`), when the stack was captured.
    pub blocking_site: Option<String>,
    /// The function at the blocking site.
    pub blocking_function: Option<String>,
    /// What the blocking site called (e.g. `std::thread::sleep`).
    pub call: Option<String>,
    /// What the stuck threads were doing.
    pub category: StallCategory,
    /// Spawn site of the stalled tasks.
    pub spawn_site: Option<String>,
    /// Stalls in this group.
    pub count: u64,
    /// Stalls that had not ended when the recording did.
    pub unfinished: u64,
    /// Stalls raised only after their poll returned (the watchdog was not scheduled in time).
    pub late: u64,
    /// Stalls the recorder only counted (past its budget of stall events): no stack, no line.
    pub unrecorded: u64,
    /// Total time the worker was blocked.
    #[serde(rename = "total_ns", with = "duration_ns")]
    pub total: Duration,
    /// Longest stall.
    #[serde(rename = "max_ns", with = "duration_ns")]
    pub max: Duration,
    /// System call of the latest stall, if it was in one.
    pub syscall: Option<String>,
    /// What that call's file descriptor referred to.
    pub fd_target: Option<String>,
    /// The innermost `tracing` span of the latest stall, with the layer.
    pub span: Option<String>,
}

/// The whole runtime.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuntimeReport {
    /// Task polls.
    pub polls: u64,
    /// Total time spent polling tasks.
    #[serde(rename = "busy_ns", with = "duration_ns")]
    pub busy: Duration,
    /// Busy time over (recording duration × workers).
    pub busy_ratio: f64,
    /// Poll durations.
    pub poll: Summary,
    /// Scheduling latency (wake to poll); empty when not tracked.
    pub sched: Summary,
    /// The lag probe: how long a task that yielded waited to be polled again, sampled every
    /// 10 ms (the `lean` profile's runtime-wide scheduling latency); empty when not probed.
    pub lag: Summary,
    /// Polls above the slow-poll threshold.
    pub slow_polls: u64,
    /// Poll durations above the histogram ceiling (kept in `poll.max_ns`).
    pub poll_outliers: u64,
    /// Scheduling latencies above the histogram ceiling.
    pub sched_outliers: u64,
    /// Task counts.
    pub tasks: Tasks,
    /// Queue gauges.
    pub queues: Queues,
    /// Stalls (polls that blocked a worker beyond the stall threshold).
    pub stalls: StallTotals,
    /// What the host took from the workers (all together).
    pub host: HostTime,
}

/// What the host took from the workers: the time they were runnable but waiting for a CPU
/// (run-queue delay), beside the CPU time they got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct HostTime {
    /// CPU time the threads got.
    #[serde(rename = "cpu_ns", with = "duration_ns")]
    pub cpu: Duration,
    /// Time they were runnable and waited for a CPU.
    #[serde(rename = "run_delay_ns", with = "duration_ns")]
    pub run_delay: Duration,
    /// `run_delay / (cpu + run_delay)`: the share of the time they wanted a CPU that the host
    /// gave to something else (0 when not measured).
    pub share: f64,
}

impl HostTime {
    fn new(cpu_ns: u64, run_delay_ns: u64) -> Self {
        let wanted = cpu_ns.saturating_add(run_delay_ns);
        HostTime {
            cpu: Duration::from_nanos(cpu_ns),
            run_delay: Duration::from_nanos(run_delay_ns),
            share: if wanted == 0 { 0.0 } else { run_delay_ns as f64 / wanted as f64 },
        }
    }
}

/// One tokio worker (every thread that ran it), or one thread that polled tasks outside a worker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerReport {
    /// Worker id in the recording (of the first thread of the row).
    pub id: u32,
    /// tokio's worker index.
    pub index: Option<u32>,
    /// Thread name.
    pub thread_name: String,
    /// Threads that ran this worker over the recording (more than one when `block_in_place`
    /// handed it to another thread).
    pub threads: u32,
    /// Task polls on this thread.
    pub polls: u64,
    /// Time spent polling.
    #[serde(rename = "busy_ns", with = "duration_ns")]
    pub busy: Duration,
    /// Busy time over the recording duration.
    pub busy_ratio: f64,
    /// Poll durations.
    pub poll: Summary,
    /// Scheduling latency.
    pub sched: Summary,
    /// Polls above the slow-poll threshold.
    pub slow_polls: u64,
    /// What the host took from this worker's threads.
    pub host: HostTime,
}

/// One spawn site.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SiteReport {
    /// Site id in the recording.
    pub id: u32,
    /// `file:line:col`.
    pub location: String,
    /// Source file.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Column.
    pub column: u32,
    /// Task counts.
    pub tasks: Tasks,
    /// Task polls.
    pub polls: u64,
    /// Time spent polling tasks from this site.
    #[serde(rename = "busy_ns", with = "duration_ns")]
    pub busy: Duration,
    /// Share of the runtime's busy time.
    pub busy_share: f64,
    /// Poll durations.
    pub poll: Summary,
    /// Scheduling latency.
    pub sched: Summary,
    /// Polls above the slow-poll threshold.
    pub slow_polls: u64,
    /// Stalls (polls that blocked a worker past the stall threshold) of this site's tasks.
    pub stalls: u64,
    /// Poll durations above the histogram ceiling.
    pub poll_outliers: u64,
    /// Scheduling latencies above the histogram ceiling.
    pub sched_outliers: u64,
}

/// Where the data came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordingInfo {
    /// Recording format version.
    pub format_version: u16,
    /// loopscope version that wrote it.
    pub written_by: String,
    /// Workload name, if any.
    pub workload: Option<String>,
    /// Scheduler flavor.
    pub flavor: Flavor,
    /// Worker threads.
    pub workers: u32,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// Command line.
    pub command_line: Vec<String>,
    /// Time covered by the intervals.
    #[serde(rename = "duration_ns", with = "duration_ns")]
    pub duration: Duration,
    /// Intervals read.
    pub intervals: u64,
    /// Interval length.
    #[serde(rename = "interval_ns", with = "duration_ns")]
    pub interval: Duration,
    /// Slow-poll threshold.
    #[serde(rename = "slow_poll_threshold_ns", with = "duration_ns")]
    pub slow_poll_threshold: Duration,
    /// Whether scheduling latency was tracked.
    pub schedule_latency_tracked: bool,
    /// The stall detector's threshold; `None` when it was off.
    #[serde(rename = "stall_threshold_ns", with = "opt_duration_ns")]
    pub stall_threshold: Option<Duration>,
    /// Whether the file was complete.
    pub completeness: Completeness,
    /// Frames skipped because they were written by a newer loopscope.
    pub skipped_frames: u64,
    /// Distinct recorder error messages beyond [`MAX_ERRORS`] (counted, not listed).
    pub events_dropped: u64,
}

impl RecordingInfo {
    /// What was recorded, by name: the workload, or the file name of the program (the first word
    /// of its command line; `program` when unknown).
    pub fn subject(&self) -> &str {
        if let Some(w) = &self.workload {
            return w;
        }
        let first = self.command_line.first().map_or("", String::as_str);
        let name = first.rsplit('/').next().unwrap_or(first);
        if name.is_empty() { "program" } else { name }
    }
}

/// A workload's own figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkloadReport {
    /// Workload name.
    pub name: String,
    /// Scalar figures.
    pub metrics: Vec<Metric>,
    /// Distribution summaries.
    pub distributions: Vec<NamedSummary>,
}

/// A named percentile summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedSummary {
    /// Name.
    pub name: String,
    /// Percentiles.
    #[serde(flatten)]
    pub summary: Summary,
}

impl From<&WorkloadResult> for WorkloadReport {
    fn from(w: &WorkloadResult) -> Self {
        WorkloadReport {
            name: w.name.clone(),
            metrics: w.metrics.clone(),
            distributions: w
                .distributions
                .iter()
                .filter_map(|d| Some(NamedSummary { name: d.name.clone(), summary: d.dist.decode().ok()?.summary() }))
                .collect(),
        }
    }
}

/// The report of one recording.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Version of the loopscope that made this report.
    pub loopscope_version: String,
    /// Recording metadata.
    pub recording: RecordingInfo,
    /// Runtime-wide figures.
    pub runtime: RuntimeReport,
    /// Per worker thread.
    pub workers: Vec<WorkerReport>,
    /// Per spawn site, by busy time, largest first.
    pub sites: Vec<SiteReport>,
    /// Stalls grouped by blocking site, category and spawn site: the program's first, then the
    /// unattributed, then the host's ([`Origin`]); most blocked time first within each.
    pub stalls: Vec<StallGroup>,
    /// How slow polls were sampled.
    pub sampling: Sampling,
    /// Where sampled slow polls spent their time, per spawn site (busiest first) and line.
    pub hot_lines: Vec<HotLine>,
    /// Poll time per spawn site and `tracing` span (with the layer, `loopscope::tracing_layer`).
    pub spans: Vec<SpanReport>,
    /// Tasks that panicked, by spawn site, location and message, most first.
    pub panics: Vec<PanicReport>,
    /// Spawn sites whose alive tasks kept growing over the recording (a leak).
    pub growing: Vec<TaskGrowth>,
    /// Alive tasks per spawn site, in the last interval with any task alive: how long since their last
    /// poll, the longest idle first (empty when the recorder did not follow tasks).
    pub waiting: Vec<crate::tasks::WaitingSite>,
    /// The tasks idle the longest, with their ids.
    pub idlest: Vec<crate::tasks::IdleTaskReport>,
    /// Alive tasks the recorder could not follow (its table of tasks was full where they fell).
    pub untracked_tasks: u64,
    /// Whether the recorder followed tasks' ages.
    pub tasks_followed: bool,
    /// The latest task dumps (at most [`crate::tasks::MAX_REPORTED_DUMPS`], the latest complete
    /// one kept), oldest first.
    pub dumps: Vec<crate::tasks::DumpReport>,
    /// Task dumps taken in all.
    pub dumps_total: u64,
    /// The workload's own figures.
    pub workload: Option<WorkloadReport>,
    /// Errors the recorder reported.
    pub errors: Vec<String>,
    /// What the reader could not do (a binary missing or changed since the recording, no line
    /// tables), for the user.
    pub notes: Vec<String>,
}

/// How slow polls were sampled, over the recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sampling {
    /// A poll was sampled once it had run this long (0: not sampled).
    #[serde(rename = "threshold_ns")]
    pub threshold_ns: u64,
    /// The poll time one sample stands for.
    #[serde(rename = "period_ns")]
    pub period_ns: u64,
    /// Samples taken.
    pub samples: u64,
    /// Samples taken whose stacks were not kept past the recorder's cap of distinct stacks.
    pub dropped: u64,
    /// Samples without a stack (not kept, or not taken in time): left out of the lines' shares.
    pub without_stack: u64,
    /// Samples that were due but not taken, past the budget of samples per second.
    pub skipped: u64,
}

/// Tasks of one spawn site that panicked at one place with one message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PanicReport {
    /// The spawn site of the tasks (`None`: past the cap of distinct panics).
    pub spawn_site: Option<String>,
    /// Where they panicked (`file:line:col`).
    pub location: Option<String>,
    /// The panic's message.
    pub message: String,
    /// How many times.
    pub count: u64,
}

/// A spawn site whose alive tasks kept growing (see [`crate::growth`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskGrowth {
    /// The spawn site.
    pub spawn_site: Option<String>,
    /// How it grew.
    #[serde(flatten)]
    pub growth: crate::growth::Growth,
}

/// Poll time spent inside one `tracing` span, for the tasks of one spawn site.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpanReport {
    /// The spawn site of the polled tasks.
    pub spawn_site: Option<String>,
    /// The span, `target::name`.
    pub span: String,
    /// Where the span is created (`file:line`), when its callsite says.
    pub defined_at: Option<String>,
    /// Times the span was entered and left within a poll.
    pub polls: u64,
    /// Total poll time inside the span.
    #[serde(rename = "busy_ns", with = "duration_ns")]
    pub busy: Duration,
    /// Share of the spawn site's poll time spent inside the span.
    pub site_share: f64,
    /// Poll time inside the span, per poll.
    pub poll: Summary,
}

/// A line of the program where sampled slow polls of one spawn site spent their time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HotLine {
    /// The spawn site of the polled tasks.
    pub spawn_site: Option<String>,
    /// The innermost `tracing` span the sampled polls were in, with the layer.
    pub span: Option<String>,
    /// The innermost line of the program's own code in the sampled stacks (`file:line`, or the
    /// function's name without line tables); `None` when every frame was a library's.
    pub line: Option<String>,
    /// The function at that line.
    pub function: Option<String>,
    /// What it was calling.
    pub call: Option<String>,
    /// What the kernel saw the thread doing (computing, or the call it was in), refined from
    /// the stack as a stall's is.
    pub category: StallCategory,
    /// Samples at this line.
    pub samples: u64,
    /// The poll time they stand for (samples × the sampling period).
    #[serde(rename = "time_ns", with = "duration_ns")]
    pub time: Duration,
    /// Share of the spawn site's sampled time (of its samples with a stack).
    pub share: f64,
    /// The spawn site's samples with a stack.
    pub site_samples: u64,
}

/// A frame the aggregator cannot fold in (a histogram that does not decode).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AggregateError(pub String);

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// Finds a site by its `file:line` or `file:line:col` suffix.
    pub fn site(&self, location_suffix: &str) -> Option<&SiteReport> {
        self.sites.iter().find(|s| {
            s.location.ends_with(location_suffix) || format!("{}:{}", s.file, s.line).ends_with(location_suffix)
        })
    }
}

/// Kept for the readers that clip with it from here; the table helpers live in [`crate::text`].
pub use crate::text::clip_left;
