//! Where sampled slow polls spent their time, and poll time per `tracing` span, over a window.
//!
//! Each `Samples` frame is digested once, as the timeline takes it in ([`Digest::of`]): every
//! sampled stack becomes its program line (`loopscope_core::stall::program_line`, the rule the
//! report's hot lines use), its category refined from the stack (`stall::refine`) and its
//! innermost span, with the line interned in the timeline's [`Lines`] and the symbolized stack
//! in its [`Stacks`] (by instruction addresses: a stack sampled in many intervals is kept once).
//! The frame itself is not kept. A window then sums digests interval by interval
//! ([`HotAcc::add`]), as `stats.rs` sums histograms, so a live window that grows by one interval
//! costs one interval and no stack is walked twice.
//!
//! Everything is bounded: [`MAX_LINES`] distinct lines and [`MAX_STACKS`] symbolized stacks per
//! timeline, [`MAX_ROWS`] rows and [`MAX_SPAN_PAIRS`] (site, span) pairs per window; what is
//! past a bound is counted, not lost (as `<other lines>`), or left out (a stack to show, spans).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use loopscope_core::dist::{DistAcc, Summary};
use loopscope_core::model::{Interval, Samples, StackFrame, StallCategory};
use loopscope_core::stall::{ProgramLine, program_line, refine};

use crate::timeline::Timeline;

/// Distinct program lines a timeline names; samples at further lines count as [`OTHER_LINES`].
pub const MAX_LINES: usize = 10_000;
/// Rows (site, span, line, category) a window keeps; samples of further rows count at their
/// site's [`OTHER_LINES`] (and past twice as many rows, at one [`OTHER_LINES`] per category).
pub const MAX_ROWS: usize = 10_000;
/// (spawn site, span) pairs a window keeps; further pairs are left out of the span breakdown.
pub const MAX_SPAN_PAIRS: usize = 10_000;
/// Distinct symbolized stacks a timeline keeps to show (further stacks are digested, not kept).
pub const MAX_STACKS: usize = 4_096;
/// The line standing for lines past a bound (the report's name for it too).
pub const OTHER_LINES: &str = "<other lines>";

/// The id of [`OTHER_LINES`] in [`Lines`].
const OTHER_ID: u32 = u32::MAX;

/// The program lines sampled stacks led to, interned: each line with the function and call it
/// was first seen with (as the report keeps them).
#[derive(Clone, Debug)]
pub struct Lines {
    infos: Vec<ProgramLine>,
    ids: HashMap<Option<String>, u32>,
    other: ProgramLine,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            infos: Vec::new(),
            ids: HashMap::new(),
            other: ProgramLine { line: Some(OTHER_LINES.into()), function: None, call: None },
        }
    }
}

impl Lines {
    /// The id of a line, interning it (past [`MAX_LINES`], the id of [`OTHER_LINES`]).
    pub fn intern(&mut self, at: ProgramLine) -> u32 {
        if let Some(&id) = self.ids.get(&at.line) {
            return id;
        }
        if self.infos.len() >= MAX_LINES {
            return OTHER_ID;
        }
        let id = self.infos.len() as u32;
        self.ids.insert(at.line.clone(), id);
        self.infos.push(at);
        id
    }

    /// The line with this id.
    pub fn get(&self, id: u32) -> &ProgramLine {
        self.infos.get(id as usize).unwrap_or(&self.other)
    }

    /// Distinct lines interned.
    pub fn len(&self) -> usize {
        self.infos.len()
    }

    /// Whether no line was interned.
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }
}

/// Sampled stacks, interned by their instruction addresses: each symbolized stack kept once,
/// with its program line, up to [`MAX_STACKS`].
#[derive(Clone, Debug, Default)]
pub struct Stacks {
    /// Addresses → (id in `kept`, line id).
    ids: HashMap<Vec<u64>, (u32, u32)>,
    kept: Vec<Vec<StackFrame>>,
    /// (stack id, the kernel's category) → the category refined from the stack.
    refined: HashMap<(u32, StallCategory), StallCategory>,
}

impl Stacks {
    /// The stack with this id.
    pub fn get(&self, id: u32) -> Option<&[StackFrame]> {
        self.kept.get(id as usize).map(Vec::as_slice)
    }

    /// Stacks kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no stack is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

/// One sampled stack, digested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The spawn site of the sampled polls.
    pub site: Option<u32>,
    /// The innermost `tracing` span they were in.
    pub span: Option<u32>,
    /// The program line (an id in the timeline's [`Lines`]); `None`: sampled without a stack.
    pub line: Option<u32>,
    /// What the kernel saw, refined from the stack.
    pub category: StallCategory,
    /// Samples.
    pub count: u64,
    /// The symbolized stack (an id in the timeline's [`Stacks`]), when it is kept.
    pub stack: Option<u32>,
}

/// One `Samples` frame, digested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    /// The interval the samples belong to (`Interval::index`).
    pub interval: u64,
    /// Poll time one sample stands for, in ns.
    pub period_ns: u64,
    /// A poll is sampled once it has run this long, in ns.
    pub threshold_ns: u64,
    /// Its stacks.
    pub hits: Vec<Hit>,
    /// Samples not kept past the recorder's cap of distinct stacks (counted in `hits` too).
    pub dropped: u64,
    /// Samples due but not taken, past the budget of samples per second.
    pub skipped: u64,
}

impl Digest {
    /// Digests a frame (its stacks symbolized), interning its lines in `lines` and its stacks
    /// in `stacks`.
    pub fn of(s: Samples, lines: &mut Lines, stacks: &mut Stacks) -> Digest {
        let hits = s
            .stacks
            .into_iter()
            .map(|mut st| {
                let frames = std::mem::take(&mut st.frames);
                let hit = |line, category, stack| Hit {
                    site: st.site,
                    span: st.spans.last().copied(),
                    line,
                    category,
                    count: st.count,
                    stack,
                };
                if st.stack.is_empty() {
                    return hit(None, st.category, None);
                }
                // Stacks built without raw addresses are told apart by their frames' addresses.
                let key = if frames.is_empty() { st.stack.iter().map(|f| f.address).collect() } else { frames };
                if let Some(&(id, line)) = stacks.ids.get(&key) {
                    let category =
                        *stacks.refined.entry((id, st.category)).or_insert_with(|| refine(st.category, &st.stack));
                    return hit(Some(line), category, Some(id));
                }
                let category = refine(st.category, &st.stack);
                let line = lines.intern(program_line(&st.stack));
                if stacks.kept.len() >= MAX_STACKS {
                    return hit(Some(line), category, None);
                }
                let id = stacks.kept.len() as u32;
                stacks.ids.insert(key, (id, line));
                stacks.refined.insert((id, st.category), category);
                let h = hit(Some(line), category, Some(id));
                stacks.kept.push(st.stack);
                h
            })
            .collect();
        Digest {
            interval: s.interval,
            period_ns: s.period_ns,
            threshold_ns: s.threshold_ns,
            hits,
            dropped: s.dropped,
            skipped: s.skipped,
        }
    }
}

/// A row's key: spawn site, innermost span, line id, category (the report's grouping).
type RowKey = (Option<u32>, Option<u32>, u32, StallCategory);

/// A row's sums.
#[derive(Clone, Copy, Debug, Default)]
struct RowAcc {
    samples: u64,
    time_ns: u64,
    /// The kept stack with the most samples in one interval: (samples, stack id).
    heaviest: Option<(u64, u32)>,
}

/// Samples per spawn site: with a stack, without one.
#[derive(Clone, Copy, Debug, Default)]
struct SiteSamples {
    with_stack: u64,
    without_stack: u64,
}

/// The sampling figures of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sampling {
    /// Samples taken (with or without a stack).
    pub samples: u64,
    /// Samples without a stack: left out of the lines' shares.
    pub without_stack: u64,
    /// Samples not kept past the recorder's cap of distinct stacks per interval.
    pub dropped: u64,
    /// Samples due but not taken, past the budget of samples per second.
    pub skipped: u64,
    /// The sampling threshold (the newest seen).
    pub threshold: Duration,
    /// The time one sample stands for (the newest seen).
    pub period: Duration,
}

/// A line of the program where sampled slow polls of one spawn site spent their time, over a
/// window (one row per site, innermost span, line and category, as the report's hot lines).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HotRow {
    /// The spawn site of the sampled polls.
    pub site: Option<u32>,
    /// The innermost `tracing` span they were in.
    pub span: Option<u32>,
    /// `file:line` (as debug information names it), the function's name without line tables,
    /// or `None` when every frame was a library's.
    pub line: Option<String>,
    /// The function at that line.
    pub function: Option<String>,
    /// What it was calling.
    pub call: Option<String>,
    /// What the kernel saw the thread doing, refined from the stack.
    pub category: StallCategory,
    /// Samples.
    pub samples: u64,
    /// The poll time they stand for (samples × the sampling period).
    pub time: Duration,
    /// Share of the site's samples with a stack (0..=1).
    pub share: f64,
    /// The kept stack sampled most often in one interval at this row (an id in the timeline's
    /// [`Stacks`]).
    pub heaviest: Option<u32>,
}

impl HotRow {
    /// Whether two rows are the same line of the same site, span and category.
    pub fn same(&self, other: &HotRow) -> bool {
        (self.site, self.span, &self.line, self.category) == (other.site, other.span, &other.line, other.category)
    }

    /// The line's file and line number, when it names one.
    pub fn file_line(&self) -> Option<(&str, u32)> {
        let (file, line) = self.line.as_deref()?.rsplit_once(':')?;
        Some((file, line.parse().ok()?))
    }
}

/// Poll time inside one `tracing` span, for the tasks of one spawn site, over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanRow {
    /// The spawn site.
    pub site: u32,
    /// The span's id.
    pub span: u32,
    /// `target::name`, or `span #N` if it was not declared.
    pub name: String,
    /// Polls that entered the span (one value per poll and span).
    pub polls: u64,
    /// Poll time inside the span.
    pub busy: Duration,
    /// Share of the site's poll time (0..=1).
    pub share: f64,
    /// Poll time inside the span, per poll.
    pub poll: Summary,
}

/// The running sums of a window's samples and span histograms.
#[derive(Clone, Default)]
pub struct HotAcc {
    rows: HashMap<RowKey, RowAcc>,
    sites: HashMap<Option<u32>, SiteSamples>,
    spans: BTreeMap<(u32, u32), DistAcc>,
    sampling: Sampling,
}

impl std::fmt::Debug for HotAcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotAcc").field("rows", &self.rows.len()).field("spans", &self.spans.len()).finish()
    }
}

impl HotAcc {
    /// Adds one interval: its digested samples (found by the interval's index) and its span
    /// histograms.
    pub fn add(&mut self, t: &Timeline, i: &Interval) {
        let from = t.hot.partition_point(|d| d.interval < i.index);
        for d in t.hot.range(from..).take_while(|d| d.interval == i.index) {
            self.add_digest(d);
        }
        for s in &i.spans {
            let key = (s.site, s.span);
            if !self.spans.contains_key(&key) && self.spans.len() >= MAX_SPAN_PAIRS {
                continue;
            }
            // A damaged histogram is left out; the rest of the window still shows.
            let _ = self.spans.entry(key).or_default().add_dist(&s.poll);
        }
    }

    fn add_digest(&mut self, d: &Digest) {
        let s = &mut self.sampling;
        s.dropped += d.dropped;
        s.skipped += d.skipped;
        s.threshold = Duration::from_nanos(d.threshold_ns);
        s.period = Duration::from_nanos(d.period_ns);
        for h in &d.hits {
            self.sampling.samples += h.count;
            let site = self.sites.entry(h.site).or_default();
            let Some(line) = h.line else {
                site.without_stack += h.count;
                self.sampling.without_stack += h.count;
                continue;
            };
            site.with_stack += h.count;
            let mut key = (h.site, h.span, line, h.category);
            if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS {
                key = (h.site, None, OTHER_ID, h.category);
                // Past twice the bound even a site's other lines are counted together.
                if !self.rows.contains_key(&key) && self.rows.len() >= 2 * MAX_ROWS {
                    key = (None, None, OTHER_ID, h.category);
                }
            }
            let row = self.rows.entry(key).or_default();
            row.samples += h.count;
            row.time_ns = row.time_ns.saturating_add(h.count.saturating_mul(d.period_ns));
            if let Some(id) = h.stack
                && row.heaviest.is_none_or(|(n, _)| h.count > n)
            {
                row.heaviest = Some((h.count, id));
            }
        }
    }

    /// The sampling figures.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Every row, the most samples first (then by site, line, span).
    pub fn rows(&self, t: &Timeline) -> Vec<HotRow> {
        let mut rows: Vec<HotRow> = self
            .rows
            .iter()
            .map(|(&(site, span, line, category), acc)| {
                let at = t.lines.get(line);
                let site_samples = self.sites.get(&site).map_or(0, |s| s.with_stack).max(1);
                HotRow {
                    site,
                    span,
                    line: at.line.clone(),
                    function: at.function.clone(),
                    call: at.call.clone(),
                    category,
                    samples: acc.samples,
                    time: Duration::from_nanos(acc.time_ns),
                    share: acc.samples as f64 / site_samples as f64,
                    heaviest: acc.heaviest.map(|(_, id)| id),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.samples
                .cmp(&a.samples)
                .then(a.site.cmp(&b.site))
                .then_with(|| a.line.cmp(&b.line))
                .then(a.span.cmp(&b.span))
                .then(a.category.cmp(&b.category))
        });
        rows
    }

    /// Samples of a spawn site: (with a stack, without one).
    pub fn site_samples(&self, site: Option<u32>) -> (u64, u64) {
        self.sites.get(&site).map_or((0, 0), |s| (s.with_stack, s.without_stack))
    }

    /// Poll time per span of one spawn site, the busiest span first; `site_busy` is the site's
    /// poll time over the window.
    pub fn spans(&self, t: &Timeline, site: u32, site_busy: Duration) -> Vec<SpanRow> {
        let mut rows: Vec<SpanRow> = self
            .spans
            .range((site, 0)..=(site, u32::MAX))
            .filter(|(_, acc)| acc.count() > 0)
            .map(|(&(site, span), acc)| {
                let busy = acc.sum();
                SpanRow {
                    site,
                    span,
                    name: t.spans.get(span as usize).map_or_else(|| format!("span #{span}"), |d| d.path()),
                    polls: acc.count(),
                    busy,
                    share: if site_busy.is_zero() { 0.0 } else { busy.as_secs_f64() / site_busy.as_secs_f64() },
                    poll: acc.summary(),
                }
            })
            .collect();
        rows.sort_by(|a, b| b.busy.cmp(&a.busy).then_with(|| a.name.cmp(&b.name)));
        rows
    }
}

/// The stack sampled most often at a hot row, if it is kept.
pub fn heaviest_stack<'t>(t: &'t Timeline, row: &HotRow) -> Option<&'t [StackFrame]> {
    t.stacks.get(row.heaviest?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_core::dist::DistAcc;
    use loopscope_core::model::{Frame, SampledStack, SiteDecl, SiteInterval, SpanDecl, SpanInterval, StackFrame};

    const MS: u64 = 1_000_000;

    fn frame(function: &str, file: &str, line: u32) -> StackFrame {
        StackFrame {
            address: 0x1000,
            function: function.into(),
            file: Some(file.into()),
            line: Some(line),
            inlined: false,
            object: None,
        }
    }

    /// A stack blocked in `std::thread::sleep` (or computing) at `file:line` of the program.
    fn stack(file: &str, line: u32, sleeping: bool) -> Vec<StackFrame> {
        let mut s = Vec::new();
        if sleeping {
            s.push(StackFrame { object: Some("libc.so.6".into()), ..frame("clock_nanosleep", "", 0) });
            s.push(frame("std::thread::sleep", "/rustc/abc/library/std/src/thread/mod.rs", 900));
        }
        s.push(frame("app::handler::{{closure}}", file, line));
        s.push(frame(
            "tokio::runtime::task::harness::poll_future",
            "/home/u/.cargo/registry/src/index.crates.io-1/tokio-1.48.0/src/runtime/task/harness.rs",
            473,
        ));
        s
    }

    fn sampled(site: u32, count: u64, stack: Vec<StackFrame>, spans: Vec<u32>) -> SampledStack {
        SampledStack {
            site: Some(site),
            category: if stack.len() > 2 { StallCategory::SyncSleep } else { StallCategory::CpuBound },
            count,
            frames: vec![0x1000; stack.len()],
            stack,
            spans,
        }
    }

    fn interval(index: u64, spans: Vec<SpanInterval>) -> Frame {
        let mut poll = DistAcc::new();
        poll.record_n_ns(2 * MS, 10);
        Frame::Interval(Box::new(Interval {
            index,
            start_ns: index * 100 * MS,
            end_ns: (index + 1) * 100 * MS,
            sites: vec![SiteInterval {
                site: 0,
                spawned: 1,
                finished: 0,
                slow_polls: 10,
                poll: poll.to_dist(),
                ..Default::default()
            }],
            spans,
            ..Default::default()
        }))
    }

    fn timeline() -> Timeline {
        let mut t = Timeline::default();
        t.push(Frame::Sites(vec![
            SiteDecl { id: 0, file: "src/main.rs".into(), line: 10, column: 5 },
            SiteDecl { id: 1, file: "src/other.rs".into(), line: 3, column: 5 },
        ]));
        t.push(Frame::Spans(vec![SpanDecl {
            id: 0,
            name: "request".into(),
            target: "app".into(),
            file: None,
            line: None,
        }]));
        for i in 0..3u64 {
            t.push(Frame::Samples(Box::new(Samples {
                interval: i,
                threshold_ns: MS,
                period_ns: MS,
                stacks: vec![
                    sampled(0, 3, stack("src/db.rs", 42, true), vec![0]),
                    sampled(0, 1, stack("src/parse.rs", 7, false), vec![]),
                    sampled(1, 2, stack("src/db.rs", 42, true), vec![]),
                    SampledStack { site: Some(0), count: 2, ..SampledStack::default() },
                ],
                dropped: 2,
                skipped: 1,
            })));
            let mut span = DistAcc::new();
            span.record_n_ns(MS, 5);
            t.push(interval(i, vec![SpanInterval { site: 0, span: 0, poll: span.to_dist() }]));
        }
        t
    }

    fn window(t: &Timeline, from: usize, to: usize) -> HotAcc {
        let mut acc = HotAcc::default();
        for i in t.intervals.iter().take(to).skip(from) {
            acc.add(t, i);
        }
        acc
    }

    #[test]
    fn lines_are_summed_per_site_span_and_line_with_shares_of_the_sites_stacks() {
        let t = timeline();
        let acc = window(&t, 0, 3);
        let rows = acc.rows(&t);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        let top = &rows[0];
        assert_eq!(
            (top.site, top.span, top.line.as_deref(), top.category, top.samples),
            (Some(0), Some(0), Some("src/db.rs:42"), StallCategory::SyncSleep, 9)
        );
        assert_eq!(top.function.as_deref(), Some("app::handler::{{closure}}"));
        assert_eq!(top.call.as_deref(), Some("std::thread::sleep"));
        assert_eq!(top.time, Duration::from_millis(9));
        // Site 0: 9 + 3 samples with a stack; the 6 without one are left out of the shares.
        assert!((top.share - 0.75).abs() < 1e-9, "{}", top.share);
        assert_eq!(top.file_line(), Some(("src/db.rs", 42)));
        let other_site = rows.iter().find(|r| r.site == Some(1)).unwrap();
        assert_eq!((other_site.samples, other_site.share), (6, 1.0));
        let parse = rows.iter().find(|r| r.line.as_deref() == Some("src/parse.rs:7")).unwrap();
        assert_eq!(
            (parse.samples, parse.category, parse.span, parse.call.as_deref()),
            (3, StallCategory::CpuBound, None, None)
        );
        let s = acc.sampling();
        assert_eq!((s.samples, s.without_stack, s.dropped, s.skipped), (24, 6, 6, 3));
        assert_eq!(acc.site_samples(Some(0)), (12, 6));
        // Stacks sampled in every interval, at two sites, are kept once.
        assert_eq!(t.stacks.len(), 2);
        // The heaviest stack of a row is kept.
        let stack = heaviest_stack(&t, top).unwrap();
        assert_eq!(stack[2].line, Some(42));
    }

    #[test]
    fn a_window_sums_only_its_intervals_and_spans_break_the_site_down() {
        let t = timeline();
        let acc = window(&t, 2, 3);
        assert_eq!(acc.rows(&t)[0].samples, 3);
        let spans = acc.spans(&t, 0, Duration::from_millis(20));
        assert!(acc.spans(&t, 1, Duration::ZERO).is_empty());
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!((s.site, s.name.as_str(), s.polls), (0, "app::request", 5));
        assert!((s.share - 0.25).abs() < 0.01, "5 ms of 20 ms: {}", s.share);
        assert!(s.poll.p50 >= Duration::from_micros(990) && s.poll.max <= Duration::from_micros(1010), "{:?}", s.poll);
        // An empty window, and a timeline with nothing at all.
        assert!(window(&t, 3, 3).rows(&t).is_empty());
        let empty = Timeline::default();
        assert!(window(&empty, 0, 9).rows(&empty).is_empty());
        assert_eq!(HotAcc::default().sampling(), Sampling::default());
    }

    #[test]
    fn lines_and_rows_are_bounded() {
        let mut lines = Lines::default();
        for n in 0..MAX_LINES as u32 + 5 {
            let id = lines.intern(ProgramLine { line: Some(format!("src/gen.rs:{n}")), ..ProgramLine::default() });
            if (n as usize) < MAX_LINES {
                assert_eq!(id, n);
            } else {
                assert_eq!(lines.get(id).line.as_deref(), Some(OTHER_LINES));
            }
        }
        assert_eq!(lines.len(), MAX_LINES);
        let hit = |site: u32, line: u32| Hit {
            site: Some(site),
            span: None,
            line: Some(line),
            category: StallCategory::CpuBound,
            count: 1,
            stack: None,
        };
        // A site at as many lines as the bound, then lines of many other sites.
        let n = MAX_ROWS as u32;
        let hits = (0..n).map(|l| hit(0, l)).chain((1..=3 * n).map(|site| hit(site, 0))).collect();
        let mut acc = HotAcc::default();
        acc.add_digest(&Digest { interval: 0, period_ns: MS, threshold_ns: MS, hits, dropped: 0, skipped: 0 });
        assert_eq!(acc.rows.len(), 2 * MAX_ROWS + 1);
        let t = Timeline::default();
        let rows = acc.rows(&t);
        assert_eq!(rows.iter().map(|r| r.samples).sum::<u64>(), 4 * n as u64, "every sample is counted");
        assert_eq!(
            (rows[0].site, rows[0].line.as_deref(), rows[0].samples),
            (None, Some(OTHER_LINES), 2 * n as u64),
            "past twice the bound, one row for the rest"
        );
        // The other sites: one row each for their other lines until twice the bound, then one.
        assert_eq!(rows.iter().filter(|r| r.site != Some(0)).count(), MAX_ROWS + 1);
    }
}
