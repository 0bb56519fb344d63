//! A session's figures folded from its frames for fleet exporters (Prometheus, OTLP): cumulative
//! histograms and counters per spawn site with bounded labels, stall counters, worker busy ratios.
//!
//! Label cardinality is bounded: the first `max_labelled` spawn sites the session declares (in the
//! order the recording declares them, which is the order they are first seen) get a `site` label
//! of their own as soon as they are declared, and keep it; every other site's figures go to
//! `site="other"`. A site's every figure (polls, scheduling latency, spawns, stalls) carries the
//! same label, whichever figure reaches the exporter first. Each series only ever grows.

use std::collections::BTreeMap;

use loopscope_core::dist::{Dist, highest_equivalent};
use loopscope_core::model::{Event, Frame, Header, SiteDecl, StallCategory};

/// Upper bounds of the histogram buckets, in seconds (1 µs to 10 s; above: `+Inf`).
pub const BUCKETS_S: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Worker labels kept (a series each); threads beyond are left out of the busy ratios.
pub const MAX_WORKER_LABELS: usize = 256;

/// The label of every site without a label of its own.
pub const OTHER_SITE: &str = "other";

/// A cumulative histogram in [`BUCKETS_S`] (the last slot is `+Inf`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Hist {
    /// Values per bucket (not cumulative), `+Inf` last.
    pub(crate) buckets: [u64; BUCKETS_S.len() + 1],
    pub(crate) count: u64,
    pub(crate) sum_ns: u64,
}

impl Hist {
    /// Adds a recorded distribution: each HdrHistogram bucket goes to the first Prometheus bucket
    /// whose bound is at least the top of the HdrHistogram bucket (within its 1% precision).
    fn add(&mut self, d: &Dist) {
        let Ok(buckets) = d.buckets() else { return };
        for (low_ns, n) in buckets {
            self.buckets[bucket_of(highest_equivalent(low_ns))] += n;
        }
        self.count += d.count;
        self.sum_ns = self.sum_ns.saturating_add(d.sum_ns);
    }
}

/// The index of the bucket a value in nanoseconds falls in.
pub fn bucket_of(value_ns: u64) -> usize {
    let s = value_ns as f64 / 1e9;
    BUCKETS_S.iter().position(|&b| s <= b).unwrap_or(BUCKETS_S.len())
}

#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) poll: Hist,
    pub(crate) sched: Hist,
    pub(crate) spawned: u64,
}

/// Everything exposed, folded from frames.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) max_labelled: usize,
    /// The session's header, once seen.
    pub(crate) header: Option<Header>,
    /// Per declared site (by id): its series (an index into `series`), or `None` for `other`.
    pub(crate) slot_of: Vec<Option<usize>>,
    /// Labelled series (label: the site's `file:line:col`, unescaped).
    pub(crate) series: Vec<(String, Series)>,
    pub(crate) other: Series,
    pub(crate) lag: Hist,
    /// (site label, category) → (stalls, seconds stalled).
    pub(crate) stalls: BTreeMap<(String, StallCategory), (u64, f64)>,
    /// Pairs stalls' begins, looks and ends (core's one stall model).
    pub(crate) tracker: loopscope_core::stall::StallTracker,
    /// Per worker label (tokio's worker index, so a worker handed to another thread by
    /// `block_in_place` keeps its series; a thread outside the workers: 1000 + its id): the
    /// thread's name.
    pub(crate) workers: BTreeMap<u32, String>,
    /// Per declared worker id: its label, `None` past [`MAX_WORKER_LABELS`].
    pub(crate) worker_label: Vec<Option<u32>>,
    /// Per worker label: busy time over the last interval's length.
    pub(crate) busy: BTreeMap<u32, f64>,
    pub(crate) alive_tasks: u64,
    pub(crate) intervals: u64,
}

impl State {
    /// Whether per-task scheduling latency is measured (the `full` profile).
    pub(crate) fn schedule_latency(&self) -> bool {
        self.header.as_ref().is_some_and(|h| h.schedule_latency)
    }

    /// Every series with its label, `other` last.
    pub(crate) fn all_series(&self) -> impl Iterator<Item = (&str, &Series)> {
        self.series.iter().map(|(l, s)| (l.as_str(), s)).chain([(OTHER_SITE, &self.other)])
    }

    /// Folds one frame of the session in.
    pub(crate) fn fold(&mut self, frame: Frame) {
        match frame {
            Frame::Header(h) => self.header = Some(h),
            Frame::Sites(sites) => {
                for s in sites {
                    let slot = self.label_slot(&s);
                    self.slot_of.push(slot);
                }
            }
            Frame::Workers(ws) => {
                for w in ws {
                    let label = w.index.unwrap_or(1000 + w.id);
                    let known = self.workers.contains_key(&label);
                    let label = (known || self.workers.len() < MAX_WORKER_LABELS).then_some(label);
                    if let Some(l) = label {
                        self.workers.insert(l, w.thread_name);
                    }
                    self.worker_label.push(label);
                }
            }
            Frame::Interval(i) => {
                for s in &i.sites {
                    let series = match self.slot_of.get(s.site as usize).copied().flatten() {
                        Some(k) => &mut self.series[k].1,
                        None => &mut self.other,
                    };
                    series.poll.add(&s.poll);
                    series.sched.add(&s.sched);
                    series.spawned += s.spawned;
                }
                self.lag.add(&i.lag);
                let length = i.end_ns.saturating_sub(i.start_ns).max(1) as f64;
                // Every known worker: one that polled nothing in the interval was idle.
                self.busy = self.workers.keys().map(|&w| (w, 0.0)).collect();
                for w in &i.workers {
                    if let Some(Some(label)) = self.worker_label.get(w.worker as usize) {
                        *self.busy.entry(*label).or_default() += w.poll.sum_ns as f64 / length;
                    }
                }
                // Stalls the recorder only counted, past its budget of stall events.
                for t in &i.stall_tally {
                    let e = self.stalls.entry((self.site_label(t.site), t.category)).or_default();
                    e.0 += t.count;
                    e.1 += t.total_ns as f64 / 1e9;
                }
                self.alive_tasks = i.gauges.alive_tasks;
                self.intervals += 1;
            }
            Frame::Event(Event::StallBegin(s)) => {
                self.tracker.begin(&s);
            }
            Frame::Event(Event::StallLook { id, category, stack, .. }) => self.tracker.look(id, category, &stack),
            Frame::Event(Event::StallEnd { id, duration_ns, category }) => {
                if let Some(c) = self.tracker.end(id, duration_ns, category) {
                    let e = self.stalls.entry((self.site_label(c.stall.site), c.category)).or_default();
                    e.0 += 1;
                    e.1 += c.duration_ns as f64 / 1e9;
                }
            }
            _ => {}
        }
    }

    /// The series a newly declared site's figures go to: a labelled one of its own while fewer
    /// than `max_labelled` exist (shared with an earlier site of the same `file:line:col`, so that
    /// no two series carry one label), `None` (`other`) beyond that and for the recorder's own
    /// `<other sites>`.
    fn label_slot(&mut self, decl: &SiteDecl) -> Option<usize> {
        if decl.file == SiteDecl::OTHER_FILE {
            return None;
        }
        let label = decl.location();
        if let Some(k) = self.series.iter().position(|(l, _)| *l == label) {
            return Some(k);
        }
        if self.series.len() >= self.max_labelled {
            return None;
        }
        self.series.push((label, Series::default()));
        Some(self.series.len() - 1)
    }

    fn site_label(&self, site: Option<u32>) -> String {
        match site.and_then(|s| self.slot_of.get(s as usize).copied().flatten()) {
            Some(k) => self.series[k].0.clone(),
            None => OTHER_SITE.to_string(),
        }
    }
}
