//! Figures of a window of intervals: what every view shows.

use std::time::Duration;

use loopscope_core::dist::{DistAcc, Summary};

use crate::hot::{HotAcc, HotRow, Sampling, SpanRow};
use crate::timeline::Timeline;

/// One spawn site over the window.
#[derive(Clone, Debug, Default)]
pub struct SiteRow {
    /// Site id.
    pub id: u32,
    /// `file:line`.
    pub name: String,
    /// Tasks spawned and not finished, up to the window's end.
    pub alive: u64,
    /// Tasks spawned, up to the window's end.
    pub total: u64,
    /// Polls in the window.
    pub polls: u64,
    /// Time spent polling, as a share of one worker over the window (percent).
    pub busy_pct: f64,
    /// Poll durations.
    pub poll: Summary,
    /// Scheduling latencies.
    pub sched: Summary,
    /// Polls over the slow-poll threshold.
    pub slow: u64,
    /// Stalls raised in the window.
    pub stalls: u64,
}

/// One tokio worker (every thread that ran it), or a thread outside the workers, over the window.
#[derive(Clone, Debug, Default)]
pub struct WorkerRow {
    /// `worker N`, or the thread's name.
    pub name: String,
    /// Share of the window spent polling (0..=1).
    pub busy: f64,
    /// Polls.
    pub polls: u64,
    /// Share of the time its threads wanted a CPU that they waited for one (0..=1).
    pub host_share: f64,
}

/// Everything the views show for the window `[start, end)` of the timeline's intervals.
#[derive(Clone, Debug, Default)]
pub struct WindowStats {
    /// Interval positions in the timeline.
    pub start: usize,
    /// One past the last.
    pub end: usize,
    /// Wall time covered.
    pub span: Duration,
    /// Runtime-wide poll durations.
    pub poll: DistAcc,
    /// Runtime-wide scheduling latencies.
    pub sched: DistAcc,
    /// The lag probe (lean profile).
    pub lag: DistAcc,
    /// Per site.
    pub sites: Vec<SiteRow>,
    /// Per worker.
    pub workers: Vec<WorkerRow>,
    /// Polls per second of each interval from the start of the timeline to `end`.
    pub polls_per_s: Vec<u64>,
    /// Tasks alive at the end of each interval up to `end`.
    pub tasks_alive: Vec<u64>,
    /// Global queue depth at the window's end.
    pub global_queue: u64,
    /// Deepest local queue at the window's end.
    pub local_queue_max: u64,
    /// Blocking-pool threads at the window's end.
    pub blocking_threads: u64,
    /// Stalls raised in the window.
    pub stalls: u64,
    /// CPU time the workers got in the window.
    pub host_cpu: Duration,
    /// Time the workers waited for a CPU (runnable, not running) in the window: what the host took.
    pub host_delay: Duration,
    /// The window's slow-poll sampling figures (its hot lines: [`WindowAcc::hot_rows`]).
    pub sampling: Sampling,
}

/// The percentile summary of one stored distribution (empty when it is damaged), as the views
/// show it.
pub fn summary_of(d: &loopscope_core::dist::Dist) -> Summary {
    d.decode().map(|acc| acc.summary()).unwrap_or_default()
}

/// Per-site accumulators.
#[derive(Clone, Default)]
struct SiteAcc {
    poll: DistAcc,
    sched: DistAcc,
    slow: u64,
}

/// Per-worker sums (a row per tokio worker, however many threads ran it).
#[derive(Clone, Default)]
struct WorkerAcc {
    busy_ns: u64,
    polls: u64,
    cpu_ns: u64,
    run_delay_ns: u64,
}

/// The running sums behind a window's figures; extended interval by interval, so a live window
/// that grows by one interval costs one interval, not the whole run.
#[derive(Clone, Default)]
pub struct WindowAcc {
    /// First interval position.
    pub start: usize,
    /// One past the last interval added.
    pub end: usize,
    span: Duration,
    lag: DistAcc,
    poll: DistAcc,
    sched: DistAcc,
    sites: Vec<SiteAcc>,
    spawned: Vec<(u64, u64)>,
    /// By worker row: tokio's worker index, or past the runtime's workers for other threads.
    workers: std::collections::BTreeMap<u32, WorkerAcc>,
    polls_per_s: Vec<u64>,
    tasks_alive: Vec<u64>,
    last_gauges: (u64, u64, u64),
    hot: HotAcc,
}

impl std::fmt::Debug for WindowAcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAcc").field("start", &self.start).field("end", &self.end).finish_non_exhaustive()
    }
}

impl WindowAcc {
    /// The sums of the window `[start, end)`.
    pub fn new(t: &Timeline, start: usize, end: usize) -> Self {
        let end = end.min(t.intervals.len());
        let start = start.min(end);
        let mut acc = WindowAcc { start, end: 0, spawned: t.dropped_spawned.clone(), ..WindowAcc::default() };
        acc.extend(t, end);
        acc
    }

    /// Adds the intervals up to `end`.
    pub fn extend(&mut self, t: &Timeline, end: usize) {
        let end = end.min(t.intervals.len());
        for (pos, i) in t.intervals.iter().enumerate().take(end).skip(self.end) {
            let secs = (i.end_ns.saturating_sub(i.start_ns)).max(1) as f64 / 1e9;
            let polls: u64 = i.sites.iter().map(|s| s.poll.count).sum();
            self.polls_per_s.push((polls as f64 / secs) as u64);
            self.tasks_alive.push(i.gauges.alive_tasks);
            crate::timeline::add_spawned(&mut self.spawned, i);
            if pos < self.start {
                continue;
            }
            self.span += Duration::from_nanos(i.end_ns.saturating_sub(i.start_ns));
            self.hot.add(t, i);
            let _ = self.lag.add_dist(&i.lag);
            for s in &i.sites {
                let id = s.site as usize;
                if self.sites.len() <= id {
                    self.sites.resize(id + 1, SiteAcc::default());
                }
                let acc = &mut self.sites[id];
                acc.slow += s.slow_polls;
                // A damaged histogram is left out; the rest of the window still shows.
                if let Ok(b) = s.poll.buckets() {
                    acc.poll.add_decoded(&s.poll, &b);
                    self.poll.add_decoded(&s.poll, &b);
                }
                if let Ok(b) = s.sched.buckets() {
                    acc.sched.add_decoded(&s.sched, &b);
                    self.sched.add_decoded(&s.sched, &b);
                }
            }
            for wk in &i.workers {
                let row =
                    t.workers.get(wk.worker as usize).and_then(|d| d.index).unwrap_or(WORKER_ROWS_AFTER + wk.worker);
                let acc = self.workers.entry(row).or_default();
                acc.busy_ns += wk.poll.sum_ns;
                acc.polls += wk.poll.count;
                acc.cpu_ns += wk.cpu_ns;
                acc.run_delay_ns += wk.run_delay_ns;
            }
            self.last_gauges = (
                i.gauges.global_queue,
                i.gauges.local_queues.iter().copied().max().unwrap_or(0),
                i.gauges.blocking_threads,
            );
        }
        self.end = self.end.max(end);
    }

    /// One site's poll-time and scheduling-latency histograms over the window.
    pub fn site_dists(&self, id: u32) -> Option<(DistAcc, DistAcc)> {
        let acc = self.sites.get(id as usize)?;
        Some((acc.poll.clone(), acc.sched.clone()))
    }

    /// The window's sampled lines and span histograms.
    pub fn hot(&self) -> &HotAcc {
        &self.hot
    }

    /// Lines where the window's sampled slow polls spent their time, every site's, the most
    /// samples first (computed on demand: only the hot-lines views need them).
    pub fn hot_rows(&self, t: &Timeline) -> Vec<HotRow> {
        self.hot.rows(t)
    }

    /// Poll time per `tracing` span of one site over the window, the busiest span first.
    pub fn site_spans(&self, t: &Timeline, id: u32) -> Vec<SpanRow> {
        let busy = self.sites.get(id as usize).map_or(Duration::ZERO, |a| a.poll.sum());
        self.hot.spans(t, id, busy)
    }

    /// The figures the views show.
    pub fn stats(&self, t: &Timeline) -> WindowStats {
        let (start, end) = (self.start, self.end);
        let mut w = WindowStats {
            start,
            end,
            span: self.span,
            lag: self.lag.clone(),
            polls_per_s: self.polls_per_s.clone(),
            tasks_alive: self.tasks_alive.clone(),
            global_queue: self.last_gauges.0,
            local_queue_max: self.last_gauges.1,
            blocking_threads: self.last_gauges.2,
            ..WindowStats::default()
        };
        let (from_ns, to_ns) = match (t.intervals.get(start), end.checked_sub(1).and_then(|e| t.intervals.get(e))) {
            (Some(a), Some(b)) if start < end => (a.start_ns, b.end_ns),
            _ => (0, 0),
        };
        let mut stalls_per_site = vec![0u64; self.sites.len().max(t.sites.len())];
        for s in t.stalls.iter().filter(|s| s.stall.started_ns >= from_ns && s.stall.started_ns < to_ns) {
            w.stalls += 1;
            if let Some(site) = s.stall.site
                && let Some(n) = stalls_per_site.get_mut(site as usize)
            {
                *n += 1;
            }
        }
        w.poll = self.poll.clone();
        w.sched = self.sched.clone();
        let span_ns = w.span.as_nanos().max(1) as f64;
        for (id, acc) in self.sites.iter().enumerate() {
            let (sp, fin) = self.spawned.get(id).copied().unwrap_or_default();
            if acc.poll.count() == 0 && sp == 0 {
                continue;
            }
            w.sites.push(SiteRow {
                id: id as u32,
                name: t.site_name(id as u32),
                alive: sp.saturating_sub(fin),
                total: sp,
                polls: acc.poll.count(),
                busy_pct: acc.poll.sum().as_nanos() as f64 / span_ns * 100.0,
                poll: acc.poll.summary(),
                sched: acc.sched.summary(),
                slow: acc.slow,
                stalls: stalls_per_site.get(id).copied().unwrap_or(0),
            });
        }
        w.workers = self
            .workers
            .iter()
            .map(|(&row, acc)| WorkerRow {
                name: match row.checked_sub(WORKER_ROWS_AFTER) {
                    None => format!("worker {row}"),
                    Some(id) => {
                        t.workers.get(id as usize).map_or_else(|| format!("thread #{id}"), |d| d.thread_name.clone())
                    }
                },
                busy: (acc.busy_ns as f64 / span_ns).min(1.0),
                polls: acc.polls,
                host_share: share(acc.cpu_ns, acc.run_delay_ns),
            })
            .collect();
        let (cpu, delay) = self.workers.values().fold((0u64, 0u64), |(c, d), a| (c + a.cpu_ns, d + a.run_delay_ns));
        w.host_cpu = Duration::from_nanos(cpu);
        w.host_delay = Duration::from_nanos(delay);
        w.sampling = self.hot.sampling();
        w
    }
}

/// Rows of threads that polled tasks outside a tokio worker are numbered from here.
const WORKER_ROWS_AFTER: u32 = 1 << 20;

/// The share of the time threads wanted a CPU that they waited for one.
fn share(cpu_ns: u64, run_delay_ns: u64) -> f64 {
    let wanted = cpu_ns.saturating_add(run_delay_ns);
    if wanted == 0 { 0.0 } else { run_delay_ns as f64 / wanted as f64 }
}

impl WindowStats {
    /// The share of the time the workers wanted a CPU that the host gave to something else.
    pub fn host_share(&self) -> f64 {
        share(self.host_cpu.as_nanos() as u64, self.host_delay.as_nanos() as u64)
    }
}

/// Computes the figures of the window `[start, end)`.
pub fn window(t: &Timeline, start: usize, end: usize) -> WindowStats {
    WindowAcc::new(t, start, end).stats(t)
}
