//! Figures of a window of intervals: what every view shows.

use std::time::Duration;

use loopscope_core::dist::{DistAcc, Summary, bucket_index, bucket_value, highest_equivalent};

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

/// One worker over the window.
#[derive(Clone, Debug, Default)]
pub struct WorkerRow {
    /// Thread name and index.
    pub name: String,
    /// Share of the window spent polling (0..=1).
    pub busy: f64,
    /// Polls.
    pub polls: u64,
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
}

/// A distribution as the counts of the range of buckets it uses: small for the narrow range a
/// spawn site's polls usually span, and added to by index (a whole histogram is tens of
/// kilobytes, too much for each of thousands of sites).
#[derive(Clone, Default)]
struct Sparse {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    /// Bucket index of `counts[0]`.
    base: usize,
    counts: Vec<u64>,
}

impl Sparse {
    fn add(&mut self, d: &loopscope_core::dist::Dist, buckets: &[(u64, u64)]) {
        self.count += d.count;
        self.sum_ns = self.sum_ns.saturating_add(d.sum_ns);
        self.max_ns = self.max_ns.max(d.max_ns);
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else { return };
        let (lo, hi) = (bucket_index(first.0), bucket_index(last.0));
        if self.counts.is_empty() {
            self.base = lo;
        }
        if lo < self.base {
            let grow = self.base - lo;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.base = lo;
        }
        if hi - self.base >= self.counts.len() {
            self.counts.resize(hi - self.base + 1, 0);
        }
        for (v, n) in buckets {
            self.counts[bucket_index(*v) - self.base] += n;
        }
    }

    fn summary(&self) -> Summary {
        if self.count == 0 {
            return Summary::default();
        }
        let total: u64 = self.counts.iter().sum();
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total.max(1));
            let mut seen = 0;
            for (i, n) in self.counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    // As `loopscope report` shows it: the bucket's highest value, capped at the max.
                    let v = highest_equivalent(bucket_value(self.base + i));
                    return Duration::from_nanos(v.min(self.max_ns));
                }
            }
            Duration::ZERO
        };
        Summary {
            count: self.count,
            mean: Duration::from_nanos(self.sum_ns / self.count),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(self.max_ns),
        }
    }

    fn add_to(&self, acc: &mut DistAcc) {
        acc.add_scalars(self.count, self.sum_ns, self.max_ns, 0);
        for (i, n) in self.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            acc.record_bucket(bucket_value(self.base + i), *n);
        }
    }
}

/// The percentile summary of one stored distribution (empty when it is damaged), as the views
/// show it, without building a whole histogram.
pub fn summary_of(d: &loopscope_core::dist::Dist) -> Summary {
    let mut sparse = Sparse::default();
    if let Ok(b) = d.buckets() {
        sparse.add(d, &b);
    }
    sparse.summary()
}

/// Per-site accumulators.
#[derive(Clone, Default)]
struct SiteAcc {
    poll: Sparse,
    sched: Sparse,
    slow: u64,
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
    poll: Sparse,
    sched: Sparse,
    sites: Vec<SiteAcc>,
    spawned: Vec<(u64, u64)>,
    worker_busy: Vec<(u64, u64)>,
    polls_per_s: Vec<u64>,
    tasks_alive: Vec<u64>,
    last_gauges: (u64, u64, u64),
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
                    acc.poll.add(&s.poll, &b);
                    self.poll.add(&s.poll, &b);
                }
                if let Ok(b) = s.sched.buckets() {
                    acc.sched.add(&s.sched, &b);
                    self.sched.add(&s.sched, &b);
                }
            }
            for wk in &i.workers {
                let id = wk.worker as usize;
                if self.worker_busy.len() <= id {
                    self.worker_busy.resize(id + 1, (0, 0));
                }
                self.worker_busy[id].0 += wk.poll.sum_ns;
                self.worker_busy[id].1 += wk.poll.count;
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
        let (mut poll, mut sched) = (DistAcc::new(), DistAcc::new());
        acc.poll.add_to(&mut poll);
        acc.sched.add_to(&mut sched);
        Some((poll, sched))
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
        self.poll.add_to(&mut w.poll);
        self.sched.add_to(&mut w.sched);
        let span_ns = w.span.as_nanos().max(1) as f64;
        for (id, acc) in self.sites.iter().enumerate() {
            let (sp, fin) = self.spawned.get(id).copied().unwrap_or_default();
            if acc.poll.count == 0 && sp == 0 {
                continue;
            }
            w.sites.push(SiteRow {
                id: id as u32,
                name: t.site_name(id as u32),
                alive: sp.saturating_sub(fin),
                total: sp,
                polls: acc.poll.count,
                busy_pct: acc.poll.sum_ns as f64 / span_ns * 100.0,
                poll: acc.poll.summary(),
                sched: acc.sched.summary(),
                slow: acc.slow,
                stalls: stalls_per_site.get(id).copied().unwrap_or(0),
            });
        }
        w.workers = self
            .worker_busy
            .iter()
            .enumerate()
            .map(|(id, (busy_ns, polls))| WorkerRow {
                name: t.workers.get(id).map_or_else(
                    || format!("worker #{id}"),
                    |d| match d.index {
                        Some(ix) => format!("worker {ix}"),
                        None => d.thread_name.clone(),
                    },
                ),
                busy: (*busy_ns as f64 / span_ns).min(1.0),
                polls: *polls,
            })
            .collect();
        w
    }
}

/// Computes the figures of the window `[start, end)`.
pub fn window(t: &Timeline, start: usize, end: usize) -> WindowStats {
    WindowAcc::new(t, start, end).stats(t)
}
