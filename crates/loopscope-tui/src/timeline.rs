//! Everything the TUI knows about a session: the frames of a recording (read from a file, or
//! arriving live), kept in order. Bounded for live sessions: the oldest intervals are dropped
//! past [`Timeline::MAX_INTERVALS`].

use std::collections::VecDeque;

use loopscope_core::model::{Event, Frame, Header, Interval, ModuleDecl, SiteDecl, Stall, StallCategory, WorkerDecl};
use loopscope_core::resolve::Resolver;
use loopscope_core::stall::StallTracker;

/// One stall, its start and (once the poll returned) its end merged.
#[derive(Clone, Debug)]
pub struct StallView {
    /// As raised.
    pub stall: Stall,
    /// The final category (a later look, or the whole stall, may refine the live one).
    pub category: StallCategory,
    /// Total duration in ns, once the stalled poll returned.
    pub duration_ns: Option<u64>,
}

/// The session so far.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The header, once known.
    pub header: Option<Header>,
    /// Spawn sites, by id.
    pub sites: Vec<SiteDecl>,
    /// Worker threads, by id.
    pub workers: Vec<WorkerDecl>,
    /// `tracing` span callsites, by id.
    pub spans: Vec<loopscope_core::model::SpanDecl>,
    /// Intervals in order (the newest [`Timeline::MAX_INTERVALS`]).
    pub intervals: VecDeque<Interval>,
    /// Intervals dropped from the front to stay bounded.
    pub dropped_intervals: u64,
    /// Stacks sampled from slow polls, per interval, digested (the newest
    /// [`Timeline::MAX_INTERVALS`]); the frames themselves are not kept.
    pub hot: VecDeque<crate::hot::Digest>,
    /// The program lines the digests name.
    pub lines: crate::hot::Lines,
    /// The symbolized stacks the digests name (bounded).
    pub stacks: crate::hot::Stacks,
    /// Per site: tasks spawned and finished in intervals dropped from the front.
    pub dropped_spawned: Vec<(u64, u64)>,
    /// Stalls, in the order raised (the newest [`Timeline::MAX_STALLS`]).
    pub stalls: VecDeque<StallView>,
    /// Alive tasks' idle times per site and task dumps (core's one model of both).
    pub tasks: loopscope_core::tasks::TaskState,
    /// Recorder errors.
    pub errors: Vec<String>,
    /// Whether the session ended (footer seen).
    pub finished: bool,
    /// The loaded modules stacks point into (the program first declared).
    pub modules: Vec<ModuleDecl>,
    /// The directory the program's source paths are relative to (see
    /// `loopscope_core::stall::source_root`), once a stall has named an absolute one.
    pub source_root: Option<String>,
    /// Symbolizes stall stacks as they arrive (live sessions); a recording read whole comes
    /// symbolized already.
    resolver: Option<Resolver>,
    /// Pairs stalls' begins, looks and ends.
    tracker: StallTracker,
}

impl Clone for Timeline {
    /// A copy of the data; the copy symbolizes nothing further.
    fn clone(&self) -> Self {
        Timeline {
            header: self.header.clone(),
            sites: self.sites.clone(),
            workers: self.workers.clone(),
            spans: self.spans.clone(),
            intervals: self.intervals.clone(),
            dropped_intervals: self.dropped_intervals,
            hot: self.hot.clone(),
            lines: self.lines.clone(),
            stacks: self.stacks.clone(),
            dropped_spawned: self.dropped_spawned.clone(),
            stalls: self.stalls.clone(),
            tasks: self.tasks.clone(),
            errors: self.errors.clone(),
            finished: self.finished,
            modules: self.modules.clone(),
            source_root: self.source_root.clone(),
            resolver: None,
            tracker: self.tracker.clone(),
        }
    }
}

impl Timeline {
    /// Intervals kept: an hour at the default 1 s interval.
    pub const MAX_INTERVALS: usize = 3600;
    /// Stalls kept.
    pub const MAX_STALLS: usize = 10_000;
    /// Distinct recorder errors kept.
    pub const MAX_ERRORS: usize = 100;

    /// An empty timeline whose live frames' stacks are symbolized with `resolver`.
    pub fn with_resolver(resolver: Resolver) -> Self {
        Timeline { resolver: Some(resolver), ..Timeline::default() }
    }

    /// Starts over (a new live connection resends the session), keeping the resolver.
    pub fn reset(&mut self) {
        let mut resolver = self.resolver.take();
        if let Some(r) = &mut resolver {
            r.reset();
        }
        *self = Timeline { resolver, ..Timeline::default() };
    }

    /// What the symbolizer wants the user to know (a binary missing or changed, no line tables).
    pub fn notes(&self) -> Vec<String> {
        self.resolver.as_ref().map(Resolver::notes).unwrap_or_default()
    }

    /// A timeline holding every frame of a recording.
    pub fn from_frames(frames: impl IntoIterator<Item = Frame>) -> Self {
        let mut t = Timeline::default();
        for f in frames {
            t.push(f);
        }
        t
    }

    /// A timeline holding a whole recording.
    pub fn from_recording(rec: loopscope_core::format::Recording) -> Self {
        let mut t = Timeline::default();
        t.push(Frame::Header(rec.header));
        t.push(Frame::Modules(rec.modules));
        t.push(Frame::Sites(rec.sites));
        t.push(Frame::Spans(rec.spans));
        t.push(Frame::Workers(rec.workers));
        // After the sites, as in a live stream: a sample's absolute path finds the source root.
        for s in rec.samples {
            t.push(Frame::Samples(Box::new(s)));
        }
        for i in rec.intervals {
            t.push(Frame::Interval(Box::new(i)));
        }
        for e in rec.events {
            t.push(Frame::Event(e));
        }
        for a in rec.task_ages {
            t.push(Frame::TaskAges(Box::new(a)));
        }
        for d in rec.dumps {
            t.push(Frame::TaskDump(Box::new(d)));
        }
        t.finished = rec.footer.is_some();
        t
    }

    /// Folds in one frame.
    pub fn push(&mut self, frame: Frame) {
        let frame = match &mut self.resolver {
            Some(r) => r.frame(frame),
            None => frame,
        };
        match frame {
            Frame::Header(h) => self.header = Some(h),
            Frame::Runtime(r) => {
                if let Some(h) = &mut self.header {
                    h.apply_runtime(&r);
                }
            }
            Frame::Modules(m) => self.modules.extend(m),
            Frame::Samples(s) => {
                if self.hot.len() == Self::MAX_INTERVALS {
                    self.hot.pop_front();
                }
                let digest = crate::hot::Digest::of(*s, &mut self.lines, &mut self.stacks);
                if self.source_root.is_none()
                    && let Some(line) = digest
                        .hits
                        .iter()
                        .find_map(|h| self.lines.get(h.line?).line.as_deref().filter(|l| l.starts_with('/')))
                {
                    self.source_root =
                        loopscope_core::stall::source_root(self.sites.iter().map(|d| d.file.as_str()), line);
                }
                self.hot.push_back(digest);
            }
            Frame::Sites(s) => self.sites.extend(s),
            Frame::Spans(d) => self.spans.extend(d),
            Frame::Workers(w) => self.workers.extend(w),
            Frame::Interval(i) => {
                if self.intervals.len() == Self::MAX_INTERVALS
                    && let Some(old) = self.intervals.pop_front()
                {
                    self.dropped_intervals += 1;
                    add_spawned(&mut self.dropped_spawned, &old);
                }
                self.intervals.push_back(*i);
            }
            Frame::Event(Event::StallBegin(s)) => {
                if !self.tracker.begin(&s) {
                    return;
                }
                if self.source_root.is_none()
                    && let Some(site) = &s.blocking_site
                {
                    self.source_root =
                        loopscope_core::stall::source_root(self.sites.iter().map(|d| d.file.as_str()), site);
                }
                if self.stalls.len() == Self::MAX_STALLS {
                    self.stalls.pop_front();
                }
                self.stalls.push_back(StallView { category: s.category, stall: s, duration_ns: None });
            }
            Frame::Event(Event::StallLook { id, category, stack, .. }) => self.tracker.look(id, category, &stack),
            Frame::Event(Event::StallEnd { id, duration_ns, category }) => {
                let Some(closed) = self.tracker.end(id, duration_ns, category) else { return };
                if let Some(v) = self.stalls.iter_mut().rev().find(|v| v.stall.id == id) {
                    v.duration_ns = Some(closed.duration_ns);
                    v.category = closed.category;
                    // Named by a later look (raised inside a system call, without a stack).
                    if v.stall.blocking_site.is_none() {
                        v.stall = closed.stall;
                    }
                }
            }
            Frame::Event(Event::RecorderError { message, .. }) => {
                if self.errors.len() < Self::MAX_ERRORS && !self.errors.contains(&message) {
                    self.errors.push(message);
                }
            }
            Frame::TaskAges(a) => self.tasks.push_ages(&a),
            Frame::TaskDump(d) => self.tasks.push_dump(&d),
            Frame::Workload(_) => {}
            Frame::Footer(_) => self.finished = true,
        }
    }

    /// Interval length in ns (1 s until the header is known).
    pub fn interval_ns(&self) -> u64 {
        self.header.as_ref().map_or(1_000_000_000, |h| h.interval_ns.max(1))
    }

    /// A source path as the program's spawn sites show them: relative to the program's root.
    pub fn display_path<'a>(&self, path: &'a str) -> &'a str {
        match &self.source_root {
            Some(root) => path.strip_prefix(root.as_str()).unwrap_or(path),
            None => path,
        }
    }

    /// `file:line` of a site, or `site #N` for one not declared (yet).
    pub fn site_name(&self, id: u32) -> String {
        self.sites.get(id as usize).map_or_else(|| format!("site #{id}"), |s| format!("{}:{}", s.file, s.line))
    }
}

/// Adds an interval's tasks spawned and finished to per-site totals (indexed by site id).
pub(crate) fn add_spawned(totals: &mut Vec<(u64, u64)>, i: &Interval) {
    for s in &i.sites {
        let id = s.site as usize;
        if totals.len() <= id {
            totals.resize(id + 1, (0, 0));
        }
        totals[id].0 += s.spawned;
        totals[id].1 += s.finished;
    }
}
