//! Figures of a window of intervals: what every view shows.

use std::time::Duration;

use loopscope_core::dist::{DistAcc, Summary};

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

/// Per-site accumulators.
#[derive(Clone, Default)]
struct SiteAcc {
    poll: DistAcc,
    sched: DistAcc,
    slow: u64,
}

/// Computes the figures of the window `[start, end)`.
pub fn window(t: &Timeline, start: usize, end: usize) -> WindowStats {
    let end = end.min(t.intervals.len());
    let start = start.min(end);
    let mut w = WindowStats { start, end, ..WindowStats::default() };
    let mut sites: Vec<SiteAcc> = vec![SiteAcc::default(); t.sites.len()];
    let mut spawned: Vec<(u64, u64)> = t.dropped_spawned.clone();
    let mut worker_busy: Vec<(u64, u64)> = vec![(0, 0); t.workers.len()];
    for (pos, i) in t.intervals.iter().enumerate().take(end) {
        let secs = (i.end_ns.saturating_sub(i.start_ns)).max(1) as f64 / 1e9;
        let polls: u64 = i.sites.iter().map(|s| s.poll.count).sum();
        w.polls_per_s.push((polls as f64 / secs) as u64);
        w.tasks_alive.push(i.gauges.alive_tasks);
        for s in &i.sites {
            let id = s.site as usize;
            if spawned.len() <= id {
                spawned.resize(id + 1, (0, 0));
            }
            spawned[id].0 += s.spawned;
            spawned[id].1 += s.finished;
        }
        if pos < start {
            continue;
        }
        w.span += Duration::from_nanos(i.end_ns.saturating_sub(i.start_ns));
        let _ = w.lag.add_dist(&i.lag);
        for s in &i.sites {
            let id = s.site as usize;
            if sites.len() <= id {
                sites.resize(id + 1, SiteAcc::default());
            }
            let acc = &mut sites[id];
            let _ = acc.poll.add_dist(&s.poll);
            let _ = acc.sched.add_dist(&s.sched);
            acc.slow += s.slow_polls;
        }
        for wk in &i.workers {
            let id = wk.worker as usize;
            if worker_busy.len() <= id {
                worker_busy.resize(id + 1, (0, 0));
            }
            worker_busy[id].0 += wk.poll.sum_ns;
            worker_busy[id].1 += wk.poll.count;
        }
        if pos + 1 == end {
            w.global_queue = i.gauges.global_queue;
            w.local_queue_max = i.gauges.local_queues.iter().copied().max().unwrap_or(0);
            w.blocking_threads = i.gauges.blocking_threads;
        }
    }
    let (from_ns, to_ns) = match (t.intervals.get(start), end.checked_sub(1).and_then(|e| t.intervals.get(e))) {
        (Some(a), Some(b)) if start < end => (a.start_ns, b.end_ns),
        _ => (0, 0),
    };
    let mut stalls_per_site = vec![0u64; sites.len().max(t.sites.len())];
    for s in t.stalls.iter().filter(|s| s.stall.started_ns >= from_ns && s.stall.started_ns < to_ns) {
        w.stalls += 1;
        if let Some(site) = s.stall.site
            && let Some(n) = stalls_per_site.get_mut(site as usize)
        {
            *n += 1;
        }
    }
    let span_ns = w.span.as_nanos().max(1) as f64;
    for (id, acc) in sites.into_iter().enumerate() {
        let (sp, fin) = spawned.get(id).copied().unwrap_or_default();
        if acc.poll.count() == 0 && sp == 0 {
            continue;
        }
        w.poll.add(&acc.poll);
        w.sched.add(&acc.sched);
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
    w.workers = worker_busy
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
